"""evalkit.intervals, evalkit.models.flips and the statistics every result carries (evalkit.tasks.statistics),
each against an independent computation: SciPy, statsmodels or scikit-learn on the same samples."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import balanced_accuracy_score
from statsmodels.stats.proportion import proportion_confint

from evalkit import intervals
from evalkit.intervals import IntervalOptions
from evalkit.models import flips
from evalkit.models.precision import PlacementError
from evalkit.stats import Interval, combined_interval
from evalkit.tasks.statistics import result_statistics, split_statistics

RNG = np.random.default_rng(7)


def _classification(n: int = 600, classes: int = 12, p: float = 0.7) -> dict[str, np.ndarray]:
    target = RNG.integers(0, classes, n)
    right = RNG.random(n) < p
    first = np.where(right, target, (target + 1) % classes)
    rest = [np.where(RNG.random(n) < 0.5, target, (target + j) % classes) for j in range(2, 6)]
    top = np.stack([first, *rest], axis=1)
    scores = np.sort(RNG.random((n, 5)) * 30, axis=1)[:, ::-1].astype(np.float32)
    return {"target": target.astype(np.int32), "top_classes": top.astype(np.int32), "top_scores": scores,
            "margin": scores[:, 0] - scores[:, 1], "pred": first.astype(np.int32)}


def _scipy_percentile(data, statistic, paired=False, resamples=4000):
    res = sps.bootstrap(data, statistic, n_resamples=resamples, method="percentile", paired=paired,
                        vectorized=False, rng=np.random.default_rng(1))
    return res.confidence_interval.low, res.confidence_interval.high


def test_proportions_are_wilson_of_the_counted_hits():
    arrays = _classification()
    ev = intervals.record_intervals("classification", arrays, {"acc1": 0, "acc5": 0})
    n = arrays["target"].shape[0]
    k1 = int((arrays["top_classes"][:, 0] == arrays["target"]).sum())
    k5 = int((arrays["top_classes"] == arrays["target"][:, None]).any(axis=1).sum())
    for name, k in (("acc1", k1), ("acc5", k5)):
        low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert ev[name].interval.low == pytest.approx(low, abs=1e-12)
        assert ev[name].interval.high == pytest.approx(high, abs=1e-12)
        assert ev[name].interval.method == "wilson"
        assert ev[name].pvalue(0.5) == pytest.approx(sps.binomtest(k, n, 0.5).pvalue)
    cp = intervals.record_intervals("classification", arrays, {"acc1": 0},
                                    IntervalOptions(proportion="clopper-pearson"))["acc1"].interval
    exact = sps.binomtest(k1, n).proportion_ci(0.95, method="exact")
    assert (cp.low, cp.high) == pytest.approx((exact.low, exact.high), abs=1e-9)


def test_mean_per_class_recall_is_stratified_and_centred_on_sklearn():
    arrays = _classification()
    ev = intervals.record_intervals("classification", arrays, {"mean_per_class_recall": 0})["mean_per_class_recall"]
    expected = balanced_accuracy_score(arrays["target"], arrays["pred"])
    assert float(ev.boot.estimate) == expected
    assert ev.interval.low < expected < ev.interval.high
    # stratified: each class keeps its support, so the spread is the per-class binomial one
    target, hit = arrays["target"], (arrays["pred"] == arrays["target"])
    classes = np.unique(target)
    var = sum(hit[target == c].mean() * (1 - hit[target == c].mean()) / (target == c).sum() for c in classes)
    var /= len(classes) ** 2
    assert np.var(ev.boot.distribution) == pytest.approx(var, rel=0.15)


def test_mean_acc1_acc5_agrees_with_scipy_bootstrap():
    arrays = _classification()
    ev = intervals.record_intervals("classification", arrays, {"mean_acc1_acc5": 0})["mean_acc1_acc5"]
    hit1 = arrays["top_classes"][:, 0] == arrays["target"]
    hit5 = (arrays["top_classes"] == arrays["target"][:, None]).any(axis=1)
    low, high = _scipy_percentile(((hit1 + hit5.astype(float)) / 2,), np.mean)
    assert ev.interval.low == pytest.approx(low, abs=0.006)
    assert ev.interval.high == pytest.approx(high, abs=0.006)


def _retrieval(images: int = 300, per_image: int = 5) -> dict[str, np.ndarray]:
    owner = np.repeat(np.arange(images), per_image)
    return {"i2t_rank": RNG.integers(-1, 15, images).astype(np.int32),
            "t2i_rank": RNG.integers(0, 25, images * per_image).astype(np.int32),
            "t2i_image": owner.astype(np.int32)}


def test_retrieval_recalls_are_bootstrapped_over_images_with_their_captions():
    arrays = _retrieval()
    names = {"text_retrieval_recall@1": 0, "image_retrieval_recall@5": 0, "i2t_R@1": 0, "mean_recall": 0}
    ev = intervals.record_intervals("retrieval", arrays, names)
    i2t_hit = ((arrays["i2t_rank"] >= 0) & (arrays["i2t_rank"] < 1)).astype(float)
    low, high = _scipy_percentile((i2t_hit,), np.mean)
    assert ev["text_retrieval_recall@1"].interval.low == pytest.approx(low, abs=0.01)
    assert ev["text_retrieval_recall@1"].interval.high == pytest.approx(high, abs=0.01)
    assert ev["i2t_R@1"].interval == ev["text_retrieval_recall@1"].interval
    # text->image: a ratio of sums over resampled images (each image's captions go with it)
    hits = np.bincount(arrays["t2i_image"], weights=(arrays["t2i_rank"] < 5).astype(float))
    caps = np.bincount(arrays["t2i_image"]).astype(float)
    low, high = _scipy_percentile((hits, caps), lambda h, c: h.sum() / c.sum(), paired=True)
    assert ev["image_retrieval_recall@5"].interval.low == pytest.approx(low, abs=0.01)
    assert ev["image_retrieval_recall@5"].interval.high == pytest.approx(high, abs=0.01)
    # the mean recall is centred on the mean of the recalls it names
    boot = ev["mean_recall"].boot
    i2t5 = ((arrays["i2t_rank"] >= 0) & (arrays["i2t_rank"] < 5)).mean()
    t2i1 = (arrays["t2i_rank"] < 1).mean()
    recalls = [i2t_hit.mean(), t2i1, i2t5, hits.sum() / caps.sum()]  # both ways at each K the metrics name
    assert float(boot.estimate[-1]) == pytest.approx(np.mean(recalls))


def test_fewshot_interval_bootstraps_the_seed_mean_over_test_samples():
    n, seeds = 400, 3
    target = RNG.integers(0, 5, n).astype(np.int32)
    pred = np.stack([np.where(RNG.random(n) < 0.8, target, (target + 1) % 5) for _ in range(seeds)]).astype(np.int32)
    arrays = {"target": target, "pred": pred, "shots": np.full(seeds, 4, dtype=np.int32),
              "seed": np.arange(seeds, dtype=np.int32)}
    ev = intervals.record_intervals("fewshot", arrays, {"acc1@4shot": 0, "acc1@4shot_std": 0})
    assert set(ev) == {"acc1@4shot"}
    per_sample = (pred == target[None, :]).mean(axis=0)
    assert float(ev["acc1@4shot"].boot.estimate) == pytest.approx(np.mean([(p == target).mean() for p in pred]))
    low, high = _scipy_percentile((per_sample,), np.mean)
    assert ev["acc1@4shot"].interval.low == pytest.approx(low, abs=0.01)
    assert ev["acc1@4shot"].interval.high == pytest.approx(high, abs=0.01)


def test_without_records_only_proportions_get_intervals():
    found, notes = intervals.count_intervals({"acc1": 0.7, "acc1@crop": 0.7, "acc1_std": 0.1,
                                              "mean_per_class_recall": 0.6}, 500)
    low, high = proportion_confint(350, 500, alpha=0.05, method="wilson")
    assert set(found) == {"acc1", "acc1@crop"}
    assert (found["acc1"].interval.low, found["acc1"].interval.high) == pytest.approx((low, high))
    assert notes == {"mean_per_class_recall": intervals.NEEDS_RECORDS}
    with pytest.raises(ValueError, match="kind 'nonsense'"):
        intervals.record_intervals("nonsense", {}, {})


def test_without_records_retrieval_recalls_are_proportions_of_their_queries():
    queries = intervals.retrieval_queries({"images": 1000, "captions": 5000})
    assert queries == {"i2t": 1000, "t2i": 5000} and intervals.retrieval_queries({"images": 1000}) is None
    metrics = {"text_retrieval_recall@1": 0.913, "image_retrieval_recall@5": 0.9124, "i2t_R@1": 0.913,
               "mean_recall": 0.9}
    found, notes = intervals.count_intervals(metrics, 1000, queries=queries)
    for name, k, n in (("text_retrieval_recall@1", 913, 1000), ("i2t_R@1", 913, 1000),
                       ("image_retrieval_recall@5", 4562, 5000)):
        low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert (found[name].interval.low, found[name].interval.high) == pytest.approx((low, high)), name
        assert found[name].pvalue(0.9) == pytest.approx(sps.binomtest(k, n, 0.9).pvalue)
    assert notes == {"mean_recall": intervals.NEEDS_RECORDS}
    assert set(intervals.count_intervals(metrics, 1000)[0]) == set()  # without the query counts: none


def test_normal_evidence_pvalue_is_the_normal_test_of_its_interval():
    iv = Interval(0.4, 0.6, 0.95, "normal-combined")
    ev = intervals.Evidence(iv, "normal")
    se = 0.1 / sps.norm.ppf(0.975)
    assert ev.pvalue(0.65) == pytest.approx(2 * sps.norm.sf(0.15 / se))
    assert ev.pvalue(0.5) == pytest.approx(1.0)


def test_margin_bound_and_flip_budget():
    # η = 2 ε of the format (int8: two 8-bit roundings), B = 4 · 100 · η
    for precision, eps in (("fp32", 2.0 ** -23), ("bf16", 2.0 ** -7), ("fp16", 2.0 ** -10), ("int8", 2.0 ** -6)):
        assert flips.margin_bound(precision) == pytest.approx(4 * 100 * 2 * eps)
    margins = np.array([0.1, 2.0, 6.2, 10.0, np.inf])
    budget = flips.flip_budget(margins, "bf16")  # bound 6.25
    assert (budget.samples, budget.n) == (3, 5)
    assert budget.points == pytest.approx(60.0)
    assert "±60.00 points" in budget.describe()
    with pytest.raises(PlacementError, match="fp8"):
        flips.margin_bound("fp8")


def _run(**kw):
    base = {"ci_level": 0.95, "proportion_interval": "wilson", "resamples": 2000, "limit": None}
    return SimpleNamespace(**{**base, **kw})


def test_result_statistics_take_each_metric_from_the_transform_that_gave_it():
    crop, squash = _classification(), _classification(p=0.9)
    hit = {m: float((a["top_classes"][:, 0] == a["target"]).mean()) for m, a in (("crop", crop), ("squash", squash))}
    per_mode = {"crop": {"acc1": hit["crop"]}, "squash": {"acc1": hit["squash"]}}
    metrics = {"acc1@crop": hit["crop"], "acc1@squash": hit["squash"], "acc1": max(hit.values())}
    best = {"best_transform": "squash", "best_transform_by_metric": {"acc1": "squash"}}
    out = result_statistics(metrics, per_mode, {"crop": crop, "squash": squash}, "classification", best,
                            run=_run(), precision="bf16", evaluated=600, primary="acc1")
    n = 600
    for key, arrays in (("acc1@crop", crop), ("acc1@squash", squash), ("acc1", squash)):
        k = int((arrays["top_classes"][:, 0] == arrays["target"]).sum())
        assert out["ci"][key]["low"] == pytest.approx(proportion_confint(k, n, method="wilson")[0])
    assert out["ci_options"]["level"] == 0.95
    assert out["flip_budget"]["samples"] == int((squash["margin"] < flips.margin_bound("bf16")).sum())
    assert "detectable" not in out
    limited = result_statistics(metrics, per_mode, {"crop": crop, "squash": squash}, "classification", best,
                                run=_run(limit=600), precision="bf16", evaluated=600, primary="acc1")
    assert 0 < limited["detectable"]["difference"] < 0.1


def test_split_statistics_combine_the_splits():
    parts = [{"ci": {"acc1": {"low": 0.5, "high": 0.7, "level": 0.95, "method": "wilson"}},
              "ci_options": {"level": 0.95}, "flip_budget": {"samples": 2, "n": 100, "acc1_points": 2.0}},
             {"ci": {"acc1": {"low": 0.6, "high": 0.8, "level": 0.95, "method": "wilson"}},
              "ci_options": {"level": 0.95}, "flip_budget": {"samples": 0, "n": 100, "acc1_points": 0.0}}]
    metrics = {"acc1": 0.65, "acc1_std": 0.05, "acc1@split1": 0.6, "acc1@split2": 0.7}
    out = split_statistics(metrics, parts, [{"acc1": 0.6}, {"acc1": 0.7}])
    expected = combined_interval([0.6, 0.7], [Interval(0.5, 0.7, 0.95, "x"), Interval(0.6, 0.8, 0.95, "x")])
    se = math.hypot(0.1, 0.1) / 2 / sps.norm.ppf(0.975)
    assert out["ci"]["acc1"]["low"] == pytest.approx(expected.low)
    assert out["ci"]["acc1"]["high"] - out["ci"]["acc1"]["low"] == pytest.approx(2 * sps.norm.ppf(0.975) * se)
    assert out["ci"]["acc1@split2"]["low"] == 0.6
    assert out["flip_budget"]["acc1_points"] == pytest.approx(1.0)
