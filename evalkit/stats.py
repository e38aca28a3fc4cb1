"""The statistics behind every interval, test and verdict evalkit prints: one named, recorded
method each, taken from SciPy and statsmodels wherever they have it.

======================  ==========================================================================
method name             what it is
======================  ==========================================================================
``wilson``              Wilson score interval of a proportion (statsmodels ``proportion_confint``)
``clopper-pearson``     exact (beta) interval of a proportion (statsmodels, ``method="beta"``)
``bootstrap-percentile``  nonparametric bootstrap over samples (stratified where the metric is
                        per class, over whole queries for retrieval), percentile interval
``normal-combined``     an average of independent datasets: the parts' standard errors (each
                        from its own interval) combined in quadrature, normal interval
``binomial-exact``      two-sided exact binomial test of k of n against a proportion (SciPy
                        ``binomtest``)
``bootstrap``           two-sided bootstrap p-value: twice the smaller tail of the bootstrap
                        distribution beyond the tested value, ``(count + 1) / (B + 1)``
``mcnemar-exact``       exact McNemar test on the discordant pairs (statsmodels ``mcnemar``)
``holm``                Holm's step-down correction over a family of tests (statsmodels
                        ``multipletests``)
======================  ==========================================================================

Values are on the scale they are given (fractions for proportions); intervals carry their level
and method so a result records exactly what was computed. SciPy and statsmodels are imported when
a function needs them (statsmodels alone takes over a second to import), so ``--help`` stays fast.

The bootstrap: a resample draws N samples with replacement. evalkit's statistics are built from
per-sample values that take few distinct rows (a hit is 0 or 1; a retrieval image carries its hits
at each K and its caption count), so a resample is drawn as the *counts* of each distinct row,
``Generator.multinomial(N, frequencies)``: the same distribution as drawing N indices, at a cost
of B × (distinct rows) instead of B × N (a column of hits: one binomial draw per stratum, all
strata at once). Rows with many distinct values are drawn as indices, in blocks. Within a stratum (a class, for a per-class metric) the stratum's size is kept. The
statistic is then any function of the per-stratum column sums (a mean, a ratio of sums, a mean
of per-class recalls). Tests check the intervals against ``scipy.stats.bootstrap`` on the same
data.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_LEVEL", "DEFAULT_RESAMPLES", "DEFAULT_SEED", "PROPORTION_METHODS", "Interval", "Bootstrap",
           "proportion_interval", "binomial_pvalue", "bootstrap", "bootstrap_mean", "bootstrap_class_mean",
           "combined_interval", "holm", "mcnemar_pvalue", "detectable_difference", "rank_intervals",
           "tie_groups", "z_value", "prewarm"]

DEFAULT_LEVEL = 0.95
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
#: evalkit's name -> statsmodels' ``proportion_confint`` method
PROPORTION_METHODS = {"wilson": "wilson", "clopper-pearson": "beta"}
_DISTINCT_ROWS_MAX = 512  # more distinct rows than this: resample indices instead of counts
_INDEX_BLOCK = 4_000_000  # indices drawn at once when resampling indices


@dataclass(frozen=True)
class Interval:
    """A two-sided interval at ``level`` (0.95), made by ``method`` (a name in the module's table)."""

    low: float
    high: float
    level: float
    method: str

    def scaled(self, factor: float) -> Interval:
        """The same interval on another scale (fractions -> percent: 100)."""
        return Interval(self.low * factor, self.high * factor, self.level, self.method)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_dict(self) -> dict[str, float | str]:
        return {"low": float(self.low), "high": float(self.high), "level": float(self.level), "method": self.method}

    @classmethod
    def from_dict(cls, d: dict, where: str = "interval") -> Interval:
        """An interval as :meth:`to_dict` wrote it; a missing or non-numeric key is a ValueError naming it."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: not an interval (a {type(d).__name__}, not a mapping)")
        values = {}
        for key in ("low", "high", "level"):
            try:
                values[key] = float(d[key] if key != "level" else d.get(key, DEFAULT_LEVEL))
            except KeyError as e:
                raise ValueError(f"{where}: not an interval (no {key!r})") from e
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: not an interval ({key!r} is not a number: {d[key]!r})") from e
        return cls(values["low"], values["high"], values["level"], str(d.get("method", "")))


_PREWARMED: list[threading.Thread] = []


def prewarm() -> None:
    """Import what the intervals of a result need (SciPy's stats, statsmodels' proportions: about
    2 s together) in a background thread, once per process: a run calls this as it starts, so the
    import overlaps loading the model instead of adding to the first task's time."""
    if _PREWARMED:
        return

    def load() -> None:
        with contextlib.suppress(ImportError):
            import scipy.stats  # noqa: F401
            import statsmodels.stats.proportion  # noqa: F401

    thread = threading.Thread(target=load, name="evalkit-stats-prewarm", daemon=True)
    _PREWARMED.append(thread)
    thread.start()


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie strictly between 0 and 1, got {level}")


def z_value(level: float = DEFAULT_LEVEL) -> float:
    """The standard normal quantile of a two-sided interval at ``level`` (1.96 at 0.95)."""
    from scipy.stats import norm

    _check_level(level)
    return float(norm.ppf(0.5 + level / 2))


def proportion_interval(k: int, n: int, *, level: float = DEFAULT_LEVEL, method: str = "wilson") -> Interval:
    """The interval of a proportion ``k / n`` (fractions): Wilson's score interval, or the exact
    Clopper–Pearson interval (``method="clopper-pearson"``)."""
    from statsmodels.stats.proportion import proportion_confint

    _check_level(level)
    if method not in PROPORTION_METHODS:
        raise ValueError(f"unknown proportion interval {method!r}: choose from {sorted(PROPORTION_METHODS)}")
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"a proportion needs 0 ≤ k ≤ n and n ≥ 1, got k={k}, n={n}")
    low, high = proportion_confint(int(k), int(n), alpha=1 - level, method=PROPORTION_METHODS[method])
    # both methods reach 0 at k = 0 and 1 at k = n exactly; statsmodels' Wilson misses by rounding (5.6e-17),
    # which would leave the estimate itself outside its interval
    low, high = (0.0 if k == 0 else max(0.0, low)), (1.0 if k == n else min(1.0, high))
    return Interval(float(low), float(high), level, method)


def binomial_pvalue(k: int, n: int, p: float) -> float:
    """Two-sided exact binomial test (SciPy ``binomtest``) of ``k`` successes in ``n`` against the
    proportion ``p`` (a claimed accuracy as a fraction; clipped into [0, 1])."""
    from scipy.stats import binomtest

    if not math.isfinite(float(p)):
        raise ValueError(f"binomial test: the tested proportion must be a number, got {p}")
    return float(binomtest(int(k), int(n), min(1.0, max(0.0, float(p)))).pvalue)


@dataclass(frozen=True)
class Bootstrap:
    """A statistic's observed value and its bootstrap distribution (``resamples`` draws, ``seed``);
    both have the statistic's shape (a scalar, or one value per statistic of a vector)."""

    estimate: np.ndarray
    distribution: np.ndarray  # (resamples, *shape)
    resamples: int
    seed: int

    def interval(self, level: float = DEFAULT_LEVEL) -> Interval | list[Interval]:
        """The percentile interval (one per statistic when the statistic is a vector)."""
        _check_level(level)
        q = np.quantile(self.distribution, [(1 - level) / 2, (1 + level) / 2], axis=0)
        if q.ndim == 1:
            return Interval(float(q[0]), float(q[1]), level, "bootstrap-percentile")
        return [Interval(float(lo), float(hi), level, "bootstrap-percentile") for lo, hi in zip(q[0], q[1], strict=True)]

    def pvalue(self, value: float, column: int | None = None) -> float:
        """Two-sided bootstrap p-value of ``value``: twice the smaller share of the distribution on
        either side of it, each counted as ``(count + 1) / (B + 1)`` so it is never 0; at most 1."""
        dist = self.distribution if column is None else self.distribution[:, column]
        b = dist.shape[0]
        below = (np.count_nonzero(dist <= value) + 1) / (b + 1)
        above = (np.count_nonzero(dist >= value) + 1) / (b + 1)
        return float(min(1.0, 2 * min(below, above)))


def _strata_index(n: int, strata: np.ndarray | None) -> tuple[np.ndarray, int]:
    if strata is None:
        return np.zeros(n, dtype=np.int64), 1
    strata = np.asarray(strata)
    if strata.shape != (n,):
        raise ValueError(f"bootstrap: strata must have one entry per sample ({n}), got shape {strata.shape}")
    _, index = np.unique(strata, return_inverse=True)
    return index.astype(np.int64), int(index.max()) + 1 if n else 0


def resampled_sums(columns: np.ndarray, *, strata: np.ndarray | None = None, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Per stratum the column sums of the data, (S, m), and of each of ``resamples`` bootstrap
    resamples, (B, S, m): samples drawn with replacement within their stratum, each stratum
    keeping its size."""
    values = np.asarray(columns, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"bootstrap: needs a non-empty (samples × columns) array, got shape {values.shape}")
    if resamples < 1:
        raise ValueError(f"bootstrap: resamples must be ≥ 1, got {resamples}")
    n, m = values.shape
    index, n_strata = _strata_index(n, strata)
    rng = np.random.default_rng(seed)
    observed = np.zeros((n_strata, m))
    np.add.at(observed, index, values)
    if m == 1 and np.isin(values, (0.0, 1.0)).all():
        # one column of hits: a stratum's resampled sum is Binomial(size, its share of hits), the
        # multinomial below over its two distinct rows, drawn for every stratum at once
        # (a stratum all hits or all misses resamples to itself: no draw)
        sizes = np.bincount(index, minlength=n_strata)
        share = observed[:, 0] / sizes
        sums = np.broadcast_to(observed[:, 0], (resamples, n_strata)).copy()
        mixed = (share > 0) & (share < 1)
        sums[:, mixed] = rng.binomial(sizes[mixed], share[mixed], size=(resamples, int(mixed.sum())))
        return observed, sums[:, :, None]
    out = np.empty((resamples, n_strata, m))
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(n_strata + 1))
    for s in range(n_strata):
        rows = values[order[bounds[s]:bounds[s + 1]]]
        distinct, counts = np.unique(rows, axis=0, return_counts=True)
        size = rows.shape[0]
        if len(distinct) <= _DISTINCT_ROWS_MAX:
            draws = rng.multinomial(size, counts / size, size=resamples)  # (B, distinct)
            out[:, s, :] = draws @ distinct
        else:
            block = max(1, _INDEX_BLOCK // size)
            for lo in range(0, resamples, block):
                hi = min(resamples, lo + block)
                idx = rng.integers(0, size, size=(hi - lo, size))
                out[lo:hi, s, :] = rows[idx].sum(axis=1)
    return observed, out


def bootstrap(columns: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], *,
              strata: np.ndarray | None = None, resamples: int = DEFAULT_RESAMPLES,
              seed: int = DEFAULT_SEED) -> Bootstrap:
    """The bootstrap of ``statistic``, a function of the per-stratum column sums (an array of shape
    (..., S, m) -> (...) or (..., q)), over the samples (rows of ``columns``), within ``strata``."""
    observed, sums = resampled_sums(columns, strata=strata, resamples=resamples, seed=seed)
    return Bootstrap(np.asarray(statistic(observed)), np.asarray(statistic(sums)), resamples, seed)


def bootstrap_mean(values: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Bootstrap:
    """The mean of per-sample values (one column each: several means share their resamples, so
    their differences are paired)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    return bootstrap(values, lambda s: s[..., 0, :].squeeze(-1) / n if values.ndim == 1 else s[..., 0, :] / n,
                     resamples=resamples, seed=seed)


def bootstrap_class_mean(values: np.ndarray, classes: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
                         seed: int = DEFAULT_SEED) -> Bootstrap:
    """The mean over classes of the per-class mean of ``values`` (mean per-class recall when the
    values are hits), stratified by class: each resample keeps every class's support."""
    classes = np.asarray(classes)
    _, sizes = np.unique(classes, return_counts=True)
    values = np.asarray(values, dtype=np.float64)

    def statistic(s: np.ndarray) -> np.ndarray:
        per_class = s / sizes[:, None]  # (..., S, m)
        out = per_class.mean(axis=-2)
        return out.squeeze(-1) if values.ndim == 1 else out

    return bootstrap(values, statistic, strata=classes, resamples=resamples, seed=seed)


def combined_interval(estimates: Sequence[float], intervals: Sequence[Interval], *,
                      weights: Sequence[float] | None = None, level: float = DEFAULT_LEVEL) -> Interval:
    """The interval of ``Σ wᵢ·xᵢ`` (default: the mean) of independent estimates, each with its own
    interval: each part's standard error is its interval's width over 2·z at that interval's level,
    the combination's is ``sqrt(Σ wᵢ² seᵢ²)``, and the interval is normal around the combination."""
    if len(estimates) == 0 or len(estimates) != len(intervals):
        raise ValueError(f"combined_interval: {len(estimates)} estimates and {len(intervals)} intervals")
    w = np.full(len(estimates), 1 / len(estimates)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(estimates),):
        raise ValueError(f"combined_interval: {w.size} weights for {len(estimates)} estimates")
    se = np.array([(iv.high - iv.low) / (2 * z_value(iv.level)) for iv in intervals])
    center = float(np.dot(w, np.asarray(estimates, dtype=np.float64)))
    half = z_value(level) * float(math.sqrt(np.sum(w ** 2 * se ** 2)))
    return Interval(center - half, center + half, level, "normal-combined")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels ``multipletests(method="holm")``), in the given order."""
    from statsmodels.stats.multitest import multipletests

    if len(pvalues) == 0:
        return []
    return [float(p) for p in multipletests(list(pvalues), method="holm")[1]]


def mcnemar_pvalue(b: int, c: int) -> float:
    """Exact McNemar p-value of ``b`` samples right only in A and ``c`` right only in B
    (statsmodels ``mcnemar(exact=True)``: the two-sided binomial test of b of b + c at ½); 1.0
    when there is no discordant pair."""
    from statsmodels.stats.contingency_tables import mcnemar

    if b < 0 or c < 0:
        raise ValueError(f"mcnemar: discordant counts must be ≥ 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(mcnemar([[0, int(b)], [int(c), 0]], exact=True).pvalue)


def detectable_difference(n: int, p: float, *, level: float = DEFAULT_LEVEL, power: float = 0.8) -> float:
    """The smallest difference from a proportion ``p`` that a two-sided test at ``level`` on ``n``
    samples detects with ``power`` (statsmodels' normal power for a one-sample test, ``ratio=0``,
    on Cohen's arcsine effect size h), as a difference of proportions: the smaller of the two
    directions (towards 0 or 1) that fits in [0, 1]."""
    from statsmodels.stats.power import NormalIndPower

    _check_level(level)
    if n < 1 or not 0 <= p <= 1 or not 0 < power < 1:
        raise ValueError(f"detectable_difference: needs n ≥ 1, 0 ≤ p ≤ 1 and 0 < power < 1, got n={n}, p={p}, "
                         f"power={power}")
    h = float(NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=1 - level, power=power, ratio=0))
    phi = 2 * math.asin(math.sqrt(p))
    out = []
    for other in (phi + h, phi - h):
        if 0 <= other <= math.pi:
            out.append(abs(math.sin(other / 2) ** 2 - p))
    return min(out) if out else 1.0


def rank_intervals(estimates: Sequence[float], lows: Sequence[float], highs: Sequence[float],
                   higher_is_better: bool = True) -> list[tuple[int, int]]:
    """Per entry, its best and worst rank (1 = best) consistent with the intervals: it is surely
    behind every entry whose interval lies wholly above its own, surely ahead of every one whose
    interval lies wholly below."""
    est, lo, hi = (np.asarray(x, dtype=np.float64) for x in (estimates, lows, highs))
    if not higher_is_better:
        est, lo, hi = -est, -hi, -lo
    n = len(est)
    out = []
    for i in range(n):
        above = int(np.count_nonzero(lo > hi[i]))
        below = int(np.count_nonzero(hi < lo[i]))
        out.append((1 + above, n - below))
    return out


def tie_groups(ranks: Sequence[tuple[int, int]]) -> list[int]:
    """A group number per entry (1, 2, ...): entries whose rank intervals overlap, directly or
    through a chain of overlapping entries, cannot be told apart and share a group. Groups are
    numbered from the best ranks down."""
    order = sorted(range(len(ranks)), key=lambda i: ranks[i])
    group = [0] * len(ranks)
    current, reach = 0, 0
    for i in order:
        best, worst = ranks[i]
        if current == 0 or best > reach:
            current += 1
            reach = worst
        else:
            reach = max(reach, worst)
        group[i] = current
    return group
