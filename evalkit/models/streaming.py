"""The streaming loader: EVA-CLIP built on meta, checked, streamed shard by shard onto its devices.

Built on accelerate and bitsandbytes rather than beside them:

1. the model is created on the ``meta`` device (:func:`evalkit.models.memory_plan.empty_model`):
   no memory;
2. a device map comes from ``--devices`` and per-device budgets (:mod:`evalkit.models.devices`,
   :mod:`evalkit.models.memory_plan`: the same plan ``evalkit plan`` prints), after reserving
   room for activations; a transformer block never straddles two devices;
3. the checkpoint is checked against the model by key and shape from headers alone
   (:func:`evalkit.models.checkpoint.scan_checkpoint` + ``check_fits``): a misfit fails before
   one byte of weights is read;
4. tensors are then read shard by shard (safetensors memory-mapped, ``.pt``/``.bin`` through
   ``torch.load(mmap=True)``), renamed onto our layout, cast to the target dtype and put straight
   on their device (``set_module_tensor_to_device``), written to the offload folder
   (``offload_weight``) or quantised by bitsandbytes on their device
   (:mod:`evalkit.models.quantize`);
5. ``dispatch_model`` attaches the hooks that move activations (and offloaded weights) between
   devices, so a forward pass runs model-parallel over the map.

Host memory stays near one shard for GPU targets. On the CPU, a tensor already stored in the
target dtype is used in place from its read-only, copy-on-write file mapping (no copy: the page
cache is the model's memory, which is why a CPU load costs about one read of the files); any
other tensor is converted into fresh memory. A checkpoint file must therefore not be rewritten in
place while a model built from it is in use (writing a new file and renaming it is safe).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import shutil
import tempfile
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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
from evalkit.models.device_map import (
    covered_whole,
    device_of,
    execution_device,
    fix_glue,
    main_device,
    quiet_accelerate,
)
from evalkit.models.devices import (
    DeviceSpec,
    device_label,
    format_bytes,
    parse_devices,
)
from evalkit.models.eva_clip import EvaClip, EvaClipConfig
from evalkit.models.memory_plan import (
    does_not_fit,
    empty_model,
    offload_warning,
    plan_load,
    tensors_by_device,
)
from evalkit.models.precision import DEFAULT_PRECISION, PlacementError, Precision, parse_precision
from evalkit.models.quantize import (
    import_bitsandbytes,
    quantized_weights,
    replace_linears,
    require_bitsandbytes,
    set_quantized_weight,
)
from evalkit.progress import progress_bar

__all__ = ["PlacedModel", "load_eva_clip", "PRELOAD_MODULES"]

# The big-model path's log channel (named before the path was split into modules; logging
# configurations and tests address it by this name).
log = logging.getLogger("evalkit.placement")

# Modules whose forward reads a child's weight directly (``F.linear(x, self.qkv.weight, bias)``
# when q/v biases exist), so an offload hook must bring all of their weights in at once.
PRELOAD_MODULES = ["Attention"]


@dataclass
class PlacedModel:
    """A loaded, placed model and how it got there."""

    model: EvaClip
    device_map: dict[str, int | str]
    main_device: str
    precision: Precision
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
    precision: str | Precision = DEFAULT_PRECISION,
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
    progress: bool = False,
) -> PlacedModel:
    """Build EVA-CLIP from ``cfg`` on meta, check ``weights`` against it, and stream them onto
    ``devices`` at ``precision``. ``weights`` is a checkpoint path (file, folder or index) or an
    in-memory state dict; ``device_map`` overrides the computed map (accelerate format: module
    name -> GPU index, ``"cpu"`` or ``"disk"``). Raises :class:`CheckpointError` for a checkpoint
    that does not fit and :class:`PlacementError` for a placement that cannot work; after a
    failure no tensor of the model is left on any device and no offload file is left behind.
    """
    started = time.perf_counter()
    spec = parse_precision(precision)
    if spec.quantized:
        import_bitsandbytes(spec.name)  # fail fast; a working-kernel probe follows once devices are known
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

        main = main_device(device_map.values())
        plan_map = fix_glue(dict(device_map), main)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The following device_map keys do not match")
            check_device_map(model, plan_map)
        warning = offload_warning(name, plan_map, tensors_by_device(model, plan_map), model, spec, main)[1]
    else:
        plan = plan_load(cfg, dev_spec, spec, batch_size=batch_size, max_memory=max_memory, offload_dir=offload_dir,
                         name=name, model=model, cuda_count=cuda_count, gpu_free=gpu_free,
                         host_available=host_available)
        if not plan.fits:
            raise does_not_fit(plan)
        plan_map, main = plan.device_map, plan.main
        warning = plan.warnings[0] if plan.warnings else ""
    main_label = device_label(main)
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
    target_of = {key: device_of(key, plan_map) for key in expected}
    quantized = quantized_weights(model, spec)
    if spec.quantized:
        replace_linears(model, spec)
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
            device = target_of[key]
            value = t.to(spec.dtype) if t.is_floating_point() else t
            digest.add(key, value)
            if device == "disk":
                assert offload_sub is not None
                offload_weight(value, key, str(offload_sub), index=offload_index)
            elif key in quantized:
                owner, _, _ = key.rpartition(".")
                set_quantized_weight(model.get_submodule(owner), value, device, spec)
            else:
                if device == "cpu" and value.data_ptr() == t.data_ptr():
                    _prefault(value)  # kept as read (memory-mapped when the file allows): bring it in now
                set_module_tensor_to_device(model, key, device, value=value, dtype=value.dtype, clear_cache=False)
            loaded[key] = origin

        with progress_bar(len(expected), f"{name}: loading weights", "tensors", enabled=progress) as bar:
            for origin, tensors in _iter_source(source):
                mapped_shard = mapper.map(tensors)
                del tensors
                for key in list(mapped_shard):
                    # popped, so each source tensor is released as soon as it is placed
                    place(key, mapped_shard.pop(key), origin)
                    bar.update(1)
            bar.update(len(fit.missing_allowed))  # allowed to be absent: set below, counted here
        leftover = mapper.finish()
        if leftover:
            raise CheckpointError(f"{source_name}: split q/k/v projections never completed: {', '.join(sorted(leftover)[:3])}")
        absent = [k for k in expected if k not in loaded and k not in fit.missing_allowed]
        if absent:
            raise CheckpointError(f"{source_name}: {len(absent)} tensor(s) were listed but never read: {', '.join(absent[:3])}")
        for key in fit.missing_allowed:
            value = _initial_value(model, key, spec.dtype)
            device = target_of[key]
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
        on_meta = [k for k, t in model.named_parameters() if t.is_meta and target_of.get(k) != "disk"]
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
        "device_map": {k: device_label(v) for k, v in plan_map.items()},
        "main_device": main_label,
        "precision": spec.name,
        "offload_dir": str(offload_sub) if offload_sub else None,
        "seconds": round(elapsed, 3),
    }
    log.info("%s: loaded %s in %.1f s onto %s", name, format_bytes(stored_bytes), elapsed,
             ", ".join(sorted({device_label(d) for d in placed_on})))
    return PlacedModel(model=model, device_map=dict(plan_map), main_device=main_label, precision=spec,
                       digest=digest.hexdigest(), report=report, offload_dir=offload_sub)


def _dispatch(model: EvaClip, device_map: Mapping[str, int | str], main: int | str, offload_sub: Path | None) -> None:
    """accelerate's hooks over the map; plus the text tower's input hook when it is split."""
    from accelerate import dispatch_model
    from accelerate.hooks import add_hook_to_module

    with warnings.catch_warnings(), quiet_accelerate("accelerate.big_modeling"):
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
    if not covered_whole("text", device_map):
        ln_final = execution_device(device_of("text.ln_final", device_map), main)
        add_hook_to_module(model.text, _send_inputs_hook(ln_final), append=True)
