"""Linear probes (``family: linear_probe``): frozen features of any view, a logistic-regression
probe trained on the task's train split, clip_benchmark's ``linear_probe`` algorithm
(:mod:`evalkit.tasks.probe`, numerically identical to it on the same features). Two kinds:

* **few-shot** (``fewshot:``, the default): K samples per class, several K and seeds;
* **full** (``probe:``): every sample of the train split (clip_benchmark's ``--fewshot_k -1``),
  one seed; Table 7 of arXiv 2402.04252 (``imagenet1k-linear-probe``).

A task names its test samples in ``source`` and its train samples in ``train_source`` (the same
schema), and the protocol under ``fewshot`` or ``probe``::

    train_source: {type: shapeworld, task: shape, split: train, n: 600, seed: 7}
    fewshot:
      shots: [1, 2, 4, 8, 16]     # K samples per class
      seeds: 3                    # seeds 0, 1, 2 (or a list of seeds)
      lr: 0.1                     # and epochs, batch_size, val_fraction, wd_log10_min,
                                  # wd_log10_max, wd_points, wd_init_points, wd_refine_span
                                  # (evalkit.tasks.probe.ProbeOptions; defaults: clip_benchmark's CLI,
                                  # val_fraction 0.1 as its README's --val_proportion example)
    metric: acc1@16shot           # default: acc1 at the largest K

    probe:                        # instead of fewshot: the whole train split
      seed: 0                     # and the ProbeOptions keys above
    metric: acc1                  # or acc5, mean_per_class_recall

The family declares both splits (``splits = ("train", "test")``); the shared runner
(:func:`evalkit.tasks.common.run_task`) embeds each once through the task's view (images, video
frames, a 3D task's depth views or point tower), with the feature cache, the ranks of a launched
job and the skipped-sample logs (``<task>.train.skipped.log`` for the train split), and records
the train split beside the test split (``train_samples``, ``train_evaluated``, ...). This module
is only the configuration, ``prepare`` (both splits found and checked before any weights are
read) and ``score``: every K, seed and weight decay of the sweep works on those tensors.

Few-shot metrics: ``acc1@{K}shot`` (top-1, a fraction, the mean over seeds) and
``acc1@{K}shot_std`` (population standard deviation over seeds); each run's accuracy, weight decay
and sample counts are in the result's ``evalkit.runs``, the protocol in ``evalkit.fewshot``. The
run options ``shots`` and ``seeds`` (``--shots 1,2,4 --seeds 5``) replace the task's K values and
seeds (``seeds: N`` means seeds 0 … N-1); when the task's primary metric's K is no longer run,
the primary metric becomes acc1 at the largest K run. Full-probe metrics: ``acc1``, ``acc5`` and
``mean_per_class_recall`` of the test split, the run in ``evalkit.runs``, the protocol in
``evalkit.probe``; ``shots`` and ``seeds`` do not apply.

Best-of-both: the probe runs on each transform's features, and the transform with the better
primary metric gives every reported number (a mean stays with its std and its K neighbours), the
other transform's as ``metric@transform``, as retrieval does. Train labels must be class indices;
a class with fewer than K train samples (after the validation split) gives all it has and is
counted per run (``short_classes``). ``--save-predictions`` writes nothing for this family.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.data.sources import DataError, SourceData, load_source
from evalkit.errors import OptionError
from evalkit.features.embed import Embeddings
from evalkit.metric_table import parse as parse_metric
from evalkit.models.encoder import Encoder
from evalkit.progress import progress_bar
from evalkit.registry import task_families
from evalkit.results import TaskResult
from evalkit.tasks.base import RunContext
from evalkit.tasks.common import Scored, ranked_records, run_task
from evalkit.tasks.probe import (
    FullProbeRun,
    ProbeOptions,
    ProbeRun,
    fewshot_metrics,
    fewshot_probe,
    full_probe,
)
from evalkit.tasks.spec import TaskSpec, TaskSpecError

log = logging.getLogger("evalkit")

DEFAULT_SHOTS = (1, 2, 4, 8, 16)
DEFAULT_SEEDS = 3
_PROBE_KEYS = tuple(f.name for f in dataclasses.fields(ProbeOptions))
#: what a full probe reports (clip_benchmark's lp_acc1, lp_acc5, lp_mean_per_class_recall)
FULL_METRICS = ("acc1", "acc5", "mean_per_class_recall")
#: how the probe is trained, as a result records it (both kinds)
_TRAINING = {"optimizer": "AdamW", "schedule": "cosine, no warm-up", "loss": "cross-entropy", "dtype": "float32",
             "features": "L2-normalised"}


def _probe_options(raw: dict[str, Any], key: str, where: str) -> ProbeOptions:
    """The :class:`ProbeOptions` keys of the task's ``key`` mapping, checked."""
    opts = {k: raw[k] for k in _PROBE_KEYS if k in raw}
    for k, v in opts.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TaskSpecError(f"{where}: field '{key}.{k}' must be a number, got {v!r}")
    try:
        return ProbeOptions(**opts)
    except ValueError as e:
        raise TaskSpecError(f"{where}: field '{key}': {e}") from e


def _weight_decays(probe: ProbeOptions) -> str:
    return f"logspace({probe.wd_log10_min}, {probe.wd_log10_max}, {probe.wd_points})"


@dataclass(frozen=True)
class FewShotConfig:
    """The ``fewshot`` mapping of a task: K values, seeds and the probe's options."""

    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: tuple[int, ...] = tuple(range(DEFAULT_SEEDS))
    probe: ProbeOptions = field(default_factory=ProbeOptions)

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> FewShotConfig:
        where = spec.path or spec.name
        raw = spec.options.get("fewshot", {})
        if not isinstance(raw, dict):
            raise TaskSpecError(f"{where}: field 'fewshot' must be a mapping")
        unknown = sorted(set(raw) - {"shots", "seeds", *_PROBE_KEYS})
        if unknown:
            raise TaskSpecError(f"{where}: unknown field(s) {unknown} in 'fewshot'; allowed: "
                                f"{sorted({'shots', 'seeds', *_PROBE_KEYS})}")
        shots = raw.get("shots", list(DEFAULT_SHOTS))
        if (not isinstance(shots, list) or not shots
                or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in shots)
                or len(set(shots)) != len(shots)):
            raise TaskSpecError(f"{where}: field 'fewshot.shots' must be a list of distinct whole numbers ≥ 1, "
                                f"got {shots!r}")
        seeds = raw.get("seeds", DEFAULT_SEEDS)
        if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
            seed_list = list(range(seeds))
        elif (isinstance(seeds, list) and seeds and len(set(seeds)) == len(seeds)
              and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
            seed_list = list(seeds)
        else:
            raise TaskSpecError(f"{where}: field 'fewshot.seeds' must be a whole number ≥ 1 (seeds 0 … N-1) or a "
                                f"list of distinct seeds ≥ 0, got {seeds!r}")
        return cls(tuple(sorted(shots)), tuple(seed_list), _probe_options(raw, "fewshot", where))

    def with_overrides(self, shots: list[int] | None, seeds: int | None) -> FewShotConfig:
        """The run options ``shots`` / ``seeds`` in place of the task's (None: the task's own)."""
        if shots is not None:
            if not shots or not all(isinstance(k, int) and k >= 1 for k in shots):
                raise OptionError(f"shots must be whole numbers ≥ 1, got {shots!r}")
            self = dataclasses.replace(self, shots=tuple(sorted(set(shots))))
        if seeds is not None:
            if not isinstance(seeds, int) or seeds < 1:
                raise OptionError(f"seeds must be a whole number ≥ 1, got {seeds!r}")
            self = dataclasses.replace(self, seeds=tuple(range(seeds)))
        return self

    def record(self) -> dict[str, Any]:
        """The protocol as a result records it."""
        return {"shots": list(self.shots), "seeds": list(self.seeds), **self.probe.as_dict(),
                "weight_decays": _weight_decays(self.probe), **_TRAINING, "final_training": "K-shot samples only",
                "short_classes": "all their samples (counted per run)"}


@dataclass(frozen=True)
class FullProbeConfig:
    """The ``probe`` mapping of a task: a probe on the whole train split, its seed and options."""

    seed: int = 0
    probe: ProbeOptions = field(default_factory=ProbeOptions)

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> FullProbeConfig:
        where = spec.path or spec.name
        raw = spec.options["probe"]
        if not isinstance(raw, dict):
            raise TaskSpecError(f"{where}: field 'probe' must be a mapping")
        unknown = sorted(set(raw) - {"seed", *_PROBE_KEYS})
        if unknown:
            raise TaskSpecError(f"{where}: unknown field(s) {unknown} in 'probe'; allowed: "
                                f"{sorted({'seed', *_PROBE_KEYS})}")
        seed = raw.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise TaskSpecError(f"{where}: field 'probe.seed' must be a whole number ≥ 0, got {seed!r}")
        return cls(seed, _probe_options(raw, "probe", where))

    def record(self) -> dict[str, Any]:
        """The protocol as a result records it."""
        return {"seed": self.seed, **self.probe.as_dict(), "weight_decays": _weight_decays(self.probe), **_TRAINING,
                "train_samples": "all (clip_benchmark's fewshot_k -1)",
                "final_training": "the train and validation parts together" if self.probe.val_fraction
                else "the whole train split, weight decay 0"}


@dataclass
class PreparedProbe:
    """A linear-probe task's two splits, found and checked before the model is loaded."""

    data: SourceData  # the test split (``source``)
    train: SourceData  # ``train_source``
    config: FewShotConfig | FullProbeConfig
    n_classes: int | None  # None: from the labels (largest + 1)
    where: str


def _shots_of(metric: str) -> int | None:
    """K of a few-shot top-1 (``acc1@16shot`` -> 16), from the metric table; None for any other."""
    parsed = parse_metric(metric)
    if parsed is None or parsed.suffix or parsed.metric.name != "acc1@{k}shot":
        return None
    return parsed.k


def primary_metric(spec: TaskSpec, shots: tuple[int, ...]) -> str:
    """The task's ``metric`` when its K is run, else acc1 at the largest K (also the default)."""
    k = _shots_of(spec.metric)
    if k is not None and k in shots:
        return spec.metric
    return f"acc1@{max(shots)}shot"


@task_families.register("linear_probe")
class LinearProbeFamily:
    name = "linear_probe"
    yaml_keys = ("train_source", "fewshot", "probe")
    splits = ("train", "test")  # embedded by the shared runner; the train split comes to score as train=
    default_transform = "crop"
    combine = None  # unused: score names the metric that picks the transform (Scored.combine_by)
    result_task = "linear_probe"

    def validate(self, spec: TaskSpec) -> FewShotConfig | FullProbeConfig:
        where = spec.path or spec.name
        spec.check_options(self.yaml_keys)
        train = spec.options.get("train_source")
        if not isinstance(train, dict) or "type" not in train:
            raise TaskSpecError(f"{where}: field 'train_source' (the train split, same schema as 'source') "
                                f"must be a mapping with a 'type'")
        if spec.protocol.get("splits"):
            raise TaskSpecError(f"{where}: protocol.splits is not supported by the linear_probe family")
        if "probe" in spec.options:
            if "fewshot" in spec.options:
                raise TaskSpecError(f"{where}: fields 'fewshot' (K samples per class) and 'probe' (the whole train "
                                    f"split) exclude each other")
            if spec.metric not in FULL_METRICS:
                raise TaskSpecError(f"{where}: field 'metric' must be one of {', '.join(FULL_METRICS)} for a probe "
                                    f"on the whole train split, got {spec.metric!r}")
            return FullProbeConfig.from_spec(spec)
        config = FewShotConfig.from_spec(spec)
        k = _shots_of(spec.metric)
        if spec.metric != "acc1" and (k is None or k not in config.shots):
            raise TaskSpecError(f"{where}: field 'metric' must be acc1@Kshot for a K in fewshot.shots "
                                f"{list(config.shots)}, got {spec.metric!r}")
        return config

    def prepare(self, spec: TaskSpec, data_root: str | Path | None) -> PreparedProbe:
        """Both splits found and checked, and the class count: no model needed."""
        config = self.validate(spec)
        where = spec.path or spec.name
        test = load_source(spec.source, data_root, spec.name, base_dir=spec.base_dir, classnames=spec.classnames)
        train = load_source(spec.options["train_source"], data_root, spec.name, base_dir=spec.base_dir,
                            classnames=spec.classnames)
        if train.classnames and test.classnames and list(train.classnames) != list(test.classnames):
            raise DataError(f"{where}: 'train_source' and 'source' list different classes "
                            f"({len(train.classnames)} vs {len(test.classnames)}; first train classes "
                            f"{list(train.classnames)[:3]}, test {list(test.classnames)[:3]})")
        # a source of captions, not class labels, fails now rather than after every image is embedded
        for split, data in (("train_source", train), ("source", test)):
            first = next((sample for unit in data.units[:1] for sample in unit.samples()), None)
            if first is not None and not _is_class_index(first[2]):
                raise DataError(f"{where}: {split} sample {first[0]} has the target {first[2]!r}, not a class "
                                f"index (a linear probe needs labelled samples)")
        if train.label_groups is not None:
            n_classes: int | None = len(train.label_groups)
        elif spec.classnames is not None or train.classnames or test.classnames:
            n_classes = len(spec.classnames or train.classnames or test.classnames or [])
        else:
            n_classes = None
        return PreparedProbe(test, train, config, n_classes, where)

    def run(self, spec: TaskSpec, encoder: Encoder, ctx: RunContext,
            prepared: PreparedProbe | None = None) -> TaskResult:
        return run_task(self, spec, encoder, ctx, prepared)

    def score(self, spec: TaskSpec, encoder: Encoder, ctx: RunContext, prepared: PreparedProbe,
              by_mode: dict[str, Embeddings], train: dict[str, Embeddings]) -> Scored:
        """Probe every (K, seed), or the whole train split, per transform, on the embedded splits."""
        modes = list(by_mode)
        train_y = _class_labels(train[modes[0]], prepared.where, "train_source")
        test_y = _class_labels(by_mode[modes[0]], prepared.where, "source")
        n_classes = prepared.n_classes or int(max(train_y.max(), test_y.max())) + 1
        for split, emb, y in (("train_source", train[modes[0]], train_y), ("source", by_mode[modes[0]], test_y)):
            bad = (y >= n_classes).nonzero()
            if len(bad):
                i = int(bad[0])
                raise DataError(f"{prepared.where}: {split} sample {emb.keys[i]} has label {int(y[i])} but there "
                                f"are only {n_classes} classes")
        if ctx.run.save_predictions:
            log.warning("%s: the linear_probe family writes no predictions", spec.name)
        device = probe_device(encoder)
        if isinstance(prepared.config, FullProbeConfig):
            return _score_full(spec, ctx, prepared.config, by_mode, train, train_y, test_y, n_classes, device)
        return _score_fewshot(spec, ctx, prepared.config, by_mode, train, train_y, test_y, n_classes, device)


def _score_fewshot(spec: TaskSpec, ctx: RunContext, task_config: FewShotConfig, by_mode: dict[str, Embeddings],
                   train: dict[str, Embeddings], train_y: torch.Tensor, test_y: torch.Tensor, n_classes: int,
                   device: str) -> Scored:
    config = task_config.with_overrides(ctx.run.shots, ctx.run.seeds)
    metric = primary_metric(spec, config.shots)
    task_metric = primary_metric(spec, task_config.shots)
    t0 = time.perf_counter()
    with progress_bar(len(by_mode) * len(config.shots) * len(config.seeds), f"{spec.name}: few-shot probes",
                      "probes", enabled=ctx.run.progress) as bar:
        runs: dict[str, list[ProbeRun]] = {
            m: fewshot_probe(train[m].features, train_y, emb.features, test_y, shots=config.shots,
                             seeds=config.seeds, options=config.probe, n_classes=n_classes, device=device, bar=bar)
            for m, emb in by_mode.items()}
    evalkit: dict[str, Any] = {
        "metric": metric,  # at the K values run (--shots)
        "n_classes": n_classes,
        "fewshot": {**config.record(), "probe_device": device},
        "probe_seconds": round(time.perf_counter() - t0, 4),
        # per transform, per (K, seed): test top-1, chosen weight decay, samples used
        "runs": {m: [r.summary() for r in rs] for m, rs in runs.items()},
        "short_classes_max": {str(k): max(len(r.short_classes) for rs in runs.values() for r in rs if r.shots == k)
                              for k in config.shots},
    }
    if metric != task_metric:  # --shots left out the K of the task's own primary metric
        evalkit["metric_of_task"] = task_metric
    scored = Scored(metrics={m: fewshot_metrics(r) for m, r in runs.items()}, evalkit=evalkit, combine_by=metric)
    if ctx.run.records:  # per (K, seed) run, the probe's top-1 on each test sample
        scored.records_kind = "fewshot"
        scored.records_meta = {"n_classes": n_classes, "shots": list(config.shots), "seeds": list(config.seeds)}
        for m, rs in runs.items():
            scored.records[m] = {
                "key": np.asarray([str(k) for k in by_mode[m].keys], dtype=str),
                "target": test_y.numpy().astype(np.int32),
                "shots": np.asarray([r.shots for r in rs], dtype=np.int32),
                "seed": np.asarray([r.seed for r in rs], dtype=np.int32),
                "pred": torch.stack([r.predictions for r in rs]).numpy().astype(np.int32, copy=False),
            }
    return scored


def _score_full(spec: TaskSpec, ctx: RunContext, config: FullProbeConfig, by_mode: dict[str, Embeddings],
                train: dict[str, Embeddings], train_y: torch.Tensor, test_y: torch.Tensor, n_classes: int,
                device: str) -> Scored:
    t0 = time.perf_counter()
    with progress_bar(None, f"{spec.name}: linear probe", "probes", enabled=ctx.run.progress) as bar:
        runs: dict[str, FullProbeRun] = {
            m: full_probe(train[m].features, train_y, emb.features, test_y, seed=config.seed, options=config.probe,
                          n_classes=n_classes, device=device, bar=bar)
            for m, emb in by_mode.items()}
    scored = Scored(metrics={m: r.metrics for m, r in runs.items()}, combine_by=spec.metric, evalkit={
        "n_classes": n_classes,
        "probe": {**config.record(), "probe_device": device},
        "probe_seconds": round(time.perf_counter() - t0, 4),
        # per transform: test metrics, chosen weight decay, samples, the sweep's points
        "runs": {m: r.summary() for m, r in runs.items()},
    })
    if ctx.run.records:  # the probe's logits on each test sample, as the classification records keep them
        scored.records_kind = "probe"
        scored.records_meta = {"n_classes": n_classes, "seed": config.seed}
        for m, r in runs.items():
            scored.records[m] = ranked_records(by_mode[m].keys, test_y, r.top_classes, r.top_scores, r.predictions)
    return scored


def probe_device(encoder: Encoder) -> str:
    """Where the probe trains: the encoder's GPU if it has one (the sweep's validation passes
    over a large train split are slow on a CPU), else the CPU."""
    device = str(getattr(encoder, "device", "cpu"))
    return device if device.startswith("cuda") and torch.cuda.is_available() else "cpu"


def _class_labels(emb: Embeddings, where: str, split: str) -> torch.Tensor:
    """The samples' targets as class indices; anything else is an error naming the sample."""
    for key, label in zip(emb.keys, emb.labels, strict=True):
        if not _is_class_index(label):
            raise DataError(f"{where}: {split} sample {key} has the target {label!r}, not a class index "
                            f"(a linear probe needs labelled samples)")
    return torch.tensor([int(label) for label in emb.labels], dtype=torch.long)


def _is_class_index(label: Any) -> bool:
    return isinstance(label, numbers.Integral) and not isinstance(label, bool) and label >= 0
