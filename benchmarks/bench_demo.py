"""The embedded default, timed as a user meets it: `evalkit run --model eva-clip-demo --tasks demo`
in a fresh process with no cache (imports, shard loading, generation, encoding, results).

Baseline measured in the same run: a data-only pass over the same 2,000 generated images
(render + transform, no model), so the figure also says how much of the run is the model.
Target: the whole command under 180 s on a 2-core CPU.

    python benchmarks/bench_demo.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evalkit.results import atomic_write_text


def data_only_pass() -> tuple[float, int]:
    from evalkit.data.sources import load_source
    from evalkit.models.zoo import OPENAI_MEAN, OPENAI_STD
    from evalkit.tasks.spec import TaskIndex
    from evalkit.transforms import build_transform

    specs = TaskIndex.load().resolve(["demo"])
    transform = build_transform("crop", 64, OPENAI_MEAN, OPENAI_STD)
    n = 0
    t0 = time.perf_counter()
    for spec in specs:
        for unit in load_source(spec.source, None, spec.name).units:
            for _key, load, _label in unit.samples():
                transform(load())
                n += 1
    return time.perf_counter() - t0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "evalkit", "run", "--model", "eva-clip-demo", "--tasks", "demo",
             "--output-dir", out, "--no-cache", "--quiet"],
            capture_output=True, text=True,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        results = {p.stem: json.loads(p.read_text()) for p in Path(out, "runs", "eva-clip-demo").glob("*.json")}
    data_s, n = data_only_pass()
    images = sum(r["evalkit"]["samples"] for r in results.values())
    fig = {
        "command_wall_s": wall,
        "budget_s": 180,
        "ratio_to_budget": wall / 180,
        "images": images,
        "images_per_s_end_to_end": images / wall,
        "data_only_s": data_s,
        "data_only_images": n,
        "ratio_command_to_data_only": wall / data_s,
        "acc1": {k: v["metrics"]["acc1"] for k, v in results.items() if "acc1" in v["metrics"]},
    }
    print(f"evalkit run --model eva-clip-demo --tasks demo: {wall:.1f}s for {images} images "
          f"({images / wall:.0f} img/s end to end; {wall / 180:.2f} of the 3-minute budget); "
          f"data-only pass {data_s:.1f}s (command/data-only {wall / data_s:.2f})")
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
