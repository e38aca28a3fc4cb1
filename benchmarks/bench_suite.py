"""A 6-task suite sharing class names (ImageNet and 5 variants, in miniature), each task under both
transforms (best-of-both), on an open_clip model and generated data, all in one run:

  (a) a re-run with a warm cache against the cold run            target: ≥ 20× faster
  (b) the cold run against clip_benchmark running the same 12     target: ≤ 0.3× its wall time
      evaluations (6 tasks × crop and squash)

evalkit runs as ``evalkit run --tasks wds:...,wds:... --transform best-of-both`` does, through the
public API (:func:`evalkit.evaluate`: the model loaded, each task's data checked, features and
classifiers cached on disk under a fresh ``--cache-dir``, results written). The re-run is the
same call with the same cache folder and a new output folder. clip_benchmark 1.6.2 runs its own
``zero_shot_classifier`` and ``run_classification`` (the body of its ``evaluate``) once per task
and transform, with open_clip's tokenizer, over the same WebDataset folders, through its own
``build_dataset`` loader, given the same transform functions; its metrics are checked against
evalkit's per-transform metrics (``acc1@crop``, ``acc1@squash`` ...). evalkit's cold run is made
twice, before and after clip_benchmark (each with an empty cache), and (b) uses their mean, so a
load that drifts on a shared machine weighs on both sides alike.

With ``--command`` the two runs of (a) are also made as commands: ``evalkit run`` in a fresh
process each (imports, model load and all), cold (an empty cache folder) and warm.

The model is open_clip with random (seeded) weights: a small ViT registered from a config
(``--arch small``: 64 px, patch 8, width 256, 4 layers in each tower; text and image forwards of
similar cost per item, as in ViT-B-32) or any open_clip architecture by name (``--arch
ViT-B-32``). Class names and templates are clip_benchmark's ImageNet lists. The default scale
keeps the real suite's proportion of images to prompts (about 166,000 test images to 80,000
prompts: 2 to 1): 40 classes × 80 templates = 3,200 prompts, 6 × 1,100 = 6,600 images.

``--smoke``: a few seconds' check that the benchmark still runs (5 class names × 2 templates, 16
images a task in shards of 8, 1 thread); its figures mean nothing. The conditions (torch threads,
load average at the start and the end) are printed and written with the figures.

    python benchmarks/bench_suite.py [--arch small] [--classes 40] [--images 1100] [--command] [--smoke]
                                     [--json OUT]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from clocks import conditions, conditions_line
from PIL import Image

from evalkit.results import atomic_write_text

SMALL_ARCH = {
    "embed_dim": 256,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 256, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 4},
}
SMALL_NAME = "evalkit-bench-small"
# the suite's six tasks, named after the sets they stand for (IN-1K, IN-V2, IN-A, IN-R, IN-Sketch, ObjectNet)
TASKS = ("in1k", "inv2", "in-a", "in-r", "in-sketch", "objectnet")
TRANSFORMS = ("crop", "squash")
SMOKE = {"classes": 5, "templates": 2, "images": 16, "shard_size": 8, "threads": 1}


def register_arch(folder: Path) -> str:
    import open_clip

    path = folder / f"{SMALL_NAME}.json"
    path.write_text(json.dumps(SMALL_ARCH))
    open_clip.add_model_config(path)
    return SMALL_NAME


def make_wds(root: Path, n: int, n_classes: int, seed: int, classnames: list[str], templates: list[str],
             shard_size: int) -> Path:
    """A clip_benchmark WebDataset folder: smooth generated 320×256 JPEGs (non-square, so crop
    and squash differ, as for most real photos), labels, class names, templates."""
    rng = np.random.default_rng(seed)
    split = root / "test"
    split.mkdir(parents=True)
    shards = max(1, -(-n // shard_size))
    for s in range(shards):
        with tarfile.open(split / f"{s}.tar", "w") as tar:
            for i in range(s * shard_size, min(n, (s + 1) * shard_size)):
                small = rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)
                img = Image.fromarray(small).resize((320, 256), Image.BICUBIC)
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=90)
                for ext, payload in (("jpg", buf.getvalue()), ("cls", str(int(rng.integers(n_classes))).encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    (split / "nshards.txt").write_text(f"{shards}\n")
    (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    return root


def run_evalkit(model: str, roots: list[Path], cache: Path, out: Path, batch_size: int):
    from evalkit import evaluate
    t0 = time.perf_counter()
    report = evaluate(model, [f"wds:{r}" for r in roots], transform="best-of-both", cache_dir=cache,
                      output_dir=out, batch_size=batch_size, progress=False, raise_errors=True)
    return report, time.perf_counter() - t0


def run_clip_benchmark(encoder, roots: list[Path], classnames: list[str], templates: list[str], batch_size: int):
    """The 12 evaluations, each as clip_benchmark's ``evaluate`` runs one: the classifier, then
    the image pass, then its single-label metrics."""
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification as cb
    from sklearn.metrics import balanced_accuracy_score

    from evalkit.models.tokenize import open_clip_tokenizer
    from evalkit.views.image import image_transform

    tokenizer = open_clip_tokenizer(encoder.tokenizer)
    metrics: dict[tuple[str, str], dict[str, float]] = {}
    classifier_s = 0.0
    t0 = time.perf_counter()
    for root in roots:
        for mode in TRANSFORMS:
            ds = build_dataset("wds/bench", root=str(root), transform=image_transform(encoder, mode), split="test")
            loader = torch.utils.data.DataLoader(ds.batched(batch_size), batch_size=None, num_workers=0)
            t = time.perf_counter()
            classifier = cb.zero_shot_classifier(encoder.model, tokenizer, ds.classes, ds.templates, "cpu", amp=False)
            classifier_s += time.perf_counter() - t
            logits, target = cb.run_classification(encoder.model, classifier, loader, "cpu", amp=False)
            acc1, acc5 = cb.accuracy(logits, target, topk=(1, 5))
            metrics[(root.name, mode)] = {"acc1": acc1, "acc5": acc5,
                                          "mean_per_class_recall": balanced_accuracy_score(target, logits.argmax(1))}
    return metrics, time.perf_counter() - t0, classifier_s


_COMMAND = """
import sys
import open_clip
open_clip.add_model_config(sys.argv[1])
from evalkit.cli.main import main
sys.exit(main(["run", *sys.argv[2:]]))
"""


def run_command(config: Path | None, args: list[str]) -> float:
    """``evalkit run ARGS`` in a fresh process (the small architecture registered first)."""
    cmd = [sys.executable, "-c", _COMMAND, str(config or ""), *args] if config else \
        [sys.executable, "-m", "evalkit", "run", *args]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="small", help="'small' (the config above) or an open_clip architecture")
    ap.add_argument("--classes", type=int, default=40, help="ImageNet class names used (of 1000)")
    ap.add_argument("--templates", type=int, default=80, help="templates used (of clip_benchmark's 80)")
    ap.add_argument("--images", type=int, default=1100, help="images per task")
    ap.add_argument("--shard-size", type=int, default=512, help="samples per tar shard")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--command", action="store_true",
                    help="also time (a) as two `evalkit run` commands in fresh processes, cold and warm")
    ap.add_argument("--smoke", action="store_true",
                    help=f"tiny sizes ({SMOKE}): checks that the benchmark runs; its figures mean nothing")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    torch.set_num_threads(args.threads)
    start = conditions()

    import clip_benchmark

    from evalkit import models
    pkg = Path(clip_benchmark.__file__).parent / "datasets"
    classnames = json.loads((pkg / "en_classnames.json").read_text())["imagenet1k"][: args.classes]
    templates = json.loads((pkg / "en_zeroshot_classification_templates.json").read_text())["imagenet1k"]
    templates = templates[: args.templates]
    fig: dict = {"smoke": args.smoke, "arch": args.arch,
                 "classes": len(classnames), "templates": len(templates), "prompts": len(classnames) * len(templates),
                 "tasks": len(TASKS), "images_per_task": args.images, "images": args.images * len(TASKS),
                 "evaluations": len(TASKS) * len(TRANSFORMS), "batch_size": args.batch_size}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = None
        arch = args.arch
        if arch == "small":
            arch = register_arch(tmp)
            config = tmp / f"{SMALL_NAME}.json"
            fig["arch_config"] = SMALL_ARCH
        model = f"open_clip:{arch}"
        t = time.perf_counter()
        roots = [make_wds(tmp / "data" / name, args.images, len(classnames), 10 + i, classnames, templates,
                          args.shard_size) for i, name in enumerate(TASKS)]
        fig["data_s"] = round(time.perf_counter() - t, 2)
        print(f"data: {len(TASKS)} tasks x {args.images} images, {len(classnames)} classes x {len(templates)} "
              f"templates ({fig['data_s']:.1f}s to generate)", flush=True)

        # (b) evalkit cold: nothing cached
        cold, t_cold = run_evalkit(model, roots, tmp / "cache", tmp / "out-cold", args.batch_size)
        clf_cached = [r.evalkit.get("classifier_cached") for r in cold.results]
        print(f"evalkit cold: {t_cold:.1f}s (classifier built {clf_cached.count(False)}x, "
              f"cached {clf_cached.count(True)}x)", flush=True)
        # (a) the same, re-run: everything in the cache
        warm, t_warm = run_evalkit(model, roots, tmp / "cache", tmp / "out-warm", args.batch_size)
        same = all(a.metrics == b.metrics for a, b in zip(cold.results, warm.results, strict=True))
        print(f"evalkit warm re-run: {t_warm:.2f}s, ratio cold/warm {t_cold / t_warm:.1f}x, metrics equal: {same}",
              flush=True)
        fig["a_rerun"] = {"cold_s": round(t_cold, 2), "warm_s": round(t_warm, 3),
                          "speedup": round(t_cold / t_warm, 1), "metrics_equal": same, "target": 20,
                          "warm_images_per_s": [r.evalkit.get("images_per_s") for r in warm.results],
                          "warm_classifier_cached": [r.evalkit.get("classifier_cached") for r in warm.results]}

        # (b) clip_benchmark: 6 tasks x 2 transforms, each a separate evaluation
        encoder = models.load(model)
        cb_metrics, t_cb, cb_clf_s = run_clip_benchmark(encoder, roots, classnames, templates, args.batch_size)
        # evalkit cold once more (a fresh cache), after clip_benchmark: the two cold runs bracket
        # it in time, so a machine whose load drifts during the run weighs on both sides alike
        cold2, t_cold2 = run_evalkit(model, roots, tmp / "cache2", tmp / "out-cold2", args.batch_size)
        t_evalkit = (t_cold + t_cold2) / 2
        diffs = []
        for r, root in zip(cold.results, roots, strict=True):
            for mode in TRANSFORMS:
                for k, v in cb_metrics[(root.name, mode)].items():
                    diffs.append(abs(r.metrics[f"{k}@{mode}"] - v))
        fig["b_suite"] = {
            "evalkit_s": round(t_evalkit, 2), "evalkit_runs_s": [round(t_cold, 2), round(t_cold2, 2)],
            "clip_benchmark_s": round(t_cb, 2), "ratio": round(t_evalkit / t_cb, 4),
            "ratio_range": [round(min(t_cold, t_cold2) / t_cb, 4), round(max(t_cold, t_cold2) / t_cb, 4)],
            "clip_benchmark_classifier_s": round(cb_clf_s, 2),
            "evalkit_classifier_s": round(sum(r.evalkit.get("classifier_seconds") or 0 for r in cold.results), 2),
            "evalkit_image_s": round(sum(r.evalkit.get("image_seconds") or 0 for r in cold.results), 2),
            "metrics_compared": len(diffs), "metrics_equal": sum(d == 0 for d in diffs),
            "max_abs_metric_diff": max(diffs), "target": 0.3,
        }
        print(f"(b) suite of {fig['evaluations']} evaluations: evalkit {t_evalkit:.1f}s (runs before and after: "
              f"{t_cold:.1f}s, {t_cold2:.1f}s) vs clip_benchmark {t_cb:.1f}s (its classifiers {cb_clf_s:.1f}s): "
              f"ratio {t_evalkit / t_cb:.3f}; metrics equal {fig['b_suite']['metrics_equal']}/{len(diffs)}, "
              f"max |diff| {max(diffs):.2e}", flush=True)
        print(f"(a) re-run with a warm cache: {t_warm:.2f}s vs {t_cold:.1f}s cold: {t_cold / t_warm:.1f}x faster",
              flush=True)

        if args.command:
            tasks = ",".join(f"wds:{r}" for r in roots)
            common = ["--model", model, "--tasks", tasks, "--transform", "best-of-both", "--batch-size",
                      str(args.batch_size), "--quiet", "--cache-dir", str(tmp / "cache-cmd")]
            c_cold = run_command(config, [*common, "--output-dir", str(tmp / "cmd-cold")])
            c_warm = run_command(config, [*common, "--output-dir", str(tmp / "cmd-warm")])
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch, torchvision, open_clip"], check=True)
            imports = time.perf_counter() - t
            fig["a_command"] = {"cold_s": round(c_cold, 2), "warm_s": round(c_warm, 2),
                                "speedup": round(c_cold / c_warm, 1), "imports_s": round(imports, 2)}
            print(f"(a) as commands in fresh processes: cold {c_cold:.1f}s, warm {c_warm:.2f}s "
                  f"({c_cold / c_warm:.1f}x; `import torch, torchvision, open_clip` alone {imports:.2f}s)", flush=True)

    fig["conditions"] = conditions(start)
    print(conditions_line(fig["conditions"]) + " (the --command runs: torch's default threads)")
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
