"""evalkit.models.tokenize: the cached CLIP tokenizer gives open_clip's ids, token for token."""

from __future__ import annotations

import open_clip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit.features.embed import zero_shot_classifier
from evalkit.models.encoder import Encoder
from evalkit.models.tokenize import CachedClipTokenizer, cached_tokenizer
from evalkit.tasks.spec import TaskIndex

REFERENCE = open_clip.get_tokenizer("ViT-B-32")
FAST = cached_tokenizer(open_clip.get_tokenizer("ViT-B-32"))


def _same(texts: list[str], context_length: int | None = None) -> None:
    got, want = FAST(texts, context_length), REFERENCE(texts, context_length)
    assert got.dtype == want.dtype and got.shape == want.shape
    for i in range(len(texts)):  # name the first prompt that differs
        assert torch.equal(got[i], want[i]), f"prompt {texts[i]!r}: {got[i].tolist()} != {want[i].tolist()}"


def test_wraps_open_clip_bpe_and_nothing_else() -> None:
    assert isinstance(FAST, CachedClipTokenizer)
    assert cached_tokenizer(FAST) is FAST
    canonical = open_clip.tokenizer.SimpleTokenizer(clean="canonicalize")  # another cleaner: left alone
    assert cached_tokenizer(canonical) is canonical

    def other(texts):
        return torch.zeros(len(texts), 4, dtype=torch.long)

    assert cached_tokenizer(other) is other
    assert FAST.vocab_size == REFERENCE.vocab_size  # the wrapped tokenizer's attributes show through


def test_every_class_name_and_template_of_every_task() -> None:
    """Each task's class names in two of its templates and each template with two class names:
    every word the tasks under tasks/ can put in a prompt."""
    texts: list[str] = []
    for spec in TaskIndex.load().tasks.values():
        names, templates = spec.classnames or [], spec.templates or []
        if not names or not templates:
            continue
        texts += [t.format(c=c) for c in names for t in templates[:2]]
        texts += [t.format(c=c) for c in names[:2] for t in templates]
    assert len(texts) > 5000
    _same(texts)


EDGE_CASES = [
    "",
    "   ",
    "a photo of a dog.",
    "A  Photo\tof\na DOG!!",
    "it's a dog's toy, isn't it? ''s 'll 're",
    "a photo of the number 1234567890.",
    "rock & roll",
    "tom &amp; jerry &lt;3",
    "<start_of_text> inside <end_of_text>",
    "a photo of a caf\u00e9 \u201cquoted\u201d \u2014 \ufb01ne",
    "\u00c3\u00a9 mojibake",
    "\x1b[31mred\x1b[0m terminal escape",
    "fullwidth \uff21\uff22\uff23",
    "word " * 100,  # truncated to the context length, EOT kept last
    "a,b;c:d...e---f(g)[h]{i}",
]


def test_edge_cases() -> None:
    _same(EDGE_CASES)
    _same(EDGE_CASES, context_length=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=40), max_size=8))
def test_any_ascii_text(texts: list[str]) -> None:
    _same(texts)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=6))
def test_any_unicode_text(texts: list[str]) -> None:
    _same(texts)


def test_encoders_get_the_cached_tokenizer_and_the_same_classifier() -> None:
    from evalkit import models
    enc = models.load("eva-clip-demo")
    assert isinstance(enc.tokenizer, CachedClipTokenizer)
    plain = Encoder(**{**{f: getattr(enc, f) for f in ("name", "model", "embed_dim", "causal_text", "towers",
                                                        "arch")}, "tokenizer": REFERENCE})
    plain.tokenizer = REFERENCE  # bypass the wrapping, as before it existed
    names, templates = ["circle", "square", "large red triangle"], ["a {c}.", "a photo of a {c}, drawn."]
    torch.testing.assert_close(zero_shot_classifier(enc, names, templates),
                               zero_shot_classifier(plain, names, templates), rtol=0, atol=0)


def test_copies_and_pickles_like_the_tokenizer_it_wraps() -> None:
    import copy
    import pickle

    from evalkit.models.tokenize import open_clip_tokenizer

    texts = ["a photo of a cat.", "Rock &amp; roll"]
    for clone in (copy.copy(FAST), copy.deepcopy(FAST), pickle.loads(pickle.dumps(FAST))):
        assert isinstance(clone, CachedClipTokenizer) and torch.equal(clone(texts), REFERENCE(texts))
    assert open_clip_tokenizer(FAST) is FAST.tokenizer and open_clip_tokenizer(REFERENCE) is REFERENCE


@pytest.mark.parametrize("width", [5, 77])
def test_empty_batch(width: int) -> None:
    assert FAST([], width).shape == (0, width)
