"""The committed demo model still reaches its recorded numbers: the template of a CI regression job.

The recorded numbers are the demo model's claims (results/claims_demo.csv). A change to the model
code, the shard loader, the tokenizer, the transforms, the generator or the metrics that moves
any number by more than TOLERANCE points, or brings a retrieval recall within 10x of chance, fails here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evalkit.cli import main as cli

TOLERANCE = 0.5  # points of top-1; the run is deterministic, this only absorbs BLAS differences
CLAIMS = Path(__file__).resolve().parents[1] / "results" / "claims_demo.csv"


def _claims() -> dict[tuple[str, str, str], float]:
    """(task, metric, protocol) -> the recorded number (protocol: ``1frame`` / ``8frames`` for video)."""
    with CLAIMS.open() as f:
        return {(r["task"], r["metric"], r["protocol"]): float(r["claimed"])
                for r in csv.DictReader(f) if r["model"] == "eva-clip-demo"}


#: a video claim's protocol -> the result file (the 8-frame run is written beside the 1-frame one)
RESULT_FILE = {"": "{task}.json", "1frame": "{task}.json", "8frames": "{task}_uniform-8.json"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rc = cli.main(["run", "--model", "eva-clip-demo", "--tasks", "demo", "--output-dir", str(out),
                   "--quiet", "--no-cache"])
    assert rc == 0
    rc = cli.main(["run", "--model", "eva-clip-demo", "--tasks", "shapeworld-video", "--frames", "uniform-8",
                   "--output-dir", str(out), "--quiet", "--no-cache"])
    assert rc == 0
    return out


def _chance(metric: str, n_images: int) -> float:
    """Percent a random ranking scores: top-1 of 6 classes, or K of the scenes for recall@K
    (image->text: 5 of 5 x n captions are a scene's own, about the same K / n)."""
    if metric == "acc1":
        return 100 / 6
    if metric == "mean_recall":
        return 100 * (1 + 5 + 10) / 3 / n_images
    return 100 * int(metric.rsplit("@", 1)[1]) / n_images


def test_demo_reaches_recorded_numbers(demo_run):
    claims = _claims()
    assert {task for task, _, _ in claims} == {"shapeworld-shape", "shapeworld-colour", "shapeworld-retrieval",
                                               "shapeworld-video", "shapeworld-3d", "shapeworld-3d-fewshot"}
    assert {m for t, m, _ in claims if t == "shapeworld-3d-fewshot"} == {f"acc1@{k}shot" for k in (1, 2, 4, 8, 16)}
    assert {m for t, m, _ in claims if t == "shapeworld-retrieval"} == {
        f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)} | {"mean_recall"}
    assert {p for t, _, p in claims if t == "shapeworld-video"} == {"1frame", "8frames"}
    samples = {"shapeworld-retrieval": 500, "shapeworld-video": 96, "shapeworld-3d": 300, "shapeworld-3d-fewshot": 300}
    for (task, metric, protocol), claimed in claims.items():
        path = demo_run / "runs" / "eva-clip-demo" / RESULT_FILE[protocol].format(task=task)
        result = json.loads(path.read_text())
        verified = 100 * result["metrics"][metric]
        n = result["evalkit"]["samples"]
        # far above chance; video: the one middle frame misses the shape in half the clips
        if metric == "acc1" or metric.endswith("shot"):  # video: the one middle frame misses half the shapes
            floor = {"shapeworld-video": 100 / 6 + 25, "shapeworld-3d": 100 / 6 + 50}.get(task, 90.0)
        else:
            floor = 10 * _chance(metric, n)
        assert verified >= floor, f"{task} {metric}: {verified:.2f} is below {floor:.2f}"
        assert abs(verified - claimed) <= TOLERANCE, f"{task} {metric}: verified {verified:.2f} vs recorded {claimed:.2f}"
        assert result["evalkit"]["samples"] == samples.get(task, 1000)
        assert result["evalkit"]["skipped"] == 0
    # the demo's point: several frames see what one frame misses
    video = {p: v for (t, _, p), v in claims.items() if t == "shapeworld-video"}
    assert video["8frames"] >= video["1frame"] + 20


def test_report_marks_demo_reproduced_and_fails_on_drift(demo_run, tmp_path, capsys):
    assert cli.main(["report", "--output-dir", str(demo_run), "--model", "eva-clip-demo", "--fail-on-differ"]) == 0
    md = (demo_run / "claimed_vs_verified.md").read_text()
    assert "shapeworld-shape" in md and "| reproduced " in md
    # the same check against a claim the model does not reach exits non-zero: what CI relies on
    drift = tmp_path / "claims_drift.csv"
    rows = CLAIMS.read_text().splitlines()
    header, body = rows[0], [r.split(",") for r in rows[1:]]
    for r in body:
        r[3] = "99.99"
    drift.write_text("\n".join([header, *(",".join(r) for r in body)]) + "\n")
    capsys.readouterr()
    assert cli.main(["report", "--output-dir", str(demo_run), "--model", "eva-clip-demo",
                     "--claims", str(drift), "--fail-on-differ"]) == 1
    assert "claimed 99.99" in capsys.readouterr().err
