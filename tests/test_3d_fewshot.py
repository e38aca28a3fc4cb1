"""3D few-shot tasks (issue 11): the linear-probe family over clouds (depth views with the demo
model), the few-shot task files, and the hash split of a dataset with no train split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_pointcloud_sources import _h5

from evalkit.cli import main as cli
from evalkit.data.sources import DataError, load_source
from evalkit.resources import builtin_tasks_dir
from evalkit.tasks.spec import TaskIndex

MN40 = (builtin_tasks_dir() / "classnames" / "modelnet40_openshape.txt").read_text().splitlines()


def _folder_source(root, n=40):
    for i in range(n):
        d = root / f"c{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / f"s{i}.npy", np.random.default_rng(i).normal(size=(20, 3)).astype(np.float32))
    return {"type": "pointfolder", "path": str(root)}


def _keys(data):
    return [k for u in data.units for k, _, _ in u.samples()]


def test_holdout_parts_are_disjoint_cover_everything_and_depend_only_on_keys(tmp_path):
    src = _folder_source(tmp_path / "pf")
    everything = set(_keys(load_source(src, None, "t")))
    train = load_source({**src, "holdout": {"part": "train", "fraction": 0.3, "seed": 1}}, None, "t")
    test = load_source({**src, "holdout": {"part": "test", "fraction": 0.3, "seed": 1}}, None, "t")
    a, b = _keys(train), _keys(test)
    # SHA-256 of "seed:key": the same part on every machine and in every process (pinned)
    assert sorted(a) == ["c0/s0.npy", "c0/s32.npy", "c0/s8.npy", "c1/s25.npy", "c1/s29.npy", "c2/s18.npy",
                         "c2/s22.npy", "c2/s26.npy", "c2/s30.npy", "c2/s6.npy", "c3/s27.npy", "c3/s3.npy",
                         "c3/s31.npy", "c3/s7.npy"]
    assert set(a) | set(b) == everything and not set(a) & set(b)
    assert 0 < len(a) < len(b)  # about 30 % / 70 %
    assert sum(u.count() for u in train.units) == len(a) and train.info["holdout"]["part"] == "train"
    again = load_source({**src, "holdout": {"part": "train", "fraction": 0.3, "seed": 1}}, None, "t")
    assert _keys(again) == a
    other_seed = load_source({**src, "holdout": {"part": "train", "fraction": 0.3, "seed": 2}}, None, "t")
    assert _keys(other_seed) != a
    assert train.units[0].id != test.units[0].id  # never one cache entry for both parts
    for bad, why in (({"part": "val"}, "part: train or test"), ({"part": "train", "fraction": 1.5}, "between 0 and 1")):
        with pytest.raises(DataError, match=why):
            load_source({**src, "holdout": bad}, None, "t")


def test_3d_fewshot_group():
    specs = {s.name: s for s in TaskIndex.load().resolve(["3d-fewshot"])}
    assert set(specs) == {"objaverse-lvis-fewshot", "modelnet40-fewshot", "scanobjectnn-fewshot"}
    assert all(s.family == "linear_probe" and s.metric == "acc1@16shot" for s in specs.values())
    lvis = specs["objaverse-lvis-fewshot"]
    assert {lvis.source["holdout"]["part"], lvis.options["train_source"]["holdout"]["part"]} == {"train", "test"}


def test_modelnet40_fewshot_through_depth_views(tmp_path):
    root = tmp_path / "data" / "modelnet40_ply_hdf5_2048"
    rng = np.random.default_rng(0)

    def clouds(labels):
        out = []
        for y in labels:  # class 0: a flat disc, class 1: a tall stick, class 2: a ball
            v = rng.normal(size=(256, 3))
            v *= [[1, 0.05, 1], [0.1, 1, 0.1], [1, 1, 1]][y]
            out.append(v)
        return np.stack(out).astype(np.float32)

    train_y, test_y = np.array([0, 1, 2] * 4), np.array([0, 1, 2, 2])
    _h5(root / "ply_data_train0.h5", clouds(train_y), train_y[:, None].astype(np.uint8))
    _h5(root / "ply_data_test0.h5", clouds(test_y), test_y[:, None].astype(np.uint8))
    (root / "shape_names.txt").write_text("\n".join(n.replace(" ", "_") for n in MN40) + "\n")
    out = tmp_path / "out"
    assert cli.main(["run", "--model", "eva-clip-demo", "--tasks", "modelnet40-fewshot", "--data-root",
                     str(tmp_path / "data"), "--shots", "1,2", "--seeds", "2", "--output-dir", str(out),
                     "--quiet", "--no-cache"]) == 0
    r = json.loads((out / "runs" / "eva-clip-demo" / "modelnet40-fewshot.json").read_text())
    ev = r["evalkit"]
    assert ev["cloud_view"] == "depth-views" and ev["depth_views"] == 10
    assert (ev["train_evaluated"], ev["evaluated"]) == (12, 4) and ev["n_classes"] == 40
    assert {"acc1@1shot", "acc1@2shot", "acc1@1shot_std", "acc1@2shot_std"} <= set(r["metrics"])
    # disc, stick and ball are easy apart; one class for everything would score at most 0.5 here
    assert r["metrics"]["acc1@1shot"] >= 0.75 and r["metrics"]["acc1@2shot"] >= 0.75, r["metrics"]
    assert len(ev["runs"]["crop"]) == 2 * 2


def test_data_check_covers_3d_layouts_and_train_splits(tmp_path, capsys):
    root = tmp_path / "data" / "modelnet40_ply_hdf5_2048"
    y = np.array([0, 1, 2])
    _h5(root / "ply_data_train0.h5", np.ones((3, 64, 3), np.float32) * np.arange(3)[:, None, None], y[:, None])
    _h5(root / "ply_data_test0.h5", np.ones((2, 64, 3), np.float32), y[:2, None])
    (root / "shape_names.txt").write_text("\n".join(n.replace(" ", "_") for n in MN40) + "\n")
    assert cli.main(["data", "check", "--tasks", "modelnet40,modelnet40-fewshot,scanobjectnn", "--data-root",
                     str(tmp_path / "data"), "--json"]) == 1  # ScanObjectNN is missing
    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["modelnet40"]["layout"] == "pointnet_h5" and rows["modelnet40"]["samples"] == 2
    assert (rows["modelnet40"]["expected"], rows["modelnet40"]["count"]) == (2468, "differs")
    assert rows["modelnet40-fewshot (train)"]["samples"] == 3 and rows["modelnet40-fewshot"]["samples"] == 2
    assert rows["scanobjectnn"]["status"] == "missing"
