"""The 27 EVA-CLIP-18B classification tasks (`eva27`) over their generated miniatures
(tests/fixtures_eva27.py: every dataset in its usual on-disk layout, a few images per class),
with the demo model, as `evalkit run --tasks eva27` runs them: best-of-both transforms (each image
decoded once, both transforms applied), batch 64, the default worker count (auto: 0 worker
processes for a model on the CPU; a background thread decodes the next batches while the model
runs), no feature cache.

Reports the total wall time, images/s and the share of time spent outside the model forward
(listing and decoding files, resizing, collating, metrics, bookkeeping): the model forward is
timed around the encoder's encode_image / encode_text calls. Target: outside-model share ≤ 15 %.
Two shares are given: of the whole run (text towers included) and of the image pipeline alone
(time in image_features minus the image forward), the stricter one.

With ``--baseline`` the same tasks run a second time, in the same process, the way a pipeline
without evalkit's data path would: one pass over the data per transform (every image decoded
twice), torchvision's Compose per image, open_clip's tokenizer, no background loading thread;
the figures then include the wall-time ratio evalkit / baseline (features and metrics are equal).

    python benchmarks/bench_eva27.py [--baseline] [--per-class 1] [--batch-size 64] [--num-workers auto] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from evalkit.results import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


class Clock:
    """Wall time and CPU time (process_time: this process, all its threads) spent inside a callable."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.calls = self.items = 0

    def wrap(self, fn, count=None):
        def timed(*a, **kw):
            w, c = time.perf_counter(), time.process_time()
            out = fn(*a, **kw)
            self.wall += time.perf_counter() - w
            self.cpu += time.process_time() - c
            self.calls += 1
            self.items += count(*a) if count else 0
            return out

        return timed


def instrument(encoder) -> tuple[Clock, Clock, Clock]:
    """Clocks around the image forward, the text forward and the whole image pipeline
    (evalkit.tasks.classification.image_features: listing, decoding, transforms, collate, forward)."""
    from evalkit.tasks import classification

    image, text, pipeline = Clock(), Clock(), Clock()
    encoder.encode_image = image.wrap(type(encoder).encode_image.__get__(encoder), lambda x: x.shape[0])
    encoder.encode_text = text.wrap(type(encoder).encode_text.__get__(encoder), lambda t: t.shape[0])
    # prompts sharing a template prefix: the prefixes once, then the rest of each prompt
    encoder.encode_text_prefixes = text.wrap(type(encoder).encode_text_prefixes.__get__(encoder))
    encoder.encode_text_suffix = text.wrap(type(encoder).encode_text_suffix.__get__(encoder),
                                           lambda prefixes, which, *rest: which.shape[0])
    classification.image_features = pipeline.wrap(classification.image_features)
    return image, text, pipeline


@contextlib.contextmanager
def naive_data_path(encoder):
    """The baseline: one pass per transform with torchvision's Compose, open_clip's own tokenizer,
    loading in line with the forward (no background thread)."""
    from torchvision import transforms as T

    from evalkit import features
    from evalkit.models.tokenize import open_clip_tokenizer
    from evalkit.tasks import classification

    def compose(mode: str):
        interp = T.InterpolationMode.BICUBIC
        size = encoder.image_size
        geometry = [T.Resize(size, interpolation=interp), T.CenterCrop(size)] if mode == "crop" else \
            [T.Resize((size, size), interpolation=interp)]
        return T.Compose([*geometry, lambda im: im.convert("RGB") if im.mode != "RGB" else im, T.ToTensor(),
                          T.Normalize(encoder.mean, encoder.std)])

    real = features.image_features

    def per_transform(enc, data, transforms, **kw):
        return {m: real(enc, data, {m: compose(m)}, **kw)[m] for m in transforms}

    saved = (classification.image_features, features.background, encoder.tokenizer, encoder.share_text_prefix)
    classification.image_features = per_transform
    features.background = lambda iterable, depth=2: iter(iterable)
    encoder.tokenizer = open_clip_tokenizer(encoder.tokenizer)
    encoder.share_text_prefix = False
    try:
        yield
    finally:
        (classification.image_features, features.background, encoder.tokenizer,
         encoder.share_text_prefix) = saved


def run_suite(specs, encoder, ctx):
    """Every task once; per-task figures, wall and CPU seconds, and the three clocks."""
    from evalkit.registry import task_families
    from evalkit.tasks import classification

    real = classification.image_features
    image, text, pipeline = instrument(encoder)
    per_task = []
    t_run, c_run = time.perf_counter(), time.process_time()
    try:
        for spec in specs:
            img0, txt0, pipe0, n0 = image.wall, text.wall, pipeline.wall, image.items
            t = time.perf_counter()
            result = task_families.get(spec.family)().run(spec, encoder, ctx)
            per_task.append({
                "task": spec.name, "wall_s": round(time.perf_counter() - t, 3), "samples": result.evalkit["samples"],
                "image_passes": image.items - n0, "image_pipeline_s": round(pipeline.wall - pipe0, 3),
                "image_forward_s": round(image.wall - img0, 3), "text_forward_s": round(text.wall - txt0, 3),
                "acc1": result.metrics["acc1"], "metrics": result.metrics,
            })
    finally:
        classification.image_features = real
        del encoder.encode_image, encoder.encode_text, encoder.encode_text_prefixes, encoder.encode_text_suffix
    return per_task, time.perf_counter() - t_run, time.process_time() - c_run, (image, text, pipeline)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="eva-clip-demo")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--tasks", default="eva27")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", default="auto",
                    help="data-loader worker processes (default auto, as evalkit: 0 for a model on the CPU)")
    ap.add_argument("--per-class", type=int, default=1, help="scale of the fixture's images per class")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's, one per core). On a machine shared with other "
                         "busy processes, 1 avoids OpenMP threads waiting on each other at every small op")
    ap.add_argument("--baseline", action="store_true",
                    help="also run the naive data path in the same process and report the ratios")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    sys.path.insert(0, str(REPO / "tests"))
    from fixtures_eva27 import build_data_root

    from evalkit import models
    from evalkit.api import resolve_tasks
    from evalkit.features import FeatureCache, default_num_workers
    from evalkit.tasks.base import RunContext

    specs = resolve_tasks(args.tasks)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        counts = build_data_root(Path(tmp) / "data", scale=args.per_class)
        fixture_s = time.perf_counter() - t
        encoder = models.load(args.model, weights=args.weights)
        num_workers = default_num_workers(encoder.device) if args.num_workers == "auto" else int(args.num_workers)
        ctx = RunContext(data_root=Path(tmp) / "data", output_dir=Path(tmp) / "out", batch_size=args.batch_size,
                         num_workers=num_workers, progress=False, cache=FeatureCache(None))
        per_task, wall, cpu, (image, text, pipeline) = run_suite(specs, encoder, ctx)
        baseline = None
        if args.baseline:
            ctx.cache = FeatureCache(None)
            with naive_data_path(encoder):
                b_tasks, b_wall, b_cpu, (b_image, b_text, b_pipe) = run_suite(specs, encoder, ctx)
            same = all(a["metrics"] == b["metrics"] for a, b in zip(per_task, b_tasks, strict=True))
            baseline = {
                "wall_s": round(b_wall, 2), "cpu_s": round(b_cpu, 2), "image_pipeline_s": round(b_pipe.wall, 2),
                "image_forward_s": round(b_image.wall, 2), "text_forward_s": round(b_text.wall, 2),
                "outside_forward_share": round((b_wall - b_image.wall - b_text.wall) / b_wall, 4),
                "image_pipeline_outside_forward_share": round((b_pipe.wall - b_image.wall) / b_pipe.wall, 4),
                "metrics_equal": same,
                "ratio_wall_evalkit_over_baseline": round(wall / b_wall, 3),
                "ratio_outside_forward_evalkit_over_baseline": round(
                    (wall - image.wall - text.wall) / (b_wall - b_image.wall - b_text.wall), 3),
            }
        for r in per_task:
            del r["metrics"]

    def share(total: float, inside: float) -> float | None:
        return round((total - inside) / total, 4) if total > 0 else None

    fig = {
        "model": args.model,
        "tasks": len(specs),
        "batch_size": args.batch_size,
        "num_workers": num_workers,
        "fixture_images": sum(counts[s.name] for s in specs),
        "fixture_build_s": round(fixture_s, 2),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "image_passes": image.items,
        "images_per_s": round(image.items / pipeline.wall, 1) if pipeline.wall else None,
        "images_per_s_overall": round(image.items / wall, 1),
        "prompts": text.items,
        "text_forward_s": round(text.wall, 2),
        "image_forward_s": round(image.wall, 2),
        "image_pipeline_s": round(pipeline.wall, 2),
        # wall-clock shares, and the same from CPU time (not inflated by other processes on a shared
        # machine; meaningful with --num-workers 0, where all the work is in this process)
        "outside_forward_share": share(wall, image.wall + text.wall),
        "image_pipeline_outside_forward_share": share(pipeline.wall, image.wall),
        "outside_forward_share_cpu": share(cpu, image.cpu + text.cpu),
        "image_pipeline_outside_forward_share_cpu": share(pipeline.cpu, image.cpu),
        "target_outside_share": 0.15,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)},
        "baseline": baseline,
        "per_task": per_task,
    }
    width = max(len(r["task"]) for r in per_task)
    for r in per_task:
        print(f"{r['task']:{width}s}  wall {r['wall_s']:7.2f}s  images {r['image_passes']:5d}  "
              f"image pipeline {r['image_pipeline_s']:6.2f}s (forward {r['image_forward_s']:6.2f}s)  "
              f"text forward {r['text_forward_s']:6.2f}s")
    print(f"\n{len(specs)} tasks, {fig['fixture_images']} fixture images, {image.items} image passes "
          f"(crop + squash), {text.items} prompts; batch {args.batch_size}, {num_workers} workers, "
          f"{torch.get_num_threads()} threads, load average {fig['machine']['load_average_1min']}")
    print(f"total wall {fig['wall_s']:.1f}s; images/s {fig['images_per_s']} in the image pipeline "
          f"({fig['images_per_s_overall']} over the whole run)")
    print(f"outside the model forward (target <= 15%): {fig['outside_forward_share']:.1%} of the run, "
          f"{fig['image_pipeline_outside_forward_share']:.1%} of the image pipeline; by CPU time "
          f"{fig['outside_forward_share_cpu']:.1%} and {fig['image_pipeline_outside_forward_share_cpu']:.1%}")
    if baseline:
        print(f"baseline (pass per transform, Compose, open_clip tokenizer, whole prompts, no loader thread): wall "
              f"{baseline['wall_s']:.1f}s, outside the forward {baseline['outside_forward_share']:.1%} of the run, "
              f"{baseline['image_pipeline_outside_forward_share']:.1%} of the image pipeline; evalkit/baseline "
              f"wall {baseline['ratio_wall_evalkit_over_baseline']}, outside-forward time "
              f"{baseline['ratio_outside_forward_evalkit_over_baseline']}; metrics equal: {baseline['metrics_equal']}")
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
