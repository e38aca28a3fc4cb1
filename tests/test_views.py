"""Views embed: the view contract (identity, per-sample step, per-batch step), a stand-in
multi-image view (what video frames and rendered depth views will be), the cache keyed on the
view, and identical pixels encoded once."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from fixtures import make_image

from evalkit import models
from evalkit.data.sources import SourceData, Unit
from evalkit.features.embed import FeatureCache, embed
from evalkit.views.base import View
from evalkit.views.image import ImageView, PooledView, as_view, image_transform, image_view
from evalkit.views.transforms import build_transform


@pytest.fixture(scope="module")
def demo():
    return models.load("eva-clip-demo")


def _counting(encoder):
    """The encoder, with a count of the images its image tower sees."""
    seen = {"images": 0}

    def forward(images):
        seen["images"] += images.shape[0]
        return encoder.model.encode_image(images)

    towers = {**encoder.towers, "image": dataclasses.replace(encoder.tower("image"), encode=forward)}
    return dataclasses.replace(encoder, towers=towers), seen


def _source(sizes: list[tuple[int, int]], name: str = "u") -> SourceData:
    items = [(f"{name}{i:03d}", make_image(i % 6, i, size=h).resize((w, h)), i % 6) for i, (w, h) in enumerate(sizes)]

    def samples():
        for key, img, label in items:
            yield key, (lambda img=img: img.copy()), label

    return SourceData(units=[Unit(id=f"{name}[{len(items)}]", samples=samples, size=len(items))])


def _tiles(img):
    """Stand-in for frames / rendered views: the four quadrants of an image."""
    w, h = img.size
    return [img.crop((x, y, x + w // 2, y + h // 2)) for x in (0, w // 2) for y in (0, h // 2)]


def test_views_meet_the_contract(demo):
    crop = image_view(demo, "crop")
    pooled = PooledView(crop, _tiles, "tiles4")
    for view in (crop, pooled, as_view(image_transform(demo, "squash"))):
        assert isinstance(view, View)
    assert "mode='crop'" in crop.identity and "size=32" in crop.identity
    assert pooled.identity.startswith("pooled[tiles4]:") and crop.identity in pooled.identity
    img = make_image(0, 0, size=40)
    assert crop.sample(img).shape == (3, 32, 32) and crop.sample(img).dtype == torch.uint8
    assert pooled.sample(img).shape == (4, 3, 32, 32)
    # the same transform with other parameters is another view (another cache entry)
    image = demo.tower("image").input
    other = ImageView(build_transform("crop", 32, image.mean, image.std, "bilinear"), "crop")
    assert other.identity != crop.identity and other.batch_key == crop.batch_key


def test_pooled_view_averages_normalised_image_features(demo):
    crop = image_view(demo, "crop")
    pooled = PooledView(crop, _tiles, "tiles4")
    imgs = [make_image(i, i, size=48) for i in range(3)]
    batch = torch.stack([pooled.sample(img) for img in imgs])
    got = pooled.embed(demo, batch)
    expected = []
    for img in imgs:
        per_tile = F.normalize(demo.encode_image(crop._stages[1](torch.stack([crop.sample(t) for t in _tiles(img)]))),
                               dim=-1)
        expected.append(F.normalize(per_tile.mean(dim=0), dim=-1))
    torch.testing.assert_close(got, torch.stack(expected), rtol=0, atol=1e-6)
    assert torch.allclose(got.norm(dim=-1), torch.ones(3))


def test_the_loop_runs_a_multi_image_view_and_caches_it_by_identity(demo, tmp_path):
    counted, seen = _counting(demo)
    crop = image_view(demo, "crop")
    views = {"tiles": PooledView(crop, _tiles, "tiles4"), "crop": crop}
    cache = FeatureCache(tmp_path)
    out = embed(counted, _source([(40, 40), (50, 40), (40, 60)]), views, cache=cache, batch_size=2, progress=False)
    assert out["tiles"].features.shape == (3, demo.embed_dim) and out["tiles"].keys == out["crop"].keys
    assert seen["images"] == 3 * 4 + 3
    again = embed(counted, _source([(40, 40), (50, 40), (40, 60)]), views, cache=cache, progress=False)
    assert seen["images"] == 15  # all from the cache
    assert torch.equal(again["tiles"].features, out["tiles"].features)
    two = PooledView(crop, lambda im: _tiles(im)[:2], "tiles2")
    embed(counted, _source([(40, 40), (50, 40), (40, 60)]), {"tiles": two}, cache=cache, progress=False)
    assert seen["images"] == 15 + 3 * 2  # another view identity: computed


def test_identical_pixels_are_encoded_once(demo):
    counted, seen = _counting(demo)
    views = {"crop": image_transform(demo, "crop"), "squash": image_transform(demo, "squash")}
    sizes = [(40, 40), (48, 48), (40, 64), (64, 40), (33, 33)]  # 3 square, 2 not
    out = embed(counted, _source(sizes), views, batch_size=4, progress=False)
    assert seen["images"] == 5 + 2  # squash ran only the two non-square images
    assert out["squash"].reused == 3 and out["crop"].reused == 0  # counted once, on the view that copied
    square = [0, 1, 4]
    assert torch.equal(out["squash"].features[square], out["crop"].features[square])
    alone = embed(demo, _source(sizes), {"squash": image_transform(demo, "squash")}, batch_size=4, progress=False)["squash"]
    torch.testing.assert_close(out["squash"].features, alone.features, rtol=0, atol=1e-6)


def test_views_with_another_batch_step_are_not_shared(demo):
    counted, seen = _counting(demo)
    other_norm = build_transform("squash", demo.tower("image").input.size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    out = embed(counted, _source([(40, 40), (48, 48)]), {"crop": image_transform(demo, "crop"), "squash": other_norm},
                progress=False)
    assert seen["images"] == 4 and out["squash"].reused == 0
    assert not torch.equal(out["squash"].features, out["crop"].features)


def test_a_view_may_run_a_tower_of_its_own(demo):
    """What a point-cloud view will do: its own per-sample tensor and its own tower; the loop
    never calls the image tower for it."""
    torch.manual_seed(0)
    tower = torch.nn.Linear(3 * 8 * 8, demo.embed_dim)

    @dataclasses.dataclass(frozen=True)
    class OwnTower:
        identity: str = "own-tower:8x8"
        batch_key: tuple = ("own-tower",)

        def sample(self, img):
            return torch.from_numpy(__import__("numpy").asarray(img.convert("RGB").resize((8, 8)), dtype="float32"))

        def embed(self, encoder, batch):
            with torch.no_grad():
                return F.normalize(tower(batch.flatten(1) / 255), dim=-1)

    counted, seen = _counting(demo)
    out = embed(counted, _source([(40, 40), (50, 30)]), {"own": OwnTower()}, progress=False)["own"]
    assert seen["images"] == 0 and out.features.shape == (2, demo.embed_dim)
    assert torch.allclose(out.features.norm(dim=-1), torch.ones(2))


def test_result_records_the_passes_saved_once(demo, tmp_path):
    from fixtures import make_folder

    from evalkit import api
    root = make_folder(tmp_path / "imgs", n_per_class=7)  # sizes 40 x (40 + i % 7): one square a class
    crop, squash = image_transform(demo, "crop").geometry, image_transform(demo, "squash").geometry
    from PIL import Image

    same = sum(torch.equal(crop(Image.open(p)), squash(Image.open(p))) for p in sorted(root.rglob("*.jpg")))
    res = api.evaluate("eva-clip-demo", f"folder:{root}", transform="best-of-both", output_dir=tmp_path / "out",
                       progress=False, raise_errors=True).results[0]
    assert same >= 6 and res.evalkit["views_reused"] == same


@pytest.mark.parametrize("sampler, n_frames", [("middle", 1), ("uniform-8", 8)])
def test_frames_view_pools_the_sampled_frames_of_a_clip(demo, tmp_path, sampler, n_frames):
    """Issue 10's view through the one loop: clips from a videofolder source, frames picked by
    the sampler and decoded by seeking, pooled into one feature per clip."""
    from test_video_frames import make_clip

    from evalkit.data.sources import load_source
    from evalkit.data.video import sample_frames
    from evalkit.views.frames import frames_view

    for c in range(2):
        (tmp_path / "clips" / f"class_{c}").mkdir(parents=True)
        for k in range(2):
            make_clip(tmp_path / "clips" / f"class_{c}" / f"{k}.mp4", "mpeg4", n=20 + 5 * k)
    data = load_source({"type": "videofolder", "path": str(tmp_path / "clips")}, None, "v")
    counted, seen = _counting(demo)
    view = frames_view(image_view(demo, "crop"), sampler)
    out = embed(counted, data, {"frames": view}, progress=False)["frames"]
    assert out.features.shape == (4, demo.embed_dim) and out.labels == [0, 0, 1, 1]
    assert seen["images"] == 4 * n_frames and view.identity.startswith(f"pooled[frames:{sampler}]:")
    # equal to pooling the same frames by hand
    path = tmp_path / "clips" / "class_1" / "1.mp4"
    frames = [view.base.sample(f) for f in sample_frames(path, sampler)]
    by_hand = F.normalize(F.normalize(demo.encode_image(view.base._stages[1](torch.stack(frames))), dim=-1)
                          .mean(dim=0), dim=-1)
    torch.testing.assert_close(out.features[3], by_hand, rtol=0, atol=1e-6)


def test_timing_helpers_for_benchmarks():
    """The public helpers benchmarks share: best_of keeps the fastest call and the last output;
    the /proc/self/status memory figures (Linux)."""
    import time as _time

    import clocks as timing
    delays = iter([0.02, 0.0, 0.01])
    best, out = timing.best_of(lambda: (_time.sleep(next(delays)), "done")[1], 3)
    assert best < 0.01 and out == "done"
    big = b"\x01" * (64 * 2**20)  # 64 MiB written: the peak rises
    before = timing.proc_status_kib("VmHWM")
    assert before >= timing.proc_status_kib("VmRSS") > 0
    del big
    if timing.reset_peak_rss():  # Linux >= 4.0 (this machine and CI): the peak drops with the freed 64 MiB
        assert timing.proc_status_kib("VmHWM") < before - 32 * 1024
    else:  # refused: the peak stays
        assert timing.proc_status_kib("VmHWM") >= before
    with pytest.raises(KeyError, match="NoSuchField"):
        timing.proc_status_kib("NoSuchField")
