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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
DEFAULT_VARIANT = "fp32"  # the default precision (evalkit.models.DEFAULT_PRECISION) with the card's weights


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
            raise ValueError(f"{source}: result is missing key(s) {missing}")
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


def run_variant(precision: str, weights: str | None = None) -> str:
    """The variant label of a run: ``precision``, plus ``+<weights>`` when weights other than the
    card's own were given: a file or folder as its name and a short hash of its absolute path
    (two ``model.pt`` in different folders differ), a pretrained tag or ``random`` as it is."""
    if not weights:
        return precision
    path = Path(weights).expanduser()
    if path.exists():
        label = f"{path.name}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:6]}"
    else:
        label = weights
    return f"{precision}+{safe_name(label)}"


def result_variant(result: TaskResult) -> str:
    """The variant of a result (results written before variants existed: their precision)."""
    ev = result.evalkit
    return str(ev.get("variant") or ev.get("precision") or DEFAULT_VARIANT)


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
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
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


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


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
        raise ValueError(f"{path}: cannot read result: {e}") from e
    return TaskResult.from_dict(d, source=str(path))


def iter_results(output_dir: str | Path, model: str | None = None) -> Iterator[TaskResult]:
    """Every result under ``<output_dir>/runs`` (optionally one model's), in a stable order."""
    root = Path(output_dir) / "runs"
    if model is not None:
        root = root / safe_name(model)
    if not root.exists():
        return
    for path in sorted(root.rglob("*.json")):
        yield read_result(path)


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
