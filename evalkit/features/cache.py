"""The feature cache: content-addressed values (tensors, dicts of tensors) on disk, plus an
in-memory layer, shared safely by concurrent runs.

Layout: ``<root>/<kind>/<key[:2]>/<key>.pt`` (kinds: ``images``, ``classifier``, ``captions``).
Each file is one entry in format 2::

    MAGIC (8 bytes) | format (uint16 LE) | header length (uint32 LE) | header (JSON, UTF-8)
    | payload (torch.save bytes) | SHA-256 of everything before it (32 bytes)

The header holds ``kind``, ``key``, ``created`` (Unix time), ``payload_size`` and ``meta`` (what
the writer said about the entry: model name, fingerprint, view, unit, ...), so listing a cache
reads a few hundred bytes per entry. The trailing checksum covers the header and the payload:
a truncated file, a flipped bit anywhere, or a file copied under another key's name is
detected when the entry is read; it is then reported (a ``logging`` warning naming the file and
the reason, and ``FeatureCache.corrupt``), treated as a miss and never used. The caller
recomputes the value and its ``put`` replaces the bad file.

Writes are atomic: the entry goes to a temporary file in the same folder (``.<key>.pt.<random>.tmp``),
is fsync'ed and then renamed over the entry with ``os.replace``. A reader opens either the old
file or the new one, never a half-written one; two processes writing the same key both succeed
and the last rename wins with a whole, valid entry. A disk read of an entry sets its mtime, which
is therefore the time of its last use (``evalkit cache prune --older-than``).

This module is bottom-layer: it imports only the standard library and torch.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import logging
import os
import re
import struct
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.results import atomic_write_bytes

__all__ = [
    "FORMAT", "CacheEntryError", "CacheFolderError", "EntryInfo", "FeatureCache", "default_cache_dir",
    "cache_dir_in_use", "run_cache_dir",
    "encode_entry", "decode_entry", "read_header", "check_entry", "scan", "temp_files", "parse_duration",
    "dataset_of", "entry_paths", "require_root",
]

log = logging.getLogger(__name__)

FORMAT = 2
MAGIC = b"\x89EVKC\r\n\x1a"
_PREFIX = struct.Struct("<HI")  # format, header length
_HEAD = len(MAGIC) + _PREFIX.size
_DIGEST = 32
_MAX_HEADER = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
TEMP_SUFFIX = ".tmp"
#: a temporary file older than this is left over from a writer that died (prune may remove it)
STALE_TEMP_SECONDS = 3600.0


def default_cache_dir() -> Path:
    return Path(os.environ.get("EVALKIT_CACHE", Path.home() / ".cache" / "evalkit"))


# The cache folder of the run in progress, set by ``run_cache_dir`` around a run. A data source
# (a plugin's, called with the plugin signature ``(source, data_root, task)``) that generates
# files, as the demo's video clips, asks ``cache_dir_in_use`` where they go.
_RUN_CACHE_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("evalkit_run_cache_dir", default=None)


def cache_dir_in_use() -> Path:
    """Where generated data goes: the cache folder of the run in progress (``--cache-dir``; a
    temporary folder under ``--no-cache``, see :func:`run_cache_dir`), else
    :func:`default_cache_dir`."""
    return _RUN_CACHE_DIR.get() or default_cache_dir()


@contextlib.contextmanager
def run_cache_dir(cache_dir: str | Path | None) -> Iterator[Path]:
    """Within: :func:`cache_dir_in_use` is ``cache_dir`` (None, a run without a disk cache: a
    temporary folder, removed with what was generated in it on exit)."""
    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="evalkit-run-cache-")))
        else:
            folder = Path(cache_dir)
        token = _RUN_CACHE_DIR.set(folder)
        stack.callback(_RUN_CACHE_DIR.reset, token)
        yield folder


class CacheEntryError(EvalkitError, ValueError):
    """An entry file that cannot be used: ``reason`` says why (truncated, checksum mismatch, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or len(name) < 2 or not _NAME.fullmatch(name):
        raise ValueError(f"feature cache: {what} {name!r} is not a plain file name (letters, digits, _ . -)")


def encode_entry(kind: str, key: str, value: Any, meta: Mapping[str, Any] | None = None,
                 created: float | None = None) -> bytes:
    """The bytes of one format-2 entry (see the module docstring)."""
    buf = io.BytesIO()
    torch.save(value, buf)
    payload = buf.getvalue()
    header = json.dumps({"kind": kind, "key": key, "created": time.time() if created is None else created,
                         "payload_size": len(payload), "meta": dict(meta or {})},
                        sort_keys=True, default=str).encode()
    body = MAGIC + _PREFIX.pack(FORMAT, len(header)) + header + payload
    return body + hashlib.sha256(body).digest()


def _parse_head(data: bytes, total: int) -> tuple[dict[str, Any], int]:
    """The header of an entry from its first bytes (``total``: the file's size). Raises CacheEntryError."""
    if len(data) < _HEAD:
        raise CacheEntryError(f"truncated: {total} bytes, shorter than an entry header")
    if data[: len(MAGIC)] != MAGIC:
        raise CacheEntryError("not an evalkit cache entry (bad magic bytes)")
    fmt, size = _PREFIX.unpack_from(data, len(MAGIC))
    if fmt != FORMAT:
        raise CacheEntryError(f"unknown entry format {fmt} (this evalkit reads format {FORMAT})")
    if size > _MAX_HEADER:
        raise CacheEntryError(f"damaged header (length field says {size} bytes)")
    if total < _HEAD + size:
        raise CacheEntryError(f"truncated: {total} bytes, the header alone needs {_HEAD + size}")
    try:
        header = json.loads(data[_HEAD: _HEAD + size].decode())
        if not isinstance(header, dict):
            raise ValueError("not an object")
        payload_size = int(header["payload_size"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CacheEntryError(f"damaged header ({type(e).__name__}: {e})".splitlines()[0][:200]) from None
    expected = _HEAD + size + payload_size + _DIGEST
    if total < expected:
        raise CacheEntryError(f"truncated: {total} of {expected} bytes")
    if total > expected:
        raise CacheEntryError(f"{total - expected} bytes more than the header says ({expected})")
    return header, size


def decode_entry(data: bytes, *, expect_kind: str | None = None, expect_key: str | None = None
                 ) -> tuple[dict[str, Any], Any]:
    """(header, value) of an entry's bytes, after checking its length and checksum (and that it is
    the entry of ``expect_kind``/``expect_key`` when given). Raises :class:`CacheEntryError`."""
    header, size = _parse_head(data, len(data))
    body = memoryview(data)[: len(data) - _DIGEST]
    if hashlib.sha256(body).digest() != data[len(data) - _DIGEST:]:
        raise CacheEntryError("checksum mismatch (bit rot or a damaged copy)")
    if expect_key is not None and header.get("key") != expect_key:
        raise CacheEntryError(f"holds key {header.get('key')!r}, not the one its name says (a misplaced copy)")
    if expect_kind is not None and header.get("kind") != expect_kind:
        raise CacheEntryError(f"holds a {header.get('kind')!r} entry, not {expect_kind!r} (a misplaced copy)")
    try:
        value = torch.load(io.BytesIO(body[_HEAD + size:]), map_location="cpu", weights_only=True)
    except Exception as e:  # checksum right but unloadable: written by an incompatible torch, say
        raise CacheEntryError(f"payload does not load ({type(e).__name__}: {e})".splitlines()[0][:300]) from None
    return header, value


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """(header, file size) of an entry file, reading only its first bytes. Raises CacheEntryError or OSError."""
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        head = f.read(_HEAD)
        if len(head) == _HEAD and head[: len(MAGIC)] == MAGIC:
            size = _PREFIX.unpack_from(head, len(MAGIC))[1]
            head += f.read(min(size, _MAX_HEADER))
    return _parse_head(head, total)[0], total


def check_entry(path: Path) -> str | None:
    """Why the entry file at ``path`` cannot be used (after reading it whole: length, checksum,
    its name against its key, the payload loads), or None when it is good."""
    try:
        data = path.read_bytes()
        decode_entry(data, expect_kind=path.parent.parent.name, expect_key=path.name[: -len(".pt")])
    except CacheEntryError as e:
        return e.reason
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None


class FeatureCache:
    """Content-addressed values on disk (plus an in-memory layer). ``root=None`` keeps memory only.

    ``hits``/``misses`` count lookups; ``corrupt`` lists (path, reason) for each damaged entry met
    on read (treated as misses), and
    ``write_errors`` (path, reason) for each entry that could not be written (the value is kept in
    memory and the run goes on)."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self._memory: dict[tuple[str, str], Any] = {}
        self.hits = 0
        self.misses = 0
        self.corrupt: list[tuple[Path, str]] = []
        self.write_errors: list[tuple[Path, str]] = []

    def path(self, kind: str, key: str) -> Path:
        """Where the entry (kind, key) lives on disk."""
        if self.root is None:
            raise ValueError("feature cache: a memory-only cache has no files")
        _check_name("kind", kind)
        _check_name("key", key)
        return self.root / kind / key[:2] / f"{key}.pt"

    def get(self, kind: str, key: str) -> Any | None:
        """The cached value, or None (a miss: absent or damaged)."""
        if (kind, key) in self._memory:
            self.hits += 1
            return self._memory[(kind, key)]
        if self.root is not None:
            path = self.path(kind, key)
            value = self._read(path, kind, key)
            if value is not None:
                self._memory[(kind, key)] = value
                self.hits += 1
                return value
        self.misses += 1
        return None

    def _read(self, path: Path, kind: str, key: str) -> Any | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            self._bad(path, f"unreadable ({e.strerror or e})")
            return None
        try:
            _, value = decode_entry(data, expect_kind=kind, expect_key=key)
        except CacheEntryError as e:
            self._bad(path, e.reason)
            return None
        try:  # the time of its last use, for `evalkit cache prune --older-than`
            os.utime(path)
        except OSError:
            pass  # a read-only shared cache
        return value

    def _bad(self, path: Path, reason: str) -> None:
        self.corrupt.append((path, reason))
        log.warning("feature cache: %s: %s; not used, recomputing it (the new entry replaces it)", path, reason)

    def put(self, kind: str, key: str, value: Any, meta: Mapping[str, Any] | None = None) -> None:
        """Store ``value``; ``meta`` (JSON-able: model, fingerprint, view, unit, ...) is kept in the
        entry's header for ``evalkit cache ls``."""
        self._memory[(kind, key)] = value
        if self.root is None:
            return
        path = self.path(kind, key)
        data = encode_entry(kind, key, value, meta)
        for attempt in (1, 2):
            try:
                _write_atomic(path, data)
                return
            except OSError as e:
                if isinstance(e, FileNotFoundError) and attempt == 1:
                    continue  # its folder was removed meanwhile (a concurrent prune): once more
                self.write_errors.append((path, e.strerror or str(e)))
                log.warning("feature cache: cannot write %s (%s); the value is kept in memory for this run",
                            path, e.strerror or e)
                return


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path``: a temporary file in the same folder (``.<name>.<random>.tmp``, what
    :func:`temp_files` finds), fsync'ed, renamed over it, the folder fsync'ed."""
    atomic_write_bytes(path, data)


# -- inspecting a cache folder (evalkit cache ls / du / prune / verify) -------------------------


def dataset_of(unit: str) -> str:
    """The dataset part of a unit id: a range unit ``prefix[lo:hi]`` (``|holdout...`` after it)
    gives ``prefix``; a shard id ``/path/shard.tar:size:mtime`` gives the shard's folder."""
    base = unit.split("|", 1)[0]
    m = re.fullmatch(r"(.*)\[\d+:\d+\]", base)
    if m:
        return m.group(1)
    m = re.fullmatch(r"(.*):\d+:\d+", base)
    if m and "/" in m.group(1):
        return str(Path(m.group(1)).parent)
    return base


@dataclass
class EntryInfo:
    """One entry file as listed from its header (nothing checked beyond the header)."""

    path: Path
    kind: str
    key: str
    size: int
    used: float  # mtime: when it was last written or read
    created: float
    meta: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT  # 0: the header does not read
    problem: str | None = None

    @property
    def model(self) -> str:
        if self.format == 0:
            return "(damaged)"
        return str(self.meta.get("model") or "(unknown)")

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("fingerprint") or "")

    @property
    def view(self) -> str:
        return str(self.meta.get("view") or "-")

    @property
    def dataset(self) -> str:
        if self.meta.get("dataset"):
            return str(self.meta["dataset"])
        if self.meta.get("unit"):
            return dataset_of(str(self.meta["unit"]))
        return "-"


class CacheFolderError(EvalkitError, FileNotFoundError):
    """The cache folder a command reads (``evalkit cache ...``) is missing or is not a folder."""


def require_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise CacheFolderError(f"feature cache folder {root} does not exist (nothing cached yet; "
                               f"--cache-dir or $EVALKIT_CACHE name another)")
    if not root.is_dir():
        raise CacheFolderError(f"feature cache folder {root} is not a folder")
    return root


def entry_paths(root: str | Path) -> Iterator[Path]:
    """``<root>/<kind>/<xx>/<key>.pt`` files, where ``xx`` is the key's start; nothing else under
    the root (generated demo clips, other tools' files) is an entry. Raises FileNotFoundError for
    a missing root."""
    root = require_root(root)
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)):
        for sub in sorted(p for p in kind_dir.iterdir() if p.is_dir() and len(p.name) == 2):
            for f in sorted(sub.iterdir()):
                if f.suffix == ".pt" and f.name.startswith(sub.name) and _NAME.fullmatch(f.name) and f.is_file():
                    yield f


def scan(root: str | Path) -> Iterator[EntryInfo]:
    """Every entry under ``root``, from its header. Raises FileNotFoundError for a missing root."""
    for path in entry_paths(root):
        try:
            st = path.stat()
        except FileNotFoundError:  # removed meanwhile
            continue
        info = EntryInfo(path, path.parent.parent.name, path.name[:-3], st.st_size, st.st_mtime, st.st_mtime)
        try:
            header, _ = read_header(path)
        except CacheEntryError as e:
            info.format, info.problem = 0, e.reason
        except OSError as e:
            info.format, info.problem = 0, f"unreadable ({e.strerror or e})"
        else:
            info.meta = header.get("meta") if isinstance(header.get("meta"), dict) else {}
            if isinstance(header.get("created"), (int, float)):
                info.created = float(header["created"])
        yield info


def temp_files(root: str | Path) -> list[Path]:
    """Temporary files of writes in progress, or left by writers that died."""
    root = require_root(root)
    return sorted(p for p in root.glob(f"*/??/.*{TEMP_SUFFIX}") if p.is_file())


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (or a sum: ``1d12h``)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.strip().lower())
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhdw])", "", text.strip().lower()).strip():
        raise ValueError(f"expected a duration such as 30d, 12h, 90m or 45s, got {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)
