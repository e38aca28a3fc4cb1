"""Fixtures for the data-fetch tests: a local Hub (tests/hub_server.py) with huggingface_hub pointed
at it in this process, and a fetch run in a child process (to kill it, or to run two at once).

conftest.py puts every test offline (``HF_HUB_OFFLINE=1``, read by huggingface_hub once, at
import); :func:`hub` lifts that for one test, in the environment and in huggingface_hub's
constants, and keeps huggingface_hub off the user's token file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hub_server import LocalHub

REPO_ROOT = Path(__file__).resolve().parents[1]

# A fetch in a child process: argv[1] is JSON {spec, data_root, task, kwargs}; prints one JSON
# line {"status", "line", "samples", ...} or {"error": type name, "message"} (exit 1).
CHILD = r"""
import json, sys
from evalkit.data.fetch import fetch_source
from evalkit.errors import EvalkitError
args = json.loads(sys.argv[1])
try:
    r = fetch_source(args["spec"], args["data_root"], task=args["task"], **args.get("kwargs", {}))
except EvalkitError as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}), flush=True)
    sys.exit(1)
print(json.dumps({"status": r.status, "line": r.line(), "samples": r.samples, "commit": r.commit,
                  "notes": r.notes}), flush=True)
"""


def child_env(hub: LocalHub | None, tmp_path: Path, offline: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_ENDPOINT")}
    env.update(HF_HOME=str(tmp_path / "child-hf-home"), HF_HUB_CACHE=str(tmp_path / "child-hf-cache"),
               PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""), HF_HUB_DISABLE_TELEMETRY="1")
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def start_child(spec: dict[str, Any], data_root: Path, task: str, env: dict[str, str], stderr_to: Path,
                **kwargs: Any) -> subprocess.Popen:
    arg = json.dumps({"spec": spec, "data_root": str(data_root), "task": task, "kwargs": kwargs})
    err = open(stderr_to, "w")  # noqa: SIM115 (closed by the caller through finish_child)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, arg], env=env, cwd=str(REPO_ROOT),
                            stdout=subprocess.PIPE, stderr=err, text=True)
    proc._evalkit_err = err  # type: ignore[attr-defined]
    return proc


def finish_child(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        proc._evalkit_err.close()  # type: ignore[attr-defined]
    last = [ln for ln in (out or "").splitlines() if ln.startswith("{")]
    return proc.returncode, (json.loads(last[-1]) if last else {"error": "no output", "message": out})


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A started LocalHub, with this process's huggingface_hub online and pointed at it."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"), raising=False)
    with LocalHub(page_size=2) as local:
        monkeypatch.setenv("HF_ENDPOINT", local.url)
        yield local
