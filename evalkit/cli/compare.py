"""``evalkit compare``: two runs, task by task, with paired statistics (evalkit/reporting/compare.py).

    evalkit compare results/fp16 results/int8                   # two results folders
    evalkit compare results/runs/eva-clip-demo results/runs/eva-clip-demo/bf16
    evalkit compare results --model eva-clip-demo --variant fp32 --variant int8
    evalkit compare results --model eva-clip-demo --model my-model --tasks demo

A side is a results folder (holding runs/), a model's folder in one (RUN/runs/<model>: the
default variant's results, which it holds) or a variant's (RUN/runs/<model>/<variant>). With one
folder, name two models or two variants to compare. --model and --variant given once apply to
both sides; given twice, the first is A's and the second B's.

Per task: A and B on the task's primary metric with their intervals, B − A with a paired
bootstrap interval, the discordant counts b (A right, B wrong) and c (A wrong, B right) with
the exact McNemar p-value, Holm-corrected over the tasks; the mean over the tasks with a paired
bootstrap over datasets; for zero-shot classification the samples whose top-1 changed, checked
against the flip budget of the two precisions.

Exit codes: 0 compared; 2 the comparison could not be made (a folder with no results, two
results of one task on a side, different sample sets without --intersect, a result without the
per-sample records its metric needs), in one line naming the side and the task.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evalkit.cli.help import EXIT_OK, EXIT_USAGE, HelpFormatter
from evalkit.errors import EvalkitError, one_line


def _per_side(values: list[str] | None, option: str) -> tuple[str | None, str | None]:
    values = values or []
    if len(values) > 2:
        raise ValueError(f"{option} given {len(values)} times: once (both sides) or twice (A's, then B's)")
    if len(values) == 2:
        return values[0], values[1]
    return (values[0], values[0]) if values else (None, None)


def sides(paths: list[str], models: list[str] | None, variants: list[str] | None) -> tuple[Any, Any]:
    """The two :class:`~evalkit.reporting.compare.SideSpec` the command line names."""
    from evalkit.reporting.compare import CompareError, SideSpec

    try:
        model_a, model_b = _per_side(models, "--model")
        variant_a, variant_b = _per_side(variants, "--variant")
    except ValueError as e:
        raise CompareError(str(e)) from None
    if len(paths) == 1:
        if len(models or []) < 2 and len(variants or []) < 2:
            raise CompareError(f"one folder ({paths[0]}): name a second folder, or two models (--model M1 --model M2) "
                               f"or two variants (--variant fp32 --variant int8) in it to compare")
        paths = [paths[0], paths[0]]
    if len(paths) != 2:
        raise CompareError(f"compare takes one or two folders, got {len(paths)}")
    return (SideSpec(Path(paths[0]), model_a, variant_a), SideSpec(Path(paths[1]), model_b, variant_b))


def cmd_compare(args: argparse.Namespace) -> int:
    from evalkit.reporting.compare import compare

    try:
        a, b = sides(args.runs, args.model, args.variant)
        result = compare(a, b, tasks=args.tasks, intersect=args.intersect, level=args.level,
                         resamples=args.resamples, seed=args.seed)
    except EvalkitError as e:  # bad input: exit 2, in one line
        if getattr(args, "verbose", False):
            raise
        print(f"evalkit: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        print(result.format())
    return EXIT_OK


def register_cli(subparsers: Any) -> None:
    from evalkit.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED

    p = subparsers.add_parser(
        "compare", help="two runs task by task: paired differences with intervals, McNemar tests (Holm), the "
                        "flips between two precisions", description=(__doc__ or "").replace("``", "`"),
        formatter_class=HelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="A and B: results folders, RUN/runs/<model> or RUN/runs/<model>/<variant> folders; one "
                        "folder with two --model or two --variant")
    p.add_argument("--model", action="append", metavar="M",
                   help="the model on both sides (once) or A's and B's (twice)")
    p.add_argument("--variant", action="append", metavar="V",
                   help="the variant (fp32, bf16, int8, fp16+weights-hash ...) on both sides (once) or A's and B's "
                        "(twice)")
    p.add_argument("--tasks", help="comma-separated task names, aliases or groups: compare only these (a group also "
                                   "gets its own average)")
    p.add_argument("--intersect", action="store_true",
                   help="where A and B have different samples of a task, compare the samples both have (and say "
                        "how many were dropped) instead of stopping")
    p.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="confidence level of the intervals")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed")
    p.add_argument("--json", action="store_true", help="print the same figures as JSON")
    p.set_defaults(func=cmd_compare)
