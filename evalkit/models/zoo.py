"""Named model cards: architecture, expected weight files, preprocessing, and the paper name
under which the claims for this model are filed (results/claims.csv uses the card name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.models.hub import HubFile

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "demo" / "weights"


def _eva_cfg(embed: int, layers: int, width: int, postnorm: bool, image_size: int = 224) -> dict[str, Any]:
    # EVA_CLIP_PROTOCOL.md §6.1: BAAI's model_configs/EVA-CLIP-{18B,8B,8B-plus}.json.
    return {
        "embed_dim": embed,
        "vision_cfg": {
            "image_size": image_size, "layers": layers, "width": width, "head_width": 128, "mlp_ratio": 5,
            "patch_size": 14, "qkv_bias": False, "postnorm": postnorm, "use_rms_norm": True,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1280, "heads": 20, "layers": 32},
    }


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str  # "eva_clip", "open_clip" or "uni3d" (a point encoder paired with a text tower)
    description: str
    paper_name: str = ""
    config: dict[str, Any] | None = None  # EVA-CLIP config (BAAI layout)
    config_file: Path | None = None  # ... or a config.json next to the weights
    open_clip_arch: str | None = None
    default_weights: str | None = None  # a path, or an open_clip pretrained tag
    weight_files: tuple[str, ...] = ()
    # Where the released weights live on the Hugging Face Hub, fetched through its cache when no
    # --weights is given. open_clip cards need none: their tag's pretrained config names it.
    hub: HubFile | None = None
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    tags: tuple[str, ...] = field(default_factory=tuple)
    # Uni3D cards: the point encoder's size (tiny, small, base, large, giant) and the card whose
    # text tower scores it (the teacher it was trained toward; --text-model overrides)
    uni3d_size: str | None = None
    text_model: str | None = None
    # the precision its released weights are stored in: what `--precision auto` runs on a GPU
    # (the CPU runs fp32, its fastest; evalkit.models.auto)
    release_precision: str = "fp32"


def _uni3d(name: str, size: str, teacher: str, paper_teacher: str, data: str, hub_dir: str | None,
           mb: float | None = None) -> ModelCard:
    """A Uni3D point encoder card; ``hub_dir``: its folder in BAAI/Uni3D's model zoo, None when the
    checkpoint is not published (Table 8's scaled-teacher rows: --weights needed)."""
    paper_size = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "giant": "g"}[size]
    return ModelCard(
        name, "uni3d",
        f"Uni3D-{paper_size} point encoder ({data} pre-training), paired with the {paper_teacher} text tower",
        paper_name=f"Uni3D-{paper_size}(teacher={paper_teacher};data={data})",
        hub=HubFile("BAAI/Uni3D", f"modelzoo/{hub_dir}/model.pt", size=int(mb * 1e6) if mb else None)
        if hub_dir else None,
        uni3d_size=size, text_model=teacher, tags=("3d",),
    )


CARDS: dict[str, ModelCard] = {
    c.name: c
    for c in [
        ModelCard(
            "eva-clip-18b", "eva_clip", "EVA-CLIP-18B, 224px (48 post-norm RMSNorm blocks, width 5120)",
            paper_name="EVA-CLIP-18B", config=_eva_cfg(1536, 48, 5120, postnorm=True),
            weight_files=("EVA_CLIP_18B_psz14_s6B.fp16.pt", "pytorch_model.bin.index.json", "model.safetensors.index.json"),
            # EVA_CLIP_PROTOCOL.md §7.1: the fp16 pickle the paper's numbers come from. Sizes are the
            # Hub listing's (rounded to 0.1 GB except the 8B's); only messages use them.
            hub=HubFile("BAAI/EVA-CLIP-18B", "EVA_CLIP_18B_psz14_s6B.fp16.pt", size=36_700_000_000),
            release_precision="fp16",
        ),
        ModelCard(
            "eva-clip-8b", "eva_clip", "EVA-CLIP-8B, 224px (32 pre-norm RMSNorm blocks, width 4096)",
            paper_name="EVA-CLIP-8B", config=_eva_cfg(1280, 32, 4096, postnorm=False),
            weight_files=("EVA_CLIP_8B_psz14_s9B.pt", "pytorch_model.bin.index.json"),
            hub=HubFile("BAAI/EVA-CLIP-8B", "EVA_CLIP_8B_psz14_s9B.pt", size=32_883_305_721),
        ),
        ModelCard(
            "eva-clip-8b-448", "eva_clip", "EVA-CLIP-8B at 448px",
            paper_name="EVA-CLIP-8B+@448", config=_eva_cfg(1280, 32, 4096, postnorm=False, image_size=448),
            weight_files=("EVA_CLIP_8B_psz14_plus_s0.6B.pt", "pytorch_model.bin.index.json"),
            hub=HubFile("BAAI/EVA-CLIP-8B-448", "EVA_CLIP_8B_psz14_plus_s0.6B.pt", size=32_900_000_000),
        ),
        ModelCard(
            "eva-clip-demo", "eva_clip",
            "tiny EVA-CLIP (18B-style post-norm blocks) trained on ShapeWorld; ships with evalkit",
            paper_name="eva-clip-demo", config_file=DEMO_WEIGHTS / "config.json",
            default_weights=str(DEMO_WEIGHTS), tags=("demo",),
        ),
        ModelCard(
            "eva02-clip-e-14-plus", "open_clip", "EVA-02-CLIP-E/14+ (open_clip EVA02-E-14-plus)",
            paper_name="EVA-02-CLIP-E/14+", open_clip_arch="EVA02-E-14-plus", default_weights="laion2b_s9b_b144k",
        ),
        ModelCard(
            "eva01-clip-g-14", "open_clip", "EVA-01-CLIP-g/14 (open_clip EVA01-g-14)",
            paper_name="EVA-01-CLIP-g/14", open_clip_arch="EVA01-g-14", default_weights="laion400m_s11b_b41k",
        ),
        ModelCard(
            "eva01-clip-g-14-plus", "open_clip", "EVA-01-CLIP-g/14+ (open_clip EVA01-g-14-plus)",
            paper_name="EVA-01-CLIP-g/14+", open_clip_arch="EVA01-g-14-plus", default_weights="merged2b_s11b_b114k",
        ),
        ModelCard(
            "openclip-bigg-14", "open_clip", "OpenCLIP ViT-bigG/14 trained on LAION-2B",
            paper_name="OpenCLIP-G/14", open_clip_arch="ViT-bigG-14", default_weights="laion2b_s39b_b160k",
        ),
        ModelCard(
            "dfn5b-clip-h-14", "open_clip", "DFN5B-CLIP ViT-H/14 at 224px",
            paper_name="DFN5B-CLIP-H/14@224", open_clip_arch="ViT-H-14-quickgelu", default_weights="dfn5b",
        ),
        ModelCard(
            "dfn5b-clip-h-14-378", "open_clip", "DFN5B-CLIP ViT-H/14 at 378px",
            paper_name="DFN5B-CLIP-H/14+@378", open_clip_arch="ViT-H-14-378-quickgelu", default_weights="dfn5b",
        ),
        # Uni3D (EVA-CLIP-18B Table 8; TASK_PROTOCOLS.md §3): released checkpoints, teacher EVA-02-CLIP-E/14+
        _uni3d("uni3d-ti", "tiny", "eva02-clip-e-14-plus", "EVA-02-CLIP-E/14+", "Ensembled", "uni3d-ti", 12.8),
        _uni3d("uni3d-s", "small", "eva02-clip-e-14-plus", "EVA-02-CLIP-E/14+", "Ensembled", "uni3d-s", 45.7),
        _uni3d("uni3d-b", "base", "eva02-clip-e-14-plus", "EVA-02-CLIP-E/14+", "Ensembled", "uni3d-b", 178),
        _uni3d("uni3d-l", "large", "eva02-clip-e-14-plus", "EVA-02-CLIP-E/14+", "Ensembled", "uni3d-l", 615),
        _uni3d("uni3d-g", "giant", "eva02-clip-e-14-plus", "EVA-02-CLIP-E/14+", "Ensembled", "uni3d-g", 2030),
        _uni3d("uni3d-b-no-lvis", "base", "eva02-clip-e-14-plus", "EVA-02-CLIP-E/14+", "Ensembled-w/o-LVIS",
               "uni3d-b-no-lvis"),
        # Table 8's Uni3D-B trained toward other teachers: not published, --weights needed
        _uni3d("uni3d-b-eva-clip-18b", "base", "eva-clip-18b", "EVA-CLIP-18B", "Ensembled", None),
        _uni3d("uni3d-b-eva-clip-18b-no-lvis", "base", "eva-clip-18b", "EVA-CLIP-18B", "Ensembled-w/o-LVIS", None),
        _uni3d("uni3d-b-eva-clip-8b-no-lvis", "base", "eva-clip-8b", "EVA-CLIP-8B", "Ensembled-w/o-LVIS", None),
        _uni3d("uni3d-b-openclip-g-no-lvis", "base", "openclip-bigg-14", "OpenCLIP-G/14", "Ensembled-w/o-LVIS", None),
    ]
}
