"""Where a run's time goes: clocks around an encoder's forward calls, for the benchmarks (and the
few tests that count forward calls; tests/conftest.py puts this folder on the path).

    from clocks import TimedEncoder

    timed = TimedEncoder(models.load("eva-clip-demo"))
    result = task_families.get(spec.family)().run(spec, timed, ctx)   # or evaluate(...)'s parts
    print(timed.image.wall, timed.image.items, timed.text.wall)

:class:`TimedEncoder` wraps an :class:`~evalkit.models.encoder.Encoder` (composition: the model,
tokenizer and settings are the wrapped encoder's, nothing is copied) and is used wherever an
Encoder is: its forward methods (``encode_image``, ``encode_text``, ``encode_text_prefixes``,
``encode_text_suffix``) run the wrapped encoder's inside a :class:`Clock`; every other attribute
is read from the wrapped encoder. To change a setting (``share_text_prefix``, ``tokenizer``), set
it on the encoder you wrap (a ``dataclasses.replace`` copy, to leave the original alone).

A clock records wall time (``time.perf_counter``) and CPU time (``time.process_time``: this
process, all its threads, so a background loading thread working during a forward counts too),
the number of calls, and the number of items (images, prompts) they were given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalkit.models.encoder import Encoder

__all__ = ["Clock", "TimedEncoder", "best_of", "conditions", "conditions_line", "proc_status_kib", "reset_peak_rss"]


def best_of(fn: Any, repeat: int, *, warmup: bool = False, sync: Any = None) -> tuple[float, Any]:
    """The fastest of ``repeat`` calls of ``fn`` in wall seconds, and the last call's output.
    ``warmup``: one untimed call first; ``sync``: called after each call, inside the timing (a
    CUDA synchronise, so queued work is counted)."""
    if warmup:
        fn()
        if sync is not None:
            sync()
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        if sync is not None:
            sync()
        best = min(best, time.perf_counter() - t)
    return best, out


def conditions(start: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a benchmark's figures were measured under, to be stated beside them: torch's intra-op
    threads, the cores this process may run on, the load average (1, 5, 15 min), versions.

    The load matters most on a shared machine: torch's many small threaded operations wait on each
    other when other processes hold the cores (``benchmarks/bench_pointops.py``'s FPS went from
    10.6x the NumPy loop on a quiet machine to 0.4x at load 2-3 with 2 threads). Call it once
    the benchmark has set its threads, and again at the end with the first result as ``start``:
    that adds ``load_average_end`` (and ``threads_end`` where the thread count changed)."""
    import os
    import platform

    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    now = {"threads": torch.get_num_threads(), "cpus": cpus,
           "load_average": [round(x, 2) for x in os.getloadavg()],
           "python": platform.python_version(), "torch": torch.__version__}
    if start is None:
        return now
    out = {**start, "load_average_end": now["load_average"]}
    if now["threads"] != start["threads"]:
        out["threads_end"] = now["threads"]
    return out


def conditions_line(c: dict[str, Any]) -> str:
    """One printable line of :func:`conditions`."""
    line = (f"conditions: {c['threads']} torch thread{'s' if c['threads'] != 1 else ''}, {c['cpus']} cores, "
            f"load average {c['load_average'][0]:.2f} (1 min; {c['load_average'][1]:.2f} over 5 min)")
    if "load_average_end" in c:
        line += f" at the start, {c['load_average_end'][0]:.2f} at the end"
    if "threads_end" in c:
        line += f"; {c['threads_end']} threads at the end"
    return line


def proc_status_kib(field: str) -> int:
    """A memory figure of this process from ``/proc/self/status`` in KiB (Linux): ``VmRSS`` (now),
    ``VmHWM`` (the peak since start or since :func:`reset_peak_rss`)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (``VmHWM``) to its current RSS (Linux >= 4.0), so a
    peak read afterwards is the next step's alone; False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclasses.dataclass
class Clock:
    """Wall and CPU seconds spent inside :meth:`measure` blocks, their count, and their items."""

    wall: float = 0.0
    cpu: float = 0.0
    calls: int = 0
    items: int = 0

    @contextlib.contextmanager
    def measure(self, items: int = 0) -> Iterator[None]:
        """Time the block; ``items``: how many inputs it handles (a batch's size)."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu
            self.calls += 1
            self.items += items

    def copy(self) -> Clock:
        """The figures so far (subtract two copies for the time of one step)."""
        return dataclasses.replace(self)

    def __sub__(self, other: Clock) -> Clock:
        return Clock(self.wall - other.wall, self.cpu - other.cpu, self.calls - other.calls, self.items - other.items)


class TimedEncoder:
    """An encoder whose forward calls are clocked: ``image`` (image tower; items = images) and
    ``text`` (text tower, whole prompts and shared-prefix pieces alike; items = prompts)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.image = Clock()
        self.text = Clock()

    def __getattr__(self, name: str) -> Any:  # everything but the forward: the wrapped encoder's
        if name == "encoder":  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self.encoder, name)

    def __repr__(self) -> str:
        return f"TimedEncoder({self.encoder.name!r}, image={self.image}, text={self.text})"

    def encode_image(self, images: Any) -> Any:
        with self.image.measure(int(images.shape[0])):
            return self.encoder.encode_image(images)

    def encode(self, modality: str, batch: Any) -> Any:
        """A tower's forward (the one entry every view may use); the image tower's is clocked."""
        if modality != "image":
            return self.encoder.encode(modality, batch)
        with self.image.measure(int(batch.shape[0])):
            return self.encoder.encode(modality, batch)

    def encode_text(self, tokens: Any) -> Any:
        with self.text.measure(int(tokens.shape[0])):
            return self.encoder.encode_text(tokens)

    def encode_text_prefixes(self, tokens: Any) -> Any:
        with self.text.measure():  # the prefixes are not prompts: counted with their suffixes
            return self.encoder.encode_text_prefixes(tokens)

    def encode_text_suffix(self, prefixes: Any, which: Any, *rest: Any) -> Any:
        with self.text.measure(int(which.shape[0])):
            return self.encoder.encode_text_suffix(prefixes, which, *rest)
