"""`evalkit data get` and `evalkit run --download` (issue 20) against a local Hub (tests/hub_server.py)
serving clip_benchmark-style WebDataset repos built here: the command line's report, the data
check's commit, a run on fetched data recording the revision, --download fetching before any
weights are read, the missing-data error's command, sets that are not on the Hub, a mirror whose
class names differ, the offline cluster, the ranks of a launched job, and the built-in task files'
fetch blocks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import hubfixtures
import pytest
from hub_server import wds_repo_files
from hubfixtures import REPO_ROOT, child_env

from evalkit import api
from evalkit.cli.main import main
from evalkit.data.fetch import MANIFEST_NAME, HubSpec, ManualSpec, read_manifest
from evalkit.results import TaskResult
from evalkit.tasks.spec import TaskIndex, TaskSpecError

hub = hubfixtures.hub  # the fixture: a local Hub, huggingface_hub online and pointed at it

REPO = "clip-benchmark/wds_tiny"
CLASSES = ["cat", "dog", "bird"]
TASK = f"""task: tiny
family: classification
classnames: [cat, dog, bird]
templates: ["a photo of a {{c}}.", "a drawing of a {{c}}."]
source:
  type: any
  layouts:
    - {{type: folder, path: tiny/test}}
    - {{type: wds, path: wds_tiny}}
protocol: {{expected_size: 12}}
fetch: {{repo: {REPO}, revision: main}}
"""
MANUAL = """task: tinyman
family: classification
classnames: [cat, dog, bird]
templates: ["a photo of a {c}."]
source:
  type: any
  layouts:
    - {type: wds, path: tinyman}
fetch:
  manual: https://example.org/tinyman
  path: tinyman
  layout: "tinyman/test/*.tar + nshards.txt"
  note: the licence forbids mirroring
"""


def task_dir(tmp_path: Path, **files: str) -> Path:
    d = tmp_path / "tasks"
    d.mkdir(exist_ok=True)
    for name, text in {"tiny": TASK, **files}.items():
        (d / f"{name}.yaml").write_text(text)
    return d


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def run_args(data: Path, tasks: Path, out: Path, *extra: str, task: str = "tiny") -> list[str]:
    return ["run", "--model", "eva-clip-demo", "--tasks", task, "--data-root", str(data), "--task-dir", str(tasks),
            "--output-dir", str(out), "--no-cache", "--quiet", *extra]


def result(out: Path, task: str = "tiny") -> dict:
    return json.loads((out / "runs" / "eva-clip-demo" / f"{task}.json").read_text())


# --------------------------------------------------------------------------- data get, check, run


def test_data_get_says_what_where_size_and_count_then_check_and_run_use_it(hub, tmp_path, capsys):
    files = wds_repo_files(n_samples=12, n_shards=3)
    repo = hub.add_repo(REPO, files)
    tasks, data = task_dir(tmp_path), tmp_path / "data"
    rc, out, _ = cli(capsys, "data", "get", "--tasks", "tiny", "--data-root", str(data), "--task-dir", str(tasks),
                     "--quiet")
    assert rc == 0, out
    size = sum(len(b) for n, b in files.items() if not n.startswith(("train/", "README")))
    from evalkit.data.fetch import human_size

    assert (f"tiny: fetched {REPO}@{repo.commit[:10]} test: 3 shards, 12 samples, 3 classes, {human_size(size)} "
            f"-> {data / 'wds_tiny'}") in out
    assert "1/1 in place" in out
    # the data check reads it and names the commit it came from
    rc, out, _ = cli(capsys, "data", "check", "--tasks", "tiny", "--data-root", str(data), "--task-dir", str(tasks))
    assert rc == 0 and f"{data / 'wds_tiny'} (fetched {REPO}@{repo.commit[:10]})" in out, out
    rc, out, _ = cli(capsys, "data", "check", "--tasks", "tiny", "--data-root", str(data), "--task-dir", str(tasks),
                     "--json")
    row = json.loads(out)[0]
    assert (row["samples"], row["fetched"]["commit"], row["fetched"]["repo"]) == (12, repo.commit, REPO)
    # a second get asks the Hub nothing
    before = len(hub.requests())
    rc, out, _ = cli(capsys, "data", "get", "--tasks", "tiny", "--data-root", str(data), "--task-dir", str(tasks),
                     "--quiet")
    assert rc == 0 and f"tiny: already fetched {REPO}@{repo.commit[:10]}" in out and len(hub.requests()) == before
    # a run on it records the revision
    rc, out, err = cli(capsys, *run_args(data, tasks, tmp_path / "out"))
    assert rc == 0, err
    revision = result(tmp_path / "out")["evalkit"]["data_revision"]
    assert (revision["repo"], revision["revision"], revision["commit"], revision["split"]) == (
        REPO, "main", repo.commit, "test")
    assert len(hub.requests()) == before
    # and so does its run-log line: a later run can tell if the mirror changed
    (line,) = [json.loads(x) for x in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()]
    assert line["data_revision"]["commit"] == repo.commit


def test_data_in_another_layout_is_used_as_it_is_and_nothing_is_fetched(hub, tmp_path, capsys):
    hub.add_repo(REPO, wds_repo_files())
    tasks, data = task_dir(tmp_path), tmp_path / "data"
    from PIL import Image

    for k, name in enumerate(CLASSES):  # the user's own ImageFolder copy
        (data / "tiny" / "test" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (k * 80, 0, 0)).save(data / "tiny" / "test" / name / "a.png")
    rc, out, _ = cli(capsys, "data", "get", "--tasks", "tiny", "--data-root", str(data), "--task-dir", str(tasks))
    assert rc == 0 and f"tiny: found at {data / 'tiny' / 'test'} (not fetched by evalkit" in out, out
    assert hub.requests() == [] and not (data / "wds_tiny").exists()
    # a data root that was never fetched into records no revision
    rc, _, err = cli(capsys, *run_args(data, tasks, tmp_path / "out"))
    assert rc == 0, err
    assert result(tmp_path / "out")["evalkit"]["data_revision"] is None


def test_run_download_fetches_before_any_weights_are_read(hub, tmp_path, monkeypatch, capsys):
    repo = hub.add_repo(REPO, wds_repo_files())
    tasks, data = task_dir(tmp_path), tmp_path / "data"
    from evalkit import models

    loaded: list[float] = []
    real_load = models.load

    def load(*args, **kwargs):
        loaded.append(time.monotonic())
        return real_load(*args, **kwargs)

    monkeypatch.setattr(models, "load", load)
    report = api.evaluate("eva-clip-demo", "tiny", data_root=data, task_dirs=[tasks], output_dir=tmp_path / "out",
                          cache_dir=None, progress=False, download=True, raise_errors=True)
    assert report.ok and len(loaded) == 1
    downloads = [r for r in hub.requests("resolve") if r.method == "GET"]
    assert downloads and max(r.at for r in downloads) < loaded[0]
    assert f"tiny: fetched {REPO}@{repo.commit[:10]} test" in capsys.readouterr().err
    assert report.results[0].evalkit["data_revision"]["commit"] == repo.commit
    # data in place: --download asks the Hub nothing
    before = len(hub.requests())
    api.evaluate("eva-clip-demo", "tiny", data_root=data, task_dirs=[tasks], output_dir=tmp_path / "out2",
                 cache_dir=None, progress=False, download=True, raise_errors=True)
    assert len(hub.requests()) == before


def test_a_failed_download_fails_its_task_before_the_model_loads(hub, tmp_path, monkeypatch):
    hub.add_repo(REPO, wds_repo_files(n_samples=9))  # the task expects 12
    tasks = task_dir(tmp_path)
    from evalkit import models

    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    report = api.evaluate("eva-clip-demo", "tiny", data_root=tmp_path / "data", task_dirs=[tasks],
                          output_dir=tmp_path / "out", cache_dir=None, progress=False, download=True)
    assert [name for name, _ in report.failures] == ["tiny"]
    assert "9 samples, the task expects 12" in report.failures[0][1]
    assert not (tmp_path / "data" / "wds_tiny").exists()


def test_without_download_the_missing_data_error_ends_with_the_data_get_command(hub, tmp_path, capsys):
    hub.add_repo(REPO, wds_repo_files())
    tasks, data = task_dir(tmp_path), tmp_path / "empty"
    rc, _, err = cli(capsys, *run_args(data, tasks, tmp_path / "out"))
    assert rc == 1
    line = [ln for ln in err.splitlines() if ln.startswith("evalkit: error: tiny:")]
    assert len(line) == 1, err
    assert "dataset not found" in line[0] and line[0].endswith(
        f"evalkit data get --tasks tiny --data-root {data}"), line[0]
    assert hub.requests() == []


# --------------------------------------------------------------------------- sets not on the Hub, bad input


def test_a_set_not_on_the_hub_prints_where_to_get_it_and_exits_1_until_it_is_there(hub, tmp_path, capsys):
    tasks, data = task_dir(tmp_path, tinyman=MANUAL), tmp_path / "data"
    rc, out, _ = cli(capsys, "data", "get", "--tasks", "tinyman", "--data-root", str(data), "--task-dir", str(tasks))
    assert rc == 1
    for part in ("https://example.org/tinyman", str(data / "tinyman"), "tinyman/test/*.tar + nshards.txt",
                 "the licence forbids mirroring", f"evalkit data check --tasks tinyman --data-root {data}",
                 "to get by hand: tinyman"):
        assert part in out, (part, out)
    assert hub.requests() == []
    # once the user has put it there: found, exit 0, still no request
    shutil.copytree(_fetched_copy(hub, tmp_path), data / "tinyman")
    before = len(hub.requests())
    rc, out, _ = cli(capsys, "data", "get", "--tasks", "tinyman", "--data-root", str(data), "--task-dir", str(tasks))
    assert rc == 0 and f"tinyman: found at {data / 'tinyman'}" in out, out
    assert len(hub.requests()) == before
    # a run without it says where to get it, ending with the command
    rc, _, err = cli(capsys, *run_args(tmp_path / "none", tasks, tmp_path / "out", task="tinyman"))
    assert rc == 1 and err.rstrip().endswith(f"where to get it: evalkit data get --tasks tinyman --data-root "
                                             f"{tmp_path / 'none'}"), err


def _fetched_copy(hub, tmp_path: Path) -> Path:
    """The tiny repo's test split as a folder (fetched from the local Hub into a scratch root)."""
    from evalkit.data.fetch import fetch_source

    hub.add_repo(REPO, wds_repo_files())
    scratch = tmp_path / "scratch"
    fetch_source({"repo": REPO}, scratch, task="tiny", progress=False, hub_cache=tmp_path / "hf")
    return scratch / "wds_tiny"


def test_mirror_class_names_that_differ_are_reported_and_the_tasks_win(hub, tmp_path, capsys):
    hub.add_repo(REPO, wds_repo_files(classes=["cat", "dog", "birb"],
                                      templates=["a photo of a {c}.", "a sketch of a {c}."]))
    tasks, data = task_dir(tmp_path), tmp_path / "data"
    rc, out, _ = cli(capsys, "data", "get", "--tasks", "tiny", "--data-root", str(data), "--task-dir", str(tasks),
                     "--quiet")
    assert rc == 0, out
    names = "the mirror's classnames.txt differs from the task's class names at 1 entries: #2 'birb' (task: 'bird')"
    templates = ("the mirror's zeroshot_classification_templates.txt differs from the task's templates at 1 entries: "
                 "#1 'a sketch of a {c}.' (task: 'a drawing of a {c}.')")
    assert names in out and templates in out, out
    assert read_manifest(data)["folders"]["wds_tiny"]["parts"]["test"]["notes"] == [names + "; the task's list is used",
                                                                                   templates + "; the task's list is used"]
    rc, _, err = cli(capsys, *run_args(data, tasks, tmp_path / "out"))
    assert rc == 0, err
    ev = result(tmp_path / "out")["evalkit"]
    assert any("birb" in note for note in ev["data_revision"]["notes"])
    from evalkit.filehash import json_sha256

    assert ev["templates_sha256"] == json_sha256(["a photo of a {c}.", "a drawing of a {c}."])  # the task's


def test_no_data_root_and_a_bad_fetch_block_are_clear_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EVALKIT_DATA", raising=False)
    tasks = task_dir(tmp_path, bad=TASK.replace("tiny", "bad").replace("revision: main", "revison: main"))
    rc, _, err = cli(capsys, "data", "get", "--tasks", "tiny", "--task-dir", str(tasks))
    assert rc == 1 and "no data root to fetch into: pass --data-root DIR or set $EVALKIT_DATA" in err
    rc, _, err = cli(capsys, "data", "get", "--tasks", "bad", "--data-root", str(tmp_path), "--task-dir", str(tasks))
    assert rc == 1 and f"{tasks / 'bad.yaml'}: fetch: task 'bad': fetch: unknown key(s) revison" in err, err
    with pytest.raises(TaskSpecError, match=r"bad\.yaml: fetch: .*revison"):  # a run says it before anything else
        api.resolve_tasks("bad", [tasks])
    with pytest.raises(TaskSpecError, match=r"field 'fetch' must be a mapping"):
        TaskIndex.load([task_dir(tmp_path, worse=TASK.replace("task: tiny", "task: worse").replace(
            f"fetch: {{repo: {REPO}, revision: main}}", f"fetch: {REPO}"))])


def test_a_file_including_another_replaces_its_fetch_block(tmp_path):
    d = task_dir(tmp_path, child="include: tiny.yaml\ntask: child\nfetch: {manual: https://x.org, layout: L}\n")
    index = TaskIndex.load([d])
    child = index.resolve(["child"])[0]
    assert child.fetch_specs() == [ManualSpec("https://x.org", "child", "L")]
    assert index.resolve(["tiny"])[0].fetch_specs()[0].repo == REPO


# --------------------------------------------------------------------------- the offline cluster


def test_a_hub_that_cannot_be_reached_fails_at_once_and_the_other_tasks_are_not_attempted(hub, tmp_path, capsys,
                                                                                          monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    tasks, data = task_dir(tmp_path, other=TASK.replace("tiny", "other")), tmp_path / "data"
    t0 = time.monotonic()
    rc, out, err = cli(capsys, "data", "get", "--tasks", "tiny,other", "--data-root", str(data), "--task-dir",
                       str(tasks))
    took = time.monotonic() - t0
    assert rc == 1
    assert "retry" not in err, err  # never retried (the back-off would wait 1 + 2 + 4 + 8 + 16 s)
    assert took < 10, took
    lines = {ln.split(":", 1)[0]: ln for ln in out.splitlines() if ln.startswith(("tiny:", "other:"))}
    assert set(lines) == {"tiny", "other"}, out
    for part in (f"evalkit could not reach the Hub at {closed}", "connection refused", "HF_ENDPOINT",
                 "HF_HUB_OFFLINE", "docs/data.md"):
        assert part in lines["tiny"], lines["tiny"]
    assert lines["other"].startswith("other: not attempted: "), lines["other"]
    assert "failed: tiny, other" in out, out
    assert hub.requests() == []


def test_fetch_here_copy_there_and_nothing_there_needs_the_network(hub, tmp_path, capsys):
    repo = hub.add_repo(REPO, wds_repo_files())
    tasks, data = task_dir(tmp_path), tmp_path / "data"
    rc, out, _ = cli(capsys, "data", "get", "--tasks", "tiny", "--data-root", str(data), "--task-dir", str(tasks),
                     "--quiet")
    assert rc == 0, out
    cluster = tmp_path / "cluster"
    subprocess.run(["cp", "-a", str(data), str(cluster)], check=True)
    assert (cluster / MANIFEST_NAME).is_file()
    before = len(hub.requests())
    env = child_env(hub, tmp_path, offline=True)  # HF_HUB_OFFLINE=1, the endpoint still the local Hub
    evalkit = [sys.executable, "-m", "evalkit"]
    got = subprocess.run([*evalkit, "data", "get", "--tasks", "tiny", "--data-root", str(cluster), "--task-dir",
                          str(tasks)], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0 and "tiny: already fetched" in got.stdout, got.stdout + got.stderr
    ran = subprocess.run([*evalkit, *run_args(cluster, tasks, tmp_path / "out", "--download")], env=env, cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert result(tmp_path / "out")["evalkit"]["data_revision"]["commit"] == repo.commit
    assert len(hub.requests()) == before
    # offline and missing: said, with no request
    (tasks / "other.yaml").write_text(TASK.replace("tiny", "other"))
    miss = subprocess.run([*evalkit, "data", "get", "--tasks", "other", "--data-root", str(cluster), "--task-dir",
                           str(tasks)], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert miss.returncode == 1 and "HF_HUB_OFFLINE is set" in miss.stdout, miss.stdout + miss.stderr
    assert "other: HF_HUB_OFFLINE is set" in miss.stdout and "other: other:" not in miss.stdout, miss.stdout
    # run --download says it once too: one task prefix
    ran = subprocess.run([*evalkit, *run_args(cluster, tasks, tmp_path / "out2", "--download", task="other")],
                         env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 1 and "evalkit: error: other: HF_HUB_OFFLINE is set" in ran.stderr, ran.stderr[-2000:]
    assert "other: other:" not in ran.stderr, ran.stderr[-2000:]
    assert len(hub.requests()) == before


# --------------------------------------------------------------------------- the ranks of a launched job


class FakeWorld:
    """What _download uses of a World: this rank's place, and an all_gather answered by the test."""

    def __init__(self, launch, others: list[dict]) -> None:
        self.rank, self.local_rank, self.size = launch.rank, launch.local_rank, launch.world_size
        self.is_main = launch.rank == 0
        self.others, self.gathered = others, []

    def all_gather(self, obj, what):
        self.gathered.append((obj, what))
        return [obj, *self.others]


def _launch(rank: int, local_rank: int):
    from evalkit.features.distributed import detect

    return detect({"RANK": str(rank), "WORLD_SIZE": "4", "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": "2",
                   "MASTER_ADDR": "node0", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x"})


def _download(world, data: Path, tasks: Path, raise_errors: bool = False) -> list:
    from evalkit.tasks.runspec import RunSpec

    failures: list = []
    report = api.RunReport()
    specs = api.resolve_tasks("tiny", [tasks])
    api._download(specs, data, RunSpec(progress=False, raise_errors=raise_errors), world,
                  lambda name, e: failures.append((name, e)), report)
    return failures + report.failures


def test_under_a_launcher_local_rank_0_of_each_node_fetches_and_the_others_wait(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files())
    tasks, data = task_dir(tmp_path), tmp_path / "data"
    assert api.fetches_here(None)
    # rank 3 (local rank 1 of node 1): fetches nothing, waits at the collective, drops what rank 2 could not fetch
    follower = FakeWorld(_launch(3, 1), others=[{}, {}, {"tiny": "tiny: the Hub answered 503"}])
    assert not api.fetches_here(follower)
    assert _download(follower, data, tasks) == [("tiny", "tiny: the Hub answered 503")]
    assert hub.requests() == [] and follower.gathered == [({}, "fetching the data (--download)")]
    # rank 2 (local rank 0 of node 1): fetches, then meets the others
    fetcher = FakeWorld(_launch(2, 0), others=[{}, {}, {}])
    assert api.fetches_here(fetcher)
    assert _download(fetcher, data, tasks) == [] and fetcher.gathered == [({}, "fetching the data (--download)")]
    assert hub.count("GET", "test/0.tar", kind="resolve") == 1
    assert read_manifest(data)["folders"]["wds_tiny"]["parts"]["test"]["samples"] == 12


# --------------------------------------------------------------------------- the built-in task files


def test_every_paper_task_names_its_source_and_each_hub_source_is_read_by_a_layout():
    """Each task of the paper's sets names where its data comes from; a Hub entry is one of
    clip_benchmark's mirrors, fetched into a folder one of the task's WebDataset layouts reads, at
    the split it reads; a manual entry names an https/http source and the folder evalkit reads."""
    index = TaskIndex.load()
    from evalkit.tasks.fetching import fetch_items

    paper = [n for g in ("eva27", "retrieval", "video", "3d", "3d-fewshot", "video-protocol-variants",
                         "eva27-protocol-variants") for n in index.group_tasks(g)] + ["imagenet1k-linear-probe"]
    on_hub = set()
    for name in paper:
        spec = index.resolve([name])[0]
        items = fetch_items(spec)
        assert items, f"{spec.path}: no fetch: block"
        for item in items:
            if isinstance(item.spec, HubSpec) and item.spec.layout == "archive":  # the 3D sets: Uni3D's zip
                on_hub.add(name)
                assert (item.spec.repo, item.spec.archive, item.spec.member) == (
                    "BAAI/Uni3D", "data/test_datasets.zip", item.spec.path), name
                assert any(lo["type"] == "openshape_npy" and item.spec.path in lo["path"]
                           for lo in item.source["layouts"]), name
                assert item.expected == spec.protocol.get("expected_size"), name
            elif isinstance(item.spec, HubSpec):
                on_hub.add(name)
                assert item.spec.repo == f"clip-benchmark/{item.spec.path}" and item.spec.path.startswith("wds_")
                layouts = [lo for lo in (item.source.get("layouts") or [item.source]) if lo.get("type") == "wds"]
                assert any(item.spec.path in (lo["path"] if isinstance(lo["path"], list) else [lo["path"]])
                           and lo.get("split", "test") == item.spec.split for lo in layouts), (name, item.spec)
                assert item.expected == spec.protocol.get(
                    "train_expected_size" if item.part == "train" else "expected_size"), name
            else:
                assert isinstance(item.spec, ManualSpec) and item.spec.url.startswith(("https://", "http://"))
    # 22 of the 27 image sets (not Birdsnap, Food-101, and the whole-dataset Caltech-101, EuroSAT and
    # RESISC45, whose mirrors are VTAB's smaller splits), PCam's template variant, both retrieval
    # sets and the ImageNet linear probe; the 3D sets of Uni3D's test archive
    assert on_hub == set(index.group_tasks("eva27")) - {"birdsnap", "food101", "caltech101", "eurosat", "resisc45"} | {
        "pcam-openai", "flickr30k", "coco", "imagenet1k-linear-probe", "modelnet40", "scanobjectnn", "objaverse-lvis",
        "objaverse-lvis-fewshot"}
    probe = fetch_items(index.resolve(["imagenet1k-linear-probe"])[0])
    assert [(i.part, i.spec.split, i.expected) for i in probe] == [("test", "test", 50000), ("train", "train", 1281167)]
    # the 200-class subsets are not counted against the 1000 class names
    assert fetch_items(index.resolve(["imagenet-a"])[0])[0].classes is None
    assert fetch_items(index.resolve(["cifar10"])[0])[0].classes == 10


def test_a_mirror_task_fetches_its_mirror_and_checks_the_tasks_counts_only_when_it_is_the_tasks_own():
    from evalkit.tasks.fetching import fetch_items

    index = TaskIndex.load()
    vtab = fetch_items(index.resolve(["wds/vtab/eurosat"])[0])  # VTAB's split, not the whole dataset
    assert [(i.spec.repo, i.spec.path, i.expected, i.classes) for i in vtab] == [
        ("clip-benchmark/wds_vtab-eurosat", "wds_vtab-eurosat", None, None)]
    own = fetch_items(index.resolve(["wds/vtab/cifar10"])[0])
    assert [(i.spec.repo, i.expected, i.classes) for i in own] == [("clip-benchmark/wds_vtab-cifar10", 10000, 10)]


# --------------------------------------------------------------------------- a plugin family's result


def test_a_plugin_family_result_gets_null_fingerprint_timings_and_revision(tmp_path, monkeypatch):
    from evalkit.registry import task_families

    class Plain:
        name = "plain-fetch-test"

        def validate(self, spec):
            pass

        def run(self, spec, encoder, ctx):
            return TaskResult(spec.name, encoder.name, encoder.weights, "plain", {"acc1": 0.5},
                              evalkit={"fingerprint": encoder.fingerprint})

    monkeypatch.setitem(task_families._items, "plain-fetch-test", Plain)
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "p.yaml").write_text("task: plain-task\nfamily: plain-fetch-test\nsource: {type: shapeworld}\n")
    report = api.evaluate("eva-clip-demo", "plain-task", output_dir=tmp_path / "out", task_dirs=[d], progress=False,
                          raise_errors=True)
    ev = json.loads(report.paths[0].read_text())["evalkit"]
    assert {k: ev[k] for k in ("data_fingerprint", "timings", "data_revision")} == {
        "data_fingerprint": None, "timings": None, "data_revision": None}
