"""This checkout against an earlier one, in one run: `evalkit run --model eva-clip-demo
--tasks eva27,demo` (best-of-both, no cache) over the eva27 miniatures (evalkit.demo.miniatures:
square and non-square images) and the demo (image, retrieval, video, 3D and few-shot tasks), once
with this checkout and once with the tree of an earlier commit (``--before``, default: the last
commit before the typed seams of issue 17: views, model towers, one run spec), each in a fresh process,
interleaved, ``--repeats`` times each. Target: the new core no slower (wall ratio ≤ 1.0), and the
same metrics. Also reported: the image passes best-of-both makes, and how many of them the new
core saved by encoding a sample's identical crop and squash pixels once (``views_reused``).

``--smoke``: a few seconds' check that the benchmark still runs (2 small tasks, one run a side);
its figures mean nothing. The conditions (torch threads, which each fresh process gets too, and
the load average at the start and the end) are printed and written with the figures.

    python benchmarks/bench_core.py [--before REV] [--repeats 2] [--tasks eva27] [--smoke] [--json OUT]

The earlier tree is taken with ``git archive`` into a temporary folder and put first on
PYTHONPATH; its own task files are read from it. Needs the repository's git history.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from clocks import conditions, conditions_line

from evalkit.demo.miniatures import build_data_root
from evalkit.results import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BEFORE = "5bd19ea"  # the last commit before the typed seams (views, towers, RunSpec) landed
SMOKE_TASKS = "cifar10,pcam"  # --smoke: two small tasks, one of them square (CIFAR)


def extract(rev: str, into: Path) -> Path:
    blob = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def run(tree: Path, data: Path, out: Path, env: dict[str, str], tasks: str) -> tuple[float, dict[str, dict]]:
    cmd = [sys.executable, "-m", "evalkit", "run", "--model", "eva-clip-demo", "--tasks", *tasks.split(), "--data-root",
           str(data), "--output-dir", str(out), "--no-cache", "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out.parent, env={**env, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: evalkit run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    results = {p.stem: json.loads(p.read_text()) for p in (out / "runs" / "eva-clip-demo").glob("*.json")}
    return wall, results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=DEFAULT_BEFORE, help="the git revision to compare against")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side, interleaved; medians reported")
    ap.add_argument("--tasks", default="eva27,demo", help="tasks or groups (both trees must know them)")
    ap.add_argument("--smoke", action="store_true",
                    help=f"only {SMOKE_TASKS}, one run a side: checks that the benchmark runs; its figures mean nothing")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    if args.smoke:
        args.tasks, args.repeats = SMOKE_TASKS, 1
    start = conditions()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        counts = build_data_root(tmp / "data")
        before = extract(args.before, tmp / "before")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(HF_HUB_OFFLINE="1", EVALKIT_CACHE=str(tmp / "cache"))
        # the demo's generated clips, made once before any timed run (both trees make the same ones)
        warm = tmp / "warm" / "out"
        warm.mkdir(parents=True)
        run(REPO, tmp / "data", warm, env, "shapeworld-video --limit 1")
        walls: dict[str, list[float]] = {"before": [], "after": []}
        results: dict[str, dict[str, dict]] = {}
        for i in range(args.repeats):
            for side, tree in (("before", before), ("after", REPO)):
                out = tmp / f"{side}{i}" / "out"
                out.mkdir(parents=True)
                wall, results[side] = run(tree, tmp / "data", out, env, args.tasks)
                walls[side].append(wall)
    after, old = results["after"], results["before"]
    differ = sorted(t for t in after if t in old and after[t]["metrics"] != old[t]["metrics"])
    close = sorted(t for t in differ if all(abs(after[t]["metrics"][k] - v) < 0.005 for k, v in old[t]["metrics"].items()))
    samples = sum(r["evalkit"]["evaluated"] for r in after.values())
    passes = sum(r["evalkit"]["evaluated"] * len(r["evalkit"]["transforms_run"]) for r in after.values())
    reused = sum(r["evalkit"].get("views_reused", 0) for r in after.values())
    med = {side: statistics.median(ts) for side, ts in walls.items()}
    fig = {
        "smoke": args.smoke,
        "before": args.before,
        "task_names": args.tasks,
        "tasks": len(after),
        "samples": samples,
        "data_samples": sum(counts.values()),
        "image_passes_best_of_both": passes,
        "image_passes_saved": reused,
        "share_saved": reused / passes if passes else 0.0,
        "wall_s": walls,
        "median_wall_s": med,
        "ratio_after_before": med["after"] / med["before"],
        "tasks_with_other_metrics": differ,
        "of_which_within_half_a_point": close,
        "conditions": conditions(start),
    }
    print(f"{args.tasks}: {len(after)} tasks, {samples} samples, best-of-both: {passes} passes")
    print(f"before ({args.before}): {', '.join(f'{w:.1f}' for w in walls['before'])} s; "
          f"after: {', '.join(f'{w:.1f}' for w in walls['after'])} s; after/before {fig['ratio_after_before']:.2f}")
    print(f"identical crop/squash pixels encoded once: {reused} of {passes} image passes saved "
          f"({fig['share_saved']:.1%}); tasks whose metrics moved: {differ or 'none'} "
          f"(within 0.5 points: {close or 'none'})")
    print(conditions_line(fig["conditions"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
