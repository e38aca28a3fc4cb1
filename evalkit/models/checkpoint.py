"""Reading and writing checkpoints: single files and sharded folders with an index.

Three steps, each usable on its own so the streaming / device-map path can reuse them:

1. *read*: :func:`resolve_checkpoint` turns a path (file, folder, index) into the list of files;
   :func:`iter_checkpoint_shards` reads them one at a time; :func:`read_state_dict` gathers all.
2. *map*: :func:`map_state_dict` renames the Hugging Face layout and the old open_clip text
   layout onto BAAI's ``CustomCLIP`` layout, which is the one :class:`EvaClip` uses.
3. *load*: :func:`load_state_dict_strict` checks the result against the model and reports every
   missing, unexpected and mis-shaped key in one error (BAAI's own loader uses ``strict=False``
   and so hides them), then copies the tensors in.

:func:`load_checkpoint` does all three.
"""

from __future__ import annotations

import fnmatch
import json
import math
import pickle
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from evalkit.errors import EvalkitError

__all__ = [
    "CheckpointError",
    "CheckpointFiles",
    "MappedStateDict",
    "LoadReport",
    "save_sharded",
    "resolve_checkpoint",
    "read_checkpoint_file",
    "unwrap_state_dict",
    "iter_checkpoint_shards",
    "iter_checkpoint_tensors",
    "read_state_dict",
    "detect_layout",
    "map_state_dict",
    "resize_pos_embed",
    "load_state_dict_strict",
    "load_checkpoint",
    "TensorInfo",
    "CheckpointScan",
    "scan_checkpoint",
    "ShardMapper",
    "check_fits",
    "FitReport",
    "pos_embed_resizable",
    "LAYOUT_BAAI",
    "LAYOUT_HF",
    "LAYOUT_OPEN_CLIP_TEXT",
]

LAYOUT_BAAI = "baai"
LAYOUT_HF = "hf"
LAYOUT_OPEN_CLIP_TEXT = "open_clip_text"
_LAYOUTS = (LAYOUT_BAAI, LAYOUT_HF, LAYOUT_OPEN_CLIP_TEXT)

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# Names used by the usual writers, preferred when a folder holds more than one model file.
_PREFERRED_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
_WRAPPER_KEYS = ("model", "module", "state_dict")


class CheckpointError(EvalkitError, ValueError):
    """A checkpoint that cannot be read or does not fit the architecture.

    ``one_line``: a summary that stands alone when the message has several lines (a key report).
    """

    one_line: str | None = None


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


# --------------------------------------------------------------------------------------------
# 1. Reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointFiles:
    """The files that make up one checkpoint, in reading order.

    ``weight_map`` (key -> shard file name) is set when the checkpoint came with an index.
    """

    path: Path
    files: tuple[Path, ...]
    index: Path | None = None
    weight_map: Mapping[str, str] | None = None


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _few(items: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")


def _read_index(index: Path) -> CheckpointFiles:
    try:
        raw = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{index}: cannot read checkpoint index: {_first_line(e)}") from e
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if (
        not isinstance(weight_map, dict)
        or not weight_map
        or not all(isinstance(v, str) for v in weight_map.values())
    ):
        raise CheckpointError(f"{index}: not a checkpoint index (needs a non-empty 'weight_map' of key -> shard file)")
    shard_names = list(dict.fromkeys(weight_map.values()))
    files = tuple(index.parent / name for name in shard_names)
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise CheckpointError(f"{index}: names shard(s) that do not exist: {_few(absent)}")
    return CheckpointFiles(path=index, files=files, index=index, weight_map=dict(weight_map))


def _resolve_folder(folder: Path) -> CheckpointFiles:
    for pattern in ("*.safetensors.index.json", "*.bin.index.json"):
        indexes = sorted(folder.glob(pattern))
        if len(indexes) > 1:
            raise CheckpointError(
                f"{folder}: more than one checkpoint index ({_few([i.name for i in indexes])}); name the one to load"
            )
        if indexes:
            return _read_index(indexes[0])
    for name in _PREFERRED_SINGLE_FILES:
        if (folder / name).is_file():
            return CheckpointFiles(path=folder, files=(folder / name,))
    candidates = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix in (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES)
    )
    if len(candidates) == 1:
        return CheckpointFiles(path=folder, files=(candidates[0],))
    if candidates:
        raise CheckpointError(
            f"{folder}: several model files and no index ({_few([c.name for c in candidates], 5)}); name the one to load"
        )
    raise CheckpointError(
        f"{folder}: no checkpoint found; looked for *.safetensors.index.json, *.bin.index.json, "
        f"{', '.join(_PREFERRED_SINGLE_FILES)}, or a single *{SAFETENSORS_SUFFIX} / "
        f"{' / '.join('*' + s for s in PICKLE_SUFFIXES)} file"
    )


def resolve_checkpoint(path: str | Path) -> CheckpointFiles:
    """Find the files of the checkpoint at ``path``: a model file, an ``*.index.json``, or a folder.

    In a folder, a ``*.safetensors.index.json`` wins over a ``*.bin.index.json``, which wins over a
    single model file. Every shard an index names must exist (checked before anything is read).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        return _resolve_folder(path)
    if path.name.endswith(".index.json"):
        return _read_index(path)
    return CheckpointFiles(path=path, files=(path,))


def unwrap_state_dict(obj: Any, source: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint object.

    Descends into ``model`` / ``module`` / ``state_dict`` wrappers (training checkpoints keep the
    weights next to optimiser state) and strips a ``module.`` prefix (DataParallel / DeepSpeed).
    Any entry that is not a tensor is an error, not silently dropped.
    """
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{source}: entries that are not tensors: {_few(not_tensors)}")
    tensors = {str(k): v for k, v in obj.items()}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{file}: cannot read safetensors file (truncated or corrupt?): {_first_line(e)}") from e


def _load_pickle(file: Path) -> Any:
    # torch.save's zip format can be memory-mapped; legacy (pre-1.6) pickles cannot.
    is_zip = zipfile.is_zipfile(file)
    if not is_zip:
        with open(file, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise CheckpointError(
                    f"{file}: truncated or corrupt checkpoint (zip archive without its central directory)"
                )
    try:
        return torch.load(file, map_location="cpu", mmap=is_zip, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise CheckpointError(
                f"{file}: holds objects other than tensors and containers; refusing to unpickle it "
                f"(weights_only=True): {_first_line(e)}"
            ) from e
        raise CheckpointError(f"{file}: cannot read PyTorch checkpoint (truncated or corrupt?): {_first_line(e)}") from e
    except Exception as e:
        raise CheckpointError(f"{file}: cannot read PyTorch checkpoint (truncated or corrupt?): {_first_line(e)}") from e


def read_checkpoint_file(file: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of one file: ``.safetensors``, or a torch pickle (``.pt``/``.pth``/``.bin``/other)."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"checkpoint file not found: {file}")
    if file.suffix == SAFETENSORS_SUFFIX:
        return unwrap_state_dict(_read_safetensors(file), str(file))
    return unwrap_state_dict(_load_pickle(file), str(file))


def iter_checkpoint_shards(
    checkpoint: str | Path | CheckpointFiles,
) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    """Yield ``(file, tensors)`` one file at a time, so at most one shard is held by this function.

    With an index, every key the index puts in a shard must be in that shard.
    """
    files = checkpoint if isinstance(checkpoint, CheckpointFiles) else resolve_checkpoint(checkpoint)
    expected: dict[str, list[str]] = {}
    if files.weight_map is not None:
        for key, name in files.weight_map.items():
            expected.setdefault(name, []).append(key)
    for file in files.files:
        tensors = read_checkpoint_file(file)
        absent = [k for k in expected.get(file.name, ()) if k not in tensors and k.removeprefix("module.") not in tensors]
        if absent:
            raise CheckpointError(f"{files.index}: puts key(s) in shard {file.name} that it does not hold: {_few(absent)}")
        yield file, tensors
        del tensors  # before the next shard is read, not after


def iter_checkpoint_tensors(checkpoint: str | Path | CheckpointFiles) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(key, tensor)`` for every tensor, shard by shard, keys as stored (not mapped)."""
    for _, tensors in iter_checkpoint_shards(checkpoint):
        yield from tensors.items()


def _gather(files: CheckpointFiles) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for file, tensors in iter_checkpoint_shards(files):
        twice = [k for k in tensors if k in out]
        if twice:
            raise CheckpointError(
                f"{file}: key(s) already read from {origin[twice[0]].name}: {_few(twice)}"
            )
        out.update(tensors)
        origin.update(dict.fromkeys(tensors, file))
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint at ``path`` (file, index or folder), keys as stored.

    Pickles are memory-mapped where the format allows, so this costs little memory until used.
    """
    return _gather(resolve_checkpoint(path))


# --------------------------------------------------------------------------------------------
# 2. Key layouts
# --------------------------------------------------------------------------------------------

# Top-level names of the old open_clip text tower (before open_clip nested it under ``text.``).
_OPEN_CLIP_TEXT_ROOTS = frozenset({"token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"})

_V = r"vision_model\.encoder\.layers\.(\d+)\."
_T = r"text_model\.encoder\.layers\.(\d+)\."
# Hugging Face name -> ours; the inverse of BAAI's KEYS_TO_MODIFY_MAPPING (protocol notes §7.2).
# Split q/k/v projections, the text projection and the vision k bias are handled apart.
_HF_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"vision_model\.embeddings\.class_embedding", "visual.cls_token"),
        (r"vision_model\.embeddings\.position_embedding\.weight", "visual.pos_embed"),
        (r"vision_model\.embeddings\.patch_embedding\.(weight|bias)", r"visual.patch_embed.proj.\1"),
        (_V + r"layer_norm([12])\.(weight|bias)", r"visual.blocks.\1.norm\2.\3"),
        (_V + r"self_attn\.qkv\.weight", r"visual.blocks.\1.attn.qkv.weight"),
        (_V + r"self_attn\.([qv])_bias", r"visual.blocks.\1.attn.\2_bias"),
        (_V + r"self_attn\.([qv])_proj\.bias", r"visual.blocks.\1.attn.\2_bias"),
        (_V + r"self_attn\.out_proj\.(weight|bias)", r"visual.blocks.\1.attn.proj.\2"),
        (_V + r"mlp\.(fc[12])\.(weight|bias)", r"visual.blocks.\1.mlp.\2.\3"),
        (r"vision_model\.post_layernorm\.(weight|bias)", r"visual.norm.\1"),
        (r"visual_projection\.(weight|bias)", r"visual.head.\1"),
        (r"text_model\.embeddings\.token_embedding\.weight", "text.token_embedding.weight"),
        (r"text_model\.embeddings\.position_embedding\.weight", "text.positional_embedding"),
        (_T + r"layer_norm([12])\.(weight|bias)", r"text.transformer.resblocks.\1.ln_\2.\3"),
        (_T + r"self_attn\.in_proj_(weight|bias)", r"text.transformer.resblocks.\1.attn.in_proj_\2"),
        (_T + r"self_attn\.out_proj\.(weight|bias)", r"text.transformer.resblocks.\1.attn.out_proj.\2"),
        (_T + r"mlp\.fc1\.(weight|bias)", r"text.transformer.resblocks.\1.mlp.c_fc.\2"),
        (_T + r"mlp\.fc2\.(weight|bias)", r"text.transformer.resblocks.\1.mlp.c_proj.\2"),
        (r"text_model\.final_layer_norm\.(weight|bias)", r"text.ln_final.\1"),
    )
)
# Split projections that are concatenated (in q, k, v order) into one fused tensor of ours.
_HF_SPLIT: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(_V + r"self_attn\.([qkv])_proj\.weight"), r"visual.blocks.\1.attn.qkv.weight"),
    (re.compile(_T + r"self_attn\.([qkv])_proj\.(weight|bias)"), r"text.transformer.resblocks.\1.attn.in_proj_\3"),
)
# EVA's vision attention has no k bias; a converter that writes one writes zeros.
_HF_VISION_K_BIAS = re.compile(_V + r"self_attn\.k_(?:proj\.)?bias")
# Derived constants that some writers store; not weights.
_HF_BUFFERS = re.compile(r"(vision_model|text_model)\.embeddings\.position_ids")


@dataclass
class MappedStateDict:
    """A state dict in our (BAAI) layout, with the layout it came from and what was done to it."""

    state_dict: dict[str, torch.Tensor]
    layout: str
    notes: list[str] = field(default_factory=list)


def detect_layout(keys: Iterable[str]) -> str:
    """``"hf"``, ``"open_clip_text"`` (text tower at the top level) or ``"baai"`` (ours)."""
    keys = list(keys)
    if any(
        k.startswith(("vision_model.", "text_model.")) or k in ("visual_projection.weight", "text_projection.weight")
        for k in keys
    ):
        return LAYOUT_HF
    if any(k.split(".", 1)[0] in _OPEN_CLIP_TEXT_ROOTS for k in keys):
        return LAYOUT_OPEN_CLIP_TEXT
    return LAYOUT_BAAI


def _is_zero(t: torch.Tensor) -> bool:
    return not t.is_meta and int(torch.count_nonzero(t)) == 0


def _orient_text_projection(
    t: torch.Tensor, stored_as_linear: bool, width: int | None, notes: list[str]
) -> torch.Tensor:
    """Ours is a [width, embed] matrix used as ``x @ P``; a Linear weight is its transpose."""
    if t.ndim != 2:
        return t
    if width is not None and t.shape[0] != t.shape[1]:
        if t.shape[1] == width and t.shape[0] != width:
            notes.append("text_projection given as a Linear weight [embed, width]: transposed")
            return t.t()
        return t
    if stored_as_linear:
        # Shape cannot tell (square, e.g. the 8B's 1280 x 1280): the key name says Linear weight,
        # and the EVA-CLIP -> HF converters seen write the transpose of BAAI's matrix.
        notes.append("text_projection.weight: orientation not decidable by shape; taken as a Linear weight and transposed")
        return t.t()
    return t


def _map_hf(
    sd: Mapping[str, torch.Tensor], target: Mapping[str, torch.Size] | None, notes: list[str]
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    dropped_k_bias = 0
    for key, t in sd.items():
        if _HF_BUFFERS.fullmatch(key):
            notes.append(f"dropped buffer {key}")
            continue
        if _HF_VISION_K_BIAS.fullmatch(key) and _is_zero(t):
            dropped_k_bias += 1
            continue
        for pattern, fused in _HF_SPLIT:
            m = pattern.fullmatch(key)
            if m:
                parts.setdefault(m.expand(fused), {})[m.group(2)] = (key, t)
                break
        else:
            new = key
            for pattern, repl in _HF_RENAMES:
                m = pattern.fullmatch(key)
                if m:
                    new = m.expand(repl)
                    break
            if new == "visual.cls_token":
                t = t.reshape(1, 1, -1)
            elif new == "visual.pos_embed" and t.ndim == 2:
                t = t.unsqueeze(0)
            out[new] = t
    if dropped_k_bias:
        notes.append(f"dropped all-zero vision k bias ×{dropped_k_bias} (EVA attention has none)")
    n_fused = 0
    for fused, got in parts.items():
        if set(got) == {"q", "k", "v"}:
            out[fused] = torch.cat([got[p][1] for p in "qkv"], dim=0)
            n_fused += 1
        else:  # incomplete: leave the pieces under their own names so the strict check names them
            out.update(dict(got.values()))
    if n_fused:
        notes.append(f"fused split q/k/v projections ×{n_fused}")

    # Vision q/v biases of a converter that always writes them, for a model without them.
    if target is not None:
        zero_qv = [
            k
            for k, t in out.items()
            if k.startswith("visual.blocks.") and k.endswith(("attn.q_bias", "attn.v_bias"))
            and k not in target and _is_zero(t)
        ]
        for k in zero_qv:
            del out[k]
        if zero_qv:
            notes.append(f"dropped all-zero vision q/v biases ×{len(zero_qv)} (model has qkv_bias=False)")

    if "text_projection.weight" in out or "text_projection" in out:
        linear = "text_projection.weight" in out
        t = out.pop("text_projection.weight" if linear else "text_projection")
        width = None
        if target is not None and "text.text_projection" in target:
            width = int(target["text.text_projection"][0])
        elif "text.token_embedding.weight" in out:
            width = int(out["text.token_embedding.weight"].shape[1])
        out["text.text_projection"] = _orient_text_projection(t, linear, width, notes)
    if "logit_scale" in out and out["logit_scale"].numel() == 1:
        out["logit_scale"] = out["logit_scale"].reshape(())
    return out


def _map_open_clip_text(sd: Mapping[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    moved = 0
    for key, t in sd.items():
        if key == "attn_mask":  # the causal mask, stored as a buffer by old open_clip
            notes.append("dropped buffer attn_mask")
            continue
        if key.split(".", 1)[0] in _OPEN_CLIP_TEXT_ROOTS:
            out["text." + key] = t
            moved += 1
        else:
            out[key] = t
    notes.append(f"moved {moved} top-level text-tower keys under 'text.'")
    return out


def map_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Size] | None = None,
    *,
    layout: str = "auto",
) -> MappedStateDict:
    """Rename ``state_dict`` onto our (BAAI ``CustomCLIP``) layout.

    ``target`` (the model's key -> shape, optional) settles what names alone cannot: the
    orientation of a ``text_projection`` and whether all-zero vision q/v biases belong.
    Keys this does not know are passed through unchanged, for the strict check to report.
    """
    if layout == "auto":
        layout = detect_layout(state_dict)
    notes: list[str] = []
    if layout == LAYOUT_HF:
        mapped = _map_hf(state_dict, target, notes)
    elif layout == LAYOUT_OPEN_CLIP_TEXT:
        mapped = _map_open_clip_text(state_dict, notes)
    elif layout == LAYOUT_BAAI:
        mapped = dict(state_dict)
    else:
        raise ValueError(f"unknown checkpoint layout {layout!r}; expected 'auto' or one of {_LAYOUTS}")
    return MappedStateDict(state_dict=mapped, layout=layout, notes=notes)


_HF_SPLIT_PIECE = tuple(pattern for pattern, _ in _HF_SPLIT)
# HF keys whose mapping depends on their values (all-zero biases EVA does not have are dropped).
_HF_VALUE_DEPENDENT = re.compile(_V + r"self_attn\.(?:[qkv]_bias|[qkv]_proj\.bias)")
_COUNTED_NOTE = re.compile(r"(.*) ×(\d+)(.*)")


def _merge_notes(notes: Iterable[str]) -> list[str]:
    """One line per kind of note, counts summed (``fused ... ×3`` + ``fused ... ×5`` -> ``×8``)."""
    merged: dict[tuple[str, str], int] = {}
    plain: list[str] = []
    for note in notes:
        m = _COUNTED_NOTE.fullmatch(note)
        if m:
            key = (m.group(1), m.group(3))
            merged[key] = merged.get(key, 0) + int(m.group(2))
        elif note not in plain:
            plain.append(note)
    return plain + [f"{head} ×{n}{tail}" for (head, tail), n in merged.items()]


class ShardMapper:
    """Maps a checkpoint onto our layout one shard at a time, for the streaming loader.

    ``layout`` must be decided over all keys first (a shard holding only ``logit_scale`` looks
    like any layout). The Hugging Face layout may split a fused projection into q/k/v tensors
    and a sharded writer may put the three in different shards: the pieces of an incomplete group
    are held back until the shard with the rest arrives (only those tensors, never a whole shard).
    """

    def __init__(self, layout: str, target: Mapping[str, Sequence[int]] | None = None) -> None:
        if layout not in _LAYOUTS:
            raise ValueError(f"unknown checkpoint layout {layout!r}; expected one of {_LAYOUTS}")
        self.layout = layout
        self.target = {k: torch.Size(v) for k, v in target.items()} if target is not None else None
        self._pending: dict[str, torch.Tensor] = {}
        self._notes: list[str] = []

    def map(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors of one shard (keys as stored) in our layout, minus held-back q/k/v pieces."""
        sd = {**self._pending, **tensors} if self._pending else tensors
        self._pending = {}
        mapped = map_state_dict(sd, self.target, layout=self.layout)
        self._notes.extend(mapped.notes)
        out: dict[str, torch.Tensor] = {}
        for key, t in mapped.state_dict.items():
            if self.layout == LAYOUT_HF and any(p.fullmatch(key) for p in _HF_SPLIT_PIECE):
                self._pending[key] = t
            else:
                out[key] = t
        return out

    def finish(self) -> dict[str, torch.Tensor]:
        """Pieces of split projections whose group never completed (the strict check names them)."""
        left, self._pending = self._pending, {}
        return left

    @property
    def notes(self) -> list[str]:
        return _merge_notes(self._notes)


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: str


@dataclass
class CheckpointScan:
    """What a checkpoint holds, read from headers and memory maps only (no weight data).

    ``mapped`` is the key -> shape map in our layout, which is what the strict check compares
    with the model before anything is loaded.
    """

    files: CheckpointFiles
    tensors: dict[str, TensorInfo]
    layout: str
    mapped: dict[str, tuple[int, ...]]
    notes: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(math.prod(i.shape) * i.dtype.itemsize for i in self.tensors.values())

    @property
    def dtypes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for info in self.tensors.values():
            name = str(info.dtype).removeprefix("torch.")
            out[name] = out.get(name, 0) + 1
        return out


def scan_checkpoint(
    checkpoint: str | Path | CheckpointFiles,
    target: Mapping[str, Sequence[int]] | None = None,
    *,
    layout: str = "auto",
) -> CheckpointScan:
    """List the tensors of a checkpoint and their names in our layout, without reading weights.

    safetensors files are read through their header and pickles through ``torch.load(mmap=True)``,
    so this costs next to no memory or I/O at any model size; only the few small tensors whose
    mapping depends on their values (Hugging Face vision biases that EVA lacks and drops when all
    zero) are read. A key stored in two files, a truncated file, an index naming a missing shard
    or a key missing from its shard fail here, before anything is loaded.
    """
    files = checkpoint if isinstance(checkpoint, CheckpointFiles) else resolve_checkpoint(checkpoint)
    infos: dict[str, TensorInfo] = {}
    standins: dict[str, torch.Tensor] = {}
    for file, tensors in iter_checkpoint_shards(files):
        twice = [k for k in tensors if k in infos]
        if twice:
            raise CheckpointError(f"{file}: key(s) already read from {infos[twice[0]].file}: {_few(twice)}")
        for key, t in tensors.items():
            infos[key] = TensorInfo(tuple(t.shape), t.dtype, file.name)
            keep = _HF_VALUE_DEPENDENT.fullmatch(key) is not None and not t.is_meta
            standins[key] = t if keep else torch.empty(t.shape, dtype=t.dtype, device="meta")
        del tensors
    if layout == "auto":
        layout = detect_layout(infos)
    mapped = map_state_dict(standins, target, layout=layout)
    return CheckpointScan(
        files=files,
        tensors=infos,
        layout=layout,
        mapped={k: tuple(t.shape) for k, t in mapped.state_dict.items()},
        notes=_merge_notes(mapped.notes),
    )


# --------------------------------------------------------------------------------------------
# 3. Strict loading
# --------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What :func:`load_state_dict_strict` did."""

    source: str
    n_loaded: int
    missing_allowed: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    assigned: bool = False  # tensors were assigned (meta model), not copied


def resize_pos_embed(pos_embed: torch.Tensor, n_tokens: int, n_prefix: int = 1) -> torch.Tensor:
    """Resize a ``[1, n_prefix + g*g, W]`` position embedding to ``n_tokens`` tokens.

    The square patch grid is interpolated bicubically (``align_corners=False``, in fp32), as
    BAAI's loader does; the ``n_prefix`` leading (CLS) rows are kept as they are.
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"position embedding must be [1, tokens, width], got {list(pos_embed.shape)}")
    width = pos_embed.shape[2]
    old_n, new_n = pos_embed.shape[1] - n_prefix, n_tokens - n_prefix
    old_g, new_g = math.isqrt(max(old_n, 0)), math.isqrt(max(new_n, 0))
    if old_g * old_g != old_n or new_g * new_g != new_n or old_g == 0 or new_g == 0:
        raise ValueError(f"cannot resize {old_n} patch positions to {new_n}: not both square grids")
    prefix, grid = pos_embed[:, :n_prefix], pos_embed[:, n_prefix:]
    grid = grid.reshape(1, old_g, old_g, width).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new_g, new_g), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_g * new_g, width).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


_POS_EMBED_KEYS = ("visual.pos_embed",)


def pos_embed_resizable(key: str, have: Sequence[int], want: Sequence[int]) -> bool:
    """True when ``key`` is a position embedding that :func:`resize_pos_embed` turns from shape
    ``have`` into ``want``: same width, both square patch grids plus one CLS row."""
    if key not in _POS_EMBED_KEYS or tuple(have) == tuple(want) or len(have) != 3 or len(want) != 3:
        return False
    if have[0] != want[0] or have[2] != want[2] or have[0] != 1:
        return False  # another width: a real mismatch, left for the report
    old_n, new_n = have[1] - 1, want[1] - 1
    old_g, new_g = math.isqrt(max(old_n, 0)), math.isqrt(max(new_n, 0))
    return old_g > 0 and new_g > 0 and old_g * old_g == old_n and new_g * new_g == new_n


def _resize_note(key: str, have: Sequence[int], want: Sequence[int]) -> str:
    return f"{key}: {have[1]} -> {want[1]} tokens (bicubic)"


def _resize_pos_embeds(sd: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    done = []
    for key in _POS_EMBED_KEYS:
        if key not in sd or key not in expected:
            continue
        have, want = sd[key], expected[key]
        if not pos_embed_resizable(key, have.shape, want.shape):
            continue
        sd[key] = resize_pos_embed(have, want.shape[1])
        done.append(_resize_note(key, have.shape, want.shape))
    return done


_INDEX = re.compile(r"\.\d+(?=\.|$)")


def _pattern(key: str) -> str:
    """Collapse layer indices: ``visual.blocks.3.norm1.weight`` -> ``visual.blocks.*.norm1.weight``."""
    return _INDEX.sub(".*", key)


def _named(pattern: str, keys: list[str]) -> str:
    return f"{pattern} ×{len(keys)}" if len(keys) > 1 else keys[0]


def _first(items: list[str], limit: int, sep: str) -> str:
    more = f"{sep}... (+{len(items) - limit} more groups)" if len(items) > limit else ""
    return sep.join(items[:limit]) + more


def _describe_keys(keys: Iterable[str], limit: int) -> str:
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(_pattern(k), []).append(k)
    return _first([_named(p, ks) for p, ks in groups.items()], limit, ", ")


def _describe_shapes(mismatched: Iterable[tuple[str, torch.Size, torch.Size]], limit: int) -> str:
    # One group per (pattern, shapes): the layers of one kind normally share their shapes.
    groups: dict[tuple[str, tuple[int, ...], tuple[int, ...]], list[str]] = {}
    for k, have, want in mismatched:
        groups.setdefault((_pattern(k), tuple(have), tuple(want)), []).append(k)
    items = [
        f"{_named(p, ks)} checkpoint {list(have)} vs model {list(want)}" for (p, have, want), ks in groups.items()
    ]
    return _first(items, limit, "; ")


def _mismatch_report(
    source: str,
    model_name: str,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[tuple[str, torch.Size, torch.Size]],
    limit: int = 8,
) -> str:
    counts = []
    if missing:
        counts.append(f"{len(missing)} missing keys")
    if unexpected:
        counts.append(f"{len(unexpected)} unexpected keys")
    if mismatched:
        counts.append(f"{len(mismatched)} shape mismatches")
    lines = [f"checkpoint {source or '<state dict>'} does not fit {model_name}: {', '.join(counts)}"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_describe_keys(missing, limit)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_describe_keys(unexpected, limit)}")
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}): {_describe_shapes(mismatched, limit)}")
    if missing:
        lines.append("  (keys that may be absent can be allowed with allow_missing=[fnmatch patterns])")
    return "\n".join(lines)


@dataclass
class FitReport:
    """What :func:`check_fits` found acceptable: allowed missing keys and resizable position embeddings."""

    missing_allowed: list[str] = field(default_factory=list)
    resize: dict[str, tuple[int, ...]] = field(default_factory=dict)  # key -> target shape
    notes: list[str] = field(default_factory=list)


def check_fits(
    expected: Mapping[str, Sequence[int]],
    got: Mapping[str, Sequence[int]],
    *,
    allow_missing: Sequence[str] = (),
    source: str = "",
    model_name: str = "EvaClip",
    resize: bool = True,
) -> FitReport:
    """Compare key -> shape maps (the model's ``expected``, the checkpoint's ``got``, both in our
    layout) and raise one grouped :class:`CheckpointError` for every missing, unexpected and
    mis-shaped key. Works on shapes alone, so a checkpoint can be checked against a model on the
    ``meta`` device before one byte of weights is read. With ``resize``, a position embedding
    of another square resolution is not a mismatch but listed in ``FitReport.resize``."""
    missing_all = [k for k in expected if k not in got]
    allowed = [k for k in missing_all if any(fnmatch.fnmatchcase(k, p) for p in allow_missing)]
    allowed_set = set(allowed)
    missing = [k for k in missing_all if k not in allowed_set]
    unexpected = [k for k in got if k not in expected]
    report = FitReport(missing_allowed=allowed)
    mismatched: list[tuple[str, torch.Size, torch.Size]] = []
    for k, have in got.items():
        if k not in expected or tuple(have) == tuple(expected[k]):
            continue
        if resize and pos_embed_resizable(k, tuple(have), tuple(expected[k])):
            report.resize[k] = tuple(expected[k])
            report.notes.append(_resize_note(k, tuple(have), tuple(expected[k])))
            continue
        mismatched.append((k, torch.Size(have), torch.Size(expected[k])))
    if missing or unexpected or mismatched:
        err = CheckpointError(_mismatch_report(source, model_name, missing, unexpected, mismatched))
        # A line that stands alone (a CLI prints one line): the counts plus the first group of each.
        first = []
        if missing:
            first.append(f"missing {_describe_keys(missing, 1)}")
        if unexpected:
            first.append(f"unexpected {_describe_keys(unexpected, 1)}")
        if mismatched:
            first.append(f"mismatched {_describe_shapes(mismatched, 1)}")
        err.one_line = f"{str(err).splitlines()[0]} ({'; '.join(first)})"
        raise err
    return report


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    allow_missing: Sequence[str] = (),
    source: str = "",
) -> LoadReport:
    """Load ``state_dict`` (already in our layout) into ``model``, failing on any misfit.

    Missing keys (except those matching an ``allow_missing`` fnmatch pattern), unexpected keys
    and shape mismatches are all reported together in one :class:`CheckpointError` naming
    ``source``; nothing is loaded then. A ``visual.pos_embed`` for another resolution is resized
    first. Tensors are cast to the model's dtypes; on a meta-device model they are assigned.
    """
    expected = model.state_dict()
    sd = dict(state_dict)
    resized = _resize_pos_embeds(sd, expected)
    fit = check_fits(
        {k: t.shape for k, t in expected.items()},
        {k: t.shape for k, t in sd.items()},
        allow_missing=allow_missing,
        source=source,
        model_name=type(model).__name__,
        resize=False,
    )
    allowed = fit.missing_allowed
    assign = any(t.is_meta for t in expected.values())
    cast = {k: t.to(dtype=expected[k].dtype) for k, t in sd.items()}
    model.load_state_dict(cast, strict=not allowed, assign=assign)
    return LoadReport(source=source, n_loaded=len(cast), missing_allowed=allowed, resized=resized, assigned=assign)


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    allow_missing: Sequence[str] = (),
    layout: str = "auto",
) -> dict[str, Any]:
    """Read the checkpoint at ``path``, map its keys onto ours, and load it strictly into ``model``.

    Returns a small report: ``path``, ``layout``, ``files`` read, ``n_tensors`` and ``bytes`` as
    stored, stored ``dtypes`` (name -> count), ``notes`` from the key mapping, ``resized``
    position embeddings and ``missing_allowed`` keys.
    """
    files = resolve_checkpoint(path)
    raw = _gather(files)
    target = {k: t.shape for k, t in model.state_dict().items()}
    mapped = map_state_dict(raw, target, layout=layout)
    report = load_state_dict_strict(model, mapped.state_dict, allow_missing=allow_missing, source=str(path))
    dtypes: dict[str, int] = {}
    for t in raw.values():
        name = str(t.dtype).removeprefix("torch.")
        dtypes[name] = dtypes.get(name, 0) + 1
    return {
        "path": str(path),
        "layout": mapped.layout,
        "files": [str(f) for f in files.files],
        "n_tensors": len(raw),
        "bytes": sum(t.numel() * t.element_size() for t in raw.values()),
        "dtypes": dtypes,
        "notes": mapped.notes,
        "resized": report.resized,
        "missing_allowed": report.missing_allowed,
    }
