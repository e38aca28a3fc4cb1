"""Device maps: which device each module and tensor of a model goes to, in accelerate's format.

:func:`compute_device_map` asks accelerate (``get_balanced_memory`` + ``infer_auto_device_map``,
``no_split_module_classes`` = the transformer blocks, so a block never straddles two devices) for
a map within per-device budgets, then puts the small "glue" tensors that are read outside their
own submodule (class token, position embeddings, text projection) where their consumer runs.
The helpers here read a map: the device of a module or tensor, where an offloaded module runs,
and the map collapsed into block ranges for display.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from torch import nn

from evalkit.models.precision import PlacementError, Precision, parse_precision
from evalkit.models.quantize import NO_SPLIT_MODULES, special_dtypes

__all__ = [
    "compute_device_map",
    "collapse_device_map",
    "device_of",
    "covered_whole",
    "main_device",
    "execution_device",
    "fix_glue",
    "quiet_accelerate",
]

# Small tensors used outside their own submodule's forward, and the module that consumes them:
# when their parent is split over devices they must sit where that module runs.
_GLUE = {
    "visual.cls_token": "visual.patch_embed",
    "visual.pos_embed": "visual.patch_embed",
    "text.positional_embedding": "text.token_embedding",
    "text.text_projection": "text.ln_final",
    "logit_scale": "",
}
_BLOCK_KEY = re.compile(r"^(visual\.blocks|text\.transformer\.resblocks)\.(\d+)$")


@contextlib.contextmanager
def quiet_accelerate(name: str = "accelerate.utils.modeling") -> Iterator[None]:
    """accelerate's logger ``name`` held at ERROR: planning sizes name GPUs this machine does not
    have, and accelerate warns about each."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def device_of(name: str, device_map: Mapping[str, int | str]) -> int | str:
    """The device of a module or tensor: its own entry or its nearest ancestor's."""
    probe = name
    while True:
        if probe in device_map:
            return device_map[probe]
        if not probe:
            raise PlacementError(f"the device map does not place {name}")
        probe = probe.rsplit(".", 1)[0] if "." in probe else ""


def covered_whole(module: str, device_map: Mapping[str, int | str]) -> bool:
    """Whether ``module`` sits whole on one device (it or an ancestor has an entry of its own)."""
    probe = module
    while True:
        if probe in device_map:
            return True
        if not probe:
            return False
        probe = probe.rsplit(".", 1)[0] if "." in probe else ""


def main_device(devices: Iterable[int | str]) -> int | str:
    """The first GPU among ``devices`` (a device map's values or the budgets' keys), else the CPU:
    where inputs go and offloaded modules run."""
    gpus = sorted({d for d in devices if isinstance(d, int)})
    return gpus[0] if gpus else "cpu"


def execution_device(device: int | str, main: int | str) -> int | str:
    """Where a module on ``device`` runs: offloaded modules run on the main device."""
    return main if device in ("cpu", "disk") else device


def fix_glue(device_map: dict[str, int | str], main: int | str) -> dict[str, int | str]:
    """Put the small tensors read outside their own submodule (class token, position
    embeddings, text projection) where their consumer runs, whenever their parent is split."""
    for tensor, consumer in _GLUE.items():
        parent = tensor.rsplit(".", 1)[0] if "." in tensor else ""
        if covered_whole(parent, device_map):
            continue
        if consumer:
            want = execution_device(device_of(consumer, device_map), main)
        else:
            want = main
        device_map[tensor] = want
    return device_map


def compute_device_map(
    model: nn.Module,
    budgets: Mapping[int | str, int],
    precision: str | Precision,
    *,
    reserve: Mapping[int | str, int] | None = None,
) -> dict[str, int | str]:
    """accelerate's device map for ``model`` (on meta) within ``budgets`` less ``reserve``.

    Several GPUs are balanced (``get_balanced_memory``); ``VisionBlock``/``TextBlock`` are never
    split; whatever does not fit goes to ``"cpu"`` (if it has a budget) and then ``"disk"``.
    """
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    spec = parse_precision(precision)
    reserve = reserve or {}
    usable = {d: max(0, int(b) - int(reserve.get(d, 0))) for d, b in budgets.items()}
    kwargs: dict[str, Any] = {
        "no_split_module_classes": NO_SPLIT_MODULES,
        "dtype": spec.dtype,
        "special_dtypes": special_dtypes(model, spec) or None,
    }
    with quiet_accelerate():
        if sum(isinstance(d, int) for d in usable) > 1:
            usable = get_balanced_memory(model, max_memory=dict(usable), **kwargs)
        device_map = infer_auto_device_map(model, max_memory=dict(usable), **kwargs)
    return fix_glue(dict(device_map), main_device(budgets))


def collapse_device_map(device_map: Mapping[str, int | str]) -> list[tuple[int | str, list[str]]]:
    """``[(device, ["visual.cls_token", "visual.blocks.0-23", ...]), ...]`` in model order:
    consecutive blocks on one device become one range."""
    rows: list[tuple[int | str, list[str]]] = []
    for name, device in device_map.items():
        label = name or "(whole model)"
        if not rows or rows[-1][0] != device:
            rows.append((device, []))
        items = rows[-1][1]
        m = _BLOCK_KEY.match(name)
        prev = _BLOCK_KEY.match(items[-1].split("-")[0]) if items else None
        if m and prev and prev.group(1) == m.group(1):
            last = int(items[-1].rsplit("-", 1)[-1]) if "-" in items[-1] else int(prev.group(2))
            if int(m.group(2)) == last + 1:
                items[-1] = f"{prev.group(1)}.{prev.group(2)}-{m.group(2)}"
                continue
        items.append(label)
    return rows
