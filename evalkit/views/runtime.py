"""Views embed: how one raw sample becomes one embedding.

A *view* has three parts, so that every modality is one small class:

* ``identity``: a string that says everything the embedding depends on besides the model and
  the sample (transform, size, mean/std, interpolation, frame sampling ...). It is part of the
  feature cache key: (model fingerprint, view identity, unit identity).
* ``sample(loaded)``: the per-sample step, run in the data loader (worker processes or the
  background thread): what a source's loader returned (a PIL image, a clip, a point cloud) in,
  a uint8 (or float) tensor out. Tensors of one view have one shape, so a batch is a stack.
* ``embed(encoder, batch)``: the per-batch step, just before and around the forward: normalise,
  call the encoder's tower, pool several images of one sample into one feature, and
  L2-normalise. Returns (B, D).

Two views whose ``batch_key`` is equal run the same per-batch step, so where their per-sample
tensors are equal (a square image under crop and under squash) the embedding is equal too, and
:func:`evalkit.features.embed.embed` encodes it once.

Kinds of view: :class:`ImageView` (one image through the image tower), :class:`PooledView` (several
images of one sample through the image tower, features averaged: video frames, rendered depth
views). A view that needs a tower of its own (a point-cloud encoder) calls it in ``embed``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class View(Protocol):
    """See the module docstring."""

    @property
    def identity(self) -> str: ...

    @property
    def batch_key(self) -> Hashable: ...

    def sample(self, loaded: Any) -> torch.Tensor: ...

    def embed(self, encoder: Any, batch: torch.Tensor) -> torch.Tensor: ...


class Noted(NamedTuple):
    """What a view's ``sample`` returns when it had to make the tensor by a documented fallback
    (a cloud with too few points, resampled): the sample is scored, and ``note`` is counted and
    reported with its key (an error under ``--strict``)."""

    tensor: torch.Tensor
    note: str


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
        images = self.pick(loaded)
        if not images:
            raise ValueError(f"{self.pick_id}: no image picked from the sample")
        return torch.stack([self.base.sample(img) for img in images])

    def embed(self, encoder: Any, batch: torch.Tensor) -> torch.Tensor:
        b, k = batch.shape[:2]
        per_image = self.base.embed(encoder, batch.flatten(0, 1))  # (B*K, D), each normalised
        return F.normalize(per_image.view(b, k, -1).mean(dim=1), dim=-1)


def as_view(value: Any, name: str = "image") -> View:
    """A view as it is; a transform (or any image -> tensor callable) as an :class:`ImageView`."""
    return value if isinstance(value, View) else ImageView(value, name)


def frames_view(base: ImageView, sampler: str) -> PooledView:
    """A video clip (a source's loader returns its path) as the pooled image features of the
    frames ``sampler`` picks (``middle``, ``middle-centre``, ``uniform-N``; evalkit.data.video),
    each through ``base``'s transform, decoding only those frames."""
    from evalkit.data.video import parse_sampler

    parsed = parse_sampler(sampler)
    return PooledView(base, functools.partial(_clip_frames, sampler=parsed), f"frames:{parsed.name}")


def _clip_frames(clip: Any, sampler: Any) -> list[Any]:
    """A clip's frames: a :class:`~evalkit.data.video.VideoClip` (what video sources load; it keeps
    what it decoded, so several views of one clip decode it once) or a path."""
    from evalkit.data.video import VideoClip, sample_frames

    return clip.frames(sampler) if isinstance(clip, VideoClip) else sample_frames(clip, sampler)


def depth_view(base: ImageView, n_views: int = 10, resolution: int = 224, *, preset: str | None = None,
               **render: Any) -> PooledView:
    """A point cloud (an object with ``xyz``, or an (N, 3) array) as the pooled image features of
    ``n_views`` rendered depth images (:func:`evalkit.views.render.render_depth_views`), each through
    ``base``'s transform; fixed uniform view weights.

    ``preset``: a render preset of :data:`evalkit.views.render.RENDER_PRESETS` (default
    ``pointclip-v2``: PointCLIP V2's realistic projection as its zero-shot classifier uses it;
    ``evalkit``: evalkit's earlier rendering); ``render``: settings overriding it (e.g.
    ``obj_ratio``, ``pool_size``). A preset whose ``normalize`` is false feeds the image tower the
    views' [0, 1] values: ``base``'s transform with mean 0 and std 1 (so its own identity says
    so). The preset's name and the overrides are part of the view's identity (its cache key).
    An unknown preset or setting is a ``ValueError`` naming the choices."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"depth views: resolution must be a whole number of pixels >= 1, got {resolution!r}")
    from evalkit.views.render import DEFAULT_PRESET, resolve_preset, select_viewpoints

    name = DEFAULT_PRESET if preset is None else preset
    try:  # a bad preset, setting or view count fails here, once, not per cloud
        chosen = resolve_preset(name, **render)
        select_viewpoints(n_views, None, chosen.cameras)
    except ValueError as e:
        raise ValueError(f"depth views: {e}") from None
    if not chosen.normalize:
        base = ImageView(_unnormalised(base.transform, name), base.name)
    pick = functools.partial(_cloud_depth_images, n_views=n_views, resolution=resolution, preset=chosen)
    settings = "".join(f":{k}={render[k]}" for k in sorted(render))
    return PooledView(base, pick, f"depth:{n_views}v:{resolution}px:preset={name}{settings}")


def _unnormalised(transform: Any, preset: str) -> Any:
    """``transform`` with mean 0 and std 1: its per-batch step then only scales uint8 to [0, 1]."""
    if dataclasses.is_dataclass(transform) and hasattr(transform, "mean") and hasattr(transform, "std"):
        return dataclasses.replace(transform, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    raise ValueError(f"depth views: preset {preset!r} feeds the image tower unnormalised [0, 1] images, but "
                     f"this image transform ({type(transform).__name__}) has no mean/std to turn off; "
                     f"use preset 'evalkit' or set normalize: true")


def _cloud_depth_images(cloud: Any, n_views: int, resolution: int, preset: Any) -> list[Any]:
    from evalkit.views.render import depth_view_images

    return depth_view_images(getattr(cloud, "xyz", cloud), n_views=n_views, resolution=resolution, preset=preset)


@dataclass(frozen=True)
class PointView:
    """A point cloud through the model's point tower (Uni3D): per sample, Uni3D's input handling
    (:func:`evalkit.models.uni3d.prepare_points`: ``pc_norm``, colour or a constant grey, brought
    to ``npoints`` points), per batch ``encoder.encode_points``, L2-normalised. A cloud with fewer
    than ``npoints`` points is resampled with replacement, and noted (:class:`Noted`): counted in
    the result, an error under ``--strict``. One with more is subsampled (seeded, reproducible)."""

    npoints: int = 10000

    @property
    def identity(self) -> str:
        from evalkit.models.uni3d import NO_COLOUR

        return f"points:{self.npoints}:pc_norm:grey{NO_COLOUR}:seed0"

    @property
    def batch_key(self) -> Hashable:
        return ("points", self.identity)

    def sample(self, loaded: Any) -> torch.Tensor | Noted:
        from evalkit.models.uni3d import prepare_points

        xyz, rgb = getattr(loaded, "xyz", loaded), getattr(loaded, "rgb", None)
        cloud, _ = prepare_points(xyz, rgb, self.npoints)
        n = len(xyz)
        if n < self.npoints:
            return Noted(cloud, f"{n} points, fewer than the {self.npoints} the point encoder takes: "
                                f"resampled with replacement")
        return cloud

    def embed(self, encoder: Any, batch: torch.Tensor) -> torch.Tensor:
        return F.normalize(encoder.encode_points(batch), dim=-1)


def point_view(npoints: int = 10000) -> PointView:
    """The view of a cloud through a point tower (see :class:`PointView`)."""
    if npoints < 1:
        raise ValueError(f"view.npoints must be >= 1, got {npoints}")
    return PointView(npoints)
