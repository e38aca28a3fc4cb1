"""``evalkit compare``: two runs, task by task, with paired statistics from their per-sample records.

A side is a results folder (the folder holding ``runs/``), a model's folder in it
(``RUN/runs/<model>``: the results it holds, those of the default variant, fp32) or one
variant's folder (``RUN/runs/<model>/<variant>``), narrowed by a model and a variant where given. Results are
matched by task name (the name a result is written under); samples by their key.

Per task, on its primary metric (the result's ``evalkit.metric``):

* both values as their results recorded them, each with its recorded interval;
* the difference B − A, with a **paired** bootstrap interval: the same samples are drawn for both
  sides (stratified as the metric is: by class for mean per-class recall, by split for a task of
  several splits), ``--resamples`` draws, seeded, percentile interval;
* the discordant counts of a top-1-type outcome, b (A right, B wrong) and c (A wrong, B right),
  and the exact McNemar p-value (:func:`evalkit.stats.mcnemar_pvalue`), Holm-corrected over the
  compared tasks. The outcome is the metric's own hit for ``acc{k}``, the top-1 hit for mean
  per-class recall and mean(top-1, top-5), each query's hit at the smallest K (1) for retrieval
  (image→text and text→image queries together; the bootstrap of mean recall is over images with
  their captions), and the seed-0 probe's prediction at the primary K for few-shot (the
  bootstrap is of the seed means);
* for zero-shot classification, the **flips**: the samples whose top-1 class changed, per
  transform both sides ran. Numerics alone move a top-1/top-2 margin by at most
  ``margin_bound(precision)`` (:mod:`evalkit.models.flips`) in each run, so a flip between two runs that
  differ only in precision must have had ``margin_A < bound(precision_A) + bound(precision_B)``;
  every flip above that is listed as a violation. The flips are printed next to each side's flip
  budget (``evalkit.flip_budget``: the samples each run could flip). The bound's premise is checked
  too, on the samples that did not flip: where both runs have the same top-1 and top-2 classes,
  the margin must have moved by less than the bound; the largest move is printed, and every sample
  that moved by the bound or more is listed (it did not flip, but a closer call could have).

Suite averages (all compared tasks, and each group ``--tasks`` names): the mean of the tasks'
values on each side and the mean difference, with a paired bootstrap over *datasets* (the tasks
are resampled; each task's own sampling noise is in its row, not in this interval).

Two results of one task with different sample sets (keys, or N) are an error naming the task and
the counts, unless ``intersect``: then the samples both have are compared and the dropped counts
are printed. A side written without per-sample records can still be compared on a proportion
(its interval needs only N): both values, no paired test; any other metric is an error naming the
result.

All figures are printed (and given in JSON) in percent, p-values as they are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.intervals import count_intervals
from evalkit.metric_table import metric_value
from evalkit.models.flips import margin_bound
from evalkit.records import Records, result_records
from evalkit.reporting.evidence import interval_options_of, support
from evalkit.results import DEFAULT_VARIANT, TaskResult, iter_results, path_of, result_variant, safe_name
from evalkit.stats import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Interval,
    bootstrap,
    holm,
    mcnemar_pvalue,
)

__all__ = ["CompareError", "SideSpec", "Side", "Flip", "FlipSet", "TaskComparison", "SuiteAverage", "Comparison",
           "load_side", "compare", "compare_task", "task_selection"]

NO_RECORDS = "written without per-sample records (re-run without --no-records)"
_ACC = re.compile(r"^acc([1-9]\d*)$")
_RECALL = re.compile(r"^(text_retrieval_recall|image_retrieval_recall|i2t_R|t2i_R)@([1-9]\d*)$")
_SHOT = re.compile(r"^acc1@([1-9]\d*)shot$")
_I2T = ("text_retrieval_recall", "i2t_R")  # clip_benchmark's "text retrieval" is image→text
_EXAMPLES = 3  # keys named in a mismatch message
_LISTED = 10  # samples whose margin moved beyond the bound, listed in the text


class CompareError(EvalkitError, ValueError):
    """Two runs that cannot be compared as asked: a side that is no results folder or is
    ambiguous, mismatched sample sets, a result without the records its metric needs. The message
    names the side, the task and the counts."""


# ----------------------------------------------------------------------------- sides


@dataclass(frozen=True)
class SideSpec:
    """What one side is: a folder, and optionally a model and a variant in it."""

    path: Path
    model: str | None = None
    variant: str | None = None


@dataclass
class Side:
    """One side's results, by task name, each with the results folder it was read from."""

    label: str  # "A" / "B"
    spec: SideSpec
    root: Path  # the folder holding runs/
    results: dict[str, TaskResult]

    @property
    def description(self) -> str:
        runs = sorted({(r.model, result_variant(r)) for r in self.results.values()})
        return f"{self.spec.path} (" + ", ".join(f"{m} {v}" for m, v in runs) + ")"


def _task_name(r: TaskResult) -> str:
    return str(r.evalkit.get("result_name") or r.dataset)


def _where(path: Path, model: str | None, variant: str | None) -> tuple[Path, str | None, str | None]:
    """The results folder a path is in, and the model and variant its place in it names."""
    if (path / "runs").is_dir():
        return path, model, variant
    in_model = path.parent.name == "runs"
    in_variant = path.parent.parent.name == "runs" and not in_model
    if not (in_model or in_variant) or not path.is_dir():
        raise CompareError(f"{path}: not a results folder (no runs/ in it) nor a runs/<model>[/<variant>] folder "
                           f"of one")
    named_model = path.name if in_model else path.parent.name
    # a model's folder holds its default variant's results; every other variant has a folder in it
    named_variant = (variant or DEFAULT_VARIANT) if in_model else path.name
    for what, given, named in (("--model", model, named_model), ("--variant", variant, named_variant)):
        if given is not None and named is not None and safe_name(given) != named:
            raise CompareError(f"{path} is the folder of {named!r}, but {what} says {given!r}")
    root = path.parent.parent if in_model else path.parent.parent.parent
    return root, model or named_model, variant or named_variant


def load_side(spec: SideSpec, label: str = "A") -> Side:
    """Read one side's results (:class:`SideSpec`); a side with no result, or with two results of
    one task (two models or variants: name one), is a :class:`CompareError`."""
    path = Path(spec.path)
    if not path.exists():
        raise CompareError(f"{label}: {path}: no such folder")
    root, model, variant = _where(path, spec.model, spec.variant)
    by_task: dict[str, list[TaskResult]] = {}
    try:
        for r in iter_results(root, model):
            if variant is not None and safe_name(variant) != safe_name(result_variant(r)):
                continue
            by_task.setdefault(_task_name(r), []).append(r)
    except ValueError as e:  # a result file that cannot be read: its error names it
        raise CompareError(f"{label}: {e}") from e
    selection = "".join(f", {w} {x}" for w, x in (("model", model), ("variant", variant)) if x)
    if not by_task:
        raise CompareError(f"{label}: no results in {path}{selection}")
    for task, found in sorted(by_task.items()):
        if len(found) > 1:
            runs = ", ".join(sorted(f"{r.model} {result_variant(r)}" for r in found))
            raise CompareError(f"{label}: {path}{selection} has {len(found)} results of {task} ({runs}): name one "
                               f"with --model / --variant, or give its runs/<model>[/<variant>] folder")
    return Side(label, SideSpec(path, model, variant), root, {t: rs[0] for t, rs in by_task.items()})


# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Flip:
    """One sample whose top-1 class changed: its key, target, each side's top-1 and margin (logits)."""

    key: str
    target: int
    class_a: int
    class_b: int
    margin_a: float
    margin_b: float


@dataclass
class FlipSet:
    """The flips of one transform of one zero-shot classification task, and the bound they are
    held to: ``margin_bound(precision_a) + margin_bound(precision_b)`` (None: a precision with no
    bound, ``note`` says which)."""

    task: str
    mode: str
    n: int
    flips: list[Flip]
    precision_a: str
    precision_b: str
    bound: float | None
    budget_a: dict[str, Any] | None = None  # each result's evalkit.flip_budget
    budget_b: dict[str, Any] | None = None
    classnames: list[str] = field(default_factory=list)
    note: str = ""
    #: the bound's premise, checked on the samples whose top-1 and top-2 classes agree: the largest
    #: change of their margin between the runs, and those that changed by at least the bound
    moved: float | None = None
    moved_over: list[Flip] = field(default_factory=list)

    @property
    def violations(self) -> list[Flip]:
        if self.bound is None:
            return []
        return [f for f in self.flips if not f.margin_a < self.bound]

    def class_name(self, c: int) -> str:
        return self.classnames[c] if 0 <= c < len(self.classnames) else str(c)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "mode": self.mode, "n": self.n, "flips": len(self.flips),
                "precision_a": self.precision_a, "precision_b": self.precision_b, "bound": self.bound,
                "bound_rule": "margin_a < margin_bound(precision_a) + margin_bound(precision_b)",
                "held": None if self.bound is None else not self.violations,
                "budget_a": self.budget_a, "budget_b": self.budget_b,
                "max_margin_a": max((f.margin_a for f in self.flips), default=None),
                "samples": [{"key": f.key, "target": f.target, "class_a": f.class_a, "class_b": f.class_b,
                             "margin_a": f.margin_a, "margin_b": f.margin_b,
                             "within_bound": None if self.bound is None else f.margin_a < self.bound}
                            for f in self.flips],
                "max_margin_change": self.moved,
                "margin_changes_over_bound": [{"key": f.key, "class": f.class_a, "margin_a": f.margin_a,
                                               "margin_b": f.margin_b} for f in self.moved_over],
                "note": self.note}


@dataclass(frozen=True)
class SideValue:
    """One side's number for a task: as its result recorded it (fraction), its recorded interval,
    and its value on the compared samples (differs only under ``intersect``)."""

    value: float
    interval: Interval | None
    compared: float | None
    variant: str
    precision: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": 100 * self.value, "ci": self.interval.scaled(100).to_dict() if self.interval else None,
                "compared_value": None if self.compared is None else 100 * self.compared, "variant": self.variant,
                "precision": self.precision}


@dataclass
class TaskComparison:
    """One task's comparison (fractions inside; percent in :meth:`to_dict` and :meth:`Comparison.format`)."""

    task: str
    metric: str
    kind: str  # the records' kind, or "values" when a side has none
    n: int  # samples compared
    a: SideValue
    b: SideValue
    difference: float  # B − A, on the compared samples
    difference_interval: Interval | None = None
    tested: str = ""  # the outcome McNemar is run on
    b_count: int | None = None  # A right, B wrong
    c_count: int | None = None  # A wrong, B right
    pvalue: float | None = None
    pvalue_holm: float | None = None
    only_a: int = 0  # samples dropped by intersect
    only_b: int = 0
    flips: list[FlipSet] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "kind": self.kind, "n": self.n,
                "a": self.a.to_dict(), "b": self.b.to_dict(), "difference": 100 * self.difference,
                "difference_ci": (self.difference_interval.scaled(100).to_dict()
                                  if self.difference_interval else None),
                "mcnemar": None if self.pvalue is None else {
                    "tested": self.tested, "b": self.b_count, "c": self.c_count, "p": self.pvalue,
                    "p_holm": self.pvalue_holm, "method": "mcnemar-exact"},
                "dropped": {"only_a": self.only_a, "only_b": self.only_b},
                "flips": [f.to_dict() for f in self.flips], "notes": self.notes}


@dataclass(frozen=True)
class SuiteAverage:
    """The mean over ``tasks`` of each side's value and of the difference, with a paired
    bootstrap interval over the datasets."""

    name: str
    tasks: tuple[str, ...]
    a: float
    b: float
    difference: float
    interval: Interval | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tasks": list(self.tasks), "a": 100 * self.a, "b": 100 * self.b,
                "difference": 100 * self.difference,
                "difference_ci": self.interval.scaled(100).to_dict() if self.interval else None,
                "method": "paired bootstrap over datasets (the tasks resampled with replacement)"}


@dataclass
class Comparison:
    """Everything ``evalkit compare`` prints."""

    a: str
    b: str
    level: float
    resamples: int
    seed: int
    intersect: bool
    tasks: list[TaskComparison]
    averages: list[SuiteAverage] = field(default_factory=list)
    only_a: list[str] = field(default_factory=list)  # tasks only one side has
    only_b: list[str] = field(default_factory=list)

    @property
    def flip_sets(self) -> list[FlipSet]:
        return [f for t in self.tasks for f in t.flips]

    @property
    def violations(self) -> list[tuple[FlipSet, Flip]]:
        return [(s, f) for s in self.flip_sets for f in s.violations]

    @property
    def margins_over(self) -> list[tuple[FlipSet, Flip]]:
        return [(s, f) for s in self.flip_sets for f in s.moved_over]

    def margin_verdict(self) -> str:
        """The bound's premise: every margin moves by less than the bound (samples whose top-2 agree)."""
        sets = [s for s in self.flip_sets if s.moved is not None and s.bound is not None]
        if not sets:
            return ""
        largest = max(sets, key=lambda s: s.moved / s.bound)
        if not self.margins_over:
            return (f"margins moved by less than the bound: at most {largest.moved:.4g} against {largest.bound:.4g} "
                    f"({largest.task} [{largest.mode}]; samples whose top-1 and top-2 classes agree)")
        over = len(self.margins_over)
        return (f"margins moved by at least the bound in {over} sample{'s' if over != 1 else ''} (none flipped, "
                f"but the bound is no guarantee here): at most {largest.moved:.4g} against {largest.bound:.4g} "
                f"({largest.task} [{largest.mode}])")

    def flip_verdict(self) -> str:
        sets = self.flip_sets
        if not sets:
            return ""
        flips = sum(len(s.flips) for s in sets)
        unbounded = [s for s in sets if s.bound is None]
        if self.violations:
            return f"flip budget violated: {len(self.violations)} of {flips} flips at or above the bound"
        if unbounded:
            return (f"flip budget not checked for {', '.join(f'{s.task} [{s.mode}]' for s in unbounded)} "
                    f"({unbounded[0].note}); elsewhere held: {flips} flips, all within the bound")
        return f"flip budget held: {flips} flip{'s' if flips != 1 else ''}, all within the bound"

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "unit": "percent (p-values and margins as they are)",
                "level": self.level, "resamples": self.resamples, "seed": self.seed, "intersect": self.intersect,
                "methods": {"difference_ci": "paired bootstrap over samples, percentile",
                            "test": "mcnemar-exact", "correction": "holm over the tasks with a test",
                            "average_ci": "paired bootstrap over datasets, percentile"},
                "tasks": [t.to_dict() for t in self.tasks], "averages": [a.to_dict() for a in self.averages],
                "only_a": self.only_a, "only_b": self.only_b,
                "flip_budget": {"flips": sum(len(s.flips) for s in self.flip_sets),
                                "violations": len(self.violations),
                                "held": (None if not self.flip_sets or any(s.bound is None for s in self.flip_sets)
                                         else not self.violations),
                                "verdict": self.flip_verdict(),
                                "margins_over_bound": len(self.margins_over),
                                "margin_verdict": self.margin_verdict()}}

    def format(self) -> str:
        from tabulate import tabulate

        pct = f"{100 * self.level:g}%"
        tested = sum(t.pvalue is not None for t in self.tasks)
        lines = [f"A: {self.a}", f"B: {self.b}",
                 f"B − A with a {pct} paired bootstrap interval ({self.resamples} resamples, seed {self.seed}); "
                 f"exact McNemar p, Holm-corrected over {tested} task{'s' if tested != 1 else ''}", ""]
        rows = []
        for t in self.tasks:
            rows.append([t.task, t.metric, t.n, _value(t.a.value, t.a.interval), _value(t.b.value, t.b.interval),
                         _value(t.difference, t.difference_interval, signed=True),
                         "" if t.b_count is None else t.b_count, "" if t.c_count is None else t.c_count,
                         _p(t.pvalue), _p(t.pvalue_holm)])
        lines.append(tabulate(rows, headers=["task", "metric", "N", f"A [{pct}]", f"B [{pct}]", f"B − A [{pct}]",
                                             "b", "c", "p", "p Holm"], tablefmt="github", disable_numparse=True))
        tested = sorted({f"{t.tested}" for t in self.tasks if t.tested})
        lines.append("b: A right, B wrong; c: A wrong, B right" + (f" ({'; '.join(tested)})" if tested else
                                                                   ": no paired test (no records)"))
        notes = [(t.task, n) for t in self.tasks for n in t.notes]
        notes += [(t.task, f"compared on the {t.n} samples both have; dropped {t.only_a} only in A, "
                           f"{t.only_b} only in B (A {100 * (t.a.compared or 0):.2f}, B {100 * (t.b.compared or 0):.2f} "
                           f"on them)") for t in self.tasks if t.only_a or t.only_b]
        if notes:
            lines += ["", *(f"  {task}: {note}" for task, note in notes)]
        for av in self.averages:
            lines += ["", f"average of {av.name} ({len(av.tasks)} tasks): A {100 * av.a:.2f}, B {100 * av.b:.2f}, "
                          f"B − A {_value(av.difference, av.interval, signed=True)} "
                          f"(paired bootstrap over datasets: the {len(av.tasks)} tasks resampled)"]
        if self.only_a or self.only_b:
            lines.append("")
            for side, names in (("A", self.only_a), ("B", self.only_b)):
                if names:
                    lines.append(f"only in {side} (not compared): {', '.join(names)}")
        if self.flip_sets:
            lines += ["", "flips (zero-shot classification: samples whose top-1 changed between A and B):"]
            quiet = [s for s in self.flip_sets if not s.flips]
            for s in self.flip_sets:
                if not s.flips and len(quiet) > 1:
                    continue  # said in one line below
                lines.append(f"  {s.task} [{s.mode}]: {len(s.flips)} of {s.n}; budget A ({s.precision_a}) "
                             f"{_budget(s.budget_a)}, B ({s.precision_b}) {_budget(s.budget_b)}; "
                             + (f"bound margin_A < {s.bound:.4g}" if s.bound is not None else s.note)
                             + (f", largest flipped margin_A {max(f.margin_a for f in s.flips):.4g}" if s.flips else ""))
            if len(quiet) > 1:
                lines.append(f"  no flip in {len(quiet)} more: " + ", ".join(f"{s.task} [{s.mode}] ({s.n})" for s in quiet))
            lines.append(self.flip_verdict())
            for s, f in self.violations:
                lines.append(f"  - {s.task} [{s.mode}] {f.key}: margin_A {f.margin_a:.4g}, margin_B {f.margin_b:.4g}"
                             f" ≥ bound {s.bound:.4g} ({s.class_name(f.class_a)} -> {s.class_name(f.class_b)}, "
                             f"target {s.class_name(f.target)})")
            if self.margin_verdict():
                lines.append(self.margin_verdict())
            for s, f in self.margins_over[:_LISTED]:
                lines.append(f"  - {s.task} [{s.mode}] {f.key}: margin_A {f.margin_a:.4g} -> margin_B {f.margin_b:.4g} "
                             f"(moved {abs(f.margin_a - f.margin_b):.4g} ≥ {s.bound:.4g}; top-1 "
                             f"{s.class_name(f.class_a)} on both)")
            if len(self.margins_over) > _LISTED:
                lines.append(f"  ... {len(self.margins_over) - _LISTED} more (--json lists them all)")
        return "\n".join(lines)


def _value(v: float, iv: Interval | None, signed: bool = False) -> str:
    text = f"{100 * v + 0.0:+.2f}" if signed else f"{100 * v:.2f}"
    return text + (f" [{100 * iv.low:.2f}, {100 * iv.high:.2f}]" if iv is not None else "")


def _p(p: float | None) -> str:
    return "" if p is None else (f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}")


def _budget(b: dict[str, Any] | None) -> str:
    if not b:
        return "not recorded"
    return f"{b.get('samples')} of {b.get('n')} samples"


# ----------------------------------------------------------------------------- pairing samples


@dataclass
class _Paired:
    """A task's matched samples, ready for the bootstrap and McNemar."""

    columns: np.ndarray  # (samples, m) per-sample values of both sides
    statistic: Callable[[np.ndarray], np.ndarray]  # per-stratum sums (..., S, m) -> (..., 3): A, B, B − A
    strata: np.ndarray | None
    hits_a: np.ndarray | None  # the McNemar outcome per query
    hits_b: np.ndarray | None
    tested: str
    n: int
    only_a: int = 0
    only_b: int = 0
    flips: list[FlipSet] = field(default_factory=list)


def _match(task: str, keys_a: np.ndarray, keys_b: np.ndarray, intersect: bool, what: str = "samples"
           ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Indices into A and B of the keys both have (in A's order), and how many each alone has;
    different sets without ``intersect``, or a key twice on one side, are a CompareError."""
    for label, keys in (("A", keys_a), ("B", keys_b)):
        uniq, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            raise CompareError(f"{task}: {label} has sample key {uniq[counts > 1][0]!r} {counts.max()} times: "
                               f"samples cannot be paired")
    common, ia, ib = np.intersect1d(keys_a, keys_b, assume_unique=True, return_indices=True)
    order = np.argsort(ia)
    ia, ib = ia[order], ib[order]
    only_a, only_b = len(keys_a) - len(ia), len(keys_b) - len(ib)
    if (only_a or only_b) and not intersect:
        def some(mine: np.ndarray, theirs: np.ndarray) -> str:
            alone = mine[~np.isin(mine, theirs)][:_EXAMPLES]
            return ", ".join(map(str, alone)) + (", ..." if len(alone) == _EXAMPLES else "")

        raise CompareError(
            f"{task}: A has {len(keys_a)} {what}, B {len(keys_b)}; {only_a} keys only in A"
            + (f" ({some(keys_a, keys_b)})" if only_a else "") + f", {only_b} only in B"
            + (f" ({some(keys_b, keys_a)})" if only_b else "")
            + f" (use --intersect to compare the {len(ia)} both have)")
    if len(ia) == 0:
        raise CompareError(f"{task}: A and B have no sample key in common: nothing to compare")
    return ia, ib, only_a, only_b


def _weighted_means(strata: np.ndarray, weights: dict[int, float]) -> Callable[[np.ndarray], np.ndarray]:
    """The statistic ``Σ_s w_s · (column sums of stratum s) / |s|`` for columns (A, B), as (A, B, B − A)."""
    ids, sizes = np.unique(strata, return_counts=True)
    w = np.array([weights[int(i)] for i in ids]) / sizes  # (S,)

    def statistic(s: np.ndarray) -> np.ndarray:
        a = np.tensordot(s[..., 0], w, axes=([-1], [0]))
        b = np.tensordot(s[..., 1], w, axes=([-1], [0]))
        return np.stack([a, b, b - a], axis=-1)

    return statistic


def _part_arrays(result: TaskResult, records: list[Records], metric: str, label: str, task: str,
                 value_of: Callable[[dict[str, np.ndarray]], float]) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Per records file (one per split), its part name and the arrays of the transform that gave
    the metric: the only one, else the one the result names as best, else the one whose value
    matches the recorded one (a split of a several-split task)."""
    out = []
    ev = result.evalkit
    for i, rec in enumerate(records, start=1):
        part = str(rec.meta.get("part") or (f"split{i}" if len(records) > 1 else ""))
        modes = rec.modes
        mode = modes[0] if len(modes) == 1 else None
        if mode is None and len(records) == 1:
            named = (ev.get("best_transform_by_metric") or {}).get(metric) or ev.get("best_transform")
            mode = named if named in modes else None
        if mode is None:
            want = result.metrics.get(f"{metric}@{part}" if part else metric)
            if not isinstance(want, (int, float)):
                raise CompareError(f"{task}: {label}'s records have transforms {modes} and its result does not say "
                                   f"which gave {metric}")
            mode = min(modes, key=lambda m: abs(value_of(rec.arrays(m)) - float(want)))
        out.append((part, rec.arrays(mode)))
    return out


def _hits(arrays: dict[str, np.ndarray], k: int, task: str) -> np.ndarray:
    top = np.asarray(arrays["top_classes"])
    if k > top.shape[1]:
        raise CompareError(f"{task}: acc{k} needs the top {k} classes; the records keep {top.shape[1]}")
    return (top[:, :k] == np.asarray(arrays["target"])[:, None]).any(axis=1)


def _class_columns(metric: str, task: str) -> tuple[Callable[[dict[str, np.ndarray]], np.ndarray],
                                                    Callable[[dict[str, np.ndarray]], np.ndarray], str, bool]:
    """For a classification metric: the per-sample value, the McNemar outcome, its name, and
    whether the metric is a mean over classes."""
    m = _ACC.match(metric)
    if m:
        k = int(m.group(1))
        return (lambda a: _hits(a, k, task).astype(np.float64)), (lambda a: _hits(a, k, task)), f"acc{k} hits", False
    if metric == "mean_acc1_acc5":
        return ((lambda a: (_hits(a, 1, task).astype(np.float64) + _hits(a, 5, task)) / 2),
                (lambda a: _hits(a, 1, task)), "top-1 hits", False)
    if metric == "mean_per_class_recall":
        def pred_hits(a: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(a["pred"]) == np.asarray(a["target"])
        return (lambda a: pred_hits(a).astype(np.float64)), pred_hits, "top-1 hits", True
    raise CompareError(f"{task}: no paired comparison of classification metric {metric!r} (acc{{k}}, "
                       f"mean_acc1_acc5, mean_per_class_recall)")


def _classification(task: str, metric: str, a: tuple[TaskResult, list[Records]], b: tuple[TaskResult, list[Records]],
                    intersect: bool) -> _Paired:
    value, outcome, tested, per_class = _class_columns(metric, task)

    def mean_value(arrays: dict[str, np.ndarray]) -> float:
        v = value(arrays)
        if not per_class:
            return float(v.mean())
        t = np.asarray(arrays["target"])
        return float(np.mean([v[t == c].mean() for c in np.unique(t)]))

    parts_a = _part_arrays(*a, metric, "A", task, mean_value)
    parts_b = _part_arrays(*b, metric, "B", task, mean_value)
    if [p for p, _ in parts_a] != [p for p, _ in parts_b]:
        raise CompareError(f"{task}: A has splits {[p for p, _ in parts_a]}, B {[p for p, _ in parts_b]}")

    def joined(parts: list[tuple[str, dict[str, np.ndarray]]], name: str) -> np.ndarray:
        return np.concatenate([np.asarray(arr[name]) for _, arr in parts])

    def keys(parts: list[tuple[str, dict[str, np.ndarray]]]) -> np.ndarray:
        return np.concatenate([np.char.add(f"{p}/" if p else "", np.asarray(arr["key"]).astype(str))
                               for p, arr in parts])

    ia, ib, only_a, only_b = _match(task, keys(parts_a), keys(parts_b), intersect)
    target_a, target_b = joined(parts_a, "target")[ia], joined(parts_b, "target")[ib]
    differ = np.flatnonzero(target_a != target_b)
    if differ.size:
        i = differ[0]
        raise CompareError(f"{task}: sample {keys(parts_a)[ia[i]]} has target {target_a[i]} in A and {target_b[i]} in "
                           f"B ({differ.size} samples differ): not the same task")
    part_of = np.concatenate([np.full(len(arr["key"]), j) for j, (_, arr) in enumerate(parts_a)])[ia]
    n_parts = len(parts_a)
    if per_class:
        strata = part_of * (int(target_a.max()) + 1) + target_a
        classes_in = {j: len(np.unique(target_a[part_of == j])) for j in range(n_parts)}
        weights = {int(s): 1 / (n_parts * classes_in[int(s) // (int(target_a.max()) + 1)]) for s in np.unique(strata)}
    else:
        strata = part_of
        weights = {j: 1 / n_parts for j in range(n_parts)}
    columns = np.stack([np.concatenate([value(arr) for _, arr in parts_a])[ia],
                        np.concatenate([value(arr) for _, arr in parts_b])[ib]], axis=1)
    hits_a = np.concatenate([outcome(arr) for _, arr in parts_a])[ia]
    hits_b = np.concatenate([outcome(arr) for _, arr in parts_b])[ib]
    return _Paired(columns, _weighted_means(strata, weights), strata if len(weights) > 1 else None, hits_a, hits_b,
                   tested, len(ia), only_a, only_b)


def _caption_keys(image_keys: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Each caption's key: its image's key and its place among that image's captions."""
    order = np.argsort(owner, kind="stable")
    place = np.empty(len(owner), dtype=np.int64)
    sorted_owner = owner[order]
    starts = np.searchsorted(sorted_owner, sorted_owner, side="left")
    place[order] = np.arange(len(owner)) - starts
    return np.char.add(np.char.add(image_keys[owner].astype(str), "#"), place.astype(str))


def _retrieval(task: str, metric: str, a: tuple[TaskResult, list[Records]], b: tuple[TaskResult, list[Records]],
               intersect: bool) -> _Paired:
    if len(a[1]) != 1 or len(b[1]) != 1:
        raise CompareError(f"{task}: a retrieval task of several splits cannot be compared")
    ra, rb = a[1][0], b[1][0]
    ks = [int(k) for k in ra.meta.get("recall_k") or []]
    if ks != [int(k) for k in rb.meta.get("recall_k") or []]:
        raise CompareError(f"{task}: A's records count recall at K = {ks}, B's at {rb.meta.get('recall_k')}")
    m = _RECALL.match(metric)
    if metric == "mean_recall":
        chosen = list(range(2 * len(ks)))
    elif m and int(m.group(2)) in ks:
        chosen = [2 * ks.index(int(m.group(2))) + (0 if m.group(1) in _I2T else 1)]
    else:
        raise CompareError(f"{task}: no paired comparison of retrieval metric {metric!r} with records at K = {ks}")
    arrays_a = ra.arrays(_single_mode(ra, a[0], task, "A"))
    arrays_b = rb.arrays(_single_mode(rb, b[0], task, "B"))
    keys_a, keys_b = np.asarray(arrays_a["image_key"]).astype(str), np.asarray(arrays_b["image_key"]).astype(str)
    ia, ib, only_a, only_b = _match(task, keys_a, keys_b, intersect, "images")
    cap_a = _caption_keys(keys_a, np.asarray(arrays_a["t2i_image"]))
    cap_b = _caption_keys(keys_b, np.asarray(arrays_b["t2i_image"]))
    # captions of the matched images, matched by their place under the image
    keep_a = np.flatnonzero(np.isin(np.asarray(arrays_a["t2i_image"]), ia))
    keep_b = np.flatnonzero(np.isin(np.asarray(arrays_b["t2i_image"]), ib))
    ca, cb, cap_only_a, cap_only_b = _match(task, cap_a[keep_a], cap_b[keep_b], intersect, "captions of the shared images")
    ca, cb = keep_a[ca], keep_b[cb]
    n_images = len(ia)
    new_image_a = np.full(len(keys_a), -1)
    new_image_a[ia] = np.arange(n_images)

    owner = new_image_a[np.asarray(arrays_a["t2i_image"])[ca]]  # a matched caption pair's image, 0..n_images-1

    def per_image(arrays: dict[str, np.ndarray], images: np.ndarray, captions: np.ndarray) -> list[np.ndarray]:
        i2t = np.asarray(arrays["i2t_hit"])[images].astype(np.float64)  # (n, K)
        t2i = np.asarray(arrays["t2i_hit"])[captions].astype(np.float64)  # (c, K)
        cols = []
        for j in range(len(ks)):
            cols.append(i2t[:, j])
            cols.append(np.bincount(owner, weights=t2i[:, j], minlength=n_images))
        return cols

    captions = np.bincount(owner, minlength=n_images).astype(np.float64)
    cols_a = per_image(arrays_a, ia, ca)
    cols_b = per_image(arrays_b, ib, cb)
    columns = np.stack([captions, *cols_a, *cols_b], axis=1)
    r = len(cols_a)

    def statistic(s: np.ndarray) -> np.ndarray:
        s = s[..., 0, :]
        caps = s[..., 0]

        def recalls(offset: int) -> np.ndarray:
            out = []
            for j in range(r):
                col = s[..., offset + j]
                out.append(col / n_images if j % 2 == 0 else col / caps)
            return np.stack([out[c] for c in chosen], axis=-1).mean(axis=-1)

        va, vb = recalls(1), recalls(1 + r)
        return np.stack([va, vb, vb - va], axis=-1)

    k_test = 0  # McNemar at the smallest K, on every query: images (i2t) and captions (t2i)
    hits_a = np.concatenate([np.asarray(arrays_a["i2t_hit"])[ia, k_test], np.asarray(arrays_a["t2i_hit"])[ca, k_test]])
    hits_b = np.concatenate([np.asarray(arrays_b["i2t_hit"])[ib, k_test], np.asarray(arrays_b["t2i_hit"])[cb, k_test]])
    return _Paired(columns, statistic, None, hits_a, hits_b, f"R@{ks[k_test]} hits per query (i2t and t2i)", n_images,
                   only_a + cap_only_a, only_b + cap_only_b)


def _single_mode(rec: Records, result: TaskResult, task: str, label: str) -> str:
    if len(rec.modes) == 1:
        return rec.modes[0]
    named = result.evalkit.get("best_transform")
    if named in rec.modes:
        return str(named)
    raise CompareError(f"{task}: {label}'s records have transforms {rec.modes} and its result does not say which "
                       f"gave its metrics")


def _fewshot(task: str, metric: str, a: tuple[TaskResult, list[Records]], b: tuple[TaskResult, list[Records]],
             intersect: bool) -> _Paired:
    m = _SHOT.match(metric)
    if not m:
        raise CompareError(f"{task}: no paired comparison of few-shot metric {metric!r} (acc1@{{K}}shot)")
    if len(a[1]) != 1 or len(b[1]) != 1:
        raise CompareError(f"{task}: a few-shot task of several splits cannot be compared")
    k = int(m.group(1))
    arrays = []
    for label, (result, (rec,)) in (("A", a), ("B", b)):
        arr = rec.arrays(_single_mode(rec, result, task, label))
        rows = np.flatnonzero(np.asarray(arr["shots"]) == k)
        if rows.size == 0:
            raise CompareError(f"{task}: {label}'s records have no probe at K = {k}")
        arrays.append((arr, rows))
    (arr_a, rows_a), (arr_b, rows_b) = arrays
    ia, ib, only_a, only_b = _match(task, np.asarray(arr_a["key"]).astype(str), np.asarray(arr_b["key"]).astype(str),
                                    intersect)
    target_a, target_b = np.asarray(arr_a["target"])[ia], np.asarray(arr_b["target"])[ib]
    if (target_a != target_b).any():
        i = int(np.flatnonzero(target_a != target_b)[0])
        raise CompareError(f"{task}: sample {arr_a['key'][ia[i]]} has target {target_a[i]} in A and {target_b[i]} in "
                           f"B: not the same task")
    hit_a = np.asarray(arr_a["pred"])[rows_a][:, ia] == target_a[None, :]
    hit_b = np.asarray(arr_b["pred"])[rows_b][:, ib] == target_b[None, :]
    columns = np.stack([hit_a.mean(axis=0), hit_b.mean(axis=0)], axis=1)
    seeds_a, seeds_b = np.asarray(arr_a["seed"])[rows_a], np.asarray(arr_b["seed"])[rows_b]
    common = sorted(set(seeds_a.tolist()) & set(seeds_b.tolist()))
    if not common:
        raise CompareError(f"{task}: A's probes at K = {k} have seeds {sorted(seeds_a.tolist())}, B's "
                           f"{sorted(seeds_b.tolist())}: none in common for McNemar")
    seed = 0 if 0 in common else common[0]
    h_a = hit_a[int(np.flatnonzero(seeds_a == seed)[0])]
    h_b = hit_b[int(np.flatnonzero(seeds_b == seed)[0])]
    return _Paired(columns, _weighted_means(np.zeros(len(ia), dtype=np.int64), {0: 1.0}), None, h_a, h_b,
                   f"seed-{seed} predictions at K = {k}", len(ia), only_a, only_b)


_PAIRING = {"classification": _classification, "probe": _classification, "retrieval": _retrieval, "fewshot": _fewshot}


def _flips(task: str, a: tuple[TaskResult, list[Records]], b: tuple[TaskResult, list[Records]],
           intersect: bool) -> list[FlipSet]:
    """Per transform both sides ran, the samples whose top-1 class changed (zero-shot classification)."""
    (res_a, recs_a), (res_b, recs_b) = a, b
    prec_a = str(res_a.evalkit.get("precision") or recs_a[0].meta.get("precision") or "")
    prec_b = str(res_b.evalkit.get("precision") or recs_b[0].meta.get("precision") or "")
    scale = float(recs_a[0].meta.get("logit_scale") or 100.0)
    try:
        bound: float | None = margin_bound(prec_a, scale) + margin_bound(prec_b, scale)
        note = ""
    except ValueError as e:
        bound, note = None, str(e)
    out = []
    modes = [m for m in recs_a[0].modes if m in recs_b[0].modes]
    for mode in modes:
        parts_a = [(str(r.meta.get("part") or (f"split{i}" if len(recs_a) > 1 else "")), r.arrays(mode))
                   for i, r in enumerate(recs_a, start=1)]
        parts_b = [(str(r.meta.get("part") or (f"split{i}" if len(recs_b) > 1 else "")), r.arrays(mode))
                   for i, r in enumerate(recs_b, start=1)]

        def cat(parts: list[tuple[str, dict[str, np.ndarray]]], name: str) -> np.ndarray:
            return np.concatenate([np.asarray(arr[name]) for _, arr in parts])

        keys_a = np.concatenate([np.char.add(f"{p}/" if p else "", np.asarray(arr["key"]).astype(str))
                                 for p, arr in parts_a])
        keys_b = np.concatenate([np.char.add(f"{p}/" if p else "", np.asarray(arr["key"]).astype(str))
                                 for p, arr in parts_b])
        ia, ib, _, _ = _match(task, keys_a, keys_b, intersect)
        top_a, top_b = cat(parts_a, "top_classes")[ia, 0], cat(parts_b, "top_classes")[ib, 0]
        margin_a, margin_b = cat(parts_a, "margin")[ia], cat(parts_b, "margin")[ib]
        target = cat(parts_a, "target")[ia]
        changed = np.flatnonzero(top_a != top_b)
        flips = [Flip(str(keys_a[ia[i]]), int(target[i]), int(top_a[i]), int(top_b[i]), float(margin_a[i]),
                      float(margin_b[i])) for i in changed]
        second_a, second_b = cat(parts_a, "top_classes")[ia, 1:2], cat(parts_b, "top_classes")[ib, 1:2]
        same = (top_a == top_b) & (second_a == second_b).all(axis=1) & np.isfinite(margin_a) & np.isfinite(margin_b)
        change = np.abs(margin_a.astype(np.float64) - margin_b.astype(np.float64))
        moved = float(change[same].max()) if same.any() else None
        over = np.flatnonzero(same & (change >= bound)) if bound is not None else np.array([], dtype=np.int64)
        moved_over = [Flip(str(keys_a[ia[i]]), int(target[i]), int(top_a[i]), int(top_b[i]), float(margin_a[i]),
                           float(margin_b[i])) for i in over[np.argsort(-change[over], kind="stable")]]
        out.append(FlipSet(task, mode, len(ia), flips, prec_a, prec_b, bound, res_a.evalkit.get("flip_budget"),
                           res_b.evalkit.get("flip_budget"), list(recs_a[0].meta.get("classnames") or []), note,
                           moved, moved_over))
    return out


# ----------------------------------------------------------------------------- comparing


def _primary(task: str, a: TaskResult, b: TaskResult) -> str:
    named = a.evalkit.get("metric")
    if not isinstance(named, str):
        from evalkit.reporting.report import primary_metric

        named = primary_metric(a.dataset, [a, b])
    for label, r in (("A", a), ("B", b)):
        if metric_value(r.metrics, named) is None:
            raise CompareError(f"{task}: {label}'s result has no {named} (A's primary metric)")
    return named


def _side_value(result: TaskResult, metric: str, root: Path, compared: float | None) -> SideValue:
    found = support(result, metric, root)
    value = metric_value(result.metrics, metric)
    return SideValue(float(value if value is not None else math.nan), found.interval if found else None, compared,
                     result_variant(result), str(result.evalkit.get("precision") or ""))


def _records(side: Side, result: TaskResult) -> list[Records]:
    return result_records(result, side.root)


def compare_task(task: str, a: Side, b: Side, *, intersect: bool = False, level: float = DEFAULT_LEVEL,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> TaskComparison:
    """One task of both sides: values, paired difference and interval, McNemar (not yet Holm-corrected), flips."""
    res_a, res_b = a.results[task], b.results[task]
    metric = _primary(task, res_a, res_b)
    recs_a, recs_b = _records(a, res_a), _records(b, res_b)
    if not recs_a or not recs_b:
        return _from_values(task, metric, a, b, recs_a, recs_b, level)
    if recs_a[0].kind != recs_b[0].kind:
        raise CompareError(f"{task}: A's records are of kind {recs_a[0].kind}, B's of kind {recs_b[0].kind}")
    kind = recs_a[0].kind
    paired = _PAIRING[kind](task, metric, (res_a, recs_a), (res_b, recs_b), intersect)
    boot = bootstrap(paired.columns, paired.statistic, strata=paired.strata, resamples=resamples, seed=seed)
    estimate = np.asarray(boot.estimate, dtype=np.float64)
    intervals = boot.interval(level)
    row = TaskComparison(task, metric, kind, paired.n,
                         _side_value(res_a, metric, a.root, float(estimate[0])),
                         _side_value(res_b, metric, b.root, float(estimate[1])),
                         float(estimate[2]), intervals[2], paired.tested, only_a=paired.only_a, only_b=paired.only_b)
    if paired.hits_a is not None and paired.hits_b is not None:
        row.b_count = int(np.count_nonzero(paired.hits_a & ~paired.hits_b))
        row.c_count = int(np.count_nonzero(~paired.hits_a & paired.hits_b))
        row.pvalue = mcnemar_pvalue(row.b_count, row.c_count)
    if kind == "classification":
        row.flips = _flips(task, (res_a, recs_a), (res_b, recs_b), intersect)
    return row


def _from_values(task: str, metric: str, a: Side, b: Side, recs_a: list[Records], recs_b: list[Records],
                 level: float) -> TaskComparison:
    res_a, res_b = a.results[task], b.results[task]
    missing = [(s, r) for s, r, recs in ((a, res_a, recs_a), (b, res_b, recs_b)) if not recs]
    who = " and ".join(f"{s.label}'s result {path_of(r, s.root)}" for s, r in missing)
    who += " were" if len(missing) > 1 else " was"
    n_a, n_b = int(res_a.evalkit.get("evaluated") or 0), int(res_b.evalkit.get("evaluated") or 0)
    proportion = all(metric in count_intervals({metric: r.metrics.get(metric, 0.0)}, n, interval_options_of(r))[0]
                     for r, n in ((res_a, n_a), (res_b, n_b)))
    if not proportion:
        raise CompareError(f"{task}: {who} {NO_RECORDS}: {metric} cannot be compared without them")
    if n_a != n_b:
        raise CompareError(f"{task}: A has {n_a} samples, B {n_b}, and {who} {NO_RECORDS}: the samples cannot be "
                           f"matched")
    va, vb = _side_value(res_a, metric, a.root, None), _side_value(res_b, metric, b.root, None)
    note = (f"values only: {who} {NO_RECORDS}; no paired interval, McNemar test or flips")
    return TaskComparison(task, metric, "values", n_a, va, vb, vb.value - va.value, notes=[note])


def task_selection(tasks: str | Iterable[str] | None) -> dict[str, set[str]] | None:
    """Per ``--tasks`` argument, the task names it stands for (groups and aliases resolved through
    the task files; a name no task file knows is kept as given)."""
    if tasks is None:
        return None
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        return None
    from evalkit.registry import UnknownNameError
    from evalkit.tasks.spec import TaskIndex

    index = TaskIndex.load()
    out: dict[str, set[str]] = {}
    for name in names:
        try:
            out[name] = {s.name for s in index.resolve([name], run=False)} | {name}
        except UnknownNameError:
            out[name] = {name}
    return out


def _average(name: str, rows: Sequence[TaskComparison], level: float, resamples: int, seed: int) -> SuiteAverage:
    a = np.array([r.a.compared if r.a.compared is not None else r.a.value for r in rows])
    b = np.array([r.b.compared if r.b.compared is not None else r.b.value for r in rows])
    t = len(rows)

    def statistic(s: np.ndarray) -> np.ndarray:
        s = s[..., 0, :] / t
        return np.stack([s[..., 0], s[..., 1], s[..., 1] - s[..., 0]], axis=-1)

    boot = bootstrap(np.stack([a, b], axis=1), statistic, resamples=resamples, seed=seed)
    return SuiteAverage(name, tuple(r.task for r in rows), float(a.mean()), float(b.mean()), float((b - a).mean()),
                        boot.interval(level)[2])


def compare(a: SideSpec | str | Path, b: SideSpec | str | Path, *, tasks: str | Iterable[str] | None = None,
            intersect: bool = False, level: float = DEFAULT_LEVEL, resamples: int = DEFAULT_RESAMPLES,
            seed: int = DEFAULT_SEED) -> Comparison:
    """Compare two runs task by task (the module's docstring says how); bad input is a
    :class:`CompareError` naming the side and task."""
    if not 0 < level < 1:
        raise CompareError(f"--level must lie strictly between 0 and 1, got {level}")
    if resamples < 1:
        raise CompareError(f"--resamples must be at least 1, got {resamples}")
    side_a = load_side(a if isinstance(a, SideSpec) else SideSpec(Path(a)), "A")
    side_b = load_side(b if isinstance(b, SideSpec) else SideSpec(Path(b)), "B")
    selection = task_selection(tasks)
    names_a, names_b = set(side_a.results), set(side_b.results)
    if selection is not None:
        wanted = set().union(*selection.values())
        unknown = [arg for arg, names in selection.items() if not names & (names_a | names_b)]
        if unknown:
            raise CompareError(f"--tasks {', '.join(unknown)}: no result of it in A ({side_a.spec.path}) or B "
                               f"({side_b.spec.path})")
        names_a, names_b = names_a & wanted, names_b & wanted
    common = sorted(names_a & names_b)
    if not common:
        raise CompareError(f"nothing to compare: A has {', '.join(sorted(names_a)) or 'no task'}, B has "
                           f"{', '.join(sorted(names_b)) or 'no task'}: no task in both")
    rows = [compare_task(t, side_a, side_b, intersect=intersect, level=level, resamples=resamples, seed=seed)
            for t in common]
    tested = [r for r in rows if r.pvalue is not None]
    for r, p in zip(tested, holm([r.pvalue for r in tested]), strict=True):
        r.pvalue_holm = p
    averages = []
    if len(rows) > 1:
        averages.append(_average("all compared tasks", rows, level, resamples, seed))
    for arg, names in (selection or {}).items():
        members = [r for r in rows if r.task in names]
        if 1 < len(members) < len(rows):
            averages.append(_average(arg, members, level, resamples, seed))
    return Comparison(side_a.description, side_b.description, level, resamples, seed, intersect, rows, averages,
                      sorted(names_a - names_b), sorted(names_b - names_a))

