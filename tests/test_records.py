"""Per-sample records (evalkit/records.py): one .npz beside every result, written by default by the
shared runner, from which every metric of the result is recomputed exactly (with numpy, compared
with ==): classification (acc1, acc5, mean per-class recall), retrieval (the six recalls, ties
included), few-shot (acc1@Kshot) and full probes; one file per split of a split task; none, and an
earlier run's removed, with --no-records; bad files are errors naming the file and the array."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from evalkit import api
from evalkit.errors import OutputError
from evalkit.metrics import (
    mean_per_class_recall,
    retrieval_metrics,
    retrieval_ranks,
    topk_accuracy,
    zero_shot_classification_metrics,
)
from evalkit.records import (
    META_KEY,
    Records,
    RecordsError,
    read_records,
    recall_at,
    records_for,
    records_path,
    result_records,
    write_records,
)
from evalkit.results import read_result
from evalkit.tasks.common import class_records

REPO = Path(__file__).resolve().parents[1]
MODEL = "eva-clip-demo"


# ----------------------------------------------------------------------------- the file


def _classification_arrays(n: int, k: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.normal(size=(n, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    return {"key": np.array([f"img/{i:03d}.png" for i in range(n)]), "target": rng.integers(0, 9, n).astype(np.int32),
            "top_classes": rng.integers(0, 9, (n, k)).astype(np.int32), "top_scores": scores,
            "margin": scores[:, 0] - scores[:, 1], "pred": rng.integers(0, 9, n).astype(np.int32)}


def test_round_trip(tmp_path):
    path = records_path(tmp_path, "open_clip:ViT-B-32", "kinetics400@uniform-8", "fp16", part="split2")
    assert path == tmp_path / "runs" / "open_clip_ViT-B-32" / "fp16" / "kinetics400_uniform-8.split2.records.npz"
    crop, squash = _classification_arrays(7), _classification_arrays(7, seed=1)
    written = write_records(path, "classification", {"crop": crop, "squash": squash}, {"n_classes": 9, "x": [1, 2]})
    data = path.read_bytes()
    assert written.path == path and written.bytes == len(data) and written.sha256 == hashlib.sha256(data).hexdigest()
    # "<mode>/<field>" inside, plus the meta as a 0-d unicode array: nothing pickled
    names = zipfile.ZipFile(path).namelist()
    assert f"{META_KEY}.npy" in names and "crop/top_scores.npy" in names and "squash/key.npy" in names
    assert np.load(path, allow_pickle=False)[META_KEY].shape == ()
    # no time stamp of the writing: the same records are the same bytes (the SHA-256 names the content)
    assert {i.date_time for i in zipfile.ZipFile(path).infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert write_records(tmp_path / "again.npz", "classification", {"crop": crop, "squash": squash},
                         {"x": [1, 2], "n_classes": 9}).sha256 == written.sha256
    rec = read_records(path)
    assert isinstance(rec, Records) and rec.path == path and rec.kind == "classification"
    assert rec.modes == ["crop", "squash"]
    assert rec.meta == {"schema": 1, "kind": "classification", "modes": ["crop", "squash"], "n_classes": 9, "x": [1, 2]}
    for mode, want in (("crop", crop), ("squash", squash)):
        got = rec.arrays(mode)
        assert set(got) == set(want)
        for name, array in want.items():
            assert got[name].dtype == array.dtype and np.array_equal(got[name], array), (mode, name)
    assert np.array_equal(rec.arrays()["pred"], crop["pred"])  # no mode: the first
    with pytest.raises(RecordsError, match="no mode 'best'"):
        rec.arrays("best")


def _write_zip(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def _good(tmp_path: Path) -> dict[str, np.ndarray]:
    path = tmp_path / "good.records.npz"
    write_records(path, "classification", {"crop": _classification_arrays(4)})
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


@pytest.mark.parametrize("case, array", [
    ("text", None), ("npy", None), ("absent", None), ("no meta", META_KEY), ("meta not json", META_KEY),
    ("no margin", "crop/margin"), ("short pred", "crop/pred"), ("pickled", "crop/key"),
])
def test_bad_files_name_the_file_and_the_array(tmp_path, case, array):
    path = tmp_path / "bad.records.npz"
    arrays = _good(tmp_path)
    if case == "text":
        path.write_text("not an npz\n")
    elif case == "npy":
        np.save(tmp_path / "bad.npy", np.arange(3))
        (tmp_path / "bad.npy").rename(path)
    elif case == "no meta":
        _write_zip(path, {k: v for k, v in arrays.items() if k != META_KEY})
    elif case == "meta not json":
        _write_zip(path, {**arrays, META_KEY: np.array("{not json")})
    elif case == "no margin":
        _write_zip(path, {k: v for k, v in arrays.items() if k != "crop/margin"})
    elif case == "short pred":
        _write_zip(path, {**arrays, "crop/pred": arrays["crop/pred"][:2]})
    elif case == "pickled":
        _write_zip(path, {**arrays, "crop/key": np.array([{"a": 1}] * 4, dtype=object)})
    with pytest.raises(RecordsError) as info:
        read_records(path)
    message = str(info.value)
    assert str(path) in message
    if array is not None:
        assert array in message, message
    assert isinstance(info.value, ValueError)  # a user's file: the ValueError family, as the results' errors


def test_write_refuses_what_a_family_should_never_make(tmp_path):
    arrays = _classification_arrays(3)
    with pytest.raises(ValueError, match=r"lacks \['margin'\]"):
        write_records(tmp_path / "r.npz", "classification", {"crop": {k: v for k, v in arrays.items() if k != "margin"}})
    with pytest.raises(ValueError, match="unknown kind 'nope'"):
        write_records(tmp_path / "r.npz", "nope", {"crop": arrays})
    with pytest.raises(ValueError, match="crop/key holds Python objects"):
        write_records(tmp_path / "r.npz", "classification", {"crop": {**arrays, "key": np.array([1, "a", None])}})
    assert not list(tmp_path.iterdir())


def test_an_unwritable_folder_is_an_output_error_naming_the_path(tmp_path):
    (tmp_path / "runs").write_text("a file where the folder should be")
    path = tmp_path / "runs" / "m" / "t.records.npz"
    with pytest.raises(OutputError, match=f"cannot write per-sample records {path}"):
        write_records(path, "classification", {"crop": _classification_arrays(2)})


_WRITER = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    from evalkit.records import write_records
    path, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # the kernel kills the process mid-write
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    rng = np.random.default_rng(0)
    n = 200_000
    write_records(path, "fewshot", {"crop": {"key": np.array([str(i) for i in range(n)]),
        "target": rng.integers(0, 1000, n).astype(np.int32), "shots": np.array([1], np.int32),
        "seed": np.array([0], np.int32), "pred": rng.integers(0, 1000, (1, n)).astype(np.int32)}})
    print("completed")
""")


def test_a_write_killed_midway_keeps_the_earlier_records(tmp_path):
    """The records file is written as a result is: never half a file where the old one was."""
    import signal

    path = tmp_path / "t.records.npz"
    write_records(path, "classification", {"crop": _classification_arrays(5)})
    old = path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(path), str(256 * 1024)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == -signal.SIGXFSZ, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert path.read_bytes() == old
    assert read_records(path).kind == "classification"


# ----------------------------------------------------------------------------- classification


def _recomputed(arrays: dict[str, np.ndarray], counted: int) -> dict[str, float]:
    """acc1, acc5 (when counted with k = 5) and mean per-class recall from a record, with numpy/sklearn."""
    target, top = arrays["target"], arrays["top_classes"]
    n = target.shape[0]
    out = {"acc1": int(np.count_nonzero(top[:, 0] == target)) / n}
    if counted >= 5:
        out["acc5"] = int(np.count_nonzero((top[:, :5] == target[:, None]).any(axis=1))) / n
    out["mean_per_class_recall"] = float(balanced_accuracy_score(target, arrays["pred"]))
    return out


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")  # sklearn, of one class
@pytest.mark.parametrize("n_classes, counted", [(1, 1), (3, 1), (4, 1), (5, 5), (9, 5), (9, 1), (30, 1)])
def test_class_records_reproduce_the_metrics_with_tied_logits(n_classes, counted):
    """Logits with many exact ties (duplicate class names give identical classifier columns):
    torch.topk's pick among ties depends on k and argmax takes the first, so the record must keep
    the top-1 each metric counted. ``counted``: the k acc1/acc5 were counted with (zero-shot: 5
    from 5 classes on; a full probe whose test labels are all below 5: 1 whatever the classes)."""
    g = torch.Generator().manual_seed(n_classes)
    logits = torch.randint(0, 3, (400, n_classes), generator=g).float() * 10.0
    target = torch.randint(0, n_classes, (400,), generator=g)
    ks = (1, 5) if counted == 5 else (1,)
    metrics = dict(zip(("acc1", "acc5"), topk_accuracy(logits, target, ks), strict=False))
    metrics["mean_per_class_recall"] = mean_per_class_recall(logits.argmax(dim=1), target)
    if n_classes < 5:
        assert metrics == zero_shot_classification_metrics(logits, target, n_classes)
    arrays = class_records([f"k{i}" for i in range(400)], target, logits, counted)
    assert arrays["top_classes"].shape == (400, min(5, n_classes)) and arrays["top_classes"].dtype == np.int32
    assert _recomputed(arrays, counted) == metrics
    scores = arrays["top_scores"]
    assert np.array_equal(scores, np.take_along_axis(logits.numpy(), arrays["top_classes"], axis=1))
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    assert all(len(set(row)) == len(row) for row in arrays["top_classes"].tolist())  # each class once
    if n_classes == 1:
        assert np.isinf(arrays["margin"]).all()
    else:
        assert np.array_equal(arrays["margin"], scores[:, 0] - scores[:, 1])
        assert (arrays["margin"] == 0).sum() > 50  # the fixture does tie at the top


def _task(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    name = text.split("task: ", 1)[1].split("\n", 1)[0]
    (root / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


def _run(tmp_path: Path, tasks: str, task_dir: Path | None = None, **options):
    kw = dict(output_dir=tmp_path / "out", cache_dir=None, progress=False, raise_errors=True)
    report = api.evaluate(MODEL, tasks, task_dirs=[task_dir] if task_dir else [], **{**kw, **options})
    return [read_result(p) for p in report.paths], report.paths


SHAPES = """\
    task: sw-shapes
    version: 1
    family: classification
    source: {type: shapeworld, task: shape, split: test, n: 150, seed: 11}
    templates: ["a photo of a {c}.", "a {c} shape."]
    metric: acc1
    view: {transform: best-of-both}
    """


def test_classification_records_reproduce_the_result_in_every_transform(tmp_path):
    (result,), (path,) = _run(tmp_path, "sw-shapes", _task(tmp_path / "tasks", SHAPES))
    entry = result.evalkit["records"]
    files = records_for(path)
    assert files == [path.parent / "sw-shapes.records.npz"] == records_for(result, tmp_path / "out")
    assert entry["files"] == ["sw-shapes.records.npz"] and entry["bytes"] == files[0].stat().st_size
    (rec,) = result_records(path)
    assert rec.kind == "classification" and rec.modes == ["crop", "squash"]
    assert rec.meta["n_classes"] == 6 and rec.meta["logit_scale"] == 100 and rec.meta["precision"] == "fp32"
    assert len(rec.meta["classnames"]) == 6
    for mode in rec.modes:
        arrays = rec.arrays(mode)
        assert len(arrays["key"]) == result.evalkit["evaluated"] == 150
        want = {k: result.metrics[f"{k}@{mode}"] for k in ("acc1", "acc5", "mean_per_class_recall")}
        assert _recomputed(arrays, 6) == want, mode
        assert arrays["top_scores"].dtype == np.float32 and arrays["top_scores"].max() <= 100


SPLITS = """\
    task: sw-splits
    version: 1
    family: classification
    source: {type: shapeworld, task: shape, split: test, n: 60, seed: 1}
    templates: ["a photo of a {c}."]
    metric: acc1
    protocol: {splits: [{seed: 1}, {seed: 2}, {seed: 3}]}
    """


def test_a_task_of_several_splits_has_one_records_file_per_split(tmp_path):
    (result,), (path,) = _run(tmp_path, "sw-splits", _task(tmp_path / "tasks", SPLITS))
    names = [f"sw-splits.split{k}.records.npz" for k in (1, 2, 3)]
    assert result.evalkit["records"]["files"] == names
    assert records_for(path) == [path.parent / n for n in names]
    assert result.evalkit["records"]["bytes"] == sum((path.parent / n).stat().st_size for n in names)
    for k, rec in enumerate(result_records(path), start=1):
        assert rec.meta["part"] == f"split{k}"
        assert _recomputed(rec.arrays(), 6) == {m: result.metrics[f"{m}@split{k}"]
                                                  for m in ("acc1", "acc5", "mean_per_class_recall")}
    assert not (path.parent / "sw-splits.records.npz").exists()


def test_no_records_writes_none_and_removes_an_earlier_runs(tmp_path):
    from evalkit.cli import main as cli

    tasks = _task(tmp_path / "tasks", SPLITS.replace("sw-splits", "sw-one").replace(
        "    protocol: {splits: [{seed: 1}, {seed: 2}, {seed: 3}]}\n", ""))
    out = tmp_path / "out"
    argv = ["run", "--model", MODEL, "--tasks", "sw-one", "--task-dir", str(tasks), "--output-dir", str(out), "--quiet",
            "--no-cache"]
    assert cli.main(argv) == 0
    result_file = out / "runs" / MODEL / "sw-one.json"
    records = out / "runs" / MODEL / "sw-one.records.npz"
    assert records.exists() and json.loads(result_file.read_text())["evalkit"]["records"]["files"] == [records.name]
    assert cli.main([*argv, "--no-records"]) == 0
    assert not records.exists(), "an earlier run's records must not stand beside a result written without them"
    assert "records" not in json.loads(result_file.read_text())["evalkit"]
    assert records_for(result_file) == [] and result_records(result_file) == []
    assert sorted(p.name for p in records.parent.iterdir()) == ["sw-one.json"]


def test_records_of_another_run_are_refused(tmp_path):
    tasks = _task(tmp_path / "tasks", SHAPES.replace("sw-shapes", "sw-a").replace("best-of-both", "crop"))
    (_,), (path,) = _run(tmp_path, "sw-a", tasks)
    records = path.parent / "sw-a.records.npz"
    arrays = read_records(records).arrays()
    arrays["pred"] = (arrays["pred"] + 1) % 6
    write_records(records, "classification", {"crop": arrays}, {"n_classes": 6})
    with pytest.raises(RecordsError, match=f"{records}: not the records file its result was written with"):
        result_records(path)


# ----------------------------------------------------------------------------- retrieval


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=1)


def _check_ranks(images, texts, owner, ks=(1, 5, 10), chunk_size=7):
    metrics = retrieval_metrics(images, texts, owner, ks, chunk_size)
    ranks = retrieval_ranks(images, texts, owner, ks, chunk_size)
    assert ranks.metrics == metrics  # the family takes its numbers from the ranking pass when records are on
    assert retrieval_ranks(images, texts, owner, ks, None).metrics == metrics
    for j, k in enumerate(ks):  # the hits: exact always
        assert float(ranks.i2t_hit[:, j].float().mean()) == metrics[f"text_retrieval_recall@{k}"]
        assert float(ranks.t2i_hit[:, j].float().mean()) == metrics[f"image_retrieval_recall@{k}"]
    return metrics, ranks


def _strictly_above(images, texts, owner, margins: bool = False):
    """Brute force, the whole score matrix: per image, the captions scoring strictly above its
    best own caption (-1 without one); per caption, the images strictly above its own; with
    ``margins``, also each query's best own score minus its best other score."""
    scores = (texts @ images.t()).numpy()  # M x N, clip_benchmark's expression
    owner = owner.numpy()
    t2i = np.array([(scores[j] > scores[j, owner[j]]).sum() for j in range(len(owner))])
    t2i_margin = np.array([scores[j, owner[j]] - np.delete(scores[j], owner[j]).max() for j in range(len(owner))])
    i2t, i2t_margin = [], []
    for i in range(scores.shape[1]):
        own = owner == i
        i2t.append((scores[:, i] > scores[own, i].max()).sum() if own.any() else -1)
        i2t_margin.append(scores[own, i].max() - scores[~own, i].max() if own.any() else np.nan)
    if margins:
        return np.array(i2t), t2i, np.array(i2t_margin, dtype=np.float32), t2i_margin
    return np.array(i2t), t2i


def test_retrieval_ranks_without_ties_are_the_plain_ranks():
    g = torch.Generator().manual_seed(0)
    images, texts = _unit(torch.randn(40, 16, generator=g)), _unit(torch.randn(90, 16, generator=g))
    owner = torch.randint(0, 39, (90,), generator=g)  # image 39 has no caption
    metrics, ranks = _check_ranks(images, texts, owner)
    i2t, t2i, i2t_margin, t2i_margin = _strictly_above(images, texts, owner, margins=True)
    assert np.array_equal(ranks.i2t_rank.numpy(), i2t) and np.array_equal(ranks.t2i_rank.numpy(), t2i)
    assert np.array_equal(ranks.i2t_margin.numpy(), i2t_margin, equal_nan=True)
    assert np.array_equal(ranks.t2i_margin.numpy(), t2i_margin)
    assert ranks.i2t_rank[39] == -1 and bool(ranks.i2t_margin[39].isnan()) and ranks.inexact == 0
    for k in (1, 5, 10):
        assert recall_at(ranks.i2t_rank.numpy(), k) == metrics[f"text_retrieval_recall@{k}"]
        assert recall_at(ranks.t2i_rank.numpy(), k) == metrics[f"image_retrieval_recall@{k}"]


def test_retrieval_ranks_reproduce_the_recalls_through_ties():
    """Duplicate captions and duplicate images (COCO has both) tie exactly: whether a tied query
    hits at K is torch.topk(K)'s pick, which the rank must say."""
    g = torch.Generator().manual_seed(3)
    images = _unit(torch.randn(30, 8, generator=g))
    images[10:14] = images[5]  # five identical images
    owner = torch.arange(60) % 30
    texts = _unit(images[owner] + 0.8 * torch.randn(60, 8, generator=g))
    texts[30:33] = texts[0]  # identical captions of images 0, 1, 2 (and of one's own image)
    texts[45] = texts[15]
    metrics, ranks = _check_ranks(images, texts, owner)
    assert ranks.inexact == 0
    i2t, t2i = _strictly_above(images, texts, owner)
    plain = {k: (np.mean(((i2t >= 0) & (i2t < k)).astype(np.float32)), np.mean((t2i < k).astype(np.float32)))
             for k in (1, 5, 10)}
    # the ties matter here: counting strictly higher scores alone misses some recall
    assert any(float(plain[k][0]) != metrics[f"text_retrieval_recall@{k}"]
               or float(plain[k][1]) != metrics[f"image_retrieval_recall@{k}"] for k in (1, 5, 10))
    for k in (1, 5, 10):
        assert recall_at(ranks.i2t_rank.numpy(), k) == metrics[f"text_retrieval_recall@{k}"]
        assert recall_at(ranks.t2i_rank.numpy(), k) == metrics[f"image_retrieval_recall@{k}"]
    # a rank moved within its tie stays within it: at least the scores strictly above
    assert (ranks.i2t_rank.numpy() >= i2t).all() and (ranks.t2i_rank.numpy() >= t2i).all()


def test_heavy_ties_count_the_queries_no_rank_can_say():
    """Three distinct vectors for 60 images and 120 captions: torch.topk's picks among a dozen
    equal scores need not be nested over K; the hits stay exact and the queries whose hits no
    single rank gives are counted (checked by trying every rank)."""
    g = torch.Generator().manual_seed(1)
    base = _unit(torch.randn(3, 8, generator=g))
    images, texts = base[torch.randint(0, 3, (60,), generator=g)], base[torch.randint(0, 3, (120,), generator=g)]
    owner = torch.randint(0, 60, (120,), generator=g)
    ks = (1, 5, 10)
    _, ranks = _check_ranks(images, texts, owner, ks)

    def no_rank_fits(hits: np.ndarray, n: int) -> int:
        said = np.arange(-1, n)[:, None] < np.array(ks)[None, :]  # rank r says hits (r < K); -1: none
        said[0] = False
        return int(sum(not (said == row).all(axis=1).any() for row in hits))

    expected = no_rank_fits(ranks.i2t_hit.numpy(), 120) + no_rank_fits(ranks.t2i_hit.numpy(), 60)
    assert ranks.inexact == expected > 0  # the fixture does hold such queries
    for hit, rank in ((ranks.i2t_hit, ranks.i2t_rank), (ranks.t2i_hit, ranks.t2i_rank)):
        said = (rank[:, None] >= 0) & (rank[:, None] < torch.tensor(ks)[None, :])
        fits = (said == hit).all(dim=1)
        assert int((~fits).sum()) <= expected  # every other query's rank says its hits


def test_retrieval_records_reproduce_the_six_recalls(tmp_path):
    (result,), (path,) = _run(tmp_path, "shapeworld-retrieval", limit=120)
    (rec,) = result_records(path)
    assert rec.kind == "retrieval" and rec.modes == ["squash"] and rec.meta["recall_k"] == [1, 5, 10]
    a = rec.arrays("squash")
    assert len(a["image_key"]) == 120 and len(a["t2i_rank"]) == len(a["t2i_image"]) == rec.meta["n_captions"]
    assert rec.meta["ranks_inexact"] == {"squash": 0}
    for j, k in enumerate((1, 5, 10)):
        assert recall_at(a["i2t_rank"], k) == result.metrics[f"text_retrieval_recall@{k}"]
        assert recall_at(a["t2i_rank"], k) == result.metrics[f"image_retrieval_recall@{k}"]
        assert float(np.mean(a["i2t_hit"][:, j].astype(np.float32))) == result.metrics[f"i2t_R@{k}"]
        assert float(np.mean(a["t2i_hit"][:, j].astype(np.float32))) == result.metrics[f"t2i_R@{k}"]
    # the image of each caption, and its own image's rank: 0 exactly when it is scored best
    assert (a["t2i_image"] >= 0).all() and (a["t2i_image"] < 120).all()
    assert ((a["t2i_rank"] == 0) == (a["t2i_margin"] > 0)).all()
    # without records the numbers come from retrieval_metrics alone: the same, to the bit
    (plain,), _ = _run(tmp_path / "plain", "shapeworld-retrieval", limit=120, records=False)
    assert plain.metrics == result.metrics and "records" not in plain.evalkit


# ----------------------------------------------------------------------------- linear probes


FEWSHOT = """\
    task: sw-fewshot
    version: 1
    family: linear_probe
    source: {type: shapeworld, task: shape, split: test, n: 90, seed: 5}
    train_source: {type: shapeworld, task: shape, split: train, n: 80, seed: 5}
    fewshot: {shots: [1, 4], seeds: 3, epochs: 3}
    metric: acc1@4shot
    """


def test_fewshot_records_reproduce_acc1_at_every_k(tmp_path):
    (result,), (path,) = _run(tmp_path, "sw-fewshot", _task(tmp_path / "tasks", FEWSHOT))
    (rec,) = result_records(path)
    assert rec.kind == "fewshot" and rec.meta["shots"] == [1, 4] and rec.meta["seeds"] == [0, 1, 2]
    a = rec.arrays("crop")
    assert a["pred"].shape == (6, 90) and a["pred"].dtype == np.int32
    assert [(int(k), int(s)) for k, s in zip(a["shots"], a["seed"], strict=True)] == [
        (r["shots"], r["seed"]) for r in result.evalkit["runs"]["crop"]]
    for k in (1, 4):
        accs = [int(np.count_nonzero(pred == a["target"])) / 90 for pred, shots in zip(a["pred"], a["shots"], strict=True)
                if shots == k]
        assert sum(accs) / len(accs) == result.metrics[f"acc1@{k}shot"]
    assert not all(np.array_equal(a["pred"][0], p) for p in a["pred"][1:])  # the runs differ


def test_full_probe_records_reproduce_its_metrics(tmp_path):
    task = FEWSHOT.replace("sw-fewshot", "sw-probe").replace("fewshot: {shots: [1, 4], seeds: 3, epochs: 3}",
                                                             "probe: {seed: 0, epochs: 3}").replace("acc1@4shot", "acc1")
    (result,), (path,) = _run(tmp_path, "sw-probe", _task(tmp_path / "tasks", task))
    (rec,) = result_records(path)
    assert rec.kind == "probe" and rec.meta["n_classes"] == 6
    a = rec.arrays("crop")
    assert a["top_classes"].shape == (90, 5)
    assert _recomputed(a, 6) == {k: result.metrics[k] for k in ("acc1", "acc5", "mean_per_class_recall")}
