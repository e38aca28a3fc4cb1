"""The protocol envelope: a finished zero-shot classification run re-scored under the protocol
variants a paper might have used, from the cached image features alone (``evalkit envelope``).

A paper's number and ours may differ because the paper chose another protocol: other prompt
templates, other class names, another image transform. The envelope scores the run's own cached
features (:func:`evalkit.features.embed.cached_embeddings`: nothing decoded, no image forward
pass) under every combination of

* **templates**: the task's own; each template set evalkit ships for the task (the task file's
  ``envelope.templates_files``, e.g. PCam's OpenAI and clip_benchmark sets); and one generic
  prompt, :data:`SINGLE_PROMPT`, for every task;
* **class names**: the task's own; each class-name set evalkit ships for it
  (``envelope.classnames_files``, e.g. EuroSAT's folder names); and the dataset's own names
  where its source provides names that differ from the task's (a WebDataset's
  ``classnames.txt``, a torchvision meta file);
* **transform**: crop, squash and best-of-both (each metric's maximum over the two, Table 2's
  rule), each only where the run's cache holds that transform's features. A transform not cached
  is listed with the ``evalkit run ... --transform`` command that caches it, never encoded here.

Only text is encoded (each classifier through the feature cache, so a second call encodes
nothing), and each variant is scored by the task family's own ``score`` (the classifier, label
groups, clip_benchmark's metrics), so the value of the run's own protocol equals the result's
metric exactly. Per task the envelope gives the range [min, max] of the primary metric over the
variants, and for each claim of the model on the task (:func:`evalkit.reporting.claims.load_claims`,
matched on protocol tags as ``evalkit report`` matches them) whether the claim lies inside it: a
claim printed to d decimals stands for [c − ½·10⁻ᵈ, c + ½·10⁻ᵈ], and lies inside when that
interval meets the range ("a protocol choice could explain this gap"), else "no shipped protocol
variant reaches the claim". A ``--limit`` run's claims are ``partial``: never judged.

The ``envelope:`` block of a task file (data, not code)::

    envelope:
      templates_files: [../templates/pcam_clip_benchmark.txt, ../templates/pcam_openai.txt]
      classnames_files:
        - ../classnames/eurosat_folders.txt                 # one name a line, in label order
        - {file: ../classnames/ucf101_folders.txt, column: 2, order: by_name}

A file may list the task's own set too (it then only names the task's own row). ``column``: each
name is its line from that whitespace-separated field on (1-based; default: the whole line);
``order: by_name``: the file lists the classes in another order, and each name is matched to the
task's class of the same normalised name (case, spaces and punctuation ignored), every class once.
A class-name set must have as many names as the task has classes (else an error naming the file).

Zero-shot classification only (images, video frames, 3D depth views): a retrieval or
linear-probe task has no envelope (said, not an error). The result is written beside the run's
result as ``<task>.envelope.json`` (:func:`TaskEnvelope.to_dict`; values are fractions, as in the
result JSON, claims in percent, as in the claims files).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evalkit.data.root import default_data_root
from evalkit.data.sources import normalise_name
from evalkit.errors import EvalkitError, OptionError, OutputError
from evalkit.features.cache import FeatureCache, default_cache_dir, run_cache_dir
from evalkit.features.embed import Embeddings, cached_embeddings
from evalkit.metric_table import metric_value
from evalkit.models.encoder import Encoder
from evalkit.models.family import LoadOptions
from evalkit.reporting.catalog import Catalog, load_catalog
from evalkit.reporting.claims import canonical_tag, load_claims, split_protocol
from evalkit.results import (
    DEFAULT_VARIANT,
    TaskResult,
    atomic_write_text,
    iter_results,
    path_of,
    result_limit,
    result_path,
    result_variant,
)
from evalkit.tasks import load_builtin_families
from evalkit.tasks.base import RunContext
from evalkit.tasks.common import combine_splits, combine_transforms, task_view
from evalkit.tasks.runspec import RunSpec
from evalkit.tasks.spec import TaskIndex, TaskSpec, TaskSpecError, read_list_file
from evalkit.views.base import BEST_OF_BOTH, TRANSFORMS

__all__ = [
    "SINGLE_PROMPT", "INSIDE", "OUTSIDE", "OWN", "ENVELOPE_SUFFIX", "EnvelopeInputError", "TextSet", "Variant", "ClaimCheck",
    "TaskEnvelope", "EnvelopeReport", "envelope", "envelope_path", "check_block", "text_sets",
]

#: the generic one-prompt protocol every task's envelope includes
SINGLE_PROMPT = "a photo of a {c}."
#: what a claim inside the envelope's range, and one outside it, is told
INSIDE = "a protocol choice could explain this gap"
OUTSIDE = "no shipped protocol variant reaches the claim"
OWN = "the run's own protocol prints as the claim: no gap to explain"
#: the file written beside a task's result
ENVELOPE_SUFFIX = ".envelope.json"
#: the task families the envelope re-scores (by the name their task files give)
FAMILIES = ("classification",)
ENVELOPE_KEYS = ("templates_files", "classnames_files")
CLASSNAMES_ENTRY_KEYS = ("file", "column", "order")
ORDERS = ("label", "by_name")


class EnvelopeInputError(EvalkitError, FileNotFoundError):
    """No result, or no cached features, for a task the envelope was asked for; the message names
    the task and the ``evalkit run`` command that makes them."""


# ----------------------------------------------------------------------------- the variants


@dataclass(frozen=True)
class TextSet:
    """One set of templates or of class names: how the tables name it, its entries, and the file
    it was read from (None: the task's own list, the data's, or the single prompt)."""

    label: str
    items: tuple[str, ...]
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "file": self.file, "n": len(self.items)}


@dataclass
class Variant:
    """One protocol: a template set, a class-name set and a transform, with its metrics (fractions,
    as a result's) and whether it is the run's own protocol."""

    templates: str
    classnames: str
    transform: str
    metrics: dict[str, float]
    own: bool = False

    def value(self, metric: str) -> float | None:
        return metric_value(self.metrics, metric)

    def to_dict(self, metric: str) -> dict[str, Any]:
        return {"templates": self.templates, "classnames": self.classnames, "transform": self.transform,
                "value": self.value(metric), "own": self.own, "metrics": dict(self.metrics)}


@dataclass
class ClaimCheck:
    """One claim of the model on the task against the envelope's range (percent, as claims are)."""

    claimed: float
    metric: str
    transform: str
    protocol: str
    origin: str
    low: float | None = None
    high: float | None = None
    inside: bool | None = None
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TaskEnvelope:
    """The envelope of one task: its variants, the range of the primary metric over them, the
    transforms the cache lacks, and the model's claims on the task held against the range."""

    task: str
    model: str
    run: str  # the result's variant (fp32, int8, fp32+limit100 ...)
    metric: str
    result_file: Path
    result_value: float | None
    samples: int
    limit: int | None
    template_sets: list[TextSet]
    classname_sets: list[TextSet]
    transforms: tuple[str, ...]  # the columns: every transform of the task's view
    variants: list[Variant]
    not_cached: dict[str, str] = field(default_factory=dict)  # transform -> what to run to cache it
    claims: list[ClaimCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    classifiers: int = 0
    classifiers_cached: int = 0
    text_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def own(self) -> Variant:
        return next(v for v in self.variants if v.own)

    @property
    def own_value(self) -> float | None:
        return self.own.value(self.metric)

    def range(self, metric: str | None = None) -> tuple[float, float] | None:
        """(min, max) of ``metric`` (default: the primary) over the variants, as fractions."""
        values = [v.value(metric or self.metric) for v in self.variants]
        present = [x for x in values if x is not None]
        return (min(present), max(present)) if present else None

    def to_dict(self) -> dict[str, Any]:
        lo_hi = self.range()
        own = self.own
        return {
            "task": self.task, "model": self.model, "run": self.run, "result": str(self.result_file),
            "metric": self.metric, "units": "fractions (as the result JSON); claims in percent (as claims.csv)",
            "samples": self.samples, "limit": self.limit,
            "result_value": self.result_value,
            "own": {"templates": own.templates, "classnames": own.classnames, "transform": own.transform,
                    "value": self.own_value},
            "own_matches_result": self.own_value == self.result_value,
            "range": list(lo_hi) if lo_hi is not None else None,
            "n_variants": len(self.variants),
            "template_sets": [t.to_dict() for t in self.template_sets],
            "classname_sets": [c.to_dict() for c in self.classname_sets],
            "transforms": {t: self.not_cached.get(t, "cached") for t in self.transforms},
            "variants": [v.to_dict(self.metric) for v in self.variants],
            "claims": [c.to_dict() for c in self.claims],
            "notes": list(self.notes),
            "text": {"classifiers": self.classifiers, "cached": self.classifiers_cached,
                     "seconds": round(self.text_seconds, 4)},
            "seconds": round(self.seconds, 4),
        }

    def format(self) -> str:
        """The envelope as a table (percent), its range, the uncached transforms and the claims."""
        run = "" if self.run == DEFAULT_VARIANT else f" [{self.run}]"
        lines = [f"{self.task} · {self.model}{run} · {self.metric} (%) · {self.samples} samples"
                 + (f" (--limit {self.limit})" if self.limit is not None else "")]
        cells = {(v.templates, v.classnames, v.transform): v for v in self.variants}
        rows = []
        for t, c in itertools.product(self.template_sets, self.classname_sets):
            row = [t.label, c.label]
            for m in self.transforms:
                v = cells.get((t.label, c.label, m))
                row.append("—" if v is None or v.value(self.metric) is None
                           else f"{100 * v.value(self.metric):.2f}" + ("*" if v.own else ""))  # type: ignore[operator]
            rows.append(row)
        header = ["templates", "class names", *self.transforms]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            lines.append("  " + "  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w)
                                          for i, (x, w) in enumerate(zip(r, widths, strict=True))))
        for m, hint in self.not_cached.items():
            lines.append(f"  {m}: {hint}")
        lo_hi = self.range()
        if lo_hi is not None:
            lines.append(f"  range [{100 * lo_hi[0]:.2f}, {100 * lo_hi[1]:.2f}] over {len(self.variants)} variants; "
                         f"* the run's own protocol: {_pct(self.own_value)} (the result: {_pct(self.result_value)})")
        for note in self.notes:
            lines.append(f"  note: {note}")
        if self.claims:
            lines.append("  claims:")
            for c in self.claims:
                what = " ".join(x for x in (c.metric, c.transform, c.protocol) if x)
                lines.append(f"    {c.claimed!r} {what} ({Path(c.origin).name}): {c.verdict}")
        else:
            lines.append("  claims: none for this model and task")
        lines.append(f"  text: {self.classifiers} classifiers ({self.classifiers_cached} from the cache), "
                     f"{self.text_seconds:.2f} s; envelope {self.seconds:.2f} s")
        return "\n".join(lines)


@dataclass
class EnvelopeReport:
    """Every task asked for: its envelope, or why it has none (``unsupported``: the family has no
    envelope; ``failures``: no result or no cached features, with the command that makes them)."""

    envelopes: list[TaskEnvelope] = field(default_factory=list)
    unsupported: list[tuple[str, str]] = field(default_factory=list)  # (task, family)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (task, why)
    load_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0, or 2 (a usage error: the run to envelope is missing) when a task failed or no task
        had an envelope."""
        return 2 if self.failures or not self.envelopes else 0

    def to_dict(self) -> dict[str, Any]:
        return {"envelopes": [e.to_dict() for e in self.envelopes],
                "unsupported": [{"task": t, "family": f, "why": unsupported_line(t, f)} for t, f in self.unsupported],
                "failures": [{"task": t, "error": why} for t, why in self.failures],
                "load_seconds": round(self.load_seconds, 4), "seconds": round(self.seconds, 4)}

    def format(self) -> str:
        parts = [e.format() for e in self.envelopes]
        parts += [unsupported_line(t, f) for t, f in self.unsupported]
        return "\n\n".join(parts)


def unsupported_line(task: str, family: str) -> str:
    return (f"{task}: no envelope for this family ({family}): the envelope re-scores zero-shot classification "
            f"under other templates, class names and transforms")


def envelope_path(output_dir: str | Path, result: TaskResult) -> Path:
    """Where the envelope of ``result``'s task is written: ``<task>.envelope.json`` beside it."""
    name = str(result.evalkit.get("result_name") or result.dataset)
    return result_path(output_dir, result.model, name, ENVELOPE_SUFFIX, variant=result_variant(result))


# ----------------------------------------------------------------------------- the entry point


def envelope(model: str, tasks: str | Sequence[str], *, output_dir: str | Path = "results",
             cache_dir: str | Path | None = None, data_root: str | Path | None = None,
             task_dirs: Sequence[str | Path] = (), variant: str | None = None, frames: str | None = None,
             weights: str | None = None, device: str | None = None,
             claims: pd.DataFrame | str | Path | Iterable[str | Path] | None = None,
             write: bool = True, progress: bool = False) -> EnvelopeReport:
    """The protocol envelope of ``model`` on ``tasks`` (names, aliases or groups), from the results
    in ``output_dir`` and the features in ``cache_dir`` (None: ``$EVALKIT_CACHE``, else
    ~/.cache/evalkit), written beside each result unless ``write`` is False. The model is loaded
    as each result records it (precision, other weights, a point encoder's text tower; ``weights``
    and ``device`` override) and must have the result's fingerprint. ``variant`` picks one result
    where a task has several (fp32 and int8); ``frames``: a video task's result under another frame
    sampler. ``claims``: claims files or a table (default: the claims evalkit ships). A task whose
    result or features are missing is a failure of the report (:attr:`EnvelopeReport.failures`),
    the other tasks still run; a bad option or task file raises."""
    started = time.perf_counter()
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise OptionError("no tasks given (--tasks)")
    specs = TaskIndex.load(extra=[Path(d) for d in task_dirs]).resolve(names, run=False)
    load_builtin_families()
    from evalkit.registry import task_families

    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    report = EnvelopeReport()
    loaded: dict[tuple[Any, ...], Encoder] = {}
    catalog = load_catalog()
    claims_table: pd.DataFrame | None = None
    cache = FeatureCache(cache_root)
    hint = _RunHint(model, output_dir, cache_dir, data_root, task_dirs, frames)
    with run_cache_dir(cache_root):  # where a source that generates its files (the demo's clips) finds them
        for spec in specs:
            if spec.family not in FAMILIES:
                report.unsupported.append((spec.name, spec.family))
                continue
            family = task_families.get(spec.family)()
            family.validate(spec)
            check_block(spec)  # a bad task file is said before any result, data or weights are read
            try:
                result, encoder, load_s = _result_and_encoder(spec, family, model, output_dir, variant, frames,
                                                              weights, device, loaded, hint)
                report.load_seconds += load_s
                if claims_table is None:
                    claims_table = _claims(claims, catalog)
                env = _task_envelope(spec, family, result, encoder, cache, default_data_root(data_root),
                                     frames, hint, progress)
            except EnvelopeInputError as e:
                report.failures.append((spec.name, str(e)))
                continue
            env.result_file = path_of(result, output_dir)
            env.claims = _check_claims(env, result, claims_table, catalog)
            if write:
                path = envelope_path(output_dir, result)
                try:
                    atomic_write_text(path, json.dumps(env.to_dict(), indent=2) + "\n")
                except OSError as e:
                    raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
            report.envelopes.append(env)
    report.seconds = time.perf_counter() - started
    return report


@dataclass(frozen=True)
class _RunHint:
    """The ``evalkit run`` command that produces what an envelope lacks."""

    model: str
    output_dir: str | Path
    cache_dir: str | Path | None
    data_root: str | Path | None
    task_dirs: Sequence[str | Path]
    frames: str | None

    def command(self, task: str, transform: str | None = None) -> str:
        parts = ["evalkit run --model", self.model, "--tasks", task]
        if transform:
            parts += ["--transform", transform]
        if self.frames:
            parts += ["--frames", self.frames]
        if self.data_root is not None:
            parts += ["--data-root", str(self.data_root)]
        if str(self.output_dir) != "results":
            parts += ["--output-dir", str(self.output_dir)]
        if self.cache_dir is not None:
            parts += ["--cache-dir", str(self.cache_dir)]
        parts += [x for d in self.task_dirs for x in ("--task-dir", str(d))]
        return "`" + " ".join(parts) + "`"


def _claims(claims: pd.DataFrame | str | Path | Iterable[str | Path] | None, catalog: Catalog) -> pd.DataFrame:
    if isinstance(claims, pd.DataFrame):
        return claims.fillna({c: "" for c in ("transform", "protocol", "origin") if c in claims})
    return load_claims(claims, catalog=catalog)


# ----------------------------------------------------------------------------- the run to re-score


def _result_and_encoder(spec: TaskSpec, family: Any, model: str, output_dir: str | Path, variant: str | None,
                        frames: str | None, weights: str | None, device: str | None,
                        loaded: dict[tuple[Any, ...], Encoder], hint: _RunHint) -> tuple[TaskResult, Encoder, float]:
    """The task's result in ``output_dir`` (one variant) and the model as it ran it."""
    name = task_view(spec, family, frames=frames).result_name(spec.name)
    found = [r for r in iter_results(output_dir, model)
             if r.model == model and str(r.evalkit.get("result_name") or r.dataset) == name]
    if variant is not None:
        others = sorted({result_variant(r) for r in found})
        found = [r for r in found if result_variant(r) == variant]
        if not found and others:
            raise EnvelopeInputError(f"{name}: no result of {model} of variant {variant} in {output_dir} "
                                     f"(there are: {', '.join(others)}); choose one with --variant")
    if not found:
        raise EnvelopeInputError(f"{name}: no result of {model} in {output_dir}; run {hint.command(spec.name)} "
                                 f"first (the envelope re-scores its cached features)")
    if len(found) > 1:
        raise EnvelopeInputError(f"{name}: {len(found)} results of {model} in {output_dir} "
                                 f"({', '.join(sorted(result_variant(r) for r in found))}); choose one with --variant")
    result = found[0]
    ev = result.evalkit
    precision = str(ev.get("precision") or DEFAULT_VARIANT)
    run_weights = weights if weights is not None else (ev.get("weights") if _other_weights(result) else None)
    text_model = ev.get("text_model")
    key = (precision, run_weights, text_model, device)
    load_s = 0.0
    if key not in loaded:
        from evalkit import models

        t0 = time.perf_counter()
        loaded[key] = models.load(model, weights=run_weights, precision=precision, device=device or _device(),
                                  options=LoadOptions(text_model=text_model))
        load_s = time.perf_counter() - t0
    encoder = loaded[key]
    if ev.get("fingerprint") and encoder.fingerprint != ev["fingerprint"]:
        raise EnvelopeInputError(
            f"{name}: the model loaded ({model}, {precision}, fingerprint {encoder.fingerprint}) is not the one that "
            f"produced {path_of(result, output_dir)} (fingerprint {ev['fingerprint']}, weights {ev.get('weights')}); "
            f"give its --weights, or rerun {hint.command(spec.name)}")
    return result, encoder, load_s


def _other_weights(result: TaskResult) -> bool:
    """Whether the result's variant says it ran weights other than its card's own."""
    ran = re.sub(r"\+limit\d+$", "", result_variant(result)).split("+text-")[0]
    return ran != str(result.evalkit.get("precision") or ran)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _task_envelope(spec: TaskSpec, family: Any, result: TaskResult, encoder: Encoder, cache: FeatureCache,
                   data_root: str | Path | None, frames: str | None, hint: _RunHint, progress: bool) -> TaskEnvelope:
    started = time.perf_counter()
    ev = result.evalkit
    metric = str(ev.get("metric") or spec.metric)
    limit = result_limit(result)
    ran = ev.get("transform")
    own_view = task_view(spec, family, transform=ran if ran in (*TRANSFORMS, BEST_OF_BOTH) else None,
                         frames=frames).resolve(encoder)
    # every transform the view can take (best-of-both builds both), or the view's one mode
    every = (task_view(spec, family, transform=BEST_OF_BOTH, frames=frames).resolve(encoder)
             if hasattr(own_view, "transform") else own_view)
    runtime = every.build(encoder)
    parts = spec.split_specs() or [({}, spec)]
    prepared = [family.prepare(sub, data_root) for _, sub in parts]
    # each split's cached features per transform; a transform missing from any split is not cached
    features: list[dict[str, Embeddings]] = []
    missing: set[str] = set()
    for p in prepared:
        here = {}
        for mode, view in runtime.items():
            emb = cached_embeddings(encoder, p.data, view, cache, limit=limit)
            if emb is None:
                missing.add(mode)
            else:
                here[mode] = emb
        features.append(here)
    own_modes = tuple(own_view.modes)
    if any(m in missing for m in own_modes):
        raise EnvelopeInputError(
            f"{spec.name}: no cached features of {encoder.name} under its run's view ({own_view.mode}) in "
            f"{cache.root}; run {hint.command(spec.name, ran if ran in (*TRANSFORMS, BEST_OF_BOTH) else None)} "
            f"with the cache on first (the envelope encodes no image)")
    modes = [m for m in runtime if m not in missing]
    columns: list[str] = list(runtime)
    not_cached = {m: f"not cached: run {hint.command(spec.name, m)} first" for m in runtime if m in missing}
    if set(TRANSFORMS) <= set(runtime):
        columns.append(BEST_OF_BOTH)
        lacking = [m for m in TRANSFORMS if m in missing]
        if lacking:
            not_cached[BEST_OF_BOTH] = f"not cached: needs {' and '.join(TRANSFORMS)} ({', '.join(lacking)} is not cached)"
        elif all(f["crop"].keys == f["squash"].keys for f in features):
            modes.append(BEST_OF_BOTH)
        else:  # cached by runs that scored different samples: best-of-both compares like with like
            not_cached[BEST_OF_BOTH] = ("not cached: the cached crop and squash features cover different samples; "
                                        f"run {hint.command(spec.name, BEST_OF_BOTH)} first")
    notes: list[str] = []
    template_sets, classname_sets = text_sets(spec, own_view, prepared[0], notes)
    ctx = RunContext(RunSpec(progress=progress, save_predictions=False), cache=cache)
    variants: list[Variant] = []
    classifiers = cached_classifiers = 0
    text_s = 0.0
    own_mode = BEST_OF_BOTH if len(own_modes) > 1 else own_modes[0]
    for t, c in itertools.product(template_sets, classname_sets):
        per_split: list[dict[str, dict[str, float]]] = []
        for sub_prepared, feats, (_, sub) in zip(prepared, features, parts, strict=True):
            scored = family.score(
                dataclasses.replace(sub, view_spec=None),  # the templates given here, not the view's prompts
                encoder, ctx, dataclasses.replace(sub_prepared, classnames=list(c.items), templates=list(t.items)),
                {m: feats[m] for m in modes if m != BEST_OF_BOTH})
            classifiers += 1
            cached_classifiers += bool(scored.evalkit.get("classifier_cached"))
            text_s += float(scored.evalkit.get("classifier_seconds") or 0.0)
            by_mode = dict(scored.metrics)
            if BEST_OF_BOTH in modes:
                by_mode[BEST_OF_BOTH] = combine_transforms({m: scored.metrics[m] for m in TRANSFORMS})
            per_split.append(by_mode)
        for m in modes:
            split_metrics = [s[m] for s in per_split]
            # a task of several splits reports each metric's mean over them, as evalkit run does
            metrics = combine_splits(split_metrics) if spec.split_specs() else split_metrics[0]
            own = t is template_sets[0] and c is classname_sets[0] and m == own_mode
            variants.append(Variant(t.label, c.label, m, metrics, own))
    return TaskEnvelope(
        task=spec.name, model=result.model, run=result_variant(result), metric=metric,
        result_file=Path(), result_value=metric_value(result.metrics, metric),
        samples=sum(len(f[own_modes[0]].keys) for f in features), limit=limit,
        template_sets=template_sets, classname_sets=classname_sets, transforms=tuple(columns), variants=variants,
        not_cached=not_cached, notes=notes, classifiers=classifiers, classifiers_cached=cached_classifiers,
        text_seconds=text_s, seconds=time.perf_counter() - started)


# ----------------------------------------------------------------------------- templates, class names


def check_block(spec: TaskSpec) -> None:
    """The task file's ``envelope:`` block, checked before anything is loaded: its keys, its files
    (readable; templates with ``{c}``; class-name sets of the task's class count where the task
    names its classes, else once the data has named them). A problem is a TaskSpecError naming
    the task file, the key and the file."""
    where = spec.path or spec.name
    block = spec.envelope or {}
    unknown = sorted(set(block) - set(ENVELOPE_KEYS))
    if unknown:
        raise TaskSpecError(f"{where}: envelope: unknown key(s) {unknown}; allowed: {list(ENVELOPE_KEYS)}")
    for i, name in enumerate(_list(block, "templates_files", where)):
        _templates_file(spec, name, i)
    own = tuple(spec.classnames) if spec.classnames is not None else None
    for i, entry in enumerate(_list(block, "classnames_files", where)):
        _classnames_file(spec, entry, i, own)


def text_sets(spec: TaskSpec, view: Any, prepared: Any, notes: list[str]) -> tuple[list[TextSet], list[TextSet]]:
    """The template sets and the class-name sets of a task's envelope, the run's own first, each
    set once (a file that holds the task's own list names its row)."""
    where = spec.path or spec.name
    block = spec.envelope or {}
    check_block(spec)
    view_prompts = getattr(view, "prompts", None)
    own_templates = tuple(view_prompts) if view_prompts else tuple(prepared.templates)
    own_label = ("the view's own" if view_prompts else "the task's own" if spec.templates is not None
                 else "the data's own")
    shipped_t = [_templates_file(spec, f, i) for i, f in enumerate(_list(block, "templates_files", where))]
    templates = _unique([TextSet(_own_label(own_label, own_templates, shipped_t), own_templates), *shipped_t,
                         TextSet("single prompt", (SINGLE_PROMPT,))])

    own_names = tuple(prepared.classnames)
    data = prepared.data
    entries = _list(block, "classnames_files", where)
    shipped_c: list[TextSet] = []
    if entries and data.override_classnames:
        notes.append(f"this layout labels its samples in its own class order ({data.info.get('classnames_file')}); "
                     f"the shipped class-name sets, in the task's order, do not apply")
    else:
        shipped_c = [_classnames_file(spec, e, i, own_names) for i, e in enumerate(entries)]
    names = [TextSet(_own_label("the task's own" if spec.classnames is not None else "the data's own", own_names,
                                shipped_c), own_names), *shipped_c]
    if (data.classnames is not None and not data.override_classnames and data.label_groups is None
            and len(data.classnames) == len(own_names)):
        origin = data.classnames_origin or data.info.get("path") or "its source"
        names.append(TextSet(f"dataset's own ({Path(str(origin)).name})", tuple(data.classnames)))
    return templates, _unique(names)


def _own_label(default: str, items: tuple[str, ...], shipped: list[TextSet]) -> str:
    same = next((s for s in shipped if s.items == items), None)
    return f"{Path(same.file).name} ({len(items)})" if same is not None and same.file else f"{default} ({len(items)})"


def _unique(sets: list[TextSet]) -> list[TextSet]:
    """Each list once (the first name it has), in order."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for s in sets:
        if s.items not in seen:
            seen.add(s.items)
            out.append(s)
    return out


def _list(block: dict[str, Any], key: str, where: str) -> list[Any]:
    value = block.get(key, [])
    if not isinstance(value, list):
        raise TaskSpecError(f"{where}: envelope.{key} must be a list of files")
    return value


def _path(spec: TaskSpec, name: Any, key: str, where: str) -> Path:
    if not isinstance(name, str) or not name.strip():
        raise TaskSpecError(f"{where}: {key}: expected a file name, got {name!r}")
    path = Path(name).expanduser()
    return path if path.is_absolute() or spec.base_dir is None else spec.base_dir / path


def _templates_file(spec: TaskSpec, name: Any, i: int) -> TextSet:
    where, key = spec.path or spec.name, f"envelope.templates_files[{i}]"
    path = _path(spec, name, key, where)
    items = read_list_file(path, key, where)
    if not items:
        raise TaskSpecError(f"{where}: {key}: {path} holds no templates")
    bad = next((t for t in items if "{c}" not in t), None)
    if bad is not None:
        raise TaskSpecError(f"{where}: {key}: {path}: template {bad!r} has no '{{c}}' placeholder")
    return TextSet(f"{path.name} ({len(items)})", tuple(items), str(path))


def _classnames_file(spec: TaskSpec, entry: Any, i: int, own: tuple[str, ...] | None) -> TextSet:
    """A shipped class-name set, in the task's label order, as many names as the task's classes
    (``own``: the task's class names; None: not known yet, the file's names as they are)."""
    where, key = spec.path or spec.name, f"envelope.classnames_files[{i}]"
    options = entry if isinstance(entry, dict) else {"file": entry}
    unknown = sorted(set(options) - set(CLASSNAMES_ENTRY_KEYS))
    if unknown:
        raise TaskSpecError(f"{where}: {key}: unknown key(s) {unknown}; allowed: {list(CLASSNAMES_ENTRY_KEYS)}")
    path = _path(spec, options.get("file"), f"{key}.file", where)
    column, order = options.get("column"), options.get("order", "label")
    if column is not None and (isinstance(column, bool) or not isinstance(column, int) or column < 1):
        raise TaskSpecError(f"{where}: {key}.column must be a whole number >= 1 (1-based), got {column!r}")
    if order not in ORDERS:
        raise TaskSpecError(f"{where}: {key}.order must be one of {list(ORDERS)}, got {order!r}")
    lines = read_list_file(path, key, where)
    if column is not None:
        short = next((n for n, ln in enumerate(lines, 1) if len(ln.split()) < column), None)
        if short is not None:
            raise TaskSpecError(f"{where}: {key}: {path}:{short} has no column {column}")
        lines = [ln.split(None, column - 1)[column - 1] for ln in lines]
    if own is None:
        return TextSet(f"{path.name} ({len(lines)})", tuple(lines), str(path))
    if len(lines) != len(own):
        raise TaskSpecError(f"{where}: {key}: {path} has {len(lines)} class names, the task has {len(own)} classes")
    if order == "by_name":
        lines = _by_name(lines, own, path, f"{where}: {key}")
    return TextSet(f"{path.name} ({len(lines)})", tuple(lines), str(path))


def _by_name(names: list[str], own: tuple[str, ...], path: Path, where: str) -> list[str]:
    """``names`` put in the task's label order: each to the class of the same normalised name."""
    index: dict[str, int] = {}
    for i, c in enumerate(own):
        index.setdefault(normalise_name(c), i)
    placed: dict[int, str] = {}
    for n in names:
        i = index.get(normalise_name(n))
        if i is None:
            raise TaskSpecError(f"{where}: {path}: {n!r} matches no class name of the task (by normalised name)")
        if i in placed:
            raise TaskSpecError(f"{where}: {path}: {placed[i]!r} and {n!r} both match the task's class {own[i]!r}")
        placed[i] = n
    return [placed[i] for i in range(len(own))]


# ----------------------------------------------------------------------------- claims


def _check_claims(env: TaskEnvelope, result: TaskResult, claims: pd.DataFrame | None,
                  catalog: Catalog) -> list[ClaimCheck]:
    """The model's claims on the task, each against the envelope's range of its metric."""
    if claims is None or claims.empty:
        return []
    from evalkit.reporting.report import result_tags  # the report's own matching of protocol tags

    mine = claims[(claims["model"] == result.model) & (claims["task"] == env.task)]
    tags = result_tags(result, catalog)
    out = []
    for c in mine.itertuples(index=False):
        check = ClaimCheck(float(c.claimed), str(c.metric), str(c.transform or ""), str(c.protocol or ""),
                           str(getattr(c, "origin", "") or ""))
        needed = frozenset(canonical_tag(t) for t in split_protocol(check.protocol)[0])
        lo_hi = env.range(check.metric)
        if not needed <= tags:
            check.verdict = (f"not this run's protocol (the claim is for {';'.join(sorted(needed))}; the run: "
                             f"{';'.join(sorted(tags)) or 'default'})")
        elif lo_hi is None:
            check.verdict = f"the envelope has no {check.metric}"
        else:
            check.low, check.high = 100 * lo_hi[0], 100 * lo_hi[1]
            if env.limit is not None:
                check.verdict = f"partial: a --limit {env.limit} run is a subset of the task, not held against the claim"
            else:
                half = _half_unit(check.claimed)
                check.inside = check.low - half - 1e-9 <= check.claimed <= check.high + half + 1e-9
                where = f"[{check.low:.2f}, {check.high:.2f}]"
                own = env.own.value(check.metric)
                if own is not None and abs(100 * own - check.claimed) <= half + 1e-9:
                    check.verdict = f"inside {where}: {OWN}"  # no gap to explain
                else:
                    check.verdict = (f"inside {where}: {INSIDE}" if check.inside else f"outside {where}: {OUTSIDE}")
        out.append(check)
    return out


def _half_unit(claimed: float) -> float:
    """Half a unit of the claim's last printed decimal (91.6: 0.05): the claim stands for
    [c − ½·10⁻ᵈ, c + ½·10⁻ᵈ]. The decimals are those of the shortest form of the number."""
    text = repr(float(claimed))
    if "e" in text or "." not in text:
        return 0.0
    decimals = len(text.split(".")[1])
    return 0.5 * 10.0 ** (-decimals)


def _pct(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"
