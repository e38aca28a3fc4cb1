"""The EVA-CLIP architecture (EVA-CLIP-18B, EVA-CLIP-8B and the tiny demo model) built from config.

One code path for every size: only the config differs. The module and parameter names follow
BAAI's ``CustomCLIP`` layout (``visual.*``, ``text.*``, ``logit_scale``) so a released ``.pt``
file loads with no renaming; the Hugging Face layout is mapped onto it in ``checkpoint.py``.

Facts from ../shared/reference/EVA_CLIP_PROTOCOL.md §6: vision blocks use RMSNorm (eps 1e-6, in
fp32), no qkv bias, a fused ``qkv`` Linear, a 2-layer GELU MLP with biases, no RoPE, no layer
scale. ``postnorm`` means BAAI's branch-norm: ``x = x + norm1(attn(x))``. The text tower is the
open_clip causal transformer with EOT (argmax) pooling.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.errors import EvalkitError

__all__ = ["EvaVisionConfig", "EvaTextConfig", "EvaClipConfig", "EvaClip", "ModelConfigError", "count_parameters"]


class ModelConfigError(EvalkitError, ValueError):
    """An EVA-CLIP architecture config (a config JSON, or a card's) that cannot be read or has a key
    it should not, or lacks one; the message names the config and the key."""


@dataclass(frozen=True)
class EvaVisionConfig:
    image_size: int = 224
    layers: int = 12
    width: int = 768
    head_width: int = 64
    mlp_ratio: float = 4.0
    patch_size: int = 16
    qkv_bias: bool = False
    postnorm: bool = False
    use_rms_norm: bool = True

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def mlp_hidden(self) -> int:
        return int(self.width * self.mlp_ratio)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class EvaTextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class EvaClipConfig:
    embed_dim: int = 512
    vision: EvaVisionConfig = field(default_factory=EvaVisionConfig)
    text: EvaTextConfig = field(default_factory=EvaTextConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<config>") -> EvaClipConfig:
        """Build from BAAI's model-config JSON layout (``embed_dim``, ``vision_cfg``, ``text_cfg``).

        Keys that only select kernels or training behaviour (``xattn``, ``fusedLN``,
        ``drop_path_rate``, ``eva_model_name``) are accepted and ignored; anything else unknown
        is an error so a typo cannot silently change the architecture.
        """
        ignored = {"xattn", "fusedLN", "drop_path_rate", "eva_model_name"}

        def pick(section: str, klass: type, raw: dict[str, Any]) -> Any:
            names = {f.name for f in fields(klass)}
            unknown = set(raw) - names - ignored
            if unknown:
                raise ModelConfigError(f"{source}: unknown key(s) in {section}: {sorted(unknown)}")
            return klass(**{k: v for k, v in raw.items() if k in names})

        if "embed_dim" not in d:
            raise ModelConfigError(f"{source}: missing key 'embed_dim'")
        return cls(
            embed_dim=int(d["embed_dim"]),
            vision=pick("vision_cfg", EvaVisionConfig, d.get("vision_cfg", {})),
            text=pick("text_cfg", EvaTextConfig, d.get("text_cfg", {})),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> EvaClipConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ModelConfigError(f"{path}: cannot read model config: {e}") from e
        return cls.from_dict(raw, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"embed_dim": self.embed_dim, "vision_cfg": asdict(self.vision), "text_cfg": asdict(self.text)}


class RMSNorm(nn.Module):
    """T5/LLaMA RMSNorm: statistics in fp32, result cast back to the weight dtype."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        x = x.float() * torch.rsqrt(variance + self.eps)
        return self.weight * x.to(self.weight.dtype)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        if qkv_bias:
            # BAAI keeps q and v biases separately (k has none).
            self.q_bias = nn.Parameter(torch.zeros(width))
            self.v_bias = nn.Parameter(torch.zeros(width))
        else:
            self.q_bias = None
            self.v_bias = None
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
            qkv = F.linear(x, self.qkv.weight, bias)
        else:
            qkv = self.qkv(x)
        q, k, v = qkv.view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _norm(cfg: EvaVisionConfig, dim: int) -> nn.Module:
    return RMSNorm(dim, eps=1e-6) if cfg.use_rms_norm else nn.LayerNorm(dim, eps=1e-6)


class VisionBlock(nn.Module):
    def __init__(self, cfg: EvaVisionConfig) -> None:
        super().__init__()
        self.postnorm = cfg.postnorm
        self.norm1 = _norm(cfg, cfg.width)
        self.attn = Attention(cfg.width, cfg.heads, cfg.qkv_bias)
        self.norm2 = _norm(cfg, cfg.width)
        self.mlp = Mlp(cfg.width, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.postnorm:
            x = x + self.norm1(self.attn(x))
            return x + self.norm2(self.mlp(x))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EvaVisionTransformer(nn.Module):
    def __init__(self, cfg: EvaVisionConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid**2 + 1, cfg.width))
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.layers))
        self.norm = _norm(cfg, cfg.width)
        self.head = nn.Linear(cfg.width, embed_dim, bias=cfg.qkv_bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images.to(self.patch_embed.proj.weight.dtype))
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, 0])


class TextMlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class TextAttention(nn.Module):
    """Causal self-attention with ``nn.MultiheadAttention``'s parameter names, run through SDPA."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class TextBlock(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = TextAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = TextMlp(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TextStack(nn.Module):
    def __init__(self, cfg: EvaTextConfig) -> None:
        super().__init__()
        hidden = int(cfg.width * cfg.mlp_ratio)
        self.resblocks = nn.ModuleList(TextBlock(cfg.width, cfg.heads, hidden) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class EvaTextTransformer(nn.Module):
    """open_clip-style causal text tower; pooled at the EOT token (the largest token id)."""

    def __init__(self, cfg: EvaTextConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.width))
        self.transformer = TextStack(cfg)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
        nn.init.normal_(self.text_projection, std=cfg.width**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # Works on any prefix length <= context_length: the causal mask means tokens after EOT
        # cannot reach it, so callers may cut padding (see evalkit.features.embed.encode_texts).
        n = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:n]
        x = self.ln_final(self.transformer(x))
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return pooled @ self.text_projection


class EvaClip(nn.Module):
    """BAAI ``CustomCLIP`` layout: ``visual``, ``text``, ``logit_scale``."""

    #: the text tower is causal with EOT pooling, so trailing padding may be cut.
    causal_text = True

    def __init__(self, cfg: EvaClipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = EvaVisionTransformer(cfg.vision, cfg.embed_dim)
        self.text = EvaTextTransformer(cfg.text, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.visual(images)
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.text(tokens)
        return F.normalize(f, dim=-1) if normalize else f

    def init_weights(self, seed: int = 0) -> EvaClip:
        """Small random init for training from scratch (the demo); released weights overwrite it."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        return self


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts per tower; works on the meta device (no memory is allocated)."""
    counts = {"visual": 0, "text": 0, "other": 0}
    for name, p in model.named_parameters():
        tower = name.split(".", 1)[0]
        counts[tower if tower in counts else "other"] += p.numel()
    counts["total"] = sum(counts.values())
    return counts
