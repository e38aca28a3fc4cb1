"""evalkit.data.video: sampler indices against reference rules written here, seeking against a full
decode in several containers/codecs (one variable-frame-rate), decode counts, and bad input.

Each frame carries its index in four 16x16 blocks (2x2 grid of a 32x32 frame), base-4 digits
drawn at grey levels 32/96/160/224, which survives lossy compression."""

from __future__ import annotations

import fractions
import pickle
import warnings
from pathlib import Path

import av
import numpy as np
import pytest

from evalkit.data import video

LEVELS = (32, 96, 160, 224)
SIZE = 32


def pattern(i: int) -> np.ndarray:
    a = np.zeros((SIZE, SIZE, 3), np.uint8)
    h = SIZE // 2
    for d in range(4):
        r, c = divmod(d, 2)
        a[r * h:(r + 1) * h, c * h:(c + 1) * h] = LEVELS[(i // 4 ** d) % 4]
    return a


def read_index(img) -> int:
    a = np.asarray(img.convert("RGB"), dtype=float).mean(axis=2)
    h = SIZE // 2
    i = 0
    for d in range(4):
        r, c = divmod(d, 2)
        m = a[r * h + 3:(r + 1) * h - 3, c * h + 3:(c + 1) * h - 3].mean()
        i += int(np.argmin([abs(m - v) for v in LEVELS])) * 4 ** d
    return i


def make_clip(path: Path, codec: str, n: int = 45, vfr: bool = False, gop: int = 8) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width = s.height = SIZE
        s.pix_fmt = "yuv420p"
        s.codec_context.gop_size = gop
        tb = fractions.Fraction(1, 1000)
        if vfr:
            s.codec_context.time_base = tb
        t = 0
        for i in range(n):
            f = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            if vfr:  # 40 ms, 40 ms, 90 ms, ...: no constant rate
                f.pts, f.time_base = t, tb
                t += 90 if i % 3 == 2 else 40
            else:
                f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


CONTAINERS = [  # (name, codec, vfr)
    ("h264.mp4", "libx264", False),
    ("mpeg4.mp4", "mpeg4", False),
    ("mpeg4.avi", "mpeg4", False),
    ("vp8.webm", "libvpx", False),
    ("vp9.mkv", "libvpx-vp9", False),
    ("h264-vfr.mp4", "libx264", True),
    ("mpeg4-vfr.mkv", "mpeg4", True),
]
CONTAINERS = [c for c in CONTAINERS if c[1] in av.codecs_available]
SAMPLERS = ["middle", "middle-centre", "uniform-1", "uniform-8", "uniform-16", "uniform-5"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {name: make_clip(d / name, codec, vfr=vfr) for name, codec, vfr in CONTAINERS}


def full_decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# --- reference rules, written from the protocol notes --------------------------------------------

def vissl_middle(nb_frames: int, decoded: int) -> int | None:
    """vissl's loop, verbatim in logic: return frame i where i - 1 == nb_frames // 2."""
    for i in range(decoded):
        if i - 1 == nb_frames // 2:
            return i
    return None


def ref_uniform(n: int, big_n: int) -> list[int]:
    return [int(i * n / big_n + n / (2 * big_n)) for i in range(big_n)]


def test_middle_matches_vissl_rule():
    for n in range(0, 600):
        want = vissl_middle(n, n if n else 2)  # count 0: vissl decodes on and takes frame 1
        got = video.frame_indices(n, "middle")
        if want is None:  # vissl drops 1- and 2-frame clips; evalkit clamps to the last frame
            assert n in (1, 2) and got == [n - 1]
        else:
            assert got == [want], n
    assert video.frame_indices(0, "middle") == [1]
    assert video.frame_indices(250, "middle") == [126]


def test_middle_centre_and_uniform_match_reference():
    for n in range(0, 700):
        assert video.frame_indices(n, "middle-centre") == [n // 2]
        assert video.frame_indices(n, "middle-centre") == video.frame_indices(n, "uniform-1")
        for big_n in (1, 2, 3, 5, 8, 16, 32):
            got = video.frame_indices(n, f"uniform-{big_n}")
            assert got == ref_uniform(n, big_n), (n, big_n)
            assert all(0 <= i < max(n, 1) for i in got)


def test_parse_sampler_errors_name_choices():
    assert video.parse_sampler("uniform-16").n == 16
    assert video.parse_sampler("middle").name == "middle"
    for bad in ("mid", "uniform-0", "uniform-", "uniform-x", "Middle", ""):
        with pytest.raises(ValueError, match="middle-centre, uniform-N"):
            video.parse_sampler(bad)


def test_generated_frames_carry_their_index(clips):
    for path in clips.values():
        frames = full_decode(path)
        assert len(frames) == 45
        from PIL import Image
        assert [read_index(Image.fromarray(a)) for a in frames] == list(range(45)), path.name


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_seek_equals_full_decode(clips, sampler):
    for name, path in clips.items():
        full = full_decode(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", video.FrameCountWarning)
            n = video.frame_count(path)
            imgs = video.sample_frames(path, sampler)
        assert n == len(full), name
        idx = video.frame_indices(n, sampler)
        assert len(imgs) == len(idx)
        for i, img in zip(idx, imgs, strict=True):
            assert read_index(img) == i, (name, sampler, i)
            assert np.array_equal(np.asarray(img), full[i]), (name, sampler, i)


def test_read_frames_any_order_and_repeats(clips):
    path = clips["h264.mp4"]
    full = full_decode(path)
    idx = [40, 3, 3, 17, 0, 44, 16]
    imgs = video.read_frames(path, idx)
    assert [read_index(im) for im in imgs] == idx
    assert all(np.array_equal(np.asarray(im), full[i]) for im, i in zip(imgs, idx, strict=True))


@pytest.fixture
def decode_counter(monkeypatch):
    seen = {"frames": 0}
    real = video._decode_packet

    def counting(packet):
        out = real(packet)
        seen["frames"] += len(out)
        return out

    monkeypatch.setattr(video, "_decode_packet", counting)
    return seen


def test_only_needed_frames_decoded(tmp_path, decode_counter):
    # 250 frames (10 s at 25 fps), a keyframe every 25: the middle frame (126) needs at most the
    # GOP that holds it (frames 125..126), never the frames before it
    path = make_clip(tmp_path / "long.mp4", "libx264", n=250, gop=25)
    [img] = video.sample_frames(path, "middle")
    assert read_index(img) == 126
    assert decode_counter["frames"] <= 25, decode_counter
    decode_counter["frames"] = 0
    imgs = video.sample_frames(path, "uniform-8")
    assert [read_index(im) for im in imgs] == video.frame_indices(250, "uniform-8")
    # 8 frames in 8 different GOPs: each at most a GOP plus the decoder's B-frame delay
    assert decode_counter["frames"] <= 8 * 25, decode_counter
    decode_counter["frames"] = 0
    video.read_frames(path, [249])
    assert decode_counter["frames"] <= 25


def test_lazy_clip(clips):
    clip = video.VideoClip(str(clips["mpeg4.avi"]))
    assert isinstance(clip.path, Path)
    assert clip.frame_count() == 45
    assert [read_index(im) for im in clip.frames("uniform-3")] == video.frame_indices(45, "uniform-3")


# --- frame counts and bad input -------------------------------------------------------------------

def test_missing_count_fallbacks(clips):
    path = clips["vp8.webm"]  # WebM reports no frame count
    with pytest.warns(video.FrameCountWarning, match="vp8.webm"):
        assert video.frame_count(path) == 45
    assert video.frame_count(path, missing_count="vissl") == 0
    [img] = video.sample_frames(path, "middle", missing_count="vissl")
    assert read_index(img) == 1  # vissl: count 0 -> frame 1
    with pytest.raises(video.VideoError, match="vp8.webm.*no frame count") as e:
        video.sample_frames(path, "middle", missing_count="error")
    assert e.value.reason == "frame-count"


def _raises(path, reason, match):
    with pytest.raises(video.VideoError, match=match) as e:
        video.sample_frames(path, "middle")
    assert e.value.reason == reason
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.mp4", "missing", "nope.mp4: no such video file")
    e = video.VideoError(tmp_path / "x.mp4", "missing", "no such video file")
    back = pickle.loads(pickle.dumps(e))  # errors cross data-loader worker processes
    assert (str(back), back.path, back.reason) == (str(e), e.path, e.reason)


def test_file_with_no_frames(tmp_path):
    path = tmp_path / "empty.avi"  # a video stream, no packets
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width = s.height = SIZE
        s.pix_fmt = "yuv420p"
        c.start_encoding()
    _raises(path, "no-frames", "empty.avi: has no video frames")


def test_not_a_video(tmp_path):
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"\x00not a video at all" * 100)
    _raises(path, "unreadable", "junk.mp4: cannot open video")


def test_truncated_mp4(clips, tmp_path):
    data = clips["h264.mp4"].read_bytes()
    path = tmp_path / "trunc.mp4"
    path.write_bytes(data[: len(data) // 2])  # the moov atom is at the end: gone
    _raises(path, "unreadable", "trunc.mp4: cannot open video")


def test_wrong_frame_count(tmp_path, clips):
    # a truncated AVI keeps its header's frame count (45) but holds fewer frames
    data = clips["mpeg4.avi"].read_bytes()
    path = tmp_path / "trunc.avi"
    for frac in (0.8, 0.75, 0.85, 0.7, 0.9):  # a cut that still opens, before frame 23
        path.write_bytes(data[: int(len(data) * frac)])
        try:
            with av.open(str(path)) as c:
                s = c.streams.video[0]
                if s.frames == 45 and sum(1 for p in c.demux(s) if p.size) < 23:
                    break
        except av.FFmpegError:
            pass
    else:
        pytest.skip("no AVI cut that opens and lacks the middle frame")
    _raises(path, "frame-count", r"trunc.avi: wanted frame 23 but the file holds \d+ frames "
                                 r"\(the container reports 45")


def test_undecodable_codec(tmp_path, clips):
    data = clips["mpeg4.avi"].read_bytes()
    assert data.count(b"FMP4") >= 1
    path = tmp_path / "codec.avi"
    path.write_bytes(data.replace(b"FMP4", b"QQQQ").replace(b"fmp4", b"qqqq"))
    _raises(path, "codec", "codec.avi: codec .* cannot be decoded")


def test_no_video_stream(tmp_path):
    path = tmp_path / "audio.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        f.sample_rate = 8000
        for p in s.encode(f):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    _raises(path, "no-video-stream", "audio.mkv: has no video stream")


def test_decode_stats_count_what_the_decoder_produced(tmp_path, decode_counter):
    path = make_clip(tmp_path / "long.mp4", "libx264", n=250, gop=25)
    for sampler in ("middle", "uniform-8"):
        decode_counter["frames"] = 0
        stats = video.DecodeStats()
        video.sample_frames(path, sampler, stats=stats)
        assert stats.frames == decode_counter["frames"] > 0
    stats = video.DecodeStats()
    video.read_frames(path, [3, 200], stats=stats)
    assert 2 <= stats.frames <= 2 * 25
