"""Video clips as the pooled image features of some of their frames: the ``frames`` view kind
(``view: {transform: ..., frames: middle | middle-centre | uniform-N}``) and its runtime view."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.results import result_name
from evalkit.views.base import View, ViewSpecError, view_kinds
from evalkit.views.image import ImageView, ImageViewSpec, PooledView


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


@view_kinds.register("frames")
@dataclass(frozen=True)
class FramesViewSpec(ImageViewSpec):
    """``view: {transform: ..., frames: SAMPLER}``: each clip as the pooled features of the frames
    ``sampler`` picks, each frame through the image view of ``transform``. ``task_sampler``: the
    task file's own sampler (None: ``sampler``); when ``--frames`` ran another, the result has a
    name of its own (``kinetics400@uniform-8``) beside the task's."""

    kind = "frames"
    keys = ("transform", "frames")
    marker = "frames"
    noun = "clips"

    sampler: str = "middle"
    task_sampler: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        from evalkit.data.video import parse_sampler

        try:  # each as its one spelling (" middle" is middle)
            object.__setattr__(self, "sampler", parse_sampler(self.sampler).name)
            own = self.sampler if self.task_sampler is None else parse_sampler(self.task_sampler).name
            object.__setattr__(self, "task_sampler", own)
        except ValueError as e:
            raise self.error(f"view.frames: {e}") from None

    @classmethod
    def parse(cls, view: Mapping[str, Any], where: str, *, transform: str | None, frames: str | None,
              default_transform: str | None, base_dir: Path | None) -> FramesViewSpec:
        own = cls(**cls.image_fields(view, where, transform, default_transform),
                  **({"sampler": view["frames"]} if view.get("frames") is not None else {}), where=where)
        if frames is not None:
            from evalkit.data.video import parse_sampler

            try:
                frames = parse_sampler(frames).name
            except ValueError as e:
                raise ViewSpecError(f"{where}: --frames: {e}") from None
        return dataclasses.replace(own, sampler=frames or own.sampler, task_sampler=own.sampler)

    def build(self, encoder: Any) -> dict[str, View]:
        return {m: frames_view(v, self.sampler) for m, v in self.image_views(encoder).items()}

    def result_name(self, task: str) -> str:
        return result_name(task, self.sampler, self.task_sampler)

    def provenance(self, task: str) -> dict[str, Any]:
        """Its transforms, sampler and frame count (the report's ``1frame`` / ``8frames`` tags),
        and the result's name when ``--frames`` gave it one of its own."""
        from evalkit.data.video import parse_sampler

        parsed = parse_sampler(self.sampler)
        name = self.result_name(task)
        return {**super().provenance(task), "frame_sampler": parsed.name, "frames": parsed.n,
                **({"result_name": name} if name != task else {})}
