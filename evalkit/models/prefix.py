"""Causal text towers over prompts that share a token prefix: run the prefix once.

A zero-shot classifier encodes every class name in every template. In a causal tower a token's
hidden states depend only on the tokens before it, so the states of "<sot> a photo of a" are the
same for all 1,000 ImageNet classes: :class:`SharedPrefixText` runs the common prefix of a group
of prompts once, keeps each layer's keys and values for it, and runs only the rest of each prompt
(the class name, the template's tail, EOT), attending to the cached prefix. For ImageNet's 80
templates that is about half of the token work.

It applies to towers made of pre-norm blocks ``x + ls_1(attn(ln_1(x)))``, ``x + ls_2(mlp(ln_2(x)))``
whose attention keeps its q/k/v projection in ``in_proj_weight``/``in_proj_bias`` and an
``out_proj`` (``nn.MultiheadAttention`` in open_clip's CLIP text towers; ``TextAttention`` in
evalkit's EVA-CLIP), pooled at EOT (``argmax`` or ``eos``), with absolute position embeddings.
:func:`shared_prefix_text` returns None for anything else — bidirectional towers, CoCa's
appended CLS, cross-attention blocks, or a model with accelerate hooks (split over devices or
offloaded: its weights only arrive through the blocks' own ``forward``) — and the caller encodes
whole prompts. Results equal whole-prompt encoding up to float rounding (tested to 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SharedPrefixText:
    def __init__(self, embed: nn.Module, positions: torch.Tensor, blocks: list[nn.Module], ln_final: nn.Module,
                 projection: Any, pool: Callable[[torch.Tensor], torch.Tensor], cast: torch.dtype | None) -> None:
        self.embed, self.positions, self.blocks = embed, positions, blocks
        self.ln_final, self.projection, self.pool, self.cast = ln_final, projection, pool, cast

    # -- the math --------------------------------------------------------------------------------
    def _embed(self, tokens: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings; row b's tokens sit at positions start[b], start[b]+1, ...
        A row's positions past its EOT (padding in a batch of longer rows) may run past the
        context; causal attention keeps them from reaching EOT, so any position serves there."""
        x = self.embed(tokens)
        at = start[:, None] + torch.arange(tokens.shape[1], device=tokens.device)[None, :]
        pos = self.positions[at.clamp(max=self.positions.shape[0] - 1)]
        if self.cast is not None:
            x, pos = x.to(self.cast), pos.to(self.cast)
        return x + pos

    @staticmethod
    def _heads(attn: nn.Module) -> int:
        return int(getattr(attn, "num_heads", None) or attn.heads)

    def _block(self, block: nn.Module, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None,
               allowed: torch.Tensor | None):
        """One block over ``x`` (B, n, C). ``past``: keys/values (B, H, P, C/H) before ``x``, with
        ``allowed`` (B, 1, n, P + n) saying which of them each query sees; None: plain causal."""
        attn = block.attn
        b, n, c = x.shape
        h = self._heads(attn)
        qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        if past is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            keys, values = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed)
        out = attn.out_proj(out.transpose(1, 2).reshape(b, n, c))
        x = x + getattr(block, "ls_1", _identity)(out)
        x = x + getattr(block, "ls_2", _identity)(block.mlp(block.ln_2(x)))
        return x, (k, v)

    # -- the API ---------------------------------------------------------------------------------
    def prefixes(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values of every layer, (G, H, P, C/H), for G prefixes (G, P). A prefix shorter
        than P may be padded with anything: causal attention keeps padding out of earlier positions,
        and :meth:`suffix` masks it out."""
        x = self._embed(tokens, torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device))
        cache = []
        for block in self.blocks:
            x, kv = self._block(block, x, None, None)
            cache.append(kv)
        return cache

    def suffix(self, cache: list[tuple[torch.Tensor, torch.Tensor]], which: torch.Tensor, prefix_len: torch.Tensor,
               tokens: torch.Tensor, pool_at: torch.Tensor) -> torch.Tensor:
        """Pooled, projected features of B prompts: prefix ``which[b]`` (its first ``prefix_len[b]``
        tokens) followed by ``tokens[b]``; ``pool_at``: each prompt's EOT position within ``tokens``."""
        b, n = tokens.shape
        dev = tokens.device
        big_p = cache[0][0].shape[2]
        x = self._embed(tokens, prefix_len)
        allowed = torch.cat([
            (torch.arange(big_p, device=dev)[None, :] < prefix_len[:, None])[:, None, :].expand(b, n, big_p),
            torch.ones(n, n, dtype=torch.bool, device=dev).tril()[None].expand(b, n, n),
        ], dim=2)[:, None]
        for block, (pk, pv) in zip(self.blocks, cache, strict=True):
            x, _ = self._block(block, x, (pk[which], pv[which]), allowed)
        pooled = self.ln_final(x[torch.arange(b, device=dev), pool_at])
        proj = self.projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, nn.Module) else pooled @ proj


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def pool_positions(tokens: torch.Tensor, pool_type: str, eos_id: int | None) -> torch.Tensor:
    """Where a tower pools each prompt: the EOT position (the largest id, or the first ``eos_id``)."""
    if pool_type == "argmax":
        return tokens.argmax(dim=-1)
    return (tokens == eos_id).int().argmax(dim=-1)


def _block_ok(block: nn.Module) -> bool:
    attn = getattr(block, "attn", None)
    return (
        all(hasattr(block, a) for a in ("ln_1", "ln_2", "mlp"))
        and not hasattr(block, "ln_1_kv")
        and attn is not None
        and isinstance(getattr(attn, "in_proj_weight", None), torch.Tensor)
        and hasattr(attn, "out_proj")
        and (getattr(attn, "num_heads", None) or getattr(attn, "heads", None)) is not None
        # nn.MultiheadAttention variants with separate k/v sizes keep q/k/v apart: not this layout
        and getattr(attn, "_qkv_same_embed_dim", True)
    )


def shared_prefix_text(model: nn.Module) -> SharedPrefixText | None:
    """The runner for ``model``'s text tower, or None when the tower is not of the supported kind."""
    if any(hasattr(m, "_hf_hook") for m in model.modules()):
        return None
    from evalkit.models.eva_clip import EvaClip

    if isinstance(model, EvaClip):
        t = model.text
        return SharedPrefixText(t.token_embedding, t.positional_embedding, list(t.transformer.resblocks),
                                t.ln_final, t.text_projection, lambda tokens: pool_positions(tokens, "argmax", None),
                                None)
    # open_clip: CLIP keeps its text tower on the model; CustomTextCLIP in ``model.text``
    tower = getattr(model, "text", model)
    transformer = getattr(tower, "transformer", None)
    blocks = list(getattr(transformer, "resblocks", []) or [])
    pool_type = getattr(tower, "pool_type", None) or getattr(model, "text_pool_type", None)
    eos_id = getattr(tower, "eos_id", None) or getattr(model, "text_eos_id", None)
    supported = (
        blocks
        and all(_block_ok(b) for b in blocks)
        and getattr(tower, "attn_mask", None) is not None  # causal
        and getattr(tower, "cls_emb", None) is None
        and isinstance(getattr(tower, "token_embedding", None), nn.Embedding)
        and isinstance(getattr(tower, "positional_embedding", None), torch.Tensor)
        and hasattr(tower, "ln_final")
        and (pool_type == "argmax" or (pool_type == "eos" and eos_id is not None))
        and hasattr(transformer, "get_cast_dtype")
    )
    if not supported:
        return None
    return SharedPrefixText(tower.token_embedding, tower.positional_embedding, blocks, tower.ln_final,
                            getattr(tower, "text_projection", None),
                            lambda tokens: pool_positions(tokens, pool_type, eos_id), transformer.get_cast_dtype())
