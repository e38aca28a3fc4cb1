"""Checkpoint reading, key-layout mapping and strict loading, on a tiny EVA-CLIP.

The same weights are written in every layout the released models come in (single pickle with
and without wrappers, safetensors, sharded with an index, Hugging Face names, old open_clip text
names) and must load back bit for bit; every misfit must fail loudly and name the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from evalkit.models.checkpoint import (
    CheckpointError,
    detect_layout,
    iter_checkpoint_shards,
    iter_checkpoint_tensors,
    load_checkpoint,
    load_state_dict_strict,
    map_state_dict,
    read_state_dict,
    resize_pos_embed,
    save_sharded,
)
from evalkit.models.eva_clip import EvaClip, EvaClipConfig

# The conformance fixtures' tiny 18B-style config (kept here so these tests stand alone).
TINY = {
    "embed_dim": 24,
    "vision_cfg": {
        "image_size": 56,
        "layers": 2,
        "width": 64,
        "head_width": 16,
        "mlp_ratio": 5,
        "patch_size": 14,
        "qkv_bias": False,
        "postnorm": True,
        "use_rms_norm": True,
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
# A smaller text vocabulary keeps the many files these tests write small.
TINY["text_cfg"]["vocab_size"] = 1000
# Small enough that the ~0.7 MB tiny model is written as several shards.
SHARD_BYTES = 2**16


def _cfg(embed_dim: int | None = None, text: dict | None = None, **vision: object) -> EvaClipConfig:
    raw = json.loads(json.dumps(TINY))
    raw["vision_cfg"].update(vision)
    raw["text_cfg"].update(text or {})
    if embed_dim is not None:
        raw["embed_dim"] = embed_dim
    return EvaClipConfig.from_dict(raw)


def _random_model(cfg: EvaClipConfig | None = None, seed: int = 0) -> EvaClip:
    """Every tensor random (norm weights too), so a wrong mapping cannot hide behind ones/zeros."""
    model = EvaClip(cfg or _cfg()).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


@pytest.fixture
def reference() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in _random_model(seed=1).state_dict().items()}


def _assert_holds(model: EvaClip, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key].device.type == "cpu", key
        assert torch.equal(got[key], value), key


# ---------------------------------------------------------------------------------------------
# Writers: our state dict in each layout. The HF renaming is the test's own, written from the
# protocol notes §7.2 (BAAI's KEYS_TO_MODIFY_MAPPING) so it checks the loader independently.
# ---------------------------------------------------------------------------------------------


def to_hf(
    sd: dict[str, torch.Tensor],
    *,
    split_qkv: bool,
    transpose_text_projection: bool = True,
    zero_vision_biases: bool = False,
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        if m := re.fullmatch(r"visual\.blocks\.(\d+)\.(.+)", key):
            layer, rest = m.groups()
            p = f"vision_model.encoder.layers.{layer}."
            if rest == "attn.qkv.weight":
                if split_qkv:
                    for name, part in zip("qkv", t.chunk(3), strict=True):
                        out[p + f"self_attn.{name}_proj.weight"] = part.clone()
                        if zero_vision_biases:
                            out[p + f"self_attn.{name}_proj.bias"] = torch.zeros(part.shape[0])
                else:
                    out[p + "self_attn.qkv.weight"] = t
                continue
            rest = (
                rest.replace("norm1.", "layer_norm1.").replace("norm2.", "layer_norm2.").replace("attn.proj.", "self_attn.out_proj.")
            )
            out[p + rest] = t
        elif m := re.fullmatch(r"text\.transformer\.resblocks\.(\d+)\.(.+)", key):
            layer, rest = m.groups()
            p = f"text_model.encoder.layers.{layer}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]
                if split_qkv:
                    for name, part in zip("qkv", t.chunk(3), strict=True):
                        out[p + f"self_attn.{name}_proj.{kind}"] = part.clone()
                else:
                    out[p + f"self_attn.in_proj_{kind}"] = t
                continue
            rest = (
                rest.replace("ln_1.", "layer_norm1.")
                .replace("ln_2.", "layer_norm2.")
                .replace("attn.", "self_attn.")
                .replace("mlp.c_fc.", "mlp.fc1.")
                .replace("mlp.c_proj.", "mlp.fc2.")
            )
            out[p + rest] = t
        elif key == "visual.cls_token":
            out["vision_model.embeddings.class_embedding"] = t[0, 0]
        elif key == "visual.pos_embed":
            out["vision_model.embeddings.position_embedding.weight"] = t[0]
        elif key.startswith("visual.patch_embed.proj."):
            out["vision_model.embeddings.patch_embedding." + key.rsplit(".", 1)[1]] = t
        elif key.startswith("visual.norm."):
            out["vision_model.post_layernorm." + key.rsplit(".", 1)[1]] = t
        elif key == "visual.head.weight":
            out["visual_projection.weight"] = t
        elif key == "text.token_embedding.weight":
            out["text_model.embeddings.token_embedding.weight"] = t
        elif key == "text.positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = t
        elif key.startswith("text.ln_final."):
            out["text_model.final_layer_norm." + key.rsplit(".", 1)[1]] = t
        elif key == "text.text_projection":
            out["text_projection.weight"] = t.t().contiguous() if transpose_text_projection else t
        elif key == "logit_scale":
            out[key] = t
        else:
            raise AssertionError(f"test helper does not know {key}")
    out["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    return out


def _write_bin_shards(sd: dict[str, torch.Tensor], folder: Path, n: int = 3) -> Path:
    keys = list(sd)
    weight_map = {}
    for i in range(n):
        name = f"pytorch_model-{i + 1:05d}-of-{n:05d}.bin"
        part = {k: sd[k] for k in keys[i::n]}
        torch.save(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    index = folder / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return folder


Writer = Callable[[dict[str, torch.Tensor], Path], Path]


def _save_pt(obj: object, path: Path, **kwargs: object) -> Path:
    torch.save(obj, path, **kwargs)
    return path


def _save_st(sd: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def _in_folder(path: Path) -> Path:
    return path.parent


WRITERS: dict[str, tuple[Writer, str]] = {
    "pt-plain": (lambda sd, d: _save_pt(sd, d / "m.pt"), "baai"),
    "pt-state_dict-wrapper": (lambda sd, d: _save_pt({"state_dict": sd, "epoch": 3}, d / "m.pt"), "baai"),
    "pt-module-wrapper": (lambda sd, d: _save_pt({"module": sd}, d / "m.pth"), "baai"),
    "pt-model-wrapper": (lambda sd, d: _save_pt({"model": sd, "step": 10}, d / "m.bin"), "baai"),
    "pt-module-prefix": (lambda sd, d: _save_pt({"module." + k: v for k, v in sd.items()}, d / "m.pt"), "baai"),
    "pt-legacy-pickle": (lambda sd, d: _save_pt(sd, d / "m.pt", _use_new_zipfile_serialization=False), "baai"),
    "safetensors": (lambda sd, d: _save_st(sd, d / "m.safetensors"), "baai"),
    "folder-single-file": (lambda sd, d: _in_folder(_save_pt(sd, d / "EVA_CLIP_tiny.pt")), "baai"),
    "sharded-bin-index": (lambda sd, d: _write_bin_shards(sd, d), "baai"),
    "sharded-safetensors-index": (lambda sd, d: save_sharded(sd, d, max_shard_bytes=SHARD_BYTES).parent, "baai"),
    "index-file-path": (lambda sd, d: save_sharded(sd, d, max_shard_bytes=SHARD_BYTES), "baai"),
    "hf-fused-qkv": (lambda sd, d: _save_pt(to_hf(sd, split_qkv=False), d / "pytorch_model.bin"), "hf"),
    "hf-split-qkv": (lambda sd, d: _save_st(to_hf(sd, split_qkv=True), d / "model.safetensors"), "hf"),
    "hf-split-qkv-zero-vision-biases": (
        lambda sd, d: _save_st(to_hf(sd, split_qkv=True, zero_vision_biases=True), d / "model.safetensors"),
        "hf",
    ),
    "hf-sharded-projection-as-parameter": (
        lambda sd, d: save_sharded(to_hf(sd, split_qkv=True, transpose_text_projection=False), d, SHARD_BYTES).parent,
        "hf",
    ),
    "open_clip-old-text": (
        lambda sd, d: _save_pt({k.removeprefix("text."): v for k, v in sd.items()}, d / "open_clip.pt"),
        "open_clip_text",
    ),
}


@pytest.mark.parametrize("layout", list(WRITERS))
def test_every_layout_loads_back_exactly(layout: str, reference: dict, tmp_path: Path) -> None:
    writer, expected_layout = WRITERS[layout]
    path = writer(reference, tmp_path)
    model = _random_model(seed=2)
    report = load_checkpoint(model, path)
    _assert_holds(model, reference)
    assert report["layout"] == expected_layout
    assert report["files"] and all(Path(f).is_file() for f in report["files"])
    assert report["bytes"] > 0 and report["n_tensors"] > 0


@pytest.mark.parametrize("layout", ["pt-plain", "sharded-safetensors-index", "hf-split-qkv"])
def test_loads_into_meta_model_by_assignment(layout: str, reference: dict, tmp_path: Path) -> None:
    path = WRITERS[layout][0](reference, tmp_path)
    with torch.device("meta"):
        model = EvaClip(_cfg())
    load_checkpoint(model, path)
    _assert_holds(model, reference)
    assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())
    with torch.no_grad():  # the loaded model runs
        assert model.encode_image(torch.randn(1, 3, 56, 56)).shape == (1, 24)


def test_read_state_dict_keeps_stored_names_and_unwraps(reference: dict, tmp_path: Path) -> None:
    path = _save_pt({"state_dict": {"module." + k: v for k, v in reference.items()}}, tmp_path / "m.pt")
    sd = read_state_dict(path)
    assert sd.keys() == reference.keys()
    hf = read_state_dict(_save_st(to_hf(reference, split_qkv=True), tmp_path / "hf.safetensors"))
    assert "vision_model.encoder.layers.0.self_attn.q_proj.weight" in hf
    assert detect_layout(hf) == "hf" and detect_layout(sd) == "baai"


def test_sharded_checkpoints_are_read_shard_by_shard(reference: dict, tmp_path: Path) -> None:
    index = save_sharded(reference, tmp_path, max_shard_bytes=SHARD_BYTES)
    shard_files = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shard_files) > 1
    shards = list(iter_checkpoint_shards(tmp_path))
    assert [f for f, _ in shards] == [tmp_path / n for n in dict.fromkeys(json.loads(index.read_text())["weight_map"].values())]
    seen = [k for _, tensors in shards for k in tensors]
    assert sorted(seen) == sorted(reference)
    assert sorted(k for k, _ in iter_checkpoint_tensors(index)) == sorted(reference)


def test_folder_prefers_safetensors_index(reference: dict, tmp_path: Path) -> None:
    _write_bin_shards({k: torch.zeros_like(v) for k, v in reference.items()}, tmp_path)
    save_sharded(reference, tmp_path, max_shard_bytes=SHARD_BYTES)
    model = _random_model(seed=3)
    report = load_checkpoint(model, tmp_path)
    assert all(f.endswith(".safetensors") for f in report["files"])
    _assert_holds(model, reference)


def test_report_counts_dtype_and_casts_to_model_dtype(reference: dict, tmp_path: Path) -> None:
    half = {k: v.half() for k, v in reference.items()}
    path = _save_pt(half, tmp_path / "m.fp16.pt")
    model = _random_model(seed=4)
    report = load_checkpoint(model, path)
    assert report["dtypes"] == {"float16": len(half)}
    assert report["bytes"] == sum(v.numel() * 2 for v in half.values())
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, half[key].float()), key


# --- HF layout details -------------------------------------------------------------------------


def test_hf_mapping_notes(reference: dict) -> None:
    target = {k: v.shape for k, v in reference.items()}
    mapped = map_state_dict(to_hf(reference, split_qkv=True, zero_vision_biases=True), target)
    assert mapped.layout == "hf"
    notes = " | ".join(mapped.notes)
    assert "fused split q/k/v projections ×6" in notes  # 2 vision weights + 2 text weights + 2 text biases
    assert "k bias ×2" in notes and "q/v biases ×4" in notes
    assert "position_ids" in notes
    assert mapped.state_dict.keys() == reference.keys()


def test_hf_nonzero_vision_k_bias_is_reported_not_dropped(reference: dict) -> None:
    hf = to_hf(reference, split_qkv=True, zero_vision_biases=True)
    hf["vision_model.encoder.layers.1.self_attn.k_proj.bias"] = torch.ones(64)
    model = _random_model()
    mapped = map_state_dict(hf, {k: v.shape for k, v in model.state_dict().items()})
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): vision_model\.encoder\.layers\.1\.self_attn\.k_proj\.bias"):
        load_state_dict_strict(model, mapped.state_dict, source="hf.safetensors")


def test_hf_incomplete_split_qkv_is_reported(reference: dict) -> None:
    hf = to_hf(reference, split_qkv=True)
    del hf["vision_model.encoder.layers.0.self_attn.v_proj.weight"]
    model = _random_model()
    mapped = map_state_dict(hf, {k: v.shape for k, v in model.state_dict().items()})
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(model, mapped.state_dict, source="hf")
    msg = str(err.value)
    assert "missing keys (1): visual.blocks.0.attn.qkv.weight" in msg
    assert "self_attn.q_proj.weight" in msg and "self_attn.k_proj.weight" in msg


@pytest.mark.parametrize("transposed", [True, False])
def test_square_text_projection_follows_the_linear_convention(transposed: bool, tmp_path: Path) -> None:
    """text width == embed dim (as in the 8B, 1280 x 1280): shape cannot tell, the HF key name
    (a Linear weight) decides; the untransposed case then loads wrongly, and this test records it."""
    cfg = _cfg(embed_dim=32)
    ref = {k: v.clone() for k, v in _random_model(cfg, seed=5).state_dict().items()}
    path = _save_st(to_hf(ref, split_qkv=False, transpose_text_projection=transposed), tmp_path / "model.safetensors")
    model = _random_model(cfg, seed=6)
    report = load_checkpoint(model, path)
    assert any("not decidable by shape" in n for n in report["notes"])
    loaded = model.state_dict()["text.text_projection"]
    expected = ref["text.text_projection"] if transposed else ref["text.text_projection"].t()
    assert torch.equal(loaded, expected)


def test_layout_can_be_forced(reference: dict) -> None:
    hf = to_hf(reference, split_qkv=False)
    assert map_state_dict(hf, layout="baai").state_dict.keys() == hf.keys()
    with pytest.raises(ValueError, match="unknown checkpoint layout"):
        map_state_dict(hf, layout="timm")


# --- read errors: one line naming the file -----------------------------------------------------


def _one_line(err: pytest.ExceptionInfo[CheckpointError]) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path / "nope.pt")
    assert "not found" in _one_line(err) and "nope.pt" in str(err.value)


def test_empty_folder_lists_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no weights here")
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path)
    msg = _one_line(err)
    assert str(tmp_path) in msg
    for looked_for in ("*.safetensors.index.json", "*.bin.index.json", "model.safetensors", "pytorch_model.bin", "*.pt"):
        assert looked_for in msg


def test_folder_with_several_model_files_and_no_index(reference: dict, tmp_path: Path) -> None:
    _save_pt(reference, tmp_path / "EVA_CLIP_tiny.pt")
    _save_pt(reference, tmp_path / "EVA_tiny_mim.bin")
    with pytest.raises(CheckpointError, match="several model files") as err:
        read_state_dict(tmp_path)
    assert "EVA_CLIP_tiny.pt" in _one_line(err) and "EVA_tiny_mim.bin" in str(err.value)


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_index_naming_a_missing_shard(kind: str, reference: dict, tmp_path: Path) -> None:
    if kind == "safetensors":
        index = save_sharded(reference, tmp_path, max_shard_bytes=SHARD_BYTES)
    else:
        index = _write_bin_shards(reference, tmp_path) / "pytorch_model.bin.index.json"
    shard = sorted(set(json.loads(index.read_text())["weight_map"].values()))[1]
    (tmp_path / shard).unlink()
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path)
    msg = _one_line(err)
    assert index.name in msg and shard in msg


def test_index_naming_a_key_its_shard_lacks(reference: dict, tmp_path: Path) -> None:
    index = save_sharded(reference, tmp_path, max_shard_bytes=SHARD_BYTES)
    raw = json.loads(index.read_text())
    first = next(iter(raw["weight_map"].values()))
    raw["weight_map"]["visual.ghost.weight"] = first
    index.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError) as err:
        read_state_dict(index)
    assert "visual.ghost.weight" in _one_line(err) and first in str(err.value)


@pytest.mark.parametrize("content", ["{not json", '{"metadata": {}}', '{"weight_map": []}', "\udcff"])
def test_unreadable_index(content: str, tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path)
    assert "model.safetensors.index.json" in _one_line(err)


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_safetensors_shard(reference: dict, tmp_path: Path) -> None:
    index = save_sharded(reference, tmp_path, max_shard_bytes=SHARD_BYTES)
    shard = sorted(set(json.loads(index.read_text())["weight_map"].values()))[-1]
    _cut_in_half(tmp_path / shard)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path)
    msg = _one_line(err)
    assert shard in msg and "truncated" in msg


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_bin(legacy: bool, reference: dict, tmp_path: Path) -> None:
    _write_bin_shards(reference, tmp_path)
    shard = tmp_path / "pytorch_model-00002-of-00003.bin"
    if legacy:
        torch.save(torch.load(shard), shard, _use_new_zipfile_serialization=False)
    _cut_in_half(shard)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path)
    msg = _one_line(err)
    assert shard.name in msg and "corrupt" in msg


class _NotAWeight:
    pass


def test_pickle_with_arbitrary_objects_is_refused(reference: dict, tmp_path: Path) -> None:
    path = _save_pt({"state_dict": reference, "args": _NotAWeight()}, tmp_path / "train.pt")
    with pytest.raises(CheckpointError, match="weights_only") as err:
        read_state_dict(path)
    assert "train.pt" in _one_line(err)


def test_non_tensor_entries_are_an_error(tmp_path: Path) -> None:
    path = _save_pt({"visual.cls_token": torch.zeros(1), "note": "hello"}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="not tensors: note") as err:
        read_state_dict(path)
    assert "odd.pt" in _one_line(err)


def test_key_in_two_shards(reference: dict, tmp_path: Path) -> None:
    _save_st(reference, tmp_path / "a.safetensors")
    _save_st({"logit_scale": reference["logit_scale"]}, tmp_path / "b.safetensors")
    weight_map = dict.fromkeys(reference, "a.safetensors") | {"logit_scale": "b.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match="logit_scale") as err:
        read_state_dict(tmp_path)
    assert "a.safetensors" in _one_line(err) and "b.safetensors" in str(err.value)


# --- strict loading -----------------------------------------------------------------------------


def _cfg_8b_style() -> EvaClipConfig:
    return _cfg(embed_dim=20, width=48, layers=2, postnorm=False)


def _cfg_18b_style() -> EvaClipConfig:
    return _cfg(embed_dim=24, width=64, layers=3, postnorm=True)


def test_8b_style_checkpoint_into_18b_style_model_reports_everything(tmp_path: Path) -> None:
    path = _save_pt(_random_model(_cfg_8b_style()).state_dict(), tmp_path / "EVA_CLIP_8B_tiny.pt")
    model = _random_model(_cfg_18b_style(), seed=7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, path)
    msg = str(err.value)
    assert str(path) in msg.splitlines()[0]
    assert msg.splitlines()[0].endswith("9 missing keys, 25 shape mismatches")
    # block 2 exists only in the 18B-style model: its keys are named one by one
    assert "missing keys (9): visual.blocks.2.norm1.weight, visual.blocks.2.attn.qkv.weight" in msg
    assert "shape mismatches (25): visual.cls_token checkpoint [1, 1, 48] vs model [1, 1, 64]" in msg
    assert "visual.pos_embed checkpoint [1, 17, 48] vs model [1, 17, 64]" in msg
    assert "visual.blocks.*.attn.qkv.weight ×2 checkpoint [144, 48] vs model [192, 64]" in msg
    assert "unexpected" not in msg
    # the groups past the first few are counted, not listed (text.text_projection is one of them)
    assert "more groups" in msg and "text_projection" not in msg
    with pytest.raises(CheckpointError, match=r"text\.text_projection checkpoint \[32, 20\] vs model \[32, 24\]"):
        sd = _random_model(_cfg_8b_style()).state_dict()
        load_state_dict_strict(model, {k: v for k, v in sd.items() if k.startswith(("text.", "logit"))},
                               allow_missing=["visual.*"])
    _assert_holds(model, before)  # nothing was loaded


def test_full_size_8b_into_18b_on_meta_reports_grouped() -> None:
    """The same check for the released sizes, with no memory: both models on the meta device."""
    text = {"width": 1280, "heads": 20, "layers": 32, "vocab_size": 49408}
    with torch.device("meta"):
        m8 = EvaClip(_cfg(1280, text, image_size=224, width=4096, head_width=128, layers=32, postnorm=False))
        m18 = EvaClip(_cfg(1536, text, image_size=224, width=5120, head_width=128, layers=48, postnorm=True))
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(m18, m8.state_dict(), source="EVA_CLIP_8B_psz14_s9B.pt")
    msg = str(err.value)
    assert "EVA_CLIP_8B_psz14_s9B.pt" in msg and "EvaClip" in msg
    assert "missing keys (144): visual.blocks.*.norm1.weight ×16" in msg
    assert "visual.blocks.*.attn.qkv.weight ×32 checkpoint [12288, 4096] vs model [15360, 5120]" in msg
    assert "more groups" in msg  # long lists are cut, not dumped
    assert len(msg) < 3000


def test_unexpected_keys(reference: dict, tmp_path: Path) -> None:
    sd = dict(reference)
    sd["visual.blocks.0.attn.q_norm.weight"] = torch.ones(64)
    sd["visual.blocks.1.attn.q_norm.weight"] = torch.ones(64)
    sd["text.attn_mask"] = torch.zeros(77, 77)
    path = _save_st(sd, tmp_path / "extra.safetensors")
    model = _random_model(seed=8)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, path)
    msg = str(err.value)
    assert "extra.safetensors" in msg
    assert "unexpected keys (3): " in msg
    assert "visual.blocks.*.attn.q_norm.weight ×2" in msg and "text.attn_mask" in msg
    assert "missing" not in msg


def test_allow_missing_patterns(reference: dict, tmp_path: Path) -> None:
    sd = {k: v for k, v in reference.items() if not (k == "logit_scale" or k.startswith("visual.head."))}
    path = _save_pt(sd, tmp_path / "no_head.pt")
    model = _random_model(seed=9)
    kept = {k: model.state_dict()[k].clone() for k in ("logit_scale", "visual.head.weight")}
    with pytest.raises(CheckpointError, match=r"missing keys \(2\): logit_scale, visual\.head\.weight"):
        load_checkpoint(model, path)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): logit_scale"):
        load_checkpoint(model, path, allow_missing=["visual.head.*"])
    report = load_checkpoint(model, path, allow_missing=["visual.head.*", "logit_*"])
    assert sorted(report["missing_allowed"]) == ["logit_scale", "visual.head.weight"]
    state = model.state_dict()
    for key, value in sd.items():
        assert torch.equal(state[key], value), key
    for key, value in kept.items():  # allowed-missing tensors keep the model's values
        assert torch.equal(state[key], value), key


def test_pos_embed_of_another_resolution_is_interpolated(reference: dict, tmp_path: Path) -> None:
    path = _save_pt(reference, tmp_path / "m56.pt")  # 56 px / 14 = 4x4 grid, 17 tokens
    big = _random_model(_cfg(image_size=84), seed=10)  # 6x6 grid, 37 tokens
    report = load_checkpoint(big, path)
    assert report["resized"] == ["visual.pos_embed: 17 -> 37 tokens (bicubic)"]
    pos = big.visual.pos_embed.detach()
    assert pos.shape == (1, 37, 64)
    assert torch.equal(pos[:, 0], reference["visual.pos_embed"][:, 0])  # CLS row kept
    # Interpolation, not noise: corner patches move little, the grid's mean is kept roughly.
    old = reference["visual.pos_embed"][0, 1:].reshape(4, 4, 64)
    new = pos[0, 1:].reshape(6, 6, 64)
    assert (new[0, 0] - old[0, 0]).abs().mean() < (new[0, 0] - old[3, 3]).abs().mean()
    torch.testing.assert_close(new.mean((0, 1)), old.mean((0, 1)), atol=0.15, rtol=0)
    for key, value in reference.items():
        if key != "visual.pos_embed":
            assert torch.equal(big.state_dict()[key], value), key
    small = _random_model(seed=11)
    load_checkpoint(small, path)
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        f_small = small.encode_image(images)
        f_big = big.encode_image(torch.nn.functional.interpolate(images, size=84, mode="bilinear"))
    assert f_big.shape == (2, 24) and torch.isfinite(f_big).all()
    assert not torch.allclose(f_small, f_big)


def test_resize_pos_embed_properties() -> None:
    pe = torch.randn(1, 17, 8)
    assert torch.equal(resize_pos_embed(pe, 17), pe)  # same size: identity
    constant = torch.cat([torch.randn(1, 1, 8), torch.ones(1, 16, 8) * 0.5], dim=1)
    out = resize_pos_embed(constant, 50)  # 7x7
    assert out.shape == (1, 50, 8)
    torch.testing.assert_close(out[:, 1:], torch.full((1, 49, 8), 0.5))
    assert resize_pos_embed(pe.half(), 37).dtype == torch.float16
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed(torch.randn(1, 16, 8), 37)


def test_pos_embed_of_another_width_is_a_mismatch_not_resized(reference: dict) -> None:
    sd = dict(reference)
    sd["visual.pos_embed"] = torch.randn(1, 37, 48)
    with pytest.raises(CheckpointError, match=r"visual\.pos_embed checkpoint \[1, 37, 48\] vs model \[1, 17, 64\]"):
        load_state_dict_strict(_random_model(), sd, source="x")


def test_strict_load_on_meta_compares_shapes_only(reference: dict) -> None:
    with torch.device("meta"):
        model = EvaClip(_cfg())
    bad = dict(reference)
    bad["text.positional_embedding"] = torch.zeros(76, 32)
    with pytest.raises(CheckpointError, match=r"text\.positional_embedding checkpoint \[76, 32\] vs model \[77, 32\]"):
        load_state_dict_strict(model, bad, source="meta")
    assert all(p.is_meta for p in model.parameters())
    report = load_state_dict_strict(model, reference, source="meta")
    assert report.assigned and report.n_loaded == len(reference)
    _assert_holds(model, reference)
