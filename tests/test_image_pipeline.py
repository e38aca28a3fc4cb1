"""The image side of evalkit.features.embed: two-stage transforms, one decode for several transforms,
per-transform caching, and the default worker count."""

from __future__ import annotations

import argparse
import io
import threading
import time

import numpy as np
import pytest
import torch
from fixtures import CLASSNAMES, image_bytes, image_features, make_image
from PIL import Image
from torchvision import transforms as T

from evalkit import models
from evalkit.cli import main as cli
from evalkit.data.sources import SourceData, Unit
from evalkit.features.embed import FeatureCache, SampleDecodeError, background, default_num_workers
from evalkit.views.image import image_transform
from evalkit.views.transforms import Preprocess, build_transform

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _torchvision_reference(mode: str, size: int, interp=T.InterpolationMode.BICUBIC) -> T.Compose:
    """The transform as open_clip / clip_benchmark users write it with torchvision."""
    geometry = [T.Resize(size, interpolation=interp), T.CenterCrop(size)] if mode == "crop" else \
        [T.Resize((size, size), interpolation=interp)]
    return T.Compose([*geometry, lambda im: im.convert("RGB") if im.mode != "RGB" else im,
                      T.ToTensor(), T.Normalize(MEAN, STD)])


@pytest.mark.parametrize("mode", ["crop", "squash"])
@pytest.mark.parametrize("image_mode", ["RGB", "L", "P", "RGBA", "CMYK", "I;16"])
def test_two_stages_equal_torchvision_compose_bit_for_bit(mode: str, image_mode: str) -> None:
    rng = np.random.default_rng(0)
    for shape in [(20, 26), (300, 200), (33, 33), (7, 90)]:
        rgb = Image.fromarray((rng.random((*shape, 3)) * 255).astype("uint8"))
        img = rgb.convert("L").convert("I;16") if image_mode == "I;16" else rgb.convert(image_mode)
        for size in (32, 48):
            want = _torchvision_reference(mode, size)(img)
            p = build_transform(mode, size, MEAN, STD)
            assert torch.equal(p(img), want), (mode, image_mode, shape, size)
            per_image = p.geometry(img)
            assert per_image.dtype == torch.uint8 and per_image.shape == (3, size, size)
            assert torch.equal(p.normalize(torch.stack([per_image, per_image]))[1], want)


def test_bilinear_and_bad_names() -> None:
    img = make_image(2, 0, size=50)
    want = _torchvision_reference("crop", 32, T.InterpolationMode.BILINEAR)(img)
    assert torch.equal(build_transform("crop", 32, MEAN, STD, "bilinear")(img), want)
    with pytest.raises(ValueError, match="unknown transform 'stretch'"):
        Preprocess("stretch", 32, MEAN, STD)
    with pytest.raises(ValueError, match="unknown interpolation 'lanczos'"):
        Preprocess("crop", 32, MEAN, STD, "lanczos")


class _CountingSource:
    """Two units of generated PNGs; counts every decode. ``broken`` keys do not decode."""

    def __init__(self, n: int = 14, broken: tuple[int, ...] = ()) -> None:
        self.decodes: dict[str, int] = {}
        self.items = [(f"k{i:03d}", image_bytes(make_image(i % len(CLASSNAMES), i, size=30 + i)), i % len(CLASSNAMES))
                      for i in range(n)]
        self.broken = {f"k{i:03d}" for i in broken}

    def _load(self, key: str, data: bytes):
        def load() -> Image.Image:
            self.decodes[key] = self.decodes.get(key, 0) + 1
            if key in self.broken:
                raise OSError("truncated file")
            return Image.open(io.BytesIO(data))

        return load

    def data(self) -> SourceData:
        half = len(self.items) // 2
        units = []
        for lo, hi in ((0, half), (half, len(self.items))):
            def samples(lo=lo, hi=hi):
                for key, data, label in self.items[lo:hi]:
                    yield key, self._load(key, data), label

            units.append(Unit(id=f"counting[{lo}:{hi}]", samples=samples, size=hi - lo))
        return SourceData(units=units, classnames=list(CLASSNAMES))


@pytest.fixture(scope="module")
def demo():
    return models.load("eva-clip-demo")


def test_best_of_both_decodes_each_image_once_and_equals_separate_passes(demo) -> None:
    src = _CountingSource()
    both = image_features(demo, src.data(), {m: image_transform(demo, m) for m in ("crop", "squash")},
                          batch_size=4, progress=False)
    assert set(both) == {"crop", "squash"}
    assert src.decodes == {key: 1 for key, _, _ in src.items}  # once, for both transforms
    # where crop and squash give the same pixels (square images: i % 7 == 0 here), encoded once
    crop_px, squash_px = image_transform(demo, "crop").geometry, image_transform(demo, "squash").geometry
    square = [k for k, data, _ in src.items
              if torch.equal(crop_px(Image.open(io.BytesIO(data))), squash_px(Image.open(io.BytesIO(data))))]
    assert {"k000", "k007"} <= set(square) and both["squash"].reused == len(square)
    for mode in ("crop", "squash"):
        alone = image_features(demo, _CountingSource().data(), {mode: image_transform(demo, mode)}, batch_size=4,
                               progress=False)[mode]
        if mode == "crop":
            assert torch.equal(both[mode].features, alone.features)
        else:
            # the squash rows not reused ran in smaller batches than alone: float noise only
            torch.testing.assert_close(both[mode].features, alone.features, rtol=0, atol=1e-6)
            rows = [both[mode].keys.index(k) for k in square]
            assert torch.equal(both[mode].features[rows], both["crop"].features[rows])
        assert both[mode].keys == alone.keys and both[mode].labels == alone.labels
        # a transform that is not two-stage (any PIL -> tensor callable) gives the same features
        whole = image_features(demo, _CountingSource().data(), {mode: lambda im, p=image_transform(demo, mode): p(im)},
                               batch_size=4, progress=False)[mode]
        torch.testing.assert_close(whole.features, alone.features, rtol=0, atol=1e-6)
    assert not torch.equal(both["crop"].features, both["squash"].features)


def test_a_sample_that_fails_is_skipped_for_every_transform(demo) -> None:
    src = _CountingSource(broken=(3, 9))
    out = image_features(demo, src.data(), {m: image_transform(demo, m) for m in ("crop", "squash")}, batch_size=4,
                         progress=False)
    for feats in out.values():
        assert [k for k, _ in feats.skipped] == ["k003", "k009"]
        assert "OSError: truncated file" in feats.skipped[0][1]
        assert feats.features.shape[0] == len(feats.keys) == 12
    assert out["crop"].keys == out["squash"].keys
    with pytest.raises(SampleDecodeError, match="sample k003: cannot decode"):
        image_features(demo, src.data(), {"crop": image_transform(demo, "crop")}, strict=True, progress=False)


def test_cache_is_per_transform_and_only_missing_transforms_decode(demo, tmp_path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    src = _CountingSource()
    crop = image_features(demo, src.data(), {"crop": image_transform(demo, "crop")}, cache=cache, progress=False)["crop"]
    assert crop.computed == 14 and crop.cached_units == 0
    src.decodes.clear()
    both = image_features(demo, src.data(), {m: image_transform(demo, m) for m in ("crop", "squash")},
                          cache=FeatureCache(tmp_path / "cache"), progress=False)
    assert src.decodes == {key: 1 for key, _, _ in src.items}  # decoded for squash only
    assert torch.equal(both["crop"].features, crop.features)
    src.decodes.clear()
    again = image_features(demo, src.data(), {m: image_transform(demo, m) for m in ("squash", "crop")},
                           cache=FeatureCache(tmp_path / "cache"), progress=False)
    assert src.decodes == {} and again["squash"].cached_units == 2 and again["squash"].computed == 0
    assert torch.equal(again["squash"].features, both["squash"].features)


def test_limit_counts_samples_not_passes(demo) -> None:
    src = _CountingSource()
    out = image_features(demo, src.data(), {m: image_transform(demo, m) for m in ("crop", "squash")}, limit=9,
                         batch_size=4, progress=False)
    assert [len(f.keys) for f in out.values()] == [9, 9] and sum(src.decodes.values()) == 9
    with pytest.raises(ValueError, match="at least one view"):
        image_features(demo, src.data(), {}, progress=False)


def test_default_worker_count(monkeypatch) -> None:
    assert default_num_workers("cpu") == 0
    assert default_num_workers("meta") == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert default_num_workers("cuda:0") == 8
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert default_num_workers("cuda") == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_num_workers("cuda:1") == 1
    # spawn / forkserver (macOS, Windows, Python 3.14's Linux default) cannot pickle the sources
    monkeypatch.setattr("multiprocessing.get_start_method", lambda allow_none=False: "spawn")
    assert default_num_workers("cuda:0") == 0 and default_num_workers("mps") == 0


def test_cache_key_includes_the_transform_parameters(demo) -> None:
    cache = FeatureCache(None)
    src = _CountingSource(n=4)
    small = image_features(demo, src.data(), {"crop": build_transform("crop", 32, MEAN, STD)}, cache=cache,
                           progress=False)["crop"]
    other = image_features(demo, src.data(), {"crop": build_transform("crop", 32, MEAN, STD, "bilinear")},
                           cache=cache, progress=False)["crop"]
    assert small.computed == other.computed == 4 and not torch.equal(small.features, other.features)
    again = image_features(demo, src.data(), {"crop": build_transform("crop", 32, MEAN, STD)}, cache=cache,
                           progress=False)["crop"]
    assert again.computed == 0 and torch.equal(again.features, small.features)


def test_num_workers_flag() -> None:
    from evalkit.cli import run as run_cli

    parser = cli.build_parser()
    base = ["run", "--model", "m", "--tasks", "t"]
    assert parser.parse_args(base).num_workers is None  # auto
    assert parser.parse_args([*base, "--num-workers", "auto"]).num_workers is None
    assert parser.parse_args([*base, "--num-workers", "3"]).num_workers == 3
    assert parser.parse_args([*base, "--num-workers", "0"]).num_workers == 0
    for bad in ("-1", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match="'auto' or a whole number"):
            run_cli._workers(bad)


def test_background_loader_keeps_order_and_raises_the_producers_error() -> None:
    assert list(background(iter(range(50)), depth=3)) == list(range(50))
    assert list(background([])) == []

    def failing():
        yield 1
        yield 2
        raise OSError("tar member truncated")

    got = []
    with pytest.raises(OSError, match="tar member truncated"):
        for x in background(failing()):
            got.append(x)
    assert got == [1, 2]


def test_background_loader_stops_when_the_consumer_stops() -> None:
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = background(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # what an exception in the consumer's loop does
    time.sleep(0.3)
    n = len(produced)
    time.sleep(0.3)
    assert len(produced) == n <= 3 + 2 + 1  # stopped, at most depth (+ the one in hand) ahead
    assert not any(t.name == "evalkit-loader" for t in threading.enumerate())


def test_strict_error_mid_unit_leaves_no_loader_thread(demo) -> None:
    src = _CountingSource(n=40, broken=(5,))
    with pytest.raises(SampleDecodeError):
        image_features(demo, src.data(), {"crop": image_transform(demo, "crop")}, strict=True, batch_size=2,
                       progress=False)
    time.sleep(0.2)
    assert not any(t.name == "evalkit-loader" for t in threading.enumerate())
    assert sum(src.decodes.values()) < 20  # the rest of the unit was not decoded


def test_shared_image_features_whose_samples_are_gone_are_named(demo) -> None:
    """Two units that claim the same images (content_id) but list different samples: the second
    cannot take the first one's features, and the error says what to do."""
    from evalkit.data.sources import DataError

    src = _CountingSource(n=6)

    def unit(uid: str, items):
        def samples():
            for key, data, label in items:
                yield key, src._load(key, data), label

        return SourceData(units=[Unit(id=uid, samples=samples, size=len(items), content_id="same-images")])

    cache = FeatureCache(None)
    image_features(demo, unit("a", src.items), {"crop": image_transform(demo, "crop")}, cache=cache, progress=False)
    renamed = [(f"other{k}", d, y) for k, d, y in src.items]
    with pytest.raises(DataError, match="unit b: cached features list sample k000.*--no-cache"):
        image_features(demo, unit("b", renamed), {"crop": image_transform(demo, "crop")}, cache=cache, progress=False)


def test_cached_transforms_that_skipped_other_samples_are_recomputed_together(demo) -> None:
    """A file that failed to read in an earlier run (and reads now), or the other way round: the
    transforms of one run must still score the same samples with their own labels."""
    both = {m: image_transform(demo, m) for m in ("crop", "squash")}
    src = _CountingSource(n=8, broken=(2,))
    cache = FeatureCache(None)
    image_features(demo, src.data(), {"crop": both["crop"]}, cache=cache, progress=False)  # k002 unreadable
    src.broken = {"k004"}  # now k002 reads and k004 does not: squash computed, crop cached
    out = image_features(demo, src.data(), both, cache=cache, progress=False)
    crop, squash = out["crop"], out["squash"]
    assert crop.keys == squash.keys and [k for k, _ in crop.skipped] == [k for k, _ in squash.skipped]
    labels = {key: label for key, _, label in src.items}
    for feats in (crop, squash):
        assert feats.features.shape[0] == len(feats.keys) == len(feats.labels)
        assert feats.labels == [labels[k] for k in feats.keys]
    alone = image_features(demo, _CountingSource(n=8, broken=(4,)).data(), both, progress=False)
    assert torch.equal(crop.features, alone["crop"].features) and torch.equal(squash.features, alone["squash"].features)


def test_mixed_cache_records_are_recomputed(demo) -> None:
    """Both transforms cached, by two runs that skipped different samples."""
    both = {m: image_transform(demo, m) for m in ("crop", "squash")}
    cache = FeatureCache(None)
    image_features(demo, _CountingSource(n=8, broken=(2,)).data(), {"crop": both["crop"]}, cache=cache,
                   progress=False)
    image_features(demo, _CountingSource(n=8, broken=(5,)).data(), {"squash": both["squash"]}, cache=cache,
                   progress=False)
    src = _CountingSource(n=8)
    out = image_features(demo, src.data(), both, cache=cache, progress=False)
    assert out["crop"].keys == out["squash"].keys == [k for k, _, _ in src.items]
    assert sum(src.decodes.values()) == 8 and out["crop"].computed == 8
