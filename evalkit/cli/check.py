"""``evalkit check``: a results folder against a baseline (:mod:`evalkit.reporting.check`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from evalkit.cli.help import HelpFormatter
from evalkit.reporting import check as check_mod
from evalkit.reporting.check import EXIT_USAGE, BaselineError, check
from evalkit.reporting.verdicts import DEFAULT_TOLERANCE


def cmd_check(args: argparse.Namespace) -> int:
    try:
        report = check(args.output_dir, args.against, tolerance=args.tolerance, min_delta=args.min_delta,
                       tasks=args.tasks, model=args.model, all_metrics=args.all_metrics,
                       allow_missing=args.allow_missing, require_all=args.require_all)
    except BaselineError as e:
        print(f"evalkit: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json == "-":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        if args.json:
            from evalkit.results import atomic_write_text

            atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
        print(report.format(all_rows=args.all_rows))
    return report.exit_code


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check", help="regression check: a results folder against a baseline (results folder, leaderboard CSV "
                      "or claims CSV); exit 1 on a significant regression", description=(check_mod.__doc__ or "").replace("``", "`"), formatter_class=HelpFormatter)
    p.add_argument("--against", required=True, metavar="BASELINE",
                   help="demo or paper (the claims evalkit ships: the demo model's, the papers'), a results folder "
                   "(holding runs/), a leaderboard CSV (`evalkit export`) or a claims CSV")
    p.add_argument("--output-dir", default="results", metavar="RUN", help="the results folder to check, the folder "
                   "`evalkit run` wrote to")
    p.add_argument("--min-delta", type=float, default=0.0, metavar="POINTS",
                   help="a significant change counts only when larger than this many percentage points "
                   "(default 0: every significant change counts)")
    p.add_argument("--tolerance", type=float, default=None, metavar="POINTS",
                   help="a plain threshold instead of the statistics: a number may move this many percentage "
                   "points either way and still be ok, however many samples it rests on (the rule before "
                   f"intervals; {DEFAULT_TOLERANCE:g} is what a number without an interval is held to)")
    p.add_argument("--tasks", help="comma-separated task names, aliases or groups: check only these (both sides)")
    p.add_argument("--model", help="check only this model (both sides; with a claims CSV, also a model with no "
                   "result in the run, whose claims are then all not run)")
    p.add_argument("--all-metrics", action="store_true", help="compare every metric both sides have (claims: every "
                   "claim of every metric, transform and protocol), not only each task's primary metric")
    p.add_argument("--allow-missing", action="store_true",
                   help="a task or metric of a results folder or leaderboard baseline that the run lacks is "
                   "listed, not a failure")
    p.add_argument("--require-all", action="store_true",
                   help="claims: a claim the run has no number for (a task or setting not run) is a failure "
                   "(missing), not listed as 'not run'")
    p.add_argument("--all-rows", action="store_true", help="list every compared number, not only those that moved")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the report as JSON: on standard output instead of the table, or written to FILE "
                        "with the table printed as usual")
    p.set_defaults(func=cmd_check)
