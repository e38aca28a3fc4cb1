"""``--device auto`` and ``--precision auto``: where and at what precision ``evalkit run`` puts a
model when not told, decided before any weights are read.

    device auto      every visible GPU: the first one when the model fits it, all of them (the
                     model split into whole blocks, :mod:`evalkit.models.device_map`) when it does
                     not; the CPU when there is no GPU
    precision auto   the card's release precision on a GPU (fp16 for EVA-CLIP-18B, whose released
                     weights are fp16; fp32 for cards released in fp32); fp32 on the CPU, its fastest

For EVA-CLIP cards the placement is then checked with the loader's own memory plan
(:func:`evalkit.models.memory_plan.plan_load`), explicit options included, so a model that cannot
fit (the 18B at fp32 on a CPU box) stops here with one line that gives the plan's figures and the
options that would make it fit, before a checkpoint is located, downloaded or read.

The CUDA facts (``cuda_count``, ``gpu_free``, ``host_available``) can be passed in, so the choice is
tested with fake device lists, as the planner is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from evalkit.models.precision import AUTO_PRECISION, PlacementError, parse_precision
from evalkit.models.zoo import CARDS, ModelCard

__all__ = ["AUTO", "Placement", "choose_placement", "gpu_total", "visible_gpus", "wants_cuda"]

AUTO = AUTO_PRECISION  # the same word for --device, --devices and --precision


@dataclass(frozen=True)
class Placement:
    """What the model loader is given: ``device`` (``cpu``, ``cuda``, ``cuda:N``), ``devices`` (the
    big-model path's device list, or None), ``precision`` (a precision name, never ``auto``).
    ``chosen``: for each option left to ``auto``, what was chosen (recorded in every result);
    ``fit``: the memory plan's figures when one was made (EVA-CLIP cards)."""

    device: str
    devices: str | None
    precision: str
    chosen: dict[str, str] = field(default_factory=dict)
    fit: dict[str, Any] | None = None
    unfit: PlacementError | None = None  # the plan's one-line error, when raising it was deferred

    def check(self) -> None:
        """Raise the deferred error of a model that does not fit (:func:`choose_placement`'s ``defer_fit``)."""
        if self.unfit is not None:
            raise self.unfit


def visible_gpus() -> int:
    """The GPUs this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _planned_card(model: str, text_model: str | None) -> ModelCard | None:
    """The EVA-CLIP card whose memory decides the placement: the model's own, or for a point
    encoder paired with a text tower (Uni3D), that text tower's card."""
    card = CARDS.get(model)
    if card is not None and card.family == "uni3d":
        card = CARDS.get(text_model or card.text_model or "")
    return card if card is not None and card.family == "eva_clip" else None


def _release_precision(model: str, text_model: str | None) -> str:
    card = CARDS.get(model)
    if card is not None and card.family == "uni3d":
        # a point tower runs at its text tower's precision; quantised towers do not exist for it
        text = CARDS.get(text_model or card.text_model or "")
        return text.release_precision if text is not None else card.release_precision
    return card.release_precision if card is not None else "fp32"


def wants_cuda(device: str, devices: str | None, cuda_count: int) -> bool:
    """Whether these options will use the GPUs (``auto`` does when there are any); what a launched
    job needs to know, before anything is measured, to pick its process-group backend."""
    if devices is not None:
        return devices.strip().lower() != "cpu" and cuda_count > 0
    device = device.strip().lower()
    return cuda_count > 0 if device == AUTO else device.startswith("cuda")


def gpu_total(index: int) -> int:
    """A GPU's total memory, read without opening a CUDA context on it: what a launched job's rank
    0 plans with for every rank's GPUs (the loader then measures the free memory of its own)."""
    import torch

    return int(torch.cuda.get_device_properties(index).total_memory)


def _share(gpus: list[int], ranks_per_node: int) -> list[int]:
    """Local rank 0's part of a node's GPU list split over its processes (evalkit.features.distributed.
    devices_for_rank's rule); the whole list when it does not split evenly (the loader says so)."""
    if ranks_per_node <= 1 or not gpus or len(gpus) % ranks_per_node:
        return gpus
    return gpus[: len(gpus) // ranks_per_node]


def choose_placement(
    model: str,
    *,
    device: str = AUTO,
    devices: str | None = None,
    precision: str = AUTO,
    batch_size: int | str = 64,
    max_memory: str | Mapping[Any, Any] | None = None,
    offload_dir: Any = None,
    text_model: str | None = None,
    cuda_count: int | None = None,
    gpu_free: Callable[[int], int] | None = None,
    host_available: Callable[[], int] | None = None,
    defer_fit: bool = False,
    ranks_per_node: int = 1,
    own_gpus: bool = False,
) -> Placement:
    """Resolve ``auto`` in ``device``/``devices``/``precision`` for ``model`` and check that the
    result fits (EVA-CLIP cards). Raises :class:`PlacementError` (one line) when it does not, or,
    with ``defer_fit``, keeps that error in the placement for :meth:`Placement.check` (``evalkit
    run`` reports missing data first).

    In a launched job, rank 0 decides for every rank: ``ranks_per_node`` processes share the node's
    GPUs (each takes its own GPU, or an even share of them, as :mod:`evalkit.features.distributed` places
    ranks; not when the launcher gave each rank GPUs of its own, ``own_gpus``) and its host memory
    (each loads a copy of the model), so the fit is checked for one rank's share."""
    from evalkit.models.devices import parse_devices, parse_max_memory
    from evalkit.models.memory_plan import does_not_fit, empty_model, plan_load

    cuda_count = visible_gpus() if cuda_count is None else cuda_count
    gpu_sharers = 1 if own_gpus else max(1, ranks_per_node)
    if ranks_per_node > 1:
        from evalkit.models.devices import host_memory_available

        host = host_available or host_memory_available
        host_available = lambda: host() // ranks_per_node  # noqa: E731 - every rank holds a copy
    device = device.strip().lower()
    chosen: dict[str, str] = {}
    plan_batch = 64 if batch_size == AUTO else int(batch_size)
    card = _planned_card(model, text_model)
    cfg = None
    meta_model = None
    if card is not None:
        from evalkit.models import eva_config  # the package's one config reader

        cfg = eva_config(card)
        meta_model = empty_model(cfg)

    def plan(where: str, at: str, offload: bool = True, caps: Any = max_memory) -> Any:
        assert cfg is not None
        return plan_load(cfg, where, at, batch_size=plan_batch, max_memory=caps, offload_dir=offload_dir,
                         name=card.name if card else model, model=meta_model, cuda_count=cuda_count,
                         gpu_free=gpu_free, host_available=host_available, offload=offload)

    auto_device = devices is None and device == AUTO
    if devices is not None and devices.strip().lower() == AUTO and cuda_count == 0:
        devices = "cpu"  # `--devices auto` on a machine without a GPU: the CPU, as `evalkit plan` says
        chosen["devices"] = "cpu (no GPU visible)"
    on_gpu = wants_cuda(device, devices, cuda_count)
    if devices is not None and device == AUTO:
        device = "cuda" if on_gpu else "cpu"  # --devices decides; the compute device follows it
    if precision.strip().lower() == AUTO:
        precision = _release_precision(model, text_model) if on_gpu else "fp32"
        chosen["precision"] = precision
    parse_precision(precision)  # a bad name fails here, before anything is planned
    if not auto_device and devices is None and device.startswith("cuda"):
        index = device.removeprefix("cuda").removeprefix(":")
        if cuda_count == 0:
            raise PlacementError(f"--device {device}: CUDA is not available on this machine (use --device cpu, or "
                                 f"--device auto: the GPUs when there are any, else the CPU)")
        if index.isdigit() and int(index) >= cuda_count:
            raise PlacementError(f"--device {device}: GPU {index} does not exist; {cuda_count} visible "
                                 f"(0..{cuda_count - 1}; CUDA_VISIBLE_DEVICES renumbers them)")
    if auto_device:
        if cuda_count == 0:
            device = "cpu"
            chosen["device"] = "cpu (no GPU visible)"
        else:
            device = "cuda"
            caps = parse_max_memory(max_memory)
            if cfg is not None and gpu_sharers == 1 and any(isinstance(k, int) and k != 0 for k in caps):
                devices = AUTO  # --max-memory 0=30GiB,1=30GiB: caps for several GPUs ask for a split
                chosen["devices"] = "auto (--max-memory caps several GPUs)"
            elif cfg is not None and not plan("0", precision, offload=False,
                                               caps={k: v for k, v in caps.items() if not isinstance(k, int) or k == 0}
                                               ).fits:
                per_rank = cuda_count // gpu_sharers
                devices = AUTO if gpu_sharers == 1 else ",".join(str(g) for g in range(per_rank * gpu_sharers))
                gpus = f"{per_rank} GPU{'s' if per_rank != 1 else ''}" + (" per process" if gpu_sharers > 1 else "")
                chosen["devices"] = f"{devices} ({gpus}: the model does not fit one)"
            else:
                chosen["device"] = "cuda (one GPU holds the model)" if cfg is not None else "cuda"
    fit, unfit = None, None
    if cfg is not None and device.split(":")[0] in ("cpu", "cuda"):
        if devices is not None:
            spec = parse_devices(devices)
            gpus = list(range(cuda_count)) if spec.auto else list(spec.gpus)
            where = ",".join(str(g) for g in _share(gpus, gpu_sharers)) if gpus and gpu_sharers > 1 else devices
        else:
            where = device.removeprefix("cuda:") if device.startswith("cuda:") else ("0" if device == "cuda" else device)
        result = plan(where, precision)
        if not result.fits:
            unfit = does_not_fit(result)
            if not defer_fit:
                raise unfit
        fit = {"devices": result.devices, "weights_bytes": sum(d.weights for d in result.per_device),
               "main_device": str(result.main), "fits": result.fits}
    return Placement(device=device, devices=devices, precision=precision, chosen=chosen, fit=fit, unfit=unfit)
