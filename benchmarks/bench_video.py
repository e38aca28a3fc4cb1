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

Second figure (``task``): where a video task's wall time goes, with the demo model. A
``videofolder:`` task over ``--task-clips`` such clips (h264, a keyframe every second, but 320x240,
UCF-101's frame size, so that crop and squash differ; spread over 4 classes) runs as
``evalkit run`` runs it (the classification family's ``run``: data found, clips decoded and
transformed, image and text towers, metrics, result), with ``middle`` and ``uniform-8``, under
``crop`` (the ``videofolder:`` default) and ``best-of-both`` (Table 5's; one decode, two
transforms), no feature cache, the default loader (on the CPU a background thread decodes the next
batch during the forward). The towers' forward calls are clocked through
``clocks.TimedEncoder`` (the encoder the task is given); "outside" is the wall time less
both forwards: listing, seeking and decoding, the transforms, collating, tokenizing the prompts,
metrics, writing the result. A forward slowed by the loader thread counts as forward, so the share
outside is, if anything, understated. For scale, "decode alone" is ``sample_frames`` over the
same clips, one after another, best of ``--task-repeat``. Each setting runs ``--task-repeat``
times after one warm-up run; the run with the median wall time is reported.

``--smoke``: a few seconds' check that the benchmark still runs (clips of 2 s, 1 thread, h264 with a
keyframe every second only, 4 task clips, one run of each); its figures mean nothing. The
conditions (torch threads, load average at the start and the end) are printed and written with
the figures.

    python benchmarks/bench_video.py [--json OUT] [--repeat 5] [--task-clips 16] [--task-repeat 3]
                                     [--parts decode,task] [--threads N] [--clip-seconds 10] [--smoke]
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
from clocks import best_of, conditions, conditions_line

from evalkit.data import video
from evalkit.results import atomic_write_text

SECONDS, FPS, SIZE = 10, 25, 224
TASK_FRAME = (320, 240)  # the task figure's clips: UCF-101's frame size (not square: crop and squash differ)
SMOKE = {"clip_seconds": 2, "repeat": 1, "task_clips": 4, "task_repeat": 1, "threads": 1}


def make_clip(path: Path, codec: str, gop: int, width: int = SIZE, height: int = SIZE, seed: int = 0,
              seconds: int = SECONDS) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=FPS)
        s.width, s.height = width, height
        s.pix_fmt = "yuv420p"
        s.codec_context.gop_size = gop
        if codec == "libx264":
            s.options = {"keyint": str(gop), "min-keyint": str(gop), "scenecut": "0"}
        for i in range(seconds * FPS):
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


def run_task(folder: Path, out: Path, encoder, sampler: str, transform: str) -> dict:
    """One ``videofolder:`` task run as ``evalkit run`` runs it, its forwards clocked."""
    from clocks import TimedEncoder

    from evalkit.api import resolve_tasks
    from evalkit.features.embed import FeatureCache, default_num_workers
    from evalkit.registry import task_families
    from evalkit.tasks.base import RunContext

    [spec] = resolve_tasks(f"videofolder:{folder}")
    ctx = RunContext(output_dir=out, num_workers=default_num_workers(encoder.device), progress=False,
                     cache=FeatureCache(None), transform=transform, frames=sampler)
    timed = TimedEncoder(encoder)
    t, c = time.perf_counter(), time.process_time()
    result = task_families.get(spec.family)().run(spec, timed, ctx)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    forward = timed.image.wall + timed.text.wall
    return {"wall_s": wall, "cpu_s": cpu, "image_forward_s": timed.image.wall, "text_forward_s": timed.text.wall,
            "outside_forward_s": wall - forward, "outside_share": (wall - forward) / wall,
            "image_pipeline_s": result.evalkit["image_seconds"], "images_encoded": timed.image.items,
            "prompts_encoded": timed.text.items, "clips": result.evalkit["evaluated"],
            "skipped": result.evalkit["skipped"], "frames": result.evalkit["frames"]}


def task_share(args: argparse.Namespace) -> dict:
    """The ``task`` figure (module docstring): per (sampler, transform) the median-wall run."""
    import torch

    from evalkit import models
    encoder = models.load("eva-clip-demo")
    classes = ("archery", "bowling", "juggling", "surfing")
    out: dict = {"model": "eva-clip-demo", "clips": args.task_clips, "clip_seconds": args.clip_seconds, "classes": len(classes), "codec": "libx264",
                 "frame_size": list(TASK_FRAME), "gop": FPS, "device": encoder.device,
                 "torch_threads": torch.get_num_threads(), "settings": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        paths = []
        for i in range(args.task_clips):
            d = folder / classes[i % len(classes)]
            d.mkdir(parents=True, exist_ok=True)
            paths.append(make_clip(d / f"{i:03d}.mp4", "libx264", FPS, *TASK_FRAME, seed=i, seconds=args.clip_seconds))
        run_task(folder, Path(tmp) / "out", encoder, "middle", "crop")  # warm-up: first calls into torch
        for sampler in ("middle", "uniform-8"):
            t_dec, _ = best_of(lambda s=sampler: [video.sample_frames(p, s) for p in paths], args.task_repeat)
            for transform in ("crop", "best-of-both"):
                runs = [run_task(folder, Path(tmp) / "out", encoder, sampler, transform)
                        for _ in range(args.task_repeat)]
                med = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
                assert med["clips"] == args.task_clips and med["skipped"] == 0, med
                out["settings"].append({"sampler": sampler, "transform": transform, **med,
                                        "decode_alone_s": t_dec, "wall_s_all": [r["wall_s"] for r in runs]})
    return out


def print_task_share(fig: dict) -> None:
    print(f"\nvideo task wall time, {fig['model']} on {fig['device']} ({fig['torch_threads']} torch threads): "
          f"videofolder of {fig['clips']} clips, {fig['classes']} classes, {fig['clip_seconds']} s at {FPS} fps, "
          f"{fig['frame_size'][0]}x{fig['frame_size'][1]} {fig['codec']} (keyframe every {fig['gop']}); "
          "median of the runs")
    print(f"{'sampler':10} {'transform':13} {'wall s':>7} {'image fwd':>9} {'text fwd':>8} {'outside':>8} "
          f"{'share outside':>13} {'pipeline s':>10} {'decode alone':>12} {'images':>6}")
    for r in fig["settings"]:
        print(f"{r['sampler']:10} {r['transform']:13} {r['wall_s']:7.2f} {r['image_forward_s']:9.3f} "
              f"{r['text_forward_s']:8.3f} {r['outside_forward_s']:8.2f} {r['outside_share']:13.1%} "
              f"{r['image_pipeline_s']:10.2f} {r['decode_alone_s']:12.2f} {r['images_encoded']:6}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--parts", default="decode,task", help="figures to measure: decode (the reader against a "
                    "full decode), task (a video task's time outside the model forward)")
    ap.add_argument("--task-clips", type=int, default=16, help="clips in the task figure's videofolder")
    ap.add_argument("--task-repeat", type=int, default=3, help="runs of each task setting (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--clip-seconds", type=int, default=SECONDS, help="length of the generated clips")
    ap.add_argument("--smoke", action="store_true",
                    help=f"{SMOKE}, h264 with a keyframe every second only: checks that the benchmark runs; "
                         "its figures mean nothing")
    args = ap.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"decode", "task"}:
        ap.error(f"--parts: unknown {sorted(parts - {'decode', 'task'})}; choose from decode, task")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    start = conditions()
    out = {"benchmark": "video", "smoke": args.smoke, "seconds": args.clip_seconds, "fps": FPS, "size": SIZE, "repeat": args.repeat,
           "pyav": av.__version__, "python": platform.python_version(), "machine": platform.machine()}
    if "decode" in parts:
        out.update(decode_figures(args))
    if "task" in parts:
        out["task"] = task_share(args)
        print_task_share(out["task"])
    out["conditions"] = conditions(start)
    print(conditions_line(out["conditions"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
    return out


def decode_figures(args: argparse.Namespace) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for codec, ext in (("libx264", "mp4"),) if args.smoke else (("libx264", "mp4"), ("mpeg4", "mp4")):
            if codec not in av.codecs_available:
                continue
            for gop in (FPS,) if args.smoke else (FPS, 2 * FPS, args.clip_seconds * FPS):  # 1 s, 2 s, one GOP
                path = make_clip(Path(tmp) / f"{codec}-g{gop}.{ext}", codec, gop, seconds=args.clip_seconds)
                n_all = args.clip_seconds * FPS
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

    n_all = args.clip_seconds * FPS
    print(f"{args.clip_seconds} s clips at {FPS} fps, {SIZE}x{SIZE}; best of {args.repeat}; "
          "wall ms per clip (frames returned/s, frames decoded)")
    print(f"speed-ups are against full/<sampler>: decode all {n_all} frames, convert to RGB only the "
          f"sampler's frames (vissl's loop); full+rgb converts all {n_all}")
    heads = ("full+rgb", "full/middle", "middle", "full/uniform-8", "uniform-8")
    print(f"{'codec':8} {'gop':>4} " + " ".join(f"{h:>28}" for h in heads))
    for r in rows:
        cells = [f"{r['full+rgb']['wall_s'] * 1e3:7.1f} ({r['full+rgb']['frames_per_s']:5.0f}/s, {n_all})"]
        for s in ("middle", "uniform-8"):
            f = r[f"full/{s}"]
            cells.append(f"{f['wall_s'] * 1e3:7.1f} ({f['frames_per_s']:5.0f}/s, {f['decoded']:3})")
            x = r[s]
            cells.append(f"{x['wall_s'] * 1e3:6.1f} ({x['frames_per_s']:5.0f}/s, {x['decoded']:3}) "
                         f"{x['speedup_vs_full']:4.1f}x")
        print(f"{r['codec']:8} {r['gop']:>4} " + " ".join(f"{c:>28}" for c in cells))
    ok = all(r["middle"]["speedup_vs_full"] >= 3 for r in rows if r["gop"] <= 50)
    print(f"target middle >= 3x full decode (keyframe every <= 2 s): {'met' if ok else 'NOT met'}")
    return {"rows": rows, "target_met": ok}


if __name__ == "__main__":
    main()
