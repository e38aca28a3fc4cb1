"""The embedded default as a user of the wheel meets it: `evalkit run --model eva-clip-demo
--tasks demo` in a fresh process from a wheel installed in its own virtual environment, run from a
folder outside the repository, with no feature cache.

Baselines measured in the same run, in the same environment: `python -c "import torch"` (the
floor any torch tool pays) and `python -c "import torch, torchvision, open_clip"` (the imports the
demo cannot avoid). Reported: each command's wall time (median of --repeats), the import share of
the demo (imports / demo), and evalkit's own start-up (`evalkit --help`, `evalkit list tasks`).

    python benchmarks/bench_wheel.py [--venv DIR] [--repeats 3] [--smoke] [--json OUT]

Without --venv the wheel is built and installed into a new virtual environment in a temporary
folder (about 3 minutes, torch comes from this machine's disk); with --venv an existing one
(holding the wheel, e.g. kept from an earlier run with --keep-venv) is used as it is.

``--smoke``: the minimum that shows the benchmark still runs, in seconds rather than minutes: the
wheel built as above, but installed without its dependencies into a virtual environment that sees
this interpreter's packages (``--system-site-packages``; evalkit itself still comes from the
wheel, which is checked), one run of each command, the demo's first task on its first 8 samples; its
figures mean nothing. The conditions (torch threads, which each command gets
too, and the load average at the start and the end) are printed and written with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clocks import conditions, conditions_line

from evalkit.results import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def build_venv(folder: Path, smoke: bool = False) -> Path:
    """The wheel built and installed into a new virtual environment; ``smoke``: one that sees this
    interpreter's packages, the wheel installed into it alone (no dependencies to install)."""
    dist = folder / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-qq", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(REPO)], check=True)
    subprocess.run([sys.executable, "-m", "venv", *(["--system-site-packages"] if smoke else []), str(folder / "venv")],
                   check=True)
    wheel = next(dist.glob("evalkit-*.whl"))
    only = ["--no-deps", "--ignore-installed"] if smoke else []  # beside, not over, this interpreter's evalkit
    subprocess.run([str(folder / "venv" / "bin" / "python"), "-m", "pip", "install", "-qq", *only, str(wheel)],
                   check=True)
    return folder / "venv"


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", type=Path, help="an existing virtual environment with the evalkit wheel installed")
    ap.add_argument("--keep-venv", type=Path, help="build the environment in this folder and keep it")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each command; the median is reported")
    ap.add_argument("--smoke", action="store_true",
                    help="a quick environment, one run each, a small demo: checks that the benchmark runs; "
                         "its figures mean nothing")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    if args.smoke:
        args.repeats = 1
    start = conditions()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.venv:
            venv, build_s = args.venv, None
        else:
            t0 = time.perf_counter()
            venv = build_venv(args.keep_venv or tmp, args.smoke)
            build_s = time.perf_counter() - t0
        py, evalkit = str(venv / "bin" / "python"), str(venv / "bin" / "evalkit")
        where = subprocess.run([py, "-c", "import evalkit; print(evalkit.__file__)"], cwd=tmp, capture_output=True,
                               text=True, check=True).stdout.strip()
        if str(REPO) in where:
            raise SystemExit(f"evalkit is imported from the checkout ({where}), not from the wheel")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        env.update(HF_HUB_OFFLINE="1", EVALKIT_CACHE=str(tmp / "cache"))
        commands = {
            "import_torch": [py, "-c", "import torch"],
            "import_torch_torchvision_open_clip": [py, "-c", "import torch, torchvision, open_clip"],
            "evalkit_help": [evalkit, "--help"],
            "evalkit_list_tasks": [evalkit, "list", "tasks"],
            "demo": [evalkit, "run", "--model", "eva-clip-demo", "--tasks", "shapeworld-shape" if args.smoke else "demo",
                     "--output-dir", str(tmp / "out"), "--no-cache", "--quiet", *(["--limit", "8"] if args.smoke else [])],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):  # interleaved, so a busy moment hits every command alike
            for name, cmd in commands.items():
                times[name].append(timed(cmd, tmp, env))
        result = json.loads(next((tmp / "out" / "runs" / "eva-clip-demo").rglob("shapeworld-shape.json")).read_text())

    med = {name: statistics.median(ts) for name, ts in times.items()}
    fig = {
        "smoke": args.smoke,
        "wheel_install_s": build_s,
        "repeats": args.repeats,
        "median_s": med,
        "all_s": times,
        "import_torch_share_of_demo": med["import_torch"] / med["demo"],
        "import_share_of_demo": med["import_torch_torchvision_open_clip"] / med["demo"],
        "demo_minus_imports_s": med["demo"] - med["import_torch_torchvision_open_clip"],
        "demo_acc1": result["metrics"]["acc1"],
        "conditions": conditions(start),
    }
    print(f"wheel install: {build_s:.0f} s" if build_s is not None else "wheel install: reused " + str(args.venv))
    for name, value in med.items():
        print(f"{name:36s} {value:6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"imports (torch, torchvision, open_clip) = {fig['import_share_of_demo']:.0%} of the demo; "
          f"import torch alone = {fig['import_torch_share_of_demo']:.0%}; "
          f"the demo's own work {fig['demo_minus_imports_s']:.1f} s")
    print(conditions_line(fig["conditions"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
