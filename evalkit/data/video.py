"""Video frames for the frames views: which frames a sampler takes, and decoding only those.

Torch-free (PyAV, Pillow, numpy): a data-layer module, called from a view's per-sample step.

Samplers (``parse_sampler``; protocol facts in TASK_PROTOCOLS.md §1, EVA_CLIP_PROTOCOL.md §2):

* ``middle``: vissl's one-frame rule (``create_k700_data_files.py``), the paper's 1-frame rows:
  0-based index ``n // 2 + 1`` where ``n`` is the container's frame count (one past the centre);
  ``n == 0`` gives frame 1, as vissl's loop does. Where vissl would return ``None`` because the
  index is past the end (a 1- or 2-frame clip) the index is clamped to the last frame, ``n - 1``.
* ``middle-centre``: the true centre, ``n // 2`` (the later of the two centres for even ``n``;
  equal to ``uniform-1``).
* ``uniform-N``: N segment centres, ``int(i * n/N + n/(2N))`` for i in 0..N-1 (X-CLIP/TSN test
  sampling), computed exactly as ``((2i + 1) * n) // (2N)`` so no float rounding moves a frame;
  for ``n < N`` frames repeat.

Frame count (``frame_count``): the container's ``stream.frames``. Where the container reports none
(0: Matroska/WebM never do) the count of video packets is used, found by demuxing (no decoding),
with a :class:`FrameCountWarning`; ``missing_count="vissl"`` keeps 0 instead (vissl: frame 1) and
``missing_count="error"`` raises. A count that disagrees with the packets (the container says
more frames than the file holds: a truncated file) is an error only when a wanted index lies past
the real end; the clip is never silently dropped as vissl does.

Decoding (``read_frames``): the file's video packets are demuxed once (no decoding) into a
presentation-order index: frame ``i`` is the packet with the i-th smallest pts, so a variable
frame rate needs no rate arithmetic. For each wanted frame the reader seeks to the keyframe at or
before it (``container.seek(pts, backward=True, any_frame=False)``) and decodes forward to it;
frames in one GOP are reached in one pass without seeking again. Every decode goes through
:func:`_decode_packet`, so the frames decoded can be counted.

Bad input raises :class:`VideoError` naming the file, with ``reason`` one of ``REASONS``.
"""

from __future__ import annotations

import bisect
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av
from PIL import Image

from evalkit.errors import EvalkitError

SAMPLER_CHOICES = "middle, middle-centre, uniform-N (N >= 1, e.g. uniform-8, uniform-16)"
REASONS = ("missing", "unreadable", "no-video-stream", "codec", "no-frames", "frame-count", "decode")
MissingCount = Literal["packets", "vissl", "error"]


class VideoError(EvalkitError, ValueError):
    """A clip that cannot give its frames. ``path`` and ``reason`` (one of ``REASONS``) let a
    source count and report it; the message names the file."""

    def __init__(self, path: str | Path, reason: str, detail: str):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {detail} [{reason}]")

    def __reduce__(self):  # survives a data-loader worker process
        return (type(self), (self.path, self.reason, self.detail))


class FrameCountWarning(UserWarning):
    """The container reports no frame count; the packet count is used instead."""


@dataclass(frozen=True)
class Sampler:
    kind: Literal["middle", "middle-centre", "uniform"]
    n: int = 1  # frames taken

    @property
    def name(self) -> str:
        return f"uniform-{self.n}" if self.kind == "uniform" else self.kind


_UNIFORM = re.compile(r"uniform-([0-9]+)")


def parse_sampler(text: str | Sampler) -> Sampler:
    """``middle``, ``middle-centre`` or ``uniform-N``; anything else is a ValueError naming the
    choices."""
    if isinstance(text, Sampler):
        return text
    s = str(text).strip()
    if s in ("middle", "middle-centre"):
        return Sampler(s)  # type: ignore[arg-type]
    m = _UNIFORM.fullmatch(s)
    if m and int(m.group(1)) >= 1:
        return Sampler("uniform", int(m.group(1)))
    raise ValueError(f"unknown frame sampler {text!r}; choose one of: {SAMPLER_CHOICES}")


def frame_indices(n_frames: int, sampler: str | Sampler) -> list[int]:
    """0-based frame indices ``sampler`` takes from a clip of ``n_frames`` frames (see the module
    docstring for each rule and its edge cases). ``n_frames`` may be 0 (an unknown count)."""
    sp = parse_sampler(sampler)
    n = int(n_frames)
    if n < 0:
        raise ValueError(f"n_frames must be >= 0, got {n}")
    if sp.kind == "middle":
        i = n // 2 + 1
        return [min(i, n - 1) if n >= 1 else i]
    if sp.kind == "middle-centre":
        return [n // 2]
    return [((2 * i + 1) * n) // (2 * sp.n) for i in range(sp.n)]


def _decode_packet(packet: av.Packet) -> list[av.VideoFrame]:
    """Every decode of this module goes through here (tests count the frames it returns)."""
    return list(packet.decode())


@dataclass(frozen=True)
class _Index:
    pts: list[int]  # presentation order
    keyframes: list[int]  # frame indices (into pts) of keyframes, ascending
    reported: int  # the container's stream.frames (0: none)


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(path, "missing", "no such video file")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise VideoError(path, "unreadable", f"cannot open video ({e})") from e


def _video_stream(path: Path, container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        if not container.streams.audio and not container.streams.subtitles:
            # nothing but data streams, or none: FFmpeg opens some cut-short files this way (an mp4
            # whose index, at the end, was cut off), so this is an unreadable file, not an audio one
            raise VideoError(path, "unreadable", "cannot open video (it has no audio or video stream: "
                             "not a video, or cut short)")
        raise VideoError(path, "no-video-stream", "has no video stream")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None or not getattr(ctx, "name", None) or ctx.name == "none":
        raise VideoError(path, "codec", f"codec {getattr(ctx, 'name', None)!r} cannot be decoded by PyAV")
    return stream


def _index(path: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _Index:
    pts: list[tuple[int, bool]] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            p = packet.pts if packet.pts is not None else packet.dts
            if p is None:
                raise VideoError(path, "decode", "a video packet has no timestamp; cannot seek")
            pts.append((p, bool(packet.is_keyframe)))
    except av.FFmpegError as e:
        raise VideoError(path, "decode", f"cannot demux video ({e})") from e
    if not pts:
        raise VideoError(path, "no-frames", "has no video frames")
    pts.sort()
    keyframes = [i for i, (_, k) in enumerate(pts) if k] or [0]
    if keyframes[0] != 0:
        keyframes.insert(0, 0)  # decoding from the start always works
    return _Index([p for p, _ in pts], keyframes, int(stream.frames or 0))


def _count(path: Path, index: _Index, missing_count: MissingCount) -> int:
    if index.reported > 0:
        return index.reported
    if missing_count == "error":
        raise VideoError(path, "frame-count", "the container reports no frame count")
    if missing_count == "vissl":
        return 0
    warnings.warn(f"{path}: the container reports no frame count; using its {len(index.pts)} video packets",
                  FrameCountWarning, stacklevel=3)
    return len(index.pts)


def frame_count(path: str | Path, missing_count: MissingCount = "packets") -> int:
    """The clip's frame count as the samplers use it (see the module docstring)."""
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(path, container)
        return _count(path, _index(path, container, stream), missing_count)


@dataclass
class DecodeStats:
    """How much decoding a read took (pass one to :func:`read_frames` / :func:`sample_frames`)."""

    frames: int = 0  # frames decoded, wanted or not


def _forward(path, container, stream, index, pos, todo, k, out, stats=None):
    """Decode forward from the current seek point, collecting ``todo[k:]`` until the next wanted
    frame lies past a keyframe not yet reached (seek again) or all are in. Returns
    (k, got any frame, overshot the first target)."""
    got_any = False
    try:
        for packet in container.demux(stream):
            for frame in _decode_packet(packet):
                if stats is not None:
                    stats.frames += 1
                i = pos.get(frame.pts)
                if i is None:
                    continue
                if i > todo[k]:
                    if not got_any:
                        return k, False, True  # the seek landed past the frame
                    raise VideoError(path, "decode", f"frame {todo[k]} was not decoded")
                if i == todo[k]:
                    img = frame.to_image()
                    out[i] = img
                    got_any = True
                    k += 1
                    if k == len(todo):
                        return k, True, False
                    nxt = index.keyframes[bisect.bisect_right(index.keyframes, todo[k]) - 1]
                    if nxt > i:
                        return k, True, False  # cheaper to seek to the next keyframe
    except av.FFmpegError as e:
        raise VideoError(path, "decode", f"cannot decode frame {todo[k]} ({e})") from e
    return k, got_any, False


def read_frames(path: str | Path, indices: list[int], stats: DecodeStats | None = None) -> list[Image.Image]:
    """RGB frames at 0-based presentation-order ``indices``, returned in the order given
    (repeats allowed), decoding only from the keyframe before each (module docstring).
    ``stats`` counts the frames decoded."""
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(path, container)
        index = _index(path, container, stream)
        return _read(path, container, stream, index, list(indices), stats)


def _read(path: Path, container, stream, index: _Index, indices: list[int],
          stats: DecodeStats | None = None) -> list[Image.Image]:
    n = len(index.pts)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        detail = f"wanted frame {bad[0]} but the file holds {n} frames"
        if index.reported and index.reported != n:
            detail += f" (the container reports {index.reported}: the count is wrong or the file is truncated)"
        raise VideoError(path, "frame-count", detail)
    out: dict[int, Image.Image] = {}
    if indices:
        _collect(path, container, stream, index, indices, out, stats)
    return [out[i] for i in indices]


def _collect(path, container, stream, index, indices, out, stats=None) -> None:
    pos = {p: i for i, p in enumerate(index.pts)}
    todo = sorted(set(indices))
    k = 0
    while k < len(todo):
        start = index.keyframes[bisect.bisect_right(index.keyframes, todo[k]) - 1]
        for attempt in (start, 0):
            container.seek(index.pts[attempt], stream=stream, backward=True, any_frame=False)
            k2, got_any, overshoot = _forward(path, container, stream, index, pos, todo, k, out, stats)
            if not overshoot:
                break
        if not got_any:
            raise VideoError(path, "decode", f"decoding ended before frame {todo[k]}")
        k = k2


def sample_frames(path: str | Path, sampler: str | Sampler, missing_count: MissingCount = "packets",
                  stats: DecodeStats | None = None) -> list[Image.Image]:
    """The frames ``sampler`` takes from the clip at ``path`` (one open, one demux pass);
    ``stats`` counts the frames decoded."""
    sp = parse_sampler(sampler)
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(path, container)
        index = _index(path, container, stream)
        n = _count(path, index, missing_count)
        return _read(path, container, stream, index, frame_indices(n, sp), stats)


@dataclass(frozen=True)
class VideoClip:
    """A clip on disk whose frames are read lazily: what a video source's loader returns, and what
    a frames view's per-sample step calls ``frames(sampler)`` on."""

    path: Path
    missing_count: MissingCount = "packets"
    # frames already decoded, by sampler: best-of-both's crop and squash views of one clip share them
    _decoded: dict[str, list[Image.Image]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def frame_count(self) -> int:
        return frame_count(self.path, self.missing_count)

    @property
    def decoded(self) -> dict[str, list[Image.Image]]:
        """The frames decoded so far, by sampler name (what the frames views read; a copy)."""
        return dict(self._decoded)

    def frames(self, sampler: str | Sampler) -> list[Image.Image]:
        name = parse_sampler(sampler).name
        if name not in self._decoded:
            self._decoded[name] = sample_frames(self.path, sampler, self.missing_count)
        return self._decoded[name]
