"""The ``hf`` model family (evalkit.models.hf) on tiny random transformers models built offline:
evalkit's features equal transformers' own ``get_image_features`` / ``get_text_features``, a
single-template classification equals transformers' zero-shot image-classification pipeline, an
``evalkit run --model hf:<folder>`` records its text handling, and a remote-code card whose code
is not in the local Hugging Face cache fails in one line. Nothing here touches the network: the
models, tokenizers and image processors are made from configs and saved with save_pretrained."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from fixtures import CLASSNAMES, make_folder, make_image
from PIL import Image

SEQ_WORDS = ("a photo of the red green blue white black grey square circle picture shape small big dark light "
             "this is an image with colour").split()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, which CLIP's BPE vocabulary is keyed by."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def clip_tokenizer():
    """A CLIPTokenizer over a tiny vocabulary: every byte alone and at a word's end, two merges."""
    byte_chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(byte_chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(byte_chars)})
    merges = [("r", "e"), ("re", "d</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # the largest id, as in CLIP (transformers' legacy argmax pooling)
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges)


def siglip_tokenizer(folder: Path):
    """A SiglipTokenizer over a SentencePiece model trained here on a few prompts (as SigLIP's:
    pad = EOS = ``</s>``)."""
    import sentencepiece as spm

    corpus = [" ".join(SEQ_WORDS[i:] + SEQ_WORDS[:i]) for i in range(len(SEQ_WORDS))] * 4
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=buf, vocab_size=80,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, hard_vocab_limit=False, minloglevel=2, num_threads=1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(buf.getvalue())
    return transformers.SiglipTokenizer(str(folder / "spiece.model"))


TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)


def make_clip(folder: Path) -> Path:
    tok = clip_tokenizer()
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **TINY),
        vision_config=dict(image_size=32, patch_size=8, **TINY), projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPModel(cfg).save_pretrained(folder)
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    transformers.CLIPProcessor(image_processor=processor, tokenizer=tok).save_pretrained(folder)
    return folder


def make_siglip(folder: Path) -> Path:
    tok = siglip_tokenizer(folder / "spm")
    cfg = transformers.SiglipConfig(
        text_config=dict(vocab_size=tok.vocab_size, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None, **TINY),
        vision_config=dict(image_size=32, patch_size=8, **TINY))
    torch.manual_seed(0)
    transformers.SiglipModel(cfg).save_pretrained(folder)
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    transformers.SiglipProcessor(image_processor=processor, tokenizer=tok).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {"clip": make_clip(root / "clip"), "siglip": make_siglip(root / "siglip")}


def _load(folder: Path, precision: str = "fp32"):
    from evalkit import models

    return models.load(f"hf:{folder}", precision=precision)


PROMPTS = ["a photo of a red square.", "A Photo of the GREEN circle!", "blue", "a big dark shape, this is an image",
           "grey square picture with colour " * 3]


# -- (1) evalkit's features are transformers' own ------------------------------------------------


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_features_equal_transformers(tiny_models, kind):
    from evalkit.features.embed import encode_texts

    folder = tiny_models[kind]
    enc = _load(folder)
    model = getattr(transformers, {"clip": "CLIPModel", "siglip": "SiglipModel"}[kind]).from_pretrained(folder).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    images = [make_image(i % 6, i, size=40 + 3 * i) for i in range(5)]

    tower = enc.tower("image").input
    ours_img = enc.encode("image", torch.stack([tower.processor(im) for im in images]))
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        theirs_img = model.get_image_features(pixel_values=pixels).pooler_output
        if kind == "clip":  # the model card's way: the tokenizer's padding and mask
            inputs = tokenizer(PROMPTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
            theirs_txt = model.get_text_features(**inputs).pooler_output
        else:  # SigLIP's: padded to its trained length, no mask (big_vision)
            ids = tokenizer(PROMPTS, padding="max_length", max_length=64, return_tensors="pt")["input_ids"]
            theirs_txt = model.get_text_features(input_ids=ids).pooler_output
    assert ours_img.shape == theirs_img.shape == (5, enc.embed_dim)
    torch.testing.assert_close(ours_img, theirs_img, rtol=1e-5, atol=1e-6)
    # through evalkit's text loop: CLIP's prompts length-sorted and cut, SigLIP's full length
    ours_txt = encode_texts(enc, PROMPTS, batch_size=2)
    torch.testing.assert_close(ours_txt, theirs_txt, rtol=1e-5, atol=1e-6)


def test_clip_batches_are_cut_and_padding_is_zero(tiny_models):
    enc = _load(tiny_models["clip"])
    ids = enc.tokenize(PROMPTS)
    assert enc.causal_text and ids.shape[1] == 77
    eot = enc.tokenizer.tokenizer.eos_token_id
    for row in ids:  # one EOT, then nothing but the 0s evalkit reads as padding
        end = int((row == eot).nonzero()[0])
        assert row[end + 1:].eq(0).all() and row[:end + 1].ne(0).all()


def test_siglip_text_is_padded_to_its_trained_length_without_a_mask(tiny_models):
    enc = _load(tiny_models["siglip"])
    handling = enc.arch["text_handling"]
    assert not enc.causal_text and not enc.shared_prefix
    assert handling["max_length"] == 64 and handling["padding"] == "max_length" and not handling["attention_mask"]
    assert "punctuation removed" in handling["canonicalize"]
    ids = enc.tokenize(["A Photo of the GREEN circle!", "a photo of the green circle"])
    assert ids.shape == (2, 64) and torch.equal(ids[0], ids[1])  # canonicalised alike
    # what transformers 5's tokenizer hands its pipeline by default (a mask over the padding)
    # gives other features: evalkit follows the authors, not that
    model = transformers.SiglipModel.from_pretrained(tiny_models["siglip"]).eval()
    tok = transformers.AutoTokenizer.from_pretrained(tiny_models["siglip"])
    masked = tok(PROMPTS, padding="max_length", max_length=64, return_tensors="pt")
    with torch.no_grad():
        with_mask = model.get_text_features(**masked).pooler_output
    assert not torch.allclose(enc.encode_text(enc.tokenize(PROMPTS)), with_mask, atol=1e-3)


def test_truncated_prompts_are_counted_by_the_tokenizer(tiny_models):
    from evalkit.features.embed import truncated_texts

    enc = _load(tiny_models["siglip"])  # padded with EOS (not 0) to 64: only the tokenizer can tell
    long = "grey square picture " * 30
    assert enc.tokenizer.count_truncated([long]) == 1
    assert truncated_texts(enc, [*PROMPTS, long]) == 1


@pytest.mark.parametrize("precision", ["bf16", "amp"])
def test_lower_precisions_stay_close(tiny_models, precision):
    ref, low = _load(tiny_models["clip"]), _load(tiny_models["clip"], precision)
    assert low.precision == precision and low.fingerprint != ref.fingerprint
    ids = ref.tokenize(PROMPTS)
    cos = F.cosine_similarity(ref.encode_text(ids), low.encode_text(ids))
    assert cos.min() > 0.99


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantised_precisions_are_refused(tiny_models, precision):
    from evalkit.models.hf import load_hf
    from evalkit.models.hub import ModelLoadError

    # by the family, before anything is read, and by load_hf itself (its entry point)
    for load in (lambda: _load(tiny_models["clip"], precision), lambda: load_hf(str(tiny_models["clip"]), None, precision)):
        with pytest.raises(ModelLoadError, match=f"--precision {precision}") as e:
            load()
        assert "\n" not in str(e.value)


def test_big_model_options_are_refused(tiny_models):
    from evalkit import models
    from evalkit.models.hub import ModelLoadError

    with pytest.raises(ModelLoadError, match="--offload-dir"):
        models.load(f"hf:{tiny_models['clip']}", options=models.LoadOptions(offload_dir="/tmp/x"))


def test_siglip2_naflex_and_other_models_are_refused(tmp_path):
    from evalkit.models.hub import ModelLoadError

    for model_type, why in (("siglip2", "NaFlex"), ("bert", "not a CLIP-style model")):
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        with pytest.raises(ModelLoadError, match=why):
            _load(folder)


# -- (2) a single-template classification equals transformers' pipeline ---------------------------


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_classification_equals_zero_shot_pipeline(tiny_models, tmp_path, kind):
    from evalkit.api import evaluate

    folder = tiny_models[kind]
    data = make_folder(tmp_path / "imgs", n_per_class=2)
    report = evaluate(model=f"hf:{folder}", tasks=[f"folder:{data}"], output_dir=tmp_path / "out", cache_dir=None,
                      save_predictions=True, num_workers=0, progress=False, device="cpu", precision="fp32")
    assert not report.failures
    (preds_file,) = (tmp_path / "out").rglob("*.predictions.jsonl")
    preds = [json.loads(line) for line in preds_file.read_text().splitlines()]
    classnames = sorted(c.replace(" ", "_") for c in CLASSNAMES)  # the folder source's classes
    labels = [c.replace("_", " ") for c in classnames]

    model = transformers.AutoModel.from_pretrained(folder)
    # SigLIP: its authors' text handling (no attention mask, as transformers 4's SiglipTokenizer
    # gave); transformers 5's tokenizer returns a mask, which its pipeline passes on and ignores
    # tokenizer_kwargs to turn off
    tokenizer = (transformers.AutoTokenizer.from_pretrained(folder, model_input_names=["input_ids"])
                 if kind == "siglip" else None)
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(folder), tokenizer=tokenizer,
                                 device="cpu")
    scale = float(model.logit_scale.detach().exp())
    bias = float(model.logit_bias.detach()) if kind == "siglip" else 0.0
    assert len(preds) == len(CLASSNAMES) * 2
    for rec in preds:
        image = Image.open(data / classnames[rec["label"]] / Path(rec["key"]).name)
        out = pipe(image, candidate_labels=labels, hypothesis_template="a photo of a {}.")
        theirs = {d["label"]: d["score"] for d in out}
        assert labels[rec["top_classes"][0]] == out[0]["label"]  # the same predicted class
        # the pipeline's scores turned back into cosines (evalkit records 100 x cosine, 4 decimals):
        # SigLIP's are sigmoid(scale * cos + bias); CLIP's a softmax over the classes, so only
        # differences of cosines are recoverable (log p_i - log p_j = scale * (cos_i - cos_j))
        cos = torch.tensor(rec["top_scores"], dtype=torch.float64) / 100
        want = torch.tensor([theirs[labels[i]] for i in rec["top_classes"]], dtype=torch.float64)
        if kind == "siglip":
            torch.testing.assert_close(cos, (torch.logit(want) - bias) / scale, rtol=0, atol=2e-6)
        else:
            torch.testing.assert_close(cos - cos[0], (want.log() - want[0].log()) / scale, rtol=0, atol=2e-6)


# -- (3) evalkit run records the text handling -----------------------------------------------------


def test_run_records_text_handling(tiny_models, tmp_path, capsys):
    from evalkit.cli.main import main

    data = make_folder(tmp_path / "imgs", n_per_class=2)
    out = tmp_path / "runs"
    rc = main(["run", "--model", f"hf:{tiny_models['siglip']}", "--tasks", f"folder:{data}", "--output-dir", str(out),
               "--no-cache", "--num-workers", "0", "--device", "cpu", "--precision", "fp32"])
    assert rc == 0, capsys.readouterr().err
    results = [p for p in out.rglob("*.json") if not p.name.endswith(".jsonl")]
    (result,) = [json.loads(p.read_text()) for p in results if "acc1" in p.read_text()]
    handling = _find(result, "text_handling")
    assert handling == {"tokenizer": "SiglipTokenizer", "padding": "max_length", "max_length": 64,
                        "attention_mask": False,
                        "canonicalize": "big_vision canonicalize_text: lower-case, punctuation removed, "
                                        "whitespace collapsed", "prefix": "", "after_eos": "pad token"}, result
    # the model's own image processor ran in place of the transform's geometry, and says so
    assert _find(result, "image_processor").startswith("SiglipImageProcessor"), result


def _find(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


# -- (4) remote code only from the local cache ------------------------------------------------------


def _offline_cache(monkeypatch, cache: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))


def test_internvl_without_cached_code_is_one_line(tmp_path, monkeypatch, capsys):
    from evalkit.cli.main import main

    _offline_cache(monkeypatch, tmp_path / "empty-cache")
    data = make_folder(tmp_path / "imgs", n_per_class=1)
    rc = main(["run", "--model", "internvl-c", "--tasks", f"folder:{data}", "--output-dir", str(tmp_path / "o"),
               "--device", "cpu", "--precision", "fp32"])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    lines = [line for line in err.splitlines() if "OpenGVLab/InternVL-14B-224px" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "config.json" in lines[0] and "code" in lines[0] and "trust_remote_code" in lines[0]


def test_internvl_names_the_code_files_the_cache_lacks(tmp_path, monkeypatch):
    from evalkit import models
    from evalkit.models.hub import ModelLoadError

    cache = tmp_path / "cache"
    snap = cache / "models--OpenGVLab--InternVL-14B-224px" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("a" * 40)
    (snap / "config.json").write_text(json.dumps({
        "model_type": "internvl", "architectures": ["InternVLModel"],
        "auto_map": {"AutoConfig": "configuration_internvl.InternVLConfig",
                     "AutoModel": "modeling_internvl.InternVLModel"}}))
    (snap / "configuration_internvl.py").write_text("from .configuration_intern_vit import InternVisionConfig\n")
    _offline_cache(monkeypatch, cache)
    with pytest.raises(ModelLoadError) as e:
        models.load("internvl-c")
    msg = str(e.value)
    assert "\n" not in msg and "OpenGVLab/InternVL-14B-224px" in msg
    # the file auto_map names, and the one the cached code imports, are missing; the cached one is not
    assert "modeling_internvl.py" in msg and "configuration_intern_vit.py" in msg
    assert "configuration_internvl.py," not in msg


def test_cards_name_their_repositories():
    from evalkit.models import CARDS
    from evalkit.models.hf import HfFamily

    for name, repo in (("siglip-so400m", "google/siglip-so400m-patch14-224"),
                       ("siglip-so400m-384", "google/siglip-so400m-patch14-384"),
                       ("internvl-c", "OpenGVLab/InternVL-14B-224px")):
        card = CARDS[name]
        assert card.family == "hf" and card.arch["repo"] == repo
        HfFamily().check_arch(card)
    assert CARDS["internvl-c"].arch["remote_code"] is True


FAKE_INTERNVL_CONFIG = '''
from transformers import PretrainedConfig


class InternVLConfig(PretrainedConfig):
    model_type = "internvl"

    def __init__(self, vocab_size=100, clip_embed_dim=8, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.clip_embed_dim = vocab_size, clip_embed_dim
'''

# A stand-in for InternVL-14B-224px's own code, with the interface its model card calls
# (encode_image(pixels, mode="InternVL-C"), encode_text(ids)); the text side pools the last token
# before the padding (0), as InternVL-C's LLaMA tower does.
FAKE_INTERNVL_MODEL = '''
import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_internvl import InternVLConfig


class InternVLModel(PreTrainedModel):
    config_class = InternVLConfig

    def __init__(self, config):
        super().__init__(config)
        self.patch = nn.Conv2d(3, config.clip_embed_dim, 8, 8)
        self.embed = nn.Embedding(config.vocab_size, config.clip_embed_dim)
        self.mix = nn.Linear(config.clip_embed_dim, config.clip_embed_dim)
        self.post_init()

    def encode_image(self, image, mode):
        assert mode == "InternVL-C", mode
        return self.patch(image).flatten(2).mean(dim=2)

    def encode_text(self, text):
        h = self.mix(self.embed(text)).cumsum(dim=1)
        last = (text > 0).sum(dim=1) - 1
        return h[torch.arange(text.shape[0]), last]
'''


def make_internvl(folder: Path) -> Path:
    """A local folder laid out as InternVL-14B-224px's repository is: config.json with auto_map,
    its modelling code, weights, a LLaMA (SentencePiece) tokenizer and a CLIP image processor."""
    import importlib.util
    import sys

    tok = siglip_tokenizer(folder / "spm")
    (folder / "configuration_internvl.py").write_text(FAKE_INTERNVL_CONFIG)
    (folder / "modeling_internvl.py").write_text(FAKE_INTERNVL_MODEL)
    spec = importlib.util.spec_from_file_location("fake_internvl", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["fake_internvl"] = package
    try:
        from fake_internvl.configuration_internvl import InternVLConfig
        from fake_internvl.modeling_internvl import InternVLModel

        torch.manual_seed(0)
        InternVLModel(InternVLConfig(vocab_size=tok.vocab_size + 4)).save_pretrained(folder)
    finally:
        for name in [n for n in sys.modules if n.startswith("fake_internvl")]:
            del sys.modules[name]
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="internvl", architectures=["InternVLModel"],
                  auto_map={"AutoConfig": "configuration_internvl.InternVLConfig",
                            "AutoModel": "modeling_internvl.InternVLModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.model").write_bytes((folder / "spm" / "spiece.model").read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "padding_side": "right"}))
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder)
    return folder


def test_internvl_recipe_from_a_local_folder(tmp_path):
    """Given its code locally, InternVL-C runs as its model card says: the repository's CLIP image
    processor, encode_image(mode="InternVL-C"), and "summarize:" + prompt tokenised by LLaMA's
    tokenizer with EOS appended, padded with 0 to 80, through encode_text."""
    folder = make_internvl(tmp_path / "internvl")
    enc = _load(folder)
    assert enc.arch["text_handling"]["prefix"] == "summarize:" and enc.embed_dim == 8 and not enc.causal_text
    model = transformers.AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, use_fast=False, add_eos_token=True)
    tokenizer.pad_token_id = 0
    ids = tokenizer(["summarize:" + p for p in PROMPTS], max_length=80, truncation=True, padding="max_length",
                    return_tensors="pt").input_ids
    assert torch.equal(enc.tokenize(PROMPTS), ids)
    assert (ids.gather(1, ((ids > 0).sum(1, keepdim=True) - 1)) == tokenizer.eos_token_id).all()  # EOS appended
    images = [make_image(i, i) for i in range(3)]
    pixels = transformers.CLIPImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_text(enc.tokenize(PROMPTS)), model.encode_text(ids))
        torch.testing.assert_close(enc.encode("image", torch.stack([enc.tower("image").input.processor(im)
                                                                      for im in images])),
                                   model.encode_image(pixels, mode="InternVL-C"))
