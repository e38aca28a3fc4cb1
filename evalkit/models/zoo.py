"""Named model cards and the models the paper compares whose weights were never released.

A card names its ``family`` (a registered model family, :mod:`evalkit.models.family`) and an
``arch`` block that family validates: for ``eva_clip`` the architecture config (a file of
``evalkit/models/configs/``, or a config.json path), for ``open_clip`` the architecture and
pretrained tag, for ``uni3d`` the point encoder's size and the card whose text tower scores it.
Everything else on a card is the same for every family: where the released weights live, the
precision they are stored in, and the paper name under which its claims are filed
(results/claims.csv uses the card name).

:data:`CLAIM_ONLY` lists the models whose numbers the paper quotes but whose weights were never
released: ``evalkit list models --all`` shows them with why, so a report can say why their claims
are never verified.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.models.hub import HubFile
from evalkit.models.precision import BF16

DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "demo" / "weights"


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str  # a registered model family: eva_clip, open_clip, uni3d, hf, or a plugin's
    description: str
    #: the family's architecture block (checked by the family when the card is loaded)
    arch: Mapping[str, Any] = field(default_factory=dict)
    paper_name: str = ""
    #: weights shipped with evalkit (a local path); None: the released file (``hub``) or --weights
    weights: str | None = None
    weight_files: tuple[str, ...] = ()
    # Where the released weights live on the Hugging Face Hub, fetched through its cache when no
    # --weights is given. open_clip cards need none: their tag's pretrained config names it.
    hub: HubFile | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    # the precision its released weights are stored in: what `--precision auto` runs on a GPU
    # (the CPU runs fp32, its fastest; evalkit.models.auto)
    release_precision: str = "fp32"
    #: why this card is what it is (a choice between released checkpoints, ...)
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not self.family:
            raise ValueError(f"model card {self.name!r}: family must name a model family")
        if not isinstance(self.arch, Mapping):
            raise ValueError(f"model card {self.name!r}: arch must be a mapping, not {type(self.arch).__name__}")

    @property
    def text_model(self) -> str | None:
        """For a point encoder scored with another model's text tower (``uni3d``): that card."""
        value = self.arch.get("text_model")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ClaimOnlyModel:
    """A model the paper compares whose weights were never released: its claims are listed and
    never verified. ``claims_model`` / ``claims_protocol``: the rows of results/claims.csv that
    are its claims (model name, and protocol where a released card shares the name)."""

    name: str
    paper_name: str
    tables: str
    why: str
    claims_model: str
    claims_protocol: str = ""


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
        arch={"size": size, "text_model": teacher}, tags=("3d",),
    )


class CardTable(dict):
    """The model cards by name. A model plugin's module may add cards of its own when it is
    imported, so a name not here (and any listing) first loads the plugins (the ``evalkit.models``
    entry points): ``--model`` may name a plugin's card as it names evalkit's."""

    def _plugins(self) -> None:
        from evalkit.registry import model_loaders

        model_loaders.names()  # loads the entry points once

    def __contains__(self, name: object) -> bool:
        if not dict.__contains__(self, name):
            self._plugins()
        return dict.__contains__(self, name)

    def __getitem__(self, name: str) -> ModelCard:
        if not dict.__contains__(self, name):
            self._plugins()
        return dict.__getitem__(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def __iter__(self):
        self._plugins()
        return dict.__iter__(self)

    def keys(self):
        self._plugins()
        return dict.keys(self)

    def values(self):
        self._plugins()
        return dict.values(self)

    def items(self):
        self._plugins()
        return dict.items(self)


CARDS: CardTable = CardTable({
    c.name: c
    for c in [
        ModelCard(
            "eva-clip-18b", "eva_clip", "EVA-CLIP-18B, 224px (48 post-norm RMSNorm blocks, width 5120)",
            arch={"config": "EVA-CLIP-18B"}, paper_name="EVA-CLIP-18B",
            weight_files=("EVA_CLIP_18B_psz14_s6B.fp16.pt", "pytorch_model.bin.index.json", "model.safetensors.index.json"),
            # EVA_CLIP_PROTOCOL.md §7.1: the fp16 pickle the paper's numbers come from. Sizes are the
            # Hub listing's (rounded to 0.1 GB except the 8B's); only messages use them.
            hub=HubFile("BAAI/EVA-CLIP-18B", "EVA_CLIP_18B_psz14_s6B.fp16.pt", size=36_700_000_000),
            release_precision="fp16",
        ),
        ModelCard(
            "eva-clip-8b", "eva_clip", "EVA-CLIP-8B, 224px (32 pre-norm RMSNorm blocks, width 4096)",
            arch={"config": "EVA-CLIP-8B"}, paper_name="EVA-CLIP-8B",
            weight_files=("EVA_CLIP_8B_psz14_s9B.pt", "pytorch_model.bin.index.json"),
            hub=HubFile("BAAI/EVA-CLIP-8B", "EVA_CLIP_8B_psz14_s9B.pt", size=32_883_305_721),
        ),
        ModelCard(
            "eva-clip-8b-448", "eva_clip", "EVA-CLIP-8B at 448px",
            arch={"config": "EVA-CLIP-8B-plus"}, paper_name="EVA-CLIP-8B+@448",
            weight_files=("EVA_CLIP_8B_psz14_plus_s0.6B.pt", "pytorch_model.bin.index.json"),
            hub=HubFile("BAAI/EVA-CLIP-8B-448", "EVA_CLIP_8B_psz14_plus_s0.6B.pt", size=32_900_000_000),
        ),
        ModelCard(
            "eva-clip-demo", "eva_clip",
            "tiny EVA-CLIP (18B-style post-norm blocks) trained on ShapeWorld; ships with evalkit",
            arch={"config_file": str(DEMO_WEIGHTS / "config.json")}, paper_name="eva-clip-demo",
            weights=str(DEMO_WEIGHTS), tags=("demo",),
        ),
        # EVA-02-CLIP (arXiv 2303.15389) through open_clip: architecture + pretrained tag, as
        # open_clip's pretrained.py names them (its tags' Hub repos are timm/eva02_*_clip_*).
        ModelCard(
            "eva02-clip-b-16", "open_clip", "EVA-02-CLIP-B/16 (open_clip EVA02-B-16)",
            arch={"arch": "EVA02-B-16", "pretrained": "merged2b_s8b_b131k"}, paper_name="EVA02-CLIP-B/16",
        ),
        ModelCard(
            "eva02-clip-l-14", "open_clip", "EVA-02-CLIP-L/14 (open_clip EVA02-L-14)",
            arch={"arch": "EVA02-L-14", "pretrained": "merged2b_s4b_b131k"}, paper_name="EVA02-CLIP-L/14",
        ),
        ModelCard(
            "eva02-clip-l-14-336", "open_clip", "EVA-02-CLIP-L/14+ at 336px (open_clip EVA02-L-14-336)",
            arch={"arch": "EVA02-L-14-336", "pretrained": "merged2b_s6b_b61k"}, paper_name="EVA02-CLIP-L/14+@336",
        ),
        ModelCard(
            "eva02-clip-e-14", "open_clip", "EVA-02-CLIP-E/14 (open_clip EVA02-E-14)",
            arch={"arch": "EVA02-E-14", "pretrained": "laion2b_s4b_b115k"}, paper_name="EVA02-CLIP-E/14",
            note="EVA-CLIP-18B's tables compare E/14+ (card eva02-clip-e-14-plus, also Uni3D's teacher); this "
                 "is the plain E/14 (LAION-2B, 4B samples) whose claims (ImageNet-1K 81.9, COCO R@5 74.7) "
                 "come from the EVA-CLIP paper's model card (arXiv 2303.15389), where E/14 and E/14+ are two "
                 "rows, so each is its own card",
        ),
        ModelCard(
            "eva02-clip-e-14-plus", "open_clip", "EVA-02-CLIP-E/14+ (open_clip EVA02-E-14-plus)",
            arch={"arch": "EVA02-E-14-plus", "pretrained": "laion2b_s9b_b144k"}, paper_name="EVA-02-CLIP-E/14+",
            note="the E/14 that EVA-CLIP-18B's tables compare (Tables 2-8: 5.0B parameters, LAION-2B, 9B samples)",
        ),
        ModelCard(
            "eva01-clip-g-14", "open_clip", "EVA-01-CLIP-g/14 (open_clip EVA01-g-14)",
            arch={"arch": "EVA01-g-14", "pretrained": "laion400m_s11b_b41k"}, paper_name="EVA-01-CLIP-g/14",
        ),
        ModelCard(
            "eva01-clip-g-14-plus", "open_clip", "EVA-01-CLIP-g/14+ (open_clip EVA01-g-14-plus)",
            arch={"arch": "EVA01-g-14-plus", "pretrained": "merged2b_s11b_b114k"}, paper_name="EVA-01-CLIP-g/14+",
        ),
        ModelCard(
            "openclip-bigg-14", "open_clip", "OpenCLIP ViT-bigG/14 trained on LAION-2B",
            arch={"arch": "ViT-bigG-14", "pretrained": "laion2b_s39b_b160k"}, paper_name="OpenCLIP-G/14",
        ),
        ModelCard(
            "dfn5b-clip-h-14", "open_clip", "DFN5B-CLIP ViT-H/14 at 224px",
            arch={"arch": "ViT-H-14-quickgelu", "pretrained": "dfn5b"}, paper_name="DFN5B-CLIP-H/14@224",
        ),
        ModelCard(
            "dfn5b-clip-h-14-378", "open_clip", "DFN5B-CLIP ViT-H/14 at 378px",
            arch={"arch": "ViT-H-14-378-quickgelu", "pretrained": "dfn5b"}, paper_name="DFN5B-CLIP-H/14+@378",
        ),
        # Hugging Face models (evalkit.models.hf): transformers' classes, the authors' processors.
        # Table 6a's two "(reported)" SigLIP-SO rows are open_clip's published zero-shot results
        # (docs/openclip_classification_results.csv) of the two released So400m/14 checkpoints:
        # ViT-SO400M-14-SigLIP (224 px) gives IN-1K 82.03, IN-A 71.85, IN-R 95.06, IN-V2 76.07,
        # Sketch 74.02, ObjectNet 70.60, the "SigLIP-SO" row to the digit; the 384 px one gives
        # 83.08, 82.47, 95.75, 77.17, 74.54, 76.95, the "SigLIP-SO+" row (IN-1K printed 83.0).
        ModelCard(
            "siglip-so400m", "hf", "SigLIP So400m/14 at 224px (google/siglip-so400m-patch14-224; text length 16)",
            arch={"repo": "google/siglip-so400m-patch14-224"}, paper_name="SigLIP-SO400M(reported)",
            note="Table 6a's 'SigLIP-SO (reported)' row is this 224px checkpoint: its six numbers are open_clip's "
                 "published results for ViT-SO400M-14-SigLIP (webli) to the digit, while the 384px checkpoint's "
                 "are the 'SigLIP-SO+' row (card siglip-so400m-384); results/claims.csv files the first row here",
        ),
        ModelCard(
            "siglip-so400m-384", "hf", "SigLIP So400m/14 at 384px (google/siglip-so400m-patch14-384)",
            arch={"repo": "google/siglip-so400m-patch14-384"}, paper_name="SigLIP-SO400M+(reported)",
            note="Table 6a's 'SigLIP-SO+ (reported)' row: open_clip's published results for "
                 "ViT-SO400M-14-SigLIP-384 round to it (IN-1K 83.08, printed 83.0)",
        ),
        ModelCard(
            "internvl-c", "hf", "InternVL-C (InternVL-14B-224px's contrastive head; runs its repository's code)",
            arch={"repo": "OpenGVLab/InternVL-14B-224px", "remote_code": True}, paper_name="InternVL-C",
            # its model card loads it in bfloat16
            release_precision=BF16,
            note="the repository's own modelling code runs (trust_remote_code), taken only from the local Hugging "
                 "Face cache: fetch the repository there first (hf download OpenGVLab/InternVL-14B-224px)",
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
})


CLAIM_ONLY: dict[str, ClaimOnlyModel] = {
    m.name: m
    for m in [
        ClaimOnlyModel(
            "basic-l", "BASIC-L(reported)", "Tables 6a, 6b",
            "BASIC-L's weights were never released; the paper quotes the numbers its authors reported",
            claims_model="basic-l",
        ),
        ClaimOnlyModel(
            "eva-clip-18b-336", "EVA-CLIP-18B+@336", "Table 10",
            "no 336px EVA-CLIP-18B was released (BAAI/EVA-CLIP-18B is the 224px model, and BAAI's "
            "model_configs hold no 336px config); its claims are filed under eva-clip-18b, protocol 336px",
            claims_model="eva-clip-18b", claims_protocol="336px",
        ),
        ClaimOnlyModel(
            "eva-clip-18b-no-video", "EVA-CLIP-18B(w/o video data)", "Table 9",
            "the ablation trained without the Merged-Video data was never released (the released "
            "EVA-CLIP-18B is the 'w/ video data' row)",
            claims_model="eva-clip-18b-no-video",
        ),
    ]
}


def claim_only(model: str, protocol: str = "") -> ClaimOnlyModel | None:
    """The never-released model whose claims are filed as ``model`` (and ``protocol``), or None."""
    for m in CLAIM_ONLY.values():
        if m.claims_model == model and (not m.claims_protocol or m.claims_protocol == protocol):
            return m
    return None
