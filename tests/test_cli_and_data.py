"""CLI behaviour, data sources in every layout, and bad input."""

from __future__ import annotations

import json

import pytest
from fixtures import CLASSNAMES, make_folder, make_wds

from evalkit.cli import main as cli
from evalkit.data.sources import DataError, load_source
from evalkit.registry import Registry, UnknownNameError
from evalkit.tasks.spec import TaskIndex, TaskSpecError, adhoc_name


def run_cli(*argv: str) -> int:
    return cli.main(list(argv))


def _run(tmp_path, model, tasks, *extra):
    return run_cli("run", "--model", model, "--tasks", tasks, "--output-dir", str(tmp_path / "out"), "--quiet", *extra)


def test_run_wds_writes_clip_benchmark_compatible_json(tiny_arch, tmp_path, capsys):
    root = make_wds(tmp_path / "wds_fixture")
    assert _run(tmp_path, f"open_clip:{tiny_arch}", f"wds:{root}", "--save-predictions") == 0
    path = tmp_path / "out" / "runs" / f"open_clip_{tiny_arch}" / f"{adhoc_name(f'wds:{root}')}.json"
    d = json.loads(path.read_text())
    for key in ("dataset", "model", "pretrained", "task", "metrics", "language"):
        assert key in d
    assert d["task"] == "zeroshot_classification"
    ev = d["evalkit"]
    assert ev["samples"] == 24 and ev["skipped"] == 0 and ev["precision"] == "fp32"
    assert ev["fingerprint"] and ev["git_commit"] and ev["transform"] == "crop"
    preds = (path.parent / f"{adhoc_name(f'wds:{root}')}.predictions.jsonl").read_text().splitlines()
    assert len(preds) == 24
    p0 = json.loads(preds[0])
    assert set(p0) == {"key", "label", "top_classes", "top_scores"} and len(p0["top_classes"]) == 5
    # clip_benchmark's own `build` reads our file
    import pandas as pd
    from clip_benchmark.cli import main_build

    class A:  # the argparse namespace clip_benchmark's build expects
        files = [str(path)]
        output = str(tmp_path / "benchmark.csv")

    main_build(A)
    df = pd.read_csv(tmp_path / "benchmark.csv")
    assert df["acc1"].iloc[0] == pytest.approx(d["metrics"]["acc1"])


def test_corrupt_sample_skipped_counted_and_logged(tiny_arch, tmp_path):
    root = make_wds(tmp_path / "wds_bad", corrupt=2)
    assert _run(tmp_path, f"open_clip:{tiny_arch}", f"wds:{root}") == 0
    out = tmp_path / "out" / "runs" / f"open_clip_{tiny_arch}"
    d = json.loads((out / f"{adhoc_name(f'wds:{root}')}.json").read_text())
    assert d["evalkit"]["skipped"] == 2 and d["evalkit"]["evaluated"] == 22
    assert d["evalkit"]["skipped_keys"] == ["0.tar/s000000", "0.tar/s000001"]
    log = (out / f"{adhoc_name(f'wds:{root}')}.skipped.log").read_text().splitlines()
    assert len(log) == 2 and log[0].startswith("0.tar/s000000\t")


def test_corrupt_sample_fails_under_strict(tiny_arch, tmp_path, capsys):
    root = make_wds(tmp_path / "wds_bad", corrupt=1)
    assert _run(tmp_path, f"open_clip:{tiny_arch}", f"wds:{root}", "--strict", "--no-cache") == 1
    err = capsys.readouterr().err
    assert "0.tar/s000000" in err and "cannot decode" in err


def test_corrupt_tar_names_the_shard(tiny_arch, tmp_path, capsys):
    root = make_wds(tmp_path / "wds_tar")
    shard = root / "test" / "1.tar"
    shard.write_bytes(shard.read_bytes()[:700] + b"\xff" * 100)
    assert _run(tmp_path, f"open_clip:{tiny_arch}", f"wds:{root}", "--no-cache") == 1
    err = capsys.readouterr().err
    assert "1.tar" in err and "corrupt" in err and "Traceback" not in err


def test_missing_shard_and_missing_root(tiny_arch, tmp_path, capsys):
    root = make_wds(tmp_path / "wds_short")
    (root / "test" / "1.tar").unlink()
    assert _run(tmp_path, f"open_clip:{tiny_arch}", f"wds:{root}") == 1
    assert "nshards.txt says 2 shards but 1 are missing" in capsys.readouterr().err
    assert _run(tmp_path, f"open_clip:{tiny_arch}", f"wds:{tmp_path / 'nope'}") == 1
    assert "dataset folder not found" in capsys.readouterr().err


def test_folder_source_and_classnames_mismatch(tiny_arch, tmp_path, capsys):
    root = make_folder(tmp_path / "imgs")
    data = load_source({"type": "folder", "path": str(root)}, None, "t")
    assert data.classnames == sorted(n for n in CLASSNAMES) and data.size == 18
    assert _run(tmp_path, f"open_clip:{tiny_arch}", f"folder:{root}") == 0
    bad = tmp_path / "names.txt"
    bad.write_text("a\nb\n")
    assert _run(tmp_path, f"open_clip:{tiny_arch}", f"folder:{root}?classnames={bad}") == 1
    assert "2 class names but" in capsys.readouterr().err


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="contain no images"):
        load_source({"type": "folder", "path": str(tmp_path / "empty")}, None, "t")


def test_hf_save_to_disk_source(tiny_arch, tmp_path):
    import datasets
    from fixtures import make_image

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSNAMES)})
    rows = {"image": [make_image(i % 6, i) for i in range(12)], "label": [i % 6 for i in range(12)]}
    datasets.Dataset.from_dict(rows, features=feats).save_to_disk(str(tmp_path / "hfds"))
    data = load_source({"type": "hf", "path": str(tmp_path / "hfds")}, None, "t")
    assert data.classnames == CLASSNAMES and data.size == 12
    assert _run(tmp_path, f"open_clip:{tiny_arch}", f"hf:{tmp_path / 'hfds'}") == 0


def test_unknown_model_and_task_exit_2_with_suggestions(tiny_arch, tmp_path, capsys):
    assert _run(tmp_path, "eva-clip-dem", "demo") == 2
    assert "did you mean 'eva-clip-demo'" in capsys.readouterr().err
    assert _run(tmp_path, "eva-clip-demo", "shapeworld-shap") == 2
    assert "did you mean 'shapeworld-shape'" in capsys.readouterr().err


def test_malformed_yaml_names_file_and_field(tmp_path):
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "bad.yaml").write_text("task: x\nfamily: classification\nsource: {type: wds}\ntemplatez: []\n")
    # reading task files imports no family: the family checks its keys when the task is resolved
    from evalkit.api import resolve_tasks

    with pytest.raises(TaskSpecError, match=r"bad\.yaml: unknown field\(s\) \['templatez'\]"):
        resolve_tasks("x", [d])
    (d / "bad.yaml").write_text("task: x\nfamily: [\n")
    with pytest.raises(TaskSpecError, match=r"bad\.yaml:3:1: invalid YAML: expected the node content"):
        TaskIndex.load([d])
    (d / "bad.yaml").write_text("task: x\nsource: {type: wds}\n")
    with pytest.raises(TaskSpecError, match="missing required field 'family'"):
        TaskIndex.load([d])


def test_yaml_include_and_nested_groups(tmp_path):
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "base.yaml").write_text("family: classification\ntemplates: ['a {c}']\nsource: {type: wds, split: test}\n")
    (d / "a.yaml").write_text("include: base.yaml\ntask: a\nsource: {path: /x}\n")
    (d / "b.yaml").write_text("include: base.yaml\ntask: b\ntemplates: ['b {c}']\n")
    (d / "g1.yaml").write_text("group: g1\ntasks: [a]\n")
    (d / "g2.yaml").write_text("group: g2\ntasks: [g1, b, a]\n")
    index = TaskIndex.load([d])
    specs = index.resolve(["g2"])
    assert [s.name for s in specs] == ["a", "b"]
    assert specs[0].source == {"type": "wds", "split": "test", "path": "/x"}
    assert specs[1].templates == ["b {c}"]
    (d / "g3.yaml").write_text("group: g3\ntasks: [g4]\n")
    (d / "g4.yaml").write_text("group: g4\ntasks: [g3]\n")
    with pytest.raises(TaskSpecError, match="cycle"):
        TaskIndex.load([d]).resolve(["g3"])


def test_registry_entry_point_plugins(monkeypatch):
    from importlib import metadata

    class FakeEP:
        name, value = "video-plugin", "pkg:Family"

        def load(self):
            return "the-family"

    monkeypatch.setattr(metadata, "entry_points", lambda group: [FakeEP()] if group == "grp" else [])
    reg: Registry[str] = Registry("task family", "grp")
    assert reg.get("video-plugin") == "the-family"
    with pytest.raises(UnknownNameError, match="did you mean 'video-plugin'"):
        reg.get("video-plugn")


def test_list_commands(capsys):
    assert run_cli("list", "models") == 0
    out = capsys.readouterr().out
    assert "eva-clip-18b" in out and "open_clip:ARCH" in out
    assert run_cli("list", "groups") == 0
    assert "demo" in capsys.readouterr().out
    assert run_cli("list", "tasks") == 0
    assert "shapeworld-colour" in capsys.readouterr().out


def test_offline_pretrained_tag_gives_clear_error(tmp_path, capsys):
    assert _run(tmp_path, "open_clip:ViT-B-32", "demo", "--weights", "openai") == 1
    err = capsys.readouterr().err
    assert "could not fetch" in err and "--weights /path/to" in err


def test_eva_18b_without_weights_names_expected_files(tmp_path, capsys):
    # --max-memory: the planner is told the host has room, so the run gets as far as the weights
    assert _run(tmp_path, "eva-clip-18b", "demo", "--max-memory", "200GiB") == 1
    assert "EVA_CLIP_18B_psz14_s6B.fp16.pt" in capsys.readouterr().err


def test_resume_uses_cached_units(tiny_arch, tmp_path, monkeypatch):
    """An interrupted run resumes: finished units come from the cache, only the rest is computed."""
    from evalkit.features import embed as features
    root = make_wds(tmp_path / "wds_resume", nshards=3)
    calls = {"n": 0}
    real = features._run_unit

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(features, "_run_unit", flaky)
    cache = str(tmp_path / "cache")
    assert _run(tmp_path, f"open_clip:{tiny_arch}", f"wds:{root}", "--cache-dir", cache) == 130
    calls["n"] = 10  # no more interruptions; count what is recomputed
    assert _run(tmp_path, f"open_clip:{tiny_arch}", f"wds:{root}", "--cache-dir", cache) == 0
    assert calls["n"] == 12, "only the two unfinished shards should be recomputed"
    d = json.loads((tmp_path / "out" / "runs" / f"open_clip_{tiny_arch}" / f"{adhoc_name(f'wds:{root}')}.json").read_text())
    assert d["evalkit"]["samples"] == 24


def test_workers_see_every_sample_once(tiny_arch, tmp_path):
    """With several loader workers each sample is decoded exactly once (none lost, none doubled)."""
    import evalkit

    root = make_wds(tmp_path / "wds_workers", n_per_class=7, corrupt=1)
    runs = {}
    for nw in (0, 2):
        rep = evalkit.evaluate(f"open_clip:{tiny_arch}", f"wds:{root}", output_dir=tmp_path / f"o{nw}",
                               cache_dir=None, progress=False, raise_errors=True, num_workers=nw, batch_size=5)
        runs[nw] = rep.results[0]
    assert runs[0].evalkit["samples"] == runs[2].evalkit["samples"] == 42
    assert runs[0].metrics == runs[2].metrics
