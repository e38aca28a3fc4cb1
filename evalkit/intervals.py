"""The interval of every metric of a result: from its per-sample records (:mod:`evalkit.records`)
when it has them, from its sample count alone where a metric allows (a proportion), else a note.

Which method each metric gets (names from :mod:`evalkit.stats`):

* ``acc1``, ``acc5`` (and any ``acc{k}``): proportions of N, Wilson's interval (Clopper–Pearson
  with ``proportion="clopper-pearson"``); a result without records still gets these, and each
  retrieval recall@K as a proportion of its queries (images or captions);
* ``mean_per_class_recall``: bootstrap over samples, stratified by class;
* ``mean_acc1_acc5``: bootstrap over samples of ``(hit@1 + hit@5) / 2``;
* retrieval recalls and ``mean_recall``: bootstrap over images, each image carrying its own
  image→text query and its captions' text→image queries (so the text→image recall is a ratio
  of sums, and the six recalls share their resamples);
* ``acc1@{K}shot``: bootstrap over test samples of the mean over seeds of a sample's hits (the
  spread over seeds stays ``acc1@{K}shot_std``);
* a metric of several transforms (best-of-both) takes the interval of the transform that gave
  it; a task of several splits combines its splits' intervals (``normal-combined``).

All values are fractions, as the metrics are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from evalkit.metric_table import SUFFIX_RE
from evalkit.stats import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Bootstrap,
    Interval,
    binomial_pvalue,
    bootstrap,
    bootstrap_class_mean,
    bootstrap_mean,
    combined_interval,
    proportion_interval,
    z_value,
)

__all__ = ["IntervalOptions", "Evidence", "record_intervals", "count_intervals", "retrieval_queries", "combined_splits",
           "NEEDS_RECORDS"]

NEEDS_RECORDS = "needs per-sample records (this result was written without them)"
@dataclass(frozen=True)
class Evidence:
    """A metric's interval and how to test a value against it: ``binomial-exact`` (a proportion:
    ``k`` of ``n``), ``bootstrap`` (the bootstrap distribution behind the interval, column
    ``column`` of a vector statistic) or ``normal`` (a combination of independent parts: the
    normal distribution the interval was made from)."""

    interval: Interval
    test: str
    k: int = 0
    n: int = 0
    boot: Bootstrap | None = None
    column: int | None = None

    def pvalue(self, value: float) -> float:
        """Two-sided p-value of the hypothesis that the metric's true value is ``value`` (a fraction)."""
        if self.test == "binomial-exact":
            return binomial_pvalue(self.k, self.n, value)
        if self.test == "bootstrap" and self.boot is not None:
            return self.boot.pvalue(value, self.column)
        se = self.interval.half_width / z_value(self.interval.level)
        center = (self.interval.low + self.interval.high) / 2
        if se <= 0:
            return 1.0 if value == center else 0.0
        from scipy.stats import norm

        return float(min(1.0, 2 * norm.sf(abs(value - center) / se)))


def _proportion(k: int, n: int, options: IntervalOptions) -> Evidence:
    return Evidence(proportion_interval(k, n, level=options.level, method=options.proportion), "binomial-exact", k, n)


def _boot(boot: Bootstrap, options: IntervalOptions, column: int | None = None) -> Evidence:
    ivs = boot.interval(options.level)
    return Evidence(ivs if column is None else ivs[column], "bootstrap", boot=boot, column=column)


_ACC = re.compile(r"^acc([1-9]\d*)$")
_RECALL = re.compile(r"^(text_retrieval_recall|image_retrieval_recall|i2t_R|t2i_R)@([1-9]\d*)$")
_SHOT = re.compile(r"^acc1@([1-9]\d*)shot$")


@dataclass(frozen=True)
class IntervalOptions:
    """How intervals are made: recorded beside them in every result (``evalkit.ci_options``)."""

    level: float = DEFAULT_LEVEL
    proportion: str = "wilson"
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "proportion": self.proportion, "resamples": self.resamples, "seed": self.seed}


def _hits(arrays: Mapping[str, np.ndarray], k: int) -> np.ndarray:
    top = np.asarray(arrays["top_classes"])
    target = np.asarray(arrays["target"])
    return (top[:, :k] == target[:, None]).any(axis=1)


def classification_intervals(arrays: Mapping[str, np.ndarray], metrics: Mapping[str, float],
                             options: IntervalOptions = IntervalOptions()) -> dict[str, Evidence]:
    """Intervals of a classification (or full linear probe) record's metrics."""
    out: dict[str, Evidence] = {}
    target = np.asarray(arrays["target"])
    n = int(target.shape[0])
    for name in metrics:
        m = _ACC.match(name)
        if m and int(m.group(1)) <= np.asarray(arrays["top_classes"]).shape[1]:
            k = int(np.count_nonzero(_hits(arrays, int(m.group(1)))))
            out[name] = _proportion(k, n, options)
    if "mean_per_class_recall" in metrics:
        # the argmax the metric counts (``pred``), which may order ties otherwise than top-k
        pred = np.asarray(arrays["pred"]) if "pred" in arrays else np.asarray(arrays["top_classes"])[:, 0]
        hit1 = (pred == target).astype(np.float64)
        out["mean_per_class_recall"] = _boot(bootstrap_class_mean(hit1, target, resamples=options.resamples,
                                                                  seed=options.seed), options)
    if "mean_acc1_acc5" in metrics and np.asarray(arrays["top_classes"]).shape[1] >= 5:
        both = (_hits(arrays, 1).astype(np.float64) + _hits(arrays, 5)) / 2
        out["mean_acc1_acc5"] = _boot(bootstrap_mean(both, resamples=options.resamples, seed=options.seed), options)
    return out


def retrieval_intervals(arrays: Mapping[str, np.ndarray], metrics: Mapping[str, float],
                        options: IntervalOptions = IntervalOptions()) -> dict[str, Evidence]:
    """Intervals of the recalls (both ways, every K the metrics name) and their mean, bootstrapped
    over images with their captions."""
    i2t = np.asarray(arrays["i2t_rank"])
    t2i = np.asarray(arrays["t2i_rank"])
    owner = np.asarray(arrays["t2i_image"])
    n_images = i2t.shape[0]
    ks = sorted({int(m.group(2)) for name in metrics if (m := _RECALL.match(name))})
    if not ks:
        return {}
    captions = np.bincount(owner, minlength=n_images).astype(np.float64)
    columns = [captions]
    for k in ks:
        columns.append(((i2t >= 0) & (i2t < k)).astype(np.float64))
        columns.append(np.bincount(owner, weights=(t2i < k).astype(np.float64), minlength=n_images))
    data = np.stack(columns, axis=1)

    def statistic(s: np.ndarray) -> np.ndarray:
        s = s[..., 0, :]  # one stratum
        images = n_images  # every resample has as many images as the data
        recalls = []
        for j in range(len(ks)):
            recalls.append(s[..., 1 + 2 * j] / images)  # image→text
            recalls.append(s[..., 2 + 2 * j] / s[..., 0])  # text→image: hits over captions
        stacked = np.stack(recalls, axis=-1)
        return np.concatenate([stacked, stacked.mean(axis=-1, keepdims=True)], axis=-1)

    boot = bootstrap(data, statistic, resamples=options.resamples, seed=options.seed)
    out: dict[str, Evidence] = {}
    for j, k in enumerate(ks):
        for prefix, alias, col in (("text_retrieval_recall", "i2t_R", 2 * j), ("image_retrieval_recall", "t2i_R", 2 * j + 1)):
            for name in (f"{prefix}@{k}", f"{alias}@{k}"):
                if name in metrics:
                    out[name] = _boot(boot, options, col)
    if "mean_recall" in metrics:
        out["mean_recall"] = _boot(boot, options, 2 * len(ks))
    return out


def fewshot_intervals(arrays: Mapping[str, np.ndarray], metrics: Mapping[str, float],
                      options: IntervalOptions = IntervalOptions()) -> dict[str, Evidence]:
    """Per K, the interval of the seed-mean top-1, bootstrapped over test samples."""
    target = np.asarray(arrays["target"])
    pred = np.asarray(arrays["pred"])
    shots = np.asarray(arrays["shots"])
    out: dict[str, Evidence] = {}
    for name in metrics:
        m = _SHOT.match(name)
        if not m:
            continue
        rows = shots == int(m.group(1))
        if not rows.any():
            continue
        per_sample = (pred[rows] == target[None, :]).mean(axis=0)
        out[name] = _boot(bootstrap_mean(per_sample, resamples=options.resamples, seed=options.seed), options)
    return out


_BY_KIND = {"classification": classification_intervals, "probe": classification_intervals,
            "retrieval": retrieval_intervals, "fewshot": fewshot_intervals}


def record_intervals(kind: str, arrays: Mapping[str, np.ndarray], metrics: Mapping[str, float],
                     options: IntervalOptions = IntervalOptions()) -> dict[str, Evidence]:
    """The intervals of ``metrics`` (one transform's) from that transform's record ``arrays``."""
    if kind not in _BY_KIND:
        raise ValueError(f"no intervals for records of kind {kind!r} (known: {sorted(_BY_KIND)})")
    return _BY_KIND[kind](arrays, metrics, options)


def retrieval_queries(provenance: Mapping[str, Any]) -> dict[str, int] | None:
    """The queries a retrieval result's recalls are proportions of, from what its family records
    (``images``: image→text queries; ``captions``: text→image), or None when it has neither."""
    images, captions = provenance.get("images"), provenance.get("captions")
    if isinstance(images, int) and isinstance(captions, int) and images > 0 and captions > 0:
        return {"i2t": images, "t2i": captions}
    return None


def count_intervals(metrics: Mapping[str, float], n: int, options: IntervalOptions = IntervalOptions(), *,
                    queries: Mapping[str, int] | None = None) -> tuple[dict[str, Evidence], dict[str, str]]:
    """For a result without records: the proportions' intervals from their counts alone (``k`` =
    value × n, rounded): ``acc{k}`` of ``n`` samples, and, with ``queries``
    (:func:`retrieval_queries`), each recall@K of its image→text or text→image queries. A note
    for every other metric."""
    out: dict[str, Evidence] = {}
    notes: dict[str, str] = {}
    for name, value in metrics.items():
        if name.endswith("_std"):
            continue  # a spread, not an estimate
        base = SUFFIX_RE.sub("", name)
        total = n if _ACC.match(base) else None
        recall = _RECALL.match(base)
        if recall and queries:
            total = queries["i2t" if recall.group(1) in ("text_retrieval_recall", "i2t_R") else "t2i"]
        if total and total > 0 and "@split" not in name and isinstance(value, int | float):
            k = int(round(float(value) * total))
            if 0 <= k <= total:
                out[name] = _proportion(k, total, options)
                continue
        notes[name] = NEEDS_RECORDS
    return out, notes


def combined_splits(per_split: list[Mapping[str, Interval]], values: list[Mapping[str, float]],
                    level: float = DEFAULT_LEVEL) -> dict[str, Evidence]:
    """A several-split task's intervals: each metric's splits combined as independent parts of
    their mean (``normal-combined``, tested against the normal it was made from)."""
    out: dict[str, Evidence] = {}
    for name in per_split[0]:
        if all(name in ivs for ivs in per_split) and all(name in v for v in values):
            iv = combined_interval([v[name] for v in values], [ivs[name] for ivs in per_split], level=level)
            out[name] = Evidence(iv, "normal")
    return out
