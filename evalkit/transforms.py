"""Image transforms of the EVA-CLIP-18B paper (§7): resize+centre-crop ("crop") and squash."""

from __future__ import annotations

from collections.abc import Callable

from torchvision import transforms as T

TRANSFORMS = ("crop", "squash")

_INTERP = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
}


def _to_rgb(img):
    return img.convert("RGB") if getattr(img, "mode", "RGB") != "RGB" else img


def build_transform(
    mode: str,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    interpolation: str = "bicubic",
) -> Callable:
    """``crop``: shortest side to ``size`` then centre crop (the "*" of Table 14);
    ``squash``: direct resize to ``size``×``size`` (the "†")."""
    interp = _INTERP[interpolation]
    if mode == "crop":
        geometry = [T.Resize(size, interpolation=interp), T.CenterCrop(size)]
    elif mode == "squash":
        geometry = [T.Resize((size, size), interpolation=interp)]
    else:
        raise ValueError(f"unknown transform {mode!r}; choose from {', '.join(TRANSFORMS)}")
    return T.Compose([*geometry, _to_rgb, T.ToTensor(), T.Normalize(mean, std)])
