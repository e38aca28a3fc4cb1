"""Per-class analysis of a classification, probe or few-shot result, from its per-sample records
(:mod:`evalkit.records`): per class its support (test samples), the samples it got right and its
accuracy with an interval, the most-confused class pairs, the classes without a test sample, and
the class names that are identical or differ only in case, whitespace or punctuation.

The shared runner writes it beside the result as ``<task>[.<part>].perclass.jsonl`` (one per
records file: a task of several splits has one per split), atomically, as a result is written;
a run without records writes none and removes an earlier run's. JSON Lines, as the predictions
files are, so that every ``*.json`` of a results folder stays a result: the first line is the
header (task, records file and its SHA-256, class count, where the names came from, the interval
options, the duplicate-name groups), then one line per analysis (a transform; few-shot: a
transform and K). :func:`read_sidecar` reads it back as one document. ``evalkit report --task T``
prints it (:mod:`evalkit.reporting.perclass`), and computes it from the records where a result
has no sidecar (one written before sidecars existed).

What is counted:

* ``classification`` / ``probe``: a sample is right when ``top_classes[:, 0] == target``, as
  ``acc1`` counts it (so the classes' ``correct`` add up to ``acc1 · N``; ``pred``, which
  ``mean_per_class_recall`` counts, differs from it only where the top logits tie exactly). The
  confusion of a sample is (its target → that top-1).
* ``fewshot``: one analysis per K, over its seeds: ``correct`` is the mean over seeds of the
  samples right (so ``accuracy`` is the class's share of ``acc1@{K}shot``) and the confusion
  counts are means over seeds too. Its interval takes the class's test samples as the sample
  (each scoring the share of seeds it was right under) at the seed-mean accuracy: averaging over
  seeds can only lower a sample's variance below a 0/1 outcome's, so the proportion's interval
  over those samples is conservative, never too narrow.

The interval is the result's proportion interval (``evalkit.ci_options``: Wilson's, or
Clopper–Pearson's, at its level; :func:`evalkit.stats.proportion_interval`). Class names come
from the records (the names the classifier was built from, projected onto the label groups where
the task has them), else the task's own (its ``classnames`` / ``classnames_file``), else the data's;
a list that does not fit the records' classes is not used (``classnames_source: none``) and the
classes are named ``class <i>``.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import OutputError
from evalkit.records import SUFFIX as RECORDS_SUFFIX
from evalkit.results import atomic_write_text
from evalkit.stats import DEFAULT_LEVEL, PROPORTION_METHODS, Interval, proportion_interval

__all__ = ["KINDS", "SCHEMA", "SUFFIX", "TOP_PAIRS", "analyse", "class_names", "n_classes_of", "name_groups", "normalized_name",
           "perclass_document", "read_sidecar", "runner_classnames", "sidecar_for", "sidecar_text", "write_sidecar"]

SCHEMA = 1
SUFFIX = ".perclass.jsonl"
#: the record kinds that have classes
KINDS = ("classification", "probe", "fewshot")
#: confused pairs kept in the sidecar, most frequent first
TOP_PAIRS = 25


def sidecar_for(records_file: str | Path) -> Path:
    """``<task>[.<part>].perclass.jsonl``: the sidecar of the records file ``<task>[.<part>].records.npz``."""
    records_file = Path(records_file)
    if not records_file.name.endswith(RECORDS_SUFFIX):
        raise ValueError(f"{records_file}: not a records file name (…{RECORDS_SUFFIX})")
    return records_file.with_name(records_file.name[: -len(RECORDS_SUFFIX)] + SUFFIX)


# ----------------------------------------------------------------------------- class names

def normalized_name(name: str) -> str:
    """What two class names share when they differ only in case, whitespace or punctuation:
    NFKC-normalised, case-folded, with every whitespace, separator and punctuation character
    (Unicode categories Z* and P*) removed (``"T-shirt"``, ``"t shirt"`` and ``"tshirt."`` -> ``"tshirt"``)."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if not c.isspace() and unicodedata.category(c)[0] not in "PZ")


def name_groups(names: Sequence[str]) -> list[dict[str, Any]]:
    """The classes whose names are identical or differ only in case, whitespace or punctuation
    (:func:`normalized_name`): one group per shared form, in the order of their first class, each
    ``{"key": form, "identical": all names equal, "classes": [[index, name], ...]}``."""
    by_key: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_key.setdefault(normalized_name(name), []).append(i)
    return [{"key": key, "identical": len({names[i] for i in members}) == 1,
             "classes": [[i, names[i]] for i in members]}
            for key, members in by_key.items() if len(members) > 1]


def class_names(names: Sequence[str] | None, label_groups: Sequence[Sequence[int]] | None,
                n_classes: int) -> list[str] | None:
    """The name of each of the ``n_classes`` labels scored: ``names`` itself, or, where labels are
    groups of classifier classes (ObjectNet's mapping, a class subset), each group's names joined by
    `` / ``. None where the names do not fit the labels (a list of another length)."""
    if names is None:
        return None
    names = [str(n) for n in names]
    if label_groups is not None:
        if len(label_groups) != n_classes or any(not 0 <= j < len(names) for g in label_groups for j in g):
            return None
        return [" / ".join(names[j] for j in g) for g in label_groups]
    return names if len(names) == n_classes else None


def runner_classnames(spec: Any, records_meta: Mapping[str, Any], data: Any, n_classes: int
                      ) -> tuple[list[str] | None, str]:
    """The names of a run's labels and where they came from (``records``, ``task file``, ``data``
    or ``none``): the names the family recorded, else the task's (``spec.classnames``), else the
    data's (``data.classnames``), projected onto the data's label groups."""
    groups = records_meta.get("label_groups") if "classnames" in records_meta else getattr(data, "label_groups", None)
    for source, names in (("records", records_meta.get("classnames")), ("task file", getattr(spec, "classnames", None)),
                          ("data", getattr(data, "classnames", None))):
        if names:
            fitted = class_names(names, groups, n_classes)
            return (fitted, source) if fitted is not None else (None, "none")
    return None, "none"


# ----------------------------------------------------------------------------- the analysis

def _interval(correct: float, support: int, level: float, method: str,
              cache: dict[tuple[float, int], Interval]) -> Interval:
    """The proportion's interval of ``correct`` of ``support``; a seed-mean count (few-shot, not a
    whole number) through statsmodels' interval of the same name, which takes fractional counts."""
    key = (correct, support)
    if key not in cache:
        if float(correct).is_integer():
            cache[key] = proportion_interval(int(correct), support, level=level, method=method)
        else:
            from statsmodels.stats.proportion import proportion_confint

            if method not in PROPORTION_METHODS:
                raise ValueError(f"unknown proportion interval {method!r}: choose from {sorted(PROPORTION_METHODS)}")
            low, high = proportion_confint(correct, support, alpha=1 - level, method=PROPORTION_METHODS[method])
            cache[key] = Interval(max(0.0, float(low)), min(1.0, float(high)), level, method)
    return cache[key]


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def analyse(target: np.ndarray, preds: np.ndarray, n_classes: int, names: Sequence[str] | None = None, *,
            level: float = DEFAULT_LEVEL, method: str = "wilson", top: int = TOP_PAIRS) -> dict[str, Any]:
    """One analysis: ``target`` (N labels) against ``preds`` (S × N top-1s, S runs whose counts are
    averaged: 1, or a few-shot K's seeds). A label or prediction outside ``range(n_classes)`` is a
    ValueError naming it."""
    target = np.asarray(target).astype(np.int64)
    preds = np.atleast_2d(np.asarray(preds)).astype(np.int64)
    if preds.shape[1] != target.shape[0] or preds.shape[0] == 0:
        raise ValueError(f"per-class analysis: {preds.shape} predictions for {target.shape[0]} samples")
    for what, values in (("label", target), ("prediction", preds)):
        bad = (values < 0) | (values >= n_classes)
        if bad.any():
            raise ValueError(f"per-class analysis: {what} {int(values[bad].flat[0])} is outside the "
                             f"{n_classes} classes")
    runs = preds.shape[0]
    name = (lambda i: names[i]) if names is not None else (lambda i: f"class {i}")
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)  # [true, predicted], summed over runs
    for row in preds:
        confusion += np.bincount(target * n_classes + row, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    support = np.bincount(target, minlength=n_classes)
    correct = np.diag(confusion) / runs
    cache: dict[tuple[float, int], Interval] = {}
    classes = []
    for i in range(n_classes):
        n = int(support[i])
        row: dict[str, Any] = {"class": i, "name": name(i), "support": n, "correct": _number(correct[i])}
        if n:
            iv = _interval(float(correct[i]), n, level, method, cache)
            row.update(accuracy=float(correct[i] / n), ci=[iv.low, iv.high])
        else:
            row.update(accuracy=None, ci=None)
        classes.append(row)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    cells = np.flatnonzero(off)
    order = cells[np.lexsort((cells, -off.flat[cells]))][:top]  # most frequent first, then by (true, predicted)
    pairs = []
    for cell in order:
        t, p = divmod(int(cell), n_classes)
        count = off[t, p] / runs
        pairs.append({"true": t, "true_name": name(t), "pred": p, "pred_name": name(p), "count": _number(count),
                      "share": float(count / support[t])})
    total = float(correct.sum())
    return {"samples": int(target.shape[0]), "runs": runs, "correct": _number(total),
            "accuracy": total / target.shape[0] if target.shape[0] else None, "classes": classes,
            "zero_support": [{"class": i, "name": name(i)} for i in np.flatnonzero(support == 0).tolist()],
            "confused_pairs": pairs, "confused_pairs_total": int(cells.size)}


def n_classes_of(kind: str, arrays: Mapping[str, Mapping[str, np.ndarray]], meta: Mapping[str, Any]) -> int:
    """The records' classes: ``meta["n_classes"]``, else (a probe that took its classes from
    its labels) the largest label or prediction + 1."""
    declared = meta.get("n_classes")
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
        return declared
    seen = 0
    for a in arrays.values():
        for name in ("target", "top_classes" if kind != "fewshot" else "pred"):
            if a[name].size:
                seen = max(seen, int(np.max(a[name])) + 1)
    return seen


def perclass_document(kind: str, arrays: Mapping[str, Mapping[str, np.ndarray]], meta: Mapping[str, Any],
                      names: Sequence[str] | None, names_source: str, *, level: float = DEFAULT_LEVEL,
                      method: str = "wilson", top: int = TOP_PAIRS) -> dict[str, Any]:
    """The per-class analysis of one records file's arrays (per mode; ``meta``: the records' meta,
    for ``n_classes``, ``task`` and ``part``) as the sidecar holds it: the class names' duplicate
    groups, and one analysis per mode (few-shot: per mode and K)."""
    if kind not in KINDS:
        raise ValueError(f"per-class analysis: records of kind {kind!r} have no classes (kinds: {', '.join(KINDS)})")
    n_classes = n_classes_of(kind, arrays, meta)
    if names is not None and len(names) != n_classes:
        names, names_source = None, "none"
    analyses = []
    for mode, a in arrays.items():
        if kind == "fewshot":
            shots = np.asarray(a["shots"])
            for k in dict.fromkeys(shots.tolist()):
                analyses.append({"mode": mode, "shots": int(k),
                                 **analyse(a["target"], np.asarray(a["pred"])[shots == k], n_classes, names,
                                           level=level, method=method, top=top)})
        else:
            analyses.append({"mode": mode, "shots": None,
                             **analyse(a["target"], np.asarray(a["top_classes"])[:, 0], n_classes, names,
                                       level=level, method=method, top=top)})
    return {"schema": SCHEMA, "kind": kind, "task": meta.get("task"), "part": meta.get("part"),
            "n_classes": n_classes, "classnames_source": names_source,
            "ci_options": {"level": level, "proportion": method},
            "duplicate_names": name_groups(names) if names is not None else [], "analyses": analyses}


def sidecar_text(doc: Mapping[str, Any]) -> str:
    """A document (:func:`perclass_document`) as the sidecar's JSON Lines: its header, then one
    line per analysis."""
    header = {k: v for k, v in doc.items() if k != "analyses"}
    return "".join(json.dumps(x, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"
                   for x in (header, *doc["analyses"]))


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """A sidecar read back as the document it was written from. A file that is not one (missing,
    not JSON Lines, without its header) is a ValueError or OSError naming it."""
    path = Path(path)
    try:
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except ValueError as e:
        raise ValueError(f"{path}: not a per-class analysis (JSON Lines): {e}") from None
    if not lines or not all(isinstance(x, dict) for x in lines) or lines[0].get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a per-class analysis of schema {SCHEMA} (a header line, then one line per analysis)")
    return {**lines[0], "analyses": lines[1:]}


def write_sidecar(records_file: str | Path, entry: Mapping[str, Any] | None, scored: Any, *, spec: Any = None,
                  data: Any = None, run: Any = None, part: str | None = None) -> Path | None:
    """The runner's hook: the sidecar of the records file just written (``entry``: what the result
    records of it, :func:`evalkit.records.result_entry`; ``scored``: the family's
    :class:`~evalkit.tasks.common.Scored`, its ``records``, ``records_kind`` and ``records_meta``),
    or, for a run without records or of a kind without classes, no sidecar and an earlier run's
    removed. ``spec`` and ``data``: the task and its test data (for class names); ``run``: the
    run's options (``ci_level``, ``proportion_interval``). Returns the path written, or None."""
    path = sidecar_for(records_file)
    kind, arrays = scored.records_kind, scored.records
    if entry is None or kind not in KINDS or not arrays:
        path.unlink(missing_ok=True)
        return None
    meta = {**scored.records_meta, "task": getattr(spec, "name", None), "part": part}
    names, source = runner_classnames(spec, meta, data, n_classes_of(kind, arrays, meta))
    doc = perclass_document(kind, arrays, meta, names, source,
                            level=float(getattr(run, "ci_level", DEFAULT_LEVEL)),
                            method=str(getattr(run, "proportion_interval", "wilson")))
    doc.update(records=Path(records_file).name, records_sha256=(entry.get("sha256") or [None])[0])
    try:
        atomic_write_text(path, sidecar_text(doc))
    except OSError as e:
        raise OutputError(f"cannot write the per-class analysis {path}: {e.strerror or e}") from e
    return path
