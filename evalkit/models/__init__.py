"""``models.load(name, ...)``: a model name (zoo card, ``open_clip:ARCH`` or a plugin) → an Encoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.models.hub import ModelLoadError, locate
from evalkit.models.precision import DEFAULT_PRECISION, PlacementError, Precision, parse_precision
from evalkit.models.zoo import CARDS, ModelCard
from evalkit.registry import UnknownNameError, model_loaders

if TYPE_CHECKING:
    from evalkit.models.encoder import Encoder

__all__ = ["load", "Encoder", "ModelLoadError", "CARDS", "list_models", "build_eva_clip", "DEFAULT_PRECISION"]


def __getattr__(name: str) -> Any:
    # torch is imported when a model is built, not with this package: the CLI reads
    # evalkit.models.precision (its --precision choices) for `evalkit --help`.
    if name == "Encoder":
        from evalkit.models.encoder import Encoder

        return Encoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

RANDOM_INIT_MAX_PARAMS = 2 * 10**9


def list_models() -> list[tuple[str, str]]:
    out = [(c.name, c.description) for c in CARDS.values()]
    out.append(("open_clip:ARCH", "any open_clip architecture; --weights a file or a pretrained tag"))
    out += [(n, "plugin") for n in model_loaders.names() if n not in ("open_clip",)]
    return out


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"--device {device}: expected cpu, cuda or cuda:N")


def eva_config(card: ModelCard) -> Any:
    """The EvaClipConfig of an EVA-CLIP card (inline config or the config.json next to its weights)."""
    from evalkit.models.eva_clip import EvaClipConfig

    if card.config is not None:
        return EvaClipConfig.from_dict(card.config, source=f"model card {card.name}")
    if card.config_file is not None:
        if not Path(card.config_file).exists():
            raise ModelLoadError(f"{card.config_file}: model config not found for {card.name}")
        return EvaClipConfig.from_json(card.config_file)
    raise ModelLoadError(f"model card {card.name} has no architecture config")


def build_eva_clip(
    card: ModelCard,
    weights: str | None,
    precision: str | Precision,
    device: str,
    *,
    devices: str | None = None,
    max_memory: str | Mapping[Any, Any] | None = None,
    allow_missing: Sequence[str] = (),
    offload_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Encoder:
    """An EVA-CLIP card as an Encoder, through the streaming loader (``models/streaming.py``):
    built on meta, checked against the checkpoint by key and shape, streamed shard by shard onto
    ``devices`` (default: ``device``) at ``precision``."""
    import open_clip

    from evalkit.models.checkpoint import CheckpointError
    from evalkit.models.encoder import Encoder
    from evalkit.models.eva_clip import EvaClip
    from evalkit.models.streaming import load_eva_clip

    cfg = eva_config(card)
    if devices is None and device.startswith("mps"):
        raise ModelLoadError(f"{card.name}: EVA-CLIP models load on cpu or cuda (--device mps is not supported)")
    weights = weights or card.default_weights
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
            cfg, source, precision=precision, devices=devices or device, max_memory=max_memory,
            allow_missing=allow_missing, offload_dir=offload_dir, batch_size=batch_size, name=card.name,
            progress=progress,
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
        image_size=cfg.vision.image_size,
        mean=card.mean,
        std=card.std,
        embed_dim=cfg.embed_dim,
        causal_text=True,
        weights=str(provenance),
        precision=placed.precision.name,
        device=placed.main_device,
        arch={"family": "eva_clip", **{k: str(v) for k, v in cfg.to_dict().items()}},
        weights_digest=placed.digest,
        # recorded unless the whole model sits on its main device
        device_map=placed.report["device_map"] if set(placed.report["device_map"].values()) != {placed.main_device}
        else None,
    )


def load(
    name: str,
    weights: str | None = None,
    precision: str | Precision = DEFAULT_PRECISION,
    device: str = "cpu",
    *,
    devices: str | None = None,
    max_memory: str | Mapping[Any, Any] | None = None,
    allow_missing: Sequence[str] = (),
    offload_dir: str | Path | None = None,
    batch_size: int = 64,
    text_model: str | None = None,
    text_weights: str | None = None,
    progress: bool = False,
) -> Encoder:
    """Build the model called ``name`` and wrap it as an Encoder (``progress``: EVA-CLIP weights
    show their loading, :mod:`evalkit.progress`).

    ``devices`` (``0,1``, ``cpu``, ``auto``), ``max_memory`` (``0=38GiB,cpu=64GiB``),
    ``allow_missing`` (fnmatch patterns of keys the checkpoint may lack), ``offload_dir`` and the
    int8/int4 precisions are the big-model path, for EVA-CLIP cards; ``batch_size`` sizes the
    activation reserve of the device map.

    A point encoder card (Uni3D, ``uni3d-b``) is paired with the text tower of ``text_model``
    (default: the card's teacher), loaded with ``text_weights`` and the same precision and
    placement options (:func:`evalkit.models.paired.load_point_text_pair`).
    """
    try:
        spec = parse_precision(precision)  # the one parse; everything below gets the Precision
    except PlacementError as e:
        raise ModelLoadError(str(e)) from None
    if devices is None:
        _check_device(device)
    big = devices is not None or max_memory is not None or offload_dir is not None or bool(allow_missing)
    card = CARDS.get(name)
    if card is not None and card.family == "uni3d":
        from evalkit.models.paired import load_point_text_pair

        if spec.quantized:
            raise ModelLoadError(f"{name}: --precision {spec.name} is for EVA-CLIP models; a Uni3D point encoder "
                                 f"runs at fp32, bf16, fp16 or amp")
        text = load(text_model or card.text_model or "", text_weights, spec, device, devices=devices,
                    max_memory=max_memory, allow_missing=allow_missing, offload_dir=offload_dir, batch_size=batch_size,
                    progress=progress)
        return load_point_text_pair(card, weights, spec, text.device, text)
    if text_model is not None or text_weights is not None:
        raise ModelLoadError(f"{name}: --text-model/--text-weights pair a point encoder (uni3d-b ...) with a "
                             f"text tower; {name} has its own")
    if name.startswith("open_clip:") or (name in CARDS and CARDS[name].family != "eva_clip"):
        if big or spec.quantized:
            raise ModelLoadError(
                f"{name}: --devices/--max-memory/--offload-dir/--allow-missing and --precision int8/int4 "
                f"are for EVA-CLIP models (eva-clip-18b, eva-clip-8b, ...); use --device and fp32/bf16/fp16/amp"
            )
        from evalkit.models.open_clip_model import load_open_clip

        if name.startswith("open_clip:"):
            return load_open_clip(name.split(":", 1)[1], weights, spec, device)
        card = CARDS[name]
        assert card.open_clip_arch is not None
        return load_open_clip(card.open_clip_arch, weights or card.default_weights, spec, device, name=card.name)
    if name in CARDS:
        return build_eva_clip(CARDS[name], weights, spec, device, devices=devices, max_memory=max_memory,
                              allow_missing=allow_missing, offload_dir=offload_dir, batch_size=batch_size,
                              progress=progress)
    if name in model_loaders:
        if big or spec.quantized:
            raise ModelLoadError(f"{name}: the big-model options are for EVA-CLIP models")
        # plugins get the name, as their contract (load_model(name, weights, precision: str, device)) says
        return model_loaders.get(name)(name=name, weights=weights, precision=spec.name, device=device)
    raise UnknownNameError("model", name, [*CARDS, *model_loaders.names(), "open_clip:ViT-B-32"])
