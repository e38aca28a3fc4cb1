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

A claim is ``verified`` when |verified − claimed| ≤ the tolerance (:data:`DEFAULT_TOLERANCE`
points, the one ``evalkit check`` uses), else ``differs``. A result of a ``--limit`` run
(``evalkit["limit"]`` set: a subset of the task) is never held against a claim as if complete:
its row shows the number with status ``partial`` and no Δ, and its run is labelled with the
limit (variant ``fp32+limit100``), in the report and in the leaderboard alike.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from evalkit.errors import EvalkitError, OptionError
from evalkit.metric_table import is_derived, long_name, members, metric_value, reduce, short_name, sort_key
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
from evalkit.reporting.verdicts import DEFAULT_TOLERANCE
from evalkit.results import (
    DEFAULT_VARIANT,
    TaskResult,
    atomic_write_bytes,
    atomic_write_text,
    iter_results,
    result_limit,
    result_variant,
    safe_name,
)
from evalkit.views.base import BEST_OF_BOTH, TRANSFORMS

REPORT_NAME = "claimed_vs_verified.md"
STATUSES = ("verified", "differs", "partial", "not run", "no claim")

_PROVENANCE_COLUMNS = {"result_transform": "Result transform", "precision": "Precision",
                       "samples": "Samples", "skipped": "Skipped"}

TABLE_COLUMNS = ["model", "task", "metric", "transform", "protocol", "claimed", "verified", "delta", "status",
                 "primary", "note", "source", "result_transform", "precision", "samples", "skipped"]
AGGREGATE_COLUMNS = ["model", "group", "aggregate", "transform", "protocol", "claimed", "verified", "n", "total",
                     "display", "delta", "status", "primary", "note"]


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


def _select(result: TaskResult, metric: str, transform: str) -> tuple[float | None, str]:
    """(value as a fraction or None, note) for one metric under one claimed transform."""
    metrics = result.metrics
    ran = str(result.evalkit.get("transform") or "")
    if transform in TRANSFORMS:
        value = metric_value(metrics, metric, "@" + transform)
        if value is not None:
            return value, ""
        if ran in (transform, ""):
            value = metric_value(metrics, metric)
            if value is None:
                return None, f"result has no {metric}"
            return value, "" if ran else "result does not record its transform"
        return None, f"result ran {ran}, not {transform}"
    if transform == BEST_OF_BOTH:
        both = [metric_value(metrics, metric, f"@{t}") for t in TRANSFORMS]
        if None not in both:
            return max(both), ""  # type: ignore[type-var]
        value = metric_value(metrics, metric)
        if value is None:
            return None, f"result has no {metric}"
        if ran == BEST_OF_BOTH:
            return value, ""
        return value, f"result ran {ran or 'one transform (unrecorded)'} only, not best-of-both"
    value = metric_value(metrics, metric)
    return value, "" if value is not None else f"result has no {metric}"


def _match(results: list[TaskResult], metric: str, transform: str, protocol: str, catalog: Catalog
           ) -> tuple[float | None, str, TaskResult | None]:
    """The first result that satisfies the claim's protocol and has the metric: (percent, note, result)."""
    if not results:
        return None, "", None
    needed, _ = split_protocol(protocol)
    needed = frozenset(canonical_tag(t) for t in needed)
    eligible = [r for r in results if needed <= result_tags(r, catalog)]
    if not eligible:
        have = ", ".join(sorted(";".join(sorted(result_tags(r, catalog))) or "default" for r in results))
        return None, f"no result with protocol {';'.join(sorted(needed))} (have: {have})", None
    first_note = ""
    for r in eligible:
        value, note = _select(r, metric, transform)
        if value is not None:
            return value * 100, note, r
        first_note = first_note or note
    return None, first_note, None


def _headline(results: list[TaskResult], metric: str) -> tuple[float | None, TaskResult | None]:
    """A task's own number (percent): the default-protocol result, best-of-both when it ran both."""
    for r in results:
        transform = BEST_OF_BOTH if r.evalkit.get("transform") == BEST_OF_BOTH else ""
        value, _ = _select(r, metric, transform)
        if value is not None:
            return value * 100, r
    return None, None


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
        return df.fillna({c: "" for c in ("transform", "protocol", "source", "note")})
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


def _status(claimed: float | None, verified: float | None, tolerance: float) -> str:
    if claimed is None or pd.isna(claimed):
        return "no claim"
    if verified is None or pd.isna(verified):
        return "not run"
    return "verified" if abs(verified - claimed) <= tolerance + 1e-9 else "differs"


def _limit_note(limits: Iterable[int]) -> str:
    shown = ", ".join(str(n) for n in sorted(set(limits)))
    return f"--limit {shown} run: a subset of the task, not held against the claim"


def verified_table(output_dir: str | Path, claims: pd.DataFrame | str | Path | Iterable[str | Path] | None = None,
                   *, model: str | None = None, tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """One row per per-task claim, plus one per result that no claim covers.

    Columns :data:`TABLE_COLUMNS`. ``claimed``/``verified``/``delta`` are percent (NaN when absent),
    ``delta`` = verified − claimed, ``status`` one of verified / differs / not run / no claim.
    ``primary`` marks, for each (model, task, metric), the claim a reader compares first (main
    protocol, best-of-both, the paper's own number); the others are per-transform or other-protocol
    claims. Aggregate claims (``AVG27`` ...) are in :func:`aggregate_table`.
    """
    catalog = load_catalog()
    return _verified(_load_results(output_dir, model, catalog), _as_claims(claims, catalog), model, tolerance,
                     catalog)


def _verified(runs: dict[tuple[str, str], list[TaskResult]], claims: pd.DataFrame, model: str | None,
              tolerance: float, catalog: Catalog) -> pd.DataFrame:
    per_task = claims[~claims["task"].isin(catalog.claim_names)]
    if model is not None:
        per_task = per_task[per_task["model"] == model]

    rows: list[dict[str, Any]] = []
    by_model = _runs_by_model(runs)
    for c in per_task.itertuples(index=False):
        for label in by_model.get(c.model) or [c.model]:  # each run of the model against its claims
            value, note, result = _match(runs.get((label, c.task), []), c.metric, c.transform, c.protocol, catalog)
            claim_note = str(c.note or "")
            status = _status(c.claimed, value, tolerance)
            limit = result_limit(result) if result is not None and value is not None else None
            if limit is not None:  # a --limit run's number: shown, never compared as if complete
                status, note = "partial", "; ".join(n for n in (_limit_note([limit]), note) if n)
            if status == "not run" and (never := claim_only(c.model, c.protocol)) is not None:
                note = f"never verified: claim-only ({never.why})"  # `evalkit list models --all`
            rows.append({
                "model": label, "task": c.task, "metric": c.metric, "transform": c.transform,
                "protocol": c.protocol, "claimed": float(c.claimed), "verified": value,
                "status": status,
                # the run's own note first: a partial row says why before the claim's provenance
                "note": "; ".join(n for n in ((note, claim_note) if limit is not None else (claim_note, note)) if n),
                "source": c.source, **_provenance(result),
            })
    claimed_keys = {(r["model"], r["task"]) for r in rows}
    for (m, task), results in runs.items():
        if (m, task) in claimed_keys or task in catalog.claim_names:
            continue
        metric = primary_metric(task, results, catalog)
        value, result = _headline(results, metric)
        limit = result_limit(result) if result is not None else None
        rows.append({"model": m, "task": task, "metric": metric, "transform": "", "protocol": "",
                     "claimed": None, "verified": value, "status": "no claim",
                     "note": f"result has no {metric}" if value is None else
                             f"--limit {limit} run: a subset of the task" if limit is not None else "",
                     "source": "", **_provenance(result or results[0])})

    df = pd.DataFrame.from_records(rows, columns=[c for c in TABLE_COLUMNS if c not in ("delta", "primary")])
    df["claimed"] = pd.to_numeric(df["claimed"], errors="coerce").astype(float)
    df["verified"] = pd.to_numeric(df["verified"], errors="coerce").astype(float)
    df["delta"] = ((df["verified"] - df["claimed"]).round(6) + 0.0).where(df["status"] != "partial")  # no -0.00
    ranks = [claim_rank(t, p) for t, p in zip(df["transform"], df["protocol"], strict=True)]
    df["_rank"] = ranks
    order = {m: i for i, m in enumerate(_model_order(claims, runs))}
    df["_sort"] = [(order.get(m, len(order)), catalog.task_key(t), sort_key(me), r, p)
                   for m, t, me, r, p in zip(df["model"], df["task"], df["metric"], ranks, df["protocol"], strict=True)]
    df = df.sort_values("_sort", kind="stable").reset_index(drop=True)
    df["primary"] = ~df.duplicated(["model", "task", "metric"], keep="first")
    return df.drop(columns=["_rank", "_sort"])[TABLE_COLUMNS]


def _aggregate(runs: dict[tuple[str, str], list[TaskResult]], model: str, group: Aggregate,
               transform: str | None, protocol: str, catalog: Catalog
               ) -> tuple[float | None, int, list[str], set[int]]:
    """(value in percent or None, members found, notes, the ``--limit`` of members from limited
    runs); ``transform=None`` = each result's headline."""
    values: list[float | None] = []
    notes: list[str] = []
    limits: set[int] = set()
    for task, metric in group.members:
        results = runs.get((model, task), [])
        if transform is None:
            value, result = _headline(results, metric)
        else:
            value, note, result = _match(results, metric, transform, protocol, catalog)
            if note and note not in notes and value is not None:
                notes.append(note)
        values.append(value)
        if value is not None and result is not None and result_limit(result) is not None:
            limits.add(result_limit(result))  # type: ignore[arg-type]
    n = sum(v is not None for v in values)
    return reduce(group.reduce, values), n, notes, limits


def _display(value: float | None, n: int, total: int, limits: Iterable[int] = ()) -> str:
    if value is None:
        return "—"
    parts = ([f"{n}/{total}"] if n < total else []) + [f"limit {k}" for k in sorted(set(limits))]
    return f"{value:.2f}" if not parts else f"{value:.2f} (partial: {', '.join(parts)})"


def aggregate_table(output_dir: str | Path, claims: pd.DataFrame | str | Path | Iterable[str | Path] | None = None,
                    *, model: str | None = None, tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """Per model and aggregate of the group files (:mod:`evalkit.reporting.catalog`): the
    aggregate of the verified numbers.

    One row per printed aggregate claim (computed under that claim's transform and protocol),
    or, for a leaderboard group the paper prints nothing for, one row from each task's headline
    number. ``display`` reads e.g. ``61.20 (partial: 3/27)``; status ``partial`` when some members
    are missing (no Δ then), ``not run`` when none are there.
    """
    catalog = load_catalog()
    return _aggregates(_load_results(output_dir, model, catalog), _as_claims(claims, catalog), model, tolerance,
                       catalog)


def _aggregates(runs: dict[tuple[str, str], list[TaskResult]], claims: pd.DataFrame, model: str | None,
                tolerance: float, catalog: Catalog) -> pd.DataFrame:
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
                value, n, notes, limits = _aggregate(runs, m, group, None, "", catalog)
                if n == 0:
                    continue
                rows.append({"model": m, "group": group.name, "aggregate": group.claim or "",
                             "transform": "", "protocol": "", "claimed": None, "verified": value, "n": n,
                             "total": total, "display": _display(value, n, total, limits),
                             "status": "partial" if n < total or limits else "no claim",
                             "primary": True, "note": "; ".join(notes + ([_limit_note(limits)] if limits else []))})
                continue
            for i, c in enumerate(gc.itertuples(index=False)):
                value, n, notes, limits = _aggregate(runs, m, group, c.transform, c.protocol, catalog)
                status = "not run" if n == 0 else (
                    "partial" if n < total or limits else _status(c.claimed, value, tolerance))
                if limits:
                    notes = [_limit_note(limits), *notes]
                rows.append({"model": m, "group": group.name, "aggregate": c.task, "transform": c.transform,
                             "protocol": c.protocol, "claimed": float(c.claimed), "verified": value, "n": n,
                             "total": total, "display": _display(value, n, total, limits), "status": status,
                             "primary": i == 0, "note": "; ".join(x for x in [str(c.note or "")] + notes if x)})
    df = pd.DataFrame.from_records(rows, columns=[c for c in AGGREGATE_COLUMNS if c != "delta"])
    df["claimed"] = pd.to_numeric(df["claimed"], errors="coerce").astype(float)
    df["verified"] = pd.to_numeric(df["verified"], errors="coerce").astype(float)
    complete = (df["n"] == df["total"]) & (df["status"] != "partial")
    df["delta"] = ((df["verified"] - df["claimed"]).round(6) + 0.0).where(complete)
    return df[AGGREGATE_COLUMNS]


def leaderboard(output_dir: str | Path,
                claims: pd.DataFrame | str | Path | Iterable[str | Path] | None = None) -> pd.DataFrame:
    """One row per run (model and variant) that has results; one column per task (percent) plus
    the aggregates. ``model`` is the model name, ``variant`` what else produced the numbers
    (precision, and weights other than the card's own: :func:`evalkit.results.run_variant`).

    Task columns hold each task's headline number: top-1 for image classification and UCF-101,
    mean(top-1, top-5) for Kinetics (the paper's metric, so the column agrees with
    ``video_mean``), the mean of the six recalls for retrieval. Then, per aggregate a group file
    puts on the leaderboard (its ``column``), ``<column>`` (the aggregate, over the members
    present) and ``<column>_n`` (how many members it covers, out of the group's size), and with
    ``claims`` the paper's printed aggregate as ``<column>_claimed``.
    """
    catalog = load_catalog()
    runs = _load_results(output_dir, None, catalog)
    claims_df = _as_claims(claims, catalog) if claims is not None else None
    models = sorted({m for m, _ in runs})
    bases = _base_models(runs)
    variants = {label: result_variant(results[0]) for (label, _), results in runs.items()}
    tasks = sorted({t for _, t in runs}, key=catalog.task_key)
    groups = [g for g in catalog.aggregates if g.leaderboard]
    rows: list[dict[str, Any]] = []
    for m in models:
        row: dict[str, Any] = {"model": bases[m], "variant": variants[m]}
        for t in tasks:
            results = runs.get((m, t), [])
            row[t] = _headline(results, primary_metric(t, results, catalog))[0] if results else None
        for g in groups:
            value, n, _, _ = _aggregate(runs, m, g, None, "", catalog)
            row[g.column] = value
            row[f"{g.column}_n"] = n
            if claims_df is not None:
                row[f"{g.column}_claimed"] = _primary_claim(claims_df, bases[m], g)
        rows.append(row)
    columns = ["model", "variant", *tasks]
    for g in groups:
        columns += [g.column, f"{g.column}_n"] + ([f"{g.column}_claimed"] if claims_df is not None else [])
    df = pd.DataFrame.from_records(rows, columns=columns)
    for g in groups:
        df[f"{g.column}_n"] = df[f"{g.column}_n"].astype("Int64")
        if claims_df is not None:
            df[f"{g.column}_claimed"] = pd.to_numeric(df[f"{g.column}_claimed"], errors="coerce").astype(float)
    return df


def _primary_claim(claims: pd.DataFrame, model: str, group: Aggregate) -> float | None:
    if not group.claim:
        return None
    gc = claims[(claims["model"] == model) & (claims["task"] == group.claim)]
    if gc.empty:
        return None
    best = min(gc.itertuples(index=False), key=lambda c: claim_rank(c.transform, c.protocol))
    return float(best.claimed)


def export(output_dir: str | Path, fmt: str = "csv") -> str:
    """The leaderboard as CSV (numbers to 2 decimals, blank when absent) or a markdown table.
    A folder with no results is an error (:class:`ResultsFolderError`), not an empty table."""
    if fmt not in ("csv", "md"):
        raise OptionError(f"unknown export format {fmt!r}; use 'csv' or 'md'")
    df = leaderboard(output_dir)
    if df.empty:
        raise ResultsFolderError(f"results folder {output_dir}: no results under {Path(output_dir) / 'runs'} "
                                 f"(--output-dir: the folder `evalkit run --output-dir` wrote to)")
    if fmt == "csv":
        return df.to_csv(index=False, float_format="%.2f", lineterminator="\n")
    if fmt == "md":
        return _markdown(df, floatfmt=".2f") + "\n"
    raise OptionError(f"unknown export format {fmt!r}; use 'csv' or 'md'")


# ----------------------------------------------------------------------------- report files


def _markdown(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    cells = df.astype(object).where(df.notna(), None)
    return tabulate(cells.values.tolist(), headers=list(df.columns), tablefmt="pipe", floatfmt=floatfmt,
                    missingval="—", disable_numparse=False)


def _fmt(x: Any, spec: str) -> str:
    return "—" if x is None or pd.isna(x) else format(x, spec)


def _fmt_claimed(x: Any) -> str:
    """As printed: one decimal, more only where the claim has more (e.g. 73.775)."""
    if x is None or pd.isna(x):
        return "—"
    return f"{x:.1f}" if round(x, 1) == x else f"{x:g}"


def _claims_section(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "_none_"
    table = pd.DataFrame({
        "Task": rows["task"], "Metric": rows["metric"], "Transform": rows["transform"],
        "Protocol": rows["protocol"], "Claimed": [_fmt_claimed(x) for x in rows["claimed"]],
        "Verified": [_fmt(x, ".2f") for x in rows["verified"]], "Δ": [_fmt(x, "+.2f") for x in rows["delta"]],
        "Status": rows["status"],
    })
    for col, header in _PROVENANCE_COLUMNS.items():
        if (rows[col].astype(str) != "").any():
            table[header] = rows[col].astype(str).values
    table["Note"] = rows["note"].values
    return tabulate(table.values.tolist(), headers=list(table.columns), tablefmt="pipe", disable_numparse=True)


def _aggregates_section(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "_none_"
    table = pd.DataFrame({
        "Aggregate": rows["group"], "Paper": rows["aggregate"], "Transform": rows["transform"],
        "Protocol": rows["protocol"], "Claimed": [_fmt_claimed(x) for x in rows["claimed"]],
        "Verified": rows["display"], "Δ": [_fmt(x, "+.2f") for x in rows["delta"]], "Status": rows["status"],
        "Note": rows["note"],
    })
    return tabulate(table.values.tolist(), headers=list(table.columns), tablefmt="pipe", disable_numparse=True)


_CHART_COLOURS = {"claimed": "#9e9e9e", "verified": "#1f77b4"}
_DELTA_COLOURS = {"verified": "#2e7d32", "differs": "#c62828"}
_CHART_FONT = 10  # points; the figure is sized so that every row keeps this size at any task count
_ROW_IN = 0.5  # inches per task (two bars and their labels)


def _chart_delta(delta: Any) -> str:
    """Δ as printed on the chart: signed, two decimals, a true minus sign; "—" when absent."""
    if delta is None or pd.isna(delta):
        return "—"
    return f"{round(float(delta), 2) + 0.0:+.2f}".replace("-", "−")


def _chart_literal(text: Any) -> str:
    """A name as matplotlib should print it: a "$" would otherwise start mathtext."""
    return str(text).replace("$", r"\$")


def _chart_figure(model: str, rows: pd.DataFrame) -> Any:
    """The claimed-vs-verified chart as a matplotlib ``Figure`` (one row of two bars per task).

    Horizontal bars, so the figure's height grows with the number of tasks while fonts stay the same
    size; each bar carries its value, a column on the right the Δ (verified − claimed, coloured by
    status), and a missing number reads "not run" / "no claim" instead of a zero-length bar. The
    metric is named on the x axis, or per task when the tasks' metrics differ.
    """
    from collections import Counter

    from matplotlib.figure import Figure  # no pyplot: no global figure state
    from matplotlib.transforms import blended_transform_factory

    metrics = [str(m) for m in rows["metric"]]
    main_metric = Counter(metrics).most_common(1)[0][0] if metrics else "acc1"  # ties: the first listed
    main_name = _chart_literal(long_name(main_metric))
    labels = [_chart_literal(t if m == main_metric else f"{t} ({short_name(m)})")
              for t, m in zip(rows["task"], metrics, strict=True)]
    claimed = [None if pd.isna(v) else float(v) for v in rows["claimed"]]
    verified = [None if pd.isna(v) else float(v) for v in rows["verified"]]
    deltas = rows["delta"] if "delta" in rows else [
        None if c is None or v is None else v - c for c, v in zip(claimed, verified, strict=True)]
    statuses = [str(s) for s in rows["status"]] if "status" in rows else [""] * len(labels)
    n = len(labels)

    fig = Figure(figsize=(9.0, 1.9 + _ROW_IN * max(n, 1)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ys = list(range(n))
    h = 0.38  # bar thickness; the pair fills 0.76 of a row
    known = [v for v in claimed + verified if v is not None]
    lo = min([0.0, *known])
    hi = max([100.0, *known])
    span = hi - lo
    for name, values, off in (("claimed", claimed, -h / 2), ("verified", verified, h / 2)):
        pos = [y + off for y in ys]
        ax.barh(pos, [0.0 if v is None else v for v in values], h, color=_CHART_COLOURS[name], label=name)
        for y, v in zip(pos, values, strict=True):
            if v is None:
                text = "no claim" if name == "claimed" else "not run"
                ax.text(lo + 0.01 * span, y, text, va="center", ha="left", fontsize=_CHART_FONT - 1,
                        style="italic", color="#555555")
            else:
                text = _fmt_claimed(v) if name == "claimed" else f"{v:.2f}"
                ax.text(v + 0.01 * span if v >= 0 else v - 0.01 * span, y, text, va="center",
                        ha="left" if v >= 0 else "right", fontsize=_CHART_FONT - 1)

    # Δ column just right of the plot area: x in axes fraction, y in data
    column = blended_transform_factory(ax.transAxes, ax.transData)
    ax.text(1.02, -0.5, "Δ", transform=column, ha="left", va="bottom", fontsize=_CHART_FONT, weight="bold")
    for y, d, s in zip(ys, deltas, statuses, strict=True):
        ax.text(1.02, y, _chart_delta(d), transform=column, ha="left", va="center", fontsize=_CHART_FONT,
                color=_DELTA_COLOURS.get(s, "#333333"), weight="bold" if s == "differs" else "normal")

    ax.set_yticks(ys, labels, fontsize=_CHART_FONT)
    ax.set_ylim(n - 0.5, -0.5)  # first task on top, as in the table
    ax.set_xlim(lo, hi + 0.14 * span)  # room for the value labels right of the longest bar
    ticks = [t for t in range(int(math.ceil(lo / 20)) * 20, int(hi) + 1, 20)]
    ax.set_xticks(ticks)
    ax.tick_params(axis="x", labelsize=_CHART_FONT)
    ax.set_xlabel(f"{main_name} (%)" if len(set(metrics)) <= 1
                  else f"percent: {main_name}, or the metric in brackets", fontsize=_CHART_FONT + 1)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(f"{_chart_literal(model)}: claimed vs verified", fontsize=_CHART_FONT + 3, loc="left", pad=28)
    # legend in the band between title and axes: never on top of a bar
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False, fontsize=_CHART_FONT,
              borderaxespad=0.2)
    fig.supxlabel("Δ = verified − claimed, in percentage points; green: verified (within tolerance), "
                  "red: differs", fontsize=_CHART_FONT - 1, color="#555555")
    return fig


def _chart(model: str, rows: pd.DataFrame) -> bytes:
    """:func:`_chart_figure` as PNG bytes (the same rows give the same bytes)."""
    return figure_png(_chart_figure(model, rows))


def chart_path(output_dir: str | Path, model: str) -> Path:
    return Path(output_dir) / f"{safe_name(model)}_claimed_vs_verified.png"


def write_report(output_dir: str | Path, claims: pd.DataFrame | str | Path | Iterable[str | Path] | None = None,
                 model: str | None = None, *, tolerance: float = DEFAULT_TOLERANCE) -> list[Path]:
    """Write ``<output_dir>/claimed_vs_verified.md`` and one PNG chart per model; return their paths.

    Without ``model`` the report covers every model that has results; with it, that model only
    (its claims alone are enough). Files are written atomically.
    """
    output_dir = Path(output_dir)
    catalog = load_catalog()
    claims = _as_claims(claims, catalog)
    runs = _load_results(output_dir, model, catalog)
    table = _verified(runs, claims, model, tolerance, catalog)
    aggs = _aggregates(runs, claims, model, tolerance, catalog)
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
        f"numbers are this suite's results in percent; Δ = verified − claimed; `verified` means "
        f"|Δ| ≤ {tolerance:g} points (tolerance ±{tolerance:g}, as `evalkit check`), `differs` beyond; "
        f"`partial`: an aggregate missing members, or the number of a `--limit` run (a subset of the "
        f"task: shown, never held against the claim). Transform: `best-of-both` = per-dataset max of "
        f"resize+centre-crop and direct resize (arXiv 2402.04252 §7), `crop`/`squash` = one transform.",
        "",
    ]
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
        counts = rows["status"].value_counts()
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
