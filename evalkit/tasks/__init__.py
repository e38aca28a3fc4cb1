"""Task families (one per file) and YAML task specs."""

from __future__ import annotations


def load_builtin_families() -> None:
    """Import the families that ship with evalkit so their decorators register them."""
    from evalkit.tasks import classification, linear_probe, retrieval  # noqa: F401
