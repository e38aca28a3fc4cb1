"""Any open_clip model as an Encoder (``open_clip:ARCH``, ``--weights`` a file or a pretrained tag)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from evalkit.models.encoder import Encoder, state_dict_digest


class ModelLoadError(RuntimeError):
    """A model that cannot be built or whose weights cannot be read or fetched."""


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


def load_open_clip(
    arch: str,
    weights: str | None = None,
    precision: str = "fp32",
    device: str = "cpu",
    name: str | None = None,
) -> Encoder:
    import open_clip

    if arch not in open_clip.list_models():
        from evalkit.registry import UnknownNameError

        raise UnknownNameError("model", f"open_clip:{arch}", [f"open_clip:{m}" for m in open_clip.list_models()])
    pretrained = weights
    if weights and (Path(weights).exists() or "/" in weights or weights.endswith((".pt", ".bin", ".safetensors"))):
        if not Path(weights).exists():
            raise ModelLoadError(f"{weights}: weights file not found")
        pretrained = str(Path(weights).resolve())
    try:
        # A random init (no weights) is seeded so that it is reproducible and has a stable fingerprint.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = open_clip.create_model(arch, pretrained=pretrained or None, precision="fp32", device="cpu")
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "not a known tag" in msg:
            tags = [t for a, t in open_clip.list_pretrained() if a == arch]
            raise ModelLoadError(f"open_clip:{arch}: unknown pretrained tag {weights!r}; known tags: {', '.join(tags) or 'none'}") from e
        if "download" in msg.lower() or "connection" in msg.lower() or "hub" in msg.lower():
            raise ModelLoadError(
                f"open_clip:{arch}: could not fetch pretrained weights {weights!r} (offline?): {msg[:160]}; "
                f"download the checkpoint elsewhere and pass it with --weights /path/to/open_clip_model.safetensors"
            ) from e
        raise ModelLoadError(f"open_clip:{arch}: cannot load weights {weights!r}: {msg}") from e
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as e:
        raise ModelLoadError(f"open_clip:{arch}: cannot build its tokenizer (offline?): {e}") from e
    model.eval()
    if precision in ("fp16", "bf16"):
        model = model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[precision])
    model = model.to(device)
    visual = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    pp = getattr(visual, "preprocess_cfg", {}) or {}
    causal = text_is_causal(model)
    return Encoder(
        name=name or f"open_clip:{arch}",
        model=model,
        tokenizer=tokenizer,
        image_size=int(size),
        mean=tuple(pp.get("mean", getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(pp.get("std", getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))),
        embed_dim=int(getattr(visual, "output_dim", 0) or model.encode_text(tokenizer(["a"]).to(device)).shape[-1]),
        causal_text=causal,
        weights=weights or "random-init",
        precision=precision,
        device=device,
        arch={"family": "open_clip", "arch": arch},
        weights_digest=state_dict_digest(model),
        interpolation=pp.get("interpolation", "bicubic") if pp.get("interpolation") in ("bicubic", "bilinear") else "bicubic",
        _text_fn=prefix_text_forward(model) if causal else None,
    )
