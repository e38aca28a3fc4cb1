"""Results are never silently replaced or lost (issue 16 §2): ad-hoc task names that cannot
collide, a --limit run as its own variant, the results folder checked before the model loads, a
failed write named with its file and task, one run-log line per finished task."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from fixtures import CLASSNAMES, make_folder, make_wds

from evalkit.cli import main as cli
from evalkit.results import read_run_log
from evalkit.tasks.spec import TaskIndex, TaskSpecError, adhoc_name


def _run(*argv: str) -> int:
    return cli.main(["run", "--quiet", *argv])


def test_adhoc_names_carry_the_folder_and_a_hash_of_its_path(tmp_path):
    a, b = tmp_path / "a" / "test", tmp_path / "b" / "test"
    na, nb = adhoc_name(f"folder:{a}"), adhoc_name(f"folder:{b}")
    assert na.startswith("folder_test-") and nb.startswith("folder_test-") and na != nb
    assert adhoc_name(f"folder:{a}/") == na  # the same folder, however it is written
    assert adhoc_name(f"folder:{a}?classnames=x.txt") != na  # other options: another task
    # a WebDataset folder's wds_ prefix is not doubled
    assert adhoc_name(f"wds:{tmp_path}/wds_mid").startswith("wds_mid-")


def test_two_folders_of_one_name_both_run_and_keep_their_results(tiny_arch, tmp_path, capsys):
    a = make_folder(tmp_path / "a" / "test", n_per_class=1)
    b = make_folder(tmp_path / "b" / "test", n_per_class=2)
    out = tmp_path / "out"
    assert _run("--model", f"open_clip:{tiny_arch}", "--tasks", f"folder:{a},folder:{b}", "--output-dir", str(out)) == 0
    results = sorted((out / "runs").rglob("folder_test-*.json"))
    assert len(results) == 2
    counts = sorted(json.loads(p.read_text())["evalkit"]["samples"] for p in results)
    assert counts[1] == 2 * counts[0]  # each folder's own samples: neither replaced the other


def test_one_folder_written_two_ways_is_one_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d" / "test").mkdir(parents=True)
    specs = TaskIndex.load().resolve(["folder:d/test", f"folder:{tmp_path}/d/test/", "folder:d/test?a=1&b=2",
                                      "folder:d/test?b=2&a=1"])
    assert len(specs) == 2  # the folder; the folder with its options (in any order)


def test_a_clash_between_two_tasks_of_one_run_names_both(tmp_path):
    """A task file whose name is an ad-hoc task's: two tasks, one result file; an error naming both."""
    folder = tmp_path / "a"
    taken = adhoc_name(f"folder:{folder}")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text(f"task: {taken}\nfamily: classification\nsource: {{type: folder, path: x}}\n"
                                  f"classnames: [a, b]\ntemplates: ['{{c}}']\n")
    with pytest.raises(TaskSpecError, match=rf"--tasks {taken} and folder:{folder} are two tasks named '{taken}'"):
        TaskIndex.load(extra=[tasks]).resolve([taken, f"folder:{folder}"])


def test_every_unknown_task_is_reported_at_once(capsys):
    assert _run("--model", "eva-clip-demo", "--tasks", "imagenett,demo,objectnett") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 unknown tasks" in err and "'imagenett'" in err and "'objectnett'" in err


def test_a_limited_run_is_its_own_variant(tiny_arch, tmp_path, capsys):
    root = make_wds(tmp_path / "wds_lim", n_per_class=2, nshards=1)
    out = tmp_path / "out"
    model = f"open_clip:{tiny_arch}"
    assert _run("--model", model, "--tasks", f"wds:{root}", "--output-dir", str(out)) == 0
    [full] = (out / "runs").rglob("wds_lim-*.json")
    before = full.read_text()
    assert _run("--model", model, "--tasks", f"wds:{root}", "--output-dir", str(out), "--limit", "5") == 0
    assert full.read_text() == before  # the full result is untouched
    [partial] = (out / "runs").rglob("fp32+limit5/wds_lim-*.json")
    ev = json.loads(partial.read_text())["evalkit"]
    assert ev["limit"] == 5 and ev["variant"] == "fp32+limit5" and ev["evaluated"] == 5


def test_an_unusable_results_folder_stops_the_run_before_the_model_loads(tiny_arch, tmp_path, monkeypatch, capsys):
    import evalkit.models as models

    def loaded(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load", loaded)
    root = make_wds(tmp_path / "wds_o", n_per_class=1, nshards=1)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc = _run("--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root}", "--output-dir", str(blocker / "out"))
    err = capsys.readouterr().err
    assert rc == 1 and f"results folder {blocker / 'out'}: cannot create it" in err

    class Full:
        free = 0

    monkeypatch.setattr("evalkit.results.shutil.disk_usage", lambda p: Full)
    rc = _run("--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root}", "--output-dir", str(tmp_path / "ok"))
    err = capsys.readouterr().err
    assert rc == 1 and f"results folder {tmp_path / 'ok'}: its disk is full" in err


def test_a_failed_write_names_file_and_task_and_keeps_the_features(tiny_arch, tmp_path, monkeypatch, capsys):
    import evalkit.api as api

    root = make_wds(tmp_path / "wds_w", n_per_class=1, nshards=1)
    cache = tmp_path / "cache"

    def full_disk(result, output_dir):
        path = Path(output_dir) / "runs" / "x.json"
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(api, "write_result", full_disk)
    args = ("--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root}", "--output-dir", str(tmp_path / "out"),
            "--cache-dir", str(cache))
    assert _run(*args) == 1
    err = capsys.readouterr().err
    name = adhoc_name(f"wds:{root}")
    assert err.count("\n") == 1
    result = tmp_path / "out" / "runs" / f"open_clip_{tiny_arch}" / f"{name}.json"  # the result, not a temporary
    assert f"{name}: cannot write {result}: No space left on device; the features are in the cache" in err
    monkeypatch.undo()
    assert _run(*args) == 0
    assert "(cached)" in capsys.readouterr().out  # the features survived the failed write


def test_a_resumed_run_logs_each_finished_task_once(tiny_arch, tmp_path):
    root = make_wds(tmp_path / "wds_r", n_per_class=1, nshards=1)
    out = tmp_path / "out"
    args = ("--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root}", "--output-dir", str(out))
    assert _run(*args) == 0
    assert _run(*args) == 0  # a rerun after an interruption: the same task, the same result
    assert len(read_run_log(out)) == 1
    assert _run(*args, "--limit", "3") == 0  # another result: another line
    assert [e["variant"] for e in read_run_log(out)] == ["fp32", "fp32+limit3"]


def test_python_api_defaults_are_the_clis():
    import inspect

    from evalkit.api import evaluate

    sig = inspect.signature(evaluate)
    assert sig.parameters["device"].default == "auto" and sig.parameters["precision"].default == "auto"
    run = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["run"]._actions
               if a.dest == "device")
    assert run.default == "auto"


def test_the_run_log_compares_with_the_latest_line_of_the_same_result(tmp_path):
    """A, B, then A again (new weights written over one path, then the old ones back): three lines;
    the same result twice in a row: one."""
    from evalkit.results import TaskResult, append_run_log

    def result(acc: float, task: str = "t") -> TaskResult:
        return TaskResult(task, "m", "w.pt", "zeroshot_classification", {"acc1": acc},
                          evalkit={"metric": "acc1", "fingerprint": f"f{acc}", "variant": "fp32"})

    for acc in (0.5, 0.5, 0.6, 0.5, 0.5):
        append_run_log(tmp_path, result(acc))
    append_run_log(tmp_path, result(0.5, task="other"))  # another result file: its own line
    assert [(e["task"], e["value"]) for e in read_run_log(tmp_path)] == [
        ("t", 0.5), ("t", 0.6), ("t", 0.5), ("other", 0.5)]


def test_a_relative_adhoc_path_is_the_current_folders_whatever_the_data_root(tiny_arch, tmp_path, monkeypatch):
    """`folder:a/test` reads ./a/test (the folder its name hashes), with or without a data root;
    a data root holding another a/test changes nothing."""
    monkeypatch.chdir(tmp_path)
    make_folder(tmp_path / "a" / "test", n_per_class=2)
    make_folder(tmp_path / "root" / "a" / "test", n_per_class=1)
    out = tmp_path / "out"
    for extra in ([], ["--data-root", str(tmp_path / "root")]):
        assert _run("--model", f"open_clip:{tiny_arch}", "--tasks", "folder:a/test", "--output-dir", str(out),
                    *extra) == 0
    [path] = (out / "runs").rglob("folder_test-*.json")
    assert path.stem == adhoc_name(f"folder:{tmp_path / 'a' / 'test'}")
    ev = json.loads(path.read_text())["evalkit"]
    assert ev["source"]["path"] == str(tmp_path / "a" / "test") and ev["samples"] == 2 * len(CLASSNAMES)


def test_a_limited_result_without_its_variant_is_labelled_everywhere_alike():
    """A --limit result written before limited runs had a variant of their own: the report, check
    and the run log all call it fp32+limit100 (one rule, results.result_variant)."""
    from evalkit.reporting.report import run_label
    from evalkit.results import TaskResult, result_variant, run_log_entry

    r = TaskResult("t", "m", "w", "zeroshot_classification", {"acc1": 0.5},
                   evalkit={"variant": "fp32", "limit": 100, "metric": "acc1"})
    assert result_variant(r) == run_log_entry(r)["variant"] == "fp32+limit100"
    assert run_label(r) == "m [fp32+limit100]"
    full = TaskResult("t", "m", "w", "zeroshot_classification", {"acc1": 0.5}, evalkit={"variant": "fp32+limit3",
                                                                                         "limit": 3})
    assert result_variant(full) == "fp32+limit3"  # said once, not twice
