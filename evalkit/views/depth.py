"""Point clouds as the pooled image features of rendered depth maps, through any 2-D CLIP: the
``depth-views`` view kind and its runtime view (the renderer: :mod:`evalkit.views.render`).

``view: {cloud: depth-views, transform: crop, depth_views: 10, depth_resolution: 224,
depth_preset: pointclip-v2, depth_render: {obj_ratio: 0.45}, depth_templates_file: FILE}``
(or ``kind: depth-views``). The prompts of ``depth_templates_file`` (relative to the task file)
replace the task's templates: a depth map is not a photo.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.views.base import View, ViewSpecError, view_kinds, whole_number
from evalkit.views.image import ImageView, ImageViewSpec, PooledView


def depth_view(base: ImageView, n_views: int, resolution: int, *, preset: str | None = None,
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
    An unknown preset or setting is a :class:`ViewSpecError` naming the choices."""
    try:
        name, chosen = _checked_preset(n_views, resolution, preset, render)
    except _BadSetting as e:
        raise ViewSpecError(f"depth views: {e}") from None
    if not chosen.normalize:
        base = ImageView(_unnormalised(base.transform, name), base.name)
    pick = functools.partial(_cloud_depth_images, n_views=n_views, resolution=resolution, preset=chosen)
    settings = "".join(f":{k}={render[k]}" for k in sorted(render))
    return PooledView(base, pick, f"depth:{n_views}v:{resolution}px:preset={name}{settings}")


class _BadSetting(ValueError):
    """A depth-view setting no render can make; ``key``: its key in a ``view:`` block."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _checked_preset(n_views: int, resolution: int, preset: str | None, render: Mapping[str, Any]) -> tuple[str, Any]:
    """(the preset's name, the preset with ``render`` applied), checked with the view count and
    resolution: a bad one fails here, once, not on every cloud."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise _BadSetting("depth_resolution", f"resolution must be a whole number of pixels >= 1, got {resolution!r}")
    from evalkit.views.render import DEFAULT_PRESET, RENDER_PRESETS, resolve_preset, select_viewpoints

    name = DEFAULT_PRESET if preset is None else preset
    try:
        chosen = resolve_preset(name, **render)
    except ValueError as e:
        raise _BadSetting("depth_render" if name in RENDER_PRESETS else "depth_preset", str(e)) from None
    try:
        select_viewpoints(n_views, None, chosen.cameras)
    except ValueError as e:
        raise _BadSetting("depth_views", str(e)) from None
    return name, chosen


def _unnormalised(transform: Any, preset: str) -> Any:
    """``transform`` with mean 0 and std 1: its per-batch step then only scales uint8 to [0, 1]."""
    if dataclasses.is_dataclass(transform) and hasattr(transform, "mean") and hasattr(transform, "std"):
        return dataclasses.replace(transform, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    raise ViewSpecError(f"depth views: preset {preset!r} feeds the image tower unnormalised [0, 1] images, but "
                        f"this image transform ({type(transform).__name__}) has no mean/std to turn off; "
                        f"use preset 'evalkit' or set normalize: true")


def _cloud_depth_images(cloud: Any, n_views: int, resolution: int, preset: Any) -> list[Any]:
    from evalkit.views.render import depth_view_images

    return depth_view_images(getattr(cloud, "xyz", cloud), n_views=n_views, resolution=resolution, preset=preset)


@view_kinds.register("depth-views")
@dataclass(frozen=True)
class DepthViewSpec(ImageViewSpec):
    """Each cloud as ``n_views`` depth maps rendered at ``resolution`` pixels under the render
    ``preset`` (None: the renderer's default, :data:`evalkit.views.render.DEFAULT_PRESET`) with
    ``render`` overriding some of its settings (in the task file's order), each map through the
    image view of ``transform``, pooled. ``templates``: the prompts of ``templates_file``."""

    kind = "depth-views"
    keys = ("transform", "depth_views", "depth_resolution", "depth_preset", "depth_render", "depth_templates_file")
    noun = "clouds"

    n_views: int = 10
    resolution: int = 224
    preset: str | None = None
    render: tuple[tuple[str, Any], ...] = ()
    templates_file: str | None = None
    templates: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        from evalkit.views.render import RENDER_PRESETS

        if self.preset is not None and (not isinstance(self.preset, str) or self.preset not in RENDER_PRESETS):
            raise self.error(f"view.depth_preset {self.preset!r} is not a render preset; "
                             f"choose from {', '.join(RENDER_PRESETS)}")
        try:
            name, _ = _checked_preset(self.n_views, self.resolution, self.preset, dict(self.render))
        except _BadSetting as e:
            raise self.error(f"view.{e.key}: {e}") from None
        object.__setattr__(self, "preset", name)

    @classmethod
    def parse(cls, view: Mapping[str, Any], where: str, *, transform: str | None, frames: str | None,
              default_transform: str | None, base_dir: Path | None) -> DepthViewSpec:
        fields: dict[str, Any] = cls.image_fields(view, where, transform, default_transform)
        for key, name in (("depth_views", "n_views"), ("depth_resolution", "resolution")):
            value = whole_number(view, key, where, None)
            if value is not None:
                fields[name] = value
        if "depth_preset" in view:
            fields["preset"] = view["depth_preset"]
        render = view.get("depth_render") or {}
        if not isinstance(render, Mapping):
            raise ViewSpecError(f"{where}: view.depth_render must be a mapping of render settings, got {render!r}")
        fields["render"] = tuple(render.items())
        if view.get("depth_templates_file") is not None:
            fields["templates_file"] = str(view["depth_templates_file"])
            fields["templates"] = _read_templates(fields["templates_file"], base_dir, where)
        return cls(**fields, where=where)

    def build(self, encoder: Any) -> dict[str, View]:
        return {m: depth_view(v, self.n_views, self.resolution, preset=self.preset, **dict(self.render))
                for m, v in self.image_views(encoder).items()}

    def provenance(self, task: str) -> dict[str, Any]:
        return {**super().provenance(task), "cloud_view": self.kind, "depth_views": self.n_views,
                "depth_resolution": self.resolution, "depth_preset": self.preset,
                **({"depth_render": dict(self.render)} if self.render else {})}

    @property
    def prompts(self) -> tuple[str, ...] | None:
        return self.templates or None


def _read_templates(name: str, base_dir: Path | None, where: str) -> tuple[str, ...]:
    """The prompts of ``view.depth_templates_file`` (one a line; relative to the task file), each
    with its ``{c}``."""
    path = Path(name).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise ViewSpecError(f"{where}: view.depth_templates_file {path} cannot be read: {e.strerror or e}") from None
    if not all("{c}" in t for t in lines):
        raise ViewSpecError(f"{where}: view.depth_templates_file {path} has a template without '{{c}}'")
    return tuple(lines)
