"""``models.load(name, ...)``: a model name → an Encoder, through the registered model families.

A name is a model card (``eva-clip-18b``: its family loads it), ``FAMILY:REF`` (``open_clip:ViT-B-32``,
``hf:ORG/NAME``: that family loads REF), or a plugin's model (its ``load_model``). Families and
plugins are found in the same registry (:data:`evalkit.registry.model_loaders`,
:mod:`evalkit.models.family`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evalkit.models.family import LoadOptions, family_names, get_family
from evalkit.models.hub import ModelLoadError
from evalkit.models.loading import list_models, load
from evalkit.models.precision import DEFAULT_PRECISION
from evalkit.models.zoo import CARDS, CLAIM_ONLY, ModelCard

if TYPE_CHECKING:
    from evalkit.models.encoder import Encoder

__all__ = ["load", "Encoder", "ModelLoadError", "CARDS", "CLAIM_ONLY", "ModelCard", "LoadOptions", "list_models",
           "build_eva_clip", "eva_config", "get_family", "family_names", "DEFAULT_PRECISION"]


def __getattr__(name: str) -> Any:
    # torch is imported when a model is built, not with this package: the CLI reads
    # evalkit.models.precision (its --precision choices) for `evalkit --help`.
    if name == "Encoder":
        from evalkit.models.encoder import Encoder

        return Encoder
    if name in ("build_eva_clip", "eva_config"):
        from evalkit.models import families as _families

        return getattr(_families, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
