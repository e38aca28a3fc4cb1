"""Uni3D's point-cloud encoder (Zhou et al., ICLR 2024; github.com/baaivision/Uni3D, MIT), in
torch + timm, loading the released checkpoints strictly.

Architecture (``models/point_encoder.py``): a cloud (B, N, 6) of xyz + rgb is cut into
``num_group`` = 512 patches: farthest-point-sampled centres, each with its ``group_size`` = 64
nearest points (:mod:`evalkit.models.pointops`), re-centred on the centre and with their colour
(6-d). A mini-PointNet (``encoder``: Conv1d 6→128, BN, ReLU, Conv1d 128→256, max-pool, the global
feature concatenated to each point's (512), Conv1d 512→512, BN, ReLU, Conv1d 512→``pc_encoder_dim``,
max-pool) turns a patch into one token; ``encoder2trans`` maps it to the transformer width; a
position MLP (3→128→width, GELU) of the centre is added, and a CLS token with its own position.
The transformer is a timm EVA model of which only ``pos_drop``, ``blocks``, ``norm`` and
``fc_norm`` are used, as Uni3D does (no patch embedding, no rotary embedding: Uni3D calls the
blocks without it). Output: ``fc_norm(norm(x[:, 0]))`` → ``trans2embed`` (width → embed_dim),
unnormalised, in the space of Uni3D's teacher, open_clip ``EVA02-E-14-plus``
(``laion2b_s9b_b144k``, embed 1024).

The released checkpoints (``BAAI/Uni3D``, ``modelzoo/uni3d-{ti,s,b,l,g}/model.pt``) are DeepSpeed
files: the weights under ``'module'`` (a ``module.`` prefix is stripped when present, as Uni3D's
``main.py::test_zeroshot_3d`` does), keyed ``point_encoder.…`` plus ``logit_scale``, and holding
the whole timm model (its unused ``cls_token``, ``pos_embed``, ``patch_embed``, ``head`` too).
The five timm models have the same state-dict keys and shapes in timm 0.9.7 (what Uni3D used)
and timm 1.0.31, and their blocks give bit-identical outputs from the same weights (checked when
this was written); a later timm that renames a parameter fails the strict load by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from evalkit.errors import OptionError
from evalkit.models.checkpoint import (
    CheckpointError,
    check_fits,
    load_state_dict_strict,
    read_checkpoint_file,
    unwrap_state_dict,
)
from evalkit.models.pointops import farthest_point_sample, gather_points, knn_group, pc_norm, resample

__all__ = [
    "Uni3DConfig",
    "UNI3D_SIZES",
    "UNI3D_HUB_REPO",
    "UNI3D_HUB_FILES",
    "UNUSED_TIMM_KEYS",
    "NO_COLOUR",
    "uni3d_config",
    "PatchEncoder",
    "Uni3DPointEncoder",
    "Uni3DLoadReport",
    "uni3d_state_dict",
    "load_uni3d_checkpoint",
    "prepare_points",
]

#: Colour given to clouds without one: Uni3D's ScanObjectNN loader uses ``ones * 0.4`` and its
#: training drops colour to 0.4 half the time; ModelNet's files store a constant 100 (/255 ≈ 0.4).
NO_COLOUR = 0.4
#: The timm model's top-level state-dict entries that Uni3D's checkpoints hold but its forward
#: never uses; they are read past (not loaded), every other key must fit.
UNUSED_TIMM_KEYS = ("cls_token", "pos_embed", "patch_embed", "head")

UNI3D_HUB_REPO = "BAAI/Uni3D"
#: Released point encoders per size (the README's model zoo; -no-lvis: trained without LVIS).
UNI3D_HUB_FILES = {
    "tiny": "modelzoo/uni3d-ti/model.pt",
    "small": "modelzoo/uni3d-s/model.pt",
    "base": "modelzoo/uni3d-b/model.pt",
    "large": "modelzoo/uni3d-l/model.pt",
    "giant": "modelzoo/uni3d-g/model.pt",
}


@dataclass(frozen=True)
class Uni3DConfig:
    """One Uni3D point encoder. ``timm_model`` gives the block type (EVA-02 tiny/small: fused qkv
    and a GLU MLP; base/large: separate q/k/v and a normalised SwiGLU; giant: EVA-01, GELU MLP);
    ``width``, ``depth`` and ``heads`` are passed to timm, so a smaller test model of the same kind
    is only another config."""

    name: str
    timm_model: str
    width: int
    depth: int
    heads: int
    embed_dim: int = 1024
    num_group: int = 512
    group_size: int = 64
    pc_encoder_dim: int = 512
    #: points per cloud at evaluation (``scripts/inference.sh --npoints 10000``)
    npoints: int = 10000

    @property
    def label(self) -> str:
        return f"Uni3D-{self.name}"


# timm model names from scripts/inference.sh (giant, large, base) and the tiny/small EVA-02 models
# of the same family; widths, depths and heads are those timm models' own.
UNI3D_SIZES: dict[str, Uni3DConfig] = {
    "tiny": Uni3DConfig("tiny", "eva02_tiny_patch14_224", width=192, depth=12, heads=3),
    "small": Uni3DConfig("small", "eva02_small_patch14_224", width=384, depth=12, heads=6),
    "base": Uni3DConfig("base", "eva02_base_patch14_448", width=768, depth=12, heads=12),
    "large": Uni3DConfig("large", "eva02_large_patch14_448", width=1024, depth=24, heads=16),
    "giant": Uni3DConfig("giant", "eva_giant_patch14_560", width=1408, depth=40, heads=16),
}


def uni3d_config(size: str, **overrides: Any) -> Uni3DConfig:
    """The config of a released size (tiny, small, base, large, giant), with fields replaced."""
    if size not in UNI3D_SIZES:
        raise ValueError(f"unknown Uni3D size {size!r}; choose from {', '.join(UNI3D_SIZES)}")
    return dataclasses.replace(UNI3D_SIZES[size], **overrides)


class PatchEncoder(nn.Module):
    """Uni3D's mini-PointNet: (B, G, K, 6) patches -> (B, G, out_dim) tokens."""

    def __init__(self, out_dim: int = 512) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.first_conv = nn.Sequential(
            nn.Conv1d(6, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, out_dim, 1)
        )

    def forward(self, patches: Tensor) -> Tensor:
        b, g, k, c = patches.shape
        f = self.first_conv(patches.reshape(b * g, k, c).transpose(1, 2))  # (BG, 256, K)
        pooled = f.amax(dim=2, keepdim=True)
        f = self.second_conv(torch.cat([pooled.expand(-1, -1, k), f], dim=1))
        return f.amax(dim=2).reshape(b, g, self.out_dim)


class _Trunk(nn.Module):
    """The parts of a timm EVA model that Uni3D runs (same attribute names, so same keys)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.pos_drop = model.pos_drop
        self.blocks = model.blocks
        self.norm = model.norm
        self.fc_norm = model.fc_norm


def _timm_trunk(cfg: Uni3DConfig) -> _Trunk:
    import timm

    model = timm.create_model(cfg.timm_model, pretrained=False, num_classes=0, embed_dim=cfg.width,
                              depth=cfg.depth, num_heads=cfg.heads)
    heads = getattr(model.blocks[0].attn, "num_heads", cfg.heads) if len(model.blocks) else cfg.heads
    if (model.embed_dim, len(model.blocks), heads) != (cfg.width, cfg.depth, cfg.heads):
        raise ValueError(f"{cfg.label}: timm built {cfg.timm_model} with width {model.embed_dim}, depth "
                         f"{len(model.blocks)}, heads {heads}; the config asks {cfg.width}, {cfg.depth}, "
                         f"{cfg.heads}")
    return _Trunk(model)


class Uni3DPointEncoder(nn.Module):
    """Uni3D's ``PointcloudEncoder``: (B, N, 6) prepared clouds -> (B, embed_dim) features.

    Parameter names are those of Uni3D's checkpoints without the ``point_encoder.`` prefix.
    Builds on the ``meta`` device (``with torch.device("meta"): ...``) for shapes and counts.
    """

    def __init__(self, config: Uni3DConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.encoder = PatchEncoder(config.pc_encoder_dim)
        self.encoder2trans = nn.Linear(config.pc_encoder_dim, w)
        self.trans2embed = nn.Linear(w, config.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, w))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, w))
        self.visual = _timm_trunk(config)
        self.eval()

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def group(self, xyz: Tensor, rgb: Tensor) -> tuple[Tensor, Tensor]:
        """Uni3D's ``Group``: patch centres (B, G, 3) and patch features (B, G, K, 6) (xyz
        re-centred on the patch centre, then colour). Neighbours are found in float32."""
        cfg = self.config
        pts = xyz.float()
        centres = gather_points(pts, farthest_point_sample(pts, cfg.num_group))
        idx = knn_group(pts, centres, cfg.group_size)
        local = gather_points(pts, idx) - centres.unsqueeze(2)
        colour = gather_points(rgb.float(), idx)
        return centres, torch.cat([local, colour], dim=-1)

    def forward(self, points: Tensor) -> Tensor:
        cfg = self.config
        if points.ndim != 3 or points.shape[-1] not in (3, 6):
            raise ValueError(f"{cfg.label}: points must be (B, N, 6) xyz+rgb or (B, N, 3) xyz; "
                             f"got {tuple(points.shape)}")
        n = points.shape[1]
        need = max(cfg.num_group, cfg.group_size)
        if n < need:
            raise OptionError(f"{cfg.label}: a cloud of {n} points is too small: {cfg.num_group} patch "
                              f"centres of {cfg.group_size} points need at least {need} (resample it first: "
                              f"view.npoints)")
        xyz = points[..., :3]
        rgb = points[..., 3:] if points.shape[-1] == 6 else torch.full_like(xyz, NO_COLOUR)
        # Neighbour search in reduced precision would pick other patches: no autocast here.
        dev = points.device.type
        no_autocast = torch.autocast(dev, enabled=False) if torch.amp.is_autocast_available(dev) else nullcontext()
        with no_autocast:
            centres, patches = self.group(xyz, rgb)
        dtype = self.encoder2trans.weight.dtype
        tokens = self.encoder2trans(self.encoder(patches.to(dtype)))
        b = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(centres.to(dtype))], dim=1)
        x = self.visual.pos_drop(x + pos)
        for block in self.visual.blocks:
            x = block(x)
        x = self.visual.fc_norm(self.visual.norm(x[:, 0]))
        return self.trans2embed(x)

    def encode_points(self, points: Tensor) -> Tensor:
        """(B, N, 6) clouds from :func:`prepare_points` -> (B, embed_dim), unnormalised."""
        return self(points)


# ----------------------------------------------------------------------------------------------
# checkpoints


@dataclass
class Uni3DLoadReport:
    """What :func:`load_uni3d_checkpoint` did: tensors loaded, keys read past, stored dtypes."""

    source: str
    n_loaded: int
    ignored: list[str] = field(default_factory=list)
    stored_dtypes: dict[str, int] = field(default_factory=dict)
    assigned: bool = False


def _is_unused(key: str) -> bool:
    if not key.startswith("visual."):
        return False
    top = key[len("visual.") :].split(".", 1)[0]
    return top in UNUSED_TIMM_KEYS


def uni3d_state_dict(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Uni3D's checkpoint keys (``point_encoder.…``, ``logit_scale``) -> this encoder's keys, and
    the keys read past: ``logit_scale`` (the 3D-text temperature of training; zero-shot
    classification uses cosine similarity) and the unused timm entries (:data:`UNUSED_TIMM_KEYS`).
    A state dict already in this encoder's layout (no ``point_encoder.`` keys) is taken as is.
    Any other key is kept, so that the strict load names it as unexpected."""
    uni3d_layout = any(k.startswith("point_encoder.") for k in state)
    out: dict[str, Tensor] = {}
    ignored: list[str] = []
    for key, t in state.items():
        if uni3d_layout and key == "logit_scale":
            ignored.append(key)
            continue
        ours = key[len("point_encoder.") :] if uni3d_layout and key.startswith("point_encoder.") else key
        if _is_unused(ours):
            ignored.append(key)
        else:
            out[ours] = t
    return out, ignored


_WIDTH_KEY = "trans2embed.weight"  # (embed_dim, width)


def _size_hint(got: Mapping[str, Tensor], cfg: Uni3DConfig) -> str | None:
    have = got.get(_WIDTH_KEY)
    if have is None or have.ndim != 2 or have.shape[1] == cfg.width:
        return None
    sizes = [s.label for s in UNI3D_SIZES.values() if s.width == have.shape[1]]
    what = f"that of {' / '.join(sizes)}" if sizes else "no released size's"
    return f"the checkpoint's width is {have.shape[1]} ({what}), the model's {cfg.width} ({cfg.label})"


def _materialise_buffers(model: nn.Module) -> None:
    """After a meta-device model took its weights by assignment, the buffers no checkpoint holds
    (timm's non-persistent zero ``k_bias`` of EVA attention) are still on meta: make them, on the
    device of the weights."""
    persistent = set(model.state_dict())
    for mod_name, module in model.named_modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            full = f"{mod_name}.{name}" if mod_name else name
            if full in persistent or buf is None or not buf.is_meta:
                continue
            if name != "k_bias":
                raise CheckpointError(f"{full}: a buffer that no checkpoint holds is still on the meta device; "
                                      "build the model on a real device")
            ref = getattr(module, "q_bias", None)
            if not isinstance(ref, Tensor):
                ref = next(model.parameters())
            module.register_buffer(name, torch.zeros(buf.shape, dtype=ref.dtype, device=ref.device),
                                   persistent=False)


def load_uni3d_checkpoint(
    checkpoint: str | Path | Mapping[str, Any], model: Uni3DPointEncoder
) -> Uni3DLoadReport:
    """Load a Uni3D checkpoint (a path, a loaded DeepSpeed dict, or a state dict) into ``model``.

    Strict: after :func:`uni3d_state_dict`, every key of the model must be there with its shape
    and no other key may be; otherwise one :class:`~evalkit.models.checkpoint.CheckpointError`
    names the missing, unexpected and mis-shaped keys (its ``one_line``: counts, the first of
    each, and the checkpoint's width when it is another size's). Tensors are cast to the model's
    dtype; a ``meta`` model takes them by assignment.
    """
    if isinstance(checkpoint, Mapping):
        source = "<state dict>"
        raw = unwrap_state_dict(checkpoint, source)
    else:
        source = str(checkpoint)
        raw = read_checkpoint_file(checkpoint)
    sd, ignored = uni3d_state_dict(raw)
    cfg = model.config
    expected = {k: t.shape for k, t in model.state_dict().items()}
    try:
        check_fits(expected, {k: t.shape for k, t in sd.items()}, source=source, model_name=cfg.label,
                   resize=False)
    except CheckpointError as e:
        hint = _size_hint(sd, cfg)
        if hint is None:
            raise
        err = CheckpointError(f"{e}\n  {hint}")
        err.one_line = f"{e.one_line or str(e).splitlines()[0]}; {hint}"
        raise err from None
    report = load_state_dict_strict(model, sd, source=source)
    if report.assigned:
        _materialise_buffers(model)
    dtypes: dict[str, int] = {}
    for t in raw.values():
        name = str(t.dtype).removeprefix("torch.")
        dtypes[name] = dtypes.get(name, 0) + 1
    return Uni3DLoadReport(source=source, n_loaded=report.n_loaded, ignored=ignored, stored_dtypes=dtypes,
                           assigned=report.assigned)


# ----------------------------------------------------------------------------------------------
# input


def _as_tensor(a: Any, name: str) -> Tensor:
    t = a if isinstance(a, Tensor) else torch.from_numpy(np.asarray(a))
    if t.ndim != 2 or t.shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3); got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int16, torch.int32, torch.int64)):
        raise ValueError(f"{name} must be numeric; got {t.dtype}")
    t = t.double()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} holds non-finite values (nan or inf)")
    return t


def prepare_points(
    xyz: Any,
    rgb: Any | None = None,
    npoints: int | None = 10000,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, bool]:
    """One cloud as Uni3D evaluates it: (npoints, 6) float32 xyz + rgb, and whether it was resampled.

    ``xyz`` (N, 3) is normalised by :func:`~evalkit.models.pointops.pc_norm` over all N points
    (Uni3D's ``pc_norm``, no axis swap); ``rgb`` (N, 3) must already be in [0, 1] (ModelNet's
    files store 0-255: divide by 255 first); without it every point gets :data:`NO_COLOUR`.

    Then the cloud is brought to ``npoints`` by :func:`~evalkit.models.pointops.resample`
    (xyz and colour together; ``generator`` for the draws). Uni3D's evaluation loaders do not
    resample at all: OpenShape's ModelNet40 and Objaverse-LVIS files hold exactly 10,000 points
    and ScanObjectNN's 2,048 are used as they are. So pass ``npoints`` equal to the data's size
    (2048 for ScanObjectNN), or ``None`` to keep N, to match Uni3D; ``resampled`` says when a
    cloud of another size had to be changed, so the caller can count it.
    """
    p = _as_tensor(xyz, "xyz")
    n = p.shape[0]
    if n == 0:
        raise ValueError("xyz holds no points")
    if rgb is None:
        c = torch.full((n, 3), NO_COLOUR, dtype=torch.float64)
    else:
        c = _as_tensor(rgb, "rgb")
        if c.shape[0] != n:
            raise ValueError(f"rgb has {c.shape[0]} points, xyz has {n}")
        lo, hi = float(c.min()), float(c.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"rgb must be in [0, 1]; got values in [{lo:g}, {hi:g}] (0-255 colour: divide by 255)")
    cloud = torch.cat([pc_norm(p), c], dim=1).float()
    if npoints is None:
        return cloud, False
    return resample(cloud, npoints, generator)
