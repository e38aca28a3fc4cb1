"""evalkit: zero-shot evaluation of CLIP-style image-text models, claimed vs verified."""

from __future__ import annotations

from evalkit.version import __version__

__all__ = ["__version__", "evaluate"]


def evaluate(*args, **kwargs):
    """See :func:`evalkit.api.evaluate`."""
    from evalkit.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
