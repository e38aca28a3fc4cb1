"""Boundaries no other test reached (issue 16, section 7): each test here failed with its bug seeded
into the code, one at a time.

- the model fingerprint in the caption feature cache key (two models sharing one cache);
- ``npoints`` in the point-cloud view's identity (two point counts sharing one cache);
- the minimum fingerprint-prefix length of ``evalkit cache prune --model``;
- the one-hour floor that protects in-flight temporary files from ``cache prune --older-than``;
- a class with exactly K train samples is not short in the few-shot probe, one with K-1 is;
- a label equal to the number of classes is refused (the probe, and the family naming the sample);
- a caption of exactly the text context is not counted as truncated, one token over is.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import TINY_OPEN_CLIP, image_bytes, make_image, make_wds
from test_retrieval import _items, make_captions_dir
from test_uni3d import uni3d_checkpoint

from evalkit import api
from evalkit.cli.main import main
from evalkit.data.sources import DataError
from evalkit.features.cache import FeatureCache
from evalkit.models.uni3d import uni3d_config
from evalkit.tasks.probe import ProbeOptions, fewshot_probe, sample_shots


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _entries(root: Path, kind: str = "*") -> list[Path]:
    return sorted(root.glob(f"{kind}/??/*.pt"))


def _predictions(out: Path) -> list[dict]:
    """The predictions of the one task run into ``out``."""
    (path,) = out.rglob("*.predictions*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- caption cache key


def test_two_models_sharing_a_cache_each_get_their_own_caption_features(tiny_arch, tiny_bidir_arch, tmp_path,
                                                                          capsys):
    root = make_captions_dir(tmp_path / "mine", _items(8))
    task, cache = f"captions:{root}", tmp_path / "shared-cache"
    first, second = f"open_clip:{tiny_arch}", f"open_clip:{tiny_bidir_arch}"

    def run(model: str, out: str, cache_dir: Path | None):
        report = api.evaluate(model, task, output_dir=tmp_path / out, cache_dir=cache_dir, save_predictions=True,
                              progress=False, raise_errors=True)
        return report.results[0], _predictions(tmp_path / out)

    a, a_preds = run(first, "a", cache)
    b, b_preds = run(second, "b", cache)  # the second model, after the first filled the cache
    alone, alone_preds = run(second, "alone", None)  # the second model with no cache at all
    assert a.evalkit["fingerprint"] != b.evalkit["fingerprint"]
    assert a_preds != alone_preds  # the two models score differently: the comparison below can fail
    # every caption query's top images and scores are the second model's own, not a mix of the
    # first model's captions with the second's images
    assert b_preds == alone_preds
    assert b.metrics == alone.metrics
    # one caption entry per model in the shared cache
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(cache), "--json")
    assert code == 0
    caption_groups = {g["fingerprint"]: g["entries"] for g in json.loads(out)["groups"] if g["kind"] == "captions"}
    assert caption_groups == {a.evalkit["fingerprint"]: 1, b.evalkit["fingerprint"]: 1}


# ----------------------------------------------------------------------------- points view identity


POINTS_TASK = """\
task: {name}
family: classification
metric: acc1
source: {{type: pointfolder, path: {root}}}
templates: ["a point cloud of a {{c}}.", "a 3D model of a {{c}}."]
view: {{cloud: points, npoints: {npoints}}}
"""


def _point_clouds(root: Path, n: int = 1500) -> Path:
    rng = np.random.default_rng(4)
    for c in ("cube", "sphere"):
        (root / c).mkdir(parents=True)
        v = rng.normal(size=(n, 3))
        v = v / np.linalg.norm(v, axis=1, keepdims=True) if c == "sphere" else np.clip(v, -1, 1)
        np.save(root / c / "0.npy", v.astype(np.float32))
    return root


def test_a_points_view_at_another_npoints_is_not_served_the_cached_features(tmp_path):
    ckpt = tmp_path / "uni3d.pt"
    torch.save(uni3d_checkpoint(uni3d_config("tiny", embed_dim=64)), ckpt)
    clouds = _point_clouds(tmp_path / "clouds")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for npoints in (1024, 512):
        (tasks / f"pts{npoints}.yaml").write_text(POINTS_TASK.format(name=f"pts{npoints}", root=clouds,
                                                                     npoints=npoints))
    cache = tmp_path / "shared-cache"

    def run(task: str, out: str, cache_dir: Path | None):
        api.evaluate("uni3d-ti", task, weights=str(ckpt), text_model="eva-clip-demo", task_dirs=[tasks],
                     output_dir=tmp_path / out, cache_dir=cache_dir, save_predictions=True, progress=False,
                     raise_errors=True)
        return _predictions(tmp_path / out)

    many = run("pts1024", "many", cache)
    entries = len(_entries(cache, "images"))
    assert entries >= 1
    few = run("pts512", "few", cache)  # the same clouds, the same model, fewer points
    alone = run("pts512", "alone", None)
    assert [p["top_scores"] for p in many] != [p["top_scores"] for p in alone]  # npoints changes the scores
    assert few == alone  # each cloud's own 512-point features, not the 1,024-point ones from the cache
    assert len(_entries(cache, "images")) == 2 * entries  # a second set of entries, beside the first


# ----------------------------------------------------------------------------- cache prune


def _put(root: Path, key: str, fingerprint: str, model: str) -> Path:
    FeatureCache(root).put("images", key, torch.zeros(2, 2), meta={"model": model, "fingerprint": fingerprint})
    return root / "images" / key[:2] / f"{key}.pt"


def test_prune_model_takes_a_fingerprint_prefix_of_six_characters_or_more(tmp_path, capsys):
    root = tmp_path / "c"
    fingerprints = ["e3b0c44298fc1c14", "e7a1d0f6a9c2b311", "ea10be6f17e2d4c0", "5e0d9c1a2b3c4d5e"]
    paths = [_put(root, f"k{i}00", fp, f"model-{i}") for i, fp in enumerate(fingerprints)]
    for short in ("e", "e3", "e3b0c"):  # under six characters: matches no fingerprint, removes nothing
        code, out, err = _cli(capsys, "cache", "prune", "--model", short, "--cache-dir", str(root))
        assert code == 0 and "removed 0 entries" in out and "4 entries remain" in out, short
        assert f"--model {short} matches no model name or fingerprint" in err and "at least 6 characters" in err
        assert all(p.exists() for p in paths), short
    code, out, _ = _cli(capsys, "cache", "prune", "--model", "e3b0c4", "--cache-dir", str(root))  # six: its prefix
    assert code == 0 and "removed 1 entries" in out and "3 entries remain" in out
    assert [p.exists() for p in paths] == [False, True, True, True]
    code, out, _ = _cli(capsys, "cache", "prune", "--model", "model-3", "--cache-dir", str(root))  # a name, any length
    assert code == 0 and "removed 1 entries" in out
    assert [p.exists() for p in paths] == [False, True, True, False]


def test_prune_older_than_never_removes_a_temporary_file_younger_than_an_hour(tmp_path, capsys):
    root = tmp_path / "c"
    entry = _put(root, "aa00", "aaaa1111bbbb2222", "model-a")
    os.utime(entry, (time.time() - 86400,) * 2)
    now = time.time()
    ages = (0, 1800, 3000, 5400, 9000)  # seconds since each temporary file was last written
    temps = {age: entry.parent / f".aa00.pt.{age}.tmp" for age in ages}
    for age, path in temps.items():
        path.write_bytes(b"half an entry")
        os.utime(path, (now - age,) * 2)

    def left() -> list[int]:
        return [age for age in ages if temps[age].exists()]

    # longer than the one-hour floor: --older-than is the limit for temporary files too
    code, out, _ = _cli(capsys, "cache", "prune", "--older-than", "2h", "--cache-dir", str(root))
    assert code == 0 and "removed 1 entries" in out and "1 stale temporary files" in out
    assert not entry.exists() and left() == [0, 1800, 3000, 5400]
    # shorter than the floor: a temporary file younger than an hour may be a write in progress
    code, out, _ = _cli(capsys, "cache", "prune", "--older-than", "0s", "--cache-dir", str(root))
    assert code == 0 and "1 stale temporary files" in out and left() == [0, 1800, 3000]
    code, out, _ = _cli(capsys, "cache", "prune", "--older-than", "10m", "--cache-dir", str(root))
    assert code == 0 and "stale temporary" not in out and left() == [0, 1800, 3000]


# ----------------------------------------------------------------------------- few-shot boundaries


def test_a_class_with_exactly_k_train_samples_is_not_short_one_with_k_minus_1_is():
    g = torch.Generator().manual_seed(8)
    y = torch.tensor([0] * 4 + [1] * 3 + [2] * 5)
    x = torch.nn.functional.normalize(torch.randn(len(y), 6, generator=g), dim=-1)
    options = ProbeOptions(epochs=1, val_fraction=0.0)
    four, three = fewshot_probe(x, y, x, y, shots=[4, 3], seeds=[0], options=options)
    assert torch.bincount(y[four.train_indices], minlength=3).tolist() == [4, 3, 4]
    assert four.short_classes == [1] and four.summary()["short_classes"] == 1  # 3 = K-1; class 0 has exactly K
    assert torch.bincount(y[three.train_indices], minlength=3).tolist() == [3, 3, 3]
    assert three.short_classes == []  # class 1 has exactly K
    _, short = sample_shots(y, 5, torch.Generator().manual_seed(0), n_classes=4)
    assert short == [0, 1, 3]  # 4 and 3 samples, and none; class 2 has exactly 5


def test_a_label_equal_to_the_number_of_classes_is_refused_by_the_probe():
    x = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(2)), dim=-1)
    ok = torch.tensor([0, 1, 2, 0, 1, 2])
    bad = torch.tensor([0, 1, 2, 0, 1, 3])  # 3 == n_classes
    options = ProbeOptions(epochs=1, val_fraction=0.0)
    with pytest.raises(ValueError, match=r"train labels outside \[0, 3\)"):
        fewshot_probe(x, bad, x, ok, shots=[1], seeds=[0], n_classes=3, options=options)
    with pytest.raises(ValueError, match=r"test labels outside \[0, 3\)"):
        fewshot_probe(x, ok, x, bad, shots=[1], seeds=[0], n_classes=3, options=options)
    (run,) = fewshot_probe(x, ok, x, ok, shots=[1], seeds=[0], n_classes=3, options=options)  # 2 < 3 is fine
    assert len(run.train_indices) == 3


def test_a_label_equal_to_the_number_of_classes_is_a_data_error_naming_the_sample(tiny_arch, tmp_path):
    root = make_wds(tmp_path / "wds_six", n_per_class=2, nshards=2)  # labels 0..5
    names = (root / "classnames.txt").read_text().splitlines()
    (root / "classnames.txt").write_text("\n".join(names[:5]) + "\n")  # 5 classes: label 5 is one too many
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "lp.yaml").write_text(
        "task: lp\nfamily: linear_probe\n"
        f"source: {{type: wds, path: {root}}}\ntrain_source: {{type: wds, path: {root}}}\n"
        "fewshot: {shots: [1], seeds: 1, epochs: 1, val_fraction: 0}\n")
    with pytest.raises(DataError, match=r"lp\.yaml: train_source sample \S*s000010 has label 5 but there are only "
                                        r"5 classes"):
        api.evaluate(f"open_clip:{tiny_arch}", "lp", task_dirs=[tasks], output_dir=tmp_path / "out", cache_dir=None,
                     progress=False, raise_errors=True)


# ----------------------------------------------------------------------------- truncated captions


def test_a_caption_of_exactly_the_context_length_is_not_counted_as_truncated(tiny_arch, tmp_path):
    from open_clip.tokenizer import SimpleTokenizer

    context = TINY_OPEN_CLIP["text_cfg"]["context_length"]
    bpe = SimpleTokenizer()  # open_clip's own, to check the captions' lengths independently of evalkit

    def caption(tokens: int) -> str:  # <start> + ``tokens`` word tokens + <end>
        text = " ".join(["square"] * tokens)
        assert len(bpe.encode(text)) == tokens
        return text

    exact, over, under = caption(context - 2), caption(context - 1), caption(context - 3)
    items = [(f"{i}.jpg", image_bytes(make_image(i % 6, i), "JPEG"), caps)
             for i, caps in enumerate([[exact, "a red square"], [over], [under, "a green square"], ["blue"]])]
    root = make_captions_dir(tmp_path / "caps", items)
    r = api.evaluate(f"open_clip:{tiny_arch}", f"captions:{root}", output_dir=tmp_path / "out", cache_dir=None,
                     progress=False, raise_errors=True).results[0]
    assert r.evalkit["captions"] == 6
    assert r.evalkit["captions_truncated"] == 1  # the one a token over; the exact one fits
