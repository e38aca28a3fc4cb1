"""Video datasets: where clips are and what they are labelled. A sample's loader returns the clip
(:class:`evalkit.data.video.VideoClip`, nothing decoded yet); the frames view decodes only the
frames its sampler needs, once for all the views of the clip.

* ``kinetics``: the Kinetics CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``), clips
  named ``<youtube_id>_<start:06d>_<end:06d>.mp4`` directly in a split folder or in per-class
  folders under it. Kinetics lists clips that can no longer be downloaded: a listed clip missing
  on disk is a sample that fails to load (counted, its id and reason in the skipped log, an error
  under ``--strict``), as is a CSV label that is not in the task's class list. ``class_indices``
  (a file of 0-based indices into the task's class list, one a line, relative to the task file)
  restricts the label space to those classes, in that order: the rows of other classes are left
  out of the task and counted (``outside_classes``), not skipped (ER-ZSAR's Kinetics-600 "220 new
  classes" splits: 160 of the 620 classes each, over the K600 test clips).
* ``ucf101``: ``ucfTrainTestlist/testlist0{1,2,3}.txt`` + ``classInd.txt`` and ``UCF-101/<Class>/v_*.avi``
  (``split``: 1, 2 or 3; 1 by default). The task's class names (OpenAI's) map onto the
  ``classInd.txt`` folders by normalised name (lower case, letters and digits only), so their
  order, which differs from classInd's at 4 places, is the task's.
* ``videofolder``: per-class folders of videos (vissl's layout, and ``--tasks videofolder:DIR``);
  class names from the folder names unless the task gives them.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalkit.data.sources import (
    DataError,
    RawSample,
    SourceData,
    describe_layout,
    range_units,
    read_list_file,
    resolve_path,
    sources,
)
from evalkit.data.video import VideoClip

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov")

describe_layout("kinetics", "Kinetics: <split>.csv (label,youtube_id,time_start,time_end,split) and clips "
                "<youtube_id>_<start:06d>_<end:06d>.mp4 in <split>/ or <split>/<class>/")
describe_layout("ucf101", "UCF-101: ucfTrainTestlist/classInd.txt + testlist0{1,2,3}.txt and UCF-101/<Class>/v_*.avi")
describe_layout("videofolder", "per-class folders of videos <root>/<class>/<clip>.mp4|avi|mkv|webm")


def normalise_label(name: str) -> str:
    """``Apply Eye Makeup`` / ``ApplyEyeMakeup`` / ``apply_eye_makeup`` -> ``applyeyemakeup``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _missing(key: str, why: str) -> Callable[[], Path]:
    def fail() -> Path:
        raise FileNotFoundError(f"clip {key}: {why}")

    return fail


def _bad_label(key: str, label: str) -> Callable[[], Path]:
    def fail() -> Path:
        raise ValueError(f"clip {key}: label {label!r} is not in the task's class list")

    return fail


def _path(path: Path) -> Callable[[], VideoClip]:
    return lambda: VideoClip(path)


def _units(prefix: str, items: list[tuple[str, Callable[[], Path], Any, str]]) -> list:
    """Units over (key, loader, label, identity) items; the identity (path, size) is hashed."""
    digest = hashlib.sha256("\n".join(ident for *_, ident in items).encode()).hexdigest()[:16]

    def get(i: int) -> RawSample:
        key, load, label, _ = items[i]
        return key, load, label

    return range_units(f"{prefix}:{digest}", len(items), get)


def _ident(path: Path) -> str:
    try:
        return f"{path}:{path.stat().st_size}"
    except OSError:
        return f"{path}:missing"


@sources.register("kinetics")
def kinetics_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    split = str(source.get("split", "val"))
    names = source.get("annotations") or [f"{split}.csv", f"annotations/{split}.csv", "validate.csv", "test.csv"]
    ann = next((root / n for n in names if (root / n).is_file()), None)
    if ann is None:
        raise DataError(f"{root}: no Kinetics annotation CSV (looked for {', '.join(names)})")
    classnames = source.get("_classnames")
    if not classnames:
        raise DataError(f"task {task!r}: a kinetics source needs the task's class names")
    classnames, chosen = _class_subset(source, list(classnames), ann)
    index = {normalise_label(c): i for i, c in enumerate(classnames)}
    clip_dirs = [root / d for d in (source.get("clips") or [split, "val", "test", "."])]
    by_name: dict[str, Path] = {}
    for d in clip_dirs:
        if d.is_dir():
            for p in d.rglob("*"):
                if p.suffix.lower() in VIDEO_EXTS:
                    by_name.setdefault(p.stem, p)
    items = []
    outside = 0
    try:
        with ann.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            need = {"label", "youtube_id", "time_start", "time_end"}
            if reader.fieldnames is None or not need <= set(reader.fieldnames):
                raise DataError(f"{ann}:1: expected the columns {sorted(need)}, got {reader.fieldnames}")
            for row in reader:
                try:
                    key = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
                except (TypeError, ValueError) as e:
                    raise DataError(f"{ann}:{reader.line_num}: bad time_start/time_end: {e}") from e
                label = index.get(normalise_label(row["label"]))
                if label is None and chosen is not None:
                    outside += 1  # another split's class: not part of this task
                    continue
                path = by_name.get(key)
                if label is None:
                    load = _bad_label(key, row["label"])
                elif path is None:
                    load = _missing(key, f"listed in {ann.name} but not found under {', '.join(str(d) for d in clip_dirs)}")
                else:
                    load = _path(path)
                items.append((key, load, label, _ident(path) if path else f"{key}:missing"))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise DataError(f"{ann}: cannot read: {e}") from e
    listed_missing = sum(1 for key, *_ in items if key not in by_name)
    info = {"path": str(root), "layout": "kinetics", "annotations": str(ann), "listed": len(items),
            "listed_missing": listed_missing}
    if chosen is not None:
        info.update(classnames_file=chosen, classes=len(classnames), outside_classes=outside)
    subset_id = f":{chosen}" if chosen else ""
    return SourceData(_units(f"kinetics:{ann}{subset_id}", items), list(classnames), None, info,
                      override_classnames=chosen is not None)


def _class_subset(source: dict[str, Any], classnames: list[str], ann: Path) -> tuple[list[str], str | None]:
    """The task's class names, or with ``class_indices`` the chosen ones (in the file's order)
    and the file's name."""
    lines = read_list_file(source, "class_indices")
    if lines is None:
        return classnames, None
    where = str(source["class_indices"])
    try:
        picked = [int(x) for x in lines]
    except ValueError as e:
        raise DataError(f"{where}: class_indices must be integers, one a line: {e}") from e
    bad = [i for i in picked if not 0 <= i < len(classnames)]
    if bad:
        raise DataError(f"{where}: class index {bad[0]} is outside the task's {len(classnames)} classes")
    if len(set(picked)) != len(picked):
        raise DataError(f"{where}: a class index is listed twice")
    return [classnames[i] for i in picked], where


@sources.register("ucf101")
def ucf101_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    split = int(source.get("split", 1))
    if split not in (1, 2, 3):
        raise DataError(f"task {task!r}: UCF-101 split must be 1, 2 or 3, got {split}")
    lists = root / "ucfTrainTestlist"
    class_ind, testlist = lists / "classInd.txt", lists / f"testlist0{split}.txt"
    for f in (class_ind, testlist):
        if not f.is_file():
            raise DataError(f"{f}: not found (expected ucfTrainTestlist/classInd.txt and testlist0{split}.txt)")
    folders = [ln.split()[1] for ln in class_ind.read_text().splitlines() if ln.strip()]
    classnames = source.get("_classnames") or folders
    by_norm = {normalise_label(c): i for i, c in enumerate(classnames)}
    folder_label = {f: by_norm.get(normalise_label(f)) for f in folders}
    unmapped = [f for f, i in folder_label.items() if i is None]
    if unmapped:
        raise DataError(f"{class_ind}: folder(s) {unmapped[:3]} match no class name of the task "
                        f"(by normalised name)")
    videos = root / "UCF-101"
    items = []
    for n, line in enumerate(testlist.read_text().splitlines(), start=1):
        rel = line.strip().split()[0] if line.strip() else ""
        if not rel:
            continue
        folder = rel.split("/")[0]
        if folder not in folder_label:
            raise DataError(f"{testlist}:{n}: class folder {folder!r} is not in classInd.txt")
        path = videos / rel
        load = _path(path) if path.is_file() else _missing(rel, f"listed in {testlist.name} but not found at {path}")
        items.append((rel, load, folder_label[folder], _ident(path)))
    if not items:
        raise DataError(f"{testlist}: no clips listed")
    info = {"path": str(root), "layout": "ucf101", "split": split, "listed": len(items),
            "listed_missing": sum(not (videos / k).is_file() for k, *_ in items)}
    return SourceData(_units(f"ucf101:{root}:{split}", items), list(classnames), None, info)


@sources.register("videofolder")
def videofolder_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (expected per-class folders of videos)")
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    if not folders:
        raise DataError(f"{root}: no class folders")
    classnames = source.get("_classnames") or [d.name.replace("_", " ") for d in folders]
    by_norm = {normalise_label(c): i for i, c in enumerate(classnames)}
    items = []
    for d in folders:
        label = by_norm.get(normalise_label(d.name))
        if label is None:
            raise DataError(f"{d}: folder matches no class name of the task (by normalised name)")
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in VIDEO_EXTS:
                items.append((f"{d.name}/{p.name}", _path(p), label, _ident(p)))
    if not items:
        raise DataError(f"{root}: the class folders hold no videos ({', '.join(VIDEO_EXTS)})")
    templates = None
    if (root / "templates.txt").is_file():
        templates = [ln.strip() for ln in (root / "templates.txt").read_text().splitlines() if ln.strip()]
    info = {"path": str(root), "layout": "videofolder", "class_folders": len(folders)}
    return SourceData(_units(f"videofolder:{root}", items), list(classnames), templates, info)
