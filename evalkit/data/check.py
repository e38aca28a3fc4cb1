"""The data-level half of ``evalkit data check``: one source spec → found / missing / error, the
layout and folder read, and the number of samples.

Samples are counted without decoding an image (file lists, annotation files, tar headers; a tar
shard that is cut short or has a corrupt header is an error naming the shard, never a smaller
count). This module knows source specs, not tasks: the command that resolves task and group names
and prints the table is :mod:`evalkit.cli.data`, a layer above (tasks sit above data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.data.sources import (
    DataError,
    DatasetNotFound,
    SourceData,
    check_task_classnames,
    class_subset_groups,
    load_source,
)
from evalkit.errors import one_line

__all__ = ["TaskCheck", "check_source", "count_samples"]


@dataclass
class TaskCheck:
    """One row of ``evalkit data check`` (its ``--json`` record)."""

    task: str
    status: str  # found, missing, error
    layout: str = ""
    path: str = ""
    samples: int | None = None
    expected: int | None = None
    table11: int | None = None  # the test size Table 11 of arXiv 2402.04252 prints
    classes: int | None = None
    table11_classes: int | None = None  # the class count Table 11 prints
    count: str = ""  # ok, differs, unknown
    message: str = ""
    listed_missing: int | None = None  # samples an annotation file lists that are not on disk
    looked: list[tuple[list[str], str]] | None = None  # missing: folders tried per layout


def count_samples(data: SourceData) -> int:
    total = 0
    for unit in data.units:
        if unit.size is not None:
            total += unit.size
        elif unit.count is not None:
            total += unit.count()
        else:  # no cheap count: walk the samples (keys and labels only; images stay undecoded)
            total += sum(1 for _ in unit.samples())
    return total


def _as_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def check_source(name: str, source: dict[str, Any], data_root: str | Path | None, *,
                 protocol: dict[str, Any] | None = None, classnames: list[str] | None = None,
                 base_dir: str | Path | None = None, where: str | None = None, noun: str) -> TaskCheck:
    """Check the source spec ``source`` of the dataset called ``name`` under ``data_root``.

    ``protocol``: its ``expected_size``, ``table11_test_size`` and ``table11_classes`` are reported
    next to the counts, and ``class_subset`` (label groups) sets the class count; ``classnames``:
    the names the data's own list must agree with; ``base_dir``: where relative file names in
    ``source`` resolve (the task file's folder); ``where``: what error messages name (default
    ``name``); ``noun``: what the samples are (images, clips, clouds: the kind of the task's view
    says it; this module knows sources, not views), in the message on listed samples not on disk."""
    proto = protocol or {}
    where = where or name
    row = TaskCheck(name, "found", expected=_as_int(proto.get("expected_size")),
                    table11=_as_int(proto.get("table11_test_size")),
                    table11_classes=_as_int(proto.get("table11_classes")))
    try:
        data = load_source(source, data_root, name, base_dir=base_dir, classnames=classnames)
        subset = class_subset_groups(proto, base_dir, where)
        if subset is not None:
            data.label_groups = subset
        note = check_task_classnames(classnames, data, where)
        row.samples = count_samples(data)
    except DatasetNotFound as e:
        row.status, row.message, row.looked = "missing", "not found (see below)", e.looked
        return row
    except (DataError, OSError) as e:
        row.status, row.message = "error", one_line(e)
        return row
    row.layout = str(data.info.get("layout", source.get("type", "")))
    row.path = str(data.info.get("path", ""))
    names = data.classnames if data.override_classnames or classnames is None else classnames
    row.classes = len(data.label_groups) if data.label_groups is not None else (len(names) if names else None)
    if row.expected is None:
        row.count = "unknown"
    else:
        row.count = "ok" if row.samples == row.expected else "differs"
    extra = []
    if note not in ("match", "task names only", "data names used"):
        extra.append(f"class names: {note}")
    row.listed_missing = _as_int(data.info.get("listed_missing"))
    if row.listed_missing:
        extra.append(f"{row.listed_missing} listed {noun} not on disk")
    row.message = "; ".join(extra)
    return row
