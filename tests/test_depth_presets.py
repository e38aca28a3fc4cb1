"""Depth-view render presets (evalkit.views.render.RENDER_PRESETS, issue 16 §6).

The ``pointclip-v2`` preset is checked against :func:`pointclip_v2_reference`, a slow re-statement
written here from the facts of PointCLIP V2's zero-shot code (``zeroshot_cls/trainers/mv_utils_zs.py``
and ``zeroshot.py``; MIT): the first 1,024 points; per view two rotations by Euler matrices
(``R = (X(a) Y(b) Z(c))^T`` applied as ``points @ R``, then a tilt about y) and a translation;
bounding-box normalisation; ``obj_ratio`` on x and y; cells ``ceil(u * 112)`` clipped to
[1, 110]; depth ``((z + 1) / 2 + 0.2) / 1.2 * 6``, slice its ceil, value clipped to [1, 6];
scatter-max into an 8 x 112 x 112 grid indexed (z, y, x) and read as (z, x, y); a 7 x 7 max pool
padded 2 (110 cells); a 3 x 3 Gaussian (sigma 3) padded 1; max over slices; divided by the image's
maximum; 1 - image; bilinear to 224 with ``align_corners=True``; no mean/std. Numpy and Python
loops, nothing from evalkit.views.render.

Run as a script, it prints the share of pixels each difference between the two presets changes
(the README's figures): ``python tests/test_depth_presets.py [n_clouds]``.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalkit import api
from evalkit.demo import solids
from evalkit.models import load
from evalkit.tasks.spec import TaskSpecError
from evalkit.views.depth import depth_view
from evalkit.views.image import ImageView, image_view
from evalkit.views.render import (
    DEFAULT_PRESET,
    RENDER_PRESETS,
    VIEW_NAMES,
    VIEWPOINTS,
    render_depth_views,
    resolve_preset,
)

# -- the reference -------------------------------------------------------------------------------

# PointCLIP V2's 10 views: Euler angles (x, y, z) of the first rotation, and the tilt about y
_PI = math.pi
_ORIGINAL_VIEWS = [((k * _PI / 4, 0.0, _PI / 2), _PI / 9) for k in (1, 3, 5, 7)] \
    + [((k * _PI / 2, 0.0, _PI / 2), _PI / 9) for k in (0, 1, 2, 3)] \
    + [((0.0, -_PI / 2, _PI / 2), _PI / 15), ((0.0, _PI / 2, _PI / 2), _PI / 15)]
# evalkit's named order (front, right, back, left, top, bottom, front-right, back-right, back-left,
# front-left) as indices into the original's: its views 4-7 are the sides at 0, 90, 180, 270
# degrees, 9 looks down, 8 looks up, 0-3 are the diagonals at 45, 135, 225, 315 degrees
ORIGINAL_INDEX = [4, 5, 6, 7, 9, 8, 0, 1, 2, 3]


def _euler(x: float, y: float, z: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(x), math.sin(x), math.cos(y), math.sin(y), math.cos(z), math.sin(z)
    xm = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ym = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    zm = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return xm @ ym @ zm


def _bilinear_align_corners(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W) -> (size, size), bilinear, the corner pixels' centres on the corners."""
    for axis in (0, 1):
        n = img.shape[axis]
        out = []
        for i in range(size):
            src = i * (n - 1) / (size - 1)
            i0 = min(int(math.floor(src)), n - 1)
            i1 = min(i0 + 1, n - 1)
            w = src - i0
            a, b = np.take(img, i0, axis=axis), np.take(img, i1, axis=axis)
            out.append(a * (1 - w) + b * w)
        img = np.stack(out, axis=axis)
    return img


def pointclip_v2_reference(cloud: np.ndarray, imsize: int = 224) -> np.ndarray:
    """(10, imsize, imsize) float images in [0, 1] of one (N, 3) cloud, in evalkit's view order."""
    res, depth, ratio, bias = 112, 8, 0.8, 0.2
    pts = np.asarray(cloud, dtype=np.float64)[:1024]
    g1d = np.exp(-((np.arange(3) - 1.0) ** 2) / (2 * 3.0**2))
    gauss = np.outer(g1d, g1d)
    gauss /= gauss.sum()
    images = []
    for angles, tilt in _ORIGINAL_VIEWS:
        p = pts @ _euler(*angles).T
        p = p @ _euler(0.0, tilt, 0.0).T
        p = p - np.array([-0.5, -0.5, -1.5])
        pmax, pmin = p.max(axis=0), p.min(axis=0)
        p = (p - (pmax + pmin) / 2) / (pmax - pmin).max() * 2
        p[:, :2] *= ratio
        grid = np.zeros((depth, res, res))
        for x, y, z in p:
            xi = min(max(math.ceil((x + 1) / 2 * res), 1), res - 2)
            yi = min(max(math.ceil((y + 1) / 2 * res), 1), res - 2)
            zv = ((z + 1) / 2 + bias) / (1 + bias) * (depth - 2)
            zi = math.ceil(zv)
            zv = min(max(zv, 1), depth - 2)
            grid[zi, yi, xi] = max(grid[zi, yi, xi], zv)
        grid = grid.transpose(0, 2, 1)  # rows follow x, columns y
        padded = np.pad(grid, ((0, 0), (2, 2), (2, 2)), constant_values=-np.inf)
        pooled = np.lib.stride_tricks.sliding_window_view(padded, (7, 7), axis=(1, 2)).max(axis=(-2, -1))
        padded = np.pad(pooled, ((0, 0), (1, 1), (1, 1)))
        smooth = (np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2)) * gauss).sum(axis=(-2, -1))
        img = smooth.max(axis=0)
        img = 1 - img / img.max()
        images.append(_bilinear_align_corners(img, imsize))
    return np.stack([images[i] for i in ORIGINAL_INDEX])


# -- clouds --------------------------------------------------------------------------------------


def generated_clouds(n: int, seed: int = 2024) -> list[np.ndarray]:
    """``n`` of the demo's generated solids, 2,048 points each in random order (as ModelNet's)."""
    return [solids.sample_points(solids.sample_attrs(seed, "test", i)) for i in range(n)]


def _blob(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(2048, 3)) * rng.uniform(0.2, 1.0, size=3)
    # the second half of the points is elsewhere: only the first 1,024 are drawn
    p[1024:] += np.array([2.0, 0.0, 0.0])
    return p


# -- the preset against the reference -------------------------------------------------------------


CLOUDS = [*generated_clouds(3), _blob(1), _blob(2)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("index", range(len(CLOUDS)))
def test_pointclip_v2_preset_equals_the_original_projection(index, dtype):
    cloud = CLOUDS[index]
    want = np.round(pointclip_v2_reference(cloud) * 255)
    got = render_depth_views(torch.as_tensor(cloud, dtype=dtype), preset="pointclip-v2")[:, 0].numpy()
    diff = np.abs(got.astype(np.float64) - want)
    # the same pixels, up to rounding: only a value within float error of half a grey level can
    # round the other way (none in float64 here; a few in a million in float32)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 1e-4


def test_the_two_presets_differ_in_every_listed_way():
    """Each setting of the pointclip-v2 preset that the evalkit preset does differently changes
    pixels on its own (so none is a dead setting), and they add up to most of the difference."""
    clouds = torch.as_tensor(np.stack(generated_clouds(2)))
    shares = preset_differences(clouds)
    for item, share in shares.items():
        assert share > 0.002, (item, share)
    assert shares["all (evalkit preset)"] > max(v for k, v in shares.items() if k != "all (evalkit preset)")


def test_presets_are_data_and_the_default_is_pointclip_v2():
    assert DEFAULT_PRESET == "pointclip-v2" and set(RENDER_PRESETS) == {"pointclip-v2", "evalkit"}
    v2, ev = RENDER_PRESETS["pointclip-v2"], RENDER_PRESETS["evalkit"]
    assert (v2.image_cells, v2.max_points, v2.align_corners, v2.normalize) == (110, 1024, True, False)
    assert (ev.image_cells, ev.max_points, ev.align_corners, ev.normalize) == (112, None, False, True)
    # the cameras differ only in the top view: PointCLIP V2's looks down from behind, turned 180°
    top = VIEW_NAMES.index("top")
    for i, (a, b) in enumerate(zip(v2.cameras, ev.cameras, strict=True)):
        assert a.name == b.name and torch.equal(a.rotation(), b.rotation()) == (i != top)
    r2, re = v2.cameras[top].rotation(), ev.cameras[top].rotation()
    assert r2[2, 2] < 0 < re[2, 2]  # towards the back (-z) vs the front
    torch.testing.assert_close(r2[0], torch.tensor([1.0, 0, 0], dtype=torch.float64))  # right is still +x
    assert ev.cameras == VIEWPOINTS
    with pytest.raises(ValueError, match=r"unknown render preset 'pointclip'; choose from pointclip-v2, evalkit"):
        resolve_preset("pointclip")
    with pytest.raises(ValueError, match=r"unknown render setting\(s\) 'ratio'; known: grid, "):
        resolve_preset("evalkit", ratio=0.5)
    with pytest.raises(ValueError, match="crop must be an integer in"):
        resolve_preset("evalkit", crop=60)
    with pytest.raises(ValueError, match="depth_slices must be one of all, inner"):
        resolve_preset("evalkit", depth_slices="outer")


def test_only_the_first_max_points_are_drawn():
    cloud = _blob(3)
    first = render_depth_views(torch.as_tensor(cloud[:1024]), n_views=4, resolution=64)
    assert torch.equal(render_depth_views(torch.as_tensor(cloud), n_views=4, resolution=64), first)
    assert not torch.equal(render_depth_views(torch.as_tensor(cloud), n_views=4, resolution=64, max_points=None), first)


# -- the view: normalisation, identity ----------------------------------------------------------


def test_the_default_depth_view_feeds_unnormalised_images_and_keys_its_preset():
    enc = load("eva-clip-demo")
    base = image_view(enc, "crop")
    v2, ev = depth_view(base, 2, 64), depth_view(base, 2, 64, preset="evalkit")
    assert "preset=pointclip-v2" in v2.identity and "preset=evalkit" in ev.identity
    assert v2.identity != ev.identity and v2.batch_key != ev.batch_key
    cloud = _blob(4)
    batch = v2.sample(cloud).unsqueeze(0)  # (1, 2, 3, S, S) uint8
    with torch.no_grad():
        got = v2.embed(enc, batch)
        # PointCLIP V2: the [0, 1] images themselves reach the image tower
        per_view = F.normalize(enc.encode_image(batch[0].float() / 255), dim=-1)
    torch.testing.assert_close(got, F.normalize(per_view.mean(0, keepdim=True), dim=-1), rtol=0, atol=1e-6)
    # the evalkit preset keeps the model's own mean and std
    assert ev.base.transform == base.transform and v2.base.transform.mean == (0.0, 0.0, 0.0)
    assert v2.base.transform.std == (1.0, 1.0, 1.0) and base.transform.mean != (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"depth views: unknown render preset 'v2'; choose from pointclip-v2, evalkit"):
        depth_view(base, 2, 64, preset="v2")
    with pytest.raises(ValueError, match="has no mean/std to turn off"):
        depth_view(ImageView(lambda im: torch.zeros(3, 8, 8), "opaque"), 2, 64)
    opaque = ImageView(lambda im: torch.zeros(3, 8, 8), "opaque")
    assert depth_view(opaque, 2, 64, preset="evalkit").base is opaque  # normalised presets keep the transform
    # a view count or size no render can make fails when the view is made, not on every cloud
    with pytest.raises(ValueError, match="depth views: n_views must be between 1 and 10, got 11"):
        depth_view(base, 11, 64)
    with pytest.raises(ValueError, match="depth views: resolution must be a whole number of pixels >= 1, got 0"):
        depth_view(base, 2, 0)


# -- a task: view.depth_preset ----------------------------------------------------------------

DEPTH_TASK = """\
task: {name}
family: classification
metric: acc1
source: {{type: pointfolder, path: {root}}}
templates: ["a depth map of a {{c}}."]
view: {{cloud: depth-views, depth_views: 3{preset}}}
"""


def test_a_task_names_its_preset_the_result_records_it_and_caches_never_mix(tmp_path):
    root = tmp_path / "clouds"
    for i, c in enumerate(("cube", "sphere")):
        (root / c).mkdir(parents=True)
        np.save(root / c / "0.npy", _blob(10 + i).astype(np.float32))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name, preset in (("dflt", ""), ("ev", ", depth_preset: evalkit"), ("bad", ", depth_preset: pointclip")):
        (tasks / f"{name}.yaml").write_text(DEPTH_TASK.format(name=name, root=root, preset=preset))
    cache = tmp_path / "cache"

    def run(task: str, out: str, cache_dir):
        report = api.evaluate("eva-clip-demo", task, task_dirs=[tasks], output_dir=tmp_path / out, cache_dir=cache_dir,
                              save_predictions=True, progress=False, raise_errors=True)
        (path,) = (tmp_path / out).rglob("*.predictions*.jsonl")
        return report.results[0].evalkit, [json.loads(line)["top_scores"] for line in path.read_text().splitlines()]

    ev_default, default = run("dflt", "a", cache)
    ev_evalkit, evalkit = run("ev", "b", cache)  # the same clouds and model, the other preset
    assert ev_default["depth_preset"] == "pointclip-v2" and ev_evalkit["depth_preset"] == "evalkit"
    assert evalkit != default
    assert run("ev", "c", None)[1] == evalkit  # its own renders, not the cached pointclip-v2 features
    with pytest.raises(TaskSpecError, match=r"bad\.yaml: view\.depth_preset 'pointclip' is not a render preset; "
                                            r"choose from pointclip-v2, evalkit"):
        run("bad", "d", None)


# -- the measurement --------------------------------------------------------------------------------

#: each difference: the settings that turn the pointclip-v2 preset's item into evalkit's
ITEMS = {
    "grid (112 cells, floor) vs 110 stretched": {"crop": 0, "cells": "floor"},
    "depth slicing (all 8 vs the 6 inner)": {"depth_slices": "all"},
    "top view (front-tilted vs back-tilted, turned)": {"cameras": VIEWPOINTS},
    "upsampling (align_corners False vs True)": {"align_corners": False},
    "input points (all vs the first 1,024)": {"max_points": None},
}


def preset_differences(clouds: torch.Tensor, resolution: int = 224) -> dict[str, float]:
    """Share of the pixels (all views) that differ by more than one grey level (1/255) between the
    pointclip-v2 preset and the same preset with one item as the evalkit preset has it; and
    between the two presets."""
    base = render_depth_views(clouds, 10, resolution, preset="pointclip-v2").int()
    out = {}
    for item, settings in ITEMS.items():
        other = render_depth_views(clouds, 10, resolution, preset="pointclip-v2", **settings).int()
        out[item] = float(((base - other).abs() > 1).float().mean())
    other = render_depth_views(clouds, 10, resolution, preset="evalkit").int()
    out["all (evalkit preset)"] = float(((base - other).abs() > 1).float().mean())
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    clouds = torch.as_tensor(np.stack(generated_clouds(n)))
    print(f"{n} generated solids x 2,048 points, 10 views at 224 px: share of pixels differing by > 1/255")
    for item, share in preset_differences(clouds).items():
        print(f"  {item:50} {100 * share:5.1f} %")
