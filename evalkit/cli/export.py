"""``evalkit export``: the leaderboard, one row per model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from evalkit.cli.help import EXIT_OK, HelpFormatter


def cmd_export(args: argparse.Namespace) -> int:
    from evalkit.reporting.report import export

    text = export(args.output_dir, fmt=args.format)  # no results there: an error naming the folder, exit 1
    if args.out:
        from evalkit.results import atomic_write_text

        atomic_write_text(args.out, text)
        print(args.out)
    else:
        sys.stdout.write(text)
    return EXIT_OK

def register_cli(sub: Any) -> None:
    exp = sub.add_parser("export", help="leaderboard: one row per model, one column per task",
                         formatter_class=HelpFormatter)
    exp.add_argument("--format", default="csv", choices=["csv", "md"], help="CSV or a markdown table")
    exp.add_argument("--output-dir", default="results", help="the folder `evalkit run` wrote to")
    exp.add_argument("--out", help="write to this file instead of standard output")
    exp.set_defaults(func=cmd_export)
