"""A tar shard that is cut short (a partial download) or has a corrupt header is an error naming
the shard, in a run and in ``evalkit data check``; it is never read as a smaller, whole shard.
A sample whose image does not decode inside an intact shard is still only a skipped sample."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from fixtures import make_wds

from evalkit.cli import main as cli
from evalkit.data import sources

BLOCK = 512


def _members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return tar.getmembers()


def _end_of_members(shard: Path) -> int:
    last = _members(shard)[-1]
    return last.offset_data + -(-last.size // BLOCK) * BLOCK


def _zeroed_header(data: bytes, shard: Path) -> bytes:
    """A header in the middle blanked out: tarfile takes it for the end of the archive, and the
    file still ends in zeros, as a whole tar does."""
    at = _members(shard)[6].offset
    return data[:at] + bytes(BLOCK) + data[at + BLOCK:]


def _bad_checksum(data: bytes, shard: Path) -> bytes:
    at = _members(shard)[6].offset
    flipped = bytes(b ^ 0xFF for b in data[at + 10:at + 20])
    return data[:at + 10] + flipped + data[at + 20:]


# kind -> (what to do to the bytes of a whole shard, a phrase the error must contain).
# Shard 1 holds s000012..s000023, a .png and a .cls each: member 4 is s000014.png, 6 s000015.png.
CUTS = {
    "mid-header": (lambda d, s: d[:_members(s)[5].offset + 100],
                   "ends at byte {size} inside the header after member 's000014.png'"),
    "mid-member-data": (lambda d, s: d[:_members(s)[4].offset_data + 50],
                        "ends inside member 's000014.png' at byte {size}"),
    "block-boundary": (lambda d, s: d[:_members(s)[6].offset],
                       "ends at byte {size} after member 's000014.cls', without the end-of-archive marker"),
    "no-end-marker": (lambda d, s: d[:_end_of_members(s)],
                      "ends at byte {size} after member 's000023.cls', without the end-of-archive marker"),
    "inside-end-marker": (lambda d, s: d[:_end_of_members(s) + BLOCK], "inside the end-of-archive marker"),
    "inside-padding": (lambda d, s: d[:_members(s)[-1].offset_data + 200],
                       "ends at byte {size} inside the padding after member 's000023.cls'"),
    "bad-checksum": (_bad_checksum, "bad header at byte 13824 after member 's000014.cls': bad checksum"),
    "zeroed-header": (_zeroed_header, "a zeroed header at byte 13824 after member 's000014.cls'"),
    "empty-file": (lambda d, s: b"", "empty tar shard (0 bytes)"),
    "first-header-cut": (lambda d, s: d[:300], "ends at byte 300 inside the header before any member"),
}


def _dataset(tmp_path: Path, name: str = "wds") -> tuple[Path, Path]:
    """24 samples in 2 shards; shard 1 holds s000012..s000023 (a .png and a .cls each)."""
    root = make_wds(tmp_path / name)
    return root, root / "test" / "1.tar"


def _damage(shard: Path, kind: str) -> str:
    cut, phrase = CUTS[kind]
    shard.write_bytes(cut(shard.read_bytes(), shard))
    return phrase.format(size=shard.stat().st_size)


def _run(tmp_path: Path, model: str, root: Path, *extra: str) -> int:
    return cli.main(["run", "--model", model, "--tasks", f"wds:{root}", "--output-dir", str(tmp_path / "out"),
                     "--cache-dir", str(tmp_path / "cache"), "--quiet", *extra])


def _assert_one_line_naming(err: str, shard: Path, phrase: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert str(shard) in lines[0] and phrase in lines[0] and "re-download it" in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", list(CUTS))
def test_damaged_shard_fails_the_run_naming_it(tiny_arch, tmp_path, capsys, kind):
    root, shard = _dataset(tmp_path)
    phrase = _damage(shard, kind)
    assert _run(tmp_path, f"open_clip:{tiny_arch}", root) == 1
    _assert_one_line_naming(capsys.readouterr().err, shard, phrase)
    assert not list((tmp_path / "out").rglob("*.json")), "no result may be written from a damaged shard"


@pytest.mark.parametrize("kind", list(CUTS))
def test_damaged_shard_fails_the_data_check_naming_it(tmp_path, capsys, kind):
    root, shard = _dataset(tmp_path)
    phrase = _damage(shard, kind)
    assert cli.main(["data", "check", "--tasks", f"wds:{root}", "--json"]) == 1
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "error" and row["samples"] is None
    assert str(shard) in row["message"] and phrase in row["message"], row["message"]
    assert cli.main(["data", "check", "--tasks", f"wds:{root}"]) == 1  # the table
    out = capsys.readouterr().out
    assert "| error " in out and str(shard) in out and "0/1 found" in out


def test_damaged_shard_fails_the_data_check_counting_it(tmp_path):
    """The count reads the headers through the same check (a shard loaded before it broke)."""
    from evalkit.data.check import count_samples

    root, shard = _dataset(tmp_path)
    data = sources.load_source({"type": "wds", "path": str(root)}, None, "t")
    _damage(shard, "zeroed-header")  # ends in zeros: only a full scan of the headers finds it
    with pytest.raises(sources.DataError, match=r"1\.tar: corrupt tar shard \(a zeroed header at byte 13824"):
        count_samples(data)


def test_damaged_shard_fails_when_read_after_loading(tmp_path):
    """A shard damaged between loading the dataset and reading it: checked again before reading."""
    root, shard = _dataset(tmp_path)
    data = sources.load_source({"type": "wds", "path": str(root)}, None, "t")
    assert sum(1 for _ in data.units[1].samples()) == 12
    _damage(shard, "bad-checksum")
    with pytest.raises(sources.DataError, match=r"1\.tar: corrupt tar shard \(bad header at byte 13824 .*: bad checksum"):
        list(data.units[1].samples())


def test_damaged_shard_with_loader_workers_is_named(tiny_arch, tmp_path, capsys):
    """With loader worker processes (the default on a GPU) the error still names the shard."""
    root, shard = _dataset(tmp_path)
    phrase = _damage(shard, "bad-checksum")
    assert _run(tmp_path, f"open_clip:{tiny_arch}", root, "--num-workers", "2") == 1
    _assert_one_line_naming(capsys.readouterr().err, shard, phrase)


def test_intact_dataset_passes_run_and_check(tiny_arch, tmp_path, capsys):
    root, _ = _dataset(tmp_path)
    assert cli.main(["data", "check", "--tasks", f"wds:{root}", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "found" and row["samples"] == 24 and row["message"] == ""
    assert _run(tmp_path, f"open_clip:{tiny_arch}", root) == 0
    (result,) = (tmp_path / "out").rglob("*.json")
    ev = json.loads(result.read_text())["evalkit"]
    assert ev["samples"] == 24 and ev["skipped"] == 0


def test_corrupt_image_in_an_intact_shard_is_a_skipped_sample(tiny_arch, tmp_path, capsys):
    root = make_wds(tmp_path / "wds", corrupt=1)  # s000000.png is not a PNG; the tar itself is whole
    assert cli.main(["data", "check", "--tasks", f"wds:{root}", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "found" and row["samples"] == 24
    assert _run(tmp_path, f"open_clip:{tiny_arch}", root) == 0
    (result,) = (tmp_path / "out").rglob("*.json")
    ev = json.loads(result.read_text())["evalkit"]
    assert ev["skipped"] == 1 and ev["evaluated"] == 23 and ev["skipped_keys"] == ["0.tar/s000000"]


@pytest.mark.parametrize("kind", ["block-boundary", "no-end-marker", "mid-member-data", "zeroed-header"])
def test_cached_features_are_not_served_for_a_shard_damaged_since(tiny_arch, tmp_path, capsys, kind):
    """Features cached from the whole shard, then the shard is damaged: the rerun fails. (Features
    are cached under the shard's path, size and mtime in whole seconds, which a same-size damage
    within the second keeps: the shard is checked before the cache is looked at.)"""
    root, shard = _dataset(tmp_path)
    assert _run(tmp_path, f"open_clip:{tiny_arch}", root) == 0
    capsys.readouterr()
    before = shard.stat()
    phrase = _damage(shard, kind)
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime as when cached
    assert _run(tmp_path, f"open_clip:{tiny_arch}", root) == 1
    _assert_one_line_naming(capsys.readouterr().err, shard, phrase)


def test_cached_features_of_a_truncated_shard_are_not_served(tiny_arch, tmp_path, capsys, monkeypatch):
    """Features cached from an already truncated shard by a version without the check (simulated:
    the check switched off) are not served as a whole shard's: the rerun fails before the cache."""
    root, shard = _dataset(tmp_path)
    phrase = _damage(shard, "block-boundary")
    real_scan = sources.scan_tar
    with monkeypatch.context() as m:
        m.setattr(sources, "scan_tar", lambda path: [])
        assert _run(tmp_path, f"open_clip:{tiny_arch}", root) == 0  # the old behaviour: 15 samples, exit 0
    assert sources.scan_tar is real_scan
    capsys.readouterr()
    assert list((tmp_path / "cache").rglob("*")), "the first run should have cached features"
    assert _run(tmp_path, f"open_clip:{tiny_arch}", root) == 1
    _assert_one_line_naming(capsys.readouterr().err, shard, phrase)


# -- whole shards in other tar dialects are not mistaken for damaged ones ----------------------


def _shard(path: Path, fmt: int, names: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=fmt) as tar:
        for name in names:
            payload = name.encode() * 40
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_whole_shards_of_every_tar_format_scan_clean(tmp_path, fmt):
    long = "x" * 150 if fmt != tarfile.USTAR_FORMAT else "d/" + "x" * 90  # GNU long name / pax path
    names = [f"{long}{i}.jpg" for i in range(3)] + [f"{long}{i}.cls" for i in range(3)] + ["é-ü.webp"]
    shard = _shard(tmp_path / f"{fmt}.tar", fmt, names)
    assert sources.scan_tar(shard) == names
    assert sources._tar_counter(shard)() == 4


def test_end_marker_without_record_padding_is_whole(tmp_path):
    shard = _shard(tmp_path / "a.tar", tarfile.PAX_FORMAT, ["a.png", "a.cls"])
    end = _end_of_members(shard)
    shard.write_bytes(shard.read_bytes()[:end + 2 * BLOCK])  # the two zero blocks, no padding to 10240
    assert sources.scan_tar(shard) == ["a.png", "a.cls"]


def test_compressed_shard_is_named_as_such(tmp_path):
    root, shard = _dataset(tmp_path)
    shard.write_bytes(gzip.compress(shard.read_bytes()))
    with pytest.raises(sources.DataError, match=r"1\.tar: gzip-compressed tar shard; .* decompress it"):
        sources.load_source({"type": "wds", "path": str(root)}, None, "t")
