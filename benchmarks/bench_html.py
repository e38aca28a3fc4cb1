"""What the single-file HTML report costs: ``evalkit.reporting.html.write_html`` on a results folder
of 10 models × 60 tasks, against the markdown report (``write_report``) of the same folder in
the same run, and the file's size against 5 MB.

The folder is synthesized (no model runs): per model and task a result JSON with the fields a run
writes (metrics, per-transform keys for best-of-both tasks, intervals, flip budget, provenance,
data fingerprint, timings, environment; two of the models written "by an older evalkit", without
the fields added since, so the report shows them as not recorded), its per-sample records
(``evalkit.records.write_records``) and the per-class sidecar computed from them
(``evalkit.tasks.perclass.perclass_document``), a skipped-sample log for some tasks. The tasks
are the task files' (their class counts: ImageNet's 1,000 classes, Kinetics' 700, ...) plus
ad-hoc ones up to the count asked; the models are claimed models, so the shipped claims are held
against them (every verdict appears). N per task is its class count × 10, at most 10,000 (the
HTML shows classes, not samples: N changes the sidecars' numbers, not their size).

Figures: ``html_s`` (the best of ``--repeats`` calls of write_html in this process), ``markdown_s``
(write_report on the same folder, the baseline, best of the same repeats), ``ratio_html_over_markdown``,
``html_fresh_process_s`` (a new interpreter that imports evalkit and writes the HTML: what a user
waits for, imports included; against ``import_s``, the same interpreter importing only), ``html_bytes``
against ``budget_bytes`` (5 MB) and the times against ``budget_s`` (5 s).

``--smoke``: 2 models × 4 tasks; its figures mean nothing. The conditions (torch threads, load
average) are printed and written with the figures.

    python benchmarks/bench_html.py [--models 10] [--tasks 60] [--repeats 3] [--smoke] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from clocks import best_of, conditions, conditions_line

BUDGET_S = 5.0
BUDGET_BYTES = 5_000_000
MAX_SAMPLES = 10_000
OLD_MODELS = 2  # the last models of the folder: results of an older evalkit (no fingerprint, timings, environment)


def _models(n: int) -> list[str]:
    """Claimed models, most claims first (every verdict shows), then made-up ones."""
    import pandas as pd

    from evalkit.reporting.claims import load_claims

    claims = load_claims(None)
    counted = pd.Series(claims["model"]).value_counts().index.tolist()
    counted = [m for m in counted if m != "eva-clip-demo"]
    return (counted + [f"custom-model-{i:02d}" for i in range(n)])[:n]


def _tasks(n: int) -> list[tuple[str, str, int, bool]]:
    """(task, family, classes, best_of_both) for ``n`` tasks: the task files' (the demo's last),
    then ad-hoc classification tasks."""
    from evalkit.tasks.spec import TaskIndex

    index = TaskIndex.load()
    specs = sorted(index.tasks.values(), key=lambda s: (s.name.startswith("shapeworld"), s.name))
    out = []
    for s in specs:
        classes = len(s.classnames or []) or 10
        best = (s.view or {}).get("transform") == "best-of-both"
        out.append((s.name, s.family, classes, best))
    out += [(f"custom-task-{i:02d}", "classification", 100, False) for i in range(n)]
    return out[:n]


def _environment(old: bool) -> dict | None:
    if old:
        return None
    return {"python": "3.11.7", "platform": "Linux-6.8.0-x86_64-with-glibc2.36", "torch": "2.14.1+cu130",
            "cuda": "13.0", "cudnn": "91200", "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_gb": 79.6}],
            "driver": "580.65.06",
            "libraries": {"numpy": "2.3.4", "torchvision": "0.29.1", "open_clip_torch": "3.2.0", "timm": "1.0.20",
                          "transformers": "5.0.0", "accelerate": "1.11.0", "bitsandbytes": None, "safetensors": "0.6.2",
                          "huggingface_hub": "1.1.0", "av": "15.1.0", "scipy": "1.16.3", "statsmodels": "0.14.5",
                          "pandas": "2.3.3"}}


def _write_one(out: Path, model: str, task: str, family: str, classes: int, best: bool, old: bool,
               rng: np.random.Generator, skipped: bool) -> None:
    from evalkit.records import result_entry, write_records
    from evalkit.results import TaskResult, result_path, write_result
    from evalkit.stats import proportion_interval
    from evalkit.tasks.perclass import perclass_document, sidecar_for, sidecar_text

    n = min(MAX_SAMPLES, 10 * classes)
    skill = rng.uniform(0.45, 0.95)
    fewshot = task.endswith("-fewshot")
    kind = "fewshot" if fewshot else ("retrieval" if family == "retrieval" else
                                      "probe" if family == "linear_probe" else "classification")
    target = rng.integers(0, classes, n).astype(np.int32)
    keys = np.array([f"{task}/{i:06d}" for i in range(n)])
    modes = ("crop", "squash") if best else ("crop",)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    metrics: dict[str, float] = {}
    ci: dict[str, dict] = {}
    best_mode = {"acc1": -1.0, "mode": modes[0]}

    def top1() -> np.ndarray:
        right = rng.random(n) < skill
        return np.where(right, target, rng.integers(0, classes, n)).astype(np.int32)

    if kind == "fewshot":
        shots = np.repeat([1, 2, 4, 8, 16], 3).astype(np.int32)
        seeds = np.tile([0, 1, 2], 5).astype(np.int32)
        pred = np.stack([top1() for _ in shots])
        arrays["crop"] = {"key": keys, "target": target, "shots": shots, "seed": seeds, "pred": pred}
        for k in (1, 2, 4, 8, 16):
            accs = (pred[shots == k] == target).mean(axis=1)
            metrics[f"acc1@{k}shot"] = float(accs.mean())
            metrics[f"acc1@{k}shot_std"] = float(accs.std())
            iv = proportion_interval(int(round(accs.mean() * n)), n)
            ci[f"acc1@{k}shot"] = {"low": iv.low, "high": iv.high, "level": 0.95, "method": "bootstrap-percentile"}
    elif kind == "retrieval":
        for r in ("image_retrieval_recall", "text_retrieval_recall"):
            for k in (1, 5, 10):
                metrics[f"{r}@{k}"] = float(min(1.0, skill * (0.6 + 0.04 * k)))
        metrics["mean_recall"] = float(np.mean(list(metrics.values())))
        for key, v in metrics.items():
            ci[key] = {"low": max(0.0, v - 0.01), "high": min(1.0, v + 0.01), "level": 0.95,
                       "method": "bootstrap-percentile"}
    else:
        for mode in modes:
            pred = top1()
            top = np.stack([pred] + [rng.integers(0, classes, n).astype(np.int32)
                                     for _ in range(min(5, classes) - 1)], axis=1)
            scores = np.sort(rng.normal(20, 3, (n, top.shape[1])).astype(np.float32), axis=1)[:, ::-1]
            arrays[mode] = {"key": keys, "target": target, "top_classes": top, "top_scores": scores,
                            "margin": (scores[:, 0] - scores[:, 1]) if top.shape[1] > 1 else np.full(n, np.inf, np.float32),
                            "pred": pred}
            hits1 = int((pred == target).sum())
            if hits1 / n > best_mode["acc1"]:
                best_mode.update(acc1=hits1 / n, mode=mode)
            hits5 = int((top == target[:, None]).any(axis=1).sum())
            per_mode = {"acc1": hits1 / n, "acc5": hits5 / n, "mean_per_class_recall": hits1 / n}
            for name, v in per_mode.items():
                if best:
                    metrics[f"{name}@{mode}"] = v
                metrics[name] = max(metrics.get(name, 0.0), v)
        for name in ("acc1", "acc5"):
            iv = proportion_interval(int(round(metrics[name] * n)), n)
            ci[name] = {"low": iv.low, "high": iv.high, "level": 0.95, "method": "wilson"}
        if task.startswith("kinetics"):
            metrics["mean_acc1_acc5"] = (metrics["acc1"] + metrics["acc5"]) / 2

    names = [f"{task} class {i}" for i in range(classes)]
    entry = None
    if arrays:
        meta = {"n_classes": classes, "task": task, "part": None}
        written = write_records(result_path(out, model, task, ".records.npz"), kind, arrays, meta)
        entry = result_entry([written], kind)
        doc = perclass_document(kind, arrays, meta, names, "task file")
        doc.update(records=written.path.name, records_sha256=written.sha256)
        sidecar_for(written.path).write_text(sidecar_text(doc))
    skipped_keys = [f"{task}/bad-{i:03d}.jpg" for i in range(7)] if skipped else []
    if skipped_keys:
        result_path(out, model, task, ".skipped.log").write_text(
            "".join(f"{k}\tcannot identify image file (truncated JPEG)\n" for k in skipped_keys))
    ev: dict = {
        "schema_version": 1, "evalkit_version": "0.0.9" if old else "0.1.0", "git_commit": "0123456789ab",
        "command": f"evalkit run --model {model} --tasks {task}", "python": "3.11.7", "torch": "2.14.1+cu130",
        "weights": f"/models/{model}/model.safetensors", "family": family, "metric": None,
        "task_file": f"/work/tasks/{task}.yaml", "source": {"type": "imagefolder", "split": "test", "n": n},
        "data": {"root": f"/data/{task}"}, "protocol": {}, "fingerprint": hashlib.sha256(model.encode()).hexdigest()[:16],
        "precision": "bf16", "variant": "fp32", "device": "cuda:0", "transform": "best-of-both" if best else modes[0],
        "transforms_run": list(modes), "samples": n + len(skipped_keys), "evaluated": n, "skipped": len(skipped_keys),
        "skipped_keys": skipped_keys, "limit": None, "batch_size": 256, "num_workers": 8,
        "world_size": 1 if old else 8, "samples_per_rank": [n // 8] * 8, "wall_time_s": round(n / 900, 3),
        "best_transform": best_mode["mode"], "n_classes": classes, "ci": ci, "ci_options": {"level": 0.95, "proportion": "wilson", "resamples": 2000, "seed": 0},
    }
    del ev["metric"]
    ev["variant"] = "fp32"
    ev["precision"] = "fp32"
    if not old:
        ev["task_version"] = "1"
        ev["git_dirty"] = False
        ev["environment"] = _environment(old)
        ev["data_fingerprint"] = {"scheme": "evalkit-content-v1", "root": hashlib.sha256(task.encode()).hexdigest(),
                                  "samples": n + len(skipped_keys), "hashed": n, "undecodable": len(skipped_keys),
                                  "duplicates": int(rng.integers(0, 5)), "complete": True, "from": "run"}
        wall = n / 900
        ev["timings"] = {"wall_s": round(wall, 3), "data_s": round(0.55 * wall, 3), "forward_s": round(0.35 * wall, 3),
                         "text_s": round(0.04 * wall, 3), "scoring_s": round(0.03 * wall, 3),
                         "other_s": round(0.03 * wall, 3), "samples_per_s": 900.0,
                         "overlap": "data runs in loader threads/workers concurrently with forward"}
    if kind in ("classification", "probe"):
        ev["flip_budget"] = {"precision": "fp32", "acc1_points": 0.0}
    if entry is not None:
        ev["records"] = entry
    write_result(TaskResult(dataset=task, model=model, pretrained="weights", task=family, metrics=metrics,
                            language="en", evalkit=ev), out)


def _fresh(code: str, repeats: int) -> float:
    """The fastest wall time of a new interpreter running ``code`` (warnings silenced)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True)
        best = min(best, time.perf_counter() - t)
    return best


def synthesize(out: Path, n_models: int, n_tasks: int, seed: int = 0) -> dict:
    """A results folder of ``n_models`` × ``n_tasks`` under ``out`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    models, tasks = _models(n_models), _tasks(n_tasks)
    t = time.perf_counter()
    for i, model in enumerate(models):
        old = i >= n_models - OLD_MODELS and n_models > OLD_MODELS
        for j, (task, family, classes, best) in enumerate(tasks):
            _write_one(out, model, task, family, classes, best, old, rng, skipped=(j % 9 == 4))
    return {"models": len(models), "tasks": len(tasks), "results": len(models) * len(tasks),
            "folder_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
            "synthesize_s": round(time.perf_counter() - t, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3, help="calls of each; the fastest is kept")
    ap.add_argument("--smoke", action="store_true", help="2 models × 4 tasks, one repeat; figures mean nothing")
    ap.add_argument("--keep", type=Path, help="synthesize into this folder and keep it (default: a temporary one)")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    if args.smoke:
        args.models, args.tasks, args.repeats = 2, 4, 1
    start = conditions()
    from evalkit.reporting.html import write_html
    from evalkit.reporting.report import write_report

    figures: dict = {"smoke": args.smoke}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "results"
        out.mkdir(parents=True, exist_ok=True)
        figures["folder"] = synthesize(out, args.models, args.tasks)
        markdown_s, _ = best_of(lambda: write_report(out), args.repeats)
        html_s, page = best_of(lambda: write_html(out), args.repeats)
        size = page.stat().st_size
        fresh_s = _fresh(f"from evalkit.reporting.html import write_html; write_html({str(out)!r})", args.repeats)
        import_s = _fresh("import evalkit.reporting.html", args.repeats)
    figures.update({
        "markdown_s": round(markdown_s, 3), "html_s": round(html_s, 3),
        "ratio_html_over_markdown": round(html_s / markdown_s, 3), "html_fresh_process_s": round(fresh_s, 3),
        "import_s": round(import_s, 3), "html_bytes": size, "budget_s": BUDGET_S, "budget_bytes": BUDGET_BYTES,
        "within_budget": fresh_s < BUDGET_S and size < BUDGET_BYTES,
    })
    figures["conditions"] = conditions(start)
    print(json.dumps({k: v for k, v in figures.items() if k != "conditions"}, indent=1))
    print(f"html: {html_s:.2f} s (markdown report {markdown_s:.2f} s, ratio {html_s / markdown_s:.2f}); "
          f"a fresh process {fresh_s:.2f} s (its imports alone {import_s:.2f} s); "
          f"{size / 1e6:.2f} MB for {figures['folder']['models']} models × {figures['folder']['tasks']} tasks "
          f"(budget {BUDGET_S:g} s, {BUDGET_BYTES / 1e6:g} MB)")
    print(conditions_line(figures["conditions"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
