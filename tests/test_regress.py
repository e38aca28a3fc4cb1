"""``evalkit check`` (a results folder against a results folder, a leaderboard CSV or a claims CSV),
the run log (``runs.jsonl``), and results written by several processes at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evalkit import results as results_mod
from evalkit.cli.main import main
from evalkit.reporting.check import BaselineError, NothingToCompare, check, detect_baseline
from evalkit.reporting.verdicts import DEFAULT_TOLERANCE
from evalkit.results import (
    RunLogError,
    TaskResult,
    append_run_log,
    read_run_log,
    result_path,
    run_log_path,
    write_result,
)

REPO = Path(__file__).resolve().parents[1]
CLAIMS_HEADER = "model,task,metric,claimed,transform,protocol,source,paper_model,paper_dataset,note\n"


def _result(out: Path, model: str, task: str, metrics: dict[str, float], variant: str = "fp32",
            **evalkit) -> TaskResult:
    family = "zeroshot_retrieval" if any("retrieval" in k for k in metrics) else "zeroshot_classification"
    r = TaskResult(dataset=task, model=model, pretrained="test", task=family, metrics=metrics,
                   evalkit={"variant": variant, "precision": variant.split("+")[0], **evalkit})
    write_result(r, out)
    return r


def _check(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def base(tmp_path: Path) -> Path:
    out = tmp_path / "base"
    _result(out, "m", "cifar10", {"acc1": 0.80, "acc5": 0.95}, skipped=0, evaluated=100)
    _result(out, "m", "mnist", {"acc1": 0.60, "acc5": 0.90}, skipped=2, evaluated=98)
    return out


def _run(tmp_path: Path, cifar_acc1: float = 0.80, mnist_acc1: float = 0.60, **mnist_ev) -> Path:
    out = tmp_path / "run"
    _result(out, "m", "cifar10", {"acc1": cifar_acc1, "acc5": 0.95}, skipped=0, evaluated=100)
    _result(out, "m", "mnist", {"acc1": mnist_acc1, "acc5": 0.90}, **{"skipped": 2, "evaluated": 98, **mnist_ev})
    return out


# ----------------------------------------------------------------------------- against a results folder


def test_results_baseline_unchanged_passes(tmp_path, base, capsys):
    code, out, _ = _check(capsys, "--against", str(base), "--output-dir", str(_run(tmp_path)))
    assert code == 0
    # results without records: each number against the run's own interval (a proportion's needs only N)
    assert "2 compared (2 by the run's interval): 2 ok (2 unchanged), 0 regressed, 0 improved" in out
    assert out.rstrip().endswith("passed")


def _wilson(k: int, n: int) -> tuple[float, float]:
    """Percent: the 95 % Wilson interval, from statsmodels (independent of evalkit.stats)."""
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    return 100 * low, 100 * high


def test_regression_exits_1_naming_task_and_metric(tmp_path, base, capsys):
    run = _run(tmp_path, cifar_acc1=0.65)  # 80.00 -> 65.00 of 100: the baseline above the run's interval
    code, out, _ = _check(capsys, "--against", str(base), "--output-dir", str(run))
    assert code == 1
    row = next(line for line in out.splitlines() if "cifar10" in line and "|" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    low, high = _wilson(65, 100)
    assert high < 80
    assert cells == ["m", "fp32", "cifar10", "acc1", "80.00", "65.00", "-15.00", "regressed", "interval",
                     f"baseline above the run's 95% interval [{low:.2f}, {high:.2f}]"]
    assert "FAILED: 1 regressed (cifar10 acc1 -15.00)" in out


def test_a_drop_inside_the_runs_interval_passes(tmp_path, base, capsys):
    """80.00 -> 79.00 on 100 samples: the old 0.5-point rule failed it; 80 lies well inside the
    run's interval, so it is no evidence of a regression."""
    run = _run(tmp_path, cifar_acc1=0.79)
    code, out, _ = _check(capsys, "--against", str(base), "--output-dir", str(run))
    low, high = _wilson(79, 100)
    assert code == 0 and low < 80 < high
    row = next(line for line in out.splitlines() if "cifar10" in line and "|" in line)
    assert [c.strip() for c in row.strip("|").split("|")][-4:] == [
        "-1.00", "ok", "interval", f"baseline inside the run's 95% interval [{low:.2f}, {high:.2f}]"]
    # the same numbers under the plain threshold: a failure
    code, out, _ = _check(capsys, "--against", str(base), "--output-dir", str(run), "--tolerance", "0.5")
    assert code == 1 and "|Δ| 1.00 > the tolerance 0.5" in out


def test_improvement_exits_0(tmp_path, base, capsys):
    run = _run(tmp_path, mnist_acc1=0.75)  # 60.00 -> 75.00 of 98: below the run's interval
    code, out, _ = _check(capsys, "--against", str(base), "--output-dir", str(run))
    assert code == 0
    row = next(line for line in out.splitlines() if "mnist" in line and "|" in line)
    assert "+15.00" in row and "improved" in row and "baseline below the run's 95% interval" in row


@pytest.mark.parametrize("tolerance, now, code", [
    ("0.5", 0.7955, 0),  # -0.45 points, within 0.5
    ("0.5", 0.7945, 1),  # -0.55 points
    ("0.2", 0.798, 0),   # exactly the tolerance: ok
    ("0.2", 0.7975, 1),  # -0.25 beyond 0.2
    ("0.1", 0.7985, 1),  # -0.15 beyond 0.1
    ("1.0", 0.7925, 0),  # -0.75 within 1.0
])
def test_tolerance_honoured(tmp_path, base, capsys, tolerance, now, code):
    """--tolerance given: the plain threshold, whatever the intervals say."""
    run = _run(tmp_path, cifar_acc1=now)
    assert _check(capsys, "--against", str(base), "--output-dir", str(run), "--tolerance", tolerance)[0] == code
    report = check(run, base, tolerance=float(tolerance))
    assert {r.test for r in report.rows} == {"tolerance"} and report.to_dict()["rule"] == "tolerance"


def test_missing_is_a_failure_unless_allowed(tmp_path, base, capsys):
    run = tmp_path / "run"
    _result(run, "m", "cifar10", {"acc1": 0.80, "acc5": 0.95})
    code, out, _ = _check(capsys, "--against", str(base), "--output-dir", str(run))
    assert code == 1
    assert "missing (in the baseline, not in the run): 1" in out
    assert "  - m mnist acc1: no result in the run" in out
    assert "FAILED: 1 missing" in out
    code, out, _ = _check(capsys, "--against", str(base), "--output-dir", str(run), "--allow-missing")
    assert code == 0 and "  - m mnist acc1: no result in the run" in out


def test_a_metric_missing_on_either_side_is_listed(tmp_path, base, capsys):
    run = _run(tmp_path)
    _result(run, "m", "mnist", {"acc5": 0.90})  # the run's result lost its primary metric
    _result(base, "m", "dtd", {"acc5": 0.5})  # the baseline's has none to compare with
    _result(run, "m", "dtd", {"acc1": 0.5, "acc5": 0.5})
    report = check(run, base)
    assert [x.describe() for x in report.missing] == ["m mnist acc1: the run's result has no such metric"]
    assert [x.describe() for x in report.warnings] == ["m dtd acc1: the baseline's result has no such metric"]
    assert [r.task for r in report.rows] == ["cifar10"]
    assert _check(capsys, "--against", str(base), "--output-dir", str(run))[0] == 1


def test_new_and_skipped_are_listed(tmp_path, base, capsys):
    run = _run(tmp_path, skipped=7, evaluated=93)
    _result(run, "m", "dtd", {"acc1": 0.3})
    _result(run, "other", "cifar10", {"acc1": 0.3})
    code, out, _ = _check(capsys, "--against", str(base), "--output-dir", str(run))
    assert code == 0  # new tasks and more skipped samples are listed, not failures
    assert "new (in the run only, nothing to compare with): 2" in out
    assert "  - m dtd acc1" in out and "  - other cifar10 acc1" in out
    assert "  - m mnist: samples skipped increased: 2 -> 7" in out
    assert "  - m mnist: samples evaluated differ: 98 -> 93" in out


def test_variants_compared_like_with_like(tmp_path, capsys):
    base, run = tmp_path / "base", tmp_path / "run"
    for out in (base, run):
        _result(out, "m", "cifar10", {"acc1": 0.80})
        _result(out, "m", "cifar10", {"acc1": 0.70}, variant="int8")  # 10 points below fp32: never compared to it
    assert result_path(run, "m", "cifar10", variant="int8").exists()
    code, out, _ = _check(capsys, "--against", str(base), "--output-dir", str(run), "--all-rows")
    assert code == 0
    lines = [line for line in out.splitlines() if "cifar10" in line and "|" in line]
    assert sorted([c.strip() for c in line.strip("|").split("|")][1:7] for line in lines) == [
        ["fp32", "cifar10", "acc1", "80.00", "80.00", "+0.00"], ["int8", "cifar10", "acc1", "70.00", "70.00", "+0.00"]]
    # only an int8 run now: fp32 is missing, int8 compared with int8, nothing crosses over
    run2 = tmp_path / "run2"
    _result(run2, "m", "cifar10", {"acc1": 0.70}, variant="int8")
    report = check(run2, base)
    assert [(r.variant, r.status) for r in report.rows] == [("int8", "ok")]
    assert [(x.variant, x.task) for x in report.missing] == [("fp32", "cifar10")]


def test_all_metrics_and_spreads(tmp_path, capsys):
    base, run = tmp_path / "base", tmp_path / "run"
    _result(base, "m", "ucf", {"acc1": 0.5, "acc5": 0.9, "acc1_std": 0.01})
    _result(run, "m", "ucf", {"acc1": 0.5, "acc5": 0.8, "acc1_std": 0.05, "only_now": 0.1})
    assert check(run, base).passed  # acc1 only by default
    report = check(run, base, all_metrics=True)
    assert {r.metric: r.status for r in report.rows} == {"acc1": "ok", "acc5": "regressed", "acc1_std": "changed"}
    assert not report.passed
    assert [r.metric for r in report.regressed] == ["acc5"]


def test_tasks_and_model_narrow_both_sides(tmp_path, base, capsys):
    run = _run(tmp_path, cifar_acc1=0.5)
    _result(base, "imagenet-model", "imagenet1k", {"acc1": 0.5})
    _result(run, "imagenet-model", "imagenet1k", {"acc1": 0.5})
    assert _check(capsys, "--against", str(base), "--output-dir", str(run))[0] == 1
    assert _check(capsys, "--against", str(base), "--output-dir", str(run), "--tasks", "mnist")[0] == 0
    # an alias resolves through the task files: imagenet = imagenet1k
    report = check(run, base, tasks="imagenet")
    assert [r.task for r in report.rows] == ["imagenet1k"]
    assert [r.model for r in check(run, base, model="imagenet-model").rows] == ["imagenet-model"]
    code, _, err = _check(capsys, "--against", str(base), "--output-dir", str(run), "--tasks", "mnist,nosuchtask")
    assert code == 2 and "--tasks nosuchtask: no such task in the run or the baseline" in err


def test_json_output(tmp_path, base, capsys):
    run = _run(tmp_path, cifar_acc1=0.70)
    code, out, _ = _check(capsys, "--against", str(base), "--output-dir", str(run), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["exit_code"] == 1 and doc["passed"] is False
    assert doc["baseline_kind"] == "results"
    assert doc["counts"]["regressed"] == 1 and doc["counts"]["ok"] == 1 and doc["counts"]["compared"] == 2
    bad = [r for r in doc["rows"] if r["status"] == "regressed"]
    assert [(r["task"], r["metric"], round(r["delta"], 6)) for r in bad] == [("cifar10", "acc1", -10.0)]
    # --json FILE: the file, and the table as usual
    code, out, _ = _check(capsys, "--against", str(base), "--output-dir", str(run), "--json", str(tmp_path / "c.json"))
    assert code == 1 and "regressed" in out
    assert json.loads((tmp_path / "c.json").read_text())["counts"]["regressed"] == 1


# ----------------------------------------------------------------------------- leaderboard and claims CSVs


def test_leaderboard_baseline(tmp_path, base, capsys):
    board = tmp_path / "board.csv"
    assert main(["export", "--output-dir", str(base), "--out", str(board)]) == 0
    capsys.readouterr()
    assert detect_baseline(board) == "leaderboard"
    assert "eva27_mean" in board.read_text().splitlines()[0]  # aggregate columns are there, and not compared
    code, out, _ = _check(capsys, "--against", str(board), "--output-dir", str(_run(tmp_path)))
    assert code == 0 and "2 compared (2 by the run's interval): 2 ok (2 unchanged)" in out
    run = _run(tmp_path, mnist_acc1=0.45)  # 60 -> 45 of 98: the board's 60 above the run's interval
    report = check(run, board)
    assert [(r.task, r.metric, r.baseline, r.now, r.status, r.test) for r in report.rows if r.status != "ok"] == [
        ("mnist", "acc1", 60.0, 45.0, "regressed", "interval")]
    low, high = _wilson(round(0.45 * 98), 98)
    bad = next(r for r in report.rows if r.task == "mnist")
    assert (round(bad.interval["low"], 9), round(bad.interval["high"], 9)) == (round(low, 9), round(high, 9))
    assert _check(capsys, "--against", str(board), "--output-dir", str(run))[0] == 1
    # two variants of one model: two rows, each compared with its own
    _result(base, "m", "mnist", {"acc1": 0.40}, variant="int8")
    _result(run, "m", "mnist", {"acc1": 0.40}, variant="int8")
    assert main(["export", "--output-dir", str(base), "--out", str(board)]) == 0
    report = check(run, board, tasks="mnist")
    assert sorted((r.variant, r.baseline, r.status) for r in report.rows) == [
        ("fp32", 60.0, "regressed"), ("int8", 40.0, "ok")]


def test_leaderboard_bad_cell_is_named(tmp_path, capsys):
    board = tmp_path / "board.csv"
    board.write_text("model,variant,cifar10,mnist\nm,fp32,80.00,sixty\n")
    run = _run(tmp_path)
    code, _, err = _check(capsys, "--against", str(board), "--output-dir", str(run))
    assert code == 2
    assert f"baseline {board}:2: column 'mnist': 'sixty' is not a number" in err


def _claims(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "claims_mine.csv"
    path.write_text(CLAIMS_HEADER + textwrap.dedent(body))
    return path


def test_claims_baseline(tmp_path, capsys):
    run = tmp_path / "run"
    _result(run, "m", "cifar10", {"acc1": 0.80, "acc5": 0.95}, transform="crop")
    _result(run, "m", "vid", {"acc1": 0.40}, transform="crop", frames=1)
    claims = _claims(tmp_path, """\
        m,cifar10,acc1,80.1,crop,,mine,,,
        m,cifar10,acc5,99.0,crop,,mine,,,
        m,vid,acc1,40.0,crop,1frame,mine,,,
        m,vid,acc1,60.0,crop,8frames,mine,,,
        someone-else,cifar10,acc1,99.0,crop,,paper,,,
        """)
    assert detect_baseline(claims) == "claims"
    report = check(run, claims)
    # primary metric only: acc5's claim (4 points off) is not compared; one row per protocol
    assert sorted((r.task, r.metric, r.setting, r.status) for r in report.rows) == [
        ("cifar10", "acc1", "crop", "ok"), ("vid", "acc1", "crop; 1frame", "ok")]
    # a claimed setting not run (8 frames) is listed as not run, not a failure ...
    assert report.missing == [] and [(x.task, x.setting) for x in report.not_run] == [("vid", "crop; 8frames")]
    assert "no result with protocol 8frames" in report.not_run[0].note
    assert any("someone-else" in n for n in report.notes)  # another model's claims: said, not checked
    code, out, _ = _check(capsys, "--against", str(claims), "--output-dir", str(run))
    assert code == 0 and "not run (claims with no number in the run; --require-all to fail on them): 1" in out
    # ... unless every claim must have its number
    code, out, _ = _check(capsys, "--against", str(claims), "--output-dir", str(run), "--require-all")
    assert code == 1 and "FAILED: 1 missing (--require-all)" in out
    code, out, _ = _check(capsys, "--against", str(claims), "--output-dir", str(run), "--all-metrics")
    assert code == 1 and "FAILED: 1 regressed (cifar10 acc5 -4.00)" in out
    # --model names a model with claims and no results: nothing to compare, said in one line
    with pytest.raises(NothingToCompare, match=r"none of the 1 claim\(s\) of someone-else .* 1 not run"):
        check(run, claims, model="someone-else")


def test_demo_claims_shipped_check_against_recorded_results(tmp_path, capsys):
    """The shipped demo claims against results carrying the recorded numbers (what .ci/wheel_smoke
    does with a real demo run): passes; one number 1 point lower fails naming it."""
    from evalkit.reporting.claims import load_claims

    claims_path = REPO / "results" / "claims_demo.csv"
    claims = load_claims(claims_path)
    run = tmp_path / "run"
    for task in ("shapeworld-shape", "shapeworld-colour"):
        acc1 = float(claims[(claims.task == task)].claimed.iloc[0]) / 100
        _result(run, "eva-clip-demo", task, {"acc1": acc1, "acc5": 1.0}, transform="crop", metric="acc1")
    code, out, _ = _check(capsys, "--against", str(claims_path), "--output-dir", str(run), "--tasks",
                          "shapeworld-shape,shapeworld-colour")
    assert code == 0, out
    shape_claim = float(claims[claims.task == "shapeworld-shape"].claimed.iloc[0])
    _result(run, "eva-clip-demo", "shapeworld-shape", {"acc1": (shape_claim - 1) / 100, "acc5": 1.0}, transform="crop",
            metric="acc1")
    code, out, _ = _check(capsys, "--against", str(claims_path), "--output-dir", str(run), "--tasks",
                          "shapeworld-shape,shapeworld-colour")
    assert code == 1 and "FAILED: 1 regressed (shapeworld-shape acc1 -1.00)" in out


# ----------------------------------------------------------------------------- the shipped claims, by name

DEMO_CLAIMS = REPO / "results" / "claims_demo.csv"


def _recorded_demo_run(out: Path, *, eight_frames: bool, model: str = "eva-clip-demo", **evalkit) -> Path:
    """Results carrying the demo claims' recorded numbers, shaped as `evalkit run --model
    eva-clip-demo --tasks demo` writes them (each task's metric, transform and frames); the
    8-frame video result (a second run, `--frames uniform-8`) only with ``eight_frames``."""
    from evalkit.reporting.claims import load_claims

    by_result: dict[tuple[str, str], dict] = {}
    for c in load_claims(DEMO_CLAIMS).itertuples():
        entry = by_result.setdefault((c.task, c.protocol), {"transform": c.transform, "metrics": {}})
        entry["metrics"][c.metric] = c.claimed / 100
    metric = {"shapeworld-retrieval": "mean_recall", "shapeworld-3d-fewshot": "acc1@16shot"}
    for (task, protocol), entry in by_result.items():
        extra: dict = {}
        if task == "shapeworld-video":
            if protocol == "8frames" and not eight_frames:
                continue
            extra = {"frames": 1} if protocol == "1frame" else {
                "frames": 8, "frame_sampler": "uniform", "result_name": "shapeworld-video@uniform-8"}
        _result(out, model, task, entry["metrics"], transform=entry["transform"], metric=metric.get(task, "acc1"),
                **extra, **evalkit)
    return out


def test_check_against_demo_right_after_the_readme_demo(tmp_path, capsys, monkeypatch):
    """`evalkit check --against demo` after `evalkit run --model eva-clip-demo --tasks demo`: the
    shipped demo claims, by name; the 8-frame claim (a run not made) is listed as not run, not a
    failure; --require-all fails on it until that run is made."""
    run = _recorded_demo_run(tmp_path / "run", eight_frames=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # a folder of that name: the name still means the shipped claims
    code, out, err = _check(capsys, "--against", "demo", "--output-dir", str(run))
    assert code == 0, out + err
    assert out.splitlines()[0].startswith(f"evalkit check: {run} against demo (")
    assert "claims_demo.csv" in out.splitlines()[0]
    assert "6 compared (6 by the plain tolerance): 6 ok" in out  # results with neither records nor N
    assert "not run (claims with no number in the run; --require-all to fail on them): 1" in out
    assert "  - eva-clip-demo shapeworld-video acc1 (crop; 8frames): " in out
    assert "no result with protocol 8frames (have: 1frame)" in out
    assert out.rstrip().endswith("passed")
    code, out, _ = _check(capsys, "--against", "demo", "--output-dir", str(run), "--require-all")
    assert code == 1 and "FAILED: 1 missing (--require-all)" in out
    _recorded_demo_run(run, eight_frames=True)  # the second run, --frames uniform-8
    code, out, _ = _check(capsys, "--against", "demo", "--output-dir", str(run), "--require-all", "--all-metrics",
                          "--json")
    doc = json.loads(out)
    n_claims = len(DEMO_CLAIMS.read_text().strip().splitlines()) - 1
    assert code == 0 and doc["counts"]["compared"] == n_claims and not doc["missing"] and not doc["not_run"]
    assert doc["require_all"] is True
    # a path still works, and names the file it read
    assert check(run, DEMO_CLAIMS, require_all=True).passed
    # one number below its claim: the check by name fails, naming it
    _result(run, "eva-clip-demo", "shapeworld-shape", {"acc1": 0.896}, transform="crop", metric="acc1")
    code, out, _ = _check(capsys, "--against", "demo", "--output-dir", str(run))
    assert code == 1 and "FAILED: 1 regressed (shapeworld-shape acc1 -2.00)" in out


def test_check_against_paper_after_the_demo_is_one_line_exit_2(tmp_path, capsys):
    """The demo's results hold no claim of the papers': nothing to compare is one line on stderr
    and exit 2, by name or by path (it was a pandas traceback, KeyError 'protocol')."""
    run = _recorded_demo_run(tmp_path / "run", eight_frames=False)
    for against in ("paper", str(REPO / "results" / "claims.csv")):
        code, out, err = _check(capsys, "--against", against, "--output-dir", str(run))
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert err.startswith("evalkit: error: nothing to compare: ") and "claims.csv has no claim of" in err
        assert "(eva-clip-demo)" in err and "--against demo" in err
    # the same when --tasks narrows to tasks the claims do not have
    code, _, err = _check(capsys, "--against", "paper", "--output-dir", str(run), "--tasks", "shapeworld-shape")
    assert code == 2 and "nothing to compare" in err and "--tasks shapeworld-shape" in err


def test_nothing_to_compare_exits_2(tmp_path, base, capsys):
    empty = tmp_path / "empty"
    (empty / "runs").mkdir(parents=True)
    for against in ("demo", str(base)):
        code, out, err = _check(capsys, "--against", against, "--output-dir", str(empty))
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert f"nothing to compare: no results under {empty / 'runs'}" in err
    # results folders that share no (model, variant, task)
    other = tmp_path / "other"
    _result(other, "m", "dtd", {"acc1": 0.5})
    code, _, err = _check(capsys, "--against", str(base), "--output-dir", str(other), "--allow-missing")
    assert code == 2 and "share no result (model, variant, task)" in err and "m fp32 dtd" in err


def test_unknown_baseline_name_lists_the_names(tmp_path, base, capsys):
    code, out, err = _check(capsys, "--against", "papers", "--output-dir", str(base))
    assert code == 2 and out == ""
    assert err.strip() == ("evalkit: error: baseline papers: no such file or folder, and not the name of shipped "
                           "claims: demo (claims_demo.csv), paper (claims.csv)")
    code, _, err = _check(capsys, "--against", "demo", "--output-dir", str(base), "--require-all", "--allow-missing")
    assert code == 2 and "contradict" in err


def test_limited_results_are_partial_never_compared_with_a_claim(tmp_path, capsys):
    """A --limit run (its own variant, evalkit.limit set) is listed as partial: never ok, never
    regressed, never counted as compared; only limited results: nothing to compare, exit 2."""
    run = tmp_path / "run"
    # a limited run 20 points below every claim: compared as if complete it would fail
    _recorded_demo_run(run, eight_frames=False, variant="fp32+limit100", limit=100)
    for path in (run / "runs").rglob("*.json"):
        doc = json.loads(path.read_text())
        doc["metrics"] = {k: v - 0.2 for k, v in doc["metrics"].items()}
        path.write_text(json.dumps(doc))
    assert result_path(run, "eva-clip-demo", "shapeworld-shape", variant="fp32+limit100").exists()
    code, out, err = _check(capsys, "--against", "demo", "--output-dir", str(run))
    assert code == 2 and "nothing to compare" in err and "6 partial, 1 not covered by the --limit run(s) (--limit results are never compared" in err
    # beside a full run: the full run is compared and passes, the limited one is listed as partial
    _recorded_demo_run(run, eight_frames=False)
    report = check(run, "demo", require_all=True)  # require_all: the limited run's unrun claims are not missing
    assert {r.variant for r in report.rows} == {"fp32"} and report.rows
    # the 8-frame claim: missing for the full run; for the limited run (which did not run it either)
    # said in a note, neither missing nor not run: nothing a limited run has can meet a claim
    assert [(x.variant, x.setting) for x in report.missing] == [("fp32", "crop; 8frames")]
    assert "1 claim(s) with no result in the --limit run(s) eva-clip-demo [fp32+limit100] not listed" in report.notes
    assert {x.variant for x in report.partial} == {"fp32+limit100"}
    # each task's primary claim per setting: shape, colour, retrieval, video (1 frame), 3d, 3d few-shot
    assert len(report.partial) == 6
    shape = next(x for x in report.partial if x.task == "shapeworld-shape")
    assert shape.note.startswith("71.60 (claimed 91.6); --limit 100 run: a subset of the task")
    code, out, _ = _check(capsys, "--against", "demo", "--output-dir", str(run), "--all-rows")
    assert code == 0 and "partial (--limit runs: a subset of each task, never compared with a claim): 6" in out
    assert "  - eva-clip-demo [fp32+limit100] shapeworld-shape acc1 (crop): 71.60 (claimed 91.6)" in out
    assert "fp32+limit100" not in out.split("partial (")[0]  # in no compared row


def test_limited_result_without_a_variant_of_its_own_is_labelled(tmp_path):
    """A limited result written under the plain variant (before limited runs had their own) is
    still told apart: its variant label says the limit, and it is never compared with a claim."""
    from evalkit.reporting.report import run_label
    from evalkit.results import result_variant

    run = tmp_path / "run"
    r = _result(run, "eva-clip-demo", "shapeworld-shape", {"acc1": 0.5}, transform="crop", metric="acc1", limit=100)
    assert result_variant(r) == "fp32+limit100" and run_label(r) == "eva-clip-demo [fp32+limit100]"
    _result(run, "eva-clip-demo", "shapeworld-colour", {"acc1": 1.0}, transform="crop", metric="acc1")
    report = check(run, "demo", tasks="shapeworld-shape,shapeworld-colour")
    assert [(r.task, r.status) for r in report.rows] == [("shapeworld-colour", "ok")]
    assert [(x.variant, x.task) for x in report.partial] == [("fp32+limit100", "shapeworld-shape")]


def test_without_an_interval_the_plain_tolerance(tmp_path, capsys):
    """A number with no interval (no records, no N: nothing to say how far it could move) is held
    to the plain 0.5 points: 0.45 off its claim is ok, 0.55 off regressed; --min-delta above 0.5
    raises that threshold."""
    assert DEFAULT_TOLERANCE == 0.5
    claims = _claims(tmp_path, "m,cifar10,acc1,80.0,crop,,mine,,,\nm,mnist,acc1,60.0,crop,,mine,,,\n")
    run = tmp_path / "run"
    _result(run, "m", "cifar10", {"acc1": 0.7955}, transform="crop")
    _result(run, "m", "mnist", {"acc1": 0.5945}, transform="crop")
    report = check(run, claims)
    assert {r.task: (r.status, r.test) for r in report.rows} == {"cifar10": ("ok", "tolerance"),
                                                                "mnist": ("regressed", "tolerance")}
    assert {r.task: r.why for r in report.rows} == {
        "cifar10": "no interval, so the plain tolerance: |Δ| 0.45 ≤ 0.5",
        "mnist": "no interval, so the plain tolerance: |Δ| 0.55 > 0.5"}
    assert all("no interval" in r.note for r in report.rows)
    assert check(run, claims, min_delta=0.6).passed
    code, out, _ = _check(capsys, "--against", str(claims), "--output-dir", str(run))
    assert code == 1 and "2 compared (2 by the plain tolerance)" in out
    code, out, _ = _check(capsys, "--against", str(claims), "--output-dir", str(run), "--tolerance", "0.5")
    assert code == 1 and "tolerance ±0.5 points" in out.splitlines()[0] and "compared at ±0.5 points" in out
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--min-delta POINTS" in text and "--tolerance POINTS" in text and "0.5 is what a number without an " \
        "interval is held to" in text


# ----------------------------------------------------------------------------- bad input


def test_bad_baselines_exit_2_with_a_clear_message(tmp_path, capsys):
    run = _run(tmp_path)
    (tmp_path / "notes.txt").write_text("hello, world\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "nores").mkdir()
    bad_claims = _claims(tmp_path, "m,cifar10,acc1,lots,crop,,,,,\n")
    cases = {
        tmp_path / "nope.csv": "no such file or folder",
        tmp_path / "notes.txt": "not a results folder, leaderboard CSV",
        tmp_path / "empty.csv": "its first line is (empty)",
        tmp_path / "nores": "a folder without runs/ inside",
        bad_claims: f"{bad_claims}:2: claimed value 'lots' is not a number",
    }
    for path, message in cases.items():
        code, out, err = _check(capsys, "--against", str(path), "--output-dir", str(run))
        assert code == 2, path
        assert err.startswith("evalkit: error: ") and message in err, err
        assert out == ""
    code, _, err = _check(capsys, "--against", str(run), "--output-dir", str(tmp_path / "absent"))
    assert code == 2 and "no such folder" in err
    code, _, err = _check(capsys, "--against", str(run), "--output-dir", str(run), "--tolerance", "-1")
    assert code == 2 and "--tolerance" in err


def test_corrupt_result_in_baseline_is_named(tmp_path, base, capsys):
    bad = result_path(base, "m", "mnist")
    bad.write_text('{"dataset": "mnist", "model"')
    code, _, err = _check(capsys, "--against", str(base), "--output-dir", str(_run(tmp_path)))
    assert code == 2 and str(bad) in err
    with pytest.raises(BaselineError, match="cannot read result"):
        check(_run(tmp_path), base)


# ----------------------------------------------------------------------------- run log


def test_run_log_one_line_per_result(tmp_path):
    out = tmp_path / "out"
    r1 = _result(out, "m", "cifar10", {"acc1": 0.8, "acc5": 0.9}, metric="acc1", fingerprint="abc123",
                 git_commit="deadbeef", wall_time_s=1.5, data={"path": "/d", "layout": "wds"}, samples=10,
                 skipped_keys=["k"] * 3)
    r2 = _result(out, "m", "cifar10", {"acc1": 0.7}, variant="int8", metric="acc1")
    assert append_run_log(out, r1) == run_log_path(out) == out / "runs.jsonl"
    append_run_log(out, r2)
    lines = run_log_path(out).read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert (first["model"], first["variant"], first["task"], first["metric"], first["value"]) == (
        "m", "fp32", "cifar10", "acc1", 0.8)
    assert first["fingerprint"] == "abc123" and first["git_commit"] == "deadbeef" and first["wall_time_s"] == 1.5
    assert first["data"] == {"path": "/d", "layout": "wds"} and first["samples"] == 10
    assert first["result"] == "runs/m/cifar10.json" and first["pid"] == os.getpid()
    assert "skipped_keys" not in first  # the line stays short: counts, not lists of keys
    second = json.loads(lines[1])
    assert second["variant"] == "int8" and second["result"] == "runs/m/int8/cifar10.json"
    assert [e["variant"] for e in read_run_log(out)] == ["fp32", "int8"]
    assert read_run_log(tmp_path / "never-ran") == []


def test_run_log_survives_a_cut_off_line(tmp_path):
    out = tmp_path / "out"
    r = _result(out, "m", "cifar10", {"acc1": 0.8})
    append_run_log(out, r)
    with run_log_path(out).open("ab") as f:
        f.write(b'{"model": "m", "task": "half a li')  # a writer killed mid-line
    assert len(read_run_log(out)) == 1  # a last line without its newline: still being written
    # another result of the task (the same one again is not logged twice): the cut-off line is
    # closed first, so it does not swallow this one
    append_run_log(out, _result(out, "m", "cifar10", {"acc1": 0.81}))
    raw = run_log_path(out).read_bytes().split(b"\n")
    assert raw[1] == b'{"model": "m", "task": "half a li' and json.loads(raw[2])["task"] == "cifar10"
    with pytest.raises(RunLogError, match=r"runs\.jsonl:2: not a run-log entry"):
        read_run_log(out)
    assert [e["task"] for e in read_run_log(out, strict=False)] == ["cifar10", "cifar10"]


def test_umask_is_read_without_being_changed(tmp_path, monkeypatch):
    """Setting the umask to read it races with other threads creating files; where the kernel
    reports it, it is only read."""
    calls = []
    real = os.umask
    monkeypatch.setattr(results_mod.os, "umask", lambda m: calls.append(m) or real(m))
    old = real(0o027)
    try:
        results_mod.atomic_write_text(tmp_path / "f.json", "{}")
    finally:
        real(old)
    assert calls == []
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o640


# ----------------------------------------------------------------------------- several processes at once

_WRITER = r"""
import sys, time
from pathlib import Path
from evalkit.results import TaskResult, append_run_log, write_result
out, me, n, burst = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
(out.parent / f"ready{me}").touch()
while not (out.parent / "go").exists():  # all writers start together
    time.sleep(0.005)
pad = "x" * 60_000  # a result big enough to be written in several chunks
for i in range(n):
    for model, task, variant in (("shared", "cifar10", "fp32"), ("shared", "cifar10", "int8"), (f"m{me}", "dtd", "fp32")):
        ev = {"variant": variant, "writer": me, "i": i, "pad": pad, "metric": "acc1"}
        r = TaskResult(dataset=task, model=model, pretrained="x", task="zeroshot_classification",
                       metrics={"acc1": (me * 1000 + i) / 1e6}, evalkit=ev)
        write_result(r, out)
        append_run_log(out, r)
# then log lines only, back to back, each longer than PIPE_BUF (4 KiB)
for j in range(burst):
    r = TaskResult(dataset="burst", model=f"m{me}", pretrained="x", task="zeroshot_classification",
                   metrics={"acc1": (me * 1000 + j) / 1e6}, evalkit={"data": {"note": "y" * 5000}})
    append_run_log(out, r)
"""

_READER = r"""
import json, sys, time
from pathlib import Path
from evalkit.results import read_run_log
out, stop = Path(sys.argv[1]), Path(sys.argv[2])
reads = bad = 0
while not stop.exists():
    for p in sorted((out / "runs").rglob("*.json")) if (out / "runs").exists() else []:
        try:
            d = json.loads(p.read_text())
            ev = d["evalkit"]
            assert d["metrics"]["acc1"] == (ev["writer"] * 1000 + ev["i"]) / 1e6 and len(ev["pad"]) == 60_000
        except Exception as e:
            bad += 1
            print(f"BAD {p}: {type(e).__name__}: {str(e)[:80]}", flush=True)
        reads += 1
    try:
        read_run_log(out)
    except Exception as e:
        bad += 1
        print(f"BAD run log: {str(e)[:120]}", flush=True)
print(f"reads={reads} bad={bad}")
"""


def test_concurrent_writers_never_leave_a_broken_file(tmp_path):
    """4 processes write results for the same (model, variant, task) and for their own, 40 times
    each, each write logged, then append 150 more log lines each back to back, while 2 readers
    parse every file they find: every file read is complete, the run log has exactly one valid
    line per write, and no temporary file is left."""
    out, stop = tmp_path / "out", tmp_path / "stop"
    writers, n, burst = 4, 40, 150
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    readers = [subprocess.Popen([sys.executable, "-c", _READER, str(out), str(stop)], stdout=subprocess.PIPE,
                                text=True, env=env) for _ in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(out), str(k), str(n), str(burst)], env=env)
             for k in range(writers)]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready{k}").exists() for k in range(writers)) and time.monotonic() < deadline:
            time.sleep(0.01)
        (tmp_path / "go").touch()
        assert [p.wait(timeout=120) for p in procs] == [0] * writers
    finally:
        stop.touch()
        reports = [r.communicate(timeout=60)[0] for r in readers]
    for text in reports:
        assert "BAD" not in text, text
        assert int(text.split("reads=")[1].split()[0]) > 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["runs.jsonl", "runs/m0/dtd.json", "runs/m1/dtd.json", "runs/m2/dtd.json", "runs/m3/dtd.json",
                     "runs/shared/cifar10.json", "runs/shared/int8/cifar10.json"]
    for k in range(writers):  # each writer's own file: its last write
        assert json.loads((out / f"runs/m{k}/dtd.json").read_text())["evalkit"]["i"] == n - 1
    assert json.loads((out / "runs/shared/cifar10.json").read_text())["evalkit"]["i"] == n - 1
    lines = run_log_path(out).read_bytes().split(b"\n")
    assert lines.pop() == b""
    entries = [json.loads(line) for line in lines]
    assert len(entries) == writers * (n * 3 + burst)
    seen = sorted((e["model"], e["variant"], e["task"], e["metrics"]["acc1"]) for e in entries)
    expected = sorted([(model, variant, task, (k * 1000 + i) / 1e6) for k in range(writers) for i in range(n)
                       for model, variant, task in (("shared", "fp32", "cifar10"), ("shared", "int8", "cifar10"),
                                                    (f"m{k}", "fp32", "dtd"))]
                      + [(f"m{k}", "fp32", "burst", (k * 1000 + j) / 1e6) for k in range(writers) for j in range(burst)])
    assert seen == expected


def test_evaluate_appends_a_run_log_line_per_finished_task(tmp_path):
    from evalkit import api
    from evalkit.results import read_run_log

    kw = dict(output_dir=tmp_path, limit=16, progress=False, cache_dir=None, raise_errors=True)
    api.evaluate("eva-clip-demo", "shapeworld-shape,shapeworld-colour", **kw)
    api.evaluate("eva-clip-demo", "shapeworld-shape", **{**kw, "limit": 8})  # another result: a line of its own
    api.evaluate("eva-clip-demo", "shapeworld-shape", **{**kw, "limit": 8})  # the same result again: none
    entries = read_run_log(tmp_path)
    assert [(e["task"], e["limit"]) for e in entries] == [
        ("shapeworld-shape", 16), ("shapeworld-colour", 16), ("shapeworld-shape", 8)]
    assert all(e["model"] == "eva-clip-demo" and e["wall_time_s"] > 0 for e in entries)
