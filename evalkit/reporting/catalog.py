"""What reporting reads from the task files: each task's primary metric and whether its view
samples frames, the order reports list tasks in, and the aggregates groups carry.

Nothing here lists a dataset: the group files do (``tasks/**/*.yaml``). A group's ``aggregate``
entries (:class:`evalkit.tasks.spec.AggregateSpec`) become :class:`Aggregate` objects over the
group's tasks, each scored on its task file's ``metric`` unless the entry names ``metrics``.
The group ``report-order`` (:data:`REPORT_ORDER_GROUP`, ``run: false``) gives the order of tasks
(its tasks, groups expanded) and of aggregates (its groups, depth first); tasks and aggregates it
does not reach follow, by name and by file.

:func:`load_catalog` reads the task folders evalkit reads (``$EVALKIT_TASK_PATH``, then the
built-in tasks) and keeps the answer while no task file under them changes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.tasks.spec import AggregateSpec, GroupSpec, TaskIndex, TaskSpecError, default_task_dirs

REPORT_ORDER_GROUP = "report-order"


@dataclass(frozen=True)
class Aggregate:
    """One average a report prints: ``reduce`` over the (task, metric) ``members``."""

    name: str
    members: tuple[tuple[str, str], ...]
    column: str | None = None  # leaderboard column; None: not on the leaderboard
    claim: str | None = None  # its task name in the claims files (the paper's printed aggregate)
    reduce: str = "mean"  # a reduction of the metric table: mean, or gap (first member minus the mean)
    description: str = ""
    group: str = ""  # the group file's group
    path: str = ""  # the group file

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for t, _ in self.members))

    @property
    def leaderboard(self) -> bool:
        return self.column is not None


@dataclass(frozen=True)
class Catalog:
    task_order: tuple[str, ...]
    primary: Mapping[str, str]  # task (or alias) -> its task file's metric
    video: frozenset[str]  # tasks whose view samples frames (a result without a frame count is 1 frame)
    aggregates: tuple[Aggregate, ...]

    @property
    def claim_names(self) -> frozenset[str]:
        """The claims files' task names of the printed aggregates (``AVG27`` ...)."""
        return frozenset(a.claim for a in self.aggregates if a.claim)

    def aggregate(self, name: str) -> Aggregate:
        for a in self.aggregates:
            if a.name == name:
                return a
        raise KeyError(f"no aggregate {name!r}; the group files have {[a.name for a in self.aggregates]}")

    def task_key(self, task: str) -> tuple[int, str]:
        """Sort key: the report order, then tasks it does not list, by name."""
        order = self._order
        return (order.get(task, len(order)), task)

    @functools.cached_property
    def _order(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.task_order)}


def _walk(index: TaskIndex, name: str, seen: set[str]) -> Iterator[GroupSpec]:
    """``name`` and the groups inside it, depth first, each once."""
    if name in seen or name not in index.groups:
        return
    seen.add(name)
    group = index.groups[name]
    yield group
    for child in group.tasks:
        if index.lookup(child) is None:
            yield from _walk(index, child, seen)


def _aggregate(index: TaskIndex, group: GroupSpec, i: int, spec: AggregateSpec) -> Aggregate:
    where = f"{group.path}: aggregate[{i}]"
    tasks = index.group_tasks(group.name)
    excluded = set()
    for t in spec.exclude:
        found = index.lookup(t)
        if found is None or found.name not in tasks:
            raise TaskSpecError(f"{where}.exclude: {t!r} is not a task of group {group.name!r}")
        excluded.add(found.name)
    kept = [t for t in tasks if t not in excluded]
    if not kept:
        raise TaskSpecError(f"{where}.exclude: leaves no task of group {group.name!r} to aggregate")
    members = tuple((t, m) for t in kept for m in (spec.metrics or (index.tasks[t].metric,)))
    return Aggregate(spec.name, members, spec.column, spec.claim, spec.reduce, spec.description, group.name,
                     group.path)


def build_catalog(index: TaskIndex) -> Catalog:
    """The catalog of one task index. An aggregate name, column or claim given twice, a claim
    named like a task, or an ``exclude`` that is not a member is an error naming the group file
    and the key."""
    seen: set[str] = set()
    ordered = list(_walk(index, REPORT_ORDER_GROUP, seen))
    ordered += [g for name, g in index.groups.items() if name not in seen]
    aggregates: list[Aggregate] = []
    taken: dict[tuple[str, str], tuple[int, Aggregate]] = {}
    for group in ordered:
        for i, spec in enumerate(group.aggregates):
            agg = _aggregate(index, group, i, spec)
            for key in ("name", "column", "claim"):
                value = getattr(agg, key)
                if value is None:
                    continue
                if (key, value) in taken:
                    j, other = taken[(key, value)]
                    raise TaskSpecError(f"{group.path}: aggregate[{i}].{key}: {value!r} is also the {key} of "
                                        f"aggregate[{j}] of group {other.group!r} ({other.path})")
                taken[(key, value)] = (i, agg)
            if agg.claim is not None and (index.lookup(agg.claim) is not None or agg.claim in index.groups):
                raise TaskSpecError(f"{group.path}: aggregate[{i}].claim: {agg.claim!r} is the name of a task "
                                    f"or group; an aggregate's claim name must be its own")
            aggregates.append(agg)
    order = index.group_tasks(REPORT_ORDER_GROUP) if REPORT_ORDER_GROUP in index.groups else []
    primary = {name: spec.metric for name, spec in index.tasks.items()}
    primary.update({alias: index.tasks[task].metric for alias, task in index.aliases.items()
                    if alias not in primary})
    video = frozenset(name for name, spec in index.tasks.items() if _is_video(spec.view))
    return Catalog(tuple(order), primary, video, tuple(aggregates))


def _is_video(view: Any) -> bool:
    """Whether a task's view block is of the frames kind (a block of no known kind is not)."""
    from evalkit.views.base import view_kind

    try:
        return view_kind(view).kind == "frames"
    except EvalkitError:
        return False


def _signature(dirs: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for d in dirs:
        if d.is_dir():
            for p in sorted(d.rglob("*.yaml")):
                st = p.stat()
                out.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _cached(dirs: tuple[Path, ...], signature: tuple[tuple[str, int, int], ...]) -> Catalog:
    return build_catalog(TaskIndex.load(list(dirs)))


def load_catalog() -> Catalog:
    """The catalog of the task folders evalkit reads (:func:`evalkit.tasks.spec.default_task_dirs`),
    read again only when a task file there has changed."""
    dirs = tuple(default_task_dirs())
    return _cached(dirs, _signature(dirs))
