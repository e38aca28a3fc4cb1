"""The report as one self-contained HTML file (``evalkit report`` writes ``<output-dir>/report.html``).

One file a person opens: no server, nothing fetched (no CDN, font, script or image from the
network: the system's own fonts, the CSS and JavaScript of ``evalkit/reporting/assets/`` inlined,
charts inline as SVG, and a Content-Security-Policy that forbids any fetch), so it works from a
``file://`` URL and as a CI artifact. Its sections:

* **Summary**: per run (a model and its variant), how many claims are reproduced, consistent,
  differ, untested, partial, not run, with the paper's aggregates and their intervals
  (:func:`evalkit.reporting.report.aggregate_table`);
* **Claimed vs verified**: :func:`evalkit.reporting.report.verified_table`, sortable (click a
  header) and filtered by the paper's table (the claim note's ``Table N``), run, task family and
  verdict; each row draws the verified interval (a bar), the verified value (a dot) and the
  claim (a hollow diamond on its rounding band) as a small inline SVG;
* **Leaderboard**: :func:`evalkit.reporting.report.leaderboard` over every run of the folder,
  with rank intervals and tie groups;
* **Per paper** (``paper=``): the paper's own tables in its row and column order
  (:func:`evalkit.reporting.paper.paper_tables`);
* **Runs**: each run's provenance (versions, code, weights, environments, where the time went)
  and its reproduction certificate when ``<output-dir>/certificates/<model>[/<variant>].json``
  exists (:func:`evalkit.reporting.certificate.read_certificate`; a certificate that fails its
  own hash is shown as a warning);
* **Tasks**: per task and run, the worst classes with their intervals and the most-confused
  pairs (:mod:`evalkit.reporting.perclass`: the sidecar, or the records), the skipped samples
  with their reasons, the protocol envelope where ``evalkit envelope`` wrote one, few-shot curves
  (matplotlib, SVG) and the result's full provenance; a field a result does not record reads
  "not recorded", with a warning when it is a protocol field.

A verdict is a symbol and a word as well as a colour (:data:`evalkit.reporting.report.VERDICT_MARKS`,
:data:`evalkit.reporting.verdicts.MEANING`). Each table is computed once; a task section lists
the :data:`WORST_CLASSES` worst classes of each run (``evalkit report --task T --classes 0``
prints them all), so 10 models × 60 tasks stay a few MB (``benchmarks/bench_html.py``).
"""

from __future__ import annotations

import hashlib
import html
import inspect
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from evalkit.errors import EvalkitError, OptionError
from evalkit.metric_table import short_name
from evalkit.records import SUFFIX as RECORDS_SUFFIX
from evalkit.reporting.catalog import Catalog, load_catalog
from evalkit.reporting.charts import fewshot_points
from evalkit.reporting.claims import load_claims
from evalkit.reporting.perclass import PerClassRun, result_analyses
from evalkit.reporting.report import (
    STATUSES,
    VERDICT_MARKS,
    ResultsFolderError,
    leaderboard,
    report_tables,
    run_label,
)
from evalkit.reporting.verdicts import MEANING, SIGNIFICANCE
from evalkit.results import (
    DEFAULT_VARIANT,
    TaskResult,
    atomic_write_text,
    iter_results,
    path_of,
    result_variant,
    safe_name,
)
from evalkit.tasks.perclass import KINDS as PERCLASS_KINDS
from evalkit.tasks.perclass import SCHEMA as PERCLASS_SCHEMA
from evalkit.tasks.perclass import sidecar_for
from evalkit.tasks.spec import TaskIndex, TaskSpec
from evalkit.version import __version__

__all__ = ["REPORT_HTML", "WORST_CLASSES", "render_html", "write_html"]

REPORT_HTML = "report.html"
#: classes listed per run and task, worst first (the rest: ``evalkit report --task T --classes 0``)
WORST_CLASSES = 20
#: most-confused pairs listed per run and task
CONFUSED_PAIRS = 5
#: skipped samples listed per run and task (with the log's reasons)
SKIPPED_SHOWN = 20
#: the file `evalkit envelope` writes beside a result (evalkit.reporting.envelope.ENVELOPE_SUFFIX; that
#: module is not imported here: it loads torch, seconds a report does not need)
ENVELOPE_SUFFIX = ".envelope.json"
#: what a result must record to say under which protocol its number was made; older results that
#: lack one are flagged (a folder may mix evalkit versions)
PROTOCOL_FIELDS = {"task_version": "task version", "precision": "precision", "transform": "transform",
                   "world_size": "world size", "data_fingerprint": "data fingerprint"}
#: the parts of a result's wall time (evalkit.tasks.common.timings: they add up to it)
TIMING_PARTS = ("embed", "text", "scoring", "other")
_SHOTS = re.compile(r'"shots":(?:null|(\d+)),')  # an analysis line's K, read without parsing the line
_TABLE_NOTE = re.compile(r"^\s*(Table\s+[0-9]+[a-z]?)\b", re.IGNORECASE)
_ASSETS = ("report.css", "report.js")
# nothing may be fetched: inline styles, scripts and SVG only
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def write_html(output_dir: str | Path, claims: Any = None, model: str | None = None, paper: str | None = None,
               path: str | Path | None = None, *, tables: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> Path:
    """Write the HTML report of ``output_dir`` (default ``<output_dir>/report.html``, atomically)
    and return its path. ``claims``: as :func:`evalkit.reporting.report.write_report` takes them
    (None: the claims evalkit ships); ``model``: that model's runs only (the leaderboard still
    ranks every run of the folder); ``paper``: an arXiv id, adds the paper's own tables;
    ``tables``: :func:`evalkit.reporting.report.report_tables` of the same folder, claims and model
    when the caller has them already."""
    page = render_html(output_dir, claims, model=model, paper=paper, tables=tables)
    target = Path(path) if path is not None else Path(output_dir) / REPORT_HTML
    atomic_write_text(target, page)
    return target


def render_html(output_dir: str | Path, claims: Any = None, *, model: str | None = None,
                paper: str | None = None, tables: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> str:
    """The report as one HTML document (see the module docstring)."""
    return _Page(Path(output_dir), claims, model, paper, tables).render()


# ----------------------------------------------------------------------------- small pieces

def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _missing(x: Any) -> bool:
    if x is None or x is pd.NA:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def _num(x: Any) -> float | None:
    return None if _missing(x) else float(x)


def _f2(x: Any) -> str:
    return "—" if _missing(x) else f"{float(x):.2f}"


def _claimed(x: Any, decimals: Any) -> str:
    if _missing(x):
        return "—"
    return f"{float(x):.{int(decimals)}f}" if not _missing(decimals) else f"{float(x):g}"


def _delta(x: Any) -> str:
    return "—" if _missing(x) else f"{round(float(x), 2) + 0.0:+.2f}".replace("-", "−")


def _ci(low: Any, high: Any) -> str:
    return "—" if _missing(low) or _missing(high) else f"[{float(low):.2f}, {float(high):.2f}]"


def _dv(x: Any, digits: int = 4) -> str:
    """A sort key attribute: the number, or empty (sorted last)."""
    return "" if _missing(x) else f"{float(x):.{digits}f}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _vclass(status: str) -> str:
    return "v-" + _slug(status)


def verdict_html(status: str, tag: str = "span", title: str = "", rank: bool = False, close: bool = True) -> str:
    """A verdict as its symbol and word, coloured by class (``rank``: with its sort key;
    ``close=False``: no end tag, for a table cell the next one ends)."""
    end = f"</{tag}>" if close else ""
    if not status:
        return f"<{tag}>{end}"
    mark = VERDICT_MARKS.get(status, "")
    extra = f' title="{esc(title)}"' if title else ""
    if rank:
        extra += f' data-v="{STATUSES.index(status) if status in STATUSES else len(STATUSES)}"'
    return f'<{tag} class="vd {_vclass(status)}"{extra}><span aria-hidden="true">{mark}</span> {esc(status)}{end}'


def _not_recorded(protocol: bool = False) -> str:
    if protocol:
        return '<span class="warn" title="a protocol field this result does not record">⚠ not recorded</span>'
    return '<span class="muted">not recorded</span>'


def _sortable_head(columns: Iterable[tuple[str, str]]) -> str:
    """``<thead>`` of a sortable table: (label, css class) per column; a header is a button."""
    cells = "".join(f'<th class="{c}"><button type="button" class="sort">{esc(label)}</button></th>' if label
                    else f'<th class="{c}"></th>' for label, c in columns)
    return f"<thead><tr>{cells}</tr></thead>"


def _table(head: str, rows: list[str], *, sortable: bool = True, table_id: str = "", fit: bool = False,
           cls: str = "") -> str:
    """A table in its own horizontal scroller (``fit``: as wide as its content, not the page)."""
    ident = f' id="{table_id}"' if table_id else ""
    classes = " ".join(x for x in ("sortable" if sortable else "", cls) if x)
    klass = f' class="{classes}"' if classes else ""
    return (f'<div class="scroll{" fit" if fit else ""}"><table{ident}{klass}>{head}<tbody>{"".join(rows)}</tbody>'
            f"</table></div>")


def interval_svg(claimed: Any, decimals: Any, verified: Any, low: Any, high: Any, flip: Any = 0.0) -> str:
    """The row's interval drawn in a few SVG elements, on an axis around what it shows: the
    claim's rounding interval widened by the flip budget (a grey band) with the claim (a hollow
    diamond), the verified interval (a bar) and the verified value (a dot)."""
    c, v, lo, hi = _num(claimed), _num(verified), _num(low), _num(high)
    points = [x for x in (c, v, lo, hi) if x is not None]
    if not points:
        return ""
    half = 0.0
    if c is not None:
        half = 0.5 * 10.0 ** (-(int(decimals) if not _missing(decimals) else 1)) + (_num(flip) or 0.0)
        points += [c - half, c + half]
    a, b = min(points), max(points)
    pad = max(0.12 * (b - a), 0.25)
    x0, x1 = a - pad, b + pad
    width = 120.0

    def x(value: float) -> float:
        return (value - x0) / (x1 - x0) * width

    title = [f"axis {x0:.2f}–{x1:.2f} %"]  # the numbers themselves are in the row's cells
    if c is not None:
        title.append(f"claim ± rounding and flip budget [{c - half:.3f}, {c + half:.3f}]")
    parts = [f'<svg class="iv" viewBox="0 0 120 16" role="img"><title>{esc("; ".join(title))}</title>',
             '<path class="axis" d="M0 8H120"/>']
    if c is not None:
        parts.append(f'<rect class="band" x="{x(c - half):.1f}" y="3" width="{max(x(c + half) - x(c - half), 0.8):.1f}" '
                     f'height="10"/>')
    if lo is not None and hi is not None:
        parts.append(f'<rect class="ci" x="{x(lo):.1f}" y="5.5" width="{max(x(hi) - x(lo), 1.0):.1f}" height="5"/>')
    if v is not None:
        parts.append(f'<circle class="dot" cx="{x(v):.1f}" cy="8" r="2.6"/>')
    if c is not None:
        cx = x(c)
        parts.append(f'<path class="claim" d="M{cx:.1f} 2L{cx + 4:.1f} 8L{cx:.1f} 14L{cx - 4:.1f} 8Z"/>')
    parts.append("</svg>")
    return "".join(parts)


def figure_svg(fig: Any, salt: str) -> str:
    """A matplotlib ``Figure`` as inline SVG markup: text kept as text (small, searchable, the
    page's fonts), no date, element ids salted with ``salt`` so that two charts of one page never
    share an id."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    FigureCanvasSVG(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    start = text.find("<svg")
    return text[start:] if start >= 0 else text


def _fewshot_svg(task: str, curves: dict[str, list[tuple[int, float, float]]]) -> str:
    """One run per line: top-1 (%, mean over seeds, ± std as a band) against K (log 2). A fixed
    layout (the legend right of the axes), no tight bounding box: each is drawn once."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 3.4), dpi=100)
    fig.subplots_adjust(left=0.09, right=0.70, top=0.9, bottom=0.15)
    ax = fig.add_subplot()
    markers = "osD^vP*X"
    for i, (run, pts) in enumerate(curves.items()):
        ks, vs, ss = zip(*pts, strict=True)
        ax.plot(ks, vs, marker=markers[i % len(markers)], label=run.replace("$", r"\$"))
        ax.fill_between(ks, [max(0.0, v - s) for v, s in zip(vs, ss, strict=True)],
                        [min(100.0, v + s) for v, s in zip(vs, ss, strict=True)], alpha=0.15)
    ks = sorted({k for pts in curves.values() for k, _, _ in pts})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("samples per class (K)")
    ax.set_ylabel("top-1 (%), mean ± std")
    ax.set_title(f"{task.replace('$', chr(92) + '$')}: few-shot linear probe", loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return figure_svg(fig, f"evalkit-fewshot-{task}")


def _family_label(family: str | None, view: dict[str, Any] | None, name: str) -> str:
    """A task's family as the claims table filters it: the family, and the modality a
    classification reads (image, video, 3D)."""
    view = view or {}
    if family == "retrieval":
        return "retrieval"
    if family == "linear_probe":
        return "few-shot" if "fewshot" in view or name.endswith("fewshot") else "linear probe"
    if family == "classification":
        if any(k in view for k in ("frames", "frame_sampler")):
            return "video"
        if any(k in view for k in ("cloud", "cloud_view", "depth_views", "npoints")):
            return "3D"
        return "image"
    return family or "other"


@dataclass
class _RunInfo:
    """What the Runs section says of one run, gathered from its results."""

    label: str
    model: str
    variant: str
    results: list[TaskResult] = field(default_factory=list)


# ----------------------------------------------------------------------------- the page

class _Page:
    def __init__(self, output_dir: Path, claims: Any, model: str | None, paper: str | None,
                 tables: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> None:
        if not output_dir.is_dir():
            raise ResultsFolderError(f"results folder {output_dir}: no such folder (--output-dir: the folder "
                                     f"`evalkit run --output-dir` wrote to)")
        self.output_dir = output_dir
        self.model = model
        self.paper = paper
        self.warnings: list[str] = []
        self.catalog: Catalog = load_catalog()
        self._index: TaskIndex | None = None  # read when needed (its task files: a few tenths of a second)
        # the claims read once (None: the claims evalkit ships)
        self.claims = claims if isinstance(claims, pd.DataFrame) else load_claims(claims)
        results = list(iter_results(output_dir, model))
        if model is not None:
            results = [r for r in results if r.model == model or safe_name(r.model) == safe_name(model)]
        if not results and model is None:
            raise ResultsFolderError(f"results folder {output_dir}: no results under {output_dir / 'runs'} "
                                     f"(--output-dir: the folder `evalkit run --output-dir` wrote to)")
        self.results = results
        # each table once: the claims and the aggregates together, the leaderboard of the whole folder
        self.table, self.aggs = tables if tables is not None else report_tables(output_dir, self.claims, model=model)
        # the leaderboard's verdict marks from the tables just made when they cover the whole folder
        self.board = leaderboard(output_dir, self.claims, tables=(self.table, self.aggs) if model is None else None)
        self.runs: dict[str, _RunInfo] = {}
        for r in results:
            label = run_label(r)
            self.runs.setdefault(label, _RunInfo(label, r.model, result_variant(r))).results.append(r)
        order = [m for m in dict.fromkeys(self.table["model"]) if m in self.runs]
        self.run_order = order + sorted(set(self.runs) - set(order))
        # the rows listed: the runs with results; a model asked for by name without any, its claims (not run)
        self.listed = list(self.run_order) or ([model] if model is not None else [])
        if model is not None and not results and self.table.empty:
            raise OptionError(f"no claims and no results for model {model!r}")
        self.by_task: dict[str, dict[str, list[TaskResult]]] = {}
        for label in self.run_order:
            for r in self.runs[label].results:
                self.by_task.setdefault(r.dataset, {}).setdefault(label, []).append(r)
        self.task_order = sorted(self.by_task, key=self.catalog.task_key)
        self.families = self._families()
        self.environments: dict[str, tuple[int, dict[str, Any]]] = {}  # canonical JSON -> (number, env)
        self._folders: dict[Path, set[str]] = {}
        self.headline = self._headlines()

    # -- facts ---------------------------------------------------------------------------------

    @property
    def index(self) -> TaskIndex:
        if self._index is None:
            self._index = TaskIndex.load()
        return self._index

    def _spec(self, task: str) -> TaskSpec | None:
        return self.index.lookup(task)

    def _families(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for task, runs in self.by_task.items():
            r = next(iter(runs.values()))[0]
            out[task] = _family_label(r.evalkit.get("family"), r.evalkit, task)
        for task in dict.fromkeys(self.table["task"]):
            if task not in out:
                spec = self._spec(task)
                out[task] = _family_label(spec.family, spec.view, task) if spec is not None else "other"
        return out

    def _headlines(self) -> dict[tuple[str, str], tuple[float | None, float | None, float | None]]:
        """(run, task) -> (headline %, its interval), from the leaderboard."""
        out = {}
        tasks = set(self.by_task)
        for row in self.board.to_dict("records"):
            label = row["model"] if row["variant"] == DEFAULT_VARIANT else f"{row['model']} [{row['variant']}]"
            for t in tasks:
                if t in row:
                    out[(label, t)] = (_num(row[t]), _num(row.get(f"{t}_ci_low")), _num(row.get(f"{t}_ci_high")))
        return out

    def _environment_ref(self, env: dict[str, Any]) -> int:
        key = json.dumps(env, sort_keys=True, default=str)
        if key not in self.environments:
            self.environments[key] = (len(self.environments) + 1, env)
        return self.environments[key][0]

    def _beside(self, result: TaskResult) -> tuple[Path, set[str]]:
        """The result's file and the names of the files beside it (listed once per folder)."""
        path = path_of(result, self.output_dir)
        folder = path.parent
        if folder not in self._folders:
            self._folders[folder] = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        return path, self._folders[folder]

    # -- the document --------------------------------------------------------------------------

    def render(self) -> str:
        body = [self._summary(), self._claims_section(), self._leaderboard_section()]
        if self.paper:
            body.append(self._paper_section())
        tasks = self._tasks_section()  # before the runs: it registers the environments the runs list
        body += [self._runs_section(), tasks]
        self._version_warnings()
        css, js = (resources.files("evalkit.reporting").joinpath("assets", name).read_text(encoding="utf-8")
                   for name in _ASSETS)
        title = f"evalkit report: {self.output_dir.name or self.output_dir}"
        nav = [("summary", "Summary"), ("claims", "Claimed vs verified"), ("leaderboard", "Leaderboard")]
        if self.paper:
            nav.append(("paper", f"Paper {self.paper}"))
        nav += [("runs", "Runs"), ("tasks", "Tasks")]
        warnings = ""
        if self.warnings:
            items = "".join(f"<li>{w}</li>" for w in dict.fromkeys(self.warnings))
            warnings = (f'<section class="warnings" id="warnings"><h2>⚠ Warnings ({len(set(self.warnings))})</h2>'
                        f"<ul>{items}</ul></section>")
            nav.insert(0, ("warnings", "Warnings"))
        scope = f" · model {esc(self.model)}" if self.model else ""
        head = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
                f'<meta name="generator" content="evalkit {esc(__version__)}">'
                f"<title>{esc(title)}</title><style>{css}</style></head><body>")
        header = (f'<header class="top"><h1>evalkit report</h1>'
                  f'<p class="muted">Results <code>{esc(self.output_dir)}</code>{scope} · {len(self.run_order)} '
                  f'run{"s" if len(self.run_order) != 1 else ""} · {len(self.task_order)} tasks · '
                  f"{len(self.results)} results · evalkit {esc(__version__)}</p>"
                  f'<nav class="toc" aria-label="sections">'
                  + "".join(f'<a href="#{i}">{esc(t)}</a>' for i, t in nav) + "</nav></header>")
        footer = ("<footer>Written by <code>evalkit report</code>: one file, nothing fetched. Numbers are percent; "
                  "claimed numbers as printed in their source, verified numbers with their confidence interval; "
                  "Δ = verified − claimed. The markdown report beside it: <code>claimed_vs_verified.md</code>; "
                  "every class of a task: <code>evalkit report --task T --classes 0</code>.</footer>")
        return "".join([head, header, "<main>", warnings, *body, "</main>", footer,
                        f"<script>{js}</script></body></html>\n"])

    # -- summary -------------------------------------------------------------------------------

    def _mine(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of the runs listed (the claims of models never run are counted, not listed)."""
        return frame[frame["model"].isin(self.listed)] if not frame.empty else frame

    def _summary(self) -> str:
        table, aggs = self._mine(self.table), self._mine(self.aggs)
        legend = "".join(f"<li>{verdict_html(s)}: {esc(MEANING[s])}</li>" for s in STATUSES)
        rows = []
        for label in self.listed:
            counts = table.loc[table["model"] == label, "status"].value_counts()
            agg_counts = aggs.loc[aggs["model"] == label, "status"].value_counts() if not aggs.empty else {}
            name = f'<a href="#run-{_slug(label)}">{esc(label)}</a>' if label in self.runs else esc(label)
            cells = [f"<td>{name}</td>"]
            for s in STATUSES:
                n, a = int(counts.get(s, 0)), int(agg_counts.get(s, 0))
                more = f' <span class="muted small">+ {a}</span>' if a else ""
                cells.append(f'<td class="n" data-v="{n}">{n}{more}</td>')
            rows.append(f"<tr>{''.join(cells)}</tr>")
        head = _sortable_head([("Run", "")] + [(f"{VERDICT_MARKS[s]} {s}", "n") for s in STATUSES])
        parts = ['<section id="summary"><h2>Summary</h2>',
                 "<p>Verdicts (the rules: <code>docs/reports.md</code>). A claim printed to d decimals stands for "
                 "its rounding interval; <b>reproduced</b> when the verified value lies in it, widened by the run's "
                 "flip budget; else <b>consistent</b> when the claim lies inside the verified value's confidence "
                 "interval; else <b>differs</b>.</p>",
                 f'<ul class="legend">{legend}</ul>',
                 "<h3>Verdicts per run</h3><p class=\"muted small\">Per-task claims; "
                 "<span class=\"muted\">+ n</span>: the paper's aggregates.</p>",
                 _table(head, rows)]
        never = sorted(set(self.table["model"]) - set(self.runs) - {r.model for r in self.results})
        if never and self.model is None:
            parts.append(f"<details><summary>{len(never)} models have claims but no results here (not listed)"
                         f"</summary><p class=\"small\">{esc(', '.join(never))}</p></details>")
        if not aggs.empty:
            parts.append("<h3>The paper's aggregates</h3>" + self._aggregates_table(aggs))
        parts.append("</section>")
        return "".join(parts)

    def _aggregates_table(self, aggs: pd.DataFrame) -> str:
        head = _sortable_head([("Run", ""), ("Aggregate", ""), ("Claim", ""), ("Transform", ""), ("Claimed", "n"),
                               ("Verified", "n"), ("Interval", "n"), ("Δ", "n"), ("Verdict", ""), ("Note", "")])
        rows = []
        for r in aggs.to_dict("records"):
            rows.append(
                f"<tr><td>{esc(r['model'])}</td><td>{esc(r['group'])}</td><td>{esc(r['aggregate'])}</td>"
                f"<td>{esc(r['transform'])}</td>"
                f'<td class="n" data-v="{_dv(r["claimed"])}">{_claimed(r["claimed"], r["decimals"])}</td>'
                f'<td class="n" data-v="{_dv(r["verified"])}">{esc(r["display"])}</td>'
                f'<td class="n" data-v="{_dv(r["ci_low"])}">{_ci(r["ci_low"], r["ci_high"])}'
                f"{interval_svg(r['claimed'], r['decimals'], r['verified'], r['ci_low'], r['ci_high'], r['flip_points'])}</td>"
                f'<td class="n" data-v="{_dv(r["delta"])}">{_delta(r["delta"])}</td>'
                + verdict_html(str(r["status"]), "td", str(r["reason"] or ""), rank=True)
                + f'<td class="note">{esc(r["note"])}</td></tr>')
        return _table(head, rows)

    # -- claimed vs verified -------------------------------------------------------------------

    def _claims_section(self) -> str:
        table = self._mine(self.table)
        rows = []
        values: dict[str, set[str]] = {"table": set(), "model": set(), "family": set(), "verdict": set()}
        for r in table.to_dict("records"):
            found = _TABLE_NOTE.match(str(r["note"] or ""))
            paper_table = f"Table {found.group(1).split()[-1]}" if found else "none"
            family = self.families.get(r["task"], "other")
            status = str(r["status"])
            for k, v in (("table", paper_table), ("model", r["model"]), ("family", family), ("verdict", status)):
                values[k].add(v)
            p = r["p_holm"]
            p_text = "" if _missing(p) else f"{p:.2g}" + (" *" if p < SIGNIFICANCE and status == "differs" else "")
            task = esc(r["task"])
            task_cell = f'<a href="#task-{_slug(r["task"])}">{task}</a>' if r["task"] in self.by_task else task
            secondary = "" if r["primary"] else ' class="secondary"'
            setting = "; ".join(x for x in (str(r["transform"] or ""), str(r["protocol"] or "")) if x)
            # end tags left out (a cell ends where the next begins); data-v where the text does not sort
            rows.append(
                f'<tr data-table="{esc(paper_table)}" data-model="{esc(r["model"])}" data-family="{esc(family)}" '
                f'data-verdict="{esc(status)}"{secondary}>'
                f"<td>{esc(r['model'])}<td>{task_cell}<td>{esc(family)}"
                f'<td title="{esc(r["metric"])}">{esc(short_name(str(r["metric"])))}<td>{esc(setting)}'
                f'<td class="n">{_claimed(r["claimed"], r["decimals"])}<td class="n">{_f2(r["verified"])}'
                f'<td class="n" data-v="{_dv(r["ci_low"], 2)}">{_ci(r["ci_low"], r["ci_high"])}'
                f"{interval_svg(r['claimed'], r['decimals'], r['verified'], r['ci_low'], r['ci_high'], r['flip_points'])}"
                f'<td class="n" data-v="{_dv(r["delta"], 2)}">{_delta(r["delta"])}'
                + verdict_html(status, "td", str(r["reason"] or ""), rank=True, close=False)
                + f'<td class="n" data-v="{_dv(p, 6)}">{p_text}<td class="note">{esc(r["note"])}')
        labels = {"table": "Paper table", "model": "Run", "family": "Task family", "verdict": "Verdict"}
        orders = {"verdict": lambda v: STATUSES.index(v) if v in STATUSES else len(STATUSES),
                  "table": lambda v: (v == "none", [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)]),
                  "model": lambda v: self.run_order.index(v) if v in self.run_order else len(self.run_order)}
        selects = []
        for k, label in labels.items():
            options = sorted(values[k], key=orders.get(k, str))  # type: ignore[arg-type]
            shown = {"none": "(no table)"} if k == "table" else {}
            opts = "".join(f'<option value="{esc(v)}">{esc(shown.get(v, (VERDICT_MARKS.get(v, "") + " " + v).strip() if k == "verdict" else v))}</option>'
                           for v in options)
            selects.append(f'<label>{label}<select data-filter="{k}"><option value="">all</option>{opts}</select></label>')
        head = _sortable_head([("Run", ""), ("Task", ""), ("Family", ""), ("Metric", ""), ("Setting", ""),
                               ("Claimed", "n"), ("Verified", "n"), ("Interval", "n"), ("Δ", "n"), ("Verdict", ""),
                               ("p (Holm)", "n"), ("Note", "")])
        return ('<section id="claims"><h2>Claimed vs verified</h2>'
                "<p>One row per claim of a run in this folder (and per result no claim covers). Click a header to "
                "sort; the filters hide the other rows. The drawing: the claim ◇ on its rounding interval widened "
                "by the flip budget (grey), the verified value ● on its confidence interval (bar). Rows in a lighter "
                "grey are the other claims of a task (per transform, other protocols); p (Holm): the claimed value's "
                f"test, Holm-adjusted over the report, * below {SIGNIFICANCE:g} where it differs.</p>"
                f'<div class="filters" data-for="claims-table">{"".join(selects)}'
                '<button type="button" class="reset">show all</button><output aria-live="polite"></output></div>'
                + _table(head, rows, table_id="claims-table") + "</section>")

    # -- leaderboard ---------------------------------------------------------------------------

    def _leaderboard_section(self) -> str:
        board = self.board
        groups = [g for g in self.catalog.aggregates if g.leaderboard and g.column in board]
        columns = [str(g.column) for g in groups if board[str(g.column)].notna().any()]
        tasks = [t for t in board.columns if t in set(self.catalog.task_order) | {r.dataset for r in self.results}
                 and t not in ("model", "variant") and t in board and f"{t}_ci_low" in board]
        tasks = sorted(dict.fromkeys(tasks), key=self.catalog.task_key)
        rank_by = board.attrs.get("rank_by")
        head = _sortable_head([("Rank", "n"), ("Rank interval", "n"), ("Tie group", "n"), ("Run", "")]
                              + [(c, "n") for c in columns] + [(t, "n") for t in tasks])
        rows = []
        for r in board.to_dict("records"):
            label = r["model"] if r["variant"] == DEFAULT_VARIANT else f"{r['model']} [{r['variant']}]"
            rank = "" if _missing(r["rank"]) else str(int(r["rank"]))
            interval = "" if _missing(r["rank_best"]) else f"{int(r['rank_best'])}–{int(r['rank_worst'])}"
            tie = "" if _missing(r["tie_group"]) else str(int(r["tie_group"]))
            cells = [f'<td class="n" data-v="{rank}">{rank or "—"}</td>',
                     f'<td class="n" data-v="{"" if not interval else int(r["rank_best"])}">{interval or "—"}</td>',
                     f'<td class="n" data-v="{tie}">{tie or "—"}</td>', f"<td>{esc(label)}</td>"]
            for c in columns + tasks:
                value = r.get(c)
                verdict = str(r.get(f"{c}_verdict") or "")
                mark = (f' <span class="{_vclass(verdict)}" title="{esc(verdict)}">{VERDICT_MARKS.get(verdict, "")}</span>'
                        if verdict else "")
                partial = ""
                if c in columns and not _missing(r.get(f"{c}_n")):
                    total = len(self.catalog.aggregate(next(g.name for g in groups if g.column == c)).members)
                    partial = f' <span class="muted small">({int(r[f"{c}_n"])}/{total})</span>' \
                        if int(r[f"{c}_n"]) < total and not _missing(value) else ""
                ci = _ci(r.get(f"{c}_ci_low"), r.get(f"{c}_ci_high"))
                under = f'<br><span class="muted small">{ci}</span>' if c in columns and ci != "—" else ""
                cells.append(f'<td class="n" data-v="{_dv(value)}" title="{esc(c)}: {_f2(value)} {ci}">'
                             f"{_f2(value)}{mark}{partial}{under}</td>")
            rows.append(f"<tr>{''.join(cells)}</tr>")
        ranked = (f"Ranked on <b>{esc(rank_by)}</b>: a run's rank interval is the ranks its interval allows; runs "
                  f"whose rank intervals overlap share a tie group.") if rank_by else \
            "No column is complete for any run with an interval: no ranks (a complete aggregate, or --rank-by)."
        return ('<section id="leaderboard"><h2>Leaderboard</h2>'
                f"<p>Every run in this folder (percent; each task's headline number). {ranked} Hover a cell for its "
                "interval; a mark is its claim's verdict.</p>" + _table(head, rows, table_id="leaderboard-table")
                + "</section>")

    # -- the paper's own tables ----------------------------------------------------------------

    def _paper_section(self) -> str:
        title = f'<section id="paper"><h2>Paper {esc(self.paper)}: its own tables</h2>'
        try:
            from evalkit.reporting import paper as paper_module
        except ImportError:
            self.warnings.append(f"per-paper view of {esc(self.paper)}: this evalkit has no "
                                 "evalkit.reporting.paper (the paper's tables are not shown)")
            return title + "<p>Not available in this evalkit.</p></section>"
        tables_of = paper_module.paper_tables
        kwargs = {"aggregates": self.aggs} if "aggregates" in inspect.signature(tables_of).parameters else {}
        tables = tables_of(self.table, self.paper, **kwargs)
        parts = [title, "<p>The claims arranged as the paper prints them (its rows and columns, in its order), "
                 "each cell the claimed number over the verified one with its verdict; hover a cell for the "
                 "interval and p.</p>"]
        if not tables:
            parts.append("<p>No table of this paper has a claim in this report.</p>")
        for t in tables:
            label = getattr(t, "label", lambda c: c)  # a column's heading where it is not the column itself
            head = ("<thead><tr><th>Model</th>" + "".join(f'<th class="n">{esc(label(c))}</th>' for c in t.columns)
                    + "</tr></thead>")
            rows = []
            for row in t.rows:
                cells = [f"<th>{esc(row)}</th>"]
                for col in t.columns:
                    cell = t.cells.get((row, col))
                    if cell is None:
                        cells.append("<td></td>")
                        continue
                    status = str(cell.status or "")
                    tip = f"{cell.model} · {cell.task} · {cell.metric}: interval {_ci(cell.ci_low, cell.ci_high)}"
                    if not _missing(cell.p_holm):
                        tip += f", p (Holm) {float(cell.p_holm):.2g}"
                    cells.append(f'<td class="n" title="{esc(tip)}"><span class="cell-claim">'
                                 f"{_claimed(cell.claimed, cell.decimals)}</span><br>{_f2(cell.verified)} "
                                 f'<span class="{_vclass(status)}" title="{esc(status)}">{VERDICT_MARKS.get(status, "")}'
                                 f"</span></td>")
                rows.append(f"<tr>{''.join(cells)}</tr>")
            parts.append(f"<h3>{esc(t.name)}</h3>" + _table(head, rows, sortable=False))
        parts.append("</section>")
        return "".join(parts)

    # -- runs ----------------------------------------------------------------------------------

    def _runs_section(self) -> str:
        parts = ['<section id="runs"><h2>Runs</h2><p>Each run\'s own provenance, from its results (a folder may '
                 "hold runs of different evalkit versions: each says what it recorded).</p>"]
        for label in self.run_order:
            parts.append(self._run_block(self.runs[label]))
        if self.environments:
            parts.append("<h3>Environments</h3>")
            for number, env in sorted(self.environments.values(), key=lambda x: x[0]):
                parts.append(f'<h4 id="env-{number}">Environment E{number}</h4>' + _environment_dl(env))
        parts.append("</section>")
        return "".join(parts)

    def _run_block(self, run: _RunInfo) -> str:
        evs = [r.evalkit for r in run.results]

        def distinct(key: str) -> str:
            found = list(dict.fromkeys(str(e.get(key)) for e in evs if e.get(key) not in (None, "")))
            return esc(", ".join(found)) if found else _not_recorded()

        dirty = {e.get("git_dirty") for e in evs}
        dirty_text = ("" if dirty == {None} else " (uncommitted changes)" if True in dirty
                      else " (clean)" if dirty == {False} else " (clean in some results)")
        envs = []
        for e in evs:
            if isinstance(e.get("environment"), dict):
                envs.append(self._environment_ref(e["environment"]))
        env_text = ", ".join(f'<a href="#env-{n}">E{n}</a>' for n in dict.fromkeys(envs)) or _not_recorded()
        if envs and len(envs) < len(evs):
            env_text += f" ({len(evs) - len(envs)} results record none)"
        totals = _sum_timings(evs)
        wall = sum(float(e.get("wall_time_s") or 0.0) for e in evs)
        items = [("Results", f"{len(run.results)} ({len({r.dataset for r in run.results})} tasks)"),
                 ("Model / variant", f"{esc(run.model)} / {esc(run.variant)}"),
                 ("evalkit", distinct("evalkit_version")),
                 ("Code", distinct("git_commit") + esc(dirty_text)),
                 ("Weights", distinct("weights")), ("Model fingerprint", distinct("fingerprint")),
                 ("Precision", distinct("precision")), ("World size", distinct("world_size")),
                 ("Environment", env_text),
                 ("Wall time", f"{wall:.1f} s over its results" if wall else _not_recorded()),
                 ("Where the time went", _timing_html(totals) if totals else _not_recorded())]
        return (f'<div class="run" id="run-{_slug(run.label)}"><h3>{esc(run.label)}</h3>{_dl(items)}'
                f"{self._certificate(run)}</div>")

    def _certificate(self, run: _RunInfo) -> str:
        try:
            from evalkit.reporting.certificate import certificate_path, read_certificate
        except ImportError:  # an evalkit without certificates: nothing to show
            return ""
        path = certificate_path(self.output_dir, run.model, run.variant)
        if not path.is_file():
            return ""
        where = esc(path.relative_to(self.output_dir))
        try:
            cert = read_certificate(path)
        except (EvalkitError, ValueError, OSError) as e:  # a bad own hash: said, never a crash
            message = f"the certificate of {esc(run.label)} cannot be trusted: {esc(e)}"
            self.warnings.append(message)
            return f'<h4>Certificate</h4><div class="cert-bad">⚠ {message}</div>'
        return "<h4>Certificate</h4>" + self._certificate_html(cert, where)

    def _certificate_html(self, cert: dict[str, Any], where: str) -> str:
        weights = cert.get("weights") or {}
        files = weights.get("files") or []
        code = cert.get("code") or {}
        size = sum(int(f.get("size") or 0) for f in files if isinstance(f, dict))
        items = [("File", f"<code>{where}</code> (its own hash checks: <code>{esc(str(cert.get('sha256', ''))[:16])}…"
                          "</code>; <code>evalkit certify --verify</code> re-hashes weights, data and records)"),
                 ("Created", esc(cert.get("created_at", "")) or _not_recorded()),
                 ("Code", esc(f"evalkit {code.get('evalkit_version', '?')}, commit {code.get('git_commit', '?')}"
                              + (" (uncommitted changes)" if code.get("git_dirty") else ""))),
                 ("Weights", f"{len(files)} files, {_bytes(size)}" + (f" under <code>{esc(weights.get('path'))}</code>"
                                                                     if weights.get("path") else ""))]
        rows = []
        for t in cert.get("tasks") or []:
            if not isinstance(t, dict):
                continue
            fp = t.get("data_fingerprint") or {}
            root = fp.get("root") if isinstance(fp, dict) else None
            verdicts = [str(v.get("status", "")) for v in t.get("verdicts") or [] if isinstance(v, dict)]
            counted = ", ".join(f"{verdicts.count(v)} {VERDICT_MARKS.get(v, '')} {esc(v)}" for v in dict.fromkeys(verdicts))
            now = self._result_matches(t)
            name = Path(str(t.get("result_file") or "")).name
            rows.append(f"<tr><td>{esc(t.get('task', ''))}"
                        f"{'' if name == str(t.get('task')) + '.json' else f' <span class=muted>({esc(name)})</span>'}</td>"
                        f"<td class=\"mono\">{esc(str(t.get('result_sha256', ''))[:12])}</td><td>{now}</td>"
                        f"<td class=\"mono\">{esc(str(root)[:12]) if root else _not_recorded()}</td>"
                        f"<td class=\"n\">{len(t.get('records') or [])}</td>"
                        f"<td>{counted}</td></tr>")
        head = _sortable_head([("Task", ""), ("Result SHA-256", ""), ("The result file now", ""),
                               ("Data root", ""), ("Records", "n"), ("Verdicts", "")])
        return _dl(items) + (_table(head, rows, fit=True) if rows else "")

    def _result_matches(self, entry: dict[str, Any]) -> str:
        """Whether the result file a certificate names still hashes as it says (a cheap look:
        ``evalkit certify --verify`` checks everything)."""
        name = entry.get("result_file")
        digest = entry.get("result_sha256")
        if not name or not digest:
            return _not_recorded()
        path = Path(str(name))
        path = path if path.is_absolute() else self.output_dir / path
        if not path.is_file():
            return '<span class="muted">not found</span>'
        same = hashlib.sha256(path.read_bytes()).hexdigest() == digest
        return ('<span class="vd v-reproduced">✓ matches</span>' if same
                else '<span class="vd v-differs">✗ differs</span>')

    # -- tasks ---------------------------------------------------------------------------------

    def _tasks_section(self) -> str:
        n = len(self.results)
        opened = " open" if n <= 12 else ""
        links = " · ".join(f'<a href="#task-{_slug(t)}">{esc(t)}</a>' for t in self.task_order)
        parts = ['<section id="tasks"><h2>Tasks</h2>',
                 f"<p>Per task and run: the {WORST_CLASSES} worst classes with their intervals (every class: "
                 f"<code>evalkit report --task T --classes 0 --output-dir {esc(self.output_dir)}</code>), the "
                 f"{CONFUSED_PAIRS} most-confused pairs, the skipped samples and why, the protocol envelope where "
                 "<code>evalkit envelope</code> wrote one, few-shot curves, and the result's provenance.</p>",
                 f'<p class="small">{links}</p>']
        for task in self.task_order:
            runs = self.by_task[task]
            family = self.families.get(task, "other")
            first = next(iter(runs.values()))[0]
            metric = first.evalkit.get("metric") or self.catalog.primary.get(task, "")
            blocks = []
            curves = {}
            for label, results in runs.items():
                for r in results:
                    pts = fewshot_points(r)
                    if pts:
                        curves[label if len(results) == 1 else f"{label} {r.evalkit.get('result_name') or ''}".strip()] = pts
                    blocks.append(self._result_block(label, r, task, len(results) > 1))
            chart = f'<div class="chart">{_fewshot_svg(task, curves)}</div>' if curves else ""
            every = (f'<p class="muted small">Every class of every run: <code>evalkit report --task {esc(task)} '
                     f"--classes 0 --output-dir {esc(self.output_dir)}</code></p>")
            parts.append(f'<details class="task" id="task-{_slug(task)}"{opened}><summary>{esc(task)} '
                         f'<span class="muted">· {esc(family)} · {esc(metric)} · {len(runs)} '
                         f'run{"s" if len(runs) != 1 else ""}</span></summary>{every}{chart}{"".join(blocks)}</details>')
        parts.append("</section>")
        return "".join(parts)

    def _result_block(self, label: str, result: TaskResult, task: str, several: bool) -> str:
        ev = result.evalkit
        value, low, high = self.headline.get((label, task), (None, None, None))
        name = ev.get("result_name") if several else None
        headline = f"{_f2(value)} % {_ci(low, high)}" if value is not None else ""
        path, beside = self._beside(result)
        parts = [f'<div class="run"><h4>{esc(label)}{" · " + esc(name) if name else ""} '
                 f'<span class="muted">{esc(headline)}</span></h4>']
        parts.append(self._perclass(result, path, task))
        parts.append(self._skipped(result, path, beside))
        envelope = path.name[: -len(".json")] + ENVELOPE_SUFFIX
        if envelope in beside:
            parts.append(self._envelope(path.with_name(envelope)))
        parts.append(f"<details><summary>Provenance</summary>{self._provenance(result, path)}</details></div>")
        return "".join(parts)

    def _perclass(self, result: TaskResult, path: Path, task: str) -> str:
        reported = result.evalkit.get("best_transform")
        docs = _sidecar_documents(result, path, reported)
        if docs is None:  # no sidecar of these records: the analysis of `evalkit report --task`, computed
            entry = result.evalkit.get("records")
            # only an analysis computed from the records reads the task files (for class names); a
            # result without records, or of records without classes, gets its note without them
            computes = isinstance(entry, dict) and entry.get("kind") in PERCLASS_KINDS
            index, spec = (self.index, self._spec(task)) if computes else (TaskIndex(tasks={}, groups={}), None)
            try:
                run: PerClassRun = result_analyses(result, path, index, spec)
            except (EvalkitError, ValueError, OSError) as e:
                return f'<p class="muted small">No per-class analysis: {esc(e)}.</p>'
            if run.note:
                return f'<p class="muted small">No per-class analysis: {esc(run.note)}.</p>'
            docs = list(zip(run.documents, run.origin, strict=True))
        parts = []
        for doc, origin in docs:
            analyses = doc.get("analyses") or []
            if not analyses:
                continue
            modes = [a for a in analyses if a.get("mode") == reported] or \
                [a for a in analyses if a.get("mode") == analyses[0].get("mode")]
            a = max(modes, key=lambda x: x.get("shots") or 0)  # few-shot: the largest K, the task's metric
            parts.append(_analysis_html(doc, a, origin))
        return "".join(parts)

    def _skipped(self, result: TaskResult, path: Path, beside: set[str]) -> str:
        ev = result.evalkit
        skipped = ev.get("skipped")
        if skipped is None:
            return f"<p class=\"small\">Skipped samples: {_not_recorded()}.</p>"
        stem = path.name[: -len(".json")]
        logs = sorted(n for n in beside if n.startswith(stem + ".") and n.endswith("skipped.log")
                      and n[len(stem) + 1:].count(".") <= 2)
        if not int(skipped or 0) and not logs:
            noted = int(ev.get("noted") or 0)
            extra = f" {noted} scored through a documented fallback (see the provenance)." if noted else ""
            return f'<p class="small">Skipped samples: none of {esc(ev.get("samples", "?"))}.{extra}</p>'
        reasons: list[tuple[str, str]] = []
        total_logged = 0
        for name in logs:
            with open(path.with_name(name), encoding="utf-8", errors="replace") as f:
                for line in f:
                    total_logged += 1
                    if len(reasons) < SKIPPED_SHOWN:
                        key, _, why = line.rstrip("\n").partition("\t")
                        reasons.append((key, why or "no reason given"))
        if not reasons:
            reasons = [(k, "reason not recorded (no skipped log)") for k in (ev.get("skipped_keys") or [])[:SKIPPED_SHOWN]]
        rows = [f"<tr><td class=\"mono\">{esc(k)}</td><td>{esc(w)}</td></tr>" for k, w in reasons]
        where = ", ".join(f"<code>{esc(path.with_name(n).relative_to(self.output_dir))}</code>" for n in logs)
        shown = len(reasons)
        total = max(int(skipped or 0), total_logged)
        head = "<thead><tr><th>sample</th><th>why it was skipped</th></tr></thead>"
        return (f'<p class="small"><b>Skipped samples: {total}</b> of {esc(ev.get("samples", "?"))}, not scored'
                f"{f' ({shown} shown; all in {where})' if where else ''}.</p>" + _table(head, rows, sortable=False, fit=True))

    def _envelope(self, path: Path) -> str:
        try:
            env = json.loads(path.read_text(encoding="utf-8"))
            metric = str(env.get("metric", ""))
            low_high = env.get("range")
            own = env.get("own") or {}
        except (OSError, ValueError, AttributeError) as e:
            self.warnings.append(f"envelope <code>{esc(path.relative_to(self.output_dir))}</code> cannot be read: {esc(e)}")
            return ""
        span = (f"{100 * float(low_high[0]):.2f}–{100 * float(low_high[1]):.2f} %" if isinstance(low_high, list)
                and len(low_high) == 2 else "—")
        own_value = own.get("value")
        lines = [f"<p class=\"small\"><b>Protocol envelope</b> (<code>evalkit envelope</code>): {esc(metric)} spans "
                 f"<b>{span}</b> over {esc(env.get('n_variants', '?'))} protocol variants (templates × class names × "
                 f"transform); the run's own ({esc(own.get('templates', '?'))}, {esc(own.get('classnames', '?'))}, "
                 f"{esc(own.get('transform', '?'))}): {_f2(100 * own_value) if isinstance(own_value, (int, float)) else '—'} %.</p>"]
        claims = [c for c in env.get("claims") or [] if isinstance(c, dict)]
        if claims:
            items = "".join(f"<li>claim {esc(c.get('claimed'))} {esc(' '.join(str(c.get(k) or '') for k in ('metric', 'transform', 'protocol')).strip())}: "
                            f"{esc(c.get('verdict', ''))}</li>" for c in claims)
            lines.append(f'<ul class="small">{items}</ul>')
        variants = [v for v in env.get("variants") or [] if isinstance(v, dict)]
        if variants:
            transforms = list(dict.fromkeys(str(v.get("transform")) for v in variants))
            cells: dict[tuple[str, str], dict[str, Any]] = {}
            for v in variants:
                cells.setdefault((str(v.get("templates")), str(v.get("classnames"))), {})[str(v.get("transform"))] = v
            head = ("<thead><tr><th>templates</th><th>class names</th>"
                    + "".join(f'<th class="n">{esc(t)}</th>' for t in transforms) + "</tr></thead>")
            rows = []
            for (tpl, names), by in cells.items():
                tds = []
                for t in transforms:
                    v = by.get(t)
                    value = v.get("value") if v else None
                    text = f"{100 * value:.2f}" if isinstance(value, (int, float)) else "—"
                    tds.append(f'<td class="n">{"<b>" + text + " *</b>" if v and v.get("own") else text}</td>')
                rows.append(f"<tr><td>{esc(tpl)}</td><td>{esc(names)}</td>{''.join(tds)}</tr>")
            lines.append("<details><summary>The variants (* the run's own)</summary>"
                         + _table(head, rows, sortable=False, fit=True) + "</details>")
        for note in env.get("notes") or []:
            lines.append(f'<p class="muted small">{esc(note)}</p>')
        return "".join(lines)

    def _provenance(self, result: TaskResult, path: Path) -> str:
        ev = result.evalkit
        items: list[tuple[str, str]] = [("Result", f"<code>{esc(path.relative_to(self.output_dir))}</code>")]

        def field_(label: str, key: str, fmt: Any = None) -> None:
            value = ev.get(key)
            if value is None or value == "":
                items.append((label, _not_recorded(key in PROTOCOL_FIELDS)))
            else:
                items.append((label, fmt(value) if fmt else esc(_plain(value))))

        field_("Weights", "weights")
        field_("Model fingerprint", "fingerprint", lambda v: f"<code>{esc(v)}</code>")
        field_("Task version", "task_version")
        field_("Task file", "task_file", lambda v: f"<code>{esc(v)}</code>")
        field_("Data source", "source")
        field_("Data", "data")
        items.append(("Samples", esc(f"{ev.get('samples', '?')} listed, {ev.get('evaluated', '?')} scored, "
                                     f"{ev.get('skipped', '?')} skipped")))
        fp = ev.get("data_fingerprint")
        items.append(("Data fingerprint", _fingerprint_html(fp) if isinstance(fp, dict) else _not_recorded(True)))
        field_("Transform", "transform")
        if ev.get("frames") is not None or ev.get("frame_sampler") is not None:
            items.append(("Frames", esc(_plain(ev.get("frame_sampler") or ev.get("frames")))))
        for key, label in (("templates_sha256", "Templates SHA-256"), ("classnames_sha256", "Class names SHA-256")):
            if ev.get(key):
                items.append((label, f'<code title="{esc(ev[key])}">{esc(str(ev[key])[:16])}…</code>'))
        if ev.get("n_templates") is not None:
            items.append(("Templates", esc(f"{ev.get('n_templates')} ({ev.get('template_set') or 'the task file'})")))
        if ev.get("protocol"):
            items.append(("Protocol", esc(_plain(ev["protocol"]))))
        if ev.get("limit"):
            items.append(("Limit", f'<span class="warn">--limit {esc(ev["limit"])}: a subset of the task</span>'))
        options = ev.get("ci_options")
        if isinstance(options, dict):
            items.append(("Intervals", esc(f"{100 * float(options.get('level', 0.95)):g} %, proportions "
                                           f"{options.get('proportion', 'wilson')}, {options.get('resamples', '?')} "
                                           f"bootstrap resamples")))
        field_("Precision", "precision")
        field_("World size", "world_size")
        field_("Device", "device")
        items.append(("Code", esc(f"evalkit {ev.get('evalkit_version', '?')}, commit {ev.get('git_commit') or '?'}")
                      + ("" if ev.get("git_dirty") is None else " (uncommitted changes)" if ev.get("git_dirty")
                         else " (clean)")))
        env = ev.get("environment")
        if isinstance(env, dict):
            n = self._environment_ref(env)
            items.append(("Environment", f'<a href="#env-{n}">E{n}</a>: {esc(_env_summary(env))}'))
        else:
            older = ", ".join(f"{k} {ev[k]}" for k in ("python", "torch") if ev.get(k))
            items.append(("Environment", _not_recorded() + (f" (recorded: {esc(older)})" if older else "")))
        timings = ev.get("timings")
        if isinstance(timings, dict):
            items.append(("Where the time went", _timing_html(timings)))
        else:
            wall = ev.get("wall_time_s")
            items.append(("Where the time went", _not_recorded() + (f" (wall {float(wall):.2f} s)" if wall else "")))
        if ev.get("started_at") or ev.get("finished_at"):
            items.append(("Ran", esc(f"{ev.get('started_at', '?')} → {ev.get('finished_at', '?')}")))
        if ev.get("command"):
            items.append(("Command", f"<code>{esc(ev['command'])}</code>"))
        return _dl(items)

    def _version_warnings(self) -> None:
        versions = sorted({str(r.evalkit.get("evalkit_version") or "unrecorded") for r in self.results})
        if len(versions) > 1:
            self.warnings.append(f"this folder holds results of evalkit versions {esc(', '.join(versions))}: each run "
                                 "and result is shown with its own provenance; what a version did not record reads "
                                 "\"not recorded\"")
        for label in self.run_order:
            missing: dict[str, int] = {}
            results = self.runs[label].results
            for r in results:
                for key in PROTOCOL_FIELDS:
                    if r.evalkit.get(key) in (None, ""):
                        missing[key] = missing.get(key, 0) + 1
            if missing:
                what = ", ".join(f"{PROTOCOL_FIELDS[k]} ({n} of {len(results)})" for k, n in missing.items())
                self.warnings.append(f'<a href="#run-{_slug(label)}">{esc(label)}</a>: results that do not record '
                                     f"a protocol field: {esc(what)}")


# ----------------------------------------------------------------------------- helpers of the sections

def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _plain(value: Any) -> str:
    """A provenance value as one line of text."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _dl(items: list[tuple[str, str]]) -> str:
    return '<dl class="prov">' + "".join(f"<dt>{esc(k)}<dd>{v}" for k, v in items) + "</dl>"


def _fingerprint_html(fp: dict[str, Any]) -> str:
    root = fp.get("root")
    root_html = (f'<code title="{esc(root)}">{esc(str(root)[:16])}…</code>' if root
                 else '<span class="warn">no root (not every sample hashed)</span>')
    return (f"{root_html} ({esc(fp.get('scheme', '?'))}; {esc(fp.get('hashed', '?'))} of {esc(fp.get('samples', '?'))} "
            f"samples hashed, {esc(fp.get('undecodable', 0))} undecodable, {esc(fp.get('duplicates', 0))} exact "
            f"duplicates; from the {esc(fp.get('from', '?'))}{'' if fp.get('complete') else '; incomplete'})")


def _env_summary(env: dict[str, Any]) -> str:
    gpus = env.get("gpus") or []
    names = [g.get("name", "?") for g in gpus if isinstance(g, dict)]
    gpu = f"{len(names)}× {names[0]}" if names and len(set(names)) == 1 else ", ".join(names) or "no GPU"
    parts = [f"Python {env.get('python', '?')}", f"torch {env.get('torch', '?')}"]
    if env.get("cuda"):
        parts.append(f"CUDA {env['cuda']}")
    parts.append(gpu)
    return ", ".join(parts)


def _environment_dl(env: dict[str, Any]) -> str:
    items = []
    for key in ("python", "platform", "torch", "cuda", "cudnn", "driver"):
        value = env.get(key)
        items.append((key, esc(value) if value not in (None, "") else _not_recorded()))
    gpus = env.get("gpus") or []
    items.append(("gpus", esc(", ".join(f"{g.get('name', '?')} ({g.get('memory_gb', '?')} GB)" for g in gpus
                                        if isinstance(g, dict))) or "none"))
    libs = env.get("libraries") or {}
    if isinstance(libs, dict):
        items.append(("libraries", esc(", ".join(f"{k} {v if v else '—'}" for k, v in libs.items()))))
    for key, value in env.items():
        if key not in {"python", "platform", "torch", "cuda", "cudnn", "driver", "gpus", "libraries"}:
            items.append((key, esc(_plain(value))))
    return _dl(items)


def _sum_timings(evs: list[dict[str, Any]]) -> dict[str, Any] | None:
    found = [e["timings"] for e in evs if isinstance(e.get("timings"), dict)]
    if not found:
        return None
    keys = ("wall", "embed", "data", "forward", "text", "scoring", "other")
    total: dict[str, Any] = {f"{k}_s": sum(float(_embed_s(t) if k == "embed" else t.get(f"{k}_s") or 0.0)
                                           for t in found) for k in keys}
    total["overlap"] = next((t.get("overlap") for t in found if t.get("overlap")), "")
    total["results"] = len(found)
    return total


def _embed_s(t: dict[str, Any]) -> float:
    """The embedding passes' wall time: recorded, or what the wall time leaves after the rest."""
    if isinstance(t.get("embed_s"), (int, float)):
        return float(t["embed_s"])
    rest = sum(float(t.get(f"{k}_s") or 0.0) for k in ("text", "scoring", "other"))
    return max(0.0, float(t.get("wall_s") or 0.0) - rest)


def _timing_html(t: dict[str, Any]) -> str:
    """Where a run's time went: its wall time split into the embedding passes, the text side,
    the scoring and the rest (a bar, and each in seconds, so it reads without the colours); the
    loader's and the forward's seconds inside the embedding passes (they overlap)."""
    parts = [("embed", _embed_s(t))] + [(p, float(t.get(f"{p}_s") or 0.0)) for p in TIMING_PARTS[1:]]
    wall = float(t.get("wall_s") or 0.0)
    total = max(wall, sum(s for _, s in parts))
    spans = "".join(f'<i class="t-{p}" style="width:{100 * s / total:.1f}%"></i>'
                    for p, s in parts if s > 0) if total > 0 else ""
    names = {"embed": "embedding", "text": "text", "scoring": "scoring", "other": "other"}
    legend = " · ".join(f'<i class="key t-{p}"></i>{names[p]} {s:.2f} s' for p, s in parts)
    inside = (f"inside the embedding: forward {float(t.get('forward_s') or 0.0):.2f} s, data "
              f"{float(t.get('data_s') or 0.0):.2f} s in the loader")
    rate = t.get("samples_per_s")
    extra = [f"wall {wall:.2f} s"] + ([f"{float(rate):.1f} samples/s"] if isinstance(rate, (int, float)) else [])
    if t.get("results"):
        extra.append(f"summed over {t['results']} results")
    overlap = f" ({esc(t['overlap'])})" if t.get("overlap") else ""
    # the bar is drawn for the eye; the legend after it says the same in words and seconds
    return (f'<div class="timing" aria-hidden="true">{spans}</div>'
            f'<span class="small">{legend} · {esc(", ".join(extra))}</span>'
            f'<br><span class="muted small">{inside}{overlap}</span>')


def _sidecar_documents(result: TaskResult, path: Path, mode: str | None
                       ) -> list[tuple[dict[str, Any], str]] | None:
    """The per-class documents of a result read from its sidecars, parsing only the analyses of
    ``mode`` (the reported transform: a 1,000-class best-of-both sidecar holds two) where it is
    known; None unless every records file has a sidecar of its own records (the SHA-256 the result
    keeps, as :mod:`evalkit.reporting.perclass` requires), which then computes them."""
    entry = result.evalkit.get("records")
    if not isinstance(entry, dict) or entry.get("kind") not in PERCLASS_KINDS:
        return None
    files, digests = entry.get("files"), entry.get("sha256")
    if not isinstance(files, list) or not isinstance(digests, list) or len(digests) < len(files) or not files:
        return None
    # an analysis line begins with its mode (tasks.perclass.sidecar_text: compact JSON, "mode" first)
    prefix = json.dumps({"mode": mode}, separators=(",", ":"), ensure_ascii=False)[:-1] + "," if mode else None
    out = []
    for name, digest in zip(files, digests):  # noqa: B905 (digests may hold more)
        if not isinstance(name, str) or not name.endswith(RECORDS_SUFFIX) or "/" in name:
            return None
        sidecar = sidecar_for(path.with_name(name))
        try:
            lines = [line for line in sidecar.read_text(encoding="utf-8").splitlines() if line.strip()]
            header = json.loads(lines[0]) if lines else None
            if not isinstance(header, dict) or header.get("schema") != PERCLASS_SCHEMA \
                    or header.get("records_sha256") != digest:
                return None
            chosen = [line for line in lines[1:] if prefix and line.startswith(prefix)]
            if len(chosen) > 1:  # few-shot: one line per K; the largest K is the one shown
                shots = [_SHOTS.match(line[len(prefix):]) for line in chosen]
                if all(shots):
                    chosen = [max(zip(shots, chosen, strict=True), key=lambda x: int(x[0].group(1) or 0))[1]]  # type: ignore[union-attr]
            analyses = [json.loads(line) for line in chosen or lines[1:]]
        except (OSError, ValueError):
            return None
        if not all(isinstance(a, dict) for a in analyses):
            return None
        out.append(({**header, "analyses": analyses}, f"sidecar {sidecar.name}"))
    return out


def _analysis_html(doc: dict[str, Any], a: dict[str, Any], origin: str) -> str:
    options = doc.get("ci_options") or {}
    level = f"{100 * float(options.get('level', 0.95)):g} %"
    title = str(a.get("mode", ""))
    if a.get("shots") is not None:
        title += f", {a['shots']}-shot (mean of {a.get('runs', '?')} seeds)"
    if doc.get("part"):
        title = f"{doc['part']}: {title}"
    present = sorted((c for c in a.get("classes") or [] if c.get("support")),
                     key=lambda c: (c["accuracy"], c["ci"][1], -c["support"], c["class"]))
    shown = present[:WORST_CLASSES]
    count = (f"the {len(shown)} worst of {len(present)} classes" if len(shown) < len(present)
             else f"all {len(present)} classes, worst first")
    rows = []
    for c in shown:
        lo, hi = 100 * c["ci"][0], 100 * c["ci"][1]
        correct = c["correct"]
        # end tags left out (HTML ends a cell where the next begins): 20 rows × 600 results add up
        rows.append(f"<tr><td>{c['class']}<td>{esc(c['name'])}<td>{c['support']}"
                    f"<td>{correct if float(correct).is_integer() else f'{correct:.2f}'}<td>{100 * c['accuracy']:.2f}"
                    f"<td>[{lo:.2f}, {hi:.2f}]"
                    f'<td><i class=bar style="--l:{lo:.1f};--h:{hi:.1f};--a:{100 * c["accuracy"]:.1f}"></i>')
    head = (f'<thead><tr><th class="n">class<th>name<th class="n">support<th class="n">correct'
            f'<th class="n">accuracy %<th class="n">{level} interval<th></thead>')
    accuracy = a.get("accuracy")
    parts = [f"<p class=\"small\"><b>Per-class accuracy</b>, {esc(title)}: {_f2(100 * accuracy if accuracy is not None else None)} % "
             f"of {esc(a.get('samples', '?'))} samples; {count} ({level} {esc(options.get('proportion', 'wilson'))} "
             f"intervals; {esc(origin)}).</p>"]
    parts.append(_table(head, rows, sortable=False, fit=True, cls="pc"))
    zero = a.get("zero_support") or []
    if zero:
        parts.append(f'<p class="muted small">{len(zero)} classes without a test sample.</p>')
    dupes = doc.get("duplicate_names") or []
    if dupes:
        parts.append(f'<p class="small warn">{len(dupes)} groups of class names identical or differing only in case, '
                     "whitespace or punctuation: " + esc("; ".join(", ".join(str(n) for _, n in g["classes"])
                                                                   for g in dupes[:5])) + "</p>")
    pairs = (a.get("confused_pairs") or [])[:CONFUSED_PAIRS]
    if pairs:
        rows = [f"<tr><td>{esc(p['true_name'])} → {esc(p['pred_name'])}"
                f"<td>{p['count'] if float(p['count']).is_integer() else format(p['count'], '.2f')}"
                f"<td>{100 * p['share']:.2f}" for p in pairs]
        head = "<thead><tr><th>true → predicted</th><th class=\"n\">count</th><th class=\"n\">share of the true class %</th></tr></thead>"
        parts.append(f"<p class=\"small\"><b>Most-confused pairs</b> ({len(pairs)} of "
                     f"{a.get('confused_pairs_total', '?')}):</p>" + _table(head, rows, sortable=False, fit=True, cls="pairs"))
    elif a.get("confused_pairs_total") == 0:
        parts.append('<p class="small">Most-confused pairs: none (no sample misclassified).</p>')
    return "".join(parts)
