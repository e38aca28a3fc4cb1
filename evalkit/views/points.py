"""Point clouds through the model's point tower (Uni3D): the ``points`` view kind
(``view: {cloud: points, npoints: N}`` or ``kind: points``) and its runtime view."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.views.base import Noted, View, ViewSpec, ViewSpecError, view_kinds, whole_number

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class PointView:
    """A point cloud through the model's point tower (Uni3D): per sample, Uni3D's input handling
    (:func:`evalkit.models.uni3d.prepare_points`: ``pc_norm``, colour or a constant grey, brought
    to ``npoints`` points), per batch ``encoder.encode_points``, L2-normalised. A cloud with fewer
    than ``npoints`` points is resampled with replacement, and noted (:class:`Noted`): counted in
    the result, an error under ``--strict``. One with more is subsampled (seeded, reproducible)."""

    npoints: int  # the point tower's own count (PointsInput.npoints) unless the task sets one

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
        import torch.nn.functional as F

        return F.normalize(encoder.encode_points(batch), dim=-1)


def point_view(npoints: int) -> PointView:
    """The view of a cloud through a point tower (see :class:`PointView`)."""
    if npoints < 1:
        raise ViewSpecError(f"view.npoints must be >= 1, got {npoints}")
    return PointView(npoints)


@view_kinds.register("points")
@dataclass(frozen=True)
class PointsViewSpec(ViewSpec):
    """Each cloud through the point tower, brought to ``npoints`` points (None: as many as the
    tower takes, its :class:`~evalkit.models.encoder.PointsInput`)."""

    kind = "points"
    keys = ("npoints",)
    noun = "clouds"
    tower = "points"

    npoints: int | None = None

    def __post_init__(self) -> None:
        n = self.npoints
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise self.error(f"view.npoints must be a whole number >= 1, got {n!r}")

    @classmethod
    def parse(cls, view: Mapping[str, Any], where: str, *, transform: str | None, frames: str | None,
              default_transform: str | None, base_dir: Path | None) -> PointsViewSpec:
        return cls(npoints=whole_number(view, "npoints", where, None), where=where)

    def resolve(self, encoder: Any) -> PointsViewSpec:
        if "points" not in encoder.towers:
            raise self.error(f"a points view needs a point-cloud encoder (e.g. --model uni3d-b); {encoder.name} "
                             f"has none")
        if self.npoints is not None:
            return self
        from dataclasses import replace

        return replace(self, npoints=encoder.tower("points").input.npoints)

    @property
    def mode(self) -> str:
        return "points"

    @property
    def modes(self) -> tuple[str, ...]:
        return ("points",)

    def build(self, encoder: Any) -> dict[str, View]:
        resolved = self.resolve(encoder)
        return {"points": point_view(resolved.npoints)}

    def provenance(self, task: str) -> dict[str, Any]:
        if self.npoints is None:
            raise TypeError("a points view's provenance is known once it is resolved against the encoder")
        return {**super().provenance(task), "cloud_view": self.kind, "npoints": self.npoints}
