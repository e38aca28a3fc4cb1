"""Data parallel within a dataset on ``torch.distributed``, under the launchers users already run.

    torchrun --nproc-per-node 8 -m evalkit run --model ... --tasks ...   # one node, 8 processes
    accelerate launch -m evalkit run ...                                 # sets the same variables
    srun python -m evalkit run ...        # SLURM: MASTER_ADDR/MASTER_PORT from the sbatch script

:func:`detect` reads the launcher's environment (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT`` from torchrun and accelerate; ``SLURM_PROCID``/
``SLURM_STEP_NUM_TASKS``/``SLURM_LOCALID`` from an srun step, whose ``MASTER_ADDR`` and
``MASTER_PORT`` the sbatch script exports, see docs/slurm/evaluate.sbatch). No launcher, or a
world of one process: None, and evalkit runs as a plain single process (no process group).

:meth:`World.start` joins the process group once (gloo on the CPU; on CUDA nccl for tensors and
gloo for the Python objects evalkit exchanges, so features never pass through GPU memory to be
gathered), with a timeout (``EVALKIT_DIST_TIMEOUT`` seconds, default 3600).

How the ranks share a run (evalkit.features.embed and evalkit.api): every rank loads the model and
finds each task's data, then rank 0 (the *leader*) runs each task as a single process would.
Every step that runs the model over data (a dataset's images, a set of prompts or captions) is a
*collective step*: the leader announces it (:meth:`World.announce`), every rank encodes its share,
and the leader gathers the shares, joins them in order, scores and writes. The other ranks
(*followers*) run the same code up to each step with the same arguments (the leader sends them
what they need to: the cache plan, the samples' keys and labels); when the leader ends a task,
a follower's run of it stops at once (:class:`HandedOff`), so only the leader computes metrics
and writes results.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from evalkit.errors import EvalkitError

T = TypeVar("T")

log = logging.getLogger("evalkit")

TIMEOUT_ENV = "EVALKIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 3600.0

__all__ = [
    "DistributedError", "HandedOff", "Launch", "World", "active", "backend_for", "current", "detect",
    "devices_for_rank", "device_for_rank", "quiet",
]


class DistributedError(EvalkitError, RuntimeError):
    """The ranks of a job cannot start, or fell out of step; the message names the rank."""


class HandedOff(BaseException):  # noqa: N818 - not an error: a follower's part in a task is over
    """Raised on a follower rank when rank 0 has ended the current task: the follower's part in it
    is done (rank 0 scores and writes). A BaseException, so that no ``except Exception`` in a task
    family's code takes it for a failure; :func:`evalkit.api.evaluate` catches it."""


@dataclass(frozen=True)
class Launch:
    """What the launcher told this process: its rank among ``world_size`` processes, its rank on
    its node, and where rank 0 listens."""

    launcher: str  # "torchrun" (torchrun, accelerate launch), "env" (RANK/WORLD_SIZE set by hand), "slurm"
    rank: int
    world_size: int
    local_rank: int | None  # None: counted by host name once the group is up
    local_world_size: int | None  # None: counted by host name
    master_addr: str | None
    master_port: int | None


def _env_int(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r}: expected a whole number") from None


def detect(environ: Mapping[str, str] | None = None) -> Launch | None:
    """This process's place in a launched job, from its environment; None for a single process
    (no launcher, or a world of one).

    ``RANK`` and ``WORLD_SIZE`` (torchrun, ``accelerate launch``, or set by hand) come first;
    else an srun step (``SLURM_STEP_NUM_TASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``; the
    batch script itself, which has ``SLURM_NTASKS`` but is one process, is not a job of several).
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in env else "env"
        rank, world = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
        local = _env_int(env, "LOCAL_RANK")
        local_size = _env_int(env, "LOCAL_WORLD_SIZE")
    elif "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        launcher = "slurm"
        rank, world = _env_int(env, "SLURM_PROCID"), _env_int(env, "SLURM_STEP_NUM_TASKS")
        local = _env_int(env, "SLURM_LOCALID")
        local_size = None
    else:
        return None
    assert rank is not None and world is not None
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(f"{launcher}: rank {rank} is not within a world of {world} processes")
    if world == 1:
        return None
    addr = env.get("MASTER_ADDR") or None
    port = _env_int(env, "MASTER_PORT")
    if addr is None or port is None:
        hint = ("export them in the sbatch script before srun: MASTER_ADDR=$(scontrol show hostnames "
                "\"$SLURM_JOB_NODELIST\" | head -n 1), MASTER_PORT=a free port (see docs/slurm/evaluate.sbatch)"
                if launcher == "slurm" else "set them, or start evalkit with torchrun / accelerate launch")
        raise DistributedError(f"rank {rank}: {launcher} started {world} processes but MASTER_ADDR and MASTER_PORT "
                               f"are not set: {hint}")
    return Launch(launcher, rank, world, local, local_size, addr, port)


def backend_for(cuda: bool) -> str:
    """gloo on the CPU; on CUDA nccl for tensors and gloo for Python objects (all evalkit sends:
    features are gathered in host memory, never staged through a GPU)."""
    return "cpu:gloo,cuda:nccl" if cuda else "gloo"


def timeout_s(environ: Mapping[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    value = env.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise DistributedError(f"{TIMEOUT_ENV}={value!r}: expected seconds > 0")
    return seconds


# -- devices per rank --------------------------------------------------------------------------


def device_for_rank(device: str, local_rank: int, cuda_count: int, own_gpus: bool) -> str:
    """``--device`` of one rank: ``cuda`` is ``cuda:<LOCAL_RANK>`` (``cuda:0`` where the launcher
    gave each rank GPUs of its own, ``own_gpus``); ``cpu`` and an explicit ``cuda:N`` as given."""
    if device.strip().lower() != "cuda":
        return device
    if own_gpus or cuda_count == 1:
        return "cuda:0"
    if local_rank >= cuda_count:
        raise DistributedError(f"local rank {local_rank}: --device cuda, but this node shows {cuda_count} GPU(s); "
                               f"start at most {cuda_count} processes per node")
    return f"cuda:{local_rank}"


def devices_for_rank(devices: str, local_rank: int, local_size: int, cuda_count: int, own_gpus: bool) -> str:
    """``--devices`` of one rank. The list (``auto``: every visible GPU) names the node's GPUs;
    the node's ``local_size`` processes split it evenly, local rank r taking the r-th part
    (``0,1,2,3,4,5,6,7`` over 4 processes: rank 1 gets ``2,3``). Where the launcher gave each rank
    GPUs of its own (``own_gpus``: CUDA_VISIBLE_DEVICES differs between a node's processes, e.g.
    ``srun --gpus-per-task``), each rank uses its list as given. ``cpu`` and planning sizes as given."""
    from evalkit.models.devices import parse_devices

    spec = parse_devices(devices)
    if spec.cpu or spec.planning or local_size <= 1 or own_gpus:
        return devices
    gpus = list(range(cuda_count)) if spec.auto else list(spec.gpus)
    if not gpus:
        return devices  # auto on a machine without CUDA: the CPU, as in a single process
    if len(gpus) % local_size:
        raise DistributedError(f"--devices {devices}: {len(gpus)} GPU(s) cannot be split evenly over the {local_size} "
                               f"processes on this node; start a number of processes per node that divides it")
    per = len(gpus) // local_size
    return ",".join(str(g) for g in gpus[local_rank * per:(local_rank + 1) * per])


# -- the job -----------------------------------------------------------------------------------


@dataclass
class _Peer:
    host: str
    visible: str | None  # CUDA_VISIBLE_DEVICES


class World:
    """This process's place in a running job, the collectives evalkit uses (Python objects, from
    and to rank 0), and the lockstep of collective steps (:meth:`announce`, :meth:`settle`,
    :meth:`end_task`). Made by :meth:`start`."""

    def __init__(self, launch: Launch, *, owns_group: bool, local_rank: int, local_size: int,
                 own_gpus: bool, store: Any = None) -> None:
        self.launch = launch
        self.rank = launch.rank
        self.size = launch.world_size
        self.local_rank = local_rank
        self.local_size = local_size
        self.own_gpus = own_gpus
        self._owns_group = owns_group
        self._store = store
        self._step = 0
        self._pending: tuple[Any, ...] | None = None
        self._ended: tuple[Any, ...] | None = None  # the "end" a follower met inside a step (HandedOff)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def step(self) -> int:
        """The number of the current collective step (the same on every rank)."""
        return self._step

    def __repr__(self) -> str:
        return f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank}/{self.local_size})"

    @classmethod
    def start(cls, launch: Launch, cuda: bool = False, timeout: float | None = None) -> World:
        """Join the job's process group (once: a group the caller already made is used as is, and
        left for the caller to close) and learn who shares this node."""
        import torch.distributed as dist

        if not dist.is_available():
            raise DistributedError(f"rank {launch.rank}: this torch build has no torch.distributed")
        owns = False
        if dist.is_initialized():
            if dist.get_rank() != launch.rank or dist.get_world_size() != launch.world_size:
                raise DistributedError(f"rank {launch.rank}: a process group is already running as rank "
                                       f"{dist.get_rank()} of {dist.get_world_size()}, not as the launcher says")
        else:
            seconds = timeout_s() if timeout is None else timeout
            try:
                dist.init_process_group(backend_for(cuda), init_method="env://", rank=launch.rank,
                                        world_size=launch.world_size, timeout=datetime.timedelta(seconds=seconds))
            except Exception as e:
                raise DistributedError(f"rank {launch.rank}: cannot join the process group at "
                                       f"{launch.master_addr}:{launch.master_port}: {e}") from e
            owns = True
        peers: list[Any] = [None] * launch.world_size
        dist.all_gather_object(peers, _Peer(socket.gethostname(), os.environ.get("CUDA_VISIBLE_DEVICES")))
        mine = peers[launch.rank]
        same_host = [r for r, p in enumerate(peers) if p.host == mine.host]
        local_rank = launch.local_rank if launch.local_rank is not None else same_host.index(launch.rank)
        local_size = launch.local_world_size or len(same_host)
        own_gpus = len({peers[r].visible for r in same_host}) > 1
        try:
            store = dist.distributed_c10d._get_default_store()  # progress counters; optional
        except Exception:  # pragma: no cover - a torch without it: progress at the end of each step only
            store = None
        return cls(launch, owns_group=owns, local_rank=local_rank, local_size=local_size, own_gpus=own_gpus,
                   store=store)

    # -- collectives (Python objects; rank 0 is the root) ----------------------------------------
    def _collective(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as e:
            from evalkit.errors import one_line

            raise DistributedError(f"rank {self.rank}: lost the other ranks while {what} (did a rank fail? the "
                                   f"launcher's report names it): {one_line(e)}") from e

    def broadcast(self, obj: Any = None, what: str = "exchanging data") -> Any:
        """Rank 0's ``obj`` on every rank."""
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        self._collective(what, lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def gather(self, obj: Any, what: str = "gathering results") -> list[Any] | None:
        """Every rank's ``obj``, in rank order, on rank 0; None elsewhere."""
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.size if self.is_main else None
        self._collective(what, lambda: dist.gather_object(obj, out, dst=0))
        return out

    def all_gather(self, obj: Any, what: str = "exchanging data") -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        self._collective(what, lambda: dist.all_gather_object(out, obj))
        return out

    def barrier(self) -> None:
        import torch.distributed as dist

        self._collective("waiting at a barrier", dist.barrier)

    def all_or_none(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` on every rank; if it fails on any, it fails on all, naming the rank (so that no
        rank goes on to wait for one that gave up)."""
        from evalkit.errors import one_line

        try:
            value, error = fn(), None
        except Exception as e:  # a bug too: every rank must reach the gather, and the bug is raised here
            value, error = None, e
        reports = self.all_gather(None if error is None else one_line(error), what)
        if error is not None:
            raise error
        bad = [(r, why) for r, why in enumerate(reports) if why is not None]
        if bad:
            rank, why = bad[0]
            raise DistributedError(f"rank {rank}: {what} failed: {why}")
        return value  # type: ignore[return-value]

    def close(self, clean: bool = True) -> None:
        """Leave the group (if :meth:`start` made it): after a barrier when every rank got here."""
        import torch.distributed as dist

        if not self._owns_group or not dist.is_initialized():
            return
        try:
            if clean:
                self.barrier()
        finally:
            dist.destroy_process_group()
            self._owns_group = False

    # -- progress, shared through the launcher's key-value store ---------------------------------
    def add_progress(self, key: str, n: int) -> int | None:
        """Add ``n`` to a job-wide counter (``n=0``: read it); None where there is no store."""
        if self._store is None:
            return None
        try:
            return int(self._store.add(f"evalkit/{key}", n))
        except Exception:  # progress is never worth failing a run for
            return None

    # -- the lockstep of collective steps --------------------------------------------------------
    def announce(self, kind: str, info: Any = None) -> Any:
        """Begin a collective step. Rank 0 sends ``(kind, info)``; another rank receives it, checks
        that it is at the same step, and gets ``info``. A follower whose task rank 0 has already
        ended gets :class:`HandedOff`."""
        self._step += 1
        if self.is_main:
            self.broadcast(("step", kind, self._step, info), f"starting {kind}")
            return info
        header = self._pending if self._pending is not None else self.broadcast(None, f"waiting for {kind}")
        self._pending = None
        if header[0] == "end":
            self._hand_off(header)
        _, theirs, step, info = header
        if theirs != kind or step != self._step:
            raise DistributedError(f"rank {self.rank}: out of step with rank 0 (it is at step {step}, {theirs}; this "
                                   f"rank at step {self._step}, {kind}); every rank must see the same tasks and data")
        return info

    def settle(self) -> None:
        """After a follower's part in a collective step: wait for rank 0's next step, and stop the
        follower's run of the task (:class:`HandedOff`) if rank 0 ended it instead."""
        if self.is_main:
            return
        header = self.broadcast(None, "waiting for rank 0")
        if header[0] == "end":
            self._hand_off(header)
        self._pending = header

    def _hand_off(self, header: tuple[Any, ...]) -> None:
        self._ended = header
        self._step = header[1]
        raise HandedOff()

    def end_task(self, abort: str | None = None, failed: BaseException | None = None) -> None:
        """Rank 0: the current task is over (``abort``: and the run stops, with this reason). A
        follower: take that word (if a step has not already), after its own run of the task ended
        (``failed``: with this error)."""
        from evalkit.errors import one_line

        if self.is_main:
            self.broadcast(("end", self._step, abort), "ending a task")
            return
        header = self._ended
        self._ended = None
        if header is None:
            header = self._pending if self._pending is not None else self.broadcast(None, "waiting for rank 0")
            self._pending = None
        if header[0] != "end":
            mine = f" after failing here ({one_line(failed)})" if failed is not None else ""
            raise DistributedError(f"rank {self.rank}: out of step with rank 0: this rank finished the task{mine}, "
                                   f"rank 0 went on to step {header[2]}, {header[1]}")
        self._step = header[1]
        if header[2] is not None:
            raise DistributedError(f"rank {self.rank}: rank 0 stopped the run: {header[2]}")


_ACTIVE: list[World] = []


def current() -> World | None:
    """The job this process is running a task of (set by :func:`active`), or None: a single process.
    Kept here rather than passed down because task families call the model loop
    (evalkit.features.embed) without knowing of ranks; like torch.distributed's own group, it is
    per-process state, set and reset by :func:`evalkit.api.evaluate` alone."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def active(world: World) -> Iterator[World]:
    _ACTIVE.append(world)
    try:
        yield world
    finally:
        _ACTIVE.remove(world)


@contextlib.contextmanager
def quiet(world: World | None) -> Iterator[None]:
    """On a follower rank: evalkit's log below errors and Python warnings are not shown (rank 0
    says it once for the job); errors still are."""
    if world is None or world.is_main:
        yield
        return
    logger = logging.getLogger("evalkit")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
