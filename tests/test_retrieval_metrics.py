"""Zero-shot retrieval metrics must equal clip_benchmark's ``zeroshot_retrieval.evaluate``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clip_benchmark.metrics import zeroshot_retrieval as cb
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit.metrics import RetrievalTopK, retrieval_metrics, retrieval_topk

KS = (1, 5, 10)
CB_KEYS = [f"{name}_retrieval_recall@{k}" for k in KS for name in ("image", "text")]
WORDS = "a red blue green small large square circle triangle on left right of the next to above below".split()


def _captions_per_image(rng: np.random.Generator, n_images: int, no_caption: tuple[int, ...] = ()) -> list[int]:
    return [0 if i in no_caption else int(rng.integers(5, 8)) for i in range(n_images)]


def _cb_evaluate(model, batches, tokenizer, ks=KS) -> dict[str, float]:
    return cb.evaluate(model, batches, tokenizer, "cpu", amp=False, recall_k_list=list(ks))


def _cb_keys_equal(ours: dict[str, float], theirs: dict[str, float]) -> None:
    assert set(theirs) <= set(ours)
    for key, value in theirs.items():
        assert ours[key] == value, (key, ours[key], value)


# --- against clip_benchmark's public evaluate, on a real (tiny, random-weight) open_clip model ------

def test_equals_clip_benchmark_evaluate_on_open_clip(tiny_arch):
    import open_clip

    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(tiny_arch)
    model.eval()
    tokenizer = open_clip.get_tokenizer(tiny_arch)
    rng = np.random.default_rng(0)
    n_images, batch_size = 19, 4
    counts = _captions_per_image(rng, n_images, no_caption=(6,))
    images = torch.from_numpy(rng.normal(0, 1, (n_images, 3, 32, 32)).astype(np.float32))
    captions = [[" ".join(rng.choice(WORDS, int(rng.integers(1, 15)))) for _ in range(c)] for c in counts]
    captions[0][2] = " ".join(rng.choice(WORDS, 120))  # longer than the 77-token context: truncated
    batches = [(images[s:s + batch_size], captions[s:s + batch_size]) for s in range(0, n_images, batch_size)]

    theirs = _cb_evaluate(model, batches, tokenizer)

    # the same embeddings, as evaluate's loop makes them (batch by batch, normalised)
    img, txt, t2i = [], [], []
    with torch.no_grad():
        for start, (x, caps) in zip(range(0, n_images, batch_size), batches, strict=True):
            img.append(F.normalize(model.encode_image(x), dim=-1))
            txt.append(F.normalize(model.encode_text(tokenizer([c for cs in caps for c in cs])), dim=-1))
            t2i += [start + i for i, cs in enumerate(caps) for _ in cs]
    img, txt, t2i = torch.cat(img), torch.cat(txt), torch.tensor(t2i)
    for chunk in (1, 3, 7, n_images, None):
        _cb_keys_equal(retrieval_metrics(img, txt, t2i, KS, chunk_size=chunk), theirs)
    # not a degenerate case: the image→text rule "any caption" differs from "first caption"
    assert 0 < theirs["text_retrieval_recall@5"] < 1


# --- against evaluate with a stand-in model that returns fixed features (exact ties) ----------------

class FixedFeatures(torch.nn.Module):
    """A clip_benchmark "model" whose images are indices into fixed image features and whose
    tokenizer turns caption ``"t17"`` into index 17 of fixed text features."""

    def __init__(self, image_features: torch.Tensor, text_features: torch.Tensor):
        super().__init__()
        self.image_features, self.text_features = image_features, text_features

    def encode_image(self, idx: torch.Tensor) -> torch.Tensor:
        return self.image_features[idx]

    def encode_text(self, idx: torch.Tensor) -> torch.Tensor:
        return self.text_features[idx]

    @staticmethod
    def tokenizer(texts: list[str]) -> torch.Tensor:
        return torch.tensor([int(t[1:]) for t in texts], dtype=torch.long)


def _tied_unit_vectors(rng: np.random.Generator, n: int, dim: int = 6) -> torch.Tensor:
    """Unit vectors with four entries ±1/2: every dot product is a multiple of 1/4, exact in any
    summation order, so many scores tie exactly (and F.normalize leaves them unchanged)."""
    out = np.zeros((n, dim), dtype=np.float32)
    for row in out:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return torch.from_numpy(out)


def _stand_in_case(seed: int, n_images: int, tied: bool, no_caption=()):
    rng = np.random.default_rng(seed)
    counts = _captions_per_image(rng, n_images, no_caption)
    t2i = torch.tensor([i for i, c in enumerate(counts) for _ in range(c)], dtype=torch.long)
    if tied:
        img, txt = _tied_unit_vectors(rng, n_images), _tied_unit_vectors(rng, len(t2i))
    else:
        g = torch.Generator().manual_seed(seed)
        img = F.normalize(torch.randn(n_images, 16, generator=g), dim=-1)
        txt = F.normalize(0.5 * img[t2i] + torch.randn(len(t2i), 16, generator=g), dim=-1)
    captions, k = [], 0
    for c in counts:
        captions.append([f"t{k + j}" for j in range(c)])
        k += c
    return img, txt, t2i, captions


def _evaluate_stand_in(img, txt, captions, batch_size, ks=KS):
    model = FixedFeatures(img, txt)
    idx = torch.arange(len(img))
    batches = [(idx[s:s + batch_size], captions[s:s + batch_size]) for s in range(0, len(img), batch_size)]
    return _cb_evaluate(model, batches, FixedFeatures.tokenizer, ks)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "random"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_clip_benchmark_evaluate_stand_in(seed, tied):
    n_images = 40
    img, txt, t2i, captions = _stand_in_case(seed, n_images, tied, no_caption=(3, 17))
    theirs = _evaluate_stand_in(img, txt, captions, batch_size=16)
    if tied:  # the case really has ties at the K boundary
        scores = txt @ img.t()
        assert (torch.topk(scores, 11, dim=1)[0][:, 9] == torch.topk(scores, 11, dim=1)[0][:, 10]).any()
    for chunk in (1, 3, 7, 16, n_images, None):
        _cb_keys_equal(retrieval_metrics(img, txt, t2i, KS, chunk_size=chunk), theirs)


# --- chunked == unchunked ---------------------------------------------------------------------------

@pytest.mark.parametrize("tied", [True, False], ids=["tied", "random"])
def test_chunked_equals_unchunked_sweep(tied):
    img, txt, t2i, _ = _stand_in_case(5, 45, tied, no_caption=(0,))
    if not tied:  # duplicated rows: equal scores from different places in the product
        img[7], txt[11] = img[8], txt[12]
    full = retrieval_metrics(img, txt, t2i, KS, chunk_size=None)
    full_top = retrieval_topk(img, txt, k=10, chunk_size=None)
    for chunk in (1, 2, 3, 7, 31, 32, 33, 44, 45, 46, 1000):
        assert retrieval_metrics(img, txt, t2i, KS, chunk_size=chunk) == full, chunk
        top = retrieval_topk(img, txt, k=10, chunk_size=chunk)
        for name, a, b in zip(RetrievalTopK._fields, top, full_top, strict=True):
            assert torch.equal(a, b), (chunk, name)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_images=st.integers(1, 30), chunk=st.integers(1, 40),
       ks=st.lists(st.integers(1, 12), min_size=1, max_size=3, unique=True))
def test_chunked_equals_unchunked_property(seed, n_images, chunk, ks):
    img, txt, t2i, _ = _stand_in_case(seed, n_images, tied=True)
    if len(t2i) == 0:
        return
    assert retrieval_metrics(img, txt, t2i, ks, chunk_size=chunk) == retrieval_metrics(img, txt, t2i, ks, chunk_size=None)


def test_memory_is_bounded_by_chunk():
    """No tensor made while scoring is larger than the window × candidates (never N × M)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    img, txt, t2i, _ = _stand_in_case(3, 300, tied=False)
    with Largest():
        retrieval_metrics(img, txt, t2i, KS, chunk_size=40)
        retrieval_topk(img, txt, chunk_size=40)
    assert Largest.numel <= 40 * len(txt) < len(img) * len(txt)


# --- keys, values, edge cases -----------------------------------------------------------------------

def test_key_names_and_directions():
    # 3 images; captions 0,1 -> image 0, caption 2 -> image 1, caption 3 -> image 2
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0], [0, 0.6, 0.8]])
    t2i = torch.tensor([0, 0, 1, 2])
    m = retrieval_metrics(img, txt, t2i, ks=(1,))
    assert list(m) == ["image_retrieval_recall@1", "text_retrieval_recall@1", "i2t_R@1", "t2i_R@1", "mean_recall"]
    # text→image: captions 0, 2, 3 find their image; caption 1 goes to image 2
    assert m["t2i_R@1"] == m["image_retrieval_recall@1"] == 0.75
    # image→text: images 0 and 1 rank their own caption first; image 2 ranks caption 1 (image 0's)
    assert m["i2t_R@1"] == m["text_retrieval_recall@1"] == torch.tensor(2 / 3).item()
    assert m["mean_recall"] == (m["i2t_R@1"] + m["t2i_R@1"]) / 2

    m = retrieval_metrics(*_stand_in_case(0, 20, tied=False)[:3])
    assert list(m) == CB_KEYS + [f"{d}_R@{k}" for k in KS for d in ("i2t", "t2i")] + ["mean_recall"]
    six = [m[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in KS]
    assert m["mean_recall"] == pytest.approx(sum(six) / 6, abs=1e-15)
    for k in KS:
        assert m[f"i2t_R@{k}"] == m[f"text_retrieval_recall@{k}"]
        assert m[f"t2i_R@{k}"] == m[f"image_retrieval_recall@{k}"]


def test_image_with_no_caption_is_an_image_to_text_miss():
    img = torch.eye(4)
    txt = torch.eye(4)[[0, 0, 1, 2]]  # image 3 has no caption; every other image finds its own
    t2i = torch.tensor([0, 0, 1, 2])
    m = retrieval_metrics(img, txt, t2i, ks=(1, 2))
    assert m["i2t_R@1"] == m["i2t_R@2"] == 0.75  # 3 of 4, the captionless image a miss
    assert m["t2i_R@1"] == 1.0  # and it is still a candidate for text→image (never chosen here)
    theirs = _evaluate_stand_in(img, txt, [["t0", "t1"], ["t2"], ["t3"], []], batch_size=2, ks=(1, 2))
    _cb_keys_equal(m, theirs)


def test_k_larger_than_candidates_means_all_of_them():
    img, txt, t2i, captions = _stand_in_case(4, 6, tied=False, no_caption=(2,))
    m = retrieval_metrics(img, txt, t2i, ks=(1, 5, 10, 1000))
    assert m["t2i_R@10"] == m["image_retrieval_recall@10"] == 1.0  # 10 > 6 images
    assert m["i2t_R@1000"] == pytest.approx(5 / 6)  # every image with a caption; image 2 has none
    with pytest.raises(RuntimeError):  # clip_benchmark's topk refuses K > candidates
        _evaluate_stand_in(img, txt, captions, batch_size=4, ks=(10,))
    top = retrieval_topk(img, txt, k=10)
    assert top.t2i_indices.shape == (len(txt), 6) and top.i2t_indices.shape == (6, 10)


def test_topk_gives_the_hits_behind_the_recalls():
    img, txt, t2i, _ = _stand_in_case(7, 30, tied=True, no_caption=(4,))
    m = retrieval_metrics(img, txt, t2i, KS, chunk_size=7)
    scores = txt @ img.t()
    for k in KS:
        top = retrieval_topk(img, txt, k=k, chunk_size=5)
        assert torch.equal(top.t2i_indices, torch.topk(scores, k, dim=1)[1])
        assert torch.equal(top.i2t_indices, torch.topk(scores.t(), k, dim=1)[1])
        assert torch.equal(top.t2i_scores, torch.gather(scores, 1, top.t2i_indices))
        t2i_hit = (top.t2i_indices == t2i[:, None]).any(1).float().mean().item()
        i2t_hit = (t2i[top.i2t_indices] == torch.arange(len(img))[:, None]).any(1).float().mean().item()
        assert (m[f"t2i_R@{k}"], m[f"i2t_R@{k}"]) == (t2i_hit, i2t_hit)


def test_bad_inputs_are_refused():
    img, txt = torch.eye(3), torch.eye(3)
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(img, txt, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(img, txt, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="widths"):
        retrieval_metrics(img, torch.eye(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics(img, txt, torch.tensor([0, 1, 2]), ks=(0,))
    with pytest.raises(ValueError, match="chunk_size"):
        retrieval_metrics(img, txt, torch.tensor([0, 1, 2]), chunk_size=0)
    with pytest.raises(ValueError, match="no images"):
        retrieval_metrics(img[:0], txt[:0], torch.tensor([], dtype=torch.long))
    assert not math.isnan(retrieval_metrics(img, txt, torch.tensor([0, 1, 2]))["mean_recall"])
