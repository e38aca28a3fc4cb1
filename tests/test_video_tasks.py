"""Video tasks end to end (issue 10): generated clips through the task files, the
frames view and the classification family, with the demo model."""

from __future__ import annotations

import json

import pytest
from test_video_frames import make_clip

from evalkit.cli import main as cli
from evalkit.tasks.spec import TaskIndex, adhoc_name

K400 = (__import__("pathlib").Path(__file__).resolve().parents[1] / "tasks" / "classnames" / "kinetics400.txt")


def _videofolder(root, classes=("riding a bike", "swimming"), per_class=2):
    for c in classes:
        d = root / c.replace(" ", "_")
        d.mkdir(parents=True)
        for k in range(per_class):
            make_clip(d / f"{k}.mp4", "mpeg4", n=20 + 5 * k)
    return root


def _run(tmp_path, *argv):
    return cli.main(["run", "--model", "eva-clip-demo", "--output-dir", str(tmp_path / "out"), "--quiet", *argv])


def test_videofolder_runs_middle_and_uniform_side_by_side(tmp_path, capsys):
    root = _videofolder(tmp_path / "clips")
    assert _run(tmp_path, "--tasks", f"videofolder:{root}") == 0
    assert _run(tmp_path, "--tasks", f"videofolder:{root}", "--frames", "uniform-8") == 0
    folder = tmp_path / "out" / "runs" / "eva-clip-demo"
    one = json.loads((folder / f"{adhoc_name(f'videofolder:{root}')}.json").read_text())
    eight = json.loads((folder / f"{adhoc_name(f'videofolder:{root}')}_uniform-8.json").read_text())
    assert (one["evalkit"]["frame_sampler"], one["evalkit"]["frames"]) == ("middle", 1)
    assert (eight["evalkit"]["frame_sampler"], eight["evalkit"]["frames"]) == ("uniform-8", 8)
    assert one["evalkit"]["evaluated"] == eight["evalkit"]["evaluated"] == 4
    assert one["evalkit"]["n_templates"] == 4  # the generic video prompts (no templates.txt)


def test_frames_is_for_video_tasks_only(tmp_path, capsys):
    assert _run(tmp_path, "--tasks", "shapeworld-shape", "--frames", "uniform-8") == 1
    assert "--frames is for video tasks" in capsys.readouterr().err
    root = _videofolder(tmp_path / "clips", per_class=1)
    assert _run(tmp_path, "--tasks", f"videofolder:{root}", "--frames", "uniform-x") == 1
    assert "uniform-x" in capsys.readouterr().err


def test_kinetics400_from_its_csv_with_a_missing_clip(tmp_path):
    names = K400.read_text().splitlines()
    root = tmp_path / "kinetics400"
    (root / "val").mkdir(parents=True)
    rows = [(names[0], "aaa", 0, 10), (names[5], "bbb", 1, 11), (names[5], "gone", 2, 12)]
    (root / "val.csv").write_text("label,youtube_id,time_start,time_end,split\n" +
                                  "".join(f"{lab},{y},{s},{e},val\n" for lab, y, s, e in rows))
    for _, y, s, e in rows[:2]:
        make_clip(root / "val" / f"{y}_{s:06d}_{e:06d}.mp4", "mpeg4", n=12)
    assert _run(tmp_path, "--tasks", "kinetics400", "--data-root", str(tmp_path)) == 0
    r = json.loads((tmp_path / "out" / "runs" / "eva-clip-demo" / "kinetics400.json").read_text())
    ev, m = r["evalkit"], r["metrics"]
    assert ev["evaluated"] == 2 and ev["skipped"] == 1 and ev["skipped_keys"] == ["gone_000002_000012"]
    assert ev["data"]["listed_missing"] == 1 and ev["metric"] == "mean_acc1_acc5"
    assert m["mean_acc1_acc5"] == pytest.approx((m["acc1"] + m["acc5"]) / 2)
    assert ev["n_classes"] == 400 and ev["n_templates"] == 28 and ev["frames"] == 1


def test_video_group():
    specs = TaskIndex.load().resolve(["video"])
    assert [s.name for s in specs] == ["ucf101", "kinetics400", "kinetics600", "kinetics700"]
    assert all(s.view == {"transform": "best-of-both", "frames": "middle"} for s in specs)  # Table 5
    assert [len(s.classnames) for s in specs] == [101, 400, 600, 700]


def test_best_of_both_decodes_each_clip_once(tmp_path, monkeypatch):
    from evalkit import api
    from evalkit.data import video

    calls = []
    real = video.sample_frames
    monkeypatch.setattr(video, "sample_frames", lambda path, sampler, *a: calls.append(path) or real(path, sampler, *a))
    root = _videofolder(tmp_path / "clips")
    r = api.evaluate("eva-clip-demo", f"videofolder:{root}", transform="best-of-both", frames="uniform-8",
                     output_dir=tmp_path / "out", progress=False, raise_errors=True).results[0]
    assert len(calls) == 4 and len(set(calls)) == 4  # 4 clips, each decoded once for crop and squash
    assert {"acc1@crop", "acc1@squash"} <= set(r.metrics) and r.evalkit["frames"] == 8


def test_report_matches_video_results_to_the_frame_claims(tmp_path):
    """The report's video average (Table 5) is built from results whose frame count matches the
    claim's 1frame / 8frames tag."""
    from evalkit.reporting import report
    from evalkit.results import TaskResult, write_result

    for frames in (1, 8):
        for task, metric in (("ucf101", {"acc1": 0.8}), ("kinetics400", {"acc1": 0.6, "acc5": 0.8}),
                             ("kinetics600", {"acc1": 0.6, "acc5": 0.8}), ("kinetics700", {"acc1": 0.6, "acc5": 0.8})):
            m = dict(metric)
            if "acc5" in m:
                m["mean_acc1_acc5"] = (m["acc1"] + m["acc5"]) / 2 + (0.01 if frames == 8 else 0)
            else:
                m["acc1"] += 0.01 if frames == 8 else 0
            ev = {"transform": "best-of-both", "frames": frames, "frame_sampler": "middle" if frames == 1 else "uniform-8"}
            if frames == 8:
                ev["result_name"] = f"{task}@uniform-8"
            write_result(TaskResult(task, "eva-clip-18b", "x", "zeroshot_classification", m, evalkit=ev), tmp_path)
    aggs = report.aggregate_table(tmp_path, model="eva-clip-18b")
    video = aggs[(aggs["group"] == "video") & (aggs["aggregate"] == "VIDEO_AVG4") & (aggs["transform"] == "best-of-both")]
    by_protocol = {row.protocol: row for row in video.itertuples()}
    assert by_protocol["1frame"].verified == pytest.approx((80 + 70 * 3) / 4)
    assert by_protocol["8frames"].verified == pytest.approx((81 + 71 * 3) / 4)
    assert by_protocol["1frame"].n == by_protocol["8frames"].n == 4


def test_ucf101_three_splits_mean_and_std(tmp_path):
    import statistics

    from evalkit import api
    root = tmp_path / "ucf101"
    folders = [f.split()[1] for f in (K400.parent / "ucf101_folders.txt").read_text().splitlines()[:3]]
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    all_folders = [f.split()[1] for f in (K400.parent / "ucf101_folders.txt").read_text().splitlines()]
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {f}\n" for i, f in enumerate(all_folders)))
    for split in (1, 2, 3):
        lines = []
        for f in folders:
            for g in range(split):  # split k lists k clips a class: different sizes, different scores
                rel = f"{f}/v_{f}_g{split:02d}_c{g:02d}.avi"
                (root / "UCF-101" / f).mkdir(parents=True, exist_ok=True)
                make_clip(root / "UCF-101" / rel, "mpeg4", n=10 + g)
                lines.append(rel)
        (lists / f"testlist0{split}.txt").write_text("\n".join(lines) + "\n")
    kw = dict(data_root=tmp_path, output_dir=tmp_path / "out", progress=False, raise_errors=True, transform="crop")
    three = api.evaluate("eva-clip-demo", "ucf101-3splits", **kw).results[0]
    singles = [api.evaluate("eva-clip-demo", "ucf101", **kw).results[0]]
    m = three.metrics
    assert three.evalkit["evaluated"] == 3 * (1 + 2 + 3) and len(three.evalkit["per_split"]) == 3
    values = [m[f"acc1@split{k}"] for k in (1, 2, 3)]
    assert m["acc1"] == pytest.approx(statistics.mean(values))
    assert m["acc1_std"] == pytest.approx(statistics.pstdev(values))
    assert m["acc1@split1"] == singles[0].metrics["acc1"]  # split 1 is the plain task


def test_combine_splits_is_mean_and_population_std():
    import statistics

    from evalkit.tasks.common import combine_splits

    out = combine_splits([{"acc1": 0.5, "acc5": 0.9}, {"acc1": 0.7, "acc5": 0.9}, {"acc1": 0.6}])
    assert out["acc1"] == pytest.approx(0.6) and out["acc1_std"] == pytest.approx(statistics.pstdev([0.5, 0.7, 0.6]))
    assert out["acc1@split2"] == 0.7 and "acc5" not in out  # only what every split has


def test_kinetics600_zs220_three_splits_of_160_classes(tmp_path):
    """ER-ZSAR's protocol: each split scores the K600 test clips of its 160 classes against those
    160 names only; other classes' clips are left out (counted), a split's labels follow its index
    file's order, and the task reports the mean and std over the 3 splits."""
    import statistics

    from evalkit import api
    splits_dir = K400.parents[1] / "video" / "splits"
    c620 = (splits_dir / "classes620.txt").read_text().splitlines()
    idx = {k: [int(x) for x in (splits_dir / f"tst_class_idxs_split{k}.txt").read_text().split()] for k in (1, 2, 3)}
    only1 = next(i for i in idx[1] if i not in idx[2] and i not in idx[3])
    in_all = next(i for i in idx[1] if i in idx[2] and i in idx[3])
    only3 = next(i for i in idx[3] if i not in idx[1])
    # a K400 class (not in any split), a K600 rename that is not in the 620 list at all
    rows = [(c620[only1], "a1"), (c620[in_all], "b1"), (c620[in_all], "b2"), (c620[only3], "c1"),
            (c620[3], "k400"), ("dyeing hair", "renamed")]
    root = tmp_path / "kinetics600"
    (root / "test").mkdir(parents=True)
    (root / "test.csv").write_text("label,youtube_id,time_start,time_end,split\n" +
                                   "".join(f"{lab},{y},0,10,test\n" for lab, y in rows))
    for n, (_, y) in enumerate(rows):
        make_clip(root / "test" / f"{y}_000000_000010.mp4", "mpeg4", n=10 + n)
    kw = dict(data_root=tmp_path, output_dir=tmp_path / "out", progress=False, raise_errors=True,
              transform="crop", save_predictions=True)
    r = api.evaluate("eva-clip-demo", "kinetics600-zs220", **kw).results[0]
    ev, m = r.evalkit, r.metrics
    expected = {k: [y for lab, y in rows if lab in {c620[i] for i in idx[k]}] for k in (1, 2, 3)}
    assert [s["evaluated"] for s in ev["per_split"]] == [len(expected[k]) for k in (1, 2, 3)] == [3, 2, 3]
    assert ev["skipped"] == 0 and ev["n_classes"] == 160
    values = [m[f"acc1@split{k}"] for k in (1, 2, 3)]
    assert m["acc1"] == pytest.approx(statistics.mean(values))
    assert m["acc1_std"] == pytest.approx(statistics.pstdev(values))
    folder = tmp_path / "out" / "runs" / "eva-clip-demo"
    for k in (1, 2, 3):  # each split's predictions in a file of its own, labels in that split's order
        preds = [json.loads(ln) for ln in (folder / f"kinetics600-zs220.predictions.split{k}.jsonl").read_text().splitlines()]
        assert {p["key"].split("_")[0]: p["label"] for p in preds} == {
            y: idx[k].index(c620.index(lab)) for lab, y in rows if y in expected[k]}
    assert ev["data"]["outside_classes"] == len(rows) - len(expected[3])  # the last split's source info
    assert ev["data"]["classes"] == 160


def test_class_indices_errors_name_the_file(tmp_path):
    from evalkit.data.sources import DataError
    from evalkit.data.video_datasets import kinetics_source

    root = tmp_path / "k"
    root.mkdir()
    (root / "test.csv").write_text("label,youtube_id,time_start,time_end,split\nx,a,0,10,test\n")
    for content, why in (("0\n7\n", "outside the task's 3 classes"), ("1\none\n", "must be integers"),
                         ("1\n1\n", "listed twice")):
        (tmp_path / "idx.txt").write_text(content)
        src = {"path": str(root), "split": "test", "_classnames": ["x", "y", "z"], "class_indices": "idx.txt",
               "_base_dir": str(tmp_path)}
        with pytest.raises(DataError, match=why) as e:
            kinetics_source(src, None, "t")
        assert "idx.txt" in str(e.value)


def test_a_rerun_with_nothing_skipped_removes_the_old_skipped_log(tmp_path):
    root = _videofolder(tmp_path / "clips", per_class=1)
    (root / "swimming" / "broken.mp4").write_bytes(b"not a video")
    assert _run(tmp_path, "--tasks", f"videofolder:{root}", "--no-cache") == 0
    log = tmp_path / "out" / "runs" / "eva-clip-demo" / f"{adhoc_name(f'videofolder:{root}')}.skipped.log"
    assert "swimming/broken.mp4" in log.read_text()
    (root / "swimming" / "broken.mp4").unlink()
    assert _run(tmp_path, "--tasks", f"videofolder:{root}", "--no-cache") == 0
    assert not log.exists()


def test_kinetics_per_class_copy_is_found_beside_the_csv_layout(tmp_path):
    from evalkit import api
    names = K400.read_text().splitlines()
    root = tmp_path / "kinetics400" / "val_per_class"
    for c in names[:2]:
        (root / c).mkdir(parents=True)
        make_clip(root / c / "x_000000_000010.mp4", "mpeg4", n=12)
    r = api.evaluate("eva-clip-demo", "kinetics400", data_root=tmp_path, output_dir=tmp_path / "out",
                     progress=False, raise_errors=True, transform="crop", cache_dir=None).results[0]
    assert r.evalkit["data"]["layout"] == "videofolder" and r.evalkit["evaluated"] == 2
