"""The embedded default, timed as a user meets it: `evalkit run --model eva-clip-demo --tasks demo`
in a fresh process with no cache (imports, shard loading, generation, encoding, results).

Baseline measured in the same run: a data-only pass over the same tasks, in this process, through
the same public path the run takes (each task's ``prepare``, its views: image transforms, video
frames, depth views of point clouds; :func:`evalkit.tasks.common.embed_view`: decoding,
per-sample steps, collate, normalise), with the encoder's image forward replaced by zeros, so
the figure also says how much of the run is the model (and the imports, and the text side).
Target: the whole command under 180 s on a 2-core CPU.

``--smoke``: a few seconds' check that the benchmark still runs (every demo task, first 16 samples
each, few-shot at K=1 with one seed); its figures mean nothing. The conditions (torch threads,
load average) are printed and written with the figures.

    python benchmarks/bench_demo.py [--tasks demo] [--smoke] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clocks import TimedEncoder, conditions, conditions_line

from evalkit.results import atomic_write_text

SMOKE_LIMIT = 16


class NoForward(TimedEncoder):
    """An encoder whose image forward returns zeros: an image pass through it is the data path
    alone (its time is counted in ``image``, as the calls it stood in for)."""

    def encode_image(self, images):
        with self.image.measure(int(images.shape[0])):
            return images.new_zeros(images.shape[0], self.encoder.embed_dim)


def data_only_pass(tasks: str, limit: int | None) -> tuple[float, int]:
    """Wall seconds and samples of every task's image pass(es) without the model (module
    docstring); a few-shot task's train split too. Samples two tasks share (shapeworld-shape and
    shapeworld-colour view the same images) go through once, as in the run."""
    from evalkit import models
    from evalkit.api import resolve_tasks
    from evalkit.features.embed import FeatureCache
    from evalkit.registry import task_families
    from evalkit.tasks.base import RunContext
    from evalkit.tasks.common import embed_view, run_view

    encoder = NoForward(models.load("eva-clip-demo"))
    ctx = RunContext(limit=limit, progress=False, cache=FeatureCache(None))
    n = 0
    t0 = time.perf_counter()
    for spec in resolve_tasks(tasks):
        family = task_families.get(spec.family)()
        prepared = family.prepare(spec, None)
        view = run_view(spec, family, encoder, ctx)
        for data in (getattr(prepared, "train", None), prepared.data):
            if data is not None:
                n += embed_view(spec, encoder, ctx, data, view)[view.modes[0]].computed
    return time.perf_counter() - t0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="demo", help="tasks or groups to run (default: the demo group)")
    ap.add_argument("--smoke", action="store_true",
                    help=f"first {SMOKE_LIMIT} samples of each task, few-shot K=1 and one seed: checks that "
                         "the benchmark runs; its figures mean nothing")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    start = conditions()
    limit = SMOKE_LIMIT if args.smoke else None
    extra = ["--limit", str(limit), "--shots", "1", "--seeds", "1"] if args.smoke else []
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "evalkit", "run", "--model", "eva-clip-demo", "--tasks", args.tasks,
             "--output-dir", out, "--no-cache", "--quiet", *extra],
            capture_output=True, text=True,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        results = {p.stem: json.loads(p.read_text()) for p in Path(out, "runs", "eva-clip-demo").rglob("*.json")}
    if not results:
        print(f"bench_demo: the run wrote no results under {out}", file=sys.stderr)
        return 1
    data_s, n = data_only_pass(args.tasks, limit)
    images = sum(r["evalkit"]["samples"] + r["evalkit"].get("train_samples", 0) for r in results.values())
    fig = {
        "smoke": args.smoke,
        "tasks": sorted(results),
        "limit": limit,
        "command_wall_s": wall,
        "budget_s": 180,
        "ratio_to_budget": wall / 180,
        "images": images,
        "images_per_s_end_to_end": images / wall,
        "data_only_s": data_s,
        "data_only_images": n,
        "ratio_command_to_data_only": wall / data_s,
        "task_wall_s": {k: v["evalkit"]["wall_time_s"] for k, v in sorted(results.items())},
        "metrics": {k: v["metrics"] for k, v in sorted(results.items())},
        "conditions": conditions(start),
    }
    print(f"evalkit run --model eva-clip-demo --tasks {args.tasks}{' ' + ' '.join(extra) if extra else ''}: "
          f"{wall:.1f}s for {len(results)} tasks, {images} samples ({images / wall:.0f}/s end to end; "
          f"{wall / 180:.2f} of the 3-minute budget); data-only pass {data_s:.1f}s over {n} samples "
          f"(command/data-only {wall / data_s:.2f})")
    print("  " + ", ".join(f"{k} {v:.1f}s" for k, v in fig["task_wall_s"].items()))
    print(conditions_line(fig["conditions"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
