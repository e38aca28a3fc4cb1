"""``evalkit run``: evaluate a model on tasks (options: :class:`evalkit.tasks.runspec.RunSpec`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from evalkit.cli.help import EXIT_FAIL, EXIT_OK, TASK_DIR_HELP, HelpFormatter
from evalkit.errors import EvalkitError, one_line
from evalkit.models.precision import RUN_PRECISION_CHOICES  # torch-free, for --help
from evalkit.stats import PROPORTION_METHODS  # torch-free
from evalkit.tasks.runspec import RunSpec  # torch-free: the run options' defaults
from evalkit.views.base import TRANSFORM_CHOICES  # torch-free

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

def register_cli(sub: Any) -> None:
    run = sub.add_parser("run", help="evaluate a model on tasks and write one JSON result per task",
                         formatter_class=HelpFormatter, description=RUN_DESCRIPTION)
    run.add_argument("--model", required=True, help="model card name (see `evalkit list models`), open_clip:ARCH, hf:ORG/NAME (a Hugging Face "
                     "CLIP or SigLIP model, or hf:/folder saved with save_pretrained) or a plugin's model")
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
                     help="images per forward pass (default %(default)s). auto: on a CUDA device the largest batch that "
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
    run.add_argument("--transform", choices=TRANSFORM_CHOICES,
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
    run.add_argument("--no-records", action="store_true",
                     help="write no per-sample records (<task>.records.npz, which the statistics read) beside "
                     "each result, and remove an earlier run's")
    run.add_argument("--no-fingerprint", action="store_true",
                     help="do not hash the decoded samples in the data loader: the results record "
                     "data_fingerprint: null (see `evalkit data fingerprint` and docs/fingerprints.md)")
    run.add_argument("--ci-level", type=float, default=RunSpec.default("ci_level"), metavar="LEVEL",
                     help="the level of the interval every metric carries (default: %(default)s)")
    run.add_argument("--proportion-interval", choices=list(PROPORTION_METHODS),
                     default=RunSpec.default("proportion_interval"),
                     help="the interval of a proportion (top-1, top-5): Wilson's score interval or the exact "
                     "Clopper-Pearson one (default: %(default)s)")
    run.add_argument("--resamples", type=_positive_int, default=RunSpec.default("resamples"), metavar="B",
                     help="bootstrap resamples behind the other metrics' intervals (default: %(default)s)")
    run.add_argument("--cache-dir", help="feature/classifier cache folder, also holding generated data such as the "
                     "demo's video clips (default: $EVALKIT_CACHE, else ~/.cache/evalkit)")
    run.add_argument("--no-cache", action="store_true", help="do not read or write the on-disk cache")
    run.add_argument("--skip-existing", action="store_true", help="skip tasks that already have a result")
    run.add_argument("--download", action="store_true", help="before any weights are read, fetch each task's missing "
                     "data from the Hugging Face Hub into --data-root, verified (as `evalkit data get --tasks T`: the "
                     "source its task file names; launched with several processes, local rank 0 of each node fetches)")
    run.add_argument("--task-dir", action="append", default=None, help=TASK_DIR_HELP)
    run.add_argument("--quiet", action="store_true", help="no progress (by default: bars on a terminal; in a log "
                     "or a pipe, a line when a phase has run 2 s, one every 30 s, and one when it ends)")
    run.set_defaults(func=cmd_run)
