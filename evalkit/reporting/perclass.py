"""``evalkit report --task T``: the per-class analysis of every run of one task, read from the
sidecar the runner wrote beside each result (``<task>[.<part>].perclass.jsonl``,
:mod:`evalkit.tasks.perclass`), or computed from the result's per-sample records where there is
none (a result written before sidecars existed) or where it was written from other records than
the result's (the SHA-256 both keep). No model and no data are read.

Class names, where the records do not hold them: the task file the result was run from
(``evalkit.task_file``), read as the runner reads it (:class:`evalkit.tasks.spec.TaskIndex`),
else the task of that name among the task folders; else ``class <i>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.records import RecordsError, records_for, result_records
from evalkit.registry import UnknownNameError
from evalkit.results import TaskResult, iter_results, path_of, result_variant
from evalkit.stats import DEFAULT_LEVEL
from evalkit.tasks.perclass import (
    KINDS,
    class_names,
    n_classes_of,
    perclass_document,
    read_sidecar,
    sidecar_for,
)
from evalkit.tasks.spec import TaskIndex, TaskSpec

__all__ = ["DEFAULT_CLASSES", "DEFAULT_PAIRS", "NoResultError", "PerClassRun", "perclass_report", "perclass_runs",
           "render", "result_analyses"]

#: classes printed per analysis, worst first (0: all)
DEFAULT_CLASSES = 20
#: confused pairs printed per analysis
DEFAULT_PAIRS = 10


class NoResultError(EvalkitError, FileNotFoundError):
    """A known task with no result in the results folder; the message names the task and folder."""


@dataclass
class PerClassRun:
    """One result of the task: where it is, its run (model and variant), and its per-class
    analyses (one per records file: one per split of a several-split task), each a sidecar
    document; ``origin`` says whether each was read from its sidecar or computed now; ``note``
    says why a result has none."""

    result: TaskResult
    path: Path
    documents: list[dict[str, Any]] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    note: str | None = None

    @property
    def run(self) -> str:
        return f"{self.result.model} [{result_variant(self.result)}]"


def _task_names(index: TaskIndex, spec: TaskSpec | None, result: TaskResult) -> list[str] | None:
    """The class names of the task a result was run from: its task file, else the task of its name."""
    task_file = result.evalkit.get("task_file")
    if isinstance(task_file, str) and task_file and Path(task_file).is_file():
        try:
            folder = TaskIndex.load([Path(task_file).parent])
        except EvalkitError:
            folder = None
        if folder is not None:
            for candidate in folder.tasks.values():
                if candidate.path and Path(candidate.path).resolve() == Path(task_file).resolve():
                    return candidate.classnames
    own = spec if spec is not None and spec.name == result.dataset else index.lookup(result.dataset)
    return own.classnames if own is not None else None


def _computed(result: TaskResult, path: Path, index: TaskIndex, spec: TaskSpec | None) -> list[dict[str, Any]]:
    """The sidecar documents of a result computed from its records, as the runner would have
    written them, with the interval options the result records (``evalkit.ci_options``)."""
    options = result.evalkit.get("ci_options") or {}
    level = float(options.get("level", DEFAULT_LEVEL))
    method = str(options.get("proportion", "wilson"))
    docs = []
    for records in result_records(path):
        if records.kind not in KINDS:
            continue
        arrays = {m: records.arrays(m) for m in records.modes}
        n_classes = n_classes_of(records.kind, arrays, records.meta)
        names, source = None, "none"
        if records.meta.get("classnames"):
            names = class_names(records.meta["classnames"], records.meta.get("label_groups"), n_classes)
            source = "records" if names is not None else source
        if names is None:
            names = class_names(_task_names(index, spec, result), None, n_classes)
            source = "task file" if names is not None else source
        docs.append({**perclass_document(records.kind, arrays, records.meta, names, source, level=level,
                                         method=method), "records": records.path.name})
    return docs


def result_analyses(result: TaskResult, path: Path, index: TaskIndex, spec: TaskSpec | None) -> PerClassRun:
    """The per-class analyses of one result at ``path``: its sidecars where they are of its own
    records, else computed from the records (``index``/``spec``: for class names), else a note
    saying why there are none (the HTML report reads them per result)."""
    run = PerClassRun(result, path)
    entry = result.evalkit.get("records")
    files = records_for(path)
    if not files:
        run.note = ("written without per-sample records (--no-records, or before records existed): "
                    "no per-class analysis")
        return run
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if kind not in KINDS:
        run.note = f"its records are of kind {kind!r}: no classes to analyse (per-class analysis: {', '.join(KINDS)})"
        return run
    digests = entry.get("sha256") if isinstance(entry.get("sha256"), list) else []
    stale = False
    for i, file in enumerate(files):
        sidecar = sidecar_for(file)
        try:
            doc = read_sidecar(sidecar)
        except (OSError, ValueError):  # none, or not one: computed from the records below
            doc = None
        if isinstance(doc, dict) and i < len(digests) and doc.get("records_sha256") == digests[i]:
            run.documents.append(doc)
            run.origin.append(f"sidecar {sidecar.name}")
        else:
            stale = True
            break
    if stale:  # computed from the records, all of them (result_records checks each is the result's own)
        run.documents = _computed(result, path, index, spec)
        run.origin = [f"computed from {d['records']} (no sidecar of these records)" for d in run.documents]
    return run


def perclass_runs(output_dir: str | Path, task: str, model: str | None = None,
                  index: TaskIndex | None = None) -> list[PerClassRun]:
    """Every result of ``task`` (a task name or alias, or the name a result was written under,
    ``kinetics400@uniform-8``) under ``output_dir`` (one model's with ``model``), with its
    per-class analyses. A task that is neither known nor in the folder is an
    :class:`~evalkit.registry.UnknownNameError` (exit 2); a known task without a result there, a
    :class:`NoResultError`; a missing folder, a ``ResultsFolderError``."""
    if not Path(output_dir).is_dir():
        from evalkit.reporting.report import ResultsFolderError

        raise ResultsFolderError(f"results folder {output_dir}: no such folder (--output-dir: the folder "
                                 f"`evalkit run --output-dir` wrote to)")
    index = index if index is not None else TaskIndex.load()
    spec = index.lookup(task)
    wanted = {task, spec.name} if spec is not None else {task}
    found = []
    seen: set[str] = set()
    for result in iter_results(output_dir, model):
        seen.add(result.dataset)
        if result.dataset in wanted or result.evalkit.get("result_name") in wanted:
            found.append(result)
    if not found:
        if spec is None and model is not None:  # a task of the folder's other models is known, not unknown
            seen = {name for r in iter_results(output_dir) for name in (r.dataset, r.evalkit.get("result_name")) if name}
        if spec is None and task not in seen:
            raise UnknownNameError("task", task, [*index.tasks, *index.aliases, *seen])
        spec_name = spec.name if spec is not None else task
        where = f"{output_dir}/runs" + (f"/{model}" if model else "")
        raise NoResultError(f"task {spec_name!r}: no result under {where} (run it first: "
                            f"`evalkit run --tasks {spec_name} --output-dir {output_dir}`)")
    out = []
    for result in found:
        path = path_of(result, output_dir)
        try:
            out.append(result_analyses(result, path, index, spec))
        except RecordsError as e:
            out.append(PerClassRun(result, path, note=f"its records cannot be read: {e}"))
    return out


# ----------------------------------------------------------------------------- text

def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _count(x: float) -> str:
    return f"{x:g}" if float(x).is_integer() else f"{x:.2f}"


def _cell(name: str) -> str:
    return name.replace("|", "\\|")


def _analysis(doc: dict[str, Any], a: dict[str, Any], classes: int, pairs: int, reported: str | None) -> list[str]:
    options = doc.get("ci_options") or {}
    level = f"{100 * float(options.get('level', DEFAULT_LEVEL)):g} %"
    method = options.get("proportion", "wilson")
    title = a["mode"] + (f", {a['shots']}-shot (mean of {a['runs']} seeds)" if a.get("shots") is not None else "")
    if reported and a["mode"] == reported:
        title += " (the reported transform)"
    lines = [f"### {title}: {_pct(a['accuracy'])} % of {a['samples']} samples", ""]
    present = sorted((c for c in a["classes"] if c["support"]),
                     key=lambda c: (c["accuracy"], c["ci"][1], -c["support"], c["class"]))
    shown = present if classes <= 0 else present[:classes]
    more = f" ({len(shown)} of {len(present)}, worst first; --classes 0 prints all)" if len(shown) < len(present) \
        else " (worst first)"
    lines += [f"Per-class accuracy{more}, {level} {method} interval:", "",
              "| class | name | support | correct | accuracy % | interval % |", "|---:|---|---:|---:|---:|---|"]
    lines += [f"| {c['class']} | {_cell(c['name'])} | {c['support']} | {_count(c['correct'])} | {_pct(c['accuracy'])} "
              f"| [{_pct(c['ci'][0])}, {_pct(c['ci'][1])}] |" for c in shown]
    top = a["confused_pairs"][:pairs]
    lines += ["", f"Most-confused pairs ({len(top)} of {a['confused_pairs_total']}):" if top
              else "Most-confused pairs: none (no sample was misclassified)"]
    if top:
        lines += ["", "| true → predicted | count | share of the true class % |", "|---|---:|---:|"]
        lines += [f"| {p['true']} {_cell(p['true_name'])} → {p['pred']} {_cell(p['pred_name'])} | {_count(p['count'])} "
                  f"| {_pct(p['share'])} |" for p in top]
    zero = a["zero_support"]
    lines += ["", f"Classes without a test sample ({len(zero)}): "
              + (", ".join(f"{z['class']} {z['name']}" for z in zero) if zero else "none"), ""]
    return lines


def render(runs: list[PerClassRun], task: str, *, classes: int = DEFAULT_CLASSES, pairs: int = DEFAULT_PAIRS) -> str:
    """The per-class analyses of ``runs`` as markdown: per run and records file, the classes worst
    first with their intervals, the most-confused pairs, the classes without a test sample and the
    groups of duplicate class names."""
    lines = [f"# Per-class analysis: {task}", ""]
    for run in runs:
        lines += [f"## {run.run}", "", f"Result: {run.path}", ""]
        if run.note:
            lines += [f"No per-class analysis: {run.note}.", ""]
            continue
        reported = run.result.evalkit.get("best_transform") if len(run.documents) and len(
            {a["mode"] for a in run.documents[0]["analyses"]}) > 1 else None
        for doc, origin in zip(run.documents, run.origin, strict=True):
            part = f" ({doc['part']})" if doc.get("part") else ""
            lines += [f"Records {doc.get('records')}{part}: {doc['kind']}, {doc['n_classes']} classes; "
                      f"analysis {origin}; class names: {doc['classnames_source']}.", ""]
            dupes = doc.get("duplicate_names") or []
            if dupes:
                lines.append(f"Class names identical or differing only in case, whitespace or punctuation "
                             f"({len(dupes)} groups):")
                lines += [f"- {'identical' if g['identical'] else 'near-identical'}: "
                          + ", ".join(f"{i} {n!r}" for i, n in g["classes"]) for g in dupes]
            elif doc["classnames_source"] == "none":
                lines.append("Class names: none known for these classes (duplicates not checked).")
            else:
                lines.append("Class names: no two identical or differing only in case, whitespace or punctuation.")
            lines.append("")
            for a in doc["analyses"]:
                lines += _analysis(doc, a, classes, pairs, reported)
    return "\n".join(lines).rstrip() + "\n"


def perclass_report(output_dir: str | Path, task: str, model: str | None = None, *,
                    classes: int = DEFAULT_CLASSES, pairs: int = DEFAULT_PAIRS) -> str:
    """:func:`perclass_runs`, rendered (:func:`render`)."""
    return render(perclass_runs(output_dir, task, model), task, classes=classes, pairs=pairs)
