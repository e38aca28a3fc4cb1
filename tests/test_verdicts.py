"""The verdicts (:mod:`evalkit.reporting.verdicts`) and the report rows that carry them
(:mod:`evalkit.reporting.report`): each verdict reached on a results folder written here, the
intervals, tests and Holm's adjustment checked against SciPy / statsmodels on the same counts,
aggregate intervals against a normal combination computed here, the chart, the leaderboard's
intervals and rank columns, and a folder written without per-sample records."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import binomtest, norm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint

from evalkit.cli.main import main
from evalkit.intervals import IntervalOptions, record_intervals
from evalkit.records import records_path, result_entry, write_records
from evalkit.reporting import report
from evalkit.reporting.claims import load_claims
from evalkit.reporting.verdicts import (
    MEANING,
    VERDICTS,
    claim_decimals,
    holm_adjusted,
    judge,
    rounding_interval,
)
from evalkit.results import TaskResult, write_result
from evalkit.stats import bootstrap_class_mean

HEADER = "model,task,metric,claimed,transform,protocol,source,paper_model,paper_dataset,note\n"
Z95 = norm.ppf(0.975)
VARIANTS6 = ("imagenet1k", "imagenetv2", "imagenet-a", "imagenet-r", "imagenet_sketch", "objectnet")


def _claims(tmp_path: Path, body: str, name: str = "claims.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + body)
    return path


def _result(out: Path, model: str, task: str, metrics: dict[str, float], **evalkit) -> TaskResult:
    result = TaskResult(dataset=task, model=model, pretrained="test", task="zeroshot_classification",
                        metrics=metrics, evalkit={"transform": "crop", **evalkit})
    write_result(result, out)
    return result


def _row(df: pd.DataFrame, **match) -> pd.Series:
    sel = df
    for k, v in match.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"{match}: {len(sel)} rows"
    return sel.iloc[0]


def _wilson(k: int, n: int) -> tuple[float, float]:
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    return 100 * low, 100 * high


# ----------------------------------------------------------------------------- the rules


def test_claim_decimals_come_from_the_printed_text():
    assert [claim_decimals(t) for t in ("91.60", "91.6", "92", " 70.50 ", "1e-1")] == [2, 1, 0, 2, 1]
    assert claim_decimals(91.6) == 1 and claim_decimals(80.0) == 1  # a float: its shortest form


def test_load_claims_reads_decimals_from_the_text(tmp_path):
    df = load_claims(_claims(tmp_path, "m,cifar10,acc1,91.60,,,,,,\nm,mnist,acc1,92,,,,,,\nm,dtd,acc1,70.5,,,,,,\n"))
    assert df["decimals"].tolist() == [2, 0, 1] and df["claimed"].tolist() == [91.6, 92.0, 70.5]


@pytest.mark.parametrize("verified, ci, flips, status", [
    (70.54, (68.0, 72.0), 0.0, "reproduced"),  # prints as 70.5
    (70.55, (68.0, 72.0), 0.0, "reproduced"),  # the interval's end is in
    (70.56, (68.0, 72.0), 0.0, "consistent"),  # beyond it, the claim inside the interval
    (70.56, (68.0, 72.0), 0.02, "reproduced"),  # ... unless numerics could move it that far
    (73.0, (72.0, 74.0), 0.0, "differs"),  # the claim below the interval
    (73.0, (72.0, 74.0), 2.5, "reproduced"),  # a flip budget of 2.5 points covers even that
    (70.4, None, 0.0, "untested"),  # no interval: nothing to test the claim against
])
def test_judge_asks_reproduced_then_consistent(verified, ci, flips, status):
    v = judge(70.5, 1, verified, ci=ci, flip_points=flips, pvalue=0.01, test="binomial-exact")
    assert v.status == status, v.reason
    assert math.isclose(v.delta, verified - 70.5, abs_tol=1e-9)
    assert (v.reproduce_low, v.reproduce_high) == pytest.approx((70.45 - flips, 70.55 + flips))
    assert (v.pvalue, v.test) == (0.01, "binomial-exact")
    if status == "consistent":
        assert "the gap is smaller than what the test set can resolve, so it changes no conclusion" in v.reason


def test_rounding_interval_and_meanings():
    assert rounding_interval(91.6, 2) == pytest.approx((91.595, 91.605))
    assert rounding_interval(92, 0) == (91.5, 92.5)
    assert set(MEANING) == set(VERDICTS) == set(report.STATUSES)
    assert MEANING["consistent"] == "the gap is smaller than what the test set can resolve, so it changes no conclusion"


def test_holm_adjusted_is_statsmodels_holm_over_the_tests_that_exist():
    p = [0.01, math.nan, 0.04, 0.03, 0.5, math.nan, 0.001]
    present = [x for x in p if not math.isnan(x)]
    expected = iter(multipletests(present, method="holm")[1])
    got = holm_adjusted(p)
    for x, y in zip(p, got, strict=True):
        if math.isnan(x):
            assert math.isnan(y)
        else:
            assert y == pytest.approx(next(expected), rel=1e-12)


# ----------------------------------------------------------------------------- report rows


@pytest.fixture
def folder(tmp_path):
    """One model's results on DTD-sized sets (1,880 images): one per verdict, a --limit run, a
    result no claim covers, and the six ImageNet-variant sets with their aggregates' claims."""
    out = tmp_path / "out"
    n = 1880
    _result(out, "m", "dtd", {"acc1": 1306 / n}, evaluated=n)  # 69.47 %: claim 70.5 consistent
    _result(out, "m", "cifar10", {"acc1": 1326 / n}, evaluated=n)  # 70.53 %: claim 70.5 reproduced
    _result(out, "m", "cifar100", {"acc1": 1200 / n}, evaluated=n)  # 63.83 %: claim 70.5 differs
    _result(out, "m", "food101", {"acc1": 1306 / n}, evaluated=n,  # 69.47 % with a flip budget of 1.1 points
            flip_budget={"precision": "bf16", "samples": 21, "n": n, "acc1_points": 1.1})
    _result(out, "m", "eurosat", {"acc1": 0.7}, evaluated=100, variant="fp32+limit100", limit=100,
            detectable={"metric": "acc1", "n": 100, "level": 0.95, "power": 0.8, "difference": 0.1234})
    _result(out, "m", "gtsrb", {"acc1": 0.5}, evaluated=1000)  # no claim
    sizes = (50000, 10000, 7500, 30000, 50889, 18574)
    for i, (task, size) in enumerate(zip(VARIANTS6, sizes, strict=True)):
        k = int(size * (0.82 - 0.04 * i))
        _result(out, "m", task, {"acc1": k / size}, evaluated=size,
                flip_budget={"precision": "bf16", "samples": 3, "n": size, "acc1_points": 0.01 * (i + 1)})
    claims = _claims(tmp_path, (
        "m,dtd,acc1,70.5,crop,,,,,\n"
        "m,cifar10,acc1,70.5,crop,,,,,\n"
        "m,cifar100,acc1,70.5,crop,,,,,\n"
        "m,food101,acc1,70.5,crop,,,,,\n"
        "m,eurosat,acc1,70.0,crop,,,,,\n"
        "m,mnist,acc1,70.0,crop,,,,,\n"
        "m,ROBUST_AVG6,mean,72.0,crop,,,,,\n"
        "m,ROBUST_DELTA,gap,10.0,crop,,,,,\n"
    ))
    return out, load_claims(claims), claims


def test_each_verdict_on_a_results_folder(folder):
    out, claims, _ = folder
    t = report.verified_table(out, claims)
    assert report.STATUSES == VERDICTS
    n = 1880

    dtd = _row(t, model="m", task="dtd")  # the worked example of docs/reports.md
    assert dtd["status"] == "consistent" and dtd["decimals"] == 1
    assert (dtd["ci_low"], dtd["ci_high"]) == pytest.approx(_wilson(1306, n), rel=1e-12)
    assert dtd["ci_method"] == "wilson" and dtd["ci_level"] == 0.95 and dtd["test"] == "binomial-exact"
    assert dtd["pvalue"] == pytest.approx(binomtest(1306, n, 0.705).pvalue, rel=1e-12)
    assert "changes no conclusion" in dtd["reason"]

    assert _row(t, model="m", task="cifar10")["status"] == "reproduced"  # 70.53 prints as 70.5
    differs = _row(t, model="m", task="cifar100")
    assert differs["status"] == "differs" and differs["ci_high"] < 70.5
    assert differs["pvalue"] == pytest.approx(binomtest(1200, n, 0.705).pvalue, rel=1e-9)
    assert differs["delta"] == pytest.approx(100 * 1200 / n - 70.5, abs=1e-6)
    food = _row(t, model="m", task="food101")  # dtd's number, but numerics alone could move it by 1.1 points
    assert food["status"] == "reproduced" and food["flip_points"] == 1.1

    limited = _row(t, model="m [fp32+limit100]", task="eurosat")  # exactly the claim, but a subset: never reproduced
    assert limited["status"] == "partial" and math.isnan(limited["delta"])
    assert "it can detect a difference of 12.34 points at 95 %" in limited["note"]
    assert (limited["ci_low"], limited["ci_high"]) == pytest.approx(_wilson(70, 100), rel=1e-12)
    assert _row(t, model="m", task="mnist")["status"] == "not run"
    assert _row(t, model="m", task="gtsrb")["status"] == "no claim"
    assert _row(t, model="m", task="gtsrb")["ci_low"] == pytest.approx(_wilson(500, 1000)[0], rel=1e-12)


def test_a_limited_run_without_its_detectable_difference_gets_it_from_n(tmp_path):
    out = tmp_path / "out"
    _result(out, "m", "cifar10", {"acc1": 0.7}, evaluated=200, variant="fp32+limit200", limit=200)
    row = _row(report.verified_table(out, load_claims(_claims(tmp_path, "m,cifar10,acc1,70.0,crop,,,,,\n"))),
               task="cifar10")
    # independent: the arcsine effect size a two-sided 5 % test detects with power 0.8, back on
    # the proportion scale, the nearer of the two directions
    h = NormalIndPower().solve_power(effect_size=None, nobs1=200, alpha=0.05, power=0.8, ratio=0)
    phi = 2 * math.asin(math.sqrt(0.7))
    diff = min(abs(math.sin((phi + s * h) / 2) ** 2 - 0.7) for s in (1, -1))
    assert row["status"] == "partial" and f"it can detect a difference of {100 * diff:.2f} points" in row["note"]


def test_holm_column_is_statsmodels_over_every_claim_with_a_test(folder):
    out, claims, _ = folder
    t = report.verified_table(out, claims)
    a = report.aggregate_table(out, claims)
    tested = pd.concat([t[["pvalue", "p_holm", "status"]], a[["pvalue", "p_holm", "status"]]])
    tested = tested[tested["status"].isin(["reproduced", "consistent", "differs"]) & tested["pvalue"].notna()]
    assert len(tested) == 4 + 2  # dtd, cifar10, cifar100, food101 and the two aggregates
    expected = multipletests(tested["pvalue"].tolist(), method="holm")[1]
    assert tested["p_holm"].tolist() == pytest.approx(list(expected), rel=1e-12)
    untested = pd.concat([t, a])
    assert untested.loc[~untested["status"].isin(["reproduced", "consistent", "differs"]), "p_holm"].isna().all()


def test_aggregate_interval_is_the_normal_combination_of_its_members(folder):
    out, claims, _ = folder
    a = report.aggregate_table(out, claims)
    sizes = (50000, 10000, 7500, 30000, 50889, 18574)
    values, ses = [], []
    for i, size in enumerate(sizes):
        k = int(size * (0.82 - 0.04 * i))
        low, high = _wilson(k, size)
        values.append(100 * k / size)
        ses.append((high - low) / (2 * Z95))
    values, ses = np.array(values), np.array(ses)
    for group, weights, claimed in (("imagenet-variants", np.full(6, 1 / 6), 72.0),
                                    ("imagenet-gap", np.array([5 / 6] + [-1 / 6] * 5), 10.0)):
        row = _row(a, model="m", group=group)
        center = float(weights @ values)
        half = Z95 * math.sqrt(float(np.sum(weights ** 2 * ses ** 2)))
        assert row["verified"] == pytest.approx(center, rel=1e-12)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((center - half, center + half), rel=1e-10)
        assert row["ci_method"] == "normal-combined" and row["test"] == "normal"
        assert row["pvalue"] == pytest.approx(2 * norm.sf(abs(claimed - center) / (half / Z95)), rel=1e-9)
        flips = [0.01 * (i + 1) for i in range(6)]
        assert row["flip_points"] == pytest.approx(float(np.abs(weights) @ flips), rel=1e-12)
        expected = "consistent" if abs(center - claimed) <= half else "differs"
        if abs(center - claimed) <= 0.05 + row["flip_points"]:
            expected = "reproduced"
        assert row["status"] == expected
    mean = _row(a, model="m", group="imagenet-variants")
    assert mean["flip_points"] == pytest.approx(np.mean([0.01 * (i + 1) for i in range(6)]))  # the members' mean


def test_several_metrics_of_one_task_add_their_errors_within_the_task(tmp_path):
    """The retrieval mean recall: the six recalls of one set rest on the same images, so within
    a set their standard errors add linearly; the two sets are independent (quadrature)."""
    out = tmp_path / "out"
    metrics = ["text_retrieval_recall@1", "text_retrieval_recall@5", "text_retrieval_recall@10",
               "image_retrieval_recall@1", "image_retrieval_recall@5", "image_retrieval_recall@10"]
    per_task = {}
    for j, task in enumerate(("flickr30k", "coco")):
        values = {m: 0.5 + 0.05 * i + 0.1 * j for i, m in enumerate(metrics)}
        halves = {m: 0.01 + 0.002 * i + 0.01 * j for i, m in enumerate(metrics)}
        ci = {m: {"low": v - halves[m], "high": v + halves[m], "level": 0.95, "method": "bootstrap-percentile"}
              for m, v in values.items()}
        write_result(TaskResult(task, "m", "t", "zeroshot_retrieval", values,
                                evalkit={"transform": "squash", "evaluated": 1000, "ci": ci}), out)
        per_task[task] = (values, halves)
    row = _row(report.aggregate_table(out, load_claims(_claims(tmp_path, "m,RETRIEVAL_MR,mean,60.0,squash,,,,,\n"))),
               group="retrieval")
    center = 100 * np.mean([v for values, _ in per_task.values() for v in values.values()])
    se_tasks = [sum(100 * h / Z95 / 12 for h in halves.values()) for _, halves in per_task.values()]
    half = Z95 * math.sqrt(sum(se ** 2 for se in se_tasks))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((center - half, center + half), rel=1e-10)


def test_a_member_without_an_interval_leaves_the_aggregate_without_one(tmp_path):
    out = tmp_path / "out"
    for task in VARIANTS6:
        _result(out, "m", task, {"acc1": 0.8}, evaluated=1000)
    _result(out, "m", "objectnet", {"acc1": 0.8})  # written without N: no interval
    row = _row(report.aggregate_table(out, load_claims(_claims(tmp_path, "m,ROBUST_AVG6,mean,81.0,crop,,,,,\n"))),
               group="imagenet-variants")
    assert math.isnan(row["ci_low"]) and math.isnan(row["pvalue"]) and row["status"] == "untested"
    assert "no interval for the aggregate: objectnet has none" in row["note"]


def test_best_of_both_reads_the_larger_transforms_key(tmp_path):
    out = tmp_path / "out"
    _result(out, "m", "cifar10", {"acc1": 0.61, "acc1@crop": 0.6, "acc1@squash": 0.61}, transform="best-of-both",
            evaluated=1000, ci={"acc1@squash": {"low": 0.5, "high": 0.7, "level": 0.95, "method": "wilson"},
                                "acc1@crop": {"low": 0.55, "high": 0.65, "level": 0.95, "method": "wilson"}})
    claims = load_claims(_claims(tmp_path, "m,cifar10,acc1,65.0,best-of-both,,,,,\nm,cifar10,acc1,65.0,crop,,,,,\n"))
    t = report.verified_table(out, claims)
    best, crop = _row(t, transform="best-of-both"), _row(t, transform="crop")
    assert (best["verified"], best["ci_low"], best["ci_high"]) == pytest.approx((61.0, 50.0, 70.0))  # squash's
    assert (crop["verified"], crop["ci_low"], crop["ci_high"]) == pytest.approx((60.0, 55.0, 65.0))
    assert best["pvalue"] == pytest.approx(binomtest(610, 1000, 0.65).pvalue, rel=1e-12)


def _classification_records(n_per_class: int, accuracy: list[float], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = len(accuracy)
    target = np.repeat(np.arange(classes), n_per_class).astype(np.int32)
    hit = np.concatenate([rng.permutation(np.arange(n_per_class) < round(a * n_per_class)) for a in accuracy])
    pred = np.where(hit, target, (target + 1) % classes).astype(np.int32)
    others = np.stack([(pred + j) % classes for j in range(1, classes)], axis=1)
    top = np.concatenate([pred[:, None], others], axis=1).astype(np.int32)
    scores = np.sort(rng.uniform(10, 30, size=top.shape), axis=1)[:, ::-1].astype(np.float32)
    return {"key": np.array([f"s{i}" for i in range(len(target))]), "target": target, "top_classes": top,
            "top_scores": scores, "margin": (scores[:, 0] - scores[:, 1]).astype(np.float32), "pred": pred}


def test_a_bootstrap_metric_is_tested_against_its_records(tmp_path):
    """mean per-class recall: its interval and p-value come from the bootstrap rebuilt from the
    records; the p-value agrees with an independent stratified bootstrap written here."""
    out = tmp_path / "out"
    accuracy = [0.9, 0.8, 0.7, 0.6]
    arrays = _classification_records(100, accuracy)
    metrics = {"acc1": float(np.mean(arrays["pred"] == arrays["target"])), "mean_per_class_recall": 0.75}
    written = write_records(records_path(out, "m", "cifar10"), "classification", {"crop": arrays})
    ci = {k: e.interval.to_dict() for k, e in record_intervals("classification", arrays, metrics).items()}
    _result(out, "m", "cifar10", metrics, evaluated=400, best_transform="crop", ci=ci,
            ci_options=IntervalOptions().to_dict(), records=result_entry([written], "classification"))
    claims = load_claims(_claims(tmp_path, "m,cifar10,mean_per_class_recall,72.9,crop,,,,,\n"))
    row = _row(report.verified_table(out, claims), metric="mean_per_class_recall")
    assert row["test"] == "bootstrap" and row["ci_method"] == "bootstrap-percentile"
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((100 * ci["mean_per_class_recall"]["low"],
                                                             100 * ci["mean_per_class_recall"]["high"]))
    rng = np.random.default_rng(123)
    hits = (arrays["pred"] == arrays["target"]).reshape(4, 100)
    draws = np.stack([hits[c][rng.integers(0, 100, size=(4000, 100))].mean(axis=1) for c in range(4)]).mean(axis=0)
    independent = min(1.0, 2 * min(np.mean(draws <= 0.729), np.mean(draws >= 0.729)))
    assert 0.01 < independent < 0.5  # a claim 2.1 points off, on 400 samples: not far in the tail
    assert row["pvalue"] == pytest.approx(independent, abs=0.03)
    # and it is the bootstrap's own p-value (the one the interval was made from: same seed and
    # resamples), not the normal's read off the interval
    hit1 = (arrays["pred"] == arrays["target"]).astype(float)
    boot = bootstrap_class_mean(hit1, arrays["target"], resamples=2000, seed=0)
    assert row["pvalue"] == boot.pvalue(0.729)
    assert row["status"] == ("consistent" if row["ci_low"] <= 72.9 <= row["ci_high"] else "differs")


def test_a_folder_without_records_reports_proportion_intervals_and_notes_the_rest(tmp_path):
    out = tmp_path / "out"
    _result(out, "m", "cifar10", {"acc1": 0.912, "acc5": 0.99, "mean_per_class_recall": 0.905}, evaluated=10000)
    claims = load_claims(_claims(tmp_path, "m,cifar10,acc1,91.0,crop,,,,,\nm,cifar10,mean_per_class_recall,90.0,crop,,,,,\n"))
    t = report.verified_table(out, claims)
    acc1 = _row(t, metric="acc1")
    assert (acc1["ci_low"], acc1["ci_high"]) == pytest.approx(_wilson(9120, 10000), rel=1e-12)
    assert acc1["status"] == "consistent" and acc1["pvalue"] == pytest.approx(binomtest(9120, 10000, 0.91).pvalue)
    mpcr = _row(t, metric="mean_per_class_recall")
    assert math.isnan(mpcr["ci_low"]) and math.isnan(mpcr["pvalue"]) and mpcr["ci_method"] == ""
    assert "no interval" in mpcr["note"] and mpcr["status"] == "untested"  # 90.5 does not print as 90.0
    assert "no interval to test it against" in mpcr["reason"]
    paths = report.write_report(out, claims)  # and it reports
    md = paths[0].read_text()
    assert "| consistent " in md and "no interval" in md


def test_a_retrieval_result_without_records_tests_its_recalls_as_proportions_of_their_queries(tmp_path):
    out = tmp_path / "out"
    _result(out, "m", "flickr30k", {"text_retrieval_recall@1": 0.913, "image_retrieval_recall@1": 0.7512,
                                    "mean_recall": 0.9}, evaluated=1000, images=1000, captions=5000, transform="squash")
    claims = load_claims(_claims(tmp_path, "m,flickr30k,text_retrieval_recall@1,93.5,squash,,,,,\n"
                                           "m,flickr30k,image_retrieval_recall@1,75.1,squash,,,,,\n"))
    t = report.verified_table(out, claims)
    i2t = _row(t, metric="text_retrieval_recall@1")  # 913 of 1,000 images
    assert (i2t["ci_low"], i2t["ci_high"]) == pytest.approx(_wilson(913, 1000), rel=1e-12)
    assert i2t["status"] == "differs" and i2t["pvalue"] == pytest.approx(binomtest(913, 1000, 0.935).pvalue)
    t2i = _row(t, metric="image_retrieval_recall@1")  # 3,756 of 5,000 captions
    assert (t2i["ci_low"], t2i["ci_high"]) == pytest.approx(_wilson(3756, 5000), rel=1e-12)
    assert t2i["status"] == "reproduced"


def test_a_malformed_recorded_interval_names_the_result_file(tmp_path, capsys):
    out = tmp_path / "out"
    _result(out, "m", "cifar10", {"acc1": 0.9}, evaluated=100, ci={"acc1": {"low": "x", "high": 0.95}})
    claims = _claims(tmp_path, "m,cifar10,acc1,90.0,crop,,,,,\n")
    with pytest.raises(ValueError, match=r"cifar10\.json: .*ci of acc1.*'low' is not a number"):
        report.verified_table(out, load_claims(claims))
    assert main(["report", "--output-dir", str(out), "--claims", str(claims)]) == 1
    assert "cifar10.json" in capsys.readouterr().err


# ----------------------------------------------------------------------------- report files, chart, export


def test_write_report_says_each_verdict_and_draws_the_chart(folder):
    out, claims, _ = folder
    paths = report.write_report(out, claims)
    md = paths[0].read_text()
    for v in VERDICTS:
        assert f"- `{v}`" in md and MEANING[v] in md
    assert "| Run " in md and "| 95 % CI " in md and "| p (Holm) " in md
    table = report.verified_table(out, claims)
    differs = _row(table, model="m", task="cifar100")
    assert f"{differs['p_holm']:.2g} *" in md  # the differing claim's Holm p, significant
    dtd = _row(table, model="m", task="dtd")
    assert f"[{dtd['ci_low']:.2f}, {dtd['ci_high']:.2f}]" in md
    png = out / "m_claimed_vs_verified.png"
    assert png in paths
    with Image.open(io.BytesIO(png.read_bytes())) as im:
        assert im.format == "PNG" and im.size[0] > 600


def test_report_counts_each_verdict_per_run(folder):
    out, claims, _ = folder
    md = report.write_report(out, claims)[0].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Run "))
    row = next(line for line in md.splitlines() if line.startswith("| m "))
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")],
                     strict=True))
    # per-task rows, then + the aggregates: dtd consistent; cifar10, food101 reproduced (+ whatever
    # the two aggregates got); cifar100 differs; eurosat partial; mnist not run
    aggs = report.aggregate_table(out, claims)
    agg = aggs[aggs["model"] == "m"]["status"].value_counts()
    table = report.verified_table(out, claims)
    task = table[table["model"] == "m"]["status"].value_counts()
    for v in VERDICTS:
        n, k = int(task.get(v, 0)), int(agg.get(v, 0))
        assert cells[v] == (f"{n} + {k}" if k else str(n)), v
    assert int(task.get("reproduced", 0)) >= 2 and int(task.get("no claim", 0)) >= 1


def test_fail_on_differ_fails_on_a_differing_claim(folder, capsys):
    out, _, path = folder
    assert main(["report", "--output-dir", str(out), "--claims", str(path), "--fail-on-differ"]) == 1
    err = capsys.readouterr().err
    assert "cifar100 acc1: claimed 70.5, verified 63.83: differs" in err and "dtd" not in err


def _leaderboard_folder(tmp_path: Path) -> Path:
    out = tmp_path / "board"
    accuracies = {"a": 0.80, "b": 0.799, "c": 0.60}
    for model, acc in accuracies.items():
        for task in VARIANTS6:
            _result(out, model, task, {"acc1": acc}, evaluated=1000)
    _result(out, "d", "imagenet1k", {"acc1": 0.9}, evaluated=1000)  # one member: its mean is partial, not ranked
    return out


def test_export_carries_intervals_verdicts_and_rank_intervals(tmp_path):
    out = _leaderboard_folder(tmp_path)
    claims = _claims(tmp_path, "a,ROBUST_AVG6,mean,80.0,,,,,,\na,imagenet1k,acc1,75.0,,,,,,\n")
    text = report.export(out, "csv", claims=load_claims(claims))
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(text))}
    header = text.splitlines()[0].split(",")
    assert header[:2 + 6] == ["model", "variant", *VARIANTS6]  # the numbers where they always were
    assert header[-4:] == ["rank", "rank_best", "rank_worst", "tie_group"]
    low, high = _wilson(800, 1000)
    assert (float(rows["a"]["imagenet1k_ci_low"]), float(rows["a"]["imagenet1k_ci_high"])) == pytest.approx(
        (round(low, 2), round(high, 2)))
    # the aggregate's interval combines its six independent members
    se = (high - low) / (2 * Z95) / math.sqrt(6)
    assert float(rows["a"]["imagenet_variants_mean_ci_low"]) == pytest.approx(80 - Z95 * se, abs=0.006)
    assert rows["a"]["imagenet_variants_mean_verdict"] == "reproduced"
    assert rows["a"]["imagenet1k_verdict"] == "differs" and rows["b"]["imagenet1k_verdict"] == ""
    # a and b cannot be told apart, c is surely last; d's mean covers 1 of 6: not ranked
    ranks = {m: (r["rank"], r["rank_best"], r["rank_worst"], r["tie_group"]) for m, r in rows.items()}
    assert ranks == {"a": ("1", "1", "2", "1"), "b": ("2", "1", "2", "1"), "c": ("3", "3", "3", "2"),
                     "d": ("", "", "", "")}
    for m in "abc":  # every number stays a number
        float(rows[m]["imagenet_variants_mean"]), float(rows[m]["imagenet1k_ci_high"])

    data = json.loads(report.export(out, "json", claims=load_claims(claims)))
    by_model = {r["model"]: r for r in data}
    assert by_model["c"]["rank"] == 3 and by_model["d"]["rank"] is None
    assert by_model["a"]["imagenet1k_ci_low"] == pytest.approx(round(low, 2))
    md = report.export(out, "md")  # the shipped claims: none of these models
    assert "rank_best" in md.splitlines()[0] and "tie_group" in md.splitlines()[0]
    ranked_on_task = report.leaderboard(out, rank_by="imagenet1k")
    assert ranked_on_task.set_index("model").loc["d", "rank"] == 1  # 90 % beats every 80 %
    with pytest.raises(ValueError, match="--rank-by 'imagenet_variants': not a column .* did you mean"):
        report.leaderboard(out, rank_by="imagenet_variants")


def test_export_command_line_formats_and_rank_by(tmp_path, capsys):
    out = _leaderboard_folder(tmp_path)
    assert main(["export", "--output-dir", str(out), "--format", "json", "--no-claims"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["model"] for r in rows} == {"a", "b", "c", "d"} and "imagenet1k_verdict" not in rows[0]
    assert main(["export", "--output-dir", str(out), "--rank-by", "imagenet1k"]) == 0
    ranked = {r["model"]: r["rank"] for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert ranked["d"] == "1"
    assert main(["export", "--output-dir", str(out), "--rank-by", "nope"]) != 0
    assert "--rank-by 'nope'" in capsys.readouterr().err
