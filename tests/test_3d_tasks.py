"""3D tasks end to end (issue 11): point clouds through a task, by depth views (any 2-D CLIP: the
demo model) or by a Uni3D point encoder paired with a CLIP text tower (``uni3d-ti`` with the demo
model's text tower, a random checkpoint in Uni3D's released layout)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_uni3d import uni3d_checkpoint

from evalkit import api
from evalkit.cli import main as cli
from evalkit.features.embed import SampleDecodeError, zero_shot_classifier
from evalkit.models import LoadOptions, load
from evalkit.models.uni3d import Uni3DPointEncoder, load_uni3d_checkpoint, prepare_points, uni3d_config
from evalkit.resources import builtin_tasks_dir
from evalkit.tasks.spec import adhoc_name
from evalkit.views.image import image_transform


def _clouds(root, n_points=(10000, 10000, 700), classes=("sphere", "cube")):
    rng = np.random.default_rng(0)
    for c in classes:
        d = root / c
        d.mkdir(parents=True)
        for i, n in enumerate(n_points):
            v = rng.normal(size=(n, 3))
            if c == "sphere":
                v /= np.linalg.norm(v, axis=1, keepdims=True)
            else:
                v = rng.uniform(-1, 1, size=(n, 3))
                ax = rng.integers(0, 3, n)
                v[np.arange(n), ax] = np.sign(v[np.arange(n), ax])
            np.save(d / f"{i}.npy", v.astype(np.float32))
    return root


@pytest.fixture(scope="module")
def uni3d_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("uni3d") / "model.pt"
    torch.save(uni3d_checkpoint(uni3d_config("tiny", embed_dim=64)), path)
    return path


def _kw(tmp_path, **extra):
    return dict(output_dir=tmp_path / "out", progress=False, cache_dir=None, **extra)


def test_depth_views_with_a_2d_model_and_a_bad_cloud(tmp_path):
    root = _clouds(tmp_path / "clouds", n_points=(1500, 1500))
    bad = np.ones((50, 3), np.float32)
    bad[3, 1] = np.nan
    np.save(root / "cube" / "bad.npy", bad)
    r = api.evaluate("eva-clip-demo", f"pointfolder:{root}", raise_errors=True, save_predictions=True,
                     **_kw(tmp_path)).results[0]
    ev = r.evalkit
    assert (ev["cloud_view"], ev["depth_views"], ev["transform"]) == ("depth-views", 10, "crop")
    assert ev["depth_preset"] == "pointclip-v2"  # the default: PointCLIP V2's protocol
    depth_prompts = (builtin_tasks_dir() / "templates" / "depth_maps.txt").read_text().splitlines()
    # each cloud's own 10 renders through the demo model as [0, 1] images (PointCLIP V2 feeds
    # them unnormalised), pooled, against the depth-prompt classifier
    from evalkit.views.render import depth_view_images

    enc = load("eva-clip-demo")
    classifier, pre = zero_shot_classifier(enc, ["cube", "sphere"], depth_prompts), image_transform(enc, "crop")
    lines = (tmp_path / "out" / "runs" / "eva-clip-demo" / f"{adhoc_name(f'pointfolder:{root}')}.predictions.jsonl").read_text()
    for p in map(json.loads, lines.splitlines()):
        images = depth_view_images(np.load(root / p["key"]), n_views=10, resolution=224)
        with torch.no_grad():
            per_view = F.normalize(enc.encode_image(torch.stack([pre.geometry(im) for im in images]) / 255), dim=-1)
        want = 100 * (F.normalize(per_view.mean(0, keepdim=True), dim=-1) @ classifier)[0]
        assert p["top_scores"] == pytest.approx(want[p["top_classes"]].tolist(), abs=2e-3), p["key"]
    assert ev["n_templates"] == len(depth_prompts) != 64  # the depth prompts, not Uni3D's 64
    assert ev["evaluated"] == 4 and ev["skipped_keys"] == ["cube/bad.npy"]
    log = (tmp_path / "out" / "runs" / "eva-clip-demo" / f"{adhoc_name(f'pointfolder:{root}')}.skipped.log").read_text()
    assert "cube/bad.npy" in log and "nan" in log.lower()
    with pytest.raises(SampleDecodeError, match=r"sample cube/bad\.npy: cannot decode .*rerun without --strict"):
        api.evaluate("eva-clip-demo", f"pointfolder:{root}", strict=True, raise_errors=True, **_kw(tmp_path))


def test_uni3d_points_view_equals_the_encoder_by_hand(tmp_path, uni3d_ckpt):
    root = _clouds(tmp_path / "clouds")
    report = api.evaluate("uni3d-ti", f"pointfolder:{root}", weights=str(uni3d_ckpt), text_model="eva-clip-demo",
                          raise_errors=True, save_predictions=True, **_kw(tmp_path))
    r = report.results[0]
    ev = r.evalkit
    assert (ev["cloud_view"], ev["npoints"], ev["transform"]) == ("points", 10000, "points")
    assert ev["text_model"] == "eva-clip-demo" and ev["n_templates"] == 64
    assert ev["text_fingerprint"] == load("eva-clip-demo").fingerprint != ev["fingerprint"]
    # the two 700-point clouds were resampled to 10,000: scored, counted, named
    assert ev["noted"] == 2 and sorted(k for k, _ in ev["noted_samples"]) == ["cube/2.npy", "sphere/2.npy"]
    assert "fewer than the 10000" in ev["noted_samples"][0][1]
    assert ev["variant"].startswith("fp32+model.pt-") and ev["variant"].endswith("+text-eva-clip-demo")
    # each part named portably (file and folder names); the whole paths stay in evalkit.weights
    assert r.pretrained == "model.pt + text eva-clip-demo: weights" and str(uni3d_ckpt) in ev["weights"]

    # the same numbers by hand: Uni3D's input handling, the point tower, the text tower's classifier
    points = Uni3DPointEncoder(uni3d_config("tiny", embed_dim=64))
    load_uni3d_checkpoint(uni3d_ckpt, points)
    spec = api.resolve_tasks(f"pointfolder:{root}")[0]
    classifier = zero_shot_classifier(load("eva-clip-demo"), ["cube", "sphere"], spec.templates)
    scores = {}
    for c in ("cube", "sphere"):
        for i in range(3):
            cloud, _ = prepare_points(np.load(root / c / f"{i}.npy"), None, 10000)
            with torch.no_grad():
                feat = F.normalize(points(cloud[None]), dim=-1)
            scores[f"{c}/{i}.npy"] = 100 * (feat @ classifier)[0]
    preds = {k: int(v.argmax()) for k, v in scores.items()}
    folder = tmp_path / "out" / "runs" / "uni3d-ti" / ev["variant"]
    lines = (folder / f"{adhoc_name(f'pointfolder:{root}')}.predictions.jsonl").read_text().splitlines()
    for p in map(json.loads, lines):
        assert p["top_classes"][0] == preds[p["key"]]
        assert p["top_scores"] == pytest.approx(scores[p["key"]][p["top_classes"]].tolist(), abs=2e-3)
    truth = {k: 0 if k.startswith("cube") else 1 for k in preds}
    assert r.metrics["acc1"] == pytest.approx(sum(preds[k] == truth[k] for k in preds) / 6)

    paired = load("uni3d-ti", weights=str(uni3d_ckpt), options=LoadOptions(text_model="eva-clip-demo"))
    assert sum(p.numel() for p in paired.model.visual.parameters()) == 0  # the teacher's image tower is freed
    assert paired.fingerprint == ev["fingerprint"]

    with pytest.raises(SampleDecodeError, match=r"sample (sphere|cube)/2\.npy: 700 points.*rerun without --strict"):
        api.evaluate("uni3d-ti", f"pointfolder:{root}", weights=str(uni3d_ckpt), text_model="eva-clip-demo",
                     raise_errors=True, strict=True, **_kw(tmp_path))


def test_another_width_and_wrong_pairings_fail_clearly(tmp_path, uni3d_ckpt, capsys):
    root = _clouds(tmp_path / "clouds", n_points=(10000,))
    out = ["--output-dir", str(tmp_path / "out"), "--quiet", "--no-cache"]
    # uni3d-s is width 384; the checkpoint is tiny's 192
    assert cli.main(["run", "--model", "uni3d-s", "--weights", str(uni3d_ckpt), "--text-model", "eva-clip-demo",
                     "--tasks", f"pointfolder:{root}", *out]) == 1
    err = capsys.readouterr().err
    assert "shape" in err and "192" in err and len([ln for ln in err.splitlines() if "Error" in ln or "error" in ln]) <= 2
    # a point encoder has no image tower
    assert cli.main(["run", "--model", "uni3d-ti", "--weights", str(uni3d_ckpt), "--text-model", "eva-clip-demo",
                     "--tasks", "shapeworld-shape", *out]) == 1
    assert "encodes point clouds only" in capsys.readouterr().err
    # --text-model is for point encoders
    assert cli.main(["run", "--model", "eva-clip-demo", "--text-model", "eva-clip-demo",
                     "--tasks", f"pointfolder:{root}", *out]) == 1
    assert "--text-model" in capsys.readouterr().err
    # a card with no published checkpoint asks for --weights, before anything heavy
    assert cli.main(["run", "--model", "uni3d-b-eva-clip-18b-no-lvis", "--text-model", "eva-clip-demo",
                     "--tasks", f"pointfolder:{root}", *out]) == 1
    assert "needs --weights" in capsys.readouterr().err


def test_cloud_view_points_needs_a_point_encoder(tmp_path):
    from evalkit.views import ViewSpecError, parse_view

    enc = load("eva-clip-demo")
    with pytest.raises(ViewSpecError, match=r"t\.yaml: view\.cloud points needs a point-cloud encoder"):
        parse_view({"cloud": "points"}, "t.yaml").resolve(enc)
    assert parse_view({"cloud": "auto"}, "t.yaml").resolve(enc).provenance("t")["cloud_view"] == "depth-views"
    assert "cloud_view" not in parse_view({}, "t.yaml").resolve(enc).provenance("t")


def test_3d_group_and_task_files():
    from evalkit.tasks.spec import TaskIndex

    specs = {s.name: s for s in TaskIndex.load().resolve(["3d"])}
    assert set(specs) == {"objaverse-lvis", "modelnet40", "scanobjectnn", "scanobjectnn-objbg", "scanobjectnn-hardest"}
    assert [len(specs[n].classnames) for n in ("objaverse-lvis", "modelnet40", "scanobjectnn")] == [1156, 40, 15]
    assert all(len(s.templates) == 64 and s.view["cloud"] == "auto" for s in specs.values())
    assert specs["scanobjectnn"].view["npoints"] == 2048 and specs["modelnet40"].view["npoints"] == 10000


def test_depth_render_settings_are_part_of_the_view_and_checked():
    from evalkit.views.depth import depth_view
    from evalkit.views.image import image_view

    base = image_view(load("eva-clip-demo"), "crop")
    plain, small = depth_view(base, 2, 32), depth_view(base, 2, 32, obj_ratio=0.45, pool_size=3)
    assert plain.identity != small.identity and "obj_ratio=0.45" in small.identity
    cloud = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    assert not torch.equal(plain.sample(cloud), small.sample(cloud))  # the settings reach the renderer
    with pytest.raises(ValueError, match="unknown render setting"):
        depth_view(base, 2, 32, obj_size=0.5)
