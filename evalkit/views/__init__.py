"""Views: how one raw sample becomes one embedding. One module per view kind (image, frames,
depth views, points, and cloud: one of the last two), each a frozen config class registered in
:data:`view_kinds` with the runtime view it builds; :func:`parse_view` reads a task's ``view:``
block into one. Beside them the image transforms (:mod:`~evalkit.views.transforms`) and the depth
renderer (:mod:`~evalkit.views.render`). Importing this package imports none of its modules: each name below is
imported from its module when first asked for (a command that needs only the transform names
reads :mod:`evalkit.views.base` alone)."""

from __future__ import annotations

import importlib
from typing import Any

#: where each name lives
_HOME = {
    "BEST_OF_BOTH": "evalkit.views.base",
    "CLOUD_VIEWS": "evalkit.views.cloud",
    "CloudViewSpec": "evalkit.views.cloud",
    "DepthViewSpec": "evalkit.views.depth",
    "FramesViewSpec": "evalkit.views.frames",
    "ImageView": "evalkit.views.image",
    "ImageViewSpec": "evalkit.views.image",
    "Noted": "evalkit.views.base",
    "PointView": "evalkit.views.points",
    "PointsViewSpec": "evalkit.views.points",
    "PooledView": "evalkit.views.image",
    "TRANSFORMS": "evalkit.views.base",
    "TRANSFORM_CHOICES": "evalkit.views.base",
    "View": "evalkit.views.base",
    "ViewSpec": "evalkit.views.base",
    "ViewSpecError": "evalkit.views.base",
    "as_view": "evalkit.views.image",
    "depth_view": "evalkit.views.depth",
    "frames_view": "evalkit.views.frames",
    "image_transform": "evalkit.views.image",
    "image_view": "evalkit.views.image",
    "parse_view": "evalkit.views.base",
    "point_view": "evalkit.views.points",
    "view_kind": "evalkit.views.base",
    "view_kinds": "evalkit.views.base",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
