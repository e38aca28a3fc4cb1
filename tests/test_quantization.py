"""int8 (LLM.int8) and int4 (NF4) on the committed demo model, run by bitsandbytes on the CPU.

What the issue asks, measured here: int8 image and text features have cosine ≥ 0.99 with fp32
and the demo tasks' top-1 moves by ≤ 1 point; int4 is held to a looser, documented bound (every
feature's cosine ≥ 0.90, their mean ≥ 0.98, top-1 within 3 points; README "Big models": on all
1,000 test images int4's lowest image cosine is 0.94, its mean 0.995). Also: which layers are quantised and
which stay 16-bit, that the memory the quantised model really takes is what `evalkit plan`
predicts, and that a missing or broken bitsandbytes is one clear error.

Top-1 is measured on the first TOP1_IMAGES images of the demo tasks (their own class names,
templates and transform; the full 1,000-image figures from `evalkit run` are in the README); the
images are deterministic, so these numbers do not move between runs.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from evalkit import models
from evalkit.demo.shapeworld import ShapeWorldClassification
from evalkit.features.embed import zero_shot_classifier
from evalkit.models import CARDS, ModelLoadError, eva_config
from evalkit.models.memory_plan import empty_model, weight_bytes
from evalkit.models.precision import PlacementError
from evalkit.models.quantize import INT8_THRESHOLD
from evalkit.tasks.spec import TaskIndex
from evalkit.views.image import image_transform

TOP1_IMAGES = 200  # int8 runs through bitsandbytes' reference CPU kernels: ~8 s per 64 images here
COSINE_IMAGES = 64
INT8_MIN_COSINE, INT8_MAX_TOP1_DELTA = 0.99, 1.0
INT4_MIN_COSINE, INT4_MEAN_COSINE, INT4_MAX_TOP1_DELTA = 0.90, 0.98, 3.0
DEMO_TASKS = ("shapeworld-shape", "shapeworld-colour")
PRECISIONS = ("fp32", "int8", "int4")


@pytest.fixture(scope="module")
def encoders():
    return {p: models.load("eva-clip-demo", precision=p) for p in PRECISIONS}


@pytest.fixture(scope="module")
def measured(encoders):
    """Per precision: image features of the demo tasks' first TOP1_IMAGES test images (the two
    tasks label the same images), text features of every prompt, and top-1 per task with the
    tasks' own templates and the standard CLIP classifier."""
    specs = {name: TaskIndex.load().tasks[name] for name in DEMO_TASKS}
    views = {
        name: ShapeWorldClassification(task=spec.source["task"], split=spec.source["split"], n=TOP1_IMAGES,
                                       seed=spec.source["seed"])
        for name, spec in specs.items()
    }
    first = views[DEMO_TASKS[0]]
    transform = image_transform(encoders["fp32"], specs[DEMO_TASKS[0]].view.get("transform", "crop"))
    images = torch.stack([transform(first[i][0]) for i in range(len(first))])
    prompts = [t.format(c=c) for name in DEMO_TASKS for c in views[name].classnames for t in specs[name].templates]
    tokens = encoders["fp32"].tokenize(prompts)
    out = {}
    for precision, enc in encoders.items():
        feats = torch.cat([enc.encode_image(images[i : i + 64]) for i in range(0, len(images), 64)])
        top1 = {}
        for name in DEMO_TASKS:
            classifier = zero_shot_classifier(enc, views[name].classnames, specs[name].templates)
            pred = (F.normalize(feats, dim=-1) @ classifier).argmax(dim=-1)
            top1[name] = 100 * (pred == torch.tensor(views[name].labels())).float().mean().item()
        out[precision] = {"image": feats, "text": enc.encode_text(tokens), "top1": top1}
    return out


def _cosines(measured, precision):
    ref, q = measured["fp32"], measured[precision]
    img = F.cosine_similarity(ref["image"][:COSINE_IMAGES], q["image"][:COSINE_IMAGES], dim=-1)
    return img, F.cosine_similarity(ref["text"], q["text"], dim=-1)


def test_block_linears_are_quantised_and_the_rest_is_fp16(encoders):
    import bitsandbytes as bnb

    for precision, kind in (("int8", bnb.nn.Linear8bitLt), ("int4", bnb.nn.Linear4bit)):
        model = encoders[precision].model
        for block in [*model.visual.blocks, *model.text.transformer.resblocks]:
            linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
            assert linears and all(isinstance(m, kind) for m in linears)
        fc1 = model.visual.blocks[0].mlp.fc1
        if precision == "int8":
            assert fc1.weight.dtype == torch.int8 and fc1.state.threshold == INT8_THRESHOLD
        else:
            assert fc1.weight.dtype == torch.uint8 and fc1.weight.quant_state.quant_type == "nf4"
            assert fc1.weight.quant_state.nested  # double-quantised statistics
        for t in (model.visual.head.weight, model.text.text_projection, model.visual.patch_embed.proj.weight,
                  model.visual.pos_embed, model.text.token_embedding.weight, model.visual.norm.weight,
                  model.text.ln_final.weight, model.text.transformer.resblocks[0].attn.in_proj_weight):
            assert t.dtype == torch.float16
        assert not isinstance(model.visual.head, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))
        assert encoders[precision].fingerprint != encoders["fp32"].fingerprint


def test_quantised_memory_is_what_the_planner_predicts(encoders):
    cfg = eva_config(CARDS["eva-clip-demo"])
    for precision in ("int8", "int4"):
        model = encoders[precision].model
        actual = sum(t.numel() * t.element_size() for t in model.state_dict().values() if torch.is_tensor(t))
        predicted = weight_bytes(empty_model(cfg), precision)
        assert abs(actual - predicted) <= 0.01 * predicted, (precision, actual, predicted)
    # (the demo is mostly its 49408-token embedding, kept in fp16; for the 18B, int8 halves the
    # bytes: tests/test_plan.py)


def test_int8_features_match_fp32(measured):
    img, txt = _cosines(measured, "int8")
    assert img.min() >= INT8_MIN_COSINE and txt.min() >= INT8_MIN_COSINE, (img.min(), txt.min())


def test_int4_features_within_the_looser_bound(measured):
    img, txt = _cosines(measured, "int4")
    assert img.min() >= INT4_MIN_COSINE and txt.min() >= INT4_MIN_COSINE, (img.min(), txt.min())
    assert img.mean() >= INT4_MEAN_COSINE and txt.mean() >= INT4_MEAN_COSINE, (img.mean(), txt.mean())
    int8_img, _ = _cosines(measured, "int8")
    assert img.mean() < int8_img.mean()  # 4 bits lose more than 8: the measurement can tell them apart


def test_int8_top1_moves_at_most_one_point(measured):
    for task, ref in measured["fp32"]["top1"].items():
        assert ref >= 50, f"{task}: the fp32 demo model scores {ref:.1f}; the comparison would mean little"
        assert abs(measured["int8"]["top1"][task] - ref) <= INT8_MAX_TOP1_DELTA, (task, measured["int8"]["top1"])


def test_int4_top1_within_the_looser_bound(measured):
    for task, ref in measured["fp32"]["top1"].items():
        assert abs(measured["int4"]["top1"][task] - ref) <= INT4_MAX_TOP1_DELTA, (task, measured["int4"]["top1"])


def test_int8_without_bitsandbytes_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ModelLoadError) as err:
        models.load("eva-clip-demo", precision="int8")
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and "needs bitsandbytes, which cannot be imported" in msg


def test_broken_bitsandbytes_is_one_clear_error(monkeypatch):
    import bitsandbytes as bnb

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA Setup failed despite GPU being available")

    monkeypatch.setattr(bnb.nn, "Linear8bitLt", broken)
    from evalkit.models.quantize import require_bitsandbytes

    with pytest.raises(PlacementError, match="does not work on cpu .*CUDA Setup failed"):
        require_bitsandbytes("int8", "cpu")
