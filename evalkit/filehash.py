"""SHA-256 of files, remembered, so that a 36 GB checkpoint is read once, not once per certificate.

:func:`file_sha256` streams a file through SHA-256 in :data:`CHUNK` pieces and remembers the digest
under the evalkit cache folder (``$EVALKIT_CACHE``, else ``~/.cache/evalkit``; the folder the
feature cache uses, :func:`evalkit.features.cache.default_cache_dir`), in ``filehash/``: one small
JSON file per entry, named by a hash of what identifies the file's content without reading it —
its resolved path, size, modification time (ns), inode, device and change time (ns). A file
rewritten in place changes its size, mtime or ctime (ctime cannot be set back by ``touch`` or
``rsync -t``); a file replaced by another gets a new inode. Any of these changed: a new key, so the
file is read again. Entries are written atomically (a temporary file renamed into place), so
processes hashing at the same time never see half an entry, and two writing the same entry write
the same bytes. An entry that cannot be read is ignored (the file is hashed again); a cache folder
that cannot be written only costs the next run a re-read.

:func:`tree_files` is what a model's ``weights`` path stands for: the file itself, or every regular
file under a folder (any name: safetensors, ``.bin`` / ``.pt`` shards, index JSONs, configs and
tokenizers alike, since each can change the numbers), except names starting with ``.`` (``.git``,
``.cache`` of a ``huggingface-cli download --local-dir``). Symbolic links are followed, so a
Hugging Face hub snapshot folder (links into ``blobs/``) is hashed by content under the names the
snapshot gives its files.

:func:`json_sha256` is the digest of a value's canonical JSON (keys sorted, no spaces, ASCII),
as results record their templates and class names and a certificate hashes itself.

This module is at the bottom of the layers: it imports only :mod:`evalkit.results` (the atomic
write) and :mod:`evalkit.progress`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.progress import progress_bar
from evalkit.results import atomic_write_bytes

__all__ = ["CHUNK", "HashedFile", "cache_folder", "canonical_json", "file_sha256", "hash_tree", "json_sha256",
           "tree_files"]

CHUNK = 4 << 20  # bytes read at a time: large enough that Python's overhead vanishes, small in memory
_SCHEME = 1  # changes when the entries' meaning does; older entries are then never read
_PROGRESS_FROM = 256 << 20  # files this large say how far hashing has got


@dataclass(frozen=True)
class HashedFile:
    path: str  #: as given (relative to a tree's root for :func:`tree_files`)
    size: int
    sha256: str


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """Where digests are remembered: ``<cache_dir>/filehash`` (default: ``$EVALKIT_CACHE``, else
    ``~/.cache/evalkit``, as the feature cache)."""
    root = Path(cache_dir) if cache_dir is not None else Path(
        os.environ.get("EVALKIT_CACHE", Path.home() / ".cache" / "evalkit"))
    return root / "filehash"


def canonical_json(value: Any) -> bytes:
    """``value`` as canonical JSON bytes: keys sorted, no whitespace, ASCII, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def json_sha256(value: Any) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _identity(path: Path, st: os.stat_result) -> dict[str, Any]:
    return {"scheme": _SCHEME, "path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "device": st.st_dev}


def _stream_sha256(path: Path, size: int, progress: bool) -> str:
    digest = hashlib.sha256()
    with progress_bar(size, f"sha256 {path.name}", unit="B", enabled=progress and size >= _PROGRESS_FROM) as bar:
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := f.readinto(buf):
                digest.update(view[:n])
                bar.update(n)
    return digest.hexdigest()


def file_sha256(path: str | Path, *, cache: bool = True, cache_dir: str | Path | None = None,
                progress: bool = False) -> str:
    """SHA-256 (hex) of the file at ``path`` (a link: of the file it points to), read once per
    version of the file and remembered in :func:`cache_folder` (``cache=False``: read, remember
    nothing). An OSError (no such file, no permission) names the path."""
    resolved = Path(path).resolve()
    st = resolved.stat()
    identity = _identity(resolved, st)
    entry = cache_folder(cache_dir) / f"{json_sha256(identity)}.json" if cache else None
    if entry is not None:
        try:
            known = json.loads(entry.read_text())
            if known.get("identity") == identity and isinstance(known.get("sha256"), str):
                return known["sha256"]
        except (OSError, ValueError, AttributeError):
            pass  # not there, or unreadable: hash again
    sha = _stream_sha256(resolved, st.st_size, progress)
    if entry is not None:
        try:
            atomic_write_bytes(entry, json.dumps({"identity": identity, "sha256": sha}).encode())
        except OSError:
            pass  # a read-only cache folder only means reading the file again next time
    return sha


def _walk(root: Path) -> Iterator[Path]:
    seen: set[tuple[int, int]] = set()  # folders by (device, inode): a link back up is walked once
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def tree_files(root: str | Path) -> list[Path]:
    """The files ``root`` stands for: itself when it is a file, else every regular file under it
    (links followed, names starting with ``.`` left out), sorted by their path relative to it."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    return sorted((p for p in _walk(root) if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def hash_tree(root: str | Path, *, cache: bool = True, cache_dir: str | Path | None = None,
              progress: bool = False) -> list[HashedFile]:
    """Every file of :func:`tree_files` with its size and SHA-256, its path relative to ``root``
    (for a file: its name)."""
    root = Path(root)
    out = []
    for p in tree_files(root):
        rel = p.name if p == root else p.relative_to(root).as_posix()
        out.append(HashedFile(rel, p.stat().st_size, file_sha256(p, cache=cache, cache_dir=cache_dir,
                                                                  progress=progress)))
    return out
