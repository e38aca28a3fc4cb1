"""What every task family receives and returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from evalkit.data.sources import SourceData
from evalkit.features.embed import FeatureCache
from evalkit.models.encoder import Encoder
from evalkit.results import DEFAULT_VARIANT, TaskResult
from evalkit.tasks.runspec import RunSpec
from evalkit.tasks.spec import TaskSpec

#: the split every task has: its own samples (``source``), the ones its result is about
TEST_SPLIT = "test"


@dataclass(init=False)
class RunContext:
    """One run as a family sees it: the run's options (``run``, a :class:`RunSpec`, as resolved
    for this process: its data root found, its loader workers chosen for the model's device) and
    the run-time state: the feature cache, the folder results go to, the run's variant and the
    provenance every result records.

    An option is read as ``ctx.run.<name>`` (the options are not listed here again).
    ``RunContext(run, output_dir=..., batch_size=8)``: option keywords replace
    those of ``run`` (a default :class:`RunSpec` when None), so ``dataclasses.replace(ctx,
    shots=[2, 4])`` is the same context with other K values. A context made by hand has no
    model's device to choose loader workers for: ``num_workers`` None there means 0."""

    run: RunSpec
    output_dir: Path
    cache: FeatureCache
    variant: str  # evalkit.results.run_variant: precision (+ weights) of this run
    provenance: dict[str, Any]

    def __init__(self, run: RunSpec | None = None, *, output_dir: str | Path = Path("results"),
                 cache: FeatureCache | None = None, variant: str = DEFAULT_VARIANT,
                 provenance: dict[str, Any] | None = None, **options: Any) -> None:
        run = (run or RunSpec()).replace(**options)
        if run.num_workers is None:
            run = run.replace(num_workers=0)
        self.run = run
        self.output_dir = Path(output_dir)
        self.cache = cache if cache is not None else FeatureCache(None)
        self.variant = variant
        self.provenance = dict(provenance or {})




class TaskFamily(Protocol):
    """What a task family provides.

    ``splits``: the splits it embeds, in order (default: only ``test``, the task's own samples).
    A family that needs more (the linear probe: ``("train", "test")``) declares them; the shared
    runner (:func:`evalkit.tasks.common.run_task`) embeds each through the task's views, with the
    cache, the ranks of a launched job and the skipped-sample accounting, and hands each split
    other than ``test`` to ``score`` as a keyword argument of its name. A split's data is the
    prepared object's attribute of its name (``prepared.train``; ``prepared.data`` for ``test``:
    :func:`split_data`), found from the task's ``<split>_source`` key (``train_source``).

    A family on the shared runner (evalkit's own) is config, prepare and score: ``validate``
    (its YAML keys), ``prepare(spec, data_root) -> prepared`` (finds and checks the data without a
    model; called before the model is loaded), ``score(spec, encoder, ctx, prepared, by_mode,
    **splits) -> Scored``, and the class attributes ``splits``, ``default_transform``,
    ``combine`` and ``result_task``; its ``run`` is ``run_task(self, spec, encoder, ctx,
    prepared)``. A plugin may instead implement ``run`` whole (``prepared=`` is passed when it
    has ``prepare``: evalkit.api.prepares_data)."""

    name: str

    def validate(self, spec: TaskSpec) -> Any: ...

    def run(self, spec: TaskSpec, encoder: Encoder, ctx: RunContext) -> TaskResult: ...


def declared_splits(family: Any) -> tuple[str, ...]:
    """The splits ``family`` embeds, ``test`` last (its result's own samples)."""
    splits = tuple(getattr(family, "splits", (TEST_SPLIT,)))
    if not splits or splits[-1] != TEST_SPLIT or len(set(splits)) != len(splits):
        raise TypeError(f"task family {getattr(family, 'name', family)!r}: splits {splits!r} must be distinct and "
                        f"end with {TEST_SPLIT!r}")
    return splits


def split_data(prepared: Any, split: str) -> SourceData:
    """One declared split's data as the family's ``prepare`` found it."""
    return prepared.data if split == TEST_SPLIT else getattr(prepared, split)
