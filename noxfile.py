"""nox sessions. They run in the current environment (`pip install -e ".[dev]"` first):
torch is pinned to the build on this machine's disk, and a fresh venv per session would
copy several GB for nothing."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", "evalkit", "tests", "benchmarks", "noxfile.py")


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Speed and memory benchmarks: ratios against a baseline measured in the same run."""
    # the README's figures: 30 ImageNet class names x 80 templates (about 10 minutes on 2 cores,
    # most of it clip_benchmark's classifier)
    session.run("python", "benchmarks/bench_classification.py", "--classes", "30", "--images", "64",
                "--suite-images", "16", "--json", "benchmarks/out/classification.json")
    session.run("python", "benchmarks/bench_demo.py", "--json", "benchmarks/out/demo.json")
    session.run("python", "benchmarks/bench_eva27.py", "--baseline", "--json", "benchmarks/out/eva27.json")
    session.run("python", "benchmarks/bench_loader.py", "--json", "benchmarks/out/loader.json")
    # retrieval metrics at COCO's shape against clip_benchmark's evaluate (time, peak memory)
    session.run("python", "benchmarks/bench_retrieval.py", "--json", "benchmarks/out/retrieval.json")
    # video frames: seeking decode against a full decode (middle, uniform-8)
    session.run("python", "benchmarks/bench_video.py", "--json", "benchmarks/out/video.json")
    session.run("python", "benchmarks/bench_pointops.py", "--json", "benchmarks/out/pointops.json")
    session.run("python", "benchmarks/bench_render.py", "--json", "benchmarks/out/render.json")
    session.run("python", "benchmarks/bench_fewshot.py", "--json", "benchmarks/out/fewshot.json")
    session.run("python", "benchmarks/bench_distributed.py", "--json", "benchmarks/out/distributed.json")
    session.run("python", "benchmarks/bench_suite.py", "--command", "--json", "benchmarks/out/suite.json")
    session.run("python", "benchmarks/bench_gpu.py", "--json", "benchmarks/out/gpu.json")  # exits 0 without a GPU
    # the views core against the commit before it, eva27 miniatures under best-of-both
    session.run("python", "benchmarks/bench_core.py", "--json", "benchmarks/out/core.json")
    # the demo from a wheel in a fresh virtual environment, against `import torch` (builds it: ~3 min)
    session.run("python", "benchmarks/bench_wheel.py", "--json", "benchmarks/out/wheel.json")
