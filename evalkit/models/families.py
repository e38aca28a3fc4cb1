"""evalkit's own model families, registered in :data:`evalkit.registry.model_loaders` as a
plugin's would be: ``eva_clip`` (EVA-CLIP-18B, 8B and the demo, built from a config file of
``configs/``), ``open_clip`` (any open_clip architecture and pretrained tag; ``open_clip:ARCH``)
and ``uni3d`` (a Uni3D point encoder scored with a CLIP model's text tower).

This module only declares them: torch, open_clip and the model code are imported when a model
is loaded, so listing models stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.models.family import CardError, LoadOptions, ModelFamily, check_keys
from evalkit.models.hub import ModelLoadError, locate
from evalkit.registry import model_loaders

if TYPE_CHECKING:
    from evalkit.models.encoder import Encoder
    from evalkit.models.eva_clip import EvaClipConfig
    from evalkit.models.precision import Precision
    from evalkit.models.zoo import ModelCard

__all__ = ["CONFIG_DIR", "EvaClipFamily", "OpenClipFamily", "Uni3DFamily", "eva_config", "eva_config_names",
           "build_eva_clip", "RANDOM_INIT_MAX_PARAMS"]

#: EVA-CLIP architectures as data, in BAAI's model-config layout (``embed_dim``, ``vision_cfg``,
#: ``text_cfg``; EVA_CLIP_PROTOCOL.md §6.1), one JSON file per architecture
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: the image normalisation of every EVA-CLIP model (BAAI's eva_clip uses OpenAI's)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RANDOM_INIT_MAX_PARAMS = 2 * 10**9


def eva_config_names() -> list[str]:
    """The architectures of :data:`CONFIG_DIR` (``EVA-CLIP-18B``, ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


# -- eva_clip --------------------------------------------------------------------------------------


class EvaClipFamily(ModelFamily):
    """EVA-CLIP from its architecture config, through the streaming big-model loader: every
    load option, every precision (int8/int4 included), on cpu or cuda."""

    name = "eva_clip"
    honours = frozenset(LoadOptions.BIG_MODEL)
    quantizes = True
    device_types = frozenset({"cpu", "cuda"})
    runs = "an EVA-CLIP model"

    def check_arch(self, card: ModelCard) -> None:
        arch = card.arch
        check_keys(card, arch, (), ("config", "config_file"), {"config": (str, Mapping), "config_file": (str, Path)})
        if ("config" in arch) == ("config_file" in arch):
            raise CardError(f"model card {card.name!r} (family eva_clip): arch needs one of 'config' (an "
                            f"architecture: {', '.join(eva_config_names())}) or 'config_file' (a config.json path)")
        if isinstance(arch.get("config"), str) and arch["config"] not in eva_config_names():
            raise CardError(f"model card {card.name!r} (family eva_clip): arch key 'config': no architecture "
                            f"{arch['config']!r} in {CONFIG_DIR}; known: {', '.join(eva_config_names())}")

    def load_card(self, card: ModelCard, weights: str | None, precision: Precision, device: str,
                  options: LoadOptions) -> Encoder:
        return build_eva_clip(card, weights, precision, device, options)


def eva_config(card: ModelCard) -> EvaClipConfig:
    """The EvaClipConfig of an EVA-CLIP card: its architecture file in ``configs/``, an inline
    config (BAAI layout), or the config.json its ``config_file`` names."""
    from evalkit.models.eva_clip import EvaClipConfig

    family = EvaClipFamily()
    family.check_arch(card)
    config = card.arch.get("config")
    if isinstance(config, Mapping):
        return EvaClipConfig.from_dict(dict(config), source=f"model card {card.name}")
    path = CONFIG_DIR / f"{config}.json" if config is not None else Path(card.arch["config_file"])
    if not path.exists():
        raise ModelLoadError(f"{path}: model config not found for {card.name}")
    return EvaClipConfig.from_json(path)


def build_eva_clip(card: ModelCard, weights: str | None, precision: str | Precision, device: str,
                   options: LoadOptions | None = None) -> Encoder:
    """An EVA-CLIP card as an Encoder, through the streaming loader (``models/streaming.py``):
    built on meta, checked against the checkpoint by key and shape, streamed shard by shard onto
    ``options.devices`` (default: ``device``) at ``precision``."""
    import open_clip

    from evalkit.models.checkpoint import CheckpointError
    from evalkit.models.encoder import Encoder, ImageInput, Tower
    from evalkit.models.eva_clip import EvaClip
    from evalkit.models.precision import PlacementError
    from evalkit.models.streaming import load_eva_clip

    options = options or LoadOptions()
    cfg = eva_config(card)
    weights = weights or card.weights
    provenance = weights
    if weights is None and card.hub is not None:
        # The released file, from the Hugging Face cache or downloaded into it (models/hub.py).
        found = locate([card.hub], name=card.name)
        weights, provenance = str(found.path), found.uri
    if weights is None:
        files = " or ".join(card.weight_files) or "a checkpoint"
        raise ModelLoadError(
            f"{card.name} needs --weights: a file or folder holding {files} "
            f"(or --weights random for an untrained model, for smoke tests)"
        )
    source: Any = weights
    if weights == "random":
        # Untrained (seeded) weights, streamed through the same path as a checkpoint so every
        # precision and placement works on them. Small models only: built on the CPU in fp32.
        from evalkit.models.eva_clip import count_parameters
        from evalkit.models.memory_plan import empty_model

        n = count_parameters(empty_model(cfg))["total"]
        if n > RANDOM_INIT_MAX_PARAMS:
            raise ModelLoadError(
                f"{card.name}: --weights random builds the model in fp32 on the CPU ({n * 4 / 1e9:.0f} GB); "
                f"only for models up to {RANDOM_INIT_MAX_PARAMS / 1e9:.0f}B parameters (`evalkit plan` needs no weights)"
            )
        source = EvaClip(cfg).init_weights(0).state_dict()
    elif not Path(weights).exists():
        raise ModelLoadError(f"{weights}: weights path does not exist")
    try:
        placed = load_eva_clip(
            cfg, source, precision=precision, devices=options.devices or device, max_memory=options.max_memory,
            allow_missing=options.allow_missing, offload_dir=options.offload_dir, batch_size=options.batch_size,
            name=card.name, progress=options.progress,
        )
    except (CheckpointError, PlacementError) as e:
        lines = str(e).splitlines()
        one_line = getattr(e, "one_line", None)
        if one_line and lines:
            lines[0] = one_line  # what `evalkit run` prints; the rest is the full key report
        raise ModelLoadError("\n".join(lines)) from e
    return Encoder(
        name=card.name,
        model=placed.model,
        tokenizer=open_clip.get_tokenizer("ViT-B-32", context_length=cfg.text.context_length),
        embed_dim=cfg.embed_dim,
        causal_text=True,
        towers={"image": Tower("encode_image", ImageInput(cfg.vision.image_size, OPENAI_MEAN, OPENAI_STD))},
        weights=str(provenance),
        precision=placed.precision.name,
        device=placed.main_device,
        arch={"family": "eva_clip", **{k: str(v) for k, v in cfg.to_dict().items()}},
        weights_digest=placed.digest,
        # recorded unless the whole model sits on its main device
        device_map=placed.report["device_map"] if set(placed.report["device_map"].values()) != {placed.main_device}
        else None,
    )


# -- open_clip -------------------------------------------------------------------------------------


class OpenClipFamily(ModelFamily):
    """Any open_clip architecture (``open_clip:ARCH``) with a checkpoint file or a pretrained tag;
    a card names both (``arch``, ``pretrained``). On one device, at fp32/bf16/fp16/amp."""

    name = "open_clip"
    runs = "an open_clip model"
    ref_form = "open_clip:ARCH"
    ref_help = "any open_clip architecture; --weights a file or a pretrained tag"

    def check_arch(self, card: ModelCard) -> None:
        check_keys(card, card.arch, ("arch",), ("pretrained",), {"arch": str, "pretrained": str})

    def default_weights(self, card: ModelCard) -> str | None:
        return card.weights or card.arch.get("pretrained")

    def load_card(self, card: ModelCard, weights: str | None, precision: Precision, device: str,
                  options: LoadOptions) -> Encoder:
        from evalkit.models.open_clip_model import load_open_clip

        return load_open_clip(card.arch["arch"], weights or self.default_weights(card), precision, device,
                              name=card.name)

    def load_ref(self, ref: str, weights: str | None, precision: Precision, device: str,
                 options: LoadOptions) -> Encoder:
        from evalkit.models.open_clip_model import load_open_clip

        return load_open_clip(ref, weights, precision, device)


# -- uni3d -----------------------------------------------------------------------------------------


class Uni3DFamily(ModelFamily):
    """A Uni3D point encoder paired with the text tower of ``arch.text_model`` (a card; the
    ``--text-model`` option overrides it), loaded with ``text_weights`` and the same precision and
    placement options (:func:`evalkit.models.paired.load_point_text_pair`). The point tower has no
    quantised form."""

    name = "uni3d"
    honours = frozenset((*LoadOptions.BIG_MODEL, *LoadOptions.PAIRING))  # the big-model ones go to the text tower
    runs = "a Uni3D point encoder"

    def check_arch(self, card: ModelCard) -> None:
        from evalkit.models.uni3d import UNI3D_SIZES

        check_keys(card, card.arch, ("size", "text_model"), (), {"size": str, "text_model": str})
        if card.arch["size"] not in UNI3D_SIZES:
            raise CardError(f"model card {card.name!r} (family uni3d): arch key 'size': {card.arch['size']!r} is "
                            f"not a Uni3D size ({', '.join(UNI3D_SIZES)})")

    def load_card(self, card: ModelCard, weights: str | None, precision: Precision, device: str,
                  options: LoadOptions) -> Encoder:
        import dataclasses

        from evalkit.models.loading import load
        from evalkit.models.paired import load_point_text_pair

        text_options = dataclasses.replace(options, text_model=None, text_weights=None)
        text = load(options.text_model or card.arch["text_model"], options.text_weights, precision, device,
                    options=text_options)
        return load_point_text_pair(card, weights, precision, text.device, text)


for _family in (EvaClipFamily(), OpenClipFamily(), Uni3DFamily()):
    model_loaders.add(_family.name, _family)
