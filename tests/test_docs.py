"""The documentation (issue 17 §8): README.md stays a front page, every page under docs/ is in the
site's nav (mkdocs.yml), the README's links land on a file and a heading that exist, the Python
API page's example runs and prints what the page says it prints, and no timing appears without
the benchmark that measured it and a date.

``mkdocs build --strict`` itself (broken links and anchors between the pages) runs in .ci/run and
``nox -s docs``; these tests read the files only, except the API example, which runs the demo.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
README_MAX_LINES = 200

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def nav_pages(nav: list) -> list[str]:
    """Every page a mkdocs nav names (entries are "page.md", {"Title": "page.md"} or {"Section": [...]})."""
    pages = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def markdown_pages() -> list[str]:
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


def test_readme_is_a_front_page():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move details to docs/"


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config.get("docs_dir", "docs") == "docs"
    listed = nav_pages(config["nav"])
    assert len(listed) == len(set(listed)), f"a page is listed twice in mkdocs.yml's nav: {listed}"
    pages = markdown_pages()
    assert pages, "no pages under docs/"
    missing = sorted(set(pages) - set(listed))
    assert not missing, f"docs pages not in mkdocs.yml's nav: {missing}"
    absent = sorted(set(listed) - set(pages))
    assert not absent, f"mkdocs.yml's nav names pages that do not exist under docs/: {absent}"


def heading_ids(page: Path) -> set[str]:
    """The ids mkdocs (Python-Markdown's toc) gives a page's headings."""
    from markdown.extensions.toc import slugify

    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    ids = set()
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title).replace("`", "")
        ids.add(slugify(plain, "-"))
    return ids


def test_readme_links_land_on_files_and_headings_that_exist():
    # mkdocs checks the links between docs pages; README.md is outside the site, so here
    text = FENCE.sub("", README.read_text(encoding="utf-8"))
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, "README.md links to nothing"
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = (REPO / path).resolve()
        assert target.exists(), f"README.md links to {link}: {path} does not exist"
        if anchor:
            assert target.suffix == ".md", link
            assert anchor in heading_ids(target), f"README.md links to {link}: no such heading in {path}"


# names of the wheel's parts, not files of the checkout
NOT_FILES = {"evalkit/__init__", "evalkit/_tasks", "evalkit/_claims"}


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{p}" for p in markdown_pages())])
def test_the_files_a_page_names_exist(page):
    # a module moved or renamed leaves the pages that name it pointing at nothing
    text = (REPO / page).read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:evalkit|tests|benchmarks|tools|tasks|docs|\.ci)/[\w./-]*\w/?)`", text))
    missing = sorted(n for n in named if n.rstrip("/") not in NOT_FILES and not (REPO / n).exists())
    assert not missing, f"{page} names files that do not exist: {missing}"


# a time that is a setting, not a measurement (a default, a threshold, an option's syntax)
SETTINGS = (
    "default 3600 s", "has run 2 s", "every 30 s", "shorter than 2 s", "gives up 2 s",
    "30d, 12h, 90m, 45s", "0s when", "load average (1 minute)",
)
TIMING = re.compile(r"(?<![\w.])\d[\d,.]*\s?(?:µs|ms|s|min|minutes?|h|hours?)\b")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
BENCHMARK = re.compile(r"\bbench_\w+(?:\.py)?\b|nox -s bench\b")


def sections(text: str) -> list[str]:
    """A page cut at its headings, fenced blocks left out (an example's output is not a figure)."""
    return re.split(r"^#{1,6} ", FENCE.sub("", text), flags=re.M)


def undated_timings(text: str) -> list[str]:
    found = []
    for section in sections(text):
        prose = re.sub(r"`[^`\n]*`", "", section)  # a message or command quoted in code is not a figure
        for phrase in SETTINGS:
            prose = prose.replace(phrase, "")
        times = TIMING.findall(prose)
        if times and not (DATE.search(section) and BENCHMARK.search(section)):
            found.append(f"{section.splitlines()[0][:60]!r}: {times[:4]}")
    return found


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{p}" for p in markdown_pages())])
def test_no_figure_goes_stale_unmeasured(page):
    text = (REPO / page).read_text(encoding="utf-8")
    counts = re.findall(r"\b\d[\d,]*\s+tests\b", text)
    assert not counts, f"{page}: a test count goes stale with the next test: {counts}"
    undated = undated_timings(text)
    assert not undated, f"{page}: timings in a section that names no benchmark (bench_*.py) and no date: {undated}"


def test_the_timing_rule_catches_an_undated_figure():
    assert undated_timings("## Speed\n\nThe demo takes 23.9 s.\n")
    assert undated_timings("## Speed\n\n`bench_demo.py`: the demo takes 23.9 s.\n")  # no date
    assert undated_timings("## Speed\n\nOn 2026-12-06 the demo took 23.9 s.\n")  # no benchmark
    assert not undated_timings("## Speed\n\n`bench_demo.py`, 2026-12-06: the demo takes 23.9 s.\n")
    assert not undated_timings("## Speed\n\nThe planner's warning: `about 1.0 s per batch`.\n")
    assert not undated_timings("## Speed\n\n```\ndone, 500 img in 17.9 s\n```\n")


def test_the_task_files_shown_are_the_shipped_ones():
    page = (DOCS / "tasks.md").read_text(encoding="utf-8")
    shown = re.findall(r"`(tasks/[\w/.-]+\.yaml)`, as shipped.*?```yaml\n(.*?)```", page, re.S)
    assert len(shown) >= 2, "docs/tasks.md: a task file and a group file, as shipped"
    for path, text in shown:
        shipped = yaml.safe_load((REPO / path).read_text(encoding="utf-8"))
        assert yaml.safe_load(text) == shipped, f"docs/tasks.md shows {path} other than it is"


def api_page_blocks() -> tuple[list[str], str]:
    """The API page's Python blocks, in order, and the output block the page says the first prints."""
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    start = page.index("<!-- api-example:")
    blocks = [body for lang, body in FENCE.findall(page[start:]) if lang == "python"]
    out = FENCE.search(page, page.index("<!-- api-example-output -->"))
    assert blocks and out and out.group(1) == "", "docs/api.md: the example or its output block is missing"
    return blocks, out.group(2)


def test_the_api_example_prints_what_the_page_says(tmp_path, monkeypatch, capsys):
    blocks, expected = api_page_blocks()
    assert "eva-clip-demo" in blocks[0] and '"demo"' in blocks[0], "the example runs the demo group"
    monkeypatch.chdir(tmp_path)  # the example writes results/ in the current folder
    exec(compile(blocks[0], "docs/api.md (example)", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    assert re.search(r"^shapeworld-shape: acc1 = \d+\.\d\d$", printed, re.M), printed
    assert printed == expected, f"docs/api.md's example printed\n{printed}\nthe page says\n{expected}"
    for i, block in enumerate(blocks[1:], 2):  # the page's other blocks read what the example wrote
        exec(compile(block, f"docs/api.md (block {i})", "exec"), {"__name__": "__docs__"})
    assert "shapeworld-shape" in capsys.readouterr().out
