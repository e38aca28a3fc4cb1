"""Point-cloud operations of the Uni3D tokenizer, in plain torch (no CUDA extension).

Uni3D (github.com/baaivision/Uni3D, ``models/point_encoder.py``) picks its patch centres with
``pointnet2_ops.furthest_point_sample`` (a CUDA kernel) and its patches with a squared-distance
top-k. These are batched, deterministic torch versions that run on any device:

* :func:`farthest_point_sample` follows the kernel's conventions, so it picks the same centres:
  the first centre is point 0 of each cloud; distances start at 1e10; a point whose squared norm
  is at most 1e-3 (within ~0.032 of the origin, i.e. of the centroid after :func:`pc_norm`) is
  never picked; and exact ties of the float32 distances go where the kernel's threads send them
  (:func:`fps_tie_order`), not to the lowest index.
* :func:`knn_group` uses Uni3D's expanded formula ``|c|^2 + |p|^2 - 2 c.p`` and top-k.
* :func:`pc_norm` is Uni3D's evaluation normalisation: centre on the mean, scale to the unit sphere.
* :func:`resample` brings a cloud to a fixed number of points (see there for the rule).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "FPS_START_INDEX",
    "FPS_SKIP_NORM_SQ",
    "FPS_MAX_THREADS",
    "fps_threads",
    "fps_tie_order",
    "farthest_point_sample",
    "square_distance",
    "knn_group",
    "gather_points",
    "pc_norm",
    "resample",
]

#: pointnet2_ops' furthest_point_sample starts every cloud at its first point.
FPS_START_INDEX = 0
#: pointnet2_ops skips points with x^2 + y^2 + z^2 <= 1e-3 (``if (mag <= 1e-3) continue;``).
FPS_SKIP_NORM_SQ = 1e-3
#: pointnet2_ops' most threads per cloud (``TOTAL_THREADS`` in its ``cuda_utils.h``)
FPS_MAX_THREADS = 512
_FPS_INIT = 1e10  # the kernel's initial distance (its temp buffer is filled with 1e10)
# square_distance holds (batch, centres, points) floats: above this many, it works in batch chunks.
_KNN_CHUNK_ELEMENTS = 1 << 27


def _check_cloud(xyz: Tensor, name: str = "xyz") -> None:
    if not isinstance(xyz, Tensor) or xyz.ndim != 3 or xyz.shape[-1] != 3:
        shape = tuple(xyz.shape) if isinstance(xyz, Tensor) else type(xyz).__name__
        raise ValueError(f"{name} must be a (B, N, 3) tensor; got {shape}")
    if not xyz.is_floating_point():
        raise ValueError(f"{name} must be floating point; got {xyz.dtype}")


def fps_threads(npts: int) -> int:
    """The threads pointnet2_ops' kernel runs per cloud of ``npts`` points (``opt_n_threads``):
    ``2 ** int(log(npts) / log(2))``, the logarithms in double as the C++ takes them, capped at
    :data:`FPS_MAX_THREADS`, at least 1."""
    if npts < 1:
        raise ValueError(f"a cloud needs at least one point; got {npts}")
    return max(min(1 << int(math.log(npts) / math.log(2.0)), FPS_MAX_THREADS), 1)


def fps_tie_order(npts: int) -> Tensor:
    """The order in which pointnet2_ops' kernel prefers points on an exact tie of their distance:
    a (T * L,) long tensor of point indices (``T`` = :func:`fps_threads`, ``L = ceil(npts / T)``;
    indices >= ``npts`` are padding), such that the kernel's pick is the *first* maximum of the
    distances read in this order.

    Why: thread ``t`` of the kernel walks points ``t, t + T, t + 2T, ...`` and keeps the first
    maximum it meets (``d2 > best``): ties go to its lowest ``l`` of ``t + l * T``. The threads'
    maxima are then reduced in shared memory by halving strides (``__update(tid, tid + s)`` for
    s = T/2, ..., 1), where the lower slot wins a tie (``v2 > v1 ? i2 : i1``). At the last step
    the even slots beat the odd ones, at the one before the slots = 0 mod 4 beat those = 2 mod 4,
    and so on: among threads whose maxima tie, the one whose thread index, read with its bits
    reversed, is smallest wins. So: threads in bit-reversed order, each thread's points in its
    own order, and the first maximum of that sequence is the kernel's answer.
    """
    t = fps_threads(npts)
    per = -(-npts // t)
    bits = t.bit_length() - 1
    tids = torch.tensor([int(f"{j:0{bits}b}"[::-1], 2) if bits else 0 for j in range(t)], dtype=torch.long)
    return (tids[:, None] + torch.arange(per, dtype=torch.long)[None, :] * t).flatten()


@torch.no_grad()
def farthest_point_sample(xyz: Tensor, n: int, *, skip_norm_sq: float | None = FPS_SKIP_NORM_SQ) -> Tensor:
    """Indices (B, n) of ``n`` farthest-point-sampled centres of each cloud in ``xyz`` (B, N, 3).

    pointnet2_ops' convention: the first centre is index 0; each next one is the point whose
    squared distance to the nearest centre so far is largest (distances in float32; exact ties
    resolved as the kernel's threads and their reduction do, :func:`fps_tie_order`). Points with
    squared norm <= ``skip_norm_sq`` are never picked (the kernel's rule; ``None`` picks from all
    points). When a cloud has fewer pickable points than ``n``, indices repeat, as in the kernel.
    Vectorised over the batch; one step per centre.
    """
    _check_cloud(xyz)
    b, npts, _ = xyz.shape
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of centres must be a positive int; got {n!r}")
    if npts == 0:
        raise ValueError("cannot sample centres from an empty point cloud")
    # every per-point array is held in the kernel's tie order, so that argmax's first maximum is
    # the kernel's pick; padding slots (index >= npts) hold -inf and are never picked or updated
    order = fps_tie_order(npts).to(xyz.device)
    pad = order >= npts
    # Planar float32 coordinates: the distance is (dx*dx + dy*dy) + dz*dz, the kernel's order.
    x, y, z = xyz.float()[:, order.clamp(max=npts - 1)].permute(2, 0, 1).contiguous()
    dist = torch.full((b, order.numel()), _FPS_INIT, dtype=torch.float32, device=xyz.device)
    if skip_norm_sq is not None:
        norm_sq = (x * x + y * y) + z * z
        # -1 is below every distance, so these points lose every argmax and are never updated
        # (min(-1, d) = -1), as the kernel leaves their distance alone.
        dist.masked_fill_(norm_sq.double() <= skip_norm_sq, -1.0)
    dist.masked_fill_(pad, float("-inf"))
    out = torch.empty((b, n), dtype=torch.long, device=xyz.device)
    rows = torch.arange(b, device=xyz.device)
    # FPS_START_INDEX (0) sits at position 0 of the order (thread 0, its first point)
    far = torch.full((b,), FPS_START_INDEX, dtype=torch.long, device=xyz.device)
    for i in range(n):
        out[:, i] = far
        if i == n - 1:
            break
        cx, cy, cz = x[rows, far].unsqueeze(1), y[rows, far].unsqueeze(1), z[rows, far].unsqueeze(1)
        d = (x - cx).square_().add_((y - cy).square_()).add_((z - cz).square_())
        torch.minimum(dist, d, out=dist)
        far = dist.argmax(dim=1)
    return order[out]


def square_distance(src: Tensor, dst: Tensor) -> Tensor:
    """Squared distances (B, S, N) between ``src`` (B, S, C) and ``dst`` (B, N, C), by Uni3D's
    expanded formula ``-2 src.dst + |src|^2 + |dst|^2`` (same operations, same rounding)."""
    d = torch.matmul(src, dst.transpose(1, 2)).mul_(-2)
    d += src.square().sum(-1).unsqueeze(2)
    d += dst.square().sum(-1).unsqueeze(1)
    return d


@torch.no_grad()
def knn_group(xyz: Tensor, centres: Tensor, k: int) -> Tensor:
    """Indices (B, G, k) of the ``k`` points of ``xyz`` (B, N, 3) nearest to each of ``centres``
    (B, G, 3): squared distance (:func:`square_distance`), top-k smallest, as Uni3D's
    ``knn_point``. Returned nearest first (Uni3D asks top-k for ``sorted=False``; the patch
    encoder max-pools, so the order of a patch's points does not change its token)."""
    _check_cloud(xyz)
    _check_cloud(centres, "centres")
    if centres.shape[0] != xyz.shape[0]:
        raise ValueError(f"centres has batch {centres.shape[0]}, points have batch {xyz.shape[0]}")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= xyz.shape[1]:
        raise ValueError(f"k must be an int in [1, {xyz.shape[1]}] (the number of points); got {k!r}")
    b, g, npts = xyz.shape[0], centres.shape[1], xyz.shape[1]
    step = max(1, _KNN_CHUNK_ELEMENTS // max(1, g * npts))
    parts = []
    for s in range(0, b, step):
        d = square_distance(centres[s : s + step].float(), xyz[s : s + step].float())
        parts.append(d.topk(k, dim=-1, largest=False, sorted=True).indices)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def gather_points(points: Tensor, idx: Tensor) -> Tensor:
    """``points`` (B, N, C) at ``idx`` (B, ...) -> (B, ..., C)."""
    if points.ndim != 3 or idx.shape[0] != points.shape[0]:
        raise ValueError(f"points (B, N, C) and idx (B, ...) must share B; got {tuple(points.shape)}, "
                         f"{tuple(idx.shape)}")
    b = points.shape[0]
    rows = torch.arange(b, device=points.device).view(b, *([1] * (idx.ndim - 1)))
    return points[rows, idx]


def pc_norm(xyz: Tensor) -> Tensor:
    """Uni3D's evaluation normalisation of (..., N, 3) clouds: subtract the centroid (mean over
    the N points), divide by the largest distance to it, so the cloud fits the unit sphere.
    Computed in float64, returned in ``xyz``'s dtype. A cloud whose points all coincide has no
    scale and is an error."""
    if not isinstance(xyz, Tensor) or xyz.ndim < 2 or xyz.shape[-1] != 3 or xyz.shape[-2] == 0:
        shape = tuple(xyz.shape) if isinstance(xyz, Tensor) else type(xyz).__name__
        raise ValueError(f"pc_norm needs (..., N, 3) with N >= 1; got {shape}")
    p = xyz.double()
    p = p - p.mean(dim=-2, keepdim=True)
    scale = p.norm(dim=-1).amax(dim=-1, keepdim=True)
    if not bool(torch.isfinite(scale).all()):
        raise ValueError("pc_norm: the cloud has non-finite coordinates (nan or inf)")
    if bool((scale == 0).any()):
        raise ValueError("pc_norm: all points of the cloud coincide; it has no scale to normalise")
    return (p / scale.unsqueeze(-1)).to(xyz.dtype)


def resample(points: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, bool]:
    """``points`` (N, C) brought to exactly ``n`` points; returns (points, resampled).

    * N == n: unchanged, ``resampled`` False.
    * N < n: every point is kept, in order, followed by ``n - N`` points drawn uniformly with
      replacement (Uni3D's training sampler draws all ``n`` with replacement; keeping each point
      once loses nothing and keeps point 0, where farthest-point sampling starts, first).
    * N > n: ``n`` distinct points drawn uniformly without replacement, kept in file order.

    Draws come from ``generator`` (default: a fresh one seeded 0, so the result is reproducible).
    """
    if not isinstance(points, Tensor) or points.ndim != 2:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"resample needs an (N, C) tensor; got {shape}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of points must be a positive int; got {n!r}")
    have = points.shape[0]
    if have == 0:
        raise ValueError("cannot resample an empty point cloud")
    if have == n:
        return points, False
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if have < n:
        extra = torch.randint(0, have, (n - have,), generator=gen, device=gen.device)
        idx = torch.cat([torch.arange(have, device=extra.device), extra])
    else:
        idx = torch.randperm(have, generator=gen, device=gen.device)[:n].sort().values
    return points[idx.to(points.device)], True
