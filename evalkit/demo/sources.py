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

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from evalkit.data.sources import RawSample, SourceData, Unit
from evalkit.demo.shapeworld import ShapeWorldClassification, ShapeWorldRetrieval

__all__ = ["shapeworld_source"]

#: samples per unit (the feature cache stores one unit per entry)
UNIT_SIZE = 512


def shapeworld_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    """ShapeWorld's classification view: ``task`` (shape or colour), ``split``, ``n`` images, ``seed``.
    The shape and colour tasks of one (split, seed, n) hold the same images: their units share a
    ``content_id``, so the image features computed for one are reused by the other.
    ``task: retrieval``: ``n`` scenes of one or two shapes, each with ``captions`` captions."""
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
    units = [_unit(ds, f"{images}:{ds.task}", images, lo, min(lo + UNIT_SIZE, len(ds)))
             for lo in range(0, len(ds), UNIT_SIZE)]
    return SourceData(units, list(ds.classnames), None, {"generated": True})


def _unit(ds: ShapeWorldClassification, prefix: str, images: str, lo: int, hi: int) -> Unit:
    def sample(i: int) -> RawSample:
        def load() -> Image.Image:
            return ds[i][0]

        return ds.key(i), load, int(ds.label(i))

    def iterate() -> Iterator[RawSample]:
        for i in range(lo, hi):
            yield sample(i)

    return Unit(id=f"{prefix}[{lo}:{hi}]", samples=iterate, size=hi - lo, content_id=f"{images}[{lo}:{hi}]")


def _retrieval(ds: ShapeWorldRetrieval) -> SourceData:
    prefix = f"shapeworld-scenes:{ds.seed}:{ds.size}px:{ds.captions}"

    def unit(lo: int, hi: int) -> Unit:
        def iterate() -> Iterator[RawSample]:
            for i in range(lo, hi):
                yield ds.key(i), (lambda i=i: ds.image(i)), ds.texts(i)

        return Unit(id=f"{prefix}[{lo}:{hi}]", samples=iterate, size=hi - lo)

    units = [unit(lo, min(lo + UNIT_SIZE, len(ds))) for lo in range(0, len(ds), UNIT_SIZE)]
    return SourceData(units, info={"generated": True, "images": len(ds), "captions_per_image": ds.captions})
