"""One run spec (evalkit/tasks/runspec.py): every run option with its default in one place, built
from the command line (RunSpec.from_args) or from keywords (evaluate), handed to the runner and
the families; each task's family made once; a family's declared splits embedded by the shared
runner (evalkit/tasks/common.py run_one)."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest

from evalkit import api
from evalkit.cli.main import build_parser
from evalkit.data.sources import load_source
from evalkit.registry import task_families
from evalkit.tasks.base import RunContext
from evalkit.tasks.common import Scored, run_task
from evalkit.tasks.runspec import RunSpec


def _run_args(*flags: str):
    return build_parser().parse_args(["run", "--model", "m", "--tasks", "t", *flags])


def test_the_command_lines_defaults_are_runspecs():
    assert RunSpec.from_args(_run_args()) == RunSpec()


def test_every_flag_reaches_its_option():
    """Each option the command line has, set to something other than its default, arrives."""
    spec = RunSpec.from_args(_run_args(
        "--weights", "w.pt", "--data-root", "d", "--precision", "fp16", "--batch-size", "auto", "--prefetch", "3",
        "--device", "cpu", "--devices", "0,1", "--max-memory", "0=1GiB", "--allow-missing", "a*", "--allow-missing",
        "b*", "--offload-dir", "off", "--text-model", "tm", "--text-weights", "tw", "--output-dir", "o", "--limit", "5",
        "--num-workers", "3", "--strict", "--transform", "squash", "--frames", "uniform-8", "--shots", "4,1,4",
        "--seeds", "2", "--save-predictions", "--no-records", "--no-fingerprint", "--ci-level", "0.9",
        "--proportion-interval", "clopper-pearson", "--resamples", "500", "--no-cache", "--quiet", "--task-dir", "x", "--task-dir", "y",
        "--skip-existing", "--download"))
    expected = RunSpec(
        weights="w.pt", data_root="d", precision="fp16", batch_size="auto", prefetch=3, device="cpu", devices="0,1",
        max_memory="0=1GiB", allow_missing=("a*", "b*"), offload_dir="off", text_model="tm", text_weights="tw",
        output_dir="o", limit=5, num_workers=3, strict=True, transform="squash", frames="uniform-8", shots=(1, 4),
        seeds=2, save_predictions=True, records=False, fingerprint=False, ci_level=0.9, proportion_interval="clopper-pearson",
        resamples=500, cache_dir=None, progress=False, task_dirs=("x", "y"), skip_existing=True, download=True)
    assert spec == expected
    # every option but those a command line has no flag for differs from its default
    no_flag = {"raise_errors", "on_failure", "on_result"}
    assert {f.name for f in dataclasses.fields(RunSpec) if getattr(spec, f.name) == f.default} == no_flag
    assert RunSpec.from_args(_run_args("--cache-dir", "c")).cache_dir == "c"


def test_evaluate_takes_every_option_as_a_keyword_and_no_other():
    params = inspect.signature(api.evaluate).parameters
    assert list(params)[:3] == ["model", "tasks", "spec"]
    assert {n: p.default for n, p in list(params.items())[3:]} == {
        f.name: f.default for f in dataclasses.fields(RunSpec)}
    with pytest.raises(TypeError, match=r"^evaluate\(\) got an unexpected keyword argument 'batchsize'$"):
        api.evaluate("eva-clip-demo", "no-such-task", batchsize=3)  # said before the tasks are looked up
    with pytest.raises(TypeError, match=r"unknown run option\(s\) \['batchsize'\]"):
        RunContext(batchsize=3)


@pytest.mark.parametrize("options, message", [
    ({"shots": [0, 2]}, r"shots must be whole numbers ≥ 1 \(samples per class\), got \[0, 2\]"),
    ({"shots": ["4"]}, r"shots must be whole numbers"),
    ({"seeds": 0}, r"seeds must be a whole number ≥ 1"),
    ({"seeds": True}, r"seeds must be a whole number ≥ 1"),
    ({"ci_level": 1.0}, r"ci_level must lie strictly between 0 and 1 \(e\.g\. 0\.95\), got 1\.0"),
    ({"ci_level": "0.9"}, r"ci_level must lie strictly between 0 and 1"),
    ({"proportion_interval": "agresti"}, r"proportion_interval must be one of wilson, clopper-pearson, got 'agresti'"),
    ({"resamples": 10}, r"resamples must be a whole number ≥ 100 \(bootstrap resamples\), got 10"),
])
def test_bad_run_options_fail_before_anything_runs(options, message):
    from evalkit.errors import OptionError

    with pytest.raises(OptionError, match=message):
        api.evaluate("eva-clip-demo", "no-such-task", **options)  # said before the tasks are looked up


def test_keywords_and_a_spec_make_the_same_run(monkeypatch):
    seen = []

    def capture(model, tasks, run, **kw):
        seen.append((model, [spec.name for spec, _ in tasks], run, kw["placement"].device))
        return api.RunReport()

    monkeypatch.setattr(api, "_evaluate", capture)
    options = dict(limit=4, device="cpu", precision="fp32", cache_dir=None, progress=False, shots=[2, 1])
    api.evaluate("eva-clip-demo", "shapeworld-shape", **options)
    api.evaluate("eva-clip-demo", "shapeworld-shape", spec=RunSpec(**options))
    api.evaluate("eva-clip-demo", "shapeworld-shape", spec=RunSpec(**{**options, "limit": 9}), limit=4)
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][2].shots == (1, 2) and seen[0][2].limit == 4


def test_each_tasks_family_is_made_once(monkeypatch, tmp_path):
    from evalkit.tasks.classification import ClassificationFamily

    made = []
    monkeypatch.setattr(ClassificationFamily, "__init__", lambda self: made.append(self), raising=False)
    report = api.evaluate("eva-clip-demo", "shapeworld-shape,shapeworld-colour", limit=8, output_dir=tmp_path,
                          cache_dir=None, progress=False, raise_errors=True)
    assert len(report.results) == 2 and len(made) == 2


# ----------------------------------------------------------------------------- declared splits


class SplitEcho:
    """A family of three splits that scores how many samples each split brought."""

    name = "split-echo"
    yaml_keys = ("val_source", "extra_source")
    splits = ("val", "extra", "test")
    default_transform = "crop"
    combine = None
    result_task = "split_echo"

    def validate(self, spec):
        spec.check_options(self.yaml_keys)

    def prepare(self, spec, data_root):
        load = lambda source: load_source(source, data_root, spec.name, base_dir=spec.base_dir)  # noqa: E731
        return SimpleNamespace(data=load(spec.source), val=load(spec.options["val_source"]),
                               extra=load(spec.options["extra_source"]))

    def run(self, spec, encoder, ctx, prepared=None):
        return run_task(self, spec, encoder, ctx, prepared)

    def score(self, spec, encoder, ctx, prepared, by_mode, val, extra):
        return Scored(metrics={m: {"acc1": len(e.keys) / 1000, "val_n": float(len(val[m].keys)),
                                   "extra_n": float(len(extra[m].keys))} for m, e in by_mode.items()},
                      evalkit={"dims": [val[m].features.shape[1] for m in by_mode]})


def test_the_runner_embeds_each_declared_split(monkeypatch, tmp_path):
    monkeypatch.setitem(task_families._items, "split-echo", SplitEcho)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "echo.yaml").write_text(
        "task: echo\nfamily: split-echo\nsource: {type: shapeworld, task: shape, split: test, n: 12, seed: 3}\n"
        "val_source: {type: shapeworld, task: shape, split: train, n: 7, seed: 3}\n"
        "extra_source: {type: shapeworld, task: shape, split: train, n: 5, seed: 4}\n")
    r = api.evaluate("eva-clip-demo", "echo", task_dirs=[tasks], output_dir=tmp_path / "out", cache_dir=None,
                     progress=False, raise_errors=True).results[0]
    assert (r.metrics["acc1"], r.metrics["val_n"], r.metrics["extra_n"]) == (0.012, 7.0, 5.0)
    ev = r.evalkit
    assert (ev["evaluated"], ev["val_evaluated"], ev["extra_evaluated"]) == (12, 7, 5)
    assert ev["val_source"]["n"] == 7 and ev["extra_source"]["seed"] == 4 and "extra_data" in ev
    assert ev["samples_per_rank"] == [24] and ev["val_samples_per_rank"] == [7] and ev["extra_samples_per_rank"] == [5]
    assert ev["images_per_s"] > 0 and ev["dims"][0] > 0
    with pytest.raises(TypeError, match="splits .* must be distinct and end with 'test'"):
        monkeypatch.setattr(SplitEcho, "splits", ("test", "val"))
        api.evaluate("eva-clip-demo", "echo", task_dirs=[tasks], output_dir=tmp_path / "out2", cache_dir=None,
                     progress=False, raise_errors=True)


def test_a_context_made_by_hand_takes_options_as_keywords(tmp_path):
    ctx = RunContext(output_dir=tmp_path, batch_size=8, shots=[4, 2])
    assert ctx.run == RunSpec(batch_size=8, shots=(2, 4), num_workers=0)
    assert ctx.run.batch_size == 8 and not hasattr(ctx, "batch_size")  # options are read from the spec alone
    again = dataclasses.replace(ctx, seeds=3)
    assert again.run == ctx.run.replace(seeds=3) and again.output_dir == Path(tmp_path)
    with pytest.raises(TypeError, match="no_such_option"):
        RunContext(no_such_option=1)


def test_the_packages_evaluate_is_the_api_one_with_every_option():
    import inspect

    import evalkit

    params = inspect.signature(evalkit.evaluate).parameters
    assert evalkit.evaluate is api.evaluate
    assert {f.name for f in dataclasses.fields(RunSpec)} <= set(params), sorted(params)
