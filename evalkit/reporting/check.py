"""``evalkit check``: a results folder against a baseline, for CI regression jobs.

    evalkit check --against demo                   # right after `evalkit run --model eva-clip-demo --tasks demo`
    evalkit check --against baseline/ [--output-dir results] [--min-delta 0.5 | --tolerance 0.5] [--tasks demo]

RUN (``--output-dir``, ``results/`` by default, as for ``evalkit report``) is checked against
BASELINE, which is one of

* ``demo`` or ``paper``: the claims evalkit ships (``claims_demo.csv``, the demo model's recorded
  numbers; ``claims.csv``, the papers'), by name (a folder of that name: ``./demo``);
* a results folder (``evalkit run --output-dir``; the folder holding ``runs/``): every result
  file (model, variant, task) against RUN's file of the same model, variant and task name; the
  task's primary metric (``--all-metrics``: every metric both results have); samples skipped;
* a leaderboard CSV (``evalkit export``): each task column (the task's headline number, in
  percent to 2 decimals) against RUN's leaderboard, row by row (model and variant);
* a claims CSV (``results/claims.csv`` columns, e.g. a model's recorded numbers): the claims of
  each task's primary metric, one per protocol setting (``1frame``, ``8frames`` ...) in its
  headline transform (best-of-both first; ``--all-metrics``: every claim, every metric and
  transform) against RUN, matched by transform and protocol as ``evalkit report`` matches them. A claim names no variant: each variant of a
  claimed model in RUN is held against the model's claims, as in ``evalkit report``. Claims of
  models with no result in RUN are not checked unless ``--model`` names them. The paper's
  printed aggregates (``AVG27`` ...) are not compared; their members are.

Like is compared with like: a result of ``eva-clip-18b`` at ``fp16`` is compared only with the
baseline's ``fp16`` result of ``eva-clip-18b`` (the variant: precision, and weights other than the
card's own; :func:`evalkit.results.run_variant`), never with its int8 or fp32 result.

Each compared number (in percent) is ``ok``, ``regressed`` (worse, by the metric table's direction)
or ``improved``, judged by the statistics, the first rule that applies (``Row.test``):

``mcnemar-exact``
    both sides have per-sample records of the task (the default since records exist): the change
    counts when it is significant, the exact McNemar test on the paired top-1 hits (the samples
    the baseline got right and the run wrong, b, against the reverse, c; retrieval: every query's
    R@1 hit; few-shot: the seed-0 probe at the primary K), Holm-corrected over the tasks compared,
    below α = 0.05, *and* larger than ``--min-delta`` points (default 0). Samples are paired as
    ``evalkit compare`` pairs them; records of different samples are not paired (next rule).
``interval``
    a baseline without records (a leaderboard or claims CSV, ``demo``/``paper``, results written
    with ``--no-records`` or before records): the change counts when the baseline value lies
    outside the run's own interval (the one its result records; a proportion's needs only N)
    *and* |Δ| > ``--min-delta``.
``tolerance``
    a number without an interval (a derived metric an old result did not write): |Δ| beyond 0.5
    points (or ``--min-delta`` if larger), the plain rule.

Example: 80.0 → 79.0 on 10,000 paired images with b = 180, c = 80 is a regression (p ≈ 5e-10);
the same −1.0 on 100 images (b = 2, c = 1, p = 1.0) is ``ok``: not significant.

``--tolerance X`` keeps the plain threshold for those who want one: every number is ``ok`` within
± X points, ``regressed`` or ``improved`` beyond, however many samples it rests on (the rule
before intervals; 0.5 was its default). A spread (``*_std``) that moves is ``changed``, never a
failure. Each row says, in one phrase, why it passed or failed; ``--json`` carries the test, b,
c, p, p_holm and the run's interval.

Nothing is silently left out:

* a task (or metric) of a results folder or leaderboard baseline that RUN lacks is *missing*, a
  failure unless ``--allow-missing``;
* a claim RUN has no number for (a task or protocol setting not run, e.g. the demo's 8-frame video
  claim before ``--frames uniform-8`` was run) is *not run*: listed, not a failure, unless
  ``--require-all`` (then it is missing: what a CI job that ran every claimed setting wants);
* a result of a ``--limit`` run (``evalkit["limit"]`` set; its variant says ``+limit<N>``) is
  never held against a claim as if complete: it is listed as *partial*, not compared;
* one in RUN only is *new*, listed; more samples skipped than the baseline recorded is listed as a
  warning, and so is a different number of samples evaluated.

Exit status: 0 passed; 1 a regression (by the rules above), or something missing; 2 the check
could not run, in one line: BASELINE or RUN not found, a BASELINE in no known format, a file that
cannot be read, a ``--tasks`` name found on neither side, or nothing to compare (no claim of a
model RUN has results of, no result the two sides share, only partial results).
"""

# api layer: reads results and claims through evalkit.reporting.report / evalkit.reporting.claims, imported where used
# so that building the command line (`evalkit --help`) imports no pandas.

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.metric_table import direction, metric_value
from evalkit.reporting.verdicts import DEFAULT_TOLERANCE, SIGNIFICANCE
from evalkit.results import DEFAULT_VARIANT, TaskResult, iter_results, safe_name

__all__ = ["DEFAULT_TOLERANCE", "SHIPPED_CLAIMS", "TESTS", "BaselineError", "NothingToCompare", "CheckReport", "Row",
           "Listed", "check", "detect_baseline", "resolve_baseline"]

# --against NAME: the claims evalkit ships (evalkit.resources.claims_dir())
SHIPPED_CLAIMS = {"demo": "claims_demo.csv", "paper": "claims.csv"}
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
KINDS = ("results", "leaderboard", "claims")
_MOVED = 0.005  # a change visible at two decimals
# a leaderboard's columns that hold no task's number: a number's interval and verdict, the rank interval
_NOT_TASK_SUFFIXES = ("_ci_low", "_ci_high", "_verdict")
_NOT_TASK_COLUMNS = frozenset({"rank", "rank_best", "rank_worst", "tie_group"})
#: the rules a row can be judged by (Row.test)
TESTS = ("mcnemar-exact", "interval", "tolerance", "spread")
_TEST_WORDS = {"mcnemar-exact": "exact McNemar (paired records)", "interval": "the run's interval",
               "tolerance": "the plain tolerance", "spread": "spread (never a failure)"}
_EPS = 1e-9


class BaselineError(EvalkitError, ValueError):
    """The check cannot run: a baseline or results folder that is absent, unreadable or of no
    known format. The message names the path (and line or column)."""


class NothingToCompare(BaselineError):
    """The check ran but no number could be compared: the message says why, in one line."""


@dataclass
class Row:
    """One compared number, in percent, and why it passed or failed.

    ``test``: the rule that judged it (:data:`TESTS`). ``b`` / ``c`` (``mcnemar-exact``): paired
    samples the baseline got right and the run wrong / the baseline wrong and the run right;
    ``p`` their exact McNemar p-value and ``p_holm`` that p-value Holm-corrected over the report's
    paired tests. ``interval``: the run's interval of the number (percent: ``low``, ``high``,
    ``level``, ``method``), where it has one. ``why``: the reason, in one phrase."""

    model: str
    variant: str
    task: str
    metric: str
    baseline: float
    now: float
    delta: float
    status: str  # ok / regressed / improved / changed
    setting: str = ""  # a claim's transform and protocol
    note: str = ""
    test: str = ""
    b: int | None = None
    c: int | None = None
    p: float | None = None
    p_holm: float | None = None
    interval: dict[str, Any] | None = None
    why: str = ""


@dataclass
class Listed:
    """A missing, new or warned-about entry."""

    model: str
    variant: str
    task: str
    metric: str = ""
    setting: str = ""
    note: str = ""

    def describe(self) -> str:
        run = self.model if self.variant in ("", DEFAULT_VARIANT) else f"{self.model} [{self.variant}]"
        what = " ".join(x for x in (run, self.task, self.metric, f"({self.setting})" if self.setting else "") if x)
        return what + (f": {self.note}" if self.note else "")


@dataclass
class CheckReport:
    """``tolerance``: the plain threshold (points) when one was asked for, else None: the
    statistics judge (paired test, the run's interval), with ``min_delta`` and ``alpha``."""

    run: str
    baseline: str
    kind: str
    tolerance: float | None
    min_delta: float = 0.0
    alpha: float = SIGNIFICANCE
    all_metrics: bool = False
    allow_missing: bool = False
    require_all: bool = False
    rows: list[Row] = field(default_factory=list)
    missing: list[Listed] = field(default_factory=list)
    not_run: list[Listed] = field(default_factory=list)  # claims without a number in the run
    partial: list[Listed] = field(default_factory=list)  # --limit results: never held against a claim
    new: list[Listed] = field(default_factory=list)
    warnings: list[Listed] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> list[Row]:
        return [r for r in self.rows if r.status == "regressed"]

    @property
    def improved(self) -> list[Row]:
        return [r for r in self.rows if r.status == "improved"]

    @property
    def passed(self) -> bool:
        return not self.regressed and (self.allow_missing or not self.missing)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_FAIL

    @property
    def rule(self) -> str:
        """How the numbers were judged, in words (the header line says it)."""
        if self.tolerance is not None:
            return f"tolerance ±{self.tolerance:g} points"
        return (f"a change must be significant (exact McNemar on paired top-1 hits, Holm over tasks, "
                f"α {self.alpha:g}; without per-sample records on both sides: the baseline outside the run's "
                f"interval) and beyond --min-delta {self.min_delta:g} points")

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(r.status == s for r in self.rows) for s in ("ok", "regressed", "improved", "changed")}
        counts.update(compared=len(self.rows), missing=len(self.missing), not_run=len(self.not_run),
                      partial=len(self.partial), new=len(self.new), warnings=len(self.warnings))
        counts["by_test"] = {t: n for t in TESTS if (n := sum(r.test == t for r in self.rows))}
        return {
            "run": self.run, "baseline": self.baseline, "baseline_kind": self.kind,
            "rule": "tolerance" if self.tolerance is not None else "statistics", "tolerance": self.tolerance,
            "min_delta": self.min_delta, "alpha": self.alpha,
            "all_metrics": self.all_metrics, "allow_missing": self.allow_missing, "require_all": self.require_all,
            "passed": self.passed, "exit_code": self.exit_code, "counts": counts,
            "rows": [asdict(r) for r in self.rows], "missing": [asdict(x) for x in self.missing],
            "not_run": [asdict(x) for x in self.not_run], "partial": [asdict(x) for x in self.partial],
            "new": [asdict(x) for x in self.new], "warnings": [asdict(x) for x in self.warnings],
            "notes": self.notes,
        }

    def format(self, all_rows: bool = False) -> str:
        from tabulate import tabulate

        lines = [f"evalkit check: {self.run} against {self.baseline} ({self.kind}), {self.rule}"
                 + (", every shared metric" if self.all_metrics else ", primary metrics")]
        shown = [r for r in self.rows if all_rows or r.status != "ok" or abs(r.delta) >= _MOVED]
        if shown:
            with_setting = any(r.setting for r in shown)
            table = [[r.model, r.variant, r.task, r.metric, *([r.setting] if with_setting else []),
                      f"{r.baseline:.2f}", f"{r.now:.2f}", f"{round(r.delta, 2) + 0.0:+.2f}", r.status, r.test, r.why]
                     for r in shown]
            headers = ["model", "variant", "task", "metric", *(["setting"] if with_setting else []),
                       "baseline", "now", "delta", "status", "test", "why"]
            lines += ["", tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)]
        counts = self.to_dict()["counts"]
        unchanged = sum(r.status == "ok" and abs(r.delta) < _MOVED for r in self.rows)
        how = (f"at ±{self.tolerance:g} points" if self.tolerance is not None else
               "(" + ", ".join(f"{n} by {_TEST_WORDS[t]}" for t, n in counts["by_test"].items()) + ")")
        lines += ["", f"{counts['compared']} compared {how}: {counts['ok']} ok "
                      f"({unchanged} unchanged), {counts['regressed']} regressed, {counts['improved']} improved"
                      + (f", {counts['changed']} spread changed" if counts["changed"] else "")]
        for title, items in (
                (f"missing (in the baseline, not in the run){' — allowed' if self.allow_missing else ''}",
                 self.missing),
                ("not run (claims with no number in the run; --require-all to fail on them)", self.not_run),
                ("partial (--limit runs: a subset of each task, never compared with a claim)", self.partial),
                ("new (in the run only, nothing to compare with)", self.new),
                ("warnings", self.warnings)):
            if items:
                lines += ["", f"{title}: {len(items)}", *(f"  - {x.describe()}" for x in items)]
        if self.notes:
            lines += ["", *self.notes]
        lines.append("")
        if self.passed:
            lines.append("passed")
        else:
            why = []
            if self.regressed:
                why.append(f"{len(self.regressed)} regressed (" + ", ".join(
                    f"{r.task} {r.metric}{f' [{r.variant}]' if r.variant != DEFAULT_VARIANT else ''} "
                    f"{round(r.delta, 2) + 0.0:+.2f}" for r in self.regressed) + ")")
            if self.missing and not self.allow_missing:
                why.append(f"{len(self.missing)} missing" + (" (--require-all)" if self.kind == "claims"
                                                              else " (--allow-missing to accept)"))
            lines.append("FAILED: " + "; ".join(why))
        return "\n".join(lines)


# ----------------------------------------------------------------------------- reading both sides


@dataclass
class _Entry:
    """One (model, variant, task) of a side: metric -> percent, the primary metric, counts."""

    model: str
    variant: str
    task: str
    dataset: str
    primary: str
    metrics: dict[str, float]
    skipped: int | None = None
    evaluated: int | None = None
    result: TaskResult | None = None  # the result behind the numbers (a leaderboard baseline has none)
    folder: Path | None = None  # the results folder it was read from (its records sit beside it)


def resolve_baseline(against: str | Path) -> Path:
    """``--against``: a shipped claims name (:data:`SHIPPED_CLAIMS`) or a path, as given. A name
    wins over a file or folder of the same name in the current folder (write ``./demo`` for that),
    so that ``--against demo`` means the same wherever it is typed."""
    text = str(against)
    if text in SHIPPED_CLAIMS:
        from evalkit.resources import ResourceError, claims_dir

        try:
            path = claims_dir() / SHIPPED_CLAIMS[text]
        except ResourceError as e:
            raise BaselineError(f"baseline {text}: {e}") from e
        if not path.is_file():
            raise BaselineError(f"baseline {text}: the shipped claims file {path} is missing; reinstall evalkit")
        return path
    path = Path(against)
    if not path.exists():
        names = ", ".join(f"{k} ({v})" for k, v in SHIPPED_CLAIMS.items())
        raise BaselineError(f"baseline {text}: no such file or folder, and not the name of shipped claims: {names}")
    return path


def detect_baseline(path: str | Path) -> str:
    """``results``, ``leaderboard`` or ``claims``: what BASELINE is (see the module docstring);
    :class:`BaselineError` for anything else."""
    path = Path(path)
    if path.is_dir():
        if (path / "runs").is_dir():
            return "results"
        raise BaselineError(f"baseline {path}: a folder without runs/ inside; expected a results folder "
                            f"(what `evalkit run --output-dir` wrote), a leaderboard CSV or a claims CSV")
    if not path.exists():
        raise BaselineError(f"baseline {path}: no such file or folder")
    header = _csv_header(path)
    if {"model", "task", "metric", "claimed"} <= set(header):
        return "claims"
    if header and header[0] == "model" and "claimed" not in header and "metric" not in header and len(header) > 1:
        return "leaderboard"
    raise BaselineError(f"baseline {path}: not a results folder, leaderboard CSV (`evalkit export`: "
                        f"model,variant,<task>,...) or claims CSV (model,task,metric,claimed,...); "
                        f"its first line is {', '.join(header[:6]) or '(empty)'}")


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return [h.strip() for h in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BaselineError(f"baseline {path}: cannot read: {e}") from e


def _results(folder: Path, what: str) -> list[TaskResult]:
    try:
        return list(iter_results(folder))
    except ValueError as e:
        raise BaselineError(f"{what}: {e}") from e


def _task_name(r: TaskResult) -> str:
    return str(r.evalkit.get("result_name") or r.dataset)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _entries_from_results(results: Iterable[TaskResult], folder: Path | None = None
                          ) -> dict[tuple[str, str, str], _Entry]:
    from evalkit.reporting.catalog import load_catalog
    from evalkit.reporting.report import primary_metric
    from evalkit.results import result_variant

    catalog = load_catalog()
    out: dict[tuple[str, str, str], _Entry] = {}
    for r in results:
        primary = primary_metric(r.dataset, [r], catalog)
        metrics = {k: v * 100 for k, v in r.metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        derived = metric_value(r.metrics, primary)
        if primary not in metrics and derived is not None:
            metrics[primary] = derived * 100
        key = (r.model, result_variant(r), _task_name(r))
        out[key] = _Entry(*key, dataset=r.dataset, primary=primary, metrics=metrics,
                          skipped=_int(r.evalkit.get("skipped")), evaluated=_int(r.evalkit.get("evaluated")),
                          result=r, folder=folder)
    return out


def _entries_from_leaderboard_rows(rows: Iterable[tuple[int, dict[str, Any]]], primaries: dict[str, str], where: str
                                   ) -> dict[tuple[str, str, str], _Entry]:
    from evalkit.reporting.catalog import load_catalog

    aggregates = {c for g in load_catalog().aggregates if g.column
                  for c in (g.column, f"{g.column}_n", f"{g.column}_claimed")}
    out: dict[tuple[str, str, str], _Entry] = {}
    for line, row in rows:
        model = str(row.get("model") or "").strip()
        if not model:
            raise BaselineError(f"{where}:{line}: empty model")
        variant = str(row.get("variant") or "").strip() or DEFAULT_VARIANT
        for col, cell in row.items():
            if col in ("model", "variant") or col in aggregates or col is None or col in _NOT_TASK_COLUMNS \
                    or col.endswith(_NOT_TASK_SUFFIXES):
                continue
            value = _cell(cell, f"{where}:{line}: column {col!r}")
            if value is None:
                continue  # blank: this model did not run the task
            metric = primaries.get(col, "headline")
            key = (model, variant, col)
            if key in out:
                raise BaselineError(f"{where}:{line}: model {model!r} variant {variant!r} given twice")
            out[key] = _Entry(*key, dataset=col, primary=metric, metrics={metric: value})
    return out


def _cell(cell: Any, where: str) -> float | None:
    if cell is None:
        return None
    if isinstance(cell, float):
        return None if math.isnan(cell) else cell
    text = str(cell).strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BaselineError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise BaselineError(f"{where}: {text!r} is not finite")
    return value


def _read_leaderboard(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                raise BaselineError(f"baseline {path}:1: column(s) given twice: {dupes}")
            rows = []
            for row in reader:
                if None in row:
                    raise BaselineError(f"baseline {path}:{reader.line_num}: more fields than the header has")
                if any((v or "").strip() for v in row.values()):
                    rows.append((reader.line_num, row))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BaselineError(f"baseline {path}: cannot read: {e}") from e


# ----------------------------------------------------------------------------- selection


def _task_filter(tasks: str | Iterable[str] | None) -> tuple[set[str], dict[str, set[str]]] | None:
    """The task names to keep (aliases and groups resolved through the task files; a name that is
    no known task, e.g. an ad-hoc dataset's, is kept as given), and which names each argument gave."""
    from evalkit.reporting.compare import task_selection  # task files: read only when tasks are named

    by_arg = task_selection(tasks)
    if by_arg is None:
        return None
    return set().union(*by_arg.values()), by_arg


def _same_model(a: str, b: str) -> bool:
    return a == b or safe_name(a) == safe_name(b)


def _keep(entry: _Entry, model: str | None, task_names: set[str] | None) -> bool:
    if model is not None and not _same_model(entry.model, model):
        return False
    return task_names is None or entry.task in task_names or entry.dataset in task_names


# ----------------------------------------------------------------------------- comparing


def _status(metric: str, delta: float, tolerance: float) -> str:
    if abs(delta) <= tolerance + _EPS:
        return "ok"
    better = direction(metric)  # the metric table's: +1 higher is better, -1 lower, 0 a spread (_std)
    if better == 0 or "_std" in metric:  # a spread: neither better nor worse when it moves
        return "changed"
    return "improved" if delta * better > 0 else "regressed"


def _row(model: str, variant: str, task: str, metric: str, base: float, now: float, setting: str = "",
         note: str = "") -> Row:
    """A compared number, not judged yet (:func:`_judge` sets its status)."""
    delta = round(now - base, 6) + 0.0
    return Row(model, variant, task, metric, base, now, delta, "", setting, note)


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _metric_key(result: TaskResult, metric: str, value: float, transform: str = "") -> str | None:
    """The key of ``result.metrics`` whose value is ``value`` (percent, to the 2 decimals a
    leaderboard keeps) of ``metric``: the metric itself, or one transform's (``acc1@crop``), that
    transform first where a claim names it. None: a derived metric the result did not write."""
    from evalkit.views.base import TRANSFORMS

    keys = [f"{metric}@{transform}", metric] if transform in TRANSFORMS else \
        [metric, *(f"{metric}@{t}" for t in TRANSFORMS)]
    for key in keys:
        v = result.metrics.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v * 100 - value) <= 0.0051:
            return key
    return None


def _paired_test(base: _Entry, now: _Entry, metric: str) -> tuple[int, int, float] | str:
    """The exact McNemar test of a task's primary metric on the paired per-sample records of the
    baseline (A) and the run (B), as ``evalkit compare`` pairs them
    (:func:`evalkit.reporting.compare.compare_task`: the top-1 hits per sample; retrieval, the
    R@1 hit of every query; few-shot, the seed-0 probe of the primary K): ``(b, c, p)``, b the
    samples the baseline got right and the run wrong, c the reverse. Or why the two cannot be
    paired (a string): a side without records, different samples. A records file that cannot be
    read, or is not the one its result was written with, is a :class:`BaselineError` naming it."""
    from evalkit.records import RecordsError
    from evalkit.reporting.compare import CompareError, Side, SideSpec, compare_task

    sides = []
    for entry, what, label in ((base, "baseline", "A"), (now, "run", "B")):
        if entry.result is None or entry.folder is None or not isinstance(entry.result.evalkit.get("records"), dict):
            return f"the {what} has no per-sample records"
        sides.append(Side(label, SideSpec(entry.folder), entry.folder, {entry.task: entry.result}))
    try:
        # only the McNemar counts are read here: one bootstrap resample, not the paired interval's 2,000
        found = compare_task(now.task, *sides, resamples=1)
    except CompareError as e:
        return f"{e} (A: the baseline, B: the run)"
    except (RecordsError, OSError) as e:
        raise BaselineError(f"records of {now.model} {now.variant} {now.task}: {e}") from e
    if found.metric != metric:
        return f"the paired test is of {found.metric}, not {metric}"
    if found.pvalue is None or found.b_count is None or found.c_count is None:
        return "; ".join(found.notes) or "no paired test"
    return found.b_count, found.c_count, found.pvalue


def _prepare(row: Row, result: TaskResult | None, folder: Path | None, *, transform: str = "",
             pair: tuple[_Entry, _Entry] | None = None) -> None:
    """What the statistics judge ``row`` by: the run's interval of the number (``result``'s,
    :func:`evalkit.reporting.evidence.support`) and, for ``pair`` (a baseline and a run entry
    of a task's primary metric), the paired test; :func:`_judge` decides."""
    if direction(row.metric) == 0 or "_std" in row.metric:
        row.test = "spread"
        return
    from evalkit.reporting.evidence import support

    key = _metric_key(result, row.metric, row.now, transform) if result is not None else None
    found = None
    if key is not None:
        try:
            found = support(result, key, folder)
        except ValueError as e:  # a recorded interval that is no interval
            raise BaselineError(f"run {folder}: {e}") from e
    if found is not None and found.interval is not None:
        row.interval = found.interval.scaled(100).to_dict()
    else:
        row.note = _join(row.note, found.note if found is not None else "no interval: the run's result does not "
                         f"hold {row.metric}" if result is not None else "no interval: no result behind the number")
    if pair is not None:
        paired = _paired_test(*pair, row.metric)
        if not isinstance(paired, str):
            row.test, (row.b, row.c, row.p) = "mcnemar-exact", paired
            return
        row.note = _join(row.note, f"not paired: {paired}")
    row.test = "interval" if row.interval is not None else "tolerance"


def _judge(report: CheckReport) -> None:
    """Each row's status and, in one phrase, why: the plain tolerance when one was asked for;
    else the paired tests (Holm over the report's) and the run's intervals (:data:`TESTS`)."""
    if report.tolerance is not None:
        for r in report.rows:
            r.test, r.status = "tolerance", _status(r.metric, r.delta, report.tolerance)
            r.why = (f"|Δ| {abs(r.delta):.2f} {'≤' if r.status == 'ok' else '>'} the tolerance "
                     f"{report.tolerance:g}")
        return
    from evalkit.stats import holm

    paired = [r for r in report.rows if r.test == "mcnemar-exact"]
    for r, q in zip(paired, holm([r.p for r in paired]), strict=True):
        r.p_holm = q
    md = report.min_delta
    for r in report.rows:
        size = abs(r.delta)
        big = size > md + _EPS
        worse = r.delta * direction(r.metric) < 0
        moved = "regressed" if worse else "improved"
        small = f" but |Δ| {size:.2f} ≤ --min-delta {md:g}"
        if r.test == "spread":
            r.status = "changed" if size >= _MOVED and big else "ok"
            r.why = "a spread: listed, never a failure"
        elif r.test == "mcnemar-exact":
            counts = f"b {r.b}, c {r.c}, p_holm {r.p_holm:.2g}"
            if r.b == r.c == 0:
                r.status, r.why = "ok", "the same top-1 on every paired sample"
            elif r.p_holm >= report.alpha:
                r.status, r.why = "ok", f"not significant: {counts}"
            elif r.delta == 0 or (r.b > r.c) != worse:
                r.status, r.why = "ok", f"significant ({counts}) but the metric moved the other way"
            elif not big:
                r.status, r.why = "ok", f"significant ({counts}){small}"
            else:
                r.status, r.why = moved, f"significant {'drop' if worse else 'gain'}: {counts}"
        elif r.test == "interval":
            low, high, level = r.interval["low"], r.interval["high"], r.interval["level"]
            where = f"the run's {level:.0%} interval [{low:.2f}, {high:.2f}]"
            if low - _EPS <= r.baseline <= high + _EPS:
                r.status, r.why = "ok", f"baseline inside {where}"
            else:
                side = "above" if r.baseline > high else "below"
                outside = f"baseline {side} {where}"
                # the baseline beyond the interval on the side the metric calls better: the run is worse
                beyond_worse = (side == "above") == (direction(r.metric) > 0)
                if beyond_worse != worse or r.delta == 0:
                    r.status, r.why = "ok", f"{outside}, but the run's own number lies outside it too"
                elif not big:
                    r.status, r.why = "ok", outside + small
                else:
                    r.status, r.why = moved, outside
        else:  # no interval: the plain tolerance, never less than --min-delta
            threshold = max(DEFAULT_TOLERANCE, md)
            r.status = _status(r.metric, r.delta, threshold)
            r.why = (f"no interval, so the plain tolerance: |Δ| {size:.2f} "
                     f"{'≤' if r.status == 'ok' else '>'} {threshold:g}")


def _compare_entries(report: CheckReport, base: dict[tuple[str, str, str], _Entry],
                     now: dict[tuple[str, str, str], _Entry], *, all_metrics: bool) -> None:
    for key in sorted(base.keys() | now.keys()):
        b, n = base.get(key), now.get(key)
        if n is None:
            report.missing.append(Listed(*key, metric=b.primary if not all_metrics else "",
                                         note="no result in the run"))
            continue
        if b is None:
            report.new.append(Listed(*key, metric=n.primary if not all_metrics else ""))
            continue
        metrics = sorted(b.metrics.keys() & n.metrics.keys(), key=lambda m: (m != b.primary, m)) \
            if all_metrics else [b.primary]
        if b.primary not in b.metrics:
            report.warnings.append(Listed(*key, metric=b.primary, note="the baseline's result has no such metric"))
        elif b.primary not in n.metrics:
            report.missing.append(Listed(*key, metric=b.primary, note="the run's result has no such metric"))
        for m in [m for m in metrics if m in b.metrics and m in n.metrics]:
            row = _row(*key, m, b.metrics[m], n.metrics[m])
            if report.tolerance is None:
                _prepare(row, n.result, n.folder, pair=(b, n) if m == b.primary else None)
            report.rows.append(row)
        if b.skipped is not None and n.skipped is not None and n.skipped > b.skipped:
            report.warnings.append(Listed(*key, note=f"samples skipped increased: {b.skipped} -> {n.skipped}"))
        if b.evaluated is not None and n.evaluated is not None and n.evaluated != b.evaluated:
            report.warnings.append(Listed(*key, note=f"samples evaluated differ: {b.evaluated} -> {n.evaluated}"))


def _names(items: Iterable[str], at_most: int = 8) -> str:
    items = sorted(set(items))
    return ", ".join(items[:at_most]) + (f" ... ({len(items)} in all)" if len(items) > at_most else "")


def _claimed_result(results: list[TaskResult], metric: str, transform: str, protocol: str, verified: float,
                    catalog: Any) -> TaskResult | None:
    """The result a claim's verified number came from: of the run's results of the claim's task,
    the first that satisfies its protocol and holds the number."""
    from evalkit.reporting.claims import canonical_tag, split_protocol
    from evalkit.reporting.report import result_tags

    needed = frozenset(canonical_tag(t) for t in split_protocol(protocol)[0])
    for r in results:
        if needed <= result_tags(r, catalog) and _metric_key(r, metric, verified, transform) is not None:
            return r
    return None


def _check_claims(report: CheckReport, run_dir: Path, path: Path, *, model: str | None,
                  task_names: set[str] | None, all_metrics: bool) -> str:
    """Compare; return why nothing was compared when nothing was (else "")."""
    from evalkit.reporting.catalog import load_catalog
    from evalkit.reporting.claims import ClaimsError, canonical_tag, claim_rank, load_claims, split_protocol
    from evalkit.reporting.report import primary_metric, run_label, verified_table
    from evalkit.results import result_limit, result_variant

    catalog = load_catalog()

    try:
        claims = load_claims(path)
    except ClaimsError as e:
        raise BaselineError(f"baseline {e}") from e
    results = _results(run_dir, f"run {run_dir}")
    label_of = {run_label(r): (r.model, result_variant(r)) for r in results}
    by_run: dict[tuple[str, str], list[TaskResult]] = {}
    for r in results:
        by_run.setdefault((run_label(r), r.dataset), []).append(r)
    limited = {run_label(r) for r in results if result_limit(r) is not None}  # never compared with a claim
    run_models = {m for m, _ in label_of.values()}
    claim_models = set(claims["model"])
    if model is not None:
        keep = {m for m in set(claims["model"]) | run_models if _same_model(m, model)} or {model}
    else:
        keep = run_models
        others = sorted(set(claims["model"]) - run_models)
        if others:
            report.notes.append(f"claims of {len(others)} model(s) with no result in the run not checked "
                                f"(--model NAME to check one): {', '.join(others[:8])}{' ...' if len(others) > 8 else ''}")
    claims = claims[claims["model"].isin(keep)]
    if model is not None and claims.empty and not keep & run_models:
        raise BaselineError(f"--model {model}: no claim of it in the baseline and no result of it in the run")
    table = verified_table(run_dir, claims)  # its status column (but partial) is not read: rows are judged here
    # astype(bool): an empty table's mask must stay a mask, not become a list of column names
    table = table[table["model"].map(lambda label: label_of.get(label, (label, ""))[0] in keep).astype(bool)]
    if task_names is not None:
        table = table[table["task"].isin(task_names)]
    primaries = {t: primary_metric(t, [r for r in results if r.dataset == t], catalog) for t in set(table["task"])}
    claimed = table[table["claimed"].notna()].copy()
    if not all_metrics and not claimed.empty:
        claimed = claimed[[m == primaries[t] for t, m in zip(claimed["task"], claimed["metric"], strict=True)]]
        # one claim per setting (protocol tags): the headline transform (best-of-both first)
        claimed["_setting"] = [";".join(sorted(canonical_tag(t) for t in split_protocol(p)[0]))
                               for p in claimed["protocol"]]
        claimed["_rank"] = [claim_rank(t, p) for t, p in zip(claimed["transform"], claimed["protocol"], strict=True)]
        claimed = claimed.sort_values("_rank", kind="stable").drop_duplicates(
            ["model", "task", "metric", "_setting"], keep="first").sort_index()
    unlisted = 0
    for c in claimed.itertuples(index=False):
        m, variant = label_of.get(c.model, (c.model, ""))
        setting = "; ".join(x for x in (c.transform, c.protocol) if x)
        if c.model in limited and c.status != "partial":
            unlisted += 1  # what a --limit run did not run: nothing it could be compared on anyway
            continue
        if c.status == "partial":  # a --limit result: shown, never compared as if complete
            report.partial.append(Listed(m, variant, c.task, c.metric, setting,
                                         f"{c.verified:.2f} (claimed {c.claimed:g}); {c.note}"))
            continue
        if c.verified is None or math.isnan(c.verified):
            listed = Listed(m, variant, c.task, c.metric, setting, c.note or "no result in the run")
            (report.missing if report.require_all else report.not_run).append(listed)
            continue
        row = _row(m, variant, c.task, c.metric, float(c.claimed), float(c.verified), setting, c.note or "")
        if report.tolerance is None:
            result = _claimed_result(by_run.get((c.model, c.task), []), c.metric, c.transform, c.protocol,
                                     row.now, catalog)
            _prepare(row, result, run_dir, transform=c.transform)
        report.rows.append(row)
    for c in table[table["claimed"].isna()].itertuples(index=False):  # results no claim covers
        m, variant = label_of.get(c.model, (c.model, ""))
        report.new.append(Listed(m, variant, c.task, c.metric, note="no claim"))
    if unlisted:
        report.notes.append(f"{unlisted} claim(s) with no result in the --limit run(s) "
                            f"{_names(x for x in limited if x in set(claimed['model']))} not listed")
    if report.rows:
        return ""
    if not results:
        return f"no results under {run_dir / 'runs'} (the folder `evalkit run --output-dir` wrote)"
    if claimed.empty:
        whose = (f"the model(s) with results in {run_dir} ({_names(run_models)})" if model is None
                 else f"--model {model}")
        return (f"{path} has no claim of {whose}"
                + (f" on --tasks {', '.join(sorted(task_names))}" if task_names is not None else "")
                + (f"; its claims are of {_names(claim_models - run_models)}" if claim_models - run_models else "")
                + "; shipped claims: --against demo (eva-clip-demo), --against paper (the papers' models)")
    unrun = len(report.not_run) + len(report.missing)
    return (f"none of the {len(claimed)} claim(s) of {_names(label_of.get(x, (x, ''))[0] for x in claimed['model'])} "
            f"in {path} has a number in {run_dir}: {unrun} not run, {len(report.partial)} partial"
            + (f", {unlisted} not covered by the --limit run(s)" if unlisted else "")
            + " (--limit results are never compared with a claim)")


def check(run_dir: str | Path, baseline: str | Path, *, tolerance: float | None = None, min_delta: float = 0.0,
          tasks: str | Iterable[str] | None = None, model: str | None = None, all_metrics: bool = False,
          allow_missing: bool = False, require_all: bool = False) -> CheckReport:
    """Check the results under ``run_dir`` against ``baseline`` (a results folder, a leaderboard
    CSV, a claims CSV, or ``demo`` / ``paper`` for the shipped claims; see the module docstring).
    ``tolerance`` is in percentage points; ``tasks`` (comma-separated or a list; aliases and groups
    allowed) and ``model`` narrow both sides; ``require_all`` makes a claim with no number in the
    run a failure (missing) instead of *not run*. Raises :class:`BaselineError` when the check
    cannot run, :class:`NothingToCompare` when nothing could be compared."""
    if tolerance is not None and (tolerance < 0 or not math.isfinite(tolerance)):
        raise BaselineError(f"--tolerance must be a finite number >= 0, got {tolerance}")
    if min_delta < 0 or not math.isfinite(min_delta):
        raise BaselineError(f"--min-delta must be a finite number >= 0, got {min_delta}")
    if tolerance is not None and min_delta:
        raise BaselineError("--tolerance (a plain threshold) and --min-delta (with the statistics) are two rules: "
                            "give one")
    if allow_missing and require_all:
        raise BaselineError("--allow-missing and --require-all contradict each other: give one")
    from evalkit.reporting.catalog import load_catalog
    from evalkit.reporting.report import leaderboard, primary_metric

    named = str(baseline) if str(baseline) in SHIPPED_CLAIMS else ""
    run_dir, baseline = Path(run_dir), resolve_baseline(baseline)
    kind = detect_baseline(baseline)
    if not run_dir.is_dir():
        raise BaselineError(f"run {run_dir}: no such folder (--output-dir: the folder `evalkit run` wrote to)")
    selected = _task_filter(tasks)
    task_names = selected[0] if selected else None
    report = CheckReport(run=str(run_dir), baseline=f"{named} ({baseline})" if named else str(baseline), kind=kind,
                         tolerance=tolerance, min_delta=min_delta,
                         all_metrics=all_metrics, allow_missing=allow_missing, require_all=require_all)
    if kind == "claims":
        why_nothing = _check_claims(report, run_dir, baseline, model=model, task_names=task_names,
                                    all_metrics=all_metrics)
        seen = {x.task for x in (*report.rows, *report.missing, *report.not_run, *report.partial, *report.new)}
    else:
        run_results = _results(run_dir, f"run {run_dir}")
        if kind == "results":
            now = _entries_from_results(run_results, run_dir)
            base = _entries_from_results(_results(baseline, f"baseline {baseline}"), baseline)
        else:
            primaries: dict[str, str] = {}
            catalog = load_catalog()
            for r in run_results:
                primaries.setdefault(r.dataset, primary_metric(r.dataset, [r], catalog))
            base = _entries_from_leaderboard_rows(_read_leaderboard(baseline), primaries, f"baseline {baseline}")
            board = leaderboard(run_dir) if run_results else None
            rows = [] if board is None else [
                (i + 2, {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else
                             round(v, 2) if isinstance(v, float) else v) for k, v in row.items()})
                for i, row in enumerate(board.astype(object).to_dict("records"))]
            now = _entries_from_leaderboard_rows(rows, primaries, f"run {run_dir} (leaderboard)")
            for entry in _entries_from_results(run_results, run_dir).values():  # the result behind each number
                row = now.get((entry.model, entry.variant, entry.dataset))
                if row is not None and row.result is None and entry.result is not None and _metric_key(
                        entry.result, row.primary, row.metrics.get(row.primary, math.nan)) is not None:
                    row.result, row.folder = entry.result, run_dir
        seen = {e.task for e in (*base.values(), *now.values())} | {e.dataset for e in (*base.values(), *now.values())}
        base = {k: e for k, e in base.items() if _keep(e, model, task_names)}
        now = {k: e for k, e in now.items() if _keep(e, model, task_names)}
        if model is not None and not base and not now:
            raise BaselineError(f"--model {model}: no result of it in the run or the baseline")
        _compare_entries(report, base, now, all_metrics=all_metrics)
        if not run_results:
            why_nothing = f"no results under {run_dir / 'runs'} (the folder `evalkit run --output-dir` wrote)"
        else:
            why_nothing = (f"the run and the baseline share no result (model, variant, task): the baseline has "
                           f"{_names(' '.join(k) for k in base) or 'none'}, the run {_names(' '.join(k) for k in now) or 'none'}")
    if selected:
        unmatched = [arg for arg, names in selected[1].items() if not names & seen]
        if unmatched:
            raise BaselineError(f"--tasks {', '.join(unmatched)}: no such task in the run or the baseline")
    if not report.rows:
        raise NothingToCompare(f"nothing to compare: {why_nothing}")
    _judge(report)
    order = {"regressed": 0, "improved": 1, "changed": 2, "ok": 3}
    report.rows.sort(key=lambda r: (order[r.status], r.model, r.variant, r.task, r.metric, r.setting))
    return report
