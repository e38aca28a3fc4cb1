"""Generated miniatures of the 27 EVA-CLIP-18B classification datasets (``eva27``), each in the
layout its users have on disk (torchvision roots, ImageFolder trees, clip_benchmark WebDatasets,
Hugging Face cache entries), with a few tiny images per class. Class names come from the built-in
task files, so the miniatures carry the same label spaces as the real datasets; the images are
coloured noise (20×26 pixels, the colour set by the label).

``build_data_root(root)`` writes all of them under one data root and returns, per task, the
number of samples the task should find there. From the command line::

    python -m evalkit.demo.miniatures DIR [--scale 1]
    evalkit data check --tasks eva27 --data-root DIR
    evalkit run --model eva-clip-demo --tasks eva27 --data-root DIR

The test suite and the benchmarks (benchmarks/bench_eva27.py) build their eva27 data roots with it.
Needs NumPy and Pillow, and SciPy for the two layouts stored as MATLAB files (Stanford Cars,
Flowers102), as reading them does.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import pickle
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from evalkit.resources import builtin_tasks_dir

__all__ = [
    "TASKS", "VOC_OBJECTS", "names", "pixels", "image_bytes", "write_image", "image_folder", "wds",
    "hf_cache_entry", "cifar", "mnist", "stl10", "cars", "fgvc_aircraft", "dtd", "pets", "flowers102",
    "food101", "sun397_class_keys", "sun397", "gtsrb", "imagenetv2", "objectnet_mapping_files", "objectnet",
    "voc2007", "birdsnap", "build_data_root",
]

#: the built-in task files (their classnames/ lists give each miniature its label space)
TASKS = builtin_tasks_dir()


def names(kind: str, name: str) -> list[str]:
    return [ln.strip() for ln in (TASKS / kind / f"{name}.txt").read_text().splitlines() if ln.strip()]


def pixels(label: int, i: int, h: int = 20, w: int = 26) -> np.ndarray:
    """(h, w, 3) uint8 coloured noise: the base colour set by ``label``, the noise by ``(label, i)``."""
    rng = np.random.default_rng(7919 * label + i)
    base = np.array([(label * 37) % 256, (label * 91 + 60) % 256, (label * 53 + 120) % 256])
    return np.clip(base[None, None] + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


_JPEG_CACHE: dict[tuple[int, int, str], bytes] = {}


def image_bytes(label: int, i: int = 0, fmt: str = "JPEG") -> bytes:
    """A small non-square image (20×26) whose colour depends on the label; 8 variants per label."""
    key = (label, i % 8, fmt)
    if key not in _JPEG_CACHE:
        buf = io.BytesIO()
        Image.fromarray(pixels(label, i % 8)).save(buf, format=fmt, quality=90)
        _JPEG_CACHE[key] = buf.getvalue()
    return _JPEG_CACHE[key]


def write_image(path: Path, label: int, i: int = 0, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(label, i, fmt))


# -- generic layouts ---------------------------------------------------------------------------


def image_folder(root: Path, folders: list[str], per_class: int | list[int] = 1, ext: str = ".jpg") -> int:
    """``<root>/<folder>/<n><ext>``; label i = folders[i]. Returns the number of images."""
    counts = per_class if isinstance(per_class, list) else [per_class] * len(folders)
    for label, (folder, n) in enumerate(zip(folders, counts, strict=True)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_image(root / folder / f"{i:04d}{ext}", label, i)
    return sum(counts)


def wds(root: Path, labels: list[int], classnames: list[str] | None = None, templates: list[str] | None = None,
        nshards: int = 2, split: str = "test") -> int:
    """clip_benchmark WebDataset: ``<split>/{i}.tar`` (webp/png/jpg + cls) + ``nshards.txt``."""
    (root / split).mkdir(parents=True, exist_ok=True)
    per = -(-len(labels) // nshards)
    for s in range(nshards):
        with tarfile.open(root / split / f"{s}.tar", "w") as tar:
            for k in range(s * per, min((s + 1) * per, len(labels))):
                for ext, payload in (("jpg", image_bytes(labels[k], k)), ("cls", str(labels[k]).encode())):
                    info = tarfile.TarInfo(f"s{k:06d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    (root / split / "nshards.txt").write_text(f"{nshards}\n")
    if classnames is not None:
        (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    if templates is not None:
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    return len(labels)


def hf_cache_entry(cache: Path, name: str, labels: list[int], classnames: list[str], rev: str = "0123abcd") -> Path:
    """A Hugging Face hub cache entry ``datasets--clip-benchmark--<name>`` with one snapshot whose
    files are symlinks into ``blobs/``, as huggingface_hub writes them."""
    repo = cache / f"datasets--clip-benchmark--{name}"
    staging = repo / "staging"
    wds(staging, labels, classnames, ["a photo of a {c}."])
    snap = repo / "snapshots" / rev
    for f in sorted(staging.rglob("*")):
        if f.is_file():
            blob = repo / "blobs" / hashlib.sha1(f.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            f.replace(blob)
            link = snap / f.relative_to(staging)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(blob)
    for d in sorted(staging.rglob("*"), reverse=True):
        d.rmdir()
    staging.rmdir()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return repo


# -- torchvision roots -------------------------------------------------------------------------


def cifar(root: Path, variant: str, per_class: int = 1) -> int:
    classes = names("classnames", variant)
    labels = [c for c in range(len(classes)) for _ in range(per_class)]
    data = np.stack([pixels(y, i, 32, 32).transpose(2, 0, 1).reshape(-1) for i, y in enumerate(labels)])
    if variant == "cifar10":
        folder, batch, meta = root / "cifar-10-batches-py", {"data": data, "labels": labels}, {"label_names": classes}
        files = ("test_batch", "batches.meta")
    else:
        folder, batch, meta = root / "cifar-100-python", {"data": data, "fine_labels": labels}, {"fine_label_names": classes}
        files = ("test", "meta")
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in zip(files, (batch, meta), strict=True):
        (folder / name).write_bytes(pickle.dumps(obj))
    return len(labels)


def mnist(root: Path, per_class: int = 1, gz: bool = True) -> int:
    labels = np.array([c for c in range(10) for _ in range(per_class)], dtype=np.uint8)
    images = np.stack([pixels(int(y), i, 28, 28)[..., 0] for i, y in enumerate(labels)])
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    img = struct.pack(">IIII", 2051, len(labels), 28, 28) + images.tobytes()
    lbl = struct.pack(">II", 2049, len(labels)) + labels.tobytes()
    suffix = ".gz" if gz else ""
    (raw / f"t10k-images-idx3-ubyte{suffix}").write_bytes(gzip.compress(img) if gz else img)
    (raw / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(gzip.compress(lbl) if gz else lbl)
    return len(labels)


def stl10(root: Path, per_class: int = 1) -> int:
    classes = names("classnames", "stl10")
    labels = [c for c in range(len(classes)) for _ in range(per_class)]
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    # stored channel-major and column-major: (C, W, H)
    arr = np.stack([pixels(y, i, 96, 96).transpose(2, 1, 0) for i, y in enumerate(labels)])
    (folder / "test_X.bin").write_bytes(arr.astype(np.uint8).tobytes())
    (folder / "test_y.bin").write_bytes((np.array(labels) + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(classes) + "\n")
    return len(labels)


def cars(root: Path, per_class: int = 1, n_classes: int | None = None) -> int:
    import scipy.io

    classes = names("classnames", "cars")
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(classes, dtype=object)})
    rows = [(c, i) for c in range(n_classes or len(classes)) for i in range(per_class)]
    dtype = [(k, "O") for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    annos = np.zeros((len(rows),), dtype=dtype)
    for k, (c, i) in enumerate(rows):
        fname = f"{k + 1:05d}.jpg"
        annos[k] = (1, 1, 10, 10, c + 1, fname)
        write_image(base / "cars_test" / fname, c, i)
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": annos})
    return len(rows)


def fgvc_aircraft(root: Path, per_class: int = 1) -> int:
    classes = names("classnames", "fgvc_aircraft")
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "variants.txt").write_text("\n".join(classes) + "\n")
    lines = []
    for c, variant in enumerate(classes):
        for i in range(per_class):
            image_id = f"{1000000 + c * 10 + i}"
            lines.append(f"{image_id} {variant}")
            write_image(data / "images" / f"{image_id}.jpg", c, i)
    (data / "images_variant_test.txt").write_text("\n".join(lines) + "\n")
    return len(lines)


def dtd(root: Path, per_class: int = 1) -> int:
    classes = names("classnames", "dtd")
    data = root / "dtd"
    lines = []
    for c, cls in enumerate(classes):
        for i in range(per_class):
            rel = f"{cls}/{cls}_{i:04d}.jpg"
            lines.append(rel)
            write_image(data / "images" / rel, c, i)
    (data / "labels").mkdir(parents=True, exist_ok=True)
    (data / "labels" / "test1.txt").write_text("\n".join(lines) + "\n")
    (data / "labels" / "train1.txt").write_text(lines[0] + "\n")  # another partition file, ignored
    return len(lines)


def pets(root: Path, per_class: int = 1) -> int:
    classes = names("classnames", "pets")
    base = root / "oxford-iiit-pet"
    lines = []
    for c, breed in enumerate(classes):
        stem = breed.replace(" ", "_") if c % 2 else breed.replace(" ", "_").lower()  # both spellings occur
        for i in range(per_class):
            image_id = f"{stem}_{100 + i}"
            lines.append(f"{image_id} {c + 1} 1 1")
            write_image(base / "images" / f"{image_id}.jpg", c, i)
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    (base / "annotations" / "test.txt").write_text("\n".join(lines) + "\n")
    return len(lines)


def flowers102(root: Path, per_class: int = 1) -> int:
    import scipy.io

    n_classes = len(names("classnames", "flowers"))
    base = root / "flowers-102"
    labels, test_ids = [], []
    for c in range(n_classes):
        for i in range(per_class + 1):  # one extra image per class goes to the train split
            labels.append(c + 1)
            image_id = len(labels)
            write_image(base / "jpg" / f"image_{image_id:05d}.jpg", c, i)
            if i < per_class:
                test_ids.append(image_id)
    train_ids = sorted(set(range(1, len(labels) + 1)) - set(test_ids))
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([labels])})
    scipy.io.savemat(base / "setid.mat", {"tstid": np.array([test_ids]), "trnid": np.array([train_ids]),
                                          "valid": np.array([train_ids])})
    return len(test_ids)


def food101(root: Path, per_class: int = 1) -> int:
    classes = [c.replace(" ", "_") for c in names("classnames", "food101")]
    base = root / "food-101"
    meta = {}
    for c, cls in enumerate(classes):
        meta[cls] = [f"{cls}/{100 + i}" for i in range(per_class)]
        for i, rel in enumerate(meta[cls]):
            write_image(base / "images" / f"{rel}.jpg", c, i)
    (base / "meta").mkdir(parents=True, exist_ok=True)
    (base / "meta" / "test.json").write_text(json.dumps(meta))
    return per_class * len(classes)


def sun397_class_keys() -> list[str]:
    """ClassName.txt keys consistent with the task's names (the real file nests some classes,
    "apartment_building/outdoor"; here every other multi-word class is nested the same way)."""
    keys = []
    for k, name in enumerate(names("classnames", "sun397")):
        words = name.split(" ")
        if len(words) > 1 and k % 2:
            keys.append("_".join(words[:-1]) + "/" + words[-1])
        else:
            keys.append("_".join(words))
    return keys


def sun397(root: Path, per_class: int = 1) -> int:
    base = root / "SUN397"
    keys = sun397_class_keys()
    base.mkdir(parents=True, exist_ok=True)
    (base / "ClassName.txt").write_text("".join(f"/{k[0]}/{k}\n" for k in keys))
    for c, key in enumerate(keys):
        for i in range(per_class):
            write_image(base / key[0] / key / f"sun_{c:03d}{i:02d}.jpg", c, i)
    (base / "README.txt").write_text("not an image\n")
    return per_class * len(keys)


def gtsrb(root: Path, per_class: int = 1) -> int:
    n_classes = len(names("classnames", "gtsrb"))
    base = root / "gtsrb"
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    k = 0
    for c in range(n_classes):
        for i in range(per_class):
            fname = f"{k:05d}.ppm"
            write_image(base / "GTSRB" / "Final_Test" / "Images" / fname, c, i, fmt="PPM")
            rows.append(f"{fname};26;20;1;1;20;15;{c}")
            k += 1
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return k


# -- ImageNet variants, ObjectNet, VOC, Birdsnap ------------------------------------------------


def imagenetv2(root: Path, per_class: int = 1) -> int:
    base = root / "ImageNetV2-matched-frequency"
    for k in range(1000):
        for i in range(per_class):
            write_image(base / str(k) / f"{k}_{i}.jpeg", k, i)
    return 1000 * per_class


def objectnet_mapping_files(folder: Path, n_mapped: int = 113) -> dict[str, list[int]]:
    """The four ObjectNet mapping files for a synthetic ObjectNet whose class k (folder
    ``object_{k:03d}``, label "Object k") maps to ImageNet classes (pytorch index) 5k and 5k+1.
    The 2012-id order of the ImageNet names is a permutation of the pytorch order, as in the real
    files. Returns folder -> expected ImageNet indices."""
    folder.mkdir(parents=True, exist_ok=True)
    to_2012 = {t: (t * 7 + 3) % 1000 for t in range(1000)}  # pytorch index -> 2012 id (a bijection)
    names_2012 = [""] * 1000
    for t, i2012 in to_2012.items():
        names_2012[i2012] = f"imagenet class {t}, synonym {t}"
    folder_to_label = {f"object_{k:03d}": f"Object {k}" for k in range(n_mapped + 2)}  # 2 unmapped folders
    to_imagenet = {f"Object {k}": f"imagenet class {5 * k}, synonym {5 * k}; imagenet class {5 * k + 1}, "
                                  f"synonym {5 * k + 1}" for k in range(n_mapped)}
    (folder / "folder_to_objectnet_label.json").write_text(json.dumps(folder_to_label))
    (folder / "objectnet_to_imagenet_1k.json").write_text(json.dumps(to_imagenet))
    (folder / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({str(t): i for t, i in to_2012.items()}))
    (folder / "imagenet_to_label_2012_v2").write_text("\n".join(names_2012) + "\n")
    return {f"object_{k:03d}": [5 * k, 5 * k + 1] for k in range(n_mapped)}


def objectnet(root: Path, per_class: int = 1) -> int:
    """``objectnet-1.0/images/<folder>/*.png`` (113 mapped + 2 unmapped folders), red 1-px border."""
    base = root / "objectnet-1.0"
    objectnet_mapping_files(base / "mappings")
    for k in range(115):
        for i in range(per_class):
            arr = pixels(k, i, 24, 30)
            arr[0, :], arr[-1, :], arr[:, 0], arr[:, -1] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
            path = base / "images" / f"object_{k:03d}" / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
    return 113 * per_class


VOC_OBJECTS = {  # image id -> [(class name, (xmin, ymin, xmax, ymax), difficult)]
    "000001": [("dog", (3, 2, 20, 18), 0), ("person", (1, 1, 9, 15), 0)],
    "000004": [("car", (2, 3, 25, 19), 1)],
    "000006": [("diningtable", (1, 1, 12, 10), 0), ("chair", (10, 5, 24, 19), 0), ("pottedplant", (4, 4, 8, 9), 0)],
    "000008": [("tvmonitor", (5, 2, 26, 20), 0)],
}


def voc2007(root: Path) -> int:
    voc = root / "VOCdevkit" / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    classes = names("classnames", "voc2007")
    ids = sorted(VOC_OBJECTS)
    (voc / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    for n, image_id in enumerate(ids):
        objs = VOC_OBJECTS[image_id]
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", classes.index(objs[0][0]), n)
        body = "".join(
            f"<object><name>{c}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>"
            f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for c, b, d in objs)
        (voc / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>26</width><height>20</height>"
            f"<depth>3</depth></size>{body}</annotation>")
    return sum(len(v) for v in VOC_OBJECTS.values())


def birdsnap(root: Path, per_class: int = 1, n_classes: int = 40, broken: int = 3) -> int:
    """Birdsnap 1.1 style: test_images.txt + download/images/<Species_Dir>/; the first ``broken``
    listed images were never downloaded (dead links)."""
    classes = names("classnames", "birdsnap")
    base = root / "birdsnap"
    rel = []
    for c in range(n_classes):
        for i in range(per_class):
            rel.append(f"{classes[c].replace(' ', '_')}/{c:03d}{i:02d}.jpg")
    for k, r in enumerate(rel):
        if k >= broken:
            write_image(base / "download" / "images" / r, classes.index(r.split("/")[0].replace("_", " ")), k)
    (base / "test_images.txt").write_text("path\n" + "\n".join(rel) + "\n")
    return len(rel) - broken


# -- the whole data root -----------------------------------------------------------------------


def build_data_root(root: Path, scale: int = 1) -> dict[str, int]:
    """Every eva27 dataset in its primary layout under ``root`` (``scale`` × the default images per
    class); returns task -> sample count."""
    k = scale
    wnids = names("classnames", "imagenet1k_wnids")
    n: dict[str, int] = {}
    n["imagenet1k"] = image_folder(root / "imagenet" / "val", wnids, per_class=k, ext=".JPEG")
    n["imagenetv2"] = imagenetv2(root / "imagenetv2", per_class=k)
    n["imagenet-a"] = image_folder(root / "imagenet-a", names("classnames", "imagenet-a_wnids"), per_class=k)
    (root / "imagenet-a" / "README.txt").write_text("ImageNet-A\n")
    n["imagenet-r"] = image_folder(root / "imagenet-r", names("classnames", "imagenet-r_wnids"), per_class=k)
    n["imagenet_sketch"] = image_folder(root / "imagenet_sketch" / "sketch", wnids, per_class=k, ext=".JPEG")
    n["objectnet"] = objectnet(root / "objectnet", per_class=k)
    n["objectnet-imagenet-mapped"] = n["objectnet"]
    n["cifar10"] = cifar(root / "cifar10", "cifar10", per_class=2 * k)
    n["cifar100"] = cifar(root / "cifar100", "cifar100", per_class=k)
    n["mnist"] = mnist(root / "mnist", per_class=2 * k)
    caltech = ["BACKGROUND_Google", "Faces", "Faces_easy"] + [f"category_{c:03d}" for c in range(99)]
    n["caltech101"] = image_folder(root / "caltech101" / "101_ObjectCategories", caltech,
                                   per_class=[(2 if c < 3 else 1) * k for c in range(102)])
    n["sun397"] = sun397(root / "sun397", per_class=k)
    n["fgvc_aircraft"] = fgvc_aircraft(root / "fgvc_aircraft", per_class=k)
    n["country211"] = image_folder(root / "country211" / "test", [f"C{c:03d}" for c in range(211)], per_class=k)
    n["cars"] = cars(root / "cars", per_class=k)
    n["birdsnap"] = birdsnap(root, per_class=k)
    n["dtd"] = dtd(root / "dtd", per_class=k)
    n["eurosat"] = image_folder(root / "eurosat" / "2750", names("classnames", "eurosat_folders"), per_class=2 * k)
    n["fer2013"] = image_folder(root / "fer2013" / "test", names("classnames", "fer2013_folders"), per_class=2 * k)
    n["flowers"] = flowers102(root / "flowers", per_class=k)
    n["food101"] = food101(root / "food101", per_class=k)
    n["gtsrb"] = gtsrb(root / "gtsrb", per_class=k)
    # PCam's torchvision layout is HDF5 (h5py is not installed here): the WebDataset mirror instead
    n["pcam"] = wds(root / "wds_vtab-pcam", [0, 1] * 4 * k, names("classnames", "pcam"), ["{c}"])
    n["pcam-openai"] = n["pcam"]
    n["pets"] = pets(root / "pets", per_class=k)
    n["renderedsst2"] = image_folder(root / "rendered-sst2" / "test", ["negative", "positive"], per_class=3 * k,
                                     ext=".png")
    n["resisc45"] = image_folder(root / "resisc45" / "NWPU-RESISC45",
                                 [c.replace(" ", "_") for c in names("classnames", "resisc45")], per_class=k)
    n["resisc45-openai"] = n["resisc45"]
    n["stl10"] = stl10(root / "stl10", per_class=k)
    n["voc2007"] = voc2007(root / "voc2007")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evalkit.demo.miniatures",
                                 description="Write generated miniatures of the eva27 datasets under DIR.")
    ap.add_argument("root", type=Path, help="the data root to write (pass it to --data-root)")
    ap.add_argument("--scale", type=int, default=1, help="images per class, as a multiple of the default")
    args = ap.parse_args(argv)
    counts = build_data_root(args.root, scale=args.scale)
    print(f"{sum(counts.values())} samples for {len(counts)} tasks under {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
