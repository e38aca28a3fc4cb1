"""A task's data sources and the fetch of what it lacks: what ``evalkit data get`` and ``evalkit
run --download`` do with a resolved task (:class:`evalkit.tasks.spec.TaskSpec`). The fetch itself,
its checks and its manifest are :mod:`evalkit.data.fetch`'s.

A task file's ``fetch:`` block names its source(s) (:meth:`TaskSpec.fetch_specs`). Each entry
becomes a :class:`FetchItem`: the source it fills (the task's ``source``, or a few-shot or
linear-probe task's ``train_source`` when the entry's split is the one that source reads), the
sample count that source must have (``protocol.expected_size``, or ``train_expected_size``), the
class count and the task's class names and templates, which a fetch compares with the mirror's.

A task's data is *missing* (:func:`missing_items`) when none of its layouts finds it, or when the
folder that does is one evalkit fetched and this split of it is not there yet (the train split of
a mirror whose test split is in place). Data in another layout (an ImageFolder of ImageNet, a copy
put there by hand) is the user's: it is used as it is and nothing is fetched.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.data.sources import DatasetNotFound, find_layout
from evalkit.errors import EvalkitError, one_line
from evalkit.tasks.spec import TaskSpec

__all__ = ["FetchItem", "FetchOutcome", "fetch_items", "located", "missing_items", "fetch_task", "get_command",
           "with_get_command"]


@dataclass(frozen=True)
class FetchItem:
    """One ``fetch:`` entry of a task, with what its data must hold."""

    task: str
    spec: Any  # evalkit.data.fetch.HubSpec or ManualSpec
    source: dict[str, Any]  # the source spec it fills
    part: str  # "test" (the task's source) or "train" (its train_source)
    expected: int | None  # samples the fetched split must have (None: not checked)
    classes: int | None  # classes its classnames.txt must list (None: not checked)
    classnames: list[str] | None  # the task's, compared with the mirror's (None: not compared)
    templates: list[str] | None

    @property
    def on_hub(self) -> bool:
        from evalkit.data.fetch import HubSpec

        return isinstance(self.spec, HubSpec)


def _wds_layouts(source: dict[str, Any]) -> list[dict[str, Any]]:
    layouts = source.get("layouts", []) if source.get("type") == "any" else [source]
    return [lo for lo in layouts if isinstance(lo, dict) and lo.get("type") == "wds"]


def _layout_for(source: dict[str, Any], folder: str, split: str | None) -> dict[str, Any] | None:
    """The WebDataset layout of ``source`` that reads ``folder`` (a path under the data root) at ``split``."""
    for layout in _wds_layouts(source):
        paths = layout.get("path") or []
        if str(folder) in [str(p) for p in (paths if isinstance(paths, list) else [paths])] and (
                split is None or str(layout.get("split", "test")) == split):
            return layout
    return None


def _remaps_classes(spec: TaskSpec, layout: dict[str, Any] | None) -> bool:
    """Whether the data's label space is not the task's class list one to one: a class subset
    (ImageNet-A/R's wnid mask), class indices, or a layout with its own class list."""
    source = spec.source
    return (spec.classnames is None or "class_subset" in spec.protocol or "class_indices" in source
            or any(k in (layout or {}) for k in ("classnames_file", "classnames", "class_indices")))


def fetch_items(spec: TaskSpec) -> list[FetchItem]:
    """The task's ``fetch:`` entries, each with the source it fills and what that must hold."""
    from evalkit.data.fetch import HubSpec

    out = []
    train = spec.options.get("train_source")
    for parsed in spec.fetch_specs():
        part, source = "test", spec.source
        hub = isinstance(parsed, HubSpec)
        if hub and isinstance(train, dict) and _layout_for(train, parsed.path, parsed.split) is not None:
            part, source = "train", train
        layout = _layout_for(source, parsed.path, None) if hub else None
        expected_key = "train_expected_size" if part == "train" else "expected_size"
        expected = spec.protocol.get(expected_key) if spec.fetch_checks_counts else None
        remapped = _remaps_classes(spec, layout)
        checks = spec.fetch_checks_counts and not remapped
        out.append(FetchItem(
            task=spec.name, spec=parsed, source=source, part=part,
            expected=int(expected) if isinstance(expected, int) else None,
            classes=len(spec.classnames) if checks and spec.classnames is not None else None,
            classnames=list(spec.classnames) if checks and spec.classnames is not None else None,
            templates=list(spec.templates) if spec.templates is not None else None))
    return out


def located(item: FetchItem, data_root: str | Path) -> Path | None:
    """The folder the task reads this item's data from now (any of its layouts); None: not found."""
    source = item.source if item.source.get("type") == "any" else {"type": "any", "layouts": [item.source]}
    try:
        _, folder = find_layout(source, data_root, item.task)
    except DatasetNotFound:
        return None
    return folder


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _missing(item: FetchItem, data_root: str | Path) -> bool:
    from evalkit.data.fetch import is_fetched, read_manifest

    if not item.on_hub:
        return located(item, data_root) is None
    if is_fetched(item.spec, data_root, task=item.task):
        return False
    found = located(item, data_root)
    if found is None:
        return True
    if _same_folder(found, Path(data_root) / item.spec.path):
        # the folder a fetch fills: evalkit's (the manifest names it) with this split not (yet) in place
        return item.spec.path in read_manifest(data_root)["folders"]
    return False  # found in another layout: the user's copy


def missing_items(spec: TaskSpec, data_root: str | Path, *, hub_only: bool = False) -> list[FetchItem]:
    """The task's fetch items whose data is not in place (no network, no writes); ``hub_only``:
    those a fetch can get (not the sets to get by hand)."""
    return [item for item in fetch_items(spec) if (item.on_hub or not hub_only) and _missing(item, data_root)]


@dataclass
class FetchOutcome:
    """What became of one fetch item: ``status`` is ``fetched`` (downloaded now), ``present``
    (fetched before: the manifest vouches for it), ``found`` (in place, not fetched by evalkit: used
    as it is), ``unmanaged`` (the fetch's folder exists and is not evalkit's: left alone),
    ``manual`` (not on the Hub and not in place: :attr:`line` says where to get it) or
    ``failed`` (:attr:`error`)."""

    item: FetchItem
    status: str
    line: str
    report: Any = None  # evalkit.data.fetch.FetchReport
    instructions: Any = None  # evalkit.data.fetch.ManualSource
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("fetched", "present", "found", "unmanaged")


def fetch_task(spec: TaskSpec, data_root: str | Path, *, items: list[FetchItem] | None = None,
               max_workers: int = 4, progress: bool = True, endpoint: str | None = None,
               say: Callable[[str], None] | None = None,
               unreachable: list[BaseException] | None = None) -> list[FetchOutcome]:
    """Fetch what the task's data lacks (``items``: these only; default every ``fetch:`` entry):
    one :class:`FetchOutcome` per item. A fetch error is an outcome (``failed``), not raised.

    ``unreachable``: a list shared by the calls of one command; a fetch that finds the Hub
    unreachable (:class:`evalkit.data.fetch.HubUnreachableError`) is appended to it, and while it
    holds one, the Hub fetches that follow are not attempted (``failed``, saying so at once)."""
    from evalkit.data import fetch

    out: list[FetchOutcome] = []
    for item in fetch_items(spec) if items is None else items:
        label = f"{item.task} ({item.part})" if item.part != "test" else item.task
        if not item.on_hub:
            where = located(item, data_root)
            if where is not None:
                out.append(FetchOutcome(item, "found", f"{label}: found at {where} (not on the Hub: evalkit "
                                                       f"fetched nothing; `evalkit data check` checks it)"))
            else:
                info = fetch.manual_instructions(item.spec, data_root, task=item.task)
                out.append(FetchOutcome(item, "manual", info.text(), instructions=info))
            continue
        if not _missing(item, data_root) and not fetch.is_fetched(item.spec, data_root, task=item.task):
            out.append(FetchOutcome(item, "found", f"{label}: found at {located(item, data_root)} (not fetched by "
                                                   f"evalkit: used as it is; nothing fetched)"))
            continue
        if unreachable:
            skipped = fetch.HubUnreachableError(f"not attempted: {one_line(unreachable[0])}")
            out.append(FetchOutcome(item, "failed", f"{label}: {skipped}", error=skipped))
            continue
        try:
            report = fetch.fetch_source(item.spec, data_root, task=item.task, expected=item.expected,
                                        classes=item.classes, classnames=item.classnames, templates=item.templates,
                                        max_workers=max_workers, progress=progress, endpoint=endpoint, say=say)
        except EvalkitError as e:
            out.append(FetchOutcome(item, "failed", f"{label}: {one_line(e)}", error=e))
            if isinstance(e, fetch.HubUnreachableError) and unreachable is not None:
                unreachable.append(e)
            continue
        out.append(FetchOutcome(item, report.status, report.line(), report=report))
    return out


def get_command(task: str, data_root: str | Path) -> str:
    """The command that fetches (or says where to get) a task's data."""
    return f"evalkit data get --tasks {shlex.quote(task)} --data-root {shlex.quote(str(data_root))}"


def with_get_command(e: DatasetNotFound, spec: TaskSpec, data_root: str | Path | None) -> DatasetNotFound:
    """A missing dataset's error, its one line ending with the ``evalkit data get`` command that
    fetches it (or, for a set not on the Hub, prints where to get it); ``e`` itself for a task
    whose file names no source."""
    if not spec.fetch or data_root is None:
        return e
    try:
        on_hub = any(item.on_hub for item in fetch_items(spec))
    except EvalkitError:
        return e
    how = "fetch it with run --download, or with:" if on_hub else "where to get it:"
    return DatasetNotFound(f"{one_line(e)}; {how} {get_command(spec.name, data_root)}", e.looked)
