"""Distributed overhead (issue 12, benchmark c): the same evaluation in 2 processes on the gloo
backend (``python -m torch.distributed.run --standalone --nproc-per-node 2 -m evalkit run``, one
thread each) against 1 process with 2 threads: equal total threads, so what the second layout
costs beyond the first is what running as a job costs (the lockstep, gathering the features as
Python objects through gloo, rank 0 joining them) and what it saves (two forwards that do not
share one process's threads). Target: overhead ≤ 10 %.

An open_clip model (default ViT-S-32, random weights, fp32, CPU) on generated data (the demo's
ShapeWorld images, ``shapeworld-shape``: 1,000 images in units of 512 and 488, one a rank, or the
first ``--limit``), no cache (every image is encoded in each run), each layout ``--repeats``
times in fresh processes, interleaved. Reported per layout: the whole command's wall time
(imports, model load, launcher included) and the task's own time from its result (``wall_time_s``:
the image pass with its gather, the classifier, the metrics); the overhead is the median task
time of 2 processes over 1's, minus 1. The metrics of the two layouts must be equal.

``--smoke``: a few seconds' check that the benchmark still runs (16 images, one run a layout); its
figures mean nothing. The conditions (the threads of each layout, the load average at the start
and the end) are printed and written with the figures.

    python benchmarks/bench_distributed.py [--limit 1000] [--arch ViT-S-32] [--repeats 2] [--smoke] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clocks import conditions, conditions_line

from evalkit.results import atomic_write_text

THREADS = {"1 process": 2, "2 processes": 1}  # torch threads a process: 2 in all, either way


def run(layout: str, args: argparse.Namespace, work: Path) -> tuple[float, dict]:
    out = work / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_", "MASTER_"))}
    env.update(HF_HUB_OFFLINE="1", EVALKIT_CACHE=str(work / "cache"),
               OMP_NUM_THREADS=str(THREADS[layout]))
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"] if layout == "2 processes" else []
    cmd = [sys.executable, *launcher, "-m", "evalkit", "run", "--model", f"open_clip:{args.arch}", "--weights",
           "random", "--tasks", "shapeworld-shape", "--limit", str(args.limit), "--no-cache", "--quiet",
           "--output-dir", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{layout}: evalkit run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (result,) = list((out / "runs").rglob("shapeworld-shape.json"))
    return wall, json.loads(result.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=1000, help="images (the task has 1,000, in units of 512: one unit a rank)")
    ap.add_argument("--arch", default="ViT-S-32", help="open_clip architecture (random weights)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each layout, interleaved; medians reported")
    ap.add_argument("--smoke", action="store_true",
                    help="16 images, one run a layout: checks that the benchmark runs; its figures mean nothing")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    if args.smoke:
        args.limit, args.repeats = 16, 1
    start = conditions()
    layouts = ("1 process", "2 processes")
    walls: dict[str, list[float]] = {k: [] for k in layouts}
    task_s: dict[str, list[float]] = {k: [] for k in layouts}
    image_s: dict[str, list[float]] = {k: [] for k in layouts}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for layout in layouts:
                work = Path(tmp) / f"{layout.replace(' ', '-')}-{i}"
                work.mkdir()
                wall, results[layout] = run(layout, args, work)
                walls[layout].append(wall)
                task_s[layout].append(results[layout]["evalkit"]["wall_time_s"])
                image_s[layout].append(results[layout]["evalkit"]["image_seconds"])
                print(f"{layout}: {wall:.1f} s whole, {task_s[layout][-1]:.1f} s task "
                      f"({image_s[layout][-1]:.1f} s image pass)", flush=True)
    one, two = results["1 process"], results["2 processes"]
    if one["metrics"] != two["metrics"]:
        raise SystemExit(f"the metrics differ: 1 process {one['metrics']}, 2 processes {two['metrics']}")
    med = {k: {"whole_s": statistics.median(walls[k]), "task_s": statistics.median(task_s[k]),
               "image_s": statistics.median(image_s[k])} for k in layouts}
    fig = {
        "smoke": args.smoke,
        "arch": args.arch,
        "threads_per_process": THREADS,
        "images": args.limit,
        "samples_per_rank": two["evalkit"]["samples_per_rank"],
        "wall_s": walls,
        "task_s": task_s,
        "image_s": image_s,
        "median": med,
        "overhead_task": med["2 processes"]["task_s"] / med["1 process"]["task_s"] - 1,
        "overhead_image_pass": med["2 processes"]["image_s"] / med["1 process"]["image_s"] - 1,
        "overhead_whole": med["2 processes"]["whole_s"] / med["1 process"]["whole_s"] - 1,
        "metrics_equal": True,
        "conditions": conditions(start),
    }
    print(f"open_clip {args.arch}, {args.limit} ShapeWorld images, no cache; samples per rank "
          f"{fig['samples_per_rank']}; metrics equal")
    for k in layouts:
        print(f"  {k}: whole {med[k]['whole_s']:.1f} s, task {med[k]['task_s']:.1f} s, "
              f"image pass {med[k]['image_s']:.1f} s (medians of {args.repeats})")
    print(f"overhead of 2 processes (1 thread each) over 1 (2 threads): task {fig['overhead_task']:+.1%}, "
          f"image pass {fig['overhead_image_pass']:+.1%}, whole command {fig['overhead_whole']:+.1%} "
          f"(target: task ≤ +10 %)")
    print(conditions_line(fig["conditions"]) + " (this process; the layouts' threads: "
          + ", ".join(f"{k} {v} each" for k, v in THREADS.items()) + ")")
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
