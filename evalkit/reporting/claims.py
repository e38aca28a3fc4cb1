"""Published ("claimed") numbers and the aggregates the papers print.

Claims are data: ``results/claims.csv`` (regenerated from the shared reference by
``tools/build_claims.py``) plus any extra CSV files with the same columns, e.g. a model's own
claims kept next to its card. :func:`load_claims` reads and validates them.

Columns: ``model, task, metric, claimed`` are required; ``transform, protocol, source,
paper_model, paper_dataset, note`` are optional. ``claimed`` is in percent, as printed.
``metric`` is a name of the metric table (:mod:`evalkit.metric_table`: ``acc1``,
``image_retrieval_recall@5``, ``mean_acc1_acc5`` (the paper's Kinetics metric) ...) and, for the
paper's printed aggregates (tasks named like ``AVG27``: the ``claim`` of an aggregate a group file
carries, :mod:`evalkit.reporting.catalog`), the aggregate's reduction, ``mean`` or ``gap``. ``transform`` is ``best-of-both``, ``crop``,
``squash`` or blank. ``protocol`` holds ``;``-separated tags: setting tags a result must match
(``1frame``, ``8frames``, ``336px``, ``linear-probe`` ...) and provenance tags that say where a
number comes from without changing how it is measured (:data:`PROVENANCE_TAGS`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from evalkit.errors import EvalkitError
from evalkit.metric_table import parse
from evalkit.reporting.catalog import Catalog, load_catalog
from evalkit.reporting.verdicts import claim_decimals
from evalkit.resources import claims_dir
from evalkit.views.base import TRANSFORM_CHOICES

CLAIM_COLUMNS = ["model", "task", "metric", "claimed", "transform", "protocol", "source", "paper_model",
                 "paper_dataset", "note"]
REQUIRED_COLUMNS = ["model", "task", "metric", "claimed"]
PROVENANCE_TAGS = frozenset({"reported", "readme", "eva-clip-paper"})
# which of several claims of one (model, task, metric) a reader compares first: best-of-both, then
# a claim that names no transform, then one transform
TRANSFORM_RANK = {"best-of-both": 0, "": 1, "squash": 2, "crop": 3}



class ClaimsError(EvalkitError, ValueError):
    """A claims file that cannot be used; the message names the file and line."""


def default_claims_path() -> Path:
    """The papers' claims, ``claims.csv``, as evalkit ships it (``results/claims.csv`` in the
    repository, inside the package in a wheel: :func:`evalkit.resources.claims_dir`)."""
    return claims_dir() / "claims.csv"


def split_protocol(protocol: str) -> tuple[frozenset[str], frozenset[str]]:
    """``"1frame;readme"`` -> (setting tags a result must match, provenance tags)."""
    tags = {t.strip() for t in str(protocol or "").split(";") if t.strip()}
    return frozenset(tags - PROVENANCE_TAGS), frozenset(tags & PROVENANCE_TAGS)


def canonical_tag(tag: str) -> str:
    """One spelling of a protocol tag: ``"8frame"`` and ``"08frames"`` are ``"8frames"``,
    ``"1frames"`` is ``"1frame"``; any other tag as given (stripped)."""
    tag = tag.strip()
    digits = tag[: len(tag) - len(tag.lstrip("0123456789"))]
    if digits and tag[len(digits):] in ("frame", "frames"):
        return "1frame" if int(digits) == 1 else f"{int(digits)}frames"
    return tag


def claim_rank(transform: str, protocol: str) -> tuple[int, int, int]:
    """Lower is the headline claim: main protocol, best-of-both, the paper's own number."""
    setting, provenance = split_protocol(protocol)
    setting = frozenset(canonical_tag(t) for t in setting) - {"1frame"}
    return (1 if setting else 0, TRANSFORM_RANK.get(transform, 4), 1 if provenance else 0)


def load_claims(paths: str | Path | Iterable[str | Path] | None = None, *,
                catalog: Catalog | None = None) -> pd.DataFrame:
    """Read and validate one or more claims CSVs into one table.

    ``paths`` defaults to :func:`default_claims_path`. Every problem names its file and line:
    unknown or missing columns, an empty key field, a non-numeric ``claimed``, an unknown
    ``transform`` or ``metric``, and the same claim (model, task, metric, transform, protocol)
    given twice. The result has :data:`CLAIM_COLUMNS` plus ``decimals`` (how many decimals the
    ``claimed`` cell was printed with, read from its text: ``91.60`` -> 2; the verdicts' rounding
    interval) and ``origin`` (``file:line``), with ``claimed`` as float and blank optional fields as ``""``. The printed aggregates a claim may
    name are those of ``catalog`` (default: :func:`evalkit.reporting.catalog.load_catalog`).
    """
    catalog = catalog or load_catalog()
    if paths is None:
        # claims.csv (the papers) plus any claims_*.csv beside it (e.g. the demo model's)
        paths = sorted(default_claims_path().parent.glob("claims*.csv")) or [default_claims_path()]
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    records: list[dict[str, object]] = []
    seen: dict[tuple[str, ...], str] = {}
    for path in map(Path, paths):
        for rec in _read_claims_file(path, catalog):
            key = tuple(str(rec[c]) for c in ("model", "task", "metric", "transform", "protocol"))
            if key in seen:
                raise ClaimsError(f"{rec['origin']}: duplicate claim {key} (first given at {seen[key]})")
            seen[key] = str(rec["origin"])
            records.append(rec)
    return pd.DataFrame.from_records(records, columns=CLAIM_COLUMNS + ["decimals", "origin"]).astype(
        {"claimed": float, "decimals": int})


def _read_claims_file(path: Path, catalog: Catalog) -> list[dict[str, object]]:
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise ClaimsError(f"{path}: cannot read claims file: {e}") from e
    out: list[dict[str, object]] = []
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ClaimsError(f"{path}:1: empty claims file (expected a header row)")
        header = [h.strip() for h in header]
        unknown = [h for h in header if h not in CLAIM_COLUMNS]
        if unknown:
            raise ClaimsError(f"{path}:1: unknown column(s) {unknown}; allowed: {CLAIM_COLUMNS}")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ClaimsError(f"{path}:1: missing required column(s) {missing}")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise ClaimsError(f"{path}:1: column(s) given twice: {dupes}")
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ClaimsError(f"{path}:{line}: {len(row)} fields, expected {len(header)}")
            rec: dict[str, object] = {c: "" for c in CLAIM_COLUMNS}
            rec.update({h: v.strip() for h, v in zip(header, row, strict=True)})
            rec["origin"] = f"{path}:{line}"
            _validate(rec, path, line, catalog)
            out.append(rec)
    return out


def _validate(rec: dict[str, object], path: Path, line: int, catalog: Catalog) -> None:
    where = f"{path}:{line}"
    for c in ("model", "task", "metric"):
        if not rec[c]:
            raise ClaimsError(f"{where}: empty {c!r}")
    try:
        value = float(str(rec["claimed"]))
    except ValueError:
        raise ClaimsError(f"{where}: claimed value {rec['claimed']!r} is not a number") from None
    if not math.isfinite(value):
        raise ClaimsError(f"{where}: claimed value {rec['claimed']!r} is not finite")
    rec["decimals"] = claim_decimals(str(rec["claimed"]))  # from the text: "91.60" is 2 decimals, 91.6 as a float 1
    rec["claimed"] = value
    if rec["transform"] and rec["transform"] not in TRANSFORM_CHOICES:
        raise ClaimsError(f"{where}: unknown transform {rec['transform']!r}; use one of {TRANSFORM_CHOICES} or blank")
    metric = str(rec["metric"])
    parsed = parse(metric)
    if parsed is None or parsed.suffix:
        raise ClaimsError(f"{where}: unknown metric {metric!r} (evalkit.metric_table.METRICS names the metrics)")
    if parsed.metric.alias_of is not None:
        raise ClaimsError(f"{where}: metric {metric!r} is clip_benchmark's other name of "
                          f"{parsed.metric.alias_of.replace('{k}', str(parsed.k))!r}: claim that")
    aggregates = {a.claim: a for a in catalog.aggregates if a.claim}
    task = str(rec["task"])
    if parsed.metric.aggregate and task not in aggregates:
        raise ClaimsError(
            f"{where}: metric {metric!r} is for the paper's aggregates {sorted(aggregates)}, not task {task!r}")
    if task in aggregates and metric != aggregates[task].reduce:
        raise ClaimsError(f"{where}: aggregate {task!r} needs metric {aggregates[task].reduce!r} (its group file "
                          f"{aggregates[task].path} reduces its members so)")
    rec["protocol"] = ";".join(t.strip() for t in str(rec["protocol"]).split(";") if t.strip())
