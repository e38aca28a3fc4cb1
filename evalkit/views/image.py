"""Images through the image tower: the ``image`` view kind (``transform``: crop, squash or
best-of-both, which runs both), the runtime :class:`ImageView`, and :class:`PooledView`, which
several images of one sample go through (video frames, rendered depth views).

The image transform is built from the encoder's image tower as data (``encoder.tower("image").input``,
an :class:`evalkit.models.encoder.ImageInput`: size, mean, std, interpolation). Where the model's
authors ship their own preprocessing (a Hugging Face image processor, ``ImageInput.processor``),
the view runs it unchanged, whatever the transform asked: it is the reference the numbers must
match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.views.base import (
    BEST_OF_BOTH,
    TRANSFORM_CHOICES,
    TRANSFORMS,
    View,
    ViewSpec,
    ViewSpecError,
    view_kinds,
)

if TYPE_CHECKING:
    import torch


def _identity(batch: torch.Tensor) -> torch.Tensor:
    return batch


@dataclass(frozen=True)
class ImageView:
    """One image through the image tower.

    ``transform``: an :class:`evalkit.views.transforms.Preprocess` (two stages: uint8 ``geometry`` per
    image, ``normalize`` per batch), or any callable image -> float tensor, run whole per image.
    ``name`` keys a callable that is not a dataclass (its parameters cannot be read)."""

    transform: Callable[[Any], torch.Tensor]
    name: str = "image"

    @property
    def identity(self) -> str:
        t = self.transform
        return f"image:{t!r}" if dataclasses.is_dataclass(t) else f"image:{self.name}"

    @property
    def _stages(self) -> tuple[Callable[[Any], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
        geometry, normalize = getattr(self.transform, "geometry", None), getattr(self.transform, "normalize", None)
        if callable(geometry) and callable(normalize):
            return geometry, normalize
        return self.transform, _identity

    @property
    def batch_key(self) -> Hashable:
        t = self.transform
        if dataclasses.is_dataclass(t) and hasattr(t, "mean") and hasattr(t, "std"):
            return ("image", tuple(t.mean), tuple(t.std))
        return ("image", self.identity)  # an opaque callable: only itself

    def sample(self, loaded: Any) -> torch.Tensor:
        return self._stages[0](loaded)

    def embed(self, encoder: Any, batch: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.normalize(encoder.encode_image(self._stages[1](batch)), dim=-1)


@dataclass(frozen=True)
class PooledView:
    """Several images of one sample (video frames, rendered views), each through ``base``; the
    per-image features are L2-normalised, averaged with equal weights, and L2-normalised again.

    ``pick(loaded) -> list of images``: which images of the sample (e.g. a frame sampler), always
    the same number for every sample; ``pick_id`` says what it picks (it is part of the identity)."""

    base: ImageView
    pick: Callable[[Any], list[Any]]
    pick_id: str

    @property
    def identity(self) -> str:
        return f"pooled[{self.pick_id}]:{self.base.identity}"

    @property
    def batch_key(self) -> Hashable:
        return ("pooled", self.pick_id, self.base.batch_key)

    def sample(self, loaded: Any) -> torch.Tensor:
        import torch

        images = self.pick(loaded)
        if not images:
            raise ValueError(f"{self.pick_id}: no image picked from the sample")
        return torch.stack([self.base.sample(img) for img in images])

    def embed(self, encoder: Any, batch: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        b, k = batch.shape[:2]
        per_image = self.base.embed(encoder, batch.flatten(0, 1))  # (B*K, D), each normalised
        return F.normalize(per_image.view(b, k, -1).mean(dim=1), dim=-1)


def as_view(value: Any, name: str = "image") -> View:
    """A view as it is; a transform (or any image -> tensor callable) as an :class:`ImageView`."""
    return value if isinstance(value, View) else ImageView(value, name)


class AuthorsProcessor:
    """A model's own image preprocessing (``ImageInput.processor``: PIL image -> normalised float
    tensor) as a view's transform: run whole per image, nothing added per batch, and opaque (no
    other view shares its per-batch step)."""

    def __init__(self, processor: Callable[[Any], torch.Tensor]) -> None:
        self.processor = processor

    def __call__(self, image: Any) -> torch.Tensor:
        return self.processor(image)


def image_transform(image: Any, mode: str = "crop") -> Callable[[Any], torch.Tensor]:
    """The transform of an image tower's input (an :class:`evalkit.models.encoder.ImageInput`, or
    an encoder: its image tower's) under ``mode`` (crop or squash): a
    :class:`evalkit.views.transforms.Preprocess` from its size, mean, std and interpolation; its
    model's own processor, unchanged, when it has one."""
    if hasattr(image, "tower"):
        image = image.tower("image").input
    if mode not in TRANSFORMS:
        raise ViewSpecError(f"unknown transform {mode!r}; choose from {', '.join(TRANSFORMS)}")
    if getattr(image, "processor", None) is not None:
        return AuthorsProcessor(image.processor)
    from evalkit.views.transforms import build_transform

    return build_transform(mode, image.size, image.mean, image.std, image.interpolation)


def image_view(encoder: Any, mode: str = "crop") -> ImageView:
    """``encoder``'s image tower's view under ``mode`` (crop or squash). A tower with its model's
    own processor is one view whatever the mode, named by ``processor_id`` (its cache key)."""
    image = encoder.tower("image").input
    transform = image_transform(image, mode)
    if isinstance(transform, AuthorsProcessor):
        if not image.processor_id:
            raise ValueError(f"{encoder.name}: its image processor has no processor_id (the cache key of its features)")
        return ImageView(transform, f"processor:{image.processor_id}")
    return ImageView(transform, mode)


#: how a model's towers are said in an error ("uni3d-b encodes point clouds only")
_TOWER_WORDS = {"image": "images", "points": "point clouds"}


@view_kinds.register("image")
@dataclass(frozen=True)
class ImageViewSpec(ViewSpec):
    """``view: {transform: crop | squash | best-of-both}``: each image through the image tower,
    under one transform or, best-of-both, under crop and under squash."""

    kind = "image"
    keys = ("transform",)
    noun = "images"

    transform: str = "crop"

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORM_CHOICES:
            raise self.error(f"view.transform {self.transform!r} not in {TRANSFORM_CHOICES}")

    @classmethod
    def parse(cls, view: Mapping[str, Any], where: str, *, transform: str | None, frames: str | None,
              default_transform: str | None, base_dir: Path | None) -> ImageViewSpec:
        return cls(**cls.image_fields(view, where, transform, default_transform), where=where)

    @classmethod
    def image_fields(cls, view: Mapping[str, Any], where: str, transform: str | None,
                     default_transform: str | None) -> dict[str, Any]:
        """The ``transform`` field: ``--transform``, else the block's own (checked even when
        overridden), else the family's default, else the field's default."""
        own = view.get("transform", default_transform)
        if own is not None:
            ImageViewSpec(transform=own, where=where)  # checks it
        chosen = transform or own
        return {} if chosen is None else {"transform": chosen}

    def resolve(self, encoder: Any) -> ImageViewSpec:
        if "image" not in encoder.towers:
            has = " and ".join(_TOWER_WORDS.get(m, m) for m in encoder.towers) or "nothing"
            raise self.error(f"{encoder.name} encodes {has} only, and this task's {self.noun} need an image tower")
        return self

    @property
    def mode(self) -> str:
        return self.transform

    @property
    def modes(self) -> tuple[str, ...]:
        return TRANSFORMS if self.transform == BEST_OF_BOTH else (self.transform,)

    def image_views(self, encoder: Any) -> dict[str, ImageView]:
        return {m: image_view(encoder, m) for m in self.modes}

    def build(self, encoder: Any) -> dict[str, View]:
        return dict(self.image_views(encoder))
