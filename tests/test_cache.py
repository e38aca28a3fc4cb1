"""The feature cache users can manage (issue 12, item 3): checksummed entries with metadata, damage
detected on read, reported by name, recomputed and never used; atomic writes under concurrent
processes; ``evalkit cache ls / du / prune / verify`` on a cache filled by a real run."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from clocks import TimedEncoder

import evalkit
import evalkit.models
from evalkit.cli.main import main
from evalkit.features.cache import MAGIC, FeatureCache, check_entry, parse_duration, read_header, temp_files

DEMO_LIMIT = 520  # ShapeWorld units hold 512 images: a run over 520 fills two units, of 512 and 8


def _entries(root: Path, kind: str = "*") -> list[Path]:
    return sorted(root.glob(f"{kind}/??/*.pt"))


def _payload_start(data: bytes) -> int:
    """Where the torch.save zip starts inside an entry (found independently of evalkit.features.cache)."""
    return data.index(b"PK\x03\x04")


def _flip_in_tensor(path: Path, tensor: torch.Tensor) -> None:
    """Flip an exponent bit of the first float of ``tensor``'s bytes inside the file: the payload
    still unpickles, with a different value."""
    data = bytearray(path.read_bytes())
    at = data.index(tensor.contiguous().numpy().tobytes()[:64])
    data[at + 3] ^= 0x40
    path.write_bytes(bytes(data))


def _run_demo(monkeypatch: pytest.MonkeyPatch, cache: Path, out: Path) -> tuple[dict[str, float], TimedEncoder]:
    """``evalkit.evaluate`` of the demo model on shapeworld-shape, its encoder's forwards counted."""
    loaded: list[TimedEncoder] = []
    load = evalkit.models.load

    def counted(*args, **kwargs):
        loaded.append(TimedEncoder(load(*args, **kwargs)))
        return loaded[-1]

    monkeypatch.setattr(evalkit.models, "load", counted)
    report = evalkit.evaluate("eva-clip-demo", "shapeworld-shape", limit=DEMO_LIMIT, cache_dir=cache,
                              output_dir=out, progress=False, raise_errors=True)
    monkeypatch.setattr(evalkit.models, "load", load)
    assert len(report.results) == 1 and len(loaded) == 1
    return report.results[0].metrics, loaded[0]


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A cache filled by one real run (two image units and a classifier), with its metrics."""
    root = tmp_path_factory.mktemp("filled")
    with pytest.MonkeyPatch.context() as mp:
        metrics, enc = _run_demo(mp, root / "cache", root / "out")
    assert enc.image.items == DEMO_LIMIT
    return root / "cache", metrics


@pytest.fixture
def cache_copy(filled, tmp_path):
    src, metrics = filled
    dst = tmp_path / "cache"
    shutil.copytree(src, dst)
    return dst, metrics


def _unit_entry(root: Path, n: int) -> tuple[Path, dict]:
    """The image entry of the unit that holds ``n`` samples, with its value."""
    for path in _entries(root, "images"):
        value = FeatureCache(root).get("images", path.stem)
        if len(value["keys"]) == n:
            return path, value
    raise AssertionError(f"no image unit of {n} samples under {root}")


# -- entries -----------------------------------------------------------------------------------


def test_an_entry_carries_its_metadata_and_a_checksum_of_everything(tmp_path):
    cache = FeatureCache(tmp_path)
    value = {"features": torch.randn(5, 8), "keys": list("abcde")}
    meta = {"model": "m", "fingerprint": "f" * 16, "view": "crop", "unit": "u[0:5]"}
    before = time.time()
    cache.put("images", "abcdef0123", value, meta=meta)
    path = tmp_path / "images" / "ab" / "abcdef0123.pt"
    data = path.read_bytes()
    assert data.startswith(MAGIC)
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]  # checked here with hashlib, not evalkit
    header, size = read_header(path)
    assert size == len(data)
    assert (header["kind"], header["key"], header["meta"]) == ("images", "abcdef0123", meta)
    assert before <= header["created"] <= time.time()
    loaded = torch.load(io.BytesIO(data[_payload_start(data):-32]), weights_only=True)
    assert torch.equal(loaded["features"], value["features"])
    fresh = FeatureCache(tmp_path)  # no memory layer: from disk
    got = fresh.get("images", "abcdef0123")
    assert torch.equal(got["features"], value["features"]) and got["keys"] == value["keys"]
    assert (fresh.hits, fresh.misses, fresh.corrupt) == (1, 0, [])
    assert check_entry(path) is None
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"model": "demo"', b'"model": "demp"', 1))


@pytest.mark.parametrize("damage, reason", [
    ("truncate", "truncated"),
    ("payload", "checksum mismatch"),
    ("header", "checksum mismatch"),
    ("misplaced", "not the one its name says"),
])
def test_a_damaged_entry_is_reported_by_name_treated_as_a_miss_and_replaced(tmp_path, caplog, damage, reason):
    root = tmp_path / "c"
    value = {"features": torch.arange(64, dtype=torch.float32).reshape(8, 8) + 1, "keys": list("abcdefgh")}
    FeatureCache(root).put("images", "aa11", value, meta={"model": "demo"})
    path = root / "images" / "aa" / "aa11.pt"
    if damage == "truncate":
        _truncate(path)
    elif damage == "payload":
        _flip_in_tensor(path, value["features"])
        data = path.read_bytes()  # the damage is one that unpickling alone does not see
        still = torch.load(io.BytesIO(data[_payload_start(data):-32]), weights_only=True)
        assert not torch.equal(still["features"], value["features"])
    elif damage == "header":
        _flip_header(path)
        assert read_header(path)[0]["meta"] == {"model": "demp"}  # the header still parses
    else:  # another key's good entry copied under this name
        FeatureCache(root).put("images", "aa22", {"features": torch.zeros(1, 8), "keys": ["z"]})
        shutil.copy(root / "images" / "aa" / "aa22.pt", path)
    cache = FeatureCache(root)
    with caplog.at_level(logging.WARNING, logger="evalkit.features.cache"):
        assert cache.get("images", "aa11") is None
    assert cache.misses == 1 and cache.hits == 0
    assert len(cache.corrupt) == 1 and cache.corrupt[0][0] == path and reason in cache.corrupt[0][1]
    assert any(str(path) in r.getMessage() and reason in r.getMessage() for r in caplog.records), caplog.text
    assert reason in check_entry(path)
    cache.put("images", "aa11", value, meta={"model": "demo"})  # the caller recomputes: the new entry replaces it
    assert check_entry(path) is None
    again = FeatureCache(root).get("images", "aa11")
    assert torch.equal(again["features"], value["features"])


def test_a_file_that_is_no_entry_is_a_damaged_one_never_used(tmp_path, caplog):
    """A bare ``torch.save`` (no magic, no checksum) is not an entry: reported as damaged, recomputed."""
    root = tmp_path / "c"
    path = root / "classifier" / "bb" / "bb33.pt"
    path.parent.mkdir(parents=True)
    torch.save(torch.ones(3, 4), path)
    cache = FeatureCache(root)
    with caplog.at_level(logging.WARNING, logger="evalkit.features.cache"):
        assert cache.get("classifier", "bb33") is None
    assert [p for p, _ in cache.corrupt] == [path] and "bad magic bytes" in check_entry(path)
    cache.put("classifier", "bb33", torch.zeros(3, 4))
    assert torch.equal(FeatureCache(root).get("classifier", "bb33"), torch.zeros(3, 4))
    assert check_entry(path) is None


def test_an_entry_that_cannot_be_written_is_reported_and_kept_in_memory(tmp_path, caplog):
    root = tmp_path / "c"
    root.mkdir()
    (root / "images").write_text("a file where the kind's folder should be")
    cache = FeatureCache(root)
    with caplog.at_level(logging.WARNING, logger="evalkit.features.cache"):
        cache.put("images", "ee55", torch.ones(2))  # the run goes on
    path = root / "images" / "ee" / "ee55.pt"
    assert [p for p, _ in cache.write_errors] == [path]
    assert any(f"cannot write {path}" in r.getMessage() for r in caplog.records), caplog.text
    assert torch.equal(cache.get("images", "ee55"), torch.ones(2))


# -- concurrency -------------------------------------------------------------------------------

KEYS = ["c0ffee01", "c0ffee02", "c0ffee03"]


def _hammer(root: str, writer: int, seconds: float, start, out) -> None:
    """Write and read the same few keys as fast as possible; check every value read is whole and
    one writer's (all elements equal, the key it was written for)."""
    reads = writes = misses = 0
    errors: list[str] = []
    start.wait()
    stop = time.monotonic() + seconds
    i = 0
    while time.monotonic() < stop:
        key = KEYS[i % len(KEYS)]
        i += 1
        FeatureCache(root).put("images", key, {"key": key, "x": torch.full((32768,), float(writer * 100000 + i))})
        writes += 1
        for other in KEYS:
            reader = FeatureCache(root)  # fresh: no memory layer
            got = reader.get("images", other)
            if reader.corrupt:
                errors.append(f"{other}: {reader.corrupt[0][1]}")
            elif got is None:
                misses += 1
            elif got["key"] != other or got["x"].shape != (32768,) or not bool((got["x"] == got["x"][0]).all()):
                errors.append(f"{other}: a mixed value")
            else:
                reads += 1
    out.put((writer, reads, writes, misses, errors))


def test_concurrent_processes_never_see_or_leave_a_half_written_entry(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), w, 2.0, start, out)) for w in range(4)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    errors = [e for r in results for e in r[4]]
    assert not errors, errors[:5]
    assert all(r[1] >= 10 and r[2] >= 5 for r in results), results  # every process did real work
    assert sum(r[3] for r in results) <= 3 * 4  # a miss only before a key's first write
    for key in KEYS:  # one valid entry per key, no temporary file left
        assert check_entry(tmp_path / "images" / key[:2] / f"{key}.pt") is None
    assert temp_files(tmp_path) == []


# -- a real run --------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["payload", "truncate"])
def test_a_damaged_unit_of_a_real_run_is_recomputed_alone_and_never_used(cache_copy, tmp_path, monkeypatch, caplog,
                                                                         damage):
    root, clean = cache_copy
    path, value = _unit_entry(root, DEMO_LIMIT - 512)
    _flip_in_tensor(path, value["features"]) if damage == "payload" else _truncate(path)
    with caplog.at_level(logging.WARNING, logger="evalkit.features.cache"):
        metrics, enc = _run_demo(monkeypatch, root, tmp_path / "out")
    warned = [r.getMessage() for r in caplog.records if r.name == "evalkit.features.cache"]
    assert len(warned) == 1 and str(path) in warned[0], warned
    assert enc.image.items == DEMO_LIMIT - 512  # the damaged unit only; the other one came from the cache
    assert enc.text.items == 0  # the classifier too
    assert metrics == clean
    assert check_entry(path) is None  # replaced by a good entry
    again = FeatureCache(root).get("images", path.stem)
    assert torch.equal(again["features"], value["features"]) and again["keys"] == value["keys"]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_ls_du_and_verify_on_a_cache_filled_by_a_real_run(cache_copy, capsys):
    root, _ = cache_copy
    files = _entries(root)
    sizes = {p: p.stat().st_size for p in files}
    assert len(files) == 3  # two image units and one classifier

    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(root), "--json")
    listing = json.loads(out)
    assert code == 0 and listing["entries"] == 3 and listing["bytes"] == sum(sizes.values())
    assert sum(g["bytes"] for g in listing["groups"]) == sum(sizes.values())
    by_kind: dict[str, int] = {}
    for g in listing["groups"]:
        by_kind[g["kind"]] = by_kind.get(g["kind"], 0) + g["entries"]
        assert 0 <= g["age_s"] < 3600 and 0 <= g["unused_s"] < 3600
    assert by_kind == {"images": 2, "classifier": 1}
    assert {(g["model"], g["kind"], g["view"]) for g in listing["groups"]} == {
        ("eva-clip-demo", "images", "crop"), ("eva-clip-demo", "classifier", "-")}
    assert {g["dataset"] for g in listing["groups"] if g["kind"] == "images"} == {"shapeworld:test:2024:96px:1000"}
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(root))
    assert code == 0 and "MODEL" in out and "classifier" in out and "3 entries, " in out

    code, out, _ = _cli(capsys, "cache", "du", "--cache-dir", str(root), "--json")
    du = json.loads(out)
    assert code == 0 and du["bytes"] == sum(sizes.values())
    assert du["by_kind"]["images"] == {"entries": 2, "bytes": sum(s for p, s in sizes.items() if "images" in p.parts)}
    code, out, _ = _cli(capsys, "cache", "du", "--cache-dir", str(root))
    assert code == 0 and "by kind" in out and "by model" in out

    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(root), "--quiet")
    assert code == 0 and "checked 3 entries" in out and "all good" in out
    bad = files[0]
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit anywhere
    bad.write_bytes(bytes(data))
    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(root), "--quiet")
    assert code == 1 and f"{bad}: checksum mismatch" in out and "1 bad" in out
    assert bad.exists()
    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(root), "--quiet", "--delete")
    assert code == 1 and "removed 1 bad entries" in out and not bad.exists()
    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(root), "--quiet")
    assert code == 0 and "checked 2 entries" in out


def test_prune_older_than_removes_only_unused_entries_and_a_rerun_recomputes_only_those(cache_copy, tmp_path,
                                                                                       monkeypatch, capsys):
    root, clean = cache_copy
    (classifier,) = _entries(root, "classifier")
    for path in _entries(root, "images"):  # used 20 days ago
        os.utime(path, (time.time() - 20 * 86400,) * 2)
    os.utime(classifier, (time.time() - 40 * 86400,) * 2)  # 40 days ago
    code, out, _ = _cli(capsys, "cache", "prune", "--older-than", "30d", "--dry-run", "--cache-dir", str(root))
    assert code == 0 and "would remove 1 of 3 entries" in out and classifier.exists()
    code, out, _ = _cli(capsys, "cache", "prune", "--older-than", "30d", "--cache-dir", str(root))
    assert code == 0 and "removed 1 entries" in out and "2 entries remain" in out
    assert not classifier.exists() and len(_entries(root, "images")) == 2
    metrics, enc = _run_demo(monkeypatch, root, tmp_path / "out")
    assert enc.image.items == 0 and enc.text.items > 0  # the classifier was rebuilt, no image re-encoded
    assert metrics == clean
    # the rerun read the image entries: that renewed them, they are no longer "unused for 10 days"
    code, out, _ = _cli(capsys, "cache", "prune", "--older-than", "10d", "--dry-run", "--cache-dir", str(root))
    assert code == 0 and "would remove 0 of 3 entries" in out


def _put(root: Path, kind: str, key: str, meta: dict | None) -> Path:
    FeatureCache(root).put(kind, key, torch.zeros(4, 4), meta=meta)
    return root / kind / key[:2] / f"{key}.pt"


def test_ls_groups_by_model_view_and_dataset_and_prune_by_model(tmp_path, capsys):
    root = tmp_path / "c"
    shards = "/data/wds_cifar10/test/{}.tar:1000:1700000000"
    a = {"model": "model-a", "fingerprint": "aaaa1111bbbb2222"}
    b = {"model": "model-b", "fingerprint": "cccc3333dddd4444"}
    for i in range(3):  # model-a, crop, a generated dataset in units
        _put(root, "images", f"a{i}00", {**a, "view": "crop", "unit": f"shapeworld:test:2024:64px:1000[{i * 512}:{i * 512 + 512}]"})
    _put(root, "images", "a900", {**a, "view": "squash", "unit": "shapeworld:test:2024:64px:1000[0:512]"})
    for i in range(2):  # model-b, crop, tar shards of one folder
        _put(root, "images", f"b{i}00", {**b, "view": "crop", "unit": shards.format(i)})
    _put(root, "classifier", "c100", {**b, "classes": 10, "templates": 3})
    _put(root, "images", "d100", None)  # written without metadata
    (root / "shapeworld-video").mkdir()
    (root / "shapeworld-video" / "clip.mp4").write_bytes(b"not an entry")  # a file that is no entry

    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(root), "--json")
    assert code == 0
    got = {(g["model"], g["kind"], g["view"], g["dataset"]): g["entries"] for g in json.loads(out)["groups"]}
    assert got == {
        ("model-a", "images", "crop", "shapeworld:test:2024:64px:1000"): 3,
        ("model-a", "images", "squash", "shapeworld:test:2024:64px:1000"): 1,
        ("model-b", "images", "crop", "/data/wds_cifar10/test"): 2,
        ("model-b", "classifier", "-", "-"): 1,
        ("(unknown)", "images", "-", "-"): 1,
    }
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(root))
    assert "model-a (aaaa1111)" in out and "/data/wds_cifar10/test" in out and "8 entries" in out

    code, out, _ = _cli(capsys, "cache", "prune", "--model", "model-a", "--dry-run", "--cache-dir", str(root))
    assert code == 0 and "would remove 4 of 8 entries" in out and len(_entries(root)) == 8
    code, out, _ = _cli(capsys, "cache", "prune", "--model", "cccc3333dd", "--cache-dir", str(root))  # a fingerprint
    assert code == 0 and "removed 3 entries" in out
    left = {p.stem for p in _entries(root)}
    assert left == {"a000", "a100", "a200", "a900", "d100"}

    stale, fresh = root / "images" / "a0" / ".a000.pt.0123.tmp", root / "images" / "a0" / ".a000.pt.4567.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200,) * 2)
    code, out, _ = _cli(capsys, "cache", "prune", "--all", "--cache-dir", str(root))
    assert code == 0 and "removed 5 entries" in out and "1 stale temporary files" in out
    assert _entries(root) == [] and not stale.exists()
    assert fresh.exists()  # a write that may be in progress is left alone
    assert (root / "shapeworld-video" / "clip.mp4").read_bytes() == b"not an entry"


def test_cache_commands_name_a_missing_folder_and_bad_arguments(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    for action in (["ls"], ["du"], ["verify"], ["prune", "--all"]):
        code, out, err = _cli(capsys, "cache", *action, "--cache-dir", str(missing))
        assert code == 1 and f"feature cache folder {missing} does not exist" in err, (action, err)
    (tmp_path / "c").mkdir()
    code, _, err = _cli(capsys, "cache", "prune", "--cache-dir", str(tmp_path / "c"))
    assert code == 2 and "--older-than 30d, --model NAME or --all" in err
    code, _, err = _cli(capsys, "cache", "prune", "--all", "--model", "x", "--cache-dir", str(tmp_path / "c"))
    assert code == 2 and "give it alone" in err
    with pytest.raises(SystemExit) as exc:
        main(["cache", "prune", "--older-than", "30x", "--cache-dir", str(tmp_path / "c")])
    assert exc.value.code == 2 and "expected a duration" in capsys.readouterr().err


def test_durations():
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("90m") == 5400
    assert parse_duration("45s") == 45
    assert parse_duration("1d12h") == 36 * 3600
    for bad in ("", "30", "30x", "d", "3 days"):
        with pytest.raises(ValueError, match="expected a duration"):
            parse_duration(bad)
