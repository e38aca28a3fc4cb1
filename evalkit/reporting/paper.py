"""The per-paper view: a paper's claims arranged as the paper's own tables (``evalkit report
--paper 2402.04252``), in its row and column order, so a reader can hold the report next to the PDF.

The layout is data. A claim's ``source`` names its paper (``arXiv:<ID>``), the first ``;``-part of
its ``note`` its table (``Table 2``), its ``paper_model`` the row and its ``paper_dataset`` the
column (``<dataset>/<metric>`` where one dataset has several metrics in that table); rows and
columns come in the order the claims file first lists them within the table. Where that is not
the paper's order, or where a table prints again numbers another table holds (Table 6a repeats
Table 2's ImageNet columns), ``paper_tables.yaml`` beside the claims says so
(:func:`load_layout`). The paper's aggregates (``AVG27``, the robustness average ...) are cells of
the same tables, from :func:`evalkit.reporting.report.aggregate_table`.

Each cell is one claim and its verdict from :func:`evalkit.reporting.report.verified_table`; a
model with several runs (variants) shows its first, the default variant. A model that is only in
the results, with no claim of the paper, is not in the view; a claim without a result is a
``not run`` cell: with no results at all the view is the reader's checklist.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tabulate import tabulate

from evalkit.errors import EvalkitError, OptionError
from evalkit.reporting.verdicts import MEANING, VERDICTS
from evalkit.resources import claims_dir
from evalkit.results import atomic_write_text, safe_name

LAYOUT_NAME = "paper_tables.yaml"
#: the mark of a cell whose claim is filed under another table that prints the same number
SHARED_MARK = "‡"
_ARXIV = re.compile(r"^\s*arxiv\s*:\s*(\S+)\s*$", re.IGNORECASE)
_TABLE = re.compile(r"^Table\s+(\d+)\s*([a-z]*)$")
_LAYOUT_KEYS = {"columns", "rows", "shared_from"}


class UnknownPaperError(OptionError):
    """``--paper`` names no paper the claims come from; the message lists those that are present."""


class PaperLayoutError(EvalkitError, ValueError):
    """``paper_tables.yaml`` is not what the per-paper view reads; the message names the file and key."""


@dataclass
class PaperCell:
    """One claim of a paper's table, with its verified number (percent, NaN: not run), interval and
    verdict (:data:`evalkit.reporting.verdicts.VERDICTS`). ``model``: the run (or, not run, the
    model) the claim is held against; ``shared_from``: the table the claim is filed under when
    this table prints it again (blank: its own)."""

    model: str
    task: str
    metric: str
    claimed: float
    decimals: int
    verified: float
    ci_low: float
    ci_high: float
    status: str
    p_holm: float
    transform: str = ""
    protocol: str = ""
    note: str = ""
    shared_from: str = ""


@dataclass
class PaperTable:
    """One table of a paper: ``rows`` (paper_model) and ``columns`` (paper_dataset, or
    paper_dataset/metric) in the paper's order, ``cells`` by (row, column); a position without a
    cell is one the claims do not fill. ``labels``: a column's heading where it is not the column
    itself (:meth:`label`)."""

    paper: str
    name: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], PaperCell]
    labels: dict[str, str] = field(default_factory=dict)
    title: str = ""

    def label(self, column: str) -> str:
        """How the column is headed: ``Flickr30K-1K/text_retrieval_recall@1`` -> ``Flickr30K-1K image→text R@1``."""
        return self.labels.get(column, column)

    def counts(self) -> dict[str, int]:
        """How many cells got each verdict, in :data:`VERDICTS` order."""
        found = [c.status for c in self.cells.values()]
        return {v: found.count(v) for v in VERDICTS if v in found}


# ----------------------------------------------------------------------------- papers


def paper_id(text: str) -> str:
    """A paper as the view names it: ``arXiv:2402.04252`` and ``2402.04252`` are ``2402.04252``."""
    text = str(text).strip()
    m = _ARXIV.match(text)
    return m.group(1) if m else text


def papers(table: pd.DataFrame) -> list[str]:
    """The arXiv IDs the claims of ``table`` (:func:`~evalkit.reporting.report.verified_table` or
    :func:`~evalkit.reporting.report.aggregate_table`) come from, in order of first appearance."""
    if "source" not in table:
        return []
    out = [m.group(1) for s in table["source"].dropna() if (m := _ARXIV.match(str(s)))]
    return list(dict.fromkeys(out))


# ----------------------------------------------------------------------------- layout


def default_layout_path() -> Path:
    """``paper_tables.yaml`` beside the claims evalkit ships (:func:`evalkit.resources.claims_dir`)."""
    return claims_dir() / LAYOUT_NAME


def load_layout(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The layout file (default :func:`default_layout_path`): per paper ID, ``title``, ``labels``
    (column, dataset or metric -> heading) and ``tables`` (name -> ``columns``, ``rows``,
    ``shared_from``). A missing default file is no layout; a file that is not one is an error
    naming it and the key."""
    path = Path(path) if path is not None else default_layout_path()
    if not path.is_file():
        if path == default_layout_path():
            return {}
        raise PaperLayoutError(f"{path}: no such paper layout file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise PaperLayoutError(f"{path}: cannot read the paper layout: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("papers", {}), dict):
        raise PaperLayoutError(f"{path}: expected a mapping with a 'papers' mapping (paper ID -> its layout)")
    out: dict[str, dict[str, Any]] = {}
    for pid, spec in (doc.get("papers") or {}).items():
        where = f"{path}: papers.{pid}"
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - {"title", "labels", "tables"}:
            raise PaperLayoutError(f"{where}: expected keys title, labels, tables")
        labels = spec.get("labels") or {}
        tables = spec.get("tables") or {}
        if not isinstance(labels, dict) or not isinstance(tables, dict):
            raise PaperLayoutError(f"{where}: 'labels' and 'tables' must be mappings")
        for name, t in tables.items():
            t = t or {}
            if not isinstance(t, dict) or set(t) - _LAYOUT_KEYS:
                raise PaperLayoutError(f"{where}.tables.{name}: expected keys {sorted(_LAYOUT_KEYS)}")
            for key in _LAYOUT_KEYS:
                value = t.get(key, [])
                if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                    raise PaperLayoutError(f"{where}.tables.{name}.{key}: expected a list of names")
        out[paper_id(str(pid))] = {"title": str(spec.get("title") or ""),
                                   "labels": {str(k): str(v) for k, v in labels.items()},
                                   "tables": {str(k): dict(v or {}) for k, v in tables.items()}}
    return out


# ----------------------------------------------------------------------------- tables


def _num(x: Any) -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return math.nan
    return value


def _text(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA else str(x).strip()


def _origin_key(origin: str, position: int) -> tuple[int, str, int, int]:
    """The claims file's order: ``path:line`` by file then line; a claim without an origin (a
    table built in code) keeps its place in the table, after those with one."""
    path, _, line = origin.rpartition(":")
    if path and line.isdigit():
        return (0, path, int(line), position)
    return (1, "", 0, position)


def _records(table: pd.DataFrame, aggregates: pd.DataFrame | None, pid: str) -> list[dict[str, Any]]:
    """The paper's claims, one record each (a claim's first run only), in the claims file's order."""
    from evalkit.reporting.catalog import load_catalog

    reductions: dict[str, str] = {}
    if aggregates is not None and len(aggregates):
        reductions = {a.claim: a.reduce for a in load_catalog().aggregates if a.claim}
    found: list[dict[str, Any]] = []
    position = 0
    for frame, is_agg in ((table, False), (aggregates, True)):
        if frame is None or frame.empty or "paper_model" not in frame:
            continue
        for row in frame.to_dict("records"):
            position += 1
            m = _ARXIV.match(_text(row.get("source")))
            if not m or m.group(1) != pid or not _text(row.get("paper_model")) or row.get("status") == "no claim":
                continue
            task = _text(row["aggregate"]) if is_agg else _text(row["task"])
            metric = reductions.get(task, "mean") if is_agg else _text(row["metric"])
            found.append({
                "table": _text(row.get("paper_table")) or "(no table named)",
                "row": _text(row["paper_model"]), "dataset": _text(row.get("paper_dataset")) or task,
                "origin": _text(row.get("origin")), "order": _origin_key(_text(row.get("origin")), position),
                "cell": PaperCell(
                    model=_text(row["model"]), task=task, metric=metric, claimed=_num(row["claimed"]),
                    decimals=int(row["decimals"]) if not pd.isna(row["decimals"]) else 1,
                    verified=_num(row["verified"]), ci_low=_num(row["ci_low"]), ci_high=_num(row["ci_high"]),
                    status=_text(row["status"]), p_holm=_num(row["p_holm"]), transform=_text(row.get("transform")),
                    protocol=_text(row.get("protocol")), note=_text(row.get("note"))),
            })
    found.sort(key=lambda r: r["order"])
    return found


def _table_order(name: str, first: int) -> tuple[int, int, str, int]:
    """The paper's tables in its order (Table 2, 3, 5, 6a, 6b, ..., 14c), then anything else a
    note names (a README's numbers) in the claims' order."""
    m = _TABLE.match(name)
    return (0, int(m.group(1)), m.group(2), first) if m else (1, 0, "", first)


def _own_tables(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per table: its rows and columns in order of first appearance and its own cells."""
    tables: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(records):
        t = tables.setdefault(r["table"], {"first": i, "records": []})
        t["records"].append(r)
    for t in tables.values():
        metrics: dict[str, list[str]] = {}
        for r in t["records"]:
            metrics.setdefault(r["dataset"], [])
            if r["cell"].metric not in metrics[r["dataset"]]:
                metrics[r["dataset"]].append(r["cell"].metric)
        rows: list[str] = []
        columns: list[str] = []
        cells: dict[tuple[str, str], PaperCell] = {}
        claim_of: dict[tuple[str, str], tuple[Any, ...]] = {}
        for r in t["records"]:
            col = r["dataset"] if len(metrics[r["dataset"]]) == 1 else f"{r['dataset']}/{r['cell'].metric}"
            r["column"] = col
            if r["row"] not in rows:
                rows.append(r["row"])
            if col not in columns:
                columns.append(col)
            c = r["cell"]
            claim = (r["origin"], c.task, c.metric, c.transform, c.protocol, c.claimed)
            if (r["row"], col) in cells:  # the claim's next run (a variant): its first is shown
                if claim != claim_of[(r["row"], col)]:  # another claim on the same cell: said, not hidden
                    first = cells[(r["row"], col)]
                    other = r["origin"] or f"{c.task} {c.metric} {c.transform} {c.protocol}".strip()
                    first.note = "; ".join(x for x in (first.note, f"another claim on this cell: {other}") if x)
                continue
            cells[(r["row"], col)] = c
            claim_of[(r["row"], col)] = claim
        t.update(rows=rows, columns=columns, cells=cells)
    return tables


def _ordered(own: list[str], wanted: list[str]) -> list[str]:
    """``wanted`` (the layout's order) then what ``own`` has that it lacks."""
    return list(dict.fromkeys([*wanted, *own]))


def _shared(tables: dict[str, dict[str, Any]], sources: list[str], row: str, column: str
            ) -> tuple[PaperCell, str] | None:
    """The cell (row, column) of the first of ``sources`` that has it (a column "<dataset>" also
    matches that dataset's only metric there: "ImageNet-1K" is Table 2's "ImageNet-1K")."""
    for name in sources:
        t = tables.get(name)
        if t is None:
            continue
        for r in t["records"]:
            if r["row"] == row and column in (r["column"], r["dataset"], f"{r['dataset']}/{r['cell'].metric}"):
                return t["cells"][(r["row"], r["column"])], name
    return None


def _labels(columns: list[str], labels: dict[str, str]) -> dict[str, str]:
    out = {}
    for col in columns:
        dataset, _, metric = col.rpartition("/") if "/" in col else (col, "", "")
        if col in labels:
            out[col] = labels[col]
        elif metric and metric in labels:
            out[col] = f"{labels.get(dataset, dataset)} {labels[metric]}"
        elif dataset in labels:
            out[col] = labels[dataset] + (f" {metric}" if metric else "")
    return out


def paper_tables(table: pd.DataFrame, paper: str, aggregates: pd.DataFrame | None = None, *,
                 layout: dict[str, dict[str, Any]] | None = None) -> list[PaperTable]:
    """The tables of ``paper`` (``2402.04252`` or ``arXiv:2402.04252``) from ``table``
    (:func:`~evalkit.reporting.report.verified_table`) and, for the paper's aggregates,
    ``aggregates`` (:func:`~evalkit.reporting.report.aggregate_table` of the same results), in the
    paper's order; ``layout``: :func:`load_layout`'s (default: the file evalkit ships). A paper
    none of the claims come from is an :class:`UnknownPaperError` that lists those present."""
    pid = paper_id(paper)
    present = list(dict.fromkeys([*papers(table), *(papers(aggregates) if aggregates is not None else [])]))
    if pid not in present:
        raise UnknownPaperError(f"--paper {paper}: no claim comes from arXiv:{pid}; papers with claims: "
                                f"{', '.join(present) if present else 'none (no claim names an arXiv source)'}")
    spec = (load_layout() if layout is None else layout).get(pid, {})
    specs = spec.get("tables", {})
    tables = _own_tables(_records(table, aggregates, pid))
    out: list[PaperTable] = []
    for name in sorted(tables, key=lambda n: _table_order(n, tables[n]["first"])):
        t = tables[name]
        ts = specs.get(name, {})
        sources = list(ts.get("shared_from", []))
        rows = _ordered(t["rows"], list(ts.get("rows", [])))
        columns = _ordered(t["columns"], list(ts.get("columns", [])))
        cells = dict(t["cells"])
        for row in rows:
            for col in columns:
                if (row, col) not in cells and (hit := _shared(tables, sources, row, col)) is not None:
                    cell, where = hit
                    cells[(row, col)] = replace(cell, shared_from=where)
        rows = [r for r in rows if any((r, c) in cells for c in columns)]  # a layout row no claim fills
        columns = [c for c in columns if any((r, c) in cells for r in rows)]
        out.append(PaperTable(paper=pid, name=name, rows=rows, columns=columns, cells=cells,
                              labels=_labels(columns, spec.get("labels", {})), title=spec.get("title", "")))
    return out


# ----------------------------------------------------------------------------- markdown


def _marks() -> dict[str, str]:
    from evalkit.reporting.report import VERDICT_MARKS  # the chart's and the report's symbols: one definition

    return VERDICT_MARKS


def _claimed(cell: PaperCell) -> str:
    text = "—" if math.isnan(cell.claimed) else f"{cell.claimed:.{max(int(cell.decimals), 0)}f}"
    return text + (SHARED_MARK if cell.shared_from else "")


def cell_text(cell: PaperCell | None) -> str:
    """A cell as the markdown prints it: ``verified [interval] symbol / claimed``; ``— / claimed``
    when not run; blank where the table has no claim."""
    if cell is None:
        return ""
    if math.isnan(cell.verified):
        return f"— / {_claimed(cell)}"
    ci = "" if math.isnan(cell.ci_low) or math.isnan(cell.ci_high) else f" [{cell.ci_low:.2f}, {cell.ci_high:.2f}]"
    mark = _marks().get(cell.status, "")
    return f"{cell.verified:.2f}{ci} {mark} / {_claimed(cell)}".replace("  ", " ")


def _legend() -> list[str]:
    marks = _marks()
    return [f"- {marks.get(v, '')} `{v}`: {MEANING[v]}." for v in VERDICTS if v != "no claim"]


def paper_markdown(tables: Iterable[PaperTable], *, results: str | Path | None = None) -> str:
    """The tables as markdown: per table its name, a pipe table in the paper's layout (a cell is
    ``verified [interval] symbol / claimed``, ``—`` for a claim without a result), its verdict
    counts and which cells repeat another table's claims; a legend of the symbols above (each
    verdict is a symbol and, in the legend, its word: nothing rests on colour)."""
    tables = list(tables)
    if not tables:
        return "# Per-paper view\n\n_no claims_\n"
    first = tables[0]
    lines = [f"# arXiv:{first.paper}" + (f": {first.title}" if first.title else ""), ""]
    if results is not None:
        lines += [f"Results: `{results}`.", ""]
    lines += [
        "The paper's claims arranged as its own tables, in its row and column order. Each cell: the verified "
        "value (percent) [its confidence interval] and the verdict's symbol / the claim as printed. `—`: no "
        "result for that claim (not run); an empty cell: no claim there. "
        f"{SHARED_MARK}: the same number another table of the paper prints, one claim filed under that table "
        "(named below the table) and judged once.",
        "",
        *_legend(),
        "",
    ]
    for t in tables:
        shared = sorted({c.shared_from for c in t.cells.values() if c.shared_from})
        n_shared = sum(1 for c in t.cells.values() if c.shared_from)
        lines += [f"## {t.name}", "",
                  f"{_plural(len(t.rows), 'row')} × {_plural(len(t.columns), 'column')}, "
                  f"{_plural(len(t.cells), 'cell')}: " + ", ".join(f"{n} {v}" for v, n in t.counts().items())
                  + (f" ({n_shared} {SHARED_MARK} repeat {', '.join(shared)})" if shared else "") + ".", ""]
        body = [[row, *(cell_text(t.cells.get((row, col))) for col in t.columns)] for row in t.rows]
        lines += [tabulate(body, headers=["Model", *(t.label(c) for c in t.columns)], tablefmt="pipe",
                           disable_numparse=True), ""]
        notes = _notes(t)
        if notes:
            lines += ["Notes:", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines).rstrip() + "\n"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _notes(t: PaperTable) -> list[str]:
    """The cells' notes beyond the table's name (a misprint, a claim-only model, a run's remark),
    each once with the cells it is on: every cell, whole rows, or a row's columns."""
    by_note: dict[str, list[tuple[str, str]]] = {}
    for row in t.rows:
        for col in t.columns:
            cell = t.cells.get((row, col))
            if cell is None:
                continue
            parts = [p.strip() for p in cell.note.split(";")]
            text = "; ".join(p for p in parts if p and p not in (t.name, cell.shared_from))
            if text:
                by_note.setdefault(text, []).append((row, col))
    out = []
    for text, where in by_note.items():
        if len(where) == len(t.cells):
            out.append(f"every cell: {text}")
            continue
        rows: dict[str, list[str]] = {}
        for row, col in where:
            rows.setdefault(row, []).append(col)
        said = []
        for row, cols in rows.items():
            whole = len(cols) == sum(1 for c in t.columns if (row, c) in t.cells)
            said.append(row if whole else f"{row} — {', '.join(t.label(c) for c in cols)}")
        out.append(f"{'; '.join(said)}: {text}")
    return out


# ----------------------------------------------------------------------------- the report file


def paper_report_path(output_dir: str | Path, paper: str) -> Path:
    """``<output_dir>/paper_<ID>.md``."""
    return Path(output_dir) / f"paper_{safe_name(paper_id(paper))}.md"


def write_paper_report(output_dir: str | Path, paper: str,
                       claims: pd.DataFrame | str | Path | Iterable[str | Path] | None = None,
                       *, model: str | None = None,
                       tables: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> Path:
    """Write :func:`paper_report_path` for ``paper`` from the results under ``output_dir`` (a
    folder that exists; with no results in it every cell is ``not run``) and return its path.
    ``tables``: :func:`evalkit.reporting.report.report_tables` of the same folder, claims and model
    when the caller has them already."""
    from evalkit.reporting.report import report_tables

    # a missing folder: ResultsFolderError
    table, aggs = tables if tables is not None else report_tables(output_dir, claims, model=model)
    tables = paper_tables(table, paper, aggs)
    path = paper_report_path(output_dir, paper)
    atomic_write_text(path, paper_markdown(tables, results=output_dir))
    return path
