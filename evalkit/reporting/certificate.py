"""Reproduction certificates: one JSON per run that binds its numbers, by hashes, to the weights,
data, code, environment and protocol that produced them, and the check that re-hashes them.

``evalkit certify --model M [--variant V]`` (:func:`certify`) writes
``<output_dir>/certificates/<model>.json`` (the default variant, ``fp32`` with the card's weights)
or ``<output_dir>/certificates/<model>/<variant>.json``, from the run's results under
``<output_dir>/runs/<model>/[<variant>/]``:

* ``weights``: the path the results name (``evalkit.weights``) and every file under it, each with
  its size and SHA-256 (:func:`evalkit.filehash.hash_tree`: all regular files of a folder, links
  followed, so a Hugging Face hub snapshot is hashed by content; digests cached per path, size,
  mtime, ctime and inode, so a 36 GB checkpoint is read once);
* ``code`` (evalkit version, git commit, dirty flag) and ``environment`` (Python, platform, torch,
  CUDA, cuDNN, GPUs, driver, key libraries), as the run recorded them, not as they are now;
* per task: the result file and its SHA-256, the protocol (task version, the SHA-256 of the
  templates and of the class names the classifier was built from, the view, precision, world
  size), the data's content fingerprint (``evalkit.data_fingerprint``), each per-sample records
  file's SHA-256, the metrics, their intervals and the verdicts against the claims
  (:func:`evalkit.reporting.report.verified_table`);
* ``warnings``: what could not be bound (a result written before fingerprints, weights that are
  not a local path, results of one run that disagree on their code or environment);
* ``sha256``: its own hash, over the canonical JSON (keys sorted, no whitespace, ASCII:
  :func:`evalkit.filehash.canonical_json`) of everything else.

:func:`read_certificate` checks that own hash (a hand-edited or corrupt file is a
:class:`CertificateError` naming it); :func:`verify_certificate` re-hashes whatever is present —
weights, records, results, data — and returns one :class:`Check` per item: ``match``,
``differs``, ``missing`` or ``unchecked``. A file no longer at its recorded path is looked for by
size and SHA-256 under the weights folder, the results folder and any ``search`` folders, and
matches as ``moved``.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.filehash import canonical_json, file_sha256, hash_tree, tree_files
from evalkit.results import (
    DEFAULT_VARIANT,
    SIDECAR_JSON_SUFFIXES,
    TaskResult,
    atomic_write_text,
    read_result,
    result_variant,
    safe_name,
)

__all__ = ["CERTIFICATE_VERSION", "FOLDER", "STATUSES", "CertificateError", "Check", "certificate_path", "certify",
           "default_output_dir", "read_certificate", "summary", "verify_certificate"]

CERTIFICATE_VERSION = 1
FOLDER = "certificates"
STATUSES = ("match", "differs", "missing", "unchecked")

#: the result keys that say how a sample became an embedding (views name their own, evalkit.views)
VIEW_KEYS = ("transform", "transforms_run", "best_transform", "frame_sampler", "frames", "cloud_view", "npoints",
             "depth_views", "depth_resolution", "depth_preset", "depth_render", "image_processor")
CODE_KEYS = ("evalkit_version", "git_commit", "git_dirty")


class CertificateError(EvalkitError, ValueError):
    """A certificate that cannot be made (no results) or trusted (not JSON, its own hash does not
    match); the message names the file."""


@dataclass(frozen=True)
class Check:
    """One line of :func:`verify_certificate`: what was checked (``weights config.json``,
    ``records runs/m/t.records.npz``, ``result runs/m/t.json``, ``data t``), its status (one of
    :data:`STATUSES`) and why."""

    what: str
    status: str
    detail: str = ""
    path: str | None = None  #: where the file checked is now (None: not found, or not a file)


# ----------------------------------------------------------------------------- paths and hashes


def certificate_path(output_dir: str | Path, model: str, variant: str | None = None) -> Path:
    """``<output_dir>/certificates/<model>.json`` for the default variant, else
    ``<output_dir>/certificates/<model>/<variant>.json`` (as results are laid out)."""
    folder = Path(output_dir) / FOLDER
    if variant is None or variant == DEFAULT_VARIANT:
        return folder / f"{safe_name(model)}.json"
    return folder / safe_name(model) / f"{safe_name(variant)}.json"


def default_output_dir(path: str | Path) -> Path | None:
    """The results folder a certificate sits in (the parent of its ``certificates/`` folder), or
    None when it is somewhere else."""
    for parent in Path(path).resolve().parents:
        if parent.name == FOLDER:
            return parent.parent
    return None


def _own_hash(cert: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in cert.items() if k != "sha256"})).hexdigest()


def _sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plain(value: Any) -> Any:
    """``value`` as strict JSON: NaN and infinities as None, tuples as lists, numpy scalars as Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy / pandas scalars
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is not None and not isinstance(value, (str, int, float, bool)):
        try:
            import pandas as pd

            if pd.isna(value):
                return None
        except (TypeError, ValueError):
            pass
        return str(value)
    return value


# ----------------------------------------------------------------------------- weights


def _hub_folder(uri: str) -> tuple[Path | None, str]:
    """``hf://ORG/NAME[@REV][/FILE]`` -> (the snapshot folder or file in the local hub cache, or
    None; the repository)."""
    from evalkit.models.hub import hub_cache_dir

    rest = uri[len("hf://"):]
    repo, _, tail = rest.partition("@")
    if tail:
        revision, _, file = tail.partition("/")
    else:
        parts = rest.split("/")
        repo, revision, file = "/".join(parts[:2]), "", "/".join(parts[2:])
    base = hub_cache_dir() / f"models--{repo.replace('/', '--')}"
    if not revision:
        try:
            revision = (base / "refs" / "main").read_text().strip()
        except OSError:
            return None, repo
    folder = base / "snapshots" / revision
    found = folder / file if file else folder
    return (found if found.exists() else None), repo


def local_weights(weights: str) -> Path | None:
    """The local file or folder a result's ``evalkit.weights`` names: a path, or an ``hf://`` URI
    found in the Hugging Face cache; None for anything else (a pretrained tag, ``random``)."""
    main = weights.split(" + text ", 1)[0].strip()  # a point tower paired with a text tower: the point tower's
    if main.startswith("hf://"):
        return _hub_folder(main)[0]
    path = Path(main).expanduser()
    return path if main and path.exists() else None


def _weights_section(weights: str, progress: bool, warnings: list[str]) -> dict[str, Any]:
    local = local_weights(weights)
    if local is None:
        warnings.append(f"weights {weights!r}: not a file or folder on this machine; no weight file is hashed")
        return {"path": weights, "kind": None, "files": []}
    files = hash_tree(local, progress=progress)
    if " + text " in weights:
        warnings.append(f"weights {weights!r}: only the first model's files are hashed, not the text tower's")
    out: dict[str, Any] = {"path": weights, "kind": "folder" if local.is_dir() else "file",
                           "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files]}
    if str(local) != weights:
        out["local"] = str(local)
    return out


# ----------------------------------------------------------------------------- certify


def _results(output_dir: Path, model: str, variant: str) -> list[tuple[Path, TaskResult]]:
    root = output_dir / "runs" / safe_name(model)
    found: list[tuple[Path, TaskResult]] = []
    variants: set[str] = set()
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        if path.name.endswith(SIDECAR_JSON_SUFFIXES):
            continue
        result = read_result(path)
        if result.model != model and safe_name(result.model) != safe_name(model):
            continue
        variants.add(result_variant(result))
        if result_variant(result) == variant:
            found.append((path, result))
    if not found:
        others = f" (variants there: {', '.join(sorted(variants))}; --variant picks one)" if variants else ""
        raise CertificateError(f"{root}: no results of {model} [{variant}] to certify{others}")
    return found


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A dict's leaves by dotted key (``libraries.numpy``); anything else as itself under ``prefix``."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(_plain(value), sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _agreed(values: dict[str, Any], what: str, warnings: list[str]) -> Any:
    """The first result's value; when the results do not all agree, one warning line naming each
    field that differs (dicts by dotted key) and which result holds which value, results named
    relative to their common folder: ``environment differs between results in runs/m: torch (2.1 in
    a.json; 2.2 in b.json); missing in c.json: cuda, gpus, libraries``."""
    distinct = {canonical_json(_plain(v)) for v in values.values()}
    if len(distinct) > 1:
        common = posixpath.commonpath([posixpath.dirname(n) for n in values]) if len(values) > 1 else ""
        short = {n: posixpath.relpath(n, common) if common else n for n in values}
        flat = {n: _flat(v) if v is not None else {} for n, v in values.items()}
        differ, missing = [], {}
        for key in sorted({k for f in flat.values() for k in f}):
            groups: dict[str, list[str]] = {}
            absent = tuple(short[n] for n, f in flat.items() if key not in f)
            for n, f in flat.items():
                if key in f:
                    groups.setdefault(_shown(f[key]), []).append(short[n])
            if absent:
                top = key.split(".")[0] if key else what
                missing.setdefault(absent, [])
                if top not in missing[absent]:
                    missing[absent].append(top)
            if len(groups) > 1:
                which = "; ".join(f"{v} in {', '.join(n)}" for v, n in groups.items())
                differ.append(f"{key} ({which})" if key else which)
        said = differ[:8] + ([f"and {len(differ) - 8} more field(s)"] if len(differ) > 8 else [])
        said += [f"missing in {', '.join(files)}: {', '.join(keys)}" for files, keys in missing.items()]
        where = f" in {common}" if common else ""
        warnings.append(f"{what} differs between results{where}: " + "; ".join(said))
    return next(iter(values.values())) if values else None


def _verdicts(output_dir: Path, claims: Any, model: str, variant: str) -> dict[str, list[dict[str, Any]]]:
    from evalkit.reporting.report import verified_table

    label = model if variant == DEFAULT_VARIANT else f"{model} [{variant}]"
    table = verified_table(output_dir, claims, model=model)
    out: dict[str, list[dict[str, Any]]] = {}
    for row in table[(table["model"] == label) & table["claimed"].notna()].to_dict("records"):
        out.setdefault(str(row["task"]), []).append(_plain({
            "metric": row["metric"], "transform": row["transform"], "protocol": row["protocol"],
            "claimed": row["claimed"], "verified": row["verified"], "status": row["status"],
            "p_holm": row["p_holm"]}))
    return out


def _task_entry(path: Path, result: TaskResult, output_dir: Path, verdicts: dict[str, list[dict[str, Any]]],
                warnings: list[str]) -> dict[str, Any]:
    ev = result.evalkit
    rel = path.relative_to(output_dir).as_posix()
    fingerprint = ev.get("data_fingerprint")
    if fingerprint is None:
        warnings.append(f"{rel}: no data fingerprint (a result written before evalkit recorded them, or by a run "
                        f"with --no-fingerprint): its data is not bound; run the task again without "
                        f"--no-fingerprint, then certify again, to bind it")
    elif not fingerprint.get("complete", False) or fingerprint.get("root") is None:
        warnings.append(f"{rel}: the data fingerprint is incomplete ({fingerprint.get('hashed')} of "
                        f"{fingerprint.get('samples')} samples hashed: a --limit run, or features an older evalkit "
                        f"cached without digests): its data is not bound as a whole; run the task again without "
                        f"--limit (cached features cost no forward: their samples are read and hashed, and the "
                        f"cache keeps the digests), then certify again, to bind it")
    if ev.get("family") == "classification" and ("templates_sha256" not in ev or "classnames_sha256" not in ev):
        warnings.append(f"{rel}: the templates and class names used are not recorded (a result written before "
                        f"evalkit recorded them)")
    records = []
    rec = ev.get("records") or {}
    recorded = dict(zip(rec.get("files") or [], rec.get("sha256") or [], strict=False))
    for name in rec.get("files") or []:
        file = path.parent / name
        rel_file = file.relative_to(output_dir).as_posix()
        if not file.is_file():
            warnings.append(f"{rel_file}: records file named by {rel} is missing")
            records.append({"file": rel_file, "size": None, "sha256": None})
            continue
        sha = file_sha256(file)
        if name in recorded and recorded[name] != sha:
            warnings.append(f"{rel_file}: changed since the run wrote it (sha256 {sha[:12]}…, the result says "
                            f"{str(recorded[name])[:12]}…)")
        records.append({"file": rel_file, "size": file.stat().st_size, "sha256": sha})
    return {
        "task": result.dataset,
        "result_file": rel,
        "result_size": path.stat().st_size,
        "result_sha256": _sha256_bytes(path),
        "task_file": ev.get("task_file"),
        "task_version": ev.get("task_version"),
        "family": ev.get("family"),
        "templates_sha256": ev.get("templates_sha256"),
        "classnames_sha256": ev.get("classnames_sha256"),
        "view": {k: ev[k] for k in VIEW_KEYS if k in ev},
        "precision": ev.get("precision"),
        "world_size": ev.get("world_size"),
        "limit": ev.get("limit"),
        "samples": ev.get("samples"),
        "evaluated": ev.get("evaluated"),
        "data_fingerprint": fingerprint,
        **_split_fingerprints(ev, rel, warnings),
        "records": records,
        "metrics": result.metrics,
        "ci": ev.get("ci") or {},
        "verdicts": verdicts.get(result.dataset, []),
    }


def _split_fingerprints(ev: dict[str, Any], rel: str, warnings: list[str]) -> dict[str, Any]:
    """The fingerprints a result records of its task's other splits (``train_data_fingerprint`` of
    a few-shot or linear-probe task), by the same key. A task over several splits
    (``protocol.splits``) records split 1's train fingerprint only: bound as None, with a warning."""
    out: dict[str, Any] = {}
    for key in sorted(k for k in ev if k.endswith("_data_fingerprint") and k != "data_fingerprint"):
        split = key[: -len("_data_fingerprint")]
        fp = ev[key]
        if len(ev.get("per_split") or []) > 1:
            warnings.append(f"{rel}: its {split} split's fingerprint is recorded for split 1 of "
                            f"{len(ev['per_split'])} only: the {split} data is not bound")
            fp = None
        elif fp is None:
            warnings.append(f"{rel}: no {split} data fingerprint (a run with --no-fingerprint): the {split} data "
                            f"is not bound")
        elif not fp.get("complete", False) or fp.get("root") is None:
            warnings.append(f"{rel}: the {split} data fingerprint is incomplete ({fp.get('hashed')} of "
                            f"{fp.get('samples')} samples hashed): the {split} data is not bound as a whole")
        out[key] = fp
    return out


def build_certificate(output_dir: str | Path, model: str, variant: str | None = None, claims: Any = None, *,
                      progress: bool = False) -> dict[str, Any]:
    """The certificate of ``model``'s run ``variant`` (default: fp32 with the card's weights) under
    ``output_dir``, with its own ``sha256``; nothing is written."""
    output_dir = Path(output_dir)
    variant = variant or DEFAULT_VARIANT
    if not output_dir.is_dir():
        raise CertificateError(f"results folder {output_dir}: no such folder (--output-dir: the folder "
                               f"`evalkit run --output-dir` wrote to)")
    found = _results(output_dir, model, variant)
    warnings: list[str] = []
    names = {p.relative_to(output_dir).as_posix(): r for p, r in found}
    weights = _agreed({n: r.evalkit.get("weights") for n, r in names.items()}, "weights", warnings)
    code = {k: _agreed({n: r.evalkit.get(k) for n, r in names.items()}, k, warnings) for k in CODE_KEYS}
    envs = {n: r.evalkit.get("environment") for n, r in names.items()}
    old = [n for n, e in envs.items() if e is None]
    if old:
        warnings.append(f"no environment recorded in {', '.join(old)} (results written before evalkit recorded "
                        f"it): their Python and torch only")
        for n in old:
            envs[n] = {"python": names[n].evalkit.get("python"), "torch": names[n].evalkit.get("torch")}
    environment = _agreed(envs, "environment", warnings)
    verdicts = _verdicts(output_dir, claims, model, variant)
    tasks = [_task_entry(p, r, output_dir, verdicts, warnings) for p, r in found]
    fingerprints = {n: r.evalkit.get("fingerprint") for n, r in names.items()}
    cert: dict[str, Any] = _plain({
        "certificate_version": CERTIFICATE_VERSION,
        "model": found[0][1].model,
        "variant": variant,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "weights": {**_weights_section(str(weights or ""), progress, warnings),
                    "fingerprint": _agreed(fingerprints, "model fingerprint", warnings)},
        "code": code,
        "environment": environment,
        "tasks": tasks,
        "warnings": warnings,
    })
    cert["sha256"] = _own_hash(cert)
    return cert


def certify(output_dir: str | Path, model: str, variant: str | None = None, claims: Any = None, *,
            progress: bool = False) -> Path:
    """Write the certificate of ``model``'s run ``variant`` (:func:`build_certificate`) atomically to
    :func:`certificate_path`, and return that path."""
    cert = build_certificate(output_dir, model, variant, claims, progress=progress)
    path = certificate_path(output_dir, cert["model"], cert["variant"])
    atomic_write_text(path, json.dumps(cert, indent=2, ensure_ascii=False) + "\n")
    return path


def summary(cert: dict[str, Any]) -> str:
    """One line: the run, what it binds, its verdicts and its own hash."""
    tasks = cert.get("tasks") or []
    weights = (cert.get("weights") or {}).get("files") or []
    size = sum(int(f.get("size") or 0) for f in weights)
    fingerprinted = sum(1 for t in tasks if (t.get("data_fingerprint") or {}).get("root"))
    records = sum(len(t.get("records") or []) for t in tasks)
    counts: dict[str, int] = {}
    for t in tasks:
        for v in t.get("verdicts") or []:
            counts[str(v.get("status"))] = counts.get(str(v.get("status")), 0) + 1
    verdicts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no claims"
    warned = len(cert.get("warnings") or [])
    return (f"{cert.get('model')} [{cert.get('variant')}]: {len(tasks)} task(s), {len(weights)} weight file(s) "
            f"({size / 1e6:.1f} MB), {fingerprinted}/{len(tasks)} data fingerprint(s), {records} records file(s); "
            f"verdicts: {verdicts}; " + (f"{warned} warning(s); " if warned else "")
            + f"sha256 {str(cert.get('sha256'))[:16]}…")


# ----------------------------------------------------------------------------- read and verify


def read_certificate(path: str | Path) -> dict[str, Any]:
    """The certificate at ``path``, after checking its own hash: a file that is not JSON, not a
    certificate, or whose content no longer gives its ``sha256`` (edited by hand, corrupted) is a
    :class:`CertificateError` naming the file."""
    path = Path(path)
    try:
        cert = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CertificateError(f"certificate {path}: cannot be read: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CertificateError(f"certificate {path}: not valid JSON ({e}): corrupt or not a certificate") from None
    if not isinstance(cert, dict) or "certificate_version" not in cert or not isinstance(cert.get("sha256"), str):
        raise CertificateError(f"certificate {path}: not an evalkit certificate (no certificate_version or sha256)")
    if cert["certificate_version"] != CERTIFICATE_VERSION:
        raise CertificateError(f"certificate {path}: certificate_version {cert['certificate_version']!r}; this "
                               f"evalkit reads version {CERTIFICATE_VERSION}")
    try:
        actual = _own_hash(cert)
    except ValueError as e:  # NaN or infinity: never in a certificate evalkit wrote
        raise CertificateError(f"certificate {path}: {e}: edited by hand or corrupt") from None
    if actual != cert["sha256"]:
        raise CertificateError(f"certificate {path}: its own hash does not match its content (recorded "
                               f"{cert['sha256'][:16]}…, computed {actual[:16]}…): the file was edited or corrupted "
                               f"after it was written; certify the run again")
    return cert


class _Finder:
    """Files under some folders, by size, walked once: where a moved file may be now."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = [r for r in dict.fromkeys(Path(r) for r in roots) if r.exists()]
        self._by_size: dict[int, list[Path]] | None = None

    def find(self, size: int | None, sha256: str | None) -> Path | None:
        if size is None or sha256 is None:
            return None
        if self._by_size is None:
            self._by_size = {}
            for root in self.roots:
                for p in tree_files(root):
                    try:
                        self._by_size.setdefault(p.stat().st_size, []).append(p)
                    except OSError:
                        continue
        for p in self._by_size.get(size, []):
            try:
                if file_sha256(p) == sha256:
                    return p
            except OSError:
                continue
        return None


def _check_file(what: str, path: Path | None, size: int | None, sha256: str | None, finder: _Finder) -> Check:
    if sha256 is None:
        return Check(what, "unchecked", "the certificate has no hash for it (it was missing when certified)")
    if path is not None and path.is_file():
        now_size = path.stat().st_size
        if size is not None and now_size != size:
            return Check(what, "differs", f"{path}: {now_size:,} bytes, certified {size:,}", str(path))
        now = file_sha256(path)
        if now != sha256:
            return Check(what, "differs", f"{path}: sha256 {now[:16]}…, certified {sha256[:16]}…", str(path))
        return Check(what, "match", "", str(path))
    moved = finder.find(size, sha256)
    if moved is not None:
        return Check(what, "match", f"moved: {moved}", str(moved))
    where = ", ".join(map(str, finder.roots))
    return Check(what, "missing", (f"{path}: not found" if path is not None else "not found on this machine")
                 + (f", nor a file of its size and hash under {where}" if where else ""))


def _weights_checks(cert: dict[str, Any], weights: str | Path | None, finder: _Finder) -> list[Check]:
    section = cert.get("weights") or {}
    files = section.get("files") or []
    if not files:
        return [Check("weights", "unchecked", f"the certificate hashes no weight file ({section.get('path')!r} was "
                      f"not a local file or folder when certified)")]
    base = Path(weights).expanduser() if weights is not None else local_weights(str(section.get("path") or ""))
    if base is None and section.get("local"):
        base = Path(section["local"])
    checks = []
    for f in files:
        if base is None:
            path = None
        elif section.get("kind") == "file":
            path = base / f["path"] if base.is_dir() else base
        else:
            path = base / f["path"]
        checks.append(_check_file(f"weights {f['path']}", path, f.get("size"), f.get("sha256"), finder))
    if base is not None and base.is_dir() and section.get("kind") == "folder":
        listed = {f["path"] for f in files}
        for p in tree_files(base):
            rel = p.relative_to(base).as_posix()
            if rel not in listed:
                checks.append(Check(f"weights {rel}", "differs", f"{p}: a file the certificate does not list"))
    return checks


_NO_FOLDER = ("no results folder: the certificate is not in a certificates/ folder; --output-dir names the "
              "results folder, or --search a folder where its files may be")


def _result_check(task: dict[str, Any], output_dir: Path | None, finder: _Finder) -> Check:
    what = f"result {task['result_file']}"
    if output_dir is None and not finder.roots:
        return Check(what, "unchecked", _NO_FOLDER)
    path = output_dir / task["result_file"] if output_dir is not None else None
    check = _check_file(what, path, task.get("result_size"), task.get("result_sha256"), finder)
    if check.path is None:
        return check
    found = Path(check.path)
    try:
        metrics = read_result(found).metrics
    except ValueError as e:
        return Check(what, "differs", f"{found}: {e}", check.path)
    certified = task.get("metrics") or {}
    changed = [k for k in sorted(set(metrics) | set(certified))
               if canonical_json(_plain(metrics.get(k))) != canonical_json(_plain(certified.get(k)))]
    if changed:
        said = ", ".join(f"{k} {certified.get(k)!r} -> {metrics.get(k)!r}" for k in changed[:5])
        return Check(what, "differs", f"{found}: metrics differ from the certificate's: {said}", check.path)
    if check.status == "differs":
        return Check(what, "differs", f"{check.detail} (its metrics equal the certificate's; other fields changed)",
                     check.path)
    return Check(what, "match", "; ".join(d for d in (check.detail, "metrics equal") if d), check.path)


def _records_checks(task: dict[str, Any], output_dir: Path | None, finder: _Finder) -> list[Check]:
    out = []
    for rec in task.get("records") or []:
        what = f"records {rec['file']}"
        if output_dir is None and not finder.roots:
            out.append(Check(what, "unchecked", _NO_FOLDER))
        else:  # without a results folder, only by size and hash under --search / --weights
            path = output_dir / rec["file"] if output_dir is not None else None
            out.append(_check_file(what, path, rec.get("size"), rec.get("sha256"), finder))
    return out


def _task_spec(task: dict[str, Any]) -> Any:
    """The TaskSpec (its view parsed) a certificate's task names: an ad-hoc spec (``folder:/x``) as
    its task file says, else the task of that name (built in, or in its task file's folder)."""
    from evalkit.registry import task_families
    from evalkit.tasks import load_builtin_families
    from evalkit.tasks.common import with_view
    from evalkit.tasks.spec import ADHOC_PREFIXES, TaskIndex, adhoc_spec

    task_file = str(task.get("task_file") or "")
    if ":" in task_file and task_file.split(":", 1)[0] in ADHOC_PREFIXES:
        spec = adhoc_spec(task_file)
    else:
        extra = [Path(task_file).parent] if task_file and Path(task_file).is_file() else []
        try:
            spec = TaskIndex.load().resolve([task["task"]])[0]
        except (ValueError, LookupError):
            if not extra:
                raise
            spec = TaskIndex.load(extra=extra).resolve([task["task"]])[0]
    load_builtin_families()
    family = task_families.get(spec.family)()
    frames = (task.get("view") or {}).get("frame_sampler")
    return with_view(spec, family, frames=str(frames) if frames else None)


def _fingerprint_task() -> Any:
    """Helper A's standalone fingerprint of a task's data (no model)."""
    from evalkit.tasks.fingerprint import fingerprint_task

    return fingerprint_task


def _unbound(what: str, recorded: dict[str, Any] | None) -> Check | None:
    if not recorded:
        return Check(what, "unchecked", "no data fingerprint in the certificate: its result was written before "
                     "evalkit recorded them, by a run with --no-fingerprint, or of a task over several splits")
    if not recorded.get("complete") or not recorded.get("root"):
        return Check(what, "unchecked", f"the run's fingerprint is incomplete: {recorded.get('hashed')} of "
                     f"{recorded.get('samples')} samples hashed (a --limit run, or features an older evalkit cached without "
                     f"digests; a run without --limit binds it)")
    return None


def _compare_fingerprint(what: str, now: dict[str, Any] | None, recorded: dict[str, Any]) -> Check:
    if now is None:
        return Check(what, "unchecked", "the task's data has no such split now")
    root, want = now.get("root"), recorded["root"]
    counts = f"{now.get('samples')} samples, {now.get('duplicates')} duplicates"
    if root is None:
        return Check(what, "differs", f"not every sample could be hashed now ({now.get('hashed')} of "
                     f"{now.get('samples')}; {now.get('undecodable')} undecodable), certified root {want[:16]}…")
    if root != want:
        return Check(what, "differs", f"content root {root[:16]}…, certified {want[:16]}… ({counts}; certified "
                     f"{recorded.get('samples')} samples, {recorded.get('duplicates')} duplicates)")
    return Check(what, "match", f"root {root[:16]}…, {counts}")


def _data_checks(task: dict[str, Any], data_root: str | Path | None, data: bool, progress: bool) -> list[Check]:
    """``data T`` (the test data) and ``data T (train)`` per other split bound: each re-fingerprinted
    (one :func:`~evalkit.tasks.fingerprint.fingerprint_task` call gives every split's root)."""
    bound = {"": task.get("data_fingerprint")}
    bound.update({k[: -len("_data_fingerprint")]: v for k, v in task.items()
                  if k.endswith("_data_fingerprint") and k != "data_fingerprint"})
    names = {split: f"data {task['task']}" + (f" ({split})" if split else "") for split in bound}
    checks: dict[str, Check] = {}
    for split, recorded in bound.items():
        unbound = _unbound(names[split], recorded)
        if unbound is not None:
            checks[split] = unbound
        elif not data:
            checks[split] = Check(names[split], "unchecked", "--no-data: not re-fingerprinted")
    todo = [split for split in bound if split not in checks]
    if todo:
        from evalkit.data.root import default_data_root

        try:
            spec = _task_spec(task)
            now = _fingerprint_task()(spec, default_data_root(data_root), progress=progress)
        except (EvalkitError, OSError) as e:  # the data is not here (or no longer a task evalkit knows)
            reason = f"data not checked: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            checks.update({split: Check(names[split], "unchecked", reason) for split in todo})
        else:
            for split in todo:
                checks[split] = _compare_fingerprint(names[split], now if not split else now.get(split),
                                                     bound[split])
    return [checks[split] for split in bound]


def verify_certificate(path: str | Path, *, output_dir: str | Path | None = None, weights: str | Path | None = None,
                       data_root: str | Path | None = None, search: Sequence[str | Path] = (), data: bool = True,
                       progress: bool = False) -> list[Check]:
    """Re-hash what the certificate at ``path`` binds and is present: its weight files (under
    ``weights`` when given, else the path it records), each task's result file (and its metrics)
    and records files (under ``output_dir``, default: the results folder the certificate sits in),
    and each task's data (re-fingerprinted under ``data_root``, with a progress bar when
    ``progress``; ``data=False``: not). A file not at
    its path is looked for by size and hash under ``weights``, ``output_dir`` and ``search``.
    The certificate's own hash is checked first (:func:`read_certificate`: a
    :class:`CertificateError` when it fails)."""
    cert = read_certificate(path)
    out_dir = Path(output_dir) if output_dir is not None else default_output_dir(path)
    if out_dir is not None and not out_dir.is_dir():
        raise CertificateError(f"results folder {out_dir}: no such folder (--output-dir)")
    roots: list[Path] = []
    if weights is not None:
        w = Path(weights).expanduser()
        roots.append(w if w.is_dir() else w.parent)
    if out_dir is not None:
        roots.append(out_dir)
    roots += [Path(s).expanduser() for s in search]
    finder = _Finder(roots)
    checks = _weights_checks(cert, weights, finder)
    for task in cert.get("tasks") or []:
        checks += _records_checks(task, out_dir, finder)
        checks.append(_result_check(task, out_dir, finder))
    for task in cert.get("tasks") or []:
        checks += _data_checks(task, data_root, data, progress)
    return checks
