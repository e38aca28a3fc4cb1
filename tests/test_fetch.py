"""Fetching a task's data from the Hugging Face Hub (evalkit.data.fetch), against a local Hub that
speaks the Hub's file API (tests/hub_server.py) for clip_benchmark-style WebDataset repos built
here: the real code path of huggingface_hub and evalkit, with every failure the issue names
scripted at the server (gated, 429, 5xx, a shard cut short, a corrupt shard, a 404), a fetch
killed midway and resumed, two fetches at once, offline use, and data roots that cannot take it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import hubfixtures
import pytest
from hub_server import wds_repo_files
from hubfixtures import child_env, finish_child, start_child, wait_for

from evalkit.data import fetch
from evalkit.data.check import count_samples
from evalkit.data.fetch import (
    WORK_DIR,
    DataRootError,
    FetchError,
    FetchSpecError,
    FetchVerifyError,
    HubAccessError,
    HubNotFoundError,
    ManualFetchRequired,
    fetch_source,
    is_fetched,
    manifest_record,
    manual_instructions,
    parse_fetch_spec,
    read_manifest,
)
from evalkit.data.sources import DataError, DatasetNotFound, load_source

hub = hubfixtures.hub  # the fixture: a local Hub, huggingface_hub online and pointed at it

REPO = "clip-benchmark/wds_tiny"
SPEC = {"repo": REPO, "split": "test"}
# how imagenet1k.yaml and its kin read a clip_benchmark mirror under the data root
TASK_SOURCE = {"type": "any", "layouts": [{"type": "folder", "path": "tiny/val"}, {"type": "wds", "path": "wds_tiny"}]}


def get(tmp_path: Path, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("hub_cache", tmp_path / "hf-cache")
    return fetch_source(kwargs.pop("spec", SPEC), tmp_path / "data", task=kwargs.pop("task", "tiny"), **kwargs)


def fetched_names(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def nothing_in_place(data: Path) -> None:
    """No folder a reader would read, no manifest entry, and evalkit's reader says not found."""
    assert not (data / "wds_tiny").exists()
    assert "wds_tiny" not in read_manifest(data)["folders"]
    with pytest.raises(DatasetNotFound):
        load_source(TASK_SOURCE, data, "tiny")


# --------------------------------------------------------------------------- a whole fetch


def test_a_fetch_lands_the_layout_evalkit_reads_and_the_manifest_says_what_is_there(hub, tmp_path):
    files = wds_repo_files(n_samples=12, n_shards=3)
    repo = hub.add_repo(REPO, files)
    report = get(tmp_path, expected=12, classes=3)
    data = tmp_path / "data"
    folder = data / "wds_tiny"
    assert (report.status, report.commit, report.shards, report.samples, report.classes) == (
        "fetched", repo.commit, 3, 12, 3)
    # only the split the task uses, plus the mirror's metadata; no train split, no README, no bookkeeping
    assert fetched_names(folder) == ["classnames.txt", "test/0.tar", "test/1.tar", "test/2.tar", "test/nshards.txt",
                                     "zeroshot_classification_templates.txt"]
    for name in fetched_names(folder):
        assert (folder / name).read_bytes() == files[name]
    # evalkit's own reader, through the task's layouts, reads every sample
    source = load_source(TASK_SOURCE, data, "tiny")
    assert source.info["layout"] == "wds" and count_samples(source) == 12
    decoded = [(key, load().size, label) for unit in source.units for key, load, label in unit.samples()]
    assert len(decoded) == 12 and sorted(label for *_, label in decoded) == sorted(k % 3 for k in range(12))
    # the listing came in pages (page_size=2): every page was followed
    assert hub.count("GET", kind="tree") >= 4
    # the manifest: repo, revision, commit, files with sizes and hashes, counts, when
    entry = read_manifest(data)["folders"]["wds_tiny"]
    assert (entry["repo"], entry["revision"], entry["commit"]) == (REPO, "main", repo.commit)
    part = entry["parts"]["test"]
    assert (part["tasks"], part["shards"], part["samples"], part["classes"]) == (["tiny"], 3, 12, 3)
    import hashlib

    listed = {f["path"]: f for f in entry["files"] + part["files"]}
    assert set(listed) == set(fetched_names(folder))
    for name, f in listed.items():
        assert f["size"] == len(files[name]) and f["sha256"] == hashlib.sha256(files[name]).hexdigest()
    assert part["fetched_at"].endswith("Z")
    record = manifest_record(data, folder, "test")
    assert record["commit"] == repo.commit and record["samples"] == 12
    assert is_fetched(SPEC, data)
    assert "fetched" in report.line() and "12 samples" in report.line() and str(folder) in report.line()
    # a second call finds it in place and asks the Hub nothing
    before = len(hub.requests())
    again = get(tmp_path, expected=12, classes=3)
    assert again.status == "present" and again.samples == 12 and len(hub.requests()) == before


def test_the_counts_are_checked_and_a_mismatch_puts_nothing_in_place(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files(n_samples=12, n_shards=3))
    with pytest.raises(FetchVerifyError, match=r"12 samples, the task expects 13"):
        get(tmp_path, expected=13)
    nothing_in_place(tmp_path / "data")
    with pytest.raises(FetchVerifyError, match=r"3 classes \(classnames.txt\), the task expects 4"):
        get(tmp_path, expected=12, classes=4)
    nothing_in_place(tmp_path / "data")
    # the staged files were kept: the right counts now fetch without downloading again
    gets = hub.count("GET", kind="resolve")
    assert get(tmp_path, expected=12, classes=3).status == "fetched"
    assert hub.count("GET", kind="resolve") == gets


def test_a_shard_count_other_than_nshards_txt_is_an_error_naming_it(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files(n_samples=12, n_shards=3, nshards=4))
    with pytest.raises(FetchVerifyError, match=r"nshards.txt says 4 shards but the repo lists 3 \(missing 3.tar\)"):
        get(tmp_path)
    nothing_in_place(tmp_path / "data")


def test_class_names_and_templates_that_differ_from_the_tasks_are_reported(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files(classes=["cat", "dog", "bird"], templates=["a photo of a {c}."]))
    report = get(tmp_path, classnames=["cat", "hound", "bird"], templates=["a photo of a {c}.", "a {c}."])
    assert report.status == "fetched"
    assert any("classnames.txt differs from the task's class names at 1 entries: #1 'dog' (task: 'hound')" in n
               for n in report.notes), report.notes
    assert any("zeroshot_classification_templates.txt has 1 templates, the task 2" in n and "'a {c}.'" in n
               for n in report.notes), report.notes


# --------------------------------------------------------------------------- the Hub says no


def test_a_gated_repo_says_how_to_get_access(hub, tmp_path, monkeypatch):
    hub.add_repo(REPO, wds_repo_files(), gated_token="hf_granted")
    with pytest.raises(HubAccessError) as err:
        get(tmp_path)
    msg = str(err.value)
    assert "401" in msg and "gated" in msg and "HF_TOKEN" in msg
    assert f"accept its terms at {hub.url}/datasets/{REPO}" in msg and "\n" not in msg
    nothing_in_place(tmp_path / "data")
    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
    with pytest.raises(HubAccessError, match=r"403.*has not been granted access.*accept its terms"):
        get(tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_granted")  # the token reaches the Hub
    assert get(tmp_path).status == "fetched"


def test_a_404_names_the_repo_and_the_file(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files())
    hub.script("*", REPO, "test/1.tar", "missing", times=None)
    with pytest.raises(HubNotFoundError) as err:
        get(tmp_path)
    assert REPO in str(err.value) and "'test/1.tar' not found" in str(err.value)
    nothing_in_place(tmp_path / "data")
    with pytest.raises(HubNotFoundError, match=r"clip-benchmark/wds_gone: repository not found"):
        get(tmp_path, spec={"repo": "clip-benchmark/wds_gone"})
    with pytest.raises(HubNotFoundError, match=r"revision 'v9' not found"):
        get(tmp_path, spec={**SPEC, "revision": "v9"})


def test_429_then_200_waits_what_retry_after_asks(hub, tmp_path):
    """huggingface_hub does not retry the revision lookup: evalkit does, honouring Retry-After."""
    hub.add_repo(REPO, wds_repo_files())
    hub.script("GET", REPO, "revision", "status", status=429, headers={"Retry-After": "1"})
    assert get(tmp_path, expected=12).status == "fetched"
    asked = [r for r in hub.requests("revision")]
    assert [r.status for r in asked] == [429, 200]
    assert asked[1].at - asked[0].at >= 1.0


def test_a_5xx_on_a_shard_is_retried(hub, tmp_path):
    """huggingface_hub does not retry a 5xx on a file's download: evalkit does."""
    hub.add_repo(REPO, wds_repo_files())
    hub.script("GET", REPO, "test/1.tar", "status", status=503, headers={"Retry-After": "1"})
    assert get(tmp_path, expected=12).status == "fetched"
    asked = [r for r in hub.requests("resolve") if r.method == "GET" and r.path == "test/1.tar"]
    assert [r.status for r in asked] == [503, 200] and asked[1].at - asked[0].at >= 1.0


def test_a_shard_cut_short_is_an_error_naming_it_and_nothing_is_used(hub, tmp_path):
    files = wds_repo_files(n_samples=12, n_shards=3, pad=4000)
    hub.add_repo(REPO, files)
    hub.script("GET", REPO, "test/1.tar", "cut", cut_at=len(files["test/1.tar"]) // 2)
    with pytest.raises(FetchError) as err:
        get(tmp_path, max_workers=1)
    assert f"{REPO}/test/1.tar: the connection closed before the whole file came" in str(err.value)
    nothing_in_place(tmp_path / "data")
    staging = tmp_path / "data" / WORK_DIR / "staging" / "wds_tiny"
    assert not (staging / "test" / "1.tar").exists()


def test_a_corrupt_shard_fails_its_hash_check_and_is_removed(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files())
    hub.script("GET", REPO, "test/2.tar", "corrupt")
    with pytest.raises(FetchVerifyError, match=r"test/2.tar: sha256 .* the Hub lists"):
        get(tmp_path)
    nothing_in_place(tmp_path / "data")
    assert not (tmp_path / "data" / WORK_DIR / "staging" / "wds_tiny" / "test" / "2.tar").exists()
    # the next call downloads that shard anew, and only that one
    assert get(tmp_path, expected=12).status == "fetched"
    assert hub.count("GET", "test/2.tar", kind="resolve") == 2 and hub.count("GET", "test/0.tar", kind="resolve") == 1


# --------------------------------------------------------------------------- killed, concurrent, offline


def test_a_killed_fetch_resumes_without_downloading_completed_files(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files(n_samples=12, n_shards=3))
    block = hub.script("GET", REPO, "test/2.tar", "block")
    reached = hub.reached("GET", "test/2.tar")
    proc = start_child(SPEC, tmp_path / "data", "tiny", child_env(hub, tmp_path), tmp_path / "child.err",
                       max_workers=1, progress=False)
    try:
        assert reached.wait(60), "the fetch never asked for the last shard"
        assert block.used == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        hub.release()
        if proc.poll() is None:
            proc.kill()
        finish_child(proc)
    nothing_in_place(tmp_path / "data")
    done = {p: hub.count("GET", p, kind="resolve") for p in ("classnames.txt", "test/0.tar", "test/1.tar")}
    assert done == {"classnames.txt": 1, "test/0.tar": 1, "test/1.tar": 1}
    report = get(tmp_path, expected=12)
    assert report.status == "fetched" and report.samples == 12
    assert {p: hub.count("GET", p, kind="resolve") for p in done} == done  # not downloaded again
    assert [f.path for f in report.files if f.downloaded] == ["test/2.tar"]


def test_two_fetches_at_once_both_succeed_with_one_copy(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files())
    hub.script("GET", REPO, "test/0.tar", "block")
    reached = hub.reached("GET", "test/0.tar")
    env = child_env(hub, tmp_path)
    first = start_child(SPEC, tmp_path / "data", "tiny", env, tmp_path / "first.err", expected=12)
    second = None
    try:
        assert reached.wait(60)
        second = start_child(SPEC, tmp_path / "data", "tiny", env, tmp_path / "second.err", expected=12)
        wait_for(lambda: "waiting for another process" in (tmp_path / "second.err").read_text(), 60,
                 "the second fetch to wait for the first")
        hub.release()
        (rc1, out1), (rc2, out2) = finish_child(first), finish_child(second)
    finally:
        hub.release()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    assert (rc1, out1["status"], out1["samples"]) == (0, "fetched", 12), out1
    assert (rc2, out2["status"], out2["samples"]) == (0, "present", 12), out2
    assert "fetched by another process meanwhile" in out2["notes"]
    for name in wds_repo_files():
        if not name.startswith(("train/", "README")):
            assert hub.count("GET", name, kind="resolve") == 1, name
    data = tmp_path / "data"
    assert count_samples(load_source(TASK_SOURCE, data, "tiny")) == 12
    assert not any((data / WORK_DIR / "staging").iterdir())


def test_offline_after_a_fetch_needs_no_network(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files())
    get(tmp_path, expected=12)
    data = tmp_path / "data"
    copy = tmp_path / "cluster"  # the data root copied to a machine without network
    subprocess.run(["cp", "-a", str(data), str(copy)], check=True)
    before = len(hub.requests())
    code = ("import sys, json\n"
            "from evalkit.data.fetch import fetch_source\n"
            "from evalkit.data.sources import load_source\n"
            "from evalkit.data.check import count_samples\n"
            f"r = fetch_source({SPEC!r}, sys.argv[1], task='tiny', expected=12, progress=False)\n"
            f"n = count_samples(load_source({TASK_SOURCE!r}, sys.argv[1], 'tiny'))\n"
            "print(json.dumps([r.status, n]))\n")
    env = child_env(hub, tmp_path, offline=True)
    done = subprocess.run([sys.executable, "-c", code, str(copy)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["present", 12]
    assert len(hub.requests()) == before
    # offline and not there: an error that says why, and no request
    with pytest.raises(FetchError, match=r"HF_HUB_OFFLINE is set and its data"):
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            fetch_source({"repo": "clip-benchmark/wds_other"}, copy, task="other", progress=False)
        finally:
            del os.environ["HF_HUB_OFFLINE"]
    assert len(hub.requests()) == before


# --------------------------------------------------------------------------- the data root


def _make_unwritable(folder: Path) -> list[str]:
    """Make ``folder`` refuse new files, for any user; the undo command, if one is needed."""
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.write_bytes(b"x")
    except OSError:
        return []  # not root: the mode bits are enough
    probe.unlink()
    # root ignores mode bits: the immutable attribute (ext2/3/4, xfs, btrfs) binds root too
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    assert done.returncode == 0, f"cannot make {folder} read-only here: {done.stderr!r}"
    return ["chattr", "-i", str(folder)]


def test_a_read_only_data_root_fails_before_any_request(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files())
    data = tmp_path / "data"
    data.mkdir()
    undo = _make_unwritable(data)
    try:
        with pytest.raises(DataRootError) as err:
            get(tmp_path)
    finally:
        if undo:
            subprocess.run(undo, check=True)
        data.chmod(0o755)
    assert str(data) in str(err.value) and "not writable" in str(err.value)
    assert hub.requests() == [] or all(r.kind == "other" for r in hub.requests())


def test_a_full_disk_fails_before_downloading_naming_the_space_needed(hub, tmp_path, monkeypatch):
    files = wds_repo_files()
    hub.add_repo(REPO, files)
    monkeypatch.setattr(fetch, "_free_bytes", lambda folder: 999)
    with pytest.raises(DataRootError) as err:
        get(tmp_path)
    need = sum(len(files[n]) for n in files if not n.startswith(("train/", "README")))
    assert str(tmp_path / "data") in str(err.value)
    assert f"6 file(s) need {fetch.human_size(need)}, 999 B free" in str(err.value)
    assert hub.count(kind="resolve") == 0


def test_a_folder_evalkit_did_not_fetch_is_left_alone(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files())
    mine = tmp_path / "data" / "wds_tiny" / "test"
    mine.mkdir(parents=True)
    (mine / "0.tar").write_bytes(b"hand-made")
    report = get(tmp_path)
    assert report.status == "unmanaged" and "not fetched by evalkit" in report.line()
    assert (mine / "0.tar").read_bytes() == b"hand-made" and hub.requests() == []


def test_a_new_pinned_commit_replaces_the_folder(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files(n_samples=12))
    first = get(tmp_path)
    newer = hub.add_repo(REPO, wds_repo_files(n_samples=9))  # the mirror changed
    assert newer.commit != first.commit
    # a branch already fetched is not looked up again (offline-friendly) ...
    assert get(tmp_path, spec={**SPEC, "revision": "main"}).status == "present"
    # ... a pinned commit is
    report = get(tmp_path, spec={**SPEC, "revision": newer.commit}, expected=9)
    assert (report.status, report.commit, report.samples) == ("fetched", newer.commit, 9)
    assert read_manifest(tmp_path / "data")["folders"]["wds_tiny"]["commit"] == newer.commit
    assert count_samples(load_source(TASK_SOURCE, tmp_path / "data", "tiny")) == 9


def test_another_split_of_the_same_commit_joins_the_folder(hub, tmp_path):
    hub.add_repo(REPO, wds_repo_files())
    get(tmp_path, expected=12)
    test_gets = hub.count("GET", "test/0.tar", kind="resolve")
    report = get(tmp_path, spec={**SPEC, "split": "train"}, task="tiny-train", expected=1)
    data = tmp_path / "data"
    assert (report.status, report.samples) == ("fetched", 1)
    assert sorted(read_manifest(data)["folders"]["wds_tiny"]["parts"]) == ["test", "train"]
    assert hub.count("GET", "test/0.tar", kind="resolve") == test_gets  # the test split stays as it was
    assert count_samples(load_source({"type": "wds", "path": "wds_tiny", "split": "train"}, data, "t")) == 1
    assert get(tmp_path, expected=12).status == "present"


def test_a_files_layout_fetches_the_named_files_and_reads_them_back(hub, tmp_path):
    files = wds_repo_files()
    hub.add_repo(REPO, files)
    spec = {"repo": REPO, "layout": "files", "path": "tiny_files", "files": ["classnames.txt"],
            "patterns": ["test/*"], "read_as": {"type": "wds", "split": "test"}}
    report = get(tmp_path, spec=spec, expected=12)
    folder = tmp_path / "data" / "tiny_files"
    assert (report.status, report.samples, report.split) == ("fetched", 12, None)
    assert fetched_names(folder) == ["classnames.txt", "test/0.tar", "test/1.tar", "test/2.tar", "test/nshards.txt"]
    assert read_manifest(tmp_path / "data")["folders"]["tiny_files"]["parts"][""]["samples"] == 12
    with pytest.raises(HubNotFoundError, match=r"file 'labels.csv' \(fetch.files of task 'tiny'\) is not in the repo"):
        get(tmp_path, spec={**spec, "path": "other", "files": ["labels.csv"]})


# --------------------------------------------------------------------------- specs and sets not on the Hub


def test_a_set_not_on_the_hub_gets_its_instructions(tmp_path):
    spec = {"manual": "https://www.crcv.ucf.edu/data/UCF101.php", "path": "ucf101",
            "layout": "UCF-101/<class>/*.avi + ucfTrainTestlist/", "note": "the licence forbids mirroring"}
    info = manual_instructions(spec, tmp_path, task="ucf101")
    assert info.folder == tmp_path / "ucf101"
    assert info.verify_command == f"evalkit data check --tasks ucf101 --data-root {tmp_path}"
    with pytest.raises(ManualFetchRequired) as err:
        fetch_source(spec, tmp_path, task="ucf101", progress=False)
    text = str(err.value)
    for part in ("https://www.crcv.ucf.edu/data/UCF101.php", str(tmp_path / "ucf101"), "UCF-101/<class>/*.avi",
                 info.verify_command, "the licence forbids mirroring"):
        assert part in text
    assert err.value.instructions == info
    assert "not on the Hugging Face Hub" in text


def test_a_manual_source_with_commands_prints_them_with_the_data_root_quoted(tmp_path):
    root = tmp_path / "my data"
    spec = {"manual": "https://example.org/sets/x.zip", "path": "x", "layout": "x/*.npy",
            "note": "an archive evalkit does not unpack", "commands": "curl -o {root}/x.zip URL && unzip {root}/x.zip -d {root}"}
    text = manual_instructions(spec, root, task="x").text()
    assert "not on the Hugging Face Hub" not in text, text
    for part in (f"curl -o '{root}'/x.zip URL && unzip '{root}'/x.zip -d '{root}'", str(root / "x"),
                 f"evalkit data check --tasks x --data-root '{root}'", "an archive evalkit does not unpack"):
        assert part in text, (part, text)
    with pytest.raises(FetchSpecError, match=r"fetch.commands must be a string"):
        parse_fetch_spec({"manual": "https://x", "layout": "L", "commands": ["a"]}, "tiny")


@pytest.mark.parametrize("raw, match", [
    ({"repo": REPO, "revison": "main"}, r"unknown key\(s\) revison"),
    ({"repo": "not a repo"}, r"fetch.repo must be a Hub repo id"),
    ({"repo": REPO, "path": "../elsewhere"}, r"fetch.path '../elsewhere' must be a relative folder"),
    ({"repo": REPO, "layout": "zip"}, r"fetch.layout must be 'wds', 'files' or 'archive'"),
    ({"manual": "https://x"}, r"fetch.layout is required for a manual source"),
    ("clip-benchmark/wds_tiny", r"fetch must be a mapping"),
])
def test_a_bad_fetch_block_names_the_task_and_key(raw, match):
    with pytest.raises(FetchSpecError, match=match) as err:
        parse_fetch_spec(raw, "tiny")
    assert "task 'tiny'" in str(err.value) and isinstance(err.value, DataError)


def test_the_defaults_of_a_fetch_block():
    spec = parse_fetch_spec({"repo": REPO}, "tiny")
    assert (spec.revision, spec.split, spec.path, spec.layout, spec.repo_type) == (
        "main", "test", "wds_tiny", "wds", "dataset")


def test_the_local_hub_speaks_what_huggingface_hub_asks(hub, tmp_path):
    """The server itself: huggingface_hub's own calls against it (so a failing fetch test is about
    evalkit, not about a server that answers wrongly)."""
    from huggingface_hub import HfApi, hf_hub_download

    files = wds_repo_files()
    repo = hub.add_repo(REPO, files)
    api = HfApi(endpoint=hub.url)
    assert api.dataset_info(REPO, revision="main").sha == repo.commit
    listed = {f.path: f for f in api.list_repo_tree(REPO, recursive=True, revision=repo.commit, repo_type="dataset")
              if hasattr(f, "size")}
    assert set(listed) == set(files)
    assert listed["test/0.tar"].lfs is not None and listed["classnames.txt"].lfs is None
    got = hf_hub_download(REPO, "test/1.tar", repo_type="dataset", revision=repo.commit, endpoint=hub.url,
                          cache_dir=str(tmp_path / "c"))
    assert Path(got).read_bytes() == files["test/1.tar"]
    assert hub.count("HEAD", "test/1.tar") == 1 and hub.count("GET", "test/1.tar") == 1



# --------------------------------------------------------------------------- a folder of an archive (the 3D sets)

UNI3D = "BAAI/Uni3D"
ZIP = "data/test_datasets.zip"
MN40_NAMES = ["airplane", "bathtub", "bed"]


def uni3d_zip(n_mn40: int = 3, n_sonn: int = 4, extra: dict | None = None) -> bytes:
    """A tiny test_datasets.zip in Uni3D's layout: test_datasets/modelnet40/{test_pc.npy,
    test_split.json,modelnet40_shape_names.txt} and test_datasets/scanobjectnn/xyz_label.npy."""
    import io
    import zipfile

    import numpy as np

    rng = np.random.default_rng(0)

    def npy(obj) -> bytes:
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=True)
        return buf.getvalue()

    pcs = np.empty(n_mn40, dtype=object)
    pcs[:] = [{"xyz": rng.standard_normal((16, 3)).astype(np.float32),
               "rgb": np.full((16, 3), 100.0, np.float32)} for _ in range(n_mn40)]
    split = [{"name": f"s{i}", "category": MN40_NAMES[i % 3]} for i in range(n_mn40)]
    members = {
        "test_datasets/modelnet40/test_pc.npy": npy(pcs),
        "test_datasets/modelnet40/test_split.json": json.dumps(split).encode(),
        "test_datasets/modelnet40/modelnet40_shape_names.txt": "".join(f"{c}\n" for c in MN40_NAMES).encode(),
        "test_datasets/scanobjectnn/xyz_label.npy": npy({"xyz": rng.standard_normal((n_sonn, 16, 3)).astype(np.float32),
                                                          "label": np.arange(n_sonn) % 2}),
        **(extra or {}),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("test_datasets/", b"")
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def archive_spec(member: str, dataset: str) -> dict:
    return {"repo": UNI3D, "repo_type": "model", "archive": ZIP, "member": f"test_datasets/{member}",
            "path": f"test_datasets/{member}", "read_as": {"type": "openshape_npy", "dataset": dataset}}


def test_a_folder_of_a_hub_archive_is_fetched_verified_and_read_by_the_3d_source(hub, tmp_path):
    data = uni3d_zip()
    hub.add_repo(UNI3D, {ZIP: data, "README.md": b"Uni3D\n"}, repo_type="model", lfs_patterns=("*.zip",))
    report = get(tmp_path, spec=archive_spec("modelnet40", "modelnet40"), task="modelnet40", expected=3)
    root = tmp_path / "data"
    folder = root / "test_datasets" / "modelnet40"
    assert report.status == "fetched" and report.samples == 3 and report.folder == folder
    assert fetched_names(folder) == ["modelnet40_shape_names.txt", "test_pc.npy", "test_split.json"]
    assert not (root / "test_datasets" / "scanobjectnn").exists()  # only the task's member
    # evalkit's own source for the task (modelnet40.yaml's layouts) reads what was placed, same count
    source = {"type": "any", "layouts": [{"type": "openshape_npy", "path": ["modelnet40", "test_datasets/modelnet40"],
                                          "dataset": "modelnet40"}]}
    assert count_samples(load_source(source, root, "modelnet40")) == 3
    entry = read_manifest(root)["folders"]["test_datasets/modelnet40"]
    import hashlib
    assert entry["archive"] == {"path": ZIP, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                "member": "test_datasets/modelnet40"}
    assert entry["repo_type"] == "model" and {f["path"] for f in entry["files"]} == set(fetched_names(folder))
    assert is_fetched(archive_spec("modelnet40", "modelnet40"), root)
    again = get(tmp_path, spec=archive_spec("modelnet40", "modelnet40"), task="modelnet40", expected=3)
    assert again.status == "present" and again.samples == 3
    # a count that differs from the task's is an error naming it, and nothing of it is placed
    with pytest.raises(FetchVerifyError, match=r"4 samples, the task expects 5"):
        get(tmp_path, spec=archive_spec("scanobjectnn", "scanobjectnn"), task="scanobjectnn", expected=5)
    assert not (root / "test_datasets" / "scanobjectnn").exists()


def test_two_tasks_sharing_an_archive_download_it_once(hub, tmp_path):
    hub.add_repo(UNI3D, {ZIP: uni3d_zip()}, repo_type="model", lfs_patterns=("*.zip",))
    a = get(tmp_path, spec=archive_spec("modelnet40", "modelnet40"), task="modelnet40")
    b = get(tmp_path, spec=archive_spec("scanobjectnn", "scanobjectnn"), task="scanobjectnn")
    assert (a.status, a.samples, b.status, b.samples) == ("fetched", 3, "fetched", 4)
    assert hub.count("GET", ZIP) == 1, [(r.method, r.path) for r in hub.requests("resolve")]
    assert count_samples(load_source({"type": "openshape_npy", "path": "test_datasets/scanobjectnn"},
                                     tmp_path / "data", "scanobjectnn")) == 4


@pytest.mark.parametrize("bad, why", [("test_datasets/modelnet40/../../evil.txt", "a name outside the folder"),
                                      ("test_datasets/modelnet40/evil.txt", "a link")])
def test_an_archive_member_that_leaves_its_folder_is_refused_and_nothing_placed(hub, tmp_path, bad, why):
    import zipfile

    info = zipfile.ZipInfo(bad)
    if why == "a link":
        info.external_attr = 0o120777 << 16  # a symbolic link to a file outside
        target = tmp_path / "outside.txt"
        target.write_text("secret")
        payload = str(target).encode()
    else:
        payload = b"pwned"
    hub.add_repo(UNI3D, {ZIP: uni3d_zip(extra={info: payload})}, repo_type="model", lfs_patterns=("*.zip",))
    with pytest.raises(FetchVerifyError, match=re.escape(f"member {bad!r} is {why}")):
        get(tmp_path, spec=archive_spec("modelnet40", "modelnet40"), task="modelnet40")
    root = tmp_path / "data"
    assert not (root / "test_datasets").exists() and not [p for p in tmp_path.rglob("evil.txt")]
    assert "test_datasets/modelnet40" not in read_manifest(root)["folders"]


def test_the_3d_task_files_fetch_their_folder_of_the_uni3d_archive():
    from evalkit.tasks.fetching import fetch_items
    from evalkit.tasks.spec import TaskIndex

    index = TaskIndex.load()
    for name, folder in (("modelnet40", "modelnet40"), ("objaverse-lvis", "objaverse_lvis"),
                         ("objaverse-lvis-fewshot", "objaverse_lvis"), ("scanobjectnn", "scanobjectnn")):
        [item] = fetch_items(index.resolve([name])[0])
        spec = parse_fetch_spec(item.spec, name) if isinstance(item.spec, dict) else item.spec
        assert (spec.repo, spec.repo_type, spec.archive, spec.layout) == (UNI3D, "model", ZIP, "archive"), name
        assert spec.member == spec.path == f"test_datasets/{folder}", name
        assert spec.read_as is not None and spec.read_as["type"] == "openshape_npy", name
    with pytest.raises(FetchSpecError, match=r"fetch.archive must name a"):
        parse_fetch_spec({"repo": UNI3D, "archive": "data/x.rar", "member": "x"}, "tiny")


def test_a_tar_archive_folder_is_fetched_and_a_member_outside_it_refused(hub, tmp_path):
    import io
    import tarfile
    import zipfile

    def tgz(extra: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(uni3d_zip())) as z, tarfile.open(fileobj=out, mode="w:gz") as t:
            for name, data in [(i.filename, z.read(i)) for i in z.infolist() if not i.is_dir()] + list(extra.items()):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return out.getvalue()

    spec = {**archive_spec("scanobjectnn", "scanobjectnn"), "archive": "data/test_datasets.tar.gz"}
    hub.add_repo(UNI3D, {"data/test_datasets.tar.gz": tgz({})}, repo_type="model", lfs_patterns=("*.gz",))
    report = get(tmp_path, spec=spec, task="scanobjectnn", expected=4)
    assert report.status == "fetched" and fetched_names(report.folder) == ["xyz_label.npy"]
    bad = "test_datasets/scanobjectnn/../../evil.txt"
    hub.add_repo(UNI3D, {"data/test_datasets.tar.gz": tgz({bad: b"pwned"})}, repo_type="model", lfs_patterns=("*.gz",))
    with pytest.raises(FetchVerifyError, match=re.escape(f"member {bad!r}")):
        get(tmp_path / "again", spec=spec, task="scanobjectnn")
    assert not (tmp_path / "again" / "data" / "test_datasets").exists() and not list(tmp_path.rglob("evil.txt"))
