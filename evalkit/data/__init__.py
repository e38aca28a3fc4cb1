"""Data sources: where samples come from (see ``evalkit.data.sources``).

Importing the package registers every source type: the generic ones (``wds``, ``folder``,
``hf``, ``any``) and the dataset layouts of the EVA-CLIP-18B image benchmarks.
"""

from evalkit.data import birdsnap, imagenet_variants, sources, torchvision_roots, voc2007  # noqa: F401
