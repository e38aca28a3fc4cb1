"""The single-file HTML report (evalkit.reporting.html), read as text and opened in a real browser.

One demo run (made here) plus a second run of the same results under another model name, rewritten
as an older evalkit would have written them (no fingerprint, timings, environment or task version;
two skipped samples with their log), with the protocol envelope of one task, a certificate for the
demo run and a hand-edited one for the other. The browser tests drive Debian's Chromium
(``/usr/bin/chromium``) through Playwright, never a downloaded browser; without either they are
skipped with the reason, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from evalkit.cli import main as cli
from evalkit.reporting.html import REPORT_HTML, WORST_CLASSES, write_html
from evalkit.reporting.report import STATUSES, ResultsFolderError, report_tables

MODEL = "eva-clip-demo"
OTHER = "eva-clip-demo-older"  # the same results as an older evalkit wrote them
REPO = Path(__file__).resolve().parents[1]
#: the fields an older evalkit did not write
NEWER_FIELDS = ("data_fingerprint", "timings", "environment", "git_dirty", "task_version", "templates_sha256",
                "classnames_sha256")
SKIPPED = [("scene-0001.png", "cannot identify image file (truncated PNG)"), ("scene-0002.png", "empty file")]


# ----------------------------------------------------------------------------- the folder


def _claims_with_tables(path: Path) -> Path:
    """The demo's claims, their notes prefixed by a paper table as the papers' are (``Table 2 ...``):
    the classification claims Table 1, retrieval Table 2, the rest none."""
    rows = list(csv.DictReader((REPO / "results" / "claims_demo.csv").open()))
    for r in rows:
        if r["task"] in ("shapeworld-shape", "shapeworld-colour"):
            r["note"] = "Table 1; " + r["note"]
        elif r["task"] == "shapeworld-retrieval":
            r["note"] = "Table 2; " + r["note"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _older_copy(out: Path) -> None:
    """runs/<OTHER>: the demo's results, records and sidecars as an older evalkit wrote them."""
    src, dst = out / "runs" / MODEL, out / "runs" / OTHER
    shutil.copytree(src, dst)
    for path in dst.glob("*.json"):
        if path.name.endswith(".envelope.json"):
            path.unlink()
            continue
        d = json.loads(path.read_text())
        d["model"] = OTHER
        ev = d["evalkit"]
        for key in NEWER_FIELDS:
            ev.pop(key, None)
        ev["evalkit_version"] = "0.0.9"
        if d["dataset"] == "shapeworld-shape":
            ev["samples"] = ev["evaluated"] + len(SKIPPED)
            ev["skipped"] = len(SKIPPED)
            ev["skipped_keys"] = [k for k, _ in SKIPPED]
            (dst / "shapeworld-shape.skipped.log").write_text("".join(f"{k}\t{why}\n" for k, why in SKIPPED))
        path.write_text(json.dumps(d, indent=2))


@pytest.fixture(scope="session")
def demo_report(tmp_path_factory):
    from evalkit.reporting.certificate import certificate_path, certify
    from evalkit.reporting.envelope import envelope

    root = tmp_path_factory.mktemp("html-report")
    out, cache = root / "out", root / "cache"
    assert cli.main(["run", "--model", MODEL, "--tasks", "demo", "--output-dir", str(out), "--cache-dir", str(cache),
                     "--quiet"]) == 0
    report = envelope(MODEL, "shapeworld-shape", output_dir=out, cache_dir=cache)
    assert report.envelopes and not report.failures
    _older_copy(out)
    certify(out, MODEL)
    good = certificate_path(out, MODEL)
    bad = json.loads(good.read_text())
    bad["model"] = OTHER  # edited by hand: its own hash no longer matches
    certificate_path(out, OTHER).write_text(json.dumps(bad, indent=2))
    claims = _claims_with_tables(root / "claims.csv")
    page = shutil.copy(write_html(out, claims=claims), root / "report.html")  # the command's test rewrites it
    table, aggs = report_tables(out, claims)
    return {"root": root, "out": out, "cache": cache, "claims": claims, "html": Path(page), "text": Path(page).read_text(),
            "table": table[table["model"].isin([MODEL, OTHER])].reset_index(drop=True)}


# ----------------------------------------------------------------------------- reading the page


class _Tables(HTMLParser):
    """Every table of a page: its id, and per body row its attributes and cell texts (the text of
    an SVG's title left out). HTML's optional end tags are honoured: a cell ends where the next
    begins."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self._stack: list[dict] = []
        self._skip = 0
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            t = {"id": a.get("id"), "rows": [], "head": []}
            self.tables.append(t)
            self._stack.append(t)
            self._in_body = False
        elif not self._stack:
            return
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr":
            row = {"attrs": a, "cells": []}
            (self._stack[-1]["rows"] if self._in_body else self._stack[-1]["head"]).append(row)
        elif tag in ("td", "th"):
            rows = self._stack[-1]["rows"] if self._in_body else self._stack[-1]["head"]
            if rows:
                rows[-1]["cells"].append("")
        elif tag in ("svg", "title"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("svg", "title") and self._skip:
            self._skip -= 1
        elif tag == "table" and self._stack:
            self._stack.pop()
            self._in_body = False

    def handle_data(self, data):
        if not self._stack or self._skip:
            return
        t = self._stack[-1]
        rows = t["rows"] if self._in_body else t["head"]
        if rows and rows[-1]["cells"]:
            rows[-1]["cells"][-1] += data


def tables_of(text: str) -> list[dict]:
    p = _Tables()
    p.feed(text)
    return p.tables


def table_by_id(text: str, ident: str) -> dict:
    found = [t for t in tables_of(text) if t["id"] == ident]
    assert len(found) == 1, f"{len(found)} tables with id {ident}"
    return found[0]


def section(text: str, ident: str) -> str:
    start = text.index(f'id="{ident}"')
    end = text.find('<section id="', start + 1)
    return text[start:end if end > 0 else len(text)]


def task_section(text: str, task: str) -> str:
    start = text.index(f'<details class="task" id="task-{task}"')
    ends = [i for i in (text.find('<details class="task"', start + 1), text.find("</section>", start)) if i > 0]
    return text[start:min(ends)]


def clean(cell: str) -> str:
    return " ".join(cell.split())


# ----------------------------------------------------------------------------- the page as text


def test_the_page_is_one_file_that_fetches_nothing(demo_report):
    text = demo_report["text"]
    assert text.startswith("<!doctype html>")
    # no stylesheet, script, image or font from anywhere: the CSS and JavaScript are inline
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:[a-z][a-z0-9+.-]*:)?//""", text, re.IGNORECASE)
    # (an SVG's clip path is url(#id): a fragment of this page, not a fetch)
    assert not re.search(r"<link\b|@import|url\((?!\s*['\"]?#)", text, re.IGNORECASE)
    assert not re.search(r"<script\b[^>]*\bsrc=", text, re.IGNORECASE)
    css = (REPO / "evalkit" / "reporting" / "assets" / "report.css").read_text()
    js = (REPO / "evalkit" / "reporting" / "assets" / "report.js").read_text()
    assert css in text and js in text
    # and the browser is told to fetch nothing even if something asked it to
    assert "default-src 'none'" in text


def test_claims_table_rows_and_summary_counts_are_the_reports(demo_report):
    text, table = demo_report["text"], demo_report["table"]
    rows = table_by_id(text, "claims-table")["rows"]
    assert len(rows) == len(table) > 0
    assert [r["attrs"]["data-verdict"] for r in rows] == list(table["status"])
    assert [r["attrs"]["data-model"] for r in rows] == list(table["model"])
    assert [clean(r["cells"][1]) for r in rows] == list(table["task"])
    # a verdict is a word and a symbol, not a colour alone
    for r in rows:
        verdict = r["attrs"]["data-verdict"]
        assert clean(r["cells"][9]).endswith(verdict) and len(clean(r["cells"][9])) > len(verdict)
    # the paper's table from the claim's note, the family from the task
    by_task = {(r["attrs"]["data-model"], clean(r["cells"][1]), clean(r["cells"][3])): r["attrs"] for r in rows}
    assert by_task[(MODEL, "shapeworld-shape", "top-1")]["data-table"] == "Table 1"
    assert {a["data-table"] for k, a in by_task.items() if k[1] == "shapeworld-retrieval"} == {"Table 2", "none"}
    assert by_task[(MODEL, "shapeworld-video", "top-1")]["data-family"] == "video"
    assert by_task[(MODEL, "shapeworld-3d", "top-1")]["data-family"] == "3D"
    summary = tables_of(section(text, "summary"))[0]
    counts = {clean(r["cells"][0]): [int(clean(c).split()[0]) for c in r["cells"][1:]] for r in summary["rows"]}
    assert set(counts) == {MODEL, OTHER}
    for run, got in counts.items():
        want = table.loc[table["model"] == run, "status"].value_counts()
        assert got == [int(want.get(s, 0)) for s in STATUSES], run
    assert counts[MODEL][0] > 0 and counts[OTHER][STATUSES.index("no claim")] > 0


def test_leaderboard_lists_every_run_with_its_rank_columns(demo_report):
    board = table_by_id(demo_report["text"], "leaderboard-table")
    head = [clean(c) for c in board["head"][0]["cells"]]
    assert head[:4] == ["Rank", "Rank interval", "Tie group", "Run"]
    assert "shapeworld-shape" in head
    runs = [clean(r["cells"][3]) for r in board["rows"]]
    assert sorted(runs) == sorted([MODEL, OTHER])
    shape = head.index("shapeworld-shape")
    assert {clean(r["cells"][shape]).split()[0] for r in board["rows"]} == {"91.60"}


def test_task_sections_show_classes_pairs_skipped_envelope_curves_and_provenance(demo_report):
    text, out = demo_report["text"], demo_report["out"]
    shape = task_section(text, "shapeworld-shape")
    sidecar = [json.loads(line) for line in (out / "runs" / MODEL / "shapeworld-shape.perclass.jsonl").open()]
    classes = sorted((c for c in sidecar[1]["classes"] if c["support"]),
                     key=lambda c: (c["accuracy"], c["ci"][1], -c["support"], c["class"]))
    per_class = [t for t in tables_of(shape) if t["rows"] and len(t["rows"][0]["cells"]) == 7]
    assert len(per_class) == 2  # one per run
    assert [clean(r["cells"][1]) for r in per_class[0]["rows"]] == [c["name"] for c in classes]
    assert [clean(r["cells"][4]) for r in per_class[0]["rows"]] == [f"{100 * c['accuracy']:.2f}" for c in classes]
    top = sidecar[1]["confused_pairs"][0]
    assert f"{html.escape(top['true_name'])} → {html.escape(top['pred_name'])}" in shape
    # the older run's two skipped samples, each with the reason its log gives
    for key, why in SKIPPED:
        assert re.search(rf"{re.escape(key)}(</td>)?<td>{re.escape(why)}", shape), key
    assert "Skipped samples: 2</b>" in shape
    # the envelope evalkit envelope wrote beside the demo's result
    env = json.loads((out / "runs" / MODEL / "shapeworld-shape.envelope.json").read_text())
    low, high = env["range"]
    assert f"spans <b>{100 * low:.2f}–{100 * high:.2f} %</b> over {env['n_variants']} protocol variants" in shape
    # few-shot curves drawn inline by matplotlib, as SVG text
    fewshot = task_section(text, "shapeworld-3d-fewshot")
    assert re.search(r"<svg [^>]*xmlns=\"http://www.w3.org/2000/svg\"", fewshot)
    assert "few-shot linear probe" in fewshot and MODEL in fewshot
    # provenance: the new run records its fingerprint and timings; the older one says what it lacks
    assert "evalkit-content-v1" in shape and "embedding " in shape
    assert shape.count("⚠ not recorded") >= 2  # the older run's task version and data fingerprint


def test_runs_show_their_own_provenance_certificates_and_warnings(demo_report):
    text = demo_report["text"]
    runs = section(text, "runs")
    mine = runs[runs.index(f'id="run-{MODEL}"'):runs.index(f'id="run-{OTHER}"')]
    other = runs[runs.index(f'id="run-{OTHER}"'):]
    assert "<h4>Certificate</h4>" in mine and "✓ matches" in mine and "cert-bad" not in mine
    assert 'href="#env-1">E1</a>' in mine
    assert "cert-bad" in other and "its own hash does not match" in other
    assert "0.0.9" in other and "Environment<dd><span class=\"muted\">not recorded" in other
    warnings = section(text, "warnings")
    assert "evalkit versions 0.0.9, 0.1.0" in warnings
    assert re.search(rf"{OTHER}</a>: results that do not record a protocol field: task version \(6 of 6\)", warnings)
    assert "cannot be trusted" in warnings


def test_a_task_lists_only_its_worst_classes(tmp_path):
    from evalkit.records import result_entry, write_records
    from evalkit.results import TaskResult, result_path, write_result
    from evalkit.tasks.perclass import perclass_document, sidecar_for, sidecar_text

    n_classes, n = 50, 2000
    rng = np.random.default_rng(0)
    target = rng.integers(0, n_classes, n).astype(np.int32)
    skill = np.linspace(0.2, 0.99, n_classes)[target]  # class i right with a rising probability
    pred = np.where(rng.random(n) < skill, target, (target + 1) % n_classes).astype(np.int32)
    top = np.stack([pred, (pred + 1) % n_classes], axis=1)
    scores = np.tile(np.array([[20.0, 10.0]], np.float32), (n, 1))
    arrays = {"crop": {"key": np.array([f"s{i}" for i in range(n)]), "target": target, "top_classes": top,
                       "top_scores": scores, "margin": scores[:, 0] - scores[:, 1], "pred": pred}}
    meta = {"n_classes": n_classes, "task": "many", "part": None}
    written = write_records(result_path(tmp_path, "m", "many", ".records.npz"), "classification", arrays, meta)
    doc = perclass_document("classification", arrays, meta, [f"class-{i:02d}" for i in range(n_classes)], "task file")
    doc.update(records=written.path.name, records_sha256=written.sha256)
    sidecar_for(written.path).write_text(sidecar_text(doc))
    acc = float((pred == target).mean())
    write_result(TaskResult("many", "m", "w", "zeroshot_classification", {"acc1": acc},
                            evalkit={"family": "classification", "samples": n, "evaluated": n, "skipped": 0,
                                     "records": result_entry([written], "classification"), "best_transform": "crop"}),
                 tmp_path)
    text = write_html(tmp_path, claims=[]).read_text()
    rows = [t for t in tables_of(task_section(text, "many")) if t["rows"] and len(t["rows"][0]["cells"]) == 7][0]["rows"]
    assert len(rows) == WORST_CLASSES
    worst = sorted(doc["analyses"][0]["classes"], key=lambda c: (c["accuracy"], c["ci"][1], -c["support"], c["class"]))
    assert [clean(r["cells"][1]) for r in rows] == [c["name"] for c in worst[:WORST_CLASSES]]
    assert f"the {WORST_CLASSES} worst of {n_classes} classes" in text
    assert "evalkit report --task many --classes 0" in text


def test_the_paper_view_keeps_the_papers_order(demo_report):
    from evalkit.reporting.paper import paper_tables

    out = demo_report["out"]
    text = write_html(out, paper="2402.04252", path=demo_report["root"] / "paper.html").read_text()
    table, aggs = report_tables(out)
    tables = paper_tables(table, "2402.04252", aggs)
    view = section(text, "paper")
    names = re.findall(r"<h3>([^<]+)</h3>", view)
    assert names == [t.name for t in tables] and "Table 2" in names
    first = tables[names.index("Table 2")]
    parsed = tables_of(view)[names.index("Table 2")]
    assert [clean(c) for c in parsed["head"][0]["cells"][1:]] == [first.label(c) for c in first.columns]
    assert [clean(r["cells"][0]) for r in parsed["rows"]] == first.rows


def test_the_tables_it_reads_are_the_reports(demo_report):
    """report_tables is verified_table and aggregate_table computed once; the leaderboard given
    them is the leaderboard that computes them itself."""
    import pandas as pd

    from evalkit.reporting.report import aggregate_table, leaderboard, verified_table

    out, claims = demo_report["out"], demo_report["claims"]
    for model in (None, MODEL):
        table, aggs = report_tables(out, claims, model=model)
        pd.testing.assert_frame_equal(table, verified_table(out, claims, model=model))
        pd.testing.assert_frame_equal(aggs, aggregate_table(out, claims, model=model))
    tables = report_tables(out, claims)
    pd.testing.assert_frame_equal(leaderboard(out, claims, tables=tables), leaderboard(out, claims))


def test_report_command_writes_the_html_by_default_and_obeys_its_flags(demo_report, capsys):
    out, claims = demo_report["out"], str(demo_report["claims"])
    page = out / REPORT_HTML
    page.unlink(missing_ok=True)
    assert cli.main(["report", "--output-dir", str(out), "--claims", claims, "--model", MODEL]) == 0
    assert str(page) in capsys.readouterr().out.split() and page.stat().st_size > 10_000
    page.unlink()
    assert cli.main(["report", "--output-dir", str(out), "--claims", claims, "--model", MODEL, "--no-html"]) == 0
    assert not page.exists() and REPORT_HTML not in capsys.readouterr().out
    elsewhere = demo_report["root"] / "elsewhere" / "r.html"
    assert cli.main(["report", "--output-dir", str(out), "--claims", claims, "--model", MODEL, "--html",
                     str(elsewhere)]) == 0
    assert str(elsewhere) in capsys.readouterr().out.split() and not page.exists()
    assert f"model {MODEL}" in elsewhere.read_text()


def test_a_missing_or_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ResultsFolderError, match="no such folder"):
        write_html(tmp_path / "nope")
    with pytest.raises(ResultsFolderError, match="no results under"):
        write_html(tmp_path)


def test_a_model_without_results_lists_its_claims_and_an_unknown_one_is_an_error(demo_report):
    from evalkit.errors import OptionError
    from evalkit.reporting.report import verified_table

    out = demo_report["out"]
    text = write_html(out, model="eva-clip-18b", path=demo_report["root"] / "18b.html").read_text()
    rows = table_by_id(text, "claims-table")["rows"]
    want = verified_table(out, model="eva-clip-18b")
    assert len(rows) == len(want) > 100
    assert {r["attrs"]["data-verdict"] for r in rows} == {"not run"}
    with pytest.raises(OptionError, match="no claims and no results for model 'no-such-model'"):
        write_html(out, model="no-such-model")


def test_the_wheel_carries_the_assets():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["evalkit"]
    assets = sorted((REPO / "evalkit" / "reporting" / "assets").iterdir())
    assert assets
    for path in assets:
        rel = path.relative_to(REPO / "evalkit").as_posix()
        assert any(re.fullmatch(re.escape(g).replace(r"\*", "[^/]*"), rel) for g in globs), f"{rel} not in {globs}"


# ----------------------------------------------------------------------------- in a browser


def _chromium() -> str | None:
    return shutil.which("chromium") or next((p for p in ("/usr/bin/chromium",) if os.path.exists(p)), None)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright: skipped with the reason without them, failed under CI."""
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed (pip install -e '.[dev]')"
    executable = _chromium()
    if why is None and executable is None:
        why = "no chromium executable (apt-get install chromium; .ci/run installs it)"
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests cannot run: {why}")
        pytest.skip(f"the browser tests need a browser: {why}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable)  # never a downloaded browser
        yield b
        b.close()


class _Page:
    """A page of its own context: every request that is not file:// is recorded and refused, every
    console error and page error recorded."""

    def __init__(self, browser, width: int, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.fetched: list[str] = []
        self.errors: list[str] = []

        def route(r):
            if r.request.url.startswith("file://"):
                r.continue_()
            else:
                self.fetched.append(r.request.url)
                r.abort()

        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def open(self, path: Path):
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_load_state("load")
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page_at(browser):
    opened: list[_Page] = []

    def make(width: int = 1280) -> _Page:
        opened.append(_Page(browser, width))
        return opened[-1]

    yield make
    for p in opened:
        p.close()


def _visible_rows(page, table: str) -> list[dict]:
    return page.eval_on_selector_all(
        f"#{table} tbody tr",
        "rows => rows.filter(r => !r.hidden && r.offsetParent !== null).map(r => ({"
        "attrs: Object.fromEntries(Array.from(r.attributes).map(a => [a.name, a.value])),"
        "cells: Array.from(r.cells).map(c => c.getAttribute('data-v') ?? c.innerText.trim())}))")


def test_browser_opens_the_report_offline_without_errors(demo_report, page_at):
    p = page_at()
    page = p.open(demo_report["html"])
    assert page.title().startswith("evalkit report")
    n = len(demo_report["table"])
    # the script ran: the filter panel counts the rows
    assert page.inner_text("#claims .filters output") == f"{n} of {n} rows shown"
    page.click("#tasks details.task summary")  # a task section opens and closes without a script error
    assert p.errors == [], p.errors
    assert p.fetched == [], p.fetched


def _number(v: str) -> float | None:
    v = v.replace("−", "-").strip()
    try:
        return float(v)
    except ValueError:
        return None


def test_browser_sorts_a_table_by_a_header_click(demo_report, page_at):
    page = page_at().open(demo_report["html"])
    column = 6  # Verified
    header = page.locator("#claims-table thead th").nth(column)
    assert header.inner_text().startswith("Verified")
    before = [r["cells"][column] for r in _visible_rows(page, "claims-table")]
    header.locator("button").click()
    assert header.get_attribute("aria-sort") == "ascending"
    up = [r["cells"][column] for r in _visible_rows(page, "claims-table")]
    numbers = [_number(v) for v in up]
    present = [x for x in numbers if x is not None]
    assert present == sorted(present) and len(present) >= 10
    assert numbers[: len(present)] == present  # blanks ("—") last
    assert sorted(up) == sorted(before) and up != before
    header.locator("button").click()
    assert header.get_attribute("aria-sort") == "descending"
    down = [_number(r["cells"][column]) for r in _visible_rows(page, "claims-table")]
    assert [x for x in down if x is not None] == sorted(present, reverse=True)
    # the verdict column sorts by the verdicts' order, not alphabetically
    verdict = page.locator("#claims-table thead th").nth(9)
    verdict.locator("button").click()
    order = [r["attrs"]["data-verdict"] for r in _visible_rows(page, "claims-table")]
    assert order == sorted(order, key=STATUSES.index)
    assert order[0] == "reproduced" and order[-1] == "no claim"


def test_browser_filters_hide_the_other_rows(demo_report, page_at):
    table = demo_report["table"]
    page = page_at().open(demo_report["html"])
    panel = "#claims .filters"

    def shown() -> list[dict]:
        return _visible_rows(page, "claims-table")

    page.select_option(f"{panel} select[data-filter=verdict]", "not run")
    rows = shown()
    assert len(rows) == int((table["status"] == "not run").sum()) >= 1
    assert {r["attrs"]["data-verdict"] for r in rows} == {"not run"}
    assert page.inner_text(f"{panel} output") == f"{len(rows)} of {len(table)} rows shown"
    page.click(f"{panel} button.reset")
    assert len(shown()) == len(table)
    page.select_option(f"{panel} select[data-filter=table]", "Table 2")
    rows = shown()
    want = table[table["note"].str.startswith("Table 2")]
    assert len(rows) == len(want) >= 7
    assert {r["cells"][1] for r in rows} == {"shapeworld-retrieval"}
    page.select_option(f"{panel} select[data-filter=model]", OTHER)  # filters combine
    assert shown() == []
    page.select_option(f"{panel} select[data-filter=table]", "")
    rows = shown()
    assert {r["attrs"]["data-model"] for r in rows} == {OTHER}
    assert len(rows) == int((table["model"] == OTHER).sum())
    page.select_option(f"{panel} select[data-filter=model]", "")
    page.select_option(f"{panel} select[data-filter=family]", "video")
    assert {r["attrs"]["data-family"] for r in shown()} == {"video"}


@pytest.mark.parametrize("width", [1280, 390])
def test_browser_screenshots_at_laptop_and_phone_width(demo_report, page_at, width, tmp_path_factory):
    from PIL import Image

    p = page_at(width)
    page = p.open(demo_report["html"])
    # nothing wider than the screen: wide tables scroll inside their own box
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    shots = tmp_path_factory.mktemp(f"screenshots-{width}")
    for name, where in (("top", None), ("claims", "#claims"), ("task", "#task-shapeworld-shape")):
        if where:
            page.eval_on_selector(where, "e => e.scrollIntoView()")
        path = shots / f"report-{width}-{name}.png"
        page.screenshot(path=str(path))
        with Image.open(path) as im:
            assert im.size[0] == width
            colours = im.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 40, f"{path}: {len(colours or [])} colours: blank?"
        # not one colour with a few specks: the most common colour (the background) leaves room for content
        if colours:
            assert max(c for c, _ in colours) < 0.97 * im.size[0] * im.size[1], f"{path} is nearly blank"
    # every claim's verdict and verified value on screen at either width (a phone gets a card per claim)
    boxes = page.eval_on_selector_all(
        "#claims-table tbody tr:not([hidden])",
        "rows => rows.map(r => [r.cells[6].getBoundingClientRect().right, r.cells[9].getBoundingClientRect().right])")
    assert boxes and all(0 < right <= width for row in boxes for right in row), boxes[:3]
    # and the filters still hide rows there
    page.select_option('select[data-filter="verdict"]', "not run")
    assert page.eval_on_selector_all("#claims-table tbody tr", "rs => rs.filter(r => r.offsetParent !== null).length") == \
        page.eval_on_selector_all('#claims-table tbody tr[data-verdict="not run"]', "rs => rs.length") > 0
    assert p.errors == [] and p.fetched == []
