"""Where samples come from. A source yields ``(key, image loader, label)`` and knows nothing of models.

Each source splits its samples into *units* (a tar shard, or a fixed range of indices): the unit
is what the feature cache stores, so an interrupted run resumes at the first unfinished unit.
Decoding happens in the data-loader workers; a sample that does not decode is reported with its
key and the reason instead of being dropped (see ``evalkit.features``).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from evalkit.registry import Registry

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")
FOLDER_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

sources: Registry[Any] = Registry("source")


class DataError(ValueError):
    """A dataset that is missing, empty or malformed; the message names the file or folder."""


# A raw sample: a stable key, a zero-argument callable that returns a PIL image (and may raise
# on a corrupt file), and a label.
RawSample = tuple[str, Callable[[], Image.Image], Any]


@dataclass
class Unit:
    """A piece of a dataset that is cached as one feature shard."""

    id: str  # stable identity of the unit's content (path + size + mtime, or a range)
    samples: Callable[[], Iterator[RawSample]]
    size: int | None = None


@dataclass
class SourceData:
    units: list[Unit]
    classnames: list[str] | None = None
    templates: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int | None:
        sizes = [u.size for u in self.units]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[misc]


def _open_image_bytes(data: bytes) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img

    return load


def _open_image_path(path: Path) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        with Image.open(path) as img:
            img.load()
            return img.copy() if img.mode in ("RGB", "L", "RGBA", "P") else img.convert("RGB")

    return load


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def resolve_path(source: dict[str, Any], data_root: str | Path | None, task: str) -> Path:
    """The folder a source reads: ``path`` (absolute, or relative to ``--data-root``)."""
    raw = source.get("path") or source.get("default_subdir") or task
    path = Path(os.path.expanduser(str(raw)))
    if not path.is_absolute():
        if data_root is None:
            raise DataError(f"task {task!r} reads {raw!r} relative to the data root, but no --data-root was given")
        path = Path(data_root) / path
    return path


def _read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


# -- clip_benchmark WebDataset folders ---------------------------------------------------------


@sources.register("wds")
def wds_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    """clip_benchmark's layout: ``<root>/<split>/{0..n-1}.tar`` + ``nshards.txt``, ``classnames.txt``,
    ``zeroshot_classification_templates.txt`` at the root; samples have an image (webp/png/jpg)
    and a ``cls`` label."""
    root = resolve_path(source, data_root, task)
    split = source.get("split", "test")
    layout = "<root>/<split>/N.tar with nshards.txt, classnames.txt, zeroshot_classification_templates.txt"
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected clip_benchmark WebDataset layout: {layout})")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder not found (expected {layout})")
    tars = sorted(split_dir.glob("*.tar"), key=lambda p: (len(p.stem), p.stem))
    nshards_file = split_dir / "nshards.txt"
    if nshards_file.exists():
        try:
            nshards = int(nshards_file.read_text().strip())
        except ValueError as e:
            raise DataError(f"{nshards_file}: not an integer") from e
        expected = [split_dir / f"{i}.tar" for i in range(nshards)]
        missing = [p.name for p in expected if not p.exists()]
        if missing:
            raise DataError(
                f"{split_dir}: nshards.txt says {nshards} shards but {len(missing)} are missing "
                f"(first: {', '.join(missing[:3])})"
            )
        tars = expected
    if not tars:
        raise DataError(f"{split_dir}: no .tar shards found (expected {layout})")
    classnames = templates = None
    if (root / "classnames.txt").exists():
        classnames = _read_lines(root / "classnames.txt")
    if (root / "zeroshot_classification_templates.txt").exists():
        templates = _read_lines(root / "zeroshot_classification_templates.txt")
    label_key = source.get("label_key", "cls")
    units = [Unit(id=_file_id(t), samples=_tar_samples(t, label_key)) for t in tars]
    return SourceData(units, classnames, templates, {"path": str(root), "split": split, "shards": len(tars)})


def _tar_samples(tar_path: Path, label_key: str) -> Callable[[], Iterator[RawSample]]:
    def iterate() -> Iterator[RawSample]:
        import webdataset as wds

        # One shard at a time so a corrupt tar is reported with its own file name.
        # No node/worker splitting inside webdataset: evalkit's loader hands every worker the
        # whole shard and each decodes its own share (sample i -> worker i % W).
        ds = wds.WebDataset(
            str(tar_path), shardshuffle=False, handler=wds.reraise_exception, empty_check=False,
            nodesplitter=None, workersplitter=None,
        )
        try:
            for sample in ds:
                key = sample.get("__key__", "?")
                name = f"{tar_path.name}/{key}"
                image_ext = next((e for e in IMAGE_EXTS if e in sample), None)
                if image_ext is None:
                    yield name, _missing(name, f"no image member ({'/'.join(IMAGE_EXTS)})"), None
                    continue
                raw_label = sample.get(label_key)
                try:
                    label = int(raw_label.decode() if isinstance(raw_label, bytes) else raw_label)
                except (TypeError, ValueError):
                    yield name, _missing(name, f"no integer '{label_key}' label"), None
                    continue
                yield name, _open_image_bytes(sample[image_ext]), label
        except Exception as e:  # tarfile/webdataset errors: the shard itself is unreadable
            if isinstance(e, DataError):
                raise
            raise DataError(f"{tar_path}: corrupt or unreadable tar shard: {type(e).__name__}: {e}") from e

    return iterate


def _missing(name: str, why: str) -> Callable[[], Image.Image]:
    def fail() -> Image.Image:
        raise DataError(f"{name}: {why}")

    return fail


# -- ImageFolder trees -------------------------------------------------------------------------


def _range_units(prefix: str, n: int, get: Callable[[int], RawSample], chunk: int = 2048) -> list[Unit]:
    def make(lo: int, hi: int) -> Unit:
        def iterate() -> Iterator[RawSample]:
            for i in range(lo, hi):
                yield get(i)

        return Unit(id=f"{prefix}[{lo}:{hi}]", samples=iterate, size=hi - lo)

    return [make(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]


@sources.register("folder")
def folder_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    """``<root>/<class>/<image>``; class names from folder names (sorted) unless a classnames file
    is given (one name per line, in label order, same count as folders)."""
    root = resolve_path(source, data_root, task)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected an ImageFolder tree <root>/<class>/<image>)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class folders found (expected <root>/<class>/<image>)")
    items: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in FOLDER_EXTS and f.is_file():
                items.append((f, label))
    if not items:
        raise DataError(f"{root}: class folders contain no images ({', '.join(sorted(FOLDER_EXTS))})")
    classnames = [d.name.replace("_", " ") for d in class_dirs]
    if source.get("classnames"):
        cn_path = Path(source["classnames"])
        if not cn_path.exists():
            raise DataError(f"{cn_path}: classnames file not found")
        classnames = _read_lines(cn_path)
        if len(classnames) != len(class_dirs):
            raise DataError(
                f"{cn_path}: {len(classnames)} class names but {root} has {len(class_dirs)} class folders"
            )
    digest = hashlib.sha256("\n".join(f"{p}:{p.stat().st_size}" for p, _ in items).encode()).hexdigest()[:16]

    def get(i: int) -> RawSample:
        path, label = items[i]
        return str(path.relative_to(root)), _open_image_path(path), label

    return SourceData(_range_units(f"folder:{root}:{digest}", len(items), get), classnames, None, {"path": str(root)})


# -- Hugging Face datasets saved with save_to_disk --------------------------------------------


@sources.register("hf")
def hf_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    """A ``datasets`` dataset saved with ``save_to_disk`` (a Dataset or a DatasetDict with ``split``)."""
    root = resolve_path(source, data_root, task)
    if not root.exists():
        raise DataError(f"{root}: Hugging Face dataset folder not found (expected a save_to_disk folder)")
    import datasets

    try:
        ds = datasets.load_from_disk(str(root))
    except Exception as e:
        raise DataError(f"{root}: not a dataset saved with save_to_disk: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        split = source.get("split", "test")
        if split not in ds:
            raise DataError(f"{root}: split {split!r} not found; has {sorted(ds)}")
        ds = ds[split]
    image_col = source.get("image_column") or next(
        (c for c, f in ds.features.items() if isinstance(f, datasets.Image)), None
    )
    label_col = source.get("label_column") or next(
        (c for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)), "label"
    )
    if image_col is None or image_col not in ds.column_names:
        raise DataError(f"{root}: no image column found (columns: {ds.column_names}); set source.image_column")
    if label_col not in ds.column_names:
        raise DataError(f"{root}: label column {label_col!r} not found (columns: {ds.column_names})")
    if len(ds) == 0:
        raise DataError(f"{root}: dataset is empty")
    feat = ds.features[label_col]
    classnames = list(feat.names) if isinstance(feat, datasets.ClassLabel) else None
    raw = ds.cast_column(image_col, datasets.Image(decode=False))
    fingerprint = getattr(ds, "_fingerprint", str(root))

    def get(i: int) -> RawSample:
        row = raw[i]
        img = row[image_col]
        loader = _open_image_bytes(img["bytes"]) if img.get("bytes") else _open_image_path(Path(img["path"]))
        return f"{i}", loader, int(row[label_col])

    return SourceData(_range_units(f"hf:{root}:{fingerprint}", len(raw), get), classnames, None, {"path": str(root)})


# -- ShapeWorld (the embedded demo) ------------------------------------------------------------


@sources.register("shapeworld")
def shapeworld_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    """Procedurally generated images (evalkit.demo): nothing to download."""
    from evalkit.demo.shapeworld import ShapeWorldClassification

    ds = ShapeWorldClassification(
        task=source.get("task", "shape"),
        split=source.get("split", "test"),
        n=int(source.get("n", 1000)),
        seed=int(source.get("seed", 0)),
    )

    def get(i: int) -> RawSample:
        def load() -> Image.Image:
            return ds[i][0]

        return ds.key(i), load, _label(ds, i)

    prefix = f"shapeworld:{source.get('task')}:{source.get('split')}:{source.get('seed')}:{len(ds)}"
    return SourceData(_range_units(prefix, len(ds), get, chunk=512), list(ds.classnames), None, {"generated": True})


def _label(ds: Any, i: int) -> int:
    label_of = getattr(ds, "label", None)
    return int(label_of(i)) if callable(label_of) else int(ds[i][1])


def load_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    kind = source.get("type")
    loader = sources.get(str(kind))
    data = loader(source, data_root, task)
    if data.size == 0:
        raise DataError(f"task {task!r}: dataset is empty ({data.info.get('path', kind)})")
    return data
