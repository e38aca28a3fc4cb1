"""Memory and time of the full linear probe (Table 7's ``imagenet1k-linear-probe``) on a train
feature tensor of ImageNet's shape, scaled down (the real one: 1,281,167 × 1024 float32 = 5.2 GB,
1000 classes, 50,000 val features).

The features are synthetic (L2-normalised points around one centre per class), written into one
preallocated tensor a chunk at a time, so making them leaves nothing else behind. Then
:func:`evalkit.tasks.probe.full_probe` runs with the task's protocol (clip_benchmark's: batch 64,
lr 0.1, a 10 % validation part, the weight-decay sweep, the final probe on train + validation),
except that by default one epoch and a 3-point sweep (``--epochs``, ``--wd-points``) keep it short:
the memory does not depend on either (every epoch and every probe reads the same tensors in the
same way), the time grows with both (reported per probe trained and per epoch).

Figures:

  features_mib        the train feature tensor itself (N × D × 4 bytes)
  peak_extra_mib      the process's peak resident memory during the probe above its resident
                      memory before it (VmHWM, reset through /proc/self/clear_refs once the
                      features are made): everything the probe adds to the feature tensor
  peak_extra_over_features   that, as a fraction of the feature tensor. It includes what the C
                      allocator keeps of freed permutations and indices (glibc's heap keeps blocks
                      under its mmap threshold); run with MALLOC_MMAP_THRESHOLD_=131072 and only the
                      index's 16 bytes a train row grow with the rows
  expected_extra_mib  what the probe should hold besides the features: the row index (train part,
                      then train + validation: int64), the test logits (test rows × classes,
                      float32), one scoring chunk (8,192 gathered rows and their logits), the
                      layer and AdamW's two moments, one batch: only the index grows with the
                      train rows (16 bytes a row)
  clip_benchmark_copies_mib  what clip_benchmark's own run holds besides the features it loaded:
                      its permuted train copy (``features[idxs]``) and, for the final probe, the
                      train + validation concatenation: about 2 × the features (from its code, not run)
  seconds_per_probe   wall time of one probe's training (one epoch at this size, here)

``--smoke``: a few seconds' check that the benchmark runs (4,096 × 64, 10 classes); its figures
mean nothing. The conditions (torch threads, load average at the start and the end) are printed
and written with the figures.

    python benchmarks/bench_linear_probe.py [--rows 262144] [--dim 1024] [--classes 1000]
        [--test-rows 10240] [--epochs 1] [--wd-points 3] [--threads 1] [--smoke] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from clocks import conditions, conditions_line, proc_status_kib, reset_peak_rss

MIB = 1024 * 1024


def features(rows: int, centres: torch.Tensor, seed: int, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, dim) float32 unit vectors around the class ``centres``, and their labels, written in
    place a chunk at a time (no temporary of the whole tensor)."""
    g = torch.Generator().manual_seed(seed)
    classes, dim = centres.shape
    labels = torch.randint(0, classes, (rows,), generator=g)
    out = torch.empty(rows, dim)
    for lo in range(0, rows, chunk):
        part = centres[labels[lo:lo + chunk]]
        part += 1.5 * torch.randn(part.shape, generator=g)
        out[lo:lo + chunk] = torch.nn.functional.normalize(part, dim=-1)
    return out, labels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=262144, help="train features (ImageNet: 1,281,167)")
    ap.add_argument("--dim", type=int, default=1024, help="feature width (EVA-CLIP-18B: 1024)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--test-rows", type=int, default=10240, help="test features (ImageNet val: 50,000)")
    ap.add_argument("--epochs", type=int, default=1, help="per probe (the task's protocol: 10)")
    ap.add_argument("--wd-points", type=int, default=3,
                    help="the sweep's first points (the task's protocol: 7 of 97, then refined; here no refining)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: steady figures on a shared machine, where 2 threads wait on each other)")
    ap.add_argument("--smoke", action="store_true",
                    help="4,096 × 64 features, 10 classes: checks that the benchmark runs; its figures mean nothing")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.dim, args.classes, args.test_rows = 4096, 64, 10, 512
    torch.set_num_threads(args.threads)

    from evalkit.results import atomic_write_text
    from evalkit.tasks.probe import SCORE_CHUNK, ProbeOptions, full_probe

    start = conditions()
    centres = torch.randn(args.classes, args.dim, generator=torch.Generator().manual_seed(0))
    train_x, train_y = features(args.rows, centres, seed=1)
    test_x, test_y = features(args.test_rows, centres, seed=2)
    # the task's protocol (tasks/linear_probe/imagenet1k-linear-probe.yaml), shortened in epochs and sweep
    options = ProbeOptions(lr=0.1, epochs=args.epochs, batch_size=64, val_fraction=0.1, wd_points=args.wd_points,
                           wd_init_points=args.wd_points, wd_refine_span=0)
    # once on a few rows first: what the first probe costs whatever the size (torch's lazy set-up of
    # autograd, AdamW and the kernels) is not counted as the probe's memory
    full_probe(train_x[:256], train_y[:256], test_x[:64], test_y[:64], options=options, n_classes=args.classes)
    reset = reset_peak_rss()
    before_kib = proc_status_kib("VmRSS")
    baseline_kib = proc_status_kib("VmHWM") if reset else max(before_kib, proc_status_kib("VmHWM"))
    trained = [0]

    class Bar:
        def update(self, n: int = 1) -> None:
            trained[0] += n

    t0 = time.perf_counter()
    run = full_probe(train_x, train_y, test_x, test_y, seed=0, options=options, n_classes=args.classes, bar=Bar())
    wall = time.perf_counter() - t0
    peak_extra = (proc_status_kib("VmHWM") - baseline_kib) / 1024

    feats_mib = train_x.numel() * train_x.element_size() / MIB
    n_val = run.val_samples
    expected = (8 * (2 * args.rows - n_val)  # row index: train part, then train + validation
                + 4 * args.test_rows * args.classes  # test logits
                + 4 * min(SCORE_CHUNK, max(n_val, args.test_rows)) * (args.dim + args.classes)  # a scoring chunk
                + 4 * 3 * (args.dim + 1) * args.classes  # the layer, AdamW's two moments
                + 4 * 64 * args.dim) / MIB  # one batch
    fig = {
        "smoke": args.smoke, "rows": args.rows, "dim": args.dim, "classes": args.classes,
        "test_rows": args.test_rows, "epochs": args.epochs, "probes_trained": trained[0],
        "features_mib": round(feats_mib, 1), "rss_before_mib": round(before_kib / 1024, 1),
        "peak_extra_mib": round(peak_extra, 1), "peak_extra_over_features": round(peak_extra / feats_mib, 3),
        "peak_measured_from_reset": reset,
        "expected_extra_mib": round(expected, 1),
        "clip_benchmark_copies_mib": round(2 * feats_mib, 1),
        "seconds": round(wall, 2), "seconds_per_probe": round(wall / max(trained[0], 1), 2),
        "metrics": run.metrics, "weight_decay": run.weight_decay,
        "conditions": conditions(start),
    }
    print(f"full linear probe: {args.rows:,} × {args.dim} train features ({feats_mib:,.0f} MiB), {args.classes} "
          f"classes, {args.test_rows:,} test; {args.epochs} epoch(s), {trained[0]} probes, {args.threads} threads")
    print(f"  peak memory above the features' process: {peak_extra:,.1f} MiB = {fig['peak_extra_over_features']:.3f}"
          f" × the features (expected about {expected:,.1f} MiB; clip_benchmark's copies: {2 * feats_mib:,.0f} MiB)")
    print(f"  {wall:.1f} s, {fig['seconds_per_probe']:.2f} s a probe; acc1={run.metrics['acc1']:.4f}")
    print(conditions_line(fig["conditions"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
