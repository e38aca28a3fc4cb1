"""Loader worker processes run the views' per-sample steps (point ops, depth rendering, decoding)
with one torch thread each: W workers beside a main process that runs the model on every core
must not each start a full set of intra-op threads. Torch's many small per-step operations (Uni3D's
``pc_norm`` and resampling, farthest-point sampling) collapse when their threads outnumber the
cores (README, Benchmarks: FPS at 0.4x the NumPy loop with 2 threads at load 2-3)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import torch

from evalkit.data import pointclouds  # noqa: F401  (registers the point-cloud source types)
from evalkit.data.sources import load_source
from evalkit.features.embed import embed
from evalkit.views.points import point_view


class _Encoder:
    fingerprint, embed_dim, name, device = "threads-seen", 3, "threads-seen", "cpu"


class _ThreadsSeen:
    """The point view's per-sample step (Uni3D's pc_norm and resampling, in torch), then what the
    process that ran it saw: torch's intra-op threads, its pid, and the points it made."""

    identity, batch_key = "threads-seen", ("threads-seen",)

    def __init__(self, npoints: int) -> None:
        self.points = point_view(npoints)

    def sample(self, cloud) -> torch.Tensor:
        out = self.points.sample(cloud)
        prepared = getattr(out, "tensor", out)
        return torch.tensor([torch.get_num_threads(), os.getpid(), prepared.shape[0]], dtype=torch.float64)

    def embed(self, encoder, batch: torch.Tensor) -> torch.Tensor:
        return batch


def test_loader_workers_run_point_ops_on_one_torch_thread(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "clouds"
    root.mkdir()
    with h5py.File(root / "ply_data_test0.h5", "w") as f:
        f["data"] = rng.standard_normal((8, 200, 3)).astype(np.float32)
        f["label"] = np.arange(8) % 2
    data = load_source({"type": "pointnet_h5", "path": str(root)}, None, "threads")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the main process: the model's threads (more than one, as on any multi-core CPU)
    try:
        seen = embed(_Encoder(), data, {"t": _ThreadsSeen(npoints=128)}, num_workers=2, batch_size=2,
                     progress=False)["t"]
    finally:
        torch.set_num_threads(threads)
    assert len(seen.keys) == 8 and not seen.skipped
    worker_threads, pids, points = seen.features[:, 0], seen.features[:, 1], seen.features[:, 2]
    assert (points == 128).all()  # the point ops did run there
    assert os.getpid() not in set(pids.long().tolist()) and len(set(pids.long().tolist())) == 2  # in 2 workers
    assert (worker_threads == 1).all(), f"loader workers ran with {sorted(set(worker_threads.long().tolist()))} threads"
