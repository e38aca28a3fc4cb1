"""evalkit.stats against independent computations: SciPy, statsmodels and scikit-learn called
directly here, or closed forms computed here. No expected value comes from the module itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.optimize import brentq

from evalkit import stats as S

# ---------------------------------------------------------------------------------------------
# proportions


CASES = [(k, n) for n in (1, 2, 3, 7, 10, 37, 100, 1000, 50000)
         for k in sorted({0, 1, n // 3, n // 2, n - 1, n}) if 0 <= k <= n]


@pytest.mark.parametrize("method, scipy_method", [("wilson", "wilson"), ("clopper-pearson", "exact")])
def test_proportion_interval_matches_scipy(method, scipy_method):
    for level in (0.95, 0.9, 0.99):
        for k, n in CASES:
            iv = S.proportion_interval(k, n, level=level, method=method)
            ref = sps.binomtest(k, n).proportion_ci(confidence_level=level, method=scipy_method)
            assert iv.low == pytest.approx(ref.low, abs=1e-9), (k, n, level)
            assert iv.high == pytest.approx(ref.high, abs=1e-9), (k, n, level)
            assert 0.0 <= iv.low <= k / n <= iv.high <= 1.0
            assert (iv.level, iv.method) == (level, method)
    # the edges: nothing below 0 of 0 successes, nothing above n of n
    assert S.proportion_interval(0, 10, method=method).low == 0.0
    assert S.proportion_interval(10, 10, method=method).high == 1.0


def test_proportion_interval_default_is_wilson():
    iv = S.proportion_interval(40, 50)
    ref = sps.binomtest(40, 50).proportion_ci(method="wilson")
    assert iv.method == "wilson" and iv.level == 0.95
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high), abs=1e-12)


@pytest.mark.parametrize("kwargs, named", [
    (dict(k=3, n=10, level=1.0), "1.0"), (dict(k=3, n=10, level=0), "0"), (dict(k=3, n=10, level=95), "95"),
    (dict(k=11, n=10), "k=11"), (dict(k=-1, n=10), "k=-1"), (dict(k=0, n=0), "n=0"),
    (dict(k=3, n=10, method="agresti"), "agresti"),
])
def test_proportion_interval_bad_input(kwargs, named):
    with pytest.raises(ValueError, match=named):
        S.proportion_interval(**kwargs)


def test_binomial_pvalue_matches_scipy():
    for k, n in CASES:
        for p in (0.0, 0.01, 0.3, 0.5, 0.8, 0.999, 1.0):
            assert S.binomial_pvalue(k, n, p) == pytest.approx(sps.binomtest(k, n, p).pvalue, rel=1e-12, abs=1e-300)


def test_binomial_pvalue_clips_p():
    # a claimed proportion outside [0, 1] is tested as the nearest edge
    assert S.binomial_pvalue(10, 10, 1.2) == sps.binomtest(10, 10, 1.0).pvalue == 1.0
    assert S.binomial_pvalue(9, 10, 1.2) == sps.binomtest(9, 10, 1.0).pvalue == 0.0
    assert S.binomial_pvalue(0, 10, -0.1) == sps.binomtest(0, 10, 0.0).pvalue == 1.0
    assert S.binomial_pvalue(1, 10, -0.1) == sps.binomtest(1, 10, 0.0).pvalue == 0.0
    with pytest.raises(ValueError, match="nan"):
        S.binomial_pvalue(5, 10, float("nan"))
    with pytest.raises(ValueError):
        S.binomial_pvalue(11, 10, 0.5)


# ---------------------------------------------------------------------------------------------
# bootstrap


def _scipy_percentile(data, statistic, resamples, seed, **kw):
    res = sps.bootstrap(data, statistic, n_resamples=resamples, method="percentile", random_state=seed,
                        vectorized=True, **kw)
    return res.confidence_interval


def test_bootstrap_mean_matches_scipy_binary():
    rng = np.random.default_rng(11)
    hits = (rng.random(2000) < 0.73).astype(np.float64)
    b = S.bootstrap_mean(hits, resamples=4000, seed=3)
    iv = b.interval()
    ref = _scipy_percentile((hits,), np.mean, 4000, 5)
    assert float(b.estimate) == pytest.approx(hits.mean(), abs=1e-15)
    assert b.distribution.shape == (4000,)
    # the Monte-Carlo error of a 2.5 % quantile of 4000 resamples is ~0.04 se, of a difference of two ~0.06 se
    se = math.sqrt(hits.mean() * (1 - hits.mean()) / hits.size)
    assert abs(iv.low - ref.low) < 0.2 * se and abs(iv.high - ref.high) < 0.2 * se
    assert iv.method == "bootstrap-percentile" and iv.level == 0.95
    # and with the normal approximation: the plug-in standard error is sqrt(p(1-p)/n)
    assert iv.half_width == pytest.approx(sps.norm.ppf(0.975) * se, rel=0.06)


def test_bootstrap_ratio_of_sums_matches_scipy_paired():
    # a retrieval-style statistic: hits over captions, resampled as whole rows
    rng = np.random.default_rng(12)
    captions = rng.integers(1, 6, size=1500).astype(np.float64)
    hits = rng.binomial(captions.astype(int), 0.6).astype(np.float64)
    b = S.bootstrap(np.stack([hits, captions], axis=1), lambda s: s[..., 0, 0] / s[..., 0, 1], resamples=4000, seed=1)
    ref = sps.bootstrap((hits, captions), lambda h, c, axis: h.sum(axis) / c.sum(axis), paired=True,
                        n_resamples=4000, method="percentile", random_state=2, vectorized=True).confidence_interval
    assert float(b.estimate) == pytest.approx(hits.sum() / captions.sum(), rel=1e-12)
    iv = b.interval()
    se = float(np.std(b.distribution))
    assert abs(iv.low - ref.low) < 0.2 * se and abs(iv.high - ref.high) < 0.2 * se


def test_bootstrap_class_mean_matches_scipy_stratified():
    # scipy's bootstrap of several samples resamples each sample on its own: the stratified bootstrap
    rng = np.random.default_rng(13)
    classes = rng.integers(0, 5, size=2000)
    hits = (rng.random(2000) < np.array([0.9, 0.7, 0.5, 0.8, 0.6])[classes]).astype(np.float64)
    b = S.bootstrap_class_mean(hits, classes, resamples=4000, seed=4)
    groups = tuple(hits[classes == c] for c in range(5))
    ref = _scipy_percentile(groups, lambda *xs, axis: np.mean([x.mean(axis) for x in xs], axis=0), 4000, 6)
    assert float(b.estimate) == pytest.approx(np.mean([g.mean() for g in groups]), rel=1e-12)
    iv = b.interval()
    se = math.sqrt(sum(g.mean() * (1 - g.mean()) / g.size for g in groups)) / 5
    assert abs(iv.low - ref.low) < 0.2 * se and abs(iv.high - ref.high) < 0.2 * se


def test_bootstrap_index_fallback_matches_scipy(monkeypatch):
    # continuous values: every row distinct (> 512), so the resamples are drawn as indices, in blocks
    rng = np.random.default_rng(14)
    values = rng.normal(0.3, 1.0, size=2000)
    assert len(np.unique(values)) > S._DISTINCT_ROWS_MAX
    monkeypatch.setattr(S, "_INDEX_BLOCK", 2000 * 700)  # 700 resamples a block: several blocks, a short last one
    b = S.bootstrap_mean(values, resamples=4000, seed=5)
    ref = _scipy_percentile((values,), np.mean, 4000, 7)
    se = values.std() / math.sqrt(values.size)
    iv = b.interval()
    assert abs(iv.low - ref.low) < 0.2 * se and abs(iv.high - ref.high) < 0.2 * se
    # every block was filled: the distribution's moments are the plug-in ones
    assert b.distribution.mean() == pytest.approx(values.mean(), abs=5 * se / math.sqrt(4000))
    assert b.distribution.var() == pytest.approx(se ** 2, rel=0.1)
    assert np.all(np.abs(b.distribution - values.mean()) < 6 * se)


@pytest.mark.parametrize("force_indices", [False, True])
def test_every_row_is_drawn_one_time_on_average(monkeypatch, force_indices):
    # each row is drawn Binomial(n_stratum, 1 / n_stratum) times per resample: mean 1, variance 1 - 1/n;
    # the first and the last row of a stratum too (an off-by-one in the draw would never pick one)
    if force_indices:
        monkeypatch.setattr(S, "_DISTINCT_ROWS_MAX", 0)
    n, B = 400, 3000
    strata = np.arange(n) % 2  # interleaved: stratum 1 is rows 1, 3, ..., n - 1
    values = np.zeros((n, 2))
    values[1, 0] = 1.0  # the first row of stratum 1
    values[n - 1, 1] = 1.0  # the last row of stratum 1
    values[0, 1] = 1.0  # the first row of stratum 0
    d = S.bootstrap(values, lambda s: s, strata=strata, resamples=B, seed=12).distribution  # (B, 2, 2)
    counts = [d[:, 1, 0], d[:, 1, 1], d[:, 0, 1]]
    m = n // 2
    for c in counts:
        assert c.mean() == pytest.approx(1.0, abs=5 / math.sqrt(B))
        assert c.var() == pytest.approx(1 - 1 / m, rel=0.15)
    assert np.all(d[:, 0, 0] == 0)


def _moments_ok(dist, mean, var, resamples):
    assert dist.mean() == pytest.approx(mean, abs=5 * math.sqrt(var / resamples))
    assert dist.var(ddof=1) == pytest.approx(var, rel=5 * math.sqrt(2 / resamples))


@pytest.mark.parametrize("force_indices", [False, True])
def test_count_resampling_has_the_index_resampling_distribution(monkeypatch, force_indices):
    if force_indices:
        monkeypatch.setattr(S, "_DISTINCT_ROWS_MAX", 0)
    rng = np.random.default_rng(15)
    n, B = 1200, 4000
    # a binary mean: var p(1-p)/n
    hits = (rng.random(n) < 0.3).astype(np.float64)
    p = hits.mean()
    _moments_ok(S.bootstrap_mean(hits, resamples=B, seed=8).distribution, p, p * (1 - p) / n, B)
    # a few-valued column (a retrieval rank bucket): var = population variance / n
    ranks = rng.choice([1.0, 2.0, 5.0, 10.0], size=n, p=[0.5, 0.2, 0.2, 0.1])
    _moments_ok(S.bootstrap_mean(ranks, resamples=B, seed=9).distribution, ranks.mean(), ranks.var() / n, B)
    # two columns at once: the covariance of the resampled means is the data's covariance / n
    two = np.stack([hits, ranks * hits], axis=1)
    d = S.bootstrap_mean(two, resamples=B, seed=10).distribution
    assert d.shape == (B, 2)
    cov = np.cov(two.T, ddof=0) / n
    _moments_ok(d[:, 1], two[:, 1].mean(), cov[1, 1], B)
    assert np.cov(d.T)[0, 1] == pytest.approx(cov[0, 1], rel=0.15)
    # stratified class mean: var = sum_c p_c (1 - p_c) / n_c / C^2
    classes = rng.integers(0, 4, size=n)
    hits = (rng.random(n) < np.array([0.2, 0.5, 0.7, 0.95])[classes]).astype(np.float64)
    pc = np.array([hits[classes == c].mean() for c in range(4)])
    nc = np.array([np.count_nonzero(classes == c) for c in range(4)])
    var = float(np.sum(pc * (1 - pc) / nc) / 16)
    _moments_ok(S.bootstrap_class_mean(hits, classes, resamples=B, seed=11).distribution, pc.mean(), var, B)


def test_strata_keep_their_size():
    rng = np.random.default_rng(16)
    classes = rng.choice(np.array(["cat", "dog", "owl"]), size=600, p=[0.5, 0.3, 0.2])
    hits = np.where(classes == "owl", 1.0, (rng.random(600) < 0.5).astype(np.float64))
    ones = np.ones(600)
    b = S.bootstrap(np.stack([ones, hits], axis=1), lambda s: s, strata=classes, resamples=500, seed=2)
    sizes = np.array([np.count_nonzero(classes == c) for c in ("cat", "dog", "owl")])
    assert b.distribution.shape == (500, 3, 2)
    # every resample keeps every class's support ...
    assert np.array_equal(b.distribution[:, :, 0], np.broadcast_to(sizes, (500, 3)))
    # ... so a class that is always right is always right, in every resample
    assert np.all(b.distribution[:, 2, 1] == sizes[2])
    assert b.distribution[:, 0, 1].std() > 0 and b.distribution[:, 1, 1].std() > 0
    # and its class mean moves only through the other classes
    cm = S.bootstrap_class_mean(hits, classes, resamples=2000, seed=3)
    pc = np.array([hits[classes == c].mean() for c in ("cat", "dog")])
    _moments_ok(cm.distribution, (pc.sum() + 1) / 3, float(np.sum(pc * (1 - pc) / sizes[:2]) / 9), 2000)


def test_vector_statistics_share_resamples():
    rng = np.random.default_rng(17)
    a = (rng.random(3000) < 0.7).astype(np.float64)
    flip = rng.random(3000) < 0.03
    b = np.where(flip, 1 - a, a)  # a second model that agrees on 97 % of the samples
    boot = S.bootstrap_mean(np.stack([a, b, a - b], axis=1), resamples=3000, seed=4)
    d = boot.distribution
    np.testing.assert_allclose(d[:, 0] - d[:, 1], d[:, 2], atol=1e-12)
    # paired: the difference's variance is var(a - b)/n, far below var(a)/n + var(b)/n
    diff_var = np.var(a - b) / a.size
    assert np.var(d[:, 0] - d[:, 1]) == pytest.approx(diff_var, rel=0.15)
    assert diff_var < 0.2 * (np.var(a) + np.var(b)) / a.size
    ivs = boot.interval()
    assert isinstance(ivs, list) and len(ivs) == 3
    # the percentile interval is the distribution's 2.5 % and 97.5 % quantiles, column by column
    for j in range(3):
        assert (ivs[j].low, ivs[j].high) == (np.percentile(d[:, j], 2.5), np.percentile(d[:, j], 97.5))
    iv90 = S.bootstrap_mean(a, resamples=3000, seed=4).interval(level=0.9)
    one = S.bootstrap_mean(a, resamples=3000, seed=4).distribution
    assert (iv90.low, iv90.high, iv90.level) == (np.percentile(one, 5), np.percentile(one, 95), 0.9)
    ref = _scipy_percentile((a - b,), np.mean, 3000, 8)
    se = math.sqrt(diff_var)
    assert abs(ivs[2].low - ref.low) < 0.2 * se and abs(ivs[2].high - ref.high) < 0.2 * se
    # the per-class version takes several columns too and keeps them paired
    classes = rng.integers(0, 3, size=3000)
    cm = S.bootstrap_class_mean(np.stack([a, b], axis=1), classes, resamples=500, seed=5)
    assert cm.estimate.shape == (2,) and cm.distribution.shape == (500, 2)
    one = S.bootstrap_class_mean(a, classes, resamples=500, seed=5)
    assert float(one.estimate) == pytest.approx(cm.estimate[0], rel=1e-12)


def test_bootstrap_seeded():
    rng = np.random.default_rng(18)
    for values in ((rng.random(800) < 0.6).astype(np.float64), rng.normal(size=800)):  # counts and indices
        x = S.bootstrap_mean(values, resamples=300, seed=7)
        y = S.bootstrap_mean(values, resamples=300, seed=7)
        z = S.bootstrap_mean(values, resamples=300, seed=8)
        assert np.array_equal(x.distribution, y.distribution) and x.seed == 7 and x.resamples == 300
        assert not np.array_equal(x.distribution, z.distribution)
    assert S.bootstrap_mean(values).resamples == S.DEFAULT_RESAMPLES == 2000
    assert S.bootstrap_mean(values).seed == S.DEFAULT_SEED


def test_bootstrap_bad_input():
    with pytest.raises(ValueError, match=r"shape \(0, 1\)"):
        S.bootstrap_mean(np.array([]))
    with pytest.raises(ValueError, match="resamples"):
        S.bootstrap_mean(np.ones(10), resamples=0)
    with pytest.raises(ValueError, match=r"strata.*\(10\).*\(9,\)"):
        S.bootstrap(np.ones(10), lambda s: s, strata=np.zeros(9))
    with pytest.raises(ValueError, match=r"\(7,\)"):
        S.bootstrap_class_mean(np.ones(10), np.zeros(7))
    with pytest.raises(ValueError, match="shape"):
        S.bootstrap_mean(np.ones((3, 2, 2)))
    with pytest.raises(ValueError, match="level"):
        S.bootstrap_mean(np.ones(10), resamples=5).interval(level=1.5)


def test_bootstrap_pvalue():
    rng = np.random.default_rng(19)
    hits = (rng.random(1000) < 0.8).astype(np.float64)
    b = S.bootstrap_mean(hits, resamples=2000, seed=1)
    d = b.distribution

    def direct(v):
        return min(1.0, 2 * min((np.sum(d <= v) + 1) / 2001, (np.sum(d >= v) + 1) / 2001))

    for v in (0.0, 0.5, 0.77, 0.78, 0.79, 0.8, 0.81, 0.82, 0.83, 1.0, float(b.estimate)):
        assert b.pvalue(v) == pytest.approx(direct(v), abs=1e-15), v
        assert 0 < b.pvalue(v) <= 1
    assert b.pvalue(float(b.estimate)) > 0.9
    assert b.pvalue(0.5) == pytest.approx(2 / 2001)  # far away: the smallest it can be, never 0
    assert b.pvalue(1.0) == pytest.approx(2 / 2001)
    # two-sided and consistent with the 95 % percentile interval
    iv = b.interval()
    se = math.sqrt(0.8 * 0.2 / 1000)
    assert b.pvalue(iv.low - se / 4) < 0.05 and b.pvalue(iv.high + se / 4) < 0.05
    assert b.pvalue(iv.low + se / 4) > 0.05 and b.pvalue(iv.high - se / 4) > 0.05
    # a column of a vector statistic
    v = S.bootstrap_mean(np.stack([hits, 1 - hits], axis=1), resamples=2000, seed=1)
    assert v.pvalue(1 - hits.mean(), column=1) > 0.9 and v.pvalue(0.8, column=1) == pytest.approx(2 / 2001)


def test_class_mean_is_sklearn_balanced_accuracy():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(20)
    for n_classes, n in ((2, 50), (10, 1000), (137, 5000), (1000, 20000)):
        target = rng.integers(0, n_classes, size=n)
        pred = np.where(rng.random(n) < 0.6, target, rng.integers(0, n_classes, size=n))
        b = S.bootstrap_class_mean((pred == target).astype(np.float64), target, resamples=2, seed=0)
        assert float(b.estimate) == balanced_accuracy_score(target, pred)


# ---------------------------------------------------------------------------------------------
# combination, multiple testing, McNemar


def _normal_interval(x, se, level):
    z = sps.norm.ppf(0.5 + level / 2)
    return S.Interval(x - z * se, x + z * se, level, "wilson")


def test_combined_interval_against_normal():
    x = np.array([0.81, 0.64, 0.9, 0.72])
    se = np.array([0.004, 0.017, 0.009, 0.02])
    levels = (0.95, 0.9, 0.99, 0.95)  # each part's width is read at its own level
    parts = [_normal_interval(xi, si, lv) for xi, si, lv in zip(x, se, levels, strict=True)]
    z = sps.norm.ppf(0.975)
    # the mean
    iv = S.combined_interval(list(x), parts)
    half = z * math.sqrt(np.sum(se ** 2)) / 4
    assert (iv.low, iv.high) == pytest.approx((x.mean() - half, x.mean() + half), abs=1e-12)
    assert iv.method == "normal-combined" and iv.level == 0.95
    # numpy arrays are fine too
    assert S.combined_interval(x, parts) == iv
    # unequal weights, another level
    w = np.array([0.5, 0.2, 0.2, 0.1])
    iv = S.combined_interval(x, parts, weights=w, level=0.9)
    half = sps.norm.ppf(0.95) * math.sqrt(np.sum(w ** 2 * se ** 2))
    assert (iv.low, iv.high) == pytest.approx((w @ x - half, w @ x + half), abs=1e-12)
    # a gap between two independent estimates
    iv = S.combined_interval(x[:2], parts[:2], weights=(1, -1))
    half = z * math.hypot(se[0], se[1])
    assert (iv.low, iv.high) == pytest.approx((x[0] - x[1] - half, x[0] - x[1] + half), abs=1e-12)
    # a single part gives itself back
    iv = S.combined_interval([x[0]], [parts[0]])
    assert (iv.low, iv.high) == pytest.approx((parts[0].low, parts[0].high), abs=1e-12)


def test_combined_interval_bad_input():
    part = _normal_interval(0.5, 0.01, 0.95)
    with pytest.raises(ValueError, match="2 estimates and 1 intervals"):
        S.combined_interval([0.5, 0.6], [part])
    with pytest.raises(ValueError, match="0 estimates"):
        S.combined_interval([], [])
    with pytest.raises(ValueError, match="3 weights for 2 estimates"):
        S.combined_interval([0.5, 0.6], [part, part], weights=[1, 1, 1])
    with pytest.raises(ValueError, match="1 weights for 2 estimates"):
        S.combined_interval([0.5, 0.6], [part, part], weights=1.0)
    with pytest.raises(ValueError, match="level"):
        S.combined_interval([0.5], [part], level=1.0)


def _holm_direct(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_holm():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(21)
    families = [[0.01, 0.04, 0.03, 0.005], [0.5], [0.2, 0.2, 0.01], [1e-9, 0.9, 0.04, 0.04, 0.3],
                list(rng.random(12) ** 3)]
    for p in families:
        got = S.holm(p)
        np.testing.assert_allclose(got, multipletests(p, method="holm")[1], rtol=1e-12, atol=0)
        np.testing.assert_allclose(got, _holm_direct(p), rtol=1e-12, atol=0)
        assert all(a >= b for a, b in zip(got, p, strict=True))
    assert S.holm([]) == []


def test_mcnemar():
    for b, c in ((0, 1), (1, 0), (3, 9), (9, 3), (20, 20), (0, 7), (150, 110), (1, 60)):
        assert S.mcnemar_pvalue(b, c) == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue, rel=1e-10)
    assert S.mcnemar_pvalue(0, 0) == 1.0
    with pytest.raises(ValueError, match="b=-1"):
        S.mcnemar_pvalue(-1, 3)
    with pytest.raises(ValueError, match="c=-2"):
        S.mcnemar_pvalue(3, -2)


# ---------------------------------------------------------------------------------------------
# detectable difference


def _arcsine_h(n, level, power):
    """The arcsine effect size a two-sided normal test on n samples detects with this power."""
    za = sps.norm.ppf(0.5 + level / 2)
    return brentq(lambda h: sps.norm.cdf(h * math.sqrt(n) - za) + sps.norm.cdf(-h * math.sqrt(n) - za) - power,
                  1e-9, 50)


def test_detectable_difference():
    ns = (20, 100, 1000, 10_000, 50_000)
    for p in (0.5, 0.8, 0.95):
        d = [S.detectable_difference(n, p) for n in ns]
        assert all(a > b for a, b in zip(d, d[1:], strict=False)), (p, d)
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    for n in (1000, 10_000, 50_000):
        assert S.detectable_difference(n, 0.5) == pytest.approx(z / (2 * math.sqrt(n)), rel=2e-3)
    for n, p, level, power in ((500, 0.8, 0.95, 0.8), (2000, 0.3, 0.99, 0.9), (50, 0.9, 0.9, 0.5)):
        h = _arcsine_h(n, level, power)
        phi = math.asin(math.sqrt(p))
        want = min(abs(math.sin(phi + s * h / 2) ** 2 - p) for s in (1, -1) if 0 <= phi + s * h / 2 <= math.pi / 2)
        assert S.detectable_difference(n, p, level=level, power=power) == pytest.approx(want, rel=1e-4)
    assert S.detectable_difference(50_000, 0.8) < 0.01
    assert S.detectable_difference(100, 0.5, level=0.99) > S.detectable_difference(100, 0.5)


@pytest.mark.parametrize("kwargs, named", [
    (dict(n=0, p=0.5), "n=0"), (dict(n=100, p=-0.1), "p=-0.1"), (dict(n=100, p=1.5), "p=1.5"),
    (dict(n=100, p=0.5, level=1.0), "1.0"), (dict(n=100, p=0.5, power=1.5), "power=1.5"),
    (dict(n=100, p=0.5, power=0), "power=0"),
])
def test_detectable_difference_bad_input(kwargs, named):
    with pytest.raises(ValueError, match=named):
        S.detectable_difference(**kwargs)


# ---------------------------------------------------------------------------------------------
# ranks and tie groups


def test_rank_intervals_clear_separation():
    est = [0.9, 0.5, 0.7]
    lows, highs = [0.88, 0.48, 0.68], [0.92, 0.52, 0.72]
    ranks = S.rank_intervals(est, lows, highs)
    assert ranks == [(1, 1), (3, 3), (2, 2)]
    assert S.tie_groups(ranks) == [1, 3, 2]
    # lower is better (an error rate): the order turns round
    ranks = S.rank_intervals(est, lows, highs, higher_is_better=False)
    assert ranks == [(3, 3), (1, 1), (2, 2)]
    assert S.tie_groups(ranks) == [3, 1, 2]


def test_rank_intervals_overlap():
    # A overlaps B, B overlaps C, A does not overlap C: ranks are intervals, the chain is one group
    est = [0.80, 0.78, 0.76, 0.50]
    lows, highs = [0.785, 0.765, 0.745, 0.45], [0.815, 0.795, 0.775, 0.55]
    ranks = S.rank_intervals(est, lows, highs)
    assert ranks == [(1, 2), (1, 3), (2, 3), (4, 4)]
    assert S.tie_groups(ranks) == [1, 1, 1, 2]
    ranks = S.rank_intervals(est, lows, highs, higher_is_better=False)
    assert ranks == [(3, 4), (2, 4), (2, 3), (1, 1)]
    assert S.tie_groups(ranks) == [2, 2, 2, 1]
    # two disjoint pairs of twins
    ranks = S.rank_intervals([0.9, 0.89, 0.5, 0.51], [0.85, 0.84, 0.45, 0.46], [0.95, 0.94, 0.55, 0.56])
    assert ranks == [(1, 2), (1, 2), (3, 4), (3, 4)]
    assert S.tie_groups(ranks) == [1, 1, 2, 2]
    assert S.tie_groups([]) == []


def test_tie_groups_hand_cases():
    # rank intervals that share only their end still overlap
    assert S.tie_groups([(1, 2), (2, 3), (4, 4)]) == [1, 1, 2]
    # a wide entry holds a group together past a narrow one inside it
    assert S.tie_groups([(3, 4), (1, 4), (2, 2), (5, 5)]) == [1, 1, 1, 2]
    assert S.tie_groups([(1, 1), (2, 2), (3, 3)]) == [1, 2, 3]
    assert S.tie_groups([(2, 3), (1, 3), (1, 3)]) == [1, 1, 1]


# ---------------------------------------------------------------------------------------------
# Interval


def test_interval_round_trip_and_helpers():
    iv = S.Interval(0.71, 0.75, 0.9, "clopper-pearson")
    d = iv.to_dict()
    assert d == {"low": 0.71, "high": 0.75, "level": 0.9, "method": "clopper-pearson"}
    assert S.Interval.from_dict(d) == iv
    import json

    assert S.Interval.from_dict(json.loads(json.dumps(S.proportion_interval(3, 7).to_dict()))) \
        == S.proportion_interval(3, 7)
    assert S.Interval.from_dict({"low": 1, "high": 2}) == S.Interval(1.0, 2.0, S.DEFAULT_LEVEL, "")
    assert iv.scaled(100) == S.Interval(pytest.approx(71.0), pytest.approx(75.0), 0.9, "clopper-pearson")
    assert iv.contains(0.71) and iv.contains(0.75) and not iv.contains(0.7)
    assert iv.half_width == pytest.approx(0.02)
    assert S.z_value() == pytest.approx(sps.norm.ppf(0.975), rel=1e-15)


@pytest.mark.parametrize("d, named", [
    ({"high": 0.5}, "'low'"), ({"low": 0.5}, "'high'"), ({"low": "abc", "high": 0.5}, "'low'"),
    ({"low": 0.1, "high": None}, "'high'"), ({"low": 0.1, "high": 0.2, "level": "x"}, "'level'"),
    ([0.1, 0.2], "list"),
])
def test_interval_from_dict_names_the_key(d, named):
    with pytest.raises(ValueError, match=f"results/x.json: ci.*{named}"):
        S.Interval.from_dict(d, where="results/x.json: ci")
