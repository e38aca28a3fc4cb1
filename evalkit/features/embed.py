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

import functools
import hashlib
import json
import multiprocessing
import os
import pickle
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from evalkit.data.fingerprint import (
    DIGEST_SIZE,
    Fingerprint,
    FingerprintError,
    decoded_by_views,
    labelled_digest,
    loaded_content_digest,
)
from evalkit.data.sources import DataError, SourceData, Unit
from evalkit.errors import EvalkitError
from evalkit.features import distributed
from evalkit.features.batching import AUTO, loader_kwargs, prefetch_depth, resolve_for_views, to_device
from evalkit.features.cache import FeatureCache, default_cache_dir  # noqa: F401
from evalkit.models.encoder import Encoder
from evalkit.progress import NoProgress, progress_bar
from evalkit.views.base import Noted, View
from evalkit.views.image import as_view


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
    in common is encoded once and only the rest of each prompt is run (evalkit.models.prefix).

    In a job of several processes (evalkit.features.distributed) this is a collective step: the forward
    passes a single process would make are split into contiguous runs, one per rank, and gathered
    on rank 0, so the result is the single process's, pass for pass; on another rank the result is
    a placeholder of the same shape (rank 0 alone scores)."""
    world = _world()
    if world is None:
        return _encode_texts(encoder, texts, batch_size, groups, None)
    info = world.announce("texts", _digest("texts", list(texts), batch_size))
    _check_step(world, info, _digest("texts", list(texts), batch_size), "texts")
    out = _encode_texts(encoder, texts, batch_size, groups, world)
    if out is None:
        world.settle()
        return _placeholder(len(texts), encoder.embed_dim)
    return out


def _world() -> distributed.World | None:
    world = distributed.current()
    return world if world is not None and world.size > 1 else None


def _check_step(world: distributed.World, theirs: Any, mine: Any, what: str) -> None:
    if theirs != mine:
        raise distributed.DistributedError(f"rank {world.rank}: out of step with rank 0: its {what} differ from this "
                                           f"rank's; every rank must see the same tasks and data")


def _placeholder(n: int, dim: int) -> torch.Tensor:
    """What a follower rank gets for features only rank 0 holds: zeros of the shape, no memory."""
    return torch.zeros(1, dim).expand(n, dim)


def _text_passes(encoder: Encoder, tokens: torch.Tensor, batch_size: int, groups: Sequence[Sequence[int]] | None
                 ) -> list[tuple[torch.Tensor, Callable[[], torch.Tensor]]]:
    """The forward passes that encode ``tokens``, in the order one process runs them: per pass,
    the rows of the output it fills and the pass itself."""
    n = tokens.shape[0]
    passes: list[tuple[torch.Tensor, Callable[[], torch.Tensor]]] = []
    todo = torch.arange(n)
    members = [list(g) for g in groups or () if len(g)]
    if members and encoder.causal_text and encoder.shared_prefix is not None:
        done = _shared_prefix_passes(encoder, tokens, members, batch_size, passes)
        todo = (~done).nonzero().flatten()  # prompts in no group: encoded whole, below
    if encoder.causal_text:
        lengths = prompt_lengths(tokens[todo])
        order = torch.argsort(lengths, descending=True, stable=True)
        for lo in range(0, len(order), batch_size):
            sel = order[lo : lo + batch_size]
            rows = todo[sel]
            passes.append((rows, functools.partial(encoder.encode_text, tokens[rows, : int(lengths[sel].max())])))
    else:
        for lo in range(0, n, batch_size):
            rows = torch.arange(lo, min(lo + batch_size, n))
            passes.append((rows, functools.partial(encoder.encode_text, tokens[lo : lo + batch_size])))
    return passes


def _encode_texts(encoder: Encoder, texts: Sequence[str], batch_size: int, groups: Sequence[Sequence[int]] | None,
                  world: distributed.World | None, bar: Any = None) -> torch.Tensor | None:
    """(len(texts), D): every pass here; or, in a job, this rank's contiguous run of the passes,
    gathered on rank 0 (None on the other ranks). ``bar`` (evalkit.progress) counts the prompts
    as their passes finish (rank 0's own, in a job)."""
    bar = NoProgress() if bar is None else bar
    tokens = encoder.tokenize(texts)
    passes = _text_passes(encoder, tokens, batch_size, groups)
    out = torch.empty(tokens.shape[0], encoder.embed_dim)

    def run_counted(rows: torch.Tensor, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        feats = run()
        bar.update(len(rows))
        return feats

    with bar:
        if world is None:
            for rows, run in passes:
                out[rows] = run_counted(rows, run)
            return out
        lo, hi = (len(passes) * world.rank) // world.size, (len(passes) * (world.rank + 1)) // world.size
        share = _outcome(world, lambda: [(rows, run_counted(rows, run)) for rows, run in passes[lo:hi]])
        shares = world.gather(share, "gathering text features")
        if shares is not None:  # rank 0: the other ranks' prompts are done too
            bar.update(sum(len(rows) for rows, _ in passes) - sum(len(rows) for rows, _ in passes[lo:hi]))
    if shares is None:
        return None
    for part in _results(shares):
        for rows, feats in part:
            out[rows] = feats
    return out


def _outcome(world: distributed.World, fn: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", fn())``, or ``("error", the exception with this rank in its message)``, to send
    to rank 0, which raises it: every rank reaches the gather, whatever happened."""
    try:
        return "ok", fn()
    except Exception as e:  # a bug too: every rank must reach the gather
        return "error", _ranked(e, world.rank)


def _ranked(e: BaseException, rank: int) -> BaseException:
    text = f"rank {rank}: {e}"
    try:
        ranked = type(e)(text)
        pickle.dumps(ranked)
        return ranked
    except Exception:  # an exception type that takes other arguments, or cannot travel: a user's
        # error stays one (told in one line), a bug stays a bug (told with a traceback)
        return distributed.DistributedError(text) if isinstance(e, EvalkitError) else RuntimeError(text)


def _results(outcomes: Sequence[tuple[str, Any] | None]) -> list[Any]:
    """The ranks' results, in rank order; the first rank's error, raised."""
    for outcome in outcomes:
        if outcome is not None and outcome[0] == "error":
            raise outcome[1]
    return [outcome[1] for outcome in outcomes if outcome is not None]


def _shared_prefix_passes(encoder: Encoder, tokens: torch.Tensor, groups: list[list[int]], batch_size: int,
                          passes: list[tuple[torch.Tensor, Callable[[], torch.Tensor]]]) -> torch.Tensor:
    """Each group's common token prefix is encoded once (all prefixes in one batch, by whichever
    pass needs them first); then the rest of every prompt, length-sorted across groups, each
    attending to its group's prefix. Appends those passes; returns which rows of ``tokens`` they
    encode."""
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
    prefixes: list[Any] = []

    def suffix(rows: torch.Tensor, ps: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        if not prefixes:  # one batch of every prefix, as one process runs it: the same numbers on every rank
            prefixes.append(encoder.encode_text_prefixes(firsts[:, :big_p]))
        return encoder.encode_text_suffix(prefixes[0], which[rows], ps, part, pool_at[rows] - ps)

    idx = (which >= 0).nonzero().flatten()
    p = plen[which[idx]]
    rest = (prompt_lengths(tokens[idx]) - p).clamp(min=1)
    order = torch.argsort(rest, descending=True, stable=True)
    for lo in range(0, len(order), batch_size):
        sel = order[lo : lo + batch_size]
        rows, ps = idx[sel], p[sel]
        width = int(max(rest[sel].max(), (pool_at[rows] - ps).max() + 1))
        cols = ps[:, None] + torch.arange(width)[None, :]
        part = torch.gather(tokens[rows], 1, cols.clamp(max=tokens.shape[1] - 1))
        passes.append((rows, functools.partial(suffix, rows, ps, part)))
    return which >= 0


def caption_features(encoder: Encoder, captions: Sequence[str], cache: FeatureCache | None = None,
                     batch_size: int = 256, *, progress: bool = False, desc: str = "captions") -> torch.Tensor:
    """(M, D) L2-normalised features of captions (retrieval's text side), cached on (model
    fingerprint, the captions in order). In a job of several processes, a collective step (see
    :func:`encode_texts`): rank 0 looks in the cache, the ranks share the passes. ``progress``:
    rank 0 shows the captions as they are encoded (:mod:`evalkit.progress`)."""
    digest = hashlib.sha256("\n".join(captions).encode()).hexdigest()
    key = _digest("captions", encoder.fingerprint, digest, len(captions))
    world = _world()

    def bar() -> Any:
        return progress_bar(len(captions), desc, "captions", enabled=progress and (world is None or world.is_main))

    if world is None:
        if cache is not None and (hit := cache.get("captions", key)) is not None:
            return hit
        feats = F.normalize(_encode_texts(encoder, captions, batch_size, None, None, bar()), dim=-1)
        if cache is not None:
            cache.put("captions", key, feats, meta=_text_meta(encoder, captions=len(captions)))
        return feats
    hit = cache.get("captions", key) if cache is not None and world.is_main else None
    info = world.announce("captions", {"key": key, "cached": hit is not None})
    _check_step(world, info["key"], key, "captions")
    if not info["cached"]:
        emb = _encode_texts(encoder, captions, batch_size, None, world, bar())
        if emb is not None:
            hit = F.normalize(emb, dim=-1)
            if cache is not None:
                cache.put("captions", key, hit, meta=_text_meta(encoder, captions=len(captions)))
    if hit is None:
        world.settle()
        return _placeholder(len(captions), encoder.embed_dim)
    return hit


def truncated_texts(encoder: Encoder, texts: Sequence[str]) -> int:
    """How many texts are longer than the text context (cut by the tokenizer, as it always does)."""
    tok = encoder.tokenizer
    if callable(getattr(tok, "count_truncated", None)):  # a tokenizer that knows its own length (hf)
        return int(tok.count_truncated(texts))
    if hasattr(tok, "encode") and hasattr(tok, "context_length"):
        return sum(len(tok.encode(t)) + 2 > tok.context_length for t in texts)  # + <start> and <end>
    return int((encoder.tokenize(texts)[:, -1] != 0).sum())  # a full last position: cut (or exactly full)


def zero_shot_classifier(
    encoder: Encoder,
    classnames: Sequence[str],
    templates: Sequence[str],
    cache: FeatureCache | None = None,
    batch_size: int = 256,
    *,
    progress: bool = False,
    desc: str = "classifier",
) -> torch.Tensor:
    """(D, C) classifier: per class, encode every template, L2-normalise, mean, renormalise. In a
    job of several processes, a collective step (see :func:`encode_texts`): rank 0 looks in the
    cache, the ranks share the passes, rank 0 builds the classifier. ``progress``: rank 0 shows
    the prompts (classes x templates) as they are encoded (:mod:`evalkit.progress`)."""
    key = _digest("classifier", encoder.fingerprint, list(classnames), list(templates))
    world = _world()
    hit = None
    if cache is not None and (world is None or world.is_main):
        hit = cache.get("classifier", key)
    if world is not None:
        info = world.announce("classifier", {"key": key, "cached": hit is not None})
        _check_step(world, info["key"], key, "class names or templates")
        cached = info["cached"]
    else:
        cached = hit is not None
    if cached:
        if hit is None:  # a follower: rank 0 has it
            world.settle()  # type: ignore[union-attr]
            return torch.zeros(encoder.embed_dim, len(classnames))
        return hit
    texts = [t.format(c=c) for c in classnames for t in templates]
    n_t = len(templates)
    by_template = [range(j, len(texts), n_t) for j in range(n_t)]  # one template over every class name
    bar = progress_bar(len(texts), f"{desc} ({len(classnames)} classes x {n_t} templates)", "prompts",
                       enabled=progress and (world is None or world.is_main))
    out = _encode_texts(encoder, texts, batch_size, by_template, world, bar)
    if out is None:
        world.settle()  # type: ignore[union-attr]
        return torch.zeros(encoder.embed_dim, len(classnames))
    emb = F.normalize(out, dim=-1)
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)
    classifier = (emb / emb.norm(dim=-1, keepdim=True)).T.contiguous()
    if cache is not None:
        cache.put("classifier", key, classifier,
                  meta=_text_meta(encoder, classes=len(classnames), templates=len(templates)))
    return classifier


# -- images ------------------------------------------------------------------------------------


class _UnitDataset(IterableDataset):
    """One unit's samples, decoded once and put through every view's per-sample step in the
    workers (sample i goes to worker i % W). A sample that fails to decode, or fails any of the
    views, is skipped for all of them: every view scores the same samples. A view's step may return
    :class:`~evalkit.views.base.Noted` (a tensor it had to make by a documented fallback, with why):
    the sample is scored, and its note counted and reported."""

    def __init__(self, unit: Unit, stages: Sequence[Callable], limit: int | None, fingerprint: bool = False) -> None:
        self.unit, self.stages, self.limit, self.fingerprint = unit, list(stages), limit, fingerprint

    def __iter__(self) -> Iterator[_Item]:
        """Per sample: key, the views' tensors (None: skipped), label, why skipped, the view's
        note, the content digest of what was decoded (evalkit.data.fingerprint; None when not
        hashed) and the seconds this loader spent reading, decoding, transforming and hashing it."""
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        samples = iter(self.unit.samples())
        i = -1
        while True:
            t0 = time.perf_counter()
            item = next(samples, None)
            if item is None:
                return
            i += 1
            key, load, label = item
            if self.limit is not None and i >= self.limit:
                return
            if i % nw != wid:
                continue
            digest = None
            try:
                img = load()
                later = decoded_by_views(img)
                if self.fingerprint and not later:
                    digest = loaded_content_digest(img)  # before the views, which may take it apart
                outs = [stage(img) for stage in self.stages]
                if self.fingerprint and later:
                    digest = loaded_content_digest(img)  # the frames the views decoded
            except Exception as e:  # a sample that does not decode is reported, not dropped
                yield key, None, label, f"{type(e).__name__}: {e}".splitlines()[0][:300], None, None, \
                    time.perf_counter() - t0
                continue
            notes = [o.note for o in outs if isinstance(o, Noted)]
            tensors = tuple(o.tensor if isinstance(o, Noted) else o for o in outs)
            yield key, tensors, label, None, notes[0] if notes else None, digest, time.perf_counter() - t0


_Item = tuple[str, "tuple[torch.Tensor, ...] | None", Any, "str | None", "str | None", "bytes | None", float]


def _collate(batch: list[_Item]) -> dict[str, Any]:
    good = [b for b in batch if b[1] is not None]
    n_stages = len(good[0][1]) if good else 0
    return {
        "images": [torch.stack([b[1][j] for b in good]) for j in range(n_stages)] if good else None,
        "labels": [b[2] for b in good],
        "keys": [b[0] for b in good],
        "skipped": [(b[0], b[3]) for b in batch if b[1] is None],
        "noted": [(b[0], b[4]) for b in good if b[4] is not None],
        "content_digests": [b[5] for b in good],
        "data_s": sum(b[6] for b in batch),
    }


def _collate_digests(batch: list[_Item]) -> dict[str, Any]:
    """A batch of a hash pass (:func:`_hash_unit`): what :func:`_collate` gives, without the tensors."""
    good = [b for b in batch if b[1] is not None]
    return {
        "keys": [b[0] for b in good],
        "skipped": [(b[0], b[3]) for b in batch if b[1] is None],
        "content_digests": [b[5] for b in good],
        "data_s": sum(b[6] for b in batch),
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
    world_size: int = 1  # processes that shared the call (evalkit.features.distributed)
    samples_per_rank: list[int] = field(default_factory=list)  # samples each rank encoded in it (computed, split)
    batch_size: int | None = None  # the batch size --batch-size auto chose (None: the one given)
    # the data's content fingerprint (evalkit.data.fingerprint; None: not taken), shared by the views
    fingerprint: Fingerprint | None = None
    data_seconds: float = 0.0  # the loader's seconds (read, decode, transform, hash), summed over samples and ranks
    forward_seconds: float = 0.0  # the views' per-batch steps (the forward), summed over views and ranks


def embed(
    encoder: Encoder,
    data: SourceData,
    views: Mapping[str, View],
    *,
    cache: FeatureCache | None = None,
    batch_size: int | str = 64,
    num_workers: int = 0,
    prefetch: int | None = None,
    limit: int | None = None,
    strict: bool = False,
    desc: str = "images",
    progress: bool = True,
    fingerprint: bool = True,
) -> dict[str, Embeddings]:
    """Embeddings of ``data`` under each named view, in one pass over the data: every sample is
    read and decoded once, then put through each view's per-sample step (``crop`` and ``squash``
    for best-of-both) and each batch through the model once per view, except where a view with
    the same per-batch step already gave the same tensor for a sample (then that embedding is
    copied). Units already cached for a view are not recomputed for it; a unit is decoded only if
    some view lacks it.

    In a job of several processes (evalkit.features.distributed) this is a collective step, split at the
    cache-unit level: rank 0 looks up which units are cached (for every view), assigns the missing
    ones to the ranks (deterministically, by size: each exactly once, none padded, none dropped)
    and sends that plan; each rank encodes its units, writing each to the cache as it finishes;
    rank 0 gathers the records and joins them in unit order. A unit is encoded with the same
    batches as in one process, so the features are the same. On rank 0 the result is what one
    process would return, plus ``world_size`` and ``samples_per_rank``; on another rank its
    features are a placeholder (keys, labels and skipped samples are real).

    ``fingerprint``: the loader hashes each sample it decodes (evalkit.data.fingerprint), the
    digests are cached with the unit's features, and the result's ``fingerprint`` covers the
    data (None when off). A unit cached without digests (an older evalkit, or a run without
    fingerprints) is read, decoded and put through the views' per-sample steps once more without
    the model, hashed, and its cache entries written again with the digests (not under ``limit``). Each result also says how long the loader worked (``data_seconds``,
    summed over samples) and the forward ran (``forward_seconds``), for the units computed here."""
    names = list(views)
    if not names:
        raise ValueError("embed needs at least one view")
    views = {name: as_view(views[name], name) for name in names}
    world = _world()
    if batch_size == AUTO:  # CUDA: the search (once per model, view and GPU; remembered); else a default
        if world is None or world.is_main:
            root = cache.root if cache is not None else None
            batch_size = resolve_for_views(AUTO, encoder, views, data.units[0].samples() if data.units else (),
                                           cache_dir=root, remember=root is not None).batch_size
        if world is not None:  # every rank batches as rank 0 does: the same features as one process
            batch_size = world.broadcast(batch_size, "agreeing on the batch size")
        out = embed(encoder, data, views, cache=cache, batch_size=batch_size, num_workers=num_workers,
                    prefetch=prefetch, limit=limit, strict=strict, desc=desc, progress=progress,
                    fingerprint=fingerprint)
        for e in out.values():
            e.batch_size = batch_size
        return out
    if world is not None:
        return _embed_job(encoder, data, views, world, cache, batch_size, num_workers, limit, strict, desc, progress,
                          prefetch=prefetch, fingerprint=fingerprint)
    parts: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    remaining = limit
    total = data.size if limit is None else (min(limit, data.size) if data.size is not None else limit)
    bar = progress_bar(total, desc, "img", enabled=progress)
    t0 = time.perf_counter()
    computed = cached_units = 0
    reused = dict.fromkeys(names, 0)
    fp = Fingerprint() if fingerprint else None
    data_s = forward_s = 0.0
    used = 0
    try:
        for unit in data.units:
            if remaining is not None and remaining <= 0:
                break
            used += 1
            unit_limit = _unit_limit(unit, remaining)
            if unit_limit is not None and fp is not None:
                fp.mark_incomplete()  # part of the unit: not every listed sample is read
            keys, hits, missing = _look_up(encoder, views, cache, unit, unit_limit)
            if not missing and fp is not None and limit is None and _lacks_digests(hits):
                # features cached without content digests (an older evalkit, --no-fingerprint): the
                # unit read once more, without the model, and its entries given the digests
                with progress_bar(_count(hits[names[0]]), f"{desc}: hashing (cached features without digests)", "img",
                                  enabled=progress) as hash_bar:
                    hashed = _hash_unit(unit, views, batch_size, num_workers, unit_limit, hash_bar, prefetch=prefetch)
                data_s += hashed["data_s"]
                with_digests = _with_digests(hits, hashed)
                if with_digests is None:  # the data no longer gives the cached samples: encode it anew
                    missing = list(names)
                else:
                    _store_digests(cache, encoder, views, unit, keys, hits, with_digests)
                    hits = with_digests
            if missing:
                fresh = _run_unit(encoder, unit, {n: views[n] for n in missing}, batch_size, num_workers, unit_limit,
                                  strict, bar, prefetch=prefetch, fingerprint=fingerprint)
                computed += _count(fresh[missing[0]])
                fresh = _agree_with_cache(encoder, unit, views, hits, fresh, batch_size, num_workers, unit_limit,
                                          strict, prefetch=prefetch, fingerprint=fingerprint)
                unit_reused, unit_data_s, unit_forward_s = _pop_stats(fresh)
                data_s, forward_s = data_s + unit_data_s, forward_s + unit_forward_s
                for n, k in unit_reused.items():
                    reused[n] += k
                for n, record in fresh.items():
                    hits[n] = record
                    if cache is not None:
                        cache.put("images", keys[n], record, meta=_unit_meta(encoder, n, views[n], unit, record))
                labels = next(iter(fresh.values()))["labels"]
            else:
                cached_units += 1
                first = hits[names[0]]
                if strict:
                    _strict_cached(first)
                bar.update(_count(first))
                labels = _cached_labels(unit, unit_limit, first)
            _add_unit(fp, {n: hits[n] for n in names}, labels, fresh if missing else ())
            for n in names:
                parts[n].append({**hits[n], "labels": labels})
            if remaining is not None:
                remaining -= len(labels) + len(hits[names[0]]["skipped"])
    finally:
        bar.close()
    if fp is not None and used < len(data.units):
        fp.mark_incomplete()  # --limit stopped before the last units
    seconds = time.perf_counter() - t0
    out = {n: _join(parts[n], encoder.embed_dim, seconds, computed, cached_units, reused[n], 1, [computed])
           for n in names}
    for e in out.values():
        e.fingerprint, e.data_seconds, e.forward_seconds = fp, data_s, forward_s
    return out


def _unit_limit(unit: Unit, remaining: int | None) -> int | None:
    """How many samples of ``unit`` a run with ``remaining`` samples to go takes (None: all);
    part of the unit's cache key."""
    return remaining if remaining is not None and (unit.size is None or remaining < unit.size) else None


def _look_up(encoder: Encoder, views: Mapping[str, View], cache: FeatureCache | None, unit: Unit,
             unit_limit: int | None) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """A unit's cache keys per view, the cached record of each (None where absent), and the views
    that must be encoded (one process, or rank 0 planning a job: the same lookup)."""
    keys = _unit_keys(encoder, views, unit, unit_limit)
    hits = {n: cache.get("images", keys[n]) if cache is not None else None for n in views}
    return keys, hits, _missing_views(list(views), hits)


def _unit_keys(encoder: Encoder, views: Mapping[str, View], unit: Unit, unit_limit: int | None) -> dict[str, str]:
    image_id = unit.content_id or unit.id
    return {n: _digest("embeddings", encoder.fingerprint, v.identity, image_id, unit_limit) for n, v in views.items()}


def _missing_views(names: list[str], hits: Mapping[str, dict[str, Any] | None]) -> list[str]:
    """The views a unit must be encoded under: those not cached, or all of them where cached
    views disagree on which samples they hold."""
    missing = [n for n in names if hits[n] is None]
    present = [n for n in names if hits[n] is not None]
    if any(not _same_samples(hits[n], hits[present[0]]) for n in present[1:]):  # type: ignore[arg-type]
        return list(names)  # cached by runs that skipped different samples: redo together
    return missing


def _agree_with_cache(encoder: Encoder, unit: Unit, views: Mapping[str, View], hits: Mapping[str, Any],
                      fresh: dict[str, dict[str, Any]], batch_size: int, num_workers: int, unit_limit: int | None,
                      strict: bool, *, prefetch: int | None = None, fingerprint: bool = False
                      ) -> dict[str, dict[str, Any]]:
    """``fresh`` records of some views, or, where a cached view of the unit skipped other samples
    than this pass (a file that failed to read then, or now), a new pass for every view: every
    transform must score the same samples."""
    reference = next(iter(fresh.values()))
    if any(not _same_samples(hits[n], reference) for n in views if n not in fresh):
        return _run_unit(encoder, unit, views, batch_size, num_workers, unit_limit, strict, NoProgress(),
                         prefetch=prefetch, fingerprint=fingerprint)
    return fresh


def _strict_cached(first: dict[str, Any]) -> None:
    """A sample an earlier run skipped (or made by a fallback) fails --strict just as it would if
    decoded now."""
    if first["skipped"]:
        key, why = first["skipped"][0]
        raise SampleDecodeError(f"sample {key}: cannot decode ({why}; recorded in the feature cache "
                                f"by an earlier run); rerun without --strict to skip it")
    if first.get("noted"):
        key, why = first["noted"][0]
        raise SampleDecodeError(f"sample {key}: {why} (recorded in the feature cache by an earlier "
                                f"run); rerun without --strict to accept it")


def _cached_labels(unit: Unit, unit_limit: int | None, first: dict[str, Any]) -> list[Any]:
    # features shared with another labelling of the same images: this unit's own labels
    return first["labels"] if (unit.content_id or unit.id) == unit.id else _unit_labels(unit, unit_limit, first["keys"])


def _count(record: dict[str, Any]) -> int:
    """Samples a unit's record covers, scored or skipped."""
    return len(record["keys"]) + len(record["skipped"])


def cached_embeddings(encoder: Encoder, data: SourceData, view: View, cache: FeatureCache, *,
                      limit: int | None = None) -> Embeddings | None:
    """``data``'s embeddings under ``view`` read from ``cache`` alone: what :func:`embed` returns
    for a run whose every unit is cached (the same units, limits, cache keys and labels), or None
    when any unit is not in the cache. Nothing is decoded and nothing runs through the model: a
    finished run is re-scored this way (the protocol envelope, evalkit.reporting.envelope)."""
    views = {"view": as_view(view, "view")}
    remaining = limit
    parts: list[dict[str, Any]] = []
    fp = Fingerprint()
    for unit in data.units:
        if remaining is not None and remaining <= 0:
            break
        unit_limit = _unit_limit(unit, remaining)
        if unit_limit is not None:
            fp.mark_incomplete()
        _, hits, missing = _look_up(encoder, views, cache, unit, unit_limit)
        if missing:
            return None
        record = hits["view"]
        labels = _cached_labels(unit, unit_limit, record)
        _add_unit(fp, hits, labels, ())
        parts.append({**record, "labels": labels})
        if remaining is not None:
            remaining -= len(labels) + len(record["skipped"])
    if len(parts) < len(data.units):
        fp.mark_incomplete()
    out = _join(parts, encoder.embed_dim, 0.0, 0, len(parts), 0, 1, [0])
    out.fingerprint = fp
    return out


# -- the same, shared by the ranks of a job ----------------------------------------------------


@dataclass(frozen=True)
class UnitTask:
    """A unit rank 0 found missing from the cache, and the rank it gave it to."""

    index: int  # into data.units
    unit_id: str
    limit: int | None
    views: tuple[str, ...]  # the views to encode it under
    keys: dict[str, str]  # their cache keys
    samples: int | None  # how many samples it holds (None: not known without reading it)
    rank: int
    hash_only: bool = False  # cached under every view, without content digests: read and hashed, no model


def assign_units(sizes: Sequence[int | None], ranks: int) -> list[int]:
    """The rank of each missing unit: in unit order, each to the rank with the fewest samples so
    far (the lowest such rank on a tie), so equal units go round-robin and a small last unit goes
    to the least loaded rank. Units of unknown size count as equal. Deterministic: every rank
    would compute the same; rank 0 computes it and sends it."""
    weights = [1] * len(sizes) if any(s is None for s in sizes) else [max(int(s), 1) for s in sizes]  # type: ignore[arg-type]
    load = [0] * ranks
    out = []
    for w in weights:
        r = min(range(ranks), key=lambda k: (load[k], k))
        out.append(r)
        load[r] += w
    return out


def _planned_samples(unit: Unit, unit_limit: int | None, need: bool) -> int | None:
    """The samples a run takes from ``unit`` (its size, counted without decoding where ``need``
    and unknown, capped by its limit)."""
    size = unit.size
    if size is None and need and unit.count is not None:
        size = unit.count()
    if size is None:
        return None
    return size if unit_limit is None else min(size, unit_limit)


def plan_units(encoder: Encoder, data: SourceData, views: Mapping[str, View], cache: FeatureCache | None,
               limit: int | None, strict: bool, ranks: int, *, fingerprint: bool = False
               ) -> tuple[list[tuple[int, int | None, dict[str, Any]]], list[UnitTask]]:
    """Rank 0's look at the cache before a job embeds ``data``: per unit in use (index, limit,
    the cached record of each view or None), and the missing units as :class:`UnitTask`, assigned
    to ranks (:func:`assign_units`). The units in use and their limits are those a single process
    takes, so the cache keys are the same for any number of processes. With ``fingerprint`` and
    no ``limit``, a unit cached without content digests is a task too (``hash_only``: its samples
    are read and hashed, not encoded)."""
    names = list(views)
    remaining = limit
    used: list[tuple[int, int | None, dict[str, Any]]] = []
    todo: list[tuple[int, str, int | None, tuple[str, ...], dict[str, str], int | None, bool]] = []
    for i, unit in enumerate(data.units):
        if remaining is not None and remaining <= 0:
            break
        unit_limit = _unit_limit(unit, remaining)
        keys, hits, missing = _look_up(encoder, views, cache, unit, unit_limit)
        if missing:
            samples = _planned_samples(unit, unit_limit, remaining is not None)
            todo.append((i, unit.id, unit_limit, tuple(missing), {n: keys[n] for n in missing}, samples, False))
        else:
            if strict:
                _strict_cached(hits[names[0]])  # type: ignore[arg-type]
            samples = _count(hits[names[0]])  # type: ignore[arg-type]
            if fingerprint and limit is None and _lacks_digests(hits):
                todo.append((i, unit.id, unit_limit, tuple(names), dict(keys), samples, True))
        used.append((i, unit_limit, hits))
        if remaining is not None:
            if samples is None:
                raise DataError(f"unit {unit.id}: its size is unknown and it cannot be counted, so --limit cannot be "
                                f"planned over several processes; run it in one process")
            remaining -= samples
    ranks_of = assign_units([t[5] for t in todo], ranks)
    return used, [UnitTask(*t[:6], rank=r, hash_only=t[6]) for t, r in zip(todo, ranks_of, strict=True)]


class _JobBar:
    """Rank 0's one progress bar for the whole job: its own batches as they finish, and the other
    ranks' units as they finish (read from the launcher's key-value store at each of its own batches,
    at most ten times a second; while rank 0 waits for the others' last units, the bar waits too)."""

    def __init__(self, world: distributed.World, key: str, bar: Any) -> None:
        self.world, self.key, self.bar = world, key, bar
        self.others = 0
        self.last = 0.0

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.poll()

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        value = self.world.add_progress(self.key, 0)
        if value is not None and value > self.others:
            self.bar.update(value - self.others)
            self.others = value


def _embed_job(encoder: Encoder, data: SourceData, views: dict[str, View], world: distributed.World,
               cache: FeatureCache | None, batch_size: int, num_workers: int, limit: int | None, strict: bool,
               desc: str, progress: bool, *, prefetch: int | None = None, fingerprint: bool = True
               ) -> dict[str, Embeddings]:
    """:func:`embed` as a collective step of a job (see there). Each rank's fresh records carry
    their content digests and timings to rank 0 with the features."""
    names = list(views)
    t0 = time.perf_counter()
    if world.is_main:
        try:
            used, tasks = plan_units(encoder, data, views, cache, limit, strict, world.size, fingerprint=fingerprint)
        except Exception as e:
            world.announce("embed", None)  # the others wait for rank 0 to end the task
            raise e
        world.announce("embed", {"tasks": tasks, "units": len(data.units)})
    else:
        info = world.announce("embed")
        if info is None:  # rank 0 failed to plan; it ends the task
            world.settle()
            raise distributed.DistributedError(f"rank {world.rank}: rank 0 failed to plan {desc} but went on")
        tasks = info["tasks"]
        if info["units"] != len(data.units) or any(data.units[t.index].id != t.unit_id for t in tasks):
            raise distributed.DistributedError(f"rank {world.rank}: {desc}: this rank's data differs from rank 0's "
                                               f"(units {len(data.units)} here, {info['units']} there); every rank "
                                               f"must see the same dataset")
    progress_key = f"embed/{world.step}"
    total = data.size if limit is None else (min(limit, data.size) if data.size is not None else limit)
    bar = progress_bar(total, desc, "img", enabled=progress and world.is_main)
    mine = [t for t in tasks if t.rank == world.rank]

    def work(tracker: Any) -> tuple[dict[int, tuple[dict[str, dict[str, Any]], dict[str, int], float, float]],
                                    dict[int, dict[str, Any]], int]:
        done: dict[int, tuple[dict[str, dict[str, Any]], dict[str, int], float, float]] = {}
        hashed: dict[int, dict[str, Any]] = {}  # hash-only units: rank 0 adds the digests to their entries
        computed = 0
        for t in mine:
            if t.hash_only:
                with progress_bar(t.samples, f"{desc}: hashing (cached features without digests)", "img",
                                  enabled=progress and world.is_main) as hash_bar:
                    hashed[t.index] = _hash_unit(data.units[t.index], views, batch_size, num_workers, t.limit,
                                                 hash_bar, prefetch=prefetch)
                n_done = len(hashed[t.index]["keys"]) + len(hashed[t.index]["skipped"])
                if world.is_main:
                    tracker.update(n_done)
                else:
                    world.add_progress(progress_key, n_done)
                continue
            fresh = _run_unit(encoder, data.units[t.index], {n: views[n] for n in t.views}, batch_size, num_workers,
                              t.limit, strict, tracker, prefetch=prefetch, fingerprint=fingerprint)
            reused, data_s, forward_s = _pop_stats(fresh)
            if cache is not None:
                for n, record in fresh.items():
                    cache.put("images", t.keys[n], record,
                              meta=_unit_meta(encoder, n, views[n], data.units[t.index], record))
            done[t.index] = (fresh, reused, data_s, forward_s)
            n_done = _count(next(iter(fresh.values())))
            computed += n_done
            if not world.is_main:
                world.add_progress(progress_key, n_done)
        return done, hashed, computed

    try:
        if world.is_main:
            tracker = _JobBar(world, progress_key, bar)
            encoded = {t.index for t in tasks}
            for index, _, hits in used:
                if index not in encoded:  # cached: done
                    bar.update(_count(hits[names[0]]))
            own = _outcome(world, lambda: work(tracker))
            shares = world.gather(own if own[0] == "error" else ("ok", None), f"gathering {desc}")
            assert shares is not None
            tracker.poll(force=True)
        else:
            own = _outcome(world, lambda: work(NoProgress()))
            world.gather(own, f"gathering {desc}")
    finally:
        bar.close()
    if not world.is_main:
        meta = world.broadcast(None, f"receiving {desc}")
        if meta is None:  # rank 0 failed to join the parts; it ends the task
            world.settle()
            raise distributed.DistributedError(f"rank {world.rank}: rank 0 failed to join {desc} but went on")
        world.settle()
        return {n: Embeddings(_placeholder(len(meta["keys"]), encoder.embed_dim), meta["labels"], meta["keys"],
                              meta["skipped"], meta["seconds"], meta["computed"], meta["cached_units"],
                              meta["reused"][n], meta["noted"], world.size, meta["samples_per_rank"])
                for n in names}
    try:
        embs = _join_job(encoder, data, views, used, tasks, own, shares, batch_size, num_workers, strict, cache,
                         world.size, time.perf_counter() - t0, prefetch=prefetch, fingerprint=fingerprint)
    except Exception:
        world.broadcast(None, f"sending {desc}")
        raise
    first = embs[names[0]]
    world.broadcast({"keys": first.keys, "labels": first.labels, "skipped": first.skipped, "noted": first.noted,
                     "seconds": first.seconds, "computed": first.computed, "cached_units": first.cached_units,
                     "reused": {n: e.reused for n, e in embs.items()}, "samples_per_rank": first.samples_per_rank},
                    f"sending {desc}")
    return embs


def _join_job(encoder: Encoder, data: SourceData, views: dict[str, View], used: list[tuple[int, int | None, dict]],
              tasks: list[UnitTask], own: tuple[str, Any], shares: list[Any], batch_size: int, num_workers: int,
              strict: bool, cache: FeatureCache | None, ranks: int, seconds: float, *, prefetch: int | None = None,
              fingerprint: bool = True) -> dict[str, Embeddings]:
    """Rank 0: the cached records and the ranks' fresh ones, in unit order (the ranks' errors
    raised, the first rank's first)."""
    names = list(views)
    results = _results([own if r == 0 else share for r, share in enumerate(shares)])
    samples_per_rank = [computed for _, _, computed in results]
    fresh_by_unit: dict[int, tuple[dict[str, dict[str, Any]], dict[str, int], float, float]] = {}
    hashed_by_unit: dict[int, dict[str, Any]] = {}
    for done, hashed, _ in results:
        fresh_by_unit.update(done)
        hashed_by_unit.update(hashed)
    fp = Fingerprint() if fingerprint else None
    data_s = sum(v[2] for v in fresh_by_unit.values()) + sum(h["data_s"] for h in hashed_by_unit.values())
    forward_s = sum(v[3] for v in fresh_by_unit.values())
    if fp is not None and (len(used) < len(data.units) or any(unit_limit is not None for _, unit_limit, _ in used)):
        fp.mark_incomplete()
    missing = {t.index for t in tasks if not t.hash_only}
    to_hash = {t.index for t in tasks if t.hash_only}
    lost = sorted((missing - set(fresh_by_unit)) | (to_hash - set(hashed_by_unit)))
    if lost:  # cannot happen unless a rank skipped its share: never join a dataset with a hole in it
        raise distributed.DistributedError(f"rank 0: unit {data.units[lost[0]].id} was assigned but not returned")
    parts: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    reused = dict.fromkeys(names, 0)
    cached_units = 0
    for index, unit_limit, hits in used:
        unit = data.units[index]
        if index in to_hash:  # cached without digests: the hash pass's digests added to its entries
            with_digests = _with_digests(hits, hashed_by_unit[index])
            keys = _unit_keys(encoder, views, unit, unit_limit)
            if with_digests is None:  # the data no longer gives the cached samples: encoded anew, here
                fresh = _run_unit(encoder, unit, views, batch_size, num_workers, unit_limit, strict, NoProgress(),
                                  prefetch=prefetch, fingerprint=fingerprint)
                samples_per_rank[0] += _count(next(iter(fresh.values())))
                fresh_reused, again_data_s, again_forward_s = _pop_stats(fresh)
                data_s, forward_s = data_s + again_data_s, forward_s + again_forward_s
                for n, k in fresh_reused.items():
                    reused[n] += k
                if cache is not None:
                    for n, record in fresh.items():
                        cache.put("images", keys[n], record, meta=_unit_meta(encoder, n, views[n], unit, record))
                hits = fresh
                labels = next(iter(fresh.values()))["labels"]
                _add_unit(fp, {n: hits[n] for n in names}, labels, fresh)
            else:
                _store_digests(cache, encoder, views, unit, keys, hits, with_digests)
                hits = with_digests
                cached_units += 1
                labels = _cached_labels(unit, unit_limit, hits[names[0]])
                _add_unit(fp, {n: hits[n] for n in names}, labels, ())
        elif index in missing:
            fresh, fresh_reused, _, _ = fresh_by_unit[index]
            agreed = _agree_with_cache(encoder, unit, views, hits, fresh, batch_size, num_workers, unit_limit, strict,
                                       prefetch=prefetch, fingerprint=fingerprint)
            if agreed is not fresh:  # encoded again, here, under every view
                samples_per_rank[0] += _count(next(iter(agreed.values())))
                fresh_reused, again_data_s, again_forward_s = _pop_stats(agreed)
                data_s, forward_s = data_s + again_data_s, forward_s + again_forward_s
                if cache is not None:
                    keys = _unit_keys(encoder, views, unit, unit_limit)
                    for n, record in agreed.items():
                        cache.put("images", keys[n], record, meta=_unit_meta(encoder, n, views[n], unit, record))
            hits = {**hits, **agreed}
            for n, k in fresh_reused.items():
                reused[n] += k
            labels = next(iter(agreed.values()))["labels"]
            _add_unit(fp, {n: hits[n] for n in names}, labels, agreed)
        else:
            cached_units += 1
            labels = _cached_labels(unit, unit_limit, hits[names[0]])
            _add_unit(fp, {n: hits[n] for n in names}, labels, ())
        for n in names:
            parts[n].append({**hits[n], "labels": labels})
    computed = sum(samples_per_rank)
    out = {n: _join(parts[n], encoder.embed_dim, seconds, computed, cached_units, reused[n], ranks, samples_per_rank)
           for n in names}
    for e in out.values():
        e.fingerprint, e.data_seconds, e.forward_seconds = fp, data_s, forward_s
    return out


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
          reused: int, world_size: int, samples_per_rank: list[int]) -> Embeddings:
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
        world_size,
        list(samples_per_rank),
    )


def _run_unit(
    encoder: Encoder,
    unit: Unit,
    views: Mapping[str, View],
    batch_size: int,
    num_workers: int,
    limit: int | None,
    strict: bool,
    bar: Any,
    *,
    prefetch: int | None = None,
    fingerprint: bool = False,
) -> dict[str, dict[str, Any]]:
    """One unit through the model: per view name a record (features, labels, keys, skipped,
    noted; with ``fingerprint``, ``content_digests``: a (N, 32) uint8 tensor, the content digest
    of each scored sample, evalkit.data.fingerprint, absent where some sample's content is of a
    kind the scheme does not hash), plus what :func:`_pop_stats` takes off again before the record
    is cached: ``reused`` (how many of its embeddings were copied from another view's identical
    pixels), ``data_s`` (the loader's seconds: read, decode, transform, hash) and ``forward_s``
    (this view's seconds in its per-batch step, the forward)."""
    names = list(views)
    loader = DataLoader(
        _UnitDataset(unit, [views[n].sample for n in names], limit, fingerprint),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        **loader_kwargs(encoder.device, num_workers, prefetch),  # pinned memory on CUDA, prefetch_factor
    )
    # an earlier view with the same per-batch step: where the pixels are equal, so is the embedding
    same_step = {j: [i for i in range(j) if views[names[i]].batch_key == views[names[j]].batch_key]
                 for j in range(len(names))}
    feats: list[list[torch.Tensor]] = [[] for _ in names]
    labels: list[Any] = []
    keys: list[str] = []
    skipped: list[tuple[str, str]] = []
    noted: list[tuple[str, str]] = []
    digests: list[bytes | None] = []
    data_s = 0.0
    clocks = [_ForwardClock(encoder.device) for _ in names]
    reused = [0] * len(names)
    # No worker processes: a thread decodes and transforms the next batches while the model runs
    # (PIL and torch release the GIL in their C code), so loading overlaps the forward.
    for batch in background(loader, prefetch_depth(prefetch)) if num_workers == 0 else loader:
        if batch["skipped"] and strict:
            key, why = batch["skipped"][0]
            raise SampleDecodeError(f"sample {key}: cannot decode ({why}); rerun without --strict to skip it")
        if batch["noted"] and strict:
            key, why = batch["noted"][0]
            raise SampleDecodeError(f"sample {key}: {why}; rerun without --strict to accept it")
        skipped.extend(batch["skipped"])
        noted.extend(batch["noted"])
        data_s += batch["data_s"]
        if batch["images"] is not None:
            # on the model's device before the per-batch step (normalising there too): from pinned
            # memory the copy does not block; on the CPU nothing moves
            tensors = [to_device(t, encoder.device) for t in batch["images"]]
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
                    out = clocks[j].run(views[name].embed, encoder, tensors[j])
                else:
                    reused[j] += int((~todo).sum())
                    if todo.any():
                        out[todo] = clocks[j].run(views[name].embed, encoder, tensors[j][todo])
                done.append(out)
                feats[j].append(out)
            labels.extend(batch["labels"])
            keys.extend(batch["keys"])
            digests.extend(batch["content_digests"])
        bar.update(len(batch["keys"]) + len(batch["skipped"]))
    record: dict[str, Any] = {"labels": labels, "keys": keys, "skipped": skipped, "noted": noted}
    if fingerprint:  # None: hashed, but some content is of a kind the scheme does not hash
        record["content_digests"] = _digest_tensor(digests) if all(d is not None for d in digests) else None  # type: ignore[arg-type]
    records = {name: {"features": torch.cat(f) if f else torch.empty(0, encoder.embed_dim), **record}
               for name, f in zip(names, feats, strict=True)}
    for j, name in enumerate(names):
        records[name].update(reused=reused[j], data_s=data_s if j == 0 else 0.0, forward_s=clocks[j].seconds())
    return records


def _lacks_digests(hits: Mapping[str, dict[str, Any] | None]) -> bool:
    """Every view of a unit is cached and no record of it says what its samples' content digests
    are: entries written before evalkit took fingerprints, or by a run with ``--no-fingerprint``
    (a record hashed without result, content of a kind the scheme does not hash, holds None)."""
    return all(r is not None and "content_digests" not in r for r in hits.values())


def _hash_unit(unit: Unit, views: Mapping[str, View], batch_size: int, num_workers: int, limit: int | None,
               bar: Any, *, prefetch: int | None = None) -> dict[str, Any]:
    """A cached unit's samples read, decoded and put through every view's per-sample step in the
    data loader, exactly as :func:`_run_unit` does, hashed, and not run through the model: the
    scored samples' ``keys``, their ``content_digests`` (bytes, or None where not hashed), the
    ``skipped`` samples and the loader's seconds (``data_s``). The views' tensors are dropped
    in the loader (workers send none back)."""
    names = list(views)
    loader = DataLoader(
        _UnitDataset(unit, [views[n].sample for n in names], limit, True),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate_digests,
        **loader_kwargs("cpu", num_workers, prefetch),  # nothing goes to a device: nothing pinned
    )
    keys: list[str] = []
    digests: list[bytes | None] = []
    skipped: list[tuple[str, str]] = []
    data_s = 0.0
    for batch in background(loader, prefetch_depth(prefetch)) if num_workers == 0 else loader:
        keys.extend(batch["keys"])
        digests.extend(batch["content_digests"])
        skipped.extend(batch["skipped"])
        data_s += batch["data_s"]
        bar.update(len(batch["keys"]) + len(batch["skipped"]))
    return {"keys": keys, "content_digests": digests, "skipped": skipped, "data_s": data_s}


def _with_digests(hits: Mapping[str, dict[str, Any]], hashed: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The cached records of a unit, each with the content digests of a hash pass over it
    (:func:`_hash_unit`) in its own sample order (new dicts; the features are the same tensors);
    None when the pass did not give the samples the records hold (one that failed to read then
    reads now, or the other way round): those records cannot be bound to the data as it is."""
    first = next(iter(hits.values()))
    keys = list(first["keys"])
    if sorted(s[0] for s in first["skipped"]) != sorted(s[0] for s in hashed["skipped"]):
        return None
    if hashed["keys"] == keys:
        digests = list(hashed["content_digests"])
    elif sorted(hashed["keys"]) == sorted(keys) and len(set(keys)) == len(keys):
        # the same samples in another order (another batch size or number of workers wrote them)
        by_key = dict(zip(hashed["keys"], hashed["content_digests"], strict=True))
        digests = [by_key[k] for k in keys]
    else:
        return None
    cds = _digest_tensor(digests) if all(d is not None for d in digests) else None  # type: ignore[arg-type]
    return {n: {**record, "content_digests": cds} for n, record in hits.items()}


def _store_digests(cache: FeatureCache | None, encoder: Encoder, views: Mapping[str, View], unit: Unit,
                   keys: Mapping[str, str], old: Mapping[str, dict[str, Any]],
                   new: Mapping[str, dict[str, Any]]) -> None:
    """Each cache entry of a unit that lacked content digests written again with them (the same
    key, the same features; atomically, see evalkit.features.cache): the next run needs no hash
    pass."""
    if cache is None:
        return
    for n, record in new.items():
        if "content_digests" not in old[n]:
            cache.put("images", keys[n], record, meta=_unit_meta(encoder, n, views[n], unit, record))


class _ForwardClock:
    """Seconds spent in a view's per-batch step (the forward). On a GPU, timed by CUDA events
    (the kernels' own time, read when the unit is done; no synchronisation in the loop); on a
    CPU, by the wall clock around the call."""

    def __init__(self, device: Any) -> None:
        self.device = torch.device(device) if str(device).startswith("cuda") and torch.cuda.is_available() else None
        self.wall = 0.0
        self.events: list[tuple[Any, Any]] = []

    def run(self, fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        if self.device is None:
            t0 = time.perf_counter()
            out = fn(*args)
            self.wall += time.perf_counter() - t0
            return out
        stream = torch.cuda.current_stream(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        out = fn(*args)
        end.record(stream)
        self.events.append((start, end))
        return out

    def seconds(self) -> float:
        if not self.events:
            return self.wall
        self.events[-1][1].synchronize()
        return self.wall + sum(s.elapsed_time(e) for s, e in self.events) / 1000.0


def _digest_tensor(digests: Sequence[bytes]) -> torch.Tensor:
    """Content digests as one (N, 32) uint8 tensor: what a cache entry stores."""
    if not digests:
        return torch.empty(0, DIGEST_SIZE, dtype=torch.uint8)
    return torch.frombuffer(bytearray(b"".join(digests)), dtype=torch.uint8).view(len(digests), DIGEST_SIZE)


def _pop_stats(fresh: dict[str, dict[str, Any]]) -> tuple[dict[str, int], float, float]:
    """What a unit's fresh records say of the pass besides the features, taken off them before
    they are cached: per view its reused embeddings; the loader's seconds; the forward's seconds."""
    reused = {n: record.pop("reused", 0) for n, record in fresh.items()}
    data_s = sum(record.pop("data_s", 0.0) for record in fresh.values())
    forward_s = sum(record.pop("forward_s", 0.0) for record in fresh.values())
    return reused, data_s, forward_s


def _add_unit(fp: Fingerprint | None, records: Mapping[str, dict[str, Any]], labels: list[Any],
              fresh: Iterable[str]) -> None:
    """One unit's samples into the fingerprint ``fp``: each scored sample's digest (its content
    digest, from whichever record holds them, fresh ones first, and its label here), the skipped
    ones as undecodable; scored samples of a record without digests (a cache entry written
    without them) leave it incomplete."""
    if fp is None:
        return
    fresh = [n for n in fresh if n in records]
    first = next(iter(records.values()))
    fp.add_undecodable(len(first["skipped"]))
    for n in [*fresh, *(n for n in records if n not in fresh)]:
        record = records[n]
        cds = record.get("content_digests")
        if cds is not None and record["keys"] == first["keys"] and int(cds.shape[0]) == len(first["keys"]):
            fp.sources.add("run" if n in fresh else "cache")
            raw = cds.contiguous().numpy().tobytes()
            for i, label in enumerate(labels):
                content = raw[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE]
                try:
                    fp.add(labelled_digest(content, label), content)
                except FingerprintError:  # a label of a plugin's own type: not in the root
                    fp.add_unhashed(1)
            return
    fp.sources.add("run" if fresh else "cache")
    fp.add_unhashed(len(first["keys"]))


def _unit_meta(encoder: Encoder, name: str, view: View, unit: Unit, record: dict[str, Any]) -> dict[str, Any]:
    """What ``evalkit cache ls`` shows of an image entry: whose, which view, which unit."""
    return {"model": encoder.name, "fingerprint": encoder.fingerprint, "view": name,
            "view_identity": view.identity, "unit": unit.content_id or unit.id,
            "samples": len(record["keys"]), "skipped": len(record["skipped"])}


def _text_meta(encoder: Encoder, **counts: int) -> dict[str, Any]:
    return {"model": encoder.name, "fingerprint": encoder.fingerprint, **counts}
