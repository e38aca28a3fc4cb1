"""One error base (issue 17, item 6): every error a user can cause is an ``EvalkitError`` and keeps
its builtin base; the runner tells those in one line and goes on; anything else is a bug, told
with its traceback, the task failed, the exit code 1."""

from __future__ import annotations

import ast
import builtins
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evalkit import api
from evalkit.cli import main as cli
from evalkit.errors import EvalkitError, OptionError, OutputError, bug_line, told
from evalkit.results import result_path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "evalkit"

# Exception classes under evalkit/ that are no user's error, each with why. Nothing a user does
# raises one out of evalkit: each is caught where it is raised, or is not an error at all.
INTERNAL = {
    "evalkit.models.hub._Unreachable": "control flow inside hub.locate: the Hub did not answer; caught there and "
                                       "turned into a ModelLoadError or a cache lookup",
    "evalkit.models.hub._Missing": "control flow inside hub.locate: the Hub has no such file; caught there",
    "evalkit.features.distributed.HandedOff": "not an error: a follower rank's part in a task is over (a "
                                              "BaseException that the runner catches by name)",
    "evalkit.views.depth._BadSetting": "carries the view key at fault from the depth-view helpers to the view "
                                       "config, which raises a ViewSpecError naming it",
}

_BUILTIN_EXCEPTIONS = {name: obj for name, obj in vars(builtins).items()
                       if isinstance(obj, type) and issubclass(obj, BaseException)}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = ast.parse(path.read_text(), filename=str(path))
    return out


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # distributed.DistributedError
        return node.attr
    return None


def exception_classes() -> dict[str, set[str]]:
    """Every class under evalkit/ that derives from a builtin exception, directly or through other
    evalkit classes (resolved by name, from the source alone), as ``module.Class`` -> the names of
    all its ancestors (evalkit's and the builtins')."""
    classes: dict[str, list[str]] = {}  # qualified name -> base names
    by_name: dict[str, list[str]] = {}
    for module, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                qual = f"{module}.{node.name}"
                classes[qual] = [b for b in map(_base_name, node.bases) if b]
                by_name.setdefault(node.name, []).append(qual)

    def ancestors(qual: str, seen: frozenset[str] = frozenset()) -> set[str]:
        out: set[str] = set()
        for base in classes[qual]:
            out.add(base)
            for other in by_name.get(base, []):
                if other not in seen and other != qual:
                    out |= ancestors(other, seen | {qual})
        return out

    found = {}
    for qual in classes:
        every = ancestors(qual)
        builtin_bases = {b for b in every if b in _BUILTIN_EXCEPTIONS}
        if builtin_bases and not any(issubclass(_BUILTIN_EXCEPTIONS[b], Warning) for b in builtin_bases):
            found[qual] = every
    return found


def test_the_scan_finds_what_it_looks_for():
    found = exception_classes()
    # direct, through another evalkit class, through a dotted base, and a private one
    for qual in ("evalkit.errors.EvalkitError", "evalkit.data.sources.DataError",
                 "evalkit.features.embed.SampleDecodeError", "evalkit.data.pointclouds.PointCloudError",
                 "evalkit.features.distributed.DistributedError", "evalkit.models.hub._Missing"):
        assert qual in found, qual
    assert "evalkit.data.video.FrameCountWarning" not in found  # a warning is not an error
    assert "EvalkitError" in found["evalkit.data.pointclouds.PointCloudError"]


def test_every_exception_class_is_an_evalkit_error_that_keeps_its_builtin_base():
    found = exception_classes()
    not_ours = sorted(q for q, every in found.items()
                      if q != "evalkit.errors.EvalkitError" and "EvalkitError" not in every and q not in INTERNAL)
    assert not not_ours, (
        "exception classes a user may meet that are not EvalkitErrors (derive from evalkit.errors.EvalkitError "
        "and keep the builtin base, e.g. class XError(EvalkitError, ValueError); or, if no user can ever meet "
        f"one, list it in INTERNAL with why): {not_ours}")
    plain = {"Exception", "BaseException"}
    no_builtin = sorted(q for q, every in found.items() if "EvalkitError" in every
                        and not {b for b in every if b in _BUILTIN_EXCEPTIONS} - plain)
    assert not no_builtin, f"EvalkitErrors with no builtin base besides Exception (`except ValueError` misses them): " \
                           f"{no_builtin}"
    stale = sorted(q for q in INTERNAL if q not in found or "EvalkitError" in found[q])
    assert not stale, f"INTERNAL lists classes that are gone or are EvalkitErrors now: {stale}"


def test_the_named_error_types_are_evalkit_errors_with_their_old_bases():
    """The types the project's own code and its users catch, at run time (the scan reads names)."""
    from evalkit.data.sources import DataError
    from evalkit.features.distributed import DistributedError
    from evalkit.models.hub import ModelLoadError
    from evalkit.registry import UnknownNameError
    from evalkit.reporting.report import ResultsFolderError
    from evalkit.tasks.spec import TaskSpecError

    for cls, old in ((DataError, ValueError), (TaskSpecError, ValueError), (ModelLoadError, RuntimeError),
                     (UnknownNameError, KeyError), (DistributedError, RuntimeError),
                     (ResultsFolderError, FileNotFoundError), (OptionError, ValueError), (OutputError, OSError)):
        assert issubclass(cls, EvalkitError) and issubclass(cls, old), cls
    assert str(UnknownNameError("task", "x", [])).startswith("unknown task 'x'")  # not KeyError's quoting


def test_a_failure_is_told_as_the_users_or_as_a_bug():
    assert told(OptionError("--frames: bad\nmore")) == "--frames: bad"
    assert told(ZeroDivisionError("division by zero")) == bug_line(ZeroDivisionError("division by zero"))
    line = bug_line(KeyError("k"))
    assert "a bug" in line and "KeyError" in line and "\n" not in line


# ----------------------------------------------------------------------------- the runner

_FAMILY = '''
from evalkit.data.sources import DataError
from evalkit.results import TaskResult


class Scripted:
    """A plugin family that does what its task's name says."""

    name = "scripted-test"

    def validate(self, spec):
        pass

    def run(self, spec, encoder, ctx):
        if spec.name == "bug-task":
            return {"acc1": 1 / 0}  # a plain bug inside a family
        if spec.name == "data-task":
            raise DataError(f"{spec.name}: sample 7: its label is not a class")
        return TaskResult(spec.name, encoder.name, encoder.weights, "scripted", {"acc1": 0.5},
                          evalkit={"fingerprint": encoder.fingerprint})
'''


def _task_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tasks"
    d.mkdir()
    for name in ("bug-task", "data-task", "ok-task"):
        (d / f"{name}.yaml").write_text(f"task: {name}\nfamily: scripted-test\nsource: {{type: shapeworld}}\n")
    return d


def _scripted(monkeypatch) -> None:
    from evalkit.registry import task_families

    space: dict = {}
    exec(compile(_FAMILY, "scripted_family", "exec"), space)
    monkeypatch.setitem(task_families._items, "scripted-test", space["Scripted"])


def test_a_bug_in_a_family_fails_its_task_with_its_traceback_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    _scripted(monkeypatch)
    told_: list[tuple[str, str]] = []
    with caplog.at_level(logging.DEBUG, logger="evalkit"):
        report = api.evaluate("eva-clip-demo", ["bug-task", "data-task", "ok-task"], task_dirs=[_task_dir(tmp_path)],
                              output_dir=tmp_path / "out", progress=False, cache_dir=None,
                              on_failure=lambda name, why: told_.append((name, why)))
    assert not report.ok
    assert [r.dataset for r in report.results] == ["ok-task"]  # the run went on after the bug
    assert result_path(tmp_path / "out", "eva-clip-demo", "ok-task").exists()
    failures = dict(report.failures)
    assert set(failures) == {"bug-task", "data-task"} and told_ == report.failures
    assert failures["data-task"] == "data-task: sample 7: its label is not a class"
    assert "a bug" in failures["bug-task"] and "ZeroDivisionError: division by zero" in failures["bug-task"]
    # the bug's traceback is logged as an error; the user's error only at debug level
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert [r.exc_info[0] for r in errors] == [ZeroDivisionError]
    assert "bug-task" in errors[0].getMessage()
    assert all(r.levelno == logging.DEBUG for r in caplog.records
               if r.exc_info and r.exc_info[0] is not ZeroDivisionError)


def test_raise_errors_re_raises_a_bug_as_it_is(tmp_path, monkeypatch):
    _scripted(monkeypatch)
    with pytest.raises(ZeroDivisionError):
        api.evaluate("eva-clip-demo", ["bug-task", "ok-task"], task_dirs=[_task_dir(tmp_path)],
                     output_dir=tmp_path / "out", progress=False, cache_dir=None, raise_errors=True)


def test_the_command_prints_a_bugs_traceback_and_a_users_error_in_one_line(tmp_path):
    """In a real process: what `evalkit run` prints on stderr, and its exit code."""
    script = tmp_path / "run_scripted.py"
    script.write_text(textwrap.dedent(_FAMILY) + textwrap.dedent(f'''
        import sys

        from evalkit.cli.main import main
        from evalkit.registry import task_families

        task_families.add("scripted-test", Scripted)
        sys.exit(main(["run", "--model", "eva-clip-demo", "--tasks", "bug-task,data-task,ok-task",
                       "--task-dir", {str(_task_dir(tmp_path))!r}, "--output-dir", {str(tmp_path / "out")!r},
                       "--no-cache", "--quiet"]))
        '''))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "Traceback (most recent call last)" in err and "1 / 0" in err and "ZeroDivisionError" in err, err
    assert err.count("Traceback (most recent call last)") == 1, err  # the DataError has none
    assert "evalkit: error: data-task: data-task: sample 7: its label is not a class\n" in err, err
    assert "evalkit: error: bug-task: internal error (a bug" in err, err
    assert "ok-task: acc1=50.00" in proc.stdout, proc.stdout  # the task after the bug still ran


def test_a_bug_outside_any_task_exits_1_with_its_traceback(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'device'")

    monkeypatch.setattr(api, "_evaluate", broken)
    rc = cli.main(["run", "--model", "eva-clip-demo", "--tasks", "demo", "--output-dir", str(tmp_path / "out"),
                   "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback (most recent call last)" in err and "in broken" in err, err
    assert err.rstrip().endswith("evalkit: error: internal error (a bug in evalkit or a plugin; its traceback is "
                                 "above): AttributeError: 'NoneType' object has no attribute 'device'"), err


def test_a_users_error_outside_any_task_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc = cli.main(["run", "--model", "eva-clip-demo", "--tasks", "demo", "--output-dir", str(blocker),
                   "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith(f"evalkit: error: results folder {blocker}: exists and is not a folder"), err
