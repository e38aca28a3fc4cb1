"""The demo's data source, ``type: shapeworld`` in a task file: procedurally generated ShapeWorld
images (:mod:`evalkit.demo.shapeworld`), nothing to download.

The demo plugs in as a separate package would: evalkit's data layer never imports it. The source
is declared in pyproject.toml under the ``evalkit.sources`` entry-point group,

    [project.entry-points."evalkit.sources"]
    shapeworld = "evalkit.demo.sources:shapeworld_source"

and ``evalkit.data.sources.sources`` loads it the first time a task asks for ``shapeworld``. A
source is a callable ``(source spec, data root, task name) -> SourceData`` built from the data
layer's public types (:class:`~evalkit.data.sources.SourceData`, :class:`~evalkit.data.sources.Unit`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.data.sources import DataError, RawSample, SourceData, range_units
from evalkit.data.video import VideoClip, frame_indices
from evalkit.demo.shapeworld import ShapeWorldClassification, ShapeWorldRetrieval

__all__ = ["shapeworld_source", "video_source", "video_cache_root"]

#: samples per unit (the feature cache stores one unit per entry)
UNIT_SIZE = 512


def shapeworld_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    """ShapeWorld's classification view: ``task`` (shape or colour), ``split``, ``n`` images, ``seed``.
    The shape and colour tasks of one (split, seed, n) hold the same images: their units share a
    ``content_id``, so the image features computed for one are reused by the other.
    ``task: retrieval``: ``n`` scenes of one or two shapes, each with ``captions`` captions.
    ``task: video``: ``n`` clips of ``frames`` frames, each showing its shape in only some of them,
    labelled by shape (:func:`video_source`).
    ``task: solids``: ``n`` point clouds of primitive solids (:mod:`evalkit.demo.solids`), labelled
    by the ShapeWorld shape their depth views show (:func:`solids_source`)."""
    if source.get("task") == "video":
        return video_source(source, data_root, task)
    if source.get("task") == "solids":
        return solids_source(source)
    if source.get("task") == "retrieval":
        return _retrieval(ShapeWorldRetrieval(n=int(source.get("n", 500)), seed=int(source.get("seed", 0)),
                                              captions=int(source.get("captions", 5))))
    ds = ShapeWorldClassification(
        task=source.get("task", "shape"),
        split=source.get("split", "test"),
        n=int(source.get("n", 1000)),
        seed=int(source.get("seed", 0)),
    )
    images = f"shapeworld:{ds.split}:{ds.seed}:{ds.size}px:{len(ds)}"  # the same images in every task's view

    def get(i: int) -> RawSample:
        return ds.key(i), (lambda: ds[i][0]), int(ds.label(i))

    # same ids as ever: existing caches still match
    units = range_units(f"{images}:{ds.task}", len(ds), get, chunk=UNIT_SIZE, content_prefix=images)
    return SourceData(units, list(ds.classnames), None, {"generated": True})


def _retrieval(ds: ShapeWorldRetrieval) -> SourceData:
    def get(i: int) -> RawSample:
        return ds.key(i), (lambda: ds.image(i)), ds.texts(i)

    units = range_units(f"shapeworld-scenes:{ds.seed}:{ds.size}px:{ds.captions}", len(ds), get, chunk=UNIT_SIZE)
    return SourceData(units, info={"generated": True, "images": len(ds), "captions_per_image": ds.captions})


def video_cache_root() -> Path:
    """Where generated clip sets live: ``shapeworld-video/`` under the cache folder of the run in
    progress (``evalkit run --cache-dir``; a temporary folder, removed when the run ends, under
    ``--no-cache``), outside a run (``evalkit data check``) under evalkit's cache folder
    (``$EVALKIT_CACHE``, else ``~/.cache/evalkit``): :func:`evalkit.features.cache.cache_dir_in_use`."""
    from evalkit.features.cache import cache_dir_in_use

    return cache_dir_in_use() / "shapeworld-video"


def video_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    """``n`` generated clips (``seed``, ``frames`` per clip, ``size`` px), labelled by shape; each
    sample's loader returns a :class:`~evalkit.data.video.VideoClip`, as a real video source's
    does. The set is generated on first use and reused from the cache after
    (:func:`evalkit.demo.shapeworld_video.ensure_clips`); ``data_root`` is not used."""
    from evalkit.demo import shapeworld_video as sv

    try:
        n, seed = int(source.get("n", 96)), int(source.get("seed", 0))
        frames, size = int(source.get("frames", sv.FRAMES)), int(source.get("size", sv.SIZE))
    except (TypeError, ValueError) as e:
        raise DataError(f"task {task!r}: source n, seed, frames and size must be integers ({e})") from e
    root = video_cache_root()
    try:
        clips = sv.ensure_clips(root, seed, n, frames, size)
    except ValueError as e:
        raise DataError(f"task {task!r}: {e}") from e
    except OSError as e:
        raise DataError(f"task {task!r}: cannot write the generated clips under {root}: {e}") from e

    def get(i: int) -> RawSample:
        spec, path = clips.specs[i], clips.paths[i]
        return f"shapeworld-video-s{seed}-{i:05d}", (lambda: VideoClip(path)), spec.label

    units = range_units(f"shapeworld-video:{clips.folder.name}:{clips.digest}", n, get, chunk=UNIT_SIZE)
    middle = sum(s.visible[frame_indices(frames, "middle")[0]] for s in clips.specs)
    info = {"generated": True, "clips": n, "frames_per_clip": frames, "size": size, "path": str(clips.folder),
            "middle_frame_shows_shape": middle}
    return SourceData(units, list(sv.SHAPES), None, info)


def solids_source(source: dict[str, Any]) -> SourceData:
    """Generated point clouds (``split``, ``n``, ``seed``, ``points`` per cloud); each sample's
    loader returns an (N, 3) float32 array, as a point-cloud file would."""
    from evalkit.demo.solids import N_POINTS, SolidsClassification

    ds = SolidsClassification(split=str(source.get("split", "test")), n=int(source.get("n", 300)),
                              seed=int(source.get("seed", 0)), n_points=int(source.get("points", N_POINTS)))

    def get(i: int) -> RawSample:
        return ds.key(i), (lambda: ds[i][0]), ds.label(i)

    units = range_units(f"solids:{ds.split}:{ds.seed}:{ds.n_points}pts:{len(ds)}", len(ds), get, chunk=UNIT_SIZE)
    return SourceData(units, list(ds.classnames), None, {"generated": True, "clouds": len(ds)})
