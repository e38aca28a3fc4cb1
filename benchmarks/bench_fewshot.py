"""Few-shot linear probes over every K and seed against one feature pass (issue 11, item 3).

The demo model (eva-clip-demo) on the built-in task ``shapeworld-shape-fewshot`` (600 generated
train-split images, 1,000 test images, 6 classes): K ∈ {1, 2, 4, 8, 16} × 3 seeds, each with
clip_benchmark's weight-decay sweep on a validation part of the train split. Figures:

  feature pass   wall time of the image pass over both splits (decode, transform, model), the
                 one pass the family makes; measured around the encoder's forward calls too
  probe          wall time of everything after it: all K × seeds × sweep trainings and scoring
  rerun          the whole task again in the same process: features from the cache, so the
                 probe alone (and the encoder is not called)

and the number of probe trainings, against the number clip_benchmark's ``find_peak`` makes for
the same sweep (it retrains the peak every round; the family scores each weight decay once).

``--smoke``: a few seconds' check that the benchmark still runs (the first 48 samples of each split,
K=1, one seed); its figures mean nothing. The conditions (torch threads, load average at the start
and the end) are printed and written with the figures.

    python benchmarks/bench_fewshot.py [--task shapeworld-shape-fewshot] [--shots 1,2,4,8,16]
                                       [--seeds 3] [--limit N] [--threads 1] [--smoke] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="shapeworld-shape-fewshot")
    ap.add_argument("--model", default="eva-clip-demo")
    ap.add_argument("--shots", default=None, help="K values, comma-separated (default: the task's)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0 … N-1 (default: the task's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=64, help="the feature pass's batch size")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: steady figures on a shared machine, where 2 threads wait on each other)")
    ap.add_argument("--limit", type=int, default=None, help="the first N samples of each split")
    ap.add_argument("--smoke", action="store_true",
                    help="48 samples a split, K=1, one seed: checks that the benchmark runs; its figures mean nothing")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    if args.smoke:
        args.limit, args.shots, args.seeds = 48, "1", 1
    torch.set_num_threads(args.threads)

    from clocks import TimedEncoder, conditions, conditions_line

    from evalkit import models
    from evalkit.features.embed import FeatureCache
    from evalkit.registry import task_families
    from evalkit.results import atomic_write_text
    from evalkit.tasks import load_builtin_families
    from evalkit.tasks.base import RunContext
    from evalkit.tasks.spec import TaskIndex

    start = conditions()

    load_builtin_families()
    spec = TaskIndex.load().resolve([args.task])[0]
    family = task_families.get(spec.family)()
    prepared = family.prepare(spec, None)
    encoder = TimedEncoder(models.load(args.model, device=args.device))
    ctx = RunContext(batch_size=args.batch_size, cache=FeatureCache(None), progress=False, limit=args.limit,
                     shots=[int(k) for k in args.shots.split(",")] if args.shots else None, seeds=args.seeds)
    t0 = time.perf_counter()
    first = family.run(spec, encoder, ctx, prepared=prepared)
    first_s = time.perf_counter() - t0
    forward = encoder.image.copy()
    t0 = time.perf_counter()
    again = family.run(spec, encoder, ctx, prepared=prepared)
    rerun_s = time.perf_counter() - t0
    if again.metrics != first.metrics:
        raise SystemExit("bench_fewshot: the rerun gave other metrics")
    if (encoder.image - forward).calls:
        raise SystemExit("bench_fewshot: the rerun called the image encoder (features not cached)")

    ev = first.evalkit
    feature_s = ev["image_seconds"] + ev["train_image_seconds"]
    runs = [r for rs in ev["runs"].values() for r in rs]
    trainings = sum(r["sweep_points"] + 1 for r in runs)
    # find_peak: the initial points, then 3 per refinement round (spans 8, 4, 2, 1), plus the final
    fp = ev["fewshot"]
    rounds = max(fp["wd_refine_span"], 0).bit_length()
    cb_trainings = len(runs) * (fp["wd_init_points"] + 3 * rounds + 1) if fp["val_fraction"] else len(runs)
    fig = {
        "smoke": args.smoke, "limit": args.limit, "device": args.device, "probe_device": fp["probe_device"], "task": spec.name, "model": args.model,
        "train_images": ev["train_samples"], "test_images": ev["samples"], "n_classes": ev["n_classes"],
        "shots": fp["shots"], "seeds": fp["seeds"], "runs": len(runs),
        "feature_pass_s": round(feature_s, 3), "encoder_forward_s": round(forward.wall, 3),
        "probe_s": ev["probe_seconds"], "probe_over_feature_pass": round(ev["probe_seconds"] / feature_s, 3),
        "first_run_s": round(first_s, 3), "rerun_s": round(rerun_s, 3),
        "probe_trainings": trainings, "clip_benchmark_trainings": cb_trainings,
        "metrics": first.metrics,
        "conditions": conditions(start),
    }
    print(f"few-shot linear probe, {spec.name}: {ev['train_samples']} train + {ev['samples']} test images, "
          f"{ev['n_classes']} classes, K={fp['shots']}, seeds={fp['seeds']}, {args.threads} threads, {args.device}")
    print(f"  feature pass (both splits)  {feature_s:7.2f} s   (encoder forward {forward.wall:.2f} s)")
    print(f"  probe ({len(runs)} runs, {trainings} trainings; clip_benchmark's sweep: {cb_trainings})"
          f"  {ev['probe_seconds']:7.2f} s   = {fig['probe_over_feature_pass']:.2f} × the feature pass")
    print(f"  first run {first_s:.2f} s, rerun from the feature cache {rerun_s:.2f} s (no encoder call)")
    print("  " + "  ".join(f"{k}={v:.4f}" for k, v in first.metrics.items() if not k.endswith("_std")))
    print(conditions_line(fig["conditions"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
