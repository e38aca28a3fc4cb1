"""Bad clips through a whole video task run (``evalkit.evaluate`` with the demo model, and the CLI):
each is a skipped sample counted in the result (``skipped``, ``skipped_keys``), named with its
reason in ``<task>.skipped.log``, left out of the denominator (the other clips score exactly as
they do without it), and an error naming the clip under ``--strict``.

The bad clips are made from generated ones (``test_video_frames.make_clip``): a stream with no
frames; an mp4 cut in half (its index, at the end, is gone) and a "faststart" mp4 (index first)
cut inside its frame data; an unknown codec tag; frame data replaced by random bytes behind a
valid header (opens, demuxes, does not decode); a header frame count twice the real one; and, in
a Kinetics CSV, a label outside the class list and a listed clip that is not on disk. A clip whose
container reports no frame count is not bad: the packet count stands in for it (with a warning)."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import av
import pytest
from test_video_frames import SIZE, make_clip, pattern
from test_video_tasks import K400, _videofolder

from evalkit import api
from evalkit.cli import main as cli
from evalkit.data import video
from evalkit.features.embed import SampleDecodeError
from evalkit.tasks.spec import adhoc_name

GOOD = ["riding_a_bike/0.mp4", "riding_a_bike/1.mp4", "swimming/0.mp4", "swimming/1.mp4"]
MODEL = "eva-clip-demo"


# -- bad clips ----------------------------------------------------------------------------------------


def _box(data: bytes, tag: bytes) -> tuple[int, int]:
    """(start of the payload, end) of the first MP4 box or RIFF chunk called ``tag``."""
    i = data.index(tag)
    if tag in (b"mdat", b"moov"):  # MP4: 32-bit big-endian size before the tag, header included
        return i + 4, i - 4 + struct.unpack(">I", data[i - 4:i])[0]
    return i + 8, i + 8 + struct.unpack("<I", data[i + 4:i + 8])[0]  # RIFF: little-endian size after it


def no_frames(path: Path) -> None:
    with av.open(str(path), "w") as c:  # a video stream, no packets
        s = c.add_stream("mpeg4", rate=25)
        s.width = s.height = SIZE
        s.pix_fmt = "yuv420p"
        c.start_encoding()


def truncated(path: Path) -> None:
    data = make_clip(path, "mpeg4", n=20).read_bytes()
    assert data.index(b"moov") > data.index(b"mdat")  # the index is at the end: the cut takes it
    path.write_bytes(data[: len(data) // 2])


def _faststart(path: Path, n: int) -> Path:
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width = s.height = SIZE
        s.pix_fmt = "yuv420p"
        for i in range(n):
            f = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def truncated_faststart(path: Path) -> None:
    data = _faststart(path, 40).read_bytes()
    start, end = _box(data, b"mdat")
    assert data.index(b"moov") < start  # the index survives the cut and still says 40 frames
    path.write_bytes(data[: start + (end - start) // 3])


def unknown_codec(path: Path) -> None:
    data = make_clip(path, "mpeg4", n=20).read_bytes()
    assert b"FMP4" in data
    path.write_bytes(data.replace(b"FMP4", b"QQQQ").replace(b"fmp4", b"qqqq"))


def garbled(path: Path) -> None:
    data = bytearray(make_clip(path, "mpeg4", n=20).read_bytes())
    start, end = _box(bytes(data), b"mdat")
    rng = random.Random(0)
    data[start:end] = bytes(rng.randrange(256) for _ in range(end - start))  # same length: the index holds
    path.write_bytes(bytes(data))


def _avi_length(path: Path, frames: int) -> None:
    """Set the AVI stream header's frame count (``strh`` dwLength) to ``frames``."""
    data = bytearray(path.read_bytes())
    start, _ = _box(bytes(data), b"strh")
    assert data[start:start + 4] == b"vids"
    data[start + 32:start + 36] = struct.pack("<I", frames)
    path.write_bytes(bytes(data))


def wrong_count(path: Path) -> None:
    make_clip(path, "mpeg4", n=20)
    _avi_length(path, 40)  # says 40, holds 20: the middle frame (21) is past the end


# kind -> (file name, builder, VideoError reason, a phrase of the reason)
BAD = {
    "no-frames": ("empty.avi", no_frames, "no-frames", "has no video frames"),
    "truncated": ("cut.mp4", truncated, "unreadable", "cannot open video"),
    "truncated-faststart": ("cut-faststart.mp4", truncated_faststart, "frame-count",
                            "the container reports 40: the count is wrong or the file is truncated"),
    "unknown-codec": ("codec.avi", unknown_codec, "codec", "cannot be decoded by PyAV"),
    "garbled": ("garbled.mp4", garbled, "decode", "cannot decode frame"),
    "wrong-count": ("count.avi", wrong_count, "frame-count", "wanted frame 21 but the file holds 20 frames"),
}


def _result_dir(out: Path) -> Path:
    return out / "runs" / MODEL


def _predictions(out: Path, name: str) -> dict[str, dict]:
    lines = (_result_dir(out) / f"{name}.predictions.jsonl").read_text().splitlines()
    return {r["key"]: r for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The good clips alone: the predictions every run with a bad clip must reproduce."""
    tmp = tmp_path_factory.mktemp("clean")
    root = _videofolder(tmp / "clips")
    run = api.evaluate(MODEL, f"videofolder:{root}", output_dir=tmp / "out", progress=False, cache_dir=None,
                       save_predictions=True, raise_errors=True)
    assert run.results[0].evalkit["evaluated"] == 4 and run.results[0].evalkit["skipped"] == 0
    return _predictions(tmp / "out", adhoc_name(f'videofolder:{root}'))


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_clip_is_skipped_named_and_fatal_under_strict(tmp_path, clean, kind):
    name, build, reason, phrase = BAD[kind]
    root = _videofolder(tmp_path / "clips")
    bad = root / "swimming" / name
    build(bad)
    with pytest.raises(video.VideoError) as e:  # the clip is what its kind says, read on its own
        video.sample_frames(bad, "middle")
    assert e.value.reason == reason and phrase in str(e.value)

    out = tmp_path / "out"
    run = api.evaluate(MODEL, f"videofolder:{root}", output_dir=out, progress=False, save_predictions=True)
    assert run.ok, run.failures
    ev, metrics = run.results[0].evalkit, run.results[0].metrics
    key = f"swimming/{name}"
    assert (ev["samples"], ev["skipped"], ev["evaluated"]) == (5, 1, 4) and ev["skipped_keys"] == [key]
    [line] = (_result_dir(out) / f"{adhoc_name(f'videofolder:{root}')}.skipped.log").read_text().splitlines()
    logged_key, why = line.split("\t")
    assert logged_key == key and str(bad) in why and f"[{reason}]" in why and phrase in why
    # the denominator is the 4 good clips, and they score as they do without the bad one
    preds = _predictions(out, adhoc_name(f'videofolder:{root}'))
    assert sorted(preds) == GOOD and preds == clean
    assert metrics["acc1"] == pytest.approx(sum(p["top_classes"][0] == p["label"] for p in preds.values()) / 4)

    # --strict: the run fails naming the clip and its reason, whether decoded now (no cache) or
    # skipped by the run above (its cached features); no result is written
    for cache_dir in (None, "default"):
        strict_out = tmp_path / f"strict-{cache_dir}"
        run = api.evaluate(MODEL, f"videofolder:{root}", output_dir=strict_out, progress=False, strict=True,
                           cache_dir=cache_dir)
        [(task, msg)] = run.failures
        assert task == adhoc_name(f'videofolder:{root}') and key in msg and "without --strict" in msg, msg
        if cache_dir is None:
            assert f"[{reason}]" in msg and str(bad) in msg
        assert not run.results and not _result_dir(strict_out).exists()


def test_strict_raises_naming_the_clip(tmp_path):
    root = _videofolder(tmp_path / "clips", per_class=1)
    no_frames(root / "swimming" / "empty.avi")
    with pytest.raises(SampleDecodeError, match=r"sample swimming/empty\.avi: cannot decode .*\[no-frames\]"):
        api.evaluate(MODEL, f"videofolder:{root}", output_dir=tmp_path / "out", progress=False, strict=True,
                     raise_errors=True, cache_dir=None)


def test_wrong_count_under_uniform_8_is_skipped(tmp_path, clean):
    """uniform-8 wants frames 22..37 of a clip that says 40 and holds 20."""
    root = _videofolder(tmp_path / "clips")
    wrong_count(root / "swimming" / "count.avi")
    run = api.evaluate(MODEL, f"videofolder:{root}", output_dir=tmp_path / "out", progress=False, frames="uniform-8")
    ev = run.results[0].evalkit
    assert (ev["evaluated"], ev["skipped_keys"], ev["frames"]) == (4, ["swimming/count.avi"], 8)
    log = (_result_dir(tmp_path / "out") / f"{adhoc_name(f'videofolder:{root}')}_uniform-8.skipped.log").read_text()
    assert log.startswith("swimming/count.avi\t") and "wanted frame 22 but the file holds 20 frames" in log


def test_missing_frame_count_uses_the_packets(tmp_path):
    """A container that reports no frame count (0) is not a bad clip: its packets are counted,
    with a warning naming it, and it gives the frame its intact twin gives."""
    root = _videofolder(tmp_path / "clips", per_class=1)
    twin = make_clip(root / "swimming" / "intact.avi", "mpeg4", n=20)
    nocount = root / "swimming" / "nocount.avi"
    nocount.write_bytes(twin.read_bytes())
    _avi_length(nocount, 0)
    with av.open(str(nocount)) as c:
        assert c.streams.video[0].frames == 0
    out = tmp_path / "out"
    with pytest.warns(video.FrameCountWarning, match=r"nocount\.avi: the container reports no frame count; "
                                                     r"using its 20 video packets"):
        run = api.evaluate(MODEL, f"videofolder:{root}", output_dir=out, progress=False, save_predictions=True,
                           cache_dir=None, raise_errors=True)
    ev = run.results[0].evalkit
    assert (ev["evaluated"], ev["skipped"]) == (4, 0)
    assert not (_result_dir(out) / f"{adhoc_name(f'videofolder:{root}')}.skipped.log").exists()
    preds = _predictions(out, adhoc_name(f'videofolder:{root}'))
    assert preds["swimming/nocount.avi"]["top_scores"] == preds["swimming/intact.avi"]["top_scores"]


# -- Kinetics: labels and listed clips ---------------------------------------------------------------


def _kinetics(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """kinetics400/val.csv over 3 good clips, one with no frames, one label outside the list, one
    listed clip not on disk; returns the data root and the bad keys with a phrase of their reason."""
    names = K400.read_text().splitlines()
    root = tmp_path / "data" / "kinetics400"
    (root / "val").mkdir(parents=True)
    rows = [(names[0], "aaa", 0, 10), (names[5], "bbb", 1, 11), (names[5], "ccc", 2, 12),
            (names[0], "empty", 3, 13), ("not a kinetics class", "odd", 4, 14), (names[5], "gone", 5, 15)]
    (root / "val.csv").write_text("label,youtube_id,time_start,time_end,split\n" +
                                  "".join(f"{lab},{y},{s},{e},val\n" for lab, y, s, e in rows))
    for _, y, s, e in rows:
        path = root / "val" / f"{y}_{s:06d}_{e:06d}.mp4"
        if y in ("aaa", "bbb", "ccc", "odd"):
            make_clip(path, "mpeg4", n=12 + s)
        elif y == "empty":  # an AVI keeps a stream with no frames (an mp4 drops it); found by its stem
            no_frames(path.with_suffix(".avi"))
    bad = {"empty_000003_000013": "has no video frames [no-frames]",
           "odd_000004_000014": "label 'not a kinetics class' is not in the task's class list",
           "gone_000005_000015": "listed in val.csv but not found"}
    return tmp_path / "data", bad


def test_kinetics_bad_label_missing_clip_and_empty_clip(tmp_path):
    data, bad = _kinetics(tmp_path)
    out = tmp_path / "out"
    kw = dict(data_root=data, progress=False, transform="crop")
    run = api.evaluate(MODEL, "kinetics400", output_dir=out, save_predictions=True, **kw)
    assert run.ok, run.failures
    ev, m = run.results[0].evalkit, run.results[0].metrics
    assert (ev["samples"], ev["skipped"], ev["evaluated"]) == (6, 3, 3)
    assert sorted(ev["skipped_keys"]) == sorted(bad) and ev["data"]["listed_missing"] == 1
    log = dict(line.split("\t") for line in (_result_dir(out) / "kinetics400.skipped.log").read_text().splitlines())
    assert set(log) == set(bad)
    for key, phrase in bad.items():
        assert key in log[key] and phrase in log[key], (key, log[key])
    preds = _predictions(out, "kinetics400")
    assert sorted(preds) == ["aaa_000000_000010", "bbb_000001_000011", "ccc_000002_000012"]
    top1 = sum(p["top_classes"][0] == p["label"] for p in preds.values()) / 3
    top5 = sum(p["label"] in p["top_classes"][:5] for p in preds.values()) / 3
    assert (m["acc1"], m["acc5"]) == (pytest.approx(top1), pytest.approx(top5))
    assert m["mean_acc1_acc5"] == pytest.approx((top1 + top5) / 2)

    run = api.evaluate(MODEL, "kinetics400", output_dir=tmp_path / "strict", strict=True, cache_dir=None, **kw)
    [(task, msg)] = run.failures
    first = "empty_000003_000013"  # the first bad row of the CSV
    assert task == "kinetics400" and f"sample {first}: cannot decode" in msg and bad[first] in msg, msg


def test_cli_strict_exit_code_names_the_clip(tmp_path):
    """``python -m evalkit run ... --strict`` in its own process: exit 1 and one line naming the
    clip; without --strict: exit 0, the clip in the skipped log."""
    root = _videofolder(tmp_path / "clips", per_class=1)
    no_frames(root / "swimming" / "empty.avi")
    argv = ["run", "--model", MODEL, "--tasks", f"videofolder:{root}", "--output-dir", str(tmp_path / "out"),
            "--quiet", "--no-cache"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "evalkit", *argv, "--strict"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "sample swimming/empty.avi: cannot decode" in proc.stderr and "[no-frames]" in proc.stderr
    assert cli.main(argv) == 0
    log = (_result_dir(tmp_path / "out") / f"{adhoc_name(f'videofolder:{root}')}.skipped.log").read_text()
    assert log.startswith("swimming/empty.avi\tVideoError: ") and "[no-frames]" in log
