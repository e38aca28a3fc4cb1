"""Nothing disappears without a word: data is checked before weights are read, errors are printed
once, --strict holds for cached features, results of other precisions or weights never replace
each other, and files get the user's umask."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from fixtures import make_wds

from evalkit import api
from evalkit.cli import main as cli
from evalkit.reporting import report
from evalkit.results import DEFAULT_VARIANT, TaskResult, result_path, run_variant, write_result
from evalkit.tasks.spec import adhoc_name


def _run(tmp_path, *argv: str) -> int:
    return cli.main(["run", "--output-dir", str(tmp_path / "out"), "--quiet", *argv])


# ----------------------------------------------------------------------------- data before weights


def test_missing_data_is_reported_before_any_weights_are_read(tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although no task had its data")

    monkeypatch.setattr(api.models, "load", no_model)
    empty = tmp_path / "data"
    empty.mkdir()
    # the promise on the box, typed as is: no weights anywhere, no data under the root
    assert _run(tmp_path, "--model", "eva-clip-18b", "--tasks", "imagenet,objectnet", "--data-root", str(empty)) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err  # one line per task, each printed once
    assert err[0].startswith("evalkit: error: imagenet1k: ") and "imagenet/val" in err[0]
    assert err[1].startswith("evalkit: error: objectnet: ")


def test_tasks_with_data_still_run_when_another_is_missing(tiny_arch, tmp_path, capsys):
    root = make_wds(tmp_path / "wds_ok")
    assert _run(tmp_path, "--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root},wds:{tmp_path / 'nope'}") == 1
    captured = capsys.readouterr()
    assert f"{adhoc_name(f'wds:{root}')}: acc1=" in captured.out
    assert captured.err.count("\n") == 1 and adhoc_name(f"wds:{tmp_path / 'nope'}") in captured.err


def test_a_task_error_is_printed_once(tmp_path):
    """In a real process (pytest's log capture would hide a second, logged copy in-process)."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "run", "--model", "eva-clip-demo", "--tasks", f"wds:{tmp_path / 'nope'}",
         "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1
    nope = adhoc_name(f"wds:{tmp_path / 'nope'}")
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"evalkit: error: {nope}: "), proc.stderr


def test_failures_and_results_are_reported_as_they_happen(tiny_arch, tmp_path):
    events: list[tuple[str, str]] = []
    bad, ok = make_wds(tmp_path / "wds_bad", corrupt=1), make_wds(tmp_path / "wds_ok")
    report_ = api.evaluate(f"open_clip:{tiny_arch}", [f"wds:{bad}", f"wds:{ok}", f"wds:{tmp_path / 'nope'}"],
                           output_dir=tmp_path / "out", strict=True, progress=False,
                           on_failure=lambda name, why: events.append(("failed", name)),
                           on_result=lambda result, path: events.append(("done", result.dataset)))
    # the missing dataset before any model work, the --strict failure before the next task's result
    nope, bad_name, ok_name = (adhoc_name(f"wds:{p}") for p in (tmp_path / "nope", bad, ok))
    assert events == [("failed", nope), ("failed", bad_name), ("done", ok_name)]
    assert [name for name, _ in report_.failures] == [nope, bad_name]


# ----------------------------------------------------------------------------- --strict and the cache


def test_strict_fails_on_a_sample_skipped_by_a_cached_run(tiny_arch, tmp_path, capsys):
    root = make_wds(tmp_path / "wds_bad", corrupt=1)
    cache = str(tmp_path / "cache")
    assert _run(tmp_path, "--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root}", "--cache-dir", cache) == 0
    capsys.readouterr()
    assert _run(tmp_path, "--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root}", "--cache-dir", cache,
                "--strict") == 1
    err = capsys.readouterr().err
    assert "sample 0.tar/s000000: cannot decode" in err and "feature cache" in err
    # without --strict the cached run is reused as before
    assert _run(tmp_path, "--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root}", "--cache-dir", cache) == 0


# ----------------------------------------------------------------------------- result identity


def test_run_variant_labels():
    assert run_variant("fp32") == DEFAULT_VARIANT
    assert run_variant("int8") == "int8"
    assert run_variant("fp16", "laion2b_s39b_b160k") == "fp16+laion2b_s39b_b160k"


def test_weights_files_of_the_same_name_are_different_variants(tmp_path):
    a, b = tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(b"x")
    va, vb = run_variant("fp32", str(a)), run_variant("fp32", str(b))
    assert va.startswith("fp32+model.pt-") and vb.startswith("fp32+model.pt-") and va != vb


def test_other_precision_or_weights_never_replace_a_result(tiny_arch, tmp_path):
    root = make_wds(tmp_path / "wds_v")
    model = f"open_clip:{tiny_arch}"
    weights = tmp_path / "other.pt"
    torch.manual_seed(1)
    import open_clip

    torch.save(open_clip.create_model(tiny_arch).state_dict(), weights)
    for extra in ([], ["--precision", "bf16"], ["--weights", str(weights)]):
        assert _run(tmp_path, "--model", model, "--tasks", f"wds:{root}", *extra) == 0
    out = tmp_path / "out"
    paths = sorted(p.relative_to(out / "runs").as_posix() for p in (out / "runs").rglob("*.json"))
    other = run_variant("fp32", str(weights))
    name = adhoc_name(f"wds:{root}")
    assert paths == sorted([f"open_clip_{tiny_arch}/{name}.json", f"open_clip_{tiny_arch}/bf16/{name}.json",
                            f"open_clip_{tiny_arch}/{other}/{name}.json"])
    fingerprints = {json.loads((out / "runs" / p).read_text())["evalkit"]["fingerprint"] for p in paths}
    assert len(fingerprints) == 3
    # the report and the leaderboard show each run
    lb = report.leaderboard(out)
    assert sorted(lb["variant"]) == sorted(["fp32", "bf16", other])
    table = report.verified_table(out, model=model)
    assert set(table["model"]) == {model, f"{model} [bf16]", f"{model} [{other}]"}


def test_skip_existing_looks_at_the_same_variant(tiny_arch, tmp_path, capsys):
    root = make_wds(tmp_path / "wds_s")
    model = f"open_clip:{tiny_arch}"
    assert _run(tmp_path, "--model", model, "--tasks", f"wds:{root}") == 0
    capsys.readouterr()
    assert _run(tmp_path, "--model", model, "--tasks", f"wds:{root}", "--precision", "bf16", "--skip-existing") == 0
    assert "skipped" not in capsys.readouterr().out  # the fp32 result does not stand in for bf16
    assert _run(tmp_path, "--model", model, "--tasks", f"wds:{root}", "--precision", "bf16", "--skip-existing") == 0
    assert "result exists, skipped" in capsys.readouterr().out


# ----------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_result_files_get_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_result(TaskResult("t", "m", "w", "zeroshot_classification", {"acc1": 0.5}), tmp_path)
    finally:
        os.umask(old)
    assert path == result_path(tmp_path, "m", "t")
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_plugin_family_result_gets_the_run_variant(tmp_path, monkeypatch):
    """A family that knows nothing of variants still writes into its run's own place."""
    from evalkit.registry import task_families

    class Plain:
        name = "plain-test"

        def validate(self, spec):
            pass

        def run(self, spec, encoder, ctx):
            return TaskResult(spec.name, encoder.name, encoder.weights, "plain", {"acc1": 0.5},
                              evalkit={"fingerprint": encoder.fingerprint})

    monkeypatch.setitem(task_families._items, "plain-test", Plain)
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "p.yaml").write_text("task: plain-task\nfamily: plain-test\nsource: {type: shapeworld}\n")
    report_ = api.evaluate("eva-clip-demo", "plain-task", precision="bf16", output_dir=tmp_path / "out",
                           task_dirs=[d], progress=False, raise_errors=True)
    assert report_.paths == [result_path(tmp_path / "out", "eva-clip-demo", "plain-task", variant="bf16")]
    assert json.loads(report_.paths[0].read_text())["evalkit"]["variant"] == "bf16"


def test_new_weights_at_the_same_path_say_they_replace_a_result(tiny_arch, tmp_path, caplog):
    import logging

    import open_clip

    root = make_wds(tmp_path / "wds_w", n_per_class=1, nshards=1)
    weights = tmp_path / "latest.pt"
    for seed in (1, 2):  # a retrained checkpoint written over the old one
        torch.manual_seed(seed)
        torch.save(open_clip.create_model(tiny_arch).state_dict(), weights)
        with caplog.at_level(logging.WARNING, logger="evalkit"):
            api.evaluate(f"open_clip:{tiny_arch}", f"wds:{root}", weights=str(weights), output_dir=tmp_path / "out",
                         progress=False, raise_errors=True)
        warned = [r.getMessage() for r in caplog.records if "replaces a result of other weights" in r.getMessage()]
        assert len(warned) == (seed - 1), warned
