"""The claim-arithmetic audit: what the printed numbers of a claims file say about each other,
with no model and no data (``evalkit claims audit``).

Four checks, each a :class:`Finding` that names its rows (table, model, dataset, metric, the
printed value, the file and line):

``reachable``
    A proportion (top-k accuracy, a retrieval recall) printed to d decimals is some k/N of the
    test set, rounded: some integer 0 <= k <= N has 100·k/N within ½·10⁻ᵈ of the printed value
    (the interval closed, so a tie passes under either rounding rule). ``mean_acc1_acc5`` is
    (k1 + k5)/(2N), so any m/(2N). N is a size the task file states
    (:data:`COUNTED`: ``protocol.table11_test_size``, the paper's Table 11, and
    ``protocol.expected_size``; for retrieval the images or ``expected_captions``); a value
    reachable under any of them passes. A claim whose task file states no size, or whose metric
    is an average (the paper's aggregates, ``mean_recall``, a few-shot or per-class mean), is not
    checked and is counted in the summary with the reason.
``average``
    A printed average (a claim of a group file's aggregate, :mod:`evalkit.reporting.catalog`, or
    of a derived metric of the metric table such as ``mean_recall``) is the reduction of its
    printed parts: the rows of the same model, transform and setting tags. The reduction is a
    linear form Σ wᵢ·pᵢ (``mean``: wᵢ = 1/n; ``gap``: the first member minus the mean of all),
    and a part printed to dᵢ decimals is off by at most ½·10⁻ᵈⁱ, so the rule is
    |Σ wᵢ·pᵢ − a| <= ½·10⁻ᵈ⁽ᵃ⁾ + Σ |wᵢ|·½·10⁻ᵈⁱ (for a mean of parts printed to d decimals:
    ½·10⁻ᵈ⁽ᵃ⁾ + ½·10⁻ᵈ). An average some of whose parts are not in the file is listed in the
    summary with the missing parts, not a finding.
``repeat``
    The same (model, task, metric, transform, setting tags) printed in two places (two files, or
    rows that differ only in provenance tags such as ``reported``) is the same number: some value
    rounds to both, |a − b| < ½·10⁻ᵈ⁽ᵃ⁾ + ½·10⁻ᵈ⁽ᵇ⁾ (equal decimals: the same text).
``range``
    A percentage lies in [0, 100] (a ``gap`` in [−100, 100]), and of one model, task, transform
    and setting, a top-k or recall@k never falls as k grows: a finding when the smaller k's
    printed value less its half-unit is at least the larger k's plus its half-unit (equal
    decimals: the larger k printed lower).

Printed decimals are read from the CSV text of the ``claimed`` cell (``"91.60"`` has 2, ``"91.6"``
has 1), never from the float, and all arithmetic is exact (:class:`fractions.Fraction`).
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd

from evalkit.metric_table import members as derived_members
from evalkit.metric_table import parse
from evalkit.reporting.catalog import Aggregate, Catalog, load_catalog
from evalkit.reporting.claims import (
    CLAIM_COLUMNS,
    ClaimsError,
    canonical_tag,
    default_claims_path,
    load_claims,
    split_protocol,
)
from evalkit.tasks.spec import TaskIndex, TaskSpec

CHECKS = ("reachable", "average", "repeat", "range")

# A proportion metric (a metric-table name, ``{k}`` any positive integer) -> the task-file
# protocol keys that may hold its denominator, and how many counts of the test set it adds up
# (``mean_acc1_acc5``: top-1 and top-5 hits, over 2N). clip_benchmark's "text_retrieval" is
# image->text: one query per image; "image_retrieval" is text->image: one query per caption.
COUNTED: dict[str, tuple[tuple[str, ...], int]] = {
    "acc{k}": (("table11_test_size", "expected_size"), 1),
    "mean_acc1_acc5": (("table11_test_size", "expected_size"), 2),
    "text_retrieval_recall@{k}": (("expected_size",), 1),
    "image_retrieval_recall@{k}": (("expected_captions",), 1),
}
# metric names whose value cannot fall as k grows (top-k accuracy, recall@k)
MONOTONE_IN_K = ("acc{k}", "text_retrieval_recall@{k}", "image_retrieval_recall@{k}")
HUNDRED = Fraction(100)


def match_name(pattern: str, metric: str) -> int | None:
    """``k`` when ``metric`` is ``pattern`` with its ``{k}`` filled (``acc5`` of ``acc{k}``: 5), 0
    for a pattern without ``{k}`` that equals it, None when it is not."""
    if "{k}" not in pattern:
        return 0 if metric == pattern else None
    m = re.fullmatch(re.escape(pattern).replace(re.escape("{k}"), r"([1-9][0-9]*)"), metric)
    return int(m.group(1)) if m else None


def counted(metric: str) -> tuple[tuple[str, ...], int] | None:
    """The :data:`COUNTED` entry of ``metric``, or None when it is no proportion of the test set."""
    for pattern, entry in COUNTED.items():
        if match_name(pattern, metric) is not None:
            return entry
    return None


@dataclass(frozen=True)
class Finding:
    """One thing the printed numbers contradict. ``rows``: the claims rows at fault, the first the
    one the finding is about (an average, then its parts), each a dict with ``table``, ``model``,
    ``task``, ``dataset``, ``metric``, ``transform``, ``protocol``, ``claimed`` (as printed) and
    ``origin`` (file:line)."""

    check: str
    rows: tuple[dict[str, str], ...]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "message": self.message, "rows": [dict(r) for r in self.rows]}


@dataclass
class AuditReport:
    findings: list[Finding]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """1 when there is a finding, else 0 (the codes of :mod:`evalkit.cli.help`)."""
        return 1 if self.findings else 0

    def to_dict(self) -> dict[str, Any]:
        return {"findings": [f.to_dict() for f in self.findings], "summary": self.summary}

    def format(self) -> str:
        s = self.summary
        lines = [f"claim-arithmetic audit: {s.get('rows', 0)} claims from {', '.join(s.get('files', [])) or '-'}"]
        for check in CHECKS:
            found = [f for f in self.findings if f.check == check]
            c = s.get("checks", {}).get(check, {})
            lines.append("")
            lines.append(f"{check}: {len(found)} finding(s) of {c.get('checked', 0)} checked")
            for f in found:
                lines.append(f"  - {f.message}")
                lines.append(f"    rows: {origins(f.rows)}")
            for reason, n in sorted(c.get("skipped", {}).items()):
                lines.append(f"  not checked: {n} claim(s): {reason}")
            for inc in c.get("incomplete", []):
                lines.append(f"  not checked (parts missing): {describe(inc['row'])}: missing {', '.join(inc['missing'])}")
        lines.append("")
        lines.append(f"{len(self.findings)} finding(s)" if self.findings else "no findings")
        return "\n".join(lines)


def origins(rows: Iterable[Mapping[str, str]]) -> str:
    """``claims.csv lines 580, 568`` for rows from one file; files joined by ``; ``."""
    lines: dict[str, list[str]] = {}
    for r in rows:
        path, _, line = str(r.get("origin", "")).rpartition(":")
        lines.setdefault(path, []).append(line)
    return "; ".join(f"{path} line{'s' if len(ls) > 1 else ''} {', '.join(ls)}" for path, ls in lines.items())


# --- reading -------------------------------------------------------------------------------------

def default_paths() -> list[Path]:
    """The shipped claims: ``claims.csv`` and the ``claims_*.csv`` beside it (as
    :func:`evalkit.reporting.claims.load_claims` reads them by default)."""
    return sorted(default_claims_path().parent.glob("claims*.csv")) or [default_claims_path()]


def _claimed_texts(path: Path) -> dict[int, str]:
    """Line number (as :func:`load_claims` numbers a row in ``origin``) -> the ``claimed`` cell's text."""
    out: dict[int, str] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        col = header.index("claimed")
        for row in reader:
            if len(row) == len(header):
                out[reader.line_num] = row[col].strip()
    return out


def read_claims(paths: str | Path | Iterable[str | Path] | None = None, *,
                catalog: Catalog | None = None) -> pd.DataFrame:
    """The claims of ``paths`` (default :func:`default_paths`), each file read and validated on its
    own by :func:`load_claims` (so a claim repeated across files reaches the ``repeat`` check),
    plus ``claimed_text``: the ``claimed`` cell as written. A bad file raises
    :class:`~evalkit.reporting.claims.ClaimsError` naming the file and line."""
    if paths is None:
        paths = default_paths()
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for path in map(Path, paths):
        try:
            frame = load_claims([path], catalog=catalog)
        except UnicodeDecodeError as e:
            line = path.read_bytes()[: e.start].count(b"\n") + 1
            raise ClaimsError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start}); "
                              f"a claims file is a UTF-8 CSV") from None
        texts = _claimed_texts(path)
        frame["claimed_text"] = [texts[int(o.rsplit(":", 1)[1])] for o in frame["origin"]]
        frames.append(frame)
    if not frames:
        raise ClaimsError("no claims file given")
    return pd.concat(frames, ignore_index=True)


# --- printed numbers -----------------------------------------------------------------------------

def decimals(text: str) -> int:
    """The decimals a number is printed to, from its text: ``"91.60"`` -> 2, ``"91.6"`` -> 1,
    ``"92"`` -> 0, ``"9.16e1"`` -> 1 (the exponent counted)."""
    try:
        exponent = Decimal(text.strip()).as_tuple().exponent
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not isinstance(exponent, int):
        raise ValueError(f"not a finite number: {text!r}")
    return max(0, -exponent)


def exact(text: str) -> Fraction:
    """The printed number as an exact fraction (``"0.1"`` is 1/10, not the float's binary value)."""
    return Fraction(Decimal(text.strip()))


def half_unit(text: str) -> Fraction:
    """Half a unit of the last printed decimal: how far the true value may lie from the print."""
    return Fraction(1, 2 * 10 ** decimals(text))


def reachable_counts(text: str, n: int) -> tuple[int, int] | None:
    """(k_low, k_high): the counts k in 0..n whose 100·k/n rounds to the printed ``text`` (the
    interval [v − h, v + h] closed), or None when none does."""
    v, h = exact(text), half_unit(text)
    lo = max(0, math.ceil((v - h) * n / HUNDRED))
    hi = min(n, math.floor((v + h) * n / HUNDRED))
    return (lo, hi) if lo <= hi else None


def nearest_counts(text: str, n: int) -> tuple[int, int]:
    """The two counts k, k + 1 whose 100·k/n bracket the printed value (within 0..n)."""
    k = math.floor(exact(text) * n / HUNDRED)
    k = min(max(k, 0), max(n - 1, 0))
    return k, k + 1


def _fmt(x: Fraction, places: int = 3) -> str:
    return f"{float(x):.{places}f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


# --- rows ----------------------------------------------------------------------------------------

def table_of(note: str) -> str:
    """The table a row comes from: the first ``;``-part of its note (``"Table 2"``, ``"EVA-CLIP
    README model card"``), or ``"(no table)"``."""
    first = str(note or "").split(";")[0].strip()
    return first or "(no table)"


def row_ref(rec: Mapping[str, Any]) -> dict[str, str]:
    """How a finding names one claims row."""
    return {
        "table": table_of(str(rec.get("note", ""))),
        "model": str(rec["model"]),
        "task": str(rec["task"]),
        "dataset": str(rec.get("paper_dataset") or rec["task"]),
        "metric": str(rec["metric"]),
        "transform": str(rec.get("transform", "")),
        "protocol": str(rec.get("protocol", "")),
        "claimed": str(rec["claimed_text"]),
        "origin": str(rec.get("origin", "")),
    }


def describe(ref: Mapping[str, str]) -> str:
    """``Table 2, eva-clip-18b, DTD (dtd) acc1 [best-of-both] = 73.9``."""
    setting = ";".join(x for x in (ref["transform"], ref["protocol"]) if x)
    dataset = ref["dataset"] if ref["dataset"] == ref["task"] else f"{ref['dataset']} ({ref['task']})"
    return (f"{ref['table']}, {ref['model']}, {dataset} {ref['metric']}"
            + (f" [{setting}]" if setting else "") + f" = {ref['claimed']}")


def _setting(protocol: str) -> frozenset[str]:
    """The setting tags a number is measured under, spelled one way; ``1frame`` is the default
    (a claim with no frame count is one frame), so it is left out."""
    setting, _ = split_protocol(protocol)
    return frozenset(canonical_tag(t) for t in setting) - {"1frame"}


@dataclass(frozen=True)
class _Row:
    rec: dict[str, Any]
    task: str  # the task's own name (an alias resolved)
    setting: frozenset[str]
    provenance: frozenset[str]

    @property
    def ref(self) -> dict[str, str]:
        return row_ref(self.rec)

    @property
    def text(self) -> str:
        return str(self.rec["claimed_text"])

    @property
    def value(self) -> Fraction:
        return exact(self.text)

    def key(self, task: str | None = None, metric: str | None = None) -> tuple[Any, ...]:
        return (self.rec["model"], task or self.task, metric or self.rec["metric"], self.rec["transform"], self.setting)


def _rows(frame: pd.DataFrame, index: TaskIndex) -> list[_Row]:
    if "claimed_text" not in frame.columns:
        raise ValueError("the claims table needs a claimed_text column (the printed text): read it with read_claims")
    out = []
    for rec in frame.to_dict("records"):
        rec = {c: ("" if rec.get(c) is None else rec.get(c)) for c in [*CLAIM_COLUMNS, "origin", "claimed_text"]}
        spec = index.lookup(str(rec["task"]))
        setting, provenance = split_protocol(str(rec["protocol"]))
        out.append(_Row(rec, spec.name if spec is not None else str(rec["task"]), _setting(str(rec["protocol"])),
                        frozenset(provenance)))
    return out


# --- the checks ----------------------------------------------------------------------------------

def test_sizes(spec: TaskSpec | None, metric: str) -> tuple[tuple[int, ...], int, str]:
    """(candidate sizes N, counts per sample, why none) for a proportion ``metric`` of a task: the
    sizes its task file's protocol states under the keys :data:`COUNTED` names, each once."""
    entry = counted(metric)
    if entry is None:
        return (), 0, "an average, not a count k/N"
    if spec is None:
        return (), 0, "task not in the task files"
    if spec.protocol.get("splits"):
        return (), 0, "a mean over several splits, not a count k/N"
    keys, per = entry
    sizes: list[int] = []
    for key in keys:
        value = spec.protocol.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0 and value not in sizes:
            sizes.append(value)
    if not sizes:
        return (), 0, f"no test size in the task file ({' / '.join('protocol.' + k for k in keys)})"
    return tuple(sizes), per, ""


def check_reachable(rows: Sequence[_Row], index: TaskIndex) -> tuple[list[Finding], dict[str, Any]]:
    findings: list[Finding] = []
    skipped: dict[str, int] = defaultdict(int)
    skipped_tasks: dict[str, set[str]] = defaultdict(set)
    checked = 0
    for r in rows:
        sizes, per, why = test_sizes(index.lookup(r.task), str(r.rec["metric"]))
        if not sizes:
            skipped[why] += 1
            skipped_tasks[why].add(str(r.rec["metric"]) if why.startswith("an average") else r.task)
            continue
        checked += 1
        if any(reachable_counts(r.text, per * n) is not None for n in sizes):
            continue
        unit = "k/N" if per == 1 else "(k1 + k5)/(2N)"
        near = "; ".join(
            ", ".join(f"{k}/{per * n} = {_fmt(HUNDRED * k / (per * n))}" for k in nearest_counts(r.text, per * n))
            for n in sizes)
        findings.append(Finding("reachable", (r.ref,), (
            f"{describe(r.ref)}: no {unit} with N = {' or '.join(map(str, sizes))} (the task file's test size) "
            f"rounds to {r.text} at {decimals(r.text)} decimal(s); nearest: {near}")))
    reasons = {f"{why} [{', '.join(sorted(skipped_tasks[why]))}]" if len(skipped_tasks[why]) <= 12 else why: n
               for why, n in skipped.items()}
    return findings, {"checked": checked, "findings": len(findings), "skipped": reasons}


def reduction_weights(reduce: str, n: int) -> list[Fraction]:
    """The coefficients of a reduction over n members as a linear form: ``mean`` 1/n each;
    ``gap`` (the first minus the mean of all) 1 − 1/n, then −1/n."""
    if reduce == "mean":
        return [Fraction(1, n)] * n
    if reduce == "gap":
        return [1 - Fraction(1, n)] + [-Fraction(1, n)] * (n - 1)
    raise KeyError(f"unknown reduction {reduce!r}")


def average_within(parts: Sequence[str], printed: str, reduce: str = "mean") -> tuple[Fraction, Fraction, bool]:
    """(the reduction of the printed ``parts``, the tolerance, whether ``printed`` is within it)."""
    w = reduction_weights(reduce, len(parts))
    value = sum((wi * exact(p) for wi, p in zip(w, parts, strict=True)), Fraction(0))
    tol = half_unit(printed) + sum((abs(wi) * half_unit(p) for wi, p in zip(w, parts, strict=True)), Fraction(0))
    return value, tol, abs(value - exact(printed)) <= tol


def _pick(candidates: list[_Row], avg: _Row) -> _Row:
    """Of the rows a part could be (they differ in provenance only), the one of the average's own
    provenance, then of its table, then the first."""
    for ok in (lambda c: c.provenance == avg.provenance, lambda c: table_of(c.rec["note"]) == table_of(avg.rec["note"])):
        same = [c for c in candidates if ok(c)]
        if same:
            return same[0]
    return candidates[0]


def _members(r: _Row, aggregates: Mapping[str, Aggregate],
             present_metrics: Mapping[tuple[Any, ...], set[str]]) -> tuple[list[tuple[str, str]], str, bool] | None:
    """(the (task, metric) parts of an average row, its reduction, whether it is a printed
    aggregate of a group file), or None when the row is no average."""
    metric = str(r.rec["metric"])
    if str(r.rec["task"]) in aggregates:
        agg = aggregates[str(r.rec["task"])]
        return list(agg.members), agg.reduce, True
    parsed = parse(metric)
    if parsed is None or parsed.suffix or not parsed.metric.derived:
        return None
    # a derived metric (mean_recall, mean_acc1_acc5): the metric table's members among the claims of
    # the same model, task and setting (every K of a pattern member that is there); a pattern member
    # with no K there is missing
    have = present_metrics.get((r.rec["model"], r.task, r.rec["transform"], r.setting), set())
    names = derived_members(metric, have)
    for member in parsed.metric.mean_of:
        if "{k}" in member and not any(_row_name(n) == member for n in names):
            names.append(member)
    return [(r.task, m) for m in names], "mean", False


def _row_name(metric: str) -> str:
    parsed = parse(metric)
    return parsed.metric.name if parsed is not None else metric


def check_averages(rows: Sequence[_Row], catalog: Catalog) -> tuple[list[Finding], dict[str, Any]]:
    by_key: dict[tuple[Any, ...], list[_Row]] = defaultdict(list)
    present: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    for r in rows:
        by_key[r.key()].append(r)
        present[(r.rec["model"], r.task, r.rec["transform"], r.setting)].add(str(r.rec["metric"]))
    aggregates = {a.claim: a for a in catalog.aggregates if a.claim}
    findings: list[Finding] = []
    incomplete: list[dict[str, Any]] = []
    unprinted: dict[str, int] = defaultdict(int)
    checked = 0
    for r in rows:
        spec = _members(r, aggregates, present)
        if spec is None:
            continue
        parts_spec, reduce, printed_aggregate = spec
        parts: list[_Row] = []
        missing: list[str] = []
        for task, metric in parts_spec:
            candidates = by_key.get(r.key(task, metric), [])
            if candidates:
                parts.append(_pick(candidates, r))
            else:
                missing.append(f"{task} {metric}")
        if missing and not parts and not printed_aggregate:
            # a derived metric none of whose members is claimed (Kinetics' mean of top-1 and top-5:
            # the paper prints the mean alone): there is nothing printed to add up
            unprinted[f"{r.rec['metric']}: none of its members is claimed"] += 1
            continue
        if missing:
            incomplete.append({"row": r.ref, "missing": missing, "present": len(parts)})
            continue
        checked += 1
        value, tol, ok = average_within([p.text for p in parts], r.text, reduce)
        if ok:
            continue
        tables = sorted({table_of(p.rec["note"]) for p in parts})
        what = "the first minus the mean of" if reduce == "gap" else "the mean of"
        findings.append(Finding("average", (r.ref, *(p.ref for p in parts)), (
            f"{describe(r.ref)}: {what} its {len(parts)} printed parts ({', '.join(tables)}) is {_fmt(value, 4)}, "
            f"off by {_fmt(abs(value - r.value), 4)} (rounding allows {_fmt(tol, 4)})")))
    return findings, {"checked": checked, "findings": len(findings), "incomplete": incomplete,
                      "skipped": dict(unprinted)}


def _overlap(a: str, b: str) -> bool:
    """Whether some value rounds to both printed numbers (half-open rounding intervals)."""
    return abs(exact(a) - exact(b)) < half_unit(a) + half_unit(b)


def check_repeats(rows: Sequence[_Row]) -> tuple[list[Finding], dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[_Row]] = defaultdict(list)
    for r in rows:
        groups[r.key()].append(r)
    findings: list[Finding] = []
    checked = 0
    for group in groups.values():
        if len(group) < 2:
            continue
        checked += 1
        if all(_overlap(a.text, b.text) for i, a in enumerate(group) for b in group[i + 1:]):
            continue
        first = group[0].ref
        setting = ";".join(x for x in (first["transform"], first["protocol"]) if x)
        printed = "; ".join(f"{g.ref['claimed']} in {g.ref['table']} ({g.ref['origin']})" for g in group)
        findings.append(Finding("repeat", tuple(g.ref for g in group), (
            f"{first['model']}, {first['dataset']} {first['metric']} [{setting}] is printed as {printed}")))
    return findings, {"checked": checked, "findings": len(findings)}


def check_range(rows: Sequence[_Row]) -> tuple[list[Finding], dict[str, Any]]:
    findings: list[Finding] = []
    ladders: dict[tuple[Any, ...], list[tuple[int, _Row]]] = defaultdict(list)
    for r in rows:
        metric = str(r.rec["metric"])
        parsed = parse(metric)
        low = -HUNDRED if parsed is not None and parsed.metric.name == "gap" else Fraction(0)
        if not low <= r.value <= HUNDRED:
            findings.append(Finding("range", (r.ref,), (
                f"{describe(r.ref)}: a percentage outside [{_fmt(low)}, 100]")))
        for pattern in MONOTONE_IN_K:
            k = match_name(pattern, metric)
            if k is not None:
                ladders[(r.rec["model"], r.task, pattern, r.rec["transform"], r.setting)].append((k, r))
    pairs = 0
    for ladder in ladders.values():
        ladder.sort(key=lambda kr: kr[0])
        for i, (k_lo, lo) in enumerate(ladder):
            for k_hi, hi in ladder[i + 1:]:
                if k_hi == k_lo:
                    continue
                pairs += 1
                if lo.value - half_unit(lo.text) >= hi.value + half_unit(hi.text):
                    findings.append(Finding("range", (lo.ref, hi.ref), (
                        f"{lo.ref['model']}, {lo.ref['dataset']}: {hi.ref['metric']} = {hi.text} ({hi.ref['table']}) "
                        f"is below {lo.ref['metric']} = {lo.text} ({lo.ref['table']}), but a larger k never "
                        f"scores lower")))
    return findings, {"checked": len(rows), "pairs_checked": pairs, "findings": len(findings)}


# --- the audit -----------------------------------------------------------------------------------

def audit_frame(frame: pd.DataFrame, *, index: TaskIndex | None = None, catalog: Catalog | None = None,
                files: Sequence[str] = ()) -> AuditReport:
    """The audit of a claims table read by :func:`read_claims` (it needs ``claimed_text``).
    ``index`` (the task files: test sizes) and ``catalog`` (the aggregates) default to evalkit's."""
    index = index or TaskIndex.load()
    catalog = catalog or load_catalog()
    rows = _rows(frame, index)
    findings: list[Finding] = []
    checks: dict[str, Any] = {}
    for name, (found, stats) in (("reachable", check_reachable(rows, index)),
                                 ("average", check_averages(rows, catalog)),
                                 ("repeat", check_repeats(rows)),
                                 ("range", check_range(rows))):
        findings += found
        checks[name] = stats
    summary = {"files": list(files), "rows": len(rows), "findings": len(findings), "checks": checks}
    return AuditReport(findings, summary)


def audit(paths: str | Path | Iterable[str | Path] | None = None, *, index: TaskIndex | None = None,
          catalog: Catalog | None = None) -> AuditReport:
    """Audit the claims files ``paths`` (default: the shipped ones, :func:`default_paths`)."""
    catalog = catalog or load_catalog()
    if paths is None:
        paths = default_paths()
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    frame = read_claims(paths, catalog=catalog)
    return audit_frame(frame, index=index, catalog=catalog, files=[str(p) for p in paths])
