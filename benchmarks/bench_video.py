"""Video frame sampling: evalkit's seeking reader against decoding the whole clip with PyAV.

Clips of 10 s at 25 fps (250 frames, 224x224, moving noise-and-gradient content so the encoder
does real work) are generated with PyAV in tmp, one per (codec, keyframe interval): h264
(libx264) and mpeg4, with a keyframe every 25, 50 and 250 frames (1 s, 2 s, one GOP per clip).
For each clip, in one run:

  full/<s>:   ``container.decode(video=0)`` over every frame, converting to RGB only the frames
              sampler <s> keeps (vissl's loop, which decodes the whole clip); the baseline;
  full+rgb:   the same, converting every frame (decode the clip into images, then pick);
  middle:     ``evalkit.data.video.sample_frames(path, "middle")`` (1 frame, index 126);
  uniform-8:  ``sample_frames(path, "uniform-8")``.

Wall time per clip is the best of ``--repeat`` runs (files warm in the page cache); frames/s is
frames *returned* per second; "decoded" is the frames the decoder produced (counted through
``evalkit.data.video.DecodeStats``). Target: middle >= 3x faster than the full decode.

    python benchmarks/bench_video.py [--json OUT] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from evalkit.data import video
from evalkit.results import atomic_write_text

SECONDS, FPS, SIZE = 10, 25, 224


def make_clip(path: Path, codec: str, gop: int) -> Path:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, SIZE, dtype=np.float32)[None, :, None]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=FPS)
        s.width = s.height = SIZE
        s.pix_fmt = "yuv420p"
        s.codec_context.gop_size = gop
        if codec == "libx264":
            s.options = {"keyint": str(gop), "min-keyint": str(gop), "scenecut": "0"}
        for i in range(SECONDS * FPS):
            a = (np.roll(base, 3 * i, axis=1).astype(np.float32) * 0.5 + np.roll(ramp, 2 * i, axis=1) * 0.5)
            f = av.VideoFrame.from_ndarray(a.astype(np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def full_decode(path: Path, keep: frozenset[int] = frozenset()) -> int:
    """Decode every frame; convert to RGB only those in ``keep`` (vissl's loop keeps one)."""
    n = 0
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            if n in keep:
                frame.to_image()
            n += 1
    return n


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for codec, ext in (("libx264", "mp4"), ("mpeg4", "mp4")):
            if codec not in av.codecs_available:
                continue
            for gop in (25, 50, 250):
                path = make_clip(Path(tmp) / f"{codec}-g{gop}.{ext}", codec, gop)
                n_all = SECONDS * FPS
                row = {"codec": codec, "gop": gop, "frames": n_all, "bytes": path.stat().st_size}
                for sampler in ("middle", "uniform-8"):
                    keep = frozenset(video.frame_indices(n_all, sampler))
                    t_full, n_full = best_of(lambda p=path, k=keep: full_decode(p, k), args.repeat)
                    assert n_full == n_all, (path, n_full)
                    row[f"full/{sampler}"] = {"wall_s": t_full, "frames_per_s": len(keep) / t_full,
                                              "decoded": n_full}
                    stats = video.DecodeStats()  # frames decoded, counted by the reader itself
                    frames = video.sample_frames(path, sampler, stats=stats)
                    n_dec = stats.frames
                    t, _ = best_of(lambda p=path, s=sampler: video.sample_frames(p, s), args.repeat)
                    row[sampler] = {"wall_s": t, "frames_per_s": len(frames) / t, "decoded": n_dec,
                                    "speedup_vs_full": t_full / t}
                t_rgb, _ = best_of(lambda p=path, k=frozenset(range(n_all)): full_decode(p, k), args.repeat)
                row["full+rgb"] = {"wall_s": t_rgb, "frames_per_s": n_all / t_rgb, "decoded": n_all}
                rows.append(row)

    print(f"{SECONDS} s clips at {FPS} fps, {SIZE}x{SIZE}; best of {args.repeat}; "
          "wall ms per clip (frames returned/s, frames decoded)")
    print("speed-ups are against full/<sampler>: decode all 250 frames, convert to RGB only the "
          "sampler's frames (vissl's loop); full+rgb converts all 250")
    heads = ("full+rgb", "full/middle", "middle", "full/uniform-8", "uniform-8")
    print(f"{'codec':8} {'gop':>4} " + " ".join(f"{h:>28}" for h in heads))
    for r in rows:
        cells = [f"{r['full+rgb']['wall_s'] * 1e3:7.1f} ({r['full+rgb']['frames_per_s']:5.0f}/s, 250)"]
        for s in ("middle", "uniform-8"):
            f = r[f"full/{s}"]
            cells.append(f"{f['wall_s'] * 1e3:7.1f} ({f['frames_per_s']:5.0f}/s, {f['decoded']:3})")
            x = r[s]
            cells.append(f"{x['wall_s'] * 1e3:6.1f} ({x['frames_per_s']:5.0f}/s, {x['decoded']:3}) "
                         f"{x['speedup_vs_full']:4.1f}x")
        print(f"{r['codec']:8} {r['gop']:>4} " + " ".join(f"{c:>28}" for c in cells))
    ok = all(r["middle"]["speedup_vs_full"] >= 3 for r in rows if r["gop"] <= 50)
    print(f"target middle >= 3x full decode (keyframe every <= 2 s): {'met' if ok else 'NOT met'}")
    out = {"benchmark": "video", "seconds": SECONDS, "fps": FPS, "size": SIZE, "repeat": args.repeat,
           "pyav": av.__version__, "python": platform.python_version(), "machine": platform.machine(),
           "rows": rows, "target_met": ok}
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
