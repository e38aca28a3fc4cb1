"""Where samples come from. A source yields ``(key, image loader, label)`` and knows nothing of models.

Each source splits its samples into *units* (a tar shard, or a fixed range of indices): the unit
is what the feature cache stores, so an interrupted run resumes at the first unfinished unit.
Decoding happens in the data-loader workers; a sample that does not decode is reported with its
key and the reason instead of being dropped (see ``evalkit.features.embed``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from evalkit.errors import EvalkitError, one_line
from evalkit.registry import Registry

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")
FOLDER_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

# Source types by name. evalkit registers its own below and in the layout modules; a separate
# package adds more through the ``evalkit.sources`` entry-point group (the demo's ``shapeworld``
# plugs in so: pyproject.toml), loaded the first time a name is not known here.
#: evalkit's own dataset layouts, each registering its source types when imported
BUILTIN_SOURCE_MODULES = tuple(f"evalkit.data.{m}" for m in (
    "birdsnap", "captions", "imagenet_variants", "pointclouds", "torchvision_roots", "video_datasets", "voc2007"))
sources: Registry[Any] = Registry("source", "evalkit.sources", builtins=BUILTIN_SOURCE_MODULES)


class DataError(EvalkitError, ValueError):
    """A dataset that is missing, empty or malformed; the message names the file or folder."""


class DatasetNotFound(DataError):
    """None of a task's layouts exists under the data root (as opposed to one that is malformed).
    ``looked``: (folders tried, the layout each would have been read as), one entry per layout."""

    def __init__(self, message: str, looked: list[tuple[list[str], str]] | None = None) -> None:
        super().__init__(message)
        self.looked = looked or []


# A raw sample: a stable key, a zero-argument callable that returns a PIL image (and may raise
# on a corrupt file), and a label.
RawSample = tuple[str, Callable[[], Image.Image], Any]


@dataclass
class Unit:
    """A piece of a dataset that is cached as one feature shard."""

    id: str  # stable identity of the unit's content (path + size + mtime, or a range)
    samples: Callable[[], Iterator[RawSample]]
    size: int | None = None
    count: Callable[[], int] | None = None  # counts the samples without decoding (when size is None)
    # identity of the unit's images alone, when other units label the same images differently
    # (ShapeWorld's shape and colour views): image features are cached under it and shared
    content_id: str | None = None


@dataclass
class SourceData:
    units: list[Unit]
    classnames: list[str] | None = None
    templates: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # Where ``classnames`` were read from when they are the dataset's own metadata (torchvision
    # meta files, not a folder listing): the task's class names must then agree with them, name
    # by name (see :func:`classnames_mismatch`); a disagreement means a wrong label order.
    classnames_origin: str | None = None
    # Labels scored over groups of classifier classes: label ``j`` gets the max of the logits of
    # classes ``label_groups[j]`` (ObjectNet's ImageNet-mapped protocol). None: one class per label.
    label_groups: list[list[int]] | None = None
    # True when this layout labels its samples in another order than the task's class list (e.g.
    # VTAB's Caltech101 split): ``classnames`` then replace the task's for this run.
    override_classnames: bool = False

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


def open_image_path(path: Path) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        with Image.open(path) as img:
            img.load()  # pixels are in memory now; leaving the block only closes the file
            return img if img.mode in ("RGB", "L", "RGBA", "P") else img.convert("RGB")

    return load


def file_id(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def resolve_path(source: dict[str, Any], data_root: str | Path | None, task: str) -> Path:
    """The folder a source reads: ``path`` (absolute, or relative to ``--data-root``)."""
    raw = source.get("path") or source.get("default_subdir") or task
    path = Path(os.path.expanduser(str(raw)))
    if not path.is_absolute():
        if data_root is None:
            raise DataError(f"task {task!r} reads {raw!r} relative to the data root, but no --data-root was given and $EVALKIT_DATA is not set")
        path = Path(data_root) / path
    return path


def _read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def source_file(source: dict[str, Any], key: str) -> Path | None:
    """A file named by ``source[key]``: absolute, or relative to the task file's folder
    (``_base_dir``, set by :func:`load_source`), else to the working directory."""
    raw = source.get(key)
    if raw is None:
        return None
    path = Path(os.path.expanduser(str(raw)))
    if not path.is_absolute() and source.get("_base_dir"):
        path = Path(source["_base_dir"]) / path
    return path


def read_list_file(source: dict[str, Any], key: str) -> list[str] | None:
    path = source_file(source, key)
    if path is None:
        return None
    if not path.is_file():
        raise DataError(f"{path}: {key} file not found")
    return _read_lines(path)


def class_subset_groups(protocol: dict[str, Any], base_dir: str | Path | None, where: str) -> list[list[int]] | None:
    """The label groups of a task scored over a subset of its classifier's classes (ImageNet-A/R:
    200 of the 1000 ImageNet classes, the "wnid mask"). ``protocol.class_subset`` names two files,
    relative to the task file: ``ids_file`` (an id per classifier class, in class order) and
    ``subset_file`` (the ids of the task's labels, in label order). Label j scores as classifier
    class ``ids.index(subset[j])``; the other classes take no part (logits of the subset only)."""
    spec = protocol.get("class_subset")
    if not spec:
        return None
    holder = {"_base_dir": str(base_dir) if base_dir is not None else None, **spec}
    ids, subset = read_list_file(holder, "ids_file"), read_list_file(holder, "subset_file")
    if ids is None or subset is None:
        raise DataError(f"{where}: protocol.class_subset needs ids_file and subset_file")
    index = {c: i for i, c in enumerate(ids)}
    unknown = [c for c in subset if c not in index]
    if unknown:
        raise DataError(f"{where}: class_subset ids not in {spec['ids_file']}: {', '.join(unknown[:3])}")
    return [[index[c]] for c in subset]


def normalise_name(name: str) -> str:
    """Class names compared across spellings: case, ``_``/``-``/``/``/spaces and punctuation ignored."""
    return re.sub(r"[^0-9a-z]+", "", name.lower())


def classnames_mismatch(expected: list[str], found: list[str]) -> str | None:
    """None when both lists name the same classes in the same order (see :func:`normalise_name`),
    else a one-line description of the first difference."""
    if len(expected) != len(found):
        return f"{len(expected)} class names expected, {len(found)} found"
    for i, (a, b) in enumerate(zip(expected, found, strict=True)):
        if normalise_name(a) != normalise_name(b):
            return f"class {i} is {a!r} in the task but {b!r} in the data"
    return None


def check_task_classnames(task_names: list[str] | None, data: SourceData, where: str) -> str:
    """Compare a task's class names with the data's own; returns a note for the result.

    Names the data read from the dataset's metadata (``classnames_origin``) must agree with the
    task's, name by name, else a DataError (the task's list is in the wrong order, or for another
    dataset). Names from elsewhere (a WebDataset's classnames.txt) must have the same count and are
    otherwise only compared: the task's spelling is the protocol's."""
    if task_names is None or data.classnames is None:
        return "task names only" if data.classnames is None else "data names used"
    if data.override_classnames:
        return f"layout's own class list ({data.info.get('classnames_file')})"
    if data.label_groups is not None:
        return "label groups"
    diff = classnames_mismatch(task_names, data.classnames)
    if diff is None:
        return "match"
    if data.classnames_origin is not None:
        raise DataError(f"{where}: class names disagree with the dataset's own list in {data.classnames_origin}: "
                        f"{diff}; the task's class list is in the wrong order or for another dataset")
    if len(task_names) != len(data.classnames):
        raise DataError(
            f"{where}: task lists {len(task_names)} class names but the data at "
            f"{data.info.get('path', '?')} has {len(data.classnames)}"
        )
    return f"spelling differs from the data's list ({diff}); the task's names were used"


def folder_listing(folder: Path, n: int = 6) -> str:
    """A short listing of what a folder holds, for "expected X, found Y" messages."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "nothing readable"
    if not names:
        return "an empty folder"
    more = f", ... ({len(names)} entries)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def expect_entries(folder: Path, names: list[str], layout: str) -> None:
    """Fail with "expected ..., found ..." when ``folder`` lacks any of ``names``."""
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise DataError(
            f"{folder}: not a {layout} folder: expected {', '.join(names)}; missing {', '.join(missing)}; "
            f"found {folder_listing(folder)}"
        )


# -- clip_benchmark WebDataset folders ---------------------------------------------------------


WDS_LAYOUT = ("clip_benchmark WebDataset: <split>/0.tar..N-1.tar + <split>/nshards.txt, classnames.txt, "
              "zeroshot_classification_templates.txt (local, or a Hugging Face cache "
              "datasets--clip-benchmark--wds_<name>/snapshots/<rev>/)")


def hf_cache_snapshot(repo_dir: Path) -> Path:
    """The snapshot folder of a Hugging Face cache entry ``datasets--<org>--<name>``: the revision
    ``refs/main`` points at, else the only snapshot; several and no ref is an error (no guessing)."""
    snaps = repo_dir / "snapshots"
    if not snaps.is_dir():
        raise DataError(f"{repo_dir}: Hugging Face cache entry without a snapshots/ folder; found {folder_listing(repo_dir)}")
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text().strip()
        if (snaps / rev).is_dir():
            return snaps / rev
    revs = sorted(p for p in snaps.iterdir() if p.is_dir())
    if len(revs) == 1:
        return revs[0]
    if not revs:
        raise DataError(f"{snaps}: no snapshot downloaded")
    raise DataError(f"{snaps}: {len(revs)} snapshots ({', '.join(r.name for r in revs)}) and no refs/main "
                    f"to choose one; remove the stale ones")


def wds_candidates(base: Path) -> list[Path]:
    """Where a clip_benchmark WebDataset called ``base.name`` may sit under ``base.parent``: the
    folder itself, or a Hugging Face hub cache entry (in the folder or its ``hub/`` subfolder)."""
    repo = f"datasets--clip-benchmark--{base.name}"
    return [base, base.parent / repo, base.parent / "hub" / repo]


def _wds_root(path: Path) -> Path:
    if path.name.startswith("datasets--") and path.is_dir():
        return hf_cache_snapshot(path)
    return path


@sources.register("wds")
def wds_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    """clip_benchmark's layout: ``<root>/<split>/{0..n-1}.tar`` + ``nshards.txt``, ``classnames.txt``,
    ``zeroshot_classification_templates.txt`` at the root; samples have an image (webp/png/jpg)
    and a ``cls`` label. ``<root>`` may also be a Hugging Face cache entry
    (``datasets--clip-benchmark--wds_<name>``), read at its current snapshot."""
    root = _wds_root(resolve_path(source, data_root, task))
    split = source.get("split", "test")
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected {WDS_LAYOUT})")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder not found (expected {WDS_LAYOUT}); found {folder_listing(root)}")
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
                f"(expected 0.tar..{nshards - 1}.tar, found {nshards - len(missing)}; first missing: "
                f"{', '.join(missing[:3])})"
            )
        tars = expected
    if not tars:
        raise DataError(f"{split_dir}: no .tar shards found (expected {WDS_LAYOUT})")
    classnames = templates = None
    if (root / "classnames.txt").exists():
        classnames = _read_lines(root / "classnames.txt")
    if (root / "zeroshot_classification_templates.txt").exists():
        templates = _read_lines(root / "zeroshot_classification_templates.txt")
    # A shard cut short or corrupt fails here: before any work, before its cached features are
    # reused, and in this process (an error raised in a loader worker loses its message).
    for t in tars:
        scan_tar(t)
    # clip_benchmark marks a retrieval mirror with dataset_type.txt: its samples carry captions (txt)
    kind = (root / "dataset_type.txt").read_text().strip().lower() if (root / "dataset_type.txt").exists() else ""
    label_key = source.get("label_key") or ("txt" if kind == "retrieval" else "cls")
    units = [Unit(id=file_id(t), samples=_tar_samples(t, label_key), count=_tar_counter(t)) for t in tars]
    info = {"path": str(root), "split": split, "shards": len(tars), "layout": "wds"}
    return SourceData(units, classnames, templates, info)


# The end of a tar archive is two 512-byte blocks of zeros (POSIX). A shard that stops without
# them was cut short: tarfile and webdataset stop quietly at a missing or unreadable header and
# hand over the members before it as if that were the whole shard, so it is checked here.
_TAR_BLOCK = 512
_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_SCANNED: dict[tuple[str, int, int, int, int], list[str]] = {}


def _bad_shard(tar_path: Path, what: str) -> DataError:
    return DataError(f"{tar_path}: {what}: a partial or corrupt download; re-download it")


def scan_tar(tar_path: Path) -> list[str]:
    """The names of a tar shard's regular members, after checking the shard is whole: every
    header is read (its checksum checked by tarfile) and every member's data must lie inside the
    file, and the archive must end with its end-of-archive marker. Only the headers are read;
    member data is skipped with seeks, so this reads one 512-byte header per member and never
    the shard's images. A shard that fails is a DataError naming it and what is wrong
    (where it ends, in or after which member). Results are kept per file identity (path, size,
    mtime, ctime, inode), so a shard is scanned once per process while it is unchanged.

    Called for every shard when a WebDataset is loaded (a run and ``evalkit data check`` alike),
    before a shard's samples are read, and by the sample count (from these names), so nothing
    takes a cut-short shard for a whole one."""
    import tarfile

    try:
        st = tar_path.stat()
    except OSError as e:
        raise DataError(f"{tar_path}: unreadable tar shard: {e}") from e
    ident = (str(tar_path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)  # any write changes ctime
    if ident in _SCANNED:
        return _SCANNED[ident]
    size = st.st_size
    if size == 0:
        raise _bad_shard(tar_path, "empty tar shard (0 bytes)")
    names: list[str] = []
    end, last = 0, None  # where the next header starts; the member before it
    why = ""  # tarfile's reason when it gave up, for a header this scan cannot explain
    try:
        with tarfile.open(tar_path, "r:") as tar:  # seekable mode: member data is skipped, not read
            for member in tar:
                # tar.offset: where the header after this member starts (after its padded data)
                if tar.offset > size:
                    data_end = member.offset_data + member.size
                    where = (f"ends inside member {member.name!r} at byte {size}; its data runs to byte {data_end}"
                             if size < data_end else
                             f"ends at byte {size} inside the padding after member {member.name!r}, "
                             f"without the end-of-archive marker")
                    raise _bad_shard(tar_path, f"truncated tar shard ({where})")
                end, last = tar.offset, member.name
                if member.isreg():
                    names.append(member.name)
    except tarfile.TarError as e:  # at the first header, or a bad header after an extended one
        why = str(e)
    except OSError as e:
        raise DataError(f"{tar_path}: unreadable tar shard: {e}") from e
    # tarfile stopped at ``end``: whole only if the end-of-archive marker is there
    try:
        with open(tar_path, "rb") as f:
            f.seek(end)
            block = f.read(2 * _TAR_BLOCK)
    except OSError as e:
        raise DataError(f"{tar_path}: unreadable tar shard: {e}") from e
    after = f"after member {last!r}" if last is not None else "before any member"
    if block == bytes(2 * _TAR_BLOCK):
        _SCANNED[ident] = names
        return names
    if end == 0:
        kind = next((k for m, k in _COMPRESSED_MAGIC.items() if block.startswith(m)), None)
        if kind is not None:
            raise DataError(f"{tar_path}: {kind}-compressed tar shard; evalkit reads uncompressed .tar shards "
                            f"(as clip_benchmark's are): decompress it")
    if not block:
        problem = f"truncated tar shard (ends at byte {size} {after}, without the end-of-archive marker)"
    elif len(block) < _TAR_BLOCK:
        problem = (f"truncated tar shard (ends at byte {size} inside the header {after}: "
                   f"{len(block)} of its {_TAR_BLOCK} bytes)")
    elif block[:_TAR_BLOCK] == bytes(_TAR_BLOCK):
        problem = (f"truncated tar shard (ends at byte {size} inside the end-of-archive marker {after})"
                   if len(block) < 2 * _TAR_BLOCK else
                   f"corrupt tar shard (a zeroed header at byte {end} {after}, followed by more data)")
    else:
        try:
            tarfile.TarInfo.frombuf(block[:_TAR_BLOCK], tarfile.ENCODING, "surrogateescape")
        except tarfile.HeaderError as e:
            why = str(e)
        problem = f"corrupt tar shard (bad header at byte {end} {after}: {why or 'unreadable'})"
    raise _bad_shard(tar_path, problem)


def _tar_samples(tar_path: Path, label_key: str) -> Callable[[], Iterator[RawSample]]:
    def iterate() -> Iterator[RawSample]:
        import webdataset as wds

        # Whole shards only: webdataset reads a cut-short tar up to where it stops, without a word.
        # Checked when the dataset was loaded; again here only if the file has changed since.
        scan_tar(tar_path)
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
                if label_key == "txt":  # retrieval: the image's captions, one a line (as clip_benchmark)
                    if raw_label is None:
                        yield name, _missing(name, "no 'txt' captions member"), None
                        continue
                    try:
                        label: Any = (raw_label.decode() if isinstance(raw_label, bytes) else str(raw_label)).splitlines()
                    except UnicodeDecodeError as e:
                        yield name, _missing(name, f"captions ('txt') are not UTF-8 text: {e.reason} at byte {e.start}"), None
                        continue
                    yield name, _open_image_bytes(sample[image_ext]), label
                    continue
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


def _tar_counter(tar_path: Path) -> Callable[[], int]:
    """Samples in a shard, from its (checked) tar headers alone: keys that have an image member."""

    def count() -> int:
        keys = set()
        for member in scan_tar(tar_path):
            stem, _, ext = member.rpartition(".")
            if ext.lower() in IMAGE_EXTS:
                keys.add(stem)
        return len(keys)

    return count


def _missing(name: str, why: str) -> Callable[[], Image.Image]:
    def fail() -> Image.Image:
        raise DataError(f"{name}: {why}")

    return fail


# -- ImageFolder trees -------------------------------------------------------------------------


def range_units(prefix: str, n: int, get: Callable[[int], RawSample], chunk: int = 2048,
                 content_prefix: str | None = None) -> list[Unit]:
    def make(lo: int, hi: int) -> Unit:
        def iterate() -> Iterator[RawSample]:
            for i in range(lo, hi):
                yield get(i)

        return Unit(id=f"{prefix}[{lo}:{hi}]", samples=iterate, size=hi - lo,
                    content_id=f"{content_prefix}[{lo}:{hi}]" if content_prefix else None)

    return [make(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]


FOLDER_LAYOUT = "ImageFolder tree <root>/<class>/<image>"


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_labels(source: dict[str, Any], root: Path, dirs: list[Path]) -> tuple[dict[str, int], list[str] | None]:
    """Folder name -> label, and the class names the folders imply (None when the task names them).

    * ``class_folders_file``: the expected folder names in label order (ImageNet wnids, ...). The
      folders present must be exactly these: a missing or unexpected one is an error naming it.
    * ``match_classnames: true``: each folder is one of the task's class names, spelled in any case
      with ``_``/``-`` for spaces; label = that name's index. Every class needs its folder.
    * otherwise: sorted folder names (torchvision's ImageFolder order), names from the folders.
    """
    names = [d.name for d in dirs]
    ignored = set(source.get("ignore_folders", []))
    ids = read_list_file(source, "class_folders_file")
    if ids is not None:
        present, wanted = set(names), set(ids)
        missing = [n for n in ids if n not in present]
        extra = [n for n in names if n not in wanted and n not in ignored]
        if missing or extra:
            parts = [f"expected the {len(ids)} class folders listed in {source_file(source, 'class_folders_file')}"]
            parts.append(f"found {len(names)}")
            if missing:
                parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
            if extra:
                parts.append(f"unexpected {len(extra)} (e.g. {', '.join(extra[:3])})")
            raise DataError(f"{root}: " + "; ".join(parts))
        return {n: i for i, n in enumerate(ids)}, None
    if source.get("match_classnames"):
        task_names = source.get("_classnames")
        if not task_names:
            raise DataError(f"{root}: match_classnames needs the task's class names")
        index = {normalise_name(n): i for i, n in enumerate(task_names)}
        labels: dict[str, int] = {}
        unknown = []
        for n in names:
            if normalise_name(n) in index:
                labels[n] = index[normalise_name(n)]
            elif n not in ignored:
                unknown.append(n)
        if unknown:
            raise DataError(f"{root}: {len(unknown)} folder(s) are not class names of the task "
                            f"(e.g. {', '.join(unknown[:3])}); expected one folder per class named like "
                            f"{task_names[0]!r}")
        absent = sorted(set(range(len(task_names))) - set(labels.values()))
        if absent:
            raise DataError(f"{root}: no folder for {len(absent)} of the task's {len(task_names)} classes "
                            f"(e.g. {', '.join(repr(task_names[i]) for i in absent[:3])}); found {len(names)} folders")
        return labels, None
    expect = source.get("expect_classes")
    if expect is not None and len(names) != int(expect):
        raise DataError(f"{root}: expected {expect} class folders, found {len(names)} ({folder_listing(root)})")
    for required in source.get("require_folders", []):
        if required not in names:
            raise DataError(f"{root}: expected a class folder {required!r}; found {folder_listing(root)}")
    task_names = source.get("_classnames")
    if task_names is not None:  # the task names the classes; the folders only have to be as many
        if len(task_names) != len(names):
            raise DataError(f"{root}: the task lists {len(task_names)} class names but the folder has "
                            f"{len(names)} class folders")
        return {n: i for i, n in enumerate(names)}, None
    return {n: i for i, n in enumerate(names)}, [n.replace("_", " ") for n in names]


@sources.register("folder")
def folder_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    """``<root>/<class>/<image>``; class names from folder names (sorted) unless a classnames file
    is given (one name per line, in label order, same count as folders). Labels can instead come
    from a list of folder names (``class_folders_file``) or from the task's class names
    (``match_classnames``); see :func:`_folder_labels`."""
    root = resolve_path(source, data_root, task)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected an {FOLDER_LAYOUT})")
    class_dirs = _class_dirs(root)
    if not class_dirs:
        raise DataError(f"{root}: no class folders found (expected {FOLDER_LAYOUT}); found {folder_listing(root)}")
    labels, classnames = _folder_labels(source, root, class_dirs)
    exts = {e.lower() for e in source.get("extensions", FOLDER_EXTS)}
    items: list[tuple[Path, int]] = []
    for d in class_dirs:
        if d.name not in labels:
            continue
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in exts and f.is_file():
                items.append((f, labels[d.name]))
    if not items:
        raise DataError(f"{root}: class folders contain no images ({', '.join(sorted(exts))})")
    if source.get("classnames"):
        cn_path = source_file(source, "classnames")
        assert cn_path is not None
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
        return str(path.relative_to(root)), open_image_path(path), label

    info = {"path": str(root), "layout": "folder", "class_folders": len(labels)}
    return SourceData(range_units(f"folder:{root}:{digest}", len(items), get), classnames, None, info)


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
        loader = _open_image_bytes(img["bytes"]) if img.get("bytes") else open_image_path(Path(img["path"]))
        return f"{i}", loader, int(row[label_col])

    return SourceData(range_units(f"hf:{root}:{fingerprint}", len(raw), get), classnames, None, {"path": str(root)})


# -- several layouts for one dataset ----------------------------------------------------------

# One line per source type for "where did it look / what does it accept" messages; layout
# modules add theirs with :func:`describe_layout`.
LAYOUT_HELP: dict[str, str] = {"wds": WDS_LAYOUT, "folder": FOLDER_LAYOUT}


def describe_layout(kind: str, text: str) -> None:
    LAYOUT_HELP[kind] = text


def _layout_paths(layout: dict[str, Any], data_root: str | Path | None, task: str) -> list[Path]:
    raw = layout.get("path", task)
    paths = raw if isinstance(raw, list) else [raw]
    out: list[Path] = []
    for p in paths:
        path = Path(os.path.expanduser(str(p)))
        if not path.is_absolute():
            if data_root is None:
                raise DataError(f"task {task!r} reads {p!r} relative to the data root, but no --data-root was given and $EVALKIT_DATA is not set")
            path = Path(data_root) / path
        out.extend(wds_candidates(path) if layout.get("type") == "wds" else [path])
    return out


def find_layout(source: dict[str, Any], data_root: str | Path | None, task: str) -> tuple[dict[str, Any], Path]:
    """The first of ``source['layouts']`` whose folder exists: (that layout's source spec with
    ``path`` set to the folder, the folder). Nothing found: a DataError naming every folder looked
    in and the layout each would have been read as."""
    layouts = source.get("layouts")
    if not isinstance(layouts, list) or not layouts:
        raise DataError(f"task {task!r}: source type 'any' needs a non-empty 'layouts' list")
    shared = {k: v for k, v in source.items() if k not in ("type", "layouts")}
    looked: list[tuple[list[str], str]] = []
    for layout in layouts:
        if not isinstance(layout, dict) or "type" not in layout:
            raise DataError(f"task {task!r}: each entry of source.layouts needs a 'type'")
        tried = []
        for folder in _layout_paths(layout, data_root, task):
            if folder.exists():
                # absolute: the layout's reader resolves a relative path against the data root again
                return {**shared, **layout, "path": str(folder.absolute())}, folder
            tried.append(str(folder))
        looked.append((tried, LAYOUT_HELP.get(layout["type"], layout["type"])))
    where = f"under {data_root}" if data_root is not None else ""
    text = "; ".join(f"{' or '.join(t)} [{h}]" for t, h in looked)
    raise DatasetNotFound(f"task {task!r}: dataset not found {where}; looked in: {text}", looked)


@sources.register("any")
def any_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    """The dataset in whichever of several layouts the user has (``layouts``: a list of source
    specs, each with ``path`` relative to the data root, a string or a list of alternatives).
    The first folder that exists is read; a malformed one is an error, never a silent fallback
    to the next layout."""
    spec, folder = find_layout(source, data_root, task)
    data = sources.get(str(spec["type"]))(spec, data_root, task)
    data.info.setdefault("layout", spec["type"])
    data.info.setdefault("path", str(folder))
    own = read_list_file(spec, "classnames_file")
    if own is not None:  # this layout has its own label order (see SourceData.override_classnames)
        if data.classnames is not None and (diff := classnames_mismatch(own, data.classnames)):
            if len(own) != len(data.classnames):
                raise DataError(f"{folder}: {diff} (layout class list {source_file(spec, 'classnames_file')})")
            data.info["classnames_note"] = diff
        data.classnames, data.override_classnames = own, True
        data.info["classnames_file"] = str(source_file(spec, "classnames_file"))
    return data


def holdout_part(data: SourceData, spec: Any, task: str) -> SourceData:
    """One part of a dataset that has no split of its own (Objaverse-LVIS for few-shot probes):
    ``holdout: {part: train|test, fraction: 0.5, seed: 0}`` keeps the samples whose key hashes
    (SHA-256 of ``seed:key``) below ``fraction`` (``train``) or not (``test``): the two parts are
    disjoint, fixed by the keys alone, and the same on every machine."""
    if not isinstance(spec, dict) or spec.get("part") not in ("train", "test"):
        raise DataError(f"task {task!r}: source.holdout needs part: train or test (and fraction, seed)")
    fraction, seed, part = float(spec.get("fraction", 0.5)), int(spec.get("seed", 0)), spec["part"]
    if not 0 < fraction < 1:
        raise DataError(f"task {task!r}: source.holdout.fraction must be between 0 and 1, got {fraction}")

    def keep(key: str) -> bool:
        h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
        return (h < fraction) == (part == "train")

    def wrap(unit: Unit) -> Unit:
        def iterate() -> Iterator[RawSample]:
            return (s for s in unit.samples() if keep(s[0]))

        return Unit(id=f"{unit.id}|holdout:{part}:{fraction}:{seed}", samples=iterate,
                    count=lambda: sum(1 for _ in iterate()))

    info = {**data.info, "holdout": {"part": part, "fraction": fraction, "seed": seed}}
    return dataclasses.replace(data, units=[wrap(u) for u in data.units], info=info)


def load_source(source: dict[str, Any], data_root: str | Path | None, task: str, *,
                base_dir: str | Path | None = None, classnames: list[str] | None = None) -> SourceData:
    """Read a task's source. ``base_dir``: the task file's folder (relative file names in the source
    spec resolve against it); ``classnames``: the task's class names, for layouts that label by
    class name (folder names, Birdsnap species)."""
    source = dict(source)
    if base_dir is not None:
        source.setdefault("_base_dir", str(base_dir))
    if classnames is not None:
        source.setdefault("_classnames", list(classnames))
    kind = source.get("type")
    loader = sources.get(str(kind))
    try:
        data = loader(source, data_root, task)
        if source.get("holdout") is not None:
            data = holdout_part(data, source["holdout"], task)
        size = data.size
    except EvalkitError:
        raise
    except (OSError, ValueError) as e:  # a file of the data the OS will not give, or one that does not parse
        raise DataError(f"task {task!r}: cannot read its data ({kind}): {one_line(e)}") from e
    if size == 0:
        raise DataError(f"task {task!r}: dataset is empty ({data.info.get('path', kind)})")
    return data
