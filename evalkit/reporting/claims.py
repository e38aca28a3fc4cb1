"""Published ("claimed") numbers and the aggregates the papers print.

Claims are data: ``results/claims.csv`` (regenerated from the shared reference by
``tools/build_claims.py``) plus any extra CSV files with the same columns, e.g. a model's own
claims kept next to its card. :func:`load_claims` reads and validates them.

Columns: ``model, task, metric, claimed`` are required; ``transform, protocol, source,
paper_model, paper_dataset, note`` are optional. ``claimed`` is in percent, as printed.
``metric`` uses result metric names (``acc1``, ``image_retrieval_recall@5`` ...) plus
``mean_acc1_acc5`` (the paper's Kinetics metric) and, for the paper's printed aggregates (tasks
named like ``AVG27``), ``mean`` or ``gap``. ``transform`` is ``best-of-both``, ``crop``,
``squash`` or blank. ``protocol`` holds ``;``-separated tags: setting tags a result must match
(``1frame``, ``8frames``, ``336px``, ``linear-probe`` ...) and provenance tags that say where a
number comes from without changing how it is measured (:data:`PROVENANCE_TAGS`).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evalkit.errors import EvalkitError
from evalkit.resources import claims_dir

CLAIM_COLUMNS = ["model", "task", "metric", "claimed", "transform", "protocol", "source", "paper_model",
                 "paper_dataset", "note"]
REQUIRED_COLUMNS = ["model", "task", "metric", "claimed"]
TRANSFORMS = ("best-of-both", "crop", "squash")
PROVENANCE_TAGS = frozenset({"reported", "readme", "eva-clip-paper"})
AGGREGATE_METRICS = ("mean", "gap")
_METRIC_RE = re.compile(
    r"^(acc\d+|acc1@\d+shot|mean_per_class_recall|mean_acc1_acc5|mean_recall|mean|gap|"
    r"(image|text)_retrieval_recall@\d+)$"
)

EVA27 = (
    "imagenet1k", "imagenetv2", "imagenet-a", "imagenet-r", "imagenet_sketch", "objectnet",
    "cifar10", "cifar100", "mnist", "caltech101", "sun397", "fgvc_aircraft", "country211", "cars",
    "birdsnap", "dtd", "eurosat", "fer2013", "flowers", "food101", "gtsrb", "pcam", "pets",
    "renderedsst2", "resisc45", "stl10", "voc2007",
)
IMAGENET_VARIANTS = ("imagenet1k", "imagenetv2", "imagenet-a", "imagenet-r", "imagenet_sketch", "objectnet")
# [P18] Table 6b: the 17 datasets on which EVA-CLIP-18B is compared with BASIC-L
BASIC17 = (
    "imagenet1k", "imagenetv2", "imagenet-a", "imagenet-r", "imagenet_sketch", "objectnet", "cifar10",
    "cifar100", "mnist", "sun397", "birdsnap", "dtd", "eurosat", "food101", "pcam", "resisc45", "stl10",
)
VIDEO = ("ucf101", "kinetics400", "kinetics600", "kinetics700")
RETRIEVAL = ("flickr30k", "coco")
THREE_D = ("objaverse-lvis", "modelnet40", "scanobjectnn")  # [P18] Table 8's column order
DEMO = ("shapeworld-shape", "shapeworld-colour", "shapeworld-retrieval", "shapeworld-video", "shapeworld-3d",
        "shapeworld-3d-fewshot")
TASK_ORDER = EVA27 + VIDEO + RETRIEVAL + THREE_D + DEMO

RETRIEVAL_METRICS = tuple(
    f"{direction}_retrieval_recall@{k}" for direction in ("text", "image") for k in (1, 5, 10)
)  # text_retrieval = image->text (Table 3's first six columns), image_retrieval = text->image

# The metric each task is compared on by default: top-1 everywhere, except the paper's Kinetics
# metric, the mean of top-1 and top-5 ([P18] Table 5, Table 11). Retrieval tasks use the mean of
# their six recalls ("mean_recall") as their one number.
PRIMARY_METRIC = {t: "acc1" for t in TASK_ORDER}
PRIMARY_METRIC.update({t: "mean_acc1_acc5" for t in ("kinetics400", "kinetics600", "kinetics700")})
PRIMARY_METRIC.update({t: "mean_recall" for t in RETRIEVAL})


@dataclass(frozen=True)
class Group:
    """An aggregate over (task, metric) members, and the paper's name for it where it prints one."""

    name: str
    members: tuple[tuple[str, str], ...]
    column: str  # leaderboard column
    claim_task: str | None = None  # task name of the printed aggregate in claims.csv
    reduce: str = "mean"  # "mean", or "gap": first member minus the mean of all members
    leaderboard: bool = True
    description: str = ""

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for t, _ in self.members))


def _acc1(tasks: Iterable[str]) -> tuple[tuple[str, str], ...]:
    return tuple((t, "acc1") for t in tasks)


GROUPS: dict[str, Group] = {
    g.name: g
    for g in (
        Group("eva27", _acc1(EVA27), "eva27_mean", "AVG27",
              description="[P18] Table 2: unweighted mean top-1 over the 27 image datasets"),
        Group("eva27-no-birdsnap", _acc1(t for t in EVA27 if t != "birdsnap"), "eva27_mean_no_birdsnap",
              description="the 27-dataset mean without Birdsnap, whose 2,195-image test list is unpublished"),
        Group("imagenet-variants", _acc1(IMAGENET_VARIANTS), "imagenet_variants_mean", "ROBUST_AVG6",
              description="[P18] Table 6a: mean top-1 over IN-1K, IN-V2, IN-A, IN-R, IN-Sketch, ObjectNet"),
        Group("imagenet-gap", _acc1(IMAGENET_VARIANTS), "imagenet_gap", "ROBUST_DELTA", reduce="gap",
              leaderboard=False,
              description="[P18] Table 6a: IN-1K top-1 minus the 6-dataset ImageNet-variants mean"),
        Group("video", (("ucf101", "acc1"),) + tuple((t, "mean_acc1_acc5") for t in VIDEO[1:]), "video_mean",
              "VIDEO_AVG4",
              description="[P18] Table 5: mean of UCF-101 top-1 and Kinetics-400/600/700 mean(top-1, top-5)"),
        Group("retrieval", tuple((t, m) for t in RETRIEVAL for m in RETRIEVAL_METRICS), "retrieval_mean_recall",
              "RETRIEVAL_MR",
              description="[P18] Table 3 MR: mean of the 12 recalls (R@1/5/10, both directions, Flickr30K and COCO)"),
        Group("3d", _acc1(THREE_D), "3d_mean",
              description="[P18] Table 8's three sets (Objaverse-LVIS, ModelNet40, ScanObjectNN): mean top-1 "
                          "(the paper prints no mean)"),
        Group("basic17", _acc1(BASIC17), "basic17_mean", "AVG17", leaderboard=False,
              description="[P18] Table 6b: mean top-1 over the 17 datasets shared with BASIC-L"),
        Group("basic17-no-birdsnap", _acc1(t for t in BASIC17 if t != "birdsnap"), "basic17_mean_no_birdsnap",
              "AVG16_no_Birdsnap", leaderboard=False,
              description="[P18] Table 6b: the same without Birdsnap (16 datasets)"),
    )
}
AGGREGATE_TASKS = frozenset(g.claim_task for g in GROUPS.values() if g.claim_task)


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


def load_claims(paths: str | Path | Iterable[str | Path] | None = None) -> pd.DataFrame:
    """Read and validate one or more claims CSVs into one table.

    ``paths`` defaults to :func:`default_claims_path`. Every problem names its file and line:
    unknown or missing columns, an empty key field, a non-numeric ``claimed``, an unknown
    ``transform`` or ``metric``, and the same claim (model, task, metric, transform, protocol)
    given twice. The result has :data:`CLAIM_COLUMNS` plus ``origin`` (``file:line``), with
    ``claimed`` as float and blank optional fields as ``""``.
    """
    if paths is None:
        # claims.csv (the papers) plus any claims_*.csv beside it (e.g. the demo model's)
        paths = sorted(default_claims_path().parent.glob("claims*.csv")) or [default_claims_path()]
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    records: list[dict[str, object]] = []
    seen: dict[tuple[str, ...], str] = {}
    for path in map(Path, paths):
        for rec in _read_claims_file(path):
            key = tuple(str(rec[c]) for c in ("model", "task", "metric", "transform", "protocol"))
            if key in seen:
                raise ClaimsError(f"{rec['origin']}: duplicate claim {key} (first given at {seen[key]})")
            seen[key] = str(rec["origin"])
            records.append(rec)
    return pd.DataFrame.from_records(records, columns=CLAIM_COLUMNS + ["origin"]).astype({"claimed": float})


def _read_claims_file(path: Path) -> list[dict[str, object]]:
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
            _validate(rec, path, line)
            out.append(rec)
    return out


def _validate(rec: dict[str, object], path: Path, line: int) -> None:
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
    rec["claimed"] = value
    if rec["transform"] and rec["transform"] not in TRANSFORMS:
        raise ClaimsError(f"{where}: unknown transform {rec['transform']!r}; use one of {TRANSFORMS} or blank")
    if not _METRIC_RE.match(str(rec["metric"])):
        raise ClaimsError(f"{where}: unknown metric {rec['metric']!r}")
    is_aggregate = rec["metric"] in AGGREGATE_METRICS
    if is_aggregate and rec["task"] not in AGGREGATE_TASKS:
        raise ClaimsError(
            f"{where}: metric {rec['metric']!r} is for the paper's aggregates {sorted(AGGREGATE_TASKS)}, "
            f"not task {rec['task']!r}")
    if rec["task"] in AGGREGATE_TASKS and not is_aggregate:
        raise ClaimsError(f"{where}: aggregate {rec['task']!r} needs metric 'mean' or 'gap'")
    rec["protocol"] = ";".join(t.strip() for t in str(rec["protocol"]).split(";") if t.strip())
