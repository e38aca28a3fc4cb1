"""Guards against defects that the other tests would let through.

Each test here was checked to fail with its defect put into the source (see the docstrings).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures import CLASSNAMES, image_bytes, image_features, make_image, make_wds
from PIL import Image
from torchvision import transforms as T

from evalkit import models
from evalkit.data.sources import SourceData, Unit, load_source
from evalkit.features.embed import FeatureCache, encode_texts, zero_shot_classifier
from evalkit.models.encoder import Encoder, ImageInput, Tower
from evalkit.models.prefix import SharedPrefixText
from evalkit.tasks.base import RunContext
from evalkit.tasks.classification import ClassificationFamily
from evalkit.tasks.spec import adhoc_spec
from evalkit.views.image import image_transform

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = [
    "a photo of a {c}.",
    "a blurry photo of the {c}, seen from far away.",
    "{c}",
    "a photo of the {c}" + " very" * 80,  # truncated: EOT forced at the last position
]


@pytest.fixture(scope="module")
def demo() -> Encoder:
    return models.load("eva-clip-demo")


@pytest.fixture(scope="module")
def demo_random() -> Encoder:
    """The same architecture with other (untrained, seeded) weights."""
    return models.load("eva-clip-demo", weights="random")


# ------------------------------------------------------------------ 1. fingerprint in cache keys


def test_two_models_sharing_a_cache_dir_get_their_own_image_features(demo, demo_random, tmp_path):
    """Defect: the fingerprint dropped from image_features' cache key."""
    assert demo.fingerprint != demo_random.fingerprint
    data = load_source({"type": "wds", "path": str(make_wds(tmp_path / "wds", n_per_class=2))}, None, "t")
    shared = tmp_path / "one-cache-dir"
    # a run of each model, as two processes would do (a fresh FeatureCache over the same folder)
    first = image_features(demo, data, {"crop": image_transform(demo, "crop")}, cache=FeatureCache(shared), progress=False)
    second = image_features(demo_random, data, {"crop": image_transform(demo_random, "crop")}, cache=FeatureCache(shared),
                            progress=False)
    own = image_features(demo_random, data, {"crop": image_transform(demo_random, "crop")}, cache=None, progress=False)
    assert not torch.allclose(first["crop"].features, own["crop"].features, atol=1e-3), "the models must differ"
    torch.testing.assert_close(second["crop"].features, own["crop"].features, rtol=0, atol=1e-6)
    assert second["crop"].computed == len(own["crop"].keys), "the second model must compute its own features"
    # and in one process, one cache object: the in-memory layer must keep them apart too
    cache = FeatureCache(None)
    image_features(demo, data, {"crop": image_transform(demo, "crop")}, cache=cache, progress=False)
    again = image_features(demo_random, data, {"crop": image_transform(demo_random, "crop")}, cache=cache, progress=False)
    torch.testing.assert_close(again["crop"].features, own["crop"].features, rtol=0, atol=1e-6)


def test_two_models_sharing_a_cache_dir_get_their_own_classifier(demo, demo_random, tmp_path):
    """Defect: the fingerprint dropped from zero_shot_classifier's cache key."""
    shared = tmp_path / "one-cache-dir"
    first = zero_shot_classifier(demo, CLASSNAMES, TEMPLATES[:2], FeatureCache(shared))
    second = zero_shot_classifier(demo_random, CLASSNAMES, TEMPLATES[:2], FeatureCache(shared))
    own = zero_shot_classifier(demo_random, CLASSNAMES, TEMPLATES[:2], None)
    assert not torch.allclose(first, own, atol=1e-3), "the models must differ"
    torch.testing.assert_close(second, own, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ 2. best-of-both is the maximum

# Two colours; an image is 3 squares wide. "centre" images carry their class colour in the middle
# third (what crop keeps) and the other colour on the sides (two thirds of what squash sees);
# "sides" images the reverse. So crop is right on exactly the centre images, squash on the sides ones.
RED, BLUE = (255, 0, 0), (0, 0, 255)
COLOUR = {"red": RED, "blue": BLUE}


def _wide(true: tuple, other: tuple, centre: bool, side: int = 8) -> Image.Image:
    arr = np.empty((side, 3 * side, 3), dtype=np.uint8)
    arr[:, :] = other if centre else true
    arr[:, side:2 * side] = true if centre else other
    return Image.fromarray(arr)


def _colour_encoder() -> Encoder:
    """A stub model: an image's feature is its mean normalised colour, a prompt's is the one-hot
    colour it names. Zero-shot it predicts the colour that covers most of what it sees."""

    def tokenize(texts):
        return torch.tensor([[1 if "red" in t else 2] for t in texts])

    def text_fn(tokens):
        return torch.stack([torch.tensor([1.0, 0.0, 0.0]) if int(t[0]) == 1 else torch.tensor([0.0, 0.0, 1.0])
                            for t in tokens])

    image = Tower(lambda x: x.mean(dim=(2, 3)), ImageInput(8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    return Encoder(name="stub-colour", model=torch.nn.Identity(), tokenizer=tokenize, embed_dim=3, causal_text=False,
                   towers={"image": image}, weights="stub", arch={"family": "stub-colour"}, weights_digest="stub",
                   _text_fn=text_fn)


@pytest.mark.parametrize("n_centre,n_sides", [(3, 1), (1, 3)], ids=["crop-better", "squash-better"])
def test_best_of_both_reports_the_maximum(tmp_path, n_centre, n_sides):
    """Defects: _combine taking the min, best_transform_by_metric / best_transform the min."""
    root = tmp_path / "colours"
    for name, colour in COLOUR.items():
        other = BLUE if colour == RED else RED
        (root / name).mkdir(parents=True)
        for i in range(n_centre + n_sides):
            _wide(colour, other, centre=i < n_centre).save(root / name / f"{i}.png")
    n = 2 * (n_centre + n_sides)
    want = {"crop": 2 * n_centre / n, "squash": 2 * n_sides / n}  # from how the images are drawn
    better = max(want, key=want.get)

    ctx = RunContext(output_dir=tmp_path / "out", batch_size=3, transform="best-of-both", progress=False)
    result = ClassificationFamily().run(adhoc_spec(f"folder:{root}"), _colour_encoder(), ctx)
    m = result.metrics
    assert (m["acc1@crop"], m["acc1@squash"]) == (want["crop"], want["squash"]), m
    assert m["acc1"] == max(m["acc1@crop"], m["acc1@squash"]), f"acc1 must be the better transform's: {m}"
    assert m["acc1"] != min(m["acc1@crop"], m["acc1@squash"]), m
    mpcr = [m["mean_per_class_recall@crop"], m["mean_per_class_recall@squash"]]
    assert mpcr[0] != mpcr[1] and m["mean_per_class_recall"] == max(mpcr), m
    assert result.evalkit["best_transform"] == better
    assert result.evalkit["best_transform_by_metric"] == {"acc1": better, "mean_per_class_recall": better}
    assert result.evalkit["transforms_run"] == ["crop", "squash"]


# ------------------------------------------------------------------ 3. prefix must stop before EOT


def _calls_to_suffix(enc, fn):
    calls = []
    real = enc.encode_text_suffix
    enc.encode_text_suffix = lambda *a: calls.append(a[1].shape[0]) or real(*a)
    try:
        return fn(), calls
    finally:
        del enc.encode_text_suffix


@pytest.mark.parametrize("classnames", [["red square"], ["x"]], ids=["one-class", "one-short-class"])
def test_single_class_classifier_equals_whole_prompts(demo, classnames):
    """Defect: the `min(..., pool_at)` clamp removed in _encode_shared_prefixes (a one-member group's
    common prefix is the whole prompt, EOT and padding included)."""
    try:
        demo.share_text_prefix = False
        want = zero_shot_classifier(demo, classnames, TEMPLATES)
        demo.share_text_prefix = True
        assert isinstance(demo.shared_prefix, SharedPrefixText)
        got, calls = _calls_to_suffix(demo, lambda: zero_shot_classifier(demo, classnames, TEMPLATES))
    finally:
        demo.share_text_prefix = True
    assert sum(calls) == len(TEMPLATES), "the shared-prefix path must have been taken"
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_identical_prompts_equal_whole_prompts(demo):
    """Same defect: a group of identical prompts shares everything up to the end of the context."""
    texts = ["a photo of a cat."] * 3 + ["cat"] * 2 + ["a long one" + " very" * 90] * 2 + ["a photo of a dog."]
    groups = [[0, 1, 2], [3, 4], [5, 6], [7]]
    try:
        demo.share_text_prefix = False
        want = encode_texts(demo, texts, batch_size=3)
        demo.share_text_prefix = True
        got, calls = _calls_to_suffix(demo, lambda: encode_texts(demo, texts, batch_size=3, groups=groups))
    finally:
        demo.share_text_prefix = True
    assert sum(calls) == len(texts), "the shared-prefix path must have been taken"
    # raw (unnormalised) features of norm ~10: compared as the directions a classifier uses
    torch.testing.assert_close(F.normalize(got, dim=-1), F.normalize(want, dim=-1), rtol=0, atol=1e-6)
    # the whole-prompt reference itself: the model's own forward at full length
    full = demo.model.encode_text(demo.tokenize(texts)).detach()
    torch.testing.assert_close(want, full, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ 4. atomic result writes

_WRITER = textwrap.dedent("""
    import resource, signal, sys
    from evalkit.results import atomic_write_bytes
    path, mode, limit, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # killed: the kernel's SIGXFSZ ends the process mid-write (Python ignores it by default);
    # exception: ignored, the write fails with EFBIG instead
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL if mode == "killed" else signal.SIG_IGN)
    # no file may grow past `limit` bytes: the kernel stops the write there (SIGXFSZ kills)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        atomic_write_bytes(path, b"N" * size)
    except OSError as e:
        print("raised", e.errno)
        sys.exit(3)
    print("completed")
""")


@pytest.mark.parametrize("mode", ["killed", "exception"])
def test_result_write_interrupted_midway_keeps_the_old_file(tmp_path, mode):
    """Defect: atomic_write_bytes writing straight to the path."""
    import signal

    folder = tmp_path / "runs" / "m"
    folder.mkdir(parents=True)
    target = folder / "task.json"
    old = b'{"old": "' + b"O" * (256 * 1024) + b'"}\n'
    target.write_bytes(old)
    limit, size = 1 << 20, 4 << 20  # the new payload is cut off after its first MiB
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(target), mode, str(limit), str(size)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    if mode == "killed":
        assert proc.returncode == -signal.SIGXFSZ, (proc.returncode, proc.stdout, proc.stderr)
    else:
        assert proc.returncode == 3 and proc.stdout.startswith("raised"), (proc.returncode, proc.stdout, proc.stderr)
    data = target.read_bytes()
    assert data == old, f"the old file was damaged: {len(data)} bytes, starts {data[:12]!r}"
    if mode == "exception":
        assert sorted(p.name for p in folder.iterdir()) == ["task.json"], "a temporary file was left behind"


# ------------------------------------------------------------------ 5. --limit counts skipped samples

CORRUPT = {1, 2, 5, 9}  # sample indices whose image does not decode; 12 samples in 4 shards of 3


def _wds_with_corrupt(root: Path, n: int = 12, per_shard: int = 3) -> list[str]:
    """Shards of `per_shard` samples; returns every sample's key in order, as evalkit names them."""
    split = root / "test"
    split.mkdir(parents=True)
    keys = []
    for s in range(-(-n // per_shard)):
        with tarfile.open(split / f"{s}.tar", "w") as tar:
            for k in range(s * per_shard, min(n, (s + 1) * per_shard)):
                label = k % len(CLASSNAMES)
                data = b"\x89PNG broken" if k in CORRUPT else image_bytes(make_image(label, k))
                for ext, payload in (("png", data), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"s{k:06d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                keys.append(f"{s}.tar/s{k:06d}")
    (split / "nshards.txt").write_text(f"{-(-n // per_shard)}\n")
    (root / "classnames.txt").write_text("\n".join(CLASSNAMES) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    return keys


@pytest.mark.parametrize("limit", [2, 3, 5, 7, 10, 12, 20])
def test_limit_counts_skipped_samples_across_shards(demo, tmp_path, limit):
    """Defect: `remaining` decremented by the evaluated samples only (skipped ones not counted)."""
    keys = _wds_with_corrupt(tmp_path / "wds")
    first = keys[:limit]
    want_skipped = [k for i, k in enumerate(first) if i in CORRUPT]
    want_evaluated = [k for i, k in enumerate(first) if i not in CORRUPT]
    cache = FeatureCache(tmp_path / "cache")
    for attempt in ("computed", "cached"):
        ctx = RunContext(output_dir=tmp_path / "out", batch_size=2, limit=limit, progress=False, cache=cache)
        result = ClassificationFamily().run(adhoc_spec(f"wds:{tmp_path / 'wds'}"), demo, ctx)
        ev = result.evalkit
        assert (ev["evaluated"], ev["skipped"]) == (len(want_evaluated), len(want_skipped)), \
            f"{attempt}, --limit {limit}: evaluated {ev['evaluated']} + skipped {ev['skipped']}"
        assert ev["samples"] == len(first), attempt
        assert ev["skipped_keys"] == want_skipped, attempt
    feats = image_features(demo, load_source({"type": "wds", "path": str(tmp_path / "wds")}, None, "t"),
                           {"crop": image_transform(demo, "crop")}, cache=cache, limit=limit, progress=False)["crop"]
    assert feats.keys == want_evaluated
    assert [k for k, _ in feats.skipped] == want_skipped


class _BrokenImage(Exception):
    pass


def _sized_units(n_units: int = 4, per_unit: int = 3) -> tuple[SourceData, list[str]]:
    """Units of known size (like the index-range units of folder/hf sources)."""
    img = make_image(0, 0)

    def unit(u: int) -> Unit:
        def samples():
            for k in range(u * per_unit, (u + 1) * per_unit):
                def load(k=k):
                    if k in CORRUPT:
                        raise _BrokenImage(f"sample {k} is corrupt")
                    return img
                yield f"u{u}/{k}", load, 0
        return Unit(id=f"guards-range[{u}]", samples=samples, size=per_unit)

    keys = [f"u{u}/{k}" for u in range(n_units) for k in range(u * per_unit, (u + 1) * per_unit)]
    return SourceData([unit(u) for u in range(n_units)], classnames=["a"], templates=["{c}"]), keys


@pytest.mark.parametrize("limit", [2, 3, 4, 6, 8, 11])
def test_limit_counts_skipped_samples_across_sized_units(demo, limit):
    """Same defect, on units whose size is known up front."""
    data, keys = _sized_units()
    first = keys[:limit]
    cache = FeatureCache(None)
    for attempt in ("computed", "cached"):
        feats = image_features(demo, data, {"crop": image_transform(demo, "crop")}, cache=cache, limit=limit,
                               progress=False)["crop"]
        assert feats.keys == [k for i, k in enumerate(first) if i not in CORRUPT], attempt
        assert [k for k, _ in feats.skipped] == [k for i, k in enumerate(first) if i in CORRUPT], attempt
        assert len(feats.keys) + len(feats.skipped) == limit


# ------------------------------------------------------------------ 6. report rounding-interval boundary


@pytest.mark.parametrize("acc1,claimed,status", [
    (0.5078125, "50.7812", "reproduced"),  # 50.78125 (exact) is the top of [50.78115, 50.78125]
    (0.5078125, "50.7813", "reproduced"),  # ... and the bottom of [50.78125, 50.78135]
    (0.5078125, "50.7811", "untested"),  # 0.0001 beyond either end
    (0.5078125, "50.7814", "untested"),
    (0.5, "50", "reproduced"),  # no decimals: [49.5, 50.5]
    (0.5, "49.9", "untested"),  # [49.85, 49.95]
])
def test_report_rounding_boundary(tmp_path, acc1, claimed, status):
    """Defect: `<` instead of `<=` at the ends of the claim's rounding interval in verdicts.judge,
    decimals not read from the claim's text, or a slack that swallows a real difference. The
    result has no N, so no interval: outside the rounding interval it differs."""
    from evalkit.cli.main import main
    from evalkit.reporting import report
    from evalkit.reporting.claims import load_claims
    from evalkit.results import TaskResult, write_result

    out = tmp_path / "out"
    write_result(TaskResult(dataset="cifar10", model="m", pretrained="test", task="zeroshot_classification",
                            metrics={"acc1": acc1}), out)  # × 100 is exact for both values
    claims_csv = tmp_path / "claims.csv"
    claims_csv.write_text("model,task,metric,claimed\n" f"m,cifar10,acc1,{claimed}\n")
    table = report.verified_table(out, load_claims(claims_csv))
    row = table[table["task"] == "cifar10"].iloc[0]
    assert row["verified"] == acc1 * 100 and row["claimed"] == float(claimed)
    assert row["status"] == status, (claimed, row["delta"], row["reason"])
    # the CI gate of the README (exit 1 on a claim that differs); --tolerance is ignored now
    rc = main(["report", "--output-dir", str(out), "--claims", str(claims_csv), "--model", "m",
               "--tolerance", "5", "--fail-on-differ"])
    assert rc == (0 if status == "reproduced" else 1)


# ------------------------------------------------------------------ 7. int8 outlier threshold


def test_int8_layers_use_the_documented_outlier_threshold():
    """Defect: another llm_int8_threshold where quantize.py builds the int8 layers.
    README: outlier columns above the 6.0 threshold."""
    import bitsandbytes as bnb

    enc = models.load("eva-clip-demo", precision="int8")
    layers = {name: m for name, m in enc.model.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)}
    assert layers, "no Linear8bitLt layer in the int8 model"
    wrong = {name: m.state.threshold for name, m in layers.items() if m.state.threshold != 6.0}
    assert not wrong, f"int8 layers with another outlier threshold: {wrong}"
    # the blocks' Linear layers (README list) are all quantised
    linears = [n for n, m in enc.model.named_modules()
               if isinstance(m, torch.nn.Linear) and (".blocks." in n or ".resblocks." in n)]
    assert linears and all(n in layers for n in linears), sorted(set(linears) - set(layers))


# ------------------------------------------------------------------ 8. --save-predictions scores


def test_saved_prediction_scores_are_100_times_cosine(demo, tmp_path):
    """Defects: top_scores not 100 x cosine (unscaled, unnormalised) or rounded otherwise."""
    templates = ["a photo of a {c}.", "a {c}."]
    root = make_wds(tmp_path / "wds", n_per_class=2, nshards=2, templates=templates)
    ctx = RunContext(output_dir=tmp_path / "out", batch_size=5, save_predictions=True, progress=False)
    spec = adhoc_spec(f"wds:{root}")
    ClassificationFamily().run(spec, demo, ctx)
    path = tmp_path / "out" / "runs" / "eva-clip-demo" / f"{spec.name}.predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]

    # independently: the images from the tars, torchvision's transforms, the model's own forward
    image = demo.tower("image").input
    pre = T.Compose([T.Resize(image.size, interpolation=T.InterpolationMode.BICUBIC),
                     T.CenterCrop(image.size), T.ToTensor(), T.Normalize(image.mean, image.std)])
    images, labels = {}, {}
    for tar_path in sorted((root / "test").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.rsplit(".", 1)
                payload = tar.extractfile(member).read()
                if ext == "png":
                    images[f"{tar_path.name}/{key}"] = pre(Image.open(io.BytesIO(payload)).convert("RGB"))
                else:
                    labels[f"{tar_path.name}/{key}"] = int(payload)
    assert sorted(r["key"] for r in rows) == sorted(images)
    with torch.no_grad():
        per_class = []
        for c in CLASSNAMES:
            t = F.normalize(demo.model.encode_text(demo.tokenize([tp.format(c=c) for tp in templates])), dim=-1)
            per_class.append(F.normalize(t.mean(dim=0), dim=-1))
        classifier = torch.stack(per_class, dim=1)
        keys = [r["key"] for r in rows]
        feats = F.normalize(demo.model.encode_image(torch.stack([images[k] for k in keys])), dim=-1)
        scores = 100 * feats @ classifier
    top = scores.topk(5, dim=1)
    for r, idx, sc in zip(rows, top.indices.tolist(), top.values.tolist(), strict=True):
        assert r["label"] == labels[r["key"]]
        assert r["top_classes"] == idx, r
        assert all(round(s, 4) == s for s in r["top_scores"]), f"scores not rounded to 4 decimals: {r}"
        # written rounded to 4 decimals: within half a unit of the 4th decimal (plus float noise)
        diffs = [abs(a - b) for a, b in zip(r["top_scores"], sc, strict=True)]
        assert max(diffs) <= 5e-5 + 1e-5, (r["key"], r["top_scores"], sc)


# ------------------------------------------------------------------ unknown names: the hint must work


@pytest.mark.parametrize("family,source_type,code", [("classificaton", "wds", 2), ("classification", "wdss", 1)],
                         ids=["unknown-family", "unknown-source"])
def test_unknown_name_hint_is_a_working_list_command(tmp_path, capsys, family, source_type, code):
    """A typo in a task file's family or source type: the error suggests the close match and, when
    it points to `evalkit list ...`, that command must exist. The family is known when the task is
    resolved (a usage error, exit 2, nothing run); the source type when the task's data is read,
    which fails that task alone, in one line (exit 1)."""
    import re

    from evalkit.cli.main import main

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text(f"task: typo-task\nfamily: {family}\n"
                                  f"source: {{type: {source_type}, path: {tmp_path / 'nowhere'}}}\n"
                                  "classnames: [a, b]\ntemplates: ['{c}']\n")
    rc = main(["run", "--model", "eva-clip-demo", "--tasks", "typo-task", "--task-dir", str(tasks),
               "--output-dir", str(tmp_path / "out"), "--no-cache", "--quiet"])
    err = capsys.readouterr().err
    assert rc == code, err
    typo = family if family != "classification" else source_type
    assert "unknown" in err and repr(typo) in err and "did you mean" in err, err
    for command in re.findall(r"see `evalkit list ([^`]*)`", err):
        try:
            code = main(["list", *command.split()])
        except SystemExit as e:  # argparse rejects it
            code = e.code
        listed = capsys.readouterr()
        assert code == 0, f"the hint `evalkit list {command}` does not work: {listed.err.strip()}"
    if family != "classification":
        assert "`evalkit list families`" in err, err
