"""Fetch a task's data from the Hugging Face Hub into the folder evalkit reads, verified, never partial.

A task file names where its data comes from as data (its ``fetch:`` block), never as code::

    fetch:
      repo: clip-benchmark/wds_cifar10   # a dataset repo on the Hub (clip_benchmark's WebDataset mirrors)
      revision: main                     # a branch, or a commit hash (pinned: what a result can cite)
      split: test                        # the one split fetched: <split>/*.tar + <split>/nshards.txt
      path: wds_cifar10                  # the folder under the data root (default: the repo's name)
      files: [extra.txt]                 # optional: more files that must exist
      patterns: ["meta/*.json"]          # optional: more files, by glob, where the listing has them
      layout: wds                        # wds (default), or files: just ``files`` + ``patterns``,
      read_as: {type: ...}               #   read back (for the count) as this source spec

    fetch:                               # one folder of an archive on the Hub (layout: archive)
      repo: BAAI/Uni3D
      repo_type: model
      archive: data/test_datasets.zip    # a .zip, .tar, .tar.gz/.tgz in the repo
      member: test_datasets/modelnet40   # the folder inside the archive that becomes ``path``
      path: test_datasets/modelnet40
      read_as: {type: openshape_npy}     # read back for the sample count

    fetch:                               # a set the Hub does not mirror (its licence forbids it)
      manual: https://official.example/  # where to get it
      path: ucf101                       # the folder evalkit reads under the data root
      layout: "UCF-101/<class>/*.avi + ucfTrainTestlist/testlist01.txt"
      note: "free after registration"

For ``layout: wds`` the fetch takes ``<split>/*.tar``, ``<split>/nshards.txt`` and the mirror's
metadata at its root (``classnames.txt``, ``zeroshot_classification_templates.txt``,
``dataset_type.txt``, where the repo has them): the layout :func:`evalkit.data.sources.wds_source`
reads, at ``<data root>/<path>``. Other splits stay on the Hub.

Public API (the command line's ``evalkit data get`` and ``evalkit run --download`` call these)::

    fetch_source(spec, data_root, *, task, expected=None, classes=None, classnames=None,
                 templates=None, max_workers=4, progress=True, endpoint=None, token=None,
                 hub_cache=None, retries=5) -> FetchReport
    is_fetched(spec, data_root) -> bool                  # no network, no writes
    manual_instructions(spec, data_root, *, task) -> ManualSource
    parse_fetch_spec(raw, task) -> HubSpec | ManualSpec
    read_manifest(data_root) -> dict                     # MANIFEST_NAME in the data root
    manifest_record(data_root, folder, split) -> dict | None
    data_revision(data_root, source_info) -> dict | None # what a result records (repo, commit, ...)

Errors (all :class:`~evalkit.errors.EvalkitError`): :class:`FetchSpecError` (a bad ``fetch:``
block), :class:`FetchError` (the fetch could not complete: network, the Hub's answers), its
:class:`HubAccessError` (401/403: gated or private; says how to accept the terms and set
``HF_TOKEN``) and :class:`HubNotFoundError` (404: names the repo, revision or file),
:class:`ManualFetchRequired` (a set not on the Hub: carries its instructions),
:class:`FetchVerifyError` (the fetched data fails a check: names the file or the count) and
:class:`DataRootError` (the data root is read-only or too full: names the folder and the space
needed; raised before anything is downloaded).

How a fetch goes, and why:

* **Verified, never partial.** Files are downloaded with huggingface_hub (``hf_hub_download`` into
  a ``local_dir``: its resume, its copy from the shared Hugging Face cache when the file is there,
  ``HF_TOKEN``, ``HF_ENDPOINT``) into a staging folder, ``<data root>/.evalkit-fetch/staging/<path>``,
  that no reader looks in. Each file's size and hash are checked against the Hub's listing (the
  LFS sha256, or the git blob id of a small file: huggingface_hub checks only the size); then the
  shard count against ``nshards.txt`` and the listing, the sample count (tar headers, no decoding:
  :func:`evalkit.data.check.count_samples`) against ``expected``, the class count against
  ``classes``. Only then is the data renamed into place, a folder (or a split folder) at a time:
  a reader sees the whole split or none of it. A failure removes the file at fault and leaves the
  place untouched.
* **A manifest** (:data:`MANIFEST_NAME` in the data root, JSON) lists per folder the repo, the
  revision asked for and the commit fetched, and per split the tasks, every file with its size
  and hashes, the shard, sample and class counts and when it was fetched. A data root copied to
  an offline cluster carries it: nothing there needs the network (``HF_HUB_OFFLINE=1`` is
  honoured: data already fetched is reported, anything else is an error that says so).
* **Resumable.** Completed files stay in the staging folder; the next call finds them there
  (huggingface_hub makes no request for a file whose commit it recorded) and downloads only the
  rest. huggingface_hub 1.x+ restarts a file cut off mid-way (it no longer appends across runs).
* **Concurrent-safe.** A file lock per folder (``.evalkit-fetch/locks/<path>.lock``): a second
  process (another rank, another job) waits, then finds the data in place and returns. Ranks of
  one job may all call :func:`fetch_source`: one fetches, the others wait.
* **Network.** huggingface_hub retries the listing (429, 5xx, dropped connections), a file's 429
  and a dropped download (resumed, 5 tries), but not the revision lookup nor a 5xx on a file:
  evalkit retries those, ``retries`` times with exponential back-off, waiting what
  ``Retry-After`` asks (a 429 on the revision lookup; a 503 on a shard). ``max_workers`` files at
  a time (default 4: the Hub rate-limits per client).
* **Disk.** Before any request, the data root must be writable (a file is written and removed);
  after the listing and before any download, the free space must hold what is left to fetch.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from evalkit.data.sources import WDS_LAYOUT, DataError
from evalkit.errors import EvalkitError, OutputError, one_line
from evalkit.models.hub import hub_cache_dir, hub_offline, human_size, quiet_hub

__all__ = [
    "MANIFEST_NAME", "WORK_DIR", "WDS_METADATA", "HubSpec", "ManualSpec", "RemoteFile", "FetchedFile", "FetchReport",
    "ManualSource", "FetchSpecError", "FetchError", "HubAccessError", "HubNotFoundError", "HubUnreachableError",
    "ManualFetchRequired",
    "FetchVerifyError", "DataRootError", "parse_fetch_spec", "fetch_source", "is_fetched", "manual_instructions",
    "read_manifest", "manifest_record", "data_revision", "unreachable_message",
]

#: the manifest in the data root: what was fetched, from which commit, with which counts
MANIFEST_NAME = "evalkit-manifest.json"
MANIFEST_FORMAT = 1
#: evalkit's working folder in the data root (staging, locks, trash); no reader looks in it
WORK_DIR = ".evalkit-fetch"
#: the metadata files of a clip_benchmark WebDataset mirror, at its root, fetched where the repo has them
WDS_METADATA = ("classnames.txt", "zeroshot_classification_templates.txt", "dataset_type.txt")
#: statuses retried (with back-off, honouring Retry-After)
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
RETRY_AFTER_MAX_S = 900.0  # the Hub asking for longer than this is reported, not waited out
SPACE_MARGIN = 1.02  # a little room beyond the bytes themselves (huggingface_hub's metadata, the manifest)

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_KEYS = {"repo", "repo_type", "revision", "split", "path", "files", "patterns", "layout", "read_as", "archive",
             "member"}
ARCHIVE_EXTS = (".zip", ".tar", ".tar.gz", ".tgz")
_MANUAL_KEYS = {"manual", "path", "layout", "note", "split", "commands"}


# -- errors ------------------------------------------------------------------------------------


class FetchSpecError(DataError):
    """A task's ``fetch:`` block that is not valid; the message names the task and the key."""


class FetchError(EvalkitError, OSError):
    """A fetch that could not complete (the network, the Hub's answers); run again to resume."""


class HubAccessError(FetchError):
    """401/403: the repo is gated or private and the token (``HF_TOKEN``) has no access."""


class HubNotFoundError(FetchError):
    """404: the repo, its revision or one of its files is not on the Hub."""


class HubUnreachableError(FetchError):
    """The Hub's endpoint could not be reached at all (its name did not resolve, the connection
    was refused, no route to it): not retried; the other Hub fetches of the same command are not
    attempted."""


class ManualFetchRequired(FetchError):
    """The set is not on the Hub: :attr:`instructions` say where to get it and how to check it."""

    def __init__(self, message: str, instructions: ManualSource) -> None:
        super().__init__(message)
        self.instructions = instructions


class FetchVerifyError(DataError):
    """Fetched data that fails a check (a file's size or hash, the shard, sample or class count);
    nothing of it is put in place."""


class DataRootError(OutputError):
    """A data root that cannot take the fetch: read-only, not a folder, or too full."""


# -- specs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubSpec:
    """Where a task's data lies on the Hub (a task file's ``fetch:`` block, parsed)."""

    repo: str
    revision: str = "main"
    split: str | None = "test"
    path: str = ""
    repo_type: str = "dataset"
    layout: str = "wds"
    files: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    read_as: dict[str, Any] | None = None
    archive: str = ""  # layout archive: the archive in the repo (also in ``files``) ...
    member: str = ""  # ... and the folder in it that becomes ``path``

    @property
    def part(self) -> str:
        """What one fetch places atomically in the folder: the split (wds), or the whole folder."""
        return self.split if self.layout == "wds" and self.split else ""


@dataclass(frozen=True)
class ManualSpec:
    """A set that is not on the Hub: where to get it and the layout evalkit reads."""

    url: str
    path: str
    layout: str
    note: str = ""
    commands: str = ""  # the exact commands that get it ({root}: the data root), for a Hub archive


@dataclass(frozen=True)
class ManualSource:
    """What ``evalkit data get`` prints for a set it cannot fetch."""

    task: str
    url: str
    folder: Path
    layout: str
    verify_command: str
    note: str = ""
    commands: str = ""

    def text(self) -> str:
        note = f" ({self.note})" if self.note else ""
        if self.commands:  # an archive (on the Hub or elsewhere) that evalkit does not unpack yet
            return (f"{self.task}: evalkit does not fetch this one itself{note}: {self.url}; get it with: "
                    f"{self.commands}; evalkit then reads {self.folder} as {self.layout}; check it with: "
                    f"{self.verify_command}")
        return (f"{self.task}: not on the Hugging Face Hub{note}; get it from {self.url} and put it at "
                f"{self.folder} as {self.layout}; then check it with: {self.verify_command}")


def _str_list(raw: Any, task: str, key: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise FetchSpecError(f"task {task!r}: fetch.{key} must be a list of file names, got {raw!r}")
    return tuple(raw)


def _folder_name(raw: Any, task: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise FetchSpecError(f"task {task!r}: fetch.path must be a folder name under the data root, got {raw!r}")
    parts = Path(raw).parts
    if Path(raw).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise FetchSpecError(f"task {task!r}: fetch.path {raw!r} must be a relative folder under the data root "
                             f"(no '..', no hidden folders)")
    return raw


def parse_fetch_spec(raw: Any, task: str) -> HubSpec | ManualSpec:
    """A task file's ``fetch:`` block → :class:`HubSpec` or :class:`ManualSpec`; unknown keys and
    bad values are a :class:`FetchSpecError` naming the task and the key."""
    if not isinstance(raw, dict):
        raise FetchSpecError(f"task {task!r}: fetch must be a mapping (repo, revision, split, ...), got {raw!r}")
    if "manual" in raw:
        unknown = sorted(set(raw) - _MANUAL_KEYS)
        if unknown:
            raise FetchSpecError(f"task {task!r}: fetch: unknown key(s) {', '.join(unknown)} for a manual source "
                                 f"(allowed: {', '.join(sorted(_MANUAL_KEYS))})")
        for key in ("manual", "layout"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise FetchSpecError(f"task {task!r}: fetch.{key} is required for a manual source (a string)")
        if not isinstance(raw.get("commands", ""), str):
            raise FetchSpecError(f"task {task!r}: fetch.commands must be a string (the commands that get it)")
        return ManualSpec(raw["manual"], _folder_name(raw.get("path", task), task), raw["layout"],
                          str(raw.get("note", "")), str(raw.get("commands", "")))
    unknown = sorted(set(raw) - _HUB_KEYS)
    if unknown:
        raise FetchSpecError(f"task {task!r}: fetch: unknown key(s) {', '.join(unknown)} "
                             f"(allowed: {', '.join(sorted(_HUB_KEYS))}, or manual: URL)")
    repo = raw.get("repo")
    if not isinstance(repo, str) or not _REPO_ID.match(repo):
        raise FetchSpecError(f"task {task!r}: fetch.repo must be a Hub repo id like 'clip-benchmark/wds_cifar10', "
                             f"got {repo!r}")
    revision = raw.get("revision", "main")
    if not isinstance(revision, str) or not revision:
        raise FetchSpecError(f"task {task!r}: fetch.revision must be a branch, tag or commit hash, got {revision!r}")
    archive, member = raw.get("archive", ""), raw.get("member", "")
    layout = raw.get("layout", "archive" if archive else "wds")
    if layout not in ("wds", "files", "archive"):
        raise FetchSpecError(f"task {task!r}: fetch.layout must be 'wds', 'files' or 'archive', got {layout!r}")
    if layout == "archive" or archive or member:
        if not isinstance(archive, str) or not archive.endswith(ARCHIVE_EXTS) or layout != "archive":
            raise FetchSpecError(f"task {task!r}: fetch.archive must name a {', '.join(ARCHIVE_EXTS)} file in the "
                                 f"repo (layout: archive), got {archive!r}")
        member = _folder_name(member, task).rstrip("/") if member else ""
        raw = {**raw, "files": [archive]}
    split = raw.get("split", "test" if layout == "wds" else None)
    if split is not None and (not isinstance(split, str) or not split or "/" in split or split.startswith(".")):
        raise FetchSpecError(f"task {task!r}: fetch.split must be a folder name of the repo (e.g. test), got {split!r}")
    repo_type = raw.get("repo_type", "dataset")
    if repo_type not in ("dataset", "model"):
        raise FetchSpecError(f"task {task!r}: fetch.repo_type must be 'dataset' or 'model', got {repo_type!r}")
    files, patterns = _str_list(raw.get("files"), task, "files"), _str_list(raw.get("patterns"), task, "patterns")
    if layout == "files" and not (files or patterns):
        raise FetchSpecError(f"task {task!r}: fetch with layout: files needs files or patterns")
    read_as = raw.get("read_as")
    if read_as is not None and (not isinstance(read_as, dict) or "type" not in read_as):
        raise FetchSpecError(f"task {task!r}: fetch.read_as must be a source spec with a 'type'")
    path = _folder_name(raw.get("path", repo.split("/")[1]), task)
    return HubSpec(repo, revision, split, path, repo_type, layout, files, patterns, read_as, archive, member)


def _as_spec(spec: HubSpec | ManualSpec | dict[str, Any], task: str) -> HubSpec | ManualSpec:
    return spec if isinstance(spec, (HubSpec, ManualSpec)) else parse_fetch_spec(spec, task)


def manual_instructions(spec: ManualSpec | dict[str, Any], data_root: str | Path, *, task: str) -> ManualSource:
    """Where to get a set that is not on the Hub, where to put it and how to check it afterwards
    (all from the task file: nothing is looked up, nothing is scraped)."""
    parsed = _as_spec(spec, task)
    if not isinstance(parsed, ManualSpec):
        raise FetchSpecError(f"task {task!r}: its data is on the Hub ({parsed.repo}); fetch it instead")
    root = Path(data_root)
    verify = f"evalkit data check --tasks {shlex.quote(task)} --data-root {shlex.quote(str(root))}"
    commands = parsed.commands.replace("{root}", shlex.quote(str(root)))
    return ManualSource(task, parsed.url, root / parsed.path, parsed.layout, verify, parsed.note, commands)


# -- the manifest --------------------------------------------------------------------------------


def read_manifest(data_root: str | Path) -> dict[str, Any]:
    """The data root's manifest (``{"format": 1, "folders": {path: {...}}}``); empty when there is
    none. A manifest that does not parse is a DataError naming it."""
    path = Path(data_root) / MANIFEST_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"format": MANIFEST_FORMAT, "folders": {}}
    except OSError as e:
        raise DataError(f"{path}: cannot read the data manifest: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not a valid manifest (JSON error at line {e.lineno}): remove it and fetch again") from e
    if not isinstance(data, dict) or not isinstance(data.get("folders"), dict):
        raise DataError(f"{path}: not an evalkit data manifest (no 'folders')")
    return data


def manifest_record(data_root: str | Path, folder: str | Path, split: str | None = None) -> dict[str, Any] | None:
    """What the manifest says about ``folder`` (a path under the data root, relative or absolute)
    and its ``split``: the folder's repo, revision and commit with the split's files and counts
    merged in; None when the folder was not fetched by evalkit. For a result's provenance."""
    root = Path(data_root)
    rel = Path(folder)
    if rel.is_absolute():
        try:
            rel = rel.resolve().relative_to(root.resolve())
        except ValueError:
            return None
    entry = read_manifest(root)["folders"].get(rel.as_posix())
    if entry is None:
        return None
    out = {k: v for k, v in entry.items() if k != "parts"}
    part = entry.get("parts", {}).get(split or "")
    if split is not None and part is None:
        return None
    if part is not None:
        out.update(part)
        out["split"] = split
    return out


def data_revision(data_root: str | Path | None, info: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a result records of where its data came from (``data_revision``): for data evalkit
    fetched, the manifest's repo, the revision asked for, the commit fetched, the split and when
    (and its notes: a mirror's class names or templates that differ from the task's); None for data
    read from anywhere else, or when ``info`` (a source's ``SourceData.info``) names no folder."""
    path = (info or {}).get("path")
    if data_root is None or not path:
        return None
    split = (info or {}).get("split")
    try:
        record = (manifest_record(data_root, path, str(split)) if split else None) or manifest_record(data_root, path)
    except DataError:  # a damaged manifest: `evalkit data check` says so; the result records no revision
        return None
    if record is None:
        return None
    out = {k: record.get(k) for k in ("repo", "revision", "commit", "split", "fetched_at")}
    if record.get("notes"):
        out["notes"] = list(record["notes"])
    return out


def _write_manifest(root: Path, update: Callable[[dict[str, Any]], None]) -> None:
    """Read, change and write the manifest under its own lock (other tasks' fetches write it too),
    atomically (a temporary file renamed over it)."""
    from filelock import FileLock

    work = root / WORK_DIR
    with FileLock(str(work / "manifest.lock")):
        data = read_manifest(root)
        data["format"] = MANIFEST_FORMAT
        update(data)
        tmp = root / f".{MANIFEST_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, root / MANIFEST_NAME)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataRootError(f"{root / MANIFEST_NAME}: cannot write the data manifest: {e}") from e


# -- report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """A file as the Hub's listing describes it."""

    path: str
    size: int
    blob_id: str  # git blob id (sha1 of the git object); for an LFS file, the pointer's
    sha256: str | None = None  # LFS files: the content's sha256


@dataclass
class FetchedFile:
    path: str  # in the repo, = under the folder
    size: int
    sha256: str
    blob_id: str | None = None  # small files: the git blob id the Hub lists (checked)
    downloaded: bool = False  # False: it was already in the staging folder or the Hugging Face cache

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.blob_id:
            out["git_blob"] = self.blob_id
        return out


@dataclass
class FetchReport:
    """What :func:`fetch_source` did: ``status`` is ``fetched`` (downloaded and placed now),
    ``present`` (already in place: nothing requested), or ``unmanaged`` (the folder exists but
    evalkit did not fetch it: left as it is; ``evalkit data check`` checks it)."""

    task: str
    status: str
    folder: Path
    repo: str
    revision: str
    commit: str | None = None
    split: str | None = None
    files: list[FetchedFile] = field(default_factory=list)
    shards: int | None = None
    samples: int | None = None
    classes: int | None = None
    notes: list[str] = field(default_factory=list)
    source_url: str = ""
    seconds: float = 0.0
    archive: dict[str, Any] | None = None  # layout archive: the archive's path, size, sha256 and member

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def downloaded_bytes(self) -> int:
        return sum(f.size for f in self.files if f.downloaded)

    def line(self) -> str:
        """One line for the console: what, from where, how big, how many."""
        at = f"@{self.commit[:10]}" if self.commit else f"@{self.revision}"
        split = f" {self.split}" if self.split else ""
        counts = [f"{n:,} {what}" for n, what in ((self.shards, "shards"), (self.samples, "samples"),
                                                    (self.classes, "classes")) if n is not None]
        if self.status == "unmanaged":
            return (f"{self.task}: {self.folder} exists and was not fetched by evalkit: left as it is "
                    f"(check it with `evalkit data check --tasks {self.task}`)")
        verb = "fetched" if self.status == "fetched" else "already fetched"
        size = human_size(self.total_bytes)
        if self.status == "fetched" and self.downloaded_bytes != self.total_bytes:
            size += f", {human_size(self.downloaded_bytes)} downloaded now"
        return (f"{self.task}: {verb} {self.repo}{at}{split}: {', '.join(counts)}, {size} -> {self.folder}"
                + "".join(f"; {n}" for n in self.notes))


# -- the Hub's errors, told -------------------------------------------------------------------------


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _response(e: BaseException) -> Any:
    for x in _chain(e):
        response = getattr(x, "response", None)
        if response is not None and getattr(response, "status_code", None) is not None:
            return response
    return None


def _status(e: BaseException) -> int | None:
    response = _response(e)
    return None if response is None else int(response.status_code)


def _retry_after(e: BaseException) -> float | None:
    """Seconds the Hub asked to wait (``Retry-After: N``, or the ``RateLimit`` header's ``t=``)."""
    response = _response(e)
    if response is None:
        return None
    headers = response.headers
    value = (headers.get("Retry-After") or "").strip()
    if value.isdigit():
        return float(value)
    match = re.search(r"\bt\s*=\s*(\d+)", headers.get("RateLimit") or "")
    return float(match.group(1)) if match else None


def _unreachable(e: BaseException) -> str | None:
    """Why the Hub cannot be reached at all (a name that does not resolve, a connection refused,
    no route to the host or network), or None: a machine without network, or a wrong endpoint.
    Trying again does not help, so it is never retried."""
    import errno
    import socket

    for x in _chain(e):
        if isinstance(x, socket.gaierror):
            return f"name resolution failed: {x.strerror or x}"
        if isinstance(x, ConnectionRefusedError):
            return "connection refused"
        if isinstance(x, OSError) and x.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN):
            return f"no route: {x.strerror or x}"
    return None


def unreachable_message(endpoint: str, why: str) -> str:
    """What to do when the Hub at ``endpoint`` cannot be reached."""
    return (f"evalkit could not reach the Hub at {endpoint} ({why}); check this machine's network, or set "
            f"HF_ENDPOINT to a Hub (mirror) it can reach; data already fetched is used without the network "
            f"under HF_HUB_OFFLINE=1; for a cluster without network, fetch on a machine with network and copy "
            f"the data root (docs/data.md, \"Offline clusters\")")


def _transient(e: BaseException, transport: bool) -> bool:
    """Worth another try: a retried status, or (``transport``) a connection that failed or dropped;
    never a Hub that cannot be reached at all (:func:`_unreachable`)."""
    import httpx2

    if _unreachable(e) is not None:
        return False
    status = _status(e)
    if status is not None:
        return status in RETRY_STATUSES
    return transport and any(isinstance(x, (httpx2.TransportError, ConnectionResetError, TimeoutError))
                             for x in _chain(e))


def _told(e: BaseException, spec: HubSpec, endpoint: str, filename: str | None) -> EvalkitError:
    """One huggingface_hub failure → the evalkit error a user can act on."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"{endpoint}/{'datasets/' if spec.repo_type == 'dataset' else ''}{spec.repo}"
    what = f"{spec.repo}/{filename}" if filename else spec.repo
    status = _status(e)
    gated = any(isinstance(x, GatedRepoError) for x in _chain(e))
    if gated or status in (401, 403) and filename:
        if status == 403:
            return HubAccessError(
                f"{what}: access denied (403): {spec.repo} is gated and the token in use (HF_TOKEN or "
                f"`hf auth login`) has not been granted access; accept its terms at {page} with that token's "
                f"account (or wait for the authors to approve the request), then run again")
        return HubAccessError(
            f"{what}: authentication required (401): {spec.repo} is gated; accept its terms at {page} while "
            f"logged in, create a read token at {endpoint}/settings/tokens and set HF_TOKEN to it "
            f"(or run `hf auth login`), then run again")
    if any(isinstance(x, RevisionNotFoundError) for x in _chain(e)):
        return HubNotFoundError(f"{spec.repo}: revision {spec.revision!r} not found on {endpoint} "
                                f"(fix fetch.revision in the task file)")
    if any(isinstance(x, RepositoryNotFoundError) for x in _chain(e)):
        return HubNotFoundError(f"{spec.repo}: repository not found on {endpoint} ({page}); it may have moved, "
                                f"or be private (then set HF_TOKEN to a token with access)")
    if any(isinstance(x, EntryNotFoundError) for x in _chain(e)) or status == 404:
        where = filename or spec.split or ""
        return HubNotFoundError(f"{spec.repo}: file {where!r} not found at revision {spec.revision!r} on "
                                f"{endpoint} ({page}); the mirror changed: pin fetch.revision to a commit that has it")
    if any(isinstance(x, OfflineModeIsEnabled) for x in _chain(e)):
        return FetchError(f"{what}: HF_HUB_OFFLINE is set, so nothing is downloaded; fetch on a machine with "
                          f"network and copy the data root here")
    why = _unreachable(e) if status is None else None
    if why is not None:
        return HubUnreachableError(f"{what}: {unreachable_message(endpoint, why)}")
    if status is not None:
        return FetchError(f"{what}: the Hub answered {status}: {one_line(e, 200)}; run the same command again "
                          f"to resume")
    import httpx2

    if any(isinstance(x, httpx2.RemoteProtocolError) for x in _chain(e)):
        return FetchError(f"{what}: the connection closed before the whole file came ({one_line(e, 200)}), "
                          f"after huggingface_hub's own retries: a cut-short download; nothing was put in place; "
                          f"run the same command again to resume (completed files are kept)")
    return FetchError(f"{what}: download failed: {type(e).__name__}: {one_line(e, 200)}; run the same command "
                      f"again to resume (completed files are kept)")


T = TypeVar("T")


def _with_retries(call: Callable[[], T], what: str, *, retries: int, say: Callable[[str], None],
                  transport: bool = True, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, tried again after a transient failure (429, 5xx; with ``transport``, a
    connection that failed or dropped) up to ``retries`` times: waiting what ``Retry-After`` asks,
    else 1, 2, 4 ... s (at most :data:`BACKOFF_MAX_S`, with a little jitter so that ranks do not
    retry in step)."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as e:
            if attempt == retries or not _transient(e, transport):
                raise
            asked = _retry_after(e)
            if asked is not None and asked > RETRY_AFTER_MAX_S:
                raise
            wait_s = asked if asked is not None else min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** attempt) * (
                1 + 0.25 * random.random())
            status = _status(e)
            why = f"the Hub answered {status}" if status else f"{type(e).__name__}"
            say(f"{what}: {why}; retry {attempt + 1}/{retries} in {wait_s:.1f} s"
                + (" (Retry-After)" if asked is not None else ""))
            sleep(wait_s)
    raise AssertionError("unreachable")


# -- hashing ------------------------------------------------------------------------------------------


def _hashes(path: Path) -> tuple[int, str, str]:
    """(size, sha256, git blob id) of a file, in one pass."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
            blob.update(chunk)
    return size, sha256.hexdigest(), blob.hexdigest()


def _check_file(local: Path, remote: RemoteFile, spec: HubSpec, commit: str) -> FetchedFile:
    """The file's size and hash against the listing; a mismatch removes it and raises."""
    size, sha256, blob = _hashes(local)
    problem = None
    if size != remote.size:
        problem = f"size {size:,} bytes, the Hub lists {remote.size:,}"
    elif remote.sha256 is not None and sha256 != remote.sha256:
        problem = f"sha256 {sha256[:16]}..., the Hub lists {remote.sha256[:16]}..."
    elif remote.sha256 is None and blob != remote.blob_id:
        problem = f"git blob id {blob[:16]}..., the Hub lists {remote.blob_id[:16]}..."
    if problem:
        target = local.resolve()  # a file in the Hugging Face cache is a link to its blob: both go
        local.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        raise FetchVerifyError(f"{spec.repo}@{commit[:10]}: {remote.path}: {problem}: a cut-short or corrupt "
                               f"download; it was removed and nothing was put in place; run again to fetch it anew")
    return FetchedFile(remote.path, size, sha256, None if remote.sha256 else blob)


# -- archives --------------------------------------------------------------------------------------------


def _unsafe_name(name: str) -> bool:
    """An archive member name that could land outside the folder it is unpacked into."""
    clean = name.replace("\\", "/")
    return clean.startswith("/") or bool(re.match(r"^[A-Za-z]:", clean)) or ".." in clean.split("/")


def _unpack(archive: Path, spec: HubSpec, staging: Path, root: Path, task: str, commit: str) -> list[FetchedFile]:
    """Unpack the archive's ``spec.member`` folder into ``staging`` (anew: the staging folder is
    emptied first, so a cut-off unpack never leaves a mix) and return its files, checked by their
    sizes; names that leave the folder (absolute, ``..``) and links are refused, naming them."""
    import stat
    import tarfile
    import zipfile

    at = f"{spec.repo}@{commit[:10]}: {spec.archive}"
    prefix = f"{spec.member}/" if spec.member else ""
    for old in staging.iterdir():
        if old.name != ".evalkit-staging.json":
            _clear(old)
    try:
        if spec.archive.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                infos = [i for i in z.infolist() if i.filename.startswith(prefix) or _unsafe_name(i.filename)]
                for i in infos:
                    if _unsafe_name(i.filename) or stat.S_ISLNK(i.external_attr >> 16):
                        why = "a link" if stat.S_ISLNK(i.external_attr >> 16) else "a name outside the folder"
                        raise FetchVerifyError(f"{task}: {at}: member {i.filename!r} is {why}; refused, nothing "
                                               f"put in place")
                infos = [i for i in infos if not i.is_dir() and len(i.filename) > len(prefix)]
                _check_space(root, sum(i.file_size for i in infos), task, len(infos))
                for i in infos:
                    out = staging / i.filename[len(prefix):]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(i) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        else:
            with tarfile.open(archive) as t:
                members = [m for m in t.getmembers() if m.name.startswith(prefix) or _unsafe_name(m.name)]
                for m in members:
                    if _unsafe_name(m.name) or m.issym() or m.islnk():
                        raise FetchVerifyError(f"{task}: {at}: member {m.name!r} is a link or a name outside the "
                                               f"folder; refused, nothing put in place")
                    m.name = m.name[len(prefix):]
                members = [m for m in members if m.name]
                _check_space(root, sum(m.size for m in members), task, len(members))
                t.extractall(staging, members=members, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise FetchVerifyError(f"{task}: {at}: not a readable archive ({one_line(e, 200)}); nothing put in place") from e
    files = []
    for p in sorted(staging.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != ".evalkit-staging.json":
            size, sha256, _ = _hashes(p)
            files.append(FetchedFile(p.relative_to(staging).as_posix(), size, sha256))
    if not files:
        raise FetchVerifyError(f"{task}: {at}: no files under {prefix or '/'} in the archive; nothing put in place")
    return files


# -- the data root --------------------------------------------------------------------------------------


def _writable(root: Path, task: str) -> Path:
    """The work folder under a data root that is known to take a write; else DataRootError."""
    work = root / WORK_DIR
    try:
        (work / "locks").mkdir(parents=True, exist_ok=True)
        probe = work / f"write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"evalkit")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise DataRootError(f"{root}: the data root is not writable ({reason}: {e.filename or work}); "
                            f"fetching {task} needs a writable folder: pass another --data-root "
                            f"(or set $EVALKIT_DATA)") from e
    return work


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _check_space(root: Path, need: int, task: str, n_files: int) -> None:
    free = _free_bytes(root)
    if free < need * SPACE_MARGIN:
        raise DataRootError(f"{root}: not enough free space to fetch {task}: {n_files} file(s) need "
                            f"{human_size(need)}, {human_size(free)} free; free some space or pass "
                            f"another --data-root")


# -- the fetch -------------------------------------------------------------------------------------------


def _offline() -> bool:
    return hub_offline()


def _endpoint(endpoint: str | None) -> str:
    if endpoint:
        return endpoint.rstrip("/")
    env = (os.environ.get("HF_ENDPOINT") or "").rstrip("/")
    if env:  # read now: huggingface_hub reads it once, at import
        return env
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _part_complete(root: Path, folder_entry: dict[str, Any] | None, part: str) -> bool:
    """Whether every file the manifest lists for ``part`` of the folder is there with its size."""
    if folder_entry is None:
        return False
    record = folder_entry.get("parts", {}).get(part)
    if record is None:
        return False
    folder = root / folder_entry["path"]
    for f in list(folder_entry.get("files", [])) + list(record.get("files", [])):
        try:
            if (folder / f["path"]).stat().st_size != f["size"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def _revision_matches(entry: dict[str, Any], spec: HubSpec) -> bool:
    if entry.get("repo") != spec.repo:
        return False
    if _COMMIT.match(spec.revision):
        return entry.get("commit") == spec.revision
    return entry.get("revision") == spec.revision


def is_fetched(spec: HubSpec | dict[str, Any], data_root: str | Path, *, task: str = "?") -> bool:
    """Whether the data the spec names is in place, complete, from the repo and revision it names
    (by the manifest and the files' sizes; no network, no writes)."""
    parsed = _as_spec(spec, task)
    if not isinstance(parsed, HubSpec):
        return False
    root = Path(data_root)
    entry = read_manifest(root)["folders"].get(parsed.path)
    return entry is not None and _revision_matches(entry, parsed) and _part_complete(root, entry, parsed.part)


def _present_report(root: Path, spec: HubSpec, task: str, entry: dict[str, Any], expected: int | None,
                    classes: int | None) -> FetchReport:
    record = entry["parts"][spec.part]
    report = FetchReport(task, "present", root / spec.path, spec.repo, spec.revision, entry.get("commit"),
                         spec.split if spec.part else None,
                         [FetchedFile(f["path"], f["size"], f.get("sha256", ""), f.get("git_blob"))
                          for f in list(entry.get("files", [])) + list(record.get("files", []))],
                         record.get("shards"), record.get("samples"), record.get("classes"),
                         source_url=entry.get("source_url", ""))
    _check_counts(report, spec, expected, classes, where=f"{root / MANIFEST_NAME} says")
    return report


def _check_counts(report: FetchReport, spec: HubSpec, expected: int | None, classes: int | None, where: str) -> None:
    at = f"{spec.repo}@{(report.commit or spec.revision)[:10]}"
    if expected is not None and report.samples is not None and report.samples != expected:
        raise FetchVerifyError(f"{report.task}: {at} {spec.split or ''}: {where} {report.samples:,} samples, the task "
                               f"expects {expected:,}; the mirror is not the set the task describes (nothing put in "
                               f"place)")
    if expected is not None and report.samples is None:
        report.notes.append("sample count not checked (no reader for this layout)")
    if classes is not None and report.classes is not None and report.classes != classes:
        raise FetchVerifyError(f"{report.task}: {at}: {where} {report.classes:,} classes (classnames.txt), the task "
                               f"expects {classes:,} (nothing put in place)")


class _ByteProgress:
    """huggingface_hub's tqdm_class, fed into one evalkit progress bar for all files (thread-safe)."""

    bar: Any = None
    lock = threading.Lock()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _ByteProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, n: int | float | None = 1) -> None:
        if self.bar is not None and n:
            with self.lock:
                self.bar.update(int(n))

    def __getattr__(self, name: str) -> Callable[..., None]:  # close, refresh, set_postfix_str, ...
        return lambda *a, **k: None


def _listing(api: Any, spec: HubSpec, commit: str, folder: str, recursive: bool, endpoint: str) -> dict[str, RemoteFile]:
    from huggingface_hub.hf_api import RepoFile

    def ask() -> dict[str, RemoteFile]:
        out = {}
        for item in api.list_repo_tree(spec.repo, path_in_repo=folder or None, recursive=recursive,
                                       revision=commit, repo_type=spec.repo_type):
            if isinstance(item, RepoFile):
                lfs = item.lfs
                out[item.path] = RemoteFile(item.path, int(lfs.size if lfs else item.size), item.blob_id,
                                            lfs.sha256 if lfs else None)
        return out

    try:  # huggingface_hub retries the listing itself (429, 5xx, dropped connections)
        return ask()
    except Exception as e:
        raise _told(e, spec, endpoint, folder or None) from e


def _select(spec: HubSpec, listed: dict[str, RemoteFile], task: str) -> tuple[list[RemoteFile], RemoteFile | None]:
    """The files to fetch (metadata first, then shards in order) and the nshards.txt entry, if any."""
    chosen: dict[str, RemoteFile] = {}
    nshards = None
    if spec.layout == "wds":
        for name in WDS_METADATA:
            if name in listed:
                chosen[name] = listed[name]
        prefix = f"{spec.split}/"
        nshards = listed.get(f"{prefix}nshards.txt")
        tars = [f for p, f in listed.items() if p.startswith(prefix) and "/" not in p[len(prefix):]
                and p.endswith(".tar")]
        if not tars:
            raise FetchVerifyError(f"{task}: {spec.repo}: no .tar shards under {spec.split}/ in the listing "
                                   f"(expected {WDS_LAYOUT})")
        if nshards is not None:
            chosen[nshards.path] = nshards
        for f in sorted(tars, key=lambda f: (len(f.path), f.path)):
            chosen[f.path] = f
    for name in spec.files:
        if name not in listed:
            raise HubNotFoundError(f"{spec.repo}: file {name!r} (fetch.files of task {task!r}) is not in the repo "
                                   f"at revision {spec.revision!r}")
        chosen.setdefault(name, listed[name])
    for pattern in spec.patterns:
        for p in sorted(listed):
            if fnmatch.fnmatch(p, pattern):
                chosen.setdefault(p, listed[p])
    return list(chosen.values()), nshards


def _folders_to_list(spec: HubSpec) -> list[tuple[str, bool]]:
    """(folder, recursive) listings the selection needs."""
    need: dict[str, bool] = {"": False}
    if spec.layout == "wds" and spec.split:
        need[spec.split] = False
    for name in spec.files:
        need.setdefault(name.rpartition("/")[0], False)
    if spec.patterns:
        need[""] = True
    return sorted(need.items())


def _check_shards(spec: HubSpec, chosen: list[RemoteFile], staging: Path, commit: str) -> int:
    """Shard count: nshards.txt (when the mirror has one) against the shards listed."""
    prefix = f"{spec.split}/"
    tars = {f.path for f in chosen if f.path.startswith(prefix) and f.path.endswith(".tar")}
    nfile = staging / spec.split / "nshards.txt" if spec.split else None
    at = f"{spec.repo}@{commit[:10]}"
    if nfile is None or not nfile.is_file():
        return len(tars)
    try:
        n = int(nfile.read_text().strip())
    except ValueError as e:
        raise FetchVerifyError(f"{at}: {spec.split}/nshards.txt is not an integer") from e
    want = {f"{prefix}{i}.tar" for i in range(n)}
    missing = sorted(want - tars, key=lambda p: (len(p), p))
    extra = sorted(tars - want, key=lambda p: (len(p), p))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(Path(p).name for p in missing[:5])}")
        if extra:
            parts.append(f"not counted {', '.join(Path(p).name for p in extra[:5])}")
        raise FetchVerifyError(f"{at}: {spec.split}/nshards.txt says {n} shards but the repo lists {len(tars)} "
                               f"({'; '.join(parts)}); nothing put in place")
    return n


def _compare_lists(kind: str, file: str, ours: list[str] | None, theirs: list[str] | None) -> str | None:
    """Which entries of the mirror's list differ from the task's (the task's list wins)."""
    if ours is None or theirs is None or ours == theirs:
        return None
    if len(ours) != len(theirs):
        only_ours = [x for x in ours if x not in theirs]
        only_theirs = [x for x in theirs if x not in ours]
        detail = []
        if only_theirs:
            detail.append(f"only in the mirror: {', '.join(repr(x) for x in only_theirs[:3])}")
        if only_ours:
            detail.append(f"only in the task: {', '.join(repr(x) for x in only_ours[:3])}")
        return (f"the mirror's {file} has {len(theirs)} {kind}, the task {len(ours)}"
                + (f" ({'; '.join(detail)})" if detail else "") + "; the task's list is used")
    diffs = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    shown = ", ".join(f"#{i} {theirs[i]!r} (task: {ours[i]!r})" for i in diffs[:3])
    more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
    return f"the mirror's {file} differs from the task's {kind} at {len(diffs)} entries: {shown}{more}; the task's list is used"


def _read_lines(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _count(spec: HubSpec, staging: Path, task: str) -> int | None:
    from evalkit.data.check import count_samples
    from evalkit.data.sources import load_source

    if spec.layout == "wds":
        reader: dict[str, Any] = {"type": "wds", "split": spec.split}
    elif spec.read_as is not None:
        reader = dict(spec.read_as)
    else:
        return None
    try:
        data = load_source({**reader, "path": str(staging)}, None, task)
        return count_samples(data)
    except DataError as e:
        raise FetchVerifyError(f"{task}: {spec.repo}: the fetched data does not read back: {one_line(e)}; "
                               f"nothing put in place") from e


@contextlib.contextmanager
def _folder_lock(work: Path, spec: HubSpec, task: str, say: Callable[[str], None]) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock_path = work / "locks" / (spec.path.replace("/", "__") + ".lock")
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        say(f"{task}: waiting for another process fetching {spec.path} (lock {lock_path})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _clear(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fetch_source(spec: HubSpec | ManualSpec | dict[str, Any], data_root: str | Path, *, task: str,
                 expected: int | None = None, classes: int | None = None, classnames: list[str] | None = None,
                 templates: list[str] | None = None, max_workers: int = 4, progress: bool = True,
                 endpoint: str | None = None, token: str | bool | None = None, hub_cache: str | Path | None = None,
                 retries: int = 5, say: Callable[[str], None] | None = None) -> FetchReport:
    """Fetch the data ``spec`` names (a task file's ``fetch:`` block, or its parsed form) into
    ``<data_root>/<spec.path>`` and verify it; see the module's docstring for how.

    ``task``: the task's name (messages, the manifest); ``expected``: its sample count (the task
    file's ``expected_size``), ``classes``: its class count, both checked (None: not checked);
    ``classnames`` / ``templates``: the task's own lists, compared with the mirror's (a
    difference is a note in the report, the task's lists win); ``max_workers``: files downloaded
    at once; ``progress``: a byte progress bar and a line per step on stderr; ``endpoint``: the
    Hub (default ``$HF_ENDPOINT`` as set now, else huggingface_hub's); ``token``: as
    huggingface_hub takes it (default: ``HF_TOKEN`` or the saved login); ``hub_cache``: the
    shared Hugging Face cache a file is copied from when it is there (default: the one the
    environment names); ``retries``: per request, after huggingface_hub's own; ``say``: where the
    step lines go (default: stderr when ``progress``).

    Returns a :class:`FetchReport`. Raises :class:`ManualFetchRequired` for a set not on the Hub,
    and the errors listed in the module's docstring."""
    t0 = time.monotonic()
    parsed = _as_spec(spec, task)
    root = Path(data_root).expanduser()
    if isinstance(parsed, ManualSpec):
        info = manual_instructions(parsed, root, task=task)
        raise ManualFetchRequired(info.text(), info)
    spec = parsed
    lock = threading.Lock()

    def tell(text: str) -> None:
        if progress:
            with lock:
                print(text, file=sys.stderr, flush=True)

    say = say or tell
    folder = root / spec.path

    def present() -> FetchReport | None:
        entry = read_manifest(root)["folders"].get(spec.path)
        if entry is not None and _revision_matches(entry, spec) and _part_complete(root, entry, spec.part):
            report = _present_report(root, spec, task, entry, expected, classes)
            report.seconds = time.monotonic() - t0
            return report
        if entry is None and folder.exists():  # not evalkit's: never touched (data check checks it)
            return FetchReport(task, "unmanaged", folder, spec.repo, spec.revision, split=spec.split or None)
        return None

    if root.is_dir():
        found = present()
        if found is not None:
            return found
    if _offline():
        raise FetchError(f"HF_HUB_OFFLINE is set and its data ({spec.repo}, {spec.split or 'all'}) is not in "
                         f"{folder}; run `evalkit data get --tasks {task}` on a machine with network and copy the "
                         f"data root here")
    work = _writable(root, task)  # before any request
    with _folder_lock(work, spec, task, say):
        found = present()  # another process may have fetched it while this one waited
        if found is not None:
            if found.status == "present":
                found.notes.append("fetched by another process meanwhile")
            return found
        return _fetch_locked(spec, root, work, task, expected=expected, classes=classes, classnames=classnames,
                             templates=templates, max_workers=max_workers, progress=progress,
                             endpoint=_endpoint(endpoint), token=token,
                             hub_cache=Path(hub_cache) if hub_cache else hub_cache_dir(), retries=retries,
                             say=say, t0=t0)


def _fetch_locked(spec: HubSpec, root: Path, work: Path, task: str, *, expected: int | None, classes: int | None,
                  classnames: list[str] | None, templates: list[str] | None, max_workers: int, progress: bool,
                  endpoint: str, token: str | bool | None, hub_cache: Path, retries: int,
                  say: Callable[[str], None], t0: float) -> FetchReport:
    from huggingface_hub import HfApi, hf_hub_download

    from evalkit.progress import progress_bar

    api = HfApi(endpoint=endpoint, token=token)
    folder = root / spec.path
    for old in (work / "trash").glob("*") if (work / "trash").is_dir() else []:
        _clear(old)  # left by a swap that was cut off

    # 1. the commit the revision names now
    if _COMMIT.match(spec.revision):
        commit = spec.revision
    else:
        def resolve() -> str:
            info = api.repo_info(spec.repo, repo_type=spec.repo_type, revision=spec.revision)
            return str(info.sha)

        try:
            commit = _with_retries(resolve, f"{spec.repo}@{spec.revision}", retries=retries, say=say)
        except Exception as e:
            raise _told(e, spec, endpoint, None) from e

    # 2. the listing, and what to fetch from it
    listed: dict[str, RemoteFile] = {}
    for sub, recursive in _folders_to_list(spec):
        listed.update(_listing(api, spec, commit, sub, recursive, endpoint))
    chosen, _ = _select(spec, listed, task)

    # 3. staging: a previous attempt's files are kept if it was for the same commit
    staging = work / "staging" / spec.path
    stamp = staging / ".evalkit-staging.json"
    if staging.exists():
        try:
            was = json.loads(stamp.read_text()).get("commit")
        except (OSError, ValueError):
            was = None
        if was != commit:
            _clear(staging)
    staging.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"repo": spec.repo, "commit": commit}))
    for orphan in (staging / ".cache").rglob("*.incomplete") if (staging / ".cache").is_dir() else []:
        orphan.unlink(missing_ok=True)  # a killed download's partial file: huggingface_hub never reuses it

    def staged_ok(f: RemoteFile) -> bool:
        if spec.layout == "archive":  # the archive lives in the Hugging Face cache, shared by the tasks it holds
            from huggingface_hub import try_to_load_from_cache

            got = try_to_load_from_cache(spec.repo, f.path, cache_dir=str(hub_cache), revision=commit,
                                         repo_type=spec.repo_type)
            return isinstance(got, str) and Path(got).is_file() and Path(got).stat().st_size == f.size
        p = staging / f.path
        return p.is_file() and p.stat().st_size == f.size

    todo = [f for f in chosen if not staged_ok(f)]
    need = sum(f.size for f in todo)
    _check_space(root, need, task, len(todo))  # 4. before any download

    # 5. download (bounded), each file checked as it lands
    source_url = f"{endpoint}/{'datasets/' if spec.repo_type == 'dataset' else ''}{spec.repo}/tree/{commit}"
    say(f"{task}: fetching {spec.repo}@{commit[:10]} {spec.split or ''} ({len(chosen)} files, "
        f"{human_size(sum(f.size for f in chosen))}; {human_size(need)} to download) into {folder}")
    bar = progress_bar(need or None, f"{task}: downloading", unit="B", enabled=progress and need > 0)
    tqdm_class = type("_TaskBytes", (_ByteProgress,), {"bar": bar, "lock": threading.Lock()})
    results: dict[str, FetchedFile] = {}
    archives: dict[str, Path] = {}
    stop = threading.Event()

    def one(f: RemoteFile) -> None:
        if stop.is_set():
            return
        was_there = staged_ok(f)

        def download() -> str:
            into = {} if spec.layout == "archive" else {"local_dir": str(staging)}
            return hf_hub_download(spec.repo, f.path, repo_type=spec.repo_type, revision=commit,
                                   cache_dir=str(hub_cache), endpoint=endpoint, token=token,
                                   tqdm_class=tqdm_class, **into)

        try:
            # huggingface_hub resumes a dropped connection itself (5 tries) and retries a 429 on the
            # download; not a 5xx there, nor a 429 on the metadata request (retried at once)
            local = _with_retries(download, f"{spec.repo}/{f.path}", retries=retries, say=say, transport=False)
        except Exception as e:
            raise _told(e, spec, endpoint, f.path) from e
        checked = _check_file(Path(local), f, spec, commit)
        checked.downloaded = not was_there
        results[f.path] = checked
        if spec.layout == "archive":
            archives[f.path] = Path(local)

    with quiet_hub():
        with ThreadPoolExecutor(max_workers=max(1, int(max_workers)), thread_name_prefix="evalkit-fetch") as pool:
            futures = [pool.submit(one, f) for f in chosen]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [fu for fu in futures if fu.done() and fu.exception() is not None]
            if failed:
                stop.set()
                for fu in futures:
                    fu.cancel()
                wait(futures)
                bar.close()
                raise failed[0].exception()  # type: ignore[misc]
    bar.close()

    # 6. counts
    report = FetchReport(task, "fetched", folder, spec.repo, spec.revision, commit, spec.split if spec.part else None,
                         [results[f.path] for f in chosen], source_url=source_url)
    if spec.layout == "archive":  # the member folder, unpacked into the staging folder: the files placed
        report.archive = {**results[spec.archive].as_json(), "member": spec.member}
        report.files = _unpack(archives[spec.archive], spec, staging, root, task, commit)
    if spec.layout == "wds":
        report.shards = _check_shards(spec, chosen, staging, commit)
    report.samples = _count(spec, staging, task)
    names = _read_lines(staging / "classnames.txt")
    if names is not None:
        report.classes = len(names)
    elif classes is not None and spec.layout == "wds":
        raise FetchVerifyError(f"{task}: {spec.repo}@{commit[:10]}: the mirror has no classnames.txt, the task "
                               f"expects {classes} classes; nothing put in place")
    _check_counts(report, spec, expected, classes, where="the fetched data has")
    for note in (_compare_lists("class names", "classnames.txt", classnames, names),
                 _compare_lists("templates", "zeroshot_classification_templates.txt", templates,
                                _read_lines(staging / "zeroshot_classification_templates.txt"))):
        if note:
            report.notes.append(note)

    # 7. into place, manifest first (a crash in between leaves files the manifest does not vouch for
    # missing, which the next call fetches; never a folder the manifest vouches for half-filled)
    _place(spec, root, work, staging, report, task)
    report.seconds = time.monotonic() - t0
    return report


def _place(spec: HubSpec, root: Path, work: Path, staging: Path, report: FetchReport, task: str) -> None:
    folder = root / spec.path
    part = spec.part
    metadata = [f for f in report.files if not (part and f.path.startswith(f"{part}/"))]
    own = [f for f in report.files if part and f.path.startswith(f"{part}/")]
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    record = {"tasks": [task], "files": [f.as_json() for f in own], "shards": report.shards,
              "samples": report.samples, "classes": report.classes, "bytes": sum(f.size for f in own),
              "fetched_at": now, **({"notes": list(report.notes)} if report.notes else {})}
    entries = read_manifest(root)["folders"]
    old = entries.get(spec.path)
    same_commit = old is not None and old.get("commit") == report.commit and old.get("repo") == spec.repo
    trash = work / "trash"
    trash.mkdir(parents=True, exist_ok=True)

    def to_trash(p: Path) -> None:
        if p.exists() or p.is_symlink():
            os.replace(p, trash / f"{p.name}.{uuid.uuid4().hex[:8]}")

    folder_fields = {"path": spec.path, "repo": spec.repo, "repo_type": spec.repo_type, "revision": spec.revision,
                     "commit": report.commit, "source_url": report.source_url,
                     "files": [f.as_json() for f in metadata],
                     **({"archive": report.archive} if report.archive else {})}
    if part and same_commit and folder.is_dir():
        # another split of the same commit is in place: add (or replace) this split only
        def update(data: dict[str, Any]) -> None:
            entry = data["folders"].setdefault(spec.path, {})
            tasks = set(entry.get("parts", {}).get(part, {}).get("tasks", []))
            entry.update(folder_fields)
            entry.setdefault("parts", {})[part] = {**record, "tasks": sorted(tasks | {task})}

        to_trash(folder / part)
        _write_manifest(root, update)
        os.replace(staging / part, folder / part)
        for f in metadata:  # the same commit: the same bytes; replaced so that every file is the checked one
            (folder / f.path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / f.path, folder / f.path)
    else:
        # a new folder, or another commit: the whole folder at once
        def update(data: dict[str, Any]) -> None:
            data["folders"][spec.path] = {**folder_fields, "parts": {part: record}}

        for extra in (".cache", ".evalkit-staging.json"):
            _clear(staging / extra)
        folder.parent.mkdir(parents=True, exist_ok=True)
        to_trash(folder)
        _write_manifest(root, update)
        os.replace(staging, folder)
    _clear(staging)
    for old_file in trash.glob("*"):
        _clear(old_file)
