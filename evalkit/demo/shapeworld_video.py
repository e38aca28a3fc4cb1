"""ShapeWorld video: short generated clips in which the labelled shape is on screen for only some
of the frames, for the demo's video task (``shapeworld-video``).

Each clip is a pure function of ``(seed, index)`` (:func:`clip_spec`): one ShapeWorld shape
(drawn exactly as :mod:`evalkit.demo.shapeworld` draws it, same colours, sizes and positions)
drifts slowly across an otherwise empty background, and is out of view for one contiguous
stretch of ``GAP`` frames (it enters late, leaves early, or leaves and comes back); the frames of
that stretch are the clip's empty background only (the same light grey with sensor-like noise, no
shape and no distractor). The design is what makes the frame sampler matter:

* labels are balanced: clip ``i`` shows ``SHAPES[i % 6]``, so chance is exactly 1/6;
* the empty stretch covers the frame the ``middle`` sampler takes (vissl's ``n // 2 + 1``, from
  :func:`evalkit.data.video.frame_indices`) in exactly half of the clips (alternating per six
  clips, so every shape is hidden from ``middle`` in half of its clips) and misses it in the others;
* the stretch is short enough (at most 12 of 32 frames) that ``uniform-8`` always sees the shape
  in at least 5 of its 8 frames.

So a one-frame model sees an empty frame in half of the clips (and is right there only by
chance), while pooling eight frames sees the shape in every clip. Why the shape is visible in
most frames rather than a short window: the demo model maps an empty frame to one class
("star") about as strongly as it maps a shape to its own, and the frames view averages the
features of its frames, so an empty majority would outvote the shape.

Clips are real video files (H.264 in MP4 through PyAV's bundled libx264, MPEG-4 Part 2 if that
encoder is missing; ``FRAMES`` frames of ``SIZE``×``SIZE`` px at 25 fps, a keyframe every 8,
about 20 KB each) and are read back by the normal frame samplers
(:class:`evalkit.data.video.VideoClip`). Encoding is single-threaded with fixed settings and
x264's macroblock-tree rate control off (with it, the same frames gave different bytes and
pixels in about one run in five), so one seed gives the same files, and the same decoded pixels,
every time.

**Where the clips live.** :func:`ensure_clips` keeps each set in a folder of its own under a
cache root; the demo source passes the run's cache folder (``evalkit run --cache-dir``, default
``$EVALKIT_CACHE`` else ``~/.cache/evalkit``; under ``--no-cache`` a temporary folder removed when
the run ends: :func:`evalkit.demo.sources.video_cache_root`),
subfolder ``shapeworld-video/``, one folder per set named by generator version, seed, clip count,
frames, size and codec (``v1-s2024-n96-32f-96px-libx264``). A set is generated into a temporary
folder beside it (``.<name>.tmp-*``) and renamed into place only once every clip and its
``manifest.json`` (every file's size and SHA-256, and each clip's empty stretch) are written, so
an interrupted generation never leaves a folder under the set's name. A folder that is there is
reused only if its manifest matches the request and every file its size and hash; anything less
(a truncated clip, a missing manifest, a file deleted by hand) is removed and the set generated
again.

NumPy, Pillow and PyAV only (no torch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from evalkit.data.video import frame_indices
from evalkit.demo.shapeworld import SHAPES, Scene, ShapeAttrs, draw_attrs, render_scene

__all__ = [
    "VERSION",
    "FRAMES",
    "SIZE",
    "FPS",
    "GAP",
    "MAX_DRIFT",
    "MANIFEST",
    "ClipSpec",
    "ClipSet",
    "clip_spec",
    "render_frames",
    "write_clip",
    "default_codec",
    "set_name",
    "ensure_clips",
    "check_set",
]

#: generator version: part of every set's folder name, so a change of design never reuses old clips
VERSION = 1
FRAMES = 32  # frames per clip
SIZE = 96  # pixels (ShapeWorld's native size; the demo model resizes to its 32-px input)
FPS = 25
GAP = (8, 12)  # length of the empty stretch in frames, inclusive range
MAX_DRIFT = 0.06  # largest move of the shape's centre over the clip, as a fraction of the side
MANIFEST = "manifest.json"

_VIDEO_STREAM = 11  # a seed stream of its own: no clip repeats a ShapeWorld image's attributes
_CODECS = ("libx264", "mpeg4")
_STALE_TMP_S = 24 * 3600  # temporary folders older than this are left-overs of a killed run


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to draw one clip: the shape (its attributes at frame 0), its drift over
    the clip, and the empty stretch ``[gap_start, gap_stop)`` of frames in which it is not drawn."""

    seed: int
    index: int
    attrs: ShapeAttrs
    n_frames: int
    gap_start: int
    gap_stop: int
    drift: tuple[float, float]  # (dx, dy) over the whole clip, fractions of the side

    @property
    def shape(self) -> str:
        return self.attrs.shape

    @property
    def label(self) -> int:
        return SHAPES.index(self.attrs.shape)

    @property
    def visible(self) -> tuple[bool, ...]:
        """Per frame: whether the labelled shape is drawn in it."""
        return tuple(not self.gap_start <= t < self.gap_stop for t in range(self.n_frames))

    def frame_attrs(self, t: int) -> ShapeAttrs | None:
        """The shape as drawn in frame ``t``, or None where the frame is empty."""
        if self.gap_start <= t < self.gap_stop:
            return None
        f = t / (self.n_frames - 1)
        return dataclasses.replace(self.attrs, cx=self.attrs.cx + f * self.drift[0], cy=self.attrs.cy + f * self.drift[1])


def _middle(n_frames: int) -> int:
    return frame_indices(n_frames, "middle")[0]


def clip_spec(seed: int, index: int, n_frames: int = FRAMES) -> ClipSpec:
    """Clip ``index`` under ``seed`` (random access, O(1); see the module docstring for the design)."""
    lo, hi = GAP
    if n_frames < 2 * hi + 2:  # room for the stretch wholly before or after the middle frame
        raise ValueError(f"ShapeWorld video clips need at least {2 * hi + 2} frames, got {n_frames}")
    if index < 0:
        raise ValueError(f"ShapeWorld video clip index must be >= 0, got {index}")
    rng = np.random.default_rng([int(seed), _VIDEO_STREAM, int(index)])
    attrs = dataclasses.replace(draw_attrs(rng), shape=SHAPES[index % len(SHAPES)])  # balanced labels
    length = int(rng.integers(lo, hi + 1))
    mid = _middle(n_frames)
    if (index // len(SHAPES)) % 2 == 0:  # the empty stretch covers the middle frame
        first, last = max(0, mid - length + 1), min(mid, n_frames - length)
        start = int(rng.integers(first, last + 1))
    else:  # wholly before or wholly after it
        choices = list(range(0, mid - length + 1)) + list(range(mid + 1, n_frames - length + 1))
        start = int(choices[rng.integers(len(choices))])
    # a small drift that keeps the whole shape inside the frame
    margin = attrs.radius + 0.02
    dx, dy = (float(v) for v in rng.uniform(-MAX_DRIFT, MAX_DRIFT, size=2) / np.sqrt(2))
    dx = float(np.clip(attrs.cx + dx, margin, 1 - margin) - attrs.cx)
    dy = float(np.clip(attrs.cy + dy, margin, 1 - margin) - attrs.cy)
    return ClipSpec(int(seed), int(index), attrs, int(n_frames), start, start + length, (dx, dy))


def render_frames(spec: ClipSpec, size: int = SIZE) -> list[np.ndarray]:
    """The clip's frames as ``size``×``size``×3 uint8 arrays: the shape where it is visible, the
    empty background in the gap; each frame has its own noise, as a camera's would."""
    out = []
    for t in range(spec.n_frames):
        attrs = spec.frame_attrs(t)
        noise = (spec.attrs.noise_seed + 7919 * (t + 1)) % 2**31
        sc = Scene((attrs,) if attrs is not None else (), "", spec.attrs.background, noise)
        out.append(np.asarray(render_scene(sc, size)))
    return out


def default_codec() -> str:
    """libx264 where PyAV has it (its wheels bundle it), else MPEG-4 Part 2."""
    for codec in _CODECS:
        if codec in av.codecs_available:
            return codec
    raise RuntimeError(f"PyAV has none of the encoders {', '.join(_CODECS)}; cannot write ShapeWorld video clips")


def write_clip(path: str | Path, frames: list[np.ndarray], codec: str | None = None, fps: int = FPS) -> None:
    """Encode ``frames`` (equal-size RGB uint8 arrays) as an MP4 at ``path``; single-threaded and
    with fixed settings, so the same frames give the same bytes."""
    codec = codec or default_codec()
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = 8  # several keyframes: the samplers' seeking is exercised
        s.codec_context.thread_count = 1
        if codec == "libx264":
            # x264's macroblock-tree rate control gave different bytes (and pixels) for the same
            # frames in about one run in five at this size, even single-threaded: it is switched off.
            s.codec_context.options = {"crf": "23", "preset": "medium", "x264-params": "mbtree=0"}
        else:
            s.codec_context.options = {"qscale": "3"}
            s.codec_context.qmin = s.codec_context.qmax = 3
        for t, arr in enumerate(frames):
            f = av.VideoFrame.from_image(Image.fromarray(arr, mode="RGB"))
            f.pts = t
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def clip_name(index: int) -> str:
    return f"clip-{index:05d}.mp4"


def set_name(seed: int, n: int, n_frames: int = FRAMES, size: int = SIZE, codec: str | None = None) -> str:
    """The folder name of one clip set: everything its files depend on."""
    return f"v{VERSION}-s{int(seed)}-n{int(n)}-{int(n_frames)}f-{int(size)}px-{codec or default_codec()}"


@dataclass(frozen=True)
class ClipSet:
    """A complete, checked clip set on disk: ``paths[i]`` is clip ``i``, drawn from ``specs[i]``;
    ``digest`` hashes the manifest (every file's hash), so it changes when any clip does."""

    folder: Path
    specs: tuple[ClipSpec, ...]
    paths: tuple[Path, ...]
    digest: str
    generated: bool  # generated by this call (False: an existing set reused)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _params(seed: int, n: int, n_frames: int, size: int, codec: str) -> dict:
    return {"version": VERSION, "seed": int(seed), "n": int(n), "frames": int(n_frames), "size": int(size),
            "codec": codec, "fps": FPS}


def check_set(folder: str | Path, seed: int, n: int, n_frames: int = FRAMES, size: int = SIZE,
              codec: str | None = None) -> str | None:
    """Why the set in ``folder`` cannot be reused (a sentence naming the file), or None when its
    manifest matches the request and every clip has the size and hash it records."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{manifest}: missing (an incomplete set)"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        params, files = data["params"], data["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{manifest}: unreadable ({e})"
    want = _params(seed, n, n_frames, size, codec or default_codec())
    if params != want:
        return f"{manifest}: made for {params}, not {want}"
    if not isinstance(files, list) or len(files) != n:
        return f"{manifest}: lists {len(files) if isinstance(files, list) else 'no'} clips, expected {n}"
    for i, entry in enumerate(files):
        try:
            name, size_b, digest = entry["name"], int(entry["bytes"]), entry["sha256"]
        except (KeyError, TypeError, ValueError):
            return f"{manifest}: bad entry for clip {i}"
        path = folder / name
        if name != clip_name(i):
            return f"{manifest}: clip {i} is named {name!r}, expected {clip_name(i)!r}"
        if not path.is_file():
            return f"{path}: missing"
        if path.stat().st_size != size_b:
            return f"{path}: {path.stat().st_size} bytes, the manifest says {size_b} (truncated or replaced)"
        if _sha256(path) != digest:
            return f"{path}: content differs from the manifest's SHA-256"
    return None


def _generate(folder: Path, seed: int, n: int, n_frames: int, size: int, codec: str) -> None:
    files, gaps = [], []
    for i in range(n):
        spec = clip_spec(seed, i, n_frames)
        path = folder / clip_name(i)
        write_clip(path, render_frames(spec, size), codec)
        files.append({"name": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)})
        gaps.append({"shape": spec.shape, "empty_from": spec.gap_start, "empty_to": spec.gap_stop})
    manifest = {"params": _params(seed, n, n_frames, size, codec), "files": files, "clips": gaps}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)  # the manifest last: a set without one is incomplete


def _remove_stale(root: Path, name: str) -> None:
    now = time.time()
    for p in root.glob(f".{name}.tmp-*"):
        try:
            if now - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _load(folder: Path, seed: int, n: int, n_frames: int, generated: bool) -> ClipSet:
    specs = tuple(clip_spec(seed, i, n_frames) for i in range(n))
    digest = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()[:16]
    return ClipSet(folder, specs, tuple(folder / clip_name(i) for i in range(n)), digest, generated)


def ensure_clips(root: str | Path, seed: int, n: int, n_frames: int = FRAMES, size: int = SIZE,
                 codec: str | None = None) -> ClipSet:
    """Clips ``0..n-1`` under ``seed`` in ``root/<set_name(...)>``: the set there when it is
    complete (:func:`check_set`), else generated afresh into a temporary folder and renamed into
    place (module docstring). A partial or damaged set is removed first."""
    if n <= 0:
        raise ValueError(f"ShapeWorld video needs n > 0 clips, got n={n}")
    if size < 8 or size % 2:
        raise ValueError(f"ShapeWorld video frame size must be even and >= 8, got {size}")
    codec = codec or default_codec()
    root = Path(root)
    name = set_name(seed, n, n_frames, size, codec)
    final = root / name
    if final.is_dir() and check_set(final, seed, n, n_frames, size, codec) is None:
        return _load(final, seed, n, n_frames, generated=False)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the set gets a new folder's usual mode
    try:
        _generate(tmp, seed, n, n_frames, size, codec)
        for _ in range(2):
            if final.exists() and check_set(final, seed, n, n_frames, size, codec) is None:
                break  # another process finished the same set first: use it, drop ours
            if final.exists():
                shutil.rmtree(final)  # partial or damaged: never reused
            try:
                os.rename(tmp, final)
                break
            except OSError:
                continue  # someone renamed theirs in between: check it on the next pass
        else:
            raise OSError(f"{final}: could not put the generated clip set in place")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _load(final, seed, n, n_frames, generated=True)
