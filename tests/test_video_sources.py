"""Video sources (issue 10, in progress): where clips are and their labels. Loaders return paths;
decoding is evalkit.data.video's job."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit.data.sources import DataError, load_source
from evalkit.data.video_datasets import normalise_label

K_CLASSES = ["abseiling", "air drumming", "playing cello"]


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded here")
    return path


def _samples(data):
    return [(k, load, label) for u in data.units for k, load, label in u.samples()]


@pytest.mark.parametrize("per_class", [False, True])
def test_kinetics_csv_and_clips(tmp_path, per_class):
    root = tmp_path / "kinetics400"
    rows = [("abseiling", "aaa", 10, 20), ("air drumming", "bbb", 0, 10), ("playing cello", "ccc", 5, 15),
            ("air drumming", "gone", 1, 11), ("juggling fire", "ddd", 3, 13)]
    (root).mkdir()
    (root / "val.csv").write_text("label,youtube_id,time_start,time_end,split\n" +
                                  "".join(f"{lab},{y},{s},{e},val\n" for lab, y, s, e in rows))
    for lab, y, s, e in rows:
        if y != "gone":
            folder = root / "val" / lab.replace(" ", "_") if per_class else root / "val"
            _touch(folder / f"{y}_{s:06d}_{e:06d}.mp4")
    data = load_source({"type": "kinetics", "path": str(root)}, None, "k", classnames=K_CLASSES)
    samples = _samples(data)
    assert [k for k, _, _ in samples] == ["aaa_000010_000020", "bbb_000000_000010", "ccc_000005_000015",
                                          "gone_000001_000011", "ddd_000003_000013"]
    assert [lab for _, _, lab in samples[:4]] == [0, 1, 2, 1]
    assert samples[0][1]().path.name == "aaa_000010_000020.mp4"
    with pytest.raises(FileNotFoundError, match="clip gone_000001_000011: listed in val.csv but not found"):
        samples[3][1]()
    with pytest.raises(ValueError, match="label 'juggling fire' is not in the task's class list"):
        samples[4][1]()
    assert data.info["listed"] == 5 and data.info["listed_missing"] == 1


def test_kinetics_bad_csv_is_named(tmp_path):
    root = tmp_path / "k"
    root.mkdir()
    (root / "val.csv").write_text("name,id\nx,y\n")
    with pytest.raises(DataError, match=r"val\.csv:1: expected the columns"):
        load_source({"type": "kinetics", "path": str(root)}, None, "k", classnames=K_CLASSES)


def test_ucf101_splits_and_openai_names(tmp_path):
    root = tmp_path / "ucf101"
    folders = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {f}\n" for i, f in enumerate(folders)))
    for split in (1, 2, 3):
        (lists / f"testlist0{split}.txt").write_text(
            f"ApplyEyeMakeup/v_ApplyEyeMakeup_g0{split}_c01.avi\nHandstandPushups/v_HandStandPushups_g0{split}_c01.avi\n"
            f"YoYo/v_YoYo_g0{split}_c01.avi\n")
        for line in (lists / f"testlist0{split}.txt").read_text().split():
            if "YoYo" not in line or split != 2:
                _touch(root / "UCF-101" / line)
    openai = ["Yo Yo", "Apply Eye Makeup", "Handstand Pushups"]  # another order than classInd's
    data = load_source({"type": "ucf101", "path": str(root), "split": 2}, None, "u", classnames=openai)
    samples = _samples(data)
    assert [lab for _, _, lab in samples] == [1, 2, 0]
    assert samples[1][1]().path.name == "v_HandStandPushups_g02_c01.avi"
    with pytest.raises(FileNotFoundError, match="YoYo/v_YoYo_g02_c01.avi"):
        samples[2][1]()
    assert data.info["split"] == 2 and data.info["listed_missing"] == 1
    with pytest.raises(DataError, match="match no class name"):
        load_source({"type": "ucf101", "path": str(root)}, None, "u", classnames=["a", "b", "c"])


def test_videofolder_classes_and_templates(tmp_path):
    root = tmp_path / "clips"
    _touch(root / "riding_a_bike" / "1.mp4")
    _touch(root / "swimming" / "2.avi")
    _touch(root / "swimming" / "notes.txt")
    (root / "templates.txt").write_text("a video of {c}.\n")
    data = load_source({"type": "videofolder", "path": str(root)}, None, "v")
    assert data.classnames == ["riding a bike", "swimming"] and data.templates == ["a video of {c}."]
    assert [(k, lab) for k, _, lab in _samples(data)] == [("riding_a_bike/1.mp4", 0), ("swimming/2.avi", 1)]


def test_normalised_labels():
    assert normalise_label("Apply Eye Makeup") == normalise_label("ApplyEyeMakeup") == "applyeyemakeup"
    assert normalise_label("playing_cello") == normalise_label("Playing Cello")
