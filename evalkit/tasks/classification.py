"""Zero-shot image classification, numerically identical to clip_benchmark's on the same features."""

from __future__ import annotations

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
from evalkit.features.embed import Embeddings, zero_shot_classifier
from evalkit.filehash import json_sha256
from evalkit.metrics import classification_logits, derive, zero_shot_classification_metrics
from evalkit.models.encoder import Encoder
from evalkit.registry import task_families
from evalkit.results import TaskResult
from evalkit.tasks.base import RunContext
from evalkit.tasks.common import Scored, class_records, run_task
from evalkit.tasks.spec import TaskSpec


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
    yaml_keys: tuple[str, ...] = ()  # class names and templates are common keys (spec.TASK_KEYS)
    default_transform = "crop"
    combine = None  # best-of-both: each metric's maximum over the transforms (Table 2's rule)
    result_task = "zeroshot_classification"

    def validate(self, spec: TaskSpec) -> None:
        spec.check_options(self.yaml_keys)

    def prepare(self, spec: TaskSpec, data_root: str | Path | None) -> PreparedTask:
        """Find and check the task's data, class names and templates: no model needed, so a
        missing or malformed dataset is reported before any weights are read."""
        self.validate(spec)
        data = load_source(spec.source, data_root, spec.name,
                           base_dir=spec.base_dir, classnames=spec.classnames)
        classnames = spec.classnames if spec.classnames is not None else data.classnames
        if data.override_classnames:
            classnames = data.classnames
        templates = spec.templates if spec.templates is not None else data.templates
        where = spec.path or spec.name
        if not classnames:
            raise DataError(f"{where}: no class names (set 'classnames' in the task or add classnames.txt to the data)")
        if not templates:
            raise DataError(f"{where}: no templates (set 'templates' in the task or add zeroshot_classification_templates.txt)")
        subset = class_subset_groups(spec.protocol, spec.base_dir, where)
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
        return run_task(self, spec, encoder, ctx, prepared)

    def score(self, spec: TaskSpec, encoder: Encoder, ctx: RunContext, prepared: PreparedTask,
              by_mode: dict[str, Embeddings]) -> Scored:
        """The classifier (cached), then per transform: 100 × cosine logits, projected onto label
        groups where the data has them, and clip_benchmark's metrics."""
        t0 = time.perf_counter()
        hits_before = ctx.cache.hits
        # a view with prompts of its own replaces the task's (a rendered map is not what they describe)
        view_prompts = spec.view_spec.prompts if spec.view_spec is not None else None
        templates = list(view_prompts) if view_prompts else prepared.templates
        classifier = zero_shot_classifier(encoder, prepared.classnames, templates, ctx.cache, progress=ctx.run.progress,
                                          desc=f"{spec.name}: classifier")
        classifier_s = time.perf_counter() - t0
        feats = next(iter(by_mode.values()))
        target = torch.tensor(feats.labels, dtype=torch.long)
        bad = (target < 0) | (target >= prepared.n_labels)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DataError(f"{prepared.where}: sample {feats.keys[i]} has label {int(target[i])} but there are "
                            f"only {prepared.n_labels} classes")
        scored = Scored(metrics={}, evalkit={
            "n_classes": prepared.n_labels,
            "n_classifier_classes": len(prepared.classnames),
            "n_templates": len(templates),
            "template_set": spec.protocol.get("template_set"),
            "classnames_check": prepared.names_note,
            # what the classifier was built from, by content (a certificate binds them: evalkit.filehash)
            "templates_sha256": json_sha256(list(templates)),
            "classnames_sha256": json_sha256(list(prepared.classnames)),
            "classifier_seconds": round(classifier_s, 4),
            "classifier_cached": ctx.cache.hits > hits_before,
        }, text_seconds=classifier_s)
        if ctx.run.records:
            scored.records_kind = "classification"
            scored.records_meta = {"n_classes": prepared.n_labels, "logit_scale": 100.0,
                                   "classnames": prepared.classnames,
                                   "label_groups": prepared.data.label_groups}
        for m, emb in by_mode.items():
            logits = classification_logits(emb.features, classifier)
            if prepared.data.label_groups is not None:
                logits = project_logits(logits, prepared.data.label_groups)
            scored.metrics[m] = zero_shot_classification_metrics(logits, target, prepared.n_labels)
            if spec.metric == "mean_acc1_acc5" and "acc5" in scored.metrics[m]:  # the paper's Kinetics metric
                scored.metrics[m]["mean_acc1_acc5"] = derive("mean_acc1_acc5", scored.metrics[m])
            if ctx.run.save_predictions:
                scored.predictions[m] = _top5(feats.keys, target, logits)
            if ctx.run.records:  # top-k as acc1 / acc5 counted them: topk(5), or topk(1) under 5 classes
                scored.records[m] = class_records(feats.keys, target, logits, 5 if prepared.n_labels >= 5 else 1)
        return scored


def _top5(keys: list[str], target: torch.Tensor, logits: torch.Tensor) -> list[dict[str, Any]]:
    """Per sample: key, label, the top-5 classes and their scores (100 × cosine, 4 decimals)."""
    top = logits.topk(min(5, logits.shape[1]), dim=1)
    return [{"key": key, "label": int(y), "top_classes": idx, "top_scores": [round(s, 4) for s in sc]}
            for key, y, idx, sc in zip(keys, target.tolist(), top.indices.tolist(), top.values.tolist(), strict=True)]


def project_logits(logits: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """(N, C) classifier logits -> (N, len(groups)): label j scores as the max over its classes."""
    return torch.stack([logits[:, g].max(dim=1).values for g in groups], dim=1)
