"""What a run ran on: the interpreter, the platform, torch and its CUDA / cuDNN, the GPUs and their
driver, the versions of the libraries a number can depend on, and whether evalkit's own checkout
had uncommitted changes.

Every result records :func:`environment` under ``evalkit.environment`` and :func:`git_dirty` under
``evalkit.git_dirty`` (next to ``git_commit``); ``evalkit certify`` binds them into a run's
certificate. Anything that is not there is ``None``: a library not installed, torch without CUDA,
a machine without ``nvidia-smi``, evalkit installed from a wheel (no git checkout).

The GPUs are the ones this process sees (``CUDA_VISIBLE_DEVICES`` applies), read with
``torch.cuda.get_device_properties`` (no CUDA context is opened, as in
:func:`evalkit.models.auto.gpu_total`). The driver's version comes from ``nvidia-smi``, which only
runs when there is a GPU.

This module is at the bottom of the layers: it imports nothing of evalkit.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["LIBRARIES", "environment", "git_dirty", "gpus", "driver_version", "library_versions"]

#: the distributions (as pip names them) whose versions every result records
LIBRARIES = ("numpy", "torchvision", "open_clip_torch", "timm", "transformers", "accelerate", "bitsandbytes",
             "safetensors", "huggingface_hub", "av", "scipy", "statsmodels", "pandas")

_TIMEOUT_S = 5


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Each distribution's installed version, None where it is not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def gpus(torch: Any = None) -> list[dict[str, Any]]:
    """The GPUs this process sees: ``[{"name", "memory_gb"}]`` (GiB, one decimal); empty without CUDA."""
    if torch is None:
        import torch
    try:
        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            out.append({"name": str(props.name), "memory_gb": round(int(props.total_memory) / 2**30, 1)})
        return out
    except RuntimeError:  # a broken CUDA install says so when asked; the run itself will say more
        return []


def driver_version(run: Any = None) -> str | None:
    """The NVIDIA driver's version as ``nvidia-smi`` reports it, None without it (or when it fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = (run or subprocess.run)([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True,
                  timeout=_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in (out.stdout or "").splitlines() if line.strip()]
    return lines[0] if out.returncode == 0 and lines else None


def _cudnn(torch: Any) -> int | None:
    try:
        return int(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    except (RuntimeError, TypeError):
        return None


def environment(torch: Any = None) -> dict[str, Any]:
    """The ``evalkit.environment`` of a result: ``python``, ``platform``, ``torch``, ``cuda`` (the
    CUDA torch was built with), ``cudnn``, ``gpus``, ``driver`` and ``libraries`` (see
    :data:`LIBRARIES`); None for what is not there."""
    if torch is None:
        try:
            import torch
        except ImportError:  # pragma: no cover - evalkit needs torch; a result says so rather than fail
            torch = None
    found = gpus(torch) if torch is not None else []
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": getattr(torch, "__version__", None),
        "cuda": getattr(getattr(torch, "version", None), "cuda", None),
        "cudnn": _cudnn(torch) if torch is not None else None,
        "gpus": found,
        "driver": driver_version() if found else None,
        "libraries": library_versions(),
    }


def git_dirty(cwd: str | Path | None = None, run: Any = None) -> bool | None:
    """Whether the git checkout evalkit runs from has uncommitted changes to tracked files (files
    git does not track, results and caches, do not count); None outside a git checkout (a wheel),
    or without git. The same checkout :func:`evalkit.results.git_commit` names."""
    try:
        out = (run or subprocess.run)(["git", "status", "--porcelain", "--untracked-files=no"],
                  cwd=cwd or Path(__file__).resolve().parent, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return bool(out.stdout.strip())
