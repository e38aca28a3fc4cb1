"""``models.load(name, ...)``: a model name (zoo card, ``open_clip:ARCH`` or a plugin) → an Encoder."""

from __future__ import annotations

from pathlib import Path

import torch

from evalkit.models.encoder import PRECISIONS, Encoder, state_dict_digest
from evalkit.models.open_clip_model import ModelLoadError, load_open_clip
from evalkit.models.zoo import CARDS, ModelCard
from evalkit.registry import UnknownNameError, model_loaders

__all__ = ["load", "Encoder", "ModelLoadError", "CARDS", "list_models", "build_eva_clip"]


def list_models() -> list[tuple[str, str]]:
    out = [(c.name, c.description) for c in CARDS.values()]
    out.append(("open_clip:ARCH", "any open_clip architecture; --weights a file or a pretrained tag"))
    out += [(n, "plugin") for n in model_loaders.names() if n not in ("open_clip",)]
    return out


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"--device {device}: expected cpu, cuda or cuda:N")


def build_eva_clip(card: ModelCard, weights: str | None, precision: str, device: str) -> Encoder:
    import open_clip

    from evalkit.models.eva_clip import EvaClip, EvaClipConfig

    if card.config is not None:
        cfg = EvaClipConfig.from_dict(card.config, source=f"model card {card.name}")
    elif card.config_file is not None:
        if not Path(card.config_file).exists():
            raise ModelLoadError(f"{card.config_file}: model config not found for {card.name}")
        cfg = EvaClipConfig.from_json(card.config_file)
    else:
        raise ModelLoadError(f"model card {card.name} has no architecture config")
    weights = weights or card.default_weights
    if weights is None:
        files = " or ".join(card.weight_files) or "a checkpoint"
        raise ModelLoadError(
            f"{card.name} needs --weights: a file or folder holding {files} "
            f"(or --weights random for an untrained model, for smoke tests)"
        )
    model = EvaClip(cfg)
    if weights == "random":
        model.init_weights(0)
    else:
        from evalkit.models.checkpoint import CheckpointError, load_checkpoint

        if not Path(weights).exists():
            raise ModelLoadError(f"{weights}: weights path does not exist")
        try:
            load_checkpoint(model, weights)
        except CheckpointError as e:
            raise ModelLoadError(str(e)) from e
    model.eval()
    if precision in ("fp16", "bf16"):
        model = model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[precision])
    model = model.to(device)
    return Encoder(
        name=card.name,
        model=model,
        tokenizer=open_clip.get_tokenizer("ViT-B-32", context_length=cfg.text.context_length),
        image_size=cfg.vision.image_size,
        mean=card.mean,
        std=card.std,
        embed_dim=cfg.embed_dim,
        causal_text=True,
        weights=str(weights),
        precision=precision,
        device=device,
        arch={"family": "eva_clip", **{k: str(v) for k, v in cfg.to_dict().items()}},
        weights_digest=state_dict_digest(model),
    )


def load(name: str, weights: str | None = None, precision: str = "fp32", device: str = "cpu") -> Encoder:
    """Build the model called ``name`` and wrap it as an Encoder."""
    if precision not in PRECISIONS:
        raise ModelLoadError(f"--precision {precision}: choose from {', '.join(PRECISIONS)}")
    _check_device(device)
    if name.startswith("open_clip:"):
        return load_open_clip(name.split(":", 1)[1], weights, precision, device)
    if name in CARDS:
        card = CARDS[name]
        if card.family == "eva_clip":
            return build_eva_clip(card, weights, precision, device)
        assert card.open_clip_arch is not None
        return load_open_clip(card.open_clip_arch, weights or card.default_weights, precision, device, name=card.name)
    if name in model_loaders:
        return model_loaders.get(name)(name=name, weights=weights, precision=precision, device=device)
    raise UnknownNameError("model", name, [*CARDS, *model_loaders.names(), "open_clip:ViT-B-32"])
