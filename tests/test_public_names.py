"""No module of evalkit uses a private name (``_x``) of another: what one module needs of another
is a public function with one definition. Checked on the source, as tests/test_layering.py reads
it: every ``from evalkit... import _x`` (absolute or relative, at any depth: module level, inside
functions, under ``if TYPE_CHECKING``) and every ``m._x`` on a name ``m`` bound to an evalkit
module by an import. A module's own private names are its business."""

from __future__ import annotations

import ast
from pathlib import Path

from test_layering import module_name

REPO = Path(__file__).resolve().parents[1]


def _is_module(dotted: str, root: Path) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _target(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = (module if is_package else module.rpartition(".")[0]).split(".")
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses(source: str, module: str, is_package: bool, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, what) for each private name of another evalkit module that ``source`` uses
    (``root``: where the package is, to tell a module from a class imported by name)."""
    found: list[tuple[int, str]] = []
    modules: dict[str, str] = {}  # local name -> the evalkit module it is bound to
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _target(node, module, is_package)
            if target.split(".")[0] != "evalkit":
                continue
            for alias in node.names:
                if _private(alias.name) and target != module:
                    found.append((node.lineno, f"from {target} import {alias.name}"))
                elif alias.name != "*" and _is_module(f"{target}.{alias.name}", root):
                    modules[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "evalkit":  # `import evalkit.a.b` binds `evalkit`
                    modules[alias.asname or "evalkit"] = alias.name if alias.asname else "evalkit"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            dotted = []
            while isinstance(base, ast.Attribute):
                dotted.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                owner = ".".join([modules[base.id], *reversed(dotted)])
                if owner != module:
                    found.append((node.lineno, f"{owner}.{node.attr}"))
    return found


def violations(root: Path = REPO) -> list[str]:
    problems = []
    for path in sorted((root / "evalkit").rglob("*.py")):
        module = module_name(path, root)
        for line, what in private_uses(path.read_text(), module, path.name == "__init__.py", root):
            problems.append(f"{path.relative_to(root)}:{line}: {module} uses {what}, a private name of another "
                            f"module: make it public (one definition) or keep it where it is used")
    return problems


def test_no_module_uses_a_private_name_of_another():
    problems = violations()
    assert not problems, "\n".join(problems)


def test_the_scan_sees_every_form(tmp_path):
    source = (
        "from evalkit.reporting.report import _metric_value, primary_metric\n"
        "from . import _helper\n"
        "from .check import _status\n"
        "import evalkit.metric_table as mt\n"
        "from evalkit.reporting import report\n"
        "from typing import _SpecialForm\n"
        "def f():\n"
        "    from evalkit.reporting.claims import _validate\n"
        "    return mt._pattern, report._headline, _own()\n"
        "def _own():\n"
        "    return self._x\n"
    )
    found = {what for _, what in private_uses(source, "evalkit.reporting.catalog", False)}
    assert found == {
        "from evalkit.reporting.report import _metric_value",
        "from evalkit.reporting import _helper",
        "from evalkit.reporting.check import _status",
        "from evalkit.reporting.claims import _validate",
        "evalkit.metric_table._pattern",
        "evalkit.reporting.report._headline",
    }
    assert {w for _, w in private_uses("import evalkit.reporting.report\nx = evalkit.reporting.report._select\n",
                                       "evalkit.api", False)} == {"evalkit.reporting.report._select"}
    # a module's own private names, public ones, and a class's (a NamedTuple's _replace) are fine
    assert private_uses("from evalkit.metrics import RetrievalTopK\nRetrievalTopK._make\nimport evalkit.metrics\n"
                        "x = evalkit.metrics.retrieval_metrics\n", "evalkit.api", False) == []
    assert private_uses("from evalkit.metrics import _pattern\n", "evalkit.metrics", False) == []
    pkg = tmp_path / "evalkit"
    pkg.mkdir()
    (pkg / "a.py").write_text("def _x():\n    pass\n")
    (pkg / "b.py").write_text("from evalkit.a import _x\n")
    assert violations(tmp_path) == [
        "evalkit/b.py:1: evalkit.b uses from evalkit.a import _x, a private name of another module: make it "
        "public (one definition) or keep it where it is used"]
