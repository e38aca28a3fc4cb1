"""Devices and their memory budgets: ``--devices``, ``--max-memory``, sizes, and what each device may hold.

``--devices`` names real devices (``cpu``, ``auto``, ``0,1``, ``cuda:1``) or, for ``evalkit plan``
only, hypothetical ones (``2x40GiB``); ``--max-memory`` caps them. :func:`device_budgets` turns
both into accelerate's ``max_memory`` convention (GPU indices as ints, ``"cpu"``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from evalkit.models.precision import PlacementError

__all__ = [
    "HOST_HEADROOM",
    "DeviceSpec",
    "parse_devices",
    "parse_size",
    "parse_max_memory",
    "format_bytes",
    "device_budgets",
    "device_label",
]

HOST_HEADROOM = 2**30  # left to the OS and the rest of the process when the CPU holds weights

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_size(text: str | int) -> int:
    """``"40GiB"`` -> bytes (GiB = 2**30, GB = 10**9; a bare number is bytes, unit case ignored)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m:
        raise PlacementError(f"{text!r} is not a memory size; write e.g. 40GiB, 80GB or 512MiB")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])


def format_bytes(n: float) -> str:
    """Decimal GB, the unit checkpoint sizes are quoted in (36.7 GB for the 18B in fp16)."""
    if abs(n) >= 10**9:
        return f"{n / 1e9:.2f} GB"
    if abs(n) >= 10**6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB"


@dataclass(frozen=True)
class DeviceSpec:
    """What ``--devices`` asked for.

    ``gpus``: CUDA indices; ``cpu``: the CPU is the compute device; ``auto``: every visible GPU,
    else the CPU; ``sizes``: hypothetical devices (``2x40GiB``) for planning, never for loading.
    """

    text: str
    gpus: tuple[int, ...] = ()
    cpu: bool = False
    auto: bool = False
    sizes: tuple[int, ...] | None = None

    @property
    def planning(self) -> bool:
        return self.sizes is not None


_COUNT_X_SIZE = re.compile(r"^(\d+)\s*[x×*]\s*(.+)$", re.IGNORECASE)


def parse_devices(text: str) -> DeviceSpec:
    """``cpu``, ``auto``, ``cuda``, ``cuda:1``, ``0,1,2,3``, ``cuda:0,cuda:1``, or planning sizes
    ``2x40GiB`` / ``80GiB,40GiB`` (a hypothetical device of each size)."""
    raw = text
    text = text.strip().lower()
    if not text:
        raise PlacementError("--devices is empty; give cpu, auto, 0,1,... or sizes like 2x40GiB")
    if text == "cpu":
        return DeviceSpec(raw, cpu=True)
    if text == "auto":
        return DeviceSpec(raw, auto=True)
    if text in ("cuda", "gpu"):
        return DeviceSpec(raw, gpus=(0,))
    m = _COUNT_X_SIZE.match(text)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise PlacementError(f"--devices {raw}: the device count must be at least 1")
        return DeviceSpec(raw, sizes=(parse_size(m.group(2)),) * n)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    gpus: list[int] = []
    sizes: list[int] = []
    for part in parts:
        index = part.removeprefix("cuda:")
        if index.isdigit():
            gpus.append(int(index))
        elif part == "cpu":
            raise PlacementError(f"--devices {raw}: 'cpu' cannot be mixed with GPUs; CPU offload is automatic "
                                 "when the GPUs are short (limit it with --max-memory cpu=SIZE)")
        else:
            try:
                sizes.append(parse_size(part))
            except PlacementError:
                raise PlacementError(
                    f"--devices {raw}: {part!r} is neither a GPU index (0, cuda:1) nor a size (40GiB)"
                ) from None
    if gpus and sizes:
        raise PlacementError(f"--devices {raw}: give GPU indices or planning sizes, not both")
    if sizes:
        return DeviceSpec(raw, sizes=tuple(sizes))
    if len(set(gpus)) != len(gpus):
        raise PlacementError(f"--devices {raw}: a GPU is named twice")
    return DeviceSpec(raw, gpus=tuple(gpus))


def parse_max_memory(text: str | Mapping[Any, Any] | None) -> dict[int | str, int]:
    """``--max-memory``: ``0=38GiB,1=38GiB,cpu=64GiB`` (per device) or ``38GiB`` (every GPU, or the
    CPU when it is the compute device; stored under the key ``"*"``)."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        items = list(text.items())
    else:
        items = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if "=" in part:
                key, value = (s.strip() for s in part.split("=", 1))
                items.append((key, value))
            else:
                items.append(("*", part))
    out: dict[int | str, int] = {}
    for key, value in items:
        k = str(key).strip().lower().removeprefix("cuda:")
        if k.isdigit():
            dev: int | str = int(k)
        elif k in ("cpu", "disk", "*"):
            dev = k
        else:
            raise PlacementError(f"--max-memory: unknown device {key!r}; use GPU indices, cpu or disk")
        out[dev] = parse_size(value)
    return out


def _gpu_free(index: int) -> int:
    free, _total = torch.cuda.mem_get_info(index)
    return int(free)


def host_memory_available() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def device_budgets(
    spec: DeviceSpec,
    max_memory: Mapping[int | str, int] | None = None,
    *,
    cuda_count: int | None = None,
    gpu_free: Callable[[int], int] | None = None,
    host_available: Callable[[], int] | None = None,
) -> dict[int | str, int]:
    """Bytes each device may hold, in accelerate's convention (GPU indices as ints, ``"cpu"``).

    Real GPUs: their free memory; the CPU: available RAM less 1 GiB (as an offload store when
    GPUs are used, as the compute device otherwise). Planning sizes: those sizes and no CPU,
    unless ``--max-memory cpu=...`` adds one. ``--max-memory`` replaces any measured figure.
    The three callables exist so the CUDA paths can be exercised without CUDA.
    """
    max_memory = dict(max_memory or {})
    everyone = max_memory.pop("*", None)
    cuda_count = torch.cuda.device_count() if cuda_count is None else cuda_count
    gpu_free = gpu_free or _gpu_free
    host_available = host_available or host_memory_available
    budgets: dict[int | str, int] = {}
    if spec.planning:
        assert spec.sizes is not None
        budgets.update(enumerate(spec.sizes))
    else:
        gpus = spec.gpus
        if spec.auto:
            gpus = tuple(range(cuda_count))
        if gpus:
            if cuda_count == 0:
                raise PlacementError(
                    f"--devices {spec.text}: CUDA is not available on this machine; use --devices cpu "
                    f"(or plan for GPUs with `evalkit plan --devices 2x40GiB`)"
                )
            absent = [g for g in gpus if g >= cuda_count]
            if absent:
                raise PlacementError(
                    f"--devices {spec.text}: GPU {absent[0]} does not exist; {cuda_count} visible "
                    f"(0..{cuda_count - 1}; CUDA_VISIBLE_DEVICES renumbers them)"
                )
            for g in gpus:
                budgets[g] = gpu_free(g)
            budgets["cpu"] = max(0, host_available() - HOST_HEADROOM)
        else:
            budgets["cpu"] = max(0, host_available() - HOST_HEADROOM)
    gpu_keys = [k for k in budgets if isinstance(k, int)]
    if everyone is not None:
        for k in gpu_keys or ["cpu"]:
            budgets[k] = everyone
    for k, v in max_memory.items():
        if isinstance(k, int) and k not in budgets:
            raise PlacementError(f"--max-memory names GPU {k}, which --devices {spec.text} does not use")
        budgets[k] = v
    return budgets


def device_label(device: int | str) -> str:
    """accelerate's device (``0``, ``"cpu"``, ``"disk"``) as torch names it: ``cuda:0``, ``cpu``, ``disk``."""
    return f"cuda:{device}" if isinstance(device, int) else str(device)
