"""The data root: ``--data-root``, else ``$EVALKIT_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "EVALKIT_DATA"


def default_data_root(data_root: str | Path | None) -> str | Path | None:
    """``data_root`` when given, else ``$EVALKIT_DATA`` (unset or empty: None)."""
    if data_root is not None and str(data_root) != "":
        return data_root
    return os.environ.get(DATA_ENV) or None
