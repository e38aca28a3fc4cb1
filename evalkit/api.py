"""The Python API: ``evalkit.evaluate(...)`` does what ``evalkit run`` does."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evalkit import models, stats
from evalkit.data.root import default_data_root
from evalkit.data.sources import DatasetNotFound
from evalkit.environment import environment, git_dirty
from evalkit.errors import EvalkitError, OptionError, OutputError, one_line, told
from evalkit.features import distributed
from evalkit.features.batching import as_memory_error
from evalkit.features.cache import run_cache_dir
from evalkit.features.embed import FeatureCache, default_cache_dir, default_num_workers
from evalkit.models.auto import Placement, choose_placement, gpu_total, visible_gpus, wants_cuda
from evalkit.models.family import card_default_weights
from evalkit.registry import task_families
from evalkit.results import (
    TaskResult,
    append_run_log,
    check_output_dir,
    git_commit,
    path_of,
    read_result,
    result_path,
    run_variant,
    safe_name,
    write_result,
)
from evalkit.tasks import load_builtin_families
from evalkit.tasks.base import RunContext
from evalkit.tasks.common import with_view
from evalkit.tasks.fetching import with_get_command
from evalkit.tasks.runspec import DEFAULT_CACHE, RunSpec
from evalkit.tasks.spec import TaskIndex, TaskSpec
from evalkit.version import __version__

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


def resolve_tasks(tasks: str | Sequence[str], task_dirs: Sequence[str | Path] | None = None, *,
                  transform: str | None = None, frames: str | None = None) -> list[TaskSpec]:
    """The tasks named, each checked by its family and its view parsed with ``transform`` /
    ``frames`` (``--transform`` / ``--frames``): a bad one fails here, before any data or weights."""
    return [spec for spec, _ in _resolve(tasks, task_dirs, transform=transform, frames=frames)]


def _resolve(tasks: str | Sequence[str], task_dirs: Sequence[str | Path] | None, *, transform: str | None,
             frames: str | None) -> list[tuple[TaskSpec, Any]]:
    """:func:`resolve_tasks`, each task with its family: made here, once, and used for the whole run
    (checking the task, finding its data, running it)."""
    names = [t for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise OptionError("no tasks given")
    index = TaskIndex.load(extra=[Path(d) for d in task_dirs or ()])
    load_builtin_families()
    resolved = []
    for spec in index.resolve(names):
        family = task_families.get(spec.family)()
        family.validate(spec)
        resolved.append((with_view(spec, family, transform=transform, frames=frames), family))
    return resolved


def evaluate(model: str, tasks: str | Sequence[str], *, spec: RunSpec | None = None, **options: Any) -> RunReport:
    """Evaluate ``model`` on ``tasks`` (names, groups or ad-hoc ``wds:``/``folder:``/``hf:`` specs).

    The run's options are the fields of :class:`evalkit.tasks.runspec.RunSpec`, each with its
    default there: given as keywords (``evaluate(m, t, limit=100, output_dir="out")``), or as
    ``spec=RunSpec(...)``, whose fields keywords then replace. An unknown keyword is a TypeError
    naming it.

    Task names are resolved, and every task's data found and checked, before the model is
    loaded, so a typo or a missing dataset costs nothing. Each task's result is written
    atomically to ``<output_dir>/runs/<model>/[<variant>/]<task>.json`` as soon as it is done
    (:func:`evalkit.results.result_path`; the variant folder for any precision but fp32 or
    weights other than the card's own; another text tower than a point encoder's card names is a
    variant of its own, ``fp32+text-eva-clip-18b``); a task that fails is reported (the moment it
    fails: ``on_failure``) and the others still run (``raise_errors`` re-raises).

    Started by a launcher (``torchrun``, ``accelerate launch``, ``srun``: see
    :mod:`evalkit.features.distributed`), every process runs this call: the ranks share each dataset's
    cache units and each set of prompts, and rank 0 alone scores, writes results and calls
    ``on_result`` / ``on_failure``; the others return a report with no results (and rank 0's
    failures). ``device="cuda"`` means each rank's own GPU (``cuda:<LOCAL_RANK>``); ``devices``
    names the node's GPUs, split evenly over its processes (:func:`evalkit.features.distributed.devices_for_rank`).
    Without a launcher, or with one process, nothing changes: no process group is made.
    """
    unknown = [name for name in options if name not in RunSpec.option_names()]
    if unknown:
        raise TypeError(f"evaluate() got an unexpected keyword argument {unknown[0]!r}")
    run = (spec or RunSpec()).replace(**options)
    # the run's cache folder, resolved once: features, classifiers and generated data (demo clips)
    run = run.replace(cache_dir=None if run.cache_dir is None else
                      default_cache_dir() if run.cache_dir == DEFAULT_CACHE else Path(run.cache_dir))
    # Task names first (a typo costs nothing), then where the model goes; whether it fits there is
    # said after the data check (missing data is reported first), before any checkpoint is located.
    resolved = _resolve(tasks, run.task_dirs, transform=run.transform, frames=run.frames)
    place = functools.partial(choose_placement, model, device=run.device, devices=run.devices,
                              precision=run.precision, batch_size=run.batch_size, max_memory=run.max_memory,
                              offload_dir=run.offload_dir, text_model=run.text_model, defer_fit=True)
    launch = distributed.detect()
    if launch is None:
        placement = place()
        with run_cache_dir(run.cache_dir):  # generated data (the demo's clips) goes under the run's cache folder
            return _evaluate(model, resolved, _placed(run, placement), placement=placement, world=None)
    world = distributed.World.start(launch, cuda=wants_cuda(run.device, run.devices, visible_gpus()))
    clean = False
    try:
        with distributed.active(world), distributed.quiet(world), run_cache_dir(run.cache_dir):
            # rank 0 decides for every rank (the same choice everywhere), from the GPUs' total memory
            # (no CUDA context opened on another rank's GPU) and the node's processes sharing them
            what = "choosing where the model goes"
            placement = world.broadcast(world.all_or_none(what, lambda: place(
                gpu_free=gpu_total, ranks_per_node=world.local_size, own_gpus=world.own_gpus) if world.is_main
                else None), what)
            report = _evaluate(model, resolved, _placed(run, placement), placement=placement, world=world)
        clean = True
        return report
    finally:
        world.close(clean)


def _signature() -> inspect.Signature:
    """:func:`evaluate`'s signature as ``help()`` and editors show it: the model, the tasks, ``spec``
    and every :class:`RunSpec` field as a keyword with its default (read from RunSpec, not listed here)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature([
        inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="str"),
        inspect.Parameter("tasks", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="str | Sequence[str]"),
        inspect.Parameter("spec", keyword, default=None, annotation="RunSpec | None"),
        *(inspect.Parameter(f.name, keyword, default=f.default, annotation=f.type) for f in dataclasses.fields(RunSpec)),
    ], return_annotation="RunReport")


evaluate.__signature__ = _signature()  # type: ignore[attr-defined]


def _placed(run: RunSpec, placement: Placement) -> RunSpec:
    """The run with what ``device`` / ``devices`` / ``precision`` auto chose in place of ``auto``."""
    return run.replace(device=placement.device, devices=placement.devices, precision=placement.precision)


def _evaluate(model: str, tasks: list[tuple[TaskSpec, Any]], run: RunSpec, *, placement: Placement,
              world: distributed.World | None) -> RunReport:
    """:func:`evaluate` in one process (``world`` None) or as one rank of a job."""
    lead = world is None or world.is_main
    specs = [spec for spec, _ in tasks]
    families = {spec.name: family for spec, family in tasks}
    output_dir = Path(run.output_dir)
    if lead:  # only rank 0 writes; a folder it cannot write to is found now, not after the run
        check_output_dir(output_dir)
    data_root = default_data_root(run.data_root)
    card = models.CARDS.get(model)
    # what produced a result besides the model name; the card's own weights need no label
    variant = run_variant(run.precision, None if card is not None and run.weights == card_default_weights(card)
                          else run.weights)
    if ((run.text_model is not None and (card is None or run.text_model != card.text_model))
            or run.text_weights is not None):
        variant += f"+text-{safe_name(run.text_model or 'card')}" + (
            f"-{safe_name(Path(run.text_weights).name)}" if run.text_weights else "")
    if run.limit is not None:  # a partial run never takes a full result's place (nor is read as one)
        variant = run_variant(variant, limit=run.limit)
    report = RunReport(rank=0 if world is None else world.rank, world_size=1 if world is None else world.size)

    by_name = {spec.name: spec for spec in specs}

    def fail(name: str, e: BaseException | str) -> None:
        if isinstance(e, DatasetNotFound) and name in by_name:  # ends with the command that fetches it
            e = with_get_command(e, by_name[name], run.data_root if run.data_root is not None else data_root)
        if run.raise_errors:
            raise e if isinstance(e, BaseException) else distributed.DistributedError(e)
        report.failures.append((name, e if isinstance(e, str) else told(e)))
        if isinstance(e, EvalkitError):
            log.debug("%s failed", name, exc_info=e)
        elif isinstance(e, BaseException):  # a bug, not the input: its traceback, at any log level
            log.error("%s failed with a bug in evalkit or a plugin:", name, exc_info=e)
        if run.on_failure is not None:
            run.on_failure(name, report.failures[-1][1])
        else:
            log.error("%s: %s", name, report.failures[-1][1])

    if run.skip_existing:
        todo = []
        for spec in specs:
            name = spec.view_spec.result_name(spec.name)
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
    if run.download:  # fetch what a task lacks, before any weights are read (and before the data check)
        _download(specs, data_root, run, world, fail, report)
        specs = [s for s in specs if s.name not in dict(report.failures)]
        if not specs:
            return report
    # Find and check every task's data before any weights are read (minutes for an 18B model).
    prepared: dict[str, Any] = {}
    failed_here: dict[str, BaseException] = {}
    for spec in specs:
        family = families[spec.name]
        if not prepares_data(family):
            continue
        try:
            prepared[spec.name] = family.prepare(spec, data_root)
        except Exception as e:  # an EvalkitError in one line, a bug with its traceback (fail); the run goes on
            if world is None:
                fail(spec.name, e)
            else:
                failed_here[spec.name] = e
    if world is not None:  # a task whose data a rank lacks is dropped on every rank, and said by rank 0
        failed_anywhere = world.all_gather({n: told(e) for n, e in failed_here.items()}, "checking the data")
        for spec in specs:
            where = [(r, f[spec.name]) for r, f in enumerate(failed_anywhere) if spec.name in f]
            if not where:
                continue
            prepared.pop(spec.name, None)
            if run.raise_errors and spec.name in failed_here:
                raise failed_here[spec.name]
            if lead or run.raise_errors:
                rank, why = where[0]
                fail(spec.name, failed_here[spec.name] if rank == 0 else f"rank {rank}: {why}")
            else:
                report.failures.append((spec.name, where[0][1]))
    specs = [s for s in specs if s.name not in dict(report.failures)]
    if not specs:
        return report
    placement.check()  # the model must fit where it goes: said now, before any checkpoint is located

    def load() -> Any:
        rank_device, rank_devices = run.device, run.devices
        if world is not None:
            cuda_count = torch.cuda.device_count()
            if run.devices is not None:
                rank_devices = distributed.devices_for_rank(run.devices, world.local_rank, world.local_size, cuda_count,
                                                            world.own_gpus)
                first = rank_devices.split(",")[0].strip().removeprefix("cuda:")
                if first.isdigit() and cuda_count:
                    torch.cuda.set_device(int(first))
            else:
                rank_device = distributed.device_for_rank(run.device, world.local_rank, cuda_count, world.own_gpus)
                if rank_device.startswith("cuda:"):
                    torch.cuda.set_device(int(rank_device.split(":")[1]))
        options = models.LoadOptions(
            devices=rank_devices, max_memory=run.max_memory, allow_missing=run.allow_missing,
            offload_dir=run.offload_dir,
            batch_size=64 if run.batch_size == "auto" else run.batch_size,  # the plan's activation reserve
            text_model=run.text_model, text_weights=run.text_weights, progress=run.progress and lead,
        )
        return models.load(model, weights=run.weights, precision=run.precision, device=rank_device, options=options)

    stats.prewarm()  # the intervals' libraries import while the model loads
    encoder = load() if world is None else world.all_or_none("loading the model", load)
    cache = FeatureCache(run.cache_dir)
    with contextlib.ExitStack() as stack:
        # a follower rank's run of a task stops where rank 0's scoring begins; should a family
        # write anything before that, it goes to a folder of its own, thrown away
        scratch = output_dir if lead else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="evalkit-rank")))
        ctx = RunContext(
            # the run as this process runs it: its data root found, loader workers for the model's
            # device, and only rank 0 prints progress and writes predictions
            run.replace(data_root=data_root,
                        num_workers=default_num_workers(encoder.device) if run.num_workers is None else run.num_workers,
                        save_predictions=run.save_predictions and lead, progress=run.progress and lead),
            output_dir=scratch,
            cache=cache,
            variant=variant,
            provenance={
                "evalkit_version": __version__,
                "git_commit": git_commit(),
                "git_dirty": git_dirty(),  # uncommitted changes to evalkit's tracked files; None: no checkout
                "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "python-api",
                "python": platform.python_version(),
                "torch": torch.__version__,
                # CUDA, cuDNN, GPUs, driver and the key libraries' versions (evalkit.environment)
                "environment": environment(),
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
            family = families[spec.name]
            if lead:
                _lead_task(spec, family, encoder, ctx, prepared, world, output_dir, run.raise_errors, fail, report,
                           run.on_result)
            else:
                _follow_task(spec, family, encoder, ctx, prepared, world)
    if world is not None:  # every rank returns rank 0's failures: the same exit status everywhere
        failures = world.broadcast(report.failures if lead else None, "finishing the run")
        if not lead:
            report.failures = [tuple(f) for f in failures]
    return report


def fetches_here(world: distributed.World | None) -> bool:
    """Whether this process fetches a run's missing data (``--download``): a lone process, or
    local rank 0 of each node of a launched job (the node's other ranks wait for it)."""
    return world is None or world.local_rank == 0


def _download(specs: list[TaskSpec], data_root: str | Path | None, run: RunSpec, world: distributed.World | None,
              fail: Callable[[str, BaseException | str], None], report: RunReport) -> None:
    """``--download``: fetch every task's missing data from the Hub (what its task file's
    ``fetch:`` names; no network for data in place). Under a launcher local rank 0 of each node
    fetches and the others wait for it (a collective: ``EVALKIT_DIST_TIMEOUT`` bounds the wait);
    ranks sharing a folder are serialised by the fetch's own lock. A task whose fetch fails is
    reported and dropped (on every rank); the others run."""
    from evalkit.tasks.fetching import fetch_task, missing_items

    if data_root is None:
        if any(spec.fetch for spec in specs):
            raise OptionError("--download needs a data root to fetch into: pass --data-root DIR or set $EVALKIT_DATA")
        return
    lead = world is None or world.is_main
    failed: dict[str, BaseException] = {}
    unreachable: list[BaseException] = []  # once the Hub cannot be reached, the other fetches are not tried
    if fetches_here(world):
        for spec in specs:
            items = missing_items(spec, data_root, hub_only=True)
            if not items:
                continue
            for outcome in fetch_task(spec, data_root, items=items, progress=run.progress,
                                      unreachable=unreachable):
                print(outcome.line, file=sys.stderr, flush=True)
                if not outcome.ok and spec.name not in failed:
                    failed[spec.name] = outcome.error or EvalkitError(outcome.line)
    if world is None:
        for name, e in failed.items():
            fail(name, e)
        return
    # every rank waits here for the fetching ranks, then drops the same tasks
    everywhere: dict[str, str] = {}
    for part in world.all_gather({n: told(e) for n, e in failed.items()}, "fetching the data (--download)"):
        for name, why in part.items():
            everywhere.setdefault(name, why)
    for name, why in everywhere.items():
        if run.raise_errors and name in failed:
            raise failed[name]
        if lead or run.raise_errors:
            fail(name, failed[name] if name in failed else why)
        else:
            report.failures.append((name, why))


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
    except Exception as e:  # an EvalkitError in one line, a bug with its traceback (fail); the next task runs
        e = as_memory_error(e)  # a batch too big for the GPU: the user's option, not a bug
        if world is not None:
            world.end_task(abort=f"{spec.name}: {one_line(e)}" if raise_errors else None)
        fail(spec.name, e)
        return
    if world is not None:
        world.end_task()
    result.evalkit.setdefault("variant", ctx.variant)  # a plugin family's result too: never in another's place
    # a plugin family that writes its whole result: the keys every result has, null when it says nothing
    for key in ("data_fingerprint", "timings", "data_revision"):
        result.evalkit.setdefault(key, None)
    _warn_if_replacing_other_weights(result, output_dir)
    try:
        path = write_result(result, output_dir)
    except OSError as e:
        kept = ("the features are in the cache, so a rerun scores the task without encoding it again"
                if ctx.cache.root is not None else "rerun it (with the cache on, a rerun would not encode it again)")
        fail(spec.name, OutputError(f"cannot write {path_of(result, output_dir)}: {e.strerror or e}; {kept}"))
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
    except Exception as e:  # rank 0 meets it too, and reports it; this rank only says it failed
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


