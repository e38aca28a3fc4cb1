"""Generated miniatures of the 27 EVA-CLIP-18B classification datasets, each in the layout its users
have on disk: the builders live in :mod:`evalkit.demo.miniatures` (public, so the benchmarks use
them without reaching into tests/); the tests import them from here.

``build_data_root(root)`` writes all of them under one data root and returns, per task, the
number of samples the task should find there.
"""

from __future__ import annotations

from evalkit.demo.miniatures import *  # noqa: F403
from evalkit.demo.miniatures import pixels as _pixels  # noqa: F401  (the tests' name)
