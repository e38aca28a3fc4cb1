"""What a result records of its own uncertainty, computed as it is written: an interval on every
metric (``evalkit.ci``, :mod:`evalkit.intervals`), the options they were made with
(``evalkit.ci_options``), a note for a metric that has none (``evalkit.ci_notes``), the flip
budget (``evalkit.flip_budget``, :mod:`evalkit.models.flips`) and, for a ``--limit`` run, the smallest
difference it could detect (``evalkit.detectable``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evalkit.intervals import Evidence, IntervalOptions, combined_splits, count_intervals, record_intervals
from evalkit.metric_table import SUFFIX_RE
from evalkit.models.flips import flip_budget
from evalkit.models.precision import PRECISION_NAMES
from evalkit.stats import DEFAULT_LEVEL, Interval, detectable_difference

__all__ = ["interval_options", "result_statistics", "split_statistics"]

#: the record kinds whose margins are zero-shot logits (``100 · cosine``), which the flip budget bounds
_ZERO_SHOT_KINDS = ("classification",)


def interval_options(run: Any) -> IntervalOptions:
    """The run's interval options (:class:`evalkit.tasks.runspec.RunSpec`)."""
    return IntervalOptions(level=run.ci_level, proportion=run.proportion_interval, resamples=run.resamples)


def _source_mode(name: str, modes: Sequence[str], best: Mapping[str, Any]) -> tuple[str, str]:
    """(the transform a reported metric came from, its name in that transform's metrics)."""
    suffix = SUFFIX_RE.search(name)
    if suffix and suffix.group(1).lstrip("@") in modes:
        return suffix.group(1).lstrip("@"), name[: suffix.start()]
    by_metric = best.get("best_transform_by_metric") or {}
    return by_metric.get(name) or best.get("best_transform") or modes[0], name


def result_statistics(metrics: Mapping[str, float], per_mode: Mapping[str, Mapping[str, float]],
                      records: Mapping[str, Mapping[str, np.ndarray]], kind: str | None, best: Mapping[str, Any],
                      *, run: Any, precision: str, evaluated: int, primary: str | None,
                      queries: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The ``evalkit`` keys of a result's statistics. ``per_mode``: each transform's metrics;
    ``records``: each transform's record arrays (empty: a run without records, whose proportions
    get intervals from ``evaluated`` alone, and a retrieval task's recalls from its ``queries``,
    :func:`evalkit.intervals.retrieval_queries`); ``best``: which transform gave each reported metric."""
    options = interval_options(run)
    modes = list(per_mode)
    evidence: dict[str, Evidence] = {}
    notes: dict[str, str] = {}
    if records and kind is not None:
        by_mode = {m: record_intervals(kind, records[m], per_mode[m], options) for m in modes if m in records}
        for name in metrics:
            if name.endswith("_std"):
                continue
            mode, base = _source_mode(name, modes, best)
            found = by_mode.get(mode, {}).get(base)
            if found is not None:
                evidence[name] = found
            else:
                notes[name] = f"no interval for {base} from {kind} records"
    else:
        evidence, notes = count_intervals(metrics, evaluated, options, queries=queries)
    out: dict[str, Any] = {
        "ci": {name: ev.interval.to_dict() for name, ev in evidence.items()},
        "ci_options": options.to_dict(),
    }
    if notes:
        out["ci_notes"] = notes
    if kind in _ZERO_SHOT_KINDS and records:
        mode, _ = _source_mode("acc1", modes, best)
        margins = records.get(mode, {}).get("margin")
        if margins is not None and precision in PRECISION_NAMES:
            out["flip_budget"] = flip_budget(margins, precision).to_dict()
        elif margins is not None:
            out["flip_budget"] = {"precision": precision, "note": f"no numerical error bound for {precision!r}"}
    if run.limit is not None and primary and primary in metrics and evaluated > 0:
        value = float(metrics[primary])
        if 0.0 <= value <= 1.0:
            out["detectable"] = {
                "metric": primary, "n": evaluated, "level": options.level, "power": 0.8,
                "difference": detectable_difference(evaluated, value, level=options.level),
            }
    return out


def split_statistics(metrics: Mapping[str, float], parts: Sequence[Mapping[str, Any]],
                     part_metrics: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """A several-split task's statistics from its splits' (``parts``: each split's ``evalkit``):
    the mean's interval combines the splits' (``normal-combined``), ``<metric>@split<k>`` keeps
    its split's own, and the flip budget adds the splits' counts."""
    per_split = [{k: Interval.from_dict(v, f"ci of {k}") for k, v in p.get("ci", {}).items()} for p in parts]
    level = float(parts[0].get("ci_options", {}).get("level", DEFAULT_LEVEL))
    ci = {name: ev.interval.to_dict() for name, ev in combined_splits(per_split, list(part_metrics), level).items()
          if name in metrics}
    for i, ivs in enumerate(per_split, start=1):
        for name, iv in ivs.items():
            if f"{name}@split{i}" in metrics:
                ci[f"{name}@split{i}"] = iv.to_dict()
    out: dict[str, Any] = {"ci": ci, "ci_options": parts[0].get("ci_options", {})}
    notes = {k: v for p in parts for k, v in p.get("ci_notes", {}).items() if k in metrics and k not in ci}
    if notes:
        out["ci_notes"] = notes
    budgets = [p.get("flip_budget") for p in parts]
    if budgets and all(b and "samples" in b for b in budgets):
        n = sum(b["n"] for b in budgets)
        samples = sum(b["samples"] for b in budgets)
        # the mean over splits moves by at most the mean of the splits' movements
        out["flip_budget"] = {**budgets[0], "samples": samples, "n": n,
                              "acc1_points": sum(b["acc1_points"] for b in budgets) / len(budgets)}
    return out
