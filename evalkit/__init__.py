"""evalkit: zero-shot evaluation of CLIP-style image-text models, claimed vs verified.

``evalkit.evaluate`` is :func:`evalkit.api.evaluate` itself (its signature lists every run
option), imported when first asked for: ``import evalkit`` alone loads no torch."""

from __future__ import annotations

from typing import Any

from evalkit.version import __version__

__all__ = ["__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from evalkit.api import evaluate

        return evaluate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
