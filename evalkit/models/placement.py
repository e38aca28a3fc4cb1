"""The big-model path: EVA-CLIP-18B/8B placed over devices, streamed shard by shard, optionally quantised.

Built on accelerate and bitsandbytes rather than beside them:

1. the model is created on the ``meta`` device (``accelerate.init_empty_weights``): no memory;
2. a device map comes from ``--devices`` and per-device budgets (``get_balanced_memory`` +
   ``infer_auto_device_map`` with ``no_split_module_classes=["VisionBlock", "TextBlock"]``, so
   a transformer block never straddles two devices), after reserving room for activations;
3. the checkpoint is checked against the model by key and shape from headers alone
   (:func:`evalkit.models.checkpoint.scan_checkpoint` + ``check_fits``): a misfit fails before
   one byte of weights is read;
4. tensors are then read shard by shard (safetensors memory-mapped, ``.pt``/``.bin`` through
   ``torch.load(mmap=True)``), renamed onto our layout, cast to the target dtype and put straight
   on their device (``set_module_tensor_to_device``), written to the offload folder
   (``offload_weight``) or quantised by bitsandbytes on their device;
5. ``dispatch_model`` attaches the hooks that move activations (and offloaded weights) between
   devices, so a forward pass runs model-parallel over the map.

Host memory stays near one shard for GPU targets. On the CPU, a tensor already stored in the
target dtype is used in place from its read-only, copy-on-write file mapping (no copy: the page
cache is the model's memory, which is why a CPU load costs about one read of the files); any
other tensor is converted into fresh memory. A checkpoint file must therefore not be rewritten in
place while a model built from it is in use (writing a new file and renaming it is safe).

Precisions: ``fp32``/``bf16``/``fp16`` store every weight in that dtype (``amp`` keeps fp32
weights for autocast). ``int8`` (LLM.int8, ``Linear8bitLt`` with outlier threshold 6.0) and
``int4`` (NF4 ``Linear4bit``, blocks of 64, double-quantised statistics) replace the Linear
layers inside the vision and text blocks; everything else (patch and token embeddings, position
embeddings, norms, the text tower's fused ``in_proj`` which is a bare parameter as in
``nn.MultiheadAttention``, and the projection heads ``visual.head`` / ``text_projection``) is
kept in fp16 on every device. fp16 is what bitsandbytes' int8 kernels take as input (it casts
anything else to fp16), EVA-CLIP-18B is released and evaluated in fp16, and using the same dtype
on CPU and GPU means the CPU tests check the numerics a GPU run gets.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import re
import shutil
import tempfile
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evalkit.models.checkpoint import (
    CheckpointError,
    ShardMapper,
    check_fits,
    detect_layout,
    iter_checkpoint_shards,
    map_state_dict,
    resize_pos_embed,
    resolve_checkpoint,
    scan_checkpoint,
)
from evalkit.models.eva_clip import EvaClip, EvaClipConfig, count_parameters

__all__ = [
    "PlacementError",
    "PRECISIONS",
    "NO_SPLIT_MODULES",
    "INT8_THRESHOLD",
    "PrecisionSpec",
    "precision_spec",
    "DeviceSpec",
    "parse_devices",
    "parse_size",
    "parse_max_memory",
    "format_bytes",
    "device_budgets",
    "empty_model",
    "quantizable_linears",
    "weight_bytes",
    "activation_bytes",
    "compute_device_map",
    "collapse_device_map",
    "require_bitsandbytes",
    "DevicePlan",
    "MemoryPlan",
    "plan_memory",
    "PlacedModel",
    "load_eva_clip",
]

log = logging.getLogger("evalkit.placement")

PRECISIONS = ("fp32", "bf16", "fp16", "amp", "int8", "int4")
NO_SPLIT_MODULES = ["VisionBlock", "TextBlock"]
# Modules whose forward reads a child's weight directly (``F.linear(x, self.qkv.weight, bias)``
# when q/v biases exist), so an offload hook must bring all of their weights in at once.
PRELOAD_MODULES = ["Attention"]
INT8_THRESHOLD = 6.0  # LLM.int8 outlier threshold (Dettmers et al. 2022), bitsandbytes' default
INT4_QUANT_TYPE = "nf4"
INT4_BLOCKSIZE = 64
QUANTIZED_REST_DTYPE = torch.float16
GPU_RUNTIME_RESERVE = 2**30  # CUDA context, cuBLAS workspace and allocator slack, per GPU
HOST_HEADROOM = 2**30  # left to the OS and the rest of the process when the CPU holds weights
PCIE_BYTES_PER_S = 16e9  # host -> GPU copies of CPU-offloaded weights (PCIe 4.0 x16, in practice)
DISK_BYTES_PER_S = 2e9  # reads of disk-offloaded weights (a local NVMe SSD; network disks are slower)

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


class PlacementError(ValueError):
    """A model that cannot be placed as asked (devices, memory, precision, offload)."""


# --------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionSpec:
    """``dtype``: what every non-quantised tensor is stored in (and activations run in);
    ``quantized``: ``"int8"``/``"int4"`` for the block Linear layers, or None."""

    name: str
    dtype: torch.dtype
    quantized: str | None = None

    @property
    def bytes_per_element(self) -> int:
        return self.dtype.itemsize


def precision_spec(precision: str) -> PrecisionSpec:
    dtypes = {"fp32": torch.float32, "amp": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision in dtypes:
        return PrecisionSpec(precision, dtypes[precision])
    if precision in ("int8", "int4"):
        return PrecisionSpec(precision, QUANTIZED_REST_DTYPE, precision)
    raise PlacementError(f"--precision {precision}: choose from {', '.join(PRECISIONS)}")


_BNB_HINT = "install a bitsandbytes build for this platform (pip install 'bitsandbytes>=0.45') or use --precision fp16"


def _import_bitsandbytes(precision: str) -> Any:
    try:
        import bitsandbytes as bnb
    except Exception as e:  # ImportError, or a broken native library raising anything at import
        raise PlacementError(
            f"--precision {precision} needs bitsandbytes, which cannot be imported ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}); {_BNB_HINT}"
        ) from e
    return bnb


def require_bitsandbytes(precision: str, device: str | int = "cpu") -> None:
    """Fail with one clear line unless bitsandbytes imports and quantises a tiny layer on ``device``."""
    hint = _BNB_HINT
    bnb = _import_bitsandbytes(precision)
    try:
        with torch.no_grad():
            w = torch.linspace(-1, 1, 64 * 64).reshape(64, 64)
            if precision == "int8":
                layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False, threshold=INT8_THRESHOLD)
                layer.weight = bnb.nn.Int8Params(w.half(), requires_grad=False, has_fp16_weights=False)
            else:
                layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float16, quant_type=INT4_QUANT_TYPE)
                layer.weight = bnb.nn.Params4bit(w.half(), requires_grad=False, quant_type=INT4_QUANT_TYPE, module=layer)
            layer = layer.to(device)
            out = layer(torch.ones(2, 64, dtype=torch.float16, device=layer.weight.device))
            if not torch.isfinite(out).all():
                raise RuntimeError("non-finite output from a 64x64 test layer")
    except Exception as e:
        raise PlacementError(
            f"--precision {precision}: bitsandbytes {getattr(bnb, '__version__', '?')} does not work on "
            f"{device} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}); {hint}"
        ) from e


# --------------------------------------------------------------------------------------------
# Devices and memory budgets
# --------------------------------------------------------------------------------------------

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


def _host_available() -> int:
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
    host_available = host_available or _host_available
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


# --------------------------------------------------------------------------------------------
# The model on meta, its sizes
# --------------------------------------------------------------------------------------------


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


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` modules inside vision and text blocks: what int8/int4 replace."""
    out = []
    for name, module in model.named_modules():
        if type(module).__name__ in NO_SPLIT_MODULES:
            out += [f"{name}.{sub}" for sub, m in module.named_modules() if isinstance(m, nn.Linear)]
    return out


def _quantized_weights(model: nn.Module, spec: PrecisionSpec) -> set[str]:
    return {f"{m}.weight" for m in quantizable_linears(model)} if spec.quantized else set()


def _special_dtypes(model: nn.Module, spec: PrecisionSpec) -> dict[str, Any]:
    if not spec.quantized:
        return {}
    from accelerate.utils import CustomDtype

    qdtype = torch.int8 if spec.quantized == "int8" else CustomDtype.INT4
    return dict.fromkeys(_quantized_weights(model, spec), qdtype)


def _tensor_bytes(shape: Sequence[int], dtype_bytes: float) -> int:
    return int(math.ceil(math.prod(shape) * dtype_bytes))


def _quant_state_bytes(shape: Sequence[int], quantized: str) -> int:
    """bitsandbytes' side statistics: LLM.int8 keeps one fp32 scale per output row; NF4 keeps an
    8-bit absmax per block of 64 weights, whose own fp32 absmax comes per 256 blocks."""
    n = math.prod(shape)
    if quantized == "int8":
        return shape[0] * 4
    blocks = math.ceil(n / INT4_BLOCKSIZE)
    return blocks + math.ceil(blocks / 256) * 4 + 16 * 4  # + the 16-entry NF4 code book


def weight_bytes(model: nn.Module, precision: str | PrecisionSpec, names: Iterable[str] | None = None) -> int:
    """Bytes the weights take at ``precision`` (quantisation statistics included), for all
    tensors or those in ``names``."""
    spec = precision if isinstance(precision, PrecisionSpec) else precision_spec(precision)
    quantized = _quantized_weights(model, spec)
    wanted = set(names) if names is not None else None
    total = 0
    for name, t in model.state_dict().items():
        if wanted is not None and name not in wanted:
            continue
        if name in quantized:
            assert spec.quantized is not None
            per = 1 if spec.quantized == "int8" else 0.5
            total += _tensor_bytes(t.shape, per) + _quant_state_bytes(t.shape, spec.quantized)
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


# --------------------------------------------------------------------------------------------
# Device maps
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet(name: str = "accelerate.utils.modeling") -> Iterator[None]:
    # Planning sizes name GPUs this machine does not have: accelerate warns about each.
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _device_of(name: str, device_map: Mapping[str, int | str]) -> int | str:
    """The device of a module or tensor: its own entry or its nearest ancestor's."""
    probe = name
    while True:
        if probe in device_map:
            return device_map[probe]
        if not probe:
            raise PlacementError(f"the device map does not place {name}")
        probe = probe.rsplit(".", 1)[0] if "." in probe else ""


def _covered_whole(module: str, device_map: Mapping[str, int | str]) -> bool:
    probe = module
    while True:
        if probe in device_map:
            return True
        if not probe:
            return False
        probe = probe.rsplit(".", 1)[0] if "." in probe else ""


def _main_device(devices: Iterable[int | str]) -> int | str:
    """The first GPU among ``devices`` (a device map's values or the budgets' keys), else the CPU:
    where inputs go and offloaded modules run."""
    gpus = sorted({d for d in devices if isinstance(d, int)})
    return gpus[0] if gpus else "cpu"


def _execution_device(device: int | str, main: int | str) -> int | str:
    """Where a module on ``device`` runs: offloaded modules run on the main device."""
    return main if device in ("cpu", "disk") else device


def _fix_glue(device_map: dict[str, int | str], main: int | str) -> dict[str, int | str]:
    """Put the small tensors read outside their own submodule (class token, position
    embeddings, text projection) where their consumer runs, whenever their parent is split."""
    for tensor, consumer in _GLUE.items():
        parent = tensor.rsplit(".", 1)[0] if "." in tensor else ""
        if _covered_whole(parent, device_map):
            continue
        if consumer:
            want = _execution_device(_device_of(consumer, device_map), main)
        else:
            want = main
        device_map[tensor] = want
    return device_map


def compute_device_map(
    model: nn.Module,
    budgets: Mapping[int | str, int],
    precision: str | PrecisionSpec,
    *,
    reserve: Mapping[int | str, int] | None = None,
) -> dict[str, int | str]:
    """accelerate's device map for ``model`` (on meta) within ``budgets`` less ``reserve``.

    Several GPUs are balanced (``get_balanced_memory``); ``VisionBlock``/``TextBlock`` are never
    split; whatever does not fit goes to ``"cpu"`` (if it has a budget) and then ``"disk"``.
    """
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    spec = precision if isinstance(precision, PrecisionSpec) else precision_spec(precision)
    reserve = reserve or {}
    usable = {d: max(0, int(b) - int(reserve.get(d, 0))) for d, b in budgets.items()}
    kwargs: dict[str, Any] = {
        "no_split_module_classes": NO_SPLIT_MODULES,
        "dtype": spec.dtype,
        "special_dtypes": _special_dtypes(model, spec) or None,
    }
    with _quiet():
        if sum(isinstance(d, int) for d in usable) > 1:
            usable = get_balanced_memory(model, max_memory=dict(usable), **kwargs)
        device_map = infer_auto_device_map(model, max_memory=dict(usable), **kwargs)
    return _fix_glue(dict(device_map), _main_device(budgets))


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


def _device_label(device: int | str) -> str:
    return f"cuda:{device}" if isinstance(device, int) else str(device)


# --------------------------------------------------------------------------------------------
# The memory plan
# --------------------------------------------------------------------------------------------


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
            "device": _device_label(self.device),
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
            "device_map": {k: _device_label(v) for k, v in self.device_map.items()},
            "main_device": _device_label(self.main),
            "offloaded_bytes": self.offloaded,
            "fits": self.fits,
            "reason": self.reason,
            "suggestions": self.suggestions,
            "warnings": self.warnings,
        }


def _module_tensors(model: nn.Module, device_map: Mapping[str, int | str]) -> dict[int | str, list[str]]:
    out: dict[int | str, list[str]] = {}
    for name in model.state_dict():
        out.setdefault(_device_of(name, device_map), []).append(name)
    return out


def _reserves(
    budgets: Mapping[int | str, int], activation: int, spec: PrecisionSpec, quant_state_per_gpu: int
) -> dict[int | str, int]:
    gpus = [d for d in budgets if isinstance(d, int)]
    if gpus:
        return {d: activation + GPU_RUNTIME_RESERVE + quant_state_per_gpu for d in gpus}
    return {"cpu": activation}


def _offload_warning(
    model_name: str, plan_map: Mapping[str, int | str], tensors: Mapping[int | str, list[str]],
    model: nn.Module, spec: PrecisionSpec, main: int | str,
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
    n_off = sum(1 for b in blocks if _device_of(b, plan_map) in offloaded)
    seconds = offloaded.get("cpu", 0) / PCIE_BYTES_PER_S + offloaded.get("disk", 0) / DISK_BYTES_PER_S
    where = " and ".join(f"{'CPU RAM' if k == 'cpu' else 'disk'} ({format_bytes(v)})" for k, v in offloaded.items())
    how = []
    if "cpu" in offloaded:
        how.append(f"over PCIe at ~{PCIE_BYTES_PER_S / 1e9:.0f} GB/s")
    if "disk" in offloaded:
        how.append(f"from disk at ~{DISK_BYTES_PER_S / 1e9:.0f} GB/s (NVMe; slower on network disks)")
    msg = (
        f"{model_name}: {n_off} of {len(blocks)} blocks do not fit on the devices and are offloaded to {where}: "
        f"every forward pass copies them to {_device_label(main)} {' and '.join(how)}, about {seconds:.1f} s per "
        f"batch on top of the compute, so expect it to run many times slower; more devices, more memory or "
        f"--precision int8/int4 avoid it"
    )
    return offloaded, msg


def _place(
    model: nn.Module,
    budgets: Mapping[int | str, int],
    spec: PrecisionSpec,
    activation: int,
    *,
    allow_offload: bool,
) -> tuple[dict[str, int | str], dict[int | str, int]]:
    gpus = [d for d in budgets if isinstance(d, int)]
    quant_state = 0
    if spec.quantized and gpus:
        # accelerate sizes quantised weights by their dtype alone; bitsandbytes' statistics are
        # reserved on top, spread over the GPUs.
        names = _quantized_weights(model, spec)
        total = sum(_quant_state_bytes(t.shape, spec.quantized) for n, t in model.state_dict().items() if n in names)
        quant_state = total // len(gpus)
    reserve = _reserves(budgets, activation, spec, quant_state)
    usable_budgets = dict(budgets)
    if not allow_offload and gpus:
        usable_budgets.pop("cpu", None)
    return compute_device_map(model, usable_budgets, spec, reserve=reserve), reserve


def _blocks(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if type(m).__name__ in NO_SPLIT_MODULES]


def _plan_from(
    name: str,
    cfg: EvaClipConfig,
    model: nn.Module,
    spec: PrecisionSpec,
    budgets: Mapping[int | str, int],
    batch_size: int,
    devices_text: str,
    *,
    allow_cpu_offload: bool,
    allow_disk: bool,
) -> MemoryPlan:
    activation = activation_bytes(cfg, batch_size, spec.bytes_per_element)
    device_map, reserve = _place(model, budgets, spec, activation["peak"], allow_offload=allow_cpu_offload)
    tensors = _module_tensors(model, device_map)
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
    offloaded, warning = _offload_warning(name, device_map, tensors, model, spec, _main_device(budgets))
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
            f"{_device_label(d.device)} needs {format_bytes(d.used)} of {format_bytes(d.budget or 0)}" for d in over
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
        weight_bytes={p: weight_bytes(model, p) for p in ("fp32", "fp16", "int8", "int4")},
        activation=activation,
        device_map=device_map,
        main=_main_device(budgets),
        per_device=per_device,
        offloaded=offloaded,
        fits=fits,
        reason=reason,
    )
    if warning and fits:
        plan.warnings.append(warning)
    return plan


def _suggest(
    name: str, cfg: EvaClipConfig, model: nn.Module, spec: PrecisionSpec, budgets: Mapping[int | str, int],
    batch_size: int, devices_text: str, planning: bool,
) -> list[str]:
    out: list[str] = []
    gpus = [d for d in budgets if isinstance(d, int)]

    def fits(s: PrecisionSpec, b: Mapping[int | str, int], bs: int) -> bool:
        return _plan_from(name, cfg, model, s, b, bs, devices_text, allow_cpu_offload=False, allow_disk=False).fits

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
        if fits(precision_spec(other), budgets, batch_size):
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
    precision: str = "fp16",
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
    spec = precision_spec(precision)
    budgets = device_budgets(spec_dev, parse_max_memory(max_memory), cuda_count=cuda_count,
                             gpu_free=gpu_free, host_available=host_available)
    model = empty_model(cfg)
    gpus = [d for d in budgets if isinstance(d, int)]
    plan = _plan_from(name, cfg, model, spec, budgets, batch_size, spec_dev.text,
                      allow_cpu_offload=False, allow_disk=False)
    if not plan.fits and suggest:
        plan.suggestions = _suggest(name, cfg, model, spec, budgets, batch_size, spec_dev.text, spec_dev.planning)
        if gpus and "cpu" in budgets and not spec.quantized:
            offload = _plan_from(name, cfg, model, spec, budgets, batch_size, spec_dev.text,
                                 allow_cpu_offload=True, allow_disk=False)
            if offload.warnings:
                plan.warnings += offload.warnings
    return plan


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass
class PlacedModel:
    """A loaded, placed model and how it got there."""

    model: EvaClip
    device_map: dict[str, int | str]
    main_device: str
    precision: PrecisionSpec
    digest: str
    report: dict[str, Any]
    offload_dir: Path | None = None


class _Digest:
    """Content digest of the weights as loaded (before quantisation): names, shapes and the first
    and last 1024 values of each tensor, in key order, so it does not depend on shard order,
    device or offload."""

    def __init__(self) -> None:
        self._parts: dict[str, bytes] = {}

    def add(self, key: str, t: torch.Tensor) -> None:
        h = hashlib.sha256(key.encode())
        h.update(str(tuple(t.shape)).encode())
        if t.numel():
            flat = t.detach().reshape(-1)
            n = min(1024, flat.numel())
            h.update(flat[:n].float().cpu().numpy().tobytes())
            h.update(flat[-n:].float().cpu().numpy().tobytes())
        self._parts[key] = h.digest()

    def hexdigest(self) -> str:
        h = hashlib.sha256()
        for key in sorted(self._parts):
            h.update(self._parts[key])
        return h.hexdigest()[:16]


def _prefault(t: torch.Tensor) -> None:
    """Read one value per 4 KiB page, so a memory-mapped tensor is in RAM when the load returns
    (and an unreadable file fails here, not in the middle of an evaluation)."""
    if t.device.type != "cpu" or not t.numel() or not t.is_contiguous():
        return
    step = max(1, 4096 // t.element_size())
    t.reshape(-1)[::step].float().sum()


def _release(model: nn.Module) -> None:
    """Drop every tensor of a model that failed to load, so nothing half-loaded stays in memory
    even if the exception (and with it the model) is kept alive by a traceback."""
    from accelerate.hooks import remove_hook_from_module

    with contextlib.suppress(Exception):
        remove_hook_from_module(model, recurse=True)
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = nn.Parameter(torch.empty(p.shape, device="meta"), requires_grad=False)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = torch.empty(b.shape, device="meta")
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _set_quantized_weight(module: nn.Module, value: torch.Tensor, device: int | str, spec: PrecisionSpec) -> None:
    """Quantise ``value`` on ``device`` with bitsandbytes and put it in ``module.weight``.

    (accelerate's ``set_module_tensor_to_device`` quantises int8 weights meant for the CPU on
    ``cuda:0`` first, which a CPU-only machine does not have; bitsandbytes' parameter classes
    quantise on whatever device they are moved to, so they are used directly.)
    """
    import bitsandbytes as bnb

    data = value.to("cpu", torch.float16).contiguous()
    if spec.quantized == "int8":
        param = bnb.nn.Int8Params(data, requires_grad=False, has_fp16_weights=False).to(device)
    else:
        old = module.weight
        param = bnb.nn.Params4bit(
            data, requires_grad=False, blocksize=old.blocksize, compress_statistics=old.compress_statistics,
            quant_type=old.quant_type, quant_storage=old.quant_storage, module=module,
        ).to(device)
    module._parameters["weight"] = param


def _replace_linears(model: EvaClip, spec: PrecisionSpec) -> None:
    """Swap the block Linear layers for bitsandbytes ones, on meta (accelerate's helper)."""
    from accelerate import init_empty_weights
    from accelerate.utils import BnbQuantizationConfig
    from accelerate.utils.bnb import replace_with_bnb_layers

    if spec.quantized == "int8":
        config = BnbQuantizationConfig(load_in_8bit=True, llm_int8_threshold=INT8_THRESHOLD, torch_dtype=spec.dtype)
    else:
        config = BnbQuantizationConfig(
            load_in_4bit=True, bnb_4bit_quant_type=INT4_QUANT_TYPE, bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype="fp16", torch_dtype=spec.dtype,
        )
    with init_empty_weights():
        for module in model.modules():
            if type(module).__name__ in NO_SPLIT_MODULES:
                replace_with_bnb_layers(module, config)
    model.is_loaded_in_8bit = spec.quantized == "int8"
    model.is_loaded_in_4bit = spec.quantized == "int4"


def _initial_value(model: nn.Module, key: str, dtype: torch.dtype) -> torch.Tensor:
    """What an allowed-missing tensor holds: its module's own initialisation when the module has
    one (``reset_parameters``: Linear, LayerNorm, Embedding, Conv), ones for RMSNorm weights,
    zeros otherwise."""
    owner_name, _, attr = key.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    shape = getattr(owner, attr).shape
    if hasattr(owner, "reset_parameters") and len(list(owner.children())) == 0:
        fresh = copy.deepcopy(owner).to_empty(device="cpu")
        with torch.no_grad():
            fresh.reset_parameters()
        return getattr(fresh, attr).detach().to(dtype)
    if type(owner).__name__ == "RMSNorm" and attr == "weight":
        return torch.ones(shape, dtype=dtype)
    return torch.zeros(shape, dtype=dtype)


def _send_inputs_hook(device: int | str) -> Any:
    """An accelerate ``ModelHook`` that moves a module's inputs to ``device`` before its forward:
    the text tower mixes its token ids with the final hidden states (EOT pooling), so when the
    tower is split over devices the ids must be where its last layer norm runs."""
    from accelerate.hooks import ModelHook
    from accelerate.utils import send_to_device

    class SendInputsTo(ModelHook):
        def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            return send_to_device(args, device), send_to_device(kwargs, device)

    return SendInputsTo()


def _iter_source(
    source: Any,
) -> Iterator[tuple[str, Mapping[str, torch.Tensor]]]:
    if isinstance(source, Mapping):
        yield "<state dict>", source
        return
    for file, tensors in iter_checkpoint_shards(source):
        yield file.name, tensors
        del tensors  # before the next shard is read, not after


def load_eva_clip(
    cfg: EvaClipConfig,
    weights: str | Path | Mapping[str, torch.Tensor],
    *,
    precision: str = "fp32",
    devices: str | DeviceSpec = "cpu",
    max_memory: str | Mapping[Any, Any] | None = None,
    allow_missing: Sequence[str] = (),
    offload_dir: str | Path | None = None,
    batch_size: int = 64,
    device_map: Mapping[str, int | str] | None = None,
    layout: str = "auto",
    name: str = "eva_clip",
    cuda_count: int | None = None,
    gpu_free: Callable[[int], int] | None = None,
    host_available: Callable[[], int] | None = None,
) -> PlacedModel:
    """Build EVA-CLIP from ``cfg`` on meta, check ``weights`` against it, and stream them onto
    ``devices`` at ``precision``. ``weights`` is a checkpoint path (file, folder or index) or an
    in-memory state dict; ``device_map`` overrides the computed map (accelerate format: module
    name -> GPU index, ``"cpu"`` or ``"disk"``). Raises :class:`CheckpointError` for a checkpoint
    that does not fit and :class:`PlacementError` for a placement that cannot work; after a
    failure no tensor of the model is left on any device and no offload file is left behind.
    """
    started = time.perf_counter()
    spec = precision_spec(precision)
    if spec.quantized:
        _import_bitsandbytes(spec.name)  # fail fast; a working-kernel probe follows once devices are known
    dev_spec = devices if isinstance(devices, DeviceSpec) else parse_devices(devices)
    if dev_spec.planning:
        raise PlacementError(
            f"--devices {dev_spec.text}: sizes describe devices for `evalkit plan`; to load, name devices "
            f"(0,1 or cpu) and cap them with --max-memory"
        )
    model = empty_model(cfg)
    expected = {k: tuple(t.shape) for k, t in model.state_dict().items()}

    # 1. Does the checkpoint fit? From headers (or the in-memory dict) alone.
    if isinstance(weights, Mapping):
        source: Any = weights
        layout = detect_layout(weights) if layout == "auto" else layout
        mapped = map_state_dict(weights, expected, layout=layout)
        got = {k: tuple(t.shape) for k, t in mapped.state_dict.items()}
        notes = mapped.notes
        source_name, files, stored_bytes = "<state dict>", [], sum(t.numel() * t.element_size() for t in weights.values())
    else:
        if not Path(weights).exists():
            raise CheckpointError(f"{weights}: weights path does not exist")
        source = resolve_checkpoint(weights)
        scan = scan_checkpoint(source, expected, layout=layout)
        layout, got, notes = scan.layout, scan.mapped, scan.notes
        source_name, files, stored_bytes = str(weights), [str(f) for f in source.files], scan.bytes
    fit = check_fits(expected, got, allow_missing=allow_missing, source=source_name, model_name=name)

    # 2. Where does each tensor go?
    if device_map is not None:
        from accelerate.utils import check_device_map

        main = _main_device(device_map.values())
        plan_map = _fix_glue(dict(device_map), main)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The following device_map keys do not match")
            check_device_map(model, plan_map)
        warning = _offload_warning(name, plan_map, _module_tensors(model, plan_map), model, spec, main)[1]
    else:
        budgets = device_budgets(dev_spec, parse_max_memory(max_memory), cuda_count=cuda_count,
                                 gpu_free=gpu_free, host_available=host_available)
        plan = _plan_from(name, cfg, model, spec, budgets, batch_size, dev_spec.text,
                          allow_cpu_offload=not spec.quantized, allow_disk=offload_dir is not None)
        if not plan.fits:
            plan.suggestions = _suggest(name, cfg, model, spec, budgets, batch_size, dev_spec.text, False)
            hint = f"; try {'; or '.join(plan.suggestions)}" if plan.suggestions else ""
            raise PlacementError(
                f"{name} at {spec.name} does not fit on --devices {dev_spec.text}: {plan.reason}{hint} "
                f"(see `evalkit plan --model ... --devices ...`)"
            )
        plan_map, main = plan.device_map, plan.main
        warning = plan.warnings[0] if plan.warnings else ""
    main_label = _device_label(main)
    placed_on = set(plan_map.values())
    if spec.quantized:
        if main != "cpu" and placed_on & {"cpu", "disk"}:
            raise PlacementError(f"--precision {spec.name}: quantised layers cannot be offloaded to cpu/disk; "
                                 f"add devices or memory, or use --precision int4")
        if "disk" in placed_on:
            raise PlacementError(f"--precision {spec.name}: quantised layers cannot be offloaded to disk")
        require_bitsandbytes(spec.name, main)
    if "disk" in placed_on and offload_dir is None:
        raise PlacementError(f"{name}: the device map offloads to disk; pass --offload-dir DIR")
    if warning:
        log.warning("%s", warning)

    # 3. Stream the tensors to their devices.
    device_of = {key: _device_of(key, plan_map) for key in expected}
    quantized = _quantized_weights(model, spec)
    if spec.quantized:
        _replace_linears(model, spec)
    offload_sub: Path | None = None
    offload_index: dict[str, Any] = {}
    digest = _Digest()
    loaded: dict[str, str] = {}
    try:
        from accelerate.utils import offload_weight, save_offload_index, set_module_tensor_to_device

        if "disk" in placed_on:
            assert offload_dir is not None
            Path(offload_dir).mkdir(parents=True, exist_ok=True)
            offload_sub = Path(tempfile.mkdtemp(prefix=f"evalkit-offload-{uuid.uuid4().hex[:6]}-", dir=offload_dir))
        mapper = ShardMapper(layout, expected)

        def place(key: str, t: torch.Tensor, origin: str) -> None:
            if key not in expected:
                raise CheckpointError(f"{origin}: key {key} is not in {name} (the checkpoint changed since it was checked?)")
            if key in loaded:
                raise CheckpointError(f"{origin}: key {key} already read from {loaded[key]}")
            if t.is_meta:
                raise CheckpointError(f"{origin}: tensor {key} holds no data (saved from the meta device)")
            if key in fit.resize:
                t = resize_pos_embed(t, fit.resize[key][1])
            device = device_of[key]
            value = t.to(spec.dtype) if t.is_floating_point() else t
            digest.add(key, value)
            if device == "disk":
                assert offload_sub is not None
                offload_weight(value, key, str(offload_sub), index=offload_index)
            elif key in quantized:
                owner, _, _ = key.rpartition(".")
                _set_quantized_weight(model.get_submodule(owner), value, device, spec)
            else:
                if device == "cpu" and value.data_ptr() == t.data_ptr():
                    _prefault(value)  # kept as read (memory-mapped when the file allows): bring it in now
                set_module_tensor_to_device(model, key, device, value=value, dtype=value.dtype, clear_cache=False)
            loaded[key] = origin

        for origin, tensors in _iter_source(source):
            mapped_shard = mapper.map(tensors)
            del tensors
            for key in list(mapped_shard):
                # popped, so each source tensor is released as soon as it is placed
                place(key, mapped_shard.pop(key), origin)
        leftover = mapper.finish()
        if leftover:
            raise CheckpointError(f"{source_name}: split q/k/v projections never completed: {', '.join(sorted(leftover)[:3])}")
        absent = [k for k in expected if k not in loaded and k not in fit.missing_allowed]
        if absent:
            raise CheckpointError(f"{source_name}: {len(absent)} tensor(s) were listed but never read: {', '.join(absent[:3])}")
        for key in fit.missing_allowed:
            value = _initial_value(model, key, spec.dtype)
            device = device_of[key]
            if device == "disk":
                assert offload_sub is not None
                offload_weight(value, key, str(offload_sub), index=offload_index)
            else:
                set_module_tensor_to_device(model, key, device, value=value, dtype=spec.dtype)
        if fit.missing_allowed:
            log.warning("%s: %d tensor(s) missing from the checkpoint were allowed (--allow-missing) and keep their "
                        "initial values: %s", name, len(fit.missing_allowed), ", ".join(fit.missing_allowed[:5]))
        if offload_sub is not None:
            save_offload_index(offload_index, str(offload_sub))
        on_meta = [k for k, t in model.named_parameters() if t.is_meta and device_of.get(k) != "disk"]
        if on_meta:
            raise CheckpointError(f"{source_name}: {len(on_meta)} tensor(s) left unloaded: {', '.join(on_meta[:3])}")
        _dispatch(model, plan_map, main, offload_sub)
    except BaseException:
        _release(model)
        if offload_sub is not None:
            shutil.rmtree(offload_sub, ignore_errors=True)
        raise
    if offload_sub is not None:
        # The offloaded weights live as long as the model that reads them.
        weakref.finalize(model, shutil.rmtree, str(offload_sub), True)
    model.requires_grad_(False)
    model.eval()
    elapsed = time.perf_counter() - started
    report = {
        "source": source_name,
        "layout": layout,
        "files": files,
        "bytes": stored_bytes,
        "notes": notes,
        "resized": fit.notes,
        "missing_allowed": fit.missing_allowed,
        "device_map": {k: _device_label(v) for k, v in plan_map.items()},
        "main_device": main_label,
        "precision": spec.name,
        "offload_dir": str(offload_sub) if offload_sub else None,
        "seconds": round(elapsed, 3),
    }
    log.info("%s: loaded %s in %.1f s onto %s", name, format_bytes(stored_bytes), elapsed,
             ", ".join(sorted({_device_label(d) for d in placed_on})))
    return PlacedModel(model=model, device_map=dict(plan_map), main_device=main_label, precision=spec,
                       digest=digest.hexdigest(), report=report, offload_dir=offload_sub)


def _dispatch(model: EvaClip, device_map: Mapping[str, int | str], main: int | str, offload_sub: Path | None) -> None:
    """accelerate's hooks over the map; plus the text tower's input hook when it is split."""
    from accelerate import dispatch_model
    from accelerate.hooks import add_hook_to_module

    with warnings.catch_warnings(), _quiet("accelerate.big_modeling"):
        # Entries for single tensors (class token, position embeddings) are accelerate's own
        # format, but its map check warns that they "do not match any submodules"; and its note
        # on offloaded parameters is replaced by ours, which says what offload costs.
        warnings.filterwarnings("ignore", message="The following device_map keys do not match")
        dispatch_model(
            model,
            device_map=dict(device_map),
            main_device=main,
            offload_dir=str(offload_sub) if offload_sub else None,
            preload_module_classes=PRELOAD_MODULES,
            force_hooks=len(set(device_map.values())) > 1,
        )
    if not _covered_whole("text", device_map):
        ln_final = _execution_device(_device_of("text.ln_final", device_map), main)
        add_hook_to_module(model.text, _send_inputs_hook(ln_final), append=True)
