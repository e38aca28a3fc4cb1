"""The steps every family shares, in one place (:func:`run_task`): which image views a task runs,
the one pass that embeds its samples, the skipped-sample log, the predictions files, the
provenance every result carries, best-of-both's combination of per-transform metrics, and the
result. A family keeps only what is its own: its YAML keys, finding its data (``prepare``), and
``score`` — its text side (classifier, captions) and its metrics."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.data.sources import DataError, SourceData
from evalkit.errors import OutputError
from evalkit.features.embed import Embeddings, embed
from evalkit.models.encoder import Encoder
from evalkit.results import TaskResult, atomic_write_text, result_name, result_path
from evalkit.tasks.base import RunContext
from evalkit.tasks.spec import TaskSpec, TaskSpecError
from evalkit.views.runtime import ImageView, depth_view, frames_view, point_view

TRANSFORM_CHOICES = ("crop", "squash", "best-of-both")
#: how a point cloud is embedded (``view.cloud``): by the model's point tower, or as rendered depth
#: images through its image tower; ``auto``: the point tower when the model has one
CLOUD_VIEWS = ("auto", "depth-views", "points")
#: the keys of a task's ``view`` block
VIEW_KEYS = ("transform", "frames", "cloud", "depth_views", "depth_resolution", "depth_preset", "depth_render",
             "depth_templates_file", "npoints")


def check_transform(spec: TaskSpec, default: str) -> str:
    """The task's ``view`` block checked (its keys, ``cloud``), and its ``view.transform`` (else
    the family's default)."""
    unknown = sorted(set(spec.view) - set(VIEW_KEYS))
    if unknown:
        raise TaskSpecError(f"{spec.path or spec.name}: unknown view option(s) {unknown} (known: {', '.join(VIEW_KEYS)})")
    if spec.view.get("cloud", "auto") not in CLOUD_VIEWS:
        raise TaskSpecError(f"{spec.path or spec.name}: view.cloud {spec.view['cloud']!r} not in {CLOUD_VIEWS}")
    mode = spec.view.get("transform", default)
    if mode not in TRANSFORM_CHOICES:
        raise TaskSpecError(f"{spec.path or spec.name}: view.transform {mode!r} not in {TRANSFORM_CHOICES}")
    if "depth_preset" in spec.view:
        from evalkit.views.render import RENDER_PRESETS

        if not isinstance(spec.view["depth_preset"], str) or spec.view["depth_preset"] not in RENDER_PRESETS:
            raise TaskSpecError(f"{spec.path or spec.name}: view.depth_preset {spec.view['depth_preset']!r} is not a "
                                f"render preset; choose from {', '.join(RENDER_PRESETS)}")
    return mode


def transform_of(spec: TaskSpec, ctx: RunContext, default: str) -> str:
    """``--transform``, else the task's ``view.transform``, else the family's default."""
    return ctx.transform or check_transform(spec, default)


def image_modes(mode: str) -> list[str]:
    """The transforms a mode runs: best-of-both runs crop and squash."""
    return ["crop", "squash"] if mode == "best-of-both" else [mode]


def frames_of(spec: TaskSpec, ctx: RunContext) -> str | None:
    """A video task's frame sampler: ``--frames``, else the task's ``view.frames``; None for images."""
    if ctx.frames is not None and "frames" not in spec.view:
        raise TaskSpecError(f"{spec.path or spec.name}: --frames is for video tasks (their view has 'frames')")
    return ctx.frames or spec.view.get("frames")


def cloud_view_of(spec: TaskSpec, encoder: Encoder) -> str | None:
    """A 3D task's view (``view.cloud``): ``points`` (the model's point tower) or ``depth-views``
    (rendered depth images through its image tower); ``auto`` picks the point tower when the model
    has one. None for a task that is not over point clouds."""
    choice = spec.view.get("cloud")
    if choice is None:
        return None
    where = spec.path or spec.name
    if choice not in CLOUD_VIEWS:
        raise TaskSpecError(f"{where}: view.cloud {choice!r} not in {CLOUD_VIEWS}")
    if choice == "auto":
        choice = "points" if encoder.has_points else "depth-views"
    if choice == "points" and not encoder.has_points:
        raise TaskSpecError(f"{where}: view.cloud points needs a point-cloud encoder (e.g. --model uni3d-b); "
                            f"{encoder.name} has none (view.cloud depth-views or auto scores clouds through its images)")
    if choice == "depth-views" and not encoder.has_images:
        raise TaskSpecError(f"{where}: view.cloud depth-views needs an image tower, which {encoder.name} has not")
    return choice


def view_modes(spec: TaskSpec, encoder: Encoder, ctx: RunContext, default: str) -> tuple[str, list[str]]:
    """(the mode a result records, the views a task runs): its transforms (best-of-both: crop and
    squash), or ``points`` for clouds through a point tower. A model with no image tower (a point
    encoder) scores nothing else."""
    if cloud_view_of(spec, encoder) == "points":
        return "points", ["points"]
    if not encoder.has_images:
        raise TaskSpecError(f"{spec.path or spec.name}: {encoder.name} encodes point clouds only, and this task "
                            f"is not over point clouds")
    mode = transform_of(spec, ctx, default)
    return mode, image_modes(mode)


def embed_images(spec: TaskSpec, encoder: Encoder, ctx: RunContext, data: SourceData,
                 modes: list[str]) -> dict[str, Embeddings]:
    """The task's samples through one view per transform, in one pass: an
    :class:`~evalkit.views.runtime.ImageView`; for a video task (``view.frames``) the sampled frames of
    each clip through it, pooled (:func:`~evalkit.views.runtime.frames_view`); for a 3D task its depth
    views through it, pooled (:func:`~evalkit.views.runtime.depth_view`), or the cloud through the model's
    point tower (:func:`~evalkit.views.runtime.point_view`). No sample at all decoded is an error naming
    the task."""
    sampler = frames_of(spec, ctx)
    cloud = cloud_view_of(spec, encoder)
    views: dict[str, Any]
    try:
        if cloud == "points":
            views = {"points": point_view(int(spec.view.get("npoints", 10000)))}
        else:
            views = {m: ImageView(encoder.preprocess(m), m) for m in modes}
        if sampler is not None:
            views = {m: frames_view(v, sampler) for m, v in views.items()}
        elif cloud == "depth-views":
            render = spec.view.get("depth_render") or {}
            if not isinstance(render, dict):
                raise TaskSpecError(f"{spec.path or spec.name}: view.depth_render must be a mapping of render settings")
            preset = _depth_preset(spec)
            views = {m: depth_view(v, int(spec.view.get("depth_views", 10)), int(spec.view.get("depth_resolution", 224)),
                                   preset=preset, **render) for m, v in views.items()}
    except ValueError as e:
        raise TaskSpecError(f"{spec.path or spec.name}: {e}") from e
    out = embed(encoder, data, views, cache=ctx.cache,
                batch_size=ctx.batch_size, num_workers=ctx.num_workers, prefetch=ctx.prefetch, limit=ctx.limit, strict=ctx.strict,
                desc=f"{spec.name} [{'+'.join(modes)}]", progress=ctx.progress)
    first = out[modes[0]]
    if first.features.shape[0] == 0:
        raise DataError(f"{spec.path or spec.name}: no sample could be decoded ({len(first.skipped)} skipped)")
    return out


def write_skipped_log(spec: TaskSpec, encoder: Encoder, ctx: RunContext, skipped: list[tuple[str, str]],
                      part: str | None = None) -> None:
    """``<task>[.<part>].skipped.log`` beside the result: one ``key<TAB>reason`` line per skipped
    sample (``part``: one split of a several-split task, ``split2``)."""
    suffix = f".{part}.skipped.log" if part else ".skipped.log"
    path = result_path(ctx.output_dir, encoder.name, _name(spec, ctx), suffix, ctx.variant)
    if skipped:
        _write_output(path, "".join(f"{k}\t{why}\n" for k, why in skipped))
    else:
        path.unlink(missing_ok=True)  # an earlier run's log must not stand beside this result


def write_predictions(spec: TaskSpec, encoder: Encoder, ctx: RunContext, records: Iterable[dict[str, Any]],
                      tag: str | None = None) -> None:
    """``<task>.predictions[.<tag>].jsonl`` beside the result, one JSON record a line."""
    suffix = f".predictions.{tag}.jsonl" if tag else ".predictions.jsonl"
    lines = [json.dumps(r) for r in records]
    _write_output(result_path(ctx.output_dir, encoder.name, _name(spec, ctx), suffix, ctx.variant),
                  "\n".join(lines) + "\n")


def _write_output(path: Path, text: str) -> None:
    """A file beside a result; the OS's refusal (no permission, a full disk) is the user's to fix."""
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e


def provenance(spec: TaskSpec, encoder: Encoder, ctx: RunContext, family: str, data: SourceData, mode: str,
               by_mode: dict[str, Embeddings], started: float) -> dict[str, Any]:
    """What every result records besides its family's own keys."""
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
        "transform": mode,
        "transforms_run": modes,
        **_frames_provenance(spec, ctx),
        **_cloud_provenance(spec, encoder),
        "samples": len(feats.keys) + len(feats.skipped),
        "evaluated": len(feats.keys),
        "skipped": len(skipped_keys),
        "skipped_keys": skipped_keys[:100],
        # scored, but made by a documented fallback (a cloud resampled to enough points): key, why
        "noted": len(feats.noted),
        "noted_samples": [list(n) for n in feats.noted[:100]],
        "limit": ctx.limit,
        "batch_size": ctx.batch_size,
        **({"batch_size_used": feats.batch_size} if feats.batch_size is not None else {}),  # what auto chose
        "num_workers": ctx.num_workers,
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
    ``--save-predictions``, its prediction records), plus the family's own provenance."""

    metrics: dict[str, dict[str, float]]
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    evalkit: dict[str, Any] = field(default_factory=dict)


def run_task(family: Any, spec: TaskSpec, encoder: Encoder, ctx: RunContext, prepared: Any) -> TaskResult:
    """:func:`run_one`, or, for a task whose ``protocol.splits`` lists several splits (source
    settings merged into each layout, e.g. UCF-101's ``{split: 1}``, ``{split: 2}``, ``{split: 3}``),
    once per split: every metric is then the mean over the splits, with ``<metric>_std`` (the
    population standard deviation) and ``<metric>@split<k>``."""
    parts = spec.split_specs()
    if not parts:
        return run_one(family, spec, encoder, ctx, prepared)
    splits = [settings for settings, _ in parts]
    results = []
    for k, (settings, sub) in enumerate(parts, start=1):
        # the data found before the model was loaded is the task's own source: split 1's, if the same
        reuse = prepared if k == 1 and _same_source(spec, settings) else None
        results.append(run_one(family, sub, encoder, ctx, reuse, part=f"split{k}"))
    first = results[0]
    metrics = combine_splits([r.metrics for r in results])
    ev = dict(first.evalkit)
    ev.update(splits=splits, samples=sum(r.evalkit["samples"] for r in results),
              evaluated=sum(r.evalkit["evaluated"] for r in results), skipped=sum(r.evalkit["skipped"] for r in results),
              skipped_keys=[k for r in results for k in r.evalkit.get("skipped_keys", [])][:100],
              samples_per_rank=sum_per_rank(*(r.evalkit.get("samples_per_rank", []) for r in results)),
              per_split=[{"split": s, "evaluated": r.evalkit["evaluated"], "skipped": r.evalkit["skipped"]}
                         for s, r in zip(splits, results, strict=True)])
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
            part: str | None = None) -> TaskResult:
    """One task, the shared way: the family's ``prepare`` (unless done before the model was
    loaded), the image pass through the task's views, the family's ``score``, then predictions,
    the skipped log and the result. Best-of-both reports each metric's maximum
    (``family.combine = None``, Table 2's rule), or one transform's metrics all together, the one
    best by ``family.combine`` (retrieval: mean recall). ``part``: which split of a several-split
    task this is (its predictions and skipped log get their own files, ``.split2``)."""
    started = time.perf_counter()
    if prepared is None:
        prepared = family.prepare(spec, ctx.data_root)
    mode, modes = view_modes(spec, encoder, ctx, family.default_transform)
    by_mode = embed_images(spec, encoder, ctx, prepared.data, modes)
    scored = family.score(spec, encoder, ctx, prepared, by_mode)
    for m, records in scored.predictions.items():
        tag = ".".join(t for t in (part, m if len(modes) > 1 else None) if t)
        write_predictions(spec, encoder, ctx, records, tag or None)
    write_skipped_log(spec, encoder, ctx, by_mode[modes[0]].skipped, part)
    if family.combine is None:
        metrics = combine_transforms(scored.metrics)
        first = next(iter(scored.metrics.values()))
        best = {"best_transform": max(scored.metrics, key=lambda m: scored.metrics[m][next(iter(first))]),
                "best_transform_by_metric": best_transform_by_metric(scored.metrics)}
    else:
        metrics, chosen = combine_by(scored.metrics, family.combine)
        best = {"best_transform": chosen}
    return TaskResult(
        dataset=spec.name,
        model=encoder.name,
        pretrained=encoder.pretrained,
        task=family.result_task,
        metrics=metrics,
        evalkit={**provenance(spec, encoder, ctx, family.name, prepared.data, mode, by_mode, started), **best,
                 **scored.evalkit},
    )


def _frames_provenance(spec: TaskSpec, ctx: RunContext) -> dict[str, Any]:
    """A video result's sampler and frame count (the report's ``1frame`` / ``8frames`` tags)."""
    sampler = frames_of(spec, ctx)
    if sampler is None:
        return {}
    name = _name(spec, ctx)
    from evalkit.data.video import parse_sampler

    parsed = parse_sampler(sampler)
    return {"frame_sampler": parsed.name, "frames": parsed.n, **({"result_name": name} if name != spec.name else {})}


def _cloud_provenance(spec: TaskSpec, encoder: Encoder) -> dict[str, Any]:
    """A 3D result's view: which one, and its settings."""
    cloud = cloud_view_of(spec, encoder)
    if cloud is None:
        return {}
    if cloud == "points":
        return {"cloud_view": cloud, "npoints": int(spec.view.get("npoints", 10000))}
    return {"cloud_view": cloud, "depth_views": int(spec.view.get("depth_views", 10)),
            "depth_resolution": int(spec.view.get("depth_resolution", 224)), "depth_preset": _depth_preset(spec),
            **({"depth_render": dict(spec.view["depth_render"])} if spec.view.get("depth_render") else {})}


def _depth_preset(spec: TaskSpec) -> str:
    """A depth-view task's render preset: ``view.depth_preset`` (checked with the view block,
    :func:`check_transform`), else evalkit.views.render's default."""
    from evalkit.views.render import DEFAULT_PRESET

    return spec.view.get("depth_preset", DEFAULT_PRESET)


def _name(spec: TaskSpec, ctx: RunContext) -> str:
    return result_name(spec.name, frames_of(spec, ctx), spec.view.get("frames"))
