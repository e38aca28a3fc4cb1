"""``evalkit data check``: which datasets of a task list are on disk, in which layout, how many samples.

    evalkit data check --tasks eva27 --data-root /data

Per task: found / missing / error, the layout and folder used, the number of samples (counted
without decoding an image: file lists, annotation files, tar headers; a tar shard that is cut
short or has a corrupt header is an error naming the shard, never a smaller count) next to the size the
protocol expects (``protocol.expected_size`` in the task file) and the size Table 11 of
arXiv 2402.04252 prints (``protocol.table11_test_size``), the class count next to Table 11's
(``protocol.table11_classes``), and how many listed samples (annotation files, test lists) are not
on disk. A missing dataset
lists every folder looked in and the layout each would be read as. Exit status 0 when every task
was found and is readable, 1 otherwise (``--strict``: also when a count differs from the expected
size).
"""

# The command sits above the tasks layer because it resolves task and group names; checking one
# source spec is data-level and lives in evalkit.data.check (see DESIGN.md, "Layout").

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.cli.help import TASK_DIR_HELP, HelpFormatter
from evalkit.data.root import default_data_root
from evalkit.errors import EvalkitError, one_line

if TYPE_CHECKING:  # every command imports this module: the data sources load only for a data check
    from evalkit.data.check import TaskCheck

__all__ = ["register_cli", "cmd_check", "check_task", "check_tasks", "format_table", "cmd_fingerprint",
           "fingerprint_tasks", "format_fingerprints", "cmd_get", "get_tasks", "fetched_from"]


def samples_noun(spec: Any) -> str:
    """What a task's samples are (images, clips, clouds), as the kind of its view says."""
    from evalkit.views import view_kind  # not at the top: every command imports this module

    return view_kind(spec.view, spec.path or spec.name).noun


def check_task(spec: Any, data_root: str | Path | None) -> TaskCheck:
    """The data check of one resolved task (:class:`evalkit.tasks.spec.TaskSpec`). A task over
    several splits (``protocol.splits``) checks every split: the first that is not found or
    fails is the row; else the counts are summed and the row names each split's."""
    from evalkit.data.check import TaskCheck, check_source

    try:
        noun = samples_noun(spec)
    except EvalkitError as e:  # a view of no known kind
        return TaskCheck(spec.name, "error", message=one_line(e))

    def one(s: Any) -> TaskCheck:
        return check_source(spec.name, s.source, data_root, protocol=spec.protocol, classnames=spec.classnames,
                            base_dir=spec.base_dir, where=spec.path or spec.name, noun=noun)

    parts = spec.split_specs()
    if not parts:
        return one(spec)
    rows = [one(sub) for _, sub in parts]
    for k, r in enumerate(rows, start=1):
        if r.status != "found":
            r.message = f"split {k}: {r.message}"
            return r
    sizes = " + ".join(f"{r.samples or 0:,}" for r in rows)
    row = rows[0]
    row.samples = sum(r.samples or 0 for r in rows)
    row.listed_missing = sum(r.listed_missing or 0 for r in rows) or None
    if row.expected is not None:
        row.count = "ok" if row.samples == row.expected else "differs"
    row.message = "; ".join(m for m in [f"{len(rows)} splits: {sizes}",
                                         *(f"split {k}: {r.message}" for k, r in enumerate(rows, 1) if r.message)] if m)
    return row


def check_tasks(tasks: str, data_root: str | Path | None, task_dirs: list[str] | None = None) -> list[TaskCheck]:
    """``tasks``: comma-separated task or group names, aliases or ad-hoc ``wds:/path`` datasets."""
    from evalkit.tasks.spec import TaskIndex  # not evalkit.api: a data check needs no torch

    names = [t for t in tasks.split(",") if t.strip()]
    index = TaskIndex.load(extra=[Path(d) for d in task_dirs or ()])
    from evalkit.data.check import check_source

    root = default_data_root(data_root)
    rows = []
    for spec in index.resolve(names):
        rows.append(check_task(spec, root))
        train = spec.options.get("train_source")
        if isinstance(train, dict):  # a few-shot task's train split: a row of its own
            try:
                noun = samples_noun(spec)
            except EvalkitError:
                continue  # the task's own row says why
            rows.append(check_source(f"{spec.name} (train)", train, root, classnames=spec.classnames,
                                     base_dir=spec.base_dir, where=f"{spec.path or spec.name} (train_source)",
                                     noun=noun, protocol={"expected_size": spec.protocol.get("train_expected_size")}))
    return rows


def fetched_from(row: TaskCheck, data_root: str | Path | None) -> dict[str, Any] | None:
    """For a row found in a folder evalkit fetched: the data manifest's repo, revision and commit
    (:func:`evalkit.data.fetch.data_revision`); None for data from anywhere else."""
    from evalkit.data.fetch import data_revision

    if row.status != "found" or not row.path:
        return None
    return data_revision(data_root, {"path": row.path})


def format_table(rows: list[TaskCheck], data_root: str | Path | None = None) -> str:
    from tabulate import tabulate

    def fmt(n: int | None) -> str:
        return "—" if n is None else f"{n:,}"

    table = []
    for r in rows:
        where = r.path if r.status == "found" else r.message
        fetched = fetched_from(r, data_root)
        if fetched is not None:
            where += f" (fetched {fetched['repo']}@{str(fetched['commit'])[:10]})"
        table.append([r.task, r.status, r.layout, fmt(r.samples), fmt(r.expected), fmt(r.table11), fmt(r.classes),
                      fmt(r.table11_classes), r.count,
                      where + (f" ({r.message})" if r.status == "found" and r.message else "")])
    headers = ["task", "status", "layout", "samples", "expected", "Table 11 size", "classes", "Table 11 classes",
               "count", "path / problem"]
    return tabulate(table, headers=headers, tablefmt="github")


def cmd_check(args: argparse.Namespace) -> int:
    rows = check_tasks(args.tasks, args.data_root, args.task_dir)
    root = default_data_root(args.data_root)
    if args.json:
        print(json.dumps([{**asdict(r), "fetched": fetched_from(r, root)} for r in rows], indent=2))
    else:
        print(format_table(rows, root))
        found = sum(r.status == "found" for r in rows)
        differ = [r.task for r in rows if r.count == "differs"]
        missing = [r for r in rows if r.status == "missing"]
        if missing:
            print("\nmissing datasets: where each was looked for, and the layout accepted there")
            for r in missing:
                print(f"  {r.task}:")
                for folders, layout in r.looked or []:
                    print(f"    {' | '.join(folders)}\n        {layout}")
        print(f"\n{found}/{len(rows)} found" + (f"; sample count differs from the expected size: {', '.join(differ)}"
                                                  if differ else ""))
    bad = any(r.status != "found" for r in rows) or (args.strict and any(r.count == "differs" for r in rows))
    return 1 if bad else 0


FINGERPRINT_DOC = """Per task, without a model: its dataset's content fingerprint.

    evalkit data fingerprint --tasks eva27 --data-root /data [--json]

Every sample is decoded as a run decodes it (a video task: the frames of its sampler; a 3D task:
its point arrays) and hashed with its label (docs/fingerprints.md). Printed per task: N (the
samples listed), the classes (how many, the fewest and most samples of one class), the exact
duplicates (samples whose decoded content equals an earlier one's, labels ignored), the samples
that do not decode, and the root: an order-independent hash of every sample's decoded content and
label, the same whatever file format holds them (ImageFolder, WebDataset shards, a Hugging Face
dataset) and the ``data_fingerprint.root`` a complete run of the task records. ``--json``: the full
record per task (class counts, the undecodable samples with their reasons). Exit status 0 when
every task was fingerprinted, 1 otherwise (a missing dataset names the task; `evalkit data check`
says where it looked).
"""


def fingerprint_tasks(tasks: str, data_root: str | Path | None, task_dirs: list[str] | None = None, *,
                      frames: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Per task of ``tasks`` (comma-separated names, groups, ad-hoc ``wds:/path``): its
    :func:`evalkit.tasks.fingerprint.fingerprint_task` dict, or ``{"task", "error"}`` for a task
    whose data cannot be read."""
    from evalkit.api import resolve_tasks
    from evalkit.tasks.fingerprint import fingerprint_task

    root = default_data_root(data_root)
    rows: list[dict[str, Any]] = []
    for spec in resolve_tasks(tasks, task_dirs, frames=frames):
        try:
            rows.append(fingerprint_task(spec, root, progress=progress))
        except EvalkitError as e:
            rows.append({"task": spec.name, "error": _fingerprint_error(e, spec, root)})
    return rows


def _fingerprint_error(e: Exception, spec: Any, root: Path) -> str:
    """A task's fingerprint error, one line: a missing dataset the task can fetch ends, as `run`'s
    does, with its `evalkit data get` command; else with the `evalkit data check` command for the
    task as it was typed (an ad-hoc ``folder:/path``, not its generated name)."""
    import shlex

    from evalkit.data.sources import DatasetNotFound
    from evalkit.tasks.fetching import with_get_command
    from evalkit.tasks.spec import ADHOC_PREFIXES

    if isinstance(e, DatasetNotFound):
        fetchable = with_get_command(e, spec, root)
        if fetchable is not e:
            return one_line(fetchable)
    typed = str(spec.path or "")
    typed = typed if typed.split(":", 1)[0] in ADHOC_PREFIXES and ":" in typed else spec.name
    return (f"{one_line(e)} (`evalkit data check --tasks {shlex.quote(typed)}` lists where it looks and the layouts "
            f"it reads)")


def format_fingerprints(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    table = []
    for r in rows:
        if "error" in r:
            table.append([r["task"], "—", "—", "—", "—", "error (below)"])
            continue
        counts = list(r.get("class_counts", {}).values())
        if counts:
            classes = f"{len(counts):,} ({min(counts):,}–{max(counts):,} per class)"
        else:
            classes = f"{r['captions']:,} captions" if r.get("captions") else "—"
        table.append([r["task"], f"{r['samples']:,}", classes, f"{r['duplicates']:,}", f"{r['undecodable']:,}",
                      r["root"] or "— (incomplete)"])
        if isinstance(r.get("train"), dict):
            t = r["train"]
            tc = list(t.get("class_counts", {}).values())
            table.append([f"{r['task']} (train)", f"{t['samples']:,}",
                          f"{len(tc):,} ({min(tc):,}–{max(tc):,} per class)" if tc else "—",
                          f"{t['duplicates']:,}", f"{t['undecodable']:,}", t["root"] or "— (incomplete)"])
    headers = ["task", "N", "classes", "duplicates", "undecodable", "root"]
    text = tabulate(table, headers=headers, tablefmt="github")
    errors = [f"{r['task']}: {r['error']}" for r in rows if "error" in r]
    return text + ("\n\n" + "\n".join(errors) if errors else "")


def cmd_fingerprint(args: argparse.Namespace) -> int:
    rows = fingerprint_tasks(args.tasks, args.data_root, args.task_dir, frames=args.frames,
                             progress=not args.quiet)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_fingerprints(rows))
    return 1 if any("error" in r for r in rows) else 0


GET_DOC = """Fetch each task's data from the Hugging Face Hub into the data root, verified.

    evalkit data get --tasks imagenet,objectnet [--data-root DIR]     (default: $EVALKIT_DATA)

The source is the task file's ``fetch:`` block: clip_benchmark's WebDataset mirrors
(``clip-benchmark/wds_<name>``; only the split the task reads, with the mirror's class names and
templates), fetched with huggingface_hub (its cache, HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE) into
the folder the task's layout reads. Every file's size and hash, the shard count, the sample count
(the task's expected size) and the class count are checked before the data is put in place: a
mismatch names the shard or the count and nothing partial is ever read. A fetch that is cut off
resumes where it stopped; two at once (two jobs, two ranks) do not collide. The data root's
evalkit-manifest.json lists what was fetched, from which commit, with its counts: copy the data
root to a machine without network and nothing there needs one.

Per task: what was fetched, from where (repo@commit), its size and its counts. Data already in
place (fetched before, or in another layout the task reads) is not fetched again. A set that is
not on the Hub (the video sets, whose licences leave the download to each user; Birdsnap; the
whole-dataset Caltech-101, EuroSAT and RESISC45) prints where to get it, the layout evalkit reads
and the command that checks it afterwards (docs/data.md lists every task's source). The 3D test sets
(one zip in the BAAI/Uni3D model repo) are downloaded once and each task's folder unpacked. Exit status 0 when every
task's data is in place, 1 otherwise (a failed fetch, or a set to get by hand that is not there).
"""


def get_tasks(tasks: str, data_root: str | Path, task_dirs: list[str] | None = None, *, max_workers: int = 4,
              progress: bool = True, say: Any = None) -> list[Any]:
    """Per task of ``tasks`` (comma-separated names or groups, resolved as `evalkit data check`
    resolves them): the :class:`evalkit.tasks.fetching.FetchOutcome` of each of its sources. A
    task whose file names no source is an outcome of its own (found, or failed: nothing to fetch)."""
    from evalkit.tasks.fetching import FetchItem, FetchOutcome, fetch_task, located
    from evalkit.tasks.spec import TaskIndex

    names = [t for t in tasks.split(",") if t.strip()]
    index = TaskIndex.load(extra=[Path(d) for d in task_dirs or ()])
    out: list[Any] = []
    unreachable: list[BaseException] = []  # once the Hub cannot be reached, the other fetches are not tried
    for spec in index.resolve(names):
        if not spec.fetch:
            item = FetchItem(spec.name, None, spec.source, "test", None, None, None, None)
            try:
                where = located(item, data_root)
            except EvalkitError as e:
                where, why = None, one_line(e)
            else:
                why = "not found"
            if where is not None:
                out.append(FetchOutcome(item, "found", f"{spec.name}: found at {where} (its task file names no "
                                                       f"source to fetch from)"))
            else:
                out.append(FetchOutcome(item, "failed", f"{spec.name}: {why}, and its task file ({spec.path}) names "
                                                        f"no source to fetch from (no fetch: block); `evalkit data "
                                                        f"check --tasks {spec.name}` lists the layouts it reads"))
            continue
        out.extend(fetch_task(spec, data_root, max_workers=max_workers, progress=progress, say=say,
                              unreachable=unreachable))
    return out


def cmd_get(args: argparse.Namespace) -> int:
    from evalkit.data.fetch import DataRootError

    root = default_data_root(args.data_root)
    if root is None:
        raise DataRootError("no data root to fetch into: pass --data-root DIR or set $EVALKIT_DATA")
    outcomes = get_tasks(args.tasks, root, args.task_dir, max_workers=args.max_workers, progress=not args.quiet)
    for o in outcomes:
        print(o.line, flush=True)
    bad = [o for o in outcomes if not o.ok]
    manual = [o for o in bad if o.status == "manual"]
    failed = [o for o in bad if o.status != "manual"]
    summary = f"\n{len(outcomes) - len(bad)}/{len(outcomes)} in place under {root}"
    if manual:
        summary += f"; to get by hand: {', '.join(o.item.task for o in manual)}"
    if failed:
        summary += f"; failed: {', '.join(o.item.task for o in failed)} (run the same command again to resume)"
    print(summary)
    return 1 if bad else 0


def _workers_arg(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return n


def register_cli(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="fetch and inspect datasets (evalkit data get / check / fingerprint)")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="per task: found / missing, layout, sample count vs the expected and Table 11 sizes",
        description=__doc__, formatter_class=HelpFormatter)
    check.add_argument("--tasks", required=True, help="comma-separated task or group names (e.g. eva27)")
    check.add_argument("--data-root", help="folder under which the tasks look for their datasets "
                       "(default: $EVALKIT_DATA)")
    check.add_argument("--task-dir", action="append", default=None, help=TASK_DIR_HELP)
    check.add_argument("--json", action="store_true", help="one JSON record per task instead of the table")
    check.add_argument("--strict", action="store_true", help="also exit 1 when a sample count differs from the expected size")
    check.set_defaults(func=cmd_check)
    fp = actions.add_parser(
        "fingerprint", help="per task, without a model: N, class counts, duplicates, undecodable samples and "
        "the content root (the same for the same images in any file format)",
        description=FINGERPRINT_DOC, formatter_class=HelpFormatter)
    fp.add_argument("--tasks", required=True, help="comma-separated task or group names (e.g. eva27)")
    fp.add_argument("--data-root", help="folder under which the tasks look for their datasets "
                    "(default: $EVALKIT_DATA)")
    fp.add_argument("--task-dir", action="append", default=None, help=TASK_DIR_HELP)
    fp.add_argument("--frames", metavar="SAMPLER", help="video tasks: the frame sampler whose frames are hashed "
                    "(default: the task's own; as `evalkit run --frames`)")
    fp.add_argument("--json", action="store_true", help="the full record per task (class counts, undecodable "
                    "samples) as JSON instead of the table")
    fp.add_argument("--quiet", action="store_true", help="no progress bars")
    fp.set_defaults(func=cmd_fingerprint)
    get = actions.add_parser(
        "get", help="fetch each task's data from the Hugging Face Hub into the data root, verified (or say where "
        "to get a set the Hub does not mirror)", description=GET_DOC, formatter_class=HelpFormatter)
    get.add_argument("--tasks", required=True, help="comma-separated task or group names (e.g. imagenet,objectnet)")
    get.add_argument("--data-root", help="folder the data goes into, in the layout the tasks read "
                     "(default: $EVALKIT_DATA)")
    get.add_argument("--task-dir", action="append", default=None, help=TASK_DIR_HELP)
    get.add_argument("--max-workers", type=_workers_arg, default=4, metavar="N",
                     help="files downloaded at once (default %(default)s: the Hub limits requests per client)")
    get.add_argument("--quiet", action="store_true", help="no progress bar or step lines (the per-task lines "
                     "are still printed)")
    get.set_defaults(func=cmd_get)
