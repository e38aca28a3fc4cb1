"""Point-cloud sources (issue 11, data side): miniatures of the PointNet/ScanObjectNN h5, the
OpenShape/Uni3D npy and the per-class folder layouts, written here; every loader returns a checked
PointCloud, and every bad input is an error that names its file, row or sample."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalkit.data import pointclouds  # noqa: F401  (registers the point-cloud source types)
from evalkit.data.pointclouds import PointCloud, PointCloudError, make_cloud, read_ply
from evalkit.data.sources import LAYOUT_HELP, DataError, check_task_classnames, load_source
from evalkit.features.embed import SampleDecodeError, embed
from evalkit.resources import builtin_tasks_dir as tasks_dir

RNG = np.random.default_rng(0)
POINTNET_NAMES = ["airplane", "flower_pot", "tv_stand"]  # PointNet's shape_names.txt spelling
OPENSHAPE_NAMES = ["airplane", "flower pot", "tv stand"]  # Uni3D labels.json spelling


def _samples(data):
    return [s for u in data.units for s in u.samples()]


def _clouds(b: int, n: int = 16) -> np.ndarray:
    return RNG.standard_normal((b, n, 3)).astype(np.float32)


def _h5(path: Path, data: np.ndarray | None, label: np.ndarray | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if data is not None:
            f["data"] = data
        if label is not None:
            f["label"] = label
    return path


# -- PointNet / ScanObjectNN h5 ----------------------------------------------------------------


def _modelnet_h5(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    written = {
        "ply_data_test0.h5": (_clouds(3), np.array([[0], [2], [1]], dtype=np.uint8)),  # (B, 1) labels
        "ply_data_test1.h5": (_clouds(2), np.array([2, 0], dtype=np.int64)),  # (B,) labels
        "ply_data_train0.h5": (_clouds(4), np.array([[1], [1], [0], [2]], dtype=np.uint8)),
    }
    for name, (d, lab) in written.items():
        _h5(root / name, d, lab)
    (root / "shape_names.txt").write_text("".join(n + "\n" for n in POINTNET_NAMES))
    # PointNet's list files name paths relative to its repository, not to this folder
    (root / "test_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_test0.h5\n"
                                         "data/modelnet40_ply_hdf5_2048/ply_data_test1.h5\n")
    (root / "train_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_train0.h5\n")
    return written


@pytest.mark.parametrize("listed", [True, False])
def test_pointnet_h5_modelnet(tmp_path, listed):
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    written = _modelnet_h5(root)
    if not listed:
        (root / "test_files.txt").unlink()
        (root / "train_files.txt").unlink()
        _h5(root / "ply_data_test10.h5", _clouds(1), np.array([1]))  # in number order: after test2
        _h5(root / "ply_data_test2.h5", _clouds(1), np.array([0]))
    data = load_source({"type": "pointnet_h5", "path": str(root)}, None, "mn40")
    samples = _samples(data)
    keys = ["ply_data_test0.h5:0", "ply_data_test0.h5:1", "ply_data_test0.h5:2",
            "ply_data_test1.h5:0", "ply_data_test1.h5:1"] + ([] if listed else ["ply_data_test2.h5:0", "ply_data_test10.h5:0"])
    assert [k for k, _, _ in samples] == keys
    assert [lab for _, _, lab in samples] == [0, 2, 1, 2, 0] + ([] if listed else [0, 1])
    cloud = samples[3][1]()
    assert isinstance(cloud, PointCloud) and cloud.rgb is None and cloud.xyz.dtype == np.float32
    np.testing.assert_array_equal(cloud.xyz, written["ply_data_test1.h5"][0][0])
    assert data.size == len(keys) and data.info["points_per_cloud"] == [16]
    # the data's own names (underscores) agree with OpenShape's spelling name by name
    assert data.classnames == POINTNET_NAMES and data.classnames_origin.endswith("shape_names.txt")
    assert check_task_classnames(OPENSHAPE_NAMES, data, "mn40") == "match"
    with pytest.raises(DataError, match="class 1 is 'tv stand'"):
        check_task_classnames(["airplane", "tv stand", "flower pot"], data, "mn40")
    train = load_source({"type": "pointnet_h5", "path": str(root), "split": "train"}, None, "mn40")
    assert [lab for _, _, lab in _samples(train)] == [1, 1, 0, 2]


def test_pointnet_h5_scanobjectnn_variants(tmp_path):
    root = tmp_path / "ScanObjectNN"
    sizes = {"main_split_nobg/test_objectdataset.h5": 2, "main_split/test_objectdataset.h5": 3,
             "main_split/test_objectdataset_augmentedrot_scale75.h5": 4,
             "main_split/training_objectdataset_augmentedrot_scale75.h5": 5}
    for rel, b in sizes.items():
        _h5(root / "h5_files" / rel, _clouds(b), np.arange(b) % 15)
    names = [f"c{i}" for i in range(15)]
    counts = {}
    for variant in ("obj_only", "obj_bg", "pb_t50_rs"):
        data = load_source({"type": "pointnet_h5", "path": str(root), "variant": variant}, None, "so",
                           classnames=names)
        counts[variant] = data.size
        assert data.classnames is None and data.info["variant"] == variant
    assert counts == {"obj_only": 2, "obj_bg": 3, "pb_t50_rs": 4}
    train = load_source({"type": "pointnet_h5", "path": str(root), "variant": "pb_t50_rs", "split": "train"},
                        None, "so")
    assert train.size == 5 and _samples(train)[0][0] == "h5_files/main_split/training_objectdataset_augmentedrot_scale75.h5:0"
    with pytest.raises(DataError, match=r"obj_bg train file not found .*training_objectdataset\.h5"):
        load_source({"type": "pointnet_h5", "path": str(root), "variant": "obj_bg", "split": "train"}, None, "so")


def test_pointnet_h5_bad_files_are_named(tmp_path):
    root = tmp_path / "mn"
    _h5(root / "ply_data_test0.h5", _clouds(2), None)
    with pytest.raises(DataError, match=r"ply_data_test0\.h5: no 'label' dataset \(found keys: data\)"):
        load_source({"type": "pointnet_h5", "path": str(root)}, None, "t")
    _h5(root / "ply_data_test0.h5", None, np.array([0, 1]))
    with pytest.raises(DataError, match=r"ply_data_test0\.h5: no 'data' dataset"):
        load_source({"type": "pointnet_h5", "path": str(root)}, None, "t")
    (root / "shape_names.txt").write_text("a\nb\nc\n")
    _h5(root / "ply_data_test0.h5", _clouds(4), np.array([[0], [2], [3], [1]]))
    with pytest.raises(DataError, match=r"ply_data_test0\.h5: row 2: label 3 is out of range for 3 classes"):
        load_source({"type": "pointnet_h5", "path": str(root)}, None, "t")
    _h5(root / "ply_data_test0.h5", _clouds(2), np.array([0, -1]))
    with pytest.raises(DataError, match=r"ply_data_test0\.h5: row 1: label -1 is out of range"):
        load_source({"type": "pointnet_h5", "path": str(root)}, None, "t")
    (root / "ply_data_test0.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(DataError, match=r"ply_data_test0\.h5: not a readable HDF5 file"):
        load_source({"type": "pointnet_h5", "path": str(root)}, None, "t")
    (root / "test_files.txt").write_text("data/x/ply_data_test7.h5\n")
    with pytest.raises(DataError, match=r"test_files\.txt:1: data/x/ply_data_test7\.h5 not found"):
        load_source({"type": "pointnet_h5", "path": str(root)}, None, "t")


def test_pointnet_h5_bad_clouds_are_skipped_by_key(tmp_path):
    root = tmp_path / "mn"
    d = _clouds(4)
    d[1, 5, 2] = np.nan
    d[2, 0, 0] = np.inf
    _h5(root / "ply_data_test0.h5", d, np.array([0, 1, 0, 1]))
    _h5(root / "ply_data_test1.h5", np.zeros((1, 0, 3), np.float32), np.array([1]))
    samples = _samples(load_source({"type": "pointnet_h5", "path": str(root)}, None, "t"))
    samples[0][1]()
    with pytest.raises(PointCloudError, match=r"ply_data_test0\.h5:1: 1 of 16 points have NaN or inf .*point 5"):
        samples[1][1]()
    with pytest.raises(PointCloudError, match=r"ply_data_test0\.h5:2: 1 of 16 points have NaN or inf"):
        samples[2][1]()
    with pytest.raises(PointCloudError, match=r"ply_data_test1\.h5:0: empty point cloud"):
        samples[4][1]()


class _Encoder:
    fingerprint, embed_dim, name, device = "fake", 3, "fake", "cpu"


class _MeanPoint:
    """A stand-in for a point view: a cloud's mean point, normalised."""

    identity, batch_key = "mean-point", ("mean-point",)

    def sample(self, cloud: PointCloud) -> torch.Tensor:
        return torch.from_numpy(cloud.xyz.mean(axis=0))

    def embed(self, encoder, batch: torch.Tensor) -> torch.Tensor:
        return F.normalize(batch, dim=-1)


def test_bad_clouds_through_the_run_path(tmp_path):
    """Loader worker processes read the h5 rows (each opens the file itself); bad samples come out as
    skipped, with their key and reason, and fail --strict."""
    root = tmp_path / "mn"
    d = _clouds(5)
    d[3, 1, 1] = np.nan
    _h5(root / "ply_data_test0.h5", d, np.arange(5) % 3)
    data = load_source({"type": "pointnet_h5", "path": str(root)}, None, "t")
    emb = embed(_Encoder(), data, {"p": _MeanPoint()}, num_workers=2, batch_size=2, progress=False)["p"]
    assert sorted(emb.keys) == [f"ply_data_test0.h5:{i}" for i in (0, 1, 2, 4)]
    assert len(emb.skipped) == 1 and emb.skipped[0][0] == "ply_data_test0.h5:3"
    assert "NaN or inf" in emb.skipped[0][1]
    expected = F.normalize(torch.from_numpy(d[[0, 1, 2, 4]].mean(axis=1)), dim=-1)
    order = [int(k.rsplit(":", 1)[1]) for k in emb.keys]
    torch.testing.assert_close(emb.features, expected[[[0, 1, 2, None, 3][i] for i in order]])
    with pytest.raises(SampleDecodeError, match=r"ply_data_test0\.h5:3"):
        embed(_Encoder(), data, {"p": _MeanPoint()}, strict=True, progress=False)


# -- OpenShape / Uni3D npy ---------------------------------------------------------------------


def _object_array(items: list) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def _openshape_modelnet(root: Path, n: int = 3) -> list[dict]:
    root.mkdir(parents=True)
    pcs = [{"xyz": _clouds(1)[0], "rgb": np.full((16, 3), 100.0, np.float32)} for _ in range(n)]
    pcs[0]["rgb"][:] = 0.8  # Uni3D divides by 255 whatever is stored
    np.save(root / "test_pc.npy", _object_array(pcs), allow_pickle=True)
    cats = ["tv stand", "airplane", "flower pot"][:n]
    (root / "test_split.json").write_text(json.dumps([{"name": f"s{i}", "category": c} for i, c in enumerate(cats)]))
    (root / "modelnet40_shape_names.txt").write_text("".join(c + "\n" for c in OPENSHAPE_NAMES))
    return pcs


def test_openshape_modelnet40(tmp_path):
    root = tmp_path / "modelnet40"
    pcs = _openshape_modelnet(root)
    data = load_source({"type": "openshape_npy", "path": str(root)}, None, "mn40")
    samples = _samples(data)
    assert [(k, lab) for k, _, lab in samples] == [("s0", 2), ("s1", 0), ("s2", 1)]
    assert len(data.units) == 1 and data.info["dataset"] == "modelnet40"
    cloud = samples[1][1]()
    np.testing.assert_array_equal(cloud.xyz, pcs[1]["xyz"])
    np.testing.assert_allclose(cloud.rgb, np.full((16, 3), 100 / 255), rtol=1e-6)  # Uni3D's rgb / 255
    np.testing.assert_allclose(samples[0][1]().rgb, np.full((16, 3), 0.8 / 255), rtol=1e-6)
    assert check_task_classnames(OPENSHAPE_NAMES, data, "mn40") == "match"


def test_openshape_modelnet40_bad_input(tmp_path):
    root = tmp_path / "modelnet40"
    _openshape_modelnet(root)
    split = json.loads((root / "test_split.json").read_text())
    (root / "test_split.json").write_text(json.dumps(split + [{"name": "s3", "category": "toaster"}]))
    with pytest.raises(DataError, match=r"test_split\.json: entry 3 \(s3\): category 'toaster' is not in "
                                         r"modelnet40_shape_names\.txt"):
        load_source({"type": "openshape_npy", "path": str(root)}, None, "mn40")
    (root / "test_split.json").write_text(json.dumps(split[:2]))
    with pytest.raises(DataError, match=r"test_pc\.npy: holds 3 clouds but test_split\.json lists 2"):
        load_source({"type": "openshape_npy", "path": str(root)}, None, "mn40")
    # a file cut short: its header reads, the pickle does not; every sample says so
    (root / "test_split.json").write_text(json.dumps(split))
    raw = (root / "test_pc.npy").read_bytes()
    (root / "test_pc.npy").write_bytes(raw[: len(raw) // 2])
    samples = _samples(load_source({"type": "openshape_npy", "path": str(root)}, None, "mn40"))
    for key, load, _ in samples:
        with pytest.raises(PointCloudError, match=rf"point cloud {key}: cannot read .*test_pc\.npy"):
            load()


def test_openshape_scanobjectnn(tmp_path):
    root = tmp_path / "scanobjectnn"
    root.mkdir()
    xyz = [_clouds(1, 8)[0] for _ in range(4)]
    xyz[2][3] = [np.nan, 0, 0]
    np.save(root / "xyz_label.npy", np.array({"xyz": xyz, "label": np.array([14, 0, 3, 7])}), allow_pickle=True)
    names = (tasks_dir() / "classnames" / "scanobjectnn_openshape.txt").read_text().split("\n")[:15]
    data = load_source({"type": "openshape_npy", "path": str(root)}, None, "so", classnames=names)
    samples = _samples(data)
    assert [(k, lab) for k, _, lab in samples] == [("0", 14), ("1", 0), ("2", 3), ("3", 7)]
    assert data.info["dataset"] == "scanobjectnn"
    cloud = samples[1][1]()
    np.testing.assert_array_equal(cloud.xyz, xyz[1])
    assert cloud.rgb is None
    np.testing.assert_array_equal(cloud.with_colour(), np.concatenate([xyz[1], np.full((8, 3), 0.4, np.float32)], 1))
    with pytest.raises(PointCloudError, match="point cloud 2: 1 of 8 points have NaN"):
        samples[2][1]()
    np.save(root / "xyz_label.npy", np.array({"xyz": xyz, "label": np.array([14, 0, 15, 7])}), allow_pickle=True)
    with pytest.raises(DataError, match=r"xyz_label\.npy: row 2: label 15 is out of range for 15 classes"):
        load_source({"type": "openshape_npy", "path": str(root)}, None, "so", classnames=names)
    np.save(root / "xyz_label.npy", np.array({"points": xyz}), allow_pickle=True)
    with pytest.raises(DataError, match=r"xyz_label\.npy: no 'xyz' \(found keys: points\)"):
        load_source({"type": "openshape_npy", "path": str(root)}, None, "so")


def _lvis(root: Path) -> dict[str, dict]:
    shapes = {
        "uid_a": (0, "Band_Aid", {"xyz": _clouds(1)[0], "rgb": RNG.uniform(0, 1, (16, 3)).astype(np.float32)}),
        "uid_b": (2, "CD_player", {"xyz": _clouds(1)[0], "rgb": RNG.uniform(0, 1, (16, 3)).astype(np.float32)}),
        "uid_gone": (1, "Bible", None),
        "uid_empty": (1, "Bible", "empty"),
        "uid_nan": (0, "Band_Aid", {"xyz": np.full((16, 3), np.nan, np.float32)}),
    }
    lines = []
    for uid, (cid, name, content) in shapes.items():
        rel = f"/{cid:03d}/{uid}.npy"
        lines.append(f"{cid},{name},{uid},{rel}")
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "empty":
            path.write_bytes(b"")
        elif content is not None:
            np.save(path, np.array(content), allow_pickle=True)
    (root / "lvis_testset.txt").write_text("\n".join(lines) + "\n")
    return {k: v[2] for k, v in shapes.items()}


def test_openshape_objaverse_lvis(tmp_path):
    root = tmp_path / "objaverse_lvis"
    root.mkdir()
    shapes = _lvis(root)
    data = load_source({"type": "openshape_npy", "path": str(root)}, None, "lvis")
    samples = dict((k, (load, lab)) for k, load, lab in _samples(data))
    assert {k: lab for k, (_, lab) in samples.items()} == {"uid_a": 0, "uid_b": 2, "uid_gone": 1, "uid_empty": 1,
                                                          "uid_nan": 0}
    assert data.info["listed"] == 5 and data.info["listed_missing"] == 1
    assert data.classnames == ["Band_Aid", "Bible", "CD_player"]  # underscores kept, as Uni3D does
    cloud = samples["uid_b"][0]()
    np.testing.assert_array_equal(cloud.xyz, shapes["uid_b"]["xyz"])
    np.testing.assert_array_equal(cloud.rgb, shapes["uid_b"]["rgb"])
    with pytest.raises(PointCloudError, match=r"point cloud uid_gone: listed in lvis_testset\.txt but not found at .*001/uid_gone\.npy"):
        samples["uid_gone"][0]()
    with pytest.raises(PointCloudError, match=r"point cloud uid_empty: empty file .*uid_empty\.npy"):
        samples["uid_empty"][0]()
    with pytest.raises(PointCloudError, match=r"point cloud uid_nan: 16 of 16 points have NaN or inf"):
        samples["uid_nan"][0]()
    task = ["Band Aid", "Bible", "CD player"]
    assert load_source({"type": "openshape_npy", "path": str(root)}, None, "lvis", classnames=task).size == 5
    with pytest.raises(DataError, match=r"lvis_testset\.txt:2: category 2 is 'CD_player' here but 'Bible' in the task"):
        load_source({"type": "openshape_npy", "path": str(root)}, None, "lvis", classnames=["Band Aid", "CD player", "Bible"])
    with pytest.raises(DataError, match=r"lvis_testset\.txt:2: category id 2 is out of range for 2 classes"):
        load_source({"type": "openshape_npy", "path": str(root)}, None, "lvis", classnames=task[:2])


def test_openshape_folder_must_say_which_dataset(tmp_path):
    root = tmp_path / "x"
    root.mkdir()
    (root / "notes.txt").write_text("")
    with pytest.raises(DataError, match=r"not an OpenShape/Uni3D test-set folder: found none of test_split\.json .*holds notes\.txt"):
        load_source({"type": "openshape_npy", "path": str(root)}, None, "x")


# -- per-class folders -------------------------------------------------------------------------


def _ply_binary(xyz: np.ndarray, rgb: np.ndarray | None, *, faces: bool = True, cut: int = 0) -> bytes:
    """A binary little-endian PLY written field by field with struct (independent of the reader)."""
    props = "property float x\nproperty float y\nproperty float z\n"
    if rgb is not None:
        props += "property uchar red\nproperty uchar green\nproperty uchar blue\n"
    face = "element face 1\nproperty list uchar int vertex_indices\n" if faces else ""
    head = f"ply\nformat binary_little_endian 1.0\ncomment test\nelement vertex {len(xyz)}\n{props}{face}end_header\n"
    body = b""
    for i, p in enumerate(xyz):
        body += struct.pack("<3f", *p)
        if rgb is not None:
            body += struct.pack("<3B", *rgb[i])
    if faces:
        body += struct.pack("<B3i", 3, 0, 1, 2)
    out = head.encode() + body
    return out[: len(out) - cut] if cut else out


def test_read_ply_ascii_and_binary(tmp_path):
    xyz = np.array([[0.5, -1, 2], [3, 4.25, -5], [6, 7, 8.5]], np.float32)
    rgb = np.array([[255, 0, 51], [0, 255, 0], [10, 20, 30]], np.uint8)
    (tmp_path / "b.ply").write_bytes(_ply_binary(xyz, rgb))
    got_xyz, got_rgb = read_ply(tmp_path / "b.ply")
    np.testing.assert_array_equal(got_xyz, xyz)
    np.testing.assert_allclose(got_rgb, rgb / 255.0, rtol=1e-6)
    ascii_ply = ("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                 "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
                 + "".join(" ".join(map(str, p)) + "\n" for p in xyz.tolist()) + "3 0 1 2\n")
    (tmp_path / "a.ply").write_text(ascii_ply)
    got_xyz, got_rgb = read_ply(tmp_path / "a.ply")
    np.testing.assert_array_equal(got_xyz, xyz)
    assert got_rgb is None
    (tmp_path / "cut.ply").write_bytes(_ply_binary(xyz, None, faces=False, cut=5))
    with pytest.raises(ValueError, match="ends after 2 of 3 vertices"):
        read_ply(tmp_path / "cut.ply")


def test_pointfolder(tmp_path):
    root = tmp_path / "clouds"
    (root / "flower_pot").mkdir(parents=True)
    (root / "airplane").mkdir()
    a = _clouds(1)[0]
    np.save(root / "airplane" / "a.npy", a)
    six = np.concatenate([a, np.full((16, 3), 51.0, np.float32)], axis=1)
    np.save(root / "airplane" / "b6.npy", six)  # colour columns in 0..255
    np.save(root / "airplane" / "c.npy", np.array({"xyz": a, "rgb": np.full((16, 3), 0.5)}), allow_pickle=True)
    (root / "flower_pot" / "d.xyz").write_text("".join(f"{x} {y} {z}\n" for x, y, z in a.tolist()))
    (root / "flower_pot" / "e.xyz").write_text("".join(f"{x} {y} {z} 0.25 0.5 1\n" for x, y, z in a.tolist()))
    (root / "flower_pot" / "f.ply").write_bytes(_ply_binary(a, np.full((16, 3), 255, np.uint8)))
    (root / "flower_pot" / "notes.txt").write_text("not a cloud")
    (root / "templates.txt").write_text("a point cloud model of {c}.\n")
    data = load_source({"type": "pointfolder", "path": str(root)}, None, "pf")
    assert data.classnames == ["airplane", "flower pot"] and data.templates == ["a point cloud model of {c}."]
    samples = _samples(data)
    assert [(k, lab) for k, _, lab in samples] == [("airplane/a.npy", 0), ("airplane/b6.npy", 0), ("airplane/c.npy", 0),
                                                   ("flower_pot/d.xyz", 1), ("flower_pot/e.xyz", 1), ("flower_pot/f.ply", 1)]
    clouds = [load() for _, load, _ in samples]
    for c in clouds:
        np.testing.assert_allclose(c.xyz, a, rtol=1e-6)
    assert clouds[0].rgb is None and clouds[3].rgb is None
    np.testing.assert_allclose(clouds[1].rgb, 0.2, rtol=1e-6)  # 51 / 255
    np.testing.assert_allclose(clouds[2].rgb, 0.5)
    np.testing.assert_allclose(clouds[4].rgb[0], [0.25, 0.5, 1])
    np.testing.assert_allclose(clouds[5].rgb, 1.0)
    # the task's class names label the folders by normalised name, in the task's order
    data = load_source({"type": "pointfolder", "path": str(root)}, None, "pf", classnames=["Flower Pot", "Airplane"])
    assert [lab for _, _, lab in _samples(data)] == [1, 1, 1, 0, 0, 0]
    with pytest.raises(DataError, match="flower_pot: folder matches no class name"):
        load_source({"type": "pointfolder", "path": str(root)}, None, "pf", classnames=["airplane", "vase"])


def test_pointfolder_bad_files_are_named(tmp_path):
    root = tmp_path / "clouds"
    d = root / "chair"
    d.mkdir(parents=True)
    a = _clouds(1, 4)[0]
    (d / "empty.xyz").write_text("")
    (d / "empty.npy").write_bytes(b"")
    np.save(d / "zero.npy", np.zeros((0, 3), np.float32))
    (d / "garbage.ply").write_bytes(b"PK\x03\x04 this is a zip")
    (d / "cut.ply").write_bytes(_ply_binary(a, None, faces=False, cut=3))
    (d / "nan.xyz").write_text("0 0 0\nnan 1 2\n")
    np.save(d / "inf.npy", np.array([[0, 0, 0], [np.inf, 0, 0]], np.float32))
    (d / "cols.xyz").write_text("1 2 3 4\n")
    (d / "red.xyz").write_text("1 2 3 300 0 0\n")
    samples = {k: load for k, load, _ in _samples(load_source({"type": "pointfolder", "path": str(root)}, None, "pf"))}
    expect = {
        "chair/empty.xyz": r"empty file .*empty\.xyz",
        "chair/empty.npy": r"empty file .*empty\.npy",
        "chair/zero.npy": r"empty",
        "chair/garbage.ply": r"cannot read .*garbage\.ply: ValueError: not a PLY file",
        "chair/cut.ply": r"cannot read .*cut\.ply: ValueError: PLY file ends after 3 of 4 vertices",
        "chair/nan.xyz": r"1 of 2 points have NaN or inf",
        "chair/inf.npy": r"1 of 2 points have NaN or inf",
        "chair/cols.xyz": r"file .*cols\.xyz has shape \(1, 4\); expected \(N, 3\) or \(N, 6\)",
        "chair/red.xyz": r"colours outside \[0, 1\]",
    }
    assert sorted(samples) == sorted(expect)
    for key, why in expect.items():
        with pytest.raises(PointCloudError, match=rf"point cloud {key}: {why}"):
            samples[key]()


def test_make_cloud_checks():
    with pytest.raises(PointCloudError, match="point cloud k: coordinates have shape \\(4,\\)"):
        make_cloud("k", np.zeros(4))
    with pytest.raises(PointCloudError, match="point cloud k: colours have shape \\(2, 3\\); expected \\(3, 3\\)"):
        make_cloud("k", np.zeros((3, 3)), np.zeros((2, 3)))
    c = make_cloud("k", np.zeros((2, 3), np.float64), [[255, 0, 0], [0, 0, 255]])
    assert c.xyz.dtype == np.float32 and c.rgb.tolist() == [[1, 0, 0], [0, 0, 1]] and len(c) == 2


def test_layouts_described_and_data_files():
    for kind in ("pointnet_h5", "openshape_npy", "pointfolder"):
        assert kind in LAYOUT_HELP
    tasks = tasks_dir()

    def lines(rel: str) -> list[str]:
        return (tasks / rel).read_text().splitlines()

    mn40, so, lvis, tmpl = (lines("classnames/modelnet40_openshape.txt"), lines("classnames/scanobjectnn_openshape.txt"),
                            lines("classnames/objaverse_lvis.txt"), lines("templates/modelnet40_64.txt"))
    assert (len(mn40), len(so), len(lvis), len(tmpl)) == (40, 15, 1156, 64)
    assert len(set(lvis)) == 1156 and sum("_" in n for n in lvis) == 388  # TASK_PROTOCOLS.md §3.2
    assert all(t.count("{c}") == 1 for t in tmpl) and tmpl[:2] == ["a point cloud model of {c}.", "There is a {c} in the scene."]
    # ScanObjectNN's own label order (its training_data/README.md), which OpenShape keeps
    assert so == ["bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
                  "pillow", "sink", "sofa", "toilet"]
    assert "flower pot" in mn40 and "tv stand" in mn40 and mn40 == sorted(mn40)
