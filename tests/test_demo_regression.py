"""The committed demo model still reaches its recorded numbers: the template of a CI regression job.

The recorded numbers are the demo model's claims (results/claims_demo.csv). A change to the model
code, the shard loader, the tokenizer, the transforms, the generator or the metrics that moves
either number by more than TOLERANCE points fails here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evalkit import cli

TOLERANCE = 0.5  # points of top-1; the run is deterministic, this only absorbs BLAS differences
CLAIMS = Path(__file__).resolve().parents[1] / "results" / "claims_demo.csv"


def _claims() -> dict[str, float]:
    with CLAIMS.open() as f:
        return {r["task"]: float(r["claimed"]) for r in csv.DictReader(f) if r["model"] == "eva-clip-demo"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rc = cli.main(["run", "--model", "eva-clip-demo", "--tasks", "demo", "--output-dir", str(out),
                   "--quiet", "--no-cache"])
    assert rc == 0
    return out


def test_demo_reaches_recorded_numbers(demo_run):
    claims = _claims()
    assert set(claims) == {"shapeworld-shape", "shapeworld-colour"}
    for task, claimed in claims.items():
        result = json.loads((demo_run / "runs" / "eva-clip-demo" / f"{task}.json").read_text())
        verified = 100 * result["metrics"]["acc1"]
        assert verified >= 90.0, f"{task}: {verified:.2f} is below the 90% floor"
        assert abs(verified - claimed) <= TOLERANCE, f"{task}: verified {verified:.2f} vs recorded {claimed:.2f}"
        assert result["evalkit"]["samples"] == 1000 and result["evalkit"]["skipped"] == 0


def test_report_marks_demo_verified_and_fails_on_drift(demo_run, tmp_path, capsys):
    assert cli.main(["report", "--output-dir", str(demo_run), "--model", "eva-clip-demo", "--fail-on-differ"]) == 0
    md = (demo_run / "claimed_vs_verified.md").read_text()
    assert "shapeworld-shape" in md and "verified" in md
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
