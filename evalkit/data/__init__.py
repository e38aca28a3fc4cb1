"""Data sources: where samples come from (see ``evalkit.data.sources``).

Importing the package registers every source type: the generic ones (``wds``, ``folder``,
``hf``, ``any``) and the dataset layouts of the EVA-CLIP-18B image benchmarks. Source types of
other packages (the demo's ``shapeworld``) come through the ``evalkit.sources`` entry-point group,
loaded when a task first names one; evalkit.data imports nothing above it (tasks, the demo).
``evalkit.data.check`` checks one source spec on disk (found / missing / sample count).
"""

from evalkit.data import (  # noqa: F401
    birdsnap,
    captions,
    imagenet_variants,
    pointclouds,
    sources,
    torchvision_roots,
    video_datasets,
    voc2007,
)
