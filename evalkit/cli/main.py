"""``evalkit`` command line: run, list, report, export."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from evalkit.cli import cache, check, data, plan
from evalkit.cli.help import TASK_DIR_HELP, HelpFormatter
from evalkit.errors import EvalkitError, bug_line, one_line
from evalkit.models.precision import RUN_PRECISION_CHOICES  # torch-free, for --help
from evalkit.tasks.runspec import RunSpec  # torch-free: the run options' defaults

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


EPILOG = """examples:
  evalkit run --model eva-clip-demo --tasks demo
  EVALKIT_DATA=/data evalkit run --model eva-clip-18b --tasks imagenet,objectnet   # GPUs, fp16: auto
  evalkit run --model eva-clip-18b --weights /ckpt/EVA_CLIP_18B_psz14_s6B.fp16.pt \\
              --tasks eva27 --data-root /data --precision int8 --devices 0,1
  evalkit run --model open_clip:ViT-B-32 --weights /ckpt/vit_b32.pt --tasks wds:/data/wds_cifar10
  evalkit list tasks                      # every task, with its aliases (imagenet = imagenet1k, ...)
  evalkit report --model eva-clip-demo
  evalkit export --format csv > leaderboard.csv
  evalkit plan --model eva-clip-18b --devices 2x40GiB --precision fp16
  evalkit check --against ci-baseline --output-dir results    # CI: exit 1 when a number regressed
  torchrun --nproc-per-node 8 -m evalkit run --model eva-clip-18b --tasks eva27
  evalkit cache ls                        # the feature cache, by model, view and dataset
"""


RUN_DESCRIPTION = """Evaluate a model on tasks and write one JSON result per task.

several processes, one dataset (torch.distributed; nothing to add to the command line):
  torchrun --nproc-per-node 8 -m evalkit run --model M --tasks T --device cuda
  accelerate launch -m evalkit run ...           (sets the same variables as torchrun)
  srun python -m evalkit run ...                 (SLURM; the sbatch script exports MASTER_ADDR and
                                                  MASTER_PORT: see docs/slurm/evaluate.sbatch)
  The ranks share each dataset's cache units (each encoded once) and each set of prompts; rank 0
  gathers the features, scores, prints and writes the results, which are those of one process
  (plus world_size and samples_per_rank). --device cuda is each rank's own GPU (cuda:LOCAL_RANK);
  --devices names the node's GPUs, split evenly over its processes (8 GPUs, 4 processes a node:
  two each), unless the launcher gave each process GPUs of its own. A rerun after a crash or a
  kill, with any number of processes, encodes only the units not yet in the cache.
  EVALKIT_DIST_TIMEOUT: seconds a rank waits for the others (default 3600)."""


def _positive_int(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return n


def _batch_size(value: str) -> int | str:
    # evalkit.features.batching.parse_batch_size's rule, without importing torch for --help
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return _positive_int(value)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {value}") from None


def _shots(value: str) -> list[int]:
    try:
        shots = [int(k) for k in value.split(",") if k.strip()]
    except ValueError:
        shots = []
    if not shots or any(k < 1 for k in shots):
        raise argparse.ArgumentTypeError(f"expected samples per class as positive integers, e.g. 1,2,4,8,16; got {value!r}")
    return sorted(set(shots))


def _workers(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a whole number >= 0, got {value}")
    return n


def build_parser() -> argparse.ArgumentParser:
    from evalkit import __version__
    p = argparse.ArgumentParser(
        prog="evalkit",
        description="Zero-shot evaluation of CLIP-style image-text models: every claimed number next to a verified one.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"evalkit {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="evaluate a model on tasks and write one JSON result per task",
                         formatter_class=HelpFormatter, description=RUN_DESCRIPTION)
    run.add_argument("--model", required=True, help="model card name (see `evalkit list models`) or open_clip:ARCH")
    run.add_argument("--weights", help="checkpoint file or folder, or an open_clip pretrained tag; "
                     "'random' builds an untrained model (smoke tests). Default: the card's released weights, "
                     "from the Hugging Face cache or downloaded")
    run.add_argument("--tasks", required=True, help="comma-separated task names, aliases (clip_benchmark's "
                     "names: imagenet, vtab/cifar10, wds/imagenet1k, ...) or groups (eva27, demo; see `evalkit "
                     "list tasks`), or ad-hoc datasets: wds:/path (clip_benchmark WebDataset folder), folder:/path "
                     "(ImageFolder; folder:/path?classnames=FILE), hf:/path (datasets.save_to_disk folder)")
    run.add_argument("--data-root", help="folder under which tasks find their datasets (default: $EVALKIT_DATA)")
    run.add_argument("--precision", default=RunSpec.default("precision"), choices=RUN_PRECISION_CHOICES,
                     help="weights dtype (amp: fp32 weights under autocast; int8: LLM.int8 and int4: NF4 "
                     "block Linear layers via bitsandbytes, fp16 elsewhere, EVA-CLIP models). Default auto: the "
                     "card's release precision on a GPU (fp16 for eva-clip-18b), fp32 on the CPU (its fastest); the "
                     "result records what auto chose")
    run.add_argument("--batch-size", type=_batch_size, default=RunSpec.default("batch_size"), metavar="N|auto",
                     help="images per forward pass (default 64). auto: on a CUDA device the largest batch that "
                     "fits, less a 10%% margin (searched once per model, view and GPU, remembered in the cache "
                     "folder's batch_sizes.json); on the CPU 64, or 8 for a model over a billion parameters")
    run.add_argument("--prefetch", type=_positive_int, metavar="N",
                     help="batches prepared ahead of the model (default 2; with W loader workers, ceil(N/W) each)")
    run.add_argument("--device", default=RunSpec.default("device"), help="auto, cpu, cuda or cuda:N. Default auto: every visible GPU (the "
                     "first when the model fits it, the model split over all of them when it does not), else the CPU; "
                     "a model that cannot fit stops before any weights are read, saying what would fit. Launched "
                     "with several processes: cuda is each process's own GPU, cuda:LOCAL_RANK")
    run.add_argument("--devices", help="place an EVA-CLIP model over several devices: 0,1,2,3 or cuda:0,cuda:1, "
                     "auto (every GPU) or cpu; whole blocks per device, CPU/disk offload when short "
                     "(overrides --device; plan first with `evalkit plan`). Launched with several processes a node, the "
                     "list is the node's GPUs, split evenly: local rank r takes the r-th part")
    run.add_argument("--max-memory", help="per-device memory caps for --devices, e.g. 0=38GiB,1=38GiB,cpu=64GiB, "
                     "or one size for every GPU")
    run.add_argument("--allow-missing", action="append", default=None, metavar="PATTERN",
                     help="checkpoint keys that may be absent (fnmatch pattern, repeatable; default: none, the "
                     "load is strict); allowed tensors keep their initial values")
    run.add_argument("--offload-dir", help="folder for weights offloaded to disk when devices and RAM are short "
                     "(slow: read every forward pass)")
    run.add_argument("--text-model", metavar="MODEL",
                     help="point-cloud encoders (uni3d-b ...): the model whose text tower scores the clouds "
                     "(default: the card's teacher, e.g. eva02-clip-e-14-plus for Uni3D's released checkpoints)")
    run.add_argument("--text-weights", metavar="PATH", help="weights of --text-model (default: its card's own)")
    run.add_argument("--output-dir", default=RunSpec.default("output_dir"), help="results go to OUTPUT_DIR/runs/<model>/<task>.json, or "
                     "OUTPUT_DIR/runs/<model>/<variant>/<task>.json for another precision or other weights")
    run.add_argument("--limit", type=_positive_int, help="evaluate only the first N samples of each task")
    run.add_argument("--num-workers", type=_workers, default="auto", metavar="N|auto",
                     help="data-loader worker processes that decode and resize images while the model runs "
                     "(default auto: 0 when the model runs on the CPU, whose cores the forward already uses; "
                     "one per core, at most 8, keeping one core free, when it runs on a GPU)")
    run.add_argument("--strict", action="store_true", help="fail on the first sample that does not decode "
                     "(default: skip it, count it in the result and list it in <task>.skipped.log)")
    run.add_argument("--transform", choices=["crop", "squash", "best-of-both"],
                     help="image transform (default: the task's own, usually crop); best-of-both runs "
                     "both and reports each plus the per-metric maximum, as Table 2 of arXiv 2402.04252")
    run.add_argument("--frames", metavar="SAMPLER",
                     help="video tasks: which frames of a clip are encoded and pooled: middle (vissl's one-frame "
                     "rule, the paper's main setting), middle-centre, uniform-8, uniform-16 or uniform-N "
                     "(default: the task's own)")
    run.add_argument("--shots", type=_shots, metavar="K,K,...",
                     help="few-shot linear-probe tasks: the samples per class to train on, e.g. 1,2,4,8,16 "
                     "(default: the task's own)")
    run.add_argument("--seeds", type=_positive_int, metavar="N",
                     help="few-shot linear-probe tasks: repeat each K with seeds 0..N-1 and report mean and std "
                     "(default: the task's own, usually 3)")
    run.add_argument("--save-predictions", action="store_true",
                     help="also write per-sample top-5 predictions as <task>.predictions.jsonl")
    run.add_argument("--cache-dir", help="feature/classifier cache folder, also holding generated data such as the "
                     "demo's video clips (default: $EVALKIT_CACHE, else ~/.cache/evalkit)")
    run.add_argument("--no-cache", action="store_true", help="do not read or write the on-disk cache")
    run.add_argument("--skip-existing", action="store_true", help="skip tasks that already have a result")
    run.add_argument("--task-dir", action="append", default=None, help=TASK_DIR_HELP)
    run.add_argument("--quiet", action="store_true", help="no progress (by default: bars on a terminal; in a log "
                     "or a pipe, a line when a phase has run 2 s, one every 30 s, and one when it ends)")

    lst = sub.add_parser("list", help="list tasks (with their aliases), groups, models or task families",
                         formatter_class=HelpFormatter)
    lst.add_argument("what", choices=["tasks", "groups", "models", "families"], help="what to list")
    lst.add_argument("--all", action="store_true",
                     help="models: also those the paper compares whose weights were never released (claim-only)")
    lst.add_argument("--task-dir", action="append", default=None, help=TASK_DIR_HELP)

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

    exp = sub.add_parser("export", help="leaderboard: one row per model, one column per task",
                         formatter_class=HelpFormatter)
    exp.add_argument("--format", default="csv", choices=["csv", "md"], help="CSV or a markdown table")
    exp.add_argument("--output-dir", default="results", help="the folder `evalkit run` wrote to")
    exp.add_argument("--out", help="write to this file instead of standard output")

    # the commands with a module of their own: each adds its parser and sets `func` (args -> exit code)
    for command in (plan, data, check, cache):
        command.register_cli(sub)
    _verbose_everywhere(p)  # `evalkit run -v ...`, `evalkit data check -v ...` as well as `evalkit -v run ...`
    return p


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for command in action.choices.values():
            taken = command._option_string_actions
            if "-v" not in taken and "--verbose" not in taken:
                command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                     help="debug logging")
            _verbose_everywhere(command)


def cmd_run(args: argparse.Namespace) -> int:
    from evalkit.api import evaluate

    try:
        report = _evaluate_from_args(evaluate, args)
    except EvalkitError as e:  # anything else is a bug: main() prints its traceback
        rank = _launched_rank()
        if rank is None or args.verbose:
            raise
        # a launched job's error names its rank (the distributed errors name it already)
        text = one_line(e)
        print(f"evalkit: error: {text if text.startswith('rank ') else f'rank {rank}: {text}'}", file=sys.stderr,
              flush=True)
        return EXIT_FAIL
    if report.rank == 0:
        for name in report.skipped_existing:
            print(f"{name}: result exists, skipped (--skip-existing)")
    return EXIT_OK if report.ok else EXIT_FAIL


def _launched_rank() -> int | None:
    """This process's rank when a launcher started several (evalkit.features.distributed.detect), else None."""
    from evalkit.features.distributed import DistributedError, detect

    try:
        launch = detect()
    except DistributedError:
        return None
    return None if launch is None else launch.rank


def _evaluate_from_args(evaluate: Any, args: argparse.Namespace) -> Any:
    """``evaluate`` with the run's options read from the flags (:meth:`RunSpec.from_args`)."""
    # each result and each failure printed once, when it happens (a long run hides nothing for hours)
    spec = RunSpec.from_args(args, on_result=_print_result, on_failure=lambda name, why: print(
        f"evalkit: error: {name}: {why}", file=sys.stderr, flush=True))
    return evaluate(args.model, args.tasks, spec=spec)


def _print_result(result: Any, path: Path) -> None:
    m, ev = result.metrics, result.evalkit
    # per-transform copies (acc1@crop) and clip_benchmark's retrieval names (the same as t2i_/i2t_R@K) left out
    shown = {k: v for k, v in m.items() if not k.endswith(("@crop", "@squash"))
             and not k.startswith(("image_retrieval_recall", "text_retrieval_recall"))}
    line = "  ".join(f"{k}={v * 100:.2f}" for k, v in shown.items())
    extra = f"  skipped={ev['skipped']}" if ev.get("skipped") else ""
    rate = f"  {ev['images_per_s']:.0f} img/s" if ev.get("images_per_s") else "  (cached)"
    print(f"{result.dataset}: {line}  n={ev.get('evaluated')}{extra}{rate}  -> {path}", flush=True)


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


# Flags users bring from other tools, and evalkit's own spelling: clip_benchmark (--pretrained,
# --dataset, --dataset_root, --batch_size, --output) and lm-evaluation-harness (--output_path).
FOREIGN_FLAGS = {
    "--pretrained": ("--weights", "clip_benchmark's --pretrained"),
    "--dataset": ("--tasks", "clip_benchmark's --dataset"),
    "--dataset_root": ("--data-root", "clip_benchmark's --dataset_root"),
    "--output": ("--output-dir", "clip_benchmark's --output (a file there; a folder here)"),
    "--output_path": ("--output-dir", "lm-evaluation-harness's --output_path"),
    "--model_args": ("--weights", "lm-evaluation-harness's --model_args"),
}


def foreign_flag_hints(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """One hint per flag of ``argv`` that the subcommand does not know but another tool's users
    type (``--pretrained`` -> ``--weights``, ``--batch_size`` -> ``--batch-size``), and for
    ``--tasks list``; empty when there is nothing to say."""
    sub_action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    command = next((a for a in argv if not a.startswith("-")), None)
    if sub_action is None or command not in sub_action.choices:
        return []
    known = set(sub_action.choices[command]._option_string_actions)
    hints: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            break
        flag = token.split("=", 1)[0]
        if flag == "--tasks" and (token.split("=", 1)[1:] or argv[i + 1:i + 2]) == ["list"]:
            hints.append("--tasks list: to see every task, run `evalkit list tasks` (groups: `evalkit list groups`)")
        if not flag.startswith("--") or flag in known:
            continue
        if flag in FOREIGN_FLAGS and FOREIGN_FLAGS[flag][0] in known:
            ours, theirs = FOREIGN_FLAGS[flag]
            hints.append(f"{flag} is {theirs}; evalkit {command} takes {ours}")
        elif flag.replace("_", "-") in known:
            hints.append(f"{flag}: evalkit spells it {flag.replace('_', '-')}")
    return hints


def _innermost_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``argv`` names: ``data check ...`` -> the parser of `data check`."""
    for token in argv:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is not None and token in sub.choices:
            parser = sub.choices[token]
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    hints = foreign_flag_hints(parser, argv)
    if hints:
        print(f"evalkit: error: {'; '.join(hints)}", file=sys.stderr)
        return EXIT_USAGE
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the subcommand's own parser: its usage, not evalkit's
        _innermost_parser(parser, argv).error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    from evalkit.registry import UnknownNameError

    handlers = {"run": cmd_run, "list": cmd_list, "report": cmd_report, "export": cmd_export}
    try:
        handler = getattr(args, "func", None) or handlers[args.command]
        return handler(args)
    except UnknownNameError as e:
        print(f"evalkit: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `evalkit list tasks | head`: the reader has gone
        sys.stderr.close()
        return EXIT_OK if args.command in ("list", "export") else EXIT_FAIL
    except KeyboardInterrupt:
        print("evalkit: interrupted; finished tasks and feature shards are saved, rerun to resume", file=sys.stderr)
        return 130
    except EvalkitError as e:  # something the user can fix: one line (-v: with its traceback)
        if args.verbose:
            raise
        print(f"evalkit: error: {one_line(e)}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as e:  # a bug in evalkit or a plugin, not in the input: its traceback, always
        traceback.print_exc()
        print(f"evalkit: error: {bug_line(e, 'above')}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
