"""Views: how one raw sample becomes one embedding. One module per view kind (image, frames,
depth views, points, and cloud: one of the last two), each a frozen config class registered in
:data:`view_kinds` with the runtime view it builds; :func:`parse_view` reads a task's ``view:``
block into one. Beside them the image transforms (:mod:`~evalkit.views.transforms`) and the depth
renderer (:mod:`~evalkit.views.render`). Importing this package imports no torch."""

from evalkit.views.base import (
    BEST_OF_BOTH,
    TRANSFORM_CHOICES,
    TRANSFORMS,
    Noted,
    View,
    ViewSpec,
    ViewSpecError,
    parse_view,
    view_kind,
    view_kinds,
)
from evalkit.views.cloud import CLOUD_VIEWS, CloudViewSpec
from evalkit.views.depth import DepthViewSpec, depth_view
from evalkit.views.frames import FramesViewSpec, frames_view
from evalkit.views.image import ImageView, ImageViewSpec, PooledView, as_view, image_transform, image_view
from evalkit.views.points import PointsViewSpec, PointView, point_view

__all__ = [
    "BEST_OF_BOTH", "CLOUD_VIEWS", "TRANSFORMS", "TRANSFORM_CHOICES",
    "View", "Noted", "ImageView", "PooledView", "PointView", "as_view", "image_transform", "image_view", "frames_view",
    "depth_view", "point_view",
    "ViewSpec", "ViewSpecError", "ImageViewSpec", "FramesViewSpec", "DepthViewSpec", "PointsViewSpec", "CloudViewSpec",
    "parse_view", "view_kind", "view_kinds",
]
