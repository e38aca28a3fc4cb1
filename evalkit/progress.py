"""Signs of life for every long phase of a run (encoding images, building a classifier, encoding
captions, training few-shot probes), in the form the output can take.

    on a terminal (or in a notebook)   a tqdm bar, redrawn in place
    anywhere else (a log, CI, a pipe)  plain lines: one when a phase has run for
                                       ``FIRST_LINE_AFTER_S`` seconds, then one every
                                       ``LINE_EVERY_S`` seconds, and one when it ends; a phase
                                       shorter than that prints nothing

The same rule holds for ``evalkit run`` and for :func:`evalkit.evaluate` (``progress=True``);
``--quiet`` / ``progress=False`` turns both off.
"""

from __future__ import annotations

import io
import os
import sys
import time
from typing import IO, Any

__all__ = ["FIRST_LINE_AFTER_S", "LINE_EVERY_S", "LineProgress", "NoProgress", "progress_bar", "interactive"]

FIRST_LINE_AFTER_S = 2.0
LINE_EVERY_S = 30.0


def interactive(stream: IO[str] | None = None) -> bool:
    """Whether bars can be redrawn: a terminal, or a Jupyter kernel (tqdm.auto draws a widget)."""
    stream = sys.stderr if stream is None else stream
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        if not (isatty and isatty()):
            return False
    except ValueError:  # a closed stream
        return False
    try:  # a terminal of no width (some pty wrappers) draws no bar: lines there
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return True


class NoProgress:
    """A phase that shows nothing (``--quiet``, or a rank other than 0)."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LineProgress(NoProgress):
    """A phase as plain lines: ``desc: 1,200/5,000 img (24%), 41 s`` at most every ``every`` seconds
    once ``first`` seconds have passed, and ``desc: done, 5,000 img in 95 s`` at the end (when a
    line was printed, or the phase took longer than ``first``)."""

    def __init__(self, total: int | None, desc: str, unit: str, stream: IO[str] | None = None,
                 first: float | None = None, every: float | None = None, clock: Any = time.monotonic) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream
        self.first = FIRST_LINE_AFTER_S if first is None else first
        self.every = LINE_EVERY_S if every is None else every
        self.clock = clock
        self.n = 0
        self.started = clock()
        self.last: float | None = None
        self.closed = False

    def _say(self, text: str) -> None:
        print(f"{self.desc}: {text}", file=self.stream or sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        due = self.first if self.last is None else self.last - self.started + self.every
        if now - self.started >= due:
            self.last = now
            of = f"/{self.total:,}" if self.total else ""
            pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
            self._say(f"{self.n:,}{of} {self.unit}{pct}, {now - self.started:.0f} s")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        took = self.clock() - self.started
        if self.last is not None or took >= self.first:
            self._say(f"done, {self.n:,} {self.unit} in {took:.1f} s")


def progress_bar(total: int | None, desc: str, unit: str = "img", enabled: bool = True,
                 stream: IO[str] | None = None) -> Any:
    """The progress of one phase: an object with ``update(n)`` and ``close()`` (and a context
    manager): a tqdm bar when the output is interactive, :class:`LineProgress` when it is not,
    :class:`NoProgress` when ``enabled`` is false."""
    if not enabled:
        return NoProgress()
    if interactive(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False, file=stream)
    return LineProgress(total, desc, unit, stream)
