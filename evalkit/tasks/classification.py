"""Zero-shot image classification, numerically identical to clip_benchmark's on the same features."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evalkit.data.sources import (
    DataError,
    SourceData,
    check_task_classnames,
    class_subset_groups,
    load_source,
)
from evalkit.features import image_features, zero_shot_classifier
from evalkit.metrics import classification_logits, zero_shot_classification_metrics
from evalkit.models.encoder import Encoder
from evalkit.registry import task_families
from evalkit.results import TaskResult, atomic_write_text, result_path
from evalkit.tasks.base import RunContext
from evalkit.tasks.spec import TaskSpec, TaskSpecError

TRANSFORM_CHOICES = ("crop", "squash", "best-of-both")


@dataclass
class PreparedTask:
    """A classification task's data, found and checked before the model is loaded."""

    data: SourceData
    classnames: list[str]
    templates: list[str]
    n_labels: int
    names_note: str
    where: str


@task_families.register("classification")
class ClassificationFamily:
    name = "classification"

    def validate(self, spec: TaskSpec) -> None:
        transform = spec.preprocess.get("transform", "crop")
        if transform not in TRANSFORM_CHOICES:
            raise TaskSpecError(f"{spec.path}: preprocess.transform {transform!r} not in {TRANSFORM_CHOICES}")

    def prepare(self, spec: TaskSpec, data_root: str | Path | None) -> PreparedTask:
        """Find and check the task's data, class names and templates: no model needed, so a
        missing or malformed dataset is reported before any weights are read."""
        self.validate(spec)
        task_file = Path(spec.path) if spec.path and spec.path.endswith((".yaml", ".yml")) else None
        data = load_source(spec.source, data_root, spec.name,
                           base_dir=task_file.parent if task_file else None, classnames=spec.classnames)
        classnames = spec.classnames if spec.classnames is not None else data.classnames
        if data.override_classnames:
            classnames = data.classnames
        templates = spec.templates if spec.templates is not None else data.templates
        where = spec.path or spec.name
        if not classnames:
            raise DataError(f"{where}: no class names (set 'classnames' in the task or add classnames.txt to the data)")
        if not templates:
            raise DataError(f"{where}: no templates (set 'templates' in the task or add zeroshot_classification_templates.txt)")
        subset = class_subset_groups(spec.protocol, task_file.parent if task_file else None, where)
        if subset is not None:
            if data.label_groups is not None:
                raise DataError(f"{where}: protocol.class_subset and a source with its own label groups exclude each other")
            data.label_groups = subset
        n_labels = len(data.label_groups) if data.label_groups is not None else len(classnames)
        names_note = check_task_classnames(spec.classnames, data, where)
        if data.label_groups is not None:
            out_of_range = [i for g in data.label_groups for i in g if not 0 <= i < len(classnames)]
            if out_of_range:
                raise DataError(f"{where}: the data maps labels to class {out_of_range[0]}, but the task has "
                                f"{len(classnames)} class names")
        return PreparedTask(data, list(classnames), list(templates), n_labels, names_note, where)

    def run(self, spec: TaskSpec, encoder: Encoder, ctx: RunContext,
            prepared: PreparedTask | None = None) -> TaskResult:
        t_start = time.perf_counter()
        if prepared is None:
            prepared = self.prepare(spec, ctx.data_root)
        data, classnames, templates = prepared.data, prepared.classnames, prepared.templates
        n_labels, names_note, where = prepared.n_labels, prepared.names_note, prepared.where

        t0 = time.perf_counter()
        hits_before = ctx.cache.hits
        classifier = zero_shot_classifier(encoder, classnames, templates, ctx.cache)
        classifier_s = time.perf_counter() - t0
        classifier_cached = ctx.cache.hits > hits_before

        mode = ctx.transform or spec.preprocess.get("transform", "crop")
        modes = ["crop", "squash"] if mode == "best-of-both" else [mode]
        per_mode: dict[str, dict[str, float]] = {}
        by_mode = image_features(
            encoder,
            data,
            {m: encoder.preprocess(m) for m in modes},
            cache=ctx.cache,
            batch_size=ctx.batch_size,
            num_workers=ctx.num_workers,
            limit=ctx.limit,
            strict=ctx.strict,
            desc=f"{spec.name} [{'+'.join(modes)}]",
            progress=ctx.progress,
        )
        feats = by_mode[modes[0]]
        image_seconds, computed = feats.seconds, feats.computed
        if feats.features.shape[0] == 0:
            raise DataError(f"{where}: no sample could be decoded ({len(feats.skipped)} skipped)")
        target = torch.tensor(feats.labels, dtype=torch.long)
        bad = (target < 0) | (target >= n_labels)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DataError(
                f"{where}: sample {feats.keys[i]} has label {int(target[i])} but there are only "
                f"{n_labels} classes"
            )
        for m in modes:
            logits = classification_logits(by_mode[m].features, classifier)
            if data.label_groups is not None:
                logits = project_logits(logits, data.label_groups)
            per_mode[m] = zero_shot_classification_metrics(logits, target, n_labels)
            if ctx.save_predictions:
                self._write_predictions(ctx, encoder, spec, m, feats.keys, target, logits, len(modes) > 1)

        metrics = _combine(per_mode)
        n_seen = len(feats.keys) + len(feats.skipped)
        wall = time.perf_counter() - t_start
        skipped_keys = [k for k, _ in feats.skipped]
        if feats.skipped:
            log = result_path(ctx.output_dir, encoder.name, spec.name, ".skipped.log", ctx.variant)
            atomic_write_text(log, "".join(f"{k}\t{why}\n" for k, why in feats.skipped))
        provenance: dict[str, Any] = {
            **ctx.provenance,
            "family": self.name,
            "task_file": spec.path,
            "source": {k: v for k, v in spec.source.items()},
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
            "best_transform": max(per_mode, key=lambda m: per_mode[m]["acc1"]),
            # which transform produced each reported (maximum) number under best-of-both
            "best_transform_by_metric": {k: max(per_mode, key=lambda m, k=k: per_mode[m][k]) for k in per_mode[modes[0]]},
            "n_classes": n_labels,
            "n_classifier_classes": len(classnames),
            "n_templates": len(templates),
            "template_set": spec.protocol.get("template_set"),
            "classnames_check": names_note,
            "samples": n_seen,
            "evaluated": len(feats.keys),
            "skipped": len(skipped_keys),
            "skipped_keys": skipped_keys[:100],
            "limit": ctx.limit,
            "batch_size": ctx.batch_size,
            "num_workers": ctx.num_workers,
            "classifier_seconds": round(classifier_s, 4),
            "classifier_cached": classifier_cached,
            "image_seconds": round(image_seconds, 4),
            "images_per_s": round(computed / image_seconds, 2) if image_seconds > 0 and computed else None,
            "wall_time_s": round(wall, 4),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return TaskResult(
            dataset=spec.name,
            model=encoder.name,
            pretrained=encoder.weights,
            task="zeroshot_classification",
            metrics=metrics,
            evalkit=provenance,
        )

    @staticmethod
    def _write_predictions(ctx, encoder, spec, mode, keys, target, logits, tagged) -> None:
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1)
        lines = [
            json.dumps({"key": key, "label": int(y), "top_classes": idx, "top_scores": [round(s, 4) for s in sc]})
            for key, y, idx, sc in zip(keys, target.tolist(), top.indices.tolist(), top.values.tolist(), strict=True)
        ]
        suffix = f".predictions.{mode}.jsonl" if tagged else ".predictions.jsonl"
        atomic_write_text(result_path(ctx.output_dir, encoder.name, spec.name, suffix, ctx.variant), "\n".join(lines) + "\n")


def project_logits(logits: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """(N, C) classifier logits -> (N, len(groups)): label j scores as the max over its classes."""
    return torch.stack([logits[:, g].max(dim=1).values for g in groups], dim=1)


def _combine(per_mode: dict[str, dict[str, float]]) -> dict[str, float]:
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
