"""Claimed vs verified: tables, aggregates, charts and the leaderboard.

Everything here reads result JSONs (``<output_dir>/runs/<model>/[<variant>/]<task>.json``,
fractions 0-1) and claims (:func:`evalkit.reporting.claims.load_claims`, percent) and reports in percent.

Results are grouped by *run*: the model and the result's variant (precision, and weights other
than the card's own; :mod:`evalkit.results`). A run is named by its model alone for the default
variant and ``model [variant]`` otherwise (``eva-clip-18b [int8]``): an int8 run and an fp16 run
of one model are two rows, each held against the model's claims.

How a claim finds its number in a result:

* *protocol*: the claim's setting tags (``1frame``, ``8frames``, ``336px``, ``linear-probe`` ...)
  must all be among the result's tags: ``evalkit["protocol"]`` (a ``;``-separated string, a
  list, or the task file's protocol dict with optional ``tags``), ``{n}frame(s)`` from
  ``frames`` (in that dict or in ``evalkit``; a video result without it counts as 1 frame, the
  paper's main setting) and ``{n}px`` from ``image_size``. Provenance tags (``reported``,
  ``readme``, ``eva-clip-paper``) do not constrain.
* *transform*: ``crop``/``squash`` claims read ``<metric>@crop``/``<metric>@squash`` when the
  result has per-transform keys, else the plain metric if the result ran that transform;
  ``best-of-both`` claims take the larger of the two per-transform values (the paper's rule,
  [P18] §7), else the plain metric, noting when the result ran one transform only.
* *metric*: result keys, plus a derived metric of the metric table a result lacks
  (:func:`evalkit.metric_table.metric_value`: ``mean_acc1_acc5`` = mean(acc1, acc5),
  ``mean_recall`` = the mean of the retrieval recalls).

Tasks, their primary metrics, the report's order and the aggregates (``AVG27`` ...) come from the
task and group files (:mod:`evalkit.reporting.catalog`).

Each claim gets a verdict (:mod:`evalkit.reporting.verdicts`: ``reproduced``, ``consistent`` or
``differs``) from the claim's rounding interval, the run's flip budget and the verified number's
interval and test (:mod:`evalkit.reporting.evidence`: recorded in the result, rebuilt from its
per-sample records, or from N alone for a proportion of a result written without records); the
p-values are Holm-adjusted over every claim of the report that has a test, per-task and
aggregate together. An aggregate's interval combines its members' (:func:`_combined`). A result
of a ``--limit`` run (``evalkit["limit"]`` set: a subset of the task) is never held against a
claim as if complete: its row shows the number and its interval with status ``partial``, no Δ,
and the smallest difference the subset could detect, and its run is labelled with the limit
(variant ``fp32+limit100``), in the report and in the leaderboard alike. The leaderboard carries
each number's interval, its primary claim's verdict and a rank interval per run.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from evalkit.errors import EvalkitError, OptionError
from evalkit.intervals import Evidence
from evalkit.metric_table import (
    direction,
    is_derived,
    long_name,
    members,
    metric_value,
    reduce,
    short_name,
    sort_key,
)
from evalkit.models.zoo import claim_only
from evalkit.reporting.catalog import Aggregate, Catalog, load_catalog
from evalkit.reporting.charts import (
    fewshot_chart,
    fewshot_chart_path,
    fewshot_curves,
    fewshot_section,
    figure_png,
)
from evalkit.reporting.claims import canonical_tag, claim_rank, load_claims, split_protocol
from evalkit.reporting.evidence import Support, support
from evalkit.reporting.verdicts import (
    DEFAULT_TOLERANCE,  # noqa: F401  (kept importable: `evalkit check --tolerance`'s default)
    MEANING,
    SIGNIFICANCE,
    VERDICTS,
    claim_decimals,
    holm_adjusted,
    judge,
)
from evalkit.results import (
    DEFAULT_VARIANT,
    ResultFileError,
    TaskResult,
    atomic_write_bytes,
    atomic_write_text,
    iter_results,
    path_of,
    result_limit,
    result_variant,
    safe_name,
)
from evalkit.stats import (
    DEFAULT_LEVEL,
    Interval,
    combined_interval,
    detectable_difference,
    rank_intervals,
    tie_groups,
    z_value,
)
from evalkit.views.base import BEST_OF_BOTH, TRANSFORMS

REPORT_NAME = "claimed_vs_verified.md"
STATUSES = VERDICTS  # reproduced, consistent, differs, untested, partial, not run, no claim
JUDGED = ("reproduced", "consistent", "differs")  # the verdicts of a claim held against a full result

_PROVENANCE_COLUMNS = {"result_transform": "Result transform", "precision": "Precision",
                       "samples": "Samples", "skipped": "Skipped"}

#: the statistics of a row: the verified value's interval (percent, its level and method), the
#: flip budget (points), the test of the claimed value (its p-value and Holm's over the report)
#: and the verdict's one-line reason
STAT_COLUMNS = ["ci_low", "ci_high", "ci_level", "ci_method", "flip_points", "test", "pvalue", "p_holm", "reason"]
#: where a claim sits in its paper (evalkit.reporting.paper lays the paper's tables out from them): the
#: claim's paper_model and paper_dataset, its table (the first ";"-part of its note: "Table 2") and its
#: origin ("file:line", the claims file's order); blank for a result no claim covers
PAPER_COLUMNS = ["paper_model", "paper_dataset", "paper_table", "origin"]
TABLE_COLUMNS = ["model", "task", "metric", "transform", "protocol", "claimed", "decimals", "verified", "delta",
                 "status", *STAT_COLUMNS, "primary", "note", "source", "result_transform", "precision", "samples",
                 "skipped", *PAPER_COLUMNS]
AGGREGATE_COLUMNS = ["model", "group", "aggregate", "transform", "protocol", "claimed", "decimals", "verified", "n",
                     "total", "display", "delta", "status", *STAT_COLUMNS, "primary", "note", "source", *PAPER_COLUMNS]


# ----------------------------------------------------------------------------- results


def _first_int(value: Any) -> int | None:
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def result_tags(result: TaskResult, catalog: Catalog | None = None) -> frozenset[str]:
    """The protocol tags a result satisfies (see the module docstring). A result of a task whose
    view samples frames (``catalog``, default :func:`load_catalog`) and that records no frame
    count is of 1 frame."""
    catalog = catalog or load_catalog()
    ev = result.evalkit
    proto = ev.get("protocol")
    # the task file's protocol settings (a dict) take precedence over top-level provenance keys
    sources = [proto, ev] if isinstance(proto, dict) else [ev]
    tags: set[str] = set()
    for explicit in [proto] + [d.get("tags") for d in sources]:
        if isinstance(explicit, str):
            tags.update(t for t in explicit.split(";") if t.strip())
        elif isinstance(explicit, (list, tuple)):
            tags.update(str(t) for t in explicit)

    def lookup(*keys: str) -> int | None:
        for d in sources:
            for k in keys:
                if d.get(k) is not None:
                    return _first_int(d[k])
        return None

    tags = {canonical_tag(t) for t in tags}
    frames = lookup("frames", "num_frames", "n_frames")
    if frames is None and result.dataset in catalog.video and not any(t.endswith(("frame", "frames")) for t in tags):
        frames = 1
    if frames is not None:
        tags.add(f"{frames}frames")
    size = lookup("image_size", "resolution")
    if size:
        tags.add(f"{size}px")
    return frozenset(canonical_tag(t) for t in tags)


def run_label(result: TaskResult) -> str:
    """The run a result belongs to: its model, with the variant in brackets unless it is the default."""
    variant = result_variant(result)
    return result.model if variant == DEFAULT_VARIANT else f"{result.model} [{variant}]"


class ResultsFolderError(EvalkitError, FileNotFoundError):
    """The results folder to read does not exist (a typo in ``--output-dir``)."""


def _load_results(output_dir: str | Path, model: str | None = None, catalog: Catalog | None = None
                  ) -> dict[tuple[str, str], list[TaskResult]]:
    """Results by (run label, task); ``model`` keeps one model's runs, every variant."""
    catalog = catalog or load_catalog()
    if not Path(output_dir).is_dir():
        raise ResultsFolderError(f"results folder {output_dir}: no such folder (--output-dir: the folder "
                                 f"`evalkit run --output-dir` wrote to)")
    runs: dict[tuple[str, str], list[TaskResult]] = {}
    for r in iter_results(output_dir, model):
        if model is not None and r.model != model and safe_name(r.model) != safe_name(model):
            continue
        runs.setdefault((run_label(r), r.dataset), []).append(r)
    for results in runs.values():  # the main setting first: 1 frame, no extra protocol tags
        results.sort(key=lambda r: len({t for t in result_tags(r, catalog) if t != "1frame" and not t.endswith("px")}))
    return runs


def _select(result: TaskResult, metric: str, transform: str) -> tuple[float | None, str, str]:
    """(value as a fraction or None, note, the metrics key it is: ``acc1@crop``, ``acc1``, for
    best-of-both the larger of the two per-transform keys) for one metric under one claimed
    transform. A derived metric the result lacks (:func:`metric_value`) is named by the key it
    would have."""
    metrics = result.metrics
    ran = str(result.evalkit.get("transform") or "")
    if transform in TRANSFORMS:
        value = metric_value(metrics, metric, "@" + transform)
        if value is not None:
            return value, "", f"{metric}@{transform}"
        if ran in (transform, ""):
            value = metric_value(metrics, metric)
            if value is None:
                return None, f"result has no {metric}", metric
            return value, "" if ran else "result does not record its transform", metric
        return None, f"result ran {ran}, not {transform}", metric
    if transform == BEST_OF_BOTH:
        both = [metric_value(metrics, metric, f"@{t}") for t in TRANSFORMS]
        if None not in both:
            best = max(range(len(TRANSFORMS)), key=lambda i: both[i])  # type: ignore[arg-type,return-value]
            return both[best], "", f"{metric}@{TRANSFORMS[best]}"
        value = metric_value(metrics, metric)
        if value is None:
            return None, f"result has no {metric}", metric
        if ran == BEST_OF_BOTH:
            return value, "", metric
        return value, f"result ran {ran or 'one transform (unrecorded)'} only, not best-of-both", metric
    value = metric_value(metrics, metric)
    return value, "" if value is not None else f"result has no {metric}", metric


def _match(results: list[TaskResult], metric: str, transform: str, protocol: str, catalog: Catalog
           ) -> tuple[float | None, str, TaskResult | None, str]:
    """The first result that satisfies the claim's protocol and has the metric: (percent, note,
    result, the metrics key read)."""
    if not results:
        return None, "", None, metric
    needed, _ = split_protocol(protocol)
    needed = frozenset(canonical_tag(t) for t in needed)
    eligible = [r for r in results if needed <= result_tags(r, catalog)]
    if not eligible:
        have = ", ".join(sorted(";".join(sorted(result_tags(r, catalog))) or "default" for r in results))
        return None, f"no result with protocol {';'.join(sorted(needed))} (have: {have})", None, metric
    first_note = ""
    for r in eligible:
        value, note, key = _select(r, metric, transform)
        if value is not None:
            return value * 100, note, r, key
        first_note = first_note or note
    return None, first_note, None, metric


def _headline(results: list[TaskResult], metric: str) -> tuple[float | None, TaskResult | None, str]:
    """A task's own number (percent): the default-protocol result, best-of-both when it ran both;
    with its result and the metrics key read."""
    for r in results:
        transform = BEST_OF_BOTH if r.evalkit.get("transform") == BEST_OF_BOTH else ""
        value, _, key = _select(r, metric, transform)
        if value is not None:
            return value * 100, r, key
    return None, None, metric


def primary_metric(task: str, results: list[TaskResult], catalog: Catalog | None = None) -> str:
    """The metric a task is compared on: what its result says (the task file's ``metric`` when it
    ran), else the ``metric`` of the task's file (``catalog``, default :func:`load_catalog`), else
    what the result's keys suggest (retrieval recalls: ``mean_recall``)."""
    for r in results:
        named = r.evalkit.get("metric")
        if isinstance(named, str) and (named in r.metrics or is_derived(named)):
            return named
    catalog = catalog or load_catalog()
    if task in catalog.primary:
        return catalog.primary[task]
    keys = {k for r in results for k in r.metrics}
    if members("mean_recall", keys):
        return "mean_recall"
    if "mean_acc1_acc5" in keys:
        return "mean_acc1_acc5"
    return "acc1"


def _provenance(result: TaskResult | None) -> dict[str, Any]:
    out: dict[str, Any] = {k: "" for k in _PROVENANCE_COLUMNS}
    if result is None:
        return out
    ev = result.evalkit

    def pick(*keys: str) -> Any:
        for k in keys:
            v = ev.get(k)
            if v not in (None, ""):
                return len(v) if isinstance(v, (list, tuple, dict)) else v
        return ""

    out["result_transform"] = pick("transform")
    out["precision"] = pick("precision")
    out["samples"] = pick("samples", "n_samples", "num_samples")
    out["skipped"] = pick("skipped", "n_skipped", "num_skipped", "skipped_samples")
    return out


# ----------------------------------------------------------------------------- tables


def _as_claims(claims: pd.DataFrame | str | Path | Iterable[str | Path] | None,
               catalog: Catalog | None = None) -> pd.DataFrame:
    if isinstance(claims, pd.DataFrame):
        df = claims.copy()
        for c in ("transform", "protocol", "source", "note"):
            if c not in df:
                df[c] = ""
        df = df.fillna({c: "" for c in ("transform", "protocol", "source", "note")})
        if "decimals" not in df:  # a table built in code: the decimals of each float's shortest form
            df["decimals"] = [claim_decimals(float(x)) for x in df["claimed"]]
        return df
    return load_claims(claims, catalog=catalog)


def _base_models(runs: dict[tuple[str, str], list[TaskResult]]) -> dict[str, str]:
    """Run label -> the model name its claims are filed under."""
    return {label: results[0].model for (label, _), results in runs.items()}


def _runs_by_model(runs: dict[tuple[str, str], list[TaskResult]]) -> dict[str, list[str]]:
    """Model name -> the labels of its runs, the default variant first."""
    out: dict[str, list[str]] = {}
    for label, base in sorted(_base_models(runs).items(), key=lambda kv: (kv[0] != kv[1], kv[0])):
        out.setdefault(base, []).append(label)
    return out


def _runs_of(runs: dict[tuple[str, str], list[TaskResult]], model: str) -> list[str]:
    """The run labels of ``model``'s results, the default variant first."""
    return _runs_by_model(runs).get(model, [])


def _model_order(claims: pd.DataFrame, runs: dict[tuple[str, str], list[TaskResult]]) -> list[str]:
    """Run labels in claims order (each claimed model's runs together; the model name itself
    where it has none), then the runs of models without claims."""
    ordered: list[str] = []
    by_model = _runs_by_model(runs)
    for model in dict.fromkeys(claims["model"]):
        ordered += by_model.get(model) or [model]
    return ordered + sorted({m for m, _ in runs} - set(ordered))


def _limit_note(limits: Iterable[int]) -> str:
    shown = ", ".join(str(n) for n in sorted(set(limits)))
    return f"--limit {shown} run: a subset of the task, not held against the claim"


class _Supports:
    """What each (result, metrics key) rests on (:func:`evalkit.reporting.evidence.support`),
    computed once per report: a bootstrap interval's distribution is rebuilt from the records."""

    def __init__(self, output_dir: str | Path | None) -> None:
        self.output_dir = output_dir
        self._cache: dict[tuple[int, str], Support | None] = {}

    def __call__(self, result: TaskResult | None, key: str) -> Support | None:
        if result is None:
            return None
        slot = (id(result), key)
        if slot not in self._cache:
            try:
                self._cache[slot] = support(result, key, self.output_dir)
            except ValueError as e:  # a recorded interval that is not one: name the result file
                if isinstance(e, EvalkitError):
                    raise
                where = path_of(result, self.output_dir) if self.output_dir is not None else result.dataset
                raise ResultFileError(f"{where}: {e}") from e
        return self._cache[slot]


def _blank_stats() -> dict[str, Any]:
    return {"ci_low": math.nan, "ci_high": math.nan, "ci_level": math.nan, "ci_method": "", "flip_points": math.nan,
            "test": "", "pvalue": math.nan, "p_holm": math.nan, "reason": ""}


def _interval_stats(interval: Interval | None, flip_points: float) -> dict[str, Any]:
    """The statistics columns of a number with ``interval`` (percent) and nothing tested yet."""
    out = _blank_stats()
    if interval is not None:
        out.update(ci_low=interval.low, ci_high=interval.high, ci_level=interval.level, ci_method=interval.method)
    out["flip_points"] = flip_points
    return out


def _support_interval(sup: Support | None) -> Interval | None:
    """The support's interval in percent."""
    return sup.interval.scaled(100) if sup is not None and sup.interval is not None else None


def _judged(claimed: float, decimals: int, verified: float, interval: Interval | None, flip_points: float,
            pvalue: float | None, test: str) -> dict[str, Any]:
    """The status and statistics columns of a claim held against a full result's number."""
    ci = (interval.low, interval.high) if interval is not None else None
    v = judge(claimed, decimals, verified, ci=ci, flip_points=flip_points, pvalue=pvalue, test=test)
    out = _interval_stats(interval, flip_points)
    out.update(status=v.status, test=v.test, pvalue=v.pvalue, reason=v.reason)
    return out


def _claim_verdict(claimed: float, decimals: int, verified: float, sup: Support | None) -> dict[str, Any]:
    interval = _support_interval(sup)
    evidence = sup.evidence if sup is not None else None
    pvalue = evidence.pvalue(claimed / 100) if evidence is not None else None
    return _judged(claimed, decimals, verified, interval, sup.flip_points if sup is not None else 0.0, pvalue,
                   evidence.test if evidence is not None else "")


def _detectable_note(result: TaskResult, value: float | None) -> str:
    """What a ``--limit`` run could resolve: the smallest difference it detects at its level
    (``evalkit.detectable``, or from N and the value for a result written without it)."""
    found = result.evalkit.get("detectable")
    if isinstance(found, dict) and isinstance(found.get("difference"), (int, float)):
        level = float(found.get("level", DEFAULT_LEVEL))
        return (f"it can detect a difference of {100 * float(found['difference']):.2f} points at {100 * level:g} % "
                f"(power {float(found.get('power', 0.8)):g}; {found.get('metric', 'acc1')}, N = {found.get('n', '?')})")
    n = int(result.evalkit.get("evaluated") or 0)
    if value is None or n <= 0 or not 0 <= value <= 100:
        return ""
    diff = detectable_difference(n, value / 100)
    return f"it can detect a difference of {100 * diff:.2f} points at 95 % (power 0.8; N = {n})"


def verified_table(output_dir: str | Path, claims: pd.DataFrame | str | Path | Iterable[str | Path] | None = None,
                   *, model: str | None = None, tolerance: float | None = None) -> pd.DataFrame:
    """One row per per-task claim, plus one per result that no claim covers.

    Columns :data:`TABLE_COLUMNS`. ``claimed``/``verified``/``delta`` are percent (NaN when absent),
    ``delta`` = verified − claimed, ``decimals`` the claim's printed decimals, ``status`` a verdict
    of :data:`STATUSES` (:mod:`evalkit.reporting.verdicts`), with the statistics
    :data:`STAT_COLUMNS`: the verified value's interval (percent), the flip budget, the test of the
    claimed value, its p-value, Holm's adjustment over every claim of the report that has a test
    (these rows and :func:`aggregate_table`'s), and the verdict's reason.
    ``primary`` marks, for each (model, task, metric), the claim a reader compares first (main
    protocol, best-of-both, the paper's own number); the others are per-transform or other-protocol
    claims. Aggregate claims (``AVG27`` ...) are in :func:`aggregate_table`.

    ``tolerance`` is deprecated and ignored: verdicts rest on the claim's rounding, the flip budget
    and the verified interval, not on a fixed threshold (``evalkit check --tolerance`` keeps one).
    """
    catalog = load_catalog()
    runs = _load_results(output_dir, model, catalog)
    return _report_tables(runs, _as_claims(claims, catalog), model, catalog, output_dir)[0]


def _report_tables(runs: dict[tuple[str, str], list[TaskResult]], claims: pd.DataFrame, model: str | None,
                   catalog: Catalog, output_dir: str | Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The claims table and the aggregates table, with Holm's adjustment over both."""
    supports = _Supports(output_dir)
    table = _verified(runs, claims, model, catalog, supports)
    aggs = _aggregates(runs, claims, model, catalog, supports)
    tested = [(frame, i) for frame in (table, aggs) for i in frame.index
              if frame.at[i, "status"] in JUDGED and not math.isnan(frame.at[i, "pvalue"])]
    adjusted = holm_adjusted([float(frame.at[i, "pvalue"]) for frame, i in tested])
    for (frame, i), p in zip(tested, adjusted, strict=True):
        frame.at[i, "p_holm"] = p
    return table, aggs


def _paper_place(claim: Any) -> dict[str, str]:
    """:data:`PAPER_COLUMNS` of a claim (a row of the claims table; a table built in code may lack them)."""
    def text(name: str) -> str:
        value = getattr(claim, name, "")
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()

    return {"paper_model": text("paper_model"), "paper_dataset": text("paper_dataset"),
            "paper_table": text("note").split(";", 1)[0].strip(), "origin": text("origin")}


def _verified(runs: dict[tuple[str, str], list[TaskResult]], claims: pd.DataFrame, model: str | None,
              catalog: Catalog, supports: _Supports) -> pd.DataFrame:
    per_task = claims[~claims["task"].isin(catalog.claim_names)]
    if model is not None:
        per_task = per_task[per_task["model"] == model]

    rows: list[dict[str, Any]] = []
    by_model = _runs_by_model(runs)
    for c in per_task.itertuples(index=False):
        for label in by_model.get(c.model) or [c.model]:  # each run of the model against its claims
            value, note, result, key = _match(runs.get((label, c.task), []), c.metric, c.transform, c.protocol,
                                              catalog)
            claim_note = str(c.note or "")
            decimals = int(c.decimals)
            sup = supports(result, key) if value is not None else None
            limit = result_limit(result) if result is not None and value is not None else None
            if value is None:
                stats = {**_blank_stats(), "status": "not run"}
                if (never := claim_only(c.model, c.protocol)) is not None:
                    note = f"never verified: claim-only ({never.why})"  # `evalkit list models --all`
            elif limit is not None:  # a --limit run's number: shown with what it can resolve, never judged
                stats = {**_interval_stats(_support_interval(sup), sup.flip_points if sup else math.nan),
                         "status": "partial"}
                detect = _detectable_note(result, value)  # type: ignore[arg-type]
                note = "; ".join(n for n in (_limit_note([limit]) + (f"; {detect}" if detect else ""), note) if n)
            else:
                stats = _claim_verdict(float(c.claimed), decimals, value, sup)
            if sup is not None and sup.note and value is not None:
                note = "; ".join(n for n in (note, sup.note) if n)
            rows.append({
                "model": label, "task": c.task, "metric": c.metric, "transform": c.transform,
                "protocol": c.protocol, "claimed": float(c.claimed), "decimals": decimals, "verified": value,
                **stats,
                # the run's own note first: a partial row says why before the claim's provenance
                "note": "; ".join(n for n in ((note, claim_note) if limit is not None else (claim_note, note)) if n),
                "source": c.source, **_provenance(result), **_paper_place(c),
            })
    claimed_keys = {(r["model"], r["task"]) for r in rows}
    for (m, task), results in runs.items():
        if (m, task) in claimed_keys or task in catalog.claim_names:
            continue
        metric = primary_metric(task, results, catalog)
        value, result, key = _headline(results, metric)
        sup = supports(result, key) if value is not None else None
        limit = result_limit(result) if result is not None else None
        if value is None:
            note = f"result has no {metric}"
        elif limit is not None:
            detect = _detectable_note(result, value)  # type: ignore[arg-type]
            note = f"--limit {limit} run: a subset of the task" + (f"; {detect}" if detect else "")
        else:
            note = ""
        if sup is not None and sup.note:
            note = "; ".join(n for n in (note, sup.note) if n)
        rows.append({"model": m, "task": task, "metric": metric, "transform": "", "protocol": "",
                     "claimed": None, "decimals": None, "verified": value,
                     **_interval_stats(_support_interval(sup), sup.flip_points if sup else math.nan),
                     "status": "no claim", "note": note, "source": "", **_provenance(result or results[0]),
                     **dict.fromkeys(PAPER_COLUMNS, "")})

    df = pd.DataFrame.from_records(rows, columns=[c for c in TABLE_COLUMNS if c not in ("delta", "primary")])
    for col in ("claimed", "verified", "ci_low", "ci_high", "ci_level", "flip_points", "pvalue", "p_holm"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["decimals"] = pd.to_numeric(df["decimals"], errors="coerce").astype("Int64")
    df["delta"] = ((df["verified"] - df["claimed"]).round(6) + 0.0).where(df["status"] != "partial")  # no -0.00
    ranks = [claim_rank(t, p) for t, p in zip(df["transform"], df["protocol"], strict=True)]
    df["_rank"] = ranks
    order = {m: i for i, m in enumerate(_model_order(claims, runs))}
    df["_sort"] = [(order.get(m, len(order)), catalog.task_key(t), sort_key(me), r, p)
                   for m, t, me, r, p in zip(df["model"], df["task"], df["metric"], ranks, df["protocol"], strict=True)]
    df = df.sort_values("_sort", kind="stable").reset_index(drop=True)
    df["primary"] = ~df.duplicated(["model", "task", "metric"], keep="first")
    return df.drop(columns=["_rank", "_sort"])[TABLE_COLUMNS]


@dataclass
class _AggregateValue:
    """An aggregate of one run: its value (percent, None: no member), the members found, notes,
    the ``--limit`` of members from limited runs, its interval (percent; None: a member has none,
    ``interval_note`` says which) and its flip budget (points)."""

    value: float | None
    n: int
    notes: list[str]
    limits: set[int]
    interval: Interval | None = None
    flip_points: float = 0.0
    interval_note: str = ""


def _weights(reduction: str, n: int) -> list[float]:
    """The weight of each present member in the reduction: the mean's 1/n; the gap (first member
    minus the mean of all) 1 − 1/n for the first and −1/n for each other."""
    if reduction == "gap":
        return [1 - 1 / n] + [-1 / n] * (n - 1)
    return [1 / n] * n


def _combined(parts: list[tuple[str, float, float, Support | None]]) -> tuple[Interval | None, float, str]:
    """The interval (percent) and flip budget of ``Σ wᵢ·xᵢ`` over members (task, weight, value in
    percent, support). Members of different tasks are independent samples: their standard errors
    add in quadrature (:func:`evalkit.stats.combined_interval`). Several metrics of one task (the
    six recalls of a retrieval set) rest on the same samples: their standard errors add linearly
    within the task (the bound for any correlation), and the task enters as one part. The flip
    budget is ``Σ |wᵢ|·flipᵢ``, the most numerics could move the combination."""
    missing = sorted({task for task, _, _, sup in parts if _support_interval(sup) is None})
    flips = sum(abs(w) * (sup.flip_points if sup is not None else 0.0) for _, w, _, sup in parts)
    if missing:
        return None, flips, f"no interval for the aggregate: {', '.join(missing)} ha{'s' if len(missing) == 1 else 've'} none"
    levels = {_support_interval(sup).level for _, _, _, sup in parts}  # type: ignore[union-attr]
    level = levels.pop() if len(levels) == 1 else DEFAULT_LEVEL
    by_task: dict[str, list[tuple[float, float, Interval]]] = {}
    for task, w, x, sup in parts:
        by_task.setdefault(task, []).append((w, x, _support_interval(sup)))  # type: ignore[arg-type]
    estimates: list[float] = []
    intervals: list[Interval] = []
    for members_of_task in by_task.values():
        if len(members_of_task) == 1:
            w, x, iv = members_of_task[0]
            estimates.append(w * x)
            intervals.append(Interval(w * iv.low, w * iv.high, iv.level, iv.method) if w >= 0
                             else Interval(w * iv.high, w * iv.low, iv.level, iv.method))
            continue
        center = sum(w * x for w, x, _ in members_of_task)
        se = sum(abs(w) * iv.half_width / z_value(iv.level) for w, _, iv in members_of_task)
        half = se * z_value(level)
        estimates.append(center)
        intervals.append(Interval(center - half, center + half, level, "linear-within-task"))
    return combined_interval(estimates, intervals, weights=[1.0] * len(estimates), level=level), flips, ""


def _aggregate(runs: dict[tuple[str, str], list[TaskResult]], model: str, group: Aggregate,
               transform: str | None, protocol: str, catalog: Catalog, supports: _Supports) -> _AggregateValue:
    """One run's aggregate; ``transform=None`` = each result's headline."""
    values: list[float | None] = []
    notes: list[str] = []
    limits: set[int] = set()
    found: list[tuple[str, float, Support | None]] = []
    for task, metric in group.members:
        results = runs.get((model, task), [])
        if transform is None:
            value, result, key = _headline(results, metric)
        else:
            value, note, result, key = _match(results, metric, transform, protocol, catalog)
            if note and note not in notes and value is not None:
                notes.append(note)
        values.append(value)
        if value is not None and result is not None:
            found.append((task, value, supports(result, key)))
            if result_limit(result) is not None:
                limits.add(result_limit(result))  # type: ignore[arg-type]
    n = len(found)
    out = _AggregateValue(reduce(group.reduce, values), n, notes, limits)
    if out.value is None or n == 0:
        return out
    weights = _weights(group.reduce, n)
    out.interval, out.flip_points, out.interval_note = _combined(
        [(task, w, x, sup) for (task, x, sup), w in zip(found, weights, strict=True)])
    return out


def _display(value: float | None, n: int, total: int, limits: Iterable[int] = ()) -> str:
    if value is None:
        return "—"
    parts = ([f"{n}/{total}"] if n < total else []) + [f"limit {k}" for k in sorted(set(limits))]
    return f"{value:.2f}" if not parts else f"{value:.2f} (partial: {', '.join(parts)})"


def aggregate_table(output_dir: str | Path, claims: pd.DataFrame | str | Path | Iterable[str | Path] | None = None,
                    *, model: str | None = None, tolerance: float | None = None) -> pd.DataFrame:
    """Per model and aggregate of the group files (:mod:`evalkit.reporting.catalog`): the
    aggregate of the verified numbers.

    One row per printed aggregate claim (computed under that claim's transform and protocol),
    or, for a leaderboard group the paper prints nothing for, one row from each task's headline
    number. ``display`` reads e.g. ``61.20 (partial: 3/27)``; status ``partial`` when some members
    are missing (no Δ then), ``not run`` when none are there; a complete aggregate's claim gets
    its verdict against the interval that combines its members' (:func:`_combined`), tested with
    the normal that interval is made from. ``tolerance``: deprecated and ignored, as in
    :func:`verified_table`.
    """
    catalog = load_catalog()
    runs = _load_results(output_dir, model, catalog)
    return _report_tables(runs, _as_claims(claims, catalog), model, catalog, output_dir)[1]


def report_tables(output_dir: str | Path, claims: pd.DataFrame | str | Path | Iterable[str | Path] | None = None,
                  *, model: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(:func:`verified_table`, :func:`aggregate_table`) computed together, once: the results read,
    the evidence built and Holm's adjustment made a single time (the HTML report reads both)."""
    catalog = load_catalog()
    runs = _load_results(output_dir, model, catalog)
    return _report_tables(runs, _as_claims(claims, catalog), model, catalog, output_dir)


def _aggregates(runs: dict[tuple[str, str], list[TaskResult]], claims: pd.DataFrame, model: str | None,
                catalog: Catalog, supports: _Supports) -> pd.DataFrame:
    models = _model_order(claims, runs) if model is None else (_runs_of(runs, model) or [model])
    bases = _base_models(runs)
    agg_claims = claims[claims["task"].isin(catalog.claim_names)]
    rows: list[dict[str, Any]] = []
    for m in models:
        mine = agg_claims[agg_claims["model"] == bases.get(m, m)]
        for group in catalog.aggregates:
            gc = mine[mine["task"] == group.claim] if group.claim else mine.iloc[0:0]
            gc = gc.assign(_rank=[claim_rank(t, p) for t, p in zip(gc["transform"], gc["protocol"], strict=True)])
            gc = gc.sort_values("_rank", kind="stable")
            total = len(group.members)
            if gc.empty:
                if not group.leaderboard:
                    continue
                agg = _aggregate(runs, m, group, None, "", catalog, supports)
                if agg.n == 0:
                    continue
                notes = agg.notes + ([_limit_note(agg.limits)] if agg.limits else []) + \
                    ([agg.interval_note] if agg.interval_note else [])
                rows.append({"model": m, "group": group.name, "aggregate": group.claim or "",
                             "transform": "", "protocol": "", "claimed": None, "decimals": None,
                             "verified": agg.value, "n": agg.n, "total": total,
                             "display": _display(agg.value, agg.n, total, agg.limits),
                             "status": "partial" if agg.n < total or agg.limits else "no claim",
                             **_interval_stats(agg.interval, agg.flip_points),
                             "primary": True, "note": "; ".join(notes), "source": "",
                             **dict.fromkeys(PAPER_COLUMNS, "")})
                continue
            for i, c in enumerate(gc.itertuples(index=False)):
                agg = _aggregate(runs, m, group, c.transform, c.protocol, catalog, supports)
                notes = list(agg.notes)
                if agg.n == 0:
                    stats = {**_blank_stats(), "status": "not run"}
                elif agg.n < total or agg.limits:
                    stats = {**_interval_stats(agg.interval, agg.flip_points), "status": "partial"}
                else:
                    pvalue = Evidence(agg.interval, "normal").pvalue(float(c.claimed)) if agg.interval else None
                    stats = _judged(float(c.claimed), int(c.decimals), agg.value, agg.interval,  # type: ignore[arg-type]
                                    agg.flip_points, pvalue, "normal" if agg.interval else "")
                if agg.limits:
                    notes = [_limit_note(agg.limits), *notes]
                if agg.interval_note:
                    notes.append(agg.interval_note)
                rows.append({"model": m, "group": group.name, "aggregate": c.task, "transform": c.transform,
                             "protocol": c.protocol, "claimed": float(c.claimed), "decimals": int(c.decimals),
                             "verified": agg.value, "n": agg.n, "total": total,
                             "display": _display(agg.value, agg.n, total, agg.limits), **stats,
                             "primary": i == 0, "note": "; ".join(x for x in [str(c.note or "")] + notes if x),
                             "source": c.source, **_paper_place(c)})
    df = pd.DataFrame.from_records(rows, columns=[c for c in AGGREGATE_COLUMNS if c != "delta"])
    for col in ("claimed", "verified", "ci_low", "ci_high", "ci_level", "flip_points", "pvalue", "p_holm"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["decimals"] = pd.to_numeric(df["decimals"], errors="coerce").astype("Int64")
    complete = (df["n"] == df["total"]) & (df["status"] != "partial")
    df["delta"] = ((df["verified"] - df["claimed"]).round(6) + 0.0).where(complete)
    return df[AGGREGATE_COLUMNS]


# ----------------------------------------------------------------------------- leaderboard

#: the leaderboard's columns after the numbers, per task or aggregate column ``<c>``: its interval
#: (percent) and the verdict of its primary claim; and per run its rank on the ranked column
STAT_SUFFIXES = ("_ci_low", "_ci_high", "_verdict")
RANK_COLUMNS = ("rank", "rank_best", "rank_worst", "tie_group")


class RankByError(OptionError):
    """``--rank-by`` names no column of the leaderboard."""


def leaderboard(output_dir: str | Path,
                claims: pd.DataFrame | str | Path | Iterable[str | Path] | None = None, *,
                rank_by: str | None = None, tables: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per run (model and variant) that has results; one column per task (percent) plus
    the aggregates. ``model`` is the model name, ``variant`` what else produced the numbers
    (precision, and weights other than the card's own: :func:`evalkit.results.run_variant`).

    Task columns hold each task's headline number: top-1 for image classification and UCF-101,
    mean(top-1, top-5) for Kinetics (the paper's metric, so the column agrees with
    ``video_mean``), the mean of the six recalls for retrieval. Then, per aggregate a group file
    puts on the leaderboard (its ``column``), ``<column>`` (the aggregate, over the members
    present) and ``<column>_n`` (how many members it covers, out of the group's size).

    The statistics follow, after every number, so that a reader of the earlier columns reads
    them unchanged: with ``claims``, ``<column>_claimed`` (the paper's printed aggregate); per
    aggregate and per task ``<c>_ci_low`` / ``<c>_ci_high`` (its interval, percent: an
    aggregate's combines its members', :func:`_combined`) and, with ``claims``, ``<c>_verdict``
    (the verdict of its primary claim, blank without one); then ``rank`` (1 + the runs ahead of
    it), ``rank_best`` / ``rank_worst`` (its rank interval, :func:`evalkit.stats.rank_intervals`)
    and ``tie_group`` (runs whose rank intervals overlap, directly or through others, share one:
    :func:`evalkit.stats.tie_groups`) on ``rank_by``: an aggregate column or a task, by default
    the first aggregate column (in the group files' order) some run has complete. Only runs with
    the ranked number complete (every member), from full runs (no ``--limit``) and with an
    interval are ranked; the others' rank cells are blank.
    """
    catalog = load_catalog()
    runs = _load_results(output_dir, None, catalog)
    claims_df = _as_claims(claims, catalog) if claims is not None else None
    models = sorted({m for m, _ in runs})
    bases = _base_models(runs)
    variants = {label: result_variant(results[0]) for (label, _), results in runs.items()}
    tasks = sorted({t for _, t in runs}, key=catalog.task_key)
    groups = [g for g in catalog.aggregates if g.leaderboard]
    supports = _Supports(output_dir)
    verdicts: dict[tuple[str, str], str] = {}
    if claims_df is not None:
        # ``tables``: :func:`report_tables` of the whole folder and these claims, already computed
        table, aggs = tables if tables is not None else _report_tables(runs, claims_df, None, catalog, output_dir)
        primaries = {(m, t): primary_metric(t, rs, catalog) for (m, t), rs in runs.items()}
        for r in table[table["primary"] & table["claimed"].notna()].itertuples(index=False):
            if primaries.get((r.model, r.task)) == r.metric:
                verdicts.setdefault((r.model, r.task), r.status)
        columns_of = {g.name: g.column for g in groups}
        for r in aggs[aggs["primary"] & aggs["claimed"].notna()].itertuples(index=False):
            if columns_of.get(r.group):
                verdicts.setdefault((r.model, columns_of[r.group]), r.status)
    rows: list[dict[str, Any]] = []
    rankable: dict[str, dict[str, tuple[float, Interval]]] = {}  # column -> run -> (value, interval)
    for m in models:
        row: dict[str, Any] = {"model": bases[m], "variant": variants[m]}
        stats: dict[str, Any] = {}
        for t in tasks:
            results = runs.get((m, t), [])
            value, result, key = _headline(results, primary_metric(t, results, catalog)) if results else (None, None, "")
            row[t] = value
            interval = _support_interval(supports(result, key)) if value is not None else None
            stats[f"{t}_ci_low"], stats[f"{t}_ci_high"] = (interval.low, interval.high) if interval else (None, None)
            if value is not None and interval is not None and result is not None and result_limit(result) is None:
                rankable.setdefault(t, {})[m] = (value, interval)
        for g in groups:
            agg = _aggregate(runs, m, g, None, "", catalog, supports)
            row[g.column] = agg.value
            row[f"{g.column}_n"] = agg.n
            if claims_df is not None:
                stats[f"{g.column}_claimed"] = _primary_claim(claims_df, bases[m], g)
            iv = agg.interval
            stats[f"{g.column}_ci_low"], stats[f"{g.column}_ci_high"] = (iv.low, iv.high) if iv else (None, None)
            if agg.value is not None and iv is not None and agg.n == len(g.members) and not agg.limits:
                rankable.setdefault(g.column, {})[m] = (agg.value, iv)  # type: ignore[index]
        for c in [*(g.column for g in groups), *tasks]:
            if claims_df is not None:
                stats[f"{c}_verdict"] = verdicts.get((m, c), "")  # type: ignore[arg-type]
        rows.append({**row, **stats})
    columns = ["model", "variant", *tasks]
    for g in groups:
        columns += [g.column, f"{g.column}_n"]  # type: ignore[list-item]
    for g in groups:
        columns += ([f"{g.column}_claimed"] if claims_df is not None else []) + [f"{g.column}_ci_low", f"{g.column}_ci_high"]
        columns += [f"{g.column}_verdict"] if claims_df is not None else []
    for t in tasks:
        columns += [f"{t}_ci_low", f"{t}_ci_high"] + ([f"{t}_verdict"] if claims_df is not None else [])
    df = pd.DataFrame.from_records(rows, columns=columns)
    for g in groups:
        df[f"{g.column}_n"] = df[f"{g.column}_n"].astype("Int64")
        if claims_df is not None:
            df[f"{g.column}_claimed"] = pd.to_numeric(df[f"{g.column}_claimed"], errors="coerce").astype(float)
    for c in [*(g.column for g in groups), *tasks]:
        for suffix in ("_ci_low", "_ci_high"):
            df[f"{c}{suffix}"] = pd.to_numeric(df[f"{c}{suffix}"], errors="coerce").astype(float)
    df = df.copy()  # one block per dtype again: the rank columns then insert without fragmenting the frame
    _rank(df, models, groups, tasks, rankable, rank_by)
    return df


def _rank(df: pd.DataFrame, models: list[str], groups: list[Aggregate], tasks: list[str],
          rankable: dict[str, dict[str, tuple[float, Interval]]], rank_by: str | None) -> None:
    """Add :data:`RANK_COLUMNS` to the leaderboard ``df`` (rows in ``models``' order)."""
    numbers = [str(g.column) for g in groups] + tasks
    if rank_by is not None and rank_by not in numbers:
        close = difflib.get_close_matches(rank_by, numbers, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RankByError(f"--rank-by {rank_by!r}: not a column of this leaderboard (its aggregates: "
                          f"{', '.join(str(g.column) for g in groups) or 'none'}; or a task it has){hint}")
    column = rank_by or next((str(g.column) for g in groups if rankable.get(str(g.column))), None)
    for c in RANK_COLUMNS:
        df[c] = pd.array([None] * len(df), dtype="Int64")
    entries = rankable.get(column, {}) if column else {}
    if not entries:
        return
    ranked = [m for m in models if m in entries]
    higher = direction(next((g.reduce for g in groups if g.column == column), "acc1")) >= 0
    est = [entries[m][0] for m in ranked]
    intervals = rank_intervals(est, [entries[m][1].low for m in ranked], [entries[m][1].high for m in ranked],
                               higher_is_better=higher)
    groups_of = tie_groups(intervals)
    for i, m in enumerate(ranked):
        row = models.index(m)
        ahead = sum(1 for x in est if (x > est[i] if higher else x < est[i]))
        df.loc[row, "rank"] = 1 + ahead
        df.loc[row, "rank_best"], df.loc[row, "rank_worst"] = intervals[i]
        df.loc[row, "tie_group"] = groups_of[i]
    df.attrs["rank_by"] = column


def _primary_claim(claims: pd.DataFrame, model: str, group: Aggregate) -> float | None:
    if not group.claim:
        return None
    gc = claims[(claims["model"] == model) & (claims["task"] == group.claim)]
    if gc.empty:
        return None
    best = min(gc.itertuples(index=False), key=lambda c: claim_rank(c.transform, c.protocol))
    return float(best.claimed)


EXPORT_FORMATS = ("csv", "json", "md")


def export(output_dir: str | Path, fmt: str = "csv",
           claims: pd.DataFrame | str | Path | Iterable[str | Path] | None | bool = True, *,
           rank_by: str | None = None) -> str:
    """The leaderboard (:func:`leaderboard`) as CSV (numbers to 2 decimals, blank when absent), JSON
    (a list of rows; numbers to 2 decimals, null when absent) or a markdown table. ``claims``:
    the claims the verdict columns hold the numbers against (True: the claims evalkit ships;
    False or None: no claim columns). A folder with no results is an error
    (:class:`ResultsFolderError`), not an empty table."""
    if fmt not in EXPORT_FORMATS:
        raise OptionError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    if claims is True:
        claims = load_claims(None)
    df = leaderboard(output_dir, None if claims is False else claims, rank_by=rank_by)  # type: ignore[arg-type]
    if df.empty:
        raise ResultsFolderError(f"results folder {output_dir}: no results under {Path(output_dir) / 'runs'} "
                                 f"(--output-dir: the folder `evalkit run --output-dir` wrote to)")
    if fmt == "csv":
        return df.to_csv(index=False, float_format="%.2f", lineterminator="\n")
    if fmt == "json":
        records = []
        for rec in df.astype(object).where(df.notna(), None).to_dict("records"):
            records.append({k: (round(v, 2) if isinstance(v, float) else int(v) if hasattr(v, "__index__")
                                and not isinstance(v, bool) else v) for k, v in rec.items()})
        return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    return _markdown(df, floatfmt=".2f") + "\n"


# ----------------------------------------------------------------------------- report files


def _markdown(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    cells = df.astype(object).where(df.notna(), None)
    return tabulate(cells.values.tolist(), headers=list(df.columns), tablefmt="pipe", floatfmt=floatfmt,
                    missingval="—", disable_numparse=False)


def _fmt(x: Any, spec: str) -> str:
    return "—" if x is None or pd.isna(x) else format(x, spec)


def _fmt_claimed(x: Any, decimals: Any = None) -> str:
    """As printed: its own decimals where known (``91.60``), else one decimal, more only where the
    claim has more (e.g. 73.775)."""
    if x is None or pd.isna(x):
        return "—"
    if decimals is not None and not pd.isna(decimals):
        return f"{x:.{int(decimals)}f}"
    return f"{x:.1f}" if round(x, 1) == x else f"{x:g}"


def _fmt_ci(low: Any, high: Any) -> str:
    return "—" if low is None or pd.isna(low) or pd.isna(high) else f"[{low:.2f}, {high:.2f}]"


def _fmt_p(x: Any) -> str:
    """A p-value in two significant digits (``0.012``, ``3.1e-05``)."""
    return "—" if x is None or pd.isna(x) else f"{x:.2g}"


def _ci_header(rows: pd.DataFrame) -> str:
    levels = {round(float(x), 6) for x in rows["ci_level"] if not pd.isna(x)} or {DEFAULT_LEVEL}
    return f"{100 * levels.pop():g} % CI" if len(levels) == 1 else "CI (levels differ: see the result files)"


def _fmt_delta(x: Any) -> str:
    """Δ signed to two decimals, never ``-0.00``."""
    return "—" if x is None or pd.isna(x) else f"{round(float(x), 2) + 0.0:+.2f}"


def _stat_note(row: Any) -> str:
    """What a row's statistics add to its note: the flip budget where numerics could move it."""
    flips = row.flip_points
    if flips is not None and not pd.isna(flips) and flips > 0:
        return f"numerics alone can move it by at most ±{flips:.2f} points"
    return ""


def _p_cells(rows: pd.DataFrame) -> list[str]:
    """Holm-adjusted p for the rows that differ (blank elsewhere), ``*`` where significant."""
    out = []
    for s, p in zip(rows["status"], rows["p_holm"], strict=True):
        if s != "differs" or pd.isna(p):
            out.append("")
        else:
            out.append(_fmt_p(p) + (" *" if p < SIGNIFICANCE else ""))
    return out


def _notes(rows: pd.DataFrame) -> list[str]:
    return ["; ".join(x for x in (str(n or ""), _stat_note(r)) if x)
            for n, r in zip(rows["note"], rows.itertuples(index=False), strict=True)]


def _claims_section(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "_none_"
    table = pd.DataFrame({
        "Task": rows["task"], "Metric": rows["metric"], "Transform": rows["transform"],
        "Protocol": rows["protocol"],
        "Claimed": [_fmt_claimed(x, d) for x, d in zip(rows["claimed"], rows["decimals"], strict=True)],
        "Verified": [_fmt(x, ".2f") for x in rows["verified"]],
        _ci_header(rows): [_fmt_ci(lo, hi) for lo, hi in zip(rows["ci_low"], rows["ci_high"], strict=True)],
        "Δ": [_fmt_delta(x) for x in rows["delta"]], "Verdict": rows["status"], "p (Holm)": _p_cells(rows),
    })
    for col, header in _PROVENANCE_COLUMNS.items():
        if (rows[col].astype(str) != "").any():
            table[header] = rows[col].astype(str).values
    table["Note"] = _notes(rows)
    return tabulate(table.values.tolist(), headers=list(table.columns), tablefmt="pipe", disable_numparse=True)


def _aggregates_section(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "_none_"
    table = pd.DataFrame({
        "Aggregate": rows["group"], "Paper": rows["aggregate"], "Transform": rows["transform"],
        "Protocol": rows["protocol"],
        "Claimed": [_fmt_claimed(x, d) for x, d in zip(rows["claimed"], rows["decimals"], strict=True)],
        "Verified": rows["display"],
        _ci_header(rows): [_fmt_ci(lo, hi) for lo, hi in zip(rows["ci_low"], rows["ci_high"], strict=True)],
        "Δ": [_fmt_delta(x) for x in rows["delta"]], "Verdict": rows["status"], "p (Holm)": _p_cells(rows),
        "Note": _notes(rows),
    })
    return tabulate(table.values.tolist(), headers=list(table.columns), tablefmt="pipe", disable_numparse=True)


def _verdict_counts(table: pd.DataFrame, aggs: pd.DataFrame, models: list[str]) -> str:
    """One row per run: how many of its per-task claims (and aggregates) got each verdict."""
    lines = []
    for m in models:
        counts = table.loc[table["model"] == m, "status"].value_counts()
        agg_counts = aggs.loc[aggs["model"] == m, "status"].value_counts()
        cells = []
        for s in STATUSES:
            n, a = int(counts.get(s, 0)), int(agg_counts.get(s, 0))
            cells.append(f"{n} + {a}" if a else str(n))
        lines.append([m, *cells])
    return tabulate(lines, headers=["Run", *STATUSES], tablefmt="pipe", disable_numparse=True)


_VERDICT_RULES = (
    "Verdicts (docs/reports.md has the rules and a worked example): a claim printed to d decimals stands for "
    "its rounding interval [c − ½·10⁻ᵈ, c + ½·10⁻ᵈ]. `reproduced` when the verified value lies in it, "
    "widened by the run's flip budget (the points numerics alone could move it); else `consistent` when "
    "the claim lies inside the verified value's confidence interval; else `differs`.")


def _tested(table: pd.DataFrame, aggs: pd.DataFrame) -> int:
    """How many claims of the report have a test (the family Holm corrects over)."""
    return int(sum(frame["p_holm"].notna().sum() for frame in (table, aggs)))


#: the verdicts' symbols on the chart (readable without colour)
VERDICT_MARKS = {"reproduced": "✓", "consistent": "≈", "differs": "✗", "untested": "?", "partial": "…", "not run": "–",
                 "no claim": "·"}
_CHART_COLOURS = {"claimed": "#333333", "verified": "#1f77b4", "band": "#d9d9d9"}
_VERDICT_COLOURS = {"reproduced": "#2e7d32", "consistent": "#1565c0", "differs": "#c62828"}
_CHART_FONT = 10  # points; the figure is sized so that every row keeps this size at any task count
_ROW_IN = 0.5  # inches per task (the claim's row and the verified row, with their labels)
_BAR_H = 0.22  # the verified interval bar's thickness (rows are 1 apart)
_LINTHRESH = 1.0  # the Δ panel is linear within ±1 point, logarithmic beyond


def _chart_delta(delta: Any) -> str:
    """Δ as printed on the chart: signed, two decimals, a true minus sign; "—" when absent."""
    if delta is None or pd.isna(delta):
        return "—"
    return f"{round(float(delta), 2) + 0.0:+.2f}".replace("-", "−")


def _chart_verdict(status: str) -> str:
    """The verdict as the chart prints it: its symbol and its word."""
    return f"{VERDICT_MARKS.get(status, '')} {status}".strip()


def _chart_literal(text: Any) -> str:
    """A name as matplotlib should print it: a "$" would otherwise start mathtext."""
    return str(text).replace("$", r"\$")


def _num(x: Any) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def _chart_figure(model: str, rows: pd.DataFrame) -> Any:
    """The claimed-vs-verified chart as a matplotlib ``Figure``: one row per task.

    Left, the values (percent): the claim as a diamond on the row's upper half, the verified
    value as a dot on an interval bar (its CI) on the lower half, each with its number; a missing
    number reads "not run" / "no claim". Right, the same row as Δ = verified − claimed in points
    (linear within ±1, logarithmic beyond, so a 0.2-point gap and a 20-point gap both show): the
    claim at 0 with its rounding interval widened by the flip budget as a grey band, the verified
    interval shifted by the claim. Then the Δ and the verdict as a symbol and a word (✓ reproduced,
    ≈ consistent, ✗ differs), readable without colour. The metric is named on the x axis, or per
    task when the tasks' metrics differ.
    """
    from collections import Counter

    from matplotlib.figure import Figure  # no pyplot: no global figure state
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory, offset_copy

    metrics = [str(m) for m in rows["metric"]]
    main_metric = Counter(metrics).most_common(1)[0][0] if metrics else "acc1"  # ties: the first listed
    main_name = _chart_literal(long_name(main_metric))
    labels = [_chart_literal(t if m == main_metric else f"{t} ({short_name(m)})")
              for t, m in zip(rows["task"], metrics, strict=True)]
    n = len(labels)
    claimed = [_num(v) for v in rows["claimed"]]
    verified = [_num(v) for v in rows["verified"]]
    column = (lambda name: list(rows[name]) if name in rows else [None] * n)  # noqa: E731
    lows, highs = [_num(v) for v in column("ci_low")], [_num(v) for v in column("ci_high")]
    decimals = [None if d is None or pd.isna(d) else int(d) for d in column("decimals")]
    flips = [_num(v) or 0.0 for v in column("flip_points")]
    deltas = [_num(v) for v in rows["delta"]] if "delta" in rows else [
        None if c is None or v is None else v - c for c, v in zip(claimed, verified, strict=True)]
    statuses = [str(s) for s in rows["status"]] if "status" in rows else [""] * n

    fig = Figure(figsize=(11.0, 1.9 + _ROW_IN * max(n, 1)), dpi=100, layout="constrained")
    ax, axd = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    ys = list(range(n))
    up, down = -0.2, 0.2  # the claim above the row's centre, the verified value below
    known = [v for v in claimed + verified + lows + highs if v is not None]
    lo = min([0.0, *known])
    hi = max([100.0, *known])
    span = hi - lo
    for y, c, v, low, high in zip(ys, claimed, verified, lows, highs, strict=True):
        if c is None:
            ax.text(lo + 0.01 * span, y + up, "no claim", va="center", ha="left", fontsize=_CHART_FONT - 1,
                    style="italic", color="#555555")
        else:
            ax.plot([c], [y + up], marker="D", markersize=6, color=_CHART_COLOURS["claimed"], linestyle="none")
            ax.text(c + 0.015 * span, y + up, _fmt_claimed(c, decimals[y]), va="center", ha="left",
                    fontsize=_CHART_FONT - 1)
        if v is None:
            ax.text(lo + 0.01 * span, y + down, "not run", va="center", ha="left", fontsize=_CHART_FONT - 1,
                    style="italic", color="#555555")
            continue
        if low is not None and high is not None:
            ax.barh([y + down], [high - low], _BAR_H, left=[low], color=_CHART_COLOURS["verified"], alpha=0.45)
        ax.plot([v], [y + down], marker="o", markersize=5, color=_CHART_COLOURS["verified"], linestyle="none")
        right = max(v, high if high is not None else v)
        ax.text(right + 0.015 * span, y + down, f"{v:.2f}", va="center", ha="left", fontsize=_CHART_FONT - 1)

    # the Δ panel: the claim at 0 with its rounding band, the verified interval relative to it
    ends = [1.0]
    for y, c, v, low, high, d, f in zip(ys, claimed, verified, lows, highs, decimals, flips, strict=True):
        if c is None:
            continue
        half = 0.5 * 10.0 ** (-(d if d is not None else 1)) + f
        axd.barh([y + up], [2 * half], _BAR_H, left=[-half], color=_CHART_COLOURS["band"])
        axd.plot([0.0], [y + up], marker="D", markersize=6, color=_CHART_COLOURS["claimed"], linestyle="none")
        ends.append(half)
        if v is None:
            continue
        if low is not None and high is not None:
            axd.barh([y + down], [high - low], _BAR_H, left=[low - c], color=_CHART_COLOURS["verified"], alpha=0.45)
            ends += [abs(low - c), abs(high - c)]
        axd.plot([v - c], [y + down], marker="o", markersize=5, color=_CHART_COLOURS["verified"], linestyle="none")
        ends.append(abs(v - c))
    limit = 1.15 * max(ends)
    axd.set_xscale("symlog", linthresh=_LINTHRESH, linscale=1.0)
    axd.set_xlim(-limit, limit)
    steps = [t for t in (0.5 if limit < 3 else 1.0, 1.0, 3.0, 10.0, 30.0, 100.0) if t <= limit]
    if len(steps) > 4:  # wide: the decades alone
        steps = [t for t in steps if t in (1.0, 10.0, 100.0)]
    ticks = sorted({0.0, *steps, *(-t for t in steps)})
    axd.set_xticks(ticks, [f"{t:+g}".replace("-", "−") if t else "0" for t in ticks])
    axd.axvline(0.0, color="#999999", linewidth=0.8, zorder=0)
    axd.tick_params(axis="x", labelsize=_CHART_FONT - 1)
    axd.tick_params(axis="y", left=False)
    axd.set_xlabel("Δ = verified − claimed (points)", fontsize=_CHART_FONT + 1)
    axd.grid(axis="x", alpha=0.3)
    axd.set_axisbelow(True)

    # Δ and verdict columns just right of the Δ panel: x a fixed distance (points) from its right
    # edge, y in data
    edge = blended_transform_factory(axd.transAxes, axd.transData)
    delta_column = offset_copy(edge, fig=fig, x=8, units="points")
    verdict_column = offset_copy(edge, fig=fig, x=8 + 5.2 * _CHART_FONT, units="points")
    for where, head in ((delta_column, "Δ"), (verdict_column, "verdict")):
        axd.text(1.0, -0.62, head, transform=where, ha="left", va="bottom", fontsize=_CHART_FONT, weight="bold")
    for y, d, s in zip(ys, deltas, statuses, strict=True):
        colour = _VERDICT_COLOURS.get(s, "#333333")
        weight = "bold" if s == "differs" else "normal"
        axd.text(1.0, y, _chart_delta(d), transform=delta_column, ha="left", va="center", fontsize=_CHART_FONT,
                 color=colour, weight=weight)
        axd.text(1.0, y, _chart_verdict(s), transform=verdict_column, ha="left", va="center",
                 fontsize=_CHART_FONT, color=colour, weight=weight)

    ax.set_yticks(ys, labels, fontsize=_CHART_FONT)
    ax.set_ylim(n - 0.5, -0.5)  # first task on top, as in the table
    ax.set_xlim(lo, hi + 0.16 * span)  # room for the value labels right of the rightmost mark
    ticks = [t for t in range(int(math.ceil(lo / 20)) * 20, int(hi) + 1, 20)]
    ax.set_xticks(ticks)
    ax.tick_params(axis="x", labelsize=_CHART_FONT)
    ax.set_xlabel(f"{main_name} (%)" if len(set(metrics)) <= 1
                  else f"percent: {main_name}, or the metric in brackets", fontsize=_CHART_FONT + 1)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.suptitle(f"{_chart_literal(model)}: claimed vs verified", fontsize=_CHART_FONT + 3, x=0.01, ha="left")
    handles = [
        Line2D([], [], marker="D", markersize=6, color=_CHART_COLOURS["claimed"], linestyle="none", label="claimed"),
        Line2D([], [], marker="o", markersize=5, color=_CHART_COLOURS["verified"], linestyle="-", linewidth=5,
               alpha=0.6, label="verified, with its interval"),
        Patch(color=_CHART_COLOURS["band"], label="claim's rounding ± flip budget"),
    ]
    # a figure legend below the panels (never on top of a mark), the verdicts' meaning as its title
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False, fontsize=_CHART_FONT,
               title="✓ reproduced: prints as the claim (rounding ± flip budget);  ≈ consistent: the claim lies "
                     "inside the verified interval;  ✗ differs: outside it", title_fontsize=_CHART_FONT - 1)
    return fig


def _chart(model: str, rows: pd.DataFrame) -> bytes:
    """:func:`_chart_figure` as PNG bytes (the same rows give the same bytes)."""
    return figure_png(_chart_figure(model, rows))


def chart_path(output_dir: str | Path, model: str) -> Path:
    return Path(output_dir) / f"{safe_name(model)}_claimed_vs_verified.png"


def write_report(output_dir: str | Path, claims: pd.DataFrame | str | Path | Iterable[str | Path] | None = None,
                 model: str | None = None, *, tolerance: float | None = None,
                 tables: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> list[Path]:
    """Write ``<output_dir>/claimed_vs_verified.md`` and one PNG chart per model; return their paths.

    Without ``model`` the report covers every model that has results; with it, that model only
    (its claims alone are enough). Files are written atomically. ``tolerance``: deprecated and
    ignored (:func:`verified_table`). ``tables``: :func:`report_tables` of the same folder, claims and
    model when the caller has them already (``evalkit report`` also writes the HTML from them).
    """
    output_dir = Path(output_dir)
    catalog = load_catalog()
    claims = _as_claims(claims, catalog)
    runs = _load_results(output_dir, model, catalog)
    table, aggs = tables if tables is not None else _report_tables(runs, claims, model, catalog, output_dir)
    with_results = {m for m, _ in runs}
    bases = _base_models(runs)
    if model is not None:
        if table.empty and model not in bases.values():
            known = sorted(set(claims["model"]) | set(_base_models(_load_results(output_dir, None, catalog)).values()))
            close = difflib.get_close_matches(model, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise OptionError(f"no claims and no results for model {model!r}{hint}")
        models = _runs_of(runs, model) or [model]
    else:
        models = [m for m in _model_order(claims, runs) if m in with_results]
        if not runs:  # as export: a report of nothing is a typo in --output-dir, never a green CI job
            raise ResultsFolderError(f"results folder {output_dir}: no results under {output_dir / 'runs'} "
                                     f"(--output-dir: the folder `evalkit run --output-dir` wrote to)")

    lines = [
        "# Claimed vs verified",
        "",
        f"Results: `{output_dir}`. Claimed numbers are percent as printed in the source paper; verified "
        f"numbers are this suite's results in percent, each with its confidence interval; Δ = verified − "
        f"claimed. Transform: `best-of-both` = per-dataset max of resize+centre-crop and direct resize "
        f"(arXiv 2402.04252 §7), `crop`/`squash` = one transform.",
        "",
        _VERDICT_RULES,
        "",
        *(f"- `{v}` {VERDICT_MARKS[v]}: {MEANING[v]}." for v in STATUSES),
        "",
        f"p (Holm): for a claim that differs, the p-value of its test (exact binomial for a proportion, the "
        f"bootstrap otherwise, the normal for an aggregate), Holm-adjusted over the {_tested(table, aggs)} "
        f"claims of this report that have a test; `*` below {SIGNIFICANCE:g}.",
        "",
    ]
    if models:
        lines += ["Verdicts per run (per-task claims, + aggregates where there are any):", "",
                  _verdict_counts(table, aggs, models), ""]
    if model is None:
        claims_only = sorted(set(claims["model"]) - set(bases.values()))
        if claims_only:
            lines += [f"Models with claims but no results: {', '.join(claims_only)}.", ""]
    sources = sorted({s for s in claims.loc[claims["model"].isin([bases.get(m, m) for m in models]), "source"] if s})
    if sources:
        lines += [f"Claim sources: {', '.join(sources)}.", ""]

    paths: list[Path] = []
    for m in models:
        rows = table[table["model"] == m]
        counts = rows["status"].value_counts()  # a verdict per row
        summary = ", ".join(f"{int(counts[s])} {s}" for s in STATUSES if s in counts) or "no rows"
        lines += [f"## {m}", "", f"Per-task rows: {summary}.", "", _claims_section(rows[rows["primary"]]), ""]
        model_aggs = aggs[aggs["model"] == m]
        if not model_aggs.empty:
            lines += ["### Aggregates", "", _aggregates_section(model_aggs), ""]
        others = rows[~rows["primary"]]
        if not others.empty:
            lines += ["### Other claims (per-transform and other protocols)", "", _claims_section(others), ""]
        main = rows[rows["primary"]]
        if not main.empty:
            png = chart_path(output_dir, m)
            atomic_write_bytes(png, _chart(m, main))
            paths.append(png)
        curves = fewshot_curves(r for (label, _), rs in runs.items() if label == m for r in rs[:1])
        if curves:
            lines += ["### Few-shot (linear probe, top-1 % by samples per class)", "", fewshot_section(curves), ""]
            png = fewshot_chart_path(output_dir, m)
            atomic_write_bytes(png, fewshot_chart(m, curves))
            paths.append(png)

    md = output_dir / REPORT_NAME
    atomic_write_text(md, "\n".join(lines).rstrip() + "\n")
    return [md, *paths]
