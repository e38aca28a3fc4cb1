"""GPU throughput of an EVA-CLIP-18B-shaped vision tower: images/s and MFU, ready for the first GPU.

What it measures, on a CUDA machine, in one run of a few minutes (one JSON file out):

* the device's peak: large square GEMMs (fp16, bf16; int8 through ``torch._int_mm``), the best
  TFLOP/s (TOP/s) of a few sizes, each timed for a fraction of a second;
* the vision tower of the ``eva-clip-18b`` card (48 post-norm RMSNorm blocks, width 5120, 40
  heads of 128, MLP 25600, 224 px, patch 14: 257 tokens), built by the project's own
  :class:`evalkit.models.eva_clip.EvaVisionTransformer` with random weights straight on the GPU,
  with as many of its 48 blocks as fit (``--max-blocks`` caps it), at fp16, bf16 and int8
  (LLM.int8 through the project's quantisation path, :mod:`evalkit.models.quantize`; reported
  as skipped, with the reason, where bitsandbytes does not work);
* for batch sizes 8, 16, ..., 256 (stopping at the first out-of-memory): images/s of the tower
  as built, the full-depth figure extrapolated from it by FLOPs, model FLOPs utilisation
  against the measured peak of that dtype, and peak memory;
* the whole 18B-shaped model (vision and text towers, fp16) split over every GPU present by the
  project's placement code (accelerate's device map, :func:`evalkit.models.device_map.compute_device_map`,
  whole blocks per device), timed at a few batch sizes. With one GPU it says so.

FLOPs are counted analytically per image (:func:`vision_flops`): per block, the four Linear
layers' multiply-adds (2 FLOPs each: qkv, proj, fc1, fc2) for every token, plus attention's two
sequence-squared matmuls (Q·Kᵀ and P·V, 2·N²·W each); plus the patch embedding and the head.
Norms, softmax, GELU and residual adds are not counted (MFU convention). The full-depth
images/s is the measured one scaled by the FLOPs ratio of the built depth to 48 blocks, which
assumes every block runs at the same speed (they are identical).

Time: each setting is timed for ``--seconds`` after one warm-up forward; the whole run keeps
within ``--budget-s`` (default 240 s, plus start-up and model building): a setting whose
predicted time would pass the deadline is recorded as skipped, not run. The JSON is rewritten
after every stage, so a run cut short still leaves what it measured.

On a machine without CUDA it says so, writes ``{"cuda": false, ...}`` and exits 0. ``--smoke``
runs every step (peak GEMMs, building the tower at each precision, int8 included, the sweep,
the JSON) on the CPU with a toy-sized model of the same block design: a check of the script
where there is no GPU, whose figures mean nothing (tests/test_batching.py runs it).

    python benchmarks/bench_gpu.py --json benchmarks/out/gpu.json [--budget-s 240] [--seconds 2]
        [--max-blocks 48] [--precisions fp16,bf16,int8] [--batches 8,16,32,64,128,256] [--smoke]

On an H200 (141 GB) all 48 blocks should fit at every precision (fp16 weights: 35 GB), so the
full-depth figures are measured, not extrapolated. Estimated (not yet measured: no GPU so far) at
4 to 5 minutes in all; ``--budget-s`` bounds the timed part whatever the device's speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from clocks import conditions, conditions_line

from evalkit.features.batching import is_cuda_oom
from evalkit.models.eva_clip import EvaClipConfig, EvaVisionConfig, EvaVisionTransformer
from evalkit.models.families import eva_config
from evalkit.models.zoo import CARDS
from evalkit.results import atomic_write_text

CARD = "eva-clip-18b"
BATCHES = (8, 16, 32, 64, 128, 256)
PRECISIONS = ("fp16", "bf16", "int8")
SPLIT_BATCHES = (32, 128)
GEMM_SIZES = (8192, 16384)
MEMORY_FRACTION = 0.85  # of a GPU's free memory given to weights + the largest batch's activations


# -- pure pieces (tested on the CPU in tests/test_batching.py) -----------------------------------


def config_18b() -> EvaClipConfig:
    """The ``eva-clip-18b`` card's architecture (BAAI's EVA-CLIP-18B.json)."""
    return eva_config(CARDS[CARD])


def vision_flops(v: EvaVisionConfig, embed_dim: int, layers: int | None = None) -> dict[str, int]:
    """FLOPs of one image through a vision tower of ``layers`` blocks (default: ``v.layers``).

    N = grid² + 1 tokens, width W, MLP width H:
        per block   N · 2 · (3W² + W² + 2·W·H)   qkv, proj, fc1, fc2
                  + 2 · 2 · N² · W               Q·Kᵀ and P·V over all heads
        stem        2 · grid² · (3 · patch²) · W  patch embedding (a stride-patch conv)
        head        2 · W · embed_dim             projection of the class token
    """
    n = v.grid**2 + 1
    w, h = v.width, v.mlp_hidden
    linear = n * 2 * (3 * w * w + w * w + 2 * w * h)
    attention = 2 * 2 * n * n * w
    stem = 2 * v.grid**2 * (3 * v.patch_size**2) * w
    head = 2 * w * embed_dim
    depth = v.layers if layers is None else layers
    return {
        "tokens": n,
        "layers": depth,
        "per_block_linear": linear,
        "per_block_attention": attention,
        "per_block": linear + attention,
        "stem_and_head": stem + head,
        "total": depth * (linear + attention) + stem + head,
    }


def full_depth_images_per_s(images_per_s: float, flops_built: float, flops_full: float) -> float:
    """The full-depth throughput implied by one measured at a shallower depth, at the same
    FLOP rate: ``images_per_s × flops_built / flops_full`` (FLOPs per image)."""
    return images_per_s * flops_built / flops_full


def mfu(images_per_s: float, flops_per_image: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the device's peak (None without a peak)."""
    if not peak_flops:
        return None
    return images_per_s * flops_per_image / peak_flops


def blocks_that_fit(free_bytes: int, block_bytes: int, fixed_bytes: int, activation_bytes: int,
                    max_blocks: int, fraction: float = MEMORY_FRACTION) -> int:
    """How many blocks of ``block_bytes`` fit in ``fraction`` of ``free_bytes`` next to the
    tower's other weights (``fixed_bytes``) and one batch's activations, at most ``max_blocks``."""
    room = int(free_bytes * fraction) - fixed_bytes - activation_bytes
    return max(0, min(max_blocks, room // block_bytes))


def predicted_seconds(last_forward_s: float | None, growth: float, seconds: float) -> float:
    """Predicted wall time of the next setting: its forward (the last one's × ``growth``, the
    batch ratio) once to warm up, then as many as fill ``seconds``, at least one."""
    if last_forward_s is None:
        return 0.0
    t = last_forward_s * growth
    return t + max(t, seconds)


def sweep(
    forward: Callable[[int], Any],
    batches: Sequence[int],
    *,
    seconds: float,
    deadline: float,
    flops_per_image: float,
    flops_full: float,
    peak: float | None,
    is_oom: Callable[[BaseException], bool] = is_cuda_oom,
    sync: Callable[[], None] = lambda: None,
    release: Callable[[], None] = lambda: None,
    peak_memory: Callable[[], int | None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[dict[str, Any]]:
    """``forward(batch)`` timed at each batch size, smallest first: one warm-up, then repeated
    until ``seconds`` have passed. Stops at the first out-of-memory (recorded) and records as
    skipped what would pass ``deadline`` (a ``clock`` time). A row: batch, iterations, seconds,
    images/s at the built depth and extrapolated to full depth, TFLOP/s, MFU, peak memory."""
    rows: list[dict[str, Any]] = []
    last: float | None = None
    prev_batch: int | None = None
    for b in batches:
        growth = b / prev_batch if prev_batch else 1.0
        if clock() + predicted_seconds(last, growth, seconds) > deadline:
            rows.append({"batch": b, "skipped": "time budget (--budget-s) would be exceeded"})
            continue
        oom = False
        try:
            t0 = clock()
            forward(b)  # warm-up: kernels chosen, allocator grown
            sync()
            last = clock() - t0
            iters, t0 = 0, clock()
            while True:
                forward(b)
                iters += 1
                sync()
                elapsed = clock() - t0
                if elapsed >= seconds:
                    break
        except Exception as e:
            if not is_oom(e):
                raise
            oom = True
        if oom:
            release()
            rows.append({"batch": b, "oom": True})
            break
        last = elapsed / iters
        prev_batch = b
        ips = b * iters / elapsed
        rows.append({
            "batch": b,
            "iterations": iters,
            "seconds": round(elapsed, 4),
            "images_per_s": ips,
            "images_per_s_full_depth": full_depth_images_per_s(ips, flops_per_image, flops_full),
            "tflops": ips * flops_per_image / 1e12,
            "mfu": mfu(ips, flops_per_image, peak),
            "peak_memory_bytes": peak_memory(),
        })
    return rows


def no_cuda_report(reason: str) -> dict[str, Any]:
    """What a machine without a GPU writes: that, and the analytic figures that need no GPU."""
    cfg = config_18b()
    return {
        "cuda": False,
        "reason": reason,
        "model": CARD,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "flops_per_image": vision_flops(cfg.vision, cfg.embed_dim),
        "conditions": conditions(),
    }


# -- on the device -------------------------------------------------------------------------------


class Backend:
    """The device a run measures: a CUDA GPU, or the CPU for ``--smoke`` (the same code path on a
    tiny model, to check the script where there is no GPU; its figures mean nothing)."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.index = (self.device.index or 0) if self.cuda else None

    @property
    def label(self) -> str:
        return f"cuda:{self.index}" if self.cuda else "cpu"

    def placement(self) -> int | str:
        """The device in accelerate's convention (a GPU index, or ``"cpu"``)."""
        return self.index if self.cuda else "cpu"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.index)

    def release(self, collect: bool = False) -> None:
        """Cached device memory back to the driver; ``collect``: first free what only reference
        cycles (a caught exception's frames) still hold (a garbage collection: ~0.5 s)."""
        if collect:
            gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def free_bytes(self) -> int:
        if self.cuda:
            return int(torch.cuda.mem_get_info(self.index)[0])
        import psutil

        return int(psutil.virtual_memory().available)

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.index)

    def peak_memory(self) -> int | None:
        """Peak bytes allocated since the last call (None on the CPU), and a new period begins."""
        if not self.cuda:
            return None
        value = int(torch.cuda.max_memory_allocated(self.index))
        torch.cuda.reset_peak_memory_stats(self.index)
        return value

    def describe(self) -> dict[str, Any]:
        if self.cuda:
            props = torch.cuda.get_device_properties(self.index)
            return {"device": props.name, "total_memory_bytes": int(props.total_memory),
                    "gpus": torch.cuda.device_count(), "cuda_version": torch.version.cuda}
        return {"device": f"cpu ({platform.processor() or platform.machine()})", "gpus": 0}


def time_op(op: Callable[[], Any], seconds: float, sync: Callable[[], None]) -> float:
    """Seconds per call of ``op`` after one warm-up call: at least 3 calls, and ``seconds`` of them."""
    op()
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        op()
        n += 1
        if n >= 3:
            sync()
            if time.perf_counter() - t0 >= seconds:
                break
    return (time.perf_counter() - t0) / n


def _why(e: BaseException) -> str:
    text = str(e).splitlines()[0][:300] if str(e) else ""
    return f"{type(e).__name__}: {text}"


def measure_peak(backend: Backend, sizes: Sequence[int], seconds: float) -> dict[str, Any]:
    """Best FLOP/s of square GEMMs per dtype (int8: ``torch._int_mm``, int32 out: OP/s)."""
    out: dict[str, Any] = {}
    dev = backend.label
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("int8", torch.int8)):
        best, by_size = 0.0, {}
        for n in sizes:
            a = b = op = None
            try:
                if dtype == torch.int8:
                    a = torch.randint(-64, 64, (n, n), dtype=dtype, device=dev)
                    b = torch.randint(-64, 64, (n, n), dtype=dtype, device=dev)
                    op = lambda a=a, b=b: torch._int_mm(a, b)  # noqa: E731
                else:
                    a = torch.randn(n, n, dtype=dtype, device=dev)
                    b = torch.randn(n, n, dtype=dtype, device=dev)
                    op = lambda a=a, b=b: a @ b  # noqa: E731
                rate = 2 * n**3 / time_op(op, seconds, backend.sync)
            except Exception as e:  # int8 GEMMs need a recent GPU and torch
                by_size[str(n)] = f"failed: {_why(e)}"
                continue
            finally:
                a = b = op = None
                backend.release()
            by_size[str(n)] = rate / 1e12
            best = max(best, rate)
        out[name] = {"peak_flops": best or None, "tflops_by_size": by_size}
    return out


def _init_value(name: str, shape: Sequence[int], dtype: torch.dtype, device: str) -> torch.Tensor:
    """Random weights (std 0.02) for matrices and embeddings, ones for norm weights, zeros for biases."""
    if len(shape) >= 2:
        return torch.empty(shape, dtype=dtype, device=device).normal_(0, 0.02)
    if name.endswith("bias"):
        return torch.zeros(shape, dtype=dtype, device=device)
    return torch.ones(shape, dtype=dtype, device=device)


def materialise(model: torch.nn.Module, placement: Callable[[str], int | str], precision: str) -> None:
    """Every tensor of ``model`` (on meta) made on its device (``placement(name)``: a GPU index
    or ``"cpu"``, accelerate's convention) with random values, each made there directly; block
    Linear weights quantised by bitsandbytes for int8/int4, as the streaming loader places them
    (:mod:`evalkit.models.quantize`)."""
    from accelerate.utils import set_module_tensor_to_device

    from evalkit.models.devices import device_label
    from evalkit.models.precision import parse_precision
    from evalkit.models.quantize import quantized_weights, replace_linears, set_quantized_weight

    spec = parse_precision(precision)
    quantized = quantized_weights(model, spec)
    if spec.quantized:
        replace_linears(model, spec)
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    for name in names:
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        shape = tuple(getattr(module, attr).shape)
        device = device_label(placement(name))
        if name in quantized:
            set_quantized_weight(module, _init_value(name, shape, torch.float16, device), device, spec)
        else:
            value = _init_value(name, shape, spec.dtype, device)
            set_module_tensor_to_device(model, name, device, value=value, dtype=spec.dtype)
    model.requires_grad_(False)
    model.eval()


def build_tower(cfg: EvaClipConfig, layers: int, precision: str, device: int | str = 0) -> torch.nn.Module:
    """The vision tower of ``cfg`` with ``layers`` blocks and random weights, on ``device``
    (a GPU index or ``"cpu"``)."""
    vcfg = replace(cfg.vision, layers=layers)
    with torch.device("meta"):
        tower = EvaVisionTransformer(vcfg, cfg.embed_dim)
    materialise(tower, lambda _name: device, precision)
    return tower


def tower_bytes(cfg: EvaClipConfig, precision: str) -> tuple[int, int]:
    """(bytes of one block, bytes of the rest of the vision tower) at ``precision``, from the
    memory planner's own sizes (quantisation statistics included)."""
    from evalkit.models.memory_plan import empty_model, weight_bytes

    one = empty_model(replace(cfg, vision=replace(cfg.vision, layers=1)))
    names = [n for n in one.state_dict() if n.startswith("visual.")]
    block = weight_bytes(one, precision, [n for n in names if n.startswith("visual.blocks.0.")])
    rest = weight_bytes(one, precision, [n for n in names if not n.startswith("visual.blocks.")])
    return block, rest


def _bnb_problem(precision: str, backend: Backend) -> str | None:
    from evalkit.models.precision import PlacementError
    from evalkit.models.quantize import require_bitsandbytes

    try:
        require_bitsandbytes(precision, backend.label)
    except PlacementError as e:
        return str(e)
    return None


def bench_precision(cfg: EvaClipConfig, precision: str, args: argparse.Namespace, peaks: dict[str, Any],
                    deadline: float, backend: Backend) -> dict[str, Any]:
    """One precision: build as many blocks as fit, then the batch sweep."""
    from evalkit.models.memory_plan import activation_bytes
    from evalkit.models.precision import parse_precision

    spec = parse_precision(precision)
    if spec.quantized:
        problem = _bnb_problem(precision, backend)
        if problem:
            return {"skipped": problem}
    block, rest = tower_bytes(cfg, precision)
    free = backend.free_bytes()
    act = activation_bytes(cfg, max(args.batches), spec.bytes_per_element)["image"]
    layers = blocks_that_fit(free, block, rest, act, min(args.max_blocks, cfg.vision.layers))
    info: dict[str, Any] = {"block_bytes": block, "other_bytes": rest, "free_bytes": free,
                            "activation_bytes_at_largest_batch": act, "blocks_built": layers}
    if layers < 1:
        info["skipped"] = "not one block fits next to the largest batch's activations"
        return info
    if time.perf_counter() >= deadline:
        info["skipped"] = "time budget (--budget-s) spent before this precision"
        return info
    t0 = time.perf_counter()
    tower = build_tower(cfg, layers, precision, backend.placement())
    backend.sync()
    info["build_seconds"] = round(time.perf_counter() - t0, 2)
    flops_built = vision_flops(cfg.vision, cfg.embed_dim, layers)["total"]
    flops_full = vision_flops(cfg.vision, cfg.embed_dim)["total"]
    info["flops_per_image_built"] = flops_built
    peak = (peaks.get("int8" if spec.quantized else precision) or {}).get("peak_flops")
    size = cfg.vision.image_size
    images: dict[int, torch.Tensor] = {}

    def forward(b: int) -> None:
        if b not in images:
            images.clear()
            images[b] = torch.randn(b, 3, size, size, device=backend.label).to(spec.dtype)
        with torch.inference_mode():
            tower(images[b])

    backend.reset_peak()
    try:
        info["rows"] = sweep(forward, args.batches, seconds=args.seconds, deadline=deadline,
                             flops_per_image=flops_built, flops_full=flops_full, peak=peak,
                             sync=backend.sync, release=lambda: backend.release(collect=True),
                             peak_memory=backend.peak_memory)
    finally:
        tower = None  # freed before the next precision is built
        images.clear()
        backend.release(collect=True)
    fp16_peak = (peaks.get("fp16") or {}).get("peak_flops")
    for row in info["rows"]:
        if spec.quantized and "images_per_s" in row:
            row["mfu_vs_fp16_peak"] = mfu(row["images_per_s"], flops_built, fp16_peak)
    done = [r for r in info["rows"] if "images_per_s" in r]
    if done:
        best = max(done, key=lambda r: r["images_per_s"])
        info["best"] = {k: best[k] for k in ("batch", "images_per_s", "images_per_s_full_depth", "mfu")}
    return info


def split_device_map(cfg: EvaClipConfig, budgets: dict[int | str, int], batch: int, precision: str = "fp16"
                     ) -> tuple[torch.nn.Module, dict[str, int | str]]:
    """The whole model of ``cfg`` on meta and the project's device map for it over ``budgets``
    (GPU index -> bytes), each GPU keeping room for ``batch``'s activations and the runtime."""
    from evalkit.models.device_map import compute_device_map
    from evalkit.models.memory_plan import GPU_RUNTIME_RESERVE, activation_bytes, empty_model
    from evalkit.models.precision import parse_precision

    model = empty_model(cfg)
    act = activation_bytes(cfg, batch, parse_precision(precision).bytes_per_element)["peak"]
    reserve = {d: act + GPU_RUNTIME_RESERVE for d in budgets if isinstance(d, int)}
    return model, compute_device_map(model, budgets, precision, reserve=reserve)


def bench_split(cfg: EvaClipConfig, args: argparse.Namespace, peaks: dict[str, Any], deadline: float,
                backend: Backend) -> dict[str, Any]:
    """The whole 18B-shaped model at fp16 over every GPU present (whole blocks per device)."""
    n = torch.cuda.device_count() if backend.cuda else 0
    names = [torch.cuda.get_device_name(i) for i in range(n)]
    if n < 2:
        what = f"one GPU ({names[0]})" if n == 1 else "no GPU"
        return {"gpus": n, "devices": names,
                "skipped": f"{what}: nothing to split over; the single-device rows above are the figure"}
    from accelerate import dispatch_model

    from evalkit.models.device_map import collapse_device_map, device_of, quiet_accelerate

    precision = "fp16"
    model, device_map = split_device_map(cfg, {i: int(torch.cuda.mem_get_info(i)[0]) for i in range(n)},
                                         max(SPLIT_BATCHES), precision)
    out: dict[str, Any] = {"gpus": n, "devices": names, "precision": precision,
                           "device_map": [[f"cuda:{d}" if isinstance(d, int) else d, m]
                                          for d, m in collapse_device_map(device_map)]}
    if any(not isinstance(d, int) for d in device_map.values()):
        out["skipped"] = "the 18B-shaped model does not fit on these GPUs at fp16"
        return out
    if time.perf_counter() >= deadline:
        out["skipped"] = "time budget (--budget-s) spent"
        return out

    def sync_all() -> None:
        for i in range(n):
            torch.cuda.synchronize(i)

    t0 = time.perf_counter()
    materialise(model, lambda name: device_of(name, device_map), precision)
    with warnings.catch_warnings(), quiet_accelerate("accelerate.big_modeling"):
        warnings.filterwarnings("ignore", message="The following device_map keys do not match")
        dispatch_model(model, device_map=dict(device_map), main_device=0, force_hooks=True)
    sync_all()
    out["build_seconds"] = round(time.perf_counter() - t0, 2)
    flops = vision_flops(cfg.vision, cfg.embed_dim)["total"]
    one_peak = (peaks.get(precision) or {}).get("peak_flops")
    size = cfg.vision.image_size
    images: dict[int, torch.Tensor] = {}

    def forward(b: int) -> None:
        if b not in images:
            images.clear()
            images[b] = torch.randn(b, 3, size, size, device="cuda:0").half()
        with torch.inference_mode():
            model.encode_image(images[b])

    try:
        out["rows"] = sweep(forward, SPLIT_BATCHES, seconds=args.seconds, deadline=deadline, flops_per_image=flops,
                            flops_full=flops, peak=one_peak * n if one_peak else None, sync=sync_all,
                            release=lambda: backend.release(collect=True))
    finally:
        model = None
        images.clear()
        backend.release(collect=True)
    out["mfu_against"] = f"{n} x cuda:0's measured fp16 peak (blocks run one device at a time, so at most 1/{n})"
    return out


def smoke_config() -> EvaClipConfig:
    """The 18B's block design (post-norm RMSNorm, head width 128, MLP ratio 5, patch 14, no qkv
    bias) at a toy size, for ``--smoke``."""
    cfg = config_18b()
    return replace(cfg, embed_dim=32, vision=replace(cfg.vision, image_size=28, width=128, layers=4),
                   text=replace(cfg.text, width=64, heads=2, layers=1, vocab_size=1000))


def run(args: argparse.Namespace, backend: Backend) -> dict[str, Any]:
    started = time.perf_counter()
    deadline = started + args.budget_s
    cfg = smoke_config() if args.smoke else config_18b()
    try:
        import bitsandbytes as bnb

        bnb_version: str | None = bnb.__version__
    except Exception:  # absent or broken: the int8 entry says why
        bnb_version = None
    start = conditions()
    report: dict[str, Any] = {
        "cuda": backend.cuda,
        "smoke": bool(args.smoke),
        "model": CARD if not args.smoke else f"{CARD} block design, toy size (--smoke)",
        **backend.describe(),
        "torch": torch.__version__,
        "bitsandbytes": bnb_version,
        "python": platform.python_version(),
        "settings": {"budget_s": args.budget_s, "seconds": args.seconds, "max_blocks": args.max_blocks,
                     "batches": list(args.batches), "precisions": list(args.precisions),
                     "gemm_sizes": list(args.gemm_sizes)},
        "config": cfg.to_dict(),
        "flops_per_image": vision_flops(cfg.vision, cfg.embed_dim),
    }

    def save() -> None:
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        report["conditions"] = conditions(start)  # host threads and load: the GPU's figures hardly feel them
        if args.json:
            atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")

    report["peak"] = measure_peak(backend, args.gemm_sizes, args.gemm_seconds)
    print("peak TFLOP/s:", {k: round((v["peak_flops"] or 0) / 1e12, 1) for k, v in report["peak"].items()}, flush=True)
    save()
    report["precisions"] = {}
    for precision in args.precisions:
        try:
            entry = bench_precision(cfg, precision, args, report["peak"], deadline, backend)
        except Exception as e:  # one precision failing must not lose the others
            entry = {"error": _why(e)}
            backend.release(collect=True)
        report["precisions"][precision] = entry
        print(precision, json.dumps(entry.get("best") or entry.get("skipped") or entry.get("error")), flush=True)
        save()
    try:
        report["split"] = bench_split(cfg, args, report["peak"], deadline, backend)
    except Exception as e:
        report["split"] = {"error": _why(e)}
        backend.release(collect=True)
    split = report["split"]
    print("split:", split.get("skipped") or split.get("error") or [r.get("images_per_s") for r in split.get("rows", [])],
          flush=True)
    save()
    print(conditions_line(report["conditions"]))
    return report


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return tuple(sorted(set(values)))


def _precisions(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [v for v in values if v not in PRECISIONS]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(PRECISIONS)}; got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the figures here (one JSON file)")
    ap.add_argument("--budget-s", type=float, default=240.0, help="time for all the timed settings (default 240)")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per setting after its warm-up")
    ap.add_argument("--gemm-seconds", type=float, default=0.5, help="timed seconds per peak GEMM")
    ap.add_argument("--gemm-sizes", type=_int_list, default=GEMM_SIZES, help="peak GEMM sizes (default 8192,16384)")
    ap.add_argument("--max-blocks", type=int, default=48, help="build at most this many of the 48 blocks")
    ap.add_argument("--precisions", type=_precisions, default=PRECISIONS, help="fp16,bf16,int8 (default all)")
    ap.add_argument("--batches", type=_int_list, default=BATCHES, help="batch sizes (default 8,16,...,256)")
    ap.add_argument("--smoke", action="store_true",
                    help="run every step on the CPU with a toy-sized model: checks the script where there is no "
                    "GPU; its figures mean nothing")
    args = ap.parse_args(argv)
    if args.smoke:
        run(args, Backend("cpu"))
        return 0
    if not torch.cuda.is_available():
        reason = f"torch.cuda.is_available() is False (torch {torch.__version__}, built for CUDA {torch.version.cuda})"
        print(f"no CUDA device: nothing to measure ({reason})")
        if args.json:
            atomic_write_text(args.json, json.dumps(no_cuda_report(reason), indent=2) + "\n")
        return 0
    run(args, Backend("cuda:0"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
