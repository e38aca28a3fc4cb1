"""The one interface every model meets. Everything downstream of ``models.load`` sees only this."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evalkit.models.precision import DEFAULT_PRECISION, Precision, parse_precision


def weights_label(weights: str) -> str:
    """Weights as a result names them portably: a local file or folder by its name (never its
    absolute path), anything else (a hub URI, a tag, ``random``, a plugin's label) as it is."""
    if "://" not in weights and ("/" in weights or os.sep in weights):
        return Path(weights).name or weights
    return weights


@dataclass(frozen=True)
class ImageInput:
    """What an image tower takes, as data: square images of ``size`` pixels, resized with
    ``interpolation`` and normalised by ``mean`` / ``std``. Views build their transforms from it
    (evalkit.views.image), so a model family never builds a view. ``processor``: where a model's
    authors ship their own preprocessing (a Hugging Face image processor), a callable
    PIL image -> normalised (3, size, size) float tensor that the image view uses unchanged;
    ``processor_id`` says what it is (part of the view's identity, so of the cache key)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    processor: Callable[[Any], torch.Tensor] | None = field(default=None, compare=False, repr=False)
    processor_id: str = ""


@dataclass(frozen=True)
class PointsInput:
    """What a point tower takes: clouds of ``npoints`` points (xyz + rgb), prepared as
    :func:`evalkit.models.uni3d.prepare_points` does."""

    npoints: int = 10000


@dataclass(frozen=True)
class Tower:
    """One modality's encoder: ``encode`` (the name of a method of the module it runs on, e.g.
    ``"encode_image"``, or a function: a batch of prepared inputs -> (B, D) features), the
    ``input`` it takes as data (:class:`ImageInput`, :class:`PointsInput`, ...), its own ``module``
    (None: the encoder's ``model``) and the dtype its inputs are cast to (None: the encoder's
    precision; point coordinates stay float32).

    A tower named by method follows its encoder's model: ``dataclasses.replace(encoder,
    model=other)`` runs ``other``. A function cannot be re-pointed, so a copy with another model
    whose towers are functions of the old one is refused (:class:`Encoder` checks ``owner``, the
    model such a tower was built for; set by the encoder, not by loaders)."""

    encode: str | Callable[[torch.Tensor], torch.Tensor]
    input: Any
    module: nn.Module | None = None
    input_dtype: torch.dtype | None = None
    owner: nn.Module | None = field(default=None, compare=False, repr=False)


@dataclass
class Encoder:
    """A CLIP-style model behind a uniform API: a text tower (``tokenizer`` and ``model``'s
    ``encode_text``, or ``_text_fn``) and a set of modality towers (``towers``: ``image``,
    ``points``, ...), each carrying its input configuration as data.

    ``causal_text`` decides how text is batched: a causal tower with EOT pooling (CLIP, EVA-CLIP)
    cannot see padding after EOT, so prompts are length-sorted and each batch is cut to its
    longest prompt. A bidirectional tower (SigLIP-style) must always see full-length input.
    """

    name: str
    model: nn.Module
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    embed_dim: int
    causal_text: bool
    #: the modality towers beside the text tower, by modality (``image``, ``points``, ...)
    towers: dict[str, Tower] = field(default_factory=dict)
    weights: str = ""
    #: how the loader that knows names these weights portably (an open_clip tag, each part of a
    #: paired model); "" when :func:`weights_label` of ``weights`` says it (see :attr:`pretrained`)
    pretrained_label: str = ""
    #: a name from PRECISION_NAMES, what results record (checked on construction; the parsed
    #: Precision is precision_spec)
    precision: str = DEFAULT_PRECISION
    device: str = "cpu"
    arch: dict[str, Any] = field(default_factory=dict)
    weights_digest: str = ""
    #: module -> device of a model placed over several devices (accelerate's device map), else None
    device_map: dict[str, str] | None = None
    #: the text tower's forward (tokens -> features) when it is not ``model.encode_text``
    _text_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: share prompt prefixes where the text tower allows it (see evalkit.models.prefix); False: never
    share_text_prefix: bool = True

    def __post_init__(self) -> None:
        from evalkit.models.tokenize import cached_tokenizer

        self.precision = parse_precision(self.precision).name
        self.tokenizer = cached_tokenizer(self.tokenizer)
        towers = {}
        for modality, tower in self.towers.items():
            if not isinstance(tower, Tower):
                raise TypeError(f"{self.name}: towers[{modality!r}] must be a Tower, not {type(tower).__name__}")
            if isinstance(tower.encode, str):
                if not callable(getattr(tower.module if tower.module is not None else self.model, tower.encode, None)):
                    raise TypeError(f"{self.name}: towers[{modality!r}] runs {tower.encode}(), which its module has not")
            elif not callable(tower.encode):
                raise TypeError(f"{self.name}: towers[{modality!r}].encode must be a method name or a function")
            elif tower.owner is not None and tower.owner is not self.model:
                raise ValueError(
                    f"{self.name}: towers[{modality!r}] runs a function of another model than this encoder's (a copy "
                    f"made with model=...?); give the copy its own towers, or name the tower's method "
                    f"(Tower('encode_image', ...)) so that it follows the model")
            elif tower.owner is None and (tower.module is None or tower.module is self.model):
                tower = dataclasses.replace(tower, owner=self.model)
            towers[modality] = tower
        self.towers = towers  # the copy's own (dataclasses.replace hands over the same dict)

    def tower(self, modality: str) -> Tower:
        """The tower that encodes ``modality``; a model without one is a ``TypeError`` naming both."""
        if modality not in self.towers:
            have = ", ".join(["text", *self.towers])
            raise TypeError(f"{self.name} has no {modality} tower (it has: {have})")
        return self.towers[modality]

    def tower_module(self, modality: str) -> nn.Module:
        """The module ``modality``'s tower runs on: its own, or the encoder's ``model``."""
        tower = self.tower(modality)
        return tower.module if tower.module is not None else self.model

    def modules(self) -> list[nn.Module]:
        """Every module behind this encoder, once each: ``model`` and the towers' own (placement,
        parameter counts)."""
        found: dict[int, nn.Module] = {id(self.model): self.model}
        for tower in self.towers.values():
            if tower.module is not None:
                found.setdefault(id(tower.module), tower.module)
        return list(found.values())

    @property
    def has_images(self) -> bool:
        return "image" in self.towers

    @property
    def has_points(self) -> bool:
        return "points" in self.towers

    @property
    def pretrained(self) -> str:
        """The weights as clip_benchmark's ``pretrained`` names them, the same on every machine
        (``weights`` keeps the whole path): derived, so an encoder copied with other weights
        (``dataclasses.replace``, as a plugin may) is never named by the old ones."""
        return self.pretrained_label or weights_label(self.weights)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    # -- forward -------------------------------------------------------------------------------
    @property
    def precision_spec(self) -> Precision:
        """The :class:`~evalkit.models.precision.Precision` this model runs at."""
        return parse_precision(self.precision)

    @property
    def input_dtype(self) -> torch.dtype:
        return self.precision_spec.dtype

    def _autocast(self):
        device_type = self.device.split(":")[0]
        dtype = self.precision_spec.autocast_dtype(device_type)
        if dtype is not None:
            return torch.autocast(device_type, dtype=dtype)
        return torch.autocast("cpu", enabled=False)

    @torch.inference_mode()
    def encode(self, modality: str, batch: torch.Tensor) -> torch.Tensor:
        """A batch of one modality's prepared inputs -> (B, D) float32 features on the main device."""
        tower = self.tower(modality)
        module = tower.module if tower.module is not None else self.model
        with self._autocast():
            # .to(device): a model split over devices returns from wherever its last layer runs.
            non_blocking = batch.device.type == "cpu" and batch.is_pinned()  # pinned: an asynchronous copy
            dtype = tower.input_dtype or self.input_dtype
            fn = getattr(module, tower.encode) if isinstance(tower.encode, str) else tower.encode
            return fn(batch.to(self.device, dtype, non_blocking=non_blocking)).float().to(self.device)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode("image", images)

    def encode_points(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 6) clouds (xyz + rgb, prepared as the point tower expects) -> (B, D) features;
        coordinates stay float32 (neighbour search in half precision would pick other patches)."""
        return self.encode("points", points)

    @torch.inference_mode()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        fn = self._text_fn or self.model.encode_text
        with self._autocast():
            return fn(tokens.to(self.device)).float().to(self.device)

    # -- prompts sharing a prefix (causal towers; see evalkit.models.prefix) -------------------
    @property
    def shared_prefix(self) -> Any:
        """The runner that encodes a prompt prefix once for many prompts, or None when switched
        off or this model's text tower does not allow it (then prompts are encoded whole)."""
        return self._prefix_support if self.share_text_prefix and self.causal_text else None

    @functools.cached_property
    def _prefix_support(self) -> Any:
        from evalkit.models.prefix import shared_prefix_text

        return shared_prefix_text(self.model)

    @torch.inference_mode()
    def encode_text_prefixes(self, tokens: torch.Tensor) -> Any:
        """Per-layer keys and values of G prompt prefixes (G, P) of token ids."""
        with self._autocast():
            return self.shared_prefix.prefixes(tokens.to(self.device))

    @torch.inference_mode()
    def encode_text_suffix(self, prefixes: Any, which: torch.Tensor, prefix_len: torch.Tensor, tokens: torch.Tensor,
                           pool_at: torch.Tensor) -> torch.Tensor:
        """Features of prompts = prefix ``which[b]`` (``prefix_len[b]`` tokens) + ``tokens[b]``;
        ``pool_at``: each prompt's EOT position within ``tokens``. Equal to ``encode_text`` on the
        whole prompts up to float rounding."""
        with self._autocast():
            d = self.device
            out = self.shared_prefix.suffix(prefixes, which.to(d), prefix_len.to(d), tokens.to(d), pool_at.to(d))
            return out.float().to(self.device)

    # -- provenance ----------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Hash of architecture + weights + precision: the cache key and provenance of features."""
        h = hashlib.sha256()
        h.update(repr(sorted(self.arch.items())).encode())
        h.update(self.weights_digest.encode() or self.weights.encode())
        h.update(self.precision.encode())
        return h.hexdigest()[:16]


def state_dict_digest(model: nn.Module, max_bytes_per_tensor: int = 4096) -> str:
    """A cheap content digest of a model's weights (names, shapes and a sample of each tensor)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        if t.device.type != "meta" and t.numel():
            flat = t.detach().reshape(-1)
            n = max(1, max_bytes_per_tensor // max(flat.element_size(), 1))
            h.update(flat[:n].float().cpu().numpy().tobytes())
            h.update(flat[-n:].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


__all__ = ["Encoder", "ImageInput", "PointsInput", "Tower", "state_dict_digest", "weights_label"]
