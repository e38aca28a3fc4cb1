"""``evalkit report``: claimed against verified, as markdown and charts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from evalkit.cli.help import EXIT_FAIL, EXIT_OK, HelpFormatter


def cmd_report(args: argparse.Namespace) -> int:
    from evalkit.reporting.claims import load_claims
    from evalkit.reporting.report import verified_table, write_report

    claims = load_claims(args.claims)  # None: the claims evalkit ships
    # a missing --output-dir is an error (ResultsFolderError, exit 1), never created empty
    for path in write_report(args.output_dir, claims, model=args.model, tolerance=args.tolerance):
        print(path)
    if args.fail_on_differ:
        table = verified_table(args.output_dir, claims, model=args.model, tolerance=args.tolerance)
        bad = table[table["status"] == "differs"]
        for _, row in bad.iterrows():
            print(f"evalkit: {row['model']} {row['task']} {row['metric']}: claimed {row['claimed']:.2f}, "
                  f"verified {row['verified']:.2f} (beyond ±{args.tolerance:g})", file=sys.stderr)
        if len(bad):
            return EXIT_FAIL
        if not table["status"].isin(["verified", "differs"]).any():  # a gate that compared nothing is no pass
            partial = int((table["status"] == "partial").sum())
            print(f"evalkit: error: --fail-on-differ: no claim compared: no full result under {args.output_dir} "
                  f"matches a claim{f' ({partial} partial: --limit runs are not compared)' if partial else ''}",
                  file=sys.stderr)
            return EXIT_FAIL
    return EXIT_OK

def register_cli(sub: Any) -> None:
    rep = sub.add_parser("report", help="write claimed_vs_verified.md and a PNG chart per model",
                         formatter_class=HelpFormatter)
    rep.add_argument("--model", help="only this model")
    rep.add_argument("--output-dir", default="results", help="the folder `evalkit run` wrote to")
    rep.add_argument("--claims", action="append", default=None,
                     help="claims CSV (repeatable; default: the claims evalkit ships, the papers' and the demo's)")
    from evalkit.reporting.verdicts import (
        DEFAULT_TOLERANCE,  # pandas-free: one tolerance for report and check
    )

    rep.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                     help=f"|verified - claimed| in points counted as verified (default {DEFAULT_TOLERANCE:g}, "
                     f"the same as `evalkit check`)")
    rep.add_argument("--fail-on-differ", action="store_true",
                     help="exit 1 when any verified number differs from its claim beyond the tolerance (CI regression jobs)")
    rep.set_defaults(func=cmd_report)
