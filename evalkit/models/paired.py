"""A point-cloud encoder paired with a CLIP text tower: the Uni3D model cards (``uni3d-b`` ...).

Uni3D (:mod:`evalkit.models.uni3d`) embeds clouds into a CLIP model's space; its zero-shot
classifier is that CLIP model's text tower. A Uni3D card names the teacher whose text tower it
pairs with (``text_model``: EVA-02-CLIP-E/14+ for Uni3D's released checkpoints, EVA-CLIP-18B for
Table 8's scaled-teacher rows); ``--text-model`` pairs it with another. The result is one
:class:`~evalkit.models.encoder.Encoder` whose text side is the CLIP model's (tokenizer, prompt
prefix sharing, precision) and whose point side is Uni3D's; it has no image tower. Its
fingerprint covers both, and ``arch`` records each one's (the result's provenance shows them).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch

from evalkit.models.encoder import Encoder, PointsInput, Tower, state_dict_digest, weights_label
from evalkit.models.hub import ModelLoadError, locate
from evalkit.models.precision import Precision
from evalkit.models.zoo import ModelCard


def load_point_text_pair(card: ModelCard, weights: str | None, precision: Precision, device: str,
                         text_encoder: Encoder) -> Encoder:
    """``card``'s point encoder (``weights``: a Uni3D checkpoint file, ``random`` for seeded
    untrained weights, or None for the card's released file on the Hugging Face Hub) on
    ``device`` at ``precision``, paired with ``text_encoder``'s text tower."""
    from evalkit.models.checkpoint import CheckpointError
    from evalkit.models.uni3d import Uni3DPointEncoder, load_uni3d_checkpoint, uni3d_config

    # the uni3d family has checked the card's arch and refused a quantised precision
    cfg = uni3d_config(card.arch["size"], embed_dim=text_encoder.embed_dim)
    provenance = weights
    if weights is None and card.hub is not None:
        found = locate([card.hub], name=card.name)
        weights, provenance = str(found.path), found.uri
    if weights is None:
        raise ModelLoadError(f"{card.name} needs --weights: a Uni3D checkpoint (model.pt) trained with the "
                             f"{text_encoder.name} teacher; none is published (or --weights random, for smoke tests)")
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = Uni3DPointEncoder(cfg)
    else:
        if not Path(weights).exists():
            raise ModelLoadError(f"{weights}: weights path does not exist")
        with torch.device("meta"):
            model = Uni3DPointEncoder(cfg)
        try:
            load_uni3d_checkpoint(weights, model)
        except CheckpointError as e:
            raise ModelLoadError(getattr(e, "one_line", None) or str(e).splitlines()[0]) from e
    model = model.to(device=device, dtype=precision.dtype).eval()
    points_digest = state_dict_digest(model)
    text_fp = text_encoder.fingerprint  # of the whole CLIP model, before its image tower goes
    if isinstance(getattr(text_encoder.model, "visual", None), torch.nn.Module):
        # the image tower is never used here: free it (most of an EVA-CLIP-18B teacher's memory)
        text_encoder.model.visual = torch.nn.Identity()
    return dataclasses.replace(
        text_encoder,
        name=card.name,
        weights=f"{provenance} + text {text_encoder.name}: {text_encoder.weights}",
        pretrained_label=f"{weights_label(str(provenance))} + text {text_encoder.name}: {text_encoder.pretrained}",
        arch={"family": "uni3d", "uni3d": repr(dataclasses.asdict(cfg)), "text_model": text_encoder.name,
              "text_fingerprint": text_fp},
        weights_digest=hashlib.sha256(f"{points_digest}:{text_fp}".encode()).hexdigest()[:16],
        # the point tower only: the text encoder's image tower is not this model's
        towers={"points": Tower("encode_points", PointsInput(cfg.npoints), module=model, input_dtype=torch.float32)},
    )
