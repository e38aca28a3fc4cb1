"""Image–caption datasets for retrieval: one sample per image, its target the list of its captions.

Source type ``captions`` reads a folder holding the images and one annotation file, the first of
``annotations`` that exists (the format follows from the file):

* Karpathy's ``dataset_flickr30k.json`` / ``dataset_coco.json``: ``images[]`` with ``filename``,
  (COCO) ``filepath``, ``split`` and ``sentences[].raw``; the ``split`` (default ``test``) is read.
* clip_benchmark's ``flickr30k_test_karpathy.txt``: a header, then one ``image,caption`` row per
  caption, read exactly as clip_benchmark's Flickr loader reads it (each line split at its
  ``.jpg,``, nothing un-quoted), so the captions and their order are clip_benchmark's.
* clip_benchmark's ``coco_test_karpathy.json``: COCO format, ``images[]`` (``id``,
  ``file_name``) and ``annotations[]`` (``image_id``, ``caption``), every caption kept, images
  in sorted-id order and captions in file order (as torchvision's CocoCaptions, which
  clip_benchmark uses).
* ``captions.csv`` (ad hoc, ``--tasks captions:DIR``): a header ``image,caption``, one row per
  caption, read as strict CSV (quoted captions are un-quoted; a caption is one line, so a quote
  left open is an error naming the line it opened on, never the rest of the file in one caption).

Images are looked for under each of ``images`` (folders relative to the dataset folder; default
the folder itself), at ``filepath/filename`` and at ``filename``. An image the annotations name
but the disk lacks is a sample that fails to load (counted, listed with its id in the skipped
log, an error under ``--strict``), never dropped silently. An image without captions stays in
the gallery (counted in the result). Duplicate image ids, an unreadable file, a Karpathy file
without the split: a DataError naming the file (and line).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from evalkit.data.sources import (
    DataError,
    RawSample,
    SourceData,
    describe_layout,
    open_image_path,
    range_units,
    resolve_path,
    sources,
)

CAPTIONS_LAYOUT = ("a folder of images with one annotation file: Karpathy's dataset_<name>.json, clip_benchmark's "
                   "<name>_test_karpathy.txt (CSV image,caption) or coco_test_karpathy.json (COCO format), "
                   "or captions.csv (image,caption)")

describe_layout("captions", CAPTIONS_LAYOUT)

# (image id, relative paths to try, captions)
Entry = tuple[str, list[str], list[str]]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text: {e.reason} at byte {e.start}") from e


def _karpathy(path: Path, data: dict[str, Any], split: str) -> list[Entry]:
    images = data.get("images")
    if not isinstance(images, list):
        raise DataError(f"{path}: no 'images' list (expected Karpathy's format)")
    chosen = [im for im in images if isinstance(im, dict) and im.get("split") == split]
    if not chosen:
        found = sorted({str(im.get("split")) for im in images if isinstance(im, dict)})
        raise DataError(f"{path}: no images in split {split!r} (splits found: {', '.join(found) or 'none'})")
    out: list[Entry] = []
    for i, im in enumerate(chosen):
        name = im.get("filename")
        if not isinstance(name, str):
            raise DataError(f"{path}: image {i} of split {split!r} has no 'filename'")
        key = str(im.get("cocoid", name))
        rel = [f"{im['filepath']}/{name}", name] if im.get("filepath") else [name]
        caps = [s.get("raw", "") for s in im.get("sentences", []) if isinstance(s, dict)]
        out.append((key, rel, caps))
    return out


def _coco(path: Path, data: dict[str, Any]) -> list[Entry]:
    images, annotations = data.get("images"), data.get("annotations")
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise DataError(f"{path}: expected COCO format ('images' and 'annotations' lists)")
    captions: dict[Any, list[str]] = {}
    order: list[Any] = []
    files: dict[Any, str] = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DataError(f"{path}: images[{i}] needs 'id' and 'file_name'")
        if im["id"] in files:
            raise DataError(f"{path}: duplicate image id {im['id']!r} (images[{i}])")
        files[im["id"]] = im["file_name"]
        order.append(im["id"])
        captions[im["id"]] = []
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict) or ann.get("image_id") not in files:
            raise DataError(f"{path}: annotations[{i}] names image id {ann.get('image_id')!r}, "
                            f"which 'images' does not list")
        captions[ann["image_id"]].append(str(ann.get("caption", "")))
    # torchvision's CocoCaptions orders images by sorted id (``sorted(self.coco.imgs.keys())``)
    return [(str(i), [files[i]], captions[i]) for i in sorted(order)]


def _lines_split_at_jpg(path: Path) -> list[Entry]:
    """clip_benchmark's Flickr reader: skip the header, split each line at its ``.jpg,``."""
    grouped: dict[str, list[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
    for n, line in enumerate(lines[1:], start=2):
        line = line.strip()
        if not line:
            continue
        parts = line.split(".jpg,")
        if len(parts) != 2:
            raise DataError(f"{path}:{n}: expected '<image>.jpg,<caption>', got {line[:80]!r}")
        grouped.setdefault(parts[0] + ".jpg", []).append(parts[1])
    return [(name, [name], caps) for name, caps in grouped.items()]


def _csv(path: Path) -> list[Entry]:
    """Strict CSV: a quote that is never closed would otherwise swallow the rest of the file into
    one caption, so a row that fails to parse, or a field that spans lines, is an error naming the
    line its row (and so its opening quote) starts on. A caption is one line of text."""
    grouped: dict[str, list[str]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f, strict=True)
            start = 1
            try:
                header = next(reader, None)
                if header is None or [h.strip() for h in header[:2]] != ["image", "caption"]:
                    raise DataError(f"{path}:1: expected the header 'image,caption', got {header}")
                while True:
                    start = reader.line_num + 1
                    row = next(reader, None)
                    if row is None:
                        break
                    if any("\n" in cell or "\r" in cell for cell in row):
                        raise DataError(f"{path}:{start}: a quoted field runs from line {start} to line "
                                        f"{reader.line_num} (an unterminated quote? a caption is one line)")
                    if not any(cell.strip() for cell in row):
                        continue
                    if len(row) != 2:
                        raise DataError(f"{path}:{start}: expected 2 fields (image,caption), got {len(row)}")
                    grouped.setdefault(row[0].strip(), []).append(row[1])
            except csv.Error as e:
                if "end of data" in str(e):
                    raise DataError(f"{path}:{start}: the quote opened on line {start} is never closed "
                                    f"(the file ends inside it)") from e
                if reader.line_num > start:
                    raise DataError(f"{path}:{start}: the quote opened on line {start} is not closed on its line "
                                    f"(the row runs on to line {reader.line_num}: {e})") from e
                raise DataError(f"{path}:{start}: malformed CSV row: {e}") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text: {e.reason} at byte {e.start}") from e
    return [(name, [name], caps) for name, caps in grouped.items()]


def read_annotations(path: Path, split: str = "test") -> tuple[list[Entry], str]:
    """(entries, format name) of one annotation file."""
    if path.suffix == ".txt":
        return _lines_split_at_jpg(path), "clip_benchmark-csv"
    if path.suffix == ".csv":
        return _csv(path), "csv"
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    if "annotations" in data:
        return _coco(path, data), "coco"
    return _karpathy(path, data, split), "karpathy"


def _missing_image(key: str, tried: list[Path]) -> Callable[[], Image.Image]:
    def fail() -> Image.Image:
        raise FileNotFoundError(f"image {key} not found (looked for {' or '.join(str(p) for p in tried[:3])})")

    return fail


@sources.register("captions")
def captions_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected {CAPTIONS_LAYOUT})")
    names = source.get("annotations") or ["captions.csv"]
    names = names if isinstance(names, list) else [names]
    ann = next((root / n for n in names if (root / n).is_file()), None)
    if ann is None:
        raise DataError(f"{root}: no annotation file (looked for {', '.join(names)}; expected {CAPTIONS_LAYOUT})")
    entries, fmt = read_annotations(ann, str(source.get("split", "test")))
    if not entries:
        raise DataError(f"{ann}: no images")
    seen: dict[str, int] = {}
    for i, (key, _, _) in enumerate(entries):
        if key in seen:
            raise DataError(f"{ann}: image {key!r} is listed twice (entries {seen[key]} and {i})")
        seen[key] = i
    folders = [root / d for d in (source.get("images") or ["."])]
    paths: list[tuple[Path | None, list[Path]]] = []
    for _, rel, _ in entries:
        tried = [folder / r for folder in folders for r in rel]
        paths.append((next((p for p in tried if p.is_file()), None), tried))
    listed_missing = sum(p is None for p, _ in paths)
    # the unit's identity covers the captions too: features cached for it carry them as labels
    digest = hashlib.sha256("\n".join(f"{k}:{p}:{p.stat().st_size if p else -1}:{json.dumps(caps)}"
                                      for (k, _, caps), (p, _) in zip(entries, paths, strict=True)).encode()).hexdigest()[:16]

    def get(i: int) -> RawSample:
        key, _, caps = entries[i]
        path, tried = paths[i]
        return key, open_image_path(path) if path is not None else _missing_image(key, tried), list(caps)

    info = {
        "path": str(root), "layout": "captions", "annotations": str(ann), "format": fmt, "images": len(entries),
        "captions": sum(len(c) for _, _, c in entries), "images_without_captions": sum(not c for _, _, c in entries),
        "listed_missing": listed_missing,
    }
    return SourceData(range_units(f"captions:{ann}:{digest}", len(entries), get), info=info)
