"""evalkit as installed software: what ships in the wheel, task names a user types, the data root
from the environment, help text, and `evalkit list` when nothing is found.

The wheel itself is built, installed into a fresh virtual environment and used from another
folder by `.ci/wheel_smoke` (run by `.ci/run`); these tests check the pieces that decide it.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
from pathlib import Path

import pytest
from fixtures import make_wds

from evalkit import resources
from evalkit.cli import main as cli
from evalkit.tasks import spec as spec_module
from evalkit.tasks.spec import TaskIndex, TaskSpecError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ----------------------------------------------------------------------------- the wheel's contents


def test_wheel_lists_every_package_and_maps_tasks_and_claims():
    st = _pyproject()["tool"]["setuptools"]
    code = {".".join(p.relative_to(REPO).parent.parts) for p in (REPO / "evalkit").rglob("__init__.py")}
    assert set(st["packages"]) == code | {"evalkit._tasks", "evalkit._claims"}, "pyproject's package list"
    assert st["package-dir"] == {"evalkit._tasks": "tasks", "evalkit._claims": "results"}


@pytest.mark.parametrize("package, folder, files", [
    ("evalkit._tasks", "tasks", lambda root: [p for p in root.rglob("*") if p.is_file()]),
    ("evalkit._claims", "results", lambda root: sorted(root.glob("claims*.csv"))),
])
def test_wheel_package_data_covers_every_file(package, folder, files):
    globs = _pyproject()["tool"]["setuptools"]["package-data"][package]
    root = REPO / folder
    found = files(root)
    assert found, f"nothing under {root}"
    for path in found:
        rel = path.relative_to(root).as_posix()
        assert any(_setuptools_glob(rel, g) for g in globs), f"{folder}/{rel} would be left out of the wheel ({globs})"


def _setuptools_glob(rel: str, pattern: str) -> bool:
    """package-data matching: "*" stays within one folder, "**/" spans any number of folders
    (none included)."""
    if pattern.startswith("**/"):
        return fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pattern[3:])
    return "/" not in rel and fnmatch.fnmatch(rel, pattern)


def test_setuptools_glob_rule():
    assert _setuptools_glob("SOURCES.md", "*.md") and not _setuptools_glob("eva27/notes.md", "*.md")
    assert _setuptools_glob("eva27/cifar10.yaml", "**/*.yaml") and _setuptools_glob("demo.yaml", "**/*.yaml")


def test_resources_prefer_the_packaged_copy(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "evalkit"
    (pkg / "_tasks").mkdir(parents=True)
    (pkg / "_claims").mkdir()
    # site-packages may hold unrelated top-level "tasks"/"results" folders: never read those
    (pkg.parent / "tasks").mkdir()
    (pkg.parent / "results").mkdir()
    monkeypatch.setattr(resources, "_PACKAGE", pkg)
    assert resources.builtin_tasks_dir() == pkg / "_tasks"
    assert resources.claims_dir() == pkg / "_claims"


def test_resources_missing_is_a_named_error(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "_PACKAGE", tmp_path / "site" / "evalkit")
    (tmp_path / "site" / "tasks").mkdir(parents=True)  # another package's folder, not a checkout
    with pytest.raises(resources.ResourceError, match=r"built-in task files are missing: looked in .*_tasks"):
        resources.builtin_tasks_dir()


def test_resources_in_a_checkout_are_the_repository_folders():
    assert resources.builtin_tasks_dir() == REPO / "tasks"
    assert resources.claims_dir() == REPO / "results"


def test_list_from_another_folder_finds_every_task_and_group(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["list", "tasks"]) == 0
    tasks = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()]
    task_files = [p for p in (REPO / "tasks").rglob("*.yaml") if "\ntask: " in "\n" + p.read_text()]
    assert sorted(tasks) == sorted(p.stem for p in task_files)
    assert cli.main(["list", "groups"]) == 0
    groups = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()]
    group_files = [p for p in (REPO / "tasks").rglob("*.yaml") if "\ngroup: " in "\n" + p.read_text()]
    assert sorted(groups) == sorted(p.stem for p in group_files) and {"eva27", "demo", "retrieval"} <= set(groups)


def test_empty_list_is_an_error(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    monkeypatch.setattr(spec_module, "builtin_tasks_dir", lambda: empty)
    monkeypatch.delenv("EVALKIT_TASK_PATH", raising=False)
    assert cli.main(["list", "tasks"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no tasks found in {empty}" in err
    assert cli.main(["list", "groups"]) == 1


# ----------------------------------------------------------------------------- task names


def test_aliases_resolve_to_the_task():
    index = TaskIndex.load()
    names = ["imagenet", "objectnet", "vtab/cifar10", "imagenet_sketch", "cars", "fgvc_aircraft", "imagenet-a"]
    assert [s.name for s in index.resolve(names)] == [
        "imagenet1k", "objectnet", "cifar10", "imagenet_sketch", "cars", "fgvc_aircraft", "imagenet-a"]
    # VTAB's EuroSAT, Caltech-101 and RESISC45 are other splits than these tasks' protocol: no alias
    for name in ("vtab/eurosat", "vtab/caltech101", "vtab/resisc45"):
        assert index.lookup(name) is None


def test_wds_name_reads_only_the_webdataset_mirror_under_its_own_name():
    index = TaskIndex.load()
    (spec,) = index.resolve(["wds/vtab/cifar10"])
    assert spec.name == "wds/vtab/cifar10" and spec.classnames == index.tasks["cifar10"].classnames
    assert spec.source["layouts"] == [{"type": "wds", "path": "wds_vtab-cifar10"}]
    assert len(index.tasks["cifar10"].source["layouts"]) == 3  # the index's own spec is untouched
    # a task or alias with one mirror names that mirror; the result never takes the task's own name
    assert [s.name for s in index.resolve(["wds/imagenet", "wds/cifar10", "cifar10"])] == [
        "wds/imagenet1k", "wds/vtab/cifar10", "cifar10"]
    (spec,) = index.resolve(["wds/vtab/caltech101"])  # the VTAB split, with its own class order
    assert spec.source["layouts"][0]["classnames_file"].endswith("caltech101_vtab.txt")
    with pytest.raises(TaskSpecError, match=r"wds/food101: task food101 .* has no WebDataset mirror"):
        index.resolve(["wds/food101"])


def test_wds_result_does_not_replace_the_task_result(tiny_arch, tmp_path, capsys):
    """`wds/NAME` is scored and written under its own name, next to the task's own result."""
    import json

    mirror = make_wds(tmp_path / "data" / "wds_vtab-cifar10", n_per_class=1, nshards=1)
    (mirror / "classnames.txt").write_text((REPO / "tasks" / "classnames" / "cifar10.txt").read_text())
    out = tmp_path / "out"
    assert cli.main(["run", "--model", f"open_clip:{tiny_arch}", "--tasks", "cifar10,wds/vtab/cifar10",
                     "--data-root", str(tmp_path / "data"), "--output-dir", str(out), "--quiet",
                     "--transform", "crop"]) == 0
    files = sorted(p.name for p in (out / "runs" / f"open_clip_{tiny_arch}").glob("*.json"))
    assert files == ["cifar10.json", "wds_vtab_cifar10.json"]
    assert json.loads((out / "runs" / f"open_clip_{tiny_arch}" / "wds_vtab_cifar10.json").read_text())[
        "dataset"] == "wds/vtab/cifar10"


def test_unknown_name_suggests_aliases_and_mirrors_too():
    from evalkit.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="did you mean 'imagenet'"):
        TaskIndex.load().resolve(["imagenett"])
    with pytest.raises(UnknownNameError, match="did you mean 'wds/vtab/eurosat'"):
        TaskIndex.load().resolve(["vtab/eurosat"])


def _task_yaml(folder: Path, name: str, *, aliases: str = "", include: str = "", path: str = "data") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = f"include: {include}\ntask: {name}\n" if include else (
        f"task: {name}\nfamily: classification\nsource: {{type: wds, path: {path}}}\n"
        f"templates: ['a photo of a {{c}}.']\n")
    if aliases:
        body += f"aliases: [{aliases}]\n"
    (folder / f"{name}.yaml").write_text(body)
    return folder


def test_alias_clash_is_an_error_naming_both_files(tmp_path):
    d = _task_yaml(tmp_path / "t", "one", aliases="first")
    _task_yaml(d, "two", aliases="first")
    with pytest.raises(TaskSpecError, match=r"two\.yaml: alias 'first' is already an alias of one \(.*one\.yaml\)"):
        TaskIndex.load([d])
    _task_yaml(d, "two", aliases="one")
    with pytest.raises(TaskSpecError, match=r"alias 'one' is already the name of a task or group \(.*one\.yaml\)"):
        TaskIndex.load([d])


def test_your_task_of_a_builtin_alias_name_wins(tmp_path, capsys):
    """A --task-dir task called like a built-in alias is that task; nothing else breaks."""
    d = _task_yaml(tmp_path / "mine", "imagenet", aliases="stanford_cars")
    index = TaskIndex.load(extra=[d])
    assert index.lookup("imagenet").path == str(d / "imagenet.yaml")
    assert index.lookup("stanford_cars").path == str(d / "imagenet.yaml")
    assert index.lookup("in1k").name == "imagenet1k"  # the built-in's other aliases still work
    assert cli.main(["list", "tasks", "--task-dir", str(d)]) == 0
    # the same folder twice (or the built-in folder given again) is read once
    assert len(TaskIndex.load(extra=[d, d, tmp_path / "mine"]).tasks) == len(index.tasks)


def test_aliases_are_not_inherited_through_include(tmp_path):
    d = _task_yaml(tmp_path / "t", "base", aliases="b")
    _task_yaml(d, "child", include="base.yaml")
    index = TaskIndex.load([d])
    assert index.aliases == {"b": "base"}


def test_list_tasks_shows_aliases(capsys):
    assert cli.main(["list", "tasks"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("imagenet1k "))
    assert "(also: imagenet, imagenet-1k, in1k)" in line


def test_task_dir_adds_to_the_builtin_tasks(tmp_path, capsys, caplog):
    d = _task_yaml(tmp_path / "mine", "my-task")
    assert cli.main(["list", "tasks", "--task-dir", str(d)]) == 0
    names = {ln.split()[0] for ln in capsys.readouterr().out.splitlines()}
    assert {"my-task", "imagenet1k", "shapeworld-shape"} <= names
    # a task of a built-in's name replaces it, with a warning
    _task_yaml(d, "cifar10")
    with caplog.at_level(logging.WARNING, logger="evalkit"):
        index = TaskIndex.load(extra=[d])
    assert index.tasks["cifar10"].path == str(d / "cifar10.yaml")
    assert any("cifar10" in r.getMessage() and "replaces" in r.getMessage() for r in caplog.records)
    with pytest.raises(TaskSpecError, match="--task-dir .*nope: not a folder"):
        TaskIndex.load(extra=[tmp_path / "nope"])


def test_same_task_twice_in_one_folder_is_an_error(tmp_path):
    d = _task_yaml(tmp_path / "t", "one")
    (d / "copy.yaml").write_text((d / "one.yaml").read_text())
    with pytest.raises(TaskSpecError, match=r"'one' is also defined in"):
        TaskIndex.load([d])


# ----------------------------------------------------------------------------- data root


def test_data_root_falls_back_to_evalkit_data(tiny_arch, tmp_path, monkeypatch, capsys):
    make_wds(tmp_path / "data" / "mine")
    d = _task_yaml(tmp_path / "tasks", "env-task", path="mine")
    argv = ["run", "--model", f"open_clip:{tiny_arch}", "--tasks", "env-task", "--task-dir", str(d),
            "--output-dir", str(tmp_path / "out"), "--quiet"]
    monkeypatch.delenv("EVALKIT_DATA", raising=False)
    assert cli.main(argv) == 1
    assert "no --data-root was given" in capsys.readouterr().err
    monkeypatch.setenv("EVALKIT_DATA", str(tmp_path / "data"))
    assert cli.main(argv) == 0
    assert "env-task: acc1=" in capsys.readouterr().out
    # --data-root wins over the environment
    monkeypatch.setenv("EVALKIT_DATA", str(tmp_path / "elsewhere"))
    assert cli.main([*argv, "--data-root", str(tmp_path / "data"), "--skip-existing"]) == 0


# ----------------------------------------------------------------------------- help


def _parsers(parser: argparse.ArgumentParser, name: str = "evalkit"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_has_help_and_defaults_are_said_once():
    seen = 0
    for name, parser in _parsers(cli.build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            seen += 1
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where} has no help text"
            text = formatter._expand_help(action) if action.help else ""
            assert text.lower().count("default") <= 1, f"{where}: {text!r}"
            assert "(default: default)" not in text and "(default: None)" not in text, where
    assert seen > 40  # run, list, report, export, plan, data check


def test_help_names_the_defaults_the_option_does_not_mention():
    (_, run), = [(n, p) for n, p in _parsers(cli.build_parser()) if n == "evalkit run"]
    formatter = run._get_formatter()
    batch = next(a for a in run._actions if "--batch-size" in a.option_strings)
    text = formatter._expand_help(batch)
    assert text.endswith("(default: 64)") or "(default 64)" in text, text  # named once, by the text or the formatter
    assert text.lower().count("default") == 1


def test_every_builtin_task_has_a_version():
    tasks = TaskIndex.load().tasks.values()
    assert tasks and all(spec.version for spec in tasks), [s.name for s in tasks if not s.version]


def test_an_unknown_top_level_key_is_a_named_error(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    (d / "x.yaml").write_text("task: x\nfamily: classification\nsource: {type: wds}\npreprocess: {transform: crop}\n")
    from evalkit.api import resolve_tasks

    with pytest.raises(TaskSpecError, match=r"x\.yaml: unknown field\(s\) \['preprocess'\]"):
        resolve_tasks("x", [d])
    (d / "x.yaml").write_text("task: x\nfamily: classification\nsource: {type: wds}\nview: {transform: squash}\n")
    assert TaskIndex.load([d]).tasks["x"].view == {"transform": "squash"}


def test_listing_tasks_loads_no_data_source_until_one_is_looked_up(tmp_path):
    """`evalkit list tasks` imports no dataset layout (video decoding, numpy, torchvision roots):
    they register on the source registry's first lookup."""
    import subprocess
    import sys

    code = ("import sys, io, contextlib; from evalkit.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): assert main(['list', 'tasks']) == 0\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('evalkit.data.') and m not in "
            "('evalkit.data.root',))\n"
            "assert not loaded and 'torch' not in sys.modules, loaded\n"
            "from evalkit.data.sources import sources\n"
            "assert 'birdsnap' in sources and 'evalkit.data.birdsnap' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]


def test_reading_task_files_imports_no_torch(tmp_path):
    """`evalkit list tasks` stays fast: task files are read without importing a family."""
    import subprocess
    import sys

    code = ("import sys; from evalkit.tasks.spec import TaskIndex; i = TaskIndex.load(); "
            "assert i.tasks and 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-500:]


def test_tests_and_benchmarks_read_nothing_outside_the_repository():
    """A fresh clone (CI's, a user's) has no ../shared beside it: a test or benchmark that reads the
    reference folder, or a path of the development machine, passes only in one checkout. What they
    need lives in the repository (tests/fixtures/, the claims under results/, the task files)."""
    outside = ("shared/reference", '/ "shared"', "/ 'shared'", "../shared", "/work/shared")
    found = []
    for folder in ("tests", "benchmarks", ".ci"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.suffix not in (".py", "") or not path.is_file() or path.name == "test_installed.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if any(s in line for s in outside):
                    found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert not found, "paths outside the repository:\n" + "\n".join(found)
