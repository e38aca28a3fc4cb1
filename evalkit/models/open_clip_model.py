"""Any open_clip model as an Encoder (``open_clip:ARCH``, ``--weights`` a file or a pretrained tag)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evalkit.errors import one_line
from evalkit.models.encoder import Encoder, ImageInput, Tower, state_dict_digest
from evalkit.models.hub import HubFile, ModelLoadError, locate
from evalkit.models.precision import DEFAULT_PRECISION, Precision, parse_precision


def text_is_causal(model: nn.Module) -> bool:
    """True when padding after EOT cannot influence the pooled text feature: a causal mask and
    pooling at the EOT token (argmax / eos), with no appended CLS token (CoCa)."""
    tower = getattr(model, "text", model)
    attn_mask = getattr(tower, "attn_mask", None)
    pool = getattr(tower, "pool_type", None) or getattr(model, "text_pool_type", None)
    has_cls = getattr(tower, "cls_emb", None) is not None
    return attn_mask is not None and pool in ("argmax", "eos") and not has_cls and hasattr(tower, "token_embedding")


def prefix_text_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """open_clip's text forward, valid for any prefix of the 77 positions (causal towers only):
    open_clip itself always adds the full positional embedding and 77×77 mask."""
    from open_clip.transformer import text_global_pool

    tower = getattr(model, "text", model)
    pool_type = getattr(tower, "pool_type", None) or getattr(model, "text_pool_type", "argmax")
    eos_id = getattr(tower, "eos_id", None) or getattr(model, "text_eos_id", None)

    def forward(tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        cast = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(tokens).to(cast) + tower.positional_embedding[:n].to(cast)
        x = tower.transformer(x, attn_mask=tower.attn_mask[:n, :n])
        x = tower.ln_final(x)
        x = text_global_pool(x, tokens, pool_type, eos_token_id=eos_id)
        proj = tower.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    return forward


def open_clip_hub_files(arch: str, tag: str) -> list[HubFile]:
    """The Hub files open_clip would fetch for ``arch`` + pretrained ``tag``, best first; [] when
    the tag names no Hub repository.

    Mirrors open_clip's own rule (pretrained.py ``download_pretrained``): ``hf_hub`` is
    ``ORG/NAME/FILE``, or ``ORG/NAME/`` for its default open_clip_pytorch_model.bin, and a
    .safetensors twin of a .bin/.pth file is preferred when the repository has one."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    spec = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "")
    if not spec:
        return []
    repo_id, filename = os.path.split(spec)
    filename = filename or HF_WEIGHTS_NAME
    names = [filename]
    if filename == HF_WEIGHTS_NAME:
        names.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return [HubFile(repo_id, n) for n in names]


def _is_path(weights: str) -> bool:
    return Path(weights).exists() or "/" in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))


def load_open_clip(
    arch: str,
    weights: str | None = None,
    precision: str | Precision = DEFAULT_PRECISION,
    device: str = "cpu",
    name: str | None = None,
) -> Encoder:
    """``arch`` with ``weights``: None (seeded random init), a checkpoint file, or a pretrained
    tag, whose file is found in the Hugging Face cache or downloaded into it (models/hub.py) and
    handed to open_clip as a local file, so open_clip itself never goes to the network."""
    import open_clip

    spec = parse_precision(precision)
    label = name or f"open_clip:{arch}"
    if arch not in open_clip.list_models():
        from evalkit.registry import UnknownNameError

        raise UnknownNameError("model", f"open_clip:{arch}", [f"open_clip:{m}" for m in open_clip.list_models()])
    if weights == "random":  # as for EVA-CLIP cards: an untrained (seeded) model
        weights = None
    pretrained = weights
    provenance = weights or "random-init"
    preprocess: dict[str, Any] | None = None
    if weights and _is_path(weights):
        if not Path(weights).exists():
            raise ModelLoadError(f"{weights}: weights file not found")
        pretrained = provenance = str(Path(weights).resolve())
    elif weights:
        tag_cfg = open_clip.get_pretrained_cfg(arch, weights)
        if not tag_cfg:
            tags = [t for a, t in open_clip.list_pretrained() if a == arch]
            raise ModelLoadError(f"{label}: unknown pretrained tag {weights!r}; known tags: {', '.join(tags) or 'none'}")
        files = open_clip_hub_files(arch, weights)
        if files:  # else a URL-only tag: open_clip fetches it itself, as before
            found = locate(files, name=label)
            pretrained, provenance = str(found.path), f"{weights} ({found.uri})"
            # What open_clip takes from a tag but not from a file: the tag's preprocessing.
            preprocess = dict(tag_cfg)
            _warn_quick_gelu(arch, weights, tag_cfg, label)
    try:
        # A random init (no weights) is seeded so that it is reproducible and has a stable fingerprint.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = open_clip.create_model(arch, pretrained=pretrained or None, precision="fp32", device="cpu",
                                           force_preprocess_cfg=preprocess)
    except Exception as e:
        msg = one_line(e)
        if pretrained and Path(pretrained).is_file():
            mismatch = describe_mismatch(arch, pretrained)
            if mismatch:
                raise ModelLoadError(f"{label}: {pretrained} does not fit {arch}: {mismatch}") from e
            raise ModelLoadError(f"{label}: cannot load weights {pretrained}: {msg}") from e
        if "download" in msg.lower() or "connection" in msg.lower() or "hub" in msg.lower():
            raise ModelLoadError(
                f"{label}: could not fetch pretrained weights {weights!r} (offline?): {msg[:160]}; "
                f"download the checkpoint elsewhere and pass it with --weights /path/to/open_clip_model.safetensors"
            ) from e
        raise ModelLoadError(f"{label}: cannot load weights {weights!r}: {msg}") from e
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as e:
        raise ModelLoadError(f"open_clip:{arch}: cannot build its tokenizer (offline?): {e}") from e
    model.eval()
    if not spec.quantized and spec.dtype != torch.float32:  # fp16, bf16
        model = model.to(spec.dtype)
    model = model.to(device)
    visual = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    pp = getattr(visual, "preprocess_cfg", {}) or {}
    image = ImageInput(
        int(size),
        tuple(pp.get("mean", getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))),
        tuple(pp.get("std", getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))),
        pp.get("interpolation", "bicubic") if pp.get("interpolation") in ("bicubic", "bilinear") else "bicubic",
    )
    causal = text_is_causal(model)
    return Encoder(
        name=name or f"open_clip:{arch}",
        model=model,
        tokenizer=tokenizer,
        embed_dim=int(getattr(visual, "output_dim", 0) or model.encode_text(tokenizer(["a"]).to(device)).shape[-1]),
        causal_text=causal,
        towers={"image": Tower("encode_image", image)},
        weights=provenance,
        # a tag as the tag, a file by the name it was given (a hub snapshot's link, not its blob)
        pretrained_label=(Path(weights).name if _is_path(weights) else weights) if weights else "",
        precision=spec.name,
        device=device,
        arch={"family": "open_clip", "arch": arch},
        weights_digest=state_dict_digest(model),
        _text_fn=prefix_text_forward(model) if causal else None,
    )


def _warn_quick_gelu(arch: str, tag: str, tag_cfg: dict[str, Any], label: str) -> None:
    # open_clip warns about this when given the tag; given the file, it cannot know.
    import open_clip

    arch_quick = bool((open_clip.get_model_config(arch) or {}).get("quick_gelu", False))
    if bool(tag_cfg.get("quick_gelu", False)) != arch_quick:
        warnings.warn(
            f"{label}: pretrained tag {tag!r} was trained with quick_gelu={not arch_quick}, but {arch} uses "
            f"quick_gelu={arch_quick}; the {arch}-quickgelu (or plain) architecture matches it",
            UserWarning, stacklevel=3,
        )


# Keys open_clip adapts while loading rather than rejects (factory.load_checkpoint).
_RESIZED = ("visual.positional_embedding", "positional_embedding", "text.positional_embedding")
_RESHAPED = ("logit_scale", "logit_bias")
_DROPPED = ("text.transformer.embeddings.position_ids",)


def checkpoint_shapes(path: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape of an open_clip checkpoint, read lazily (safetensors header, or a memory-mapped
    torch.load), unwrapped as open_clip does (``state_dict``, ``module.``); None when the file
    cannot be read that way."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            if isinstance(obj, torch.jit.ScriptModule):
                obj = obj.state_dict()
            if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
                obj = obj["state_dict"]
            if not isinstance(obj, dict):
                return None
            shapes = {k: tuple(v.shape) for k, v in obj.items() if isinstance(v, torch.Tensor)}
    except Exception:
        return None
    if shapes and next(iter(shapes)).startswith("module"):
        shapes = {k[7:]: v for k, v in shapes.items()}
    return shapes


@contextmanager
def _silent_logging() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def model_shapes(arch: str) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape of ``arch``'s state dict, from a model built on the meta device (no memory,
    no weights); None for architectures that need the network to be built (Hugging Face text towers)."""
    import open_clip
    from accelerate import init_empty_weights

    cfg = open_clip.get_model_config(arch) or {}
    if "hf_model_name" in cfg.get("text_cfg", {}):
        return None
    try:
        with _silent_logging(), init_empty_weights():
            model = open_clip.create_model(arch, pretrained=None, device="meta", load_weights=False,
                                           pretrained_text=False)
    except Exception:
        return None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _shape(s: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, s)) + "]"


def _some(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def describe_mismatch(arch: str, checkpoint: str | Path, show: int = 2) -> str | None:
    """One line naming how ``checkpoint`` differs from ``arch`` by key and shape (the first
    ``show`` shape mismatches, then missing and unexpected keys); None when no difference is
    found (the load failed for another reason) or either side cannot be read."""
    from open_clip.model import convert_to_custom_text_state_dict

    ckpt = checkpoint_shapes(checkpoint)
    want = model_shapes(arch)
    if not ckpt or want is None:
        return None
    if "positional_embedding" in ckpt and "positional_embedding" not in want:
        ckpt = dict(convert_to_custom_text_state_dict(ckpt))  # the old text layout, as open_clip moves it
    mismatched = []
    for key, shape in want.items():
        have = ckpt.get(key)
        if have is None or have == shape:
            continue
        if key in _RESIZED and len(have) == len(shape) and have[-1:] == shape[-1:]:
            continue  # open_clip interpolates position embeddings of another length
        if key in _RESHAPED and torch.Size(have).numel() == torch.Size(shape).numel():
            continue
        mismatched.append(f"{key}: checkpoint {_shape(have)}, model {_shape(shape)}")
    missing = [k for k in want if k not in ckpt and not (k == "logit_bias" and "logit_scale" in ckpt)]
    unexpected = [k for k in ckpt if k not in want and k not in _DROPPED]
    if not (mismatched or missing or unexpected):
        return None
    parts = mismatched[:show]
    if len(mismatched) > show:
        parts.append(f"{len(mismatched) - show} more mismatches")
    if missing:
        parts.append(f"missing ({len(missing)}): {_some(missing)}")
    if unexpected:
        parts.append(f"unexpected ({len(unexpected)}): {_some(unexpected)}")
    return "; ".join(parts)
