"""No module imports one above it (DESIGN.md, "Layout"), and the demo plugs in like a third-party
package: every ``evalkit.*`` import of every module under evalkit/ (at module level, inside
functions, under ``if TYPE_CHECKING``, relative or absolute) is checked against the layer table
below. Only the source is parsed; nothing is imported.

The table, top to bottom. A module may import modules of its own layer or of any layer below it:

====  =========  ==============================================================================
  0   cli        ``evalkit.cli``: one module per command, and ``__main__``
  1   api        the package itself (``evalkit/__init__``: ``evaluate`` re-exported), ``api``
  2   reporting  ``evalkit.reporting``: claims, the report, charts, export, check
  3   tasks      ``evalkit.tasks``: families, task specs, the shared runner, the probe
  4   features   ``evalkit.features``: the one loop that runs a model over data, batching, the
                 cache, the ranks of a launched job
  5   views      ``evalkit.views``: how one raw sample becomes one embedding, image transforms,
                 the depth renderer
  6   data       ``evalkit.data``: sources and layouts, the data-level check of one source spec,
                 the fetch from the Hugging Face Hub (``evalkit.data.fetch``)
  7   models     ``evalkit.models``
  8   bottom     the small pure modules of no layer: ``metrics``, ``metric_table``, ``results``, ``version``,
                 ``registry``, ``resources``, ``errors``, ``progress``,
                 ``stats``, ``records``, ``intervals``, ``environment``, ``filehash``
====  =========  ==============================================================================

``evalkit.demo`` is in no layer: it is a plugin. It may import anything of evalkit, as a separate
package may; nothing in evalkit imports it. evalkit finds it only through the entry points its
pyproject.toml declares (``evalkit.sources``: the ``shapeworld`` source). A module that exists
but is missing from the table fails the test: decide where it sits and add it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "evalkit"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("evalkit.cli", "evalkit.__main__")),
    ("api", ("evalkit", "evalkit.api")),
    ("reporting", ("evalkit.reporting",)),
    ("tasks", ("evalkit.tasks",)),
    ("features", ("evalkit.features",)),
    ("views", ("evalkit.views",)),
    ("data", ("evalkit.data",)),
    ("models", ("evalkit.models",)),
    ("bottom", ("evalkit.metrics", "evalkit.metric_table", "evalkit.results", "evalkit.registry",
                "evalkit.resources", "evalkit.errors", "evalkit.progress", "evalkit.version", "evalkit.stats",
                "evalkit.records", "evalkit.intervals", "evalkit.environment", "evalkit.filehash")),
]
PLUGINS = ("evalkit.demo",)


def _within(module: str, prefix: str) -> bool:
    # "evalkit" names the package's own __init__ only, not everything under it
    return module == prefix or (prefix != "evalkit" and module.startswith(prefix + "."))


def layer_of(module: str) -> int | None:
    """Index in LAYERS (0 = top) of the longest entry that names ``module`` or a package above it."""
    best: tuple[int, int] | None = None  # (length of the matching entry, layer)
    for i, (_, entries) in enumerate(LAYERS):
        for prefix in entries:
            if _within(module, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), i)
    return None if best is None else best[1]


def is_plugin(module: str) -> bool:
    return any(_within(module, p) for p in PLUGINS)


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _exists(module: str, root: Path) -> bool:
    base = root.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def evalkit_imports(source: str, module: str, is_package: bool, root: Path = REPO) -> set[tuple[str, int]]:
    """(imported evalkit module, line) for every import statement anywhere in ``source``.
    ``from A import b`` counts as importing ``A.b`` when that is a module, else ``A``."""
    found: set[tuple[str, int]] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "evalkit"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                target = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "evalkit":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add((sub if alias.name != "*" and _exists(sub, root) else target, node.lineno))
    return found


def all_modules(root: Path = REPO) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / "evalkit").rglob("*.py"))}


def violations(root: Path = REPO) -> list[str]:
    problems = []
    for module, path in all_modules(root).items():
        where = path.relative_to(root)
        own = layer_of(module)
        if own is None and not is_plugin(module):
            problems.append(f"{where}: module {module} is in no layer of tests/test_layering.py: add it")
            continue
        for imported, line in sorted(evalkit_imports(path.read_text(), module, path.name == "__init__.py", root)):
            if is_plugin(imported):
                if not is_plugin(module):
                    problems.append(f"{where}:{line}: {module} imports the demo plugin {imported}; evalkit finds "
                                    f"the demo only through its entry points (pyproject.toml)")
                continue
            if is_plugin(module):
                continue  # a plugin may use any of evalkit, as a separate package may
            theirs = layer_of(imported)
            if theirs is None:
                continue  # reported as a module in no layer (or not a module at all)
            if theirs < own:
                problems.append(f"{where}:{line}: {module} ({LAYERS[own][0]}) imports {imported}, "
                                f"which is above it ({LAYERS[theirs][0]})")
    return problems


def test_no_module_imports_one_above_it():
    problems = violations()
    assert not problems, "layering (DESIGN.md, Layout):\n" + "\n".join(problems)


def test_the_table_names_real_modules():
    modules = all_modules()
    for name, entries in LAYERS:
        for entry in entries:
            assert any(_within(m, entry) for m in modules), f"layer {name}: {entry} names no module under evalkit/"


def test_the_import_collector_sees_every_form(tmp_path):
    """Module-level, function-level, TYPE_CHECKING, relative, and ``from package import module``."""
    pkg = tmp_path / "evalkit"
    for rel in ("__init__.py", "cli.py", "data/__init__.py", "data/sources.py", "data/check.py", "tasks/__init__.py",
                "tasks/spec.py", "registry.py", "demo/__init__.py"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text("")
    source = (
        "import evalkit.registry\n"
        "from typing import TYPE_CHECKING\n"
        "from . import sources\n"
        "from ..tasks import spec\n"
        "from evalkit.tasks.spec import TaskIndex\n"
        "if TYPE_CHECKING:\n"
        "    from evalkit import cli\n"
        "def f():\n"
        "    from evalkit import __version__\n"
        "    import evalkit.demo\n"
        "import numpy\n"
    )
    found = {m for m, _ in evalkit_imports(source, "evalkit.data.check", False, tmp_path)}
    assert found == {"evalkit.registry", "evalkit.data.sources", "evalkit.tasks.spec", "evalkit.cli", "evalkit",
                     "evalkit.demo"}
    (pkg / "data" / "check.py").write_text(source)
    problems = "\n".join(violations(tmp_path))
    assert "evalkit.data.check (data) imports evalkit.tasks.spec, which is above it (tasks)" in problems
    assert "imports evalkit.cli, which is above it (cli)" in problems
    assert "imports the demo plugin evalkit.demo" in problems
    assert "sources" not in problems and "registry" not in problems


def test_the_demo_source_comes_through_its_entry_point():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from importlib import metadata

    from evalkit.data.sources import sources

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["evalkit.sources"]
    assert declared == {"shapeworld": "evalkit.demo.sources:shapeworld_source"}
    installed = {ep.name: ep.value for ep in metadata.entry_points(group="evalkit.sources")}
    if installed.get("shapeworld") != declared["shapeworld"]:
        pytest.fail("the installed evalkit's entry points are stale: run `pip install -e . --no-deps`")
    assert sources.entry_point_group == "evalkit.sources"
    fn = sources.get("shapeworld")
    assert (fn.__module__, fn.__name__) == ("evalkit.demo.sources", "shapeworld_source")


def import_cycles(root: Path = REPO) -> list[list[str]]:
    """Every set of modules under evalkit/ that import one another round in a circle (strongly
    connected components of the import graph with more than one module, or a module importing
    itself), each sorted; every import statement counts, at module level or inside a function."""
    modules = all_modules(root)
    graph = {m: sorted({i for i, _ in evalkit_imports(p.read_text(), m, p.name == "__init__.py", root)
                        if i in modules}) for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1 or v in graph[v]:
                cycles.append(sorted(part))

    for m in graph:
        if m not in index:
            visit(m)
    return sorted(cycles)


def test_no_import_cycle():
    cycles = import_cycles()
    assert not cycles, "modules that import one another in a circle:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_sees_a_circle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "evalkit"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from evalkit.data import b\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from evalkit.data.c import x\n")
    (pkg / "data" / "c.py").write_text("import evalkit.data.a\nx = 1\n")
    (pkg / "data" / "d.py").write_text("import evalkit.data.a\n")
    assert import_cycles(tmp_path) == [["evalkit.data.a", "evalkit.data.b", "evalkit.data.c"]]


def test_the_version_is_pyprojects():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from evalkit import __version__

    assert __version__ == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
