"""Loading a big EVA-CLIP checkpoint: evalkit's streaming loader vs the official way, on the CPU.

An EVA-architecture model between the demo and the 8B (24 post-norm blocks of width 1664, a
12-layer text tower; about 1.06B parameters, 2.1 GB in fp16) is written with random fp16 weights
as a sharded safetensors checkpoint (HF layout of files, BAAI key names) and as one BAAI-style
``.pt`` file. Each load then runs in a fresh subprocess, so its peak RSS is its own:

  (a) official: the fp32 model built on the CPU, ``torch.load`` of the whole ``.pt`` state dict,
      ``load_state_dict(strict=False)``, then ``.half()`` (BAAI's ``create_model`` for fp16);
  (b) evalkit: ``load_eva_clip(..., precision="fp16", devices="cpu")`` on the sharded folder;
  (b') evalkit on the single ``.pt`` file (``torch.load(mmap=True)``), for reference.

Peak RSS is the process's high-water mark (``VmHWM``, reset just before loading where Linux
allows) less its RSS just before loading, after imports; so it is never smaller than the true
increase, and page-cache pages mapped into the process count. (``ru_maxrss`` is not used: a child
inherits its parent's, here the parent that built the checkpoint.) The file
read time is ``cat <files> > /dev/null``, best of three, with the files already in the page cache
(they were just written; every load reads them warm too); a second, "cold" figure evicts the
files from the page cache before both the read and the load. Targets for (b): peak RSS above
the baseline ≤ 1.15 × the checkpoint size, load time ≤ 1.5 × the read time.

``--smoke``: a few seconds' check that the benchmark still runs (a toy model of the same design, 2
blocks of width 64, in shards of 256 kB); its figures mean nothing and the targets are not checked
(the same weights still are). The conditions (torch threads, 2 in each load; the load average at
the start and the end) are printed and written with the figures.

    python benchmarks/bench_loader.py [--json OUT] [--workdir DIR] [--skip-official] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clocks import conditions, conditions_line, proc_status_kib, reset_peak_rss

from evalkit.results import atomic_write_text

CONFIG = {
    "embed_dim": 1024,
    "vision_cfg": {
        "image_size": 224, "layers": 24, "width": 1664, "head_width": 128, "mlp_ratio": 5,
        "patch_size": 14, "qkv_bias": False, "postnorm": True, "use_rms_norm": True,
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
}
SHARD_BYTES = 500 * 10**6
# --smoke: the same design, toy-sized
SMOKE_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {**CONFIG["vision_cfg"], "image_size": 28, "layers": 2, "width": 64, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 512, "width": 64, "heads": 2, "layers": 2},
}
SMOKE_SHARD_BYTES = 256 * 1024
THREADS = 2


def checksum_keys(config: dict) -> tuple[str, ...]:
    last = config["vision_cfg"]["layers"] - 1
    return ("visual.blocks.0.mlp.fc1.weight", f"visual.blocks.{last}.attn.qkv.weight", "text.token_embedding.weight")


# -- the child processes -----------------------------------------------------------------------


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    """Peak RSS of this process: VmHWM, which (unlike ru_maxrss, which a child inherits from the
    parent that forked it) belongs to this process image only."""
    try:
        return proc_status_kib("VmHWM") * 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _checksum(model, config: dict) -> float:
    sd = model.state_dict()
    return float(sum(sd[k].double().sum() for k in checksum_keys(config)))


def child(mode: str, path: str, config: dict) -> None:
    import accelerate.big_modeling  # noqa: F401  (imports, outside the measured window)
    import accelerate.utils  # noqa: F401
    import torch

    from evalkit.models.eva_clip import EvaClip, EvaClipConfig
    from evalkit.models.streaming import load_eva_clip

    torch.set_num_threads(THREADS)
    cfg = EvaClipConfig.from_dict(config)
    reset = reset_peak_rss()
    before = _rss()
    peak_before = _peak_rss()
    t0 = time.perf_counter()
    if mode == "official":
        model = EvaClip(cfg)  # fp32, initialised on the CPU
        sd = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(sd, strict=False)
        del sd
        model = model.half()
    else:
        model = load_eva_clip(cfg, path, precision="fp16", devices="cpu").model
    seconds = time.perf_counter() - t0
    peak = _peak_rss()
    after = _rss()
    print(json.dumps({
        "mode": mode, "seconds": seconds, "rss_before": before, "peak_rss_before": peak_before,
        "peak_reset": reset,
        "peak_above_baseline": max(0, peak - before), "rss_after_above_baseline": after - before,
        "checksum": _checksum(model, config), "dtype": str(next(model.parameters()).dtype),
    }))


# -- the parent --------------------------------------------------------------------------------


def build_checkpoint(folder: Path, config: dict, shard_bytes: int) -> tuple[Path, Path, int]:
    import torch

    from evalkit.models.checkpoint import save_sharded
    from evalkit.models.eva_clip import EvaClipConfig
    from evalkit.models.memory_plan import empty_model

    cfg = EvaClipConfig.from_dict(config)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, t in empty_model(cfg).state_dict().items():
        sd[name] = (torch.randn(t.shape, generator=g) * 0.02).half()
    sharded = folder / "sharded"
    save_sharded(sd, sharded, max_shard_bytes=shard_bytes)
    single = folder / "EVA_CLIP_bench_psz14.fp16.pt"
    torch.save(sd, single)
    size = sum(t.numel() * t.element_size() for t in sd.values())
    return sharded, single, size


def cat_seconds(files: list[Path], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def drop_page_cache(files: list[Path]) -> None:
    """Evict the files from the page cache (POSIX_FADV_DONTNEED; no root needed for clean pages)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_child(mode: str, path: Path, smoke: bool) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--path", str(path), *(["--smoke"] if smoke else [])],
        capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} load failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--workdir", help="where to write the checkpoint (default: a temporary folder)")
    ap.add_argument("--skip-official", action="store_true", help="skip (a), which needs about 4x the checkpoint in RAM")
    ap.add_argument("--smoke", action="store_true",
                    help="a toy model of the same design: checks that the benchmark runs; its figures mean nothing")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    config = SMOKE_CONFIG if args.smoke else CONFIG
    if args.child:
        child(args.child, args.path, config)
        return 0

    import psutil

    start = conditions()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        print("writing the checkpoint ...", file=sys.stderr)
        sharded, single, size = build_checkpoint(folder, config, SMOKE_SHARD_BYTES if args.smoke else SHARD_BYTES)
        shards = sorted(sharded.glob("*.safetensors"))
        results: dict = {
            "smoke": args.smoke,
            "checkpoint_bytes": size,
            "shards": len(shards),
            "shard_bytes": [p.stat().st_size for p in shards],
            "platform": platform.platform(),
            "threads_per_load": THREADS,
            "config": config,
        }
        cat_sharded = cat_seconds(shards)
        cat_single = cat_seconds([single])
        results["cat_seconds"] = {"sharded": cat_sharded, "single_pt": cat_single}
        print(f"checkpoint {size / 1e9:.2f} GB in {len(shards)} shards; cat {cat_sharded:.2f} s", file=sys.stderr)

        loads = {}
        loads["evalkit_sharded"] = run_child("evalkit", sharded, args.smoke)
        loads["evalkit_single_pt"] = run_child("evalkit", single, args.smoke)
        if args.skip_official:
            results["official_skipped"] = "--skip-official"
        elif psutil.virtual_memory().available < 4.5 * size + 2 * 2**30:
            results["official_skipped"] = f"only {psutil.virtual_memory().available / 1e9:.1f} GB available"
        else:
            loads["official"] = run_child("official", single, args.smoke)
        results["loads"] = loads
        # Cold: the same read and load with the files evicted from the page cache first (best of 2;
        # this machine's disk is shared, so these figures are noisy).
        cold_cat, cold_load = float("inf"), float("inf")
        for _ in range(1 if args.smoke else 2):
            drop_page_cache(shards)
            cold_cat = min(cold_cat, cat_seconds(shards, repeats=1))
            drop_page_cache(shards)
            cold_load = min(cold_load, run_child("evalkit", sharded, args.smoke)["seconds"])
        results["cold"] = {"cat_seconds": cold_cat, "evalkit_seconds": cold_load, "time_ratio": cold_load / cold_cat}
        ref = loads.get("official", loads["evalkit_single_pt"])["checksum"]
        results["same_weights"] = all(abs(v["checksum"] - ref) < 1e-6 * max(1.0, abs(ref)) for v in loads.values())

        ev = loads["evalkit_sharded"]
        results["evalkit_rss_ratio"] = ev["peak_above_baseline"] / size
        results["evalkit_time_ratio"] = ev["seconds"] / cat_sharded
        results["targets"] = {"rss_ratio_max": 1.15, "time_ratio_max": 1.5}
        results["meets_targets"] = results["evalkit_rss_ratio"] <= 1.15 and results["evalkit_time_ratio"] <= 1.5
        if "official" in loads:
            off = loads["official"]
            results["official_rss_ratio"] = off["peak_above_baseline"] / size
            results["official_time_ratio"] = off["seconds"] / cat_single
        results["conditions"] = conditions(start)

    print(f"{'load':22s} {'seconds':>8s} {'x cat':>6s} {'peak RSS':>10s} {'x ckpt':>7s}")
    for name, v in loads.items():
        cat = cat_single if "single" in name or name == "official" else cat_sharded
        print(f"{name:22s} {v['seconds']:8.2f} {v['seconds'] / cat:6.2f} "
              f"{v['peak_above_baseline'] / 1e9:8.2f}GB {v['peak_above_baseline'] / size:7.2f}")
    print(f"cat (sharded)          {cat_sharded:8.2f}   same weights: {results['same_weights']}   "
          f"targets met: {results['meets_targets']}")
    cold = results["cold"]
    print(f"cold page cache: cat {cold['cat_seconds']:.2f} s, evalkit {cold['evalkit_seconds']:.2f} s "
          f"({cold['time_ratio']:.2f} x cat)")
    print(conditions_line(results["conditions"]) + f" (this process; each load {THREADS} threads)")
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    if not results["same_weights"]:
        return 1
    return 0 if results["meets_targets"] or args.smoke else 1  # a toy checkpoint's ratios mean nothing


if __name__ == "__main__":
    raise SystemExit(main())
