"""The Python API: ``evalkit.evaluate(...)`` does what ``evalkit run`` does."""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import evalkit
from evalkit import models
from evalkit.features import distributed
from evalkit.features.cache import run_cache_dir
from evalkit.data.root import default_data_root
from evalkit.errors import one_line
from evalkit.features.embed import FeatureCache, default_cache_dir, default_num_workers
from evalkit.models.auto import AUTO, Placement, choose_placement, gpu_total, visible_gpus, wants_cuda
from evalkit.models.precision import AUTO_PRECISION
from evalkit.registry import task_families
from evalkit.results import (
    TaskResult,
    append_run_log,
    check_output_dir,
    git_commit,
    path_of,
    read_result,
    result_name,
    result_path,
    run_variant,
    safe_name,
    write_result,
)
from evalkit.tasks import load_builtin_families
from evalkit.tasks.base import RunContext
from evalkit.tasks.spec import TaskIndex, TaskSpec

log = logging.getLogger("evalkit")


@dataclass
class RunReport:
    results: list[TaskResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (task, one-line reason)
    skipped_existing: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    rank: int = 0  # this process's rank in a launched job (evalkit.features.distributed); 0 alone
    world_size: int = 1  # the job's processes; only rank 0 has results

    @property
    def ok(self) -> bool:
        return not self.failures


def resolve_tasks(tasks: str | Sequence[str], task_dirs: Sequence[str | Path] | None = None) -> list[TaskSpec]:
    names = [t for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise ValueError("no tasks given")
    index = TaskIndex.load(extra=[Path(d) for d in task_dirs or ()])
    specs = index.resolve(names)
    load_builtin_families()
    for spec in specs:
        task_families.get(spec.family)().validate(spec)
    return specs


def evaluate(
    model: str,
    tasks: str | Sequence[str],
    *,
    weights: str | None = None,
    data_root: str | Path | None = None,
    precision: str = AUTO_PRECISION,
    batch_size: int | str = 64,
    prefetch: int | None = None,
    device: str = AUTO,
    output_dir: str | Path = "results",
    limit: int | None = None,
    num_workers: int | None = None,
    strict: bool = False,
    transform: str | None = None,
    frames: str | None = None,
    shots: Sequence[int] | None = None,
    seeds: int | None = None,
    save_predictions: bool = False,
    cache_dir: str | Path | None = "default",
    progress: bool = True,
    task_dirs: Sequence[str | Path] | None = None,
    skip_existing: bool = False,
    raise_errors: bool = False,
    devices: str | None = None,
    max_memory: str | Mapping[Any, Any] | None = None,
    allow_missing: Sequence[str] = (),
    offload_dir: str | Path | None = None,
    text_model: str | None = None,
    text_weights: str | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    on_result: Callable[[TaskResult, Path], None] | None = None,
) -> RunReport:
    """Evaluate ``model`` on ``tasks`` (names, groups or ad-hoc ``wds:``/``folder:``/``hf:`` specs).

    Task names are resolved, and every task's data found and checked, before the model is
    loaded, so a typo or a missing dataset costs nothing. Each task's result is written
    atomically to ``<output_dir>/runs/<model>/[<variant>/]<task>.json`` as soon as it is done
    (:func:`evalkit.results.result_path`; the variant folder for any precision but fp32 or
    weights other than the card's own); a task that fails is reported and the others still run
    (``raise_errors`` re-raises).

    ``num_workers``: data-loader processes; None picks :func:`evalkit.features.embed.default_num_workers`
    for the model's device (0 on CPU).

    Big EVA-CLIP models: ``devices`` (``"0,1"``, ``"auto"``, ``"cpu"``; overrides ``device``),
    ``max_memory`` (``"0=38GiB,cpu=64GiB"``), ``allow_missing`` (fnmatch patterns of checkpoint
    keys that may be absent), ``offload_dir`` and ``precision="int8"``/``"int4"``; see
    :func:`evalkit.models.load`.

    A point-cloud encoder (``uni3d-b``) scores against the text tower of ``text_model`` (default:
    its card's teacher), loaded from ``text_weights`` (default: that card's own); another text
    tower than the card's is a variant of its own (``fp32+text-eva-clip-18b``).

    Few-shot linear-probe tasks: ``shots`` (samples per class, e.g. ``[1, 2, 4, 8, 16]``) and
    ``seeds`` (seeds 0 … N-1) replace the task's own.

    ``on_failure(task, reason)`` is called the moment a task fails (its data missing, or the
    run itself), so a long run reports a failure when it happens; by default it is logged.
    ``on_result(result, path)`` is called as each result is written.

    Started by a launcher (``torchrun``, ``accelerate launch``, ``srun``: see
    :mod:`evalkit.features.distributed`), every process runs this call: the ranks share each dataset's
    cache units and each set of prompts, and rank 0 alone scores, writes results and calls
    ``on_result`` / ``on_failure``; the others return a report with no results (and rank 0's
    failures). ``device="cuda"`` means each rank's own GPU (``cuda:<LOCAL_RANK>``); ``devices``
    names the node's GPUs, split evenly over its processes (:func:`evalkit.features.distributed.devices_for_rank`).
    Without a launcher, or with one process, nothing changes: no process group is made.
    """
    # the run's cache folder, resolved once: features, classifiers and generated data (demo clips)
    cache_dir = None if cache_dir is None else (default_cache_dir() if cache_dir == "default" else Path(cache_dir))
    options = dict(locals())
    # Task names first (a typo costs nothing), then where the model goes; whether it fits there is
    # said after the data check (missing data is reported first), before any checkpoint is located.
    options["tasks"] = resolve_tasks(tasks, task_dirs)
    place = functools.partial(choose_placement, model, device=device, devices=devices, precision=precision,
                              batch_size=batch_size, max_memory=max_memory, offload_dir=offload_dir,
                              text_model=text_model, defer_fit=True)
    launch = distributed.detect()
    if launch is None:
        placement = place()
        options.update(device=placement.device, devices=placement.devices, precision=placement.precision,
                       placement=placement)
        with run_cache_dir(cache_dir):  # generated data (the demo's clips) goes under the run's cache folder
            return _evaluate(**options, world=None)
    world = distributed.World.start(launch, cuda=wants_cuda(device, devices, visible_gpus()))
    clean = False
    try:
        with distributed.active(world), distributed.quiet(world), run_cache_dir(cache_dir):
            # rank 0 decides for every rank (the same choice everywhere), from the GPUs' total memory
            # (no CUDA context opened on another rank's GPU) and the node's processes sharing them
            what = "choosing where the model goes"
            placement = world.broadcast(world.all_or_none(what, lambda: place(
                gpu_free=gpu_total, ranks_per_node=world.local_size, own_gpus=world.own_gpus) if world.is_main
                else None), what)
            options.update(device=placement.device, devices=placement.devices, precision=placement.precision,
                           placement=placement)
            report = _evaluate(**options, world=world)
        clean = True
        return report
    finally:
        world.close(clean)


def _evaluate(
    model: str,
    tasks: list[TaskSpec],
    *,
    world: distributed.World | None,
    placement: Placement,
    weights: str | None,
    data_root: str | Path | None,
    precision: str,
    batch_size: int | str,
    prefetch: int | None,
    device: str,
    output_dir: str | Path,
    limit: int | None,
    num_workers: int | None,
    strict: bool,
    transform: str | None,
    frames: str | None,
    shots: Sequence[int] | None,
    seeds: int | None,
    save_predictions: bool,
    cache_dir: str | Path | None,
    progress: bool,
    task_dirs: Sequence[str | Path] | None,
    skip_existing: bool,
    raise_errors: bool,
    devices: str | None,
    max_memory: str | Mapping[Any, Any] | None,
    allow_missing: Sequence[str],
    offload_dir: str | Path | None,
    text_model: str | None,
    text_weights: str | None,
    on_failure: Callable[[str, str], None] | None,
    on_result: Callable[[TaskResult, Path], None] | None,
) -> RunReport:
    """:func:`evaluate` in one process (``world`` None) or as one rank of a job."""
    lead = world is None or world.is_main
    specs = tasks
    output_dir = Path(output_dir)
    if lead:  # only rank 0 writes; a folder it cannot write to is found now, not after the run
        check_output_dir(output_dir)
    data_root = default_data_root(data_root)
    card = models.CARDS.get(model)
    # what produced a result besides the model name; the card's own weights need no label
    variant = run_variant(precision, None if card is not None and weights == card.default_weights else weights)
    if (text_model is not None and (card is None or text_model != card.text_model)) or text_weights is not None:
        variant += f"+text-{safe_name(text_model or 'card')}" + (f"-{safe_name(Path(text_weights).name)}"
                                                                 if text_weights else "")
    if limit is not None:  # a partial run never takes a full result's place (nor is read as one)
        variant = run_variant(variant, limit=limit)
    report = RunReport(rank=0 if world is None else world.rank, world_size=1 if world is None else world.size)

    def fail(name: str, e: BaseException | str) -> None:
        if raise_errors:
            raise e if isinstance(e, BaseException) else distributed.DistributedError(e)
        report.failures.append((name, e if isinstance(e, str) else one_line(e)))
        if isinstance(e, BaseException):
            log.debug("%s failed", name, exc_info=e)
        if on_failure is not None:
            on_failure(name, report.failures[-1][1])
        else:
            log.error("%s: %s", name, report.failures[-1][1])

    if skip_existing:
        todo = []
        for spec in specs:
            name = result_name(spec.name, frames if "frames" in spec.view else None, spec.view.get("frames"))
            if lead and result_path(output_dir, model, name, variant=variant).exists():
                report.skipped_existing.append(spec.name)
            else:
                todo.append(spec)
        if world is not None:  # rank 0's results folder decides, shared or not
            report.skipped_existing = world.broadcast(report.skipped_existing, "deciding what to skip")
            todo = [s for s in specs if s.name not in report.skipped_existing]
        specs = todo
        if not specs:
            return report
    # Find and check every task's data before any weights are read (minutes for an 18B model).
    prepared: dict[str, Any] = {}
    failed_here: dict[str, BaseException] = {}
    for spec in specs:
        family = task_families.get(spec.family)()
        if not prepares_data(family):
            continue
        try:
            prepared[spec.name] = family.prepare(spec, data_root)
        except (ValueError, OSError, RuntimeError) as e:
            if world is None:
                fail(spec.name, e)
            else:
                failed_here[spec.name] = e
    if world is not None:  # a task whose data a rank lacks is dropped on every rank, and said by rank 0
        failed_anywhere = world.all_gather({n: one_line(e) for n, e in failed_here.items()}, "checking the data")
        for spec in specs:
            where = [(r, f[spec.name]) for r, f in enumerate(failed_anywhere) if spec.name in f]
            if not where:
                continue
            prepared.pop(spec.name, None)
            if raise_errors and spec.name in failed_here:
                raise failed_here[spec.name]
            if lead or raise_errors:
                rank, why = where[0]
                fail(spec.name, failed_here[spec.name] if rank == 0 else f"rank {rank}: {why}")
            else:
                report.failures.append((spec.name, where[0][1]))
    specs = [s for s in specs if s.name not in dict(report.failures)]
    if not specs:
        return report
    placement.check()  # the model must fit where it goes: said now, before any checkpoint is located

    def load() -> Any:
        rank_device, rank_devices = device, devices
        if world is not None:
            cuda_count = torch.cuda.device_count()
            if devices is not None:
                rank_devices = distributed.devices_for_rank(devices, world.local_rank, world.local_size, cuda_count,
                                                            world.own_gpus)
                first = rank_devices.split(",")[0].strip().removeprefix("cuda:")
                if first.isdigit() and cuda_count:
                    torch.cuda.set_device(int(first))
            else:
                rank_device = distributed.device_for_rank(device, world.local_rank, cuda_count, world.own_gpus)
                if rank_device.startswith("cuda:"):
                    torch.cuda.set_device(int(rank_device.split(":")[1]))
        return models.load(
            model, weights=weights, precision=precision, device=rank_device, devices=rank_devices,
            max_memory=max_memory, allow_missing=allow_missing, offload_dir=offload_dir,
            batch_size=64 if batch_size == "auto" else batch_size,  # the plan's activation reserve
            text_model=text_model, text_weights=text_weights, progress=progress and lead,
        )

    encoder = load() if world is None else world.all_or_none("loading the model", load)
    cache = FeatureCache(cache_dir)
    with contextlib.ExitStack() as stack:
        # a follower rank's run of a task stops where rank 0's scoring begins; should a family
        # write anything before that, it goes to a folder of its own, thrown away
        scratch = output_dir if lead else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="evalkit-rank")))
        ctx = RunContext(
            data_root=data_root,
            output_dir=scratch,
            batch_size=batch_size,
            prefetch=prefetch,
            num_workers=default_num_workers(encoder.device) if num_workers is None else num_workers,
            limit=limit,
            strict=strict,
            transform=transform,
            frames=frames,
            shots=sorted(set(shots)) if shots else None,
            seeds=seeds,
            save_predictions=save_predictions and lead,
            progress=progress and lead,
            cache=cache,
            variant=variant,
            provenance={
                "evalkit_version": evalkit.__version__,
                "git_commit": git_commit(),
                "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "python-api",
                "python": platform.python_version(),
                "torch": torch.__version__,
                "weights": encoder.weights,
                # what --device/--devices/--precision auto chose (absent when everything was given)
                **({"auto": dict(placement.chosen)} if placement.chosen else {}),
                # a point encoder paired with a text tower: which, and its own fingerprint
                **({"text_model": encoder.arch["text_model"], "text_fingerprint": encoder.arch["text_fingerprint"]}
                   if "text_model" in encoder.arch else {}),
                # how prompts became tokens where the model's authors say (hf: padding, length, canonicalisation)
                **({"text_handling": encoder.arch["text_handling"]} if "text_handling" in encoder.arch else {}),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        for spec in specs:
            family = task_families.get(spec.family)()
            if lead:
                _lead_task(spec, family, encoder, ctx, prepared, world, output_dir, raise_errors, fail, report,
                           on_result)
            else:
                _follow_task(spec, family, encoder, ctx, prepared, world)
    if world is not None:  # every rank returns rank 0's failures: the same exit status everywhere
        failures = world.broadcast(report.failures if lead else None, "finishing the run")
        if not lead:
            report.failures = [tuple(f) for f in failures]
    return report


def _run_family(spec: TaskSpec, family: Any, encoder: Any, ctx: RunContext, prepared: dict[str, Any]) -> TaskResult:
    if spec.name in prepared:
        return family.run(spec, encoder, ctx, prepared=prepared.pop(spec.name))
    return family.run(spec, encoder, ctx)


def _lead_task(spec: TaskSpec, family: Any, encoder: Any, ctx: RunContext, prepared: dict[str, Any],
               world: distributed.World | None, output_dir: Path, raise_errors: bool,
               fail: Callable[[str, BaseException], None], report: RunReport,
               on_result: Callable[[TaskResult, Path], None] | None) -> None:
    """One task as a single process runs it, or as rank 0 of a job (which then tells the other
    ranks that the task is over, so that their run of it stops)."""
    try:
        result = _run_family(spec, family, encoder, ctx, prepared)
    except (ValueError, OSError, RuntimeError) as e:
        if world is not None:
            world.end_task(abort=f"{spec.name}: {one_line(e)}" if raise_errors else None)
        fail(spec.name, e)
        return
    if world is not None:
        world.end_task()
    result.evalkit.setdefault("variant", ctx.variant)  # a plugin family's result too: never in another's place
    _warn_if_replacing_other_weights(result, output_dir)
    try:
        path = write_result(result, output_dir)
    except OSError as e:
        kept = ("the features are in the cache, so a rerun scores the task without encoding it again"
                if ctx.cache.root is not None else "rerun it (with the cache on, a rerun would not encode it again)")
        fail(spec.name, OSError(f"cannot write {path_of(result, output_dir)}: {e.strerror or e}; {kept}"))
        return
    try:
        append_run_log(output_dir, result)  # one line per finished task: provenance and wall time
    except OSError as e:  # the result is written: say so, and go on
        log.warning("%s: result written to %s, but not logged in %s: %s", spec.name, path,
                    output_dir / "runs.jsonl", e.strerror or e)
    report.paths.append(path)
    report.results.append(result)
    if on_result is not None:
        on_result(result, report.paths[-1])


def _follow_task(spec: TaskSpec, family: Any, encoder: Any, ctx: RunContext, prepared: dict[str, Any],
                 world: distributed.World | None) -> None:
    """One task on a rank other than 0: the same code as rank 0's, up to its collective steps,
    until rank 0 ends the task. A failure here is rank 0's too (the same data, the same step), and
    rank 0 reports it; one that is not (this rank failed, rank 0 went on) stops the run."""
    assert world is not None
    failed: BaseException | None = None
    try:
        _run_family(spec, family, encoder, ctx, prepared)
    except distributed.HandedOff:
        pass
    except (ValueError, OSError, RuntimeError) as e:
        failed = e
        log.debug("%s failed on rank %d", spec.name, world.rank, exc_info=e)
    world.end_task(failed=failed)


def _warn_if_replacing_other_weights(result: TaskResult, output_dir: Path) -> None:
    """Weights are told apart by their path: new weights written to the same path (a retrained
    ``latest.pt``) land in the same place. Say so when the model's fingerprint changed."""
    path = path_of(result, output_dir)
    if not path.exists():
        return
    try:
        old = read_result(path).evalkit.get("fingerprint")
    except ValueError:
        return
    new = result.evalkit.get("fingerprint")
    if old and new and old != new:
        log.warning("%s: replaces a result of other weights (fingerprint %s, now %s)", path, old, new)


def prepares_data(family: Any) -> bool:
    """A family that finds its data before the model is loaded: it has ``prepare(spec, data_root)``
    and its ``run`` takes what that returned as ``prepared=`` (see evalkit.tasks.base.TaskFamily)."""
    import inspect

    return callable(getattr(family, "prepare", None)) and "prepared" in inspect.signature(family.run).parameters


