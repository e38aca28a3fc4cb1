"""The only loop that runs the model over data: :func:`embed` for samples (through views, see
``evalkit.views``), :func:`encode_texts` / :func:`zero_shot_classifier` for text.

Samples are embedded unit by unit (a tar shard or an index range, see ``evalkit.data``) and each
finished unit is stored in a content-addressed cache keyed by (model fingerprint, view identity,
unit identity): an interrupted run resumes at the first unfinished unit, and a second task over
the same samples costs nothing (labels come from the data, so another labelling of the same
images shares them too). Several views (best-of-both's crop and squash) share one pass: each
sample is decoded once, and where two views with the same per-batch step give the same pixels
(a square image) it is encoded once. Classifiers are cached on (fingerprint, class names,
templates), so tasks that share class names build it once.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from evalkit.data.sources import DataError, SourceData, Unit
from evalkit.models.encoder import Encoder
from evalkit.views import Noted, View, as_view


def default_cache_dir() -> Path:
    return Path(os.environ.get("EVALKIT_CACHE", Path.home() / ".cache" / "evalkit"))


def default_num_workers(device: str) -> int:
    """Data-loader workers when the user gives none. A model on the CPU: 0 — its forward already
    keeps every core busy, and decoding in other processes only competes with it (on the 2-core
    benchmark machine one worker process made eva27 1.2x slower and two 1.6x; see
    benchmarks/bench_eva27.py); a background thread overlaps decoding with the forward instead.
    A model on a GPU: one worker per core, keeping one for the main process, at most 8 — where
    worker processes start by fork (Linux): the data sources hold closures that spawn/forkserver
    cannot pickle, so elsewhere the default stays 0."""
    if device.split(":")[0] in ("cpu", "meta") or multiprocessing.get_start_method(allow_none=False) != "fork":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1))


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class FeatureCache:
    """Content-addressed tensors on disk (plus an in-memory layer). ``root=None`` keeps memory only."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, Any] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, kind: str, key: str) -> Path:
        assert self.root is not None
        return self.root / kind / key[:2] / f"{key}.pt"

    def get(self, kind: str, key: str) -> Any | None:
        if (kind, key) in self._memory:
            self.hits += 1
            return self._memory[(kind, key)]
        if self.root is not None:
            path = self._path(kind, key)
            if path.exists():
                try:
                    value = torch.load(path, map_location="cpu", weights_only=True)
                except Exception:  # a torn or foreign file: recompute rather than fail
                    path.unlink(missing_ok=True)
                else:
                    self._memory[(kind, key)] = value
                    self.hits += 1
                    return value
        self.misses += 1
        return None

    def put(self, kind: str, key: str, value: Any) -> None:
        self._memory[(kind, key)] = value
        if self.root is None:
            return
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(value, tmp)
        os.replace(tmp, path)


# -- text --------------------------------------------------------------------------------------


def prompt_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """Length of each tokenised prompt: up to and including its last non-padding token."""
    nonzero = tokens != 0
    idx = torch.arange(1, tokens.shape[1] + 1).expand_as(tokens)
    return (idx * nonzero).max(dim=1).values.clamp(min=1)


def encode_texts(
    encoder: Encoder,
    texts: Sequence[str],
    batch_size: int = 256,
    groups: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Encode prompts. For a causal text tower with EOT pooling, prompts are sorted by length and
    each batch is cut to its longest prompt: nothing after EOT can reach the pooled token, so the
    result equals full-length encoding while skipping the padding compute. Bidirectional towers
    get full-length batches in the original order.

    ``groups`` (lists of indices into ``texts``, e.g. one template over every class name): when
    the tower allows it (``encoder.shared_prefix``), the token prefix the prompts of a group have
    in common is encoded once and only the rest of each prompt is run (evalkit.models.prefix)."""
    tokens = encoder.tokenize(texts)
    n = tokens.shape[0]
    out = torch.empty(n, encoder.embed_dim)
    todo = torch.arange(n)
    members = [list(g) for g in groups or () if len(g)]
    if members and encoder.causal_text and encoder.shared_prefix is not None:
        done = _encode_shared_prefixes(encoder, tokens, members, out, batch_size)
        todo = (~done).nonzero().flatten()  # prompts in no group: encoded whole, below
    if encoder.causal_text:
        lengths = prompt_lengths(tokens[todo])
        order = torch.argsort(lengths, descending=True, stable=True)
        for lo in range(0, len(order), batch_size):
            sel = order[lo : lo + batch_size]
            out[todo[sel]] = encoder.encode_text(tokens[todo[sel], : int(lengths[sel].max())])
    else:
        for lo in range(0, n, batch_size):
            out[lo : lo + batch_size] = encoder.encode_text(tokens[lo : lo + batch_size])
    return out


def _encode_shared_prefixes(encoder: Encoder, tokens: torch.Tensor, groups: list[list[int]], out: torch.Tensor,
                            batch_size: int) -> torch.Tensor:
    """Each group's common token prefix is encoded once (all prefixes in one batch); then the
    rest of every prompt, length-sorted across groups, each attending to its group's prefix.
    Returns which rows of ``tokens`` it encoded."""
    runner = encoder.shared_prefix
    pool_at = runner.pool(tokens)
    which = torch.full((tokens.shape[0],), -1, dtype=torch.long)
    plen = torch.zeros(len(groups), dtype=torch.long)
    for g, members in enumerate(groups):
        idx = torch.as_tensor(members, dtype=torch.long)
        rows = tokens[idx]
        same = (rows == rows[:1]).all(dim=0).long().cumprod(dim=0)
        # the pooled (EOT) token must stay in the part that is run per prompt
        plen[g] = max(1, min(int(same.sum()), int(pool_at[idx].min())))
        which[idx] = g
    firsts = torch.stack([tokens[members[0]] for members in groups])
    big_p = int(plen.max())
    prefixes = encoder.encode_text_prefixes(firsts[:, :big_p])
    idx = (which >= 0).nonzero().flatten()
    p = plen[which[idx]]
    rest = (prompt_lengths(tokens[idx]) - p).clamp(min=1)
    order = torch.argsort(rest, descending=True, stable=True)
    for lo in range(0, len(order), batch_size):
        sel = order[lo : lo + batch_size]
        rows, ps = idx[sel], p[sel]
        width = int(max(rest[sel].max(), (pool_at[rows] - ps).max() + 1))
        cols = ps[:, None] + torch.arange(width)[None, :]
        suffix = torch.gather(tokens[rows], 1, cols.clamp(max=tokens.shape[1] - 1))
        out[rows] = encoder.encode_text_suffix(prefixes, which[rows], ps, suffix, pool_at[rows] - ps)
    return which >= 0


def caption_features(encoder: Encoder, captions: Sequence[str], cache: FeatureCache | None = None,
                     batch_size: int = 256) -> torch.Tensor:
    """(M, D) L2-normalised features of captions (retrieval's text side), cached on (model
    fingerprint, the captions in order)."""
    digest = hashlib.sha256("\n".join(captions).encode()).hexdigest()
    key = _digest("captions", encoder.fingerprint, digest, len(captions))
    if cache is not None and (hit := cache.get("captions", key)) is not None:
        return hit
    feats = F.normalize(encode_texts(encoder, captions, batch_size), dim=-1)
    if cache is not None:
        cache.put("captions", key, feats)
    return feats


def truncated_texts(encoder: Encoder, texts: Sequence[str]) -> int:
    """How many texts are longer than the text context (cut by the tokenizer, as it always does)."""
    tok = encoder.tokenizer
    if hasattr(tok, "encode") and hasattr(tok, "context_length"):
        return sum(len(tok.encode(t)) + 2 > tok.context_length for t in texts)  # + <start> and <end>
    return int((encoder.tokenize(texts)[:, -1] != 0).sum())  # a full last position: cut (or exactly full)


def zero_shot_classifier(
    encoder: Encoder,
    classnames: Sequence[str],
    templates: Sequence[str],
    cache: FeatureCache | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """(D, C) classifier: per class, encode every template, L2-normalise, mean, renormalise."""
    key = _digest("classifier", encoder.fingerprint, list(classnames), list(templates))
    if cache is not None and (hit := cache.get("classifier", key)) is not None:
        return hit
    texts = [t.format(c=c) for c in classnames for t in templates]
    n_t = len(templates)
    by_template = [range(j, len(texts), n_t) for j in range(n_t)]  # one template over every class name
    emb = F.normalize(encode_texts(encoder, texts, batch_size, groups=by_template), dim=-1)
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)
    classifier = (emb / emb.norm(dim=-1, keepdim=True)).T.contiguous()
    if cache is not None:
        cache.put("classifier", key, classifier)
    return classifier


# -- images ------------------------------------------------------------------------------------


class _UnitDataset(IterableDataset):
    """One unit's samples, decoded once and put through every view's per-sample step in the
    workers (sample i goes to worker i % W). A sample that fails to decode, or fails any of the
    views, is skipped for all of them: every view scores the same samples. A view's step may return
    :class:`~evalkit.views.Noted` (a tensor it had to make by a documented fallback, with why):
    the sample is scored, and its note counted and reported."""

    def __init__(self, unit: Unit, stages: Sequence[Callable], limit: int | None) -> None:
        self.unit, self.stages, self.limit = unit, list(stages), limit

    def __iter__(self) -> Iterator[tuple[str, tuple[torch.Tensor, ...] | None, Any, str | None, str | None]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for i, (key, load, label) in enumerate(self.unit.samples()):
            if self.limit is not None and i >= self.limit:
                return
            if i % nw != wid:
                continue
            try:
                img = load()
                outs = [stage(img) for stage in self.stages]
            except Exception as e:  # a sample that does not decode is reported, not dropped
                yield key, None, label, f"{type(e).__name__}: {e}".splitlines()[0][:300], None
                continue
            notes = [o.note for o in outs if isinstance(o, Noted)]
            tensors = tuple(o.tensor if isinstance(o, Noted) else o for o in outs)
            yield key, tensors, label, None, notes[0] if notes else None


def _collate(batch: list[tuple[str, tuple[torch.Tensor, ...] | None, Any, str | None, str | None]]
             ) -> dict[str, Any]:
    good = [b for b in batch if b[1] is not None]
    n_stages = len(good[0][1]) if good else 0
    return {
        "images": [torch.stack([b[1][j] for b in good]) for j in range(n_stages)] if good else None,
        "labels": [b[2] for b in good],
        "keys": [b[0] for b in good],
        "skipped": [(b[0], b[3]) for b in batch if b[1] is None],
        "noted": [(b[0], b[4]) for b in good if b[4] is not None],
    }


class SampleDecodeError(DataError):
    """Raised under ``--strict`` for the first sample that does not decode."""


@dataclass
class Embeddings:
    """A view's embeddings of a dataset: features with their samples' targets and keys, the
    samples that could not be read (key, reason), never silently dropped, and the scored samples a
    view had to make by a documented fallback (key, note; e.g. a cloud resampled to enough points)."""

    features: torch.Tensor  # (N, D), L2-normalised
    labels: list[Any]  # each sample's target, as its source gives it
    keys: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the call that computed it (shared by its views; 0 when all cached)
    computed: int = 0  # samples actually run through the model in this call
    cached_units: int = 0
    reused: int = 0  # this view's embeddings copied from another view's identical pixels (not encoded)
    noted: list[tuple[str, str]] = field(default_factory=list)


def image_features(encoder: Encoder, data: SourceData, transforms: Mapping[str, Callable], **kwargs: Any
                   ) -> dict[str, Embeddings]:
    """:func:`embed` with image transforms (each one an :class:`evalkit.views.ImageView`)."""
    return embed(encoder, data, {name: as_view(t, name) for name, t in transforms.items()}, **kwargs)


def embed(
    encoder: Encoder,
    data: SourceData,
    views: Mapping[str, View],
    *,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    limit: int | None = None,
    strict: bool = False,
    desc: str = "images",
    progress: bool = True,
) -> dict[str, Embeddings]:
    """Embeddings of ``data`` under each named view, in one pass over the data: every sample is
    read and decoded once, then put through each view's per-sample step (``crop`` and ``squash``
    for best-of-both) and each batch through the model once per view, except where a view with
    the same per-batch step already gave the same tensor for a sample (then that embedding is
    copied). Units already cached for a view are not recomputed for it; a unit is decoded only if
    some view lacks it."""
    names = list(views)
    if not names:
        raise ValueError("embed needs at least one view")
    views = {name: as_view(views[name], name) for name in names}
    parts: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    remaining = limit
    total = data.size if limit is None else (min(limit, data.size) if data.size is not None else limit)
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True, leave=False)
    t0 = time.perf_counter()
    computed = cached_units = 0
    reused = dict.fromkeys(names, 0)
    try:
        for unit in data.units:
            if remaining is not None and remaining <= 0:
                break
            unit_limit = remaining if remaining is not None and (unit.size is None or remaining < unit.size) else None
            image_id = unit.content_id or unit.id
            keys = {n: _digest("embeddings", encoder.fingerprint, views[n].identity, image_id, unit_limit) for n in names}
            hits = {n: cache.get("images", keys[n]) if cache is not None else None for n in names}
            missing = [n for n in names if hits[n] is None]
            present = [n for n in names if hits[n] is not None]
            if any(not _same_samples(hits[n], hits[present[0]]) for n in present[1:]):
                missing = list(names)  # cached by runs that skipped different samples: redo together
            if missing:
                fresh = _run_unit(encoder, unit, {n: views[n] for n in missing}, batch_size, num_workers, unit_limit,
                                  strict, bar)
                reference = fresh[missing[0]]
                computed += len(reference["keys"]) + len(reference["skipped"])
                if any(not _same_samples(hits[n], reference) for n in names if n not in fresh):
                    # a cached transform skipped other samples than this pass (a file that failed to
                    # read then, or now): every transform must score the same samples, so one pass for all
                    fresh = _run_unit(encoder, unit, views, batch_size, num_workers, unit_limit, strict,
                                      tqdm(disable=True))
                    reference = fresh[names[0]]
                for n, record in fresh.items():
                    reused[n] += record.pop("reused", 0)
                for n, record in fresh.items():
                    hits[n] = record
                    if cache is not None:
                        cache.put("images", keys[n], record)
                labels = reference["labels"]
            else:
                cached_units += 1
                first = hits[names[0]]
                if strict and first["skipped"]:
                    # a sample an earlier run skipped fails --strict just as it would if decoded now
                    key, why = first["skipped"][0]
                    raise SampleDecodeError(f"sample {key}: cannot decode ({why}; recorded in the feature cache "
                                            f"by an earlier run); rerun without --strict to skip it")
                if strict and first.get("noted"):
                    key, why = first["noted"][0]
                    raise SampleDecodeError(f"sample {key}: {why} (recorded in the feature cache by an earlier "
                                            f"run); rerun without --strict to accept it")
                bar.update(len(first["keys"]) + len(first["skipped"]))
                # features shared with another labelling of the same images: this unit's own labels
                labels = first["labels"] if image_id == unit.id else _unit_labels(unit, unit_limit, first["keys"])
            for n in names:
                parts[n].append({**hits[n], "labels": labels})
            if remaining is not None:
                remaining -= len(labels) + len(hits[names[0]]["skipped"])
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return {n: _join(parts[n], encoder.embed_dim, seconds, computed, cached_units, reused[n]) for n in names}


def background(iterable: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Items of ``iterable`` produced in a background thread, up to ``depth`` ahead, in order.
    An exception in the producer is raised here; closing the generator early (an error in the
    consumer, Ctrl-C) stops the producer at its next item."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                items.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterable:
                if not put("item", item):
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            put("error", e)
        else:
            put("end", None)

    thread = threading.Thread(target=produce, name="evalkit-loader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


def _same_samples(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two records of one unit cover the same samples (evaluated and skipped alike)."""
    return a["keys"] == b["keys"] and [s[0] for s in a["skipped"]] == [s[0] for s in b["skipped"]]


def _unit_labels(unit: Unit, limit: int | None, keys: Sequence[str]) -> list[Any]:
    """The labels of ``keys`` in ``unit``, read from its samples without decoding an image."""
    by_key: dict[str, Any] = {}
    for i, (key, _load, label) in enumerate(unit.samples()):
        if limit is not None and i >= limit:
            break
        by_key[key] = label
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise DataError(f"unit {unit.id}: cached features list sample {missing[0]}, which the data no longer has; "
                        f"clear the feature cache (EVALKIT_CACHE) or run with --no-cache")
    return [by_key[k] for k in keys]


def _join(records: list[dict[str, Any]], dim: int, seconds: float, computed: int, cached_units: int,
          reused: int) -> Embeddings:
    feats = [r["features"] for r in records]
    return Embeddings(
        torch.cat(feats) if feats else torch.empty(0, dim),
        [label for r in records for label in r["labels"]],
        [key for r in records for key in r["keys"]],
        [tuple(s) for r in records for s in r["skipped"]],
        seconds,
        computed,
        cached_units,
        reused,
        [tuple(s) for r in records for s in r.get("noted", [])],
    )


def _run_unit(
    encoder: Encoder,
    unit: Unit,
    views: Mapping[str, View],
    batch_size: int,
    num_workers: int,
    limit: int | None,
    strict: bool,
    bar: tqdm,
) -> dict[str, dict[str, Any]]:
    """One unit through the model: per view name a record (features, labels, keys, skipped; the
    and ``reused``: how many of its embeddings were copied from another view's identical pixels)."""
    names = list(views)
    loader = DataLoader(
        _UnitDataset(unit, [views[n].sample for n in names], limit),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    # an earlier view with the same per-batch step: where the pixels are equal, so is the embedding
    same_step = {j: [i for i in range(j) if views[names[i]].batch_key == views[names[j]].batch_key]
                 for j in range(len(names))}
    feats: list[list[torch.Tensor]] = [[] for _ in names]
    labels: list[Any] = []
    keys: list[str] = []
    skipped: list[tuple[str, str]] = []
    noted: list[tuple[str, str]] = []
    reused = [0] * len(names)
    # No worker processes: a thread decodes and transforms the next batches while the model runs
    # (PIL and torch release the GIL in their C code), so loading overlaps the forward.
    for batch in background(loader) if num_workers == 0 else loader:
        if batch["skipped"] and strict:
            key, why = batch["skipped"][0]
            raise SampleDecodeError(f"sample {key}: cannot decode ({why}); rerun without --strict to skip it")
        if batch["noted"] and strict:
            key, why = batch["noted"][0]
            raise SampleDecodeError(f"sample {key}: {why}; rerun without --strict to accept it")
        skipped.extend(batch["skipped"])
        noted.extend(batch["noted"])
        if batch["images"] is not None:
            tensors = batch["images"]
            done: list[torch.Tensor] = []
            for j, name in enumerate(names):
                out, todo = None, torch.ones(tensors[j].shape[0], dtype=torch.bool)
                for i in same_step[j]:
                    if tensors[i].shape != tensors[j].shape:
                        continue
                    equal = (tensors[i] == tensors[j]).flatten(1).all(dim=1) & todo
                    if equal.any():
                        out = torch.empty_like(done[i]) if out is None else out
                        out[equal] = done[i][equal]
                        todo &= ~equal
                if out is None:
                    out = views[name].embed(encoder, tensors[j])
                else:
                    reused[j] += int((~todo).sum())
                    if todo.any():
                        out[todo] = views[name].embed(encoder, tensors[j][todo])
                done.append(out)
                feats[j].append(out)
            labels.extend(batch["labels"])
            keys.extend(batch["keys"])
        bar.update(len(batch["keys"]) + len(batch["skipped"]))
    records = {
        name: {"features": torch.cat(f) if f else torch.empty(0, encoder.embed_dim),
               "labels": labels, "keys": keys, "skipped": skipped, "noted": noted}
        for name, f in zip(names, feats, strict=True)
    }
    for j, name in enumerate(names):
        records[name]["reused"] = reused[j]
    return records
