"""The 27 EVA-CLIP-18B classification tasks (`eva27`) over their generated miniatures
(tests/fixtures_eva27.py: every dataset in its usual on-disk layout, a few images per class),
with the demo model, as `evalkit run --tasks eva27` runs them: best-of-both transforms, batch 64,
the default worker count (0: decoding in the main process), no feature cache.

Reports the total wall time, images/s and the share of time spent outside the model forward
(listing and decoding files, resizing, collating, metrics, bookkeeping): the model forward is
timed around the encoder's encode_image / encode_text calls. Target: outside-model share ≤ 15 %.
Two shares are given: of the whole run (text towers included) and of the image pipeline alone
(time in image_features minus the image forward), the stricter one.

    python benchmarks/bench_eva27.py [--per-class 1] [--batch-size 64] [--num-workers 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


class ForwardTimer:
    """Wraps an Encoder's encode_image / encode_text to add up the time spent inside them."""

    def __init__(self, encoder) -> None:
        self.image_s = self.text_s = 0.0
        self.images = self.prompts = 0
        image, text = encoder.encode_image, encoder.encode_text

        def timed_image(x):
            t = time.perf_counter()
            out = image(x)
            self.image_s += time.perf_counter() - t
            self.images += x.shape[0]
            return out

        def timed_text(tokens):
            t = time.perf_counter()
            out = text(tokens)
            self.text_s += time.perf_counter() - t
            self.prompts += tokens.shape[0]
            return out

        encoder.encode_image, encoder.encode_text = timed_image, timed_text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="eva-clip-demo")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--random-demo", action="store_true",
                    help="the demo architecture with random weights (the same cost, without the committed weights)")
    ap.add_argument("--tasks", default="eva27")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=0, help="data-loader workers (evalkit's default: 0)")
    ap.add_argument("--per-class", type=int, default=1, help="scale of the fixture's images per class")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    sys.path.insert(0, str(REPO / "tests"))
    from fixtures_eva27 import build_data_root

    from evalkit import models
    from evalkit.api import resolve_tasks
    from evalkit.features import FeatureCache
    from evalkit.registry import task_families
    from evalkit.tasks.base import RunContext

    specs = resolve_tasks(args.tasks)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        counts = build_data_root(Path(tmp) / "data", scale=args.per_class)
        fixture_s = time.perf_counter() - t
        if args.random_demo:
            from evalkit.demo.train import DEMO_CONFIG
            from evalkit.models.zoo import ModelCard

            card = ModelCard("eva-clip-demo", "eva_clip", "demo architecture, random weights", config=DEMO_CONFIG)
            encoder = models.build_eva_clip(card, "random", "fp32", "cpu")
        else:
            encoder = models.load(args.model, weights=args.weights)
        timer = ForwardTimer(encoder)
        ctx = RunContext(data_root=Path(tmp) / "data", output_dir=Path(tmp) / "out", batch_size=args.batch_size,
                         num_workers=args.num_workers, progress=False, cache=FeatureCache(None))
        per_task = []
        t_run = time.perf_counter()
        for spec in specs:
            img0, txt0, n0 = timer.image_s, timer.text_s, timer.images
            t = time.perf_counter()
            result = task_families.get(spec.family)().run(spec, encoder, ctx)
            wall = time.perf_counter() - t
            ev = result.evalkit
            per_task.append({
                "task": spec.name, "wall_s": round(wall, 3), "samples": ev["samples"],
                "image_passes": timer.images - n0, "image_pipeline_s": round(ev["image_seconds"], 3),
                "image_forward_s": round(timer.image_s - img0, 3), "text_forward_s": round(timer.text_s - txt0, 3),
                "acc1": result.metrics["acc1"],
            })
        wall = time.perf_counter() - t_run

    image_pipeline = sum(r["image_pipeline_s"] for r in per_task)
    forward = timer.image_s + timer.text_s
    fig = {
        "model": args.model,
        "tasks": len(specs),
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "fixture_images": sum(counts[s.name] for s in specs),
        "fixture_build_s": round(fixture_s, 2),
        "wall_s": round(wall, 2),
        "image_passes": timer.images,
        "images_per_s": round(timer.images / image_pipeline, 1) if image_pipeline else None,
        "images_per_s_overall": round(timer.images / wall, 1),
        "prompts": timer.prompts,
        "text_forward_s": round(timer.text_s, 2),
        "image_forward_s": round(timer.image_s, 2),
        "image_pipeline_s": round(image_pipeline, 2),
        "outside_forward_share": round((wall - forward) / wall, 4),
        "image_pipeline_outside_forward_share": round((image_pipeline - timer.image_s) / image_pipeline, 4)
        if image_pipeline else None,
        "target_outside_share": 0.15,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine()},
        "per_task": per_task,
    }
    width = max(len(r["task"]) for r in per_task)
    for r in per_task:
        print(f"{r['task']:{width}s}  wall {r['wall_s']:7.2f}s  images {r['image_passes']:5d}  "
              f"image pipeline {r['image_pipeline_s']:6.2f}s (forward {r['image_forward_s']:6.2f}s)  "
              f"text forward {r['text_forward_s']:6.2f}s")
    print(f"\n{len(specs)} tasks, {fig['fixture_images']} fixture images, {timer.images} image passes "
          f"(crop + squash), {timer.prompts} prompts; batch {args.batch_size}, {args.num_workers} workers")
    print(f"total wall {fig['wall_s']:.1f}s; images/s {fig['images_per_s']} in the image pipeline "
          f"({fig['images_per_s_overall']} over the whole run)")
    print(f"outside the model forward: {fig['outside_forward_share']:.1%} of the run, "
          f"{fig['image_pipeline_outside_forward_share']:.1%} of the image pipeline (target ≤ 15%)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
