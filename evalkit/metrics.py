"""Metrics as pure functions on tensors, numerically identical to clip_benchmark 1.6.x.

Values are fractions in [0, 1], as clip_benchmark writes them; reports turn them into percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

# The metric table (names, short names, direction, derivation) is data in a torch-free module at
# the same layer, so reporting reads it without torch; a derived metric is computed there, once.
from evalkit.metric_table import METRICS, derive

__all__ = ["METRICS", "derive", "classification_logits", "topk_accuracy", "mean_per_class_recall",
           "zero_shot_classification_metrics", "ranked_classes", "RetrievalTopK", "retrieval_metrics",
           "retrieval_topk", "RetrievalRanks", "retrieval_ranks", "DEFAULT_RETRIEVAL_CHUNK"]


def classification_logits(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """``100 · normalised image features · classifier`` (clip_benchmark's fixed logit scale)."""
    return 100.0 * image_features.float() @ classifier.float()


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1,)) -> list[float]:
    """Fraction of samples whose label is among the top-k logits (torch.topk tie order, as CB)."""
    n = target.shape[0]
    if n == 0:
        raise ValueError("topk_accuracy: no samples")
    pred = logits.topk(max(ks), dim=1, largest=True, sorted=True).indices.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [float(correct[:k].reshape(-1).float().sum()) / n for k in ks]


def mean_per_class_recall(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Balanced accuracy: mean recall over the classes that occur in ``target`` (sklearn's
    ``balanced_accuracy_score``, which clip_benchmark uses)."""
    classes = torch.unique(target)
    # Each class's recall in float64 (hits / count, correctly rounded, as sklearn's diag / row sum),
    # then numpy's mean of them: numpy sums pairwise, torch in another order, and only the same
    # order gives sklearn's value to the last bit.
    recalls = [int((pred[target == c] == c).sum()) / int((target == c).sum()) for c in classes]
    return float(np.mean(np.asarray(recalls, dtype=np.float64)))


def zero_shot_classification_metrics(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> dict[str, float]:
    """``acc1``, ``acc5`` (only with ≥ 5 classes, as clip_benchmark) and ``mean_per_class_recall``."""
    if n_classes >= 5:
        acc1, acc5 = topk_accuracy(logits, target, (1, 5))
        metrics = {"acc1": acc1, "acc5": acc5}
    else:
        (acc1,) = topk_accuracy(logits, target, (1,))
        metrics = {"acc1": acc1}
    metrics["mean_per_class_recall"] = mean_per_class_recall(logits.argmax(dim=1), target)
    return metrics


def ranked_classes(logits: torch.Tensor, k: int, counted: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``min(k, classes)`` best classes and their logits, best first, for the
    per-sample records: the first ``counted`` (1, or all of them) are exactly the indices
    :func:`topk_accuracy` counts when ``max(ks) == counted``.

    ``torch.topk``'s choice among tied logits depends on how many it is asked for (see the note on
    ties below), so with ``counted`` 1 and more columns kept the first column is set to
    ``topk(1)``'s pick where the two calls chose different classes among tied best logits (the
    values stay: every one of them is the row's maximum)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1, largest=True, sorted=True)
    if counted == k:
        return top.indices, top.values
    if counted != 1:
        raise ValueError(f"ranked_classes: counted must be 1 or k ({k}), got {counted}")
    first = logits.topk(1, dim=1, largest=True, sorted=True).indices[:, 0]
    indices = top.indices
    differs = (indices[:, 0] != first).nonzero()[:, 0].tolist()
    if differs:
        indices = indices.clone()
        for r in differs:  # only where the best logits tie
            row = indices[r]
            at = (row == first[r]).nonzero()
            if len(at):
                row[int(at[0, 0])] = row[0]
            row[0] = first[r]
    return indices, top.values


# --- zero-shot image–text retrieval ---------------------------------------------------------------
#
# clip_benchmark 1.6.2 (``metrics/zeroshot_retrieval.evaluate``) builds the full score matrix
# ``texts_emb @ images_emb.t()`` (M × N), a boolean positive-pair matrix of the same size, and for
# each K calls ``torch.topk(scores_batch, K, dim=1)`` on batches of rows (texts: text→image, named
# ``image_retrieval_recall@K``) and of columns (images: image→text, ``text_retrieval_recall@K``). A
# query hits when at least one of its positives is among those K indices; the recall is the
# float32 mean of the hits. The functions below give the same numbers from blocks of queries, so
# memory is bounded by ``chunk_size × candidates`` instead of M × N:
#
# * Scores: each block is the same expression restricted to a block of rows (texts) or columns
#   (images) of ``texts @ images.t()``. BLAS libraries multiply very small matrices through other
#   kernels whose rounding differs in the last bit (MKL, seen here: blocks of fewer than 12 rows),
#   so a block is never multiplied with fewer than ``_MIN_GEMM_ROWS`` queries: a smaller chunk is
#   cut out of a wider window. Chunking is only about memory; the numbers do not depend on it.
# * Ties: which of several equal scores ``torch.topk`` keeps depends on K and on the row's values
#   only (the CPU kernel sorts each row on its own), not on the other rows of the batch or on
#   strides; taking the first K of one top-max(K) call can pick other tied indices than topk(K).
#   Where the K-th and (K+1)-th largest scores of a row differ, though, the K largest are the only
#   answer topk(K) can give. So one topk(max K + 1) per block serves every K, and only rows with a
#   tie at the K boundary are passed to topk(K) itself, on whole rows, as clip_benchmark calls it.

_MIN_GEMM_ROWS = 32
DEFAULT_RETRIEVAL_CHUNK = 512
_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class RetrievalTopK(NamedTuple):
    """Each query's best candidates, best first (``torch.topk`` order, ties as clip_benchmark).

    ``i2t_indices`` (N, k) are caption indices per image, ``t2i_indices`` (M, k) image indices per
    caption; ``*_scores`` the matching similarities."""

    i2t_indices: torch.Tensor
    i2t_scores: torch.Tensor
    t2i_indices: torch.Tensor
    t2i_scores: torch.Tensor


def _check_retrieval_inputs(image_features: torch.Tensor, text_features: torch.Tensor,
                            text_to_image: torch.Tensor | None = None) -> None:
    if image_features.ndim != 2 or text_features.ndim != 2:
        raise ValueError(f"retrieval: features must be 2-D, got images {tuple(image_features.shape)} "
                         f"and texts {tuple(text_features.shape)}")
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(f"retrieval: feature widths differ: images {image_features.shape[1]}, "
                         f"texts {text_features.shape[1]}")
    if image_features.shape[0] == 0 or text_features.shape[0] == 0:
        raise ValueError(f"retrieval: no images ({image_features.shape[0]}) or no captions "
                         f"({text_features.shape[0]})")
    if text_to_image is None:
        return
    if text_to_image.shape != (text_features.shape[0],) or text_to_image.dtype not in _INDEX_DTYPES:
        raise ValueError(f"retrieval: text_to_image must be an integer tensor of shape "
                         f"({text_features.shape[0]},), got {text_to_image.dtype} {tuple(text_to_image.shape)}")
    lo, hi = int(text_to_image.min()), int(text_to_image.max())
    if lo < 0 or hi >= image_features.shape[0]:
        raise ValueError(f"retrieval: text_to_image holds image index {lo if lo < 0 else hi}, "
                         f"outside 0..{image_features.shape[0] - 1}")


def _map_blocks(queries: torch.Tensor, candidates: torch.Tensor, queries_are_texts: bool,
                chunk_size: int | None, fn):
    """Yield ``(start, end, fn(scores[start:end]))`` over the queries, a block at a time.

    ``scores`` is the (queries × candidates) block of ``texts @ images.t()`` (clip_benchmark's
    expression; image queries take its columns), multiplied over a window of at least
    ``_MIN_GEMM_ROWS`` queries (see the note above). ``fn`` should return something small: a block
    is freed before the next one is multiplied, so only one is ever alive."""
    n = queries.shape[0]
    if chunk_size is None:
        chunk_size = n
    elif chunk_size < 1:
        raise ValueError(f"retrieval: chunk_size must be ≥ 1, got {chunk_size}")
    window = max(chunk_size, _MIN_GEMM_ROWS)
    lo = hi = 0
    scores = None
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)
        if scores is None or end > hi:
            scores = None  # free the last block first
            lo = max(0, min(start, n - window))
            hi = min(n, lo + window)
            if queries_are_texts:  # rows of texts @ images.t()
                scores = queries[lo:hi] @ candidates.t()
            else:  # columns of texts @ images.t(), as rows
                scores = (candidates @ queries[lo:hi].t()).t()
        yield start, end, fn(scores[start - lo:end - lo])


def _topk_sets(scores: torch.Tensor, ks: Sequence[int]) -> dict[int, torch.Tensor]:
    """For each k, the indices ``torch.topk(scores, k, dim=1)`` picks, in some order.

    One ``topk`` with max(ks) + 1 serves every k whose k-th and (k+1)-th largest scores differ: the
    k largest are then the only k indices topk can return. Rows with a tie there (or NaN, which
    topk ranks first) are given to ``topk(k)`` itself, whose choice among tied scores depends on k."""
    return _topk_window(scores, ks)[0]


def _topk_window(scores: torch.Tensor, ks: Sequence[int]) -> tuple[dict[int, torch.Tensor], Any]:
    """:func:`_topk_sets`, and the one ``topk(max(ks) + 1)`` it was made from (values, indices)."""
    n = scores.shape[1]
    top = torch.topk(scores, min(max(ks) + 1, n), dim=1)
    out = {}
    for k in ks:
        if k >= n:  # every candidate
            out[k] = top.indices
            continue
        idx = top.indices[:, :k]
        kth, next_ = top.values[:, k - 1], top.values[:, k]
        tied = (kth == next_) | kth.isnan()
        if tied.any():
            idx = idx.clone()
            idx[tied] = torch.topk(scores[tied], k, dim=1).indices
        out[k] = idx
    return out, top


def _common_dtype(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor,
                      text_to_image: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
                      chunk_size: int | None = DEFAULT_RETRIEVAL_CHUNK) -> dict[str, float]:
    """Zero-shot image↔text recall@K, identical to clip_benchmark's ``zeroshot_retrieval.evaluate``.

    ``image_features`` (N, D) and ``text_features`` (M, D) are L2-normalised embeddings, as
    clip_benchmark makes them (``F.normalize(model.encode_*(x), dim=-1)``); they are used as given,
    never renormalised (renormalising unit vectors is not bit-exact). Scores are computed in their
    dtype (as clip_benchmark does; two dtypes are promoted to a common one) on their device.
    ``text_to_image`` (M,) is the index of each caption's image.

    Returns, for each K in ``ks``:

    * ``image_retrieval_recall@K`` and ``t2i_R@K`` (same value): text→image, the fraction of
      captions whose image is among their K best-scoring images;
    * ``text_retrieval_recall@K`` and ``i2t_R@K`` (same value): image→text, the fraction of images
      with **any** of their captions among their K best-scoring captions. An image with no caption
      is still a candidate for text→image and counts as a miss for image→text (clip_benchmark
      computes 0/0 = NaN for it, and NaN > 0 is false);

    and ``mean_recall``, the mean of all the image→text and text→image recalls (the six of
    R@1/5/10 for the default ``ks``). The first two keys are clip_benchmark's own (mind its naming:
    ``image_retrieval`` is text→image). Values are fractions in [0, 1].

    A K larger than the number of candidates (N images for text→image, M captions for image→text)
    means "all of them" (clip_benchmark's ``torch.topk`` raises instead); the key keeps the K asked.

    ``chunk_size`` queries are scored at a time (a block never smaller than 32 queries is
    multiplied), so memory is ``chunk_size × max(N, M)`` scores rather than N × M; ``None`` scores
    everything at once. The values are the same for every chunk size, ties included: a tie at
    the K boundary is resolved by ``torch.topk(row, K)``, the call clip_benchmark makes.
    Bit-identity with clip_benchmark holds for CPU tensors (it multiplies on the CPU); on CUDA a
    score may differ from its in the last bit, which can only matter at near-ties.
    """
    _check_retrieval_inputs(image_features, text_features, text_to_image)
    ks = list(dict.fromkeys(int(k) for k in ks))  # in order, once each
    if not ks or min(ks) < 1:
        raise ValueError(f"retrieval_metrics: ks must be positive, got {ks}")
    image_features, text_features = _common_dtype(image_features, text_features)
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    text_to_image = text_to_image.to(device=text_features.device, dtype=torch.long)

    # hits are written into tensors made up front: small tensors kept alive between the score
    # blocks would fragment the heap and raise the resident set far above the blocks' size
    device = text_features.device

    def topk_sets(scores: torch.Tensor) -> dict[int, torch.Tensor]:
        return _topk_sets(scores, ks)

    t2i_hits = {k: torch.empty(n_texts, dtype=torch.bool, device=device) for k in ks}
    for start, end, top in _map_blocks(text_features, image_features, True, chunk_size, topk_sets):
        target = text_to_image[start:end, None]
        for k in ks:
            t2i_hits[k][start:end] = (top[k] == target).any(dim=1)
    i2t_hits = {k: torch.empty(n_images, dtype=torch.bool, device=device) for k in ks}
    for start, end, top in _map_blocks(image_features, text_features, False, chunk_size, topk_sets):
        own = torch.arange(start, end, device=device)[:, None]
        for k in ks:
            i2t_hits[k][start:end] = (text_to_image[top[k]] == own).any(dim=1)
    return _recalls(t2i_hits, i2t_hits, ks)


def _recalls(t2i_hits: dict[int, torch.Tensor], i2t_hits: dict[int, torch.Tensor], ks: list[int]) -> dict[str, float]:
    """The metrics of :func:`retrieval_metrics` from each query's hits at each K."""

    def recall(hits: torch.Tensor) -> float:
        # float32 mean over all queries, as clip_benchmark's ``(...>0).float().mean().item()``
        return hits.float().mean().item()

    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = recall(t2i_hits[k])
        metrics[f"text_retrieval_recall@{k}"] = recall(i2t_hits[k])
    for k in ks:
        metrics[f"i2t_R@{k}"] = metrics[f"text_retrieval_recall@{k}"]
        metrics[f"t2i_R@{k}"] = metrics[f"image_retrieval_recall@{k}"]
    # the mean of every image→text and text→image recall (the metric table's derivation)
    metrics["mean_recall"] = derive("mean_recall", metrics)
    return metrics


def retrieval_topk(image_features: torch.Tensor, text_features: torch.Tensor, k: int = 10,
                   chunk_size: int | None = DEFAULT_RETRIEVAL_CHUNK) -> RetrievalTopK:
    """Each query's ``k`` best candidates in both directions (for ``--save-predictions``).

    Same inputs and score blocks as :func:`retrieval_metrics`; each row is ``torch.topk(scores,
    k)`` over all candidates, the call clip_benchmark makes, so the indices of
    ``retrieval_topk(..., k=K)`` are the ones whose hits give recall@K there, ties included. ``k``
    is cut to the number of candidates (N images for captions, M captions for images)."""
    _check_retrieval_inputs(image_features, text_features)
    if k < 1:
        raise ValueError(f"retrieval_topk: k must be ≥ 1, got {k}")
    image_features, text_features = _common_dtype(image_features, text_features)
    out = []
    for queries, candidates, are_texts in ((image_features, text_features, False),
                                           (text_features, image_features, True)):
        kk = min(k, candidates.shape[0])
        indices = torch.empty(queries.shape[0], kk, dtype=torch.long, device=queries.device)
        values = torch.empty(queries.shape[0], kk, dtype=queries.dtype, device=queries.device)
        for start, end, (v, i) in _map_blocks(queries, candidates, are_texts, chunk_size,
                                              lambda scores, kk=kk: torch.topk(scores, kk, dim=1)):
            values[start:end], indices[start:end] = v, i
        out += [indices, values]
    return RetrievalTopK(out[0], out[1], out[2], out[3])


class RetrievalRanks(NamedTuple):
    """Each query's rank of its best correct candidate, for the per-sample records.

    ``i2t_rank`` (N images): 0-based rank, among all captions, of the image's best-ranked own
    caption (-1: an image without captions); ``t2i_rank`` (M captions): the rank of the caption's
    own image among all images. ``*_hit`` (queries × len(ks)): whether the query hit at each K,
    exactly as :func:`retrieval_metrics` counts it; ``*_margin``: the best correct score minus the
    best wrong one (+inf with no wrong candidate, NaN for an image without captions).
    ``inexact``: queries whose rank cannot say every hit (see :func:`retrieval_ranks`).
    ``metrics``: :func:`retrieval_metrics`'s numbers, from these hits."""

    i2t_rank: torch.Tensor
    i2t_hit: torch.Tensor
    i2t_margin: torch.Tensor
    t2i_rank: torch.Tensor
    t2i_hit: torch.Tensor
    t2i_margin: torch.Tensor
    inexact: int
    metrics: dict[str, float]


def _positives_of_images(text_to_image: torch.Tensor, n_images: int) -> torch.Tensor:
    """(N images, most captions of one image): each image's caption indices, -1 past its own."""
    counts = torch.bincount(text_to_image, minlength=n_images)
    width = max(int(counts.max()), 1) if counts.numel() else 1
    order = torch.argsort(text_to_image, stable=True)
    owners = text_to_image[order]
    first = torch.cumsum(counts, 0) - counts
    out = torch.full((n_images, width), -1, dtype=torch.long, device=text_to_image.device)
    out[owners, torch.arange(len(order), device=order.device) - first[owners]] = order
    return out


def _rank_block(scores: torch.Tensor, positives: torch.Tensor, window: Any) -> tuple[torch.Tensor, ...]:
    """Per query of a block: the candidates ranked above its best positive (-1: it has none),
    and its best positive minus its best negative score. ``positives``: candidate indices per
    query, -1 for none; ``window``: the block's ``topk(max K + 1)`` (values, indices).

    The count is read off the window where the best positive beats the window's last value (no
    candidate outside it can then be above); only the other queries are counted over the whole
    row. A NaN score counts as above (``torch.topk`` ranks it first)."""
    n = scores.shape[1]
    valid = positives >= 0
    has = valid.any(dim=1)
    positive = scores.gather(1, positives.clamp(min=0)).masked_fill(~valid, float("-inf")).max(dim=1).values
    values = window.values
    above = (~(values <= positive[:, None])).sum(dim=1)
    if values.shape[1] < n:
        whole = (has & ~(positive > values[:, -1])).nonzero()[:, 0]
        if len(whole):
            if 2 * len(whole) > scores.shape[0]:  # most of the block: all of it, rather than a copy
                whole, rows = torch.arange(scores.shape[0], device=scores.device), scores
            else:
                rows = scores[whole]
            counted = (rows > positive[whole, None]).sum(dim=1, dtype=torch.int32).long()  # int32: twice as fast
            with_nan = values[whole, 0].isnan()  # topk ranks NaN first: only these rows hold one
            if with_nan.any():
                counted[with_nan] += rows[with_nan].isnan().sum(dim=1)
            above[whole] = counted
            del rows
    # the best negative: the first candidate of the top (positives + 1) that is not a positive
    depth = min(positives.shape[1] + 1, n)
    top = window if values.shape[1] >= depth else torch.topk(scores, depth, dim=1)
    is_positive = (top.indices[:, :depth, None] == positives[:, None, :]).any(dim=2)
    first_negative = (~is_positive).to(torch.uint8).argmax(dim=1)
    negative = top.values[:, :depth].gather(1, first_negative[:, None])[:, 0]
    negative = torch.where(is_positive.all(dim=1), torch.full_like(negative, float("-inf")), negative)
    margin = torch.where(has, positive - negative, torch.full_like(positive, float("nan")))
    return torch.where(has, above, torch.full_like(above, -1)), margin


def retrieval_ranks(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor,
                    ks: Sequence[int] = (1, 5, 10),
                    chunk_size: int | None = DEFAULT_RETRIEVAL_CHUNK) -> RetrievalRanks:
    """Every query's rank of its first correct match, and :func:`retrieval_metrics`'s numbers,
    from one pass over the same score blocks (same inputs, same memory bound): the hits are
    counted by the same code, so the metrics are the same to the bit, and for every K in ``ks``
    the float32 mean of ``0 <= rank < K`` is recall@K.

    A rank is the number of candidates scoring strictly higher than the query's best correct one
    (a NaN score counts as higher: ``torch.topk`` ranks it first). Where that number and the hits
    disagree, the hit was decided by ``torch.topk(K)``'s choice among scores exactly equal to the
    best correct one: the rank is then moved within the tie, to the largest K missed. If the
    choice is not nested over K (a hit at one K, a miss at a larger one, possible only among
    several equal scores), no single rank says it: the rank stays and the query is counted in
    ``inexact``; ``*_hit`` hold the exact hits always."""
    _check_retrieval_inputs(image_features, text_features, text_to_image)
    ks = list(dict.fromkeys(int(k) for k in ks))
    if not ks or min(ks) < 1:
        raise ValueError(f"retrieval_ranks: ks must be positive, got {ks}")
    image_features, text_features = _common_dtype(image_features, text_features)
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    device = text_features.device
    text_to_image = text_to_image.to(device=device, dtype=torch.long)
    captions_of = _positives_of_images(text_to_image, n_images)
    k_row = torch.tensor(ks, device=device)

    out = []
    inexact = 0
    hits: dict[str, dict[int, torch.Tensor]] = {}
    for queries, candidates, are_texts, n in ((image_features, text_features, False, n_images),
                                              (text_features, image_features, True, n_texts)):
        rank = torch.empty(n, dtype=torch.long, device=device)
        hit = torch.empty(n, len(ks), dtype=torch.bool, device=device)
        margin = torch.empty(n, dtype=queries.dtype, device=device)
        for start, end, scores in _map_blocks(queries, candidates, are_texts, chunk_size, lambda s: s):
            top, window = _topk_window(scores, ks)
            if are_texts:  # retrieval_metrics' hits, the same expressions
                target = text_to_image[start:end, None]
                hit[start:end] = torch.stack([(top[k] == target).any(dim=1) for k in ks], dim=1)
                positives = target
            else:
                own = torch.arange(start, end, device=device)[:, None]
                hit[start:end] = torch.stack([(text_to_image[top[k]] == own).any(dim=1) for k in ks], dim=1)
                positives = captions_of[start:end]
            rank[start:end], margin[start:end] = _rank_block(scores, positives, window)
            del scores, top, window  # the block goes before the next one is multiplied
        said = (rank[:, None] >= 0) & (rank[:, None] < k_row[None, :])
        wrong = (said != hit).any(dim=1)
        if wrong.any():
            missed = torch.where(hit, torch.full_like(k_row, -1)[None, :], k_row[None, :]).max(dim=1).values
            first_hit = torch.where(hit, k_row[None, :], torch.full_like(k_row, torch.iinfo(torch.long).max)[None, :])
            moved = torch.maximum(rank, missed)
            fits = moved < first_hit.min(dim=1).values
            rank = torch.where(wrong & fits, moved, rank)
            inexact += int((wrong & ~fits).sum())
        hits["t2i" if are_texts else "i2t"] = {k: hit[:, j].contiguous() for j, k in enumerate(ks)}
        out += [rank, hit, margin]
    metrics = _recalls(hits["t2i"], hits["i2t"], ks)
    return RetrievalRanks(out[0], out[1], out[2], out[3], out[4], out[5], inexact, metrics)
