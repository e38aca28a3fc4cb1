"""ShapeWorld data and the demo training script: determinism, labels, captions, a smoke run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from evalkit.demo import shapeworld as sw


def _pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8)


def test_same_seed_gives_identical_pixels_and_captions():
    a = sw.generate(8, seed=3, split="train")
    b = sw.generate(8, seed=3, split="train")
    for x, y in zip(a, b, strict=True):
        assert x.key == y.key
        assert x.attrs == y.attrs
        assert x.caption == y.caption
        assert _pixels(x.image).tobytes() == _pixels(y.image).tobytes()


def test_splits_and_seeds_are_different_streams():
    train = sw.generate(6, seed=0, split="train")
    test = sw.generate(6, seed=0, split="test")
    other = sw.generate(6, seed=1, split="train")
    for x, y, z in zip(train, test, other, strict=True):
        assert x.key != y.key and x.key != z.key
        assert not np.array_equal(_pixels(x.image), _pixels(y.image))
        assert not np.array_equal(_pixels(x.image), _pixels(z.image))


def test_images_are_rgb_at_native_size_and_show_the_colour():
    for s in sw.generate(12, seed=0, split="test"):
        img = s.image
        assert img.mode == "RGB" and img.size == (sw.IMAGE_SIZE, sw.IMAGE_SIZE)
        # The pixel at the shape's centre has the sample's colour (up to the light noise), which
        # the grey background never has; a star or cross is solid at its centre too.
        cx, cy = int(s.attrs.cx * sw.IMAGE_SIZE), int(s.attrs.cy * sw.IMAGE_SIZE)
        centre = _pixels(img)[cy, cx].astype(int)
        assert np.abs(centre - np.array(s.attrs.rgb)).max() <= 8, (s.key, centre, s.attrs.rgb)
        corner = _pixels(img)[1, 1].astype(int)
        assert corner.max() - corner.min() <= 12, (s.key, corner)  # grey background


def test_render_depends_on_shape():
    base = sw.sample_attrs(0, "test", 0)
    images = {shape: _pixels(sw.render(sw.ShapeAttrs(**{**base.__dict__, "shape": shape}))) for shape in sw.SHAPES}
    assert len({im.tobytes() for im in images.values()}) == len(sw.SHAPES)
    with pytest.raises(ValueError, match="unknown ShapeWorld shape 'blob'"):
        sw.render(sw.ShapeAttrs(**{**base.__dict__, "shape": "blob"}))


def test_vocabulary_sizes_and_templates():
    assert len(sw.SHAPES) >= 5 and len(set(sw.SHAPES)) == len(sw.SHAPES)
    assert len(sw.COLOURS) >= 6 and len(set(sw.COLOURS)) == len(sw.COLOURS)
    for templates in (sw.SHAPE_TEMPLATES, sw.COLOUR_TEMPLATES):
        assert 2 <= len(templates) <= 4
        assert all("{c}" in t for t in templates)
    prompts = sw.class_prompts("colour")
    assert len(prompts) == len(sw.COLOURS) and prompts[0][0] == sw.COLOUR_TEMPLATES[0].format(c=sw.COLOURS[0])


@pytest.mark.parametrize("task,attr,names", [("shape", "shape", sw.SHAPES), ("colour", "colour", sw.COLOURS)])
def test_classification_labels_match_classnames(task, attr, names):
    ds = sw.ShapeWorldClassification(task=task, split="test", n=40, seed=0)
    assert len(ds) == 40
    assert ds.classnames == list(names)
    seen = set()
    for i in range(len(ds)):
        img, label = ds[i]
        assert ds.classnames[label] == getattr(ds.attrs(i), attr)
        assert label == ds.label(i)
        seen.add(label)
    assert len(seen) >= 4  # labels are spread over the classes, not constant
    assert ds.labels() == [ds.label(i) for i in range(len(ds))]
    assert ds.key(7) == "shapeworld-s0-test-000007"
    with pytest.raises(IndexError):
        ds[40]


def test_both_tasks_view_the_same_images():
    shape = sw.ShapeWorldClassification(task="shape", n=5)
    colour = sw.ShapeWorldClassification(task="colour", n=5)
    for i in range(5):
        assert shape.key(i) == colour.key(i)
        assert _pixels(shape[i][0]).tobytes() == _pixels(colour[i][0]).tobytes()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown ShapeWorld task 'size'"):
        sw.ShapeWorldClassification(task="size")
    with pytest.raises(ValueError, match="unknown ShapeWorld split 'val'"):
        sw.ShapeWorldClassification(split="val")
    with pytest.raises(ValueError, match="n=0"):
        sw.ShapeWorldClassification(n=0)


def test_captions_name_the_right_shape_and_colour():
    rng = np.random.default_rng(0)
    named_shape = named_colour = 0
    for i in range(300):
        attrs = sw.sample_attrs(0, "train", i)
        text = sw.caption(attrs, rng)
        words = set(text.rstrip(".").split())
        shapes_named = words & set(sw.SHAPES)
        colours_named = words & set(sw.COLOURS)
        # Never a wrong attribute, never neither; partial captions are intended.
        assert shapes_named <= {attrs.shape}, (text, attrs)
        assert colours_named <= {attrs.colour}, (text, attrs)
        assert shapes_named or colours_named, text
        if attrs.size not in words:
            assert not words & set(sw.SIZES), (text, attrs)
        assert " a a" not in text and " a orange" not in text and not text.startswith("a orange"), text
        named_shape += bool(shapes_named)
        named_colour += bool(colours_named)
    assert 150 < named_shape < 300 and 150 < named_colour < 300
    assert len({sw.caption(sw.sample_attrs(0, "train", 0), rng) for _ in range(50)}) > 5  # varied phrasing


def test_train_help_runs():
    proc = subprocess.run([sys.executable, "-m", "evalkit.demo.train", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--out", "--steps", "--batch-size", "--seed"):
        assert flag in proc.stdout


def test_smoke_training_writes_a_loadable_sharded_checkpoint(tmp_path):
    import torch
    from safetensors.torch import load_file

    from evalkit.demo.train import TrainSettings, load_demo_model, train
    from evalkit.models.eva_clip import EvaClip, EvaClipConfig

    tiny = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "mlp_ratio": 2.0,
                       "patch_size": 8, "qkv_bias": False, "postnorm": True, "use_rms_norm": True},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    }
    settings = TrainSettings(steps=3, batch_size=8, n_train=16, n_eval=12, warmup_steps=1,
                             max_shard_bytes=512 * 1024, log_every=1)
    logs: list[str] = []
    record = train(tmp_path, settings, tiny, log=logs.append)

    cfg = EvaClipConfig.from_json(tmp_path / "config.json")
    assert cfg == EvaClipConfig.from_dict(tiny)
    expected = EvaClip(cfg).state_dict()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(expected)
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and set(index["weight_map"].values()) == {p.name for p in shards}
    stored = {}
    for shard in shards:
        stored.update(load_file(str(shard)))
    assert set(stored) == set(expected)
    for key, t in stored.items():
        assert t.dtype == torch.float16, key
        assert t.shape == expected[key].shape, key

    model = load_demo_model(tmp_path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.equal(model.state_dict()["logit_scale"], stored["logit_scale"].float())

    meta = json.loads((tmp_path / "training.json").read_text())
    assert meta == json.loads(json.dumps(record))
    assert meta["steps"] == 3 and meta["batch_size"] == 8 and meta["seed"] == 0
    assert set(meta["zero_shot_top1"]) == {"shape", "colour"}
    assert all(0.0 <= v <= 1.0 for v in meta["zero_shot_top1"].values())
    assert np.isfinite(meta["final_loss"]) and meta["torch"] == torch.__version__
    assert any(line.startswith("step 3/3 loss") for line in logs)


def test_shape_and_colour_tasks_share_image_features_but_not_labels():
    """The two demo tasks view the same images: the second one reads the first one's image features
    from the cache (no image rendered or encoded) and still scores against its own labels."""
    import torch
    from fixtures import image_features

    from evalkit import models
    from evalkit.data.sources import load_source
    from evalkit.features.embed import FeatureCache
    from evalkit.views.image import image_transform

    enc = models.load("eva-clip-demo")
    transforms = {"crop": image_transform(enc, "crop")}
    source = {"type": "shapeworld", "split": "test", "n": 600, "seed": 3}  # two units of 512 + 88
    cache = FeatureCache(None)
    shape = image_features(enc, load_source({**source, "task": "shape"}, None, "s"), transforms, cache=cache,
                           progress=False)["crop"]
    colour = image_features(enc, load_source({**source, "task": "colour"}, None, "c"), transforms, cache=cache,
                            progress=False)["crop"]
    assert shape.computed == 600 and colour.computed == 0 and colour.cached_units == 2
    assert torch.equal(shape.features, colour.features) and shape.keys == colour.keys
    view = sw.ShapeWorldClassification(task="colour", split="test", n=600, seed=3)
    assert colour.labels == view.labels() != shape.labels
    alone = image_features(enc, load_source({**source, "task": "colour"}, None, "c"), transforms,
                           progress=False)["crop"]
    assert alone.labels == colour.labels and torch.equal(alone.features, colour.features)
    # a limit is part of the identity: a shorter run neither reuses nor poisons the full one
    part = image_features(enc, load_source({**source, "task": "colour"}, None, "c"), transforms, cache=cache,
                          limit=100, progress=False)["crop"]
    assert part.computed == 100 and part.labels == view.labels()[:100]


def test_scenes_are_deterministic_and_their_captions_true():
    from evalkit.demo.shapeworld import ShapeWorldRetrieval, scene

    ds = ShapeWorldRetrieval(n=40, seed=2024)
    again = ShapeWorldRetrieval(n=40, seed=2024)
    assert ds.image(3).tobytes() == again.image(3).tobytes() and ds.texts(3) == again.texts(3)
    counts = {1: 0, 2: 0}
    for i in range(len(ds)):
        sc = scene(2024, i)
        counts[len(sc.shapes)] += 1
        texts = ds.texts(i)
        assert len(texts) == 5 and len(set(texts)) == 5
        if len(sc.shapes) == 2:
            a, b = sc.shapes
            assert (a.shape, a.colour) != (b.shape, b.colour)
            # the two small shapes never touch
            assert ((a.cx - b.cx) ** 2 + (a.cy - b.cy) ** 2) ** 0.5 > a.radius + b.radius
            assert all(f"{a.colour} {a.shape}" in t and f"{b.colour} {b.shape}" in t for t in texts)
        else:
            attrs = sc.shapes[0]
            assert all(attrs.shape in t or attrs.colour in t for t in texts)
    assert counts[1] > 10 and counts[2] > 10  # about half each
    assert scene(2024, 0) != scene(2025, 0)


def test_retrieval_source_gives_captions_as_targets():
    from evalkit.data.sources import sources

    data = sources.get("shapeworld")({"type": "shapeworld", "task": "retrieval", "n": 6, "seed": 1, "captions": 3},
                                     None, "t")
    samples = [(k, load, caps) for u in data.units for k, load, caps in u.samples()]
    assert len(samples) == 6 and all(len(caps) == 3 for _, _, caps in samples)
    assert samples[0][1]().size == (96, 96)
