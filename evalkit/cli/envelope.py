"""``evalkit envelope``: a finished run re-scored from its cached features under the protocol
variants a paper might have used (:mod:`evalkit.reporting.envelope`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from evalkit.cli.help import EXIT_USAGE, TASK_DIR_HELP, HelpFormatter

ENVELOPE_DESCRIPTION = """Re-score a finished zero-shot classification run from its cached image features
(no image forward pass; only prompts are encoded) under the protocol variants a paper might have
used: each template set evalkit ships for the task and a single "a photo of a {c}." prompt, each
class-name set it ships and the dataset's own, crop / squash / best-of-both where cached. Prints
the range per task and whether each claim lies inside it: "a protocol choice could explain this
gap" or "no shipped protocol variant reaches the claim"; writes <task>.envelope.json beside the
result."""


def cmd_envelope(args: argparse.Namespace) -> int:
    from evalkit.reporting import envelope as envelope_mod  # torch, data sources: only when it runs

    report = envelope_mod.envelope(
        args.model, args.tasks, output_dir=args.output_dir, cache_dir=args.cache_dir, data_root=args.data_root,
        task_dirs=tuple(args.task_dir or ()), variant=args.variant, frames=args.frames, weights=args.weights,
        device=args.device, claims=args.claims or None, progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.envelopes or report.unsupported:
        print(report.format())
    for _task, why in report.failures:  # one line each: the task and the `evalkit run` that makes what it lacks
        print(f"evalkit: error: {why}", file=sys.stderr)
    if not report.envelopes and not report.failures:
        print("evalkit: error: none of the tasks has an envelope (zero-shot classification only)", file=sys.stderr)
    return EXIT_USAGE if report.exit_code else 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "envelope", help="re-score a finished run's cached features under other templates, class names and "
                         "transforms: the range a protocol choice spans, and whether each claim lies in it",
        description=ENVELOPE_DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="the model whose run to re-score (as given to `evalkit run`)")
    p.add_argument("--tasks", required=True, help="comma-separated task names, aliases or groups")
    p.add_argument("--output-dir", default="results", metavar="RUN",
                   help="the results folder `evalkit run` wrote to; each envelope is written beside its result "
                        "as <task>.envelope.json")
    p.add_argument("--cache-dir", help="the feature cache the run used (default: $EVALKIT_CACHE, else "
                                       "~/.cache/evalkit)")
    p.add_argument("--data-root", help="the run's data root (default: $EVALKIT_DATA): the samples are listed, "
                                       "never decoded")
    p.add_argument("--task-dir", action="append", metavar="DIR", help=TASK_DIR_HELP)
    p.add_argument("--variant", help="which result where a task has several (fp32, int8, fp32+limit100 ...)")
    p.add_argument("--frames", metavar="SAMPLER", help="video tasks: the result of a run with this --frames")
    p.add_argument("--weights", help="the run's weights, where its result does not say them (default: as recorded)")
    p.add_argument("--device", help="where prompts are encoded (default: cuda if available, else cpu)")
    p.add_argument("--claims", action="append", metavar="CSV",
                   help="claims file(s) (repeatable; default: the claims evalkit ships)")
    p.add_argument("--json", action="store_true", help="print the same figures as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_envelope)
