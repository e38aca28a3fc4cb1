"""Per-sample records: one compressed ``.npz`` beside each result, what its numbers rest on.

A task's result holds its metrics; its records hold, per sample, what those metrics were counted
from, so that intervals, paired comparisons and per-class analysis are computed from files and
never by running a model again. ``<result stem>[.<part>].records.npz`` sits beside the result
(``runs/<model>/[<variant>/]<task>.records.npz``; a task of several splits, UCF-101's three, has
one per split: ``<task>.split1.records.npz`` ...), and the result names its files and their size
under ``evalkit.records``.

Inside the file, every array is ``"<mode>/<field>"`` (mode: the transform the numbers were scored
under, ``crop`` / ``squash``, or the task's single mode), plus ``__meta__``: a 0-d unicode array
holding a JSON object, at least ``{"schema": 1, "kind": ..., "modes": [...]}``. Everything is
plain numbers and unicode strings: the file is read with ``allow_pickle=False``.

Kinds and their fields, per mode (N samples; see :data:`FIELDS`):

``classification`` (zero-shot images, video, 3D) and ``probe`` (a linear probe on the whole train split)
    ``key`` (N, str), ``target`` (N, int32: the label scored, after label-group projection),
    ``top_classes`` (N×k, int32, k = min(5, classes), best first), ``top_scores`` (N×k, float32:
    the logits as scored, zero-shot: 100 × cosine, unrounded), ``margin`` (N, float32: top-1 minus
    top-2 logit; +inf with one class) and ``pred`` (N, int32: the top-1 that
    ``mean_per_class_recall`` counts, the first of tied maxima). ``acc1`` counts
    ``top_classes[:, 0] == target`` and ``acc5`` a target anywhere in ``top_classes``; the two
    top-1s differ only where the best logits tie (``margin`` 0).
``retrieval``
    ``image_key`` (N images, str), ``i2t_rank`` (N, int32: 0-based rank among all captions of the
    image's best-ranked own caption; -1 for an image without captions), ``t2i_image`` (M captions,
    int32: the index of each caption's image), ``t2i_rank`` (M, int32: the rank of its own image
    among all images), ``i2t_hit`` / ``t2i_hit`` (N×len(recall_k) / M×len(recall_k), bool: whether
    the query hit at each K of ``meta["recall_k"]``, as the recall counted it) and ``i2t_margin`` /
    ``t2i_margin`` (float32: the best correct score minus the best wrong one; NaN without a
    caption). A rank is the number of candidates scoring strictly higher than the best correct
    one, except where torch.topk's choice among exactly tied scores decides a hit at some K: there
    it is moved within the tie so that ``0 <= rank < K`` says the hit (:func:`recall_at`). Only a
    choice that is not nested over K (a hit at K=1 and a miss at K=5 among six equal scores) can
    not be told by one rank; ``meta["ranks_inexact"]`` counts those queries (0 but for heavy
    ties), and ``*_hit`` are exact always.
``fewshot`` (few-shot linear probes)
    ``key`` (N test samples), ``target`` (N, int32), ``shots`` (R runs, int32), ``seed`` (R,
    int32) and ``pred`` (R×N, int32: each (K, seed) probe's top-1 on the test samples), so
    ``acc1@{K}shot`` is the mean over its seeds of ``mean(pred == target)``.

This module is at the bottom of the layers: numpy, :mod:`evalkit.results` and
:mod:`evalkit.errors` only.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import EvalkitError, OutputError
from evalkit.results import (
    DEFAULT_VARIANT,
    TaskResult,
    atomic_write_bytes,
    path_of,
    read_result,
    result_path,
)

__all__ = ["FIELDS", "KINDS", "META_KEY", "SCHEMA", "SUFFIX", "Records", "RecordsError", "Written", "read_records",
           "recall_at", "records_for", "records_path", "result_entry", "result_records", "write_records"]

SCHEMA = 1
SUFFIX = ".records.npz"
META_KEY = "__meta__"

_CLASSES = ("key", "target", "top_classes", "top_scores", "margin", "pred")
#: each kind's arrays, per mode, that a records file must hold
FIELDS: dict[str, tuple[str, ...]] = {
    "classification": _CLASSES,
    "probe": _CLASSES,
    "retrieval": ("image_key", "i2t_rank", "i2t_hit", "i2t_margin", "t2i_image", "t2i_rank", "t2i_hit", "t2i_margin"),
    "fewshot": ("key", "target", "shots", "seed", "pred"),
}
KINDS = tuple(FIELDS)

# which arrays share a first dimension (the mode's samples, its captions, its runs), so a file cut
# together from pieces of two runs is told apart from one run's
_SAME_LENGTH: dict[str, tuple[tuple[str, ...], ...]] = {
    "classification": (_CLASSES,),
    "probe": (_CLASSES,),
    "retrieval": (("image_key", "i2t_rank", "i2t_hit", "i2t_margin"), ("t2i_image", "t2i_rank", "t2i_hit", "t2i_margin")),
    "fewshot": (("key", "target"), ("shots", "seed", "pred")),
}


class RecordsError(EvalkitError, ValueError):
    """A records file that cannot be read as one: missing, not an ``.npz``, without its
    ``__meta__``, or missing an array its kind needs; the message names the file and the array."""


def records_path(output_dir: str | Path, model: str, task_name: str, variant: str = DEFAULT_VARIANT,
                 part: str | None = None) -> Path:
    """``<result stem>[.<part>].records.npz`` beside the result of ``task_name`` (the name its
    result is written under, ``kinetics400@uniform-8``); ``part``: one split of a several-split
    task (``split2``), named as its skipped log and predictions are."""
    suffix = f".{part}{SUFFIX}" if part else SUFFIX
    return result_path(output_dir, model, task_name, suffix, variant)


@dataclass(frozen=True)
class Written:
    """A records file as written: where, its size and its content's SHA-256 (which the result
    keeps, so a records file is known to be the one its result was scored with)."""

    path: Path
    bytes: int
    sha256: str


def write_records(path: str | Path, kind: str, arrays: Mapping[str, Mapping[str, np.ndarray]],
                  meta: Mapping[str, Any] | None = None) -> Written:
    """Write one records file: ``arrays`` per mode (``{"crop": {"key": ..., "target": ...}}``),
    each stored as ``"<mode>/<field>"``, and ``meta`` (JSON-able) with ``schema``, ``kind`` and
    ``modes`` set here. Compressed in memory, then written as a result is (a temporary file,
    fsynced and renamed). Returns its size and digest (:class:`Written`). A kind or a mode that lacks a field
    is a ValueError (a bug of the family that made them); the OS's refusal to write is an
    :class:`~evalkit.errors.OutputError` naming the path."""
    path = Path(path)
    if kind not in FIELDS:
        raise ValueError(f"records: unknown kind {kind!r}; the kinds are {', '.join(KINDS)}")
    if not arrays:
        raise ValueError(f"records {path.name}: no mode to write")
    flat: dict[str, np.ndarray] = {}
    for mode, fields in arrays.items():
        if not mode or "/" in mode or mode == META_KEY:
            raise ValueError(f"records {path.name}: bad mode name {mode!r}")
        missing = [f for f in FIELDS[kind] if f not in fields]
        if missing:
            raise ValueError(f"records {path.name}: mode {mode!r} of kind {kind!r} lacks {missing}")
        for name, value in fields.items():
            array = np.asarray(value)
            if array.dtype.kind == "O":
                raise ValueError(f"records {path.name}: array {mode}/{name} holds Python objects; only numbers "
                                 f"and strings are stored")
            flat[f"{mode}/{name}"] = array
    full_meta = {**dict(meta or {}), "schema": SCHEMA, "kind": kind, "modes": list(arrays)}
    flat[META_KEY] = np.array(json.dumps(full_meta, sort_keys=True, allow_nan=True))
    data = _npz_bytes(flat)
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise OutputError(f"cannot write per-sample records {path}: {e.strerror or e}") from e
    return Written(path, len(data), hashlib.sha256(data).hexdigest())


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of a compressed ``.npz`` (what ``np.savez_compressed`` writes),
    with a fixed time stamp on every member: the same records give the same bytes, so a file's
    SHA-256 names its content."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class Records:
    """One records file as read: its kind, its meta (``schema``, ``kind``, ``modes`` and what the
    family recorded: ``n_classes``, ``recall_k``, ``precision`` ...) and its arrays per mode."""

    path: Path
    kind: str
    meta: dict[str, Any]
    _arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def modes(self) -> list[str]:
        return list(self.meta["modes"])

    def arrays(self, mode: str | None = None) -> dict[str, np.ndarray]:
        """The arrays of ``mode`` (None: the only mode, or the first) by field name."""
        if mode is None:
            mode = self.modes[0]
        if mode not in self.modes:
            raise RecordsError(f"{self.path}: no mode {mode!r} in these records (modes: {', '.join(self.modes)})")
        prefix = f"{mode}/"
        return {name[len(prefix):]: a for name, a in self._arrays.items() if name.startswith(prefix)}


def read_records(path: str | Path) -> Records:
    """Read and check a records file (``allow_pickle=False``): every array its kind needs, in
    every mode its meta lists, with the lengths that belong together equal. Anything else is a
    :class:`RecordsError` naming the file (and the array)."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise RecordsError(f"{path}: no such records file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RecordsError(f"{path}: not a records file (an .npz of arrays): {e}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a plain .npy: one array, not a mapping of them
        raise RecordsError(f"{path}: not a records file (one .npy array, not an .npz of arrays)")
    arrays: dict[str, np.ndarray] = {}
    with loaded:
        for name in loaded.files:
            try:
                arrays[name] = loaded[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # damaged, or pickled objects
                raise RecordsError(f"{path}: array {name} cannot be read: {e}") from None
    if META_KEY not in arrays:
        raise RecordsError(f"{path}: array {META_KEY} (the records' meta) is missing")
    raw = arrays.pop(META_KEY)
    try:
        meta = json.loads(str(raw[()])) if raw.shape == () and raw.dtype.kind == "U" else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise RecordsError(f"{path}: array {META_KEY} is not a JSON object in a 0-d string array")
    if meta.get("schema") != SCHEMA:
        raise RecordsError(f"{path}: array {META_KEY}: schema {meta.get('schema')!r}, this evalkit reads {SCHEMA}")
    kind = meta.get("kind")
    if kind not in FIELDS:
        raise RecordsError(f"{path}: array {META_KEY}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    modes = meta.get("modes")
    if not isinstance(modes, list) or not modes or not all(isinstance(m, str) for m in modes):
        raise RecordsError(f"{path}: array {META_KEY}: 'modes' must be a list of mode names, got {modes!r}")
    for mode in modes:
        for name in FIELDS[kind]:
            if f"{mode}/{name}" not in arrays:
                raise RecordsError(f"{path}: array {mode}/{name} is missing (a {kind} records file needs "
                                   f"{', '.join(FIELDS[kind])} per mode)")
        for group in _SAME_LENGTH[kind]:
            lengths = {name: _length(arrays[f"{mode}/{name}"]) for name in group}
            if len(set(lengths.values())) > 1:
                raise RecordsError(f"{path}: arrays of mode {mode!r} differ in length: "
                                   + ", ".join(f"{mode}/{n} {n_}" for n, n_ in lengths.items()))
    return Records(path, kind, meta, arrays)


def _length(array: np.ndarray) -> int | None:
    return array.shape[0] if array.ndim else None


def result_entry(written: list[Written], kind: str) -> dict[str, Any]:
    """What a result records of its records files (``evalkit.records``): their kind, names
    (relative to the result's folder: they sit beside it), total size and each one's SHA-256."""
    return {"kind": kind, "files": [w.path.name for w in written], "bytes": int(sum(w.bytes for w in written)),
            "sha256": [w.sha256 for w in written]}


def records_for(result: TaskResult | str | Path, output_dir: str | Path | None = None) -> list[Path]:
    """The records files of a result, in order (one per split of a several-split task): those
    its ``evalkit.records`` names, beside its file. ``result``: a result file's path, or a
    :class:`~evalkit.results.TaskResult` with the ``output_dir`` it was written under. A result
    written without records (``--no-records``, or before records existed) has none: ``[]``."""
    if isinstance(result, TaskResult):
        if output_dir is None:
            raise TypeError("records_for: a TaskResult needs the output_dir it was written under")
        folder = path_of(result, output_dir).parent
    else:
        folder = Path(result).parent
        result = read_result(result)
    entry = result.evalkit.get("records")
    if not isinstance(entry, dict):
        return []
    files = entry.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) and f and "/" not in f for f in files):
        raise RecordsError(f"{folder}: result {result.dataset}: evalkit.records.files must be a list of file names, "
                           f"got {files!r}")
    return [folder / f for f in files]


def recall_at(rank: np.ndarray, k: int) -> float:
    """The recall@K that ranks of a retrieval records file give: the float32 mean of
    ``0 <= rank < k`` (a rank -1, an image without captions, is a miss), as the metric takes it."""
    rank = np.asarray(rank)
    return float(np.mean(((rank >= 0) & (rank < k)).astype(np.float32)))


def result_records(result: TaskResult | str | Path, output_dir: str | Path | None = None) -> list[Records]:
    """The records of a result (:func:`records_for`: a result file's path, or a result and the
    ``output_dir`` it was written under), read and checked, in order. Each file must be the one
    the result was written with (the SHA-256 the result keeps), else a :class:`RecordsError` says
    that it belongs to another run."""
    paths = records_for(result, output_dir)
    if not isinstance(result, TaskResult):
        result = read_result(result)
    digests = (result.evalkit.get("records") or {}).get("sha256")
    out = []
    for i, path in enumerate(paths):
        records = read_records(path)
        if isinstance(digests, list) and i < len(digests):
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != digests[i]:
                raise RecordsError(f"{path}: not the records file its result was written with (SHA-256 "
                                   f"{actual[:12]}…, the result names {str(digests[i])[:12]}…): another run wrote it")
        out.append(records)
    return out
