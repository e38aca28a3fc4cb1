"""Uni3D's point tokenizer ops: evalkit's batched torch FPS and kNN grouping against a
straightforward NumPy implementation, in the same run.

A batch of ``--batch`` clouds of ``--points`` points (Gaussian blobs scaled to the unit sphere, as
after ``pc_norm``); ``--centres`` farthest-point-sampled centres per cloud, then the ``--k``
nearest points of each centre (Uni3D at evaluation: 8 x 10,000 points, 512 centres, k = 64).

  numpy fps:  per cloud, a loop over centres, each step a vectorised distance to every point
              (the usual NumPy FPS, e.g. Uni3D's own ``data/datasets.py``), with pointnet2_ops'
              rules (start at point 0; points within sqrt(1e-3) of the origin never picked);
  numpy knn:  per cloud and per centre, squared distances to every point, ``argpartition``, sort;
  torch fps / knn: ``evalkit.models.pointops.farthest_point_sample`` / ``knn_group`` (batched).

Both sides must return the same centres and the same neighbour sets (checked). Wall time is the
best of ``--repeat`` runs; the speed-up is numpy / torch.

The torch side is a loop of many small threaded operations (FPS: one step per centre), so on a
machine whose cores other processes hold it collapses where the single-threaded NumPy loop barely
slows: FPS 10.6x / 6.0x NumPy's speed on a quiet 2-core machine (2 / 1 threads) measured 0.4x /
2.6x at load 2-3. The conditions (torch threads, load average at the start and the end) are
printed and written with the figures; compare figures only under like conditions.

``--smoke``: a second's check that the benchmark still runs (2 clouds of 2,000 points, 32 centres,
k = 8, one repeat); its figures mean nothing.

    python benchmarks/bench_pointops.py [--json OUT] [--repeat 3] [--threads N] [--device cuda] [--smoke]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from clocks import best_of, conditions, conditions_line

from evalkit.models.pointops import FPS_SKIP_NORM_SQ, farthest_point_sample, gather_points, knn_group
from evalkit.results import atomic_write_text

SMOKE = {"batch": 2, "points": 2000, "centres": 32, "k": 8, "repeat": 1}


def make_clouds(batch: int, points: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(batch, points, 3)) * rng.uniform(0.3, 1.0, size=(batch, 1, 3))
    xyz -= xyz.mean(axis=1, keepdims=True)
    xyz /= np.linalg.norm(xyz, axis=2).max(axis=1)[:, None, None]
    return xyz.astype(np.float32)


def numpy_fps(xyz: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(xyz), n), dtype=np.int64)
    for b, p in enumerate(xyz):
        dist = np.full(len(p), 1e10, dtype=np.float32)
        dist[(p * p).sum(1) <= FPS_SKIP_NORM_SQ] = -1.0
        far = 0
        for i in range(n):
            out[b, i] = far
            d = ((p - p[far]) ** 2).sum(1)
            np.minimum(dist, d, out=dist)
            far = int(np.argmax(dist))
    return out


def numpy_knn(xyz: np.ndarray, centres: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((*centres.shape[:2], k), dtype=np.int64)
    for b, p in enumerate(xyz):
        for g, c in enumerate(centres[b]):
            d = ((p - c) ** 2).sum(1)
            near = np.argpartition(d, k - 1)[:k]
            out[b, g] = near[np.argsort(d[near])]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--points", type=int, default=10000)
    ap.add_argument("--centres", type=int, default=512)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true",
                    help=f"tiny sizes ({SMOKE}): checks that the benchmark runs; its figures mean nothing")
    args = ap.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = conditions()

    xyz = make_clouds(args.batch, args.points)
    pts = torch.from_numpy(xyz).to(args.device)
    sync = torch.cuda.synchronize if pts.is_cuda else (lambda: None)

    def torch_fps():
        out = farthest_point_sample(pts, args.centres)
        sync()
        return out

    t_np_fps, np_idx = best_of(lambda: numpy_fps(xyz, args.centres), args.repeat)
    t_fps, idx = best_of(torch_fps, args.repeat)
    same_centres = bool(np.array_equal(idx.cpu().numpy(), np_idx))
    centres = gather_points(pts, idx)

    def torch_knn():
        out = knn_group(pts, centres, args.k)
        sync()
        return out

    c_np = centres.cpu().numpy()
    t_np_knn, np_nn = best_of(lambda: numpy_knn(xyz, c_np, args.k), args.repeat)
    t_knn, nn_idx = best_of(torch_knn, args.repeat)
    same_sets = np.sort(nn_idx.cpu().numpy(), axis=2) == np.sort(np_nn, axis=2)
    share = float(same_sets.all(axis=2).mean())  # patches whose neighbour set is identical

    rows = {
        "fps": {"numpy_s": t_np_fps, "torch_s": t_fps, "speedup": t_np_fps / t_fps, "identical": same_centres},
        "knn": {"numpy_s": t_np_knn, "torch_s": t_knn, "speedup": t_np_knn / t_knn,
                "identical_patches": share},
    }
    print(f"{args.batch} clouds x {args.points} points, {args.centres} centres, k={args.k}; device {args.device}, "
          f"torch threads {torch.get_num_threads()}; best of {args.repeat}")
    print(f"{'op':5} {'numpy ms':>10} {'torch ms':>10} {'speed-up':>9}  same result")
    print(f"{'fps':5} {t_np_fps * 1e3:10.1f} {t_fps * 1e3:10.1f} {t_np_fps / t_fps:8.1f}x  "
          f"{'centres identical' if same_centres else 'CENTRES DIFFER'}")
    print(f"{'knn':5} {t_np_knn * 1e3:10.1f} {t_knn * 1e3:10.1f} {t_np_knn / t_knn:8.1f}x  "
          f"{share * 100:.2f}% of patches identical")
    out = {"benchmark": "pointops", "smoke": args.smoke, "batch": args.batch, "points": args.points,
           "centres": args.centres, "k": args.k, "device": args.device, "threads": torch.get_num_threads(),
           "repeat": args.repeat, "numpy": np.__version__, "rows": rows, "conditions": conditions(start)}
    print(conditions_line(out["conditions"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
