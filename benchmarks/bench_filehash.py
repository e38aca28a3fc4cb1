"""Weight hashing for certificates (evalkit.filehash): the first SHA-256 of a large file against
Python's own ``hashlib.file_digest`` on the same file, and the cached lookup that every later
``evalkit certify`` pays instead.

A file of ``--mib`` MiB of random bytes is written to a temporary folder (``--dir``; it is in the
page cache right after, so the figures are the hashing's, not the disk's: a cold 36 GB checkpoint
is read at the disk's speed once). Timed, best of ``--repeat``: ``file_digest`` (the baseline,
measured in the same run), :func:`evalkit.filehash.file_sha256` with a fresh cache folder each
time (the first hash: read, hash, write the entry) and with a warm one (the lookup: a stat and one
small JSON file). Headline ratios: first / baseline (the streaming costs nothing over Python's
own loop) and lookup / first (what the cache saves).

``--smoke``: an 8 MiB file, one repeat; its figures mean nothing.

    python benchmarks/bench_filehash.py [--json OUT] [--mib 1024] [--repeat 3] [--dir DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import clocks as timing
from clocks import conditions, conditions_line

from evalkit.filehash import file_sha256
from evalkit.results import atomic_write_text

SMOKE = {"mib": 8, "repeat": 1}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--mib", type=int, default=1024, help="the file's size in MiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", help="where the file is written (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help=f"tiny sizes ({SMOKE}); its figures mean nothing")
    args = ap.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    start = conditions()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "weights.bin"
        with open(path, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        size = path.stat().st_size

        def baseline() -> str:
            with open(path, "rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest()

        caches = iter(range(10**6))

        def first() -> str:
            cache = Path(tmp) / f"cache{next(caches)}"
            try:
                return file_sha256(path, cache_dir=cache)
            finally:
                shutil.rmtree(cache, ignore_errors=True)

        warm = Path(tmp) / "warm"
        want = file_sha256(path, cache_dir=warm)
        t_base, got_base = timing.best_of(baseline, args.repeat)
        t_first, got_first = timing.best_of(first, args.repeat)
        t_hit, got_hit = timing.best_of(lambda: file_sha256(path, cache_dir=warm), max(5, args.repeat))
        assert got_base == got_first == got_hit == want, "the three ways disagree"
    fig = {
        "smoke": args.smoke, "mib": args.mib, "bytes": size, "repeat": args.repeat,
        "baseline_file_digest_s": t_base, "baseline_mib_per_s": args.mib / t_base,
        "first_hash_s": t_first, "first_hash_mib_per_s": args.mib / t_first,
        "cached_lookup_s": t_hit,
        "first_over_baseline": t_first / t_base,
        "lookup_over_first": t_hit / t_first,
        "conditions": conditions(start),
    }
    print(f"{args.mib} MiB file, in the page cache; best of {args.repeat}")
    print(f"{'step':44} {'wall ms':>10} {'MiB/s':>9}")
    for name, t in (("baseline: hashlib.file_digest", t_base), ("file_sha256, first (fresh cache)", t_first),
                    ("file_sha256, cached lookup", t_hit)):
        print(f"{name:44} {t * 1e3:10.2f} {args.mib / t:9.0f}")
    print(f"first / baseline = {fig['first_over_baseline']:.3f}; lookup / first = {fig['lookup_over_first']:.2e}")
    print(conditions_line(fig["conditions"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return fig


if __name__ == "__main__":
    main()
