"""ShapeWorld: a procedural data set of coloured shapes with captions, for the embedded demo.

Every sample is a pure function of ``(seed, split, index)``: its attributes are drawn from a
NumPy generator seeded with that triple, and the image is drawn from the attributes alone, so
nothing is stored and the same request always gives byte-identical pixels. The "train" and
"test" splits use different seed streams, so the demo model is evaluated on images it never saw.

The module needs only NumPy and Pillow (no torch), so data-side code can use it without a model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "POSITIONS",
    "SPLITS",
    "SHAPE_TEMPLATES",
    "COLOUR_TEMPLATES",
    "TASKS",
    "IMAGE_SIZE",
    "ShapeAttrs",
    "ShapeSample",
    "sample_attrs",
    "render",
    "caption",
    "describe",
    "fits",
    "class_prompts",
    "generate",
    "sample_key",
    "ShapeWorldClassification",
    "Scene",
    "scene",
    "render_scene",
    "scene_captions",
    "ShapeWorldRetrieval",
]

# Chosen to stay distinct at the demo model's 64-pixel input even when small: a hexagon, for one,
# is only ~1 pixel away from a circle at that size.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")

# Base RGB per colour name; each sample jitters it a little so the model must learn a region of
# colour space rather than six exact values. The bases are far apart (> 100 in RGB distance).
_COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (35, 75, 215),
    "yellow": (240, 210, 30),
    "purple": (135, 45, 175),
    "orange": (245, 135, 20),
}
COLOURS: tuple[str, ...] = tuple(_COLOUR_RGB)

SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
SPLITS: tuple[str, ...] = ("train", "test")

# Zero-shot prompts for the two demo tasks. The colour prompts avoid "a {c}" because "orange"
# would need "an"; the shape names all start with a consonant, so "a {c}" is grammatical there.
SHAPE_TEMPLATES: list[str] = ["a photo of a {c}.", "a drawing of a {c}.", "a {c} shape."]
COLOUR_TEMPLATES: list[str] = ["a photo of something {c}.", "the {c} shape.", "a shape coloured {c}."]

#: task name -> (class names, templates)
TASKS: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "shape": (SHAPES, SHAPE_TEMPLATES),
    "colour": (COLOURS, COLOUR_TEMPLATES),
}

#: native rendering size; larger than the demo model's input so evaluation really resizes.
IMAGE_SIZE = 96

# Centre of each named position as a fraction of the image side (x, y).
_POSITION_XY: dict[str, tuple[float, float]] = {
    "left": (0.32, 0.50),
    "right": (0.68, 0.50),
    "top": (0.50, 0.32),
    "bottom": (0.50, 0.68),
    "centre": (0.50, 0.50),
}
# Circumradius range as a fraction of the image side; the gap between the two keeps the words
# "small" and "large" unambiguous.
_RADIUS: dict[str, tuple[float, float]] = {"small": (0.15, 0.19), "large": (0.25, 0.30)}
_SPLIT_STREAM = {"train": 1, "test": 2}
_SUPERSAMPLE = 2  # draw at 2x and box-filter down: cheap anti-aliasing for polygon edges


@dataclass(frozen=True)
class ShapeAttrs:
    """Everything needed to draw one image: the named attributes and their continuous jitter.

    ``cx``, ``cy`` and ``radius`` are fractions of the image side so one sample renders the same
    scene at any size; ``rotation`` is in degrees.
    """

    shape: str
    colour: str
    size: str
    position: str
    rgb: tuple[int, int, int]
    background: int
    cx: float
    cy: float
    radius: float
    rotation: float
    noise_seed: int


@dataclass(frozen=True)
class ShapeSample:
    key: str
    attrs: ShapeAttrs
    image: Image.Image
    caption: str


def _check_split(split: str) -> int:
    try:
        return _SPLIT_STREAM[split]
    except KeyError:
        raise ValueError(f"unknown ShapeWorld split {split!r}; choose from {', '.join(SPLITS)}") from None


def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    # A SeedSequence over the whole triple gives independent streams per split and per index,
    # so sample i can be produced without generating samples 0..i-1 first.
    return np.random.default_rng([int(seed), _check_split(split), int(index)])


def sample_key(seed: int, split: str, index: int) -> str:
    """A stable, human-readable identity for one sample (used as a cache key and in reports)."""
    _check_split(split)
    return f"shapeworld-s{seed}-{split}-{index:06d}"


def draw_attrs(rng: np.random.Generator) -> ShapeAttrs:
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = COLOURS[rng.integers(len(COLOURS))]
    size = SIZES[rng.integers(len(SIZES))]
    position = POSITIONS[rng.integers(len(POSITIONS))]
    base = np.array(_COLOUR_RGB[colour])
    rgb = tuple(int(v) for v in np.clip(base + rng.integers(-18, 19, size=3), 0, 255))
    lo, hi = _RADIUS[size]
    radius = float(rng.uniform(lo, hi))
    px, py = _POSITION_XY[position]
    # Keep the whole shape (nearly) inside the frame: clamp the jittered centre by the radius.
    margin = radius + 0.02
    cx = float(np.clip(px + rng.uniform(-0.04, 0.04), margin, 1 - margin))
    cy = float(np.clip(py + rng.uniform(-0.04, 0.04), margin, 1 - margin))
    return ShapeAttrs(
        shape=shape,
        colour=colour,
        size=size,
        position=position,
        rgb=rgb,  # type: ignore[arg-type]
        background=int(rng.integers(190, 246)),
        cx=cx,
        cy=cy,
        radius=radius,
        # Small rotations only: a square turned by 45 degrees would read as a diamond.
        rotation=float(rng.uniform(-15.0, 15.0)),
        noise_seed=int(rng.integers(2**31)),
    )


def sample_attrs(seed: int, split: str, index: int) -> ShapeAttrs:
    """The attributes of sample ``index`` of ``split`` under ``seed`` (random access, O(1))."""
    return draw_attrs(_sample_rng(seed, split, index))


def _regular_polygon(n: int, cx: float, cy: float, r: float, start_deg: float) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(math.radians(start_deg + 360.0 * k / n)),
         cy + r * math.sin(math.radians(start_deg + 360.0 * k / n)))
        for k in range(n)
    ]


def _outline(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    """Polygon vertices (pixels) of a non-circular shape; y grows downwards as in PIL."""
    if shape == "square":
        return _regular_polygon(4, cx, cy, r, 45.0 + rot)
    if shape == "triangle":
        return _regular_polygon(3, cx, cy, r, -90.0 + rot)
    if shape == "diamond":
        # A tall rhombus: narrower than a square turned by 45 degrees, so the two never meet.
        pts = [(0.0, -r), (0.6 * r, 0.0), (0.0, r), (-0.6 * r, 0.0)]
        c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    if shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else 0.45 * r
            a = math.radians(-90.0 + rot + 36.0 * k)
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    if shape == "cross":
        w = 0.36 * r  # half-width of each arm
        arm = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in arm]
    raise ValueError(f"unknown ShapeWorld shape {shape!r}; choose from {', '.join(SHAPES)}")


def render(attrs: ShapeAttrs, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw ``attrs`` as a ``size``×``size`` RGB image on a lightly noisy grey background."""
    return render_scene(Scene((attrs,), "", attrs.background, attrs.noise_seed), size)


_PREFIXES = ("", "", "a photo of ", "a picture of ", "an image of ", "a drawing of ", "there is ")
_NOUNS = ("shape", "object", "thing")
_POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("near the top", "at the top"),
    "bottom": ("near the bottom", "at the bottom"),
    "centre": ("in the centre", "in the middle"),
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe(attrs: ShapeAttrs, rng: np.random.Generator) -> tuple[str, frozenset[str]]:
    """A caption of ``attrs`` and the names of the attributes it mentions (of ``shape``,
    ``colour``, ``size``, ``position``), so a trainer knows which other images it also fits."""
    mode = rng.integers(10)
    with_shape = mode < 8  # 80% name the shape
    with_colour = mode >= 3 or not with_shape  # 70% name the colour; at least one is named
    with_size = rng.random() < 0.3
    with_position = rng.random() < 0.3
    noun = attrs.shape if with_shape else _NOUNS[rng.integers(len(_NOUNS))]
    size = f"{attrs.size} " if with_size else ""
    where = f" {_POSITION_PHRASES[attrs.position][rng.integers(2)]}" if with_position else ""

    form = rng.integers(4) if with_colour else 0
    if form == 0 or form == 1:  # colour as an adjective, or no colour at all
        colour = f"{attrs.colour} " if with_colour else ""
        phrase = f"{size}{colour}{noun}"
        det = "the" if rng.random() < 0.2 else _article(phrase)
        text = f"{det} {phrase}{where}"
    elif form == 2:  # "a circle coloured red" / "a shape that is red"
        link = ("coloured", "that is", "in")[rng.integers(3)]
        phrase = f"{size}{noun}"
        text = f"{_article(phrase)} {phrase} {link} {attrs.colour}{where}"
    elif with_shape:  # "the red circle"
        text = f"the {size}{attrs.colour} {noun}{where}"
    else:  # "something red" / "something red on the left"
        text = f"something {attrs.colour}{where}"
        with_size = False
    prefix = _PREFIXES[rng.integers(len(_PREFIXES))]
    end = "." if rng.random() < 0.5 else ""
    named = {"shape": with_shape, "colour": with_colour, "size": with_size, "position": with_position}
    return f"{prefix}{text}{end}", frozenset(k for k, v in named.items() if v)


def caption(attrs: ShapeAttrs, rng: np.random.Generator) -> str:
    """A varied English caption of ``attrs`` ("a red circle", "a small blue square on the left").

    Some captions leave out the shape or the colour (never both): a zero-shot prompt such as
    "a photo of a circle." names only one attribute, and a model trained only on full
    descriptions would not know where such a partial description belongs.
    """
    return describe(attrs, rng)[0]


def fits(named: frozenset[str], described: ShapeAttrs, other: ShapeAttrs) -> bool:
    """Whether a caption of ``described`` that mentions the attributes ``named`` is also a true
    caption of ``other`` ("a red circle" fits every red circle)."""
    return all(getattr(described, k) == getattr(other, k) for k in named)


def generate(n: int, seed: int = 0, split: str = "train", size: int = IMAGE_SIZE) -> list[ShapeSample]:
    """Samples ``0..n-1`` of ``split`` under ``seed``, each with an image and one caption."""
    if n < 0:
        raise ValueError(f"ShapeWorld sample count must be >= 0, got {n}")
    out = []
    for i in range(n):
        rng = _sample_rng(seed, split, i)
        attrs = draw_attrs(rng)
        # The caption continues the same per-sample stream, so it is as reproducible as the image.
        out.append(ShapeSample(sample_key(seed, split, i), attrs, render(attrs, size), caption(attrs, rng)))
    return out


class ShapeWorldClassification:
    """A torch-free, map-style classification view of ShapeWorld: ``(image, label)`` pairs.

    ``task="shape"`` labels each image by its shape, ``task="colour"`` by its colour; both views
    of one ``(split, seed)`` contain the same images (and the same keys), so features computed for
    one task can be reused by the other. Images are rendered on demand.
    """

    def __init__(self, task: str = "shape", split: str = "test", n: int = 1000, seed: int = 0,
                 size: int = IMAGE_SIZE) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown ShapeWorld task {task!r}; choose from {', '.join(TASKS)}")
        _check_split(split)
        if n <= 0:
            raise ValueError(f"ShapeWorld data set size must be positive, got n={n}")
        self.task, self.split, self.n, self.seed, self.size = task, split, int(n), int(seed), int(size)
        names, templates = TASKS[task]
        self.classnames: list[str] = list(names)
        self.templates: list[str] = list(templates)
        self._attr = "shape" if task == "shape" else "colour"

    def __len__(self) -> int:
        return self.n

    def _index(self, i: int) -> int:
        if not -self.n <= i < self.n:
            raise IndexError(f"ShapeWorld {self.split} index {i} out of range for {self.n} samples")
        return i % self.n

    def attrs(self, i: int) -> ShapeAttrs:
        return sample_attrs(self.seed, self.split, self._index(i))

    def label(self, i: int) -> int:
        return self.classnames.index(getattr(self.attrs(i), self._attr))

    def labels(self) -> list[int]:
        """All labels without rendering any image."""
        return [self.label(i) for i in range(self.n)]

    def key(self, i: int) -> str:
        return sample_key(self.seed, self.split, self._index(i))

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        attrs = self.attrs(i)
        return render(attrs, self.size), self.classnames.index(getattr(attrs, self._attr))

    def __repr__(self) -> str:
        return f"ShapeWorldClassification(task={self.task!r}, split={self.split!r}, n={self.n}, seed={self.seed})"


def class_prompts(task: str, classnames: Sequence[str] | None = None) -> list[list[str]]:
    """Per class, the task's templates filled in (the input of a zero-shot classifier)."""
    if task not in TASKS:
        raise ValueError(f"unknown ShapeWorld task {task!r}; choose from {', '.join(TASKS)}")
    names, templates = TASKS[task]
    return [[t.format(c=c) for t in templates] for c in (classnames or names)]


# -- scenes of one or two shapes, each with several captions (the demo's retrieval task) ----------

#: where the two shapes of a two-shape scene sit, and the words that relate the first to the second
_PAIRS: tuple[tuple[str, tuple[float, float], tuple[float, float], tuple[str, ...]], ...] = (
    ("left-right", (0.27, 0.50), (0.73, 0.50), ("on the left of", "to the left of", "left of")),
    ("top-bottom", (0.50, 0.27), (0.50, 0.73), ("above", "over", "on top of")),
)
_SCENE_STREAM = 7  # a seed stream of its own: scenes never repeat the classification images


@dataclass(frozen=True)
class Scene:
    """One or two shapes on one background; ``relation`` says how the first relates to the second."""

    shapes: tuple[ShapeAttrs, ...]
    relation: str = ""
    background: int = 220
    noise_seed: int = 0


def scene(seed: int, index: int) -> Scene:
    """Scene ``index`` under ``seed``: one shape (half of them) or two, left/right or top/bottom,
    of different shape or colour, small enough not to touch."""
    rng = np.random.default_rng([int(seed), _SCENE_STREAM, int(index)])
    first = draw_attrs(rng)
    if rng.random() < 0.5:
        return Scene((first,), "", first.background, first.noise_seed)
    _, xy1, xy2, relations = _PAIRS[rng.integers(len(_PAIRS))]
    second = draw_attrs(rng)
    while second.shape == first.shape and second.colour == first.colour:
        second = draw_attrs(rng)
    placed = []
    for attrs, (x, y) in ((first, xy1), (second, xy2)):
        lo, hi = _RADIUS["small"]
        placed.append(dataclasses.replace(attrs, size="small", radius=float(rng.uniform(lo, hi)),
                                          cx=x + float(rng.uniform(-0.02, 0.02)), cy=y + float(rng.uniform(-0.02, 0.02))))
    return Scene(tuple(placed), relations[rng.integers(len(relations))], first.background, first.noise_seed)


def render_scene(sc: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw every shape of ``sc`` (supersampled, box-filtered down) on its background, with light
    sensor-like noise so the background is not a single flat value."""
    if size < 8:
        raise ValueError(f"ShapeWorld image size must be at least 8 pixels, got {size}")
    big = size * _SUPERSAMPLE
    img = Image.new("RGB", (big, big), (sc.background,) * 3)
    draw = ImageDraw.Draw(img)
    for attrs in sc.shapes:
        cx, cy, r = attrs.cx * big, attrs.cy * big, attrs.radius * big
        if attrs.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=attrs.rgb)
        else:
            draw.polygon(_outline(attrs.shape, cx, cy, r, attrs.rotation), fill=attrs.rgb)
    img = img.reduce(_SUPERSAMPLE)
    noise = np.random.default_rng(sc.noise_seed).integers(-6, 7, size=(size, size, 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8), mode="RGB")


def _named(attrs: ShapeAttrs) -> str:
    return f"{attrs.colour} {attrs.shape}"


def scene_captions(sc: Scene, seed: int, index: int, k: int = 5) -> list[str]:
    """``k`` different true captions of ``sc``: single shapes as the classification captions
    describe them; pairs as "a red circle and a blue star", "a red circle on the left of a blue
    star", "two shapes: ...", or one of the two alone."""
    rng = np.random.default_rng([int(seed), _SCENE_STREAM + 1, int(index)])
    out: list[str] = []
    for _ in range(20 * k):
        if len(sc.shapes) == 1:
            text = describe(sc.shapes[0], rng)[0]
        else:
            a, b = sc.shapes
            na, nb = _named(a), _named(b)
            form = rng.integers(5)
            if form == 0:
                text = f"{_article(na)} {na} and {_article(nb)} {nb}"
            elif form == 1:
                text = f"{_article(na)} {na} {sc.relation} {_article(nb)} {nb}"
            elif form == 2:
                text = f"two shapes: {_article(na)} {na} and {_article(nb)} {nb}"
            elif form == 3:
                text = f"{_article(nb)} {nb} and {_article(na)} {na}"
            else:
                text = f"{_PREFIXES[rng.integers(len(_PREFIXES))]}{_article(na)} {na} next to {_article(nb)} {nb}"
        if text not in out:
            out.append(text)
        if len(out) == k:
            break
    return out


class ShapeWorldRetrieval:
    """Scenes of one or two shapes, each with ``captions`` different captions (test images only:
    the scene stream is never used in training)."""

    def __init__(self, n: int = 500, seed: int = 0, captions: int = 5, size: int = IMAGE_SIZE) -> None:
        if n <= 0 or captions <= 0:
            raise ValueError(f"ShapeWorld retrieval needs n > 0 and captions > 0, got n={n}, captions={captions}")
        self.n, self.seed, self.captions, self.size = int(n), int(seed), int(captions), int(size)

    def __len__(self) -> int:
        return self.n

    def key(self, i: int) -> str:
        return f"shapeworld-scene-s{self.seed}-{i:06d}"

    def image(self, i: int) -> Image.Image:
        return render_scene(scene(self.seed, i), self.size)

    def texts(self, i: int) -> list[str]:
        return scene_captions(scene(self.seed, i), self.seed, i, self.captions)
