"""``evalkit data check`` over miniature video data in each layout (Kinetics CSV with clips in the
split folder, the same with per-class folders, UCF-101 test lists, a folder of class folders): the
layout, the count of listed clips, the listed clips not on disk, and Table 11's figures. Counting
decodes nothing, so the clips here are empty files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli import main as cli
from evalkit.cli.data import check_tasks
from evalkit.tasks.spec import adhoc_name

CLASSNAMES = Path(__file__).resolve().parents[1] / "tasks" / "classnames"
# Table 11 of arXiv 2402.04252 (EVA_CLIP_PROTOCOL.md): classes and test size. UCF-101's 11,213 is
# its three test splits together (TASK_PROTOCOLS.md §1.4); the task evaluates split 1, 3,783 clips.
TABLE11 = {"ucf101": (101, 11213), "kinetics400": (400, 19240), "kinetics600": (600, 29788),
           "kinetics700": (700, 33966)}
UCF_SPLIT_SIZES = (3783, 3734, 3696)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _kinetics(root: Path, names: list[str], n: int, missing: int, per_class: bool) -> None:
    """``<root>/val.csv`` listing ``n`` clips of which the last ``missing`` are not on disk."""
    rows = [(names[(7 * i) % len(names)], f"yt{i:04d}", i, i + 10) for i in range(n)]
    root.mkdir(parents=True)
    (root / "val.csv").write_text("label,youtube_id,time_start,time_end,split\n" +
                                  "".join(f"{lab},{y},{s},{e},val\n" for lab, y, s, e in rows))
    for lab, y, s, e in rows[: n - missing]:
        folder = root / "val" / lab.replace(" ", "_") if per_class else root / "val"
        _touch(folder / f"{y}_{s:06d}_{e:06d}.mp4")


def _ucf101(root: Path, n: int, missing: int) -> None:
    """classInd.txt (all 101 folders) and testlist01.txt listing ``n`` clips, the last ``missing``
    of them not on disk."""
    folders = [line.split()[1] for line in (CLASSNAMES / "ucf101_folders.txt").read_text().splitlines()]
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {f}\n" for i, f in enumerate(folders)))
    rel = [f"{folders[i % 101]}/v_{folders[i % 101]}_g{i // 101:02d}_c01.avi" for i in range(n)]
    (lists / "testlist01.txt").write_text("\n".join(rel) + "\n")
    for r in rel[: n - missing]:
        _touch(root / "UCF-101" / r)


@pytest.fixture
def video_root(tmp_path) -> Path:
    """UCF-101 with split 1's full 3,783 clips listed (2 missing), Kinetics-400 in its split
    folder, Kinetics-600 in per-class folders; Kinetics-700 absent."""
    root = tmp_path / "data"
    _ucf101(root / "ucf101", 3783, missing=2)
    _kinetics(root / "kinetics400", (CLASSNAMES / "kinetics400.txt").read_text().splitlines(), 9, 1, False)
    _kinetics(root / "kinetics600", (CLASSNAMES / "kinetics600.txt").read_text().splitlines(), 7, 3, True)
    return root


def test_table11_figures_in_the_video_tasks():
    from evalkit.tasks.spec import TaskIndex

    assert sum(UCF_SPLIT_SIZES) == TABLE11["ucf101"][1]
    specs = {s.name: s for s in TaskIndex.load().resolve(["video"])}
    for task, (classes, size) in TABLE11.items():
        proto = specs[task].protocol
        assert (proto["table11_classes"], proto["table11_test_size"]) == (classes, size), task
        assert len(specs[task].classnames) == classes
    assert specs["ucf101"].protocol["expected_size"] == UCF_SPLIT_SIZES[0]
    assert all(specs[k].protocol["expected_size"] is None for k in ("kinetics400", "kinetics600", "kinetics700"))


def test_rows_per_layout(video_root):
    rows = {r.task: r for r in check_tasks("video", video_root)}
    assert list(rows) == ["ucf101", "kinetics400", "kinetics600", "kinetics700"]
    want = {  # task: (layout, folder, listed clips, not on disk)
        "ucf101": ("ucf101", "ucf101", 3783, 2),
        "kinetics400": ("kinetics", "kinetics400", 9, 1),
        "kinetics600": ("kinetics", "kinetics600", 7, 3),
    }
    for task, (layout, folder, listed, missing) in want.items():
        r = rows[task]
        assert (r.status, r.layout, r.path) == ("found", layout, str(video_root / folder)), task
        assert (r.samples, r.listed_missing) == (listed, missing), task
        assert f"{missing} listed clips not on disk" in r.message, r.message
        assert (r.table11_classes, r.table11) == TABLE11[task] and r.classes == TABLE11[task][0], task
    assert (rows["ucf101"].expected, rows["ucf101"].count) == (3783, "ok")
    assert all((rows[k].expected, rows[k].count) == (None, "unknown") for k in ("kinetics400", "kinetics600"))
    k700 = rows["kinetics700"]  # not there: every folder looked in, with the layout it would be
    assert k700.status == "missing" and (k700.table11_classes, k700.table11) == TABLE11["kinetics700"]
    looked = [folder for folders, _ in k700.looked for folder in folders]
    assert str(video_root / "kinetics700") in looked and str(video_root / "kinetics700" / "val_per_class") in looked


def test_table_json_and_exit_status(video_root, capsys):
    argv = ["data", "check", "--tasks", "video", "--data-root", str(video_root)]
    assert cli.main(argv) == 1  # Kinetics-700 is missing
    out = capsys.readouterr().out
    header = [c.strip() for c in out.splitlines()[0].strip("|").split("|")]
    assert header == ["task", "status", "layout", "samples", "expected", "Table 11 size", "classes",
                      "Table 11 classes", "count", "path / problem"]
    cells = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in out.splitlines()[2:6])}
    assert cells["ucf101"][1:9] == ["found", "ucf101", "3,783", "3,783", "11,213", "101", "101", "ok"]
    assert cells["kinetics400"][1:9] == ["found", "kinetics", "9", "—", "19,240", "400", "400", "unknown"]
    assert cells["kinetics600"][1:9] == ["found", "kinetics", "7", "—", "29,788", "600", "600", "unknown"]
    assert cells["kinetics700"][1:2] == ["missing"] and cells["kinetics700"][5] == "33,966"
    assert "(2 listed clips not on disk)" in cells["ucf101"][9] and "3 listed clips" in cells["kinetics600"][9]
    assert "3/4 found" in out

    _kinetics(video_root / "kinetics700", (CLASSNAMES / "kinetics700.txt").read_text().splitlines(), 5, 0, True)
    assert cli.main([*argv, "--json"]) == 0
    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    assert {k: (r["table11_classes"], r["table11"]) for k, r in rows.items()} == TABLE11
    assert {k: r["listed_missing"] for k, r in rows.items()} == {"ucf101": 2, "kinetics400": 1, "kinetics600": 3,
                                                                 "kinetics700": 0}
    assert rows["kinetics700"]["message"] == ""  # nothing missing, nothing said
    assert cli.main([*argv, "--strict"]) == 0  # UCF-101's count is the expected 3,783; Kinetics expects none

    (video_root / "ucf101" / "ucfTrainTestlist" / "testlist01.txt").write_text("YoYo/v_YoYo_g01_c01.avi\n")
    assert cli.main([*argv, "--strict"]) == 1
    assert "sample count differs from the expected size: ucf101" in capsys.readouterr().out


def test_videofolder(tmp_path, capsys):
    root = tmp_path / "clips"
    for c, n in (("riding_a_bike", 2), ("swimming", 3)):
        for k in range(n):
            _touch(root / c / f"{k}.mp4")
    _touch(root / "swimming" / "notes.txt")
    [row] = check_tasks(f"videofolder:{root}", None)
    assert (row.status, row.layout, row.samples, row.classes, row.listed_missing) == ("found", "videofolder", 5, 2,
                                                                                      None)
    assert (row.table11, row.table11_classes, row.count) == (None, None, "unknown")
    assert cli.main(["data", "check", "--tasks", f"videofolder:{root}"]) == 0
    cells = [c.strip() for c in capsys.readouterr().out.splitlines()[2].strip("|").split("|")]
    assert cells[:9] == [adhoc_name(f'videofolder:{root}'), "found", "videofolder", "5", "—", "—", "2", "—", "unknown"]


def test_three_split_task_checks_every_split(tmp_path):
    """ucf101-3splits: each test list is checked and the counts summed against 11,213; a missing
    list of a later split is found, naming the split."""
    root = tmp_path / "data"
    _ucf101(root / "ucf101", 5, missing=1)
    lists = root / "ucf101" / "ucfTrainTestlist"
    (lists / "testlist02.txt").write_text((lists / "testlist01.txt").read_text().splitlines()[0] + "\n")
    (row,) = check_tasks("ucf101-3splits", root)
    assert row.status == "error" and row.message.startswith("split 3:") and "testlist03.txt" in row.message
    (lists / "testlist03.txt").write_text("\n".join((lists / "testlist01.txt").read_text().splitlines()[:3]) + "\n")
    (row,) = check_tasks("ucf101-3splits", root)
    assert (row.status, row.samples, row.expected, row.count) == ("found", 5 + 1 + 3, 11213, "differs")
    assert row.message.startswith("3 splits: 5 + 1 + 3") and row.listed_missing == 1  # split 1 only
