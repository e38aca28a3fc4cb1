"""evalkit: zero-shot evaluation of CLIP-style image-text models, claimed vs verified."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate"]


def evaluate(*args, **kwargs):
    """See :func:`evalkit.api.evaluate`."""
    from evalkit.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
