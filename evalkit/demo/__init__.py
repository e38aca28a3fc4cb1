"""The embedded demo: the procedural ShapeWorld data set and a tiny EVA-CLIP trained on it.

``evalkit.demo.shapeworld`` needs only NumPy and Pillow; ``evalkit.demo.train`` trains the model
and ``evalkit.demo.train.load_demo_model`` loads the committed weights from ``WEIGHTS_DIR``.
Nothing heavy is imported here, so ``python -m evalkit.demo.train --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

#: the committed checkpoint: config.json, sharded fp16 safetensors + index, training.json
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

__all__ = ["WEIGHTS_DIR"]
