"""What the statistics of issue 18 cost: per-sample records, intervals and verdicts against a
task's wall time, the bootstrap at ImageNet's size against SciPy's, and the protocol envelope
against a task's first run.

Figures:

  overhead       the eva27 miniatures (evalkit.demo.miniatures, the demo model, no feature
                 cache: every task's first run), each task run twice in the same process, in
                 alternating order: as `evalkit run` runs it (records written, every interval
                 computed) and with ``records=False`` (no records; intervals of proportions from N
                 only), each ``--repeats`` times, the fastest kept. ``ratio_wall_records_over_none``
                 per task and over the suite: target ≤ 1.05. ``inside_share_of_records_wall``: the
                 seconds spent in the runner's two new steps (writing the records, computing the
                 intervals and flip budget) over the records run's wall time, the direct figure.
                 Then ``evalkit report`` over the records run (every verdict, its Holm correction,
                 the bootstrap p-values rebuilt from the records): ``report_s`` and its share of
                 the suite's wall time. ``records_bytes`` and ``result_bytes``: the records files
                 and the result JSONs, in all.
  bootstrap      2,000 resamples of a 50,000-sample metric (ImageNet-1k's validation size):
                 top-1 (a mean of hits), mean per-class recall over 1,000 classes (stratified),
                 and a six-recall retrieval statistic over 5,000 images with 25,000 captions;
                 each in seconds (target ≤ 1 s) and, for the top-1, the ratio to
                 ``scipy.stats.bootstrap`` (percentile, vectorised, batch 100) on the same data.
  import_s       a fresh interpreter's import of the libraries the intervals use (SciPy stats,
                 statsmodels' proportions), which a run starts in a background thread
                 (``evalkit.stats.prewarm``) while its model loads.
  envelope       the envelope of the demo's shapeworld-shape (1,000 images; its cached features,
                 text encoded only: every shipped template and class-name variant) against that
                 task's first run in the same process: ``ratio_envelope_over_first_run``, target
                 ≤ 0.2. (A miniature of a few dozen images has almost no image pass to save: there
                 the envelope's model load and text encoding are most of both times.)

``--smoke``: seconds; its figures mean nothing. The conditions (torch threads, load average at
the start and the end) are printed and written with the figures.

    python benchmarks/bench_statistics.py [--tasks eva27] [--smoke] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from clocks import conditions, conditions_line

SMOKE_TASKS = "cifar10,pcam"
ENVELOPE_TASK = "shapeworld-shape"  # the demo's 1,000 held-out images: an image pass worth the name
SMOKE_ENVELOPE_TASK = "cifar10"


def _bytes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern))


class _Timed:
    """Wraps a public function of the runner and adds up the seconds spent in it."""

    def __init__(self, module, name: str):
        self.module, self.name, self.seconds = module, name, 0.0
        self.inner = getattr(module, name)

    def __enter__(self):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return self.inner(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t

        setattr(self.module, self.name, timed)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.inner)


def overhead(tasks: str, data_root: Path, work: Path, repeats: int) -> dict:
    """Every task with and without records, alternating which goes first, ``repeats`` times each
    (the fastest of each kept: the machine's noise only ever adds time). Besides the A/B ratio, the
    seconds spent inside the runner's two new steps (``write_task_records``,
    ``result_statistics``) as a share of the records run's wall time: the direct figure, which
    the machine's load disturbs much less than a difference of two wall times."""
    import evalkit.tasks.common as runner
    from evalkit import evaluate
    from evalkit.api import resolve_tasks
    from evalkit.reporting.report import write_report

    out_on, out_off = work / "on", work / "off"
    specs = [s.name for s in resolve_tasks(tasks)]

    def run(task: str, out: Path, records: bool) -> float:
        t = time.perf_counter()
        report = evaluate("eva-clip-demo", task, data_root=data_root, output_dir=out, cache_dir=None,
                          progress=False, records=records)
        if not report.ok:
            raise SystemExit(f"bench_statistics: {task} failed: {report.failures}")
        return time.perf_counter() - t

    run(specs[0], work / "warm", True)  # one warm-up: imports, the model's first call
    per_task = []
    best = {"on": 0.0, "off": 0.0}
    with _Timed(runner, "write_task_records") as writing, _Timed(runner, "result_statistics") as stats_:
        for i, task in enumerate(specs):
            times: dict[str, list[float]] = {"on": [], "off": []}
            for r in range(repeats):
                order = [("on", out_on, True), ("off", out_off, False)]
                for name, out, records in (order if (i + r) % 2 == 0 else order[::-1]):
                    before = writing.seconds + stats_.seconds
                    wall = run(task, out, records)
                    times[name].append(wall)
                    if name == "on":
                        times.setdefault("inside", []).append(writing.seconds + stats_.seconds - before)
            on, off = min(times["on"]), min(times["off"])
            best["on"] += on
            best["off"] += off
            per_task.append({"task": task, "records_s": round(on, 3), "no_records_s": round(off, 3),
                             "ratio": round(on / off, 3), "inside_new_steps_s": round(min(times["inside"]), 4)})
    inside = sum(t["inside_new_steps_s"] for t in per_task)
    t = time.perf_counter()
    write_report(out_on)
    report_s = time.perf_counter() - t
    return {
        "repeats": repeats,
        "tasks": per_task,
        "suite_records_s": round(best["on"], 2), "suite_no_records_s": round(best["off"], 2),
        "ratio_wall_records_over_none": round(best["on"] / best["off"], 4),
        "inside_new_steps_s": round(inside, 3),
        "inside_share_of_records_wall": round(inside / best["on"], 4),
        "report_s": round(report_s, 3), "report_share_of_suite": round(report_s / best["on"], 4),
        "records_bytes": _bytes(out_on, "*.records.npz"), "result_bytes": _bytes(out_on, "*.json"),
    }


def bootstrap_figures(smoke: bool) -> dict:
    from scipy import stats as sps

    from evalkit.stats import bootstrap, bootstrap_class_mean, bootstrap_mean

    n, classes = (2_000, 40) if smoke else (50_000, 1_000)
    rng = np.random.default_rng(0)
    target = rng.integers(0, classes, n)
    hits = (rng.random(n) < 0.8).astype(np.float64)
    out = {"samples": n, "classes": classes, "resamples": 2000}
    t = time.perf_counter()
    mine = bootstrap_mean(hits).interval()
    out["top1_s"] = round(time.perf_counter() - t, 4)
    t = time.perf_counter()
    ref = sps.bootstrap((hits,), np.mean, n_resamples=2000, method="percentile", vectorized=True, batch=100,
                        rng=np.random.default_rng(0)).confidence_interval
    out["scipy_top1_s"] = round(time.perf_counter() - t, 4)
    out["ratio_top1_evalkit_over_scipy"] = round(out["top1_s"] / out["scipy_top1_s"], 4)
    out["top1_interval"] = [mine.low, mine.high]
    out["scipy_top1_interval"] = [float(ref.low), float(ref.high)]
    t = time.perf_counter()
    bootstrap_class_mean(hits, target).interval()
    out["mean_per_class_recall_s"] = round(time.perf_counter() - t, 4)
    images = n // 10
    captions = rng.integers(4, 7, images).astype(np.float64)
    cols = [captions]
    for k in (1, 5, 10):
        p = min(0.95, 0.5 + k / 25)
        cols.append((rng.random(images) < p).astype(np.float64))
        cols.append(rng.binomial(captions.astype(int), p).astype(np.float64))
    data = np.stack(cols, axis=1)

    def six(s):
        s = s[..., 0, :]
        return np.stack([s[..., j] / (images if j % 2 else s[..., 0]) for j in range(1, 7)], axis=-1).mean(axis=-1)

    t = time.perf_counter()
    bootstrap(data, six).interval()
    out["retrieval_s"] = round(time.perf_counter() - t, 4)
    out["retrieval_images"] = images
    return out


def import_seconds() -> float:
    code = ("import time; t = time.perf_counter(); import scipy.stats, statsmodels.stats.proportion; "
            "print(time.perf_counter() - t)")
    return round(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout), 3)


def envelope_figures(data_root: Path, work: Path, task: str) -> dict:
    from evalkit import evaluate
    from evalkit.reporting import envelope as env

    cache = work / "envelope-cache"
    out = work / "envelope-out"
    t = time.perf_counter()
    evaluate("eva-clip-demo", task, data_root=data_root, output_dir=out, cache_dir=cache, progress=False)
    first = time.perf_counter() - t
    t = time.perf_counter()
    env.envelope(model="eva-clip-demo", tasks=task, output_dir=out, cache_dir=cache, data_root=data_root)
    took = time.perf_counter() - t
    return {"task": task, "first_run_s": round(first, 3), "envelope_s": round(took, 3),
            "ratio_envelope_over_first_run": round(took / first, 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="eva27")
    ap.add_argument("--smoke", action="store_true", help=f"only {SMOKE_TASKS}, a small bootstrap; figures mean nothing")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each task per arm; the fastest is kept")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    start = conditions()
    from evalkit.demo.miniatures import build_data_root

    figures: dict = {"smoke": args.smoke}
    figures["import_s"] = import_seconds()
    figures["bootstrap"] = bootstrap_figures(args.smoke)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_data_root(work / "data", scale=1)
        figures["overhead"] = overhead(SMOKE_TASKS if args.smoke else args.tasks, work / "data", work,
                                       1 if args.smoke else args.repeats)
        figures["envelope"] = envelope_figures(work / "data", work, SMOKE_ENVELOPE_TASK if args.smoke else ENVELOPE_TASK)
    figures["conditions"] = conditions(start)
    print(json.dumps({k: v for k, v in figures.items() if k != "overhead"}, indent=1))
    o = figures["overhead"]
    print(f"overhead: records {o['suite_records_s']} s vs none {o['suite_no_records_s']} s "
          f"(ratio {o['ratio_wall_records_over_none']}); inside the new steps {o['inside_new_steps_s']} s "
          f"({o['inside_share_of_records_wall']:.1%} of the wall time); report {o['report_s']} s; "
          f"records {o['records_bytes']} B vs results {o['result_bytes']} B")
    print(conditions_line(figures["conditions"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
