"""What `evalkit run` and the benchmarks write into a checkout is git-ignored; what the repository
ships beside it (results/claims*.csv) is not. The repository's .gitignore is checked by git itself,
in a throwaway repository of its own (so the test needs no checkout, only git)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from evalkit.results import result_path, run_log_path

REPO = Path(__file__).resolve().parents[1]


def _ignored(tmp_path: Path, paths: list[str]) -> set[str]:
    git = shutil.which("git")
    assert git is not None, "git is needed to read .gitignore as git does"
    subprocess.run([git, "init", "-q", str(tmp_path)], check=True)
    shutil.copyfile(REPO / ".gitignore", tmp_path / ".gitignore")
    done = subprocess.run([git, "check-ignore", "--no-index", "--stdin"], cwd=tmp_path, input="\n".join(paths),
                          capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr  # 1: none ignored
    return set(done.stdout.split())


def test_run_outputs_are_ignored_and_shipped_files_are_not(tmp_path):
    written = [
        run_log_path("results").as_posix(),  # evalkit run's default output folder
        run_log_path("results/fp16").as_posix(),  # another --output-dir under results/
        result_path("results", "eva-clip-demo", "shapeworld-shape").as_posix(),
        result_path("results", "eva-clip-demo", "shapeworld-shape", variant="int8").as_posix(),
        "benchmarks/out/gpu.json",
    ]
    shipped = ["results/claims.csv", "results/claims_demo.csv", "README.md", "tasks/demo/demo.yaml"]
    ignored = _ignored(tmp_path, written + shipped)
    assert ignored == set(written), {"not ignored": set(written) - ignored, "wrongly ignored": ignored & set(shipped)}
