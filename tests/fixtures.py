"""Generated fixtures: tiny open_clip models, image datasets in every layout, corrupt files."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def register_tiny_open_clip(tmp: Path, name: str = "evalkit-tiny", **text_overrides) -> str:
    """Register a tiny open_clip architecture (random weights) under ``name``."""
    import open_clip

    cfg = json.loads(json.dumps(TINY_OPEN_CLIP))
    cfg["text_cfg"].update(text_overrides)
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return name


CLASSNAMES = ["red square", "green square", "blue square", "white square", "black square", "grey square"]
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (250, 250, 250), (5, 5, 5), (128, 128, 128)]


def make_image(label: int, i: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(1000 * label + i)
    arr = np.clip(np.array(COLOURS[label])[None, None] + rng.normal(0, 25, (size, size + i % 7, 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8))


def image_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def make_wds(root: Path, n_per_class: int = 4, nshards: int = 2, corrupt: int = 0,
             templates=("a photo of a {c}.", "a {c}.")) -> Path:
    """clip_benchmark WebDataset layout; ``corrupt`` samples get undecodable image bytes."""
    split = root / "test"
    split.mkdir(parents=True, exist_ok=True)
    samples = [(c, i) for c in range(len(CLASSNAMES)) for i in range(n_per_class)]
    per_shard = -(-len(samples) // nshards)
    k = 0
    for s in range(nshards):
        with tarfile.open(split / f"{s}.tar", "w") as tar:
            for label, i in samples[s * per_shard:(s + 1) * per_shard]:
                key = f"s{k:06d}"
                data = image_bytes(make_image(label, i)) if k >= corrupt else b"\x89PNG not really"
                for ext, payload in (("png", data), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                k += 1
    (split / "nshards.txt").write_text(f"{nshards}\n")
    (root / "classnames.txt").write_text("\n".join(CLASSNAMES) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    return root


def make_folder(root: Path, n_per_class: int = 3) -> Path:
    for label, name in enumerate(CLASSNAMES):
        d = root / name.replace(" ", "_")
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            make_image(label, i).save(d / f"{i}.jpg", quality=95)
    return root


class FakeClock:
    """A clock that stands still until a test moves ``now`` (time.monotonic / perf_counter's stand-in)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def image_features(encoder, data, transforms, **kwargs):
    """evalkit.features.embed.embed with image transforms (each one an ImageView named by its key)."""
    from evalkit.features.embed import embed
    from evalkit.views.image import as_view

    return embed(encoder, data, {name: as_view(t, name) for name, t in transforms.items()}, **kwargs)
