"""What a run ran on (evalkit/environment.py): the GPUs and driver (their logic run here with
torch.cuda and nvidia-smi stood in for), library versions, the dirty flag, and both in a result."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest
import torch

from evalkit import environment as env


def _fake_cuda(monkeypatch, devices: list[tuple[str, int]]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(devices))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(devices))
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(name=devices[i][0], total_memory=devices[i][1]))


def test_gpus_are_listed_with_their_memory(monkeypatch):
    _fake_cuda(monkeypatch, [("NVIDIA H100 80GB HBM3", 85_029_158_912), ("NVIDIA A100-SXM4-40GB", 42_505_273_344)])
    assert env.gpus() == [{"name": "NVIDIA H100 80GB HBM3", "memory_gb": 79.2},
                          {"name": "NVIDIA A100-SXM4-40GB", "memory_gb": 39.6}]


def test_no_cuda_no_gpus_no_driver_call(monkeypatch):
    _fake_cuda(monkeypatch, [])
    called = []
    monkeypatch.setattr(env, "driver_version", lambda *a, **k: called.append(1) or "x")
    got = env.environment()
    assert got["gpus"] == [] and got["driver"] is None and not called


def test_a_broken_cuda_install_gives_no_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    def broken(i):
        raise RuntimeError("CUDA driver initialization failed")

    monkeypatch.setattr(torch.cuda, "get_device_properties", broken)
    assert env.gpus() == []


def test_environment_with_gpus_asks_nvidia_smi_for_the_driver(monkeypatch):
    _fake_cuda(monkeypatch, [("NVIDIA H100 80GB HBM3", 85_029_158_912)])
    monkeypatch.setattr(env.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    seen = []

    def fake_run(cmd, **kw):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="550.54.15\n550.54.15\n", stderr="")

    monkeypatch.setattr(env.subprocess, "run", fake_run)
    got = env.environment()
    assert got["driver"] == "550.54.15" and got["gpus"][0]["memory_gb"] == 79.2
    assert seen == [["/usr/bin/nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]]
    assert got["torch"] == torch.__version__ and got["cuda"] == torch.version.cuda
    assert set(got) == {"python", "platform", "torch", "cuda", "cudnn", "gpus", "driver", "libraries"}


@pytest.mark.parametrize("outcome", ["fails", "raises", "absent"])
def test_driver_is_none_when_nvidia_smi_cannot_say(monkeypatch, outcome):
    monkeypatch.setattr(env.shutil, "which", lambda name: None if outcome == "absent" else "/usr/bin/nvidia-smi")

    def fake_run(cmd, **kw):
        if outcome == "raises":
            raise subprocess.TimeoutExpired(cmd, 5)
        # nvidia-smi says why it failed on stdout, which must not be taken for a version
        return subprocess.CompletedProcess(cmd, 9, stdout="NVIDIA-SMI has failed because it couldn't communicate "
                                           "with the NVIDIA driver.\n", stderr="")

    assert env.driver_version(run=fake_run) is None


def test_library_versions_none_when_not_installed():
    got = env.library_versions(("numpy", "surely-not-a-distribution-evalkit"))
    assert got == {"numpy": __import__("numpy").__version__, "surely-not-a-distribution-evalkit": None}
    assert set(env.library_versions()) == set(env.LIBRARIES)


def test_cudnn_none_without_it(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: False)
    assert env.environment()["cudnn"] is None


def test_git_dirty(tmp_path):
    def repo_says(code: int, out: str):
        return lambda cmd, **kw: subprocess.CompletedProcess(cmd, code, stdout=out, stderr="")

    assert env.git_dirty(run=repo_says(0, " M evalkit/api.py\n")) is True
    assert env.git_dirty(run=repo_says(0, "")) is False
    assert env.git_dirty(run=repo_says(128, "")) is None  # not a git checkout
    assert env.git_dirty(tmp_path) is None  # a real folder outside any checkout

    def no_git(cmd, **kw):
        raise FileNotFoundError("git")

    assert env.git_dirty(run=no_git) is None
    # in a real checkout: a tracked file changed makes it dirty, an untracked one does not
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("1")
    subprocess.run(["git", "-C", str(tmp_path), "add", "a.txt"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a"],
                   check=True)
    (tmp_path / "new.txt").write_text("untracked")
    assert env.git_dirty(tmp_path) is False
    (tmp_path / "a.txt").write_text("2")
    assert env.git_dirty(tmp_path) is True
