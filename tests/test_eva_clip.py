"""EVA-CLIP architecture: conformance with BAAI's outputs, and the full-size models' shapes.

The conformance fixtures and the state-dict listings live in ../shared/reference/ (beside the
repository, also in CI). A missing folder is a failure, never a skip: these tests are what tells
us the architecture matches BAAI's.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from evalkit.models.checkpoint import load_checkpoint
from evalkit.models.eva_clip import EvaClip, EvaClipConfig, count_parameters

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
CONFORMANCE = REFERENCE / "eva_clip_conformance"
STYLES = ("tiny-18b-style", "tiny-8b-style")

# Official model-config JSON (protocol notes §6.1, from BAAI's EVA-CLIP-18B model_configs/).
TEXT_CFG = {
    "context_length": 77,
    "vocab_size": 49408,
    "width": 1280,
    "heads": 20,
    "layers": 32,
    "xattn": False,
    "fusedLN": False,
}


def _vision_cfg(**overrides: object) -> dict:
    base = {
        "image_size": 224,
        "head_width": 128,
        "mlp_ratio": 5,
        "patch_size": 14,
        "drop_path_rate": 0,
        "qkv_bias": False,
        "xattn": True,
        "fusedLN": False,
        "use_rms_norm": True,
    }
    return {**base, **overrides}


FULL_SIZE = {
    "18b": {
        "embed_dim": 1536,
        "vision_cfg": _vision_cfg(layers=48, width=5120, eva_model_name="eva-clip-18b-14-x", postnorm=True),
        "text_cfg": TEXT_CFG,
    },
    "8b": {
        "embed_dim": 1280,
        "vision_cfg": _vision_cfg(layers=32, width=4096, eva_model_name="eva-clip-8b-14-x", postnorm=False),
        "text_cfg": TEXT_CFG,
    },
    "8b-448": {
        "embed_dim": 1280,
        "vision_cfg": _vision_cfg(
            image_size=448, layers=32, width=4096, eva_model_name="eva-clip-8b-14-plus-x", postnorm=False
        ),
        "text_cfg": TEXT_CFG,
    },
}

# Protocol notes §6.2, "[derived] computed from config"; README of the conformance fixtures.
EXPECTED_COUNTS = {
    "18b": {"visual": 17_630_494_720, "text": 694_987_520, "other": 1, "total": 18_325_482_241},
    "8b": {"visual": 7_526_088_704, "text": 694_659_840, "other": 1, "total": 8_220_748_545},
}


def _fixture(style: str) -> Path:
    folder = CONFORMANCE / style
    if not folder.is_dir():
        pytest.fail(
            f"EVA-CLIP conformance fixtures not found at {folder}; they ship in shared/reference/ "
            "beside the repository (<root>/main and <root>/shared)",
            pytrace=False,
        )
    return folder


def _listing(name: str) -> dict[str, list[int]]:
    path = REFERENCE / name
    if not path.is_file():
        pytest.fail(f"state-dict listing not found: {path}", pytrace=False)
    rows = path.read_text().splitlines()
    assert rows[0].split("\t") == ["key", "shape"], f"{path}: unexpected header {rows[0]!r}"
    return {key: json.loads(shape) for key, shape in (row.split("\t") for row in rows[1:] if row)}


@pytest.fixture(scope="module")
def meta_models() -> dict[str, EvaClip]:
    """The full-size models on the meta device: shapes only, no memory."""
    with torch.device("meta"):
        return {name: EvaClip(EvaClipConfig.from_dict(cfg, source=name)) for name, cfg in FULL_SIZE.items()}


def _load_conformance(style: str, **cfg_changes: bool) -> tuple[EvaClip, dict[str, torch.Tensor]]:
    folder = _fixture(style)
    raw = json.loads((folder / "config.json").read_text())
    raw["vision_cfg"].update(cfg_changes)
    model = EvaClip(EvaClipConfig.from_dict(raw, source=str(folder / "config.json"))).eval()
    load_checkpoint(model, folder / "weights.safetensors")
    return model, load_file(str(folder / "io.safetensors"))


@pytest.mark.parametrize("style", STYLES)
def test_conformance_weights_load_strictly(style: str) -> None:
    folder = _fixture(style)
    model = EvaClip(EvaClipConfig.from_json(folder / "config.json"))
    report = load_checkpoint(model, folder / "weights.safetensors")
    assert report["layout"] == "baai"
    assert report["n_tensors"] == len(model.state_dict())
    assert report["missing_allowed"] == [] and report["resized"] == []
    stored = load_file(str(folder / "weights.safetensors"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, stored[key]), key


@pytest.mark.parametrize("style", STYLES)
def test_conformance_config_flags(style: str) -> None:
    cfg = EvaClipConfig.from_json(_fixture(style) / "config.json")
    assert cfg.vision.postnorm is (style == "tiny-18b-style")
    assert cfg.vision.use_rms_norm and not cfg.vision.qkv_bias


@pytest.mark.parametrize("style", STYLES)
def test_conformance_image_features(style: str) -> None:
    model, io = _load_conformance(style)
    with torch.no_grad():
        got = model.encode_image(io["images"])
    torch.testing.assert_close(got, io["image_features"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("style", STYLES)
def test_conformance_text_features(style: str) -> None:
    model, io = _load_conformance(style)
    with torch.no_grad():
        got = model.encode_text(io["tokens"])
    torch.testing.assert_close(got, io["text_features"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("style", STYLES)
def test_conformance_tokens(style: str) -> None:
    folder = _fixture(style)
    captions = (folder / "captions.txt").read_text(encoding="utf-8").splitlines()
    expected = load_file(str(folder / "io.safetensors"))["tokens"]
    assert len(captions) == expected.shape[0]
    tokens = open_clip.get_tokenizer("ViT-B-32")(captions)
    assert tokens.shape == expected.shape
    assert torch.equal(tokens.to(expected.dtype), expected)


def test_postnorm_flag_changes_the_output() -> None:
    """The same weights through branch-post-norm and pre-norm blocks must give other features;
    and only the config that matches the fixture reproduces BAAI's."""
    post, io = _load_conformance("tiny-18b-style", postnorm=True)
    pre, _ = _load_conformance("tiny-18b-style", postnorm=False)
    with torch.no_grad():
        f_post, f_pre = post.encode_image(io["images"]), pre.encode_image(io["images"])
        # The text tower does not depend on the flag.
        torch.testing.assert_close(post.encode_text(io["tokens"]), pre.encode_text(io["tokens"]))
    torch.testing.assert_close(f_post, io["image_features"], atol=1e-5, rtol=0)
    assert (f_post - f_pre).abs().max() > 1e-2
    assert (f_pre - io["image_features"]).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["18b", "8b"])
def test_full_size_parameter_counts(meta_models: dict[str, EvaClip], name: str) -> None:
    assert count_parameters(meta_models[name]) == EXPECTED_COUNTS[name]


def test_8b_448_parameter_count(meta_models: dict[str, EvaClip]) -> None:
    # Only the position embedding grows: (32*32 + 1) - (16*16 + 1) more rows of width 4096.
    assert count_parameters(meta_models["8b-448"])["total"] == 8_223_894_273
    assert meta_models["8b-448"].visual.pos_embed.shape == (1, 1025, 4096)


def test_full_size_models_are_on_meta(meta_models: dict[str, EvaClip]) -> None:
    assert all(p.is_meta for m in meta_models.values() for p in m.parameters())


@pytest.mark.parametrize(("name", "listing"), [("18b", "eva_clip_18b_state_dict.tsv"), ("8b", "eva_clip_8b_state_dict.tsv")])
def test_full_size_state_dict_matches_baai_listing(meta_models: dict[str, EvaClip], name: str, listing: str) -> None:
    expected = _listing(listing)
    got = {k: list(v.shape) for k, v in meta_models[name].state_dict().items()}
    missing = sorted(expected.keys() - got.keys())
    extra = sorted(got.keys() - expected.keys())
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    wrong = [(k, got[k], expected[k]) for k in expected if got[k] != expected[k]]
    assert not wrong, f"shape differs: {wrong[:5]}"
    assert len(got) == {"18b": 828, "8b": 684}[name]
