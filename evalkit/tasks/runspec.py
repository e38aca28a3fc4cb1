"""One run's options, each with its default, in one place: :class:`RunSpec`.

``evalkit run`` builds one from its flags (:meth:`RunSpec.from_args`), :func:`evalkit.evaluate`
from its keyword arguments (or takes one as ``spec=``), and the runner hands the same object to
every task family (``ctx.run``, :class:`evalkit.tasks.base.RunContext`). A new option is one field
here: the API's keywords, the runner and the families see it without being changed; the command
line adds its flag and one line in :meth:`RunSpec.from_args`.

Torch-free (the command line reads the defaults for ``--help``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import OptionError
from evalkit.models.auto import AUTO
from evalkit.models.precision import AUTO_PRECISION
from evalkit.stats import PROPORTION_METHODS

__all__ = ["DEFAULT_CACHE", "RunSpec"]

#: ``cache_dir``'s default: ``$EVALKIT_CACHE``, else ~/.cache/evalkit (evalkit.features.embed.default_cache_dir)
DEFAULT_CACHE = "default"


@dataclass(frozen=True)
class RunSpec:
    """Every option of a run. Sequences are kept as tuples; ``shots`` sorted, without repeats.

    Where the data and the results are:
      ``data_root`` the folder under which tasks find their data (None: ``$EVALKIT_DATA``);
      ``output_dir`` where results go (``<output_dir>/runs/<model>/[<variant>/]<task>.json``);
      ``cache_dir`` the feature / classifier cache, also holding generated data such as the demo's
      clips (``"default"``: ``$EVALKIT_CACHE``, else ~/.cache/evalkit; None: no cache);
      ``task_dirs`` extra folders of task YAMLs.

    The model: ``weights`` (a checkpoint, an open_clip tag, ``random``; None: the card's own),
    ``precision`` and ``device`` (``auto``: :mod:`evalkit.models.auto`), and for big EVA-CLIP models
    ``devices`` (``"0,1"``, ``"auto"``, ``"cpu"``; overrides ``device``), ``max_memory``
    (``"0=38GiB,cpu=64GiB"``), ``allow_missing`` (fnmatch patterns of checkpoint keys that may be
    absent) and ``offload_dir`` (:func:`evalkit.models.load`). A point-cloud encoder scores against
    the text tower of ``text_model`` (None: its card's teacher), loaded from ``text_weights``.

    The pass over the data: ``batch_size`` (or ``"auto"``), ``prefetch`` (batches prepared ahead;
    None: 2), ``num_workers`` (loader processes; None: :func:`evalkit.features.embed.default_num_workers`
    for the model's device), ``limit`` (the first N samples of each task), ``strict`` (fail on the first
    sample that does not decode instead of skipping it).

    What a task runs: ``transform`` (crop, squash, best-of-both; None: the task's own), ``frames``
    (a video task's frame sampler; None: the task's own), ``shots`` and ``seeds`` (few-shot
    linear-probe tasks: K samples per class, seeds 0 … N-1; None: the task's own).

    What a run does around its tasks: ``download`` (before any weights are read, fetch each
    task's missing data from the Hugging Face Hub, as ``evalkit data get`` does: the sources its
    task file's ``fetch:`` names; under a launcher, local rank 0 of each node fetches), ``records`` (per-sample records, ``<task>.records.npz``,
    beside each result: :mod:`evalkit.records`; False: none, and an earlier run's removed),
    ``fingerprint`` (the data loader hashes each decoded sample, and every result records the
    data's content fingerprint, :mod:`evalkit.data.fingerprint`; False: not hashed, recorded as
    ``data_fingerprint: null``), the
    intervals every result carries (:mod:`evalkit.intervals`): ``ci_level`` (0.95),
    ``proportion_interval`` (``wilson`` or ``clopper-pearson``) and ``resamples`` (the bootstrap's),
    ``save_predictions`` (each sample's top predictions as JSON lines beside each result), ``progress`` (bars on a terminal, a line per phase in a log), ``skip_existing`` (skip a task that
    has a result), ``raise_errors`` (re-raise a task's failure instead of reporting it and going
    on), ``on_failure(task, reason)`` called the moment a task fails (None: logged) and
    ``on_result(result, path)`` called as each result is written.
    """

    weights: str | None = None
    data_root: str | Path | None = None
    precision: str = AUTO_PRECISION
    batch_size: int | str = 64
    prefetch: int | None = None
    device: str = AUTO
    devices: str | None = None
    max_memory: str | Mapping[Any, Any] | None = None
    allow_missing: tuple[str, ...] = ()
    offload_dir: str | Path | None = None
    text_model: str | None = None
    text_weights: str | None = None
    output_dir: str | Path = "results"
    limit: int | None = None
    num_workers: int | None = None
    strict: bool = False
    transform: str | None = None
    frames: str | None = None
    shots: tuple[int, ...] | None = None
    seeds: int | None = None
    save_predictions: bool = False
    records: bool = True
    fingerprint: bool = True
    ci_level: float = 0.95
    proportion_interval: str = "wilson"
    resamples: int = 2000
    cache_dir: str | Path | None = DEFAULT_CACHE
    progress: bool = True
    task_dirs: tuple[str | Path, ...] = ()
    skip_existing: bool = False
    download: bool = False
    raise_errors: bool = False
    on_failure: Callable[[str, str], None] | None = field(default=None, compare=False, repr=False)
    on_result: Callable[..., None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # the few-shot options are checked here, when the run is described, not when its task runs
        if self.shots is not None and not all(_whole(k) and k >= 1 for k in self.shots):
            raise OptionError(f"shots must be whole numbers ≥ 1 (samples per class), got {self.shots!r}")
        if self.seeds is not None and not (_whole(self.seeds) and self.seeds >= 1):
            raise OptionError(f"seeds must be a whole number ≥ 1 (seeds 0 … N-1), got {self.seeds!r}")
        if not (isinstance(self.ci_level, float | int) and 0 < self.ci_level < 1):
            raise OptionError(f"ci_level must lie strictly between 0 and 1 (e.g. 0.95), got {self.ci_level!r}")
        if self.proportion_interval not in PROPORTION_METHODS:
            raise OptionError(f"proportion_interval must be one of {', '.join(PROPORTION_METHODS)}, "
                              f"got {self.proportion_interval!r}")
        if not (_whole(self.resamples) and self.resamples >= 100):
            raise OptionError(f"resamples must be a whole number ≥ 100 (bootstrap resamples), got {self.resamples!r}")
        # one form for each sequence, whatever the caller passed (a list, a tuple, None)
        set_ = object.__setattr__
        set_(self, "allow_missing", _as_tuple(self.allow_missing))
        set_(self, "task_dirs", _as_tuple(self.task_dirs))
        set_(self, "shots", tuple(sorted(set(self.shots))) if self.shots else None)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Every option's name, in order: what :func:`evalkit.evaluate` takes as keywords."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def default(cls, name: str) -> Any:
        """One option's default (the command line's defaults are these)."""
        f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
        if f is None:
            raise KeyError(f"no run option {name!r}")
        return f.default

    @classmethod
    def from_args(cls, args: Any, **extra: Any) -> RunSpec:
        """The options of ``evalkit run``'s parsed flags (an ``argparse.Namespace``); ``extra``:
        what the command line adds that is no flag (its ``on_result`` / ``on_failure`` printers)."""
        return cls(
            weights=args.weights,
            data_root=args.data_root,
            precision=args.precision,
            batch_size=args.batch_size,
            prefetch=args.prefetch,
            device=args.device,
            devices=args.devices,
            max_memory=args.max_memory,
            allow_missing=tuple(args.allow_missing or ()),
            offload_dir=args.offload_dir,
            text_model=args.text_model,
            text_weights=args.text_weights,
            output_dir=args.output_dir,
            limit=args.limit,
            num_workers=args.num_workers,
            strict=args.strict,
            transform=args.transform,
            frames=args.frames,
            shots=args.shots,
            seeds=args.seeds,
            save_predictions=args.save_predictions,
            records=not args.no_records,
            fingerprint=not args.no_fingerprint,
            ci_level=args.ci_level,
            proportion_interval=args.proportion_interval,
            resamples=args.resamples,
            cache_dir=None if args.no_cache else (args.cache_dir or DEFAULT_CACHE),
            progress=not args.quiet,  # bars on a terminal, a line per phase in a log (evalkit.progress)
            task_dirs=tuple(args.task_dir or ()),
            skip_existing=args.skip_existing,
            download=args.download,
            **extra,
        )

    def replace(self, **changes: Any) -> RunSpec:
        """A copy with ``changes``; an unknown name is a TypeError naming it."""
        unknown = sorted(set(changes) - set(self.option_names()))
        if unknown:
            raise TypeError(f"unknown run option(s) {unknown}; the options are RunSpec's fields: "
                            f"{', '.join(self.option_names())}")
        return dataclasses.replace(self, **changes)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_tuple(value: Sequence[Any] | str | Path | None) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, Path)):  # one pattern or folder, not its characters
        return (value,)
    return tuple(value)
