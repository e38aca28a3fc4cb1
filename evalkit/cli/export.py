"""``evalkit export``: the leaderboard, one row per model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from evalkit.cli.help import EXIT_OK, HelpFormatter


def cmd_export(args: argparse.Namespace) -> int:
    from evalkit.reporting.claims import load_claims
    from evalkit.reporting.report import export

    claims = False if args.no_claims else load_claims(args.claims)  # None: the claims evalkit ships
    # no results there: an error naming the folder, exit 1
    text = export(args.output_dir, fmt=args.format, claims=claims, rank_by=args.rank_by)
    if args.out:
        from evalkit.results import atomic_write_text

        atomic_write_text(args.out, text)
        print(args.out)
    else:
        sys.stdout.write(text)
    return EXIT_OK

def register_cli(sub: Any) -> None:
    exp = sub.add_parser("export", help="leaderboard: one row per model, one column per task",
                         formatter_class=HelpFormatter,
                         description="The leaderboard: one row per run, each task's and aggregate's number, then "
                         "(after every number) their intervals <c>_ci_low/<c>_ci_high, the verdict of each "
                         "one's primary claim <c>_verdict, and a rank interval per run (rank, rank_best, "
                         "rank_worst, tie_group). docs/reports.md#the-leaderboard has the columns.")
    exp.add_argument("--format", default="csv", choices=["csv", "json", "md"],
                     help="CSV, JSON (a list of rows) or a markdown table")
    exp.add_argument("--claims", action="append", default=None,
                     help="claims CSV the verdict columns read (repeatable; default: the claims evalkit ships)")
    exp.add_argument("--no-claims", action="store_true", help="no claim columns (<c>_claimed, <c>_verdict)")
    exp.add_argument("--rank-by", metavar="COLUMN", default=None,
                     help="the aggregate column (or task) the rank columns rank on (default: the first aggregate "
                     "column some run has complete, in the group files' order)")
    exp.add_argument("--output-dir", default="results", help="the folder `evalkit run` wrote to")
    exp.add_argument("--out", help="write to this file instead of standard output")
    exp.set_defaults(func=cmd_export)
