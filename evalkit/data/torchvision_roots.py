"""Dataset folders as torchvision's own dataset classes lay them out after their download.

Each source reads the files torchvision would read, with the same labels, without importing the
torchvision dataset classes (several of them insist on downloading or on md5-checking archives).
``path`` is the dataset's own folder (``cifar-10-batches-py``, ``stanford_cars``, ...); the task
YAMLs list where under ``--data-root`` to look for it. Where the data carries its own class list
(a meta file), it is returned with ``classnames_origin`` set, and the classification family
checks the task's class names against it name by name, so a class list in the wrong order fails
instead of scoring garbage.

Layouts, facts about each dataset's files:

* CIFAR-10/100: ``cifar-10-batches-py/{test_batch,batches.meta}``,
  ``cifar-100-python/{test,meta}`` (pickled dicts; 3072-byte rows, R, G, B planes of 32×32).
* MNIST: ``MNIST/raw/t10k-{images-idx3,labels-idx1}-ubyte`` (IDX files, optionally ``.gz``).
* STL-10: ``stl10_binary/{test_X.bin,test_y.bin,class_names.txt}`` (96×96, stored column-major,
  labels 1-based).
* Stanford Cars: ``stanford_cars/{devkit/cars_meta.mat,cars_test_annos_withlabels.mat,cars_test/}``
  (1-based ``class``; no bounding-box crop, as torchvision and clip_benchmark).
* FGVC Aircraft: ``fgvc-aircraft-2013b/data/{variants.txt,images_variant_test.txt,images/}``
  (variant level).
* DTD: ``dtd/dtd/{labels/test1.txt,images/}`` (partition 1).
* Oxford-IIIT Pets: ``oxford-iiit-pet/{annotations/test.txt,images/}`` (1-based class ids).
* Flowers-102: ``flowers-102/{imagelabels.mat,setid.mat,jpg/}`` (``tstid``: 6,149 images).
* Food-101: ``food-101/{meta/test.json,images/}``.
* SUN397: ``SUN397/{ClassName.txt,<letter>/<class...>/sun_*.jpg}``, the whole dataset (no split).
* GTSRB: ``gtsrb/{GT-final_test.csv,GTSRB/Final_Test/Images/}``.
* PCam: ``pcam/camelyonpatch_level_2_split_test_{x,y}.h5`` (needs h5py).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import pickle
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evalkit.data.sources import (
    DataError,
    RawSample,
    SourceData,
    describe_layout,
    expect_entries,
    file_id,
    folder_listing,
    open_image_path,
    range_units,
    resolve_path,
    sources,
)

# -- helpers -----------------------------------------------------------------------------------


def files_units(prefix: str, root: Path, items: Sequence[tuple[Path, int]], keys: Sequence[str] | None = None
                 ) -> list:
    """Units over image files: the unit id hashes the file list (names + sizes), like ImageFolder."""
    digest = hashlib.sha256("\n".join(f"{p}:{p.stat().st_size}" for p, _ in items).encode()).hexdigest()[:16]

    def get(i: int) -> RawSample:
        path, label = items[i]
        key = keys[i] if keys is not None else str(path.relative_to(root))
        return key, open_image_path(path), label

    return range_units(f"{prefix}:{root}:{digest}", len(items), get)


def _array_units(prefix: str, files: Sequence[Path], n: int, image: Callable[[int], Image.Image],
                 labels: Sequence[int]) -> list:
    """Units over images held in arrays: the unit id is the data files' identity plus a range."""
    ident = "|".join(file_id(f) for f in files)

    def get(i: int) -> RawSample:
        def load() -> Image.Image:
            return image(i)

        return f"{files[0].name}[{i}]", load, int(labels[i])

    return range_units(f"{prefix}:{ident}", n, get)


def _check_images(items: Sequence[tuple[Path, int]], root: Path, what: str) -> None:
    """An annotation file that lists images which are not on disk is an incomplete download."""
    missing = [p for p, _ in items if not p.is_file()]
    if missing:
        raise DataError(f"{root}: {len(missing)} of the {len(items)} {what} images listed are missing "
                        f"(first: {missing[0].relative_to(root)})")


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        import scipy.io
    except ImportError as e:  # pragma: no cover - scipy ships with the install
        raise DataError(f"{path}: reading .mat files needs scipy (pip install scipy)") from e
    try:
        return scipy.io.loadmat(str(path), squeeze_me=True)
    except Exception as e:
        raise DataError(f"{path}: not a readable .mat file: {e}") from e


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as e:
        raise DataError(f"{path}: not a readable CIFAR pickle: {e}") from e


# -- CIFAR-10 / CIFAR-100 ----------------------------------------------------------------------

_CIFAR = {
    "cifar10": ("test_batch", "batches.meta", "labels", "label_names"),
    "cifar100": ("test", "meta", "fine_labels", "fine_label_names"),
}
describe_layout("cifar", "torchvision CIFAR root: cifar-10-batches-py/{test_batch,batches.meta} or "
                         "cifar-100-python/{test,meta}")


@sources.register("cifar")
def cifar_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    variant = source.get("variant", "cifar10")
    if variant not in _CIFAR:
        raise DataError(f"task {task!r}: cifar variant {variant!r} not in {sorted(_CIFAR)}")
    data_name, meta_name, label_key, names_key = _CIFAR[variant]
    root = resolve_path(source, data_root, task)
    expect_entries(root, [data_name, meta_name], f"torchvision {variant}")
    batch = _unpickle(root / data_name)
    meta = _unpickle(root / meta_name)
    try:
        pixels = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = [int(v) for v in batch[label_key]]
        names = [str(n) for n in meta[names_key]]
    except (KeyError, ValueError) as e:
        raise DataError(f"{root / data_name}: not a {variant} test batch ({e})") from e

    def image(i: int) -> Image.Image:
        return Image.fromarray(pixels[i].transpose(1, 2, 0))

    units = _array_units(variant, [root / data_name], len(labels), image, labels)
    return SourceData(units, names, None, {"path": str(root), "layout": "cifar"},
                      classnames_origin=str(root / meta_name))


# -- MNIST (IDX files) -------------------------------------------------------------------------

describe_layout("mnist", "torchvision MNIST root: MNIST/raw/t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (or .gz)")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 8 or struct.unpack(">I", raw[:4])[0] != magic:
        raise DataError(f"{path}: not an IDX file (magic {magic} expected)")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: IDX header says {dims} but the file holds {body.size} bytes")
    return body.reshape(dims)


def _first_existing(folder: Path, names: Sequence[str]) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise DataError(f"{folder}: expected {' or '.join(names)}; found {folder_listing(folder)}")


@sources.register("mnist")
def mnist_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    raw = root / "raw" if (root / "raw").is_dir() else root
    img_file = _first_existing(raw, ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"])
    lbl_file = _first_existing(raw, ["t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz"])
    pixels = _read_idx(img_file, 2051)
    labels = _read_idx(lbl_file, 2049)
    if len(pixels) != len(labels):
        raise DataError(f"{raw}: {len(pixels)} images but {len(labels)} labels")
    units = _array_units("mnist", [img_file, lbl_file], len(labels), lambda i: Image.fromarray(pixels[i]),
                         labels.tolist())
    return SourceData(units, None, None, {"path": str(root), "layout": "mnist"})


# -- STL-10 ------------------------------------------------------------------------------------

describe_layout("stl10", "torchvision STL-10 root: stl10_binary/{test_X.bin,test_y.bin,class_names.txt}")


@sources.register("stl10")
def stl10_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    expect_entries(root, ["test_X.bin", "test_y.bin"], "torchvision STL-10 (stl10_binary)")
    pixels = np.fromfile(root / "test_X.bin", dtype=np.uint8)
    labels = np.fromfile(root / "test_y.bin", dtype=np.uint8).astype(np.int64) - 1  # stored 1-based
    if pixels.size != labels.size * 3 * 96 * 96:
        raise DataError(f"{root}: test_X.bin holds {pixels.size} bytes, expected {labels.size} images of 3×96×96")
    # Each image is stored channel by channel, column-major: (C, W, H) -> (H, W, C).
    pixels = pixels.reshape(-1, 3, 96, 96)
    names = None
    if (root / "class_names.txt").is_file():
        names = [ln.strip() for ln in (root / "class_names.txt").read_text().splitlines() if ln.strip()]
    units = _array_units("stl10", [root / "test_X.bin", root / "test_y.bin"], labels.size,
                         lambda i: Image.fromarray(pixels[i].transpose(2, 1, 0)), labels.tolist())
    origin = str(root / "class_names.txt") if names else None
    return SourceData(units, names, None, {"path": str(root), "layout": "stl10"}, classnames_origin=origin)


# -- Stanford Cars -----------------------------------------------------------------------------

describe_layout("cars", "torchvision StanfordCars root: stanford_cars/{devkit/cars_meta.mat,"
                        "cars_test_annos_withlabels.mat,cars_test/}")


@sources.register("cars")
def cars_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    expect_entries(root, ["devkit/cars_meta.mat", "cars_test_annos_withlabels.mat", "cars_test"],
                   "torchvision Stanford Cars (stanford_cars)")
    names = [str(n) for n in np.atleast_1d(_loadmat(root / "devkit" / "cars_meta.mat")["class_names"])]
    annos = np.atleast_1d(_loadmat(root / "cars_test_annos_withlabels.mat")["annotations"])
    try:
        items = [(root / "cars_test" / str(a["fname"]), int(a["class"]) - 1) for a in annos]
    except (ValueError, IndexError, KeyError) as e:
        raise DataError(f"{root / 'cars_test_annos_withlabels.mat'}: annotations without fname/class: {e}") from e
    _check_images(items, root, "test")
    return SourceData(files_units("cars", root, items), names, None, {"path": str(root), "layout": "cars"},
                      classnames_origin=str(root / "devkit" / "cars_meta.mat"))


# -- FGVC Aircraft (variant level) -------------------------------------------------------------

describe_layout("fgvc_aircraft", "torchvision FGVCAircraft root: fgvc-aircraft-2013b/data/{variants.txt,"
                                 "images_variant_test.txt,images/}")


@sources.register("fgvc_aircraft")
def fgvc_aircraft_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    data = root / "data" if (root / "data").is_dir() else root
    split = source.get("split", "test")
    listing = f"images_variant_{split}.txt"
    expect_entries(data, ["variants.txt", listing, "images"], "torchvision FGVC Aircraft (fgvc-aircraft-2013b/data)")
    names = [ln.strip() for ln in (data / "variants.txt").read_text().splitlines() if ln.strip()]
    index = {n: i for i, n in enumerate(names)}
    items = []
    for ln in (data / listing).read_text().splitlines():
        if not ln.strip():
            continue
        image_id, _, variant = ln.strip().partition(" ")
        if variant not in index:
            raise DataError(f"{data / listing}: variant {variant!r} (image {image_id}) is not in variants.txt")
        items.append((data / "images" / f"{image_id}.jpg", index[variant]))
    _check_images(items, data, split)
    return SourceData(files_units("fgvc", data, items), names, None, {"path": str(root), "layout": "fgvc_aircraft"},
                      classnames_origin=str(data / "variants.txt"))


# -- DTD ---------------------------------------------------------------------------------------

describe_layout("dtd", "torchvision DTD root: dtd/dtd/{labels/test1.txt,images/<texture>/}")


@sources.register("dtd")
def dtd_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    data = root / "dtd" if (root / "dtd" / "labels").is_dir() else root
    listing = f"{source.get('split', 'test')}{int(source.get('partition', 1))}.txt"
    expect_entries(data, [f"labels/{listing}", "images"], "torchvision DTD (dtd/dtd)")
    rel = [ln.strip() for ln in (data / "labels" / listing).read_text().splitlines() if ln.strip()]
    names = sorted({r.split("/", 1)[0] for r in rel})
    index = {n: i for i, n in enumerate(names)}
    items = [(data / "images" / r, index[r.split("/", 1)[0]]) for r in rel]
    _check_images(items, data, listing)
    return SourceData(files_units("dtd", data, items), names, None, {"path": str(root), "layout": "dtd"},
                      classnames_origin=str(data / "labels" / listing))


# -- Oxford-IIIT Pets --------------------------------------------------------------------------

describe_layout("pets", "torchvision OxfordIIITPet root: oxford-iiit-pet/{annotations/test.txt,images/}")


@sources.register("pets")
def pets_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    expect_entries(root, ["annotations/test.txt", "images"], "torchvision Oxford-IIIT Pets (oxford-iiit-pet)")
    items: list[tuple[Path, int]] = []
    breed_of: dict[int, str] = {}
    for ln in (root / "annotations" / "test.txt").read_text().splitlines():
        parts = ln.split()
        if not parts:
            continue
        try:
            image_id, label = parts[0], int(parts[1]) - 1
        except (IndexError, ValueError) as e:
            raise DataError(f"{root / 'annotations' / 'test.txt'}: bad line {ln!r}") from e
        breed_of.setdefault(label, image_id.rsplit("_", 1)[0])
        items.append((root / "images" / f"{image_id}.jpg", label))
    _check_images(items, root, "test")
    # the breed names as torchvision spells them: "american_pit_bull_terrier" -> "American Pit Bull Terrier"
    names = [" ".join(w.title() for w in breed_of[i].split("_")) for i in sorted(breed_of)]
    if sorted(breed_of) != list(range(len(breed_of))):
        names = None  # some breed has no test image: no name list to check against
    return SourceData(files_units("pets", root, items), names, None, {"path": str(root), "layout": "pets"},
                      classnames_origin=str(root / "annotations" / "test.txt") if names else None)


# -- Flowers-102 -------------------------------------------------------------------------------

describe_layout("flowers102", "torchvision Flowers102 root: flowers-102/{imagelabels.mat,setid.mat,jpg/}")


@sources.register("flowers102")
def flowers102_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    expect_entries(root, ["imagelabels.mat", "setid.mat", "jpg"], "torchvision Flowers-102 (flowers-102)")
    labels = np.atleast_1d(_loadmat(root / "imagelabels.mat")["labels"]).astype(np.int64)
    split_key = {"test": "tstid", "train": "trnid", "val": "valid"}[source.get("split", "test")]
    ids = np.atleast_1d(_loadmat(root / "setid.mat")[split_key]).astype(np.int64)
    items = [(root / "jpg" / f"image_{i:05d}.jpg", int(labels[i - 1]) - 1) for i in ids.tolist()]
    _check_images(items, root, "test")
    return SourceData(files_units("flowers102", root, items), None, None, {"path": str(root), "layout": "flowers102"})


# -- Food-101 ----------------------------------------------------------------------------------

describe_layout("food101", "torchvision Food101 root: food-101/{meta/test.json,images/<class>/}")


@sources.register("food101")
def food101_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    split = source.get("split", "test")
    expect_entries(root, [f"meta/{split}.json", "images"], "torchvision Food-101 (food-101)")
    try:
        meta = json.loads((root / "meta" / f"{split}.json").read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{root / 'meta' / f'{split}.json'}: invalid JSON: {e}") from e
    names = sorted(meta)
    items = [(root / "images" / f"{rel}.jpg", label) for label, cls in enumerate(names) for rel in meta[cls]]
    _check_images(items, root, split)
    return SourceData(files_units("food101", root, items), names, None, {"path": str(root), "layout": "food101"},
                      classnames_origin=str(root / "meta" / f"{split}.json"))


# -- SUN397 (whole dataset) --------------------------------------------------------------------

describe_layout("sun397", "torchvision SUN397 root: SUN397/{ClassName.txt,<letter>/<class>/sun_*.jpg}")


@sources.register("sun397")
def sun397_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    """Every image (SUN397 has no test split; clip_benchmark and the paper's 108,754 use all)."""
    root = resolve_path(source, data_root, task)
    expect_entries(root, ["ClassName.txt"], "torchvision SUN397")
    keys = [ln.strip()[3:] for ln in (root / "ClassName.txt").read_text().splitlines() if ln.strip()]
    index = {k: i for i, k in enumerate(keys)}
    items = []
    for path in sorted(root.rglob("sun_*.jpg")):
        cls = "/".join(path.relative_to(root).parts[1:-1])
        if cls not in index:
            raise DataError(f"{path}: class folder {cls!r} is not in {root / 'ClassName.txt'}")
        items.append((path, index[cls]))
    if not items:
        raise DataError(f"{root}: no sun_*.jpg images under the class folders (expected <letter>/<class>/sun_*.jpg)")
    names = [k.replace("_", " ").replace("/", " ") for k in keys]  # clip_benchmark's spelling
    return SourceData(files_units("sun397", root, items), names, None, {"path": str(root), "layout": "sun397"},
                      classnames_origin=str(root / "ClassName.txt"))


# -- GTSRB -------------------------------------------------------------------------------------

describe_layout("gtsrb", "torchvision GTSRB root: gtsrb/{GT-final_test.csv,GTSRB/Final_Test/Images/*.ppm}")


@sources.register("gtsrb")
def gtsrb_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    images = root / "GTSRB" / "Final_Test" / "Images"
    expect_entries(root, ["GT-final_test.csv", "GTSRB/Final_Test/Images"], "torchvision GTSRB (gtsrb)")
    with (root / "GT-final_test.csv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    try:
        items = [(images / r["Filename"], int(r["ClassId"])) for r in rows]
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{root / 'GT-final_test.csv'}: expected ';'-separated Filename and ClassId columns") from e
    _check_images(items, images, "test")
    return SourceData(files_units("gtsrb", images, items), None, None, {"path": str(root), "layout": "gtsrb"})


# -- PCam (HDF5) -------------------------------------------------------------------------------

describe_layout("pcam", "torchvision PCAM root: pcam/camelyonpatch_level_2_split_test_{x,y}.h5 (needs h5py)")


@sources.register("pcam")
def pcam_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    split = source.get("split", "test")
    xs, ys = (f"camelyonpatch_level_2_split_{split}_{c}.h5" for c in "xy")
    expect_entries(root, [xs, ys], "torchvision PCam (pcam)")
    try:
        import h5py
    except ImportError as e:
        raise DataError(f"{root}: reading PCam's HDF5 files needs h5py (pip install h5py), "
                        f"or use the clip_benchmark WebDataset wds_vtab-pcam instead") from e
    with h5py.File(root / ys, "r") as f:
        labels = np.asarray(f["y"]).reshape(-1).astype(np.int64)

    def image(i: int) -> Image.Image:
        with h5py.File(root / xs, "r") as f:  # opened per sample: h5py handles do not survive fork
            return Image.fromarray(np.asarray(f["x"][i]))

    units = _array_units("pcam", [root / xs, root / ys], labels.size, image, labels.tolist())
    return SourceData(units, None, None, {"path": str(root), "layout": "pcam"})
