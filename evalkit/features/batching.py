"""Throughput knobs of the model loop: ``--batch-size auto``, pinned memory with non-blocking
copies on CUDA, and the loader's prefetch depth (``--prefetch N``).

``--batch-size auto`` (:func:`resolve_batch_size`, :func:`resolve_for_views`):

* **on CUDA** the largest batch that fits is searched for by running the view's own per-batch
  step (normalise, forward, pool) on a synthetic batch of the view's per-sample tensor shape:
  batch 1, 2, 4, ... up to :data:`MAX_AUTO_BATCH` until one runs out of memory, then bisection
  between the last that fit and the first that did not, to within 1/32 of the answer (exactly
  below 64). Between tries the allocator's cache is emptied. The batch used is
  :data:`SAFETY_MARGIN` (90 %) of the largest that fit, rounded down: real batches meet a
  fragmented allocator and the loader's own tensors. An error that is not an out-of-memory
  error is raised as it is. The largest batch that fit is remembered in
  ``<cache dir>/batch_sizes.json``, keyed by model fingerprint, the view's per-batch step
  (``batch_key``) and per-sample tensor shape, and each GPU's name and total memory (and the
  device map of a model split over GPUs), so the search runs once per model, view and device.
  Memory other processes hold is not part of the key: delete the file to search again.
* **on the CPU** (and any device but CUDA) no search: :data:`CPU_DEFAULT_BATCH` (64) images,
  or :data:`CPU_LARGE_MODEL_BATCH` (8) for a model of more than a billion parameters. A CPU
  forward is compute-bound from a few images on, so a bigger batch is not faster; it only
  holds more activations in RAM (EVA-CLIP-18B's tower in fp32: about 85 MB per image).

Pinned memory and prefetch (:func:`loader_kwargs`, :func:`prefetch_depth`, :func:`to_device`):
a model on a CUDA device gets its batches in page-locked host memory (``pin_memory=True``), so
the host-to-device copy is a DMA that runs asynchronously (``non_blocking=True``) while the
host goes on with the next batch. ``--prefetch N`` is how many batches are prepared ahead of
the model: the background thread's queue depth when there are no loader workers, and with W
workers ``prefetch_factor = ceil(N / W)`` (torch counts per worker, and every worker holds at
least one). Unset, torch's and the background thread's default of 2 stays.

Layer: features (beside :mod:`evalkit.features.embed`, which calls it; it reads the cache folder).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from evalkit.errors import EvalkitError, OptionError
from evalkit.features.cache import default_cache_dir
from evalkit.models.precision import PlacementError
from evalkit.results import atomic_write_text
from evalkit.views.base import Noted, View

__all__ = [
    "AUTO",
    "CPU_DEFAULT_BATCH",
    "CPU_LARGE_MODEL_BATCH",
    "LARGE_MODEL_PARAMETERS",
    "MAX_AUTO_BATCH",
    "SAFETY_MARGIN",
    "DEFAULT_PREFETCH",
    "MEMORY_FILE",
    "BatchSize",
    "parse_batch_size",
    "cpu_default_batch",
    "is_cuda_oom",
    "GpuMemoryError",
    "as_memory_error",
    "largest_fitting_batch",
    "resolve_batch_size",
    "resolve_for_views",
    "uses_pinned_memory",
    "loader_kwargs",
    "prefetch_depth",
    "to_device",
]

log = logging.getLogger(__name__)

AUTO = "auto"
CPU_DEFAULT_BATCH = 64
CPU_LARGE_MODEL_BATCH = 8
LARGE_MODEL_PARAMETERS = 10**9
#: The search's upper bound: GPU throughput of CLIP towers stops growing long before, and every
#: try near the bound is a forward over that many images.
MAX_AUTO_BATCH = 1024
SAFETY_MARGIN = 0.9
DEFAULT_PREFETCH = 2
MEMORY_FILE = "batch_sizes.json"
#: Samples of a unit tried, in order, for one that decodes, to learn a view's tensor shape.
PROBE_SAMPLES = 32


class BatchSize(NamedTuple):
    """A resolved batch size and how it was chosen: ``given`` (a number), ``cpu-default``,
    ``searched`` (on CUDA, now), ``remembered`` (on CUDA, by an earlier search), ``fallback``
    (CUDA, but no sample decoded to size a search: :data:`CPU_DEFAULT_BATCH`)."""

    batch_size: int
    how: str


def parse_batch_size(value: str | int) -> int | str:
    """``"auto"`` or a whole number >= 1 (what ``--batch-size`` takes); anything else raises
    :class:`~evalkit.errors.OptionError` (a ValueError) saying so."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or (isinstance(value, float) and value != n):
        raise OptionError(f"--batch-size: expected 'auto' or a whole number >= 1, got {value!r}")
    return n


def _parameters(encoder: Any) -> int:
    total = 0
    modules = [getattr(encoder, "model", None), *(t.module for t in getattr(encoder, "towers", {}).values())]
    for module in {id(m): m for m in modules if m is not None}.values():
        total += sum(p.numel() for p in module.parameters())
    return total


def cpu_default_batch(encoder: Any) -> int:
    """The batch of ``--batch-size auto`` off CUDA: 64, or 8 for a model over 1e9 parameters."""
    return CPU_LARGE_MODEL_BATCH if _parameters(encoder) > LARGE_MODEL_PARAMETERS else CPU_DEFAULT_BATCH


def is_cuda_oom(error: BaseException) -> bool:
    """Whether ``error`` is a GPU running out of memory: torch's ``OutOfMemoryError``, or the
    plain RuntimeError cuBLAS/cuDNN allocation failures arrive as."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text.lower() or "ALLOC_FAILED" in text)


class GpuMemoryError(EvalkitError, RuntimeError):
    """A batch that did not fit in GPU memory at the batch size the run asked for: an option to
    change, not a bug (``--batch-size auto`` searches for the largest batch that fits)."""


def as_memory_error(error: BaseException) -> BaseException:
    """``error`` as a :class:`GpuMemoryError` saying what to change when it is a GPU running out of
    memory (:func:`is_cuda_oom`); any other error as it is."""
    if isinstance(error, EvalkitError) or not is_cuda_oom(error):
        return error
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return GpuMemoryError(f"out of GPU memory ({first[:200]}); lower --batch-size, or use --batch-size auto")


def _release_cuda(after_oom: bool) -> None:
    if not torch.cuda.is_initialized():
        return  # no device memory to give back (the fakes of the tests)
    if after_oom:
        gc.collect()  # device tensors a caught exception's frames held in reference cycles
    torch.cuda.empty_cache()


def largest_fitting_batch(fits: Callable[[int], bool], max_batch: int = MAX_AUTO_BATCH) -> int:
    """The largest batch ``b <= max_batch`` with ``fits(b)``, assuming a batch that fits makes
    every smaller one fit; 0 when not even 1 does. Powers of two upward, then bisection between
    the last fit and the first miss until the gap is at most 1/32 of the last fit (so the answer
    is exact below 64 and within 1/32 above)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    lo, hi, b = 0, max_batch + 1, 1
    while b <= max_batch:
        if not fits(b):
            hi = b
            break
        lo, b = b, b * 2
    else:
        if lo == max_batch:
            return lo
    while hi - lo > max(1, lo // 32):
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _cuda_indices(encoder: Any) -> list[int]:
    """The GPUs a model runs on: those of its device map, else its device's; [] off CUDA."""
    device_map = getattr(encoder, "device_map", None) or {}
    gpus = sorted({d for d in device_map.values() if isinstance(d, int)})
    if gpus:
        return gpus
    device = torch.device(str(encoder.device))
    return [device.index or 0] if device.type == "cuda" else []


def _cuda_device_info(index: int) -> tuple[str, int]:
    props = torch.cuda.get_device_properties(index)
    return props.name, int(props.total_memory)


def _memory_key(encoder: Any, view: View, shape: Sequence[int], dtype: torch.dtype,
                devices: Sequence[tuple[int, str, int]]) -> str:
    device_map = getattr(encoder, "device_map", None) or {}
    parts = [encoder.fingerprint, repr(view.batch_key), list(shape), str(dtype),
             [list(d) for d in devices], sorted((k, str(v)) for k, v in device_map.items())]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def _read_memory(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable (%s); batch sizes are searched again and the file rewritten", path, e)
        return {}
    if not isinstance(data, dict):
        log.warning("%s: not a JSON object; batch sizes are searched again and the file rewritten", path)
        return {}
    return data


def _synthetic_forward(encoder: Any, view: View, shape: Sequence[int], dtype: torch.dtype,
                       gpus: Sequence[int]) -> Callable[[int], None]:
    """A forward of ``b`` synthetic samples through ``view``'s per-batch step, as the loop runs it."""

    def forward(b: int) -> None:
        # what the memory depends on is the shape; zeros are the cheapest integer batch to make
        batch = torch.randn((b, *shape)).to(dtype) if dtype.is_floating_point else torch.zeros((b, *shape), dtype=dtype)
        with torch.inference_mode():
            out = view.embed(encoder, batch)
        del out, batch
        if torch.cuda.is_available():
            for g in gpus:  # an asynchronous failure surfaces here, inside the caller's try
                torch.cuda.synchronize(g)

    return forward


def resolve_batch_size(
    value: str | int,
    encoder: Any,
    view: View,
    sample_shape: Sequence[int],
    *,
    sample_dtype: torch.dtype = torch.uint8,
    cache_dir: str | Path | None = None,
    remember: bool = True,
    forward: Callable[[int], Any] | None = None,
    is_oom: Callable[[BaseException], bool] = is_cuda_oom,
    device_info: Callable[[int], tuple[str, int]] | None = None,
    max_batch: int = MAX_AUTO_BATCH,
    margin: float = SAFETY_MARGIN,
) -> BatchSize:
    """The batch size for ``value`` (``--batch-size``): a number as it is; ``"auto"`` as the
    module docstring says. ``sample_shape``/``sample_dtype``: one sample's tensor as the view's
    per-sample step makes it (``(3, 224, 224)``, uint8 for an image).

    ``cache_dir`` (default: evalkit's cache folder) holds the memory of earlier searches;
    ``remember=False`` neither reads nor writes it. ``forward(b)`` (default: the view's
    per-batch step on ``b`` synthetic samples), ``is_oom`` and ``device_info(index) -> (name,
    total bytes)`` are there so the CUDA path can be exercised without CUDA. Raises
    :class:`~evalkit.models.precision.PlacementError` when not even one sample fits."""
    chosen = parse_batch_size(value)
    if chosen != AUTO:
        return BatchSize(int(chosen), "given")
    if not 0 < margin <= 1:
        raise ValueError(f"margin must be in (0, 1], got {margin}")
    gpus = _cuda_indices(encoder)
    if not gpus:
        return BatchSize(cpu_default_batch(encoder), "cpu-default")
    info = device_info or _cuda_device_info
    devices = [(i, *info(i)) for i in gpus]
    shape = [int(s) for s in sample_shape]
    key = _memory_key(encoder, view, shape, sample_dtype, devices)
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / MEMORY_FILE
    where = ", ".join(f"cuda:{i} ({name}, {total / 2**30:.0f} GiB)" for i, name, total in devices)
    if remember:
        record = _read_memory(path).get(key)
        largest = record.get("largest") if isinstance(record, dict) else None
        if isinstance(largest, int) and largest >= 1:
            return BatchSize(max(1, math.floor(largest * margin)), "remembered")
    run = forward or _synthetic_forward(encoder, view, shape, sample_dtype, gpus)

    def fits(b: int) -> bool:
        oom = False
        try:
            run(b)
        except Exception as e:
            if not is_oom(e):
                raise
            oom = True
        _release_cuda(oom)  # outside the handler: the exception and what its frames held are gone
        return not oom

    started = time.perf_counter()
    largest = largest_fitting_batch(fits, max_batch)
    if largest < 1:
        raise PlacementError(
            f"--batch-size auto: not even one sample of view {getattr(view, 'identity', view)} fits on {where} "
            f"next to {getattr(encoder, 'name', 'the model')}; free GPU memory, add devices (--devices) or use "
            f"a smaller precision (--precision fp16/int8)"
        )
    batch = max(1, math.floor(largest * margin))
    log.info("--batch-size auto: %d (%d%% of the largest batch that fit, %d, on %s; searched in %.1f s)",
             batch, round(margin * 100), largest, where, time.perf_counter() - started)
    if remember:
        memory = _read_memory(path)  # again: another process may have added entries meanwhile
        memory[key] = {
            "largest": largest,
            "model": getattr(encoder, "name", ""),
            "fingerprint": encoder.fingerprint,
            "view": getattr(view, "identity", ""),
            "sample_shape": shape,
            "sample_dtype": str(sample_dtype),
            "devices": [{"index": i, "name": name, "total_memory": total} for i, name, total in devices],
            "max_batch": max_batch,
            "searched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(memory, indent=1, sort_keys=True) + "\n")
        except OSError as e:  # remembering saves the next run a search; this run has its batch size
            log.warning("--batch-size auto: cannot remember the search in %s: %s", path, e.strerror or e)
    return BatchSize(batch, "searched")


def resolve_for_views(
    value: str | int,
    encoder: Any,
    views: Mapping[str, View],
    samples: Iterable[tuple[str, Callable[[], Any], Any]],
    **kwargs: Any,
) -> BatchSize:
    """:func:`resolve_batch_size` for the views one pass runs together (best-of-both's crop and
    squash): their tensor shapes are learnt from the first of ``samples`` (a unit's ``(key,
    load, label)``, see :meth:`evalkit.data.sources.Unit.samples`) that every view's per-sample
    step takes, among the first :data:`PROBE_SAMPLES`; the smallest of their batch sizes is
    used. Nothing is decoded unless the search runs (``auto`` on CUDA)."""
    chosen = parse_batch_size(value)
    if chosen != AUTO:
        return BatchSize(int(chosen), "given")
    if not _cuda_indices(encoder):
        return BatchSize(cpu_default_batch(encoder), "cpu-default")
    names = list(views)
    tensors: list[torch.Tensor] | None = None
    for i, (key, load, _label) in enumerate(samples):
        if i >= PROBE_SAMPLES:
            break
        try:
            loaded = load()
            outs = [views[n].sample(loaded) for n in names]
        except Exception as e:  # the loop reports it; here it only cannot size the search
            log.debug("--batch-size auto: sample %s does not decode (%s); trying the next", key, e)
            continue
        tensors = [o.tensor if isinstance(o, Noted) else o for o in outs]
        break
    if tensors is None:
        log.warning("--batch-size auto: none of the first %d samples decodes, so no search; batch %d",
                    PROBE_SAMPLES, CPU_DEFAULT_BATCH)
        return BatchSize(CPU_DEFAULT_BATCH, "fallback")
    seen: dict[Hashable, BatchSize] = {}
    for name, t in zip(names, tensors, strict=True):
        step = (repr(views[name].batch_key), tuple(t.shape), t.dtype)
        if step not in seen:  # crop and squash of one model: one search
            seen[step] = resolve_batch_size(AUTO, encoder, views[name], tuple(t.shape), sample_dtype=t.dtype, **kwargs)
    return min(seen.values(), key=lambda r: r.batch_size)


# -- pinned memory, non-blocking copies, prefetch ----------------------------------------------


def uses_pinned_memory(device: str | torch.device) -> bool:
    """Whether batches for a model on ``device`` go through page-locked memory: CUDA only."""
    return torch.device(str(device)).type == "cuda" and torch.cuda.is_available()


def _check_prefetch(prefetch: int | None) -> None:
    if prefetch is not None and (isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1):
        raise OptionError(f"--prefetch: expected a whole number >= 1 (batches prepared ahead), got {prefetch!r}")


def loader_kwargs(device: str | torch.device, num_workers: int, prefetch: int | None = None) -> dict[str, Any]:
    """Keyword arguments for the DataLoader that feeds a model on ``device``: ``pin_memory`` on
    CUDA; with workers and ``prefetch`` given, ``prefetch_factor = ceil(prefetch / num_workers)``.
    ``persistent_workers`` stays off: each unit gets a loader of its own, iterated once, so
    there is nothing for workers to persist across."""
    _check_prefetch(prefetch)
    if num_workers < 0:
        raise OptionError(f"num_workers must be >= 0, got {num_workers}")
    kwargs: dict[str, Any] = {"pin_memory": uses_pinned_memory(device)}
    if num_workers > 0 and prefetch is not None:
        kwargs["prefetch_factor"] = max(1, math.ceil(prefetch / num_workers))
    return kwargs


def prefetch_depth(prefetch: int | None = None) -> int:
    """Batches the background thread prepares ahead when there are no loader workers."""
    _check_prefetch(prefetch)
    return DEFAULT_PREFETCH if prefetch is None else prefetch


def to_device(batch: torch.Tensor, device: str | torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``batch`` on ``device`` (in ``dtype``): a copy from pinned host memory to a CUDA device is
    non-blocking (the host does not wait for it; later work on the device's stream does), any
    other copy is an ordinary one. A tensor already there, in that dtype, is returned as it is."""
    target = torch.device(str(device))
    non_blocking = target.type == "cuda" and batch.device.type == "cpu" and batch.is_pinned()
    return batch.to(target, dtype, non_blocking=non_blocking)
