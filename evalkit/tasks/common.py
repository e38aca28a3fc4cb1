"""The steps every family shares, in one place (:func:`run_task`): the task's view (parsed when the
task is resolved, :func:`with_view`; resolved against the encoder, :func:`run_view`), the one
pass that embeds its samples, the skipped-sample log, the predictions files, the provenance every
result carries, best-of-both's combination of per-transform metrics, and the result. A family
keeps only what is its own: its YAML keys, finding its data (``prepare``), and ``score`` — its
text side (classifier, captions) and its metrics."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.data.fetch import data_revision as fetched_revision
from evalkit.data.sources import DataError, SourceData
from evalkit.errors import OutputError
from evalkit.features.embed import Embeddings, embed
from evalkit.intervals import retrieval_queries
from evalkit.metrics import ranked_classes
from evalkit.models.encoder import Encoder
from evalkit.records import records_path, result_entry, write_records
from evalkit.results import TaskResult, atomic_write_text, result_path
from evalkit.tasks.base import TEST_SPLIT, RunContext, declared_splits, split_data
from evalkit.tasks.perclass import write_sidecar
from evalkit.tasks.spec import TaskSpec, TaskSpecError
from evalkit.tasks.statistics import result_statistics, split_statistics
from evalkit.views import ViewSpec, ViewSpecError, parse_view


def task_view(spec: TaskSpec, family: Any, *, transform: str | None = None, frames: str | None = None) -> ViewSpec:
    """The task's ``view:`` block parsed once (:func:`evalkit.views.parse_view`), with the run's
    ``--transform`` / ``--frames`` applied; ``family`` gives the transform when the block names
    none. A bad key, value or override is a :class:`TaskSpecError` naming the task file and key."""
    try:
        return parse_view(spec.view, spec.path or spec.name, transform=transform, frames=frames,
                          default_transform=getattr(family, "default_transform", None), base_dir=spec.base_dir)
    except ViewSpecError as e:
        raise TaskSpecError(str(e)) from e


def with_view(spec: TaskSpec, family: Any, *, transform: str | None = None, frames: str | None = None) -> TaskSpec:
    """The task with its view parsed (``spec.view_spec``, :func:`task_view`): part of resolving a
    task, before any data or weights are read."""
    return dataclasses.replace(spec, view_spec=task_view(spec, family, transform=transform, frames=frames))


def run_view(spec: TaskSpec, family: Any, encoder: Encoder, ctx: RunContext) -> ViewSpec:
    """The task's view as it runs on ``encoder``: the one parsed when the task was resolved (a task
    made by hand: parsed now, with the context's ``transform`` / ``frames``), resolved against the
    encoder's towers (``cloud: auto`` picks the point tower or depth views)."""
    view = spec.view_spec
    if view is None:
        view = task_view(spec, family, transform=ctx.run.transform, frames=ctx.run.frames)
    try:
        return view.resolve(encoder)
    except ViewSpecError as e:
        raise TaskSpecError(str(e)) from e


def embed_view(spec: TaskSpec, encoder: Encoder, ctx: RunContext, data: SourceData,
               view: ViewSpec) -> dict[str, Embeddings]:
    """The task's samples through the runtime views ``view`` builds for ``encoder`` (one per
    transform it runs), in one pass. No sample at all decoded is an error naming the task."""
    try:
        views = view.build(encoder)
    except ViewSpecError as e:  # a setting this encoder's tower cannot take
        raise TaskSpecError(f"{spec.path or spec.name}: {e}") from e
    out = embed(encoder, data, views, cache=ctx.cache,
                batch_size=ctx.run.batch_size, num_workers=ctx.run.num_workers, prefetch=ctx.run.prefetch, limit=ctx.run.limit, strict=ctx.run.strict,
                desc=f"{spec.name} [{'+'.join(view.modes)}]", progress=ctx.run.progress, fingerprint=ctx.run.fingerprint)
    first = out[view.modes[0]]
    if first.features.shape[0] == 0:
        raise DataError(f"{spec.path or spec.name}: no sample could be decoded ({len(first.skipped)} skipped)")
    return out


def write_skipped_log(spec: TaskSpec, encoder: Encoder, ctx: RunContext, skipped: list[tuple[str, str]],
                      part: str | None = None) -> None:
    """``<task>[.<part>].skipped.log`` beside the result: one ``key<TAB>reason`` line per skipped
    sample (``part``: one split of a several-split task, ``split2``)."""
    suffix = f".{part}.skipped.log" if part else ".skipped.log"
    path = result_path(ctx.output_dir, encoder.name, _name(spec), suffix, ctx.variant)
    if skipped:
        _write_output(path, "".join(f"{k}\t{why}\n" for k, why in skipped))
    else:
        path.unlink(missing_ok=True)  # an earlier run's log must not stand beside this result


def write_predictions(spec: TaskSpec, encoder: Encoder, ctx: RunContext, records: Iterable[dict[str, Any]],
                      tag: str | None = None) -> None:
    """``<task>.predictions[.<tag>].jsonl`` beside the result, one JSON record a line."""
    suffix = f".predictions.{tag}.jsonl" if tag else ".predictions.jsonl"
    lines = [json.dumps(r) for r in records]
    _write_output(result_path(ctx.output_dir, encoder.name, _name(spec), suffix, ctx.variant), "\n".join(lines) + "\n")


def _write_output(path: Path, text: str) -> None:
    """A file beside a result; the OS's refusal (no permission, a full disk) is the user's to fix."""
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e


def provenance(spec: TaskSpec, encoder: Encoder, ctx: RunContext, family: str, data: SourceData, view: ViewSpec,
               by_mode: dict[str, Embeddings], started: float, *, timings: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """What every result records besides its family's own keys (``view``: the task's view as it
    ran, which names its own keys: transform, frames, cloud view ...), among them the data's
    content fingerprint (``data_fingerprint``, evalkit.data.fingerprint; None when the run took
    none) and where the time went (``timings``, :func:`timings`)."""
    modes = list(by_mode)
    feats = by_mode[modes[0]]
    skipped_keys = [k for k, _ in feats.skipped]
    seconds, computed = feats.seconds, feats.computed
    return {
        **ctx.provenance,
        "family": family,
        "metric": spec.metric,  # the task's primary metric: what `evalkit report` compares first
        "task_file": spec.path,
        "task_version": spec.version,
        "source": dict(spec.source),
        "data": data.info,
        "protocol": spec.protocol,
        "fingerprint": encoder.fingerprint,
        "precision": encoder.precision,
        "variant": ctx.variant,
        "device": encoder.device,
        # module -> device ("cuda:0", "cpu", "disk") of a model placed over several devices
        "device_map": encoder.device_map,
        **view.provenance(spec.name),
        **_image_processor(encoder, view),
        "samples": len(feats.keys) + len(feats.skipped),
        "evaluated": len(feats.keys),
        "skipped": len(skipped_keys),
        "skipped_keys": skipped_keys[:100],
        # scored, but made by a documented fallback (a cloud resampled to enough points): key, why
        "noted": len(feats.noted),
        "noted_samples": [list(n) for n in feats.noted[:100]],
        "limit": ctx.run.limit,
        "batch_size": ctx.run.batch_size,
        **({"batch_size_used": feats.batch_size} if feats.batch_size is not None else {}),  # what auto chose
        "num_workers": ctx.run.num_workers,
        "image_seconds": round(seconds, 4),
        # best-of-both: images whose crop and squash pixels are identical, encoded once
        "views_reused": sum(e.reused for e in by_mode.values()),
        "images_per_s": round(computed / seconds, 2) if seconds > 0 and computed else None,
        # processes that shared the pass (torchrun, srun; evalkit.features.distributed) and the samples each
        # encoded in this run (0s: all cached): a job that ran N full copies would show N× the samples
        "world_size": feats.world_size,
        "samples_per_rank": list(feats.samples_per_rank),
        "wall_time_s": round(time.perf_counter() - started, 4),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data_fingerprint": data_fingerprint(feats),
        **({"timings": timings} if timings is not None else {}),
        # the mirror's repo and commit when evalkit fetched the data (its manifest); None otherwise
        "data_revision": fetched_revision(ctx.run.data_root, data.info),
    }


def data_fingerprint(emb: Embeddings) -> dict[str, Any] | None:
    """What a result records of the data an embedding pass read (``data_fingerprint``)."""
    return emb.fingerprint.as_dict() if emb.fingerprint is not None else None


#: what ``timings.overlap`` says: the clocks are not a partition of the wall time
TIMINGS_OVERLAP = "data runs in loader threads/workers concurrently with forward"


@dataclass
class Clocks:
    """One task's time by phase (:func:`timings`): the embedding passes (their wall time, and
    within it the loader's and the forward's seconds), the text side and the scoring."""

    embed_s: float = 0.0
    data_s: float = 0.0
    forward_s: float = 0.0
    text_s: float = 0.0
    scoring_s: float = 0.0
    samples: int = 0

    def add_pass(self, emb: Embeddings) -> None:
        self.embed_s += emb.seconds
        self.data_s += emb.data_seconds
        self.forward_s += emb.forward_seconds
        self.samples += len(emb.keys) + len(emb.skipped)

    def __add__(self, other: Clocks) -> Clocks:
        return Clocks(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))

    @classmethod
    def of(cls, recorded: dict[str, Any]) -> Clocks:
        """The clocks a result's ``timings`` recorded (a part of a several-split task)."""
        return cls(**{f.name: recorded.get(f.name) or 0 for f in dataclasses.fields(cls)})


def timings(clocks: Clocks, wall_s: float) -> dict[str, Any]:
    """A result's ``timings``: ``wall_s`` (the task, from preparing its data to its statistics),
    ``data_s`` (the loader's seconds reading, decoding, transforming and hashing samples, summed
    over samples: it runs beside the forward, in loader threads or processes), ``forward_s`` (the
    image side's forward: the views' per-batch steps), ``text_s`` (the classifier's prompts or
    the captions), ``scoring_s`` (metrics, probes, per-sample records, intervals), ``embed_s``
    (the embedding passes' wall time, data and forward overlapping in it), ``other_s`` (the rest
    of the wall time: finding the data, cache look-ups, files), ``samples_per_s`` (the samples
    the task listed, per second of its wall time) and ``overlap``."""
    other = max(0.0, wall_s - clocks.embed_s - clocks.text_s - clocks.scoring_s)
    return {
        "wall_s": round(wall_s, 4), "data_s": round(clocks.data_s, 4), "forward_s": round(clocks.forward_s, 4),
        "text_s": round(clocks.text_s, 4), "scoring_s": round(clocks.scoring_s, 4), "other_s": round(other, 4),
        "embed_s": round(clocks.embed_s, 4), "samples": clocks.samples,
        "samples_per_s": round(clocks.samples / wall_s, 2) if wall_s > 0 and clocks.samples else None,
        "overlap": TIMINGS_OVERLAP,
    }


def combine_transforms(per_mode: dict[str, dict[str, float]]) -> dict[str, float]:
    """One transform: its metrics. Several: each as ``metric@transform`` plus the per-metric max
    (the rule behind Table 2 of arXiv 2402.04252, which took the better of crop and squash)."""
    if len(per_mode) == 1:
        return dict(next(iter(per_mode.values())))
    out: dict[str, float] = {}
    for name in next(iter(per_mode.values())):
        for m, vals in per_mode.items():
            out[f"{name}@{m}"] = vals[name]
        out[name] = max(vals[name] for vals in per_mode.values())
    return out


def combine_by(per_mode: dict[str, dict[str, float]], key: str) -> tuple[dict[str, float], str]:
    """Several transforms scored as one set: the transform with the best ``key`` gives every
    reported number (so they stay consistent, e.g. a mean with its parts), each transform's own
    numbers as ``metric@transform``. Returns (metrics, the transform chosen)."""
    best = max(per_mode, key=lambda m: per_mode[m][key])
    if len(per_mode) == 1:
        return dict(per_mode[best]), best
    out = {f"{name}@{m}": v for m, vals in per_mode.items() for name, v in vals.items()}
    return {**out, **per_mode[best]}, best


def best_transform_by_metric(per_mode: dict[str, dict[str, float]]) -> dict[str, str]:
    """Which transform produced each reported (maximum) number under best-of-both."""
    first = next(iter(per_mode.values()))
    return {k: max(per_mode, key=lambda m, k=k: per_mode[m][k]) for k in first}


@dataclass
class Scored:
    """What a family's ``score`` returns: per transform its metrics (and, with
    ``--save-predictions``, its prediction records), plus the family's own provenance.

    ``records``: per transform, the per-sample arrays of kind ``records_kind``
    (:mod:`evalkit.records`: ``classification``, ``retrieval``, ``fewshot``, ``probe``) with
    ``records_meta``, which the runner writes beside the result unless the run says
    ``records=False``; a family makes none then (``ctx.run.records``)."""

    metrics: dict[str, dict[str, float]]
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    evalkit: dict[str, Any] = field(default_factory=dict)
    records: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    records_kind: str | None = None
    records_meta: dict[str, Any] = field(default_factory=dict)
    #: under best-of-both, the metric whose best transform gives every number, when the family's
    #: ``combine`` depends on the run (the linear probe: its primary metric at the K values run)
    combine_by: str | None = None
    #: seconds of ``score`` spent on the text side (the classifier's prompts, the captions): the
    #: result's ``timings.text_s``; the rest of ``score`` is scoring
    text_seconds: float = 0.0


def run_task(family: Any, spec: TaskSpec, encoder: Encoder, ctx: RunContext, prepared: Any) -> TaskResult:
    """:func:`run_one`, or, for a task whose ``protocol.splits`` lists several splits (source
    settings merged into each layout, e.g. UCF-101's ``{split: 1}``, ``{split: 2}``, ``{split: 3}``),
    once per split: every metric is then the mean over the splits, with ``<metric>_std`` (the
    population standard deviation) and ``<metric>@split<k>``."""
    parts = spec.split_specs()
    if not parts:
        return run_one(family, spec, encoder, ctx, prepared)
    started = time.perf_counter()
    splits = [settings for settings, _ in parts]
    results = []
    fingerprints: list[Any] = []
    for k, (settings, sub) in enumerate(parts, start=1):
        # the data found before the model was loaded is the task's own source: split 1's, if the same
        reuse = prepared if k == 1 and _same_source(spec, settings) else None
        results.append(run_one(family, sub, encoder, ctx, reuse, part=f"split{k}", fingerprints=fingerprints))
    first = results[0]
    metrics = combine_splits([r.metrics for r in results])
    ev = dict(first.evalkit)
    for key in ("ci", "ci_notes", "flip_budget", "detectable"):
        ev.pop(key, None)  # split 1's: the task's come from every split's
    ev.update(split_statistics(metrics, [r.evalkit for r in results], [r.metrics for r in results]))
    if "records" in ev:  # one records file per split, in order
        parts = [r.evalkit["records"] for r in results]
        ev["records"] = {**parts[0], "files": [f for p in parts for f in p["files"]],
                         "bytes": sum(p["bytes"] for p in parts), "sha256": [d for p in parts for d in p["sha256"]]}
    ev.update(splits=splits, samples=sum(r.evalkit["samples"] for r in results),
              evaluated=sum(r.evalkit["evaluated"] for r in results), skipped=sum(r.evalkit["skipped"] for r in results),
              skipped_keys=[k for r in results for k in r.evalkit.get("skipped_keys", [])][:100],
              samples_per_rank=sum_per_rank(*(r.evalkit.get("samples_per_rank", []) for r in results)),
              per_split=[{"split": s, "evaluated": r.evalkit["evaluated"], "skipped": r.evalkit["skipped"],
                          "data_fingerprint": r.evalkit.get("data_fingerprint")}
                         for s, r in zip(splits, results, strict=True)])
    # every split's samples in one root (as if one dataset), and the time of every split
    ev["data_fingerprint"] = (fingerprints[0].merge(*fingerprints[1:]).as_dict()
                              if len(fingerprints) == len(results) else None)
    clocks = sum((Clocks.of(r.evalkit.get("timings") or {}) for r in results), Clocks())
    ev["timings"] = timings(clocks, time.perf_counter() - started)
    return dataclasses.replace(first, metrics=metrics, evalkit=ev)


def sum_per_rank(*parts: list[int]) -> list[int]:
    """Per rank, the samples it encoded over several passes of one job (splits, a few-shot task's
    train and test sets): each a list indexed by rank, all of the job's world size."""
    return [sum(c) for c in zip(*parts, strict=True)]


def combine_splits(per_split: list[dict[str, float]]) -> dict[str, float]:
    """Each metric the splits share: its mean, ``<metric>_std`` (population standard deviation,
    as the mean ± std the papers print) and ``<metric>@split<k>``."""
    keys = [k for k in per_split[0] if all(k in m for m in per_split)]
    out: dict[str, float] = {}
    for key in keys:
        values = [m[key] for m in per_split]
        mean = sum(values) / len(values)
        out[key] = mean
        out[f"{key}_std"] = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        out.update({f"{key}@split{i}": v for i, v in enumerate(values, start=1)})
    return out


def _same_source(spec: TaskSpec, settings: dict[str, Any]) -> bool:
    """Whether the data prepared before the model (from the task's own source) is split 1's."""
    layouts = spec.source.get("layouts", [spec.source]) if spec.source.get("type") == "any" else [spec.source]
    return all(all(layout.get(k) == v for k, v in settings.items()) for layout in layouts)


def run_one(family: Any, spec: TaskSpec, encoder: Encoder, ctx: RunContext, prepared: Any,
            part: str | None = None, *, fingerprints: list[Any] | None = None) -> TaskResult:
    """One task, the shared way: the family's ``prepare`` (unless done before the model was
    loaded), one pass per split the family declares (:func:`evalkit.tasks.base.declared_splits`:
    the linear probe's ``train``, then every family's ``test``) through the task's views, the
    family's ``score``, then predictions, each split's skipped log and the result. Best-of-both
    reports each metric's maximum (``family.combine = None``, Table 2's rule), or one transform's
    metrics all together, the one best by ``family.combine`` (retrieval: mean recall; a family
    whose choice depends on the run says it in ``Scored.combine_by``). ``part``: which split of a
    several-split task this is (its predictions and skipped logs get their own files, ``.split2``);
    ``fingerprints``: a list the test split's :class:`~evalkit.data.fingerprint.Fingerprint` is
    appended to (when taken), for :func:`run_task` to combine the splits'."""
    started = time.perf_counter()
    if prepared is None:
        prepared = family.prepare(spec, ctx.run.data_root)
    view = run_view(spec, family, encoder, ctx)
    spec = dataclasses.replace(spec, view_spec=view)  # as it runs here: its prompts, its result's name
    modes = view.modes
    embedded = {split: embed_view(split_spec(spec, split), encoder, ctx, split_data(prepared, split), view)
                for split in declared_splits(family)}
    clocks = Clocks()
    for emb in embedded.values():
        clocks.add_pass(emb[modes[0]])
    by_mode = embedded.pop(TEST_SPLIT)
    if fingerprints is not None and by_mode[modes[0]].fingerprint is not None:
        fingerprints.append(by_mode[modes[0]].fingerprint)
    scoring0 = time.perf_counter()
    scored = family.score(spec, encoder, ctx, prepared, by_mode, **embedded)
    for m, records in scored.predictions.items():
        tag = ".".join(t for t in (part, m if len(modes) > 1 else None) if t)
        write_predictions(spec, encoder, ctx, records, tag or None)
    records = write_task_records(spec, encoder, ctx, scored, part)
    write_sidecar(records_path(ctx.output_dir, encoder.name, _name(spec), ctx.variant, part), records, scored,
                  spec=spec, data=prepared.data, run=ctx.run, part=part)  # <task>.perclass.jsonl
    write_skipped_log(spec, encoder, ctx, by_mode[modes[0]].skipped, part)
    for split, other in embedded.items():
        write_skipped_log(spec, encoder, ctx, other[modes[0]].skipped, ".".join(t for t in (part, split) if t))
    combine = scored.combine_by or family.combine
    if combine is None:
        metrics = combine_transforms(scored.metrics)
        first = next(iter(scored.metrics.values()))
        best = {"best_transform": max(scored.metrics, key=lambda m: scored.metrics[m][next(iter(first))]),
                "best_transform_by_metric": best_transform_by_metric(scored.metrics)}
    else:
        metrics, chosen = combine_by(scored.metrics, combine)
        best = {"best_transform": chosen}
    statistics = result_statistics(metrics, scored.metrics, scored.records, scored.records_kind, best, run=ctx.run,
                                   precision=str(encoder.precision), evaluated=len(by_mode[modes[0]].keys),
                                   primary=scored.evalkit.get("metric", spec.metric),
                                   queries=retrieval_queries(scored.evalkit))
    clocks.text_s = scored.text_seconds
    clocks.scoring_s = max(0.0, time.perf_counter() - scoring0 - scored.text_seconds)
    spent = timings(clocks, time.perf_counter() - started)
    return TaskResult(
        dataset=spec.name,
        model=encoder.name,
        pretrained=encoder.pretrained,
        task=family.result_task,
        metrics=metrics,
        evalkit={**provenance(spec, encoder, ctx, family.name, prepared.data, view, by_mode, started,
                              timings=spent), **best,
                 **_splits_provenance(spec, prepared, by_mode, embedded, modes[0]), **scored.evalkit,
                 **({"records": records} if records else {}), **statistics},
    )


def write_task_records(spec: TaskSpec, encoder: Encoder, ctx: RunContext, scored: Scored,
                       part: str | None = None) -> dict[str, Any] | None:
    """``<task>[.<part>].records.npz`` beside the result (:mod:`evalkit.records`), from what the
    family scored; returns what the result records of it (``evalkit.records``). With
    ``records=False`` (``--no-records``), or a family that makes none, nothing is written and an
    earlier run's file is removed: it must not stand beside this result."""
    path = records_path(ctx.output_dir, encoder.name, _name(spec), ctx.variant, part)
    if not ctx.run.records or not scored.records or scored.records_kind is None:
        path.unlink(missing_ok=True)
        return None
    meta = {"task": spec.name, "model": encoder.name, "variant": ctx.variant, "part": part,
            "precision": encoder.precision, "fingerprint": encoder.fingerprint, **scored.records_meta}
    written = write_records(path, scored.records_kind, scored.records, meta)
    return result_entry([written], scored.records_kind)


def class_records(keys: list[str], target: torch.Tensor, logits: torch.Tensor, counted: int) -> dict[str, np.ndarray]:
    """A ``classification`` / ``probe`` record of each sample (:mod:`evalkit.records`) from its
    logits: the top min(5, C) classes and logits, the first ``counted`` exactly those acc1 / acc5
    counted (:func:`evalkit.metrics.ranked_classes`), and the argmax (the top-1
    mean_per_class_recall counts); see :func:`ranked_records`."""
    indices, values = ranked_classes(logits, 5, counted)
    return ranked_records(keys, target, indices, values, logits.argmax(dim=1))


def ranked_records(keys: list[str], target: torch.Tensor, top_classes: torch.Tensor, top_scores: torch.Tensor,
                   pred: torch.Tensor) -> dict[str, np.ndarray]:
    """The arrays of a ``classification`` / ``probe`` record: key, target, top classes and
    scores (float32, as scored), the top-1/top-2 margin (+inf with one class) and ``pred``."""
    scores = top_scores.float().cpu().numpy()
    margin = (scores[:, 0] - scores[:, 1] if scores.shape[1] > 1
              else np.full(scores.shape[0], np.inf, dtype=np.float32))
    return {
        "key": np.asarray([str(k) for k in keys], dtype=str),
        "target": target.cpu().numpy().astype(np.int32),
        "top_classes": top_classes.cpu().numpy().astype(np.int32),
        "top_scores": scores,
        "margin": margin,
        "pred": pred.cpu().numpy().astype(np.int32),
    }


def split_spec(spec: TaskSpec, split: str) -> TaskSpec:
    """The task as one of its declared splits is embedded: the test split is the task itself;
    another is named after it (``imagenet1k-linear-probe (train)``, in progress lines and errors,
    ``<task file> (train_source)``)."""
    if split == TEST_SPLIT:
        return spec
    return dataclasses.replace(spec, name=f"{spec.name} ({split})", path=f"{spec.path or spec.name} ({split}_source)")


def _splits_provenance(spec: TaskSpec, prepared: Any, by_mode: dict[str, Embeddings],
                       others: dict[str, dict[str, Embeddings]], first: str) -> dict[str, Any]:
    """What a result records of each declared split besides the test split (``train_...``: its
    source, data, counts, skipped keys, encoding time, per-rank samples); ``images_per_s`` and
    ``samples_per_rank`` then count every split's encoding (a computed train split is not
    "cached"). Nothing for a family of one split."""
    if not others:
        return {}
    out: dict[str, Any] = {}
    for split, emb_by_mode in others.items():
        emb = emb_by_mode[first]
        if f"{split}_source" in spec.options:
            out[f"{split}_source"] = dict(spec.options[f"{split}_source"])
        out.update({
            f"{split}_data": split_data(prepared, split).info,
            f"{split}_samples": len(emb.keys) + len(emb.skipped),
            f"{split}_evaluated": len(emb.keys),
            f"{split}_skipped": len(emb.skipped),
            f"{split}_skipped_keys": [k for k, _ in emb.skipped][:100],
            f"{split}_image_seconds": round(emb.seconds, 4),
            f"{split}_data_fingerprint": data_fingerprint(emb),
        })
    every = [by_mode[first], *(e[first] for e in others.values())]
    computed, seconds = sum(e.computed for e in every), sum(e.seconds for e in every)
    out["images_per_s"] = round(computed / seconds, 2) if computed and seconds > 0 else None
    out["samples_per_rank"] = sum_per_rank(*(e.samples_per_rank for e in every))
    out.update({f"{split}_samples_per_rank": list(e[first].samples_per_rank) for split, e in others.items()})
    return out


def _name(spec: TaskSpec) -> str:
    """The name the task's result and the files beside it are written under, as its view says (a
    video task under another ``--frames`` than its own: ``kinetics400@uniform-8``)."""
    return spec.view_spec.result_name(spec.name) if spec.view_spec is not None else spec.name


def _image_processor(encoder: Encoder, view: ViewSpec) -> dict[str, Any]:
    """``image_processor``: the model's own image preprocessing (a Hugging Face processor), which
    the image views run unchanged in place of ``transform``'s geometry, when the task's view went
    through the image tower; nothing for other models."""
    tower = encoder.towers.get("image")
    processor_id = getattr(tower.input, "processor_id", "") if tower is not None and tower.input.processor else ""
    if not processor_id or view.tower != "image":
        return {}
    return {"image_processor": processor_id}
