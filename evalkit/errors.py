"""How an error is told in one line (what `evalkit` prints without -v)."""

from __future__ import annotations


def one_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of ``e``'s message (its type name when it has none), cut to ``limit``."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line[:limit] if limit else line
