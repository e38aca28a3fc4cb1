"""Linear probes on a whole train split (``probe:``; Table 7's ``imagenet1k-linear-probe``): the
probe equals clip_benchmark's ``linear_probe.evaluate`` with ``--fewshot_k -1`` on the same
features; the ImageNet task reads both ImageNet layouts (a torchvision folder tree and a
clip_benchmark WebDataset), its train split a declared split of the shared runner (cached,
counted, its skipped samples logged); Table 7's claims find its results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import test_distributed
import torch
from test_distributed import _ok, _passes, _run
from test_linear_probe import _clip_benchmark

from evalkit import api
from evalkit.demo import miniatures
from evalkit.reporting.claims import load_claims
from evalkit.reporting.report import verified_table
from evalkit.results import TaskResult, write_result
from evalkit.tasks import linear_probe
from evalkit.tasks.linear_probe import FullProbeConfig, LinearProbeFamily
from evalkit.tasks.probe import ProbeOptions, full_probe
from evalkit.tasks.spec import TaskIndex, TaskSpecError

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:clip_benchmark"),
              pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning"),
              pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true:UserWarning")]

TASK = "imagenet1k-linear-probe"
WNIDS = miniatures.names("classnames", "imagenet1k_wnids")
world_dir = test_distributed.world_dir  # the launched processes' hooks (a module fixture there)
# a few ImageNet classes, the last one among them: clip_benchmark sizes its probe by the largest
# train label + 1 and evalkit by the task's 1000 classes, so both probes have 1000 outputs
CLASSES = (0, 1, 2, 999)


# ----------------------------------------------------------------------------- clip_benchmark


def clip_benchmark_full_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                              test_y: torch.Tensor, options: ProbeOptions, seed: int, root: Path) -> dict:
    """clip_benchmark's run on these features with ``--fewshot_k -1`` (test_linear_probe's
    harness: its CLI's seed and validation split, then ``evaluate`` itself, which permutes the
    train part, sweeps the weight decay on the validation part and trains the final probe on both)."""
    return _clip_benchmark((train_x, train_y, test_x, test_y), -1, seed, options.val_fraction, options, root)


def _assert_equal_to_clip_benchmark(mine, theirs: dict) -> None:
    """The same weight decay and test accuracies, bit for bit (mean_per_class_recall too: sklearn's
    balanced_accuracy_score, which clip_benchmark takes, and evalkit.metrics sum in numpy's order)."""
    assert mine.weight_decay == theirs["weight_decay"]
    assert mine.metrics["acc1"] == theirs["lp_acc1"]
    if math.isnan(theirs["lp_acc5"]):
        assert "acc5" not in mine.metrics
    else:
        assert mine.metrics["acc5"] == theirs["lp_acc5"]
    assert mine.metrics["mean_per_class_recall"] == theirs["lp_mean_per_class_recall"]


def _clusters(n_train: int, n_test: int, n_classes: int, dim: int, seed: int, noise: float):
    """Unit features around one random centre per class, train and test from the same centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % n_classes
        feats = centres[labels] + noise * torch.randn(n, dim, generator=g)
        return torch.nn.functional.normalize(feats, dim=-1), labels

    return (*draw(n_train), *draw(n_test))


@pytest.mark.parametrize("seed, val_fraction, n_classes", [(0, 0.2, 7), (1, 0.1, 7), (2, 0.0, 7), (3, 0.25, 4)])
def test_full_probe_equals_clip_benchmark(tmp_path, capsys, seed, val_fraction, n_classes):
    """Same features, seed and options: clip_benchmark's weight decay and test metrics; with and
    without a validation split, batches that do and do not divide the train part, and a test set
    whose labels stay below 5 (clip_benchmark: acc5 NaN; evalkit: none)."""
    train_x, train_y, test_x, test_y = _clusters(123, 60, n_classes, 16, seed, noise=1.6)
    options = ProbeOptions(lr=0.1, epochs=3, batch_size=8, val_fraction=val_fraction)
    theirs = clip_benchmark_full_probe(train_x, train_y, test_x, test_y, options, seed, tmp_path)
    mine = full_probe(train_x, train_y, test_x, test_y, seed=seed, options=options)
    capsys.readouterr()  # clip_benchmark's progress lines
    _assert_equal_to_clip_benchmark(mine, theirs)
    assert 1 / n_classes < mine.metrics["acc1"] < 1  # learnt something, and not trivially
    n_val = len(torch.utils.data.random_split(range(123), [1 - val_fraction, val_fraction])[1]) if val_fraction else 0
    assert (mine.train_samples, mine.val_samples) == (123, n_val)  # the final probe: train and val parts
    assert bool(mine.val_acc1) == bool(val_fraction) and (mine.weight_decay == 0.0) == (val_fraction == 0)


class Watched(torch.Tensor):
    """A feature tensor that records how many rows each indexing of it takes out."""

    taken: list[int] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        if func is torch.Tensor.__getitem__ and type(args[0]) is cls and isinstance(out, torch.Tensor):
            cls.taken.append(out.shape[0])
        return out


def test_full_probe_reads_the_train_features_a_mini_batch_at_a_time():
    """No copy of the train features, whole or in part: training takes a mini-batch of rows at a
    time and scoring the validation part a chunk of rows (here all 30 of it), never the 270 rows of
    the train part or the 300 of the split (the copies clip_benchmark's dataset makes)."""
    train_x, train_y, test_x, test_y = _clusters(300, 40, 5, 8, 0, noise=1.0)
    watched = train_x.as_subclass(Watched)
    Watched.taken = []
    options = ProbeOptions(epochs=2, batch_size=16, val_fraction=0.1, wd_points=5, wd_init_points=3,
                           wd_refine_span=1)
    run = full_probe(watched, train_y, test_x, test_y, options=options)
    assert run.metrics == full_probe(train_x, train_y, test_x, test_y, options=options).metrics
    assert Watched.taken and max(Watched.taken) == 30 and 16 in Watched.taken
    assert run.train_samples == 300 and run.val_samples == 30


# ----------------------------------------------------------------------------- the ImageNet task


def _imagenet_root(root: Path, layout: str, train_per_class: int = 24, val_per_class: int = 6) -> tuple[int, int]:
    """A miniature ImageNet under ``root`` in one layout: ``imagenet/{train,val}/<wnid>/*.JPEG``
    (all 1000 wnid folders, images in :data:`CLASSES` only) or ``wds_imagenet1k/{train,test}``."""
    names = miniatures.names("classnames", "imagenet1k")
    if layout == "folder":
        for split, k in (("train", train_per_class), ("val", val_per_class)):
            miniatures.image_folder(root / "imagenet" / split, WNIDS,
                                    per_class=[k if c in CLASSES else 0 for c in range(1000)], ext=".JPEG")
    else:
        for split, k in (("train", train_per_class), ("test", val_per_class)):
            miniatures.wds(root / "wds_imagenet1k", [c for c in CLASSES for _ in range(k)], names,
                           split=split, nshards=3)
    return train_per_class * len(CLASSES), val_per_class * len(CLASSES)


@pytest.fixture
def captured(monkeypatch):
    """The feature tensors the family hands to the probe, and what the probe returned."""
    calls: list[tuple[tuple, dict, object]] = []
    real = linear_probe.full_probe

    def spy(*args, **kwargs):
        run = real(*args, **kwargs)
        calls.append((args, kwargs, run))
        return run

    monkeypatch.setattr(linear_probe, "full_probe", spy)
    return calls


@pytest.mark.parametrize("layout", ["folder", "wds"])
def test_imagenet_linear_probe_on_a_miniature_equals_clip_benchmark(tmp_path, captured, capsys, layout):
    n_train, n_val = _imagenet_root(tmp_path / "data", layout)
    kw = dict(data_root=tmp_path / "data", output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False,
              raise_errors=True)
    result = api.evaluate("eva-clip-demo", TASK, **kw).results[0]
    m, ev = result.metrics, result.evalkit
    assert result.task == "linear_probe" and ev["metric"] == "acc1" and set(m) == {"acc1", "acc5",
                                                                                  "mean_per_class_recall"}
    # both splits through the shared runner: counted, their layouts recorded, encoded once each
    assert (ev["train_evaluated"], ev["evaluated"]) == (n_train, n_val)
    assert ev["train_data"]["layout"] == layout and ev["data"]["layout"] == layout
    assert ev["samples_per_rank"] == [n_train + n_val] and ev["train_samples_per_rank"] == [n_train]
    assert ev["n_classes"] == 1000 and ev["probe"]["seed"] == 0 and ev["probe"]["epochs"] == 10
    run = ev["runs"]["crop"]
    assert run["train_samples"] == n_train and run["val_samples"] == math.floor(0.1 * n_train)  # random_split's
    # the same features into clip_benchmark's code, with the task's protocol: the same numbers
    (args, kwargs, mine), = captured
    train_x, train_y, test_x, test_y = args
    assert train_x.shape == (n_train, test_x.shape[1]) and sorted(set(train_y.tolist())) == list(CLASSES)
    config = LinearProbeFamily().validate(TaskIndex.load().resolve([TASK])[0])
    assert kwargs["options"] == config.probe and kwargs["seed"] == config.seed == 0
    theirs = clip_benchmark_full_probe(train_x, train_y, test_x, test_y, config.probe, config.seed, tmp_path / "cb")
    capsys.readouterr()
    _assert_equal_to_clip_benchmark(mine, theirs)
    assert m["acc1"] == theirs["lp_acc1"] > 1 / len(CLASSES)
    # a rerun scores from the feature cache: nothing encoded, the same numbers
    again = api.evaluate("eva-clip-demo", TASK, **kw).results[0]
    assert again.metrics == m and again.evalkit["samples_per_rank"] == [0]
    assert again.evalkit["images_per_s"] is None


def test_a_skipped_train_image_is_counted_and_logged_beside_the_result(tmp_path):
    _imagenet_root(tmp_path / "data", "folder", train_per_class=6, val_per_class=2)
    broken = tmp_path / "data" / "imagenet" / "train" / WNIDS[1] / "0003.JPEG"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    r = api.evaluate("eva-clip-demo", TASK, data_root=tmp_path / "data", output_dir=out, cache_dir=None,
                     progress=False, raise_errors=True).results[0]
    ev = r.evalkit
    assert (ev["train_samples"], ev["train_evaluated"], ev["train_skipped"]) == (24, 23, 1)
    assert ev["skipped"] == 0 and ev["train_skipped_keys"] == [f"{WNIDS[1]}/0003.JPEG"]
    log = out / "runs" / "eva-clip-demo" / f"{TASK}.train.skipped.log"
    assert log.read_text().startswith(f"{WNIDS[1]}/0003.JPEG\t")
    assert not (out / "runs" / "eva-clip-demo" / f"{TASK}.skipped.log").exists()


def test_two_processes_split_both_splits_and_give_one_process_numbers(world_dir, tmp_path):
    """``torchrun --nproc-per-node 2``: the ranks share the train and the val split's images (each
    encoded once, by one rank; the WebDataset layout: a cache unit per shard, three a split),
    rank 0 trains the probe: the numbers of one process."""
    n_train, n_val = _imagenet_root(tmp_path / "data", "wds", train_per_class=12, val_per_class=3)
    args = ["--model", "eva-clip-demo", "--tasks", TASK, "--data-root", str(tmp_path / "data")]
    results = {}
    for nproc in (1, 2):
        work = tmp_path / f"nproc{nproc}"  # a cache of its own: the two processes encode everything
        work.mkdir()
        proc, out, counts = _run(world_dir, work, "run", [*args, "--cache-dir", str(work / "cache")], nproc=nproc)
        _ok(proc)
        results[nproc] = json.loads((out / "runs" / "eva-clip-demo" / f"{TASK}.json").read_text())
    one, two = results[1], results[2]
    assert two["metrics"] == one["metrics"] and two["evalkit"]["runs"] == one["evalkit"]["runs"]
    ev = two["evalkit"]
    assert ev["world_size"] == 2 and one["evalkit"]["samples_per_rank"] == [n_train + n_val]
    assert sum(ev["samples_per_rank"]) == n_train + n_val and min(ev["samples_per_rank"]) > 0
    assert sum(ev["train_samples_per_rank"]) == n_train and min(ev["train_samples_per_rank"]) > 0
    # each rank encoded what it reports, so every image once
    assert [_passes(counts)[r]["image"] for r in (0, 1)] == ev["samples_per_rank"]


def test_the_data_check_counts_both_splits_against_imagenets_sizes(tmp_path, capsys):
    from evalkit.cli.main import main

    n_train, n_val = _imagenet_root(tmp_path / "data", "folder", train_per_class=3, val_per_class=1)
    assert main(["data", "check", "--tasks", TASK, "--data-root", str(tmp_path / "data"), "--json"]) == 0
    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows[TASK]["samples"], rows[TASK]["expected"]) == (n_val, 50000)
    assert (rows[f"{TASK} (train)"]["samples"], rows[f"{TASK} (train)"]["expected"]) == (n_train, 1281167)
    assert rows[f"{TASK} (train)"]["count"] == "differs" and rows[f"{TASK} (train)"]["layout"] == "folder"


# ----------------------------------------------------------------------------- task files, claims


def _task(tmp_path: Path, body: str):
    (tmp_path / "lp.yaml").write_text("task: lp\nfamily: linear_probe\nsource: {type: shapeworld, n: 10}\n"
                                      "train_source: {type: shapeworld, split: train, n: 10}\n" + body)
    return TaskIndex.load([tmp_path]).tasks["lp"]


@pytest.mark.parametrize("body, message", [
    ("probe: {seed: 0}\nfewshot: {shots: [1]}\n", r"lp\.yaml: fields 'fewshot' .* and 'probe' .* exclude each other"),
    ("probe: {sed: 1}\n", r"lp\.yaml: unknown field\(s\) \['sed'\] in 'probe'"),
    ("probe: {seed: -1}\n", r"lp\.yaml: field 'probe.seed' must be a whole number"),
    ("probe: {epochs: 0}\n", r"lp\.yaml: field 'probe': epochs must be a whole number"),
    ("probe: {}\nmetric: acc1@16shot\n", r"lp\.yaml: field 'metric' must be one of acc1, acc5, mean_per_class_recall"),
    ("probe: 3\n", r"lp\.yaml: field 'probe' must be a mapping"),
])
def test_bad_probe_blocks_name_the_file_and_key(tmp_path, body, message):
    with pytest.raises(TaskSpecError, match=message):
        LinearProbeFamily().validate(_task(tmp_path, body))


def test_the_imagenet_task_is_clip_benchmarks_protocol():
    spec = TaskIndex.load().resolve(["imagenet1k-linear-probe"])[0]
    assert TaskIndex.load().resolve(["in1k-linear-probe"])[0].name == TASK
    config = LinearProbeFamily().validate(spec)
    assert isinstance(config, FullProbeConfig) and config.seed == 0
    p = config.probe  # clip_benchmark's CLI: --fewshot_lr 0.1, --fewshot_epochs 10, --batch_size 64, --seed 0
    assert (p.lr, p.epochs, p.batch_size, p.val_fraction) == (0.1, 10, 64, 0.1)
    assert p.weight_decays() == pytest.approx(torch.logspace(-6, 2, 97, dtype=torch.float64).tolist(), rel=1e-12)
    assert spec.metric == "acc1" and len(spec.classnames) == 1000 and "linear-probe" in spec.protocol["tags"]
    assert [layout["type"] for layout in spec.options["train_source"]["layouts"]] == ["folder", "wds"]


def test_table_7_claims_find_the_linear_probe_results(tmp_path):
    claims = load_claims()
    table7 = claims[claims["note"].str.startswith("Table 7")]
    assert len(table7) == 6 and set(table7["task"]) == {TASK} and set(table7["metric"]) == {"acc1"}
    assert set(table7["model"]) == {"openclip-bigg-14", "eva01-clip-g-14", "eva02-clip-e-14-plus", "internvl-c",
                                    "eva-clip-8b", "eva-clip-18b"}
    spec = TaskIndex.load().resolve([TASK])[0]
    for model, acc1 in (("eva-clip-18b", 0.889), ("eva-clip-8b", 0.87)):
        write_result(TaskResult(TASK, model, "w", "linear_probe", {"acc1": acc1, "acc5": 0.98},
                                evalkit={"metric": "acc1", "protocol": dict(spec.protocol)}),
                     tmp_path)
    table = verified_table(tmp_path, claims)
    rows = table[(table["task"] == TASK) & table["model"].isin(["eva-clip-18b", "eva-clip-8b"])]
    # a result without N or records has no interval: a number off its claim is untested, not differs
    assert dict(zip(rows["model"], rows["status"], strict=True)) == {"eva-clip-18b": "reproduced",
                                                                     "eva-clip-8b": "untested"}
    # a zero-shot ImageNet result is not a linear-probe number
    assert not ((table["task"] == "imagenet1k") & (table["claimed"] == 88.9)).any()
