"""The few-shot linear-probe family (evalkit/tasks/probe.py, evalkit/tasks/linear_probe.py): clip_benchmark's
``linear_probe`` on the same features gives the same accuracy and weight decay; K samples per class,
disjoint from the validation split, reproducible per seed; and the demo model end to end (one feature
pass per split, accuracy rising with K, identical reruns)."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from unittest import mock

import pytest
import torch
from clip_benchmark.metrics import linear_probe as cb
from clocks import TimedEncoder

from evalkit import api, models
from evalkit.data.sources import DataError
from evalkit.features.embed import FeatureCache
from evalkit.models.zoo import DEMO_WEIGHTS
from evalkit.results import read_result
from evalkit.tasks.base import RunContext
from evalkit.tasks.linear_probe import LinearProbeFamily
from evalkit.tasks.probe import (
    ProbeOptions,
    fewshot_metrics,
    fewshot_probe,
    mean_and_std,
    sample_shots,
    split_train_val,
    train_linear_probe,
)
from evalkit.tasks.spec import TaskIndex, TaskSpecError

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:clip_benchmark"),
              pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning")]

# a quick probe for the tests that look at samples, not accuracy
QUICK = ProbeOptions(epochs=1, wd_points=5, wd_init_points=3, wd_refine_span=1)


def _clusters(n: int, n_classes: int, dim: int, generator: torch.Generator, noise: float = 1.0):
    """Unit features around one random centre per class (classes in turn), labels."""
    centres = torch.randn(n_classes, dim, generator=generator)
    labels = torch.arange(n) % n_classes
    feats = centres[labels] + noise * torch.randn(n, dim, generator=generator)
    return torch.nn.functional.normalize(feats, dim=-1), labels


@pytest.fixture(scope="module")
def features():
    g = torch.Generator().manual_seed(11)
    train_x, train_y = _clusters(150, 5, 16, g)
    test_x, test_y = _clusters(80, 5, 16, g)
    return train_x, train_y, test_x, test_y


# ----------------------------------------------------------------------------- clip_benchmark


def _cpu_only():
    """clip_benchmark's linear probe asserts device == 'cuda' and moves its model there; run its
    code on the CPU: .cuda() is a no-op, DataParallel sees no GPU, train/infer get device 'cpu'."""
    train, infer = cb.train, cb.infer
    return [
        mock.patch.object(torch.nn.Module, "cuda", lambda self, *a, **k: self),
        mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self),
        mock.patch.object(torch.cuda, "is_available", lambda: False),
        mock.patch.object(torch.cuda, "device_count", lambda: 0),
        mock.patch.object(cb, "train", lambda *a: train(*a[:7], "cpu", a[8])),
        mock.patch.object(cb, "infer", lambda model, loader, amp, device: infer(model, loader, amp, "cpu")),
    ]


def _clip_benchmark(features, k: int, seed: int, val_fraction: float, options: ProbeOptions, root: Path) -> dict:
    """clip_benchmark's run on cached features: its CLI's ``torch.manual_seed(seed)`` and
    ``random_split`` of the train set (--val_proportion), the split's features saved where
    ``evaluate`` looks for its cache, then ``evaluate`` itself."""
    train_x, train_y, test_x, test_y = features
    model_id = f"m-{k}-{seed}-{val_fraction}-{len(train_y)}"
    folder = root / model_id
    folder.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if val_fraction:
            part, val = torch.utils.data.random_split(range(len(train_y)), [1 - val_fraction, val_fraction])
            torch.save(train_x[val.indices], folder / "features_val.pt")
            torch.save(train_y[val.indices], folder / "targets_val.pt")
            part = part.indices
        else:
            part = list(range(len(train_y)))
        torch.save(train_x[part], folder / "features_train.pt")
        torch.save(train_y[part], folder / "targets_train.pt")
        torch.save(test_x, folder / "features_test.pt")
        torch.save(test_y, folder / "targets_test.pt")
        patches = _cpu_only()
        for p in patches:
            p.start()
        try:
            return cb.evaluate(torch.nn.Identity(), None, None, k, options.batch_size, 0, options.lr, options.epochs,
                               model_id, seed, str(root), "cuda", val_dataloader=object() if val_fraction else None,
                               amp=False, verbose=False)
        finally:
            for p in reversed(patches):
                p.stop()


def test_equals_clip_benchmark_linear_probe(features, tmp_path, capsys):
    """Same features, seed and hyper-parameters: the same weight decay from the sweep and the same
    test accuracy as clip_benchmark's evaluate, for K that do and do not fill a batch, with and
    without a validation split."""
    options = ProbeOptions(lr=0.1, epochs=3, batch_size=8, val_fraction=0.2)
    chosen = set()
    for k, seed, val_fraction in [(1, 0, 0.2), (3, 1, 0.2), (5, 2, 0.2), (4, 0, 0.3), (2, 3, 0.0)]:
        opts = ProbeOptions(**{**options.as_dict(), "val_fraction": val_fraction})
        theirs = _clip_benchmark(features, k, seed, val_fraction, opts, tmp_path)
        mine, = fewshot_probe(*features, shots=[k], seeds=[seed], options=opts)
        assert (mine.acc1, mine.weight_decay) == (theirs["lp_acc1"], theirs["weight_decay"]), (k, seed)
        chosen.add(mine.weight_decay)
    capsys.readouterr()  # clip_benchmark's progress lines
    assert len(chosen) >= 3  # the sweep chose different weight decays: it was not a no-op


def test_training_equals_clip_benchmark_train(features):
    """clip_benchmark's ``train`` (global RNG re-seeded, DataLoader shuffling, AdamW, cosine LR) and
    evalkit's give bit-identical weights; a partial last batch included."""
    x, y = features[0][:37], features[1][:37]
    options = ProbeOptions(lr=0.05, epochs=4, batch_size=8)
    loader = torch.utils.data.DataLoader(cb.FeatureDataset(x, y), batch_size=8, shuffle=True, num_workers=0)
    patches = _cpu_only()[:4]
    with torch.random.fork_rng(devices=[]):
        for p in patches:
            p.start()
        try:
            theirs = cb.train(loader, 16, 5, 0.01, options.lr, options.epochs, False, "cpu", 7).module
        finally:
            for p in reversed(patches):
                p.stop()
    mine = train_linear_probe(x, y, 5, 0.01, options, seed=7)
    assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)


@pytest.mark.parametrize("n, fraction", [(150, 0.2), (7, 0.3), (10, 0.1), (33, 0.5)])
def test_validation_split_is_torchs_random_split(n, fraction):
    part, val = split_train_val(n, fraction, torch.Generator().manual_seed(5))
    a, b = torch.utils.data.random_split(range(n), [1 - fraction, fraction], generator=torch.Generator().manual_seed(5))
    assert part.tolist() == a.indices and val.tolist() == b.indices


def test_shots_are_the_first_k_of_each_class_in_one_permutation():
    """The vectorised draw against clip_benchmark's loop over the permutation."""
    labels = torch.randint(0, 7, (200,), generator=torch.Generator().manual_seed(1))
    for k in (1, 3, 16, 40):
        picked, short = sample_shots(labels, k, torch.Generator().manual_seed(9), n_classes=8)
        counts: dict[int, int] = {}
        expected = []
        for p in torch.randperm(200, generator=torch.Generator().manual_seed(9)).tolist():
            c = int(labels[p])
            if counts.get(c, 0) < k:
                counts[c] = counts.get(c, 0) + 1
                expected.append(p)
        assert picked.tolist() == expected
        assert short == [c for c in range(8) if counts.get(c, 0) < k]


# ----------------------------------------------------------------------------- sampling


def test_k_per_class_disjoint_from_validation_nested_and_reproducible(features):
    train_x, train_y, test_x, test_y = features
    shots, seeds = [1, 2, 4, 8], [0, 1, 2]
    runs = fewshot_probe(train_x, train_y, test_x, test_y, shots=shots, seeds=seeds, options=QUICK)
    again = fewshot_probe(train_x, train_y, test_x, test_y, shots=shots, seeds=seeds, options=QUICK)
    assert [(r.acc1, r.weight_decay, r.train_indices, r.val_indices) for r in runs] == \
           [(r.acc1, r.weight_decay, r.train_indices, r.val_indices) for r in again]
    by = {(r.shots, r.seed): r for r in runs}
    for (k, seed), r in by.items():
        picked = torch.tensor(r.train_indices)
        assert torch.bincount(train_y[picked], minlength=5).tolist() == [k] * 5  # K × classes
        assert len(set(r.train_indices)) == 5 * k
        assert not set(r.train_indices) & set(r.val_indices)  # never a validation sample
        assert len(r.val_indices) == 15 and r.short_classes == []  # 10 % of 150
        if k > 1:  # one seed's draws do not depend on K: the smaller sets are inside the larger
            assert set(by[(k // 2, seed)].train_indices) <= set(r.train_indices)
    for k in shots:  # seeds draw other samples
        assert len({tuple(by[(k, s)].train_indices) for s in seeds}) == len(seeds)
    assert len({tuple(by[(1, s)].val_indices) for s in seeds}) == len(seeds)


def test_a_class_short_of_k_gives_what_it_has_and_is_counted():
    g = torch.Generator().manual_seed(3)
    x = torch.nn.functional.normalize(torch.randn(43, 8, generator=g), dim=-1)
    y = torch.tensor([0] * 20 + [1] * 20 + [2] * 3)
    run, = fewshot_probe(x, y, x[:10], y[:10], shots=[5], seeds=[0], n_classes=4,
                         options=ProbeOptions(**{**QUICK.as_dict(), "val_fraction": 0.0}))
    assert torch.bincount(y[run.train_indices], minlength=4).tolist() == [5, 5, 3, 0]
    assert run.short_classes == [2, 3] and run.weight_decay == 0.0 and run.val_indices == []


def test_mean_and_population_std():
    values = [0.61, 0.7, 0.655]
    mean, std = mean_and_std(values)
    assert math.isclose(mean, statistics.fmean(values)) and math.isclose(std, statistics.pstdev(values))
    runs = fewshot_probe(*_tiny(), shots=[2, 1], seeds=[0, 1], options=QUICK)
    metrics = fewshot_metrics(runs)
    assert list(metrics) == ["acc1@1shot", "acc1@1shot_std", "acc1@2shot", "acc1@2shot_std"]
    accs = [r.acc1 for r in runs if r.shots == 2]
    assert math.isclose(metrics["acc1@2shot_std"], statistics.pstdev(accs))


def _tiny():
    g = torch.Generator().manual_seed(4)
    x, y = _clusters(40, 4, 8, g)
    return x, y, x, y


# ----------------------------------------------------------------------------- task files


FEWSHOT_TASK = """\
task: sw-fewshot
version: 1
family: linear_probe
source: {{type: shapeworld, task: shape, split: test, n: {n_test}, seed: 5}}
train_source: {{type: shapeworld, task: shape, split: train, n: {n_train}, seed: 5}}
fewshot: {fewshot}
{extra}"""


def _task_dir(root: Path, n_train: int = 200, n_test: int = 240, fewshot: str = "{shots: [1, 2, 4, 8, 16], seeds: 3}",
              extra: str = "metric: acc1@16shot\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sw-fewshot.yaml").write_text(FEWSHOT_TASK.format(n_train=n_train, n_test=n_test, fewshot=fewshot,
                                                              extra=extra))
    return root


def _spec(root: Path):
    return TaskIndex.load([root]).tasks["sw-fewshot"]


@pytest.mark.parametrize("fewshot, extra, message", [
    ("{shots: [1, 2], lr2: 0.1}", "", r"sw-fewshot\.yaml: unknown field\(s\) \['lr2'\] in 'fewshot'"),
    ("{shots: [0, 2]}", "", r"sw-fewshot\.yaml: field 'fewshot.shots' must be"),
    ("{seeds: -1}", "", r"field 'fewshot.seeds' must be"),
    ("{val_fraction: 1.5}", "", r"field 'fewshot': val_fraction must be in \[0, 1\)"),
    ("{epochs: 2.5}", "", r"field 'fewshot': epochs must be a whole number"),
    ("{shots: [1, 2]}", "metric: acc1@16shot\n", r"field 'metric' must be acc1@Kshot for a K in fewshot.shots \[1, 2\]"),
    ("{shots: [1]}", "colour: 3\n", r"sw-fewshot\.yaml: unknown field\(s\) \['colour'\]"),
])
def test_bad_task_files_name_the_file_and_key(tmp_path, fewshot, extra, message):
    spec = _spec(_task_dir(tmp_path, fewshot=fewshot, extra=extra))
    with pytest.raises(TaskSpecError, match=message):
        LinearProbeFamily().validate(spec)


def test_train_source_is_required_and_must_be_labelled(tmp_path):
    (tmp_path / "t.yaml").write_text("task: t\nfamily: linear_probe\nsource: {type: shapeworld, n: 10}\n")
    with pytest.raises(TaskSpecError, match=r"t\.yaml: field 'train_source'"):
        LinearProbeFamily().validate(TaskIndex.load([tmp_path]).tasks["t"])
    (tmp_path / "t.yaml").write_text("task: t\nfamily: linear_probe\nsource: {type: shapeworld, n: 10}\n"
                                     "train_source: {type: shapeworld, task: retrieval, n: 10}\n")
    with pytest.raises(DataError, match=r"t\.yaml: train_source sample shapeworld-scene\S* has the target \[.*not a "
                                        r"class index"):
        LinearProbeFamily().prepare(TaskIndex.load([tmp_path]).tasks["t"], None)


def test_defaults_and_overrides(tmp_path):
    spec = _spec(_task_dir(tmp_path, fewshot="{}", extra=""))
    config = LinearProbeFamily().validate(spec)
    assert config.shots == (1, 2, 4, 8, 16) and config.seeds == (0, 1, 2)
    assert (config.probe.lr, config.probe.epochs, config.probe.batch_size) == (0.1, 10, 64)  # clip_benchmark's CLI
    assert config.probe.weight_decays()[::16] == pytest.approx([10.0 ** (-6 + 8 * i / 6) for i in range(7)])
    assert config.probe.initial_indices() == [0, 16, 32, 48, 64, 80, 96]
    over = config.with_overrides([4, 2], 5)
    assert over.shots == (2, 4) and over.seeds == (0, 1, 2, 3, 4) and over.probe == config.probe


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def demo_encoder():
    return models.load("eva-clip-demo")


@pytest.fixture(scope="module")
def first_run(demo_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot")
    spec = _spec(_task_dir(root / "tasks"))
    timed = TimedEncoder(demo_encoder)
    ctx = RunContext(output_dir=root / "out", batch_size=32, cache=FeatureCache(None), progress=False)
    result = LinearProbeFamily().run(spec, timed, ctx)
    return spec, timed, ctx, result


def test_demo_accuracy_rises_with_k_from_one_feature_pass(first_run):
    spec, timed, ctx, result = first_run
    m = result.metrics
    assert result.task == "linear_probe" and result.evalkit["metric"] == "acc1@16shot"
    assert set(m) == {f"acc1@{k}shot{s}" for k in (1, 2, 4, 8, 16) for s in ("", "_std")}
    assert 1 / 6 < m["acc1@1shot"] < m["acc1@4shot"] < m["acc1@16shot"]  # above chance, rising with K
    # one pass per split: every train and test image through the model once, in full batches
    assert timed.image.items == 200 + 240
    assert timed.image.calls == math.ceil(200 / 32) + math.ceil(240 / 32)
    runs = result.evalkit["runs"]["crop"]
    assert len(runs) == 5 * 3
    for k in (1, 2, 4, 8, 16):
        accs = [r["acc1"] for r in runs if r["shots"] == k]
        assert m[f"acc1@{k}shot"] == pytest.approx(statistics.fmean(accs))
        assert m[f"acc1@{k}shot_std"] == pytest.approx(statistics.pstdev(accs))
        assert all(r["train_samples"] == 6 * k and r["val_samples"] == 20 for r in runs if r["shots"] == k)
    assert any(m[f"acc1@{k}shot_std"] > 0 for k in (1, 2, 4, 8, 16))  # seeds differ from each other
    ev = result.evalkit
    assert ev["fewshot"]["shots"] == [1, 2, 4, 8, 16] and ev["fewshot"]["seeds"] == [0, 1, 2]
    assert ev["fewshot"]["lr"] == 0.1 and ev["fewshot"]["val_fraction"] == 0.1
    assert ev["evaluated"] == 240 and ev["train_evaluated"] == 200 and ev["n_classes"] == 6
    # one process encoded both splits
    assert ev["samples_per_rank"] == [200 + 240] and ev["train_samples_per_rank"] == [200]


def test_rerun_is_identical_and_needs_no_forward(first_run):
    spec, timed, ctx, result = first_run
    before = timed.image.copy()
    again = LinearProbeFamily().run(spec, timed, ctx)
    assert again.metrics == result.metrics
    assert again.evalkit["runs"] == result.evalkit["runs"]
    assert (timed.image - before).calls == 0  # both splits from the feature cache
    assert again.evalkit["samples_per_rank"] == [0] and again.evalkit["train_samples_per_rank"] == [0]


def test_shots_and_seeds_override_the_task(first_run):
    spec, timed, ctx, result = first_run
    import dataclasses

    before = timed.image.copy()
    r = LinearProbeFamily().run(spec, timed, dataclasses.replace(ctx, shots=[2, 4], seeds=2))
    assert set(r.metrics) == {"acc1@2shot", "acc1@2shot_std", "acc1@4shot", "acc1@4shot_std"}
    assert r.evalkit["metric"] == "acc1@4shot" and r.evalkit["metric_of_task"] == "acc1@16shot"
    assert [(x["shots"], x["seed"]) for x in r.evalkit["runs"]["crop"]] == [(2, 0), (4, 0), (2, 1), (4, 1)]
    # the same seeds give the same runs as in the full run
    full = {(x["shots"], x["seed"]): x for x in result.evalkit["runs"]["crop"]}
    assert all(x == full[(x["shots"], x["seed"])] for x in r.evalkit["runs"]["crop"])
    assert (timed.image - before).calls == 0


def _wide_folder(root: Path, split: str, n: int) -> Path:
    """ShapeWorld images on a canvas twice as wide, the shape at the left edge: a centre crop
    loses part of it, a squash keeps it, so the two transforms give other features."""
    from PIL import Image

    from evalkit.demo.shapeworld import SHAPES, generate

    for shape in SHAPES:
        (root / shape).mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(generate(n, seed=5, split=split, size=32)):
        canvas = Image.new("RGB", (64, 32), (128, 128, 128))
        canvas.paste(sample.image, (0, 0))
        canvas.save(root / sample.attrs.shape / f"{i:04d}.png")
    return root


def test_api_best_of_both_writes_the_better_transforms_numbers(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    _wide_folder(tmp_path / "data" / "train", "train", 120)
    _wide_folder(tmp_path / "data" / "test", "test", 60)
    (tasks / "wide.yaml").write_text(
        f"task: wide\nfamily: linear_probe\nsource: {{type: folder, path: {tmp_path / 'data' / 'test'}}}\n"
        f"train_source: {{type: folder, path: {tmp_path / 'data' / 'train'}}}\n"
        "fewshot: {shots: [1, 4], seeds: 2}\nview: {transform: best-of-both}\n")
    report = api.evaluate("eva-clip-demo", "wide", task_dirs=[tasks], output_dir=tmp_path / "out",
                          progress=False, raise_errors=True)
    saved = read_result(report.paths[0])
    assert saved.task == "linear_probe" and saved.metrics == report.results[0].metrics
    # clip_benchmark's key names the demo's weights folder; provenance keeps its whole path
    assert saved.pretrained == "weights" and saved.evalkit["weights"] == str(DEMO_WEIGHTS)
    assert os.path.basename(report.paths[0]) == "wide.json"
    m, ev = saved.metrics, saved.evalkit
    best = ev["best_transform"]
    assert ev["metric"] == "acc1@4shot" and set(ev["runs"]) == {"crop", "squash"}
    assert m["acc1@4shot@crop"] != m["acc1@4shot@squash"]  # the transforms differ here
    # every reported number is the better transform's (by the primary metric), a std with its mean
    assert m["acc1@4shot"] == max(m["acc1@4shot@crop"], m["acc1@4shot@squash"]) == m[f"acc1@4shot@{best}"]
    for key in ("acc1@1shot", "acc1@1shot_std", "acc1@4shot_std"):
        assert m[key] == m[f"{key}@{best}"]


def test_cli_shots_and_seeds(tmp_path, capsys):
    from evalkit.cli import main as cli
    out = tmp_path / "out"
    assert cli.main(["run", "--model", "eva-clip-demo", "--tasks", "shapeworld-shape-fewshot", "--shots", "4,1,4",
                     "--seeds", "2", "--output-dir", str(out), "--quiet", "--no-cache"]) == 0
    r = json.loads((out / "runs" / "eva-clip-demo" / "shapeworld-shape-fewshot.json").read_text())
    assert sorted(k for k in r["metrics"] if k.endswith("shot")) == ["acc1@1shot", "acc1@4shot"]
    assert len(r["evalkit"]["runs"]["crop"]) == 2 * 2  # 2 K values x seeds 0, 1
    with pytest.raises(SystemExit):
        cli.main(["run", "--model", "eva-clip-demo", "--tasks", "shapeworld-shape-fewshot", "--shots", "0,2"])
    assert "positive integers" in capsys.readouterr().err


def test_a_computed_train_split_is_not_reported_as_cached(tmp_path):
    from evalkit import api
    kw = dict(output_dir=tmp_path, progress=False, cache_dir=tmp_path / "cache", raise_errors=True, shots=[1], seeds=1)
    api.evaluate("eva-clip-demo", "shapeworld-shape", limit=None, **{k: v for k, v in kw.items()
                                                                     if k not in ("shots", "seeds")})
    r = api.evaluate("eva-clip-demo", "shapeworld-shape-fewshot", **kw).results[0]  # test split cached, train not
    assert r.evalkit["train_evaluated"] == 600 and r.evalkit["images_per_s"] > 0
    assert r.evalkit["samples_per_rank"] == [600]  # the train split, encoded here; the test split was cached
    again = api.evaluate("eva-clip-demo", "shapeworld-shape-fewshot", **kw).results[0]  # both cached now
    assert again.evalkit["images_per_s"] is None and again.evalkit["samples_per_rank"] == [0]
