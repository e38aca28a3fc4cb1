"""ImageNet-V2 and ObjectNet: the two ImageNet variants whose labels are not a sorted folder listing.

ImageNet-1K, -Sketch, -A and -R are ImageFolder trees of wnid folders and use the ``folder``
source with the wnid list in label order (``class_folders_file``): IN-A and IN-R hold 200 of
the 1000 classes, and their tasks list exactly those 200 (the "wnid mask" of clip_benchmark and
wise-ft), so the classifier has 200 classes.

* **ImageNet-V2** (matched-frequency): ``<root>/<k>/*.jpeg`` for k = 0..999, where ``k`` *is* the
  ImageNet class index. The label is ``int(folder)``; an ImageFolder would string-sort the folders
  ("0", "1", "10", "100", ...) and scramble 990 of the 1000 labels.
* **ObjectNet**: ``objectnet-1.0/images/<folder>/*.png`` (313 folders) and four mapping files
  (``folder_to_objectnet_label.json``, ``objectnet_to_imagenet_1k.json``,
  ``pytorch_to_imagenet_2012_id.json``, ``imagenet_to_label_2012_v2``) from
  ``objectnet-1.0/mappings/`` (or copied next to ``objectnet-1.0``, as clip_benchmark does).
  Only the 113 classes that map to ImageNet are kept, labelled in sorted folder order. Two
  protocols:

  - ``protocol: clip_benchmark`` (the default task ``objectnet``): a 113-way classifier over the
    ObjectNet labels, lower-cased, and the images as they are.
  - ``protocol: imagenet_mapped`` (task ``objectnet-imagenet-mapped``, wise-ft / ImageNet-testbed
    style): the 1000-way ImageNet classifier; each of the 113 classes scores as the max over
    the logits of the ImageNet classes mapped to it; and a 2-pixel border is cropped off every
    image first (ObjectNet images carry a 1-pixel red border).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from evalkit.data.sources import (
    FOLDER_EXTS,
    DataError,
    SourceData,
    describe_layout,
    folder_listing,
    resolve_path,
    sources,
)
from evalkit.data.torchvision_roots import files_units

describe_layout("imagenetv2", "ImageNet-V2 folder: <k>/*.jpeg for class index k = 0..999 "
                              "(ImageNetV2-matched-frequency/ or imagenetv2-matched-frequency-format-val/)")


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in FOLDER_EXTS and f.is_file())


@sources.register("imagenetv2")
def imagenetv2_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    if not root.is_dir():
        raise DataError(f"{root}: ImageNet-V2 folder not found")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    not_int = [d.name for d in dirs if not d.name.isdigit()]
    if not_int:
        raise DataError(f"{root}: ImageNet-V2 class folders are named by class index 0..999; found "
                        f"{', '.join(not_int[:3])}{' ...' if len(not_int) > 3 else ''}")
    expect = int(source.get("expect_classes", 1000))
    labels = {d.name: int(d.name) for d in dirs}
    out_of_range = [n for n, k in labels.items() if k >= expect]
    if out_of_range or len(dirs) != expect:
        raise DataError(f"{root}: expected {expect} class folders named 0..{expect - 1}, found {len(dirs)}"
                        + (f" (out of range: {', '.join(out_of_range[:3])})" if out_of_range else ""))
    items = [(f, labels[d.name]) for d in dirs for f in _images_in(d)]
    if not items:
        raise DataError(f"{root}: the class folders hold no images")
    return SourceData(files_units("imagenetv2", root, items), None, None, {"path": str(root), "layout": "imagenetv2"})


# -- ObjectNet ---------------------------------------------------------------------------------

OBJECTNET_MAPPINGS = ("folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json",
                      "pytorch_to_imagenet_2012_id.json", "imagenet_to_label_2012_v2")
describe_layout("objectnet", "ObjectNet root: objectnet-1.0/images/<folder>/*.png with the mapping files "
                             "(objectnet-1.0/mappings/ or copied beside objectnet-1.0/: "
                             + ", ".join(OBJECTNET_MAPPINGS) + ")")


def _objectnet_dirs(root: Path) -> tuple[Path, Path]:
    """(images folder, mappings folder) for a root that is ``objectnet-1.0`` or holds it."""
    base = root / "objectnet-1.0" if (root / "objectnet-1.0").is_dir() else root
    images = base / "images"
    if not images.is_dir():
        raise DataError(f"{root}: not an ObjectNet folder: expected objectnet-1.0/images/<folder>/; found {folder_listing(root)}")
    for cand in (base / "mappings", root, base):
        if all((cand / m).is_file() for m in OBJECTNET_MAPPINGS):
            return images, cand
    looked = [base / "mappings", root]
    have = {str(c): [m for m in OBJECTNET_MAPPINGS if (c / m).is_file()] for c in looked}
    missing = [m for m in OBJECTNET_MAPPINGS if not any(m in v for v in have.values())]
    raise DataError(f"{root}: ObjectNet mapping files missing: {', '.join(missing) or 'a complete set'} "
                    f"(expected all of {', '.join(OBJECTNET_MAPPINGS)} in {looked[0]} or {looked[1]})")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON: {e}") from e


def objectnet_mapping(mappings: Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """(folder -> ImageNet class indices (sorted-wnid order), folder -> ObjectNet label) for the
    ObjectNet classes that map to ImageNet."""
    folder_to_label = _load_json(mappings / "folder_to_objectnet_label.json")
    label_to_imagenet = _load_json(mappings / "objectnet_to_imagenet_1k.json")
    torch_to_2012 = _load_json(mappings / "pytorch_to_imagenet_2012_id.json")
    names_2012 = [ln.strip() for ln in (mappings / "imagenet_to_label_2012_v2").read_text().splitlines() if ln.strip()]
    id2012_to_torch = {int(v): int(k) for k, v in torch_to_2012.items()}
    if len(names_2012) != 1000 or len(id2012_to_torch) != 1000:
        raise DataError(f"{mappings}: expected 1000 ImageNet classes in imagenet_to_label_2012_v2 and "
                        f"pytorch_to_imagenet_2012_id.json, found {len(names_2012)} and {len(id2012_to_torch)}")
    name_to_torch = {name: id2012_to_torch[i] for i, name in enumerate(names_2012)}
    label_to_folder = {v: k for k, v in folder_to_label.items()}
    groups: dict[str, list[int]] = {}
    labels: dict[str, str] = {}
    for label, imagenet_names in label_to_imagenet.items():
        if label not in label_to_folder:
            raise DataError(f"{mappings / 'objectnet_to_imagenet_1k.json'}: label {label!r} has no folder in "
                            f"folder_to_objectnet_label.json")
        ids = []
        for name in imagenet_names.split("; "):
            if name not in name_to_torch:
                raise DataError(f"{mappings / 'objectnet_to_imagenet_1k.json'}: ImageNet class {name!r} (for "
                                f"{label!r}) is not in imagenet_to_label_2012_v2")
            ids.append(name_to_torch[name])
        folder = label_to_folder[label]
        groups[folder] = ids
        labels[folder] = label
    return groups, labels


def _border_crop(load, px: int):
    def crop() -> Image.Image:
        img = load()
        w, h = img.size
        return img.crop((px, px, w - px, h - px))

    return crop


@sources.register("objectnet")
def objectnet_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    if not root.is_dir():
        raise DataError(f"{root}: ObjectNet folder not found")
    protocol = source.get("protocol", "clip_benchmark")
    if protocol not in ("clip_benchmark", "imagenet_mapped"):
        raise DataError(f"task {task!r}: ObjectNet protocol {protocol!r}; use clip_benchmark or imagenet_mapped")
    images, mappings = _objectnet_dirs(root)
    groups, labels = objectnet_mapping(mappings)
    expect = int(source.get("expect_classes", 113))
    if len(groups) != expect:
        raise DataError(f"{mappings / 'objectnet_to_imagenet_1k.json'}: expected {expect} ObjectNet classes "
                        f"mapped to ImageNet, found {len(groups)}")
    folders = sorted(groups)
    missing = [f for f in folders if not (images / f).is_dir()]
    if missing:
        raise DataError(f"{images}: {len(missing)} of the {len(folders)} mapped class folders are missing "
                        f"(e.g. {', '.join(missing[:3])})")
    items = [(f, label) for label, folder in enumerate(folders) for f in _images_in(images / folder)]
    if not items:
        raise DataError(f"{images}: the mapped class folders hold no images")
    units = files_units(f"objectnet-{protocol}", images, items)
    crop = int(source.get("border_crop", 2 if protocol == "imagenet_mapped" else 0))
    if crop:
        for unit in units:
            unit.samples = _cropped(unit.samples, crop)
            unit.id += f":border{crop}"
    info = {"path": str(root), "layout": "objectnet", "protocol": protocol, "border_crop": crop,
            "mappings": str(mappings)}
    if protocol == "imagenet_mapped":
        return SourceData(units, None, None, info, label_groups=[groups[f] for f in folders])
    return SourceData(units, [labels[f].lower() for f in folders], None, info)


def _cropped(samples, px: int):
    def iterate():
        for key, load, label in samples():
            yield key, _border_crop(load, px), label

    return iterate
