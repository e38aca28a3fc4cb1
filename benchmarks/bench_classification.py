"""evalkit vs clip_benchmark on zero-shot classification: same model, same data, same machine, fp32.

Reports wall-time ratios (evalkit / clip_benchmark), measured in one run:
  (a) building a classifier of N ImageNet class names × 80 templates   target ≤ 0.10, equal to 1e-6
  (b) one classification task end to end                               target ≤ 1.0 without the
                                                                        classifier, ≤ 0.5 with it
  (c) a 6-task suite sharing those class names (ImageNet + variants)    target ≤ 0.05 for the
                                                                        classifier cost of the suite
The model is open_clip ViT-B-32 with random weights (nothing can be downloaded here); class names
and templates are clip_benchmark's own ImageNet lists, read from the installed package.

``--smoke``: a few seconds' check that the benchmark still runs (ViT-S-32, 2 class names × 2
templates, 8 images, 2 per suite task, 1 thread); its figures mean nothing. The conditions (torch threads,
load average at the start and the end) are printed and written with the figures.

    python benchmarks/bench_classification.py [--classes 100] [--templates 80] [--images 256] [--smoke]
                                              [--json OUT]
"""

from __future__ import annotations

import argparse
import io
import json
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

SMOKE = {"classes": 2, "templates": 2, "images": 8, "suite_images": 2, "arch": "ViT-S-32", "threads": 1}


def make_wds(root: Path, n: int, n_classes: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    split = root / "test"
    split.mkdir(parents=True)
    with tarfile.open(split / "0.tar", "w") as tar:
        for i in range(n):
            arr = rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=90)
            for ext, payload in (("jpg", buf.getvalue()), ("cls", str(int(rng.integers(n_classes))).encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    (split / "nshards.txt").write_text("1\n")
    return root


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=8, help="ImageNet class names used (of 1000)")
    ap.add_argument("--templates", type=int, default=80, help="templates used (of clip_benchmark's 80)")
    ap.add_argument("--images", type=int, default=256, help="images per task")
    ap.add_argument("--suite-images", type=int, default=32, help="images per task in the 6-task suite")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--smoke", action="store_true",
                    help=f"tiny sizes ({SMOKE}): checks that the benchmark runs; its figures mean nothing")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    torch.set_num_threads(args.threads)
    start = conditions()

    import clip_benchmark
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification as cb
    from sklearn.metrics import balanced_accuracy_score

    from evalkit import models
    from evalkit.features.embed import FeatureCache, zero_shot_classifier
    from evalkit.models.tokenize import open_clip_tokenizer
    from evalkit.tasks.base import RunContext
    from evalkit.tasks.classification import ClassificationFamily
    from evalkit.tasks.spec import adhoc_spec
    from evalkit.views.image import image_transform

    pkg = Path(clip_benchmark.__file__).parent / "datasets"
    classnames = json.loads((pkg / "en_classnames.json").read_text())["imagenet1k"][: args.classes]
    templates = json.loads((pkg / "en_zeroshot_classification_templates.json").read_text())["imagenet1k"]
    templates = templates[: args.templates]
    enc = models.load(f"open_clip:{args.arch}")  # random weights, fp32, CPU
    model = enc.model
    fig: dict = {"smoke": args.smoke, "arch": args.arch, "classes": len(classnames), "templates": len(templates),
                 "images": args.images, "suite_images": args.suite_images, "batch_size": args.batch_size}

    def cb_classifier():
        return cb.zero_shot_classifier(model, open_clip_tokenizer(enc.tokenizer), classnames, templates, "cpu", amp=False)

    # (a) classifier
    ours_clf, t_ours = timed(lambda: zero_shot_classifier(enc, classnames, templates))
    theirs_clf, t_cb = timed(cb_classifier)
    fig["a_classifier"] = {
        "evalkit_s": t_ours, "clip_benchmark_s": t_cb, "ratio": t_ours / t_cb,
        "max_abs_diff": float((ours_clf - theirs_clf).abs().max()), "target": 0.10,
    }
    print(f"(a) classifier {len(classnames)}x{len(templates)}: evalkit {t_ours:.2f}s  clip_benchmark {t_cb:.2f}s  "
          f"ratio {t_ours / t_cb:.3f}  max|diff| {fig['a_classifier']['max_abs_diff']:.1e}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "classnames.txt").write_text("\n".join(classnames))
        # (b) one task end to end
        root = make_wds(tmp / "task", args.images, len(classnames), seed=1)
        (root / "classnames.txt").write_text("\n".join(classnames))
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates))

        def run_ours(r: Path, cache: FeatureCache):
            ctx = RunContext(output_dir=tmp / "out", batch_size=args.batch_size, progress=False, cache=cache)
            return ClassificationFamily().run(adhoc_spec(f"wds:{r}"), enc, ctx)

        def run_cb(r: Path):
            """clip_benchmark's evaluate, step by step as its body runs them (zero_shot_classifier,
            run_classification, then its single-label metrics), so the classifier's share is timed
            without touching clip_benchmark's module."""
            ds = build_dataset("wds/bench", root=str(r), transform=image_transform(enc, "crop"), split="test")
            loader = torch.utils.data.DataLoader(ds.batched(args.batch_size), batch_size=None, num_workers=0)
            classifier, clf_s = timed(lambda: cb.zero_shot_classifier(
                model, open_clip_tokenizer(enc.tokenizer), ds.classes, ds.templates, "cpu", amp=False))
            logits, target = cb.run_classification(model, classifier, loader, "cpu", amp=False)
            pred = logits.argmax(axis=1)
            if len(ds.classes) >= 5:
                acc1, acc5 = cb.accuracy(logits, target, topk=(1, 5))
            else:
                (acc1,), acc5 = cb.accuracy(logits, target, topk=(1,)), float("nan")
            res = {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": balanced_accuracy_score(target, pred)}
            return res, clf_s

        ours_res, t_ours_b = timed(lambda: run_ours(root, FeatureCache(None)))
        (theirs_res, cb_clf_b), t_cb_b = timed(lambda: run_cb(root))
        ours_clf_s = ours_res.evalkit["classifier_seconds"]
        fig["b_task"] = {
            "evalkit_s": t_ours_b, "clip_benchmark_s": t_cb_b, "ratio_incl_classifier": t_ours_b / t_cb_b,
            "evalkit_classifier_s": ours_clf_s, "clip_benchmark_classifier_s": cb_clf_b,
            "ratio_excl_classifier": (t_ours_b - ours_clf_s) / (t_cb_b - cb_clf_b),
            "metrics_equal": {k: ours_res.metrics[k] == theirs_res[k] for k in ours_res.metrics},
            "targets": {"incl": 0.5, "excl": 1.0},
        }
        print(f"(b) one task, {args.images} images: evalkit {t_ours_b:.2f}s  clip_benchmark {t_cb_b:.2f}s  "
              f"ratio incl. classifier {t_ours_b / t_cb_b:.3f}, excl. {fig['b_task']['ratio_excl_classifier']:.3f}",
              flush=True)

        # (c) a 6-task suite sharing the class names
        roots = []
        for i in range(6):
            r = make_wds(tmp / f"suite{i}", args.suite_images, len(classnames), seed=10 + i)
            (r / "classnames.txt").write_text("\n".join(classnames))
            (r / "zeroshot_classification_templates.txt").write_text("\n".join(templates))
            roots.append(r)
        cache = FeatureCache(None)
        t0 = time.perf_counter()
        ours_clf_total = 0.0
        for r in roots:
            ours_clf_total += run_ours(r, cache).evalkit["classifier_seconds"]
        t_ours_c = time.perf_counter() - t0
        # clip_benchmark rebuilds the identical classifier for every task; that cost is the (a)
        # figure (same model, names and templates), so it is counted 6 times rather than re-run
        # 6 times; its per-task image pass is run for real.
        t0 = time.perf_counter()
        cb_clf_total = 6 * t_cb
        for r in roots:
            ds = build_dataset("wds/bench", root=str(r), transform=image_transform(enc, "crop"), split="test")
            loader = torch.utils.data.DataLoader(ds.batched(args.batch_size), batch_size=None, num_workers=0)
            cb.run_classification(model, theirs_clf, loader, "cpu", amp=False)
        t_cb_c = time.perf_counter() - t0 + cb_clf_total
        fig["c_suite"] = {
            "tasks": 6, "evalkit_s": t_ours_c, "clip_benchmark_s": t_cb_c, "ratio_total": t_ours_c / t_cb_c,
            "evalkit_classifier_s": ours_clf_total, "clip_benchmark_classifier_s": cb_clf_total,
            "ratio_classifier": ours_clf_total / cb_clf_total, "target": 0.05,
        }
        print(f"(c) 6-task suite: classifier cost evalkit {ours_clf_total:.2f}s vs clip_benchmark {cb_clf_total:.2f}s "
              f"ratio {ours_clf_total / cb_clf_total:.4f}; whole suite {t_ours_c:.1f}s vs {t_cb_c:.1f}s "
              f"ratio {t_ours_c / t_cb_c:.3f}", flush=True)

    fig["conditions"] = conditions(start)
    print(conditions_line(fig["conditions"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
