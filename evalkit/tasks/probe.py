"""Linear probes on frozen features, few-shot and full: clip_benchmark's ``linear_probe`` algorithm on
tensors (no model, no data loader, no global random state).

One run is one (K, seed): from the train features, a validation split is carved off at random
(``val_fraction``, as clip_benchmark's ``--val_proportion`` does with ``random_split``); K samples
per class are drawn from the rest (the first K of each class in a random permutation); a
weight-decay sweep on the validation split picks the weight decay (``find_peak``: 7 points of
``logspace(-6, 2, 97)``, then around the peak with spans 8, 4, 2, 1); the final probe is trained
on the K-shot samples alone with it and scored top-1 on the test features. A probe is a
``Linear`` layer trained with AdamW, cross-entropy and a cosine learning rate without warm-up over
``epochs × batches``, in mini-batches drawn in a fresh random order every epoch.

Every random draw comes from a ``torch.Generator`` seeded with the run's seed, in the order
clip_benchmark's run makes it from the global generator after ``torch.manual_seed(seed)`` (its
CLI seeds, then splits train/val; ``evaluate`` permutes for the K-shot draw; ``train`` re-seeds,
initialises the layer, and each epoch its ``DataLoader`` draws a base seed and its sampler a
seed for the epoch's order). On the same features, with nothing drawn from the global generator
between clip_benchmark's seeding and its split (model construction draws from it, so for a
real clip_benchmark run that holds only for cached features of a model built elsewhere), the
two give the same samples, the same weight decay and the same accuracy. Per seed the draws do
not depend on K, so the K-shot sets of one seed are nested (the 1-shot samples are among the
2-shot ones).

A full probe (:func:`full_probe`, clip_benchmark's ``fewshot_k = -1``: every train sample) makes
the same draws with K = -1 (the permutation then orders every sample of the train part), sweeps
the weight decay the same way, and trains its final probe on the train and validation parts
together, as clip_benchmark does for full training; it reads the train features in place, one
mini-batch at a time, so a million rows are never copied.

Differences from clip_benchmark, by choice:

- A class with fewer than K samples in the train part gives all it has and is counted
  (:attr:`ProbeRun.short_classes`); clip_benchmark abandons the run ("insufficient data").
- Training runs in float32 (clip_benchmark's default ``--amp`` trains in float16 on CUDA).
- A weight decay whose validation accuracy is already known is not trained again (find_peak
  retrains the peak every round; training is deterministic, so the choice is the same).
- A full probe's test set of labels below 5 reports no ``acc5`` (clip_benchmark: NaN).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.metrics import mean_per_class_recall, ranked_classes, topk_accuracy

__all__ = [
    "FullProbeRun",
    "ProbeOptions",
    "ProbeRun",
    "evaluate_probe",
    "fewshot_metrics",
    "fewshot_probe",
    "full_probe",
    "mean_and_std",
    "probe_logits",
    "sample_shots",
    "split_train_val",
    "sweep_weight_decay",
    "train_linear_probe",
]

#: test / validation rows scored at a time
SCORE_CHUNK = 8192


@dataclass(frozen=True)
class ProbeOptions:
    """The probe's protocol; defaults are clip_benchmark's (``cli.py``: ``--fewshot_lr 0.1``,
    ``--fewshot_epochs 10``, ``--batch_size 64``; ``linear_probe.py``: the weight-decay grid),
    except ``val_fraction``: clip_benchmark sweeps only when given ``--val_proportion`` (its
    README's example: 0.1). ``val_fraction = 0``: no validation split, weight decay 0."""

    lr: float = 0.1
    epochs: int = 10
    batch_size: int = 64
    val_fraction: float = 0.1
    wd_log10_min: float = -6.0
    wd_log10_max: float = 2.0
    wd_points: int = 97
    wd_init_points: int = 7  # the first sweep: these points of the same log range
    wd_refine_span: int = 8  # then around the peak with spans 8, 4, 2, 1

    def __post_init__(self) -> None:
        checks = [
            (self.lr > 0, "lr must be > 0"),
            (isinstance(self.epochs, int) and self.epochs >= 1, "epochs must be a whole number ≥ 1"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size must be a whole number ≥ 1"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.wd_log10_min <= self.wd_log10_max, "wd_log10_min must be ≤ wd_log10_max"),
            (isinstance(self.wd_points, int) and self.wd_points >= 1, "wd_points must be a whole number ≥ 1"),
            (isinstance(self.wd_init_points, int) and self.wd_init_points >= 1,
             "wd_init_points must be a whole number ≥ 1"),
            (isinstance(self.wd_refine_span, int) and self.wd_refine_span >= 0,
             "wd_refine_span must be a whole number ≥ 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def weight_decays(self) -> list[float]:
        """The sweep's grid: ``logspace(wd_log10_min, wd_log10_max, wd_points)``."""
        return np.logspace(self.wd_log10_min, self.wd_log10_max, num=self.wd_points).tolist()

    def initial_indices(self) -> list[int]:
        """Where the sweep starts: the grid points that are also points of the coarse grid of
        ``wd_init_points`` (found by equality of the floats, as clip_benchmark does)."""
        coarse = np.logspace(self.wd_log10_min, self.wd_log10_max, num=self.wd_init_points).tolist()
        return [i for i, wd in enumerate(self.weight_decays()) if wd in coarse]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProbeRun:
    """One (K, seed): the test accuracy, the chosen weight decay and the samples used (indices
    into the train features)."""

    shots: int
    seed: int
    acc1: float
    weight_decay: float
    train_indices: list[int]
    val_indices: list[int]
    short_classes: list[int] = field(default_factory=list)  # classes with fewer than K train samples
    val_acc1: dict[float, float] = field(default_factory=dict)  # weight decay -> validation top-1 (the sweep)
    #: the probe's top-1 class of each test sample (int32), the one ``acc1`` counts
    predictions: torch.Tensor | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """What a result records per run (no sample lists)."""
        return {"shots": self.shots, "seed": self.seed, "acc1": self.acc1, "weight_decay": self.weight_decay,
                "val_acc1": self.val_acc1.get(self.weight_decay), "train_samples": len(self.train_indices), "val_samples": len(self.val_indices),
                "short_classes": len(self.short_classes), "sweep_points": len(self.val_acc1)}


def _draw_seed(generator: torch.Generator) -> int:
    """One 64-bit draw, as a ``DataLoader`` iterator (base seed) and a ``RandomSampler`` (its
    epoch seed) make it."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def split_train_val(n: int, val_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the train and validation parts of ``n`` samples, drawn as
    ``torch.utils.data.random_split(range(n), [1 - val_fraction, val_fraction])`` draws them (its
    lengths: the floor of each fraction, the remainder handed out one by one from the first
    part). ``val_fraction = 0`` draws nothing and keeps every sample for training."""
    if val_fraction == 0:
        return torch.arange(n), torch.arange(0)
    lengths = [math.floor(n * frac) for frac in (1 - val_fraction, val_fraction)]
    for i in range(n - sum(lengths)):
        lengths[i % 2] += 1
    perm = torch.randperm(n, generator=generator)
    return perm[: lengths[0]], perm[lengths[0]:]


def _first_per_class(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the first ``k`` occurrences of each label, in order."""
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    start = torch.ones_like(sorted_labels, dtype=torch.bool)
    start[1:] = sorted_labels[1:] != sorted_labels[:-1]
    positions = torch.arange(len(labels))
    group_start = torch.cummax(torch.where(start, positions, 0), dim=0).values
    rank = torch.empty_like(positions)
    rank[order] = positions - group_start
    return rank < k


def sample_shots(labels: torch.Tensor, k: int, generator: torch.Generator,
                 n_classes: int | None = None) -> tuple[torch.Tensor, list[int]]:
    """K samples per class: one random permutation of ``labels``' indices (``randperm``, as
    clip_benchmark's ``evaluate``), the first ``k`` of each class in it, in permutation order.
    Returns the indices and the classes (of ``range(n_classes)``) that have fewer than ``k``,
    which give all they have."""
    perm = torch.randperm(len(labels), generator=generator)
    keep = _first_per_class(labels[perm], k)
    counts = torch.bincount(labels, minlength=n_classes or 0)
    return perm[keep], [c for c, n in enumerate(counts.tolist()) if n < k]


def _init_linear(dim: int, n_classes: int, generator: torch.Generator) -> torch.nn.Linear:
    """``torch.nn.Linear(dim, n_classes)`` initialised as its ``reset_parameters`` does, drawing
    from ``generator`` (weight first, then bias)."""
    layer = torch.nn.utils.skip_init(torch.nn.Linear, dim, n_classes)
    torch.nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(dim) if dim > 0 else 0
    torch.nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


def _cosine_lr(base_lr: float, step: int, steps: int) -> float:
    """clip_benchmark's ``cosine_lr`` without warm-up, in its arithmetic (numpy's cosine)."""
    return float(0.5 * (1 + np.cos(np.pi * (step - 0.0) / (steps - 0.0))) * base_lr)


def train_linear_probe(features: torch.Tensor, labels: torch.Tensor, n_classes: int, weight_decay: float,
                       options: ProbeOptions, seed: int, device: str | torch.device = "cpu",
                       rows: torch.Tensor | None = None) -> torch.nn.Linear:
    """A linear layer trained on ``features`` (N, D) → ``labels`` (N,): AdamW (``lr``,
    ``weight_decay``), cross-entropy, cosine learning rate set before each step, ``epochs``
    passes in mini-batches of ``batch_size`` in a new random order each epoch. Random draws: a
    generator seeded with ``seed`` initialises the layer, then per epoch gives two 64-bit draws
    (a data loader's base seed, unused, and its sampler's seed, which seeds the epoch's
    permutation), as clip_benchmark's ``train`` takes them from the global generator.

    ``rows``: the samples trained on, as indices into ``features``, in the order clip_benchmark's
    dataset would hold them (None: every row, in order). Each mini-batch is gathered from
    ``features`` and moved to ``device`` as float32 when it is used: training on a million rows
    copies none of them (only the index and one batch at a time)."""
    generator = torch.Generator().manual_seed(seed)
    layer = _init_linear(features.shape[1], n_classes, generator).to(device)
    rows = torch.arange(features.shape[0]) if rows is None else rows
    optimizer = torch.optim.AdamW(layer.parameters(), lr=options.lr, weight_decay=weight_decay)
    n, bs = rows.shape[0], options.batch_size
    per_epoch = math.ceil(n / bs)
    steps = options.epochs * per_epoch
    for epoch in range(options.epochs):
        _draw_seed(generator)  # the data loader iterator's base seed (for its workers)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_draw_seed(generator)))
        for i in range(per_epoch):
            lr = _cosine_lr(options.lr, epoch * per_epoch + i, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = rows[order[i * bs:(i + 1) * bs]]
            optimizer.zero_grad()
            loss = F.cross_entropy(layer(features[batch].to(device, torch.float32)),
                                   labels[batch].to(device, torch.long))
            loss.backward()
            optimizer.step()
    return layer


@torch.no_grad()
def _logit_chunks(layer: torch.nn.Linear, features: torch.Tensor,
                  rows: torch.Tensor | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, ``layer``'s logits on the CPU) for ``features`` (or those of its ``rows``),
    ``SCORE_CHUNK`` rows at a time."""
    device = layer.weight.device
    n = features.shape[0] if rows is None else rows.shape[0]
    for lo in range(0, n, SCORE_CHUNK):
        x = features[lo:lo + SCORE_CHUNK] if rows is None else features[rows[lo:lo + SCORE_CHUNK]]
        yield lo, layer(x.to(device, torch.float32)).cpu()


def probe_logits(layer: torch.nn.Linear, features: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``layer``'s logits, on the CPU, for ``features`` (or those of its ``rows``), computed a chunk
    of rows at a time into one tensor (rows × classes: the only copy)."""
    out = torch.empty(features.shape[0] if rows is None else rows.shape[0], layer.out_features)
    for lo, chunk in _logit_chunks(layer, features, rows):
        out[lo:lo + chunk.shape[0]] = chunk
    return out


def evaluate_probe(layer: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor,
                   rows: torch.Tensor | None = None, *,
                   predictions: bool = False) -> float | tuple[float, torch.Tensor]:
    """Top-1 accuracy (a fraction) of ``layer`` on ``features`` (or those of its ``rows``): the hits
    :func:`evalkit.metrics.topk_accuracy` counts, chunk by chunk, over the samples. The logits of a
    large validation part are never all held at once; the count is a whole number either way, so
    the fraction is the one topk_accuracy gives on all the logits. ``predictions``: also return
    each sample's top-1 class (int32), the ``torch.topk(logits, 1)`` pick that was counted."""
    target = (labels if rows is None else labels[rows]).cpu()
    hits = 0
    preds = torch.empty(target.shape[0], dtype=torch.int32) if predictions else None
    for lo, chunk in _logit_chunks(layer, features, rows):
        logits = chunk.float()
        hits += round(topk_accuracy(logits, target[lo:lo + chunk.shape[0]], (1,))[0] * chunk.shape[0])
        if preds is not None:  # topk_accuracy's own call, so the same pick among tied logits
            preds[lo:lo + chunk.shape[0]] = logits.topk(1, dim=1, largest=True, sorted=True).indices[:, 0]
    acc = hits / target.shape[0]
    return (acc, preds) if preds is not None else acc


def sweep_weight_decay(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                       n_classes: int, options: ProbeOptions, seed: int,
                       device: str | torch.device = "cpu", *, rows: torch.Tensor | None = None,
                       val_rows: torch.Tensor | None = None, bar: Any = None) -> tuple[float, dict[float, float]]:
    """clip_benchmark's ``find_peak`` search: validation top-1 at the initial grid points, then
    at the peak ± span for spans ``wd_refine_span``, halved down to 1; the peak moves only to a
    strictly better point, the earlier one wins ties, and a search that never beats 0 accuracy
    stays at grid index 0 (as find_peak's start). Returns the weight decay and every point's
    validation accuracy. ``rows`` / ``val_rows``: the rows of ``train_x`` / ``val_x`` trained and
    validated on (:func:`train_linear_probe`); ``bar`` is advanced by one per probe trained."""
    grid = options.weight_decays()
    scores: dict[int, float] = {}

    def accuracy_at(idx: int) -> float:
        if idx not in scores:
            layer = train_linear_probe(train_x, train_y, n_classes, grid[idx], options, seed, device, rows)
            scores[idx] = evaluate_probe(layer, val_x, val_y, val_rows)
            if bar is not None:
                bar.update(1)
        return scores[idx]

    def find_peak(indices: Sequence[int]) -> int:
        best, best_acc = 0, 0.0
        for idx in indices:
            acc = accuracy_at(idx)
            if best_acc < acc:
                best, best_acc = idx, acc
        return best

    peak = find_peak(options.initial_indices())
    span = options.wd_refine_span
    while span > 0:
        peak = find_peak([max(peak - span, 0), peak, min(peak + span, len(grid) - 1)])
        span //= 2
    return grid[peak], {grid[i]: acc for i, acc in sorted(scores.items())}


def _checked(fn: str, train_features: torch.Tensor, train_labels: Any, test_features: torch.Tensor,
             test_labels: Any, n_classes: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A probe's inputs checked (lengths, samples, labels in range): the labels as int64 tensors
    and the probe's outputs (by default, as clip_benchmark, the largest train label + 1)."""
    train_labels = torch.as_tensor(train_labels, dtype=torch.long)
    test_labels = torch.as_tensor(test_labels, dtype=torch.long)
    if train_features.shape[0] != train_labels.shape[0] or test_features.shape[0] != test_labels.shape[0]:
        raise ValueError(f"{fn}: features and labels differ in length")
    if train_labels.numel() == 0 or test_labels.numel() == 0:
        raise ValueError(f"{fn}: no train or no test samples")
    n_classes = int(train_labels.max()) + 1 if n_classes is None else n_classes
    for name, labels in (("train", train_labels), ("test", test_labels)):
        if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
            raise ValueError(f"{fn}: {name} labels outside [0, {n_classes})")
    return train_labels, test_labels, n_classes


def fewshot_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                  test_labels: torch.Tensor, *, shots: Sequence[int], seeds: Sequence[int],
                  options: ProbeOptions | None = None, n_classes: int | None = None,
                  device: str | torch.device = "cpu", bar: Any = None) -> list[ProbeRun]:
    """One :class:`ProbeRun` per (K in ``shots``, seed in ``seeds``), seeds outer; ``bar``
    (:mod:`evalkit.progress`) is advanced by one as each probe is trained. Per seed the
    validation split and the permutation the K-shot samples are taken from are drawn once
    (clip_benchmark's run draws them the same way whatever K is). ``n_classes``: the probe's
    outputs, by default (as clip_benchmark) the largest train label + 1."""
    options = options or ProbeOptions()
    train_labels, test_labels, n_classes = _checked("fewshot_probe", train_features, train_labels, test_features, test_labels,
                                                   n_classes)
    if any(not isinstance(k, int) or k < 1 for k in shots):
        raise ValueError(f"fewshot_probe: shots must be whole numbers ≥ 1, got {list(shots)}")
    runs: list[ProbeRun] = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        pool, val = split_train_val(train_labels.shape[0], options.val_fraction, generator)
        state = generator.get_state()  # the K-shot permutation: the same draw for every K
        val_x, val_y = train_features[val], train_labels[val]
        for k in shots:
            generator.set_state(state)
            chosen, short = sample_shots(train_labels[pool], k, generator, n_classes)
            idx = pool[chosen]
            x, y = train_features[idx], train_labels[idx]
            if len(val):
                wd, sweep = sweep_weight_decay(x, y, val_x, val_y, n_classes, options, seed, device)
            else:
                wd, sweep = 0.0, {}
            layer = train_linear_probe(x, y, n_classes, wd, options, seed, device)
            acc, preds = evaluate_probe(layer, test_features, test_labels, predictions=True)
            runs.append(ProbeRun(k, seed, acc, wd, idx.tolist(), val.tolist(), short, sweep, preds))
            if bar is not None:
                bar.update(1)
    return runs


@dataclass
class FullProbeRun:
    """A linear probe on every train sample (clip_benchmark's ``fewshot_k = -1``): the test
    metrics, the chosen weight decay and what it was trained on."""

    seed: int
    metrics: dict[str, float]  # acc1, acc5 (test labels up to 5 or more, as clip_benchmark), mean_per_class_recall
    weight_decay: float
    train_samples: int  # the final probe's: the train part and the validation part together
    val_samples: int
    val_acc1: dict[float, float] = field(default_factory=dict)  # weight decay -> validation top-1 (the sweep)
    #: per test sample, for the records: the top min(5, C) classes and logits (the first ones those
    #: acc1 / acc5 counted) and the argmax (mean_per_class_recall's top-1)
    top_classes: torch.Tensor | None = field(default=None, repr=False)
    top_scores: torch.Tensor | None = field(default=None, repr=False)
    predictions: torch.Tensor | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """What a result records of the run."""
        return {"seed": self.seed, **self.metrics, "weight_decay": self.weight_decay,
                "val_acc1": self.val_acc1.get(self.weight_decay), "train_samples": self.train_samples,
                "val_samples": self.val_samples, "sweep_points": len(self.val_acc1)}


def full_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
               test_labels: torch.Tensor, *, seed: int = 0, options: ProbeOptions | None = None,
               n_classes: int | None = None, device: str | torch.device = "cpu", bar: Any = None) -> FullProbeRun:
    """clip_benchmark's linear probe on the whole train split (its ``--fewshot_k -1``), from the
    feature tensors as they are: the validation part is carved off at random (``val_fraction``,
    its ``--val_proportion``), every other sample is taken in one random permutation (the draw
    its K-shot loop makes for K = -1), the weight decay is swept as for few-shot probes, and the
    final probe is trained on the train and validation parts together (clip_benchmark's rule for
    full training) before it scores the test features. ``val_fraction = 0``: weight decay 0, the
    whole split. The same random draws as clip_benchmark's run seeded with ``seed`` (see the
    module's notes), so on the same features the same weight decay and test metrics.

    Memory: the train features are read in place (each probe gathers one mini-batch at a time);
    besides them, a row index of N int64 and the test logits (test samples × classes)."""
    options = options or ProbeOptions()
    train_labels, test_labels, n_classes = _checked("full_probe", train_features, train_labels, test_features, test_labels,
                                                   n_classes)
    generator = torch.Generator().manual_seed(seed)
    pool, val = split_train_val(train_labels.shape[0], options.val_fraction, generator)
    rows = pool[torch.randperm(len(pool), generator=generator)]
    if len(val):
        wd, sweep = sweep_weight_decay(train_features, train_labels, train_features, train_labels, n_classes,
                                       options, seed, device, rows=rows, val_rows=val, bar=bar)
        rows = torch.cat([rows, val])  # the final probe: the train part, then the validation part
    else:
        wd, sweep = 0.0, {}
    layer = train_linear_probe(train_features, train_labels, n_classes, wd, options, seed, device, rows)
    if bar is not None:
        bar.update(1)
    logits = probe_logits(layer, test_features).float()
    ks = (1, 5) if int(test_labels.max()) >= 5 else (1,)  # clip_benchmark: acc5 when a test label is 5 or more
    metrics = {f"acc{k}": acc for k, acc in zip(ks, topk_accuracy(logits, test_labels, ks), strict=True)}
    pred = logits.argmax(dim=1)
    metrics["mean_per_class_recall"] = mean_per_class_recall(pred, test_labels)
    top_classes, top_scores = ranked_classes(logits, 5, max(ks))
    return FullProbeRun(seed, metrics, wd, len(rows), len(val), sweep, top_classes, top_scores, pred.to(torch.int32))


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (the mean ± std papers print over seeds)."""
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def fewshot_metrics(runs: Sequence[ProbeRun]) -> dict[str, float]:
    """``acc1@{K}shot`` (mean over seeds) and ``acc1@{K}shot_std`` per K, in K order."""
    out: dict[str, float] = {}
    for k in sorted({r.shots for r in runs}):
        mean, std = mean_and_std([r.acc1 for r in runs if r.shots == k])
        out[f"acc1@{k}shot"] = mean
        out[f"acc1@{k}shot_std"] = std
    return out
