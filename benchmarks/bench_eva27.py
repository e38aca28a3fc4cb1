"""The 27 EVA-CLIP-18B classification tasks (`eva27`) over their generated miniatures
(evalkit.demo.miniatures: every dataset in its usual on-disk layout, a few images per class),
with the demo model, as `evalkit run --tasks eva27` runs them: best-of-both transforms (each image
decoded once, both transforms applied), batch 64, the default worker count (auto: 0 worker
processes for a model on the CPU; a background thread decodes the next batches while the model
runs), no feature cache.

Reports the total wall time, images/s and the share of time spent outside the model forward
(listing and decoding files, resizing, collating, metrics, bookkeeping): the model forward is
timed around the encoder's encode_image / encode_text calls (clocks.TimedEncoder, which
wraps the encoder the tasks are given). Target: outside-model share ≤ 15 %. Two shares are given:
of the whole run (text towers included) and of the image pipeline alone, the stricter one. The
image pipeline's wall time is what each task's result records as ``image_seconds`` (the one
embedding call: listing, decoding, transforms, collate, forward); its CPU time is the task's CPU
time less its text forward (so listing the data and scoring count as outside the forward too).

With ``--baseline`` the same tasks run a second time, in the same process, the way a pipeline
without evalkit's data path would: one pass over the data per transform (every image decoded
twice), torchvision's Compose per image, open_clip's tokenizer on whole prompts, samples loaded in
line with the forward (no background loading thread); only the task's data and class names
(the family's ``prepare``), the classifier and the metric functions are evalkit's. The figures
then include the wall-time ratio evalkit / baseline (features and metrics are equal). Each task's
transforms are the family's, from the task's ``view.transform`` (as ``evalkit run`` reads it).

``--smoke``: a few seconds' check that the benchmark still runs (4 small tasks of different layouts,
with ``--baseline`` the baseline too); its figures mean nothing. The conditions (torch threads,
load average at the start and the end) are printed and written with the figures.

    python benchmarks/bench_eva27.py [--baseline] [--per-class 1] [--batch-size 64] [--num-workers auto]
                                     [--threads N] [--smoke] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch
from clocks import Clock, TimedEncoder, conditions, conditions_line

from evalkit.results import atomic_write_text
from evalkit.tasks.common import combine_transforms

#: --smoke: small tasks of four different layouts (CIFAR, PCam, Rendered SST2, VOC 2007)
SMOKE_TASKS = "cifar10,pcam,renderedsst2,voc2007"


def run_suite(specs, encoder, ctx):
    """Every task once, as `evalkit run` runs it; per-task figures, wall and CPU seconds, and the
    three clocks (image forward, text forward, image pipeline)."""
    from evalkit.registry import task_families

    timed = TimedEncoder(encoder)
    pipeline = Clock()
    per_task = []
    t_run, c_run = time.perf_counter(), time.process_time()
    for spec in specs:
        img0, txt0 = timed.image.copy(), timed.text.copy()
        t, c = time.perf_counter(), time.process_time()
        result = task_families.get(spec.family)().run(spec, timed, ctx)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        image, text = timed.image - img0, timed.text - txt0
        pipe_s = result.evalkit["image_seconds"]
        pipeline.wall += pipe_s
        pipeline.cpu += cpu - text.cpu
        pipeline.calls += 1
        pipeline.items += image.items
        per_task.append({
            "task": spec.name, "wall_s": round(wall, 3), "samples": result.evalkit["samples"],
            "image_passes": image.items, "image_pipeline_s": round(pipe_s, 3),
            "image_forward_s": round(image.wall, 3), "text_forward_s": round(text.wall, 3),
            "acc1": result.metrics["acc1"], "metrics": result.metrics,
        })
    return per_task, time.perf_counter() - t_run, time.process_time() - c_run, (timed.image, timed.text, pipeline)


# -- the baseline: no evalkit data path ---------------------------------------------------------


def compose(encoder, mode: str):
    """torchvision's Compose for one transform, per image (crop: resize the short side, centre
    crop; squash: resize to a square), then ToTensor and Normalize."""
    from torchvision import transforms as T

    interp = T.InterpolationMode.BICUBIC
    image = encoder.tower("image").input
    size = image.size
    geometry = [T.Resize(size, interpolation=interp), T.CenterCrop(size)] if mode == "crop" else \
        [T.Resize((size, size), interpolation=interp)]
    return T.Compose([*geometry, lambda im: im.convert("RGB") if im.mode != "RGB" else im, T.ToTensor(),
                      T.Normalize(image.mean, image.std)])


def naive_features(encoder, data, transform, batch_size: int) -> tuple[torch.Tensor, list]:
    """One pass over the data for one transform: each sample loaded, decoded and transformed in
    line, batches of one unit at a time (as evalkit batches), L2-normalised image features.
    A sample that does not decode is skipped, as evalkit skips it."""
    import torch.nn.functional as F

    feats, labels = [], []
    for unit in data.units:
        batch, batch_labels = [], []
        samples = iter(unit.samples())
        while True:
            item = next(samples, None)
            if item is not None:
                _key, load, label = item
                try:
                    batch.append(transform(load()))
                except Exception:  # noqa: BLE001  (a corrupt image: skipped)
                    continue
                batch_labels.append(label)
            if batch and (item is None or len(batch) == batch_size):
                feats.append(F.normalize(encoder.encode_image(torch.stack(batch)), dim=-1))
                labels.extend(batch_labels)
                batch, batch_labels = [], []
            if item is None:
                break
    return torch.cat(feats), labels


def run_baseline(specs, encoder, data_root, batch_size: int):
    """Every task once without evalkit's data path (see the module docstring); the same figures
    as :func:`run_suite`."""
    from evalkit.features.embed import zero_shot_classifier
    from evalkit.metrics import classification_logits, zero_shot_classification_metrics
    from evalkit.models.tokenize import open_clip_tokenizer
    from evalkit.registry import task_families

    plain = dataclasses.replace(encoder, share_text_prefix=False)  # whole prompts, every one
    plain.tokenizer = open_clip_tokenizer(encoder.tokenizer)
    timed = TimedEncoder(plain)
    pipeline = Clock()
    per_task = []
    t_run, c_run = time.perf_counter(), time.process_time()
    for spec in specs:
        if spec.family != "classification":
            raise SystemExit(f"--baseline covers classification tasks; {spec.name} is {spec.family}")
        img0 = timed.image.copy()
        t = time.perf_counter()
        family = task_families.get(spec.family)()
        prepared = family.prepare(spec, data_root)
        classifier = zero_shot_classifier(timed, prepared.classnames, prepared.templates)
        modes = spec.view_spec.modes  # the task's view.transform (best-of-both: crop, squash)
        per_mode = {}
        for m in modes:
            with pipeline.measure():
                feats, labels = naive_features(timed, prepared.data, compose(encoder, m), batch_size)
            logits = classification_logits(feats, classifier)
            if prepared.data.label_groups is not None:
                logits = torch.stack([logits[:, g].max(dim=1).values for g in prepared.data.label_groups], dim=1)
            per_mode[m] = zero_shot_classification_metrics(logits, torch.tensor(labels), prepared.n_labels)
        image = timed.image - img0
        pipeline.items += image.items
        per_task.append({"task": spec.name, "wall_s": round(time.perf_counter() - t, 3),
                         "image_passes": image.items, "metrics": combine_transforms(per_mode)})
    return per_task, time.perf_counter() - t_run, time.process_time() - c_run, (timed.image, timed.text, pipeline)


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
    ap.add_argument("--smoke", action="store_true",
                    help=f"only {SMOKE_TASKS}: checks that the benchmark runs; its figures mean nothing")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = conditions()

    from evalkit import models
    from evalkit.api import resolve_tasks
    from evalkit.demo.miniatures import build_data_root
    from evalkit.features.embed import FeatureCache, default_num_workers
    from evalkit.tasks.base import RunContext

    specs = resolve_tasks(SMOKE_TASKS if args.smoke else args.tasks)
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
            b_tasks, b_wall, b_cpu, (b_image, b_text, b_pipe) = run_baseline(specs, encoder, ctx.run.data_root,
                                                                              args.batch_size)
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
        "smoke": args.smoke,
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
        "conditions": conditions(start),
        "baseline": baseline,
        "per_task": per_task,
    }
    width = max(len(r["task"]) for r in per_task)
    for r in per_task:
        print(f"{r['task']:{width}s}  wall {r['wall_s']:7.2f}s  images {r['image_passes']:5d}  "
              f"image pipeline {r['image_pipeline_s']:6.2f}s (forward {r['image_forward_s']:6.2f}s)  "
              f"text forward {r['text_forward_s']:6.2f}s")
    print(f"\n{len(specs)} tasks, {fig['fixture_images']} fixture images, {image.items} image passes "
          f"(crop + squash), {text.items} prompts; batch {args.batch_size}, {num_workers} workers")
    print(conditions_line(fig["conditions"]))
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
