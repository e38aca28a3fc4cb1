"""Dataset fingerprints (issue 19, item 4; evalkit.data.fingerprint): the same decoded samples and
labels give the same root in any file format and any order; other pixels, another label or a
missing sample give another; a run records the root its loader hashed, equal to the standalone
one (`evalkit data fingerprint`), and keeps it through the feature cache."""

from __future__ import annotations

import io
import json
import shlex
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import make_image
from PIL import Image

from evalkit.data.fingerprint import (
    SCHEME,
    Fingerprint,
    FingerprintError,
    canonical_label,
    content_digest,
    labelled_digest,
    sample_digest,
)
from evalkit.data.pointclouds import make_cloud

CLASSES = ["cat", "dog", "eel"]


def jpeg(label: int, i: int, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    make_image(label, i, size=24).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def samples(n_per_class: int = 3) -> list[tuple[int, bytes]]:
    return [(label, jpeg(label, i)) for label in range(len(CLASSES)) for i in range(n_per_class)]


def write_folder(root: Path, items: list[tuple[int, bytes]]) -> Path:
    for k, (label, data) in enumerate(items):
        d = root / f"{label}_{CLASSES[label]}"  # sorted folder names: the class order
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img{k:03d}.jpg").write_bytes(data)
    return root


def write_wds(root: Path, items: list[tuple[int, bytes]], nshards: int = 2) -> Path:
    split = root / "test"
    split.mkdir(parents=True)
    per = -(-len(items) // nshards)
    for s in range(nshards):
        with tarfile.open(split / f"{s}.tar", "w") as tar:
            for k, (label, data) in enumerate(items[s * per:(s + 1) * per]):
                for ext, payload in (("jpg", data), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"x{s}_{k:04d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    (split / "nshards.txt").write_text(f"{nshards}\n")
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    return root


def write_hf(root: Path, items: list[tuple[int, bytes]]) -> Path:
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    rows = {"image": [{"bytes": data, "path": None} for _, data in items], "label": [label for label, _ in items]}
    datasets.Dataset.from_dict(rows, features=feats).save_to_disk(str(root))
    return root


def fingerprint(task: str, data_root: Path | None = None, **kw) -> dict:
    from evalkit.api import resolve_tasks
    from evalkit.tasks.fingerprint import fingerprint_task

    (spec,) = resolve_tasks(task, **kw)
    return fingerprint_task(spec, data_root, progress=False)


def test_the_same_images_as_imagefolder_webdataset_and_hf_dataset_give_one_root(tmp_path):
    items = samples()
    folder = fingerprint(f"folder:{write_folder(tmp_path / 'folder', items)}")
    # another order of the samples, over two shards: the root does not depend on it
    shards = fingerprint(f"wds:{write_wds(tmp_path / 'wds_x', items[::-1])}")
    hf = fingerprint(f"hf:{write_hf(tmp_path / 'hfds', items)}")
    assert folder["scheme"] == SCHEME and folder["complete"] and len(folder["root"]) == 64
    assert folder["root"] == shards["root"] == hf["root"]
    for fp in (folder, shards, hf):
        assert (fp["samples"], fp["hashed"], fp["undecodable"], fp["duplicates"]) == (9, 9, 0, 0)
        assert fp["class_counts"] == {"0": 3, "1": 3, "2": 3}
    # the root is the one the scheme defines: SHA-256 over the sorted sample digests
    digests = sorted(sample_digest(Image.open(io.BytesIO(data)), label) for label, data in items)
    assert folder["root"] == __import__("hashlib").sha256(b"".join(digests)).hexdigest()


def test_reencoding_one_jpeg_changes_the_root_and_a_copy_counts_as_a_duplicate(tmp_path):
    items = samples()
    base = fingerprint(f"wds:{write_wds(tmp_path / 'wds_a', items)}")
    reencoded = list(items)
    reencoded[4] = (items[4][0], jpeg(items[4][0], 1, quality=60))  # the same picture, other pixels
    other = fingerprint(f"wds:{write_wds(tmp_path / 'wds_b', reencoded)}")
    assert other["samples"] == base["samples"] and other["root"] != base["root"]
    relabelled = list(items)
    relabelled[4] = ((items[4][0] + 1) % 3, items[4][1])  # the same pixels, another class
    moved = fingerprint(f"wds:{write_wds(tmp_path / 'wds_c', relabelled)}")
    assert moved["root"] not in (base["root"], other["root"]) and moved["duplicates"] == 0
    # one image twice in its class and once more in another: 2 duplicates (labels ignored)
    doubled = [*items, items[0], ((items[0][0] + 2) % 3, items[0][1])]
    dup = fingerprint(f"folder:{write_folder(tmp_path / 'dup', doubled)}")
    assert (dup["samples"], dup["duplicates"]) == (11, 2) and dup["root"] != base["root"]


def test_an_undecodable_sample_is_counted_not_hashed(tmp_path):
    items = samples()
    broken = [*items, (1, b"\xff\xd8 not a jpeg")]
    fp = fingerprint(f"wds:{write_wds(tmp_path / 'wds_u', broken)}")
    base = fingerprint(f"wds:{write_wds(tmp_path / 'wds_v', items)}")
    assert (fp["samples"], fp["hashed"], fp["undecodable"]) == (10, 9, 1)
    assert fp["root"] == base["root"] and fp["complete"]
    assert fp["class_counts"]["1"] == 4 and "cannot identify image" in fp["undecodable_samples"][0][1].lower()


def test_content_digests_per_modality():
    img = make_image(2, 3, size=16)
    # what the image sources hand over differs in mode only where open_image_path converts: a CMYK
    # JPEG read from a WebDataset shard (kept CMYK) and from a folder (RGB) are one content
    cmyk = img.convert("CMYK")
    assert content_digest(cmyk) == content_digest(cmyk.convert("RGB"))
    assert content_digest(img) != content_digest(img.convert("L")) != content_digest(img.convert("RGBA"))
    pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    other_palette = pal.copy()
    other_palette.putpalette([255 - v for v in pal.getpalette()])
    assert pal.tobytes() == other_palette.tobytes() and content_digest(pal) != content_digest(other_palette)
    # point clouds: coordinates, colours, their presence; arrays: dtype and shape as well as bytes
    xyz = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    base = content_digest(make_cloud("a", xyz))
    moved = xyz.copy()
    moved[7, 1] += 1e-3
    assert content_digest(make_cloud("b", xyz)) == base != content_digest(make_cloud("a", moved))
    assert content_digest(make_cloud("a", xyz, np.full_like(xyz, 0.5))) != base
    assert content_digest(xyz) != content_digest(xyz.astype(np.float64)) != content_digest(xyz.reshape(3, 50))
    import torch

    assert content_digest(torch.from_numpy(xyz)) == content_digest(xyz)
    with pytest.raises(FingerprintError, match="str"):
        content_digest("a path is not content")


def test_labels_hash_as_canonical_json():
    assert canonical_label(np.int64(3)) == canonical_label(3) == b"3"
    assert canonical_label(["a dog.", "ein Hund."]) == b'["a dog.","ein Hund."]'
    c = content_digest(make_image(0, 0))
    assert labelled_digest(c, 1) != labelled_digest(c, 2) != labelled_digest(c, [str(2)])
    assert sample_digest(make_image(0, 0), np.int32(1)) == labelled_digest(c, 1)


def test_fingerprints_merge_as_one_dataset():
    a, b = Fingerprint(), Fingerprint()
    x, y, z = (bytes([k]) * 32 for k in (1, 2, 3))
    a.add(labelled_digest(x, 0), x)
    a.add(labelled_digest(y, 1), y)
    b.add(labelled_digest(y, 1), y)  # the same sample in both parts: a duplicate of the whole
    b.add(labelled_digest(z, 2), z)
    b.add_undecodable()
    whole = Fingerprint()
    for content, label in ((z, 2), (y, 1), (x, 0), (y, 1)):
        whole.add(labelled_digest(content, label), content)
    merged = a.merge(b)
    assert merged.root() == whole.root() and merged.duplicates == whole.duplicates == 1
    assert (merged.samples, merged.hashed, merged.undecodable) == (5, 4, 1)
    b.add_unhashed(2)
    assert a.merge(b).root() is None and a.merge(b).as_dict()["complete"] is False


# -- inside a run ------------------------------------------------------------------------------


def _run(tiny_arch: str, task: str, out: Path, **options) -> dict:
    from evalkit.api import evaluate
    from evalkit.results import iter_results

    report = evaluate(f"open_clip:{tiny_arch}", task, output_dir=out, progress=False, raise_errors=True, **options)
    assert report.ok
    (result,) = list(iter_results(out))
    return result.evalkit


def test_a_run_records_the_root_the_standalone_fingerprint_gives_and_keeps_it_in_the_cache(tiny_arch, tmp_path):
    items = samples()
    root = write_wds(tmp_path / "wds_r", [*items, items[2], (0, b"broken")])
    task = f"wds:{root}"
    alone = fingerprint(task)
    cache = tmp_path / "cache"
    first = _run(tiny_arch, task, tmp_path / "o1", cache_dir=cache, batch_size=4)["data_fingerprint"]
    keys = ("root", "samples", "hashed", "undecodable", "duplicates", "complete")
    assert {k: first[k] for k in keys} == {k: alone[k] for k in keys}
    assert (first["samples"], first["undecodable"], first["duplicates"], first["from"]) == (11, 1, 1, "run")
    cached = _run(tiny_arch, task, tmp_path / "o2", cache_dir=cache)["data_fingerprint"]
    assert cached == {**first, "from": "cache"}  # the digests came with the cached features
    limited = _run(tiny_arch, task, tmp_path / "o3", cache_dir=cache, limit=4)["data_fingerprint"]
    assert limited["complete"] is False and limited["root"] is None and limited["samples"] == 4
    off = _run(tiny_arch, task, tmp_path / "o4", cache_dir=None, fingerprint=False)
    assert off["data_fingerprint"] is None


def _strip_digests(cache: Path) -> list[Path]:
    """Every image entry of ``cache`` written again as an evalkit before fingerprints wrote it: the
    same header, key and features, a record without ``content_digests``."""
    from evalkit.features.cache import decode_entry, encode_entry

    entries = sorted((cache / "images").rglob("*.pt"))
    for path in entries:
        header, record = decode_entry(path.read_bytes())
        assert record.pop("content_digests") is not None
        path.write_bytes(encode_entry(header["kind"], header["key"], record, header["meta"], header["created"]))
    return entries


def _records(cache: Path) -> dict[str, dict]:
    from evalkit.features.cache import decode_entry

    return {p.name: decode_entry(p.read_bytes())[1] for p in sorted((cache / "images").rglob("*.pt"))}


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """Samples the runs' loaders read and decode (here, in this process: no loader workers on a CPU)."""
    from evalkit.features import embed

    count = [0]
    inner = embed._UnitDataset.__iter__

    def counted(self):
        for item in inner(self):
            count[0] += 1
            yield item

    monkeypatch.setattr(embed._UnitDataset, "__iter__", counted)
    return count


@pytest.fixture
def image_forwards(monkeypatch) -> list[int]:
    """Images through the image tower; ``image_forwards.append(0)`` makes it raise from then on."""
    from evalkit.models.encoder import Encoder

    count = [0]
    inner = Encoder.encode_image

    def counted(self, images):
        if len(count) > 1:
            raise AssertionError("the image tower ran")
        count[0] += int(images.shape[0])
        return inner(self, images)

    monkeypatch.setattr(Encoder, "encode_image", counted)
    return count


def test_an_old_cache_entry_gets_its_digests_from_a_hash_pass_without_the_model(tiny_arch, tmp_path, decodes,
                                                                                image_forwards):
    task = f"wds:{write_wds(tmp_path / 'wds_o', [*samples(), (0, b'broken')], nshards=3)}"
    fresh = _run(tiny_arch, task, tmp_path / "o0", cache_dir=None, batch_size=4)["data_fingerprint"]
    assert fresh["complete"] and fresh["undecodable"] == 1
    cache = tmp_path / "cache"
    _run(tiny_arch, task, tmp_path / "o1", cache_dir=cache, batch_size=4)
    before = _records(cache)
    assert len(_strip_digests(cache)) == 3  # as an older evalkit left them
    decodes[0] = 0
    image_forwards.append(0)  # from here on, the image tower raises
    second = _run(tiny_arch, task, tmp_path / "o2", cache_dir=cache, batch_size=4)["data_fingerprint"]
    assert second == {**fresh, "from": "cache"}  # the fresh run's root, complete
    assert decodes[0] == 10  # every listed sample read once, the undecodable one included
    after = _records(cache)
    assert sorted(after) == sorted(before)
    for name, record in after.items():  # the entries carry the digests now; their features are untouched
        assert torch.equal(record["content_digests"], before[name]["content_digests"])
        assert torch.equal(record["features"], before[name]["features"])
        assert record["keys"] == before[name]["keys"] and record["skipped"] == before[name]["skipped"]
    third = _run(tiny_arch, task, tmp_path / "o3", cache_dir=cache, batch_size=4)["data_fingerprint"]
    assert third == second and decodes[0] == 10  # no second hash pass


def test_a_cache_entry_that_disagrees_with_the_data_is_encoded_anew(tiny_arch, tmp_path, image_forwards):
    """Of three entries without digests: one hashed, one gone (encoded), one whose samples the data
    no longer gives (encoded again): the root is complete, from the run and the cache."""
    task = f"wds:{write_wds(tmp_path / 'wds_m', samples(), nshards=3)}"
    cache = tmp_path / "cache"
    fresh = _run(tiny_arch, task, tmp_path / "o1", cache_dir=cache)["data_fingerprint"]
    entries = _strip_digests(cache)
    entries[0].unlink()
    from evalkit.features.cache import decode_entry, encode_entry

    header, record = decode_entry(entries[1].read_bytes())
    record["skipped"] = [*record["skipped"], ("ghost", "not in the data")]  # an entry of other samples
    entries[1].write_bytes(encode_entry(header["kind"], header["key"], record, header["meta"], header["created"]))
    image_forwards[0] = 0
    mixed = _run(tiny_arch, task, tmp_path / "o2", cache_dir=cache)["data_fingerprint"]
    assert mixed == {**fresh, "from": "mixed"}
    assert image_forwards[0] == 6  # two shards of three samples: the hashed one not encoded
    assert all(r["content_digests"] is not None for r in _records(cache).values())


def test_no_hash_pass_under_limit_or_without_fingerprints(tiny_arch, tmp_path, decodes):
    task = f"wds:{write_wds(tmp_path / 'wds_l', samples(), nshards=3)}"
    cache = tmp_path / "cache"
    _run(tiny_arch, task, tmp_path / "o1", cache_dir=cache, limit=5)
    _strip_digests(cache)
    decodes[0] = 0
    limited = _run(tiny_arch, task, tmp_path / "o2", cache_dir=cache, limit=5)["data_fingerprint"]
    assert (limited["complete"], limited["root"], limited["hashed"], decodes[0]) == (False, None, 0, 0)
    # features cached by a run that took no fingerprint (an older evalkit's entries): a run
    # without fingerprints leaves them so
    _run(tiny_arch, task, tmp_path / "o3", cache_dir=cache, fingerprint=False)
    decodes[0] = 0
    assert _run(tiny_arch, task, tmp_path / "o4", cache_dir=cache, fingerprint=False)["data_fingerprint"] is None
    assert decodes[0] == 0
    assert sum("content_digests" in r for r in _records(cache).values()) == 0


def test_a_video_task_hashes_the_frames_of_its_sampler_and_the_run_agrees(tmp_path):
    from evalkit.api import evaluate
    from evalkit.results import iter_results

    alone = fingerprint("shapeworld-video")
    eight = fingerprint("shapeworld-video", frames="uniform-2")
    assert alone["complete"] and eight["complete"] and alone["root"] != eight["root"]
    assert evaluate("eva-clip-demo", "shapeworld-video", output_dir=tmp_path / "o", progress=False,
                    raise_errors=True).ok
    (result,) = list(iter_results(tmp_path / "o"))
    assert result.evalkit["data_fingerprint"]["root"] == alone["root"]


def test_a_several_split_task_records_one_root_over_its_splits(tiny_arch, tmp_path):
    """protocol.splits: the result's root is the merge of the splits' (standalone, the same)."""
    from evalkit.api import evaluate
    from evalkit.results import iter_results

    items = samples()
    # 5 + 5 samples; split 2 holds a copy of one of split 1's images: a duplicate of the whole task
    for k, part in enumerate((items[0::2], [*items[1::2], items[0]]), start=1):
        write_folder(tmp_path / "data" / f"s{k}", part)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "twosplit.yaml").write_text(
        "task: twosplit\nfamily: classification\nclassnames: [cat, dog, eel]\ntemplates: ['a {c}.']\n"
        "source: {type: folder, path: s1}\nprotocol:\n  splits: [{path: s1}, {path: s2}]\n")
    alone = fingerprint("twosplit", tmp_path / "data", task_dirs=[tasks])
    alone_fp = {k: v for k, v in alone.items() if k in ("root", "samples", "duplicates", "complete")}
    assert alone_fp == {"root": alone["root"], "samples": 10, "duplicates": 1, "complete": True}
    assert evaluate(f"open_clip:{tiny_arch}", "twosplit", task_dirs=[tasks], data_root=tmp_path / "data",
                    output_dir=tmp_path / "o", progress=False, raise_errors=True, records=False).ok
    (result,) = list(iter_results(tmp_path / "o"))
    ev = result.evalkit
    assert ev["data_fingerprint"]["root"] == alone["root"] and ev["data_fingerprint"]["duplicates"] == 1
    assert [(p["data_fingerprint"]["samples"], p["data_fingerprint"]["duplicates"]) for p in ev["per_split"]] == \
        [(5, 0), (5, 0)]
    assert ev["timings"]["samples"] == 10


def test_the_command_prints_the_figures_and_fails_on_a_missing_dataset(tmp_path, capsys):
    from evalkit.cli.main import main

    root = write_wds(tmp_path / "wds_c", samples())
    assert main(["data", "fingerprint", "--tasks", f"wds:{root}", "--quiet"]) == 0
    out = capsys.readouterr().out
    alone = fingerprint(f"wds:{root}")
    assert alone["root"] in out and "3 (3–3 per class)" in out
    assert main(["data", "fingerprint", "--tasks", f"wds:{root}", "--json", "--quiet"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["root"] == alone["root"] and row["class_counts"] == {"0": 3, "1": 3, "2": 3}
    (tmp_path / "empty").mkdir()
    assert main(["data", "fingerprint", "--tasks", "cifar10", "--data-root", str(tmp_path / "empty"), "--quiet"]) == 1
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("cifar10: ")]
    # as `run` says it: the line ends with the command that fetches the task's data
    assert "task 'cifar10': dataset not found" in line and line.endswith(
        f"evalkit data get --tasks cifar10 --data-root {shlex.quote(str(tmp_path / 'empty'))}"), line
    missing = tmp_path / "no such folder"
    assert main(["data", "fingerprint", "--tasks", f"folder:{missing}", "--quiet"]) == 1
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "dataset folder not found" in x]
    # the data check hint names the task as typed (its generated name is no task `data check` knows)
    assert f"(`evalkit data check --tasks {shlex.quote(f'folder:{missing}')}` lists where it looks" in line, line


def test_a_point_cloud_task_hashes_the_loaded_arrays_and_the_run_agrees(tmp_path):
    """pointfolder clouds: the standalone root equals the run's (depth views of the demo model);
    the same points as .xyz text files give the same root; one moved point another."""
    from evalkit.api import evaluate

    rng = np.random.default_rng(3)
    root, text = tmp_path / "clouds", tmp_path / "as_text"
    clouds = {}
    for c in ("ball", "box"):
        (root / c).mkdir(parents=True)
        (text / c).mkdir(parents=True)
        for i in range(2):
            clouds[(c, i)] = rng.normal(size=(600, 3)).astype(np.float32)
            np.save(root / c / f"{i}.npy", clouds[(c, i)])
            np.savetxt(text / c / f"cloud{i}.xyz", clouds[(c, i)])
    alone = fingerprint(f"pointfolder:{root}")
    assert alone["complete"] and (alone["samples"], alone["class_counts"]) == (4, {"0": 2, "1": 2})
    assert fingerprint(f"pointfolder:{text}")["root"] == alone["root"]
    assert evaluate("eva-clip-demo", f"pointfolder:{root}", output_dir=tmp_path / "o", cache_dir=None,
                    progress=False, raise_errors=True).ok
    assert _result_of(tmp_path / "o")["data_fingerprint"]["root"] == alone["root"]
    moved = clouds[("box", 1)].copy()
    moved[5, 2] += 0.01
    np.save(root / "box" / "1.npy", moved)
    assert fingerprint(f"pointfolder:{root}")["root"] != alone["root"]


def _result_of(out: Path) -> dict:
    from evalkit.results import iter_results

    (result,) = list(iter_results(out))
    return result.evalkit



@pytest.fixture(scope="module")
def job_dir(tmp_path_factory) -> Path:
    """What tests/test_distributed.py's jobs run with: its hooks (counting image forwards per
    process) and its tiny open_clip architecture."""
    from fixtures import register_tiny_open_clip
    from test_distributed import HOOKS, TINY

    root = tmp_path_factory.mktemp("dist")
    (root / "hooks").mkdir()
    (root / "hooks" / "sitecustomize.py").write_text(HOOKS)
    register_tiny_open_clip(root, name=TINY)
    return root


def test_a_job_of_two_processes_hashes_old_cache_entries_on_its_ranks(job_dir, tmp_path):
    """`torchrun --nproc-per-node 2 -m evalkit run` over a cache of 6 shards written with
    `--no-fingerprint` (entries without digests, as an older evalkit's): the ranks read and hash
    the shards without the model (no image forward in either process), rank 0 gives the entries
    their digests, and the root is the standalone one; a second job hashes nothing."""
    from fixtures import make_wds
    from test_distributed import TINY, _passes
    from test_distributed import _run as run_job

    from evalkit.results import iter_results

    data = make_wds(tmp_path / "wds_job", n_per_class=4, nshards=6)
    alone = fingerprint(f"wds:{data}")
    args = ["--model", f"open_clip:{TINY}", "--tasks", f"wds:{data}", "--batch-size", "4"]
    cache = str(tmp_path / "shared-cache")
    proc, _, _ = run_job(job_dir, tmp_path, "old", [*args, "--no-fingerprint"], cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_records(Path(cache))) == 6 and not any("content_digests" in r for r in _records(Path(cache)).values())
    for name in ("job", "again"):
        proc, out, counts = run_job(job_dir, tmp_path, name, args, nproc=2, cache=cache)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert all(p["image"] == 0 for p in _passes(counts).values())
        (result,) = list(iter_results(out))
        fp, timings = result.evalkit["data_fingerprint"], result.evalkit["timings"]
        assert (fp["root"], fp["complete"], fp["from"], fp["samples"]) == (alone["root"], True, "cache", 24)
        assert (timings["data_s"] > 0) == (name == "job")  # the second job reads no sample
    assert all(r["content_digests"].shape == (4, 32) for r in _records(Path(cache)).values())


def test_a_video_task_hashes_an_old_cache_entry_through_its_views(tmp_path, image_forwards):
    """A clip's digest covers the frames its view decodes: the hash pass runs the views' steps (not
    the model) and gives the fresh run's root."""
    from evalkit.api import evaluate

    def run(out: str) -> dict:
        assert evaluate("eva-clip-demo", "shapeworld-video", output_dir=tmp_path / out, cache_dir=tmp_path / "cache",
                        progress=False, raise_errors=True).ok
        return _result_of(tmp_path / out)["data_fingerprint"]

    fresh = run("o1")
    _strip_digests(tmp_path / "cache")
    image_forwards.append(0)
    assert run("o2") == {**fresh, "from": "cache"} and fresh["complete"]


def test_certify_says_a_run_without_limit_binds_an_incomplete_fingerprint(tmp_path, capsys):
    from evalkit.api import evaluate
    from evalkit.cli.main import main

    assert evaluate("eva-clip-demo", "shapeworld-shape", output_dir=tmp_path / "o", limit=20, cache_dir=None,
                    progress=False, raise_errors=True).ok
    assert main(["certify", "--model", "eva-clip-demo", "--variant", "fp32+limit20",
                 "--output-dir", str(tmp_path / "o")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "data fingerprint is incomplete (20 of 20 samples hashed" in err
    assert "run the task again without --limit" in err
    assert "in full" not in err
