"""The model side's seams: families are registered loaders (found in the registry plugins use),
load options travel as one LoadOptions and each family refuses what it cannot honour in one place,
a card's ``arch`` block is validated by its family, EVA-CLIP architectures are data files, and the
models the paper compares whose weights were never released are listed as claim-only.

No weights are downloaded: open_clip's EVA-02 architectures are built on the meta device only.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from pathlib import Path

import pytest
import torch

from evalkit import models
from evalkit.cli import main as cli
from evalkit.models import CARDS, CLAIM_ONLY, LoadOptions, ModelCard, ModelLoadError, eva_config
from evalkit.models.encoder import Encoder, ImageInput, Tower
from evalkit.models.families import CONFIG_DIR, EvaClipFamily, OpenClipFamily, Uni3DFamily
from evalkit.models.family import (
    CardError,
    ModelFamily,
    PluginLoader,
    card_default_weights,
    family_names,
    find_loader,
    get_family,
)
from evalkit.models.precision import parse_precision
from evalkit.registry import model_loaders

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ the registry


@pytest.fixture
def registered(monkeypatch):
    """Register loaders for one test (the registry is process-wide)."""
    added = []

    def add(name, obj):
        model_loaders.add(name, obj)
        added.append(name)

    yield add
    for name in added:
        model_loaders._items.pop(name, None)


def _stub_encoder(name: str, weights: str = "") -> Encoder:
    image = Tower(lambda x: x.flatten(1)[:, :3], ImageInput(2, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    return Encoder(name=name, model=torch.nn.Identity(), tokenizer=lambda texts: torch.zeros(len(texts), 2,
                   dtype=torch.long), embed_dim=3, causal_text=False, towers={"image": image}, weights=weights)


def test_builtin_families_are_registered_loaders():
    assert {"eva_clip", "open_clip", "uni3d"} <= set(family_names())
    for name, cls in (("eva_clip", EvaClipFamily), ("open_clip", OpenClipFamily), ("uni3d", Uni3DFamily)):
        assert isinstance(model_loaders.get(name), cls)  # the very registry plugins register in
        assert get_family(name) is model_loaders.get(name)


def test_a_plugin_loader_is_found_through_the_registry(registered):
    calls = []

    def load_model(name, weights=None, precision="fp32", device="cpu"):
        calls.append((name, weights, precision, device))
        return _stub_encoder(name, weights or "")

    registered("tiny-plugin-model", load_model)
    assert isinstance(find_loader("tiny-plugin-model"), PluginLoader)
    enc = models.load("tiny-plugin-model", weights="w.pt", precision="bf16")
    # the plugin contract: name, weights, precision as a string, device
    assert calls == [("tiny-plugin-model", "w.pt", "bf16", "cpu")] and isinstance(calls[0][2], str)
    assert enc.name == "tiny-plugin-model"
    assert ("tiny-plugin-model", "plugin") in models.list_models()
    with pytest.raises(ModelLoadError, match="tiny-plugin-model: --devices: .* are for EVA-CLIP models"):
        models.load("tiny-plugin-model", options=LoadOptions(devices="cpu"))
    assert len(calls) == 1  # refused before the plugin was called


class TinyFamily(ModelFamily):
    """A plugin's own family: cards name it, and ``tinyfam:REF`` routes to it."""

    name = "tinyfam"
    runs = "a tiny model"
    ref_form = "tinyfam:WIDTH"
    ref_help = "a tiny test model"

    def check_arch(self, card):
        from evalkit.models.family import check_keys

        check_keys(card, card.arch, ("width",), (), {"width": int})

    def load_card(self, card, weights, precision, device, options):
        return _stub_encoder(card.name, f"width {card.arch['width']}")

    def load_ref(self, ref, weights, precision, device, options):
        return _stub_encoder(f"tinyfam:{ref}", f"width {ref}")


def test_a_plugin_family_gets_cards_and_prefixed_names(registered, monkeypatch):
    registered("tinyfam", TinyFamily())
    monkeypatch.setitem(CARDS, "tiny-card", ModelCard("tiny-card", "tinyfam", "test", arch={"width": 3}))
    assert models.load("tiny-card").weights == "width 3"
    assert models.load("tinyfam:7").weights == "width 7"
    assert ("tinyfam:WIDTH", "a tiny test model") in models.list_models()
    with pytest.raises(ModelLoadError, match="tinyfam is a model family: name one of its cards or tinyfam:WIDTH"):
        models.load("tinyfam")
    monkeypatch.setitem(CARDS, "bad-card", ModelCard("bad-card", "tinyfam", "test", arch={"width": "3"}))
    with pytest.raises(CardError, match="'bad-card'.*'width' must be a int"):
        models.load("bad-card")


def test_a_card_of_an_unknown_family_names_it(monkeypatch):
    monkeypatch.setitem(CARDS, "orphan", ModelCard("orphan", "no_such_family", "test", arch={}))
    with pytest.raises(KeyError, match="unknown model family 'no_such_family'"):
        models.load("orphan")


# ------------------------------------------------------------------------------ refusals


# every option a family must honour or refuse, set to a value a family that honours it would take
GIVEN = {"devices": "cpu", "max_memory": "cpu=1GiB", "offload_dir": "/tmp/x", "allow_missing": ("logit_scale",),
         "text_model": "eva-clip-demo", "text_weights": "t.pt"}
FAMILY_CARD = {"eva_clip": "eva-clip-demo", "open_clip": "eva02-clip-b-16", "uni3d": "uni3d-ti"}


@pytest.mark.parametrize("family_name", sorted(FAMILY_CARD))
def test_each_family_refuses_what_it_cannot_honour_before_loading(family_name, monkeypatch):
    fam = get_family(family_name)

    def never(*a, **k):
        raise AssertionError("loaded although an option had to be refused")

    monkeypatch.setattr(fam, "load_card", never)
    card = FAMILY_CARD[family_name]
    assert set(GIVEN) == set(LoadOptions.FLAGS)
    for option, value in GIVEN.items():
        options = LoadOptions(**{option: value})
        if option in fam.honours:
            fam.refuse(card, parse_precision("fp32"), "cpu", options)  # honoured: no refusal
            continue
        with pytest.raises(ModelLoadError) as e:
            models.load(card, options=options)
        flag = LoadOptions.FLAGS[option]
        assert flag in str(e.value) or (option in LoadOptions.PAIRING and "--text-model" in str(e.value)), e.value
        assert str(e.value).startswith(f"{card}: ")
    for precision in ("int8", "int4"):
        if fam.quantizes:
            fam.refuse(card, parse_precision(precision), "cpu", LoadOptions())
        else:
            with pytest.raises(ModelLoadError, match=f"--precision {precision}: .*for EVA-CLIP models"):
                models.load(card, precision=precision)


def test_what_each_family_honours():
    """The declarations the one refusal reads: EVA-CLIP takes every big-model option and int8/int4
    but no pairing; open_clip only --device; Uni3D the big-model options (for its text tower) and
    the pairing, never a quantised point tower."""
    big, pair = set(LoadOptions.BIG_MODEL), set(LoadOptions.PAIRING)
    assert (get_family("eva_clip").honours, get_family("eva_clip").quantizes) == (big, True)
    assert (get_family("open_clip").honours, get_family("open_clip").quantizes) == (frozenset(), False)
    assert (get_family("uni3d").honours, get_family("uni3d").quantizes) == (big | pair, False)
    assert get_family("eva_clip").device_types == {"cpu", "cuda"}
    with pytest.raises(ModelLoadError, match="eva-clip-demo: an EVA-CLIP model loads on cpu or cuda"):
        models.load("eva-clip-demo", device="mps")


def test_load_options_are_one_frozen_value():
    options = LoadOptions(devices="0,1", allow_missing=["a*"])
    assert options.allow_missing == ("a*",) and options.given() == ("devices", "allow_missing")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.devices = "cpu"
    with pytest.raises(TypeError, match="not one string"):
        LoadOptions(allow_missing="logit_scale")
    assert LoadOptions(batch_size=8, progress=True).given() == ()  # hints, which any family may ignore


# ------------------------------------------------------------------------------ cards


def test_every_card_is_valid_for_its_family():
    for card in CARDS.values():
        if card.family in family_names():  # hf cards need evalkit.models.hf
            get_family(card.family).check_arch(card)
    assert not set(CARDS) & set(CLAIM_ONLY)


@pytest.mark.parametrize("family_name, arch, key", [
    ("eva_clip", {"config": "EVA-CLIP-18B", "layers": 3}, "'layers'"),
    ("eva_clip", {}, "'config'"),
    ("eva_clip", {"config": "EVA-CLIP-19B"}, "'config'"),
    ("eva_clip", {"config": 18}, "'config'"),
    ("open_clip", {"pretrained": "laion2b_s9b_b144k"}, "'arch'"),
    ("open_clip", {"arch": "EVA02-E-14", "tag": "x"}, "'tag'"),
    ("open_clip", {"arch": ["EVA02-E-14"]}, "'arch'"),
    ("uni3d", {"size": "huge", "text_model": "eva02-clip-e-14-plus"}, "'size'"),
    ("uni3d", {"size": "base"}, "'text_model'"),
])
def test_a_bad_arch_block_names_the_card_and_key(monkeypatch, family_name, arch, key):
    monkeypatch.setitem(CARDS, "bad-arch", ModelCard("bad-arch", family_name, "test", arch=arch))
    with pytest.raises(CardError) as e:
        models.load("bad-arch")
    assert "'bad-arch'" in str(e.value) and key in str(e.value), e.value


def test_open_clip_cards_route_arch_and_tag(monkeypatch):
    import evalkit.models.open_clip_model as ocm

    seen = []
    monkeypatch.setattr(ocm, "load_open_clip", lambda arch, weights, precision, device, name=None:
                        seen.append((arch, weights, name)) or _stub_encoder(name or arch))
    models.load("eva02-clip-l-14-336")
    models.load("eva02-clip-e-14", weights="/elsewhere/e14.pt")
    models.load("open_clip:EVA02-B-16", weights="merged2b_s8b_b131k")
    assert seen == [("EVA02-L-14-336", "merged2b_s6b_b61k", "eva02-clip-l-14-336"),
                    ("EVA02-E-14", "/elsewhere/e14.pt", "eva02-clip-e-14"),
                    ("EVA02-B-16", "merged2b_s8b_b131k", None)]
    assert card_default_weights(CARDS["eva02-clip-b-16"]) == "merged2b_s8b_b131k"
    assert card_default_weights(CARDS["eva-clip-demo"]) == CARDS["eva-clip-demo"].weights
    assert CARDS["uni3d-b"].text_model == "eva02-clip-e-14-plus" and CARDS["eva-clip-18b"].text_model is None


EVA02 = {"eva02-clip-b-16": ("EVA02-B-16", 224, 197), "eva02-clip-l-14": ("EVA02-L-14", 224, 257),
         "eva02-clip-l-14-336": ("EVA02-L-14-336", 336, 577), "eva02-clip-e-14": ("EVA02-E-14", 224, 257)}


def test_the_eva02_cards_name_open_clip_architectures_and_released_tags():
    """The paper's EVA-02-CLIP models, as open_clip knows them: each architecture with its
    pretrained tag (a Hub repository, so the weights come through the Hugging Face cache), and
    the image size the paper names, from the architecture built on the meta device."""
    import open_clip

    from evalkit.models.open_clip_model import model_shapes, open_clip_hub_files

    for name, (arch, size, tokens) in EVA02.items():
        card = CARDS[name]
        assert (card.family, card.arch["arch"]) == ("open_clip", arch)
        assert (arch, card.arch["pretrained"]) in open_clip.list_pretrained(), name
        assert open_clip_hub_files(arch, card.arch["pretrained"]), name
        assert open_clip.get_model_config(arch)["vision_cfg"]["image_size"] == size
        assert model_shapes(arch)["visual.trunk.pos_embed"][1] == tokens, name  # (size / patch)² + 1
    assert "E/14+" in CARDS["eva02-clip-e-14"].note and "eva02-clip-e-14-plus" in CARDS["eva02-clip-e-14"].note


def test_claim_only_models_are_not_loadable_and_say_why():
    assert {"basic-l", "eva-clip-18b-336", "eva-clip-18b-no-video"} <= set(CLAIM_ONLY)
    for m in CLAIM_ONLY.values():
        assert m.why and m.paper_name and m.tables
        with pytest.raises(ModelLoadError, match=f"{m.name}: claim-only"):
            models.load(m.name)
    from evalkit.models.zoo import claim_only

    assert claim_only("eva-clip-18b", "336px").name == "eva-clip-18b-336"
    assert claim_only("eva-clip-18b", "") is None and claim_only("basic-l").name == "basic-l"
    # every claim filed under a claim-only model (results/claims.csv) is one the report can explain
    import csv

    with open(REPO / "results" / "claims.csv") as f:
        rows = list(csv.DictReader(f))
    for m in CLAIM_ONLY.values():
        for row in rows:
            if row["model"] == m.claims_model and m.claims_protocol in ("", row["protocol"]):
                assert row["paper_model"] == m.paper_name, row


def test_list_models_all_shows_claim_only_models_with_why(capsys):
    assert cli.main(["list", "models"]) == 0
    plain = capsys.readouterr().out
    assert "eva02-clip-l-14-336" in plain and "open_clip:ARCH" in plain
    assert "basic-l" not in plain and "claim-only" not in plain
    assert cli.main(["list", "models", "--all"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    for m in CLAIM_ONLY.values():
        assert "claim-only" in rows[m.name] and m.why in rows[m.name]
    assert "never released" in rows["basic-l"]
    assert all(name in rows for name in CARDS)


# ------------------------------------------------------------------------------ architectures as data


def _former_eva_cfg(embed: int, layers: int, width: int, postnorm: bool, image_size: int = 224) -> dict:
    """The Python config zoo.py built before the configs became files (EVA_CLIP_PROTOCOL.md §6.1)."""
    return {
        "embed_dim": embed,
        "vision_cfg": {
            "image_size": image_size, "layers": layers, "width": width, "head_width": 128, "mlp_ratio": 5,
            "patch_size": 14, "qkv_bias": False, "postnorm": postnorm, "use_rms_norm": True,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1280, "heads": 20, "layers": 32},
    }


FORMER = {
    "eva-clip-18b": _former_eva_cfg(1536, 48, 5120, postnorm=True),
    "eva-clip-8b": _former_eva_cfg(1280, 32, 4096, postnorm=False),
    "eva-clip-8b-448": _former_eva_cfg(1280, 32, 4096, postnorm=False, image_size=448),
}


@pytest.mark.parametrize("name", sorted(FORMER))
def test_eva_clip_config_files_equal_the_former_python_configs(name):
    from evalkit.models.eva_clip import EvaClipConfig

    card = CARDS[name]
    raw = json.loads((CONFIG_DIR / f"{card.arch['config']}.json").read_text())
    assert raw == FORMER[name]  # every key and value, types included (5, not 5.0)
    assert all(type(raw["vision_cfg"][k]) is type(v) for k, v in FORMER[name]["vision_cfg"].items())
    parsed, former = eva_config(card), EvaClipConfig.from_dict(FORMER[name])
    assert dataclasses.asdict(parsed) == dataclasses.asdict(former)
    assert (parsed.vision.heads, parsed.vision.mlp_hidden, parsed.vision.grid) == \
        (former.vision.heads, former.vision.mlp_hidden, former.vision.grid)


def test_the_demo_config_is_the_file_beside_its_weights():
    from evalkit.models.eva_clip import EvaClipConfig
    from evalkit.models.zoo import DEMO_WEIGHTS

    card = CARDS["eva-clip-demo"]
    assert Path(card.arch["config_file"]) == DEMO_WEIGHTS / "config.json"
    assert eva_config(card) == EvaClipConfig.from_json(DEMO_WEIGHTS / "config.json")


def test_eva_clip_configs_ship_in_the_wheel():
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["evalkit"]
    files = sorted(CONFIG_DIR.glob("*"))
    assert {f.name for f in files} == {"EVA-CLIP-18B.json", "EVA-CLIP-8B.json", "EVA-CLIP-8B-plus.json"}
    for f in files:
        rel = f.relative_to(REPO / "evalkit").as_posix()  # package-data globs are the package's paths
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} would be left out of the wheel ({globs})"


# ------------------------------------------------------------------------------ the encoder's towers


def test_a_copy_with_another_model_runs_that_model():
    from evalkit.models.eva_clip import EvaClip

    demo = models.load("eva-clip-demo")
    other = EvaClip(eva_config(CARDS["eva-clip-demo"])).init_weights(1)
    copy = dataclasses.replace(demo, model=other)
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(copy.encode_image(images), other.encode_image(images), rtol=0, atol=0)
    assert not torch.equal(copy.encode_image(images), demo.encode_image(images))
    assert copy.towers is not demo.towers and copy.tower("image").input == demo.tower("image").input


def test_a_function_tower_of_the_old_model_is_refused_in_a_copy_with_another():
    model = torch.nn.Linear(3, 3)
    enc = Encoder(name="fn-tower", model=model, tokenizer=lambda t: torch.zeros(len(t), 2, dtype=torch.long),
                  embed_dim=3, causal_text=False,
                  towers={"image": Tower(lambda x: model(x.mean(dim=(2, 3))), ImageInput(4, (0,) * 3, (1,) * 3))})
    assert dataclasses.replace(enc, weights="w").tower("image").owner is model  # same model: fine
    with pytest.raises(ValueError, match=r"towers\['image'\] runs a function of another model"):
        dataclasses.replace(enc, model=torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="runs encode_pixels"):
        Encoder(name="x", model=model, tokenizer=enc.tokenizer, embed_dim=3, causal_text=False,
                towers={"image": Tower("encode_pixels", ImageInput(4, (0,) * 3, (1,) * 3))})


def test_a_point_encoder_has_a_point_tower_and_no_image_tower(tmp_path):
    from test_uni3d import uni3d_checkpoint

    from evalkit.models.uni3d import uni3d_config

    ckpt = tmp_path / "model.pt"
    torch.save(uni3d_checkpoint(uni3d_config("tiny", embed_dim=64)), ckpt)
    enc = models.load("uni3d-ti", weights=str(ckpt), options=LoadOptions(text_model="eva-clip-demo"))
    assert set(enc.towers) == {"points"} and enc.has_points and not enc.has_images
    assert enc.tower("points").input.npoints == 10000 and enc.tower("points").input_dtype == torch.float32
    assert enc.tower_module("points") in enc.modules() and enc.model in enc.modules() and len(enc.modules()) == 2
    with pytest.raises(TypeError, match="uni3d-ti has no image tower"):
        enc.encode_image(torch.zeros(1, 3, 32, 32))
    assert enc.encode_points(torch.rand(2, 600, 6)).shape == (2, 64)


def test_a_card_a_plugin_adds_on_import_is_found_by_name(monkeypatch):
    """A plugin's module may add cards when it is imported: a name not among evalkit's cards loads
    the plugins (entry points) before it is called unknown, so `--model <its card>` works."""
    from evalkit import registry
    from evalkit.models.auto import choose_placement

    class EntryPoint:  # what importlib.metadata hands over for an installed plugin
        name, value = "tinyplug", "tinyplug:load_model"

        def load(self):
            monkeypatch.setitem(CARDS, "tiny-plugin-card", dataclasses.replace(CARDS["eva-clip-demo"],
                                                                               name="tiny-plugin-card"))
            return lambda **kwargs: None

    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group: [EntryPoint()] if group == "evalkit.models" else [])
    monkeypatch.setattr(registry.model_loaders, "_entry_points_loaded", False)
    monkeypatch.setattr(registry.model_loaders, "_items", dict(registry.model_loaders._items))
    assert choose_placement("tiny-plugin-card", device="cpu", precision="fp32").device == "cpu"
    assert "tiny-plugin-card" in CARDS and CARDS["tiny-plugin-card"].name == "tiny-plugin-card"
