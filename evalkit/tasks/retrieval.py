"""Zero-shot image–text retrieval (Flickr30K, COCO: EVA-CLIP-18B Table 3), numerically identical to
clip_benchmark's ``zeroshot_retrieval.evaluate`` on the same features.

Samples are images whose target is the list of their captions (``evalkit.data.captions``, or a
clip_benchmark retrieval WebDataset). Every caption of every evaluated image is a text→image
query; every image is an image→text query that hits when any of its captions is in the top K.
Metrics: clip_benchmark's keys (``image_retrieval_recall@K`` is text→image,
``text_retrieval_recall@K`` is image→text) plus the unambiguous ``t2i_R@K`` / ``i2t_R@K`` and
``mean_recall`` (the mean of the six). The transform defaults to direct resize (``squash``), the
paper's choice for retrieval (§7).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.data.sources import DataError, SourceData, load_source
from evalkit.features.embed import Embeddings, caption_features, truncated_texts
from evalkit.metrics import DEFAULT_RETRIEVAL_CHUNK, retrieval_metrics, retrieval_ranks, retrieval_topk
from evalkit.models.encoder import Encoder
from evalkit.registry import task_families
from evalkit.results import TaskResult
from evalkit.tasks.base import RunContext
from evalkit.tasks.common import Scored, run_task
from evalkit.tasks.spec import TaskSpec, TaskSpecError

PREDICTION_TOP_K = 10


@dataclass(frozen=True)
class RetrievalConfig:
    """The retrieval family's own YAML keys."""

    recall_k: tuple[int, ...] = (1, 5, 10)  # the K of recall@K
    chunk_size: int = DEFAULT_RETRIEVAL_CHUNK  # queries per block of the similarity matrix

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> RetrievalConfig:
        where = spec.path or spec.name
        opts = dict(spec.options)
        ks = opts.get("recall_k", list(cls.recall_k))
        if not isinstance(ks, list) or not ks or not all(isinstance(k, int) and k >= 1 for k in ks):
            raise TaskSpecError(f"{where}: field 'recall_k' must be a list of whole numbers ≥ 1, got {ks!r}")
        chunk = opts.get("chunk_size", cls.chunk_size)
        if not isinstance(chunk, int) or chunk < 1:
            raise TaskSpecError(f"{where}: field 'chunk_size' must be a whole number ≥ 1, got {chunk!r}")
        return cls(tuple(ks), chunk)


@dataclass
class PreparedRetrieval:
    data: SourceData
    config: RetrievalConfig
    where: str


@task_families.register("retrieval")
class RetrievalFamily:
    name = "retrieval"
    yaml_keys = ("recall_k", "chunk_size")
    default_transform = "squash"  # the paper's transform for retrieval (§7)
    combine = "mean_recall"  # best-of-both: the transform with the better mean recall gives all six recalls
    result_task = "zeroshot_retrieval"

    def validate(self, spec: TaskSpec) -> RetrievalConfig:
        spec.check_options(self.yaml_keys)
        return RetrievalConfig.from_spec(spec)

    def prepare(self, spec: TaskSpec, data_root: str | Path | None) -> PreparedRetrieval:
        config = self.validate(spec)
        data = load_source(spec.source, data_root, spec.name, base_dir=spec.base_dir)
        where = spec.path or spec.name
        # a source of labels, not captions, fails now rather than after every image is embedded
        first = next((sample for unit in data.units[:1] for sample in unit.samples()), None)
        if first is not None and first[2] is not None and not isinstance(first[2], list):
            raise DataError(f"{where}: sample {first[0]} has the target {first[2]!r}, not a list of captions "
                            f"(a retrieval task needs images with captions)")
        return PreparedRetrieval(data, config, where)

    def run(self, spec: TaskSpec, encoder: Encoder, ctx: RunContext,
            prepared: PreparedRetrieval | None = None) -> TaskResult:
        return run_task(self, spec, encoder, ctx, prepared)

    def score(self, spec: TaskSpec, encoder: Encoder, ctx: RunContext, prepared: PreparedRetrieval,
              by_mode: dict[str, Embeddings]) -> Scored:
        """The captions of the evaluated images (cached features), then per transform the recalls
        both ways and, with ``--save-predictions``, each query's top 10."""
        config = prepared.config
        images = next(iter(by_mode.values()))
        captions, text_to_image = _queries(images.labels, images.keys, prepared.where)
        t0 = time.perf_counter()
        texts = caption_features(encoder, captions, ctx.cache, progress=ctx.run.progress, desc=f"{spec.name}: captions")
        text_s = time.perf_counter() - t0
        scored = Scored(metrics={}, text_seconds=text_s, evalkit={
            "recall_k": list(config.recall_k),
            "images": len(images.keys),
            "captions": len(captions),
            "images_without_captions": sum(not c for c in images.labels),
            "captions_truncated": truncated_texts(encoder, captions),
            "text_seconds": round(text_s, 4),
        })
        inexact: dict[str, int] = {}
        for m, emb in by_mode.items():
            if ctx.run.records:  # the same numbers as retrieval_metrics, from the pass that ranks each query
                scored.metrics[m], scored.records[m], inexact[m] = _ranks(emb.features, texts, images.keys,
                                                                          text_to_image, config)
            else:
                scored.metrics[m] = retrieval_metrics(emb.features, texts, text_to_image, config.recall_k,
                                                      config.chunk_size)
            if ctx.run.save_predictions:
                scored.predictions[m] = _top(emb.features, texts, images.keys, text_to_image, config.chunk_size)
        if ctx.run.records:
            scored.records_kind = "retrieval"
            scored.records_meta = {"recall_k": list(dict.fromkeys(config.recall_k)), "n_images": len(images.keys),
                                   "n_captions": len(captions), "ranks_inexact": inexact}
        return scored


def _ranks(images: torch.Tensor, texts: torch.Tensor, keys: list[str], text_to_image: torch.Tensor,
           config: RetrievalConfig) -> tuple[dict[str, float], dict[str, np.ndarray], int]:
    """The recalls (:func:`evalkit.metrics.retrieval_metrics`'s, to the bit), and a ``retrieval``
    record of each query (:mod:`evalkit.records`): each image's and caption's rank of its first
    correct match (:func:`evalkit.metrics.retrieval_ranks`), its hits at each K, its margin; and
    the queries whose rank cannot say every hit (ties; 0 but for heavy ties)."""
    ranks = retrieval_ranks(images, texts, text_to_image, config.recall_k, config.chunk_size)
    arrays = {
        "image_key": np.asarray([str(k) for k in keys], dtype=str),
        "i2t_rank": ranks.i2t_rank.cpu().numpy().astype(np.int32),
        "i2t_hit": ranks.i2t_hit.cpu().numpy(),
        "i2t_margin": ranks.i2t_margin.float().cpu().numpy(),
        "t2i_image": text_to_image.cpu().numpy().astype(np.int32),
        "t2i_rank": ranks.t2i_rank.cpu().numpy().astype(np.int32),
        "t2i_hit": ranks.t2i_hit.cpu().numpy(),
        "t2i_margin": ranks.t2i_margin.float().cpu().numpy(),
    }
    return ranks.metrics, arrays, ranks.inexact


def _queries(labels: list[Any], keys: list[str], where: str) -> tuple[list[str], torch.Tensor]:
    """Every caption of every evaluated image, in image order, and the index of its image."""
    captions: list[str] = []
    index: list[int] = []
    for i, (caps, key) in enumerate(zip(labels, keys, strict=True)):
        if not isinstance(caps, list):
            raise DataError(f"{where}: sample {key} has no caption list (is this a retrieval dataset?)")
        captions += caps
        index += [i] * len(caps)
    if not captions:
        raise DataError(f"{where}: no captions")
    return captions, torch.tensor(index, dtype=torch.long)


def _top(images: torch.Tensor, texts: torch.Tensor, keys: list[str], text_to_image: torch.Tensor,
         chunk_size: int) -> list[dict[str, Any]]:
    """Each query's top 10: per image the caption indices (and whether any is its own), per
    caption the image keys."""
    top = retrieval_topk(images, texts, PREDICTION_TOP_K, chunk_size)
    owner = text_to_image.tolist()
    out: list[dict[str, Any]] = []
    for i, (idx, sc) in enumerate(zip(top.i2t_indices.tolist(), top.i2t_scores.tolist(), strict=True)):
        out.append({"query": "image", "key": keys[i], "top_captions": idx, "top_scores": [round(s, 4) for s in sc],
                    "rank_of_first_own_caption": next((r for r, c in enumerate(idx) if owner[c] == i), None)})
    for j, (idx, sc) in enumerate(zip(top.t2i_indices.tolist(), top.t2i_scores.tolist(), strict=True)):
        out.append({"query": "caption", "caption": j, "image": keys[owner[j]], "top_images": [keys[i] for i in idx],
                    "top_scores": [round(s, 4) for s in sc],
                    "rank_of_own_image": next((r for r, i in enumerate(idx) if i == owner[j]), None)})
    return out
