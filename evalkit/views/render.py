"""Depth views of point clouds: a 2-D CLIP sees a 3-D shape as a few grey "photos" of it.

PointCLIP V2's "realistic projection" (Zhu et al., ICCV 2023; `yangyangyang127/PointCLIP_V2`, MIT;
see ``shared/reference/TASK_PROTOCOLS.md`` §3.7), written afresh and batched over clouds and views
in torch. The steps:

1. **view**: rotate every cloud into each viewpoint's camera frame (orthographic: x right, y up,
   z towards the camera), then normalise *per view* by the bounding-box centre and the largest
   bounding-box side, so the cloud spans [-1, 1] on its longest axis; x and y are scaled by
   ``obj_ratio`` to leave a margin round the object;
2. **quantise**: each point falls into a cell of a ``grid`` × ``grid`` (x, y) × ``depth_levels``
   (z) grid; the cell keeps the largest depth value of its points (scatter-max), where the depth
   value ``((z + 1) / 2 + depth_bias) / (1 + depth_bias)`` is 1 at the nearest point and
   ``depth_bias / (1 + depth_bias)`` at the farthest, never 0 (0 is the empty background);
3. **densify**: a ``pool_size`` × ``pool_size`` max pool within each depth slice closes the gaps
   between the sparse points, so surfaces look solid;
4. **smooth**: a ``smooth_size`` × ``smooth_size`` Gaussian (``smooth_sigma``) within each slice;
5. **project**: the max over the depth slices (the nearest surface wins), divided by the image's
   own maximum (so each image spans [0, 1]), inverted: a light background (1) with the object
   shaded darker the nearer it is to the camera;
6. grey repeated to 3 channels, bilinear resize to ``resolution``, and 8-bit quantisation: a view
   then goes through a model's ordinary image transform, like a decoded photo.

**Presets** (:data:`RENDER_PRESETS`, data, one row of settings each; any setting can be
overridden by keyword):

* ``pointclip-v2`` (:data:`DEFAULT_PRESET`): the original as its zero-shot classifier uses it:
  the first ``max_points`` = 1,024 points of each cloud; a 112 grid whose 7-wide max pool pads only
  2 cells, so the image is its inner 110 cells (``crop`` 1); cells by ``ceil``, clipped to a
  one-cell border (``cells: ceil-inner``), so with the crop the object sits as centred as with
  ``floor``; the depth value rescaled into the 6 inner slices of
  8 (``depth_slices: inner``: slice ``ceil(6 v)``, value ``6 v`` clipped to [1, 6]); its top view
  tilted towards the back and turned 180° (:data:`POINTCLIP_V2_VIEWPOINTS`); 110 → 224 by bilinear
  interpolation with ``align_corners=True``; and its images reach the image tower as [0, 1] values,
  without the model's mean/std (``normalize`` False: the view's business, see
  :func:`evalkit.views.depth.depth_view`).
* ``evalkit``: evalkit's earlier rendering: every point, a centred pool on the full 112 grid,
  ``floor`` cells over the whole grid, all 8 slices, both poles tilted towards the front
  (:data:`VIEWPOINTS`), ``align_corners=False``, normalised as the model's photos.

Common to both, and different from the original: the output is uint8 (the original keeps float;
at most half a grey level), the camera's translation is left out (with per-view normalisation it
changes nothing), the rotation is one matrix from angles rather than two products of Euler
matrices (float32 rounding, ~1e-7), and the viewpoints are taken in evalkit's named order
(``n_views`` takes the first V; at 10 views with uniform weights the order does not matter).
Nothing in this module is tuned on any test set; the viewpoints are fixed and named, and pooling
them is the caller's business (uniform weights are the fair default; PointCLIP V2's per-view
weights were searched on the test sets).

Cost: the grid steps run a few images at a time (:data:`GRID_FLOATS_PER_PASS`), so their 4 MB of
float32 per cloud stays in the CPU's cache, and clouds are transformed :data:`CHUNK` at a time; a
cloud renders bit for bit the same alone or in any batch. On a busy 2-core CPU, 8 clouds of 10,000
points take 80-115 ms for 10 views at 224 px (70-100 clouds/s) with the ``evalkit`` preset, about
1% of open_clip ViT-B-32's image forward of those views (``benchmarks/bench_render.py``).

This is a bottom-layer module: it imports only torch, numpy and (lazily) Pillow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Viewpoint",
    "VIEWPOINTS",
    "POINTCLIP_V2_VIEWPOINTS",
    "VIEW_NAMES",
    "RenderPreset",
    "RENDER_PRESETS",
    "DEFAULT_PRESET",
    "resolve_preset",
    "TILT_SIDE_DEG",
    "TILT_POLE_DEG",
    "CHUNK",
    "GRID_FLOATS_PER_PASS",
    "select_viewpoints",
    "render_depth_views",
    "depth_view_images",
]

#: clouds transformed at once (bounds the memory of the per-view coordinates, 10 x 3 floats per
#: point); the result does not depend on it, nor on GRID_FLOATS_PER_PASS: every step is per image
CHUNK = 16
#: grid cells filled, densified and smoothed in one pass (2 MB of float32: 5 images of 8 x 112^2)
GRID_FLOATS_PER_PASS = 1 << 19

#: PointCLIP V2 tilts its side views by pi/9 (20 degrees), so the camera looks slightly down on
#: the object and shows a little of its top as well as its side.
TILT_SIDE_DEG = 20.0
#: ... and its top and bottom views by pi/15 (12 degrees) off the vertical, so they show a little
#: of the front rather than a bare outline.
TILT_POLE_DEG = 12.0


@dataclass(frozen=True)
class Viewpoint:
    """A camera direction, for a cloud whose up axis is +y and whose front faces +z.

    ``azimuth_deg``: the camera's angle round the up axis, 0 = in front (on +z), 90 = on the
    object's right (+x); ``elevation_deg``: its angle above the horizontal plane (90 = straight
    above, negative = below); ``roll_deg``: the image turned by this angle, counter-clockwise
    (PointCLIP V2's top view is turned 180°). Orthographic projection, so distance does not matter.
    """

    name: str
    azimuth_deg: float
    elevation_deg: float
    roll_deg: float = 0.0

    def rotation(self) -> torch.Tensor:
        """(3, 3) float64 whose rows are the camera's right, up and towards-camera axes in object
        coordinates: ``R @ p`` gives (x right in the image, y up in the image, z nearer = larger)."""
        a, e = math.radians(self.azimuth_deg), math.radians(self.elevation_deg)
        toward = torch.tensor([math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)], dtype=torch.float64)
        right = torch.tensor([math.cos(a), 0.0, -math.sin(a)], dtype=torch.float64)
        up = torch.linalg.cross(toward, right)  # right × up = toward: a right-handed camera frame
        if self.roll_deg:  # turn the image: what was at screen angle t is now at t + roll
            c, s = math.cos(math.radians(self.roll_deg)), math.sin(math.radians(self.roll_deg))
            right, up = c * right - s * up, s * right + c * up
        return torch.stack([right, up, toward])


def _side(name: str, azimuth: float) -> Viewpoint:
    return Viewpoint(name, azimuth, TILT_SIDE_DEG)


#: The 10 viewpoints of PointCLIP V2 (8 azimuths 45 degrees apart, tilted 20 degrees down, plus
#: top and bottom tilted 12 degrees off the vertical), in the order ``n_views`` takes them: the
#: first 4 are the axis-aligned sides, the first 6 add top and bottom (PointCLIP V1's six
#: directions), the last 4 are the diagonals. With ``n_views=V`` the first V are rendered.
VIEWPOINTS: tuple[Viewpoint, ...] = (
    _side("front", 0.0),
    _side("right", 90.0),
    _side("back", 180.0),
    _side("left", 270.0),
    Viewpoint("top", 0.0, 90.0 - TILT_POLE_DEG),
    Viewpoint("bottom", 0.0, -(90.0 - TILT_POLE_DEG)),
    _side("front-right", 45.0),
    _side("back-right", 135.0),
    _side("back-left", 225.0),
    _side("front-left", 315.0),
)
VIEW_NAMES: tuple[str, ...] = tuple(v.name for v in VIEWPOINTS)

#: PointCLIP V2's own 10 cameras, named and ordered as :data:`VIEWPOINTS`. Its rotations
#: (``mv_utils_zs.py``: Euler angles (x, y, z) = (k·45°, 0, 90°) then a 20° turn about y for the
#: sides; (0, ∓90°, 90°) then 12° for the poles; its image rows follow the camera's x and its
#: columns the camera's y) are exactly these viewpoints, except that its top view looks down from
#: behind (azimuth 180°) and is turned 180° in the image, where evalkit's looks from the front.
POINTCLIP_V2_VIEWPOINTS: tuple[Viewpoint, ...] = tuple(
    Viewpoint("top", 180.0, 90.0 - TILT_POLE_DEG, 180.0) if v.name == "top" else v for v in VIEWPOINTS)

# Maps each supported up axis onto +y by a proper rotation (determinant +1, so nothing is
# mirrored): z-up (x, y, z) -> (x, z, -y), i.e. the front is -y; x-up (x, y, z) -> (-y, x, z).
_UP_AXIS = {
    "y": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "z": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),
    "x": ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
}


def select_viewpoints(n_views: int = 10, viewpoints: Sequence[Viewpoint | str] | None = None,
                      table: Sequence[Viewpoint] = VIEWPOINTS) -> tuple[Viewpoint, ...]:
    """The viewpoints a render uses: the first ``n_views`` of ``table`` (a preset's cameras,
    default :data:`VIEWPOINTS`), or exactly ``viewpoints`` (Viewpoint objects or names of
    ``table``'s viewpoints) when given."""
    table = tuple(table)
    names = [v.name for v in table]
    if viewpoints is not None:
        out = []
        for v in viewpoints:
            if isinstance(v, Viewpoint):
                out.append(v)
            elif v in names:
                out.append(table[names.index(v)])
            else:
                raise ValueError(f"unknown viewpoint {v!r}; choose from {', '.join(names)}")
        if not out:
            raise ValueError("viewpoints is empty; give at least one")
        return tuple(out)
    if not 1 <= int(n_views) <= len(table):
        raise ValueError(f"n_views must be between 1 and {len(table)}, got {n_views}")
    return table[: int(n_views)]


#: ``cells``: how a point's x and y become a cell. "floor": ``floor(u * grid)`` over the whole
#: grid; "ceil-inner": PointCLIP V2's ``ceil(u * grid)`` clipped to [1, grid - 2] (a one-cell border)
CELL_RULES = ("floor", "ceil-inner")
#: ``depth_slices``: how a depth value v becomes a slice and the value a cell keeps. "all":
#: ``floor(v * depth_levels)``, value v; "inner": PointCLIP V2's ``ceil(v * (depth_levels - 2))``,
#: value ``v * (depth_levels - 2)`` clipped to [1, depth_levels - 2] (the inner slices)
DEPTH_SLICINGS = ("all", "inner")


@dataclass(frozen=True)
class RenderPreset:
    """Every setting of a depth-view render, as one named row (see :data:`RENDER_PRESETS`).

    ``grid``, ``depth_levels``, ``obj_ratio``, ``depth_bias``, ``pool_size``, ``smooth_size``,
    ``smooth_sigma``: as :func:`render_depth_views`. ``crop``: cells cut from each side of the
    grid after the max pool, before the smoothing (the image is ``grid - 2 * crop`` cells across;
    PointCLIP V2 pads its 7-wide pool by 2, not 3, which is the same as a centred pool followed by
    a crop of 1); ``cells`` (:data:`CELL_RULES`) and ``depth_slices``
    (:data:`DEPTH_SLICINGS`): the quantisation; ``cameras``: the viewpoints ``n_views`` and names
    pick from; ``max_points``: only the first this many points of each cloud are drawn (None:
    all); ``align_corners``: of the bilinear resize to the output resolution; ``normalize``:
    whether the images go through the model's mean/std (False: [0, 1] values reach the image
    tower); read by :func:`evalkit.views.depth.depth_view`, not by the renderer.
    """

    name: str
    grid: int = 112
    depth_levels: int = 8
    obj_ratio: float = 0.8
    depth_bias: float = 0.2
    pool_size: int = 7
    crop: int = 0
    smooth_size: int = 3
    smooth_sigma: float = 3.0
    cells: str = "floor"
    depth_slices: str = "all"
    cameras: tuple[Viewpoint, ...] = VIEWPOINTS
    max_points: int | None = None
    align_corners: bool = False
    normalize: bool = True

    def replace(self, **settings: Any) -> RenderPreset:
        """This preset with some settings changed, checked; an unknown name is a ``ValueError``
        that lists the known ones."""
        known = [f.name for f in dataclasses.fields(self) if f.name != "name"]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(f"unknown render setting(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(known)}")
        out = dataclasses.replace(self, **settings) if settings else self
        out.check()
        return out

    def check(self) -> None:
        """``ValueError`` naming the first bad setting."""
        for name, lo in (("grid", 2), ("depth_levels", 1), ("pool_size", 1), ("smooth_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        for name in ("pool_size", "smooth_size"):
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be odd (a centred window), got {getattr(self, name)}")
        c = self.crop
        if isinstance(c, bool) or int(c) != c or not 0 <= c <= (self.grid - 1) // 2:
            raise ValueError(f"crop must be an integer in [0, {(self.grid - 1) // 2}] (it leaves grid - 2 * crop "
                             f"cells of a {self.grid}-cell grid), got {c!r}")
        if not 0 < self.obj_ratio <= 1:
            raise ValueError(f"obj_ratio must be in (0, 1], got {self.obj_ratio}")
        if self.depth_bias <= 0:
            raise ValueError(f"depth_bias must be > 0 (it keeps the farthest surface off the background), "
                             f"got {self.depth_bias}")
        if self.smooth_sigma <= 0:
            raise ValueError(f"smooth_sigma must be > 0, got {self.smooth_sigma}")
        if self.cells not in CELL_RULES:
            raise ValueError(f"cells must be one of {', '.join(CELL_RULES)}, got {self.cells!r}")
        if self.cells == "ceil-inner" and self.grid < 3:
            raise ValueError(f"cells 'ceil-inner' needs grid >= 3, got {self.grid}")
        if self.depth_slices not in DEPTH_SLICINGS:
            raise ValueError(f"depth_slices must be one of {', '.join(DEPTH_SLICINGS)}, got {self.depth_slices!r}")
        if self.depth_slices == "inner" and self.depth_levels < 3:
            raise ValueError(f"depth_slices 'inner' needs depth_levels >= 3, got {self.depth_levels}")
        m = self.max_points
        if m is not None and (isinstance(m, bool) or int(m) != m or m < 1):
            raise ValueError(f"max_points must be None or an integer >= 1, got {m!r}")
        if not self.cameras or not all(isinstance(v, Viewpoint) for v in self.cameras):
            raise ValueError("cameras must be a non-empty sequence of Viewpoint")
        for name in ("align_corners", "normalize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def image_cells(self) -> int:
        """Cells across the image: the grid less the crop."""
        return self.grid - 2 * self.crop


#: The named render presets (``view.depth_preset``). Data, one row each; see the module docstring
#: and the README for what differs and by how much.
RENDER_PRESETS: dict[str, RenderPreset] = {
    "pointclip-v2": RenderPreset(
        "pointclip-v2", crop=1, cells="ceil-inner", depth_slices="inner",
        cameras=POINTCLIP_V2_VIEWPOINTS, max_points=1024, align_corners=True, normalize=False),
    "evalkit": RenderPreset("evalkit"),
}
#: The preset a depth view uses unless told otherwise: PointCLIP V2's protocol as it ran.
DEFAULT_PRESET = "pointclip-v2"


def resolve_preset(preset: str | RenderPreset = DEFAULT_PRESET, **settings: Any) -> RenderPreset:
    """The preset named ``preset`` (or given), with ``settings`` overriding some of it, checked.
    ``ValueError`` names an unknown preset or setting and lists the choices."""
    if isinstance(preset, RenderPreset):
        base = preset
    elif isinstance(preset, str) and preset in RENDER_PRESETS:
        base = RENDER_PRESETS[preset]
    else:
        raise ValueError(f"unknown render preset {preset!r}; choose from {', '.join(RENDER_PRESETS)}")
    return base.replace(**settings)


def _as_batch(points: Any) -> tuple[torch.Tensor, bool]:
    """(B, N, 3) float tensor and whether the input was a single cloud. A list of clouds of
    different sizes is padded by repeating each cloud's first point, which changes neither its
    bounding box nor any cell's maximum, so the render is exactly that of the unpadded cloud."""
    if isinstance(points, (list, tuple)):
        clouds = [torch.as_tensor(np.asarray(p) if not isinstance(p, torch.Tensor) else p) for p in points]
        if not clouds:
            raise ValueError("no point clouds given (an empty list)")
        for i, c in enumerate(clouds):
            _check_shape(c, 2, f"cloud {i}")
            if c.shape[0] == 0:
                raise ValueError(f"point cloud {i} is empty (0 points); nothing to render")
        n = max(c.shape[0] for c in clouds)
        dtype = torch.promote_types(clouds[0].dtype, torch.float32) if clouds[0].is_floating_point() else torch.float32
        padded = [torch.cat([c, c[:1].expand(n - c.shape[0], 3)]) if c.shape[0] < n else c for c in clouds]
        return torch.stack([c.to(dtype) for c in padded]), False
    t = points if isinstance(points, torch.Tensor) else torch.as_tensor(np.asarray(points))
    if t.dim() == 2:
        _check_shape(t, 2, "the point cloud")
        return t.unsqueeze(0), True
    _check_shape(t, 3, "the point clouds")
    return t, False


def _check_shape(t: torch.Tensor, dims: int, what: str) -> None:
    want = "(N, 3)" if dims == 2 else "(B, N, 3)"
    if t.dim() != dims or t.shape[-1] != 3:
        raise ValueError(f"{what}: expected a {want} array of xyz points, got shape {tuple(t.shape)}")


def _check_values(pts: torch.Tensor, single: bool) -> None:
    if pts.shape[0] == 0:
        raise ValueError("no point clouds given (batch size 0)")
    if pts.shape[1] == 0:
        raise ValueError("point cloud is empty (0 points); nothing to render")
    bad = ~torch.isfinite(pts)
    if bad.any():
        per_cloud = bad.flatten(1).sum(dim=1)
        first = int(torch.nonzero(per_cloud)[0])
        n_nan = int(torch.isnan(pts[first]).sum())
        n_inf = int(torch.isinf(pts[first]).sum())
        where = "the point cloud" if single else f"point cloud {first} of the batch"
        raise ValueError(f"{where} has non-finite coordinates ({n_nan} NaN, {n_inf} inf); "
                         "refusing to render it")


def _gaussian_weights(size: int, sigma: float) -> list[float]:
    """The 1-D factor of a normalised ``size`` x ``size`` Gaussian (the 2-D kernel is its outer
    product with itself)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).tolist()


def _window(x: torch.Tensor, size: int, weights: list[float] | None) -> torch.Tensor:
    """A centred ``size`` x ``size`` window over the last two dimensions with zero padding, done as
    two 1-D passes of shifted slices: the max (``weights`` None) or the weighted sum. Both are
    separable, and on one-channel images this is several times faster than max_pool2d / conv2d;
    the elementwise ops also give the same bits whatever the batch size."""
    h = size // 2
    for dim in (-1, -2):
        n = x.shape[dim]
        xp = F.pad(x, (h, h, 0, 0) if dim == -1 else (0, 0, h, h))
        if weights is None:
            out = xp.narrow(dim, 0, n).clone()
            for s in range(1, size):
                torch.maximum(out, xp.narrow(dim, s, n), out=out)
        else:
            out = xp.narrow(dim, 0, n) * weights[0]
            for s in range(1, size):
                out.add_(xp.narrow(dim, s, n), alpha=weights[s])
        x = out
    return x


def _grid_to_image(cell: torch.Tensor, depth: torch.Tensor, preset: RenderPreset, weights: list[float] | None,
                   resolution: int) -> torch.Tensor:
    """Steps 2-6 for K images: (K, N) cell indices and depth values -> (K, resolution, resolution)
    uint8 grey."""
    k, r, d = cell.shape[0], preset.grid, preset.depth_levels
    volume = torch.zeros(k, d * r * r, dtype=depth.dtype, device=depth.device)
    volume.scatter_reduce_(1, cell, depth, reduce="amax", include_self=True)
    volume = volume.view(k * d, r, r)
    # 3.-4. densify and smooth each depth slice (zero padding is safe: every value is >= 0)
    if preset.pool_size > 1:
        volume = _window(volume, preset.pool_size, None)
    if preset.crop:  # PointCLIP V2: its pool, padded 2 not 3, keeps the inner grid - 2 cells
        volume = volume[:, preset.crop:r - preset.crop, preset.crop:r - preset.crop]
    if weights is not None:
        volume = _window(volume, len(weights), weights)
    c = preset.image_cells
    # 5. nearest surface, per-image [0, 1], inverted to a light background
    img = volume.view(k, d, c, c).amax(dim=1)
    img = img / img.flatten(1).amax(dim=1).clamp_min(torch.finfo(img.dtype).tiny).view(-1, 1, 1)
    img = (1 - img).unsqueeze(1)
    # 6. to `resolution`, 8 bits
    if resolution != c:
        img = F.interpolate(img, size=(resolution, resolution), mode="bilinear", align_corners=preset.align_corners,
                            antialias=resolution < c)
    return (img[:, 0].clamp(0, 1) * 255).round_().to(torch.uint8)


def render_depth_views(
    points: Any,
    n_views: int = 10,
    resolution: int = 224,
    *,
    preset: str | RenderPreset = DEFAULT_PRESET,
    viewpoints: Sequence[Viewpoint | str] | None = None,
    up_axis: str = "y",
    **settings: Any,
) -> torch.Tensor:
    """Depth views of point clouds as uint8 images.

    ``points``: one cloud (N, 3) → (V, 3, H, W); a batch (B, N, 3), or a list of B clouds of any
    sizes → (B, V, 3, H, W); tensors or arrays. Computed on the points' device, in float32 (or
    float64 for float64 input). ``preset``: a name of :data:`RENDER_PRESETS` (default
    ``pointclip-v2``) or a :class:`RenderPreset`; ``settings``: any of its fields, overriding it
    (``grid``, ``depth_levels``, ``obj_ratio``, ``depth_bias``, ``pool_size``, ``crop``,
    ``smooth_size``, ``smooth_sigma``, ``cells``, ``depth_slices``, ``cameras``, ``max_points``,
    ``align_corners``; ``normalize`` is accepted and ignored here: it is the view's). ``n_views``
    takes the first V of the preset's cameras; ``viewpoints`` (names or :class:`Viewpoint`
    objects) overrides it. ``up_axis``: which input axis points up ("y": ModelNet / PointNet's h5;
    "z": the front is then -y). ``resolution`` 224 is the usual CLIP input.

    Raises ``ValueError`` for an unknown preset or setting, a bad setting, a cloud with NaN or
    infinite coordinates, an empty cloud or a malformed array, naming which cloud of the batch.
    """
    if up_axis not in _UP_AXIS:
        raise ValueError(f"unknown up_axis {up_axis!r}; choose from {', '.join(_UP_AXIS)}")
    if isinstance(resolution, bool) or int(resolution) != resolution or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}")
    chosen = resolve_preset(preset, **settings)
    views = select_viewpoints(n_views, viewpoints, chosen.cameras)

    pts, single = _as_batch(points)
    if not pts.is_floating_point() or pts.dtype in (torch.float16, torch.bfloat16):
        pts = pts.float()
    _check_values(pts, single)
    if chosen.max_points is not None:
        pts = pts[:, : chosen.max_points]
    if pts.shape[0] > CHUNK:
        return torch.cat([_render(pts[i:i + CHUNK], int(resolution), views, up_axis, chosen)
                          for i in range(0, pts.shape[0], CHUNK)])
    out = _render(pts, int(resolution), views, up_axis, chosen)
    return out[0] if single else out


def _render(pts: torch.Tensor, resolution: int, views: tuple[Viewpoint, ...], up_axis: str,
            preset: RenderPreset) -> torch.Tensor:
    """:func:`render_depth_views` on a checked (B, N, 3) float batch."""
    dtype, device = pts.dtype, pts.device
    b, n, _ = pts.shape
    v, r, d = len(views), preset.grid, preset.depth_levels
    obj_ratio, depth_bias = preset.obj_ratio, preset.depth_bias

    if up_axis != "y":  # a signed permutation of the coordinates: exact
        m = _UP_AXIS[up_axis]
        pts = torch.stack([sum(pts[..., j] * m[i][j] for j in range(3) if m[i][j]) for i in range(3)], dim=-1)
    rot = torch.stack([vp.rotation() for vp in views]).to(dtype=dtype, device=device)  # (V, 3, 3)
    # (B, V, N, 3) in each camera's frame, as three broadcast multiply-adds in a fixed order rather
    # than a matmul, so a cloud renders bit for bit the same alone or in any batch
    pp = pts[:, None, :, None, :]  # (B, 1, N, 1, 3)
    rr = rot[None, :, None, :, :]  # (1, V, 1, 3, 3)
    cam = pp[..., 0] * rr[..., 0] + pp[..., 1] * rr[..., 1] + pp[..., 2] * rr[..., 2]

    # 1. per view: centre on the bounding box, scale its longest side to [-1, 1]
    hi, lo = cam.amax(dim=2, keepdim=True), cam.amin(dim=2, keepdim=True)
    centre = (hi + lo) / 2
    extent = (hi - lo).amax(dim=-1, keepdim=True)
    extent = torch.where(extent > 0, extent, torch.ones_like(extent))  # a single point: a dot
    cam = (cam - centre) / extent * 2

    # 2. quantise; image row 0 is the top (largest y), column 0 the left (smallest x)
    x = (cam[..., 0] * obj_ratio + 1) / 2
    y = (1 - cam[..., 1] * obj_ratio) / 2
    depth = ((cam[..., 2] + 1) / 2 + depth_bias) / (1 + depth_bias)  # in [bias/(1+bias), 1]
    if preset.cells == "floor":
        col = (x * r).floor().long().clamp_(0, r - 1)
        row = (y * r).floor().long().clamp_(0, r - 1)
    else:  # "ceil-inner"
        col = (x * r).ceil().clamp_(1, r - 2).long()
        row = (y * r).ceil().clamp_(1, r - 2).long()
    if preset.depth_slices == "all":
        level = (depth * d).floor().long().clamp_(0, d - 1)
    else:  # "inner": the value a cell keeps is rescaled too (the image is divided by its maximum)
        depth = depth * (d - 2)
        level = depth.ceil().long().clamp_(0, d - 1)
        depth = depth.clamp(1, d - 2)
    cell = ((level * r + row) * r + col).reshape(b * v, n)  # into a (D, R, R) grid per image
    depth = depth.reshape(b * v, n)
    weights = _gaussian_weights(preset.smooth_size, preset.smooth_sigma) if preset.smooth_size > 1 else None
    # the grid steps run a few images at a time: their grids then stay in the CPU's cache, which
    # on a 2-core CPU is 3-5x faster than one pass over the whole batch
    per = max(1, GRID_FLOATS_PER_PASS // (d * r * r))
    img = torch.cat([_grid_to_image(cell[i:i + per], depth[i:i + per], preset, weights, resolution)
                     for i in range(0, b * v, per)])
    # grey to 3 channels
    return img.view(b, v, 1, resolution, resolution).expand(-1, -1, 3, -1, -1).contiguous()


def depth_view_images(points: Any, n_views: int = 10, resolution: int = 224, **kwargs: Any) -> list:
    """The depth views of one (N, 3) cloud as ``n_views`` PIL RGB images (the per-sample path of
    a data loader); keyword arguments as :func:`render_depth_views`."""
    from PIL import Image

    t = points if isinstance(points, torch.Tensor) else torch.as_tensor(np.asarray(points))
    if t.dim() != 2:
        raise ValueError(f"depth_view_images renders one cloud: expected shape (N, 3), got {tuple(t.shape)}")
    views = render_depth_views(t, n_views, resolution, **kwargs)
    return [Image.fromarray(view.permute(1, 2, 0).contiguous().cpu().numpy()) for view in views]  # (H, W, 3): RGB
