"""Zero-shot classification must equal clip_benchmark's on the same model and data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clip_benchmark.datasets.builder import build_dataset
from clip_benchmark.metrics import zeroshot_classification as cb
from fixtures import CLASSNAMES, make_wds
from sklearn.metrics import balanced_accuracy_score

from evalkit import models
from evalkit.features.embed import FeatureCache, encode_texts, zero_shot_classifier
from evalkit.metrics import mean_per_class_recall, topk_accuracy, zero_shot_classification_metrics
from evalkit.models.tokenize import open_clip_tokenizer
from evalkit.tasks.base import RunContext
from evalkit.tasks.classification import ClassificationFamily
from evalkit.tasks.spec import adhoc_spec
from evalkit.views.image import image_transform

TEMPLATES = ["a photo of a {c}.", "a blurry photo of the {c}, seen from far away.", "{c}"]


def _encoder(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    return models.load(f"open_clip:{arch}")


def _open_clip_tokenizer(enc):
    """open_clip's own tokenizer, as a clip_benchmark user has it (evalkit wraps it in a cache)."""
    return open_clip_tokenizer(enc.tokenizer)


def _cb_loader(root, transform):
    ds = build_dataset("wds/fixture", root=str(root), transform=transform, split="test")
    return torch.utils.data.DataLoader(ds.batched(8), batch_size=None, num_workers=0), ds


def test_classifier_equals_clip_benchmark_causal_truncated(tiny_arch):
    enc = _encoder(tiny_arch)
    assert enc.causal_text, "a CLIP text tower must take the length-sorted, truncated path"
    ours = zero_shot_classifier(enc, CLASSNAMES, TEMPLATES)
    theirs = cb.zero_shot_classifier(enc.model, _open_clip_tokenizer(enc), CLASSNAMES, TEMPLATES, "cpu", amp=False)
    assert ours.shape == theirs.shape == (32, len(CLASSNAMES))
    assert torch.allclose(ours, theirs, atol=1e-6), (ours - theirs).abs().max()


def test_classifier_equals_clip_benchmark_bidirectional_full_length(tiny_bidir_arch):
    enc = _encoder(tiny_bidir_arch)
    assert not enc.causal_text, "a bidirectional text tower must get full-length input"
    ours = zero_shot_classifier(enc, CLASSNAMES, TEMPLATES)
    theirs = cb.zero_shot_classifier(enc.model, _open_clip_tokenizer(enc), CLASSNAMES, TEMPLATES, "cpu", amp=False)
    assert torch.allclose(ours, theirs, atol=1e-6)
    # the pooled token of a bidirectional tower sees the padding: padding with a different
    # token id changes its feature, which is why this path never cuts or reorders prompts.
    tokens = enc.tokenize(["a photo of a cat."])
    repadded = tokens.clone()
    repadded[tokens == 0] = 1
    assert not torch.allclose(enc.model.encode_text(tokens), enc.model.encode_text(repadded), atol=1e-4)


def test_length_sorted_encoding_matches_full_length(tiny_arch):
    enc = _encoder(tiny_arch)
    texts = ["a", "a much longer prompt with many many words in it than the others", "a cat", "dog"] * 5
    sorted_cut = encode_texts(enc, texts, batch_size=3)
    full = enc.model.encode_text(enc.tokenize(texts)).detach()
    assert torch.allclose(sorted_cut, full, atol=1e-5)


def test_end_to_end_equals_clip_benchmark_evaluate(tiny_arch, tmp_path):
    enc = _encoder(tiny_arch)
    root = make_wds(tmp_path / "wds", n_per_class=5, templates=TEMPLATES)
    spec = adhoc_spec(f"wds:{root}")
    ctx = RunContext(output_dir=tmp_path / "out", batch_size=7, progress=False)
    ours = ClassificationFamily().run(spec, enc, ctx)

    loader, ds = _cb_loader(root, image_transform(enc, "crop"))
    theirs = cb.evaluate(enc.model, loader, _open_clip_tokenizer(enc), ds.classes, ds.templates, "cpu", amp=False)
    assert set(ours.metrics) == {"acc1", "acc5", "mean_per_class_recall"}
    for k in ours.metrics:
        assert ours.metrics[k] == pytest.approx(theirs[k], abs=0), k
    assert ours.evalkit["samples"] == 30 and ours.evalkit["skipped"] == 0


@pytest.mark.parametrize("n_classes", [2, 5, 17])
def test_metrics_bit_identical_to_clip_benchmark(n_classes):
    g = torch.Generator().manual_seed(n_classes)
    logits = torch.randn(200, n_classes, generator=g)
    target = torch.randint(0, n_classes, (200,), generator=g)
    target[:3] = 0  # ensure class 0 occurs
    ours = zero_shot_classification_metrics(logits, target, n_classes)
    if n_classes >= 5:
        acc1, acc5 = cb.accuracy(logits, target, topk=(1, 5))
        assert ours["acc5"] == acc5
    else:
        (acc1,) = cb.accuracy(logits, target, topk=(1,))
        assert "acc5" not in ours
    assert ours["acc1"] == acc1
    assert ours["mean_per_class_recall"] == balanced_accuracy_score(target.numpy(), logits.argmax(1).numpy())


def test_mean_per_class_recall_ignores_absent_classes():
    pred = torch.tensor([0, 1, 3, 3])
    target = torch.tensor([0, 1, 1, 2])
    assert mean_per_class_recall(pred, target) == pytest.approx(np.mean([1.0, 0.5, 0.0]))
    assert topk_accuracy(torch.eye(3), torch.tensor([0, 1, 0]), (1,)) == [2 / 3]


def test_classifier_cache_shared_across_tasks(tiny_arch, tmp_path):
    enc = _encoder(tiny_arch)
    cache = FeatureCache(tmp_path / "c")
    a = zero_shot_classifier(enc, CLASSNAMES, TEMPLATES, cache)
    misses = cache.misses
    b = zero_shot_classifier(enc, CLASSNAMES, TEMPLATES, cache)
    assert cache.misses == misses and torch.equal(a, b)
    # a fresh process (new cache object, same folder) also finds it on disk
    c = zero_shot_classifier(enc, CLASSNAMES, TEMPLATES, FeatureCache(tmp_path / "c"))
    assert torch.equal(a, c)
    # different templates are a different classifier
    d = zero_shot_classifier(enc, CLASSNAMES, TEMPLATES[:1], cache)
    assert not torch.allclose(a, d)


def test_mean_per_class_recall_is_sklearns_to_the_last_bit():
    """clip_benchmark's mean_per_class_recall is sklearn's balanced_accuracy_score: equal bit for
    bit on random predictions (classes missing from the predictions or only predicted included),
    not merely close: the mean of the per-class recalls must be summed in numpy's order."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        n, c = int(torch.randint(5, 400, (1,), generator=g)), int(torch.randint(2, 60, (1,), generator=g))
        target = torch.randint(0, c, (n,), generator=g)
        pred = torch.where(torch.rand(n, generator=g) < 0.6, target, torch.randint(0, c + 3, (n,), generator=g))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns about classes that are only predicted
            assert mean_per_class_recall(pred, target) == balanced_accuracy_score(target.numpy(), pred.numpy())
