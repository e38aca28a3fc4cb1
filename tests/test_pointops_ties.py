"""Farthest-point sampling on exact ties (issue 16 §6): evalkit's FPS against a slow, literal
simulation of pointnet2_ops' ``furthest_point_sampling_kernel`` (``sampling_gpu.cu``), written here
from its facts, threads as Python loops:

* block size ``opt_n_threads(n)``: ``2 ** int(log(n) / log(2))``, at most 512;
* each step, thread ``tid`` walks ``k = tid, tid + T, ...``; skips points with
  ``x*x + y*y + z*z <= 1e-3``; ``d = (dx*dx + dy*dy) + dz*dz`` in float32; ``temp[k] = min(d,
  temp[k])``; keeps ``besti = k`` when ``d2 > best`` (best starts at -1, besti at 0);
* shared-memory reduction ``for s in T/2, ..., 1: for tid < s: __update(tid, tid + s)`` with
  ``dists[tid] = max(v1, v2)``, ``dists_i[tid] = v2 > v1 ? i2 : i1``; the next centre is slot 0.

On clouds whose coordinates lie on a grid, distances tie exactly all the time, and the lowest
index (what evalkit did before) is often not the kernel's pick.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evalkit.models.pointops import farthest_point_sample, fps_threads

F32 = np.float32


def kernel_fps(xyz: np.ndarray, m: int) -> list[int]:
    """pointnet2_ops' kernel on one (n, 3) float32 cloud, step by step."""
    n = len(xyz)
    threads = max(min(1 << int(math.log(n) / math.log(2.0)), 512), 1)
    pts = [(F32(x), F32(y), F32(z)) for x, y, z in np.asarray(xyz, dtype=F32)]
    temp = [F32(1e10)] * n
    old, idxs = 0, [0]
    for _ in range(1, m):
        x1, y1, z1 = pts[old]
        dists, dists_i = [F32(0)] * threads, [0] * threads
        for tid in range(threads):
            best, besti = F32(-1), 0
            for k in range(tid, n, threads):
                x2, y2, z2 = pts[k]
                mag = x2 * x2 + y2 * y2 + z2 * z2
                if float(mag) <= 1e-3:  # float compared with a double literal, in double
                    continue
                d = (x2 - x1) * (x2 - x1) + (y2 - y1) * (y2 - y1) + (z2 - z1) * (z2 - z1)
                d2 = min(d, temp[k])
                temp[k] = d2
                besti = k if d2 > best else besti
                best = d2 if d2 > best else best
            dists[tid], dists_i[tid] = best, besti
        s = threads // 2
        while s >= 1:
            for tid in range(s):
                v1, v2 = dists[tid], dists[tid + s]
                i1, i2 = dists_i[tid], dists_i[tid + s]
                dists[tid] = max(v1, v2)
                dists_i[tid] = i2 if v2 > v1 else i1
            s //= 2
        old = dists_i[0]
        idxs.append(old)
    return idxs


def lowest_index_fps(xyz: np.ndarray, m: int) -> list[int]:
    """The same sampling with ties to the lowest index (numpy argmax): evalkit's old rule."""
    p = np.asarray(xyz, dtype=F32)
    dist = np.full(len(p), 1e10, dtype=F32)
    dist[(p * p).sum(1) <= 1e-3] = -1
    far, out = 0, [0]
    for _ in range(1, m):
        d = ((p[:, 0] - p[far, 0]) ** 2 + (p[:, 1] - p[far, 1]) ** 2) + (p[:, 2] - p[far, 2]) ** 2
        dist = np.minimum(dist, d)
        far = int(np.argmax(dist))
        out.append(far)
    return out


def grid_cloud(n: int, seed: int, cells: int = 9) -> np.ndarray:
    """``n`` points on a ``cells``^3 grid in [-1, 1]^3 (exact binary fractions: distances tie
    exactly), some repeated, the origin among them (a skipped point), in random order."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(0, cells, size=(n, 3))
    return (steps / (cells - 1) * 2 - 1).astype(F32)


def test_thread_counts_are_the_kernels():
    assert [fps_threads(n) for n in (1, 2, 3, 4, 7, 8, 100, 511, 512, 513, 2048, 10000)] == \
        [1, 2, 2, 4, 4, 8, 64, 256, 512, 512, 512, 512]


@pytest.mark.parametrize("n, m, seed", [(1024, 512, 0), (2048, 512, 1), (777, 200, 2), (100, 64, 3), (5, 5, 4)])
def test_grid_clouds_pick_the_kernels_centres_on_ties(n, m, seed):
    xyz = grid_cloud(n, seed)
    want = kernel_fps(xyz, m)
    got = farthest_point_sample(torch.from_numpy(xyz)[None], m)[0].tolist()
    assert got == want
    if n >= 100:  # ties are frequent here: the lowest-index rule picks other centres
        assert lowest_index_fps(xyz, m) != want


def test_a_batch_of_grid_clouds_and_the_skipped_origin():
    clouds = np.stack([grid_cloud(600, s, cells=5) for s in (5, 6, 7)])
    clouds[1, 0] = 0.0  # the first point is the first centre even where it would be skipped
    got = farthest_point_sample(torch.from_numpy(clouds), 96)
    for b in range(3):
        assert got[b].tolist() == kernel_fps(clouds[b], 96)
    origin = (clouds == 0).all(axis=2)
    picked = np.take_along_axis(origin, got.numpy(), axis=1)
    assert not picked[:, 1:].any()  # never picked after the first centre


def test_float_clouds_keep_their_centres():
    # no exact ties on a float cloud: the kernel's order and the lowest index agree
    rng = np.random.default_rng(8)
    xyz = rng.normal(size=(2, 3000, 3)).astype(F32)
    got = farthest_point_sample(torch.from_numpy(xyz), 128)
    for b in range(2):
        assert got[b].tolist() == lowest_index_fps(xyz[b], 128) == kernel_fps(xyz[b], 128)
