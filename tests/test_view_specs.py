"""Typed views (issue 17, "Views are typed"): a task's ``view:`` block is parsed once, when the task
is resolved, into the frozen config class its kind registers (evalkit.views), every key and value
checked with an error naming the task file and the key; a bad ``--frames`` fails before any
weights are read; the image view runs a model's own image processor unchanged; and the families
never ask which kind of view they score."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures import make_image

from evalkit import models
from evalkit.cli import main as cli
from evalkit.data.sources import SourceData, Unit
from evalkit.features.embed import embed
from evalkit.models.encoder import ImageInput
from evalkit.views import (
    CloudViewSpec,
    DepthViewSpec,
    FramesViewSpec,
    ImageViewSpec,
    PointsViewSpec,
    ViewSpecError,
    parse_view,
    view_kind,
    view_kinds,
)

REPO = Path(__file__).resolve().parents[1]
WHERE = "tasks/x.yaml"


# -- the registry: every kind, its defaults, one parse -------------------------------------------


def test_every_kind_is_registered_and_parses_its_defaults():
    kinds = dict(view_kinds.items())
    assert kinds == {"image": ImageViewSpec, "frames": FramesViewSpec, "depth-views": DepthViewSpec,
                     "points": PointsViewSpec, "cloud": CloudViewSpec}
    for name, cls in kinds.items():
        spec = parse_view({"kind": name}, WHERE)
        assert type(spec) is cls and spec.kind == name
        assert spec == cls(), name  # an empty block is the class's own defaults: one place
        assert spec.where == WHERE
    # the kind is told by view.kind, else by the key that marks it, else image
    assert view_kind({"transform": "crop", "frames": "middle"}) is FramesViewSpec
    assert view_kind({"cloud": "auto", "npoints": 2048}) is CloudViewSpec
    assert view_kind({"transform": "squash"}) is ImageViewSpec and view_kind({}) is ImageViewSpec
    assert [view_kind({}).noun, FramesViewSpec.noun, CloudViewSpec.noun] == ["images", "clips", "clouds"]


def test_the_family_default_transform_and_the_run_overrides():
    assert parse_view({}, WHERE, default_transform="squash").transform == "squash"
    assert parse_view({"transform": "crop"}, WHERE, default_transform="squash").transform == "crop"
    both = parse_view({"transform": "crop"}, WHERE, transform="best-of-both")
    assert (both.mode, both.modes) == ("best-of-both", ("crop", "squash"))
    assert both.provenance("t") == {"transform": "best-of-both", "transforms_run": ["crop", "squash"]}
    video = parse_view({"transform": "crop", "frames": "middle"}, WHERE)
    eight = parse_view({"transform": "crop", "frames": "middle"}, WHERE, frames="uniform-8")
    same = parse_view({"transform": "crop", "frames": "middle"}, WHERE, frames="middle")
    assert [v.result_name("k400") for v in (video, eight, same)] == ["k400", "k400@uniform-8", "k400"]
    assert eight.provenance("k400") == {"transform": "crop", "transforms_run": ["crop"], "frame_sampler": "uniform-8",
                                        "frames": 8, "result_name": "k400@uniform-8"}
    assert "result_name" not in same.provenance("k400")


def test_a_cloud_view_resolves_against_the_encoder(tmp_path):
    (tmp_path / "depth.txt").write_text("a depth map of a {c}.\n\na rendering of a {c}.\n")
    view = parse_view({"cloud": "auto", "depth_views": 4, "depth_render": {"pool_size": 3, "obj_ratio": 0.5},
                       "depth_templates_file": "depth.txt", "npoints": 2048}, WHERE, base_dir=tmp_path)
    demo = models.load("eva-clip-demo")  # an image tower, no point tower: auto means depth views
    depth = view.resolve(demo)
    assert type(depth) is DepthViewSpec and depth.prompts == ("a depth map of a {c}.", "a rendering of a {c}.")
    assert depth.provenance("t") == {"transform": "crop", "transforms_run": ["crop"], "cloud_view": "depth-views",
                                     "depth_views": 4, "depth_resolution": 224, "depth_preset": "pointclip-v2",
                                     "depth_render": {"pool_size": 3, "obj_ratio": 0.5}}  # the file's order
    (built,) = depth.build(demo).values()
    assert built.identity.startswith("pooled[depth:4v:224px:preset=pointclip-v2:obj_ratio=0.5:pool_size=3]:image:")
    points_only = dataclasses.replace(demo, name="points-only", towers={"points": demo.tower("image")})
    points = view.resolve(points_only)
    assert type(points) is PointsViewSpec and points.npoints == 2048 and points.prompts is None
    assert points.provenance("t") == {"transform": "points", "transforms_run": ["points"], "cloud_view": "points",
                                      "npoints": 2048}
    with pytest.raises(ViewSpecError, match=r"tasks/x\.yaml: points-only encodes point clouds only"):
        parse_view({"transform": "crop"}, WHERE).resolve(points_only)


BAD = [
    ({"transform": "crop", "npoints": 3}, r"unknown view option\(s\) \['npoints'\] for a view of kind 'image'"),
    ({"transform": "center"}, r"view\.transform 'center' not in"),
    ({"frames": "uniform-0"}, r"view\.frames: unknown frame sampler 'uniform-0'"),
    ({"frames": "middle", "depth_views": 3}, r"unknown view option\(s\) \['depth_views'\]"),
    ({"cloud": "both"}, r"view\.cloud 'both' not in"),
    ({"cloud": "auto", "depth_preset": "v3"}, r"view\.depth_preset 'v3' is not a render preset; choose from"),
    ({"cloud": "auto", "depth_render": {"obj_size": 1}}, r"view\.depth_render: unknown render setting"),
    ({"cloud": "auto", "depth_render": [3]}, r"view\.depth_render must be a mapping"),
    ({"cloud": "auto", "depth_render": {"pool_size": 4}}, r"view\.depth_render: pool_size must be odd"),
    ({"cloud": "auto", "depth_views": 11}, r"view\.depth_views: n_views must be between 1 and 10, got 11"),
    ({"cloud": "auto", "depth_views": True}, r"view\.depth_views must be a whole number >= 1"),
    ({"cloud": "auto", "depth_resolution": 0}, r"view\.depth_resolution must be a whole number >= 1, got 0"),
    ({"cloud": "points", "npoints": "many"}, r"view\.npoints must be a whole number >= 1, got 'many'"),
    ({"cloud": "auto", "depth_templates_file": "nowhere.txt"}, r"view\.depth_templates_file \S*nowhere\.txt cannot be read"),
    ({"kind": "audio"}, r"view\.kind 'audio' is not a view kind; choose from"),
    ({"frames": "middle", "cloud": "auto"}, r"the view has both 'cloud' and 'frames'"),
]


@pytest.mark.parametrize("view, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_a_bad_key_or_value_names_the_file_and_the_key(view, message, tmp_path):
    with pytest.raises(ViewSpecError, match=r"^tasks/x\.yaml: " + message):
        parse_view(view, WHERE, base_dir=tmp_path)


@pytest.mark.parametrize("view, overrides, message", [
    ({"frames": "middle"}, {"frames": "uniform-0"}, r"--frames: unknown frame sampler 'uniform-0'"),
    ({"transform": "crop"}, {"frames": "uniform-8"}, r"--frames is for video tasks"),
    ({"cloud": "auto"}, {"frames": "middle"}, r"--frames is for video tasks"),
    ({"transform": "crop"}, {"transform": "centre"}, r"--transform 'centre' not in"),
])
def test_a_bad_override_names_the_file(view, overrides, message):
    with pytest.raises(ViewSpecError, match=r"^tasks/x\.yaml: " + message):
        parse_view(view, WHERE, **overrides)


def test_a_bad_frames_fails_at_resolve_time_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """``--frames uniform-0`` with a video task: one line naming the task file, exit 1, and the
    model loader never called (nor the task's data generated)."""
    loaded = []

    def loader(*args, **kwargs):
        loaded.append(args)
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load", loader)
    argv = ["run", "--model", "eva-clip-demo", "--tasks", "shapeworld-video", "--output-dir", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert cli.main([*argv, "--frames", "uniform-0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"shapeworld-video\.yaml: --frames: unknown frame sampler 'uniform-0'", err[0])
    assert loaded == [] and not (tmp_path / "cache").exists()
    # an image task given --frames: the same, at resolve time
    assert cli.main([*argv[:4], "shapeworld-shape", *argv[5:], "--frames", "uniform-8"]) == 1
    assert "shapeworld-shape.yaml: --frames is for video tasks" in capsys.readouterr().err
    assert loaded == []


# -- a model's own image processor, used unchanged --------------------------------------------------


class FakeProcessor:
    """Stands in for a Hugging Face image processor: its own geometry (a 32 px resize) and its own
    normalisation (not the encoder's mean and std), PIL image -> (3, 32, 32) float tensor."""

    def __init__(self):
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        px = torch.from_numpy(np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32))
        return (px.permute(2, 0, 1) / 255 - 0.25) / 0.5


def test_the_image_view_runs_the_models_own_processor_unchanged():
    demo = models.load("eva-clip-demo")
    processor = FakeProcessor()
    image = dataclasses.replace(demo.tower("image").input, processor=processor, processor_id="fake/proc@rev1")
    assert isinstance(image, ImageInput)
    hf = dataclasses.replace(demo, towers={**demo.towers, "image": dataclasses.replace(demo.tower("image"), input=image)})
    views = parse_view({"transform": "best-of-both"}, WHERE).resolve(hf).build(hf)
    # the processor's identity, whatever the transform asked (its pixels are the authors')
    assert {v.identity for v in views.values()} == {"image:processor:fake/proc@rev1"}
    imgs = [make_image(i, i, size=40 + 8 * i).resize((40 + 8 * i, 40)) for i in range(3)]
    for img in imgs:
        assert torch.equal(views["crop"].sample(img), processor(img))
    data = SourceData(units=[Unit(id="u[3]", samples=lambda: ((f"k{i}", (lambda im=im: im.copy()), i)
                                                           for i, im in enumerate(imgs)), size=3)])
    out = embed(hf, data, views, progress=False)
    with torch.no_grad():  # the processor's tensors straight into the image tower: no second normalisation
        want = F.normalize(demo.encode_image(torch.stack([processor(im) for im in imgs])), dim=-1)
    torch.testing.assert_close(out["crop"].features, want, rtol=0, atol=1e-6)
    assert torch.equal(out["squash"].features, out["crop"].features) and out["squash"].reused == 3
    # another processor is another cache entry
    other = dataclasses.replace(image, processor_id="fake/proc@rev2")
    hf2 = dataclasses.replace(hf, towers={**hf.towers, "image": dataclasses.replace(hf.tower("image"), input=other)})
    assert parse_view({}, WHERE).build(hf2)["crop"].identity == "image:processor:fake/proc@rev2"


# -- families score; they never ask which kind of view ----------------------------------------------


def test_families_never_ask_which_modality_they_score():
    for name in ("classification", "retrieval", "linear_probe"):
        tree = ast.parse((REPO / "evalkit" / "tasks" / f"{name}.py").read_text())
        for node in ast.walk(tree):  # docstrings may describe the views a family meets; code may not test them
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None:
                node.body = node.body[1:] or [ast.Pass()]
        code = ast.unparse(tree)
        found = re.findall(r"\b(depth\w*|cloud\w*|frames?|points?|video\w*|modalit\w*)\b|\.view\b(?!_)", code, re.I)
        assert not found, f"evalkit/tasks/{name}.py asks about its view: {sorted(set(found))}"


# -- the data check asks the view what its samples are ---------------------------------------------


def test_the_data_check_asks_the_view_for_its_noun(tmp_path):
    from evalkit.cli.data import check_tasks, samples_noun
    from evalkit.tasks.spec import TaskSpec

    def noun(view):
        return samples_noun(TaskSpec(name="t", family="classification", source={}, view=view))

    assert [noun({}), noun({"frames": "middle"}), noun({"kind": "frames"}), noun({"cloud": "auto"}),
            noun({"kind": "points"}), noun({"kind": "depth-views"})] == ["images", "clips", "clips", "clouds", "clouds",
                                                                         "clouds"]
    (tmp_path / "odd.yaml").write_text("task: odd\nfamily: classification\nsource: {type: folder, path: nowhere}\n"
                                       "templates: ['a {c}.']\nview: {kind: audio}\n")
    (row,) = check_tasks("odd", tmp_path, [str(tmp_path)])
    assert row.status == "error" and re.search(r"odd\.yaml: view\.kind 'audio' is not a view kind", row.message)


def test_depth_views_over_a_transform_without_mean_and_std_is_a_users_error():
    """A preset that turns normalisation off needs a transform with mean/std (a model's own image
    processor has none to turn off): an EvalkitError naming the preset, told in one line, not a bug."""
    from evalkit.errors import EvalkitError
    from evalkit.views.depth import depth_view
    from evalkit.views.image import ImageView

    opaque = ImageView(lambda image: image, "processor")
    with pytest.raises(EvalkitError, match="preset 'pointclip-v2' feeds the image tower unnormalised"):
        depth_view(opaque, 2, 32, preset="pointclip-v2")
