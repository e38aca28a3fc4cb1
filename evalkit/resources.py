"""Where evalkit's own data files are: the built-in task files and the claims CSVs.

The repository's top-level ``tasks/`` and ``results/claims*.csv`` are the source. A wheel ships
them inside the package, as ``evalkit/_tasks`` and ``evalkit/_claims`` (pyproject.toml maps the
folders); a source checkout or an editable install reads them where they are. Either way the
answer does not depend on the current directory.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.errors import EvalkitError

_PACKAGE = Path(__file__).resolve().parent


class ResourceError(EvalkitError, FileNotFoundError):
    """evalkit's own data files are missing: a broken install."""


def _find(packaged: str, in_checkout: str, what: str) -> Path:
    if (_PACKAGE / packaged).is_dir():
        return _PACKAGE / packaged
    # a source checkout (pyproject.toml beside the package), never some other "tasks" folder
    # that happens to sit beside an installed evalkit in site-packages
    if (_PACKAGE.parent / "pyproject.toml").is_file() and (_PACKAGE.parent / in_checkout).is_dir():
        return _PACKAGE.parent / in_checkout
    raise ResourceError(
        f"evalkit's {what} are missing: looked in {_PACKAGE / packaged} (installed wheel) and "
        f"{_PACKAGE.parent / in_checkout} (source checkout); reinstall evalkit"
    )


def builtin_tasks_dir() -> Path:
    """The folder of built-in task and group YAML files (with ``classnames/`` and ``templates/``)."""
    return _find("_tasks", "tasks", "built-in task files")


def claims_dir() -> Path:
    """The folder holding ``claims.csv`` (the papers' numbers) and ``claims_*.csv`` (e.g. the demo's)."""
    return _find("_claims", "results", "claims files (claims.csv)")
