"""Result records: one JSON per (model, variant, task), written atomically.

A result's *variant* says what produced it besides the model name: the precision, and the weights
when they are not the card's own (``fp32``, ``int8``, ``fp16+mine.pt-3f2a1b``). Results of the
default variant (fp32, the card's weights) are ``runs/<model>/<task>.json``; any other variant
has a folder of its own, ``runs/<model>/<variant>/<task>.json``, so an int8 run never replaces
the fp16 result of the same model and task, nor a run with other weights.

The top level carries clip_benchmark's keys (``dataset``, ``model``, ``pretrained``, ``task``,
``metrics``, ``language``) so ``clip_benchmark build`` reads our files; everything evalkit adds
lives under ``evalkit`` (provenance: version, git commit, fingerprint, precision, transform,
counts, skipped samples, timing).

Several processes may write into one results folder at once (two jobs, two models, the same
model twice): every file is written to a temporary file of its own (a unique name per writer),
flushed to disk and renamed over the target, so a reader sees the old file or the new one, never
half of one, and two writers of one file leave one of the two complete. The run log
(``<output_dir>/runs.jsonl``, :func:`append_run_log`) gets one line per finished task, appended
under an exclusive lock in one write, so concurrent runs never interleave or lose a line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError, OutputError

SCHEMA_VERSION = 1
DEFAULT_VARIANT = "fp32"  # the default precision (evalkit.models.DEFAULT_PRECISION) with the card's weights


class ResultFileError(EvalkitError, ValueError):
    """A result file that cannot be read (not JSON, or missing a key); the message names the file."""


@dataclass
class TaskResult:
    dataset: str
    model: str
    pretrained: str
    task: str
    metrics: dict[str, float]
    language: str = "en"
    evalkit: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["evalkit"] = {"schema_version": SCHEMA_VERSION, **self.evalkit}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<result>") -> TaskResult:
        missing = [k for k in ("dataset", "model", "task", "metrics") if k not in d]
        if missing:
            raise ResultFileError(f"{source}: result is missing key(s) {missing}")
        return cls(
            dataset=d["dataset"],
            model=d["model"],
            pretrained=d.get("pretrained", ""),
            task=d["task"],
            metrics=dict(d["metrics"]),
            language=d.get("language", "en"),
            evalkit=dict(d.get("evalkit", {})),
        )


def safe_name(name: str) -> str:
    """File-system-safe form of a model or task name (``open_clip:ViT-B-32`` -> ``open_clip_ViT-B-32``)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "unnamed"


def run_variant(precision: str, weights: str | None = None, *, limit: int | None = None) -> str:
    """The variant label of a run: ``precision``, plus ``+<weights>`` when weights other than the
    card's own were given: a file or folder as its name and a short hash of its absolute path
    (two ``model.pt`` in different folders differ), a pretrained tag or ``random`` as it is; plus
    ``+limit<N>`` for a run of only the first N samples (``--limit``), so a partial result never
    takes a full one's place."""
    variant = precision
    if weights:
        path = Path(weights).expanduser()
        if path.exists():
            label = f"{path.name}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:6]}"
        else:
            label = weights
        variant = f"{precision}+{safe_name(label)}"
    return variant if limit is None else f"{variant}+limit{limit}"


def result_limit(result: TaskResult) -> int | None:
    """N when ``result`` came from a ``--limit N`` run (a subset of its task), else None."""
    limit = result.evalkit.get("limit")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


_LIMIT_IN_VARIANT = re.compile(r"(^|\+)limit\d+($|\+)")


def result_variant(result: TaskResult) -> str:
    """The variant of a result (results written before variants existed: their precision), saying
    ``+limit<N>`` for a ``--limit N`` result even where the variant it recorded does not (results
    written before limited runs had a variant of their own)."""
    ev = result.evalkit
    variant = str(ev.get("variant") or ev.get("precision") or DEFAULT_VARIANT)
    limit = result_limit(result)
    if limit is not None and not _LIMIT_IN_VARIANT.search(variant):
        variant = run_variant(variant, limit=limit)
    return variant


def result_name(task: str, frames: str | None = None, task_frames: str | None = None) -> str:
    """The file name (without suffix) of a task's result: the task, plus ``@<sampler>`` when a
    video task ran with another frame sampler than its own (``kinetics400@uniform-8``, written
    as ``kinetics400_uniform-8.json``), so the 1-, 8- and 16-frame results of one task sit side
    by side."""
    return task if frames is None or frames == task_frames else f"{task}@{frames}"


def result_path(output_dir: str | Path, model: str, task: str, suffix: str = ".json",
                variant: str = DEFAULT_VARIANT) -> Path:
    folder = Path(output_dir) / "runs" / safe_name(model)
    if variant != DEFAULT_VARIANT:
        folder = folder / safe_name(variant)
    return folder / f"{safe_name(task)}{suffix}"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file.

    The temporary name is unique to this call (``mkstemp``), so concurrent writers of one path
    never share one; the data is fsynced before the rename and the folder after it, so a crash
    leaves the old file or the new one, not an empty or cut-off one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; the file gets the mode any new file of the user's would get
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read without changing it where the kernel tells it (Linux 4.7+:
    /proc/self/status); elsewhere set and put straight back under a lock, so two threads writing
    at once cannot leave the process with the wrong umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(mask)
    return mask


#: what a results folder must have free before a run starts (results and logs are small)
MIN_FREE_BYTES = 1 << 20


def check_output_dir(output_dir: str | Path) -> Path:
    """Make sure ``output_dir`` exists (or can be created), can be written to and has room, before
    any weights are read: a run's results must not be lost to a typo or a full disk at its end.
    Raises :class:`~evalkit.errors.OutputError` (an OSError) naming the folder."""
    folder = Path(output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"results folder {folder}: exists and is not a folder (--output-dir)") from None
    except OSError as e:
        raise OutputError(f"results folder {folder}: cannot create it: {e.strerror or e} (--output-dir)") from None
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".evalkit-write-check.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"results folder {folder}: cannot write to it: {e.strerror or e} (--output-dir)") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OutputError(f"results folder {folder}: cannot write to it: {e.strerror or e} (--output-dir)") from None
    finally:
        Path(probe).unlink(missing_ok=True)
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise OutputError(f"results folder {folder}: its disk is full ({free} bytes free) (--output-dir)")
    return folder


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def path_of(result: TaskResult, output_dir: str | Path) -> Path:
    """Where ``result`` is written: its model, variant and name (:func:`result_name`)."""
    name = str(result.evalkit.get("result_name") or result.dataset)
    return result_path(output_dir, result.model, name, variant=result_variant(result))


def write_result(result: TaskResult, output_dir: str | Path) -> Path:
    path = path_of(result, output_dir)
    atomic_write_text(path, json.dumps(result.to_dict(), indent=2, sort_keys=False) + "\n")
    return path


def read_result(path: str | Path) -> TaskResult:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultFileError(f"{path}: cannot read result: {e}") from e
    return TaskResult.from_dict(d, source=str(path))


#: JSON files written beside a result that are not results (``<task>.envelope.json``: evalkit envelope)
SIDECAR_JSON_SUFFIXES = (".envelope.json",)


def iter_results(output_dir: str | Path, model: str | None = None) -> Iterator[TaskResult]:
    """Every result under ``<output_dir>/runs`` (optionally one model's), in a stable order; the
    JSON files beside them that are not results (:data:`SIDECAR_JSON_SUFFIXES`) are passed over."""
    root = Path(output_dir) / "runs"
    if model is not None:
        root = root / safe_name(model)
    if not root.exists():
        return
    for path in sorted(root.rglob("*.json")):
        if not path.name.endswith(SIDECAR_JSON_SUFFIXES):
            yield read_result(path)


# ----------------------------------------------------------------------------- run log

RUN_LOG_NAME = "runs.jsonl"
log = logging.getLogger("evalkit.results")

# provenance keys copied from a result's ``evalkit`` section into its run-log line
_RUN_LOG_KEYS = (
    "family", "fingerprint", "precision", "device", "auto", "transform", "frame_sampler", "frames", "cloud_view",
    "depth_preset", "samples",
    "evaluated", "skipped", "limit", "batch_size", "num_workers", "world_size", "samples_per_rank", "task_file",
    "task_version", "source", "data", "weights", "text_model", "evalkit_version", "git_commit", "command",
    "started_at", "finished_at", "wall_time_s", "images_per_s", "data_fingerprint", "data_revision", "timings",
)


class RunLogError(EvalkitError, ValueError):
    """A run-log line that is not a JSON object; the message names the file and line."""


def run_log_path(output_dir: str | Path) -> Path:
    """``<output_dir>/runs.jsonl``: one JSON line per finished task, oldest first."""
    return Path(output_dir) / RUN_LOG_NAME


def run_log_entry(result: TaskResult, output_dir: str | Path | None = None) -> dict[str, Any]:
    """The run-log line of ``result`` as a dict: model, variant, task, the primary metric and its
    value, every numeric metric, provenance (fingerprint, data, git commit, command ...), wall
    time, and where the result file is (relative to ``output_dir``)."""
    ev = result.evalkit
    metric = ev.get("metric") if isinstance(ev.get("metric"), str) else None
    numeric = {k: v for k, v in result.metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    entry: dict[str, Any] = {
        "logged_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": result.model,
        "variant": result_variant(result),
        "task": result.dataset,
        "result_name": str(ev.get("result_name") or result.dataset),
        "pretrained": result.pretrained,
        "metric": metric,
        "value": numeric.get(metric) if metric else None,
        "metrics": numeric,
    }
    if output_dir is not None:
        entry["result"] = path_of(result, output_dir).relative_to(Path(output_dir)).as_posix()
    entry.update({k: ev[k] for k in _RUN_LOG_KEYS if k in ev})
    entry["host"] = socket.gethostname()
    entry["pid"] = os.getpid()
    return entry


def append_run_log(output_dir: str | Path, result: TaskResult) -> Path:
    """Append ``result``'s line (:func:`run_log_entry`) to ``<output_dir>/runs.jsonl``; return the path.

    Safe with any number of processes appending at once (several jobs sharing a results folder):
    the file is opened ``O_APPEND``, locked (``flock``, exclusive) for the write, and the line
    written whole, then fsynced. A line left cut off by a crash mid-write is closed with a
    newline before the next one, so it never swallows a good line."""
    path = run_log_path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = run_log_entry(result, output_dir)
    line = (json.dumps(entry, default=str, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        _lock(fd)
        try:
            if _logged(output_dir, entry):
                return path  # a rerun (a resume) that finished the same task with the same result
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # the tail of a write cut off by a crash: end it first
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            _unlock(fd)
    finally:
        os.close(fd)
    return path


# what makes two run-log lines the same finished task: the result and what produced it, not when,
# where or how fast (a resumed run encodes fewer samples, on another host, at another world size):
# never ``timings``; of ``data_fingerprint`` only its root (``from`` says whether the digests were
# hashed now or read from the feature cache, which a resume changes), see _run_identity
_RUN_IDENTITY_KEYS = (
    "model", "variant", "task", "result_name", "result", "metric", "metrics", "fingerprint", "precision",
    "transform", "frame_sampler", "frames", "cloud_view", "depth_preset", "samples", "evaluated", "skipped", "limit",
    "task_version",
    "source", "data", "weights", "text_model", "evalkit_version", "git_commit",
)


def _run_identity(entry: dict[str, Any]) -> str:
    fingerprint = entry.get("data_fingerprint")
    data_root = fingerprint.get("root") if isinstance(fingerprint, dict) else None
    return json.dumps({**{k: entry.get(k) for k in _RUN_IDENTITY_KEYS}, "data_fingerprint_root": data_root},
                      default=str, sort_keys=True)


def _logged(output_dir: str | Path, entry: dict[str, Any]) -> bool:
    """Whether the latest line the run log has for ``entry``'s result file is the same finished
    task (:data:`_RUN_IDENTITY_KEYS`): a rerun that changed nothing. Lines of other results are
    not parsed; damaged lines are passed over here (``read_run_log`` reports them)."""
    # the entry as it reads back from JSON, so that tuples and lists compare equal
    want = json.loads(json.dumps(entry, default=str))
    marker = json.dumps(want.get("result"))[1:-1].encode()  # the result's path, as it is written in a line
    try:
        data = run_log_path(output_dir).read_bytes()
    except OSError:
        return False
    for raw in reversed(data.split(b"\n")[:-1]):
        if marker not in raw:
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("result") == want.get("result"):
            return _run_identity(line) == _run_identity(want)
    return False


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): O_APPEND alone keeps each single write whole
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def read_run_log(output_dir: str | Path, *, strict: bool = True) -> list[dict[str, Any]]:
    """Every line of ``<output_dir>/runs.jsonl`` (none when there is no log), oldest first.

    A last line without its newline is a write still in progress and is left out. A line that is
    not a JSON object (a write cut off by a crash) raises :class:`RunLogError` naming the file and
    line; with ``strict=False`` it is logged and skipped."""
    path = run_log_path(output_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise RunLogError(f"{path}: cannot read the run log: {e}") from e
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: empty, or a line still being written
    out: list[dict[str, Any]] = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict):
                raise ValueError(f"a JSON {type(entry).__name__}, not an object")
        except ValueError as e:
            msg = f"{path}:{n}: not a run-log entry ({e}): {raw[:80]!r}"
            if strict:
                raise RunLogError(msg) from None
            log.warning("%s", msg)
            continue
        out.append(entry)
    return out


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
