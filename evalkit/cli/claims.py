"""``evalkit claims audit``: the arithmetic of a claims file, with no model and no data
(evalkit/reporting/audit.py; the rules: docs/reports.md, "Claim-arithmetic audit").

Checks that each printed accuracy or recall is some k/N of its test set after rounding (N from
the task files), that each printed average is the mean of its printed parts within rounding,
that a number printed in two places is the same, and that percentages lie in [0, 100] with a
top-5 never below the top-1. Every finding names its rows: table, model, dataset, metric, the
printed value, file and line.

Exit codes: 0 no finding, 1 at least one finding, 2 a claims file that cannot be read (the
message names the file and line).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from evalkit.cli.help import EXIT_USAGE, HelpFormatter
from evalkit.errors import EvalkitError, one_line


def cmd_audit(args: argparse.Namespace) -> int:
    from evalkit.reporting.audit import audit

    try:
        report = audit(args.claims or None)
    except EvalkitError as e:  # a claims or task file that cannot be used: exit 2, never 1 (a finding)
        print(f"evalkit: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format())
    return report.exit_code


def register_cli(subparsers: Any) -> None:
    claims = subparsers.add_parser("claims", help="work on claims files (evalkit claims audit ...)")
    actions = claims.add_subparsers(dest="claims_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "audit", help="check the arithmetic of claims files (k/N, averages, repeats, ranges); exit 1 on a finding",
        description=(__doc__ or "").replace("``", "`"), formatter_class=HelpFormatter)
    p.add_argument("--claims", nargs="+", action="extend", metavar="CSV",
                   help="claims CSV file(s) to audit (repeatable; default: the shipped claims.csv and claims_demo.csv)")
    p.add_argument("--json", action="store_true",
                   help="print {findings: [...], summary: {...}} as JSON instead of the text report")
    p.set_defaults(func=cmd_audit)
