"""Image transforms of the EVA-CLIP-18B paper (§7): resize+centre-crop ("crop") and squash.

A transform runs in two stages: ``geometry`` (per image, in the data-loader workers: resize, crop,
RGB, to a uint8 CHW tensor) and ``normalize`` (per batch, just before the forward: to float,
/255, minus mean, over std). The two stages give bit-for-bit the tensors of torchvision's
``Compose([Resize, CenterCrop, ToTensor(), Normalize])`` — the same elementwise float ops in the
same order — at a fraction of the per-image cost, and send uint8 (¼ of the bytes) between
processes. Calling the object on one image runs both stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from evalkit.views.base import TRANSFORMS

_INTERP = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
}


def _to_rgb(img):
    return img.convert("RGB") if getattr(img, "mode", "RGB") != "RGB" else img


@dataclass(frozen=True)
class Preprocess:
    """``crop``: shortest side to ``size`` then centre crop (the "*" of Table 14);
    ``squash``: direct resize to ``size``×``size`` (the "†")."""

    mode: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.mode not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.mode!r}; choose from {', '.join(TRANSFORMS)}")
        if self.interpolation not in _INTERP:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; choose from {', '.join(_INTERP)}")

    def geometry(self, img: Any) -> torch.Tensor:
        """A PIL image -> (3, size, size) uint8 tensor."""
        interp = _INTERP[self.interpolation]
        if self.mode == "crop":
            img = TF.center_crop(TF.resize(img, self.size, interpolation=interp), self.size)
        else:
            img = TF.resize(img, [self.size, self.size], interpolation=interp)
        # = TF.pil_to_tensor, minus its copy to contiguous memory (collate's stack makes one)
        return torch.from_numpy(np.array(_to_rgb(img), dtype=np.uint8)).permute(2, 0, 1)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> float32, exactly as ToTensor() then Normalize(mean, std)."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=batch.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=batch.device).view(-1, 1, 1)
        return batch.to(torch.float32).div(255).sub_(mean).div_(std)

    def __call__(self, img: Any) -> torch.Tensor:
        return self.normalize(self.geometry(img).unsqueeze(0))[0]


def build_transform(
    mode: str,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    interpolation: str = "bicubic",
) -> Preprocess:
    return Preprocess(mode, size, tuple(mean), tuple(std), interpolation)
