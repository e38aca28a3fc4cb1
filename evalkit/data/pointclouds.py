"""Point-cloud datasets: where the clouds are and how they are labelled. A sample's loader returns
a :class:`PointCloud` (``xyz`` float32 (N, 3), ``rgb`` float32 (N, 3) in [0, 1] or None), checked:
a cloud with NaN or inf coordinates, an empty cloud or file, or a file that does not read raises
:class:`PointCloudError` naming the sample and the reason, so the run counts the sample as skipped
and logs it (an error under ``--strict``). Nothing here normalises, samples or renders points:
that is the view's job.

* ``pointnet_h5``: PointNet's ModelNet40 HDF5 (``modelnet40_ply_hdf5_2048/``: ``ply_data_<split>*.h5``
  or the files ``<split>_files.txt`` lists, ``shape_names.txt``) and ScanObjectNN's h5 release
  (``variant``: ``obj_only`` = ``main_split_nobg/<p>_objectdataset.h5``, ``obj_bg`` =
  ``main_split/<p>_objectdataset.h5``, ``pb_t50_rs`` =
  ``main_split/<p>_objectdataset_augmentedrot_scale75.h5``, ``<p>`` = ``training`` or ``test``,
  directly in the folder or under ``h5_files/``); keys ``data`` (B, N, 3) and ``label`` (B,) or
  (B, 1). ``split``: ``train`` or ``test`` (default). Labels (small) are read and range-checked
  when the source is read; clouds are read one row at a time, each file opened once per unit in
  each loader process.
* ``openshape_npy``: the OpenShape/Uni3D test sets (``dataset``: ``modelnet40``, ``scanobjectnn`` or
  ``objaverse_lvis``; found from the folder's files when not given). ``modelnet40/test_pc.npy`` +
  ``test_split.json`` (+ ``modelnet40_shape_names.txt``): a pickled object array, which numpy
  reads only whole, so it is read on a sample's first load in each process (all its samples are
  one unit: once per loader worker; its size is checked against the split from the file header
  alone). ``scanobjectnn/xyz_label.npy`` (about 30 MB) is read whole when the source is read.
  ``objaverse_lvis/lvis_testset.txt`` lists one ``.npy`` per shape, read per sample; a listed file
  that is not on disk is counted (``listed_missing``) and is a skipped sample. Colours follow
  Uni3D: ModelNet40's ``rgb / 255``; ScanObjectNN has none; Objaverse-LVIS's as stored (0..1).
* ``pointfolder``: per-class folders of ``.npy`` ((N, 3) or (N, 6) arrays, or OpenShape-style
  dicts), ``.ply`` (ASCII or binary, vertex x/y/z and optional red/green/blue) and ``.xyz``
  (whitespace text, 3 or 6 columns); class names from the folder names unless the task gives
  them (``--tasks pointfolder:DIR``).

Colour columns of ``.xyz`` files, (N, 6) arrays and non-``uchar`` PLY colours are read as 0..255
when any value exceeds 1, else as 0..1 (a colour outside 0..255 or below 0 is an error).
``.npy`` files holding dicts are pickles (``allow_pickle``): read only data you trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.data.sources import (
    DataError,
    RawSample,
    SourceData,
    Unit,
    describe_layout,
    normalise_name,
    range_units,
    resolve_path,
    sources,
)

__all__ = ["PointCloud", "PointCloudError", "make_cloud", "read_ply", "read_point_file",
           "SCANOBJECTNN_VARIANTS", "POINT_EXTS"]

POINT_EXTS = (".npy", ".ply", ".xyz")
# ScanObjectNN's h5 release (hkust-vgd/scanobjectnn README, "h5 files"): variant -> file under the
# release's h5_files/ folder; {p} is "training" or "test".
SCANOBJECTNN_VARIANTS = {
    "obj_only": "main_split_nobg/{p}_objectdataset.h5",
    "obj_bg": "main_split/{p}_objectdataset.h5",
    "pb_t50_rs": "main_split/{p}_objectdataset_augmentedrot_scale75.h5",
}
OPENSHAPE_MARKERS = {"modelnet40": "test_split.json", "scanobjectnn": "xyz_label.npy",
                     "objaverse_lvis": "lvis_testset.txt"}

describe_layout("pointnet_h5", "PointNet/ScanObjectNN HDF5: ply_data_<split>*.h5 or <split>_files.txt (+ shape_names.txt), "
                "or ScanObjectNN [h5_files/]main_split[_nobg]/<training|test>_objectdataset*.h5; keys data, label")
describe_layout("openshape_npy", "OpenShape/Uni3D test sets: modelnet40/test_pc.npy + test_split.json, "
                "scanobjectnn/xyz_label.npy, objaverse_lvis/lvis_testset.txt + one .npy per shape")
describe_layout("pointfolder", "per-class folders of point clouds <root>/<class>/<cloud>.npy|ply|xyz")


class PointCloudError(DataError):
    """A point cloud that cannot be used; the message names the sample and the reason."""


@dataclass(frozen=True, eq=False)
class PointCloud:
    """One sample's points: ``xyz`` float32 (N, 3), finite, N > 0; ``rgb`` float32 (N, 3) in
    [0, 1], or None when the data has no colour."""

    xyz: np.ndarray
    rgb: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def with_colour(self, grey: float = 0.4) -> np.ndarray:
        """(N, 6) xyz + rgb; a cloud without colour gets a constant ``grey`` (Uni3D feeds 0.4)."""
        rgb = self.rgb if self.rgb is not None else np.full_like(self.xyz, grey)
        return np.concatenate([self.xyz, rgb], axis=1)


def _fail(key: str, why: str) -> PointCloudError:
    return PointCloudError(f"point cloud {key}: {why}")


def _colour(key: str, rgb: Any, n: int, scale: float | None) -> np.ndarray:
    try:
        arr = np.asarray(rgb, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise _fail(key, f"colours are not numbers: {e}") from e
    if arr.shape != (n, 3):
        raise _fail(key, f"colours have shape {arr.shape}; expected ({n}, 3) to match the points")
    if not np.isfinite(arr).all():
        raise _fail(key, "colours contain NaN or inf")
    if scale is None:  # 0..255 when any value says so, else 0..1 (see the module docstring)
        scale = 255.0 if arr.size and float(arr.max()) > 1.0 else 1.0
    if scale != 1.0:
        arr = arr / np.float32(scale)
    if arr.size and (float(arr.min()) < 0.0 or float(arr.max()) > 1.0):
        raise _fail(key, f"colours outside [0, 1] after scaling by 1/{scale:g} "
                         f"(min {float(arr.min()):.3g}, max {float(arr.max()):.3g})")
    return arr


def make_cloud(key: str, xyz: Any, rgb: Any = None, *, rgb_scale: float | None = None) -> PointCloud:
    """A checked :class:`PointCloud` from array-likes; ``rgb_scale``: what the stored colours are
    divided by (None: 255 when any exceeds 1, else 1). Raises :class:`PointCloudError` naming
    ``key`` for an empty cloud, a wrong shape, or NaN/inf coordinates."""
    try:
        pts = np.asarray(xyz, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise _fail(key, f"coordinates are not numbers: {e}") from e
    if pts.size == 0:
        raise _fail(key, "empty point cloud (0 points)")
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise _fail(key, f"coordinates have shape {pts.shape}; expected (N, 3)")
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise _fail(key, f"{int(bad.sum())} of {len(pts)} points have NaN or inf coordinates "
                         f"(first at point {int(np.flatnonzero(bad)[0])})")
    colours = None if rgb is None else _colour(key, rgb, len(pts), rgb_scale)
    return PointCloud(np.ascontiguousarray(pts), colours)


def _from_array(key: str, arr: np.ndarray, what: str) -> PointCloud:
    """(N, 3) -> xyz; (N, 6) -> xyz + rgb."""
    if arr.ndim == 2 and arr.shape[1] in (3, 6):
        return make_cloud(key, arr[:, :3], arr[:, 3:] if arr.shape[1] == 6 else None)
    if arr.size == 0:
        raise _fail(key, f"empty {what}")
    raise _fail(key, f"{what} has shape {arr.shape}; expected (N, 3) or (N, 6)")


def _from_dict(key: str, d: Any, what: str, rgb_scale: float | None = None) -> PointCloud:
    if not isinstance(d, dict) or "xyz" not in d:
        found = sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__
        raise _fail(key, f"{what} is not a dict with 'xyz' (found {found})")
    return make_cloud(key, d["xyz"], d.get("rgb"), rgb_scale=rgb_scale)


# -- file readers ------------------------------------------------------------------------------

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_PLY_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}


def _ply_header(data: bytes) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    """(format, [(element, count, [(property, type or 'list')])], offset of the body)."""
    if not data.startswith(b"ply"):
        raise ValueError("not a PLY file (no 'ply' line at the start)")
    end = re.search(rb"end_header\r?\n", data)
    if end is None:
        raise ValueError("PLY header without 'end_header'")
    fmt = None
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in data[:end.start()].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) >= 3:
            if words[1] == "list":
                elements[-1][2].append((words[-1], "list"))
            elif words[1] in _PLY_TYPES:
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise ValueError(f"PLY property type {words[1]!r} is not a PLY type")
        else:
            raise ValueError(f"PLY header line not understood: {line.strip()!r}")
    if fmt not in _PLY_FORMATS:
        raise ValueError(f"PLY format {fmt!r} not supported (ascii, binary_little_endian, binary_big_endian)")
    return fmt, elements, end.end()


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The vertices of a PLY file: (xyz float32 (N, 3), rgb (N, 3) as stored, or None). Colours are
    returned in [0, 1] when stored as ``uchar``, else as stored. Raises ValueError for a file it
    cannot read (the reason in the message), never returns a partial cloud."""
    data = Path(path).read_bytes()
    fmt, elements, offset = _ply_header(data)
    endian = _PLY_FORMATS[fmt]
    skip_rows = 0  # ascii: lines of the elements before the vertices
    for name, count, props in elements:
        if name == "vertex":
            break
        if any(t == "list" for _, t in props) and fmt != "ascii":
            raise ValueError(f"PLY element {name!r} with list properties comes before 'vertex'")
        if fmt == "ascii":
            skip_rows += count
        else:
            offset += count * np.dtype([(p, endian + t) for p, t in props]).itemsize
    else:
        raise ValueError("PLY file has no 'vertex' element")
    names = [p for p, _ in props]
    if any(t == "list" for _, t in props):
        raise ValueError("PLY vertex element has list properties")
    missing = [c for c in ("x", "y", "z") if c not in names]
    if missing:
        raise ValueError(f"PLY vertices have no {', '.join(missing)} (properties: {', '.join(names)})")
    if fmt == "ascii":
        lines = data[offset:].decode("ascii", errors="replace").splitlines()[skip_rows:skip_rows + count]
        if len(lines) < count:
            raise ValueError(f"PLY file ends after {len(lines)} of {count} vertices")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty cloud is reported by the caller
            table = np.loadtxt(lines, dtype=np.float64, ndmin=2, usecols=range(len(names))) if count else np.zeros((0, len(names)))
        cols = {n: table[:, i] for i, n in enumerate(names)}
    else:
        dtype = np.dtype([(p, endian + t) for p, t in props])
        have = (len(data) - offset) // dtype.itemsize if dtype.itemsize else 0
        if have < count:
            raise ValueError(f"PLY file ends after {have} of {count} vertices")
        rows = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        cols = {n: rows[n] for n in names}
    xyz = np.stack([cols["x"], cols["y"], cols["z"]], axis=1).astype(np.float32)
    rgb = None
    if all(c in cols for c in ("red", "green", "blue")):
        rgb = np.stack([cols["red"], cols["green"], cols["blue"]], axis=1).astype(np.float32)
        if dict(props)["red"] == "u1":
            rgb /= 255.0
    return xyz, rgb


def _read_xyz(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input contained no data": reported as an empty file
        return np.loadtxt(path, dtype=np.float64, ndmin=2)


def read_point_file(path: str | Path, key: str) -> PointCloud:
    """A ``.npy``, ``.ply`` or ``.xyz`` file as a checked :class:`PointCloud`; any failure is a
    :class:`PointCloudError` naming ``key``, the file and the reason."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise _fail(key, f"empty file {path}")
        suffix = path.suffix.lower()
        if suffix == ".ply":
            xyz, rgb = read_ply(path)
            return make_cloud(key, xyz, rgb)
        if suffix == ".xyz":
            return _from_array(key, _read_xyz(path), f"file {path}")
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=True)
            if arr.dtype.kind == "O" and arr.shape == ():
                return _from_dict(key, arr.item(), f"file {path}")
            return _from_array(key, arr, f"file {path}")
        raise _fail(key, f"{path}: not a point-cloud file ({', '.join(POINT_EXTS)})")
    except PointCloudError:
        raise
    except Exception as e:  # numpy/pickle/PLY errors: the file does not read
        raise _fail(key, f"cannot read {path}: {type(e).__name__}: {e}") from e


# -- shared helpers ----------------------------------------------------------------------------


def _ident(path: Path) -> str:
    try:
        st = path.stat()
        return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"
    except OSError:
        return f"{path}:missing"


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _contents(folder: Path, n: int = 6) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "nothing readable"
    return (", ".join(names[:n]) + (f", ... ({len(names)} entries)" if len(names) > n else "")) or "an empty folder"


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _units(prefix: str, items: list[tuple[str, Callable[[], PointCloud], Any]], chunk: int = 2048) -> list[Unit]:
    def get(i: int) -> RawSample:
        return items[i]  # type: ignore[return-value]

    return range_units(prefix, len(items), get, chunk=chunk)


def _unique_keys(names: list[str]) -> list[str]:
    """The names themselves when they are unique, else each prefixed with its index."""
    return names if len(set(names)) == len(names) else [f"{i}:{n}" for i, n in enumerate(names)]


def _check_labels(labels: np.ndarray, n_classes: int | None, where: str, what: str = "row") -> None:
    bad = np.flatnonzero(labels < 0) if n_classes is None else np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        i = int(bad[0])
        limit = "negative" if n_classes is None else f"out of range for {n_classes} classes"
        raise DataError(f"{where}: {what} {i}: label {int(labels[i])} is {limit} ({bad.size} such rows)")


def _int_labels(raw: Any, where: str) -> np.ndarray:
    lab = np.asarray(raw)
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    if lab.ndim != 1:
        raise DataError(f"{where}: 'label' has shape {lab.shape}; expected (B,) or (B, 1)")
    if lab.dtype.kind in "iu":
        return lab.astype(np.int64)
    if lab.dtype.kind == "f":
        frac = np.flatnonzero(~np.isfinite(lab) | (lab != np.round(lab)))
        if frac.size:
            raise DataError(f"{where}: row {int(frac[0])}: label {lab[frac[0]]!r} is not an integer")
        return lab.astype(np.int64)
    raise DataError(f"{where}: labels are {lab.dtype}, not integers")


# -- PointNet / ScanObjectNN HDF5 --------------------------------------------------------------


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is a dependency
        raise DataError("reading HDF5 point clouds needs h5py (pip install h5py)") from e
    return h5py


class _H5Rows:
    """Rows of one file's ``data``, read one at a time. The file is opened on the first read in a
    process (a handle is never used across a fork) and closed when a unit's iteration ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self._pid = -1

    def row(self, i: int) -> np.ndarray:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = _h5py().File(self.path, "r"), os.getpid()
        return self._file["data"][i]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None


def _h5_files(source: dict[str, Any], root: Path, split: str) -> list[Path]:
    files = source.get("files")
    if files:
        paths = [Path(f) if Path(f).is_absolute() else root / f for f in files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{root}: h5 file(s) named in source.files not found: {', '.join(missing[:3])}")
        return paths
    variant = source.get("variant")
    if variant is not None:
        if variant not in SCANOBJECTNN_VARIANTS:
            raise DataError(f"{root}: unknown ScanObjectNN variant {variant!r} (one of {', '.join(SCANOBJECTNN_VARIANTS)})")
        name = SCANOBJECTNN_VARIANTS[variant].format(p="training" if split == "train" else "test")
        candidates = [root / name, root / "h5_files" / name]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise DataError(f"{root}: ScanObjectNN {variant} {split} file not found (looked for "
                            f"{' and '.join(str(c) for c in candidates)}); found {_contents(root)}")
        return [found]
    listing = root / f"{split}_files.txt"
    if listing.is_file():
        paths = []
        for n, entry in enumerate(listing.read_text().splitlines(), start=1):
            entry = entry.strip()
            if not entry:
                continue
            # PointNet lists paths relative to its repository (data/modelnet40_ply_hdf5_2048/x.h5)
            rel = Path(entry)
            candidates = [rel] if rel.is_absolute() else [root / rel, root / rel.name]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise DataError(f"{listing}:{n}: {entry} not found (looked at {', '.join(str(c) for c in candidates)})")
            paths.append(found)
        if not paths:
            raise DataError(f"{listing}: lists no h5 files")
        return paths
    globbed = sorted(root.glob(f"ply_data_{split}*.h5"),
                     key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    if globbed:
        return globbed
    raise DataError(f"{root}: no h5 files for split {split!r}: expected {split}_files.txt, ply_data_{split}*.h5, "
                    f"or a ScanObjectNN variant ({', '.join(SCANOBJECTNN_VARIANTS)}); found {_contents(root)}")


def _h5_labels(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """The file's labels (checked against ``data``) and the shape of its ``data``."""
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file: {e}") from e
    with f:
        for key in ("data", "label"):
            if key not in f:
                raise DataError(f"{path}: no '{key}' dataset (found keys: {', '.join(sorted(f.keys())) or 'none'}); "
                                f"expected 'data' (B, N, 3) and 'label' (B,) or (B, 1)")
        shape = tuple(f["data"].shape)
        try:
            raw = f["label"][()]
        except OSError as e:
            raise DataError(f"{path}: 'label' cannot be read: {e}") from e
    if len(shape) != 3 or shape[2] != 3:
        raise DataError(f"{path}: 'data' has shape {shape}; expected (B, N, 3)")
    labels = _int_labels(raw, str(path))
    if len(labels) != shape[0]:
        raise DataError(f"{path}: 'label' has {len(labels)} rows but 'data' has {shape[0]}")
    return labels, shape


def _h5_load(rows: _H5Rows, key: str, i: int) -> Callable[[], PointCloud]:
    def load() -> PointCloud:
        try:
            xyz = rows.row(i)
        except Exception as e:  # a damaged file: the labels read but this row does not
            raise _fail(key, f"cannot read row {i} of {rows.path}: {type(e).__name__}: {e}") from e
        return make_cloud(key, xyz)

    return load


def _h5_unit(prefix: str, rows: _H5Rows, rel: str, labels: np.ndarray, lo: int, hi: int) -> Unit:
    def iterate() -> Iterator[RawSample]:
        try:
            for i in range(lo, hi):
                key = f"{rel}:{i}"
                yield key, _h5_load(rows, key, i), int(labels[i])  # type: ignore[misc]
        finally:
            rows.close()

    return Unit(id=f"{prefix}[{lo}:{hi}]", samples=iterate, size=hi - lo)


@sources.register("pointnet_h5")
def pointnet_h5_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    split = str(source.get("split", "test"))
    if split not in ("train", "test"):
        raise DataError(f"task {task!r}: pointnet_h5 split must be 'train' or 'test', got {split!r}")
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (expected PointNet/ScanObjectNN h5 files)")
    files = _h5_files(source, root, split)
    names_file = root / "shape_names.txt"
    classnames = _lines(names_file) if names_file.is_file() else None
    task_names = source.get("_classnames")
    n_classes = len(classnames) if classnames else (len(task_names) if task_names else None)
    units: list[Unit] = []
    points = set()
    for path in files:
        labels, shape = _h5_labels(path)
        _check_labels(labels, n_classes, str(path))
        points.add(shape[1])
        rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        rows = _H5Rows(path)
        prefix = f"pointnet_h5:{_ident(path)}"
        units += [_h5_unit(prefix, rows, rel, labels, lo, min(lo + 2048, len(labels)))
                  for lo in range(0, len(labels), 2048)]
    info = {"path": str(root), "layout": "pointnet_h5", "split": split, "files": [str(p) for p in files],
            "points_per_cloud": sorted(points)}
    if source.get("variant"):
        info["variant"] = source["variant"]
    return SourceData(units, classnames, None, info,
                      classnames_origin=str(names_file) if classnames else None)


# -- OpenShape / Uni3D npy ---------------------------------------------------------------------


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a .npy file: {e}") from e
    return tuple(shape), dtype


def _load_pickled(path: Path) -> Any:
    """A pickled ``.npy`` file; a 0-d object array is unwrapped (``.item()``)."""
    arr = np.load(path, allow_pickle=True)
    return arr.item() if arr.dtype.kind == "O" and arr.shape == () else arr


class _WholeNpy:
    """A file numpy reads only whole, read on the first sample's load in a process and kept (a
    forked loader worker shares what its parent has already read). A failure is kept too, so each
    of its samples reports it without reading the file again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._value: Any = None
        self._error: str | None = None

    def get(self, key: str) -> Any:
        if self._value is None and self._error is None:
            try:
                self._value = _load_pickled(self.path)
            except Exception as e:
                self._error = f"cannot read {self.path}: {type(e).__name__}: {e}"
        if self._error is not None:
            raise _fail(key, self._error)
        return self._value


def _name_index(names: list[str]) -> dict[str, int]:
    index = {normalise_name(n): i for i, n in enumerate(names)}
    index.update({n: i for i, n in enumerate(names)})
    return index


def _openshape_modelnet(root: Path, source: dict[str, Any]) -> SourceData:
    split_file, pcs = root / "test_split.json", root / "test_pc.npy"
    for f in (split_file, pcs):
        if not f.is_file():
            raise DataError(f"{f}: not found (an OpenShape ModelNet40 folder holds test_pc.npy and test_split.json)")
    try:
        entries = json.loads(split_file.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{split_file}: not readable JSON: {e}") from e
    if not isinstance(entries, list):
        raise DataError(f"{split_file}: expected a list of {{name, category}} entries")
    names_file = root / "modelnet40_shape_names.txt"
    task_names = source.get("_classnames")
    if names_file.is_file():
        classnames, origin, names_from = _lines(names_file), str(names_file), names_file.name
    elif task_names:
        classnames, origin, names_from = list(task_names), None, "the task's class names"
    else:
        raise DataError(f"{root}: no modelnet40_shape_names.txt and no class names from the task to label "
                        f"the categories of {split_file.name}")
    index = _name_index(classnames)
    labels, names = [], []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("category"), str):
            raise DataError(f"{split_file}: entry {i}: expected {{\"name\": ..., \"category\": ...}}, got {e!r:.80}")
        label = index.get(e["category"], index.get(normalise_name(e["category"])))
        if label is None:
            raise DataError(f"{split_file}: entry {i} ({e.get('name', '?')}): category {e['category']!r} "
                            f"is not in {names_from}")
        labels.append(label)
        names.append(str(e.get("name", i)))
    shape, dtype = _npy_header(pcs)
    if dtype.kind != "O" or len(shape) != 1:
        raise DataError(f"{pcs}: expected an object array of {{'xyz', 'rgb'}} dicts, found {dtype} {shape}")
    if shape[0] != len(entries):
        raise DataError(f"{pcs}: holds {shape[0]} clouds but {split_file.name} lists {len(entries)}")
    whole = _WholeNpy(pcs)

    def load(i: int, key: str) -> Callable[[], PointCloud]:
        # Uni3D divides ModelNet40's stored colours by 255 (a constant 100 becomes 0.4 grey)
        return lambda: _from_dict(key, whole.get(key)[i], f"entry {i} of {pcs.name}", rgb_scale=255.0)

    keys = _unique_keys(names)
    items = [(k, load(i, k), labels[i]) for i, k in enumerate(keys)]
    # one unit: a loader worker reads the whole file once, not once per chunk
    units = _units(f"openshape:{_ident(pcs)}:{_ident(split_file)}", items, chunk=max(len(items), 1))
    info = {"path": str(root), "layout": "openshape_npy", "dataset": "modelnet40"}
    return SourceData(units, classnames, None, info, classnames_origin=origin)


def _openshape_scanobjectnn(root: Path, source: dict[str, Any]) -> SourceData:
    path = root / "xyz_label.npy"
    try:
        d = _load_pickled(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read: {type(e).__name__}: {e}") from e
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict with 'xyz' and 'label', found {type(d).__name__}")
    for key in ("xyz", "label"):
        if key not in d:
            raise DataError(f"{path}: no '{key}' (found keys: {', '.join(sorted(map(str, d)))})")
    xyz, rgb = d["xyz"], d.get("rgb")
    labels = _int_labels(d["label"], str(path))
    if len(xyz) != len(labels):
        raise DataError(f"{path}: {len(xyz)} clouds but {len(labels)} labels")
    if rgb is not None and len(rgb) != len(xyz):
        raise DataError(f"{path}: {len(xyz)} clouds but {len(rgb)} colour arrays")
    task_names = source.get("_classnames")
    _check_labels(labels, len(task_names) if task_names else None, str(path))

    def load(i: int, key: str) -> Callable[[], PointCloud]:
        return lambda: make_cloud(key, xyz[i], None if rgb is None else rgb[i], rgb_scale=1.0)

    items = [(f"{i}", load(i, f"{i}"), int(labels[i])) for i in range(len(labels))]
    info = {"path": str(root), "layout": "openshape_npy", "dataset": "scanobjectnn"}
    return SourceData(_units(f"openshape:{_ident(path)}", items), None, None, info)


def _missing(key: str, why: str) -> Callable[[], PointCloud]:
    def fail() -> PointCloud:
        raise _fail(key, why)

    return fail


def _openshape_lvis(root: Path, source: dict[str, Any]) -> SourceData:
    listing = root / "lvis_testset.txt"
    task_names = source.get("_classnames")
    rows: list[tuple[int, str, str, Path]] = []
    names_by_id: dict[int, str] = {}
    for n, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(",")
        if len(parts) < 4:
            raise DataError(f"{listing}:{n}: expected cate_id,cate_name,model_id,path; got {line.strip()!r:.80}")
        cate, name, model, rel = parts[0], ",".join(parts[1:-2]), parts[-2], parts[-1]
        try:
            label = int(cate)
        except ValueError as e:
            raise DataError(f"{listing}:{n}: category id {cate!r} is not an integer") from e
        if label < 0 or (task_names and label >= len(task_names)):
            limit = f"out of range for {len(task_names)} classes" if task_names else "negative"
            raise DataError(f"{listing}:{n}: category id {label} is {limit}")
        if task_names and normalise_name(name) != normalise_name(task_names[label]):
            raise DataError(f"{listing}:{n}: category {label} is {name!r} here but {task_names[label]!r} in the "
                            f"task's class list (wrong class list or order)")
        if names_by_id.setdefault(label, name) != name:
            raise DataError(f"{listing}:{n}: category id {label} is {name!r} here but {names_by_id[label]!r} earlier")
        # Uni3D appends the path to the folder name; the paths start with "/"
        rows.append((label, name, model, root / rel.lstrip("/")))
    if not rows:
        raise DataError(f"{listing}: lists no shapes")
    keys = _unique_keys([m for _, _, m, _ in rows])
    items, idents, missing = [], [], 0
    for key, (label, _, _, path) in zip(keys, rows, strict=True):
        ident = _ident(path)
        idents.append(ident)
        if ident.endswith(":missing"):
            missing += 1
            items.append((key, _missing(key, f"listed in {listing.name} but not found at {path}"), label))
        else:
            items.append((key, (lambda p, k: lambda: read_point_file(p, k))(path, key), label))
    if task_names:
        classnames = None
    elif sorted(names_by_id) == list(range(len(names_by_id))):
        classnames = [names_by_id[i] for i in range(len(names_by_id))]
    else:
        classnames = None  # ids with gaps: the task must name the classes
    info = {"path": str(root), "layout": "openshape_npy", "dataset": "objaverse_lvis",
            "listed": len(rows), "listed_missing": missing}
    return SourceData(_units(f"openshape:{_ident(listing)}:{_digest(idents)}", items), classnames, None, info)


_OPENSHAPE_READERS = {"modelnet40": _openshape_modelnet, "scanobjectnn": _openshape_scanobjectnn,
                      "objaverse_lvis": _openshape_lvis}


@sources.register("openshape_npy")
def openshape_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (expected an OpenShape/Uni3D test set)")
    if str(source.get("split", "test")) != "test":
        raise DataError(f"task {task!r}: the OpenShape/Uni3D data are test sets only (split: test)")
    kind = source.get("dataset")
    if kind is None:
        found = [k for k, marker in OPENSHAPE_MARKERS.items() if (root / marker).is_file()]
        if len(found) != 1:
            expect = ", ".join(f"{m} ({k})" for k, m in OPENSHAPE_MARKERS.items())
            what = "several datasets; set source.dataset" if found else f"none of {expect}"
            raise DataError(f"{root}: not an OpenShape/Uni3D test-set folder: found {what}; folder holds {_contents(root)}")
        kind = found[0]
    if kind not in _OPENSHAPE_READERS:
        raise DataError(f"task {task!r}: unknown OpenShape dataset {kind!r} (one of {', '.join(_OPENSHAPE_READERS)})")
    marker = root / OPENSHAPE_MARKERS[kind]
    if not marker.is_file():
        raise DataError(f"{marker}: not found (expected the OpenShape {kind} layout); folder holds {_contents(root)}")
    return _OPENSHAPE_READERS[kind](root, source)


# -- per-class folders -------------------------------------------------------------------------


@sources.register("pointfolder")
def pointfolder_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (expected per-class folders of point clouds)")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class folders (expected <root>/<class>/<cloud>{'|'.join(POINT_EXTS)}); "
                        f"found {_contents(root)}")
    classnames = source.get("_classnames") or [d.name.replace("_", " ") for d in folders]
    by_norm = {normalise_name(c): i for i, c in enumerate(classnames)}
    items: list[tuple[str, Callable[[], PointCloud], Any]] = []
    idents = []
    for d in folders:
        label = by_norm.get(normalise_name(d.name))
        if label is None:
            raise DataError(f"{d}: folder matches no class name of the task (by normalised name)")
        for p in sorted(d.rglob("*")):
            if p.suffix.lower() in POINT_EXTS and p.is_file():
                key = str(p.relative_to(root))
                items.append((key, (lambda path, k: lambda: read_point_file(path, k))(p, key), label))
                idents.append(_ident(p))
    if not items:
        raise DataError(f"{root}: the class folders hold no point clouds ({', '.join(POINT_EXTS)})")
    templates = _lines(root / "templates.txt") if (root / "templates.txt").is_file() else None
    info = {"path": str(root), "layout": "pointfolder", "class_folders": len(folders)}
    return SourceData(_units(f"pointfolder:{root}:{_digest(idents)}", items), list(classnames), templates, info)
