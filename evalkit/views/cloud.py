"""A 3D task's view (``view.cloud``): ``points`` (the model's point tower), ``depth-views``
(rendered depth maps through its image tower) or ``auto``, which picks the point tower when the
model has one. The block holds the settings of both (``npoints`` and the ``depth_*`` keys), so
one task file serves a point encoder and any 2-D CLIP alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.views.base import View, ViewSpec, ViewSpecError, view_kinds
from evalkit.views.depth import DepthViewSpec
from evalkit.views.points import PointsViewSpec

#: what ``view.cloud`` accepts
CLOUD_VIEWS = ("auto", "depth-views", "points")


@view_kinds.register("cloud")
@dataclass(frozen=True)
class CloudViewSpec(ViewSpec):
    """``cloud``: one of :data:`CLOUD_VIEWS`; ``depth`` and ``points``: the two views it may
    become (:meth:`resolve` picks one for an encoder)."""

    kind = "cloud"
    keys = ("cloud", *DepthViewSpec.keys, *PointsViewSpec.keys)
    marker = "cloud"
    noun = "clouds"

    cloud: str = "auto"
    depth: DepthViewSpec = field(default_factory=DepthViewSpec)
    points: PointsViewSpec = field(default_factory=PointsViewSpec)

    def __post_init__(self) -> None:
        if self.cloud not in CLOUD_VIEWS:
            raise self.error(f"view.cloud {self.cloud!r} not in {CLOUD_VIEWS}")

    @classmethod
    def parse(cls, view: Mapping[str, Any], where: str, *, transform: str | None, frames: str | None,
              default_transform: str | None, base_dir: Path | None) -> CloudViewSpec:
        def part(kind: type[ViewSpec]) -> Any:
            own = {k: v for k, v in view.items() if k in kind.keys}
            return kind.parse(own, where, transform=transform, frames=frames, default_transform=default_transform,
                              base_dir=base_dir)

        if view.get("cloud", "auto") not in CLOUD_VIEWS:
            raise ViewSpecError(f"{where}: view.cloud {view['cloud']!r} not in {CLOUD_VIEWS}")
        return cls(cloud=view.get("cloud", "auto"), depth=part(DepthViewSpec), points=part(PointsViewSpec), where=where)

    def resolve(self, encoder: Any) -> ViewSpec:
        """``points`` or ``depth-views`` for ``encoder``: ``auto`` is the point tower when it has one."""
        choice = self.cloud
        if choice == "auto":
            choice = "points" if "points" in encoder.towers else "depth-views"
        if choice == "points":
            if "points" not in encoder.towers:
                raise self.error(f"view.cloud points needs a point-cloud encoder (e.g. --model uni3d-b); {encoder.name} "
                                 f"has none (view.cloud depth-views or auto scores clouds through its images)")
            return self.points.resolve(encoder)
        if "image" not in encoder.towers:
            raise self.error(f"view.cloud depth-views needs an image tower, which {encoder.name} has not")
        return self.depth.resolve(encoder)

    def _unresolved(self) -> TypeError:
        return TypeError(f"a view of kind 'cloud' ({self.cloud}) is one of two views: resolve it against the "
                         f"encoder first")

    @property
    def mode(self) -> str:
        raise self._unresolved()

    @property
    def modes(self) -> tuple[str, ...]:
        raise self._unresolved()

    def build(self, encoder: Any) -> dict[str, View]:
        return self.resolve(encoder).build(encoder)

    def provenance(self, task: str) -> dict[str, Any]:
        raise self._unresolved()
