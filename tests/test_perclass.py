"""Per-class analysis (evalkit/tasks/perclass.py, evalkit/reporting/perclass.py, `evalkit report
--task`), checked against independent computations: per-class accuracies and confused pairs
against sklearn's confusion matrix, intervals against SciPy's ``binomtest(...).proportion_ci``
(and, for few-shot's seed-mean counts, Wilson's formula written out here), zero-support classes
and duplicate class names against recomputations, on fixture records and on the class-name lists
evalkit ships; the runner's sidecar, its removal without records, and the command's output and
exit codes."""

from __future__ import annotations

import json
import re
import textwrap
import unicodedata
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn.metrics import confusion_matrix

from evalkit import api
from evalkit.cli import main as cli
from evalkit.records import records_path, result_entry, result_records, write_records
from evalkit.registry import UnknownNameError
from evalkit.reporting.perclass import NoResultError, perclass_runs, render
from evalkit.results import TaskResult, iter_results, read_result, write_result
from evalkit.tasks.perclass import (
    analyse,
    class_names,
    name_groups,
    perclass_document,
    read_sidecar,
    sidecar_for,
    sidecar_text,
)
from evalkit.tasks.spec import TaskIndex

REPO = Path(__file__).resolve().parents[1]
MODEL = "eva-clip-demo"
C = 8
ABSENT = 6  # the fixture's class without a test sample


# ----------------------------------------------------------------------------- fixtures

def _classification(n: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """Records of ``n`` samples over C classes, none of class ABSENT; most right, class 2 often
    taken for 3, the rest of the errors random (class ABSENT among the predictions); a tenth tie
    at the top, where ``pred`` (the first of the tied maxima) is the second of ``top_classes``."""
    rng = np.random.default_rng(seed)
    target = rng.choice([c for c in range(C) if c != ABSENT], size=n)
    top1 = np.where(rng.random(n) < 0.7, target, rng.integers(0, C, n))
    top1 = np.where((target == 2) & (rng.random(n) < 0.5), 3, top1)
    rest = np.stack([(top1 + k) % C for k in range(1, 5)], axis=1)
    scores = np.sort(rng.random((n, 5)).astype(np.float32), axis=1)[:, ::-1] * 30
    tied = rng.random(n) < 0.1
    scores[tied, 1] = scores[tied, 0]
    return {"key": np.array([f"s{i}" for i in range(n)]), "target": target.astype(np.int32),
            "top_classes": np.concatenate([top1[:, None], rest], axis=1).astype(np.int32), "top_scores": scores,
            "margin": (scores[:, 0] - scores[:, 1]).astype(np.float32),
            "pred": np.where(tied, rest[:, 0], top1).astype(np.int32)}


def _fewshot(n: int = 300, seeds: int = 3, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.choice([c for c in range(C) if c != ABSENT], size=n)
    shots = np.repeat([1, 4], seeds)
    pred = np.stack([np.where(rng.random(n) < (0.4 if k == 1 else 0.8), target, rng.integers(0, C, n)) for k in shots])
    return {"key": np.array([f"s{i}" for i in range(n)]), "target": target.astype(np.int32),
            "shots": shots.astype(np.int32), "seed": np.tile(np.arange(seeds), 2).astype(np.int32),
            "pred": pred.astype(np.int32)}


NAMES = ["Crane", "cat", "crane.", "dog", "t-shirt", "T Shirt", "emu", "crane"]


def _result(out: Path, task: str, kind: str, arrays: dict[str, np.ndarray], meta: dict, *,
            ci_options: dict | None = None, task_file: str | None = None) -> Path:
    written = write_records(records_path(out, MODEL, task), kind, {"crop": arrays}, {"task": task, **meta})
    evalkit = {"records": result_entry([written], kind), "ci_options": ci_options or {"level": 0.95, "proportion": "wilson"},
               "variant": "fp32", **({"task_file": task_file} if task_file else {})}
    result = TaskResult(dataset=task, model=MODEL, pretrained="", task="zeroshot_classification",
                        metrics={"acc1": 0.5}, evalkit=evalkit)
    return write_result(result, out)


def _wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return ci.low, ci.high


# ----------------------------------------------------------------------------- the analysis

def test_per_class_accuracy_intervals_and_pairs_match_sklearn_and_scipy(tmp_path):
    arrays = _classification()
    path = _result(tmp_path, "fx-cls", "classification", arrays, {"n_classes": C, "classnames": NAMES})
    (run,) = perclass_runs(tmp_path, "fx-cls")
    (doc,) = run.documents
    assert run.origin == ["computed from fx-cls.records.npz (no sidecar of these records)"]
    assert doc["classnames_source"] == "records" and doc["n_classes"] == C
    (a,) = doc["analyses"]
    top1 = arrays["top_classes"][:, 0]
    cm = confusion_matrix(arrays["target"], top1, labels=list(range(C)))
    support = cm.sum(axis=1)
    for row in a["classes"]:
        i = row["class"]
        assert (row["name"], row["support"], row["correct"]) == (NAMES[i], support[i], cm[i, i])
        if support[i]:
            assert row["accuracy"] == pytest.approx(cm[i, i] / support[i], abs=1e-15)
            assert row["ci"] == pytest.approx(_wilson(int(cm[i, i]), int(support[i])), abs=1e-12)
        else:
            assert row["accuracy"] is None and row["ci"] is None
    assert a["correct"] == int(np.count_nonzero(top1 == arrays["target"])) and a["samples"] == len(top1)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    want = sorted(((int(off[t, p]), t, p) for t in range(C) for p in range(C) if off[t, p]), key=lambda x: (-x[0], x[1], x[2]))
    assert a["confused_pairs_total"] == len(want)
    assert [(p["count"], p["true"], p["pred"]) for p in a["confused_pairs"]] == want[:25]
    assert a["confused_pairs"][0][("true")] == 2 and a["confused_pairs"][0]["pred"] == 3  # the fixture's big confusion
    for p in a["confused_pairs"]:
        assert p["share"] == pytest.approx(off[p["true"], p["pred"]] / support[p["true"]])
        assert (p["true_name"], p["pred_name"]) == (NAMES[p["true"]], NAMES[p["pred"]])
    assert a["zero_support"] == [{"class": i, "name": NAMES[i]} for i in range(C) if support[i] == 0] != []
    assert read_result(path).evalkit["records"]["kind"] == "classification"


def test_the_results_interval_options_are_used(tmp_path):
    arrays = _classification(n=250, seed=3)
    _result(tmp_path, "fx-cp", "classification", arrays, {"n_classes": C, "classnames": NAMES},
            ci_options={"level": 0.9, "proportion": "clopper-pearson"})
    (run,) = perclass_runs(tmp_path, "fx-cp")
    assert run.documents[0]["ci_options"] == {"level": 0.9, "proportion": "clopper-pearson"}
    checked = 0
    for row in run.documents[0]["analyses"][0]["classes"]:
        if row["support"]:
            ci = binomtest(row["correct"], row["support"]).proportion_ci(confidence_level=0.9, method="exact")
            assert row["ci"] == pytest.approx([ci.low, ci.high], abs=1e-10)
            checked += 1
    assert checked == C - 1


def test_fewshot_counts_are_means_over_seeds_with_a_conservative_interval(tmp_path):
    arrays = _fewshot()
    _result(tmp_path, "fx-fs", "fewshot", arrays, {"n_classes": C, "shots": [1, 4], "seeds": [0, 1, 2]})
    (run,) = perclass_runs(tmp_path, "fx-fs")
    (doc,) = run.documents
    assert [(a["mode"], a["shots"], a["runs"]) for a in doc["analyses"]] == [("crop", 1, 3), ("crop", 4, 3)]
    z = norm.ppf(0.975)
    for a in doc["analyses"]:
        rows = arrays["pred"][arrays["shots"] == a["shots"]]
        cms = [confusion_matrix(arrays["target"], r, labels=list(range(C))) for r in rows]
        mean_cm = np.mean(cms, axis=0)
        # acc1@Kshot is the mean over seeds of each seed's accuracy: the classes' counts add up to it
        acc = np.mean([np.mean(r == arrays["target"]) for r in rows])
        assert a["correct"] / a["samples"] == pytest.approx(acc, abs=1e-12)
        for row in a["classes"]:
            i, n = row["class"], row["support"]
            assert n == cms[0][i].sum() and row["correct"] == pytest.approx(mean_cm[i, i], abs=1e-12)
            if not n:
                continue
            p = mean_cm[i, i] / n  # Wilson's score interval, written out, at a seed-mean count
            centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
            assert row["ci"] == pytest.approx([max(0.0, centre - half), min(1.0, centre + half)], abs=1e-10)
        top = a["confused_pairs"][0]
        off = mean_cm.copy()
        np.fill_diagonal(off, 0)
        assert top["count"] == pytest.approx(off.max()) and off[top["true"], top["pred"]] == off.max()
    assert doc["classnames_source"] == "none" and doc["analyses"][0]["classes"][0]["name"] == "class 0"


def test_out_of_range_labels_and_predictions_are_errors_naming_them():
    with pytest.raises(ValueError, match="prediction 9 is outside the 4 classes"):
        analyse(np.array([0, 1, 2]), np.array([0, 9, 2]), 4)
    with pytest.raises(ValueError, match="label -1 is outside"):
        analyse(np.array([0, -1, 2]), np.array([0, 1, 2]), 4)


# ----------------------------------------------------------------------------- class names

def _recomputed_groups(names: list[str]) -> list[list[int]]:
    """Classes whose names agree once case, whitespace and punctuation are dropped: kept are
    letters and digits alone (the shipped lists hold no other symbol)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        groups["".join(ch for ch in unicodedata.normalize("NFKC", name).casefold() if ch.isalnum())].append(i)
    return [g for g in groups.values() if len(g) > 1]


def test_names_identical_or_differing_in_case_space_or_punctuation_are_grouped():
    groups = name_groups(NAMES)
    assert [[i for i, _ in g["classes"]] for g in groups] == _recomputed_groups(NAMES) == [[0, 2, 7], [4, 5]]
    assert [g["identical"] for g in groups] == [False, False]
    assert [g["identical"] for g in name_groups(["crane", "emu", "crane"])] == [True]
    assert name_groups(["c++", "c", "C$"]) == []  # a symbol (+, $) is no punctuation: three names


def test_label_groups_name_each_label_by_its_classes():
    assert class_names(["a", "b", "c"], [[2], [0, 1]], 2) == ["c", "a / b"]
    assert class_names(["a", "b", "c"], None, 3) == ["a", "b", "c"]
    assert class_names(["a", "b"], None, 3) is None  # names that do not fit the labels are not used
    assert class_names(["a", "b"], [[0], [5]], 2) is None


@pytest.mark.parametrize("path", sorted((REPO / "tasks" / "classnames").glob("*.txt")), ids=lambda p: p.name)
def test_duplicate_groups_of_every_shipped_class_name_file(path):
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    assert [[i for i, _ in g["classes"]] for g in name_groups(names)] == _recomputed_groups(names)


def test_imagenet_through_its_task_file_has_the_duplicates_recomputed():
    spec = TaskIndex.load([REPO / "tasks"]).lookup("imagenet1k")
    assert spec is not None and len(spec.classnames) == 1000
    groups = name_groups(spec.classnames)
    want = _recomputed_groups(spec.classnames)
    assert want, "ImageNet-1k's class names are known to repeat"
    assert [[i for i, _ in g["classes"]] for g in groups] == want
    for g in groups:
        assert g["identical"] == (len({spec.classnames[i] for i, _ in g["classes"]}) == 1)


def test_names_come_from_the_task_file_where_the_records_have_none(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "fx-probe.yaml").write_text(textwrap.dedent(f"""\
        task: fx-probe
        family: linear_probe
        source: {{type: shapeworld, task: shape, split: test, n: 10}}
        classnames: {json.dumps(NAMES)}
        """))
    _result(tmp_path / "out", "fx-probe", "probe", _classification(seed=5), {"n_classes": C},
            task_file=str(tasks / "fx-probe.yaml"))
    (run,) = perclass_runs(tmp_path / "out", "fx-probe")
    doc = run.documents[0]
    assert doc["classnames_source"] == "task file"
    assert [r["name"] for r in doc["analyses"][0]["classes"]] == NAMES
    assert [[i for i, _ in g["classes"]] for g in doc["duplicate_names"]] == _recomputed_groups(NAMES)


# ----------------------------------------------------------------------------- the runner's sidecar

def _task(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    name = text.split("task: ", 1)[1].split("\n", 1)[0]
    (root / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


SHAPES = """\
    task: sw-named
    version: 1
    family: classification
    source: {type: shapeworld, task: shape, split: test, n: 90, seed: 3}
    classnames: [circle, "Circle.", triangle, star, diamond, cross]
    templates: ["a photo of a {c}."]
    metric: acc1
    """


def test_the_runner_writes_the_sidecar_and_removes_it_without_records(tmp_path, capsys):
    tasks = _task(tmp_path / "tasks", SHAPES)
    out = tmp_path / "out"
    argv = ["run", "--model", MODEL, "--tasks", "sw-named", "--task-dir", str(tasks), "--output-dir", str(out),
            "--quiet", "--no-cache"]
    assert cli.main(argv) == 0
    folder = out / "runs" / MODEL
    sidecar = folder / "sw-named.perclass.jsonl"
    assert sidecar == sidecar_for(folder / "sw-named.records.npz")
    doc = read_sidecar(sidecar)
    lines = sidecar.read_text().splitlines()  # JSON Lines: the header, then one line per analysis
    assert len(lines) == 1 + len(doc["analyses"]) == 2 and "analyses" not in json.loads(lines[0])
    (records,) = result_records(folder / "sw-named.json")
    recomputed = perclass_document("classification", {m: records.arrays(m) for m in records.modes}, records.meta,
                                   records.meta["classnames"], "records")
    assert {k: v for k, v in doc.items() if k not in ("records", "records_sha256")} == json.loads(json.dumps(recomputed))
    assert doc["records_sha256"] == read_result(folder / "sw-named.json").evalkit["records"]["sha256"][0]
    assert [[i for i, _ in g["classes"]] for g in doc["duplicate_names"]] == [[0, 1]]
    assert [r.dataset for r in iter_results(out)] == ["sw-named"]
    assert sorted(p.name for p in folder.glob("*.json")) == ["sw-named.json"]  # every *.json is a result
    (run,) = perclass_runs(out, "sw-named", index=TaskIndex.load([tasks]))
    assert run.origin == ["sidecar sw-named.perclass.jsonl"]
    capsys.readouterr()
    assert cli.main([*argv, "--no-records"]) == 0
    assert not sidecar.exists(), "an earlier run's analysis must not stand beside a result without records"
    (run,) = perclass_runs(out, "sw-named", index=TaskIndex.load([tasks]))
    assert run.documents == [] and "without per-sample records" in run.note


def test_a_task_of_several_splits_has_one_sidecar_per_split(tmp_path):
    tasks = _task(tmp_path / "tasks", SHAPES.replace("sw-named", "sw-split").replace(
        "    metric: acc1\n", "    metric: acc1\n    protocol: {splits: [{seed: 1}, {seed: 2}]}\n"))
    report = api.evaluate(MODEL, "sw-split", task_dirs=[tasks], output_dir=tmp_path / "out", cache_dir=None,
                          progress=False, raise_errors=True)
    (path,) = report.paths
    for k, records in enumerate(result_records(path), start=1):
        doc = read_sidecar(path.parent / f"sw-split.split{k}.perclass.jsonl")
        assert doc["part"] == f"split{k}" and doc["records"] == records.path.name
        target, top1 = records.arrays()["target"], records.arrays()["top_classes"][:, 0]
        assert doc["analyses"][0]["correct"] == int(np.count_nonzero(target == top1))
    assert not (path.parent / "sw-split.perclass.jsonl").exists()
    (run,) = perclass_runs(tmp_path / "out", "sw-split", index=TaskIndex.load([tasks]))
    assert run.origin == ["sidecar sw-split.split1.perclass.jsonl", "sidecar sw-split.split2.perclass.jsonl"]


def test_a_sidecar_of_other_records_is_not_read(tmp_path):
    arrays = _classification(seed=7)
    path = _result(tmp_path, "fx-stale", "classification", arrays, {"n_classes": C, "classnames": NAMES})
    sidecar = path.parent / "fx-stale.perclass.jsonl"
    (run,) = perclass_runs(tmp_path, "fx-stale")
    good = run.documents[0]
    sidecar.write_text(sidecar_text({**good, "records_sha256": "0" * 64}))  # another run's
    (run,) = perclass_runs(tmp_path, "fx-stale")
    assert run.origin == ["computed from fx-stale.records.npz (no sidecar of these records)"]
    sidecar.write_text("{not json\n")  # damaged
    (run,) = perclass_runs(tmp_path, "fx-stale")
    assert run.origin == ["computed from fx-stale.records.npz (no sidecar of these records)"]
    with pytest.raises(ValueError, match=f"{sidecar}: not a per-class analysis"):
        read_sidecar(sidecar)
    sidecar.write_text('{"mode": "crop"}\n')  # JSON Lines, but no header
    with pytest.raises(ValueError, match=f"{sidecar}: not a per-class analysis of schema 1"):
        read_sidecar(sidecar)
    assert run.documents[0]["analyses"][0]["correct"] == int(np.count_nonzero(arrays["top_classes"][:, 0] == arrays["target"]))


# ----------------------------------------------------------------------------- the command

def test_report_task_prints_the_worst_classes_first_with_their_intervals(tmp_path, capsys):
    arrays = _classification()
    _result(tmp_path, "fx-cli", "classification", arrays, {"n_classes": C, "classnames": NAMES})
    assert cli.main(["report", "--task", "fx-cli", "--output-dir", str(tmp_path), "--classes", "3"]) == 0
    text = capsys.readouterr().out
    cm = confusion_matrix(arrays["target"], arrays["top_classes"][:, 0], labels=list(range(C)))
    support = cm.sum(axis=1)
    acc = {i: cm[i, i] / support[i] for i in range(C) if support[i]}
    worst = sorted(acc, key=lambda i: (acc[i], _wilson(int(cm[i, i]), int(support[i]))[1], -support[i], i))[:3]
    rows = re.findall(r"^\| (\d+) \| [^|]+ \| (\d+) \| (\d+) \| ([\d.]+) \| \[([\d.]+), ([\d.]+)\] \|$", text, re.M)
    assert [int(r[0]) for r in rows] == worst
    for r in rows:
        i = int(r[0])
        low, high = _wilson(int(cm[i, i]), int(support[i]))
        assert (int(r[1]), int(r[2])) == (support[i], cm[i, i])
        assert (r[3], r[4], r[5]) == (f"{100 * acc[i]:.2f}", f"{100 * low:.2f}", f"{100 * high:.2f}")
    assert "(3 of 7, worst first; --classes 0 prints all)" in text
    assert f"| 2 {NAMES[2]} → 3 {NAMES[3]} |" in text.split("Most-confused pairs")[1].splitlines()[4]
    assert f"Classes without a test sample (1): {ABSENT} {NAMES[ABSENT]}" in text
    assert "- near-identical: 0 'Crane', 2 'crane.', 7 'crane'" in text and "- near-identical: 4 't-shirt', 5 'T Shirt'" in text
    assert cli.main(["report", "--task", "fx-cli", "--output-dir", str(tmp_path), "--classes", "0"]) == 0
    assert len(re.findall(r"^\| \d+ \| [^|→]+ \| \d+ \| \d+ \|", capsys.readouterr().out, re.M)) == C - 1


def test_report_task_exit_codes_name_the_task_and_folder(tmp_path, capsys):
    _result(tmp_path, "fx-codes", "classification", _classification(n=50), {"n_classes": C, "classnames": NAMES})
    assert cli.main(["report", "--task", "no-such-task", "--output-dir", str(tmp_path)]) == 2
    assert "unknown task 'no-such-task'" in capsys.readouterr().err
    assert cli.main(["report", "--task", "imagenet1k", "--output-dir", str(tmp_path)]) == 1
    assert f"task 'imagenet1k': no result under {tmp_path}/runs" in capsys.readouterr().err
    assert cli.main(["report", "--task", "fx-codes", "--output-dir", str(tmp_path), "--model", MODEL]) == 0
    assert f"## {MODEL} [fp32]" in capsys.readouterr().out
    assert cli.main(["report", "--task", "fx-codes", "--output-dir", str(tmp_path), "--model", "other"]) == 1
    assert f"task 'fx-codes': no result under {tmp_path}/runs/other" in capsys.readouterr().err
    assert cli.main(["report", "--task", "fx-codes", "--output-dir", str(tmp_path / "missing")]) == 1
    assert f"results folder {tmp_path / 'missing'}: no such folder" in capsys.readouterr().err
    with pytest.raises(UnknownNameError):
        perclass_runs(tmp_path, "no-such-task")
    with pytest.raises(NoResultError):
        perclass_runs(tmp_path, "imagenet1k")


def test_results_without_records_or_classes_say_why(tmp_path):
    write_result(TaskResult(dataset="fx-bare", model=MODEL, pretrained="", task="zeroshot_classification",
                            metrics={"acc1": 0.5}, evalkit={"variant": "fp32"}), tmp_path)
    (run,) = perclass_runs(tmp_path, "fx-bare")
    assert run.documents == [] and "written without per-sample records" in run.note
    assert "No per-class analysis: written without per-sample records" in render([run], "fx-bare")
