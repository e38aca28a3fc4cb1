"""``evalkit list``: tasks, groups, models, task families."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from evalkit.cli.help import EXIT_FAIL, EXIT_OK, TASK_DIR_HELP, HelpFormatter


def cmd_list(args: argparse.Namespace) -> int:
    from evalkit.registry import task_families
    from evalkit.tasks import load_builtin_families
    from evalkit.tasks.spec import TaskIndex

    if args.what == "models":
        from evalkit.models import list_models

        for name, desc in list_models(all=args.all):
            print(f"{name:28s} {desc}")
        return EXIT_OK
    if args.what == "families":
        load_builtin_families()
        for name, _ in task_families.items():
            print(name)
        return EXIT_OK
    index = TaskIndex.load(extra=[Path(d) for d in args.task_dir or ()])
    found = index.tasks if args.what == "tasks" else index.groups
    if not found:
        print(f"evalkit: error: no {args.what} found in {', '.join(str(d) for d in index.dirs)}", file=sys.stderr)
        return EXIT_FAIL
    if args.what == "tasks":
        for name, spec in sorted(index.tasks.items()):
            also = f"  (also: {', '.join(spec.aliases)})" if spec.aliases else ""
            print(f"{name:28s} {spec.family:16s} {spec.describe()}{also}")
    else:
        for name, g in sorted(index.groups.items()):
            report_only = "" if g.run else "  (report only: run: false)"
            print(f"{name:28s} {len(g.tasks):3d} entries: {', '.join(g.tasks)}{report_only}")
    return EXIT_OK

def register_cli(sub: Any) -> None:
    lst = sub.add_parser("list", help="list tasks (with their aliases), groups, models or task families",
                         formatter_class=HelpFormatter)
    lst.add_argument("what", choices=["tasks", "groups", "models", "families"], help="what to list")
    lst.add_argument("--all", action="store_true",
                     help="models: also those the paper compares whose weights were never released (claim-only)")
    lst.add_argument("--task-dir", action="append", default=None, help=TASK_DIR_HELP)
    lst.set_defaults(func=cmd_list)
