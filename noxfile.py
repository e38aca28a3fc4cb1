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
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml, docs/) into build/site, as CI builds it: --strict fails on
    a broken link or anchor and on a page left out of the nav. `mkdocs serve` previews it."""
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Speed and memory benchmarks: ratios against a baseline measured in the same run. Each
    writes the conditions it ran under (torch threads, load average at the start and the end)
    beside its figures: on a shared machine they move the figures more than the code does."""
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
    # point ops at 1 and 2 torch threads: under load, 2 threads collapse (README, Benchmarks)
    session.run("python", "benchmarks/bench_pointops.py", "--threads", "1", "--json", "benchmarks/out/pointops-1t.json")
    session.run("python", "benchmarks/bench_pointops.py", "--threads", "2", "--json", "benchmarks/out/pointops-2t.json")
    session.run("python", "benchmarks/bench_render.py", "--json", "benchmarks/out/render.json")
    session.run("python", "benchmarks/bench_fewshot.py", "--json", "benchmarks/out/fewshot.json")
    # certificates: the first SHA-256 of a 1 GiB file against hashlib.file_digest, and the cached lookup
    session.run("python", "benchmarks/bench_filehash.py", "--json", "benchmarks/out/filehash.json")
    # the full linear probe (Table 7) on 262,144 × 1024 features: its peak memory above the features
    session.run("python", "benchmarks/bench_linear_probe.py", "--json", "benchmarks/out/linear_probe.json")
    session.run("python", "benchmarks/bench_distributed.py", "--json", "benchmarks/out/distributed.json")
    session.run("python", "benchmarks/bench_suite.py", "--command", "--json", "benchmarks/out/suite.json")
    session.run("python", "benchmarks/bench_gpu.py", "--json", "benchmarks/out/gpu.json")  # exits 0 without a GPU
    # issue 18: records + intervals + verdicts vs a task's wall time, the bootstrap at ImageNet's size, the envelope
    session.run("python", "benchmarks/bench_statistics.py", "--json", "benchmarks/out/statistics.json")
    # issue 19: fingerprinting inside a run vs --no-fingerprint (eva27 miniatures), standalone vs a plain decode
    session.run("python", "benchmarks/bench_fingerprint.py", "--json", "benchmarks/out/fingerprint.json")
    # the single-file HTML report of 10 models x 60 tasks: render time and size (docs/benchmarks.md)
    session.run("python", "benchmarks/bench_html.py", "--json", "benchmarks/out/html.json")
    # the views core against the commit before it, eva27 miniatures under best-of-both
    session.run("python", "benchmarks/bench_core.py", "--json", "benchmarks/out/core.json")
    # the demo from a wheel in a fresh virtual environment, against `import torch` (builds it: ~3 min)
    session.run("python", "benchmarks/bench_wheel.py", "--json", "benchmarks/out/wheel.json")


@nox.session(python=False)
def bench_smoke(session: nox.Session) -> None:
    """Every benchmark in its smoke mode (tiny sizes, about 1.5 minutes on 2 idle cores), as CI runs
    them: checks that they still run; the figures mean nothing."""
    session.run("python", ".ci/bench_smoke", *session.posargs)
