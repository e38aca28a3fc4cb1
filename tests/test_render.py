"""Depth views of point clouds (evalkit.views.render) and the demo's generated solids (evalkit.demo.solids).

Expected silhouettes are worked out from the geometry and the documented constants (obj_ratio of
the grid, a max pool of k cells widening a shape by k - 1 cells, ...), not read off the renderer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalkit.demo import solids
from evalkit.views.render import (
    CHUNK,
    VIEW_NAMES,
    VIEWPOINTS,
    Viewpoint,
    _gaussian_weights,
    _window,
    depth_view_images,
    render_depth_views,
)

FRONT = Viewpoint("front-level", 0.0, 0.0)  # no tilt: a cube shows exactly one face
BACK = Viewpoint("back-level", 180.0, 0.0)
EVALKIT = {"preset": "evalkit"}  # the silhouette tests below work out evalkit's geometry (floor cells, full grid)
SHARP = {"pool_size": 1, "smooth_size": 1, **EVALKIT}  # no densify, no smoothing: one cell per point


def _grid(n: int) -> np.ndarray:
    u, v = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    return np.column_stack([u.ravel(), v.ravel()])


def cube_surface(n: int = 120) -> torch.Tensor:
    """Points on a regular n x n grid on each face of [-1, 1]^3 (about 0.75 grid cells apart once
    rendered, so even without densifying every cell of a face is hit)."""
    uv = _grid(n)
    faces = []
    for axis in range(3):
        for side in (-1.0, 1.0):
            p = np.insert(uv, axis, side, axis=1)
            faces.append(p)
    return torch.tensor(np.concatenate(faces), dtype=torch.float32)


def ell() -> torch.Tensor:
    """An upright bar (x = 0, y in [0, 2]) with a foot (y = 0) sticking out towards +x: an L."""
    t = torch.linspace(0, 1, 400)
    bar = torch.stack([torch.zeros_like(t), 2 * t, torch.zeros_like(t)], dim=1)
    foot = torch.stack([t, torch.zeros_like(t), torch.zeros_like(t)], dim=1)
    return torch.cat([bar, foot])


def mask(view: torch.Tensor) -> np.ndarray:
    """Object pixels of one (3, H, W) view: anything darker than the white background."""
    return view[0].numpy() < 255


def extent(m: np.ndarray, axis: int) -> tuple[int, int]:
    """First and last index along ``axis`` (0 = rows, 1 = columns) holding object pixels."""
    idx = np.flatnonzero(m.any(axis=1 - axis))
    return int(idx[0]), int(idx[-1])


# -- silhouettes ---------------------------------------------------------------------------------


def test_cube_front_is_a_centred_square_of_obj_ratio_side():
    r = 112
    view = render_depth_views(cube_surface(), viewpoints=[FRONT], resolution=r, grid=r, **SHARP)[0]
    m = mask(view)
    top, bottom = extent(m, 0)
    left, right = extent(m, 1)
    side = 0.8 * r  # obj_ratio of the frame
    assert abs((right - left + 1) - side) <= 1 and abs((bottom - top + 1) - side) <= 1
    assert abs(left - (r - 1 - right)) <= 1 and abs(top - (r - 1 - bottom)) <= 1  # centred
    assert m[top:bottom + 1, left:right + 1].all()  # filled: the face has no holes
    # the face is the nearest surface: normalised to 1, inverted to black; the background is white
    assert int(view[0, r // 2, r // 2]) == 0
    assert int(view[0, 0, 0]) == 255 and int(view[0, -1, -1]) == 255


def test_default_densify_and_smooth_widen_the_square_by_their_reach():
    # 7-cell max pool: +3 cells each side; 3x3 Gaussian: +1 more; then bilinear 112 -> 224
    # doubles the cells and reaches one pixel further on each side (half a cell of interpolation)
    view = render_depth_views(cube_surface(), viewpoints=[FRONT], **EVALKIT)[0]
    assert view.shape == (3, 224, 224)
    left, right = extent(mask(view), 1)
    expected = (0.8 * 112 + (7 - 1) + (3 - 1)) * 2 + 2
    assert abs((right - left + 1) - expected) <= 1.5
    assert abs(left - (223 - right)) <= 2
    assert int(view[0, 112, 112]) == 0


def test_densify_and_smooth_equal_torch_max_pool_and_gaussian_conv():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 40, 40, generator=gen) * (torch.rand(6, 40, 40, generator=gen) > 0.9)
    assert torch.equal(_window(x, 7, None), F.max_pool2d(x[:, None], 7, stride=1, padding=3)[:, 0])
    for size, sigma in ((3, 3.0), (5, 1.0)):
        t = torch.arange(size, dtype=torch.float64) - size // 2
        k = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
        k = (k / k.sum()).float().view(1, 1, size, size)
        want = F.conv2d(x[:, None], k, padding=size // 2)[:, 0]
        torch.testing.assert_close(_window(x, size, _gaussian_weights(size, sigma)), want, rtol=0, atol=1e-6)


def test_tilted_front_view_shows_the_top_face_lighter():
    # PointCLIP V2's 20-degree tilt: a unit cube's silhouette is cos 20 + sin 20 tall and 1 wide
    view = render_depth_views(cube_surface(), n_views=1, resolution=112, grid=112, **SHARP)[0]
    m = mask(view)
    top, bottom = extent(m, 0)
    left, right = extent(m, 1)
    ratio = (bottom - top + 1) / (right - left + 1)
    want = math.cos(math.radians(20)) + math.sin(math.radians(20))
    assert abs(ratio - want) < 0.04
    # the top face recedes from the camera: lighter than the front face below it
    col = view[0, top:bottom + 1, 56].float()
    assert col[:5].mean() > col[-5:].mean() + 20


def test_a_line_of_points_draws_a_thin_line():
    t = torch.linspace(-1, 1, 500)
    line = torch.stack([t, torch.zeros_like(t), torch.zeros_like(t)], dim=1)
    sharp = mask(render_depth_views(line, viewpoints=[FRONT], resolution=112, grid=112, **SHARP)[0])
    assert np.flatnonzero(sharp.any(axis=1)).tolist() == [56]  # one row, the middle one
    left, right = extent(sharp, 1)
    assert abs((right - left + 1) - 0.8 * 112) <= 1
    thick = mask(render_depth_views(line, viewpoints=[FRONT], **EVALKIT)[0])
    top, bottom = extent(thick, 0)
    assert bottom - top + 1 <= (1 + 6 + 2) * 2 + 2  # a cell, widened by pool and blur, doubled


def test_views_look_from_where_they_say():
    cloud = ell()
    front, back = render_depth_views(cloud, viewpoints=[FRONT, BACK], resolution=112, grid=112, **SHARP)
    f, b = mask(front), mask(back)
    # front: the bar stands on the left, the foot runs right along the bottom; up is up
    top, bottom = extent(f, 0)
    left, right = extent(f, 1)
    assert f[top, left] and not f[top, right]
    assert f[bottom, left:right + 1].all()
    # back: the same L mirrored left to right
    assert np.array_equal(b, f[:, ::-1])
    # from the right (camera on +x) the foot points at the camera: a vertical line, the foot's
    # near end the darkest pixel at its bottom
    right_view = render_depth_views(cloud, viewpoints=["right"], resolution=112, grid=112, **SHARP)[0]
    rm = mask(right_view)
    cols = np.flatnonzero(rm.any(axis=0))
    assert len(cols) <= 2
    assert int(right_view[0, extent(rm, 0)[1], cols].min()) == 0
    # from above, the bar points at the camera: its top, the nearest point, is the dark left end
    # of the foot's line
    top_view = render_depth_views(cloud, viewpoints=[Viewpoint("top", 0, 90)], resolution=112, grid=112,
                                  **SHARP)[0]
    tm = mask(top_view)
    (row,) = np.flatnonzero(tm.any(axis=1))
    left, right = extent(tm, 1)
    assert int(top_view[0, row, left]) == 0 and int(top_view[0, row, right]) > 100


def test_all_ten_views_of_an_asymmetric_cloud_differ():
    views = render_depth_views(ell(), resolution=64)
    assert views.shape == (10, 3, 64, 64)
    flat = views.flatten(1)
    for i in range(10):
        for j in range(i + 1, 10):
            assert not torch.equal(flat[i], flat[j]), (VIEW_NAMES[i], VIEW_NAMES[j])


# -- shapes, batching, determinism ---------------------------------------------------------------


def test_shapes_dtype_and_grey_channels():
    clouds = torch.rand(2, 300, 3)
    out = render_depth_views(clouds, n_views=3, resolution=40)
    assert out.shape == (2, 3, 3, 40, 40) and out.dtype == torch.uint8
    assert torch.equal(out[:, :, 0], out[:, :, 1]) and torch.equal(out[:, :, 0], out[:, :, 2])
    # per image, the nearest point is black and the background white (no resize to blur them)
    native = render_depth_views(clouds, n_views=3, resolution=112).flatten(2)
    assert (native.amin(dim=2) == 0).all() and (native.amax(dim=2) == 255).all()
    assert render_depth_views(clouds[0], n_views=3, resolution=40).shape == (3, 3, 40, 40)


def test_fewer_views_are_the_first_of_the_named_ten():
    cloud = torch.rand(500, 3)
    all_ten = render_depth_views(cloud, resolution=32)
    assert [v.name for v in VIEWPOINTS[:6]] == ["front", "right", "back", "left", "top", "bottom"]
    assert torch.equal(render_depth_views(cloud, n_views=6, resolution=32), all_ten[:6])
    by_name = render_depth_views(cloud, viewpoints=["top", "front"], resolution=32)
    assert torch.equal(by_name, all_ten[[4, 0]])
    with pytest.raises(ValueError, match="n_views"):
        render_depth_views(cloud, n_views=11)
    with pytest.raises(ValueError, match="unknown viewpoint 'side'"):
        render_depth_views(cloud, viewpoints=["side"])


def test_batched_equals_one_by_one_and_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    n = CHUNK + 2  # more than one chunk
    clouds = torch.randn(n, 700, 3, generator=gen) * torch.tensor([1.0, 0.5, 2.0])
    batched = render_depth_views(clouds, resolution=64)
    assert batched.shape == (n, 10, 3, 64, 64)
    for i in range(n):
        assert torch.equal(batched[i], render_depth_views(clouds[i], resolution=64))
    assert torch.equal(batched, render_depth_views(clouds, resolution=64))
    seven = render_depth_views(clouds[:3], n_views=7, resolution=64)  # not a whole number of grid passes
    assert torch.equal(seven, batched[:3, :7])
    # clouds of different sizes in one list render exactly as they do alone
    ragged = [clouds[0], clouds[1, :250], clouds[2, :40].numpy()]
    out = render_depth_views(ragged, resolution=64)
    for i, c in enumerate(ragged):
        assert torch.equal(out[i], render_depth_views(torch.as_tensor(c), resolution=64))


def test_pil_images_match_the_tensor():
    cloud = torch.rand(400, 3)
    images = depth_view_images(cloud, n_views=4, resolution=48)
    tensor = render_depth_views(cloud, n_views=4, resolution=48)
    assert len(images) == 4
    for img, t in zip(images, tensor, strict=True):
        assert img.mode == "RGB" and img.size == (48, 48)
        assert np.array_equal(np.asarray(img), t.permute(1, 2, 0).numpy())


def test_up_axis_z_turns_the_cloud_upright():
    gen = torch.Generator().manual_seed(1)
    y_up = torch.rand(600, 3, generator=gen) * torch.tensor([1.0, 2.0, 0.5])  # asymmetric on every axis
    z_up = torch.stack([y_up[:, 0], -y_up[:, 2], y_up[:, 1]], dim=1)  # the same object, z up, front at -y
    assert torch.equal(render_depth_views(z_up, up_axis="z", resolution=64), render_depth_views(y_up, resolution=64))


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value, word", [(float("nan"), "1 NaN"), (float("inf"), "1 inf")])
def test_non_finite_points_raise_naming_the_cloud(value, word):
    clouds = torch.rand(3, 50, 3)
    clouds[2, 7, 1] = value
    with pytest.raises(ValueError, match=rf"point cloud 2 of the batch has non-finite coordinates .*{word}"):
        render_depth_views(clouds)
    with pytest.raises(ValueError, match="the point cloud has non-finite"):
        render_depth_views(clouds[2])


def test_empty_and_malformed_clouds_raise():
    with pytest.raises(ValueError, match="empty"):
        render_depth_views(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="point cloud 1 is empty"):
        render_depth_views([torch.rand(5, 3), torch.zeros(0, 3)])
    with pytest.raises(ValueError, match=r"expected a \(N, 3\) array .* got shape \(10, 2\)"):
        render_depth_views(torch.rand(10, 2))
    with pytest.raises(ValueError, match="pool_size must be odd"):
        render_depth_views(torch.rand(10, 3), pool_size=4)


def test_a_single_point_is_a_dot():
    view = render_depth_views(torch.zeros(1, 3), viewpoints=[FRONT], resolution=112, grid=112, **SHARP)[0]
    assert mask(view).sum() == 1 and int(view[0, 56, 56]) == 0
    # smoothing spreads the dot over 3x3 cells and lowers its peak; the per-image normalisation
    # brings the peak back to black
    blurred = render_depth_views(torch.zeros(1, 3), viewpoints=[FRONT], resolution=112, grid=112, pool_size=1,
                                 **EVALKIT)[0]
    assert mask(blurred).sum() == 9 and int(blurred[0, 56, 56]) == 0


# -- the demo's solids ---------------------------------------------------------------------------


def test_solids_are_pure_functions_of_seed_split_and_index():
    a = solids.SolidsClassification("test", n=12, seed=3, n_points=256)
    b = solids.SolidsClassification("test", n=12, seed=3, n_points=256)
    for i in range(12):
        pa, la = a[i]
        pb, lb = b[i]
        assert la == lb and a.key(i) == b.key(i) and np.array_equal(pa, pb)
        assert pa.shape == (256, 3) and pa.dtype == np.float32 and np.isfinite(pa).all()
        assert np.linalg.norm(pa, axis=1).max() == pytest.approx(1.0, abs=1e-5)  # in the unit sphere
    train = solids.SolidsClassification("train", n=12, seed=3, n_points=256)
    assert not np.array_equal(train[0][0], a[0][0]) and train.key(0) != a.key(0)
    assert not np.array_equal(a[0][0], a[1][0])
    assert a.labels() == [a[i][1] for i in range(12)]
    with pytest.raises(ValueError, match="unknown Solids split 'val'"):
        solids.SolidsClassification("val")


def test_every_solid_occurs_and_class_names_are_shapeworld_words():
    from evalkit.demo.shapeworld import SHAPES

    labels = solids.SolidsClassification("test", n=120).labels()
    assert set(labels) == set(range(len(solids.SOLIDS)))
    assert sorted(solids.CLASSNAMES) == sorted(SHAPES)


def _front_mask(solid: str) -> np.ndarray:
    pts = solids.solid_points(solid, 6000, np.random.default_rng(0))
    return mask(render_depth_views(torch.tensor(pts, dtype=torch.float32), viewpoints=[FRONT], resolution=64,
                                   grid=64, pool_size=3, smooth_size=1, **EVALKIT)[0])


def test_solids_show_their_silhouettes_and_differ():
    masks = {s: _front_mask(s) for s in solids.SOLIDS}
    # fraction of the bounding square covered: a disc pi/4, a square 1, a triangle point up 1/2
    # of its box, a diamond (rhombus) 1/2 of its box
    def fill(m: np.ndarray) -> float:
        (t, b), (lo, hi) = extent(m, 0), extent(m, 1)
        return m.sum() / ((b - t + 1) * (hi - lo + 1))

    assert abs(fill(masks["sphere"]) - math.pi / 4) < 0.06
    assert fill(masks["cube"]) > 0.97
    assert abs(fill(masks["triangular prism"]) - 0.5) < 0.08
    assert abs(fill(masks["bicone"]) - 0.5) < 0.08
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.85, (a, b, iou)
