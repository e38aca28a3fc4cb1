"""Dataset fingerprints (evalkit.data.fingerprint): what hashing costs.

(a) Inside a run: the 27 eva27 tasks over their generated miniatures (evalkit.demo.miniatures)
with the demo model, as `evalkit run --tasks eva27` runs them (best-of-both where the task says,
batch 64, the default loader workers), once with fingerprints (``fingerprint=True``, the default)
and once without (``fingerprint=False``, `--no-fingerprint`: the baseline), in the same process,
alternating which goes first, ``--repeats`` times; the fastest of each is compared. The
classifiers come from a feature cache both share (warmed by one run first; its image entries are
removed before every timed run), so the timed runs are the image pipeline and the scoring: the
part hashing adds to. The ratio is therefore stricter than one over the whole `evalkit run` (whose
classifiers, for 27 label sets, take most of its time); the warm-up's wall time is given too, and
the overhead as a share of it. On a shared machine the walls move by more than hashing costs, so the
loader's own seconds (``timings.data_s``) with and without are given too: what hashing added to
the loader, as a share of the wall. Target: at most 5 % (issue 19). Metrics must be equal with and
without.

(b) Standalone: `evalkit data fingerprint` (evalkit.tasks.fingerprint.fingerprint_task) against a
plain decode of the same samples (the task's data found the same way, every sample's loader
called, nothing hashed), on the miniatures (20x26-pixel images) and on an ImageFolder of
``--large`` 500x375 JPEGs (ImageNet's typical size). The ratio fingerprint / decode says whether
hashing keeps up with decoding.

(c) The loader's own seconds (``timings.data_s``: read, decode, transform and, with
fingerprints, hash) in a run over the 500x375 JPEGs with and without fingerprints, and that run's
wall time: with the demo model's small forward the run is the loader's, a worst case.

(d) A feature-cache entry written without content digests (an older evalkit, ``--no-fingerprint``)
gets them from a hash-only pass over its unit (the loader's decode and the views' per-sample steps,
no model) the next time a run with fingerprints meets it. Its cost against a full encode of the
same units: the suite run with ``--no-fingerprint`` on an empty image cache (encode: the
baseline), then again with fingerprints over that cache (the hash passes); the embedding passes'
seconds (``timings.embed_s``) of each, on the miniatures and on the 500x375 JPEGs. The demo model's
forward is small: with a real model the ratio is smaller still. A third run checks that the
entries now carry the digests (no loader seconds).

``--smoke``: a few seconds' check that the benchmark still runs (2 tasks, 1 repeat, 8 large
images); its figures mean nothing. The conditions (torch threads, load average at the start and
the end) are printed and written with the figures.

    python benchmarks/bench_fingerprint.py [--tasks eva27] [--repeats 3] [--large 200] [--per-class 1]
                                           [--threads N] [--smoke] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from clocks import conditions, conditions_line
from PIL import Image

from evalkit.results import atomic_write_text

SMOKE_TASKS = "cifar10,pcam"


def run_suite(specs, encoder, data_root: Path, out: Path, cache_dir: Path, fingerprint: bool, num_workers: int,
              keep_images: bool = False):
    """Every task once, as `evalkit run` runs it; (wall seconds, results by task)."""
    from evalkit.features.embed import FeatureCache
    from evalkit.registry import task_families
    from evalkit.tasks.base import RunContext

    if not keep_images:
        shutil.rmtree(cache_dir / "images", ignore_errors=True)  # image features: computed again; classifiers: kept
    ctx = RunContext(data_root=data_root, output_dir=out, batch_size=64, num_workers=num_workers, progress=False,
                     cache=FeatureCache(cache_dir), fingerprint=fingerprint)
    results = {}
    t = time.perf_counter()
    for spec in specs:
        results[spec.name] = task_families.get(spec.family)().run(spec, encoder, ctx)
    return time.perf_counter() - t, results


def plain_decode(spec, data_root: Path) -> int:
    """The task's data found as a run finds it, every sample decoded, nothing hashed: the samples."""
    from evalkit.registry import task_families
    from evalkit.tasks import load_builtin_families

    load_builtin_families()
    family = task_families.get(spec.family)()
    n = 0
    for _, sub in spec.split_specs() or [(None, spec)]:
        for unit in family.prepare(sub, data_root).data.units:
            for _key, load, _label in unit.samples():
                try:
                    load()
                except Exception:  # noqa: BLE001  (an undecodable sample: counted, as the fingerprint counts it)
                    pass
                n += 1
    return n


def large_folder(root: Path, n: int, classes: int = 4) -> Path:
    """``n`` 500x375 JPEGs (smooth colour fields with noise, so they compress as photos do) in
    ``classes`` class folders."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(n):
        d = root / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.stack([(xx * (i % 7 + 1)) % 256, (yy * (i % 5 + 1)) % 256, ((xx + yy) * (i % 3 + 1)) % 256], -1)
        arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(d / f"{i:05d}.jpg", quality=90)
    return root


def standalone(specs, data_root: Path, repeats: int) -> dict:
    """fingerprint_task against plain_decode over ``specs``: the fastest of ``repeats`` each, alternating."""
    from evalkit.tasks.fingerprint import fingerprint_task

    best = {"fingerprint": float("inf"), "decode": float("inf")}
    samples = hashed = 0
    for r in range(repeats):
        for which in (("fingerprint", "decode") if r % 2 == 0 else ("decode", "fingerprint")):
            t = time.perf_counter()
            if which == "fingerprint":
                fps = [fingerprint_task(spec, data_root, progress=False) for spec in specs]
                hashed = sum(fp["hashed"] for fp in fps)
            else:
                samples = sum(plain_decode(spec, data_root) for spec in specs)
            best[which] = min(best[which], time.perf_counter() - t)
    return {"samples": samples, "hashed": hashed, "fingerprint_s": round(best["fingerprint"], 3),
            "decode_s": round(best["decode"], 3), "ratio_fingerprint_over_decode": round(best["fingerprint"] / best["decode"], 3),
            "samples_per_s": round(samples / best["fingerprint"], 1)}


def hash_pass(specs, encoder, data_root: Path, out: Path, cache_dir: Path, num_workers: int, repeats: int,
              roots: dict[str, str | None]) -> dict:
    """(d): the embedding seconds of a full encode (``--no-fingerprint``, an empty image cache)
    against the hash-only passes of the next run over that cache, fastest of ``repeats`` each;
    whether the hash run's roots are the fresh ones (``roots``), from the cache, and whether a
    third run reads nothing."""
    def embed_s(results) -> float:
        return sum(res.evalkit["timings"]["embed_s"] for res in results.values())

    best = {"encode": float("inf"), "hash": float("inf"), "hash_wall": float("inf"), "encode_wall": float("inf")}
    same_roots = from_cache = no_forward = True
    third_data_s = 0.0
    for r in range(repeats):
        wall, encoded = run_suite(specs, encoder, data_root, out / f"enc-{r}", cache_dir, False, num_workers)
        best["encode"], best["encode_wall"] = min(best["encode"], embed_s(encoded)), min(best["encode_wall"], wall)
        wall, hashed = run_suite(specs, encoder, data_root, out / f"hash-{r}", cache_dir, True, num_workers,
                                 keep_images=True)
        best["hash"], best["hash_wall"] = min(best["hash"], embed_s(hashed)), min(best["hash_wall"], wall)
        fps = {n: res.evalkit["data_fingerprint"] for n, res in hashed.items()}
        same_roots &= all(fps[n]["root"] == roots[n] and fps[n]["complete"] for n in fps)
        from_cache &= all(fp["from"] == "cache" for fp in fps.values())
        no_forward &= all(res.evalkit["timings"]["forward_s"] == 0 for res in hashed.values())
    _, third = run_suite(specs, encoder, data_root, out / "third", cache_dir, True, num_workers, keep_images=True)
    third_data_s = sum(res.evalkit["timings"]["data_s"] for res in third.values())
    return {"encode_embed_s": round(best["encode"], 3), "hash_embed_s": round(best["hash"], 3),
            "ratio_hash_over_encode": round(best["hash"] / best["encode"], 3),
            "encode_wall_s": round(best["encode_wall"], 3), "hash_wall_s": round(best["hash_wall"], 3),
            "roots_equal_fresh": same_roots, "from_cache": from_cache, "no_forward": no_forward,
            "third_run_loader_s": round(third_data_s, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="eva27")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs with and without fingerprints (each)")
    ap.add_argument("--large", type=int, default=200, help="500x375 JPEGs for the standalone comparison")
    ap.add_argument("--per-class", type=int, default=1, help="scale of the miniatures' images per class")
    ap.add_argument("--num-workers", default="auto", help="loader workers (default auto, as evalkit: 0 on the CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--smoke", action="store_true", help=f"only {SMOKE_TASKS}, 1 repeat: checks that it runs")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.smoke else args.repeats
    n_large = 8 if args.smoke else args.large
    start = conditions()

    from evalkit import models
    from evalkit.api import resolve_tasks
    from evalkit.demo.miniatures import build_data_root
    from evalkit.features.embed import default_num_workers

    specs = resolve_tasks(SMOKE_TASKS if args.smoke else args.tasks)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        counts = build_data_root(tmp / "data", scale=args.per_class)
        encoder = models.load("eva-clip-demo")
        workers = default_num_workers(encoder.device) if args.num_workers == "auto" else int(args.num_workers)
        cache = tmp / "cache"
        # (a) the warm-up fills the classifier cache (and is the whole `evalkit run`'s wall time)
        warm_s, _ = run_suite(specs, encoder, tmp / "data", tmp / "warm", cache, True, workers)
        walls: dict[bool, list[float]] = {True: [], False: []}
        results: dict[bool, dict] = {}
        for r in range(repeats):
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                wall, results[on] = run_suite(specs, encoder, tmp / "data", tmp / f"out-{on}-{r}", cache, on, workers)
                walls[on].append(wall)
        on, off = min(walls[True]), min(walls[False])
        same = all(results[True][n].metrics == results[False][n].metrics for n in results[True])
        fps = [res.evalkit["data_fingerprint"] for res in results[True].values()]
        complete = all(fp is not None and fp["complete"] for fp in fps)
        none_off = all(res.evalkit["data_fingerprint"] is None for res in results[False].values())
        data_on = sum(res.evalkit["timings"]["data_s"] for res in results[True].values())
        data_off = sum(res.evalkit["timings"]["data_s"] for res in results[False].values())
        in_run = {
            "tasks": len(specs), "samples": sum(counts[s.name] for s in specs), "num_workers": workers,
            "repeats": repeats, "wall_on_s": round(on, 3), "wall_off_s": round(off, 3),
            "walls_on_s": [round(w, 3) for w in walls[True]], "walls_off_s": [round(w, 3) for w in walls[False]],
            "overhead": round(on / off - 1, 4), "whole_run_wall_s": round(warm_s, 3),
            "overhead_of_whole_run": round((on - off) / warm_s, 4),
            "loader_data_s_on": round(data_on, 3), "loader_data_s_off": round(data_off, 3),
            # the loader seconds hashing added, as a share of the run without it (steadier than the walls)
            "loader_added_share_of_wall": round((data_on - data_off) / off, 4),
            "target_overhead": 0.05, "metrics_equal": same, "fingerprints_complete": complete,
            "no_fingerprint_is_null": none_off,
        }
        # (b) standalone, on the miniatures and on larger JPEGs
        mini = standalone(specs, tmp / "data", repeats)
        (big_spec,) = resolve_tasks(f"folder:{large_folder(tmp / 'large', n_large)}")
        large = standalone([big_spec], tmp, repeats)
        # (c) the loader's seconds in a run over the larger JPEGs (decode, crop, hash): the demo
        # model's forward is small, so this run is the loader's, a worst case for the overhead
        big: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for r in range(repeats):
            for mode in ((False, True) if r % 2 == 0 else (True, False)):
                wall, res = run_suite([big_spec], encoder, tmp, tmp / f"big-{mode}-{r}", cache, mode, workers)
                big[mode].append((wall, res[big_spec.name].evalkit["timings"]["data_s"]))
        loader = {"samples": n_large, "data_s_on": round(min(d for _, d in big[True]), 3),
                  "data_s_off": round(min(d for _, d in big[False]), 3),
                  "wall_on_s": round(min(w for w, _ in big[True]), 3), "wall_off_s": round(min(w for w, _ in big[False]), 3)}
        loader["loader_overhead"] = round(loader["data_s_on"] / loader["data_s_off"] - 1, 4)
        loader["wall_overhead"] = round(loader["wall_on_s"] / loader["wall_off_s"] - 1, 4)
        # (d) cache entries without digests: the hash-only pass against a full encode
        mini_roots = {n: fp["root"] for n, fp in zip(results[True], fps, strict=True)}
        old_mini = hash_pass(specs, encoder, tmp / "data", tmp / "old-mini", cache, workers, repeats, mini_roots)
        big_roots = {big_spec.name: res[big_spec.name].evalkit["data_fingerprint"]["root"]}
        old_big = hash_pass([big_spec], encoder, tmp, tmp / "old-big", cache, workers, repeats, big_roots)
    fig = {"smoke": args.smoke, "model": "eva-clip-demo", "in_run": in_run,
           "standalone": {"miniatures": mini, "large_jpegs_500x375": large}, "loader_large_jpegs_500x375": loader,
           "old_cache_hash_pass": {"miniatures": old_mini, "large_jpegs_500x375": old_big},
           "conditions": conditions(start)}
    print(conditions_line(fig["conditions"]))
    print(f"(a) in a run, {in_run['tasks']} tasks, {in_run['samples']} samples, classifiers cached: "
          f"fingerprints on {on:.2f}s, off {off:.2f}s (fastest of {repeats}): overhead {in_run['overhead']:+.1%} "
          f"(target <= 5%); {in_run['overhead_of_whole_run']:+.1%} of the whole run's {warm_s:.1f}s; the loader's "
          f"seconds {data_on:.2f} vs {data_off:.2f} ({in_run['loader_added_share_of_wall']:+.1%} of the wall); "
          f"metrics equal: {same}; fingerprints complete: {complete}; off -> null: {none_off}")
    for name, s in (("miniatures", mini), ("500x375 JPEGs", large)):
        print(f"(b) standalone, {name}: {s['samples']} samples, fingerprint {s['fingerprint_s']:.2f}s, plain decode "
              f"{s['decode_s']:.2f}s: ratio {s['ratio_fingerprint_over_decode']} ({s['samples_per_s']} samples/s)")
    print(f"(c) in a run over {n_large} 500x375 JPEGs (crop to the demo model's size): the loader's seconds "
          f"{loader['data_s_on']:.2f} with fingerprints, {loader['data_s_off']:.2f} without "
          f"({loader['loader_overhead']:+.1%}); wall {loader['wall_on_s']:.2f}s vs {loader['wall_off_s']:.2f}s "
          f"({loader['wall_overhead']:+.1%})")
    for name, h in (("miniatures", old_mini), ("500x375 JPEGs", old_big)):
        print(f"(d) cache entries without digests, {name}: the hash-only pass {h['hash_embed_s']:.2f}s against a full "
              f"encode {h['encode_embed_s']:.2f}s (embedding seconds): ratio {h['ratio_hash_over_encode']}; roots "
              f"equal the fresh ones: {h['roots_equal_fresh']}; from the cache: {h['from_cache']}; no forward: "
              f"{h['no_forward']}; a third run's loader {h['third_run_loader_s']:.2f}s")
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    old_ok = all(h["roots_equal_fresh"] and h["from_cache"] and h["no_forward"] and h["third_run_loader_s"] == 0
                 for h in (old_mini, old_big))
    ok = same and complete and none_off and mini["hashed"] > 0 and old_ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
