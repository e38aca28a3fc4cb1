"""The ``evalkit`` command: the top-level parser, each command's own module plugged in, and how
errors end a command (one line for what a user can fix, a traceback for a bug)."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from evalkit.cli import (
    cache,
    certify,
    check,
    claims,
    compare,
    data,
    envelope,
    export,
    listing,
    plan,
    report,
    run,
)
from evalkit.cli.help import EXIT_FAIL, EXIT_OK, EXIT_USAGE, HelpFormatter
from evalkit.errors import EvalkitError, bug_line, one_line

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
  evalkit certify --model eva-clip-demo   # a reproduction certificate; --verify CERT re-hashes one
"""





def build_parser() -> argparse.ArgumentParser:
    from evalkit.version import __version__
    p = argparse.ArgumentParser(
        prog="evalkit",
        description="Zero-shot evaluation of CLIP-style image-text models: every claimed number next to a verified one.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"evalkit {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    # one module per command: each adds its parser and sets `func` (args -> exit code)
    for command in (run, listing, report, export, compare, plan, data, check, claims, cache, envelope, certify):
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

    try:
        return args.func(args)
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
