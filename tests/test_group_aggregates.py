"""Reporting reads data: a group file's ``aggregate`` block is a report's aggregate and a
leaderboard column, a ``run: false`` group is reported but never run, a bad block names its file
and key, and the metric table's derivations are what the families report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from evalkit import metric_table
from evalkit.cli import main as cli
from evalkit.metrics import retrieval_metrics
from evalkit.reporting import report
from evalkit.reporting.catalog import load_catalog
from evalkit.reporting.check import check
from evalkit.reporting.claims import ClaimsError, load_claims
from evalkit.results import TaskResult, write_result
from evalkit.tasks.spec import TaskIndex, TaskSpecError

HEADER = "model,task,metric,claimed,transform,protocol,source,paper_model,paper_dataset,note\n"


def _task(folder: Path, name: str, metric: str = "acc1") -> None:
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\nfamily: classification\nsource: {{type: folder, path: {name}}}\nmetric: {metric}\n")


def _tasks_dir(tmp_path: Path, group: str) -> Path:
    """Three toy tasks and one group file (``group``: its text after the name), put on the task
    path evalkit reads (as ``$EVALKIT_TASK_PATH`` does for a user's own files)."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name in ("toy-a", "toy-b", "toy-c"):
        _task(folder, name)
    (folder / "toy.yaml").write_text("group: toy\n" + group)
    return folder


def _result(out: Path, model: str, task: str, metrics: dict[str, float], **evalkit) -> None:
    write_result(TaskResult(dataset=task, model=model, pretrained="test", task="zeroshot_classification",
                            metrics=metrics, evalkit=evalkit), out)


TOY = """tasks: [toy-a, toy-b, toy-c]
aggregate:
  - column: toy_mean
    claim: TOY_AVG
  - name: toy-gap
    reduce: gap
    exclude: [toy-c]
    claim: TOY_GAP
"""


def test_a_group_files_aggregate_is_a_report_aggregate_and_a_leaderboard_column(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_TASK_PATH", str(_tasks_dir(tmp_path, TOY)))
    out = tmp_path / "out"
    for task, acc in (("toy-a", 0.9), ("toy-b", 0.6), ("toy-c", 0.3)):
        _result(out, "m", task, {"acc1": acc})
    claims = tmp_path / "claims.csv"
    claims.write_text(HEADER + "m,TOY_AVG,mean,60.0,,,,,,\nm,TOY_GAP,gap,15.0,,,,,,\n")

    lb = report.leaderboard(out, claims)
    row = lb.iloc[0]
    assert math.isclose(row["toy_mean"], 60.0) and row["toy_mean_n"] == 3 and row["toy_mean_claimed"] == 60.0
    assert "toy-gap" not in lb.columns and "toy_gap" not in lb.columns  # no column: not on the leaderboard
    assert list(lb.columns[2:5]) == ["toy-a", "toy-b", "toy-c"]
    header = report.export(out).splitlines()[0].split(",")
    # the numbers first, as they always were; their statistics after every number
    assert header[:5] == ["model", "variant", "toy-a", "toy-b", "toy-c"]
    assert header[header.index("toy_mean") + 1] == "toy_mean_n"
    first_statistic = min(i for i, c in enumerate(header) if c.endswith(("_claimed", "_ci_low", "_verdict")))
    assert header.index("toy_mean_n") < first_statistic and header.index("toy_mean_ci_low") > first_statistic
    assert header[-4:] == ["rank", "rank_best", "rank_worst", "tie_group"]

    aggs = report.aggregate_table(out, claims).set_index("group")
    assert aggs.loc["toy", "aggregate"] == "TOY_AVG" and aggs.loc["toy", "status"] == "reproduced"
    assert math.isclose(aggs.loc["toy-gap", "verified"], 90.0 - 75.0)  # toy-a minus mean(toy-a, toy-b)
    assert aggs.loc["toy-gap", "total"] == 2 and aggs.loc["toy-gap", "status"] == "reproduced"

    _result(out, "m", "toy-b", {"acc1": 0.3})  # one member changes: the aggregate follows
    assert math.isclose(report.leaderboard(out).iloc[0]["toy_mean"], 50.0)


def test_an_aggregates_claim_is_known_to_the_claims_check_only_through_its_group_file(tmp_path, monkeypatch):
    claims = tmp_path / "claims.csv"
    claims.write_text(HEADER + "m,TOY_AVG,mean,60.0,,,,,,\n")
    with pytest.raises(ClaimsError, match=r"claims.csv:2: metric 'mean' is for the paper's aggregates"):
        load_claims(claims)
    monkeypatch.setenv("EVALKIT_TASK_PATH", str(_tasks_dir(tmp_path, TOY)))
    assert list(load_claims(claims)["task"]) == ["TOY_AVG"]
    claims.write_text(HEADER + "m,TOY_AVG,gap,60.0,,,,,,\n")
    with pytest.raises(ClaimsError, match=r"aggregate 'TOY_AVG' needs metric 'mean' \(its group file .*toy.yaml"):
        load_claims(claims)


@pytest.mark.parametrize("block, where", [
    ("tasks: [toy-a]\naggregate:\n  - reduce: median\n", "toy.yaml: aggregate[0].reduce: unknown reduction 'median'"),
    ("tasks: [toy-a]\naggregate:\n  - colum: x\n", "toy.yaml: aggregate[0]: unknown key(s) ['colum']"),
    ("tasks: [toy-a]\naggregate:\n  - {column: a}\n  - {column: b, metrics: [top1]}\n",
     "toy.yaml: aggregate[1].metrics: 'top1' is not a metric"),
    ("tasks: [toy-a]\naggregate:\n  - {column: a, metrics: [acc1@crop]}\n", "toy.yaml: aggregate[0].metrics"),
    ("tasks: [toy-a]\naggregate:\n  - {column: 3}\n", "toy.yaml: aggregate[0].column: must be a non-empty string"),
    ("tasks: [toy-a]\naggregate: toy_mean\n", "toy.yaml: field 'aggregate' must be a list of mappings"),
    ("tasks: [toy-a]\naggregate:\n  - {column: a}\n  - {column: b}\n", "toy.yaml: aggregate[1].name: 'toy' is also"),
    ("tasks: [toy-a]\nrun: no-thanks\naggregate:\n  - {column: a}\n", "toy.yaml: field 'run' must be true or false"),
    ("tasks: [toy-a, toy-b]\naggregate:\n  - {column: a, exclude: [toy-c]}\n",
     "toy.yaml: aggregate[0].exclude: 'toy-c' is not a task of group 'toy'"),
    ("tasks: [toy-a]\naggregate:\n  - {column: a, exclude: [toy-a]}\n", "toy.yaml: aggregate[0].exclude: leaves no task"),
    ("tasks: [toy-a]\naggregate:\n  - {column: eva27_mean}\n", "toy.yaml: aggregate[0].column: 'eva27_mean' is also"),
    ("tasks: [toy-a]\naggregate:\n  - {claim: AVG27}\n", "toy.yaml: aggregate[0].claim: 'AVG27' is also"),
    ("tasks: [toy-a]\naggregate:\n  - {claim: toy-b}\n", "toy.yaml: aggregate[0].claim: 'toy-b' is the name of a task"),
    ("tasks: [toy-a, nope]\naggregate:\n  - {column: a}\n", "toy.yaml: tasks: 'nope' is no task or group"),
])
def test_a_bad_aggregate_block_names_its_file_and_key(tmp_path, monkeypatch, capsys, block, where):
    monkeypatch.setenv("EVALKIT_TASK_PATH", str(_tasks_dir(tmp_path, block)))
    out = tmp_path / "out"
    _result(out, "m", "toy-a", {"acc1": 0.5})
    with pytest.raises(TaskSpecError) as e:
        report.leaderboard(out)
    assert where in str(e.value)
    assert cli.main(["export", "--output-dir", str(out)]) != 0  # the command: one line, not a traceback
    err = capsys.readouterr().err
    assert where in err and "Traceback" not in err


RUN_FALSE = """run: false
tasks: [toy-a, toy-b]
aggregate:
  - column: toy_mean
"""


def test_a_report_only_group_is_reported_but_never_run(tmp_path, monkeypatch, capsys):
    folder = _tasks_dir(tmp_path, RUN_FALSE)
    (folder / "outer.yaml").write_text("group: outer\ntasks: [toy-c, toy]\n")
    monkeypatch.setenv("EVALKIT_TASK_PATH", str(folder))
    index = TaskIndex.load()
    with pytest.raises(TaskSpecError, match=r"--tasks toy: group 'toy' \(.*toy.yaml\) is read by `evalkit report` "
                                            r"only \(run: false\).*--tasks toy-a,toy-b"):
        index.resolve(["toy"])
    with pytest.raises(TaskSpecError, match=r"--tasks outer: group 'toy' \(in group outer\)"):
        index.resolve(["outer"])  # nor through a group that holds it
    assert [s.name for s in index.resolve(["toy"], run=False)] == ["toy-a", "toy-b"]  # selecting results

    out = tmp_path / "out"
    assert cli.main(["run", "--model", "eva-clip-demo", "--tasks", "toy", "--output-dir", str(out)]) != 0
    err = capsys.readouterr().err
    assert "group 'toy'" in err and "run: false" in err and "Traceback" not in err
    assert not (out / "runs").exists()  # refused before anything ran

    _result(out, "m", "toy-a", {"acc1": 0.8})
    _result(out, "m", "toy-b", {"acc1": 0.4})
    assert math.isclose(report.leaderboard(out).iloc[0]["toy_mean"], 60.0)
    assert set(report.aggregate_table(out, model="m")["group"]) == {"toy"}
    assert {r.task for r in check(out, out, tasks="toy").rows} == {"toy-a", "toy-b"}  # --tasks selects by it


def test_the_shipped_report_only_groups_refuse_to_run(capsys, tmp_path):
    index = TaskIndex.load()
    for name in ("basic17", "3d-table8", "report-order"):
        assert not index.groups[name].run
        with pytest.raises(TaskSpecError, match="run: false"):
            index.resolve([name])
    assert cli.main(["run", "--model", "eva-clip-demo", "--tasks", "basic17", "--output-dir", str(tmp_path)]) != 0
    assert "group 'basic17'" in capsys.readouterr().err
    for name in ("eva27", "imagenet-variants", "video", "retrieval", "3d", "demo"):
        assert index.groups[name].run and index.resolve([name])


def test_table8s_mean_is_not_the_3d_groups():
    """"3d" is the runnable group of five 3D sets; the paper's Table 8 (and its mean) has three."""
    catalog = load_catalog()
    index = TaskIndex.load()
    table8 = catalog.aggregate("3d-table8")
    assert table8.tasks == ("objaverse-lvis", "modelnet40", "scanobjectnn") == tuple(index.groups["3d-table8"].tasks)
    assert set(table8.tasks) < set(index.group_tasks("3d")) and len(index.group_tasks("3d")) == 5
    assert "3d" not in {a.name for a in catalog.aggregates}


# ----------------------------------------------------------------------------- the metric table


def test_the_metric_tables_mean_recall_is_the_retrieval_familys():
    torch.manual_seed(0)
    for n_images, n_texts, ks in ((40, 200, (1, 5, 10)), (33, 70, (2, 3, 7)), (9, 9, (1,))):
        images = torch.nn.functional.normalize(torch.randn(n_images, 16), dim=-1)
        texts = torch.nn.functional.normalize(torch.randn(n_texts, 16), dim=-1)
        m = retrieval_metrics(images, texts, torch.randint(0, n_images, (n_texts,)), ks)
        recalls = [m[f"{d}_retrieval_recall@{k}"] for d in ("text", "image") for k in ks]
        assert m["mean_recall"] == math.fsum(recalls) / len(recalls)  # clip_benchmark's six recalls, averaged
        assert m["mean_recall"] == metric_table.derive("mean_recall", {k: v for k, v in m.items()
                                                                       if k != "mean_recall"})
        assert metric_table.metric_value({k: v for k, v in m.items() if k != "mean_recall"}, "mean_recall") \
            == m["mean_recall"]


def test_the_metric_tables_mean_acc1_acc5_is_the_classification_familys(tmp_path):
    """A classification task whose metric is mean_acc1_acc5 (the paper's Kinetics metric), run
    through the family on the demo model: its number is the table's derivation, (acc1 + acc5) / 2."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "shapes.yaml").write_text(
        "task: shapes-k\nfamily: classification\nsource: {type: shapeworld, task: shape, split: test, n: 48, seed: 3}\n"
        "templates: ['a photo of a {c}.']\nmetric: mean_acc1_acc5\nview: {transform: best-of-both}\n")
    out = tmp_path / "out"
    assert cli.main(["run", "--model", "eva-clip-demo", "--tasks", "shapes-k", "--task-dir", str(folder),
                     "--output-dir", str(out), "--no-cache", "--quiet"]) == 0
    m = json.loads((out / "runs" / "eva-clip-demo" / "shapes-k.json").read_text())["metrics"]
    for suffix in ("@crop", "@squash"):  # each transform's own, as the family scored it
        assert m["mean_acc1_acc5" + suffix] == (m["acc1" + suffix] + m["acc5" + suffix]) / 2
        assert m["mean_acc1_acc5" + suffix] == metric_table.derive("mean_acc1_acc5", m, suffix)
    assert 0 < m["acc1"] < m["acc5"] <= 1  # a number between the two, not one of them


def test_the_metric_table_names_and_orders_the_report_metrics():
    assert metric_table.short_name("text_retrieval_recall@5") == "i2t R@5"
    assert metric_table.long_name("image_retrieval_recall@10") == "text→image recall@10"
    assert metric_table.long_name("acc1@16shot_std") == "acc1@16shot_std"  # suffixed: shown as it is
    keys = ["acc5", "image_retrieval_recall@1", "mean_recall", "text_retrieval_recall@10", "acc1",
            "text_retrieval_recall@1", "mean_acc1_acc5", "mean_per_class_recall"]
    assert sorted(keys, key=metric_table.sort_key) == [
        "acc1", "mean_acc1_acc5", "mean_recall", "text_retrieval_recall@1", "text_retrieval_recall@10",
        "image_retrieval_recall@1", "acc5", "mean_per_class_recall"]
    assert [metric_table.direction(m) for m in ("acc1", "acc1@crop", "acc1@16shot_std", "gap", "unheard")] == \
        [1, 1, 0, -1, 1]
    assert metric_table.metric_value({"acc1@crop": 0.5, "acc5@crop": 0.75}, "mean_acc1_acc5", "@crop") == 0.625
    assert metric_table.metric_value({"acc1": 0.5}, "mean_acc1_acc5") is None  # a member missing: no number
    with pytest.raises(KeyError, match="not a derived metric"):
        metric_table.derive("acc1", {"acc1": 0.5})


@pytest.mark.parametrize("metric", ["top1", "mean", "acc1@crop"])
def test_a_task_files_metric_is_one_of_the_table(tmp_path, metric):
    folder = tmp_path / "tasks"
    folder.mkdir()
    _task(folder, "toy-a", metric)
    with pytest.raises(TaskSpecError, match=rf"toy-a.yaml: field 'metric': '{metric}' is not a metric of a task"):
        TaskIndex.load([folder])
    _task(folder, "toy-a", "text_retrieval_recall@5")
    assert TaskIndex.load([folder]).tasks["toy-a"].metric == "text_retrieval_recall@5"
