"""The metric table: every metric's name, short name, direction and derivation, as data.

One table, read by the families (a derived metric is computed from it), ``metrics.py``, the
report (names, order, derivation of a metric a result lacks), the claims check (which names a
claims file may use) and ``evalkit check`` (which way is better). It imports nothing (no torch),
so reporting reads it without loading a model.

A name is exact (``mean_recall``) or a pattern with one ``{k}``, a positive integer
(``acc{k}``, ``text_retrieval_recall@{k}``, ``acc1@{k}shot``). The metrics of a result may carry a
suffix on any name, which :func:`parse` takes off: ``@crop`` / ``@squash`` (one transform of
best-of-both), ``@split<n>`` and ``_std`` (a task over several splits or seeds: one split's value,
the spread over them).

A derived metric is the mean of its members, each an exact name (all required) or a pattern
(every K present). It is computed in one place, :func:`derive`: by the family that reports it and
by the report for a result written without it. ``math.fsum`` makes the mean independent of the
members' order, and for two members it equals ``(a + b) / 2`` bit for bit.

Aggregates (``aggregate=True``) are reductions over a group's members (the papers' printed
averages; group files name them in their ``aggregate`` blocks): ``mean``, and ``gap``, the first
member minus the mean of all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SUFFIX_RE = re.compile(r"(_std|@split\d+|@crop|@squash)$")


@dataclass(frozen=True)
class Metric:
    """One row of the table. ``short`` and ``long`` may hold ``{k}`` as the name does."""

    name: str
    short: str  # chart labels: "top-1", "i2t R@5"
    long: str  # axis titles: "top-1 accuracy"
    higher_is_better: bool = True
    mean_of: tuple[str, ...] = ()  # derived: the mean of these members (names or {k} patterns)
    aggregate: bool = False  # a reduction over a group's members, not a metric of one task
    alias_of: str | None = None  # the same value under clip_benchmark's other name

    @property
    def derived(self) -> bool:
        return bool(self.mean_of)


# In report order: a task's rows list its metrics in the order of their rows here (then by K).
METRICS: tuple[Metric, ...] = (
    Metric("acc1", "top-1", "top-1 accuracy"),
    Metric("mean_acc1_acc5", "mean top-1/top-5", "mean of top-1 and top-5 accuracy", mean_of=("acc1", "acc5")),
    Metric("mean_recall", "mean recall", "mean retrieval recall",
           mean_of=("text_retrieval_recall@{k}", "image_retrieval_recall@{k}")),
    # clip_benchmark's names: "text_retrieval" is image→text, "image_retrieval" text→image
    Metric("text_retrieval_recall@{k}", "i2t R@{k}", "image→text recall@{k}"),
    Metric("image_retrieval_recall@{k}", "t2i R@{k}", "text→image recall@{k}"),
    Metric("acc5", "top-5", "top-5 accuracy"),
    Metric("mean_per_class_recall", "mean per-class recall", "mean per-class recall"),
    Metric("acc{k}", "top-{k}", "top-{k} accuracy"),
    Metric("acc1@{k}shot", "acc1@{k}shot", "acc1@{k}shot"),  # the linear probe's top-1 with K samples per class
    Metric("i2t_R@{k}", "i2t R@{k}", "image→text recall@{k}", alias_of="text_retrieval_recall@{k}"),
    Metric("t2i_R@{k}", "t2i R@{k}", "text→image recall@{k}", alias_of="image_retrieval_recall@{k}"),
    Metric("mean", "mean", "unweighted mean over the group's members", aggregate=True),
    Metric("gap", "gap", "the first member minus the mean of all members", higher_is_better=False,
           aggregate=True),
)

REDUCTIONS = tuple(m.name for m in METRICS if m.aggregate)


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(re.escape(name).replace(re.escape("{k}"), r"([1-9]\d*)"))


_EXACT = {m.name: m for m in METRICS if "{k}" not in m.name}
_PATTERNS = [(_pattern(m.name), m) for m in METRICS if "{k}" in m.name]
_ORDER = {m.name: i for i, m in enumerate(METRICS)}


@dataclass(frozen=True)
class MetricName:
    """A parsed name: its table row, its K (None for an exact name) and its suffix ("" if none)."""

    metric: Metric
    k: int | None = None
    suffix: str = ""

    def _fill(self, text: str) -> str:
        return text.replace("{k}", str(self.k)) if self.k is not None else text

    @property
    def short(self) -> str:
        return self._fill(self.metric.short)

    @property
    def long(self) -> str:
        return self._fill(self.metric.long)


def _lookup(base: str) -> MetricName | None:
    if base in _EXACT:
        return MetricName(_EXACT[base])
    for pattern, metric in _PATTERNS:
        if (m := pattern.fullmatch(base)) is not None:
            return MetricName(metric, int(m.group(1)))
    return None


def parse(name: str) -> MetricName | None:
    """The table row of ``name`` (``acc1``, ``acc1@crop``, ``acc1@16shot_std``), or None."""
    suffix = ""
    base = name
    while (found := _lookup(base)) is None:
        m = SUFFIX_RE.search(base)
        if m is None or m.start() == 0:
            return None
        suffix = m.group(0) + suffix
        base = base[: m.start()]
    return MetricName(found.metric, found.k, suffix)


def short_name(name: str) -> str:
    """``"top-1"`` for ``acc1``; the name itself for one the table does not know."""
    parsed = parse(name)
    return parsed.short if parsed is not None and not parsed.suffix else name


def long_name(name: str) -> str:
    """``"top-1 accuracy"`` for ``acc1``; the name itself for one the table does not know."""
    parsed = parse(name)
    return parsed.long if parsed is not None and not parsed.suffix else name


def direction(name: str) -> int:
    """+1 when a larger value is better, -1 when a smaller is, 0 for a spread (``_std``), which is
    neither. A name the table does not know counts as higher-is-better."""
    parsed = parse(name)
    if parsed is None:
        return 1
    if parsed.suffix.endswith("_std"):
        return 0
    return 1 if parsed.metric.higher_is_better else -1


def sort_key(name: str) -> tuple[int, int]:
    """Where a metric's rows go among a task's: the table's order, then K. Suffixed and unknown
    names go last, in the order they come."""
    parsed = parse(name)
    if parsed is None or parsed.suffix:
        return (len(METRICS), 0)
    return (_ORDER[parsed.metric.name], parsed.k or 0)


def is_derived(name: str) -> bool:
    parsed = parse(name)
    return parsed is not None and not parsed.suffix and parsed.metric.derived


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _member_keys(metric: Metric, keys: list[str], suffix: str) -> list[tuple[str, bool]]:
    """(key, required) for each member of a derived metric found among ``keys``; an exact member
    is listed (and required) even when absent."""
    out: list[tuple[str, bool]] = []
    for member in metric.mean_of:
        if "{k}" not in member:
            out.append((member + suffix, True))
            continue
        pattern = re.compile(_pattern(member).pattern + re.escape(suffix))
        found = sorted((int(m.group(1)), k) for k in keys if (m := pattern.fullmatch(k)) is not None)
        out += [(k, False) for _, k in found]
    return out


def _derived_metric(name: str) -> Metric:
    parsed = parse(name)
    if parsed is None or parsed.suffix or not parsed.metric.derived:
        raise KeyError(f"metric {name!r} is not a derived metric of the metric table")
    return parsed.metric


def members(name: str, metrics: Iterable[str], suffix: str = "") -> list[str]:
    """The keys a derived metric is the mean of, given the keys ``metrics`` has (``suffix`` on
    each): its exact members, and every K of its patterns that is there, in K order."""
    return [k for k, _ in _member_keys(_derived_metric(name), list(metrics), suffix)]


def derive(name: str, metrics: Mapping[str, Any], suffix: str = "") -> float | None:
    """A derived metric from its members in ``metrics`` (each with ``suffix``): the mean of the
    exact members (all required: None when one is missing or not a finite number) and of every
    finite value a pattern member finds; None when there is nothing to average."""
    values: list[float] = []
    for key, required in _member_keys(_derived_metric(name), list(metrics), suffix):
        value = _finite(metrics.get(key))
        if value is None:
            if required:
                return None
            continue
        values.append(value)
    if not values:
        return None
    return math.fsum(values) / len(values)


def metric_value(metrics: Mapping[str, Any], name: str, suffix: str = "") -> float | None:
    """``name`` (with ``suffix``, e.g. ``"@crop"``) from a result's metrics: the value it holds, or
    for a derived metric it lacks, the derivation; None when neither is there."""
    direct = _finite(metrics.get(name + suffix))
    if direct is not None or not is_derived(name):
        return direct
    return derive(name, metrics, suffix)


def reduce(reduction: str, values: Sequence[float | None]) -> float | None:
    """A group aggregate over its members' values, in member order (None: a member not run).
    ``mean``: the mean of the values present; ``gap``: the first member's value minus that mean
    (None when the first is missing). None when no value is present."""
    if reduction not in REDUCTIONS:
        raise KeyError(f"unknown reduction {reduction!r}; the metric table has {list(REDUCTIONS)}")
    present = [v for v in values if v is not None]
    if not present:
        return None
    mean = sum(present) / len(present)  # in member order, as the report has always summed
    if reduction == "gap":
        return None if values[0] is None else values[0] - mean
    return mean
