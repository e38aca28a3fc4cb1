"""The per-paper view (`evalkit report --paper ID`, evalkit/reporting/paper.py): the claims of a
paper arranged as the paper's own tables, in its row and column order (results/claims.csv's order,
results/paper_tables.yaml where the paper's differs), each cell holding the claim's verdict."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml

from evalkit.cli.main import main
from evalkit.reporting import report
from evalkit.reporting.claims import load_claims
from evalkit.reporting.paper import (
    SHARED_MARK,
    UnknownPaperError,
    load_layout,
    paper_markdown,
    paper_tables,
    papers,
)
from evalkit.results import TaskResult, write_result

REPO = Path(__file__).resolve().parents[1]
CLAIMS_CSV = REPO / "results" / "claims.csv"
LAYOUT = REPO / "results" / "paper_tables.yaml"
PAPER = "2402.04252"
HEADER = "model,task,metric,claimed,transform,protocol,source,paper_model,paper_dataset,note\n"

# the paper's own order (arXiv:2402.04252 v1, Table 2; the claims file lists it in this order)
TABLE2_ROWS = ["EVA-01-CLIP-g/14", "EVA-01-CLIP-g/14+", "OpenCLIP-G/14", "InternVL-C", "DFN5B-CLIP-H/14@224",
               "EVA-02-CLIP-E/14+", "DFN5B-CLIP-H/14+@378", "EVA-CLIP-8B", "EVA-CLIP-18B"]
TABLE2_FIRST_COLUMNS = ["ImageNet-1K", "ImageNet-V2", "ImageNet-A", "ImageNet-R", "ImageNet-Sketch", "ObjectNet",
                        "CIFAR-10", "CIFAR-100", "MNIST", "Caltech101"]
PAPER_TABLES = ["Table 2", "Table 3", "Table 5", "Table 6a", "Table 6b", "Table 7", "Table 8", "Table 10",
                "Table 14a", "Table 14b", "Table 14c"]


def _result(out: Path, model: str, task: str, metrics: dict[str, float], **evalkit) -> None:
    write_result(TaskResult(dataset=task, model=model, pretrained="test", task="zeroshot_classification",
                            metrics=metrics, evalkit=evalkit), out)


def _tables(out: Path, claims=None, paper: str = PAPER):
    claims = load_claims() if claims is None else claims
    return paper_tables(report.verified_table(out, claims), paper, report.aggregate_table(out, claims))


def _by_name(tables):
    return {t.name: t for t in tables}


def _csv_order(table: str, column: str) -> list[str]:
    """The repository's claims file, as read by hand: ``column`` in order of first appearance
    within ``table``."""
    with CLAIMS_CSV.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["note"].split(";")[0].strip() == table]
    return list(dict.fromkeys(r[column] for r in rows))


@pytest.fixture(scope="module")
def empty_tables(tmp_path_factory):
    out = tmp_path_factory.mktemp("empty")
    (out / "runs").mkdir()
    return _tables(out)


def test_table2_rows_and_columns_are_the_papers(empty_tables):
    tables = _by_name(empty_tables)
    assert [t.name for t in empty_tables][:len(PAPER_TABLES)] == PAPER_TABLES  # the paper's order, 6a before 10
    t2 = tables["Table 2"]
    assert t2.rows == TABLE2_ROWS == _csv_order("Table 2", "paper_model")
    assert t2.columns[:len(TABLE2_FIRST_COLUMNS)] == TABLE2_FIRST_COLUMNS
    assert t2.columns == _csv_order("Table 2", "paper_dataset") and t2.columns[-1] == "AVG27" and len(t2.columns) == 28
    cell = t2.cells[("EVA-CLIP-18B", "ImageNet-1K")]
    assert (cell.model, cell.task, cell.metric, cell.claimed, cell.status) == \
        ("eva-clip-18b", "imagenet1k", "acc1", 83.8, "not run") and math.isnan(cell.verified)
    avg = t2.cells[("EVA-CLIP-18B", "AVG27")]  # the aggregate is a cell of the same table
    assert (avg.task, avg.metric, avg.claimed, avg.status) == ("AVG27", "mean", 80.7, "not run")


def test_every_claim_of_the_paper_is_one_cell_of_its_own_table(empty_tables):
    """Nothing lost, nothing twice: each claim of the paper is exactly one cell not marked as shared."""
    with CLAIMS_CSV.open(newline="", encoding="utf-8") as f:
        mine = [r for r in csv.DictReader(f) if r["source"] == f"arXiv:{PAPER}"]
    own = [(t.name, c.task, c.metric, c.claimed) for t in empty_tables for c in t.cells.values() if not c.shared_from]
    expected = [(r["note"].split(";")[0].strip(), r["task"], r["metric"], float(r["claimed"])) for r in mine]
    assert sorted(own) == sorted(expected)
    assert all(c.status == "not run" for t in empty_tables for c in t.cells.values())  # the checklist


def test_the_layout_file_gives_the_papers_order_where_the_claims_do_not(empty_tables):
    tables = _by_name(empty_tables)
    t3 = tables["Table 3"]  # by direction (image→text, then text→image), then dataset
    assert t3.columns[:4] == ["Flickr30K-1K/text_retrieval_recall@1", "Flickr30K-1K/text_retrieval_recall@5",
                              "Flickr30K-1K/text_retrieval_recall@10", "COCO-5K/text_retrieval_recall@1"]
    assert t3.columns[-1] == "RETRIEVAL_MR" and t3.label(t3.columns[0]) == "Flickr30K-1K image→text R@1"
    assert t3.cells[("EVA-CLIP-18B", "COCO-5K/text_retrieval_recall@1")].claimed == 73.6
    t6a = tables["Table 6a"]
    assert t6a.rows == _csv_order("Table 6a", "paper_model")
    assert t6a.columns == ["ImageNet-1K", "ImageNet-A", "ImageNet-R", "ImageNet-V2", "ImageNet-Sketch", "ObjectNet",
                           "ROBUST_DELTA", "ROBUST_AVG6"]
    shared = t6a.cells[("EVA-CLIP-18B", "ImageNet-A")]  # Table 2's claim, printed again
    assert (shared.claimed, shared.shared_from, shared.task) == (87.3, "Table 2", "imagenet-a")
    assert not t6a.cells[("BASIC-L(reported)", "ImageNet-A")].shared_from  # 6a's own
    t10 = tables["Table 10"]
    assert t10.rows == ["EVA-CLIP-8B", "EVA-CLIP-8B+@448", "EVA-CLIP-18B", "EVA-CLIP-18B+@336"]
    assert t10.cells[("EVA-CLIP-8B", "ROBUST_AVG6")].shared_from == "Table 6a"
    t6b = tables["Table 6b"]
    assert len(t6b.columns) == 19 and t6b.cells[("BASIC-L(reported)", "ImageNet-1K")].shared_from == "Table 6a"


def test_every_row_and_column_the_layout_names_exists_and_none_is_left_over(empty_tables):
    """A typo in paper_tables.yaml would leave an empty row or column out silently: each name it
    lists is in the built table, and a table it orders has no column beyond its list."""
    tables = _by_name(empty_tables)
    layout = load_layout(LAYOUT)[PAPER]["tables"]
    assert set(layout) <= set(tables)
    for name, spec in layout.items():
        for key in ("rows", "columns"):
            if spec.get(key):
                assert getattr(tables[name], key) == spec[key], (name, key)
        for source in spec.get("shared_from", []):
            assert source in tables, (name, source)
    assert yaml.safe_load(LAYOUT.read_text())["papers"].keys() == {PAPER}
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert LAYOUT.name in globs["evalkit._claims"], "the layout file ships in the wheel beside the claims"


def test_one_models_view_has_its_rows_only(tmp_path):
    """`--model M`: the paper's tables with M's rows; a row the layout names that no claim fills
    (Table 10's EVA-CLIP-8B) is left out, as is a table M has no claim in."""
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    claims = load_claims()
    tables = _by_name(paper_tables(report.verified_table(out, claims, model="eva-clip-18b"), PAPER,
                                   report.aggregate_table(out, claims, model="eva-clip-18b")))
    assert tables["Table 10"].rows == ["EVA-CLIP-18B", "EVA-CLIP-18B+@336"]
    assert tables["Table 2"].rows == ["EVA-CLIP-18B"] and len(tables["Table 2"].columns) == 28
    assert "Table 8" not in tables  # Uni3D students only


def test_a_result_fills_its_cells_with_the_verdict(tmp_path, capsys):
    """A demo-like folder: one best-of-both ImageNet result of EVA-CLIP-18B fills Table 2's cell,
    the same claim in Table 6a (shared) and Table 14a's two transforms; a model only in the results
    is not in the view; the CLI writes paper_<ID>.md with every table."""
    out = tmp_path / "out"
    _result(out, "eva-clip-18b", "imagenet1k", {"acc1": 0.8381, "acc1@crop": 0.8368, "acc1@squash": 0.8381},
            transform="best-of-both", evaluated=50000)
    _result(out, "not-in-the-paper", "cifar10", {"acc1": 0.9}, evaluated=10000)
    tables = _by_name(_tables(out))
    cell = tables["Table 2"].cells[("EVA-CLIP-18B", "ImageNet-1K")]
    assert math.isclose(cell.verified, 83.81) and cell.status == "reproduced"
    assert cell.ci_low < 83.81 < cell.ci_high
    assert tables["Table 6a"].cells[("EVA-CLIP-18B", "ImageNet-1K")].status == "reproduced"
    crop = tables["Table 14a"].cells[("EVA-CLIP-18B[resize_shortest+center_crop]", "ImageNet-1K")]
    assert math.isclose(crop.verified, 83.68) and crop.status == "reproduced"  # 83.7 claimed
    assert tables["Table 2"].cells[("EVA-CLIP-8B", "ImageNet-1K")].status == "not run"
    assert not any("not-in-the-paper" in c.model for t in tables.values() for c in t.cells.values())

    assert main(["report", "--paper", f"arXiv:{PAPER}", "--output-dir", str(out)]) == 0
    path = out / f"paper_{PAPER}.md"
    # the markdown, then the HTML report with the paper's tables (evalkit.reporting.html)
    assert capsys.readouterr().out.split() == [str(path), str(out / "report.html")]
    assert 'id="paper"' in (out / "report.html").read_text()
    md = path.read_text()
    for name in [*PAPER_TABLES, "EVA-CLIP-18B README (EVA-CLIP-8B-448)"]:
        assert f"\n## {name}\n" in md
    row = next(line for line in md.splitlines() if line.startswith("| EVA-CLIP-18B ") and "83.81" in line)
    assert f"83.81 [{cell.ci_low:.2f}, {cell.ci_high:.2f}] ✓ / 83.8 " in row  # verified [ci] symbol / claimed
    assert "| — / 77.9 " in row  # ImageNet-V2: not run
    assert "✓ `reproduced`" in md and "– `not run`" in md  # the legend: each symbol with its word
    assert f"83.81 [{cell.ci_low:.2f}, {cell.ci_high:.2f}] ✓ / 83.8{SHARED_MARK}" in md  # Table 6a's copy
    assert "not-in-the-paper" not in md


def test_an_unknown_paper_is_an_error_listing_the_papers(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    claims = load_claims()
    table = report.verified_table(out, claims)
    assert papers(table) == [PAPER, "2303.15389"]
    with pytest.raises(UnknownPaperError, match=r"arXiv:9999\.00001.*papers with claims: 2402\.04252, 2303\.15389"):
        paper_tables(table, "9999.00001")
    assert main(["report", "--paper", "9999.00001", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("evalkit: error: --paper 9999.00001: no claim comes from arXiv:9999.00001") and PAPER in err
    assert not (out / "paper_9999.00001.md").exists()


def test_order_is_the_claims_files_not_the_reports(tmp_path):
    """The report sorts by model and task; the paper view keeps the claims file's order, makes a
    column per metric where one dataset has several, and a table without layout keeps its own."""
    claims_path = tmp_path / "claims.csv"
    claims_path.write_text(HEADER + (
        "zz,mnist,acc1,70.0,,,arXiv:1111.22222,Zed,MNIST,Table 1\n"
        "zz,cifar10,acc1,90.0,,,arXiv:1111.22222,Zed,CIFAR-10,Table 1\n"
        "aa,mnist,acc1,60.0,,,arXiv:1111.22222,Aye,MNIST,Table 1; a remark\n"
        "aa,flickr30k,image_retrieval_recall@1,50.0,,,arXiv:1111.22222,Aye,F30K,Table 1\n"
        "aa,flickr30k,text_retrieval_recall@1,60.0,,,arXiv:1111.22222,Aye,F30K,Table 1\n"
        "aa,cifar10,acc1,91.0,,,arXiv:1111.22222,Aye,CIFAR-10,Table 12\n"
        "aa,dtd,acc1,50.0,,,mine,Aye,DTD,Table 1\n"
    ))
    claims = load_claims(claims_path)
    out = tmp_path / "out"
    _result(out, "aa", "mnist", {"acc1": 0.50}, evaluated=10000)
    tables = _tables(out, claims, paper="1111.22222")
    assert [t.name for t in tables] == ["Table 1", "Table 12"]
    t1 = tables[0]
    assert t1.rows == ["Zed", "Aye"] and t1.columns == ["MNIST", "CIFAR-10", "F30K/image_retrieval_recall@1",
                                                          "F30K/text_retrieval_recall@1"]
    assert ("Aye", "CIFAR-10") not in t1.cells  # a claim of Table 12, and Table 1 shares nothing
    assert t1.cells[("Aye", "MNIST")].status == "differs"
    md = paper_markdown(tables)
    assert "- Aye — MNIST: a remark" in md and "✗ / 60.0" in md
    assert "| Zed " in md and md.index("| Zed ") < md.index("| Aye ")

    layout = {"1111.22222": {"labels": {"image_retrieval_recall@1": "t→i R@1"},
                             "tables": {"Table 1": {"rows": ["Aye"], "columns": ["CIFAR-10", "Nowhere", "MNIST"]}}}}
    t1 = paper_tables(report.verified_table(out, claims), "1111.22222", layout=layout)[0]
    assert t1.rows == ["Aye", "Zed"]  # the layout's order, then the rest in the claims' order
    assert t1.columns == ["CIFAR-10", "MNIST", "F30K/image_retrieval_recall@1", "F30K/text_retrieval_recall@1"]
    assert t1.label("F30K/image_retrieval_recall@1") == "F30K t→i R@1"
