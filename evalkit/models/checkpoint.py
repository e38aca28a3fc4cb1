"""Reading and writing checkpoints: single files and sharded folders with an index."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the architecture."""


def save_sharded(
    state_dict: Mapping[str, torch.Tensor],
    folder: str | Path,
    max_shard_bytes: int = 2**30,
    prefix: str = "model",
) -> Path:
    """Write ``state_dict`` as ``{prefix}-0000i-of-0000n.safetensors`` + ``{prefix}.safetensors.index.json``
    (the Hugging Face sharded layout), keeping key names as given. Returns the index path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in state_dict.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t.contiguous()
        size += nbytes
    n = len(shards)
    weight_map: dict[str, str] = {}
    total = 0
    for i, shard in enumerate(shards, start=1):
        name = f"{prefix}-{i:05d}-of-{n:05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        for key, t in shard.items():
            weight_map[key] = name
            total += t.numel() * t.element_size()
    index = folder / f"{prefix}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return index
