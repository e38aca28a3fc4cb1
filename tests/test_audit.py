"""The claim-arithmetic audit (issue 18 item 7, ``evalkit claims audit``): each check finds what it
must on small claims files and nothing where there is nothing, printed decimals come from the CSV
text, the command's exit codes and JSON, and the shipped claims are audited with the findings
checked against an independent recomputation (brute force over k, plain float means)."""

from __future__ import annotations

import csv
import json
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from evalkit import metric_table
from evalkit.cli import main as cli
from evalkit.reporting.audit import audit, audit_frame, decimals, read_claims
from evalkit.reporting.catalog import build_catalog, load_catalog
from evalkit.reporting.claims import default_claims_path
from evalkit.tasks.spec import TaskIndex

HEADER = "model,task,metric,claimed,transform,protocol,source,paper_model,paper_dataset,note\n"

# toy tasks: name -> (metric, protocol block)
TOY_TASKS = {
    "toy-a": ("acc1", "protocol: {expected_size: 581}"),
    "toy-b": ("acc1", "protocol: {table11_test_size: 7}"),
    "toy-c": ("acc1", "protocol: {expected_size: 1880}"),
    "toy-nosize": ("acc1", ""),
    "toy-ret": ("mean_recall", "protocol: {expected_size: 10, expected_captions: 50}"),
}
TOY_GROUP = """group: toy
tasks: [toy-a, toy-b, toy-c]
aggregate:
  - claim: TOY_AVG
  - name: toy-gap
    reduce: gap
    claim: TOY_GAP
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A task folder of toy tasks with test sizes and a group with a mean and a gap, on the task
    path evalkit reads; returns a writer of claims files."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name, (metric, protocol) in TOY_TASKS.items():
        (folder / f"{name}.yaml").write_text(
            f"task: {name}\nfamily: classification\nsource: {{type: folder, path: {name}}}\nmetric: {metric}\n{protocol}\n")
    (folder / "toy.yaml").write_text(TOY_GROUP)
    monkeypatch.setenv("EVALKIT_TASK_PATH", str(folder))
    index = TaskIndex.load([folder])
    catalog = build_catalog(index)

    def write(rows: list[str], name: str = "claims.csv") -> Path:
        path = tmp_path / name
        path.write_text(HEADER + "".join(r + "\n" for r in rows))
        return path

    def run(*paths: Path):
        return audit_frame(read_claims(list(paths), catalog=catalog), index=index, catalog=catalog,
                           files=[str(p) for p in paths])

    write.run = run  # type: ignore[attr-defined]
    return write


def row(model: str, task: str, metric: str, claimed: str, transform: str = "", protocol: str = "",
        note: str = "Table 1") -> str:
    return f"{model},{task},{metric},{claimed},{transform},{protocol},src,{model.upper()},{task.upper()},{note}"


def found(report, check: str) -> list[tuple[str, str, str]]:
    """(model, task, printed) of the first row of each finding of ``check``."""
    return [(f.rows[0]["model"], f.rows[0]["task"], f.rows[0]["claimed"]) for f in report.findings if f.check == check]


# --- independent recomputation -------------------------------------------------------------------

def brute_reachable(text: str, n: int, per: int = 1) -> bool:
    """Whether some m in 0..per·n, printed as 100·m/(per·n) to the decimals of ``text`` under
    half-even or half-up rounding, gives ``text``: every count tried, no interval algebra."""
    quantum = Decimal(1).scaleb(Decimal(text).as_tuple().exponent)
    target = Decimal(text)
    for m in range(per * n + 1):
        value = Decimal(100 * m) / Decimal(per * n)
        if any(value.quantize(quantum, rounding=r) == target for r in (ROUND_HALF_EVEN, ROUND_HALF_UP)):
            return True
    return False


def dec(text: str) -> int:
    """Decimals of a plain printed number, counted on its text."""
    return len(text.partition(".")[2])


# --- decimals from the text ----------------------------------------------------------------------

def test_printed_decimals_come_from_the_text_not_the_float():
    assert [decimals(t) for t in ("91.60", "91.6", "92", "0.125", "100.0")] == [2, 1, 0, 3, 1]


def test_12_50_and_12_5_are_different_claims(toy):
    # N = 581: 73/581 = 12.565 rounds to 12.6 and 72/581 = 12.392 to 12.4, so neither 12.5 nor
    # 12.50 is reachable; for 58.9 and 58.90: 342/581 = 58.864 -> 58.9, but no k/581 is 58.90
    report = toy.run(toy([row("m", "toy-a", "acc1", "58.9"), row("n", "toy-a", "acc1", "58.90")]))
    assert found(report, "reachable") == [("n", "toy-a", "58.90")]
    assert brute_reachable("58.9", 581) and not brute_reachable("58.90", 581)
    # on N = 1880 the 2-decimal 12.50 is reachable (235/1880) and so is 12.5; 12.51 is not
    report = toy.run(toy([row("m", "toy-c", "acc1", "12.5"), row("n", "toy-c", "acc1", "12.50"),
                          row("o", "toy-c", "acc1", "12.51")]))
    assert found(report, "reachable") == [("o", "toy-c", "12.51")]


# --- a. k/N --------------------------------------------------------------------------------------

def test_reachable_agrees_with_brute_force_over_every_count(toy):
    values = [f"{x / 10:.1f}" for x in range(550, 700)] + [f"{x / 100:.2f}" for x in range(6000, 6100)]
    report = toy.run(toy([row(f"m{i}", "toy-a", "acc1", v) for i, v in enumerate(values)]))
    flagged = {f.rows[0]["claimed"] for f in report.findings if f.check == "reachable"}
    expected = {v for v in values if not brute_reachable(v, 581)}
    assert flagged == expected
    assert 0 < len(expected) < len(values)  # the sample holds both kinds
    assert report.summary["checks"]["reachable"]["checked"] == len(values)


def test_mean_of_top1_and_top5_counts_over_2n_and_recalls_over_their_queries(toy):
    # N = 7: 7.1 is 1/14 (a mean of top-1 and top-5 can be), never k/7
    report = toy.run(toy([row("m", "toy-b", "acc1", "7.1"), row("m", "toy-b", "mean_acc1_acc5", "7.1"),
                          row("m", "toy-b", "acc5", "14.3")]))
    assert found(report, "reachable") == [("m", "toy-b", "7.1")]
    assert report.findings[0].rows[0]["metric"] == "acc1"
    assert not brute_reachable("7.1", 7) and brute_reachable("7.1", 7, per=2)
    # image->text recall: one query per image (10); text->image: one per caption (50)
    report = toy.run(toy([row("m", "toy-ret", "text_retrieval_recall@1", "12.0"),
                          row("m", "toy-ret", "image_retrieval_recall@1", "12.0")]))
    assert [f.rows[0]["metric"] for f in report.findings] == ["text_retrieval_recall@1"]


def test_a_claim_without_a_test_size_or_an_average_is_counted_as_not_checked(toy):
    report = toy.run(toy([row("m", "toy-nosize", "acc1", "12.34"), row("m", "TOY_AVG", "mean", "50.0")]))
    stats = report.summary["checks"]["reachable"]
    assert stats["checked"] == 0 and not found(report, "reachable")
    reasons = stats["skipped"]
    assert sum(reasons.values()) == 2
    assert any("no test size" in r and "toy-nosize" in r for r in reasons)
    assert any("an average" in r for r in reasons)


# --- b. averages ---------------------------------------------------------------------------------

PARTS = [("toy-a", "80.1"), ("toy-b", "70.2"), ("toy-c", "60.4")]


@pytest.mark.parametrize("printed", ["70.2", "70.3", "70.1", "70.4", "70.0", "70.23", "70.25", "70.33", "70.34"])
def test_an_average_is_the_mean_of_its_printed_parts_within_rounding(toy, printed):
    rows = [row("m", t, "acc1", v) for t, v in PARTS] + [row("m", "TOY_AVG", "mean", printed)]
    report = toy.run(toy(rows))
    # independent: the metric table's reduction on floats, the rule's tolerance written out
    mean = metric_table.reduce("mean", [float(v) for _, v in PARTS])
    tolerance = 0.5 * 10 ** -dec(printed) + 0.5 * 10 ** -1
    expect = abs(mean - float(printed)) > tolerance + 1e-9
    assert bool(found(report, "average")) == expect, (printed, mean, tolerance)
    assert report.summary["checks"]["average"]["checked"] == 1


def test_the_boundary_of_the_rule_is_inclusive(toy):
    # parts 10.0, 10.0, 10.3 average exactly 10.1: 10.2 is 0.1 away, the tolerance of 1-decimal
    # parts and a 1-decimal average; 10.25 (2 decimals) is 0.15 away with 0.055 allowed
    parts = [row("m", t, "acc1", v) for t, v in (("toy-a", "10.0"), ("toy-b", "10.0"), ("toy-c", "10.3"))]
    assert not found(toy.run(toy([*parts, row("m", "TOY_AVG", "mean", "10.2")])), "average")
    assert found(toy.run(toy([*parts, row("m", "TOY_AVG", "mean", "10.25")])), "average")


@pytest.mark.parametrize("printed,finding", [("5.0", False), ("5.1", False), ("4.9", False), ("5.2", True), ("4.8", True)])
def test_a_gap_is_the_first_part_minus_the_mean(toy, printed, finding):
    parts = [("toy-a", "80.0"), ("toy-b", "75.0"), ("toy-c", "70.0")]  # 80 - 75 = 5.0
    rows = [row("m", t, "acc1", v) for t, v in parts] + [row("m", "TOY_GAP", "gap", printed)]
    report = toy.run(toy(rows))
    gap = metric_table.reduce("gap", [float(v) for _, v in parts])
    assert gap == pytest.approx(5.0)
    # 1-decimal gap, three 1-decimal parts weighted 2/3, 1/3, 1/3: tolerance 0.05 + (4/3)·0.05
    assert (abs(gap - float(printed)) > 0.05 + 4 / 3 * 0.05 + 1e-9) == finding
    assert bool(found(report, "average")) == finding


def test_parts_come_from_the_same_model_transform_and_setting_and_missing_parts_are_listed(toy):
    rows = [row("m", t, "acc1", v, "crop") for t, v in PARTS]
    rows += [row("m", t, "acc1", "99.9", "squash") for t, _ in PARTS]  # another transform: not its parts
    rows += [row("m", "TOY_AVG", "mean", "70.2", "crop", note="Table 9")]
    rows += [row("other", "toy-a", "acc1", "50.0"), row("other", "TOY_AVG", "mean", "10.0")]  # parts missing
    report = toy.run(toy(rows))
    assert not found(report, "average")
    stats = report.summary["checks"]["average"]
    assert stats["checked"] == 1
    [incomplete] = stats["incomplete"]
    assert incomplete["row"]["model"] == "other" and incomplete["missing"] == ["toy-b acc1", "toy-c acc1"]


def test_a_derived_metrics_printed_parts_are_checked(toy):
    recalls = {"text_retrieval_recall@1": "20.0", "text_retrieval_recall@5": "40.0",
               "image_retrieval_recall@1": "10.0", "image_retrieval_recall@5": "30.0"}  # mean 25.0
    rows = [row("m", "toy-ret", m, v) for m, v in recalls.items()]
    assert not found(toy.run(toy([*rows, row("m", "toy-ret", "mean_recall", "25.0")])), "average")
    assert found(toy.run(toy([*rows, row("m", "toy-ret", "mean_recall", "26.0")])), "average")


# --- c. the same number everywhere ---------------------------------------------------------------

def test_the_same_claim_in_two_files_or_with_a_provenance_tag_must_be_the_same_number(toy):
    a = toy([row("m", "toy-c", "acc1", "80.1", note="Table 2")], "a.csv")
    same = toy([row("m", "toy-c", "acc1", "80.10", note="Table 6")], "same.csv")
    other = toy([row("m", "toy-c", "acc1", "80.2", note="Table 6")], "other.csv")
    assert not found(toy.run(a, same), "repeat")
    report = toy.run(a, other)
    [f] = [f for f in report.findings if f.check == "repeat"]
    assert {r["table"] for r in f.rows} == {"Table 2", "Table 6"} and {r["claimed"] for r in f.rows} == {"80.1", "80.2"}
    # one file: the rows differ in a provenance tag only (the same measurement, printed twice)
    report = toy.run(toy([row("m", "toy-c", "acc1", "80.1"), row("m", "toy-c", "acc1", "80.3", protocol="reported")]))
    assert found(report, "repeat")
    # another transform or setting is another measurement
    report = toy.run(toy([row("m", "toy-c", "acc1", "80.1", "crop"), row("m", "toy-c", "acc1", "80.3", "squash"),
                          row("m", "toy-c", "acc1", "80.5", "crop", "8frames")]))
    assert not found(report, "repeat")


# --- d. ranges -----------------------------------------------------------------------------------

def test_a_percentage_outside_0_100_and_a_top5_below_the_top1_are_findings(toy):
    report = toy.run(toy([row("m", "toy-c", "acc1", "100.1"), row("n", "toy-c", "acc1", "-0.5"),
                          row("o", "toy-c", "acc1", "100.0"), row("o", "TOY_GAP", "gap", "-3.0")]))
    assert sorted(found(report, "range")) == [("m", "toy-c", "100.1"), ("n", "toy-c", "-0.5")]
    report = toy.run(toy([row("m", "toy-c", "acc1", "80.5"), row("m", "toy-c", "acc5", "80.4"),
                          row("n", "toy-c", "acc1", "80.5"), row("n", "toy-c", "acc5", "80.5"),
                          row("o", "toy-c", "acc1", "80.05"), row("o", "toy-c", "acc5", "80.0"),
                          row("p", "toy-ret", "image_retrieval_recall@1", "50.0"),
                          row("p", "toy-ret", "image_retrieval_recall@10", "49.0")]))
    # o: 80.05 (2 decimals) and 80.0 (1) can be one value; p: a recall@10 below recall@1
    assert sorted(f.rows[0]["model"] for f in report.findings if f.check == "range") == ["m", "p"]


# --- the command ---------------------------------------------------------------------------------

def test_the_command_exits_0_clean_1_on_a_finding_2_on_a_bad_file(toy, capsys):
    clean = toy([row("m", "toy-c", "acc1", "12.5")], "clean.csv")
    assert cli.main(["claims", "audit", "--claims", str(clean)]) == 0
    assert "no findings" in capsys.readouterr().out

    bad = toy([row("m", "toy-c", "acc1", "12.5"), row("m", "toy-c", "acc1", "12.51", "crop")], "bad.csv")
    assert cli.main(["claims", "audit", "--claims", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "12.51" in out and f"{bad} line 3" in out

    assert cli.main(["claims", "audit", "--claims", str(clean), "--claims", str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"findings", "summary"}
    [f] = data["findings"]
    assert f["check"] == "reachable" and f["rows"][0]["origin"] == f"{bad}:3"
    assert {"table", "model", "dataset", "metric", "claimed"} <= set(f["rows"][0])
    assert data["summary"]["files"] == [str(clean), str(bad)] and data["summary"]["findings"] == 1

    broken = toy([row("m", "toy-c", "acc1", "12.5"), row("m", "toy-c", "acc1", "n/a")], "broken.csv")
    assert cli.main(["claims", "audit", "--claims", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}:3" in err and "not a number" in err
    assert cli.main(["claims", "audit", "--claims", str(broken.parent / "absent.csv")]) == 2
    assert "absent.csv" in capsys.readouterr().err
    binary = broken.parent / "latin1.csv"
    binary.write_bytes((HEADER + row("m", "toy-c", "acc1", "12.5", note="Tabl\xe9 2") + "\n").encode("latin-1"))
    assert cli.main(["claims", "audit", "--claims", str(binary)]) == 2
    err = capsys.readouterr().err
    assert f"{binary}:2: not UTF-8" in err and "internal error" not in err


# --- the shipped claims --------------------------------------------------------------------------

def _shipped_rows() -> list[dict[str, str]]:
    out = []
    for path in sorted(default_claims_path().parent.glob("claims*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            out += list(csv.DictReader(f))
    return out


def test_the_shipped_claims_audit_names_its_rows_and_agrees_with_a_recomputation():
    report = audit()
    assert report.exit_code == (1 if report.findings else 0)
    for f in report.findings:
        for r in f.rows:
            assert r["table"] and r["model"] and r["dataset"] and r["claimed"], f
    rows = _shipped_rows()
    index = TaskIndex.load()

    # k/N on the small test sets (where one decimal can miss): brute force over every count
    small = {}
    for name in ("scanobjectnn", "modelnet40", "dtd", "renderedsst2"):
        spec = index.lookup(name)
        if spec is not None and spec.protocol.get("expected_size"):
            small[name] = int(spec.protocol["expected_size"])
    assert small
    expect = {(r["model"], r["task"], r["claimed"]) for r in rows
              if r["task"] in small and r["metric"] == "acc1"
              and not brute_reachable(r["claimed"], small[r["task"]])
              and not (index.lookup(r["task"]).protocol.get("table11_test_size")
                       and brute_reachable(r["claimed"], int(index.lookup(r["task"]).protocol["table11_test_size"])))}
    got = {k for k in found(report, "reachable") if k[1] in small}
    assert got == expect

    # printed averages: plain float means of the rows of the same model, transform and protocol
    catalog = load_catalog()
    aggregates = {a.claim: a for a in catalog.aggregates if a.claim}
    by_key = {(r["model"], r["task"], r["metric"], r["transform"], r["protocol"]): r["claimed"] for r in rows}
    expect_avg = set()
    checked = 0
    for r in rows:
        agg = aggregates.get(r["task"])
        if agg is None:
            continue
        parts = [by_key.get((r["model"], t, m, r["transform"], r["protocol"])) for t, m in agg.members]
        if None in parts:
            continue
        checked += 1
        value = metric_table.reduce(agg.reduce, [float(p) for p in parts])
        weights = [1 / len(parts)] * len(parts) if agg.reduce == "mean" else \
            [1 - 1 / len(parts)] + [1 / len(parts)] * (len(parts) - 1)
        tol = 0.5 * 10 ** -dec(r["claimed"]) + sum(w * 0.5 * 10 ** -dec(p) for w, p in zip(weights, parts, strict=True))
        if abs(value - float(r["claimed"])) > tol + 1e-9:
            expect_avg.add((r["model"], r["task"], r["claimed"]))
    assert checked >= 10
    got_avg = {k for k in found(report, "average") if k[1] in aggregates}
    assert got_avg == expect_avg

    # percentages: every printed value in range unless the audit says so
    out_of_range = {(r["model"], r["task"], r["claimed"]) for r in rows
                    if not (-100 if r["metric"] == "gap" else 0) <= float(r["claimed"]) <= 100}
    assert set(found(report, "range")) >= out_of_range
