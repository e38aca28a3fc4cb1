"""evalkit.models.prefix: prompts sharing a token prefix encode to the features of whole prompts."""

from __future__ import annotations

import pytest
import torch
from fixtures import CLASSNAMES

from evalkit import models
from evalkit.features.embed import encode_texts, zero_shot_classifier
from evalkit.models.prefix import SharedPrefixText, shared_prefix_text

TEMPLATES = [
    "a photo of a {c}.",
    "a blurry photo of the {c}, seen from far away.",
    "{c}",  # the prefix is SOT alone
    "itap of a {c}.",
    "a photo of the {c}" + " very" * 80,  # longer than the context: truncated, EOT forced at 76
]
NAMES = [*CLASSNAMES, "red square", "x"]  # a repeated name: identical prompts, the prefix stops before EOT


def _whole(enc):
    enc.share_text_prefix = False
    return enc


def _shared(enc):
    enc.share_text_prefix = True
    assert isinstance(enc.shared_prefix, SharedPrefixText)
    return enc


@pytest.fixture(scope="module")
def demo():
    return models.load("eva-clip-demo")


@pytest.fixture(scope="module")
def tiny_open_clip(tiny_arch):
    torch.manual_seed(0)
    return models.load(f"open_clip:{tiny_arch}")


@pytest.mark.parametrize("which", ["demo", "tiny_open_clip"])
def test_classifier_equals_whole_prompt_encoding(which, request) -> None:
    enc = request.getfixturevalue(which)
    want = zero_shot_classifier(_whole(enc), NAMES, TEMPLATES)
    got = zero_shot_classifier(_shared(enc), NAMES, TEMPLATES)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("which", ["demo", "tiny_open_clip"])
def test_every_prompt_equals_its_whole_encoding(which, request) -> None:
    enc = request.getfixturevalue(which)
    texts = [t.format(c=c) for c in NAMES for t in TEMPLATES] + ["a prompt in no group", "another"]
    groups = [range(j, len(NAMES) * len(TEMPLATES), len(TEMPLATES)) for j in range(len(TEMPLATES))]
    want = encode_texts(_whole(enc), texts, batch_size=7)
    calls = []
    enc = _shared(enc)
    real = enc.encode_text_suffix
    enc.encode_text_suffix = lambda *a: calls.append(a[1].shape[0]) or real(*a)
    try:
        got = encode_texts(enc, texts, batch_size=7, groups=groups)
    finally:
        del enc.encode_text_suffix
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    assert sum(calls) == len(NAMES) * len(TEMPLATES)  # every grouped prompt took the shared path
    assert max(calls) == 7


def test_the_prefix_is_run_once_per_template(demo) -> None:
    enc = _shared(demo)
    seen = []
    real = enc.encode_text_prefixes
    enc.encode_text_prefixes = lambda tokens: seen.append(tuple(tokens.shape)) or real(tokens)
    try:
        zero_shot_classifier(enc, NAMES, TEMPLATES[:2])
    finally:
        del enc.encode_text_prefixes
    # one batch of 2 prefixes: "<sot> a photo of a" (5 tokens) and "<sot> a blurry photo of the" (6)
    assert seen == [(2, 6)]


def test_towers_it_does_not_apply_to(tiny_bidir_arch, demo) -> None:
    torch.manual_seed(0)
    bidir = models.load(f"open_clip:{tiny_bidir_arch}")
    assert bidir.shared_prefix is None  # no causal mask: every token sees the padding
    # a bidirectional encoder ignores groups and still gives its full-length features
    texts = ["a photo of a cat.", "a photo of a dog."]
    torch.testing.assert_close(encode_texts(bidir, texts, groups=[[0, 1]]), encode_texts(bidir, texts))

    class Hooked(torch.nn.Module):  # accelerate's hooks: weights arrive only through forward
        pass

    hooked = Hooked()
    hooked._hf_hook = object()
    demo.model.text.add_module("probe", hooked)
    try:
        assert shared_prefix_text(demo.model) is None
    finally:
        del demo.model.text.probe
    assert shared_prefix_text(demo.model) is not None


@pytest.mark.parametrize("precision,atol", [("fp16", 5e-4), ("bf16", 4e-3), ("int8", 4e-3)])
def test_reduced_precision_agrees_to_its_rounding(precision: str, atol: float) -> None:
    enc = models.load("eva-clip-demo", precision=precision)
    want = zero_shot_classifier(_whole(enc), NAMES, TEMPLATES[:4])
    got = zero_shot_classifier(_shared(enc), NAMES, TEMPLATES[:4])
    torch.testing.assert_close(got, want, rtol=0, atol=atol)
