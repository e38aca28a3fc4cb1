"""Hugging Face transformers models as Encoders: ``--model hf:ORG/NAME`` or ``hf:/path/to/folder``.

The ``hf`` model family evaluates a model through transformers' own classes and the
preprocessing its authors ship with it, so evalkit's numbers are those of the authors' pipeline:

* ``CLIPModel`` and ``SiglipModel`` (SigLIP, and the fixed-resolution SigLIP 2 checkpoints,
  which are ``SiglipModel`` too). Features are ``get_image_features`` / ``get_text_features``.
  SigLIP 2's NaFlex checkpoints (``Siglip2Model``: variable resolution, patch sequences with
  their own masks) are refused with a one-line error.
* InternVL-C (``OpenGVLab/InternVL-14B-224px``), whose modelling code lives in its repository
  (``trust_remote_code``). That code is run only from the local Hugging Face cache (or a local
  folder): evalkit never downloads code. A repository whose code is missing fails in one line
  naming the repository and the files that are missing.

Images go through the model's own image processor (``AutoImageProcessor``), carried by the
image tower (:class:`~evalkit.models.encoder.ImageInput` ``processor``); the image view uses it
unchanged. Text goes through the model's tokenizer as its authors use it, recorded in
``arch["text_handling"]`` (so in the fingerprint and in every result's provenance):

* SigLIP: padded to the length its text tower was trained with (``max_position_embeddings``:
  64, but 16 for ``siglip-so400m-patch14-224``), no attention mask: big_vision's towers attend
  to the padding and pool the last position. (transformers 5's ``SiglipTokenizer`` returns an
  attention mask and its zero-shot pipeline passes it on, which changes the features; evalkit
  follows the authors.) ``SiglipTokenizer`` applies big_vision's text canonicalisation
  (lower-case, punctuation removed, whitespace collapsed).
* CLIP: its tokenizer, padded to 77 with the attention mask that marks the prompt. The tower is
  causal and pooled at the first EOT, so whatever follows EOT is never seen: it is written as 0,
  which lets evalkit length-sort prompts and cut each batch to its longest (``causal_text``).
* InternVL-C: the model card's recipe: ``summarize:`` before every prompt, LLaMA's tokenizer
  with EOS appended, padded with 0 to 80 tokens.

Weights come from the Hugging Face cache (downloaded into it when the Hub is reachable and
``HF_HUB_OFFLINE`` is not set), or from a folder written by ``save_pretrained``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.errors import one_line
from evalkit.models.family import LoadOptions, ModelFamily, check_keys
from evalkit.models.hub import HubFile, ModelLoadError, find_cached, hub_cache_dir, hub_offline, locate
from evalkit.models.precision import DEFAULT_PRECISION, Precision, parse_precision
from evalkit.registry import model_loaders

if TYPE_CHECKING:
    import torch

    from evalkit.models.encoder import Encoder
    from evalkit.models.zoo import ModelCard

PREFIX = "hf:"

#: model_type (config.json) -> the transformers class evalkit evaluates it with
SUPPORTED = {"clip": "CLIPModel", "siglip": "SiglipModel"}

#: remote-code architectures evalkit knows how to call (config.json ``architectures``)
INTERNVL = "InternVLModel"

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.([\w.]*)\s+import|^\s*import\s+\.(\w+)", re.MULTILINE)


@dataclass(frozen=True)
class TextHandling:
    """How prompts become token ids for one model, as its authors do it (recorded in results)."""

    tokenizer: str  #: the tokenizer class
    padding: str  #: "max_length": every prompt padded to ``max_length``
    max_length: int
    attention_mask: bool  #: whether the text tower is given a mask over the padding
    canonicalize: str  #: what the tokenizer does to the text before splitting it ("none" when nothing)
    prefix: str = ""  #: put before every prompt (InternVL-C: "summarize:")
    after_eos: str = "pad token"  #: what fills the positions after EOS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class HfTokenizer:
    """Callable like evalkit's tokenizers: prompts -> (N, max_length) int64 token ids, tokenised
    as :class:`TextHandling` says. ``zero_after_eos``: positions after the prompt are written as 0
    (a causal tower never sees them; evalkit reads trailing 0s as padding)."""

    def __init__(self, tokenizer: Any, handling: TextHandling, *, zero_after_eos: bool = False) -> None:
        self.tokenizer = tokenizer
        self.handling = handling
        self.zero_after_eos = zero_after_eos

    def _texts(self, texts: str | Sequence[str]) -> list[str]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return [self.handling.prefix + t for t in texts]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        import torch

        texts = self._texts(texts)
        n = self.handling.max_length
        if not texts:
            return torch.zeros(0, n, dtype=torch.long)
        enc = self.tokenizer(texts, padding="max_length", max_length=n, truncation=True, return_attention_mask=True)
        ids = torch.tensor(enc["input_ids"], dtype=torch.long)
        if self.zero_after_eos:
            ids = ids * torch.tensor(enc["attention_mask"], dtype=torch.long)
        return ids

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many prompts are longer than ``max_length`` tokens (special tokens included): cut."""
        texts = self._texts(texts)
        if not texts:
            return 0
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]
        return sum(n > self.handling.max_length for n in lengths)


class HfImageProcessor:
    """A model's own image processor as evalkit's image tower takes it: one PIL image -> its
    normalised (3, H, W) float tensor, exactly what the processor gives transformers' pipelines."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Any) -> torch.Tensor:
        return self.processor(images=[image], return_tensors="pt")["pixel_values"][0]

    @property
    def identity(self) -> str:
        """The processor class and a digest of every setting it has: stable, and different for any
        processor that would give other pixels."""
        settings = {k: v for k, v in self.processor.to_dict().items() if k not in ("processor_class",)}
        blob = json.dumps(settings, sort_keys=True, default=str)
        return f"{type(self.processor).__name__}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


# -- where the model is --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    path: str  #: what from_pretrained reads: a folder, or a repository id
    repo_id: str | None  #: the Hub repository, when there is one
    config: dict[str, Any]
    provenance: str  #: a local folder, or hf://REPO@COMMIT
    cached_folder: Path | None = None  #: the cache snapshot holding config.json, when found there


def strip_prefix(ref: str) -> str:
    return ref[len(PREFIX):] if ref.startswith(PREFIX) else ref


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", ".", "~")) or ref.count("/") != 1 or "\\" in ref


def _resolve(target: str, label: str, *, remote_code: bool) -> _Source:
    """The folder or Hub repository ``target`` names, with its config.json read."""
    folder = Path(target).expanduser()
    if folder.is_dir():
        config = folder / "config.json"
        if not config.is_file():
            raise ModelLoadError(f"{label}: {folder} has no config.json (a folder written by save_pretrained has one)")
        return _Source(str(folder.resolve()), None, _read_json(config, label), str(folder.resolve()))
    if _looks_like_path(target) or not _REPO_ID.match(target):
        raise ModelLoadError(f"{label}: {target} is neither a folder nor a Hugging Face repository id (ORG/NAME)")
    repo = target
    found = find_cached(HubFile(repo, "config.json"))
    if found is None and remote_code:
        raise _missing_code(label, repo, ["config.json", "the model's code (*.py)"])
    if found is None:
        # config.json only (a few kB): the Hub is asked only when HF_HUB_OFFLINE is not set
        found = locate([HubFile(repo, "config.json")], name=label)
    config = _read_json(found.path, label)
    return _Source(repo, repo, config, found.uri.rsplit("/config.json", 1)[0], found.path.parent)


def _read_json(path: Path, label: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{label}: cannot read {path}: {one_line(e)}") from e


def _missing_code(label: str, repo: str, missing: Sequence[str]) -> ModelLoadError:
    return ModelLoadError(
        f"{label}: {repo} runs its repository's own code (trust_remote_code), which evalkit takes only from the "
        f"local Hugging Face cache {hub_cache_dir()}, and {', '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not there; after reading that code, fetch the repository into "
        f"the cache (hf download {repo}) or pass --weights /path/to/a/local/copy"
    )


def _code_files(config: dict[str, Any], label: str) -> list[str]:
    """The Python files ``config.json``'s ``auto_map`` names (module.Class -> module.py)."""
    files: list[str] = []
    for ref in (config.get("auto_map") or {}).values():
        for item in ref if isinstance(ref, list) else [ref]:
            if not item:
                continue
            if "--" in item:  # code in another repository: never fetched
                raise ModelLoadError(f"{label}: auto_map points at code in another repository ({item}); "
                                     f"evalkit runs remote code only from the model's own folder")
            name = item.rsplit(".", 1)[0].replace(".", "/") + ".py"
            if name not in files:
                files.append(name)
    return files


def _check_remote_code(source: _Source, label: str) -> Path:
    """The local folder holding the model's code and everything it imports relatively; a
    one-line error naming what the cache lacks."""
    files = _code_files(source.config, label)
    if source.repo_id is None:
        folder = Path(source.path)
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise ModelLoadError(f"{label}: {folder} lacks the model's code: {', '.join(missing)}")
        return folder
    assert source.cached_folder is not None
    folder = source.cached_folder
    seen: set[str] = set()
    missing = []
    todo = list(files)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if find_cached(HubFile(source.repo_id, name)) is None or not (folder / name).is_file():
            missing.append(name)
            continue
        for rel in _RELATIVE_IMPORT.findall((folder / name).read_text(errors="replace")):
            module = next(m for m in rel if m)
            todo.append(str(Path(name).parent / (module.replace(".", "/") + ".py")).lstrip("./"))
    if missing:
        raise _missing_code(label, source.repo_id, sorted(missing))
    return folder


# -- loading ---------------------------------------------------------------------------------------


def _from_pretrained(cls: Any, source: _Source, label: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` from the cache first; from the Hub only when the cache lacks a
    file and HF_HUB_OFFLINE is not set; one line when neither has it."""
    try:
        return cls.from_pretrained(source.path, local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        if source.repo_id is None or hub_offline():
            where = source.path if source.repo_id is None else f"{source.repo_id} (Hugging Face cache {hub_cache_dir()})"
            why = "" if source.repo_id is None else "; HF_HUB_OFFLINE is set, so nothing is downloaded"
            raise ModelLoadError(f"{label}: cannot load {cls.__name__} from {where}: {one_line(e, 240)}{why}") from e
    try:
        return cls.from_pretrained(source.path, **kwargs)
    except Exception as e:
        raise ModelLoadError(f"{label}: cannot load {cls.__name__} from {source.repo_id}: {one_line(e, 240)}; "
                             f"download the repository elsewhere and pass --weights /path/to/its/folder") from e


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` holds the projected features."""
    return out if not hasattr(out, "pooler_output") else out.pooler_output


def _interpolation(processor: Any) -> str:
    resample = getattr(processor, "resample", None)
    name = getattr(resample, "name", str(resample)).lower()
    return name if name in ("bicubic", "bilinear") else "bicubic"


def _size(processor: Any) -> int:
    """The side of the square the processor hands the model."""
    for attr in ("crop_size", "size"):
        value = getattr(processor, attr, None)
        if attr == "crop_size" and not getattr(processor, "do_center_crop", False):
            continue
        if value is None:
            continue
        d = value if isinstance(value, dict) else getattr(value, "__dict__", {}) or dict(value)
        side = d.get("height") or d.get("shortest_edge")
        if side:
            return int(side)
    raise ModelLoadError(f"{type(processor).__name__}: cannot tell the image size it produces")


def _canonicalisation(tokenizer: Any) -> str:
    from transformers import SiglipTokenizer

    if isinstance(tokenizer, SiglipTokenizer):
        lower = "lower-case, " if getattr(tokenizer, "do_lower_case", True) else ""
        return f"big_vision canonicalize_text: {lower}punctuation removed, whitespace collapsed"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    if normalizer is None:
        return "none"
    steps = re.findall(r"\b(NFC|NFD|NFKC|NFKD|Lowercase|Strip|StripAccents|Replace|Prepend|BertNormalizer)\(",
                       repr(normalizer))
    return "tokenizer normalizer: " + ", ".join(steps) if steps else "tokenizer normalizer"


def _cast(model: Any, spec: Precision, device: str) -> Any:
    import torch

    if spec.dtype != torch.float32:  # bf16, fp16 (amp keeps fp32 weights; the Encoder autocasts)
        model = model.to(spec.dtype)
    return model.to(device).eval()


def load_hf(
    ref: str,
    weights: str | None = None,
    precision: str | Precision = DEFAULT_PRECISION,
    device: str = "cpu",
    *,
    name: str | None = None,
    remote_code: bool = False,
) -> Encoder:
    """``ref`` (``hf:ORG/NAME``, ``ORG/NAME`` or a folder) as an Encoder; ``weights`` (a folder or
    repository id) overrides where the model is read from; ``name`` labels it (a card's name);
    ``remote_code``: the model runs its repository's code, so nothing is fetched before the
    cache is checked. fp32, bf16, fp16 and amp; int8/int4 are refused."""
    ref = strip_prefix(ref)
    label = name or f"{PREFIX}{ref}"
    spec = parse_precision(precision)
    if spec.quantized:
        raise ModelLoadError(f"{label}: --precision {spec.name} is for EVA-CLIP models; Hugging Face models run at "
                             f"fp32, bf16, fp16 or amp")
    if not ref and not weights:
        raise ModelLoadError("--model hf: needs a model: hf:ORG/NAME or hf:/path/to/a/save_pretrained/folder")
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        raise ModelLoadError(f"{label}: Hugging Face models need transformers: pip install 'evalkit[hf]'") from e
    source = _resolve(weights or ref, label, remote_code=remote_code)
    model_type = source.config.get("model_type")
    if source.config.get("auto_map") and model_type not in SUPPORTED:
        return _load_internvl(source, label, spec, device, weights or ref)
    if model_type == "siglip2":
        raise ModelLoadError(f"{label}: Siglip2Model (SigLIP 2 NaFlex: variable resolution) is not supported; the "
                             f"fixed-resolution SigLIP 2 checkpoints (google/siglip2-so400m-patch14-384, ...) "
                             f"load as SiglipModel and are")
    if model_type not in SUPPORTED:
        raise ModelLoadError(f"{label}: model_type {model_type!r} is not a CLIP-style model evalkit evaluates through "
                             f"transformers (supported: {', '.join(sorted(SUPPORTED))})")
    return _load_dual_encoder(source, label, spec, device, model_type, weights or ref)


# The towers: functions of the model they run on, bound to it when the Encoder is built.


def _image_features(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    return _features(model.get_image_features(pixel_values=pixels))


def _siglip_text(model: Any, ids: torch.Tensor) -> torch.Tensor:
    # big_vision: no mask; the tower attends to the padding and pools the last position
    return _features(model.get_text_features(input_ids=ids))


def _clip_text(model: Any, ids: torch.Tensor, *, eos_id: int) -> torch.Tensor:
    """CLIP's text features with the mask its tokenizer gives (the prompt up to and including its
    first EOT), for a batch of any width (evalkit cuts batches of a causal tower)."""
    import torch

    is_eos = ids == eos_id
    last = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), torch.full_like(ids[:, 0], ids.shape[1] - 1))
    mask = (torch.arange(ids.shape[1], device=ids.device)[None, :] <= last[:, None]).long()
    return _features(model.get_text_features(input_ids=ids, attention_mask=mask))


def _internvl_image(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    return model.encode_image(pixels, mode="InternVL-C")


def _internvl_text(model: Any, ids: torch.Tensor) -> torch.Tensor:
    return model.encode_text(ids)


def _image_input(processor: HfImageProcessor) -> Any:
    from evalkit.models.encoder import ImageInput

    proc = processor.processor
    return ImageInput(_size(proc), tuple(proc.image_mean), tuple(proc.image_std), _interpolation(proc),
                      processor=processor, processor_id=processor.identity)


def _load_dual_encoder(source: _Source, label: str, spec: Precision, device: str, model_type: str,
                       given: str) -> Encoder:
    import torch
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    from evalkit.models.encoder import Encoder, Tower, state_dict_digest, weights_label

    cls = getattr(transformers, SUPPORTED[model_type])
    model = _cast(_from_pretrained(cls, source, label, dtype=torch.float32), spec, device)
    processor = HfImageProcessor(_from_pretrained(AutoImageProcessor, source, label))
    tokenizer = _from_pretrained(AutoTokenizer, source, label)
    max_length = int(model.config.text_config.max_position_embeddings)  # the length its text tower was trained with
    siglip = model_type == "siglip"
    handling = TextHandling(
        tokenizer=type(tokenizer).__name__, padding="max_length", max_length=max_length,
        attention_mask=not siglip, canonicalize=_canonicalisation(tokenizer),
        after_eos="pad token" if siglip else "0 (unseen by the causal tower)",
    )
    # CLIP projects to projection_dim; SigLIP's attention-pooling head keeps the vision width
    embed_dim = int(getattr(model.config, "projection_dim", None) or model.config.vision_config.hidden_size)
    return Encoder(
        name=label,
        model=model,
        tokenizer=HfTokenizer(tokenizer, handling, zero_after_eos=not siglip),
        embed_dim=embed_dim,
        causal_text=not siglip,
        towers={"image": Tower(functools.partial(_image_features, model), _image_input(processor))},
        _text_fn=functools.partial(_siglip_text, model) if siglip
        else functools.partial(_clip_text, model, eos_id=int(tokenizer.eos_token_id)),
        weights=source.provenance,
        pretrained_label=source.repo_id or weights_label(given),
        precision=spec.name,
        device=device,
        arch={"family": "hf", "class": cls.__name__, "model_type": model_type,
              "text_handling": handling.as_dict(), "image_processor": processor.identity},
        weights_digest=state_dict_digest(model),
        share_text_prefix=False,
    )


def _load_internvl(source: _Source, label: str, spec: Precision, device: str, given: str) -> Encoder:
    """InternVL-C (InternVL-14B-224px's contrastive head), with its repository's own code, read
    only from the local cache or folder. Its recipe as its model card gives it: the CLIP image
    processor of the repository, ``encode_image(pixels, mode="InternVL-C")``, and prompts
    prefixed "summarize:", tokenised by LLaMA's tokenizer with EOS appended and padded with 0 to
    80 tokens, through ``encode_text``."""
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from evalkit.models.encoder import Encoder, Tower, state_dict_digest, weights_label

    if INTERNVL not in (source.config.get("architectures") or []):
        raise ModelLoadError(f"{label}: a model with its own code ({', '.join(source.config.get('architectures') or [])}"
                             f") is not one evalkit knows how to call; it evaluates {INTERNVL} (InternVL-C)")
    folder = _check_remote_code(source, label)
    local = _Source(str(folder), None, source.config, source.provenance)
    model = _cast(_from_pretrained(AutoModel, local, label, dtype=torch.float32, trust_remote_code=True), spec, device)
    for method in ("encode_image", "encode_text"):
        if not callable(getattr(model, method, None)):
            raise ModelLoadError(f"{label}: its {type(model).__name__} has no {method}(); not the InternVL-C code "
                                 f"evalkit knows")
    processor = HfImageProcessor(_from_pretrained(AutoImageProcessor, local, label))
    tokenizer = _from_pretrained(AutoTokenizer, local, label, use_fast=False, add_eos_token=True)
    tokenizer.pad_token_id = 0
    handling = TextHandling(tokenizer=type(tokenizer).__name__, padding="max_length", max_length=80,
                            attention_mask=False, canonicalize="none", prefix="summarize:", after_eos="0")
    image_input = _image_input(processor)
    embed_dim = int(source.config.get("clip_embed_dim") or _internvl_image(
        model, torch.zeros(1, 3, image_input.size, image_input.size, device=device, dtype=spec.dtype)).shape[-1])
    return Encoder(
        name=label, model=model, tokenizer=HfTokenizer(tokenizer, handling), embed_dim=embed_dim,
        # its text tower's pooling lives in the repository's code: full-length batches, never cut
        causal_text=False,
        towers={"image": Tower(functools.partial(_internvl_image, model), image_input)},
        _text_fn=functools.partial(_internvl_text, model),
        weights=source.provenance, pretrained_label=source.repo_id or weights_label(given),
        precision=spec.name, device=device,
        arch={"family": "hf", "class": type(model).__name__, "model_type": source.config.get("model_type"),
              "mode": "InternVL-C", "text_handling": handling.as_dict(), "image_processor": processor.identity},
        weights_digest=state_dict_digest(model), share_text_prefix=False,
    )


class HfFamily(ModelFamily):
    """The ``hf`` model family: ``hf:ORG/NAME`` / ``hf:/path`` names, and cards whose ``arch`` is
    ``{"repo": ORG/NAME}`` (``remote_code: true`` for a repository that runs its own code)."""

    name = "hf"
    runs = "a Hugging Face model"
    ref_form = "hf:ORG/NAME"
    ref_help = "a transformers CLIPModel / SiglipModel: a Hub repository (its cache) or a save_pretrained folder"

    def check_arch(self, card: ModelCard) -> None:
        check_keys(card, card.arch, ("repo",), ("remote_code",), types={"repo": str, "remote_code": bool})

    def load_card(self, card: ModelCard, weights: str | None, precision: Precision, device: str,
                  options: LoadOptions) -> Encoder:
        return load_hf(card.arch["repo"], weights, precision, device, name=card.name,
                       remote_code=bool(card.arch.get("remote_code", False)))

    def load_ref(self, ref: str, weights: str | None, precision: Precision, device: str,
                 options: LoadOptions) -> Encoder:
        return load_hf(ref, weights, precision, device)


model_loaders.add("hf", HfFamily())
