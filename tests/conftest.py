from __future__ import annotations

import os
import sys
from pathlib import Path

# Offline from the first import on: huggingface_hub reads this once, and without it every
# failed fetch is retried with back-off for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the benchmarks' clocks (benchmarks/clocks.py) count forward calls in a few tests
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from fixtures import register_tiny_open_clip  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Never read or write the user's feature cache from tests.
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # an empty Hugging Face cache: a machine that has real weights cached must not change results
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    # One thread: the test models are tiny, and two threads that wait on each other are 5-50x
    # slower on a loaded machine.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory) -> str:
    return register_tiny_open_clip(tmp_path_factory.mktemp("arch"))


@pytest.fixture(scope="session")
def tiny_bidir_arch(tmp_path_factory) -> str:
    # SigLIP-style text tower: no causal mask, pooled at the last position.
    return register_tiny_open_clip(tmp_path_factory.mktemp("arch2"), name="evalkit-tiny-bidir",
                                   no_causal_mask=True, pool_type="last")
