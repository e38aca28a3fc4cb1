"""What one verified number rests on, read from its result (and its per-sample records): its
interval, the test of a claimed value against it, and the flip budget that widens it.

A result written with records gives a metric the interval it recorded (``evalkit.ci``) and, for
a bootstrap interval, the bootstrap distribution behind it, rebuilt from the records with the
recorded options (the same seed: the same interval), so a claimed value gets a bootstrap
p-value. A proportion needs only its N: ``k = value · N`` is tested with the exact binomial test.
A result written before intervals existed still gets a proportion's Wilson interval from its N;
any other metric of it has no interval, and says so.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.intervals import Evidence, IntervalOptions, count_intervals, record_intervals, retrieval_queries
from evalkit.metric_table import SUFFIX_RE
from evalkit.records import RecordsError, result_records
from evalkit.results import TaskResult, path_of
from evalkit.stats import Interval

__all__ = ["Support", "support", "interval_options_of"]

_ACC = re.compile(r"^acc([1-9]\d*)$")
_RECALL = re.compile(r"^(text_retrieval_recall|image_retrieval_recall|i2t_R|t2i_R)@([1-9]\d*)$")


@dataclass(frozen=True)
class Support:
    """A verified metric (fraction) and what it rests on. ``evidence``: its interval and test
    (None: neither could be made, ``note`` says why); ``flip_points``: the percentage points
    numerics alone could move it (the flip budget, acc1 only; else 0); ``limit``: a ``--limit``
    run's N."""

    value: float
    evidence: Evidence | None
    flip_points: float
    n: int
    limit: int | None
    note: str = ""

    @property
    def interval(self) -> Interval | None:
        return self.evidence.interval if self.evidence is not None else None


def interval_options_of(result: TaskResult) -> IntervalOptions:
    """The options a result's intervals were made with (defaults for an older result)."""
    raw = result.evalkit.get("ci_options") or {}
    default = IntervalOptions()
    return IntervalOptions(level=float(raw.get("level", default.level)),
                           proportion=str(raw.get("proportion", default.proportion)),
                           resamples=int(raw.get("resamples", default.resamples)),
                           seed=int(raw.get("seed", default.seed)))


def _mode_of(result: TaskResult, key: str) -> tuple[str | None, str]:
    suffix = SUFFIX_RE.search(key)
    if suffix and suffix.group(1) in ("@crop", "@squash"):
        return suffix.group(1)[1:], key[: suffix.start()]
    ev = result.evalkit
    return (ev.get("best_transform_by_metric") or {}).get(key) or ev.get("best_transform"), key


#: the evidence rebuilt from one result's records, per (result file, records digests, mode, options):
#: every metric of a mode comes from one pass over its records, which a report asks for once per
#: claim (a retrieval result: each of its recalls); a new run's records have other digests
_REBUILT: OrderedDict[tuple[Any, ...], dict[str, Evidence]] = OrderedDict()
_REBUILT_MAX = 64


def _from_records(result: TaskResult, key: str, output_dir: str | Path | None,
                  options: IntervalOptions) -> Evidence | None:
    """The evidence of ``key`` rebuilt from the result's records (a single-split result only)."""
    entry = result.evalkit.get("records")
    if output_dir is None or not isinstance(entry, dict):
        return None
    mode, base = _mode_of(result, key)
    cache_key = (str(path_of(result, output_dir)), str(entry.get("sha256")), mode, options)
    if cache_key not in _REBUILT:
        _REBUILT[cache_key] = _rebuild(result, output_dir, mode, options)
        while len(_REBUILT) > _REBUILT_MAX:
            _REBUILT.popitem(last=False)
    return _REBUILT[cache_key].get(base)


def _rebuild(result: TaskResult, output_dir: str | Path, mode: str | None,
             options: IntervalOptions) -> dict[str, Evidence]:
    """Every metric's evidence of one mode of a result, from its records ({} when they cannot be read)."""
    try:
        records = result_records(result, output_dir)
    except (RecordsError, OSError):
        return {}
    if len(records) != 1:
        return {}  # a several-split task: its interval combines the splits' (normal)
    rec = records[0]
    if mode not in rec.modes:
        mode = rec.modes[0] if len(rec.modes) == 1 else None
    if mode is None:
        return {}
    # every metric of the result by its plain name (a mean recall is the mean of the recalls named)
    names = {k: v for k, v in result.metrics.items() if not SUFFIX_RE.search(k)}
    return record_intervals(rec.kind, rec.arrays(mode), names, options)


def support(result: TaskResult, key: str, output_dir: str | Path | None = None) -> Support | None:
    """What the metric ``key`` of ``result`` rests on (None: the result has no such number)."""
    value = result.metrics.get(key)
    if value is None:
        return None
    ev = result.evalkit
    n = int(ev.get("evaluated") or 0)
    limit = ev.get("limit") if isinstance(ev.get("limit"), int) else None
    options = interval_options_of(result)
    budget = ev.get("flip_budget") or {}
    flips = float(budget.get("acc1_points", 0.0)) if SUFFIX_RE.sub("", key) == "acc1" else 0.0
    base = SUFFIX_RE.sub("", key)
    queries = retrieval_queries(ev)
    # a recall is a proportion of its queries only for a result without a recorded interval: with
    # records, its bootstrap over images (each with its captions) is the one to test against
    recall = bool(_RECALL.match(base)) and queries is not None and not (ev.get("ci") or {}).get(key)
    if (_ACC.match(base) and n > 0 or recall) and "@split" not in key:
        found, _ = count_intervals({key: value}, n, options, queries=queries)
        if key in found:
            recorded = (ev.get("ci") or {}).get(key)
            evidence = found[key]
            if recorded:  # the interval the run recorded (its method), tested exactly
                evidence = Evidence(Interval.from_dict(recorded, f"{result.dataset}: ci of {key}"),
                                    evidence.test, evidence.k, evidence.n)
            return Support(float(value), evidence, flips, n, limit)
    recorded = (ev.get("ci") or {}).get(key)
    if recorded:
        interval = Interval.from_dict(recorded, f"{result.dataset}: ci of {key}")
        rebuilt = _from_records(result, key, output_dir, options) if interval.method == "bootstrap-percentile" else None
        if rebuilt is not None:
            return Support(float(value), rebuilt, flips, n, limit)
        return Support(float(value), Evidence(interval, "normal"), flips, n, limit,
                       "" if interval.method == "normal-combined" else "p-value from the interval (normal)")
    note = (ev.get("ci_notes") or {}).get(key) or "no interval: the result was written without per-sample records"
    return Support(float(value), None, flips, n, limit, note)
