"""``evalkit report``: claimed against verified, as markdown and charts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from evalkit.cli.help import EXIT_FAIL, EXIT_OK, HelpFormatter


def cmd_report(args: argparse.Namespace) -> int:
    from evalkit.reporting.claims import load_claims
    from evalkit.reporting.report import JUDGED, report_tables, write_report

    if args.task:  # the per-class analysis of one task's runs (evalkit.reporting.perclass), instead of the report
        from evalkit.reporting.perclass import perclass_report

        print(perclass_report(args.output_dir, args.task, args.model, classes=args.classes), end="")
        return EXIT_OK
    claims = load_claims(args.claims)  # None: the claims evalkit ships
    # the claims' and the aggregates' tables once (results read, intervals and tests made): every
    # file below is written from them; a missing --output-dir is an error (exit 1), never created empty
    tables = report_tables(args.output_dir, claims, model=args.model)
    if args.paper:  # the paper's own tables, instead of the report (evalkit.reporting.paper)
        from evalkit.reporting.paper import write_paper_report

        print(write_paper_report(args.output_dir, args.paper, claims, model=args.model, tables=tables))
        _write_html(args, claims, tables)  # the HTML report with the paper's tables
        return EXIT_OK
    if args.tolerance is not None:
        print("evalkit: note: report --tolerance is deprecated and ignored: a verdict rests on the claim's rounding, "
              "the flip budget and the verified interval (evalkit check --tolerance keeps a plain threshold)",
              file=sys.stderr)
    for path in write_report(args.output_dir, claims, model=args.model, tables=tables):
        print(path)
    _write_html(args, claims, tables)
    if args.fail_on_differ:
        table = tables[0]
        bad = table[table["status"] == "differs"]
        for _, row in bad.iterrows():
            print(f"evalkit: {row['model']} {row['task']} {row['metric']}: claimed {row['claimed']:g}, "
                  f"verified {row['verified']:.2f}: differs ({row['reason']}"
                  + (f"; p Holm {row['p_holm']:.2g})" if row["p_holm"] == row["p_holm"] else ")"),
                  file=sys.stderr)
        if len(bad):
            return EXIT_FAIL
        if not table["status"].isin(JUDGED).any():  # a gate that compared nothing is no pass
            partial = int((table["status"] == "partial").sum())
            print(f"evalkit: error: --fail-on-differ: no claim compared: no full result under {args.output_dir} "
                  f"matches a claim{f' ({partial} partial: --limit runs are not compared)' if partial else ''}",
                  file=sys.stderr)
            return EXIT_FAIL
    return EXIT_OK

def _write_html(args: argparse.Namespace, claims: Any, tables: Any) -> None:
    """The single-file HTML report (evalkit.reporting.html), unless --no-html; its path printed."""
    if args.html is False:
        return
    from evalkit.reporting.html import write_html

    print(write_html(args.output_dir, claims, model=args.model, paper=args.paper, path=args.html or None,
                     tables=tables))


def register_cli(sub: Any) -> None:
    rep = sub.add_parser("report", help="write claimed_vs_verified.md, a PNG chart per model and report.html",
                         formatter_class=HelpFormatter)
    rep.add_argument("--model", help="only this model")
    rep.add_argument("--output-dir", default="results", help="the folder `evalkit run` wrote to")
    rep.add_argument("--claims", action="append", default=None,
                     help="claims CSV (repeatable; default: the claims evalkit ships, the papers' and the demo's)")
    rep.add_argument("--tolerance", type=float, default=None,
                     help="deprecated, ignored: verdicts (reproduced / consistent / differs) rest on the claim's "
                     "rounding, the flip budget and the verified interval; `evalkit check --tolerance` keeps a "
                     "plain threshold")
    rep.add_argument("--fail-on-differ", action="store_true",
                     help="exit 1 when any claim's verdict is `differs` (it lies outside the verified interval) "
                     "or when no claim could be compared (CI regression jobs)")
    rep.add_argument("--task", help="print the per-class analysis of this task's runs instead: per-class accuracy with "
                     "its interval (worst first), the most-confused pairs, classes without a test sample and duplicate "
                     "class names")
    rep.add_argument("--paper", metavar="ID",
                     help="write <output-dir>/paper_<ID>.md instead: the claims of paper ID (2402.04252 or "
                     "arXiv:2402.04252) arranged as the paper's own tables, in its row and column order, each cell "
                     "verified [interval] verdict / claimed; a claim without a result reads `—` (no results: the "
                     "checklist); and report.html with those tables")
    html = rep.add_mutually_exclusive_group()
    html.add_argument("--html", nargs="?", const="", default="", metavar="PATH",
                      help="write the single-file HTML report (written by default, beside the markdown: "
                      "<output-dir>/report.html; with PATH: there): summary, the claims table (sortable, filtered "
                      "by paper table, run, task family and verdict), leaderboard with rank intervals, a section "
                      "per task, provenance and certificates; offline, one file (docs/html-report.md)")
    html.add_argument("--no-html", dest="html", action="store_false", default="",
                      help="do not write the HTML report (by default it is written)")
    rep.add_argument("--classes", type=int, default=20, metavar="N",
                     help="with --task: the N worst classes per analysis (default 20; 0: all)")
    rep.set_defaults(func=cmd_report)
