"""``evalkit cache``: what the feature cache holds, how much room it takes, pruning and checking it.

    evalkit cache ls [--json]                      entries grouped by model, kind, view and dataset
    evalkit cache du [--json]                      total, per kind and per model
    evalkit cache prune --older-than 30d | --model NAME | --all  [--dry-run]
    evalkit cache verify [--delete]                read every entry and check its checksum

Every action takes ``--cache-dir`` (default: ``$EVALKIT_CACHE``, else ``~/.cache/evalkit``). Only
entry files (``<kind>/<xx>/<key>.pt``) are listed, counted or removed; anything else under the
folder (the demo's generated clips, say) is left alone and reported by ``du`` as other files.
``prune --older-than`` goes by an entry's last use (a run that reads an entry renews it);
``--model`` matches the model name or a fingerprint (or its first 6+ characters) recorded in the
entry, and combines with ``--older-than``. ``verify`` exits 1 when any entry is bad (damaged or of
the old format, which has no checksum); ``--delete`` removes those entries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from evalkit.cli.help import HelpFormatter

__all__ = ["register_cli", "cmd_ls", "cmd_du", "cmd_prune", "cmd_verify", "group_entries", "format_age",
           "format_size"]


def format_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _duration(value: str) -> float:
    from evalkit.features.cache import parse_duration

    try:
        return parse_duration(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _root(args: argparse.Namespace) -> Path:
    from evalkit.features.cache import default_cache_dir

    return Path(args.cache_dir) if args.cache_dir else default_cache_dir()


def _model_label(model: str, fingerprint: str) -> str:
    return f"{model} ({fingerprint[:8]})" if fingerprint else model


def group_entries(entries: list[Any], now: float | None = None) -> list[dict[str, Any]]:
    """Entries (:class:`evalkit.features.cache.EntryInfo`) grouped by (model, fingerprint, kind, view,
    dataset), with count, bytes, the oldest entry's creation and the latest use."""
    now = time.time() if now is None else now
    groups: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    for e in entries:
        k = (e.model, e.fingerprint, e.kind, e.view, e.dataset)
        g = groups.setdefault(k, {"model": e.model, "fingerprint": e.fingerprint, "kind": e.kind, "view": e.view,
                                  "dataset": e.dataset, "entries": 0, "bytes": 0, "oldest_created": e.created,
                                  "last_used": e.used})
        g["entries"] += 1
        g["bytes"] += e.size
        g["oldest_created"] = min(g["oldest_created"], e.created)
        g["last_used"] = max(g["last_used"], e.used)
    out = sorted(groups.values(), key=lambda g: (g["model"], g["fingerprint"], g["kind"], g["view"], g["dataset"]))
    for g in out:
        g["age_s"] = round(now - g["oldest_created"], 1)
        g["unused_s"] = round(now - g["last_used"], 1)
    return out


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = [(lambda s, w: s.rjust(w)) if i in right else (lambda s, w: s.ljust(w)) for i in range(len(header))]
    return "\n".join("  ".join(f(c, w) for f, c, w in zip(fmt, row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


def cmd_ls(args: argparse.Namespace) -> int:
    from evalkit.features.cache import scan, temp_files

    root = _root(args)
    entries = list(scan(root))
    groups = group_entries(entries)
    temps = temp_files(root)
    total = sum(e.size for e in entries)
    if args.json:
        print(json.dumps({"cache_dir": str(root), "entries": len(entries), "bytes": total, "groups": groups,
                          "damaged_headers": sum(e.format == 0 for e in entries), "temporary_files": len(temps)},
                         indent=2))
        return 0
    if not entries:
        print(f"{root}: no entries")
        return 0
    rows = [[_model_label(g["model"], g["fingerprint"]), g["kind"], _cut(g["view"], 40), _cut(g["dataset"], 50),
             str(g["entries"]), format_size(g["bytes"]), format_age(g["age_s"]), format_age(g["unused_s"])]
            for g in groups]
    print(_table(["MODEL", "KIND", "VIEW", "DATASET", "ENTRIES", "SIZE", "AGE", "UNUSED"], rows, {4, 5, 6, 7}))
    notes = [f"{len(entries)} entries, {format_size(total)} in {root}"]
    if n := sum(e.format == 0 for e in entries):
        notes.append(f"{n} with a damaged header (evalkit cache verify)")
    if temps:
        notes.append(f"{len(temps)} temporary files (writes in progress, or left by a run that died)")
    print("; ".join(notes))
    return 0


def cmd_du(args: argparse.Namespace) -> int:
    from evalkit.features.cache import scan, temp_files

    root = _root(args)
    entries = list(scan(root))
    temps = temp_files(root)
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_model: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in entries:
        for table, k in ((by_kind, e.kind), (by_model, _model_label(e.model, e.fingerprint))):
            table[k][0] += 1
            table[k][1] += e.size
    total = sum(e.size for e in entries)
    temp_bytes = sum(_size(p) for p in temps)
    known = {str(e.path) for e in entries} | {str(p) for p in temps}
    other = sum(_size(Path(d) / f) for d, _, files in os.walk(root) for f in files
                if str(Path(d) / f) not in known)
    if args.json:
        print(json.dumps({"cache_dir": str(root), "entries": len(entries), "bytes": total,
                          "by_kind": {k: {"entries": n, "bytes": b} for k, (n, b) in sorted(by_kind.items())},
                          "by_model": {k: {"entries": n, "bytes": b} for k, (n, b) in sorted(by_model.items())},
                          "temporary_files": {"files": len(temps), "bytes": temp_bytes}, "other_bytes": other},
                         indent=2))
        return 0
    print(f"{format_size(total)}  {len(entries)} entries  {root}")
    for title, table in (("by kind", by_kind), ("by model", by_model)):
        if table:
            print(f"{title}:")
            rows = [[f"  {k}", str(n), format_size(b)] for k, (n, b) in sorted(table.items(), key=lambda kv: -kv[1][1])]
            print(_table(["", "ENTRIES", "SIZE"], rows, {1, 2}).split("\n", 1)[1])
    if temps:
        print(f"temporary files: {len(temps)}, {format_size(temp_bytes)}")
    if other:
        print(f"other files under the folder (not cache entries): {format_size(other)}")
    return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _matches_model(entry: Any, name: str) -> bool:
    fp = entry.fingerprint
    return entry.meta.get("model") == name or (bool(fp) and (fp == name or (len(name) >= 6 and fp.startswith(name))))


def _remove_empty_dirs(root: Path) -> None:
    for kind_dir in [p for p in root.iterdir() if p.is_dir()]:
        for sub in [p for p in kind_dir.iterdir() if p.is_dir() and len(p.name) == 2]:
            try:
                sub.rmdir()
            except OSError:
                pass  # not empty (or a writer just made it)


def cmd_prune(args: argparse.Namespace) -> int:
    from evalkit.features.cache import STALE_TEMP_SECONDS, scan, temp_files

    if args.all and (args.older_than is not None or args.model):
        print("evalkit: error: cache prune: --all removes everything; give it alone", file=sys.stderr)
        return 2
    if not (args.all or args.older_than is not None or args.model):
        print("evalkit: error: cache prune: say what to remove: --older-than 30d, --model NAME or --all",
              file=sys.stderr)
        return 2
    root = _root(args)
    now = time.time()
    entries = list(scan(root))
    chosen = [e for e in entries
              if args.all or ((args.older_than is None or now - e.used > args.older_than)
                              and (not args.model or _matches_model(e, args.model)))]
    temps: list[Path] = []
    if not args.model:  # temporary files carry no model; a stale one is a dead writer's
        limit = max(STALE_TEMP_SECONDS, args.older_than or 0.0)
        temps = [p for p in temp_files(root) if now - _mtime(p, now) > limit]
    if args.model and not any(_matches_model(e, args.model) for e in entries):
        short = " (a fingerprint prefix needs at least 6 characters)" if len(args.model) < 6 else ""
        print(f"note: --model {args.model} matches no model name or fingerprint in the cache{short}; "
              f"`evalkit cache ls` lists them", file=sys.stderr)
    size = sum(e.size for e in chosen)
    what = f"{len(chosen)} of {len(entries)} entries ({format_size(size)})"
    if args.dry_run:
        by_model: dict[str, int] = defaultdict(int)
        for e in chosen:
            by_model[_model_label(e.model, e.fingerprint)] += 1
        print(f"would remove {what}" + (f" and {len(temps)} stale temporary files" if temps else "")
              + "; nothing removed (--dry-run)")
        for model, n in sorted(by_model.items()):
            print(f"  {model}: {n}")
        return 0
    removed = 0
    for e in chosen:
        try:
            e.path.unlink()
            removed += 1
        except FileNotFoundError:
            pass  # removed meanwhile
    for p in temps:
        p.unlink(missing_ok=True)
    _remove_empty_dirs(root)
    left = len(entries) - removed
    print(f"removed {removed} entries ({format_size(size)})" + (f" and {len(temps)} stale temporary files" if temps
                                                                  else "") + f"; {left} entries remain in {root}")
    return 0


def _mtime(path: Path, default: float) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return default


def cmd_verify(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from evalkit.features.cache import check_entry, entry_paths

    root = _root(args)
    paths = list(entry_paths(root))
    bad: list[tuple[Path, str]] = []
    total = 0
    with tqdm(total=len(paths), desc="verify", unit="entry", disable=None if not args.quiet else True,
              dynamic_ncols=True, leave=False) as bar:
        for path in paths:
            total += _size(path)
            reason = check_entry(path)
            if reason is not None:
                bad.append((path, reason))
            bar.update(1)
    for path, reason in bad:
        print(f"BAD  {path}: {reason}")
    print(f"checked {len(paths)} entries ({format_size(total)}) in {root}: "
          + (f"{len(bad)} bad" if bad else "all good"))
    if bad and args.delete:
        for path, _ in bad:
            path.unlink(missing_ok=True)
        print(f"removed {len(bad)} bad entries (runs recompute them when next needed)")
    elif bad:
        print("rerun with --delete to remove them (a run also recomputes and replaces them when it meets them)")
    return 1 if bad else 0


def register_cli(subparsers: Any) -> None:
    cache = subparsers.add_parser("cache", help="list, size, prune and verify the feature cache",
                                  description=(__doc__ or "").replace("``", "`"), formatter_class=HelpFormatter)
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    def action(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
        p.add_argument("--cache-dir", help="the cache folder (default: $EVALKIT_CACHE, else ~/.cache/evalkit)")
        p.set_defaults(func=func)
        return p

    ls = action("ls", "entries grouped by model, kind, view and dataset, with count, size, age and last use",
                cmd_ls)
    ls.add_argument("--json", action="store_true", help="print the groups as JSON")
    du = action("du", "room taken: total, per kind and per model", cmd_du)
    du.add_argument("--json", action="store_true", help="print the figures as JSON")
    prune = action("prune", "remove entries: unused for a while, of one model, or all", cmd_prune)
    prune.add_argument("--older-than", type=_duration, metavar="DURATION",
                       help="entries not used (read or written) for this long: 30d, 12h, 90m, 45s")
    prune.add_argument("--model", metavar="NAME", help="entries of this model (name, or fingerprint)")
    prune.add_argument("--all", action="store_true", help="every entry")
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    verify = action("verify", "read every entry and check its checksum; exit 1 when any is bad", cmd_verify)
    verify.add_argument("--delete", action="store_true", help="remove the bad entries")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
