"""Pascal VOC 2007 as single-label classification of per-object crops (clip_benchmark's ``voc2007``).

Layout (torchvision's VOCDetection root, and clip_benchmark's): ``VOCdevkit/VOC2007/`` with
``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg`` and ``ImageSets/Main/test.txt`` (or
``aeroplane_test.txt``, whose first column lists the same ids).

Protocol, as clip_benchmark does it: every ``<object>`` of every test image is one sample (also
the ones marked ``difficult`` or ``truncated``), the image cropped to its ``bndbox`` with the
annotation's pixel coordinates used directly as the PIL crop box ``(xmin, ymin, xmax, ymax)``, and
labelled by its class name's index in VOC's alphabetical class list. So the sample count is the
number of test objects (14,976), not the 4,952 test images Table 11 of the paper lists.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from PIL import Image

from evalkit.data.sources import (
    DataError,
    RawSample,
    SourceData,
    describe_layout,
    folder_listing,
    open_image_path,
    range_units,
    resolve_path,
    sources,
)

describe_layout("voc2007_crops", "Pascal VOC 2007 root: VOCdevkit/VOC2007/{Annotations,JPEGImages,"
                                 "ImageSets/Main/test.txt}")


def _voc_dir(root: Path) -> Path:
    for cand in (root / "VOCdevkit" / "VOC2007", root / "VOC2007", root):
        if (cand / "Annotations").is_dir() and (cand / "JPEGImages").is_dir():
            return cand
    raise DataError(f"{root}: not a VOC 2007 folder: expected VOCdevkit/VOC2007/{{Annotations,JPEGImages,"
                    f"ImageSets/Main}}; found {folder_listing(root)}")


def _image_ids(voc: Path, split: str) -> list[str]:
    main = voc / "ImageSets" / "Main"
    for name in (f"{split}.txt", f"aeroplane_{split}.txt"):
        if (main / name).is_file():
            return [ln.split()[0] for ln in (main / name).read_text().splitlines() if ln.strip()]
    raise DataError(f"{main}: expected {split}.txt or aeroplane_{split}.txt listing the {split} image ids")


def _objects(xml_path: Path, index: dict[str, int]) -> list[tuple[tuple[int, int, int, int], int]]:
    try:
        tree = ET.parse(xml_path)
    except (ET.ParseError, OSError) as e:
        raise DataError(f"{xml_path}: unreadable annotation: {e}") from e
    out = []
    for obj in tree.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise DataError(f"{xml_path}: object class {name!r} is not one of the task's {len(index)} VOC classes")
        box = obj.find("bndbox")
        try:
            coords = tuple(int(float(box.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr,arg-type]
        except (AttributeError, TypeError, ValueError) as e:
            raise DataError(f"{xml_path}: object {name!r} has no valid bndbox") from e
        out.append((coords, index[name]))  # type: ignore[arg-type]
    return out


def _crop(load, box):
    def crop() -> Image.Image:
        return load().convert("RGB").crop(box)

    return crop


@sources.register("voc2007_crops")
def voc2007_crops_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    if not root.is_dir():
        raise DataError(f"{root}: VOC 2007 folder not found")
    voc = _voc_dir(root)
    names = source.get("_classnames")
    if not names:
        raise DataError(f"task {task!r}: voc2007_crops labels objects by the task's class names; the task has none")
    index = {n: i for i, n in enumerate(names)}
    split = source.get("split", "test")
    samples: list[tuple[str, Path, tuple[int, int, int, int], int]] = []
    for image_id in _image_ids(voc, split):
        for k, (box, label) in enumerate(_objects(voc / "Annotations" / f"{image_id}.xml", index)):
            samples.append((f"{image_id}#{k}", voc / "JPEGImages" / f"{image_id}.jpg", box, label))
    if not samples:
        raise DataError(f"{voc}: the {split} annotations hold no objects")
    missing = sorted({str(p.name) for _, p, _, _ in samples if not p.is_file()})
    if missing:
        raise DataError(f"{voc / 'JPEGImages'}: {len(missing)} annotated {split} images are missing (first: {missing[0]})")
    digest = hashlib.sha256("\n".join(f"{k}:{b}:{y}:{p.stat().st_size}" for k, p, b, y in samples).encode()
                            ).hexdigest()[:16]

    def get(i: int) -> RawSample:
        key, path, box, label = samples[i]
        return key, _crop(open_image_path(path), box), label

    info = {"path": str(root), "layout": "voc2007_crops", "split": split,
            "images": len({p for _, p, _, _ in samples}), "objects": len(samples)}
    return SourceData(range_units(f"voc2007_crops:{voc}:{digest}", len(samples), get), None, None, info)
