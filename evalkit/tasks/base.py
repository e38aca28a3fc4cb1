"""What every task family receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from evalkit.features.embed import FeatureCache
from evalkit.models.encoder import Encoder
from evalkit.results import DEFAULT_VARIANT, TaskResult
from evalkit.tasks.spec import TaskSpec


@dataclass
class RunContext:
    data_root: str | Path | None = None
    output_dir: Path = Path("results")
    batch_size: int | str = 64  # or "auto" (evalkit.features.batching)
    num_workers: int = 0
    prefetch: int | None = None  # batches prepared ahead of the model; None: 2
    limit: int | None = None
    strict: bool = False
    transform: str | None = None  # None: the task's own default
    frames: str | None = None  # video tasks' frame sampler (--frames); None: the task's own
    shots: list[int] | None = None  # few-shot tasks' K values (--shots 1,2,4); None: the task's own
    seeds: int | None = None  # few-shot tasks' seeds 0 … N-1 (--seeds N); None: the task's own
    save_predictions: bool = False
    progress: bool = True
    cache: FeatureCache = field(default_factory=lambda: FeatureCache(None))
    variant: str = DEFAULT_VARIANT  # evalkit.results.run_variant: precision (+ weights) of this run
    provenance: dict[str, Any] = field(default_factory=dict)


class TaskFamily(Protocol):
    """What a task family provides. Optionally also ``prepare(spec, data_root) -> prepared``,
    which finds and checks the task's data without a model; a family that has it is called
    before the model is loaded, and its ``run`` then gets ``prepared=`` (a keyword argument it
    must accept; evalkit.api.prepares_data). Without it, ``run`` finds its own data."""

    name: str

    def validate(self, spec: TaskSpec) -> None: ...

    def run(self, spec: TaskSpec, encoder: Encoder, ctx: RunContext) -> TaskResult: ...
