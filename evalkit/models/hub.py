"""Released weights without ``--weights``: find a file of a Hugging Face Hub repository in the
local Hugging Face cache, else download it into that cache, else fail at once with one line that
names the repository, the file, the cache folder and the ``--weights`` way out.

Offline (``HF_HUB_OFFLINE=1``) the Hub is never contacted. Online, one metadata request with a
short timeout (``HF_HUB_ETAG_TIMEOUT``, default 5 s, no retries) decides whether the Hub is
reachable before the download starts, so an unreachable Hub costs seconds, not a minute of
back-off retries and their warnings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError, one_line


class ModelLoadError(EvalkitError, RuntimeError):
    """A model that cannot be built or whose weights cannot be read or fetched."""


@dataclass(frozen=True)
class HubFile:
    """One file of a model repository on the Hugging Face Hub."""

    repo_id: str
    filename: str
    size: int | None = None  # bytes, as published; only for messages (the Hub's own figure wins)

    def __str__(self) -> str:
        return f"{self.repo_id}/{self.filename}"


@dataclass(frozen=True)
class Located:
    """A hub file found on this machine: its local path and where it came from."""

    path: Path
    file: HubFile
    revision: str | None  # the commit the cached snapshot belongs to, when the path says it
    downloaded: bool

    @property
    def uri(self) -> str:
        """``hf://REPO@COMMIT/FILE``: provenance that holds on any machine (HfFileSystem syntax)."""
        rev = f"@{self.revision}" if self.revision else ""
        return f"hf://{self.file.repo_id}{rev}/{self.file.filename}"


DEFAULT_TIMEOUT_S = 5.0
_NOISY_LOGGERS = ("huggingface_hub", "urllib3", "httpx", "httpx2", "httpcore", "filelock")


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_cache_dir() -> Path:
    """The hub cache folder the environment names now (``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``,
    ``HF_HOME``/hub, ``XDG_CACHE_HOME``/huggingface/hub, ``~/.cache/huggingface/hub``).

    Read at call time: huggingface_hub reads these once, at import, so a cache named after the
    import (a test, a notebook) would otherwise be ignored."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as set now, or as huggingface_hub read it."""
    if _is_true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def _endpoint() -> str | None:
    # HF_ENDPOINT (a mirror) as set now; None: huggingface_hub's own default.
    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def _timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or DEFAULT_TIMEOUT_S)
    except ValueError:
        return DEFAULT_TIMEOUT_S


def human_size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def find_cached(file: HubFile, cache_dir: Path | None = None) -> Located | None:
    """The file in the hub cache (``models--ORG--NAME/snapshots/<commit of refs/main>/FILE``), or None."""
    from huggingface_hub import try_to_load_from_cache

    cache = cache_dir or hub_cache_dir()
    found = try_to_load_from_cache(file.repo_id, file.filename, cache_dir=str(cache))
    if not isinstance(found, str):  # None, or the "known not to exist" marker
        return None
    return Located(Path(found), file, _revision(Path(found), file), downloaded=False)


def _revision(path: Path, file: HubFile) -> str | None:
    # <cache>/models--ORG--NAME/snapshots/<commit>/<filename>
    parts = path.parts
    depth = len(Path(file.filename).parts)
    if len(parts) > depth + 1 and parts[-depth - 2] == "snapshots":
        return parts[-depth - 1]
    return None


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """Hold back huggingface_hub's and the HTTP stack's warnings (retry notices, offline hints)
    unless debug logging is on (``evalkit -v``): our own one-line error says what matters (the
    weights' download here, the data's in :mod:`evalkit.data.fetch`)."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    try:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


class _Unreachable(Exception):
    pass


class _Missing(Exception):
    pass


def _remote_size(file: HubFile, timeout: float) -> int | None:
    """The file's size on the Hub, from one HEAD request with ``timeout`` and no retries.

    Raises _Missing when the Hub says the file does not exist, ModelLoadError for a repository
    that is missing or gated, and _Unreachable for anything that means "no answer"."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    answer: dict[str, object] = {}

    def ask() -> None:
        try:
            url = hf_hub_url(file.repo_id, file.filename, endpoint=_endpoint())
            answer["meta"] = get_hf_file_metadata(url, timeout=timeout)
        except BaseException as e:  # handed to the caller's thread
            answer["error"] = e

    # A thread with a hard deadline: a resolver that hangs is not bound by the socket timeout.
    probe = threading.Thread(target=ask, name="evalkit-hub-probe", daemon=True)
    with quiet_hub():
        probe.start()
        probe.join(timeout + 2)
    if probe.is_alive():
        raise _Unreachable(f"no answer within {timeout + 2:.0f} s")
    error = answer.get("error")
    if error is None:
        return getattr(answer["meta"], "size", None)
    if isinstance(error, (GatedRepoError, RepositoryNotFoundError)):
        raise ModelLoadError(
            f"{file.repo_id}: repository not found on the Hub, or it needs a login (HF_TOKEN): "
            f"{one_line(error, 200)}"
        ) from error
    if isinstance(error, RevisionNotFoundError):
        raise ModelLoadError(f"{file.repo_id}: revision not found on the Hub: {one_line(error, 200)}") from error
    if isinstance(error, EntryNotFoundError):
        raise _Missing(str(file)) from error
    if isinstance(error, OfflineModeIsEnabled):
        raise _Unreachable("huggingface_hub is in offline mode") from error
    if isinstance(error, HfHubHTTPError):
        raise _Unreachable(f"the Hub answered: {one_line(error, 200)}") from error
    if isinstance(error, Exception):
        raise _Unreachable(f"{type(error).__name__}: {one_line(error, 200)}") from error
    raise error  # KeyboardInterrupt and friends


def _free_bytes(folder: Path) -> int | None:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def _partial_bytes(cache: Path, file: HubFile) -> int:
    # huggingface_hub resumes from blobs/<etag>.incomplete; those bytes need no new room.
    blobs = cache / ("models--" + file.repo_id.replace("/", "--")) / "blobs"
    try:
        return sum(p.stat().st_size for p in blobs.glob("*.incomplete"))
    except OSError:
        return 0


def _describe(files: Sequence[HubFile]) -> str:
    first = files[0]
    more = "".join(f" (or {f.filename})" for f in files[1:])
    size = f" ({human_size(first.size)})" if first.size else ""
    return f"{first}{size}{more}"


def locate(
    files: Sequence[HubFile],
    *,
    name: str,
    cache_dir: Path | None = None,
) -> Located:
    """The first of ``files`` (alternatives, best first) in the hub cache; else the first one the
    Hub has, downloaded into the cache (resumable, with huggingface_hub's progress bar) after one
    line on stderr naming it, its size and the cache; else ModelLoadError, in one line.

    ``name`` (the model) starts every message. ``HF_HUB_OFFLINE=1`` is how a user forbids the
    download (huggingface_hub's own switch)."""
    if not files:
        raise ValueError("locate() needs at least one HubFile")
    cache = cache_dir or hub_cache_dir()
    for file in files:
        found = find_cached(file, cache)
        if found is not None:
            return found

    def not_here(why: str) -> ModelLoadError:
        return ModelLoadError(
            f"{name}: could not fetch weights {_describe(files)}: not in the Hugging Face cache {cache} and {why}; "
            f"download the file elsewhere and pass --weights /path/to/{files[0].filename} "
            f"(or point HF_HUB_CACHE at a cache that holds it)"
        )

    if hub_offline():
        raise not_here("HF_HUB_OFFLINE is set, so nothing is downloaded")
    timeout = _timeout()
    for file in files:
        try:
            remote = _remote_size(file, timeout)
        except _Missing:
            continue
        except _Unreachable as e:
            raise not_here(f"the Hub cannot be reached ({e})") from e
        return _download(file, remote or file.size, name=name, cache=cache, timeout=timeout)
    raise not_here("the Hub has none of these files")


def _download(file: HubFile, size: int | None, *, name: str, cache: Path, timeout: float) -> Located:
    from huggingface_hub import hf_hub_download

    if size is not None:
        free = _free_bytes(cache)
        need = size - _partial_bytes(cache, file)
        if free is not None and free < need:
            raise ModelLoadError(
                f"{name}: {file} needs {human_size(need)} but {cache} has {human_size(free)} free; "
                f"point HF_HUB_CACHE at a larger disk, or download the file elsewhere and pass --weights PATH"
            )
    print(f"{name}: downloading {file} ({human_size(size)}) into {cache}", file=sys.stderr, flush=True)
    try:
        path = hf_hub_download(file.repo_id, file.filename, cache_dir=str(cache), etag_timeout=timeout,
                               endpoint=_endpoint())
    except Exception as e:
        raise ModelLoadError(
            f"{name}: downloading {file} into {cache} failed: {one_line(e, 200)}; run again to resume, "
            f"or pass --weights /path/to/{file.filename}"
        ) from e
    return Located(Path(path), file, _revision(Path(path), file), downloaded=True)
