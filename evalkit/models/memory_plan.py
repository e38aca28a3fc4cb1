"""The memory plan: what an EVA-CLIP model costs at a precision, where it would go, and whether it fits.

No weights are needed: the model is built on the ``meta`` device (:func:`empty_model`), its
weights sized at every precision (quantisation statistics included, :func:`weight_bytes`), the
peak activation memory of one forward pass estimated for the batch size
(:func:`activation_bytes`) and reserved on every device holding blocks, and the device map
computed within the budgets (:mod:`evalkit.models.device_map`). ``evalkit plan`` prints the
:class:`MemoryPlan`; the streaming loader (:mod:`evalkit.models.streaming`) places a model by the
same plan, so the two cannot disagree.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from evalkit.models.device_map import collapse_device_map, compute_device_map, device_of, main_device
from evalkit.models.devices import (
    DeviceSpec,
    device_budgets,
    device_label,
    format_bytes,
    parse_devices,
    parse_max_memory,
)
from evalkit.models.eva_clip import EvaClip, EvaClipConfig, count_parameters
from evalkit.models.precision import PlacementError, Precision, parse_precision
from evalkit.models.quantize import NO_SPLIT_MODULES, quant_state_bytes, quantized_weights

__all__ = [
    "GPU_RUNTIME_RESERVE",
    "NO_SPLIT_MODULES",
    "empty_model",
    "weight_bytes",
    "activation_bytes",
    "DevicePlan",
    "MemoryPlan",
    "plan_memory",
    "plan_load",
    "does_not_fit",
    "plan_for_budgets",
    "suggestions_for",
    "offload_warning",
    "tensors_by_device",
]

GPU_RUNTIME_RESERVE = 2**30  # CUDA context, cuBLAS workspace and allocator slack, per GPU
PCIE_BYTES_PER_S = 16e9  # host -> GPU copies of CPU-offloaded weights (PCIe 4.0 x16, in practice)
DISK_BYTES_PER_S = 2e9  # reads of disk-offloaded weights (a local NVMe SSD; network disks are slower)


@contextlib.contextmanager
def _skip_init() -> Iterator[None]:
    """``torch.nn.init`` as no-ops: initialising meta tensors computes nothing, but the first
    random init of a meta tensor imports torch._dynamo (seconds) on its way to doing nothing."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_") and callable(getattr(nn.init, n))]
    saved = {n: getattr(nn.init, n) for n in names}

    def skip(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor

    try:
        for n in names:
            setattr(nn.init, n, skip)
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def empty_model(cfg: EvaClipConfig) -> EvaClip:
    """EvaClip with every tensor on the ``meta`` device: shapes only, no memory, any size."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=True), _skip_init():
        model = EvaClip(cfg)
    return model.eval()


def _tensor_bytes(shape: Sequence[int], dtype_bytes: float) -> int:
    return int(math.ceil(math.prod(shape) * dtype_bytes))


def weight_bytes(model: nn.Module, precision: str | Precision, names: Iterable[str] | None = None) -> int:
    """Bytes the weights take at ``precision`` (quantisation statistics included), for all
    tensors or those in ``names``."""
    spec = parse_precision(precision)
    quantized = quantized_weights(model, spec)
    wanted = set(names) if names is not None else None
    total = 0
    for name, t in model.state_dict().items():
        if wanted is not None and name not in wanted:
            continue
        if name in quantized:
            assert spec.quantized is not None and spec.quantized_bytes_per_element is not None
            total += (_tensor_bytes(t.shape, spec.quantized_bytes_per_element)
                      + quant_state_bytes(t.shape, spec.quantized))
        else:
            total += _tensor_bytes(t.shape, spec.bytes_per_element)
    return total


def activation_bytes(cfg: EvaClipConfig, batch_size: int, bytes_per_element: int) -> dict[str, int]:
    """Estimated peak activation memory of one forward pass (inference, no autograd).

    Image tower, with N = (image_size / patch)² + 1 tokens, width W, MLP width H, h heads:
        b × B × [ N × (2W + 2H) + 2 × h × N² ]  (+ the fp32 input batch, B × 3 × S² × 4)
    i.e. inside one block the live tensors peak in the MLP (its input and output, W each, and the
    fc1 output and its GELU, H each), plus the attention scores and probabilities, which only
    the non-fused attention kernel materialises (counted anyway, to be safe). Blocks run one at a
    time, so this is the peak of any device that holds blocks, not a sum over blocks. The text
    tower is the same formula with 77 tokens and the text widths; texts are encoded in batches of
    the same size, apart from images, so the reserve is the larger of the two.
    """
    v, t = cfg.vision, cfg.text
    b, B = bytes_per_element, batch_size
    n = v.grid**2 + 1
    image = b * B * (n * (2 * v.width + 2 * v.mlp_hidden) + 2 * v.heads * n * n) + B * 3 * v.image_size**2 * 4
    L = t.context_length
    hidden_t = int(t.width * t.mlp_ratio)
    text = b * B * (L * (2 * t.width + 2 * hidden_t) + 2 * t.heads * L * L)
    return {"image": int(image), "text": int(text), "peak": int(max(image, text))}


@dataclass
class DevicePlan:
    device: int | str
    budget: int | None
    weights: int
    reserve: int
    modules: list[str]

    @property
    def used(self) -> int:
        return self.weights + self.reserve

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": device_label(self.device),
            "budget_bytes": self.budget,
            "weight_bytes": self.weights,
            "reserve_bytes": self.reserve,
            "modules": self.modules,
        }


@dataclass
class MemoryPlan:
    """Where an EVA-CLIP model would go, what it costs, and whether it fits."""

    model: str
    precision: str
    batch_size: int
    devices: str
    parameters: dict[str, int]
    weight_bytes: dict[str, int]
    activation: dict[str, int]
    device_map: dict[str, int | str]
    main: int | str
    per_device: list[DevicePlan]
    offloaded: dict[str, int]
    fits: bool
    reason: str = ""
    suggestions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def main_device(self) -> int | str:
        return self.main

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "devices": self.devices,
            "parameters": self.parameters,
            "weight_bytes": self.weight_bytes,
            "activation_bytes": self.activation,
            "per_device": [d.to_dict() for d in self.per_device],
            "device_map": {k: device_label(v) for k, v in self.device_map.items()},
            "main_device": device_label(self.main),
            "offloaded_bytes": self.offloaded,
            "fits": self.fits,
            "reason": self.reason,
            "suggestions": self.suggestions,
            "warnings": self.warnings,
        }


def tensors_by_device(model: nn.Module, device_map: Mapping[str, int | str]) -> dict[int | str, list[str]]:
    """The names of ``model``'s tensors on each device of ``device_map``."""
    out: dict[int | str, list[str]] = {}
    for name in model.state_dict():
        out.setdefault(device_of(name, device_map), []).append(name)
    return out


def _reserves(
    budgets: Mapping[int | str, int], activation: int, spec: Precision, quant_state_per_gpu: int
) -> dict[int | str, int]:
    gpus = [d for d in budgets if isinstance(d, int)]
    if gpus:
        return {d: activation + GPU_RUNTIME_RESERVE + quant_state_per_gpu for d in gpus}
    return {"cpu": activation}


def offload_warning(
    model_name: str, plan_map: Mapping[str, int | str], tensors: Mapping[int | str, list[str]],
    model: nn.Module, spec: Precision, main: int | str,
) -> tuple[dict[str, int], str]:
    """Bytes offloaded to CPU RAM / disk, and the warning that says what that costs per batch."""
    offloaded = {
        where: weight_bytes(model, spec, tensors.get(where, []))
        for where in ("cpu", "disk")
        if tensors.get(where) and not (where == "cpu" and main == "cpu")
    }
    if not offloaded:
        return {}, ""
    blocks = _blocks(model)
    n_off = sum(1 for b in blocks if device_of(b, plan_map) in offloaded)
    seconds = offloaded.get("cpu", 0) / PCIE_BYTES_PER_S + offloaded.get("disk", 0) / DISK_BYTES_PER_S
    where = " and ".join(f"{'CPU RAM' if k == 'cpu' else 'disk'} ({format_bytes(v)})" for k, v in offloaded.items())
    how = []
    if "cpu" in offloaded:
        how.append(f"over PCIe at ~{PCIE_BYTES_PER_S / 1e9:.0f} GB/s")
    if "disk" in offloaded:
        how.append(f"from disk at ~{DISK_BYTES_PER_S / 1e9:.0f} GB/s (NVMe; slower on network disks)")
    msg = (
        f"{model_name}: {n_off} of {len(blocks)} blocks do not fit on the devices and are offloaded to {where}: "
        f"every forward pass copies them to {device_label(main)} {' and '.join(how)}, about {seconds:.1f} s per "
        f"batch on top of the compute, so expect it to run many times slower; more devices, more memory or "
        f"--precision int8/int4 avoid it"
    )
    return offloaded, msg


def _place(
    model: nn.Module,
    budgets: Mapping[int | str, int],
    spec: Precision,
    activation: int,
    *,
    allow_offload: bool,
) -> tuple[dict[str, int | str], dict[int | str, int]]:
    gpus = [d for d in budgets if isinstance(d, int)]
    quant_state = 0
    if spec.quantized and gpus:
        # accelerate sizes quantised weights by their dtype alone; bitsandbytes' statistics are
        # reserved on top, spread over the GPUs.
        names = quantized_weights(model, spec)
        total = sum(quant_state_bytes(t.shape, spec.quantized) for n, t in model.state_dict().items() if n in names)
        quant_state = total // len(gpus)
    reserve = _reserves(budgets, activation, spec, quant_state)
    usable_budgets = dict(budgets)
    if not allow_offload and gpus:
        usable_budgets.pop("cpu", None)
    return compute_device_map(model, usable_budgets, spec, reserve=reserve), reserve


def _blocks(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if type(m).__name__ in NO_SPLIT_MODULES]


def plan_for_budgets(
    name: str,
    cfg: EvaClipConfig,
    model: nn.Module,
    spec: Precision,
    budgets: Mapping[int | str, int],
    batch_size: int,
    devices_text: str,
    *,
    allow_cpu_offload: bool,
    allow_disk: bool,
) -> MemoryPlan:
    """The plan of ``model`` (on meta) at ``spec`` within ``budgets``: its device map, what each
    device holds, and whether it fits. CPU offload from GPUs and disk offload count as fitting only
    when allowed (the loader allows them; ``evalkit plan`` does not, and says what they cost)."""
    activation = activation_bytes(cfg, batch_size, spec.bytes_per_element)
    device_map, reserve = _place(model, budgets, spec, activation["peak"], allow_offload=allow_cpu_offload)
    tensors = tensors_by_device(model, device_map)
    per_device = []
    collapsed = collapse_device_map(device_map)
    for device in [*budgets.keys(), *(["disk"] if "disk" in tensors else [])]:
        if device not in tensors and device not in reserve:
            continue
        modules = [m for d, items in collapsed if d == device for m in items]
        per_device.append(DevicePlan(
            device=device,
            budget=budgets.get(device),
            weights=weight_bytes(model, spec, tensors.get(device, [])),
            reserve=reserve.get(device, 0),
            modules=modules,
        ))
    offloaded, warning = offload_warning(name, device_map, tensors, model, spec, main_device(budgets))
    gpus = [d for d in budgets if isinstance(d, int)]
    fits, reason = True, ""
    if "disk" in tensors and not allow_disk:
        fits = False
        reason = f"{format_bytes(weight_bytes(model, spec, tensors['disk']))} of weights do not fit"
    elif gpus and "cpu" in tensors and not allow_cpu_offload:
        fits = False
        reason = f"{format_bytes(weight_bytes(model, spec, tensors['cpu']))} of weights do not fit on the GPUs"
    over = [d for d in per_device if d.budget is not None and d.device != "disk" and d.used > d.budget]
    if fits and over:
        fits = False
        reason = "; ".join(
            f"{device_label(d.device)} needs {format_bytes(d.used)} of {format_bytes(d.budget or 0)}" for d in over
        )
    if fits and spec.quantized and gpus and offloaded:
        fits = False
        reason = f"{spec.name} layers cannot be offloaded ({format_bytes(sum(offloaded.values()))} would be)"
    params = count_parameters(model)
    plan = MemoryPlan(
        model=name,
        precision=spec.name,
        batch_size=batch_size,
        devices=devices_text,
        parameters=params,
        weight_bytes={p: weight_bytes(model, p) for p in ("fp32", "fp16", "int8", "int4")},  # one per size
        activation=activation,
        device_map=device_map,
        main=main_device(budgets),
        per_device=per_device,
        offloaded=offloaded,
        fits=fits,
        reason=reason,
    )
    if warning and fits:
        plan.warnings.append(warning)
    return plan


def suggestions_for(
    name: str, cfg: EvaClipConfig, model: nn.Module, spec: Precision, budgets: Mapping[int | str, int],
    batch_size: int, devices_text: str, planning: bool,
) -> list[str]:
    """What would make a plan that does not fit fit: more devices, int8/int4, a smaller batch."""
    out: list[str] = []
    gpus = [d for d in budgets if isinstance(d, int)]

    def fits(s: Precision, b: Mapping[int | str, int], bs: int) -> bool:
        return plan_for_budgets(name, cfg, model, s, b, bs, devices_text, allow_cpu_offload=False, allow_disk=False).fits

    if gpus:
        size = min(budgets[g] for g in gpus)
        per_gpu = size - activation_bytes(cfg, batch_size, spec.bytes_per_element)["peak"] - GPU_RUNTIME_RESERVE
        if per_gpu > 0:
            start = max(len(gpus) + 1, math.ceil(weight_bytes(model, spec) / per_gpu))
            for n in range(start, start + 4):
                if fits(spec, dict.fromkeys(range(n), size), batch_size):
                    label = f"--devices {n}x{size / 2**30:g}GiB" if planning else f"{n} GPUs of {size / 2**30:.0f} GiB"
                    out.append(f"more devices: {label} fits")
                    break
    for other in ("int8", "int4"):
        if spec.name == other or (spec.name == "int4" and other == "int8"):
            continue
        if fits(parse_precision(other), budgets, batch_size):
            out.append(f"--precision {other}: fits on these devices "
                       f"({format_bytes(weight_bytes(model, other))} of weights)")
            break
    if batch_size > 1:
        lo, hi = 0, batch_size - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(spec, budgets, mid):
                lo = mid
            else:
                hi = mid - 1
        if lo >= 1:
            out.append(f"--batch-size {lo}: the largest batch that fits at {spec.name}")
    if not gpus:
        out.insert(0, "--offload-dir DIR: stream what does not fit from disk (slow)")
    elif not spec.quantized:
        out.append("CPU offload (automatic when loading, --max-memory cpu=SIZE): runs, but slowly")
    return out


def plan_memory(
    cfg: EvaClipConfig,
    devices: str | DeviceSpec,
    precision: str | Precision = "fp16",
    *,
    batch_size: int = 64,
    max_memory: str | Mapping[Any, Any] | None = None,
    name: str = "eva_clip",
    suggest: bool = True,
    cuda_count: int | None = None,
    gpu_free: Callable[[int], int] | None = None,
    host_available: Callable[[], int] | None = None,
) -> MemoryPlan:
    """The memory plan of ``cfg`` on ``devices`` at ``precision`` and ``batch_size``; no weights
    needed. Planning sizes (``2x40GiB``) describe a machine that need not be this one."""
    if batch_size < 1:
        raise PlacementError(f"--batch-size {batch_size}: must be at least 1")
    spec_dev = devices if isinstance(devices, DeviceSpec) else parse_devices(devices)
    spec = parse_precision(precision)
    budgets = device_budgets(spec_dev, parse_max_memory(max_memory), cuda_count=cuda_count,
                             gpu_free=gpu_free, host_available=host_available)
    model = empty_model(cfg)
    gpus = [d for d in budgets if isinstance(d, int)]
    plan = plan_for_budgets(name, cfg, model, spec, budgets, batch_size, spec_dev.text,
                            allow_cpu_offload=False, allow_disk=False)
    if not plan.fits and suggest:
        plan.suggestions = suggestions_for(name, cfg, model, spec, budgets, batch_size, spec_dev.text, spec_dev.planning)
        if gpus and "cpu" in budgets and not spec.quantized:
            offload = plan_for_budgets(name, cfg, model, spec, budgets, batch_size, spec_dev.text,
                                       allow_cpu_offload=True, allow_disk=False)
            if offload.warnings:
                plan.warnings += offload.warnings
    return plan


def plan_load(
    cfg: EvaClipConfig,
    devices: str | DeviceSpec,
    precision: str | Precision,
    *,
    batch_size: int = 64,
    max_memory: str | Mapping[Any, Any] | None = None,
    offload_dir: Any = None,
    name: str = "eva_clip",
    model: nn.Module | None = None,
    cuda_count: int | None = None,
    gpu_free: Callable[[int], int] | None = None,
    host_available: Callable[[], int] | None = None,
    offload: bool = True,
) -> MemoryPlan:
    """The plan the loader follows: CPU offload from GPUs counts as fitting unless the precision is
    quantised, disk offload only with an offload folder (``offload=False``: neither counts, the
    model must fit the devices themselves). ``evalkit run`` calls it before any weights
    are read (:mod:`evalkit.models.auto`) and the streaming loader again when it places the model,
    so the two cannot disagree. A plan that does not fit carries its suggestions."""
    spec = parse_precision(precision)
    dev_spec = devices if isinstance(devices, DeviceSpec) else parse_devices(devices)
    budgets = device_budgets(dev_spec, parse_max_memory(max_memory), cuda_count=cuda_count,
                             gpu_free=gpu_free, host_available=host_available)
    model = empty_model(cfg) if model is None else model
    plan = plan_for_budgets(name, cfg, model, spec, budgets, batch_size, dev_spec.text,
                            allow_cpu_offload=offload and not spec.quantized,
                            allow_disk=offload and offload_dir is not None)
    if not plan.fits:
        plan.suggestions = suggestions_for(name, cfg, model, spec, budgets, batch_size, dev_spec.text, False)
    return plan


def _devices_in_words(devices: str) -> str:
    """``cpu`` -> "the CPU", ``0`` -> "GPU 0", ``0,1`` -> "GPUs 0,1", ``auto`` -> "every visible GPU"."""
    text = devices.strip().lower()
    if text == "cpu":
        return "the CPU"
    if text == "auto":
        return "every visible GPU"
    gpus = [g.strip().removeprefix("cuda:") for g in text.split(",") if g.strip()]
    if gpus and all(g.isdigit() for g in gpus):
        return f"GPU{'s' if len(gpus) > 1 else ''} {','.join(gpus)}"
    return f"--devices {devices}"


def does_not_fit(plan: MemoryPlan) -> PlacementError:
    """The one-line error of a plan that does not fit: what the model needs, what the devices
    have, what would make it fit, and the `evalkit plan` command that shows the whole plan."""
    held = [d for d in plan.per_device if d.device != "disk"]
    needs = sum(d.weights for d in plan.per_device) + sum(d.reserve for d in held)
    has = sum(d.budget or 0 for d in held)
    where = ", ".join(f"{device_label(d.device)} {format_bytes(d.budget or 0)}" for d in held)
    suggestions = list(plan.suggestions)
    if not any(isinstance(d.device, int) for d in plan.per_device):
        suggestions.append(f"GPUs (`evalkit plan --model {plan.model} --devices 2x40GiB --precision {plan.precision}` "
                           f"sizes them)")
    hint = f"; try {'; or '.join(suggestions)}" if suggestions else ""
    return PlacementError(
        f"{plan.model} at {plan.precision} does not fit on {_devices_in_words(plan.devices)}: it needs about "
        f"{format_bytes(needs)} (weights and activations at batch {plan.batch_size}), the devices have "
        f"{format_bytes(has)} ({where}): {plan.reason}{hint}; `evalkit plan --model {plan.model} --devices "
        f"{plan.devices} --precision {plan.precision}` shows the whole plan"
    )
