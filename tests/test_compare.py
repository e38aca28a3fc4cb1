"""evalkit compare (evalkit/reporting/compare.py, evalkit/cli/compare.py): two runs task by task from
their per-sample records. Fixture results and records are written here; every figure is checked
against an independent computation: McNemar's b, c and p against scipy.stats.binomtest, the paired
bootstrap interval against scipy.stats.bootstrap(paired=True), Holm against statsmodels, mean
per-class recall against sklearn, the flip bound against margin_bound's formula written out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest
from scipy.stats import bootstrap as scipy_bootstrap
from sklearn.metrics import balanced_accuracy_score
from statsmodels.stats.multitest import multipletests

from evalkit.cli import main as cli
from evalkit.records import records_path, result_entry, write_records
from evalkit.reporting.compare import CompareError, SideSpec, compare
from evalkit.results import TaskResult, write_result

MODEL = "toy"
N_CLASSES = 6


# ----------------------------------------------------------------------------- fixtures


def _class_arrays(keys: list[str], target: np.ndarray, top1: np.ndarray, margin: np.ndarray,
                  second: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Records of a zero-shot classification: ``top1`` the best class, ``second`` the runner-up
    (default: the target when top1 is wrong, else the next class), ``margin`` between them."""
    n = len(keys)
    if second is None:
        second = np.where(top1 == target, (target + 1) % N_CLASSES, target)
    top = np.empty((n, 5), dtype=np.int32)
    for i in range(n):
        rest = [c for c in range(N_CLASSES) if c not in (top1[i], second[i])]
        top[i] = [top1[i], second[i], *rest[:3]]
    scores = np.empty((n, 5), dtype=np.float32)
    scores[:, 0] = 30.0
    scores[:, 1] = 30.0 - margin
    scores[:, 2:] = 30.0 - margin[:, None] - 1 - np.arange(3)[None, :]
    return {"key": np.array(keys), "target": target.astype(np.int32), "top_classes": top, "top_scores": scores,
            "margin": margin.astype(np.float32), "pred": top[:, 0].copy()}


def _write(out: Path, task: str, kind: str, modes: dict[str, dict[str, np.ndarray]], metrics: dict[str, float], *,
           precision: str = "fp32", metric: str = "acc1", evaluated: int | None = None, records: bool = True,
           model: str = MODEL, flip_budget: dict | None = None, meta: dict | None = None) -> Path:
    ev: dict = {"precision": precision, "variant": precision, "metric": metric}
    first = next(iter(modes.values()))
    n = len(first.get("key", first.get("image_key", [])))
    ev["evaluated"] = n if evaluated is None else evaluated
    if len(modes) > 1:
        ev["best_transform"] = next(iter(modes))
    if flip_budget is not None:
        ev["flip_budget"] = flip_budget
    if records:
        written = write_records(records_path(out, model, task, precision), kind, modes,
                                {"precision": precision, "logit_scale": 100.0, **(meta or {})})
        ev["records"] = result_entry([written], kind)
    return write_result(TaskResult(task, model, "", "zeroshot_classification", metrics, evalkit=ev), out)


def _keys(n: int) -> list[str]:
    return [f"img/{i:04d}.png" for i in range(n)]


def _classification(out: Path, task: str, target: np.ndarray, hits: np.ndarray, *, precision: str = "fp32",
                    margin: np.ndarray | None = None, keys: list[str] | None = None, order: np.ndarray | None = None,
                    records: bool = True, top1: np.ndarray | None = None) -> Path:
    """A task whose sample i is right where ``hits[i]``; written in ``order`` (a permutation) when given."""
    n = len(target)
    keys = keys or _keys(n)
    if top1 is None:
        top1 = np.where(hits, target, (target + 1) % N_CLASSES)
    margin = np.full(n, 5.0) if margin is None else margin
    arrays = _class_arrays(keys, target, top1, margin)
    if order is not None:
        arrays = {k: v[order] for k, v in arrays.items()}
    hit = arrays["top_classes"][:, 0] == arrays["target"]
    metrics = {"acc1": float(np.mean(hit)), "acc5": 1.0,
               "mean_per_class_recall": float(balanced_accuracy_score(arrays["target"], arrays["pred"]))}
    return _write(out, task, "classification", {"crop": arrays}, metrics, precision=precision, records=records,
                  meta={"classnames": [f"class{c}" for c in range(N_CLASSES)]})


def _paired_hits(n: int, seed: int, p_a: float = 0.7, flip_ab: float = 0.1, flip_ba: float = 0.05):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, N_CLASSES, n)
    a = rng.random(n) < p_a
    u = rng.random(n)
    b = np.where(a, u >= flip_ab, u < flip_ba)
    return target, a, b


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["compare", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------- statistics


def test_mcnemar_counts_and_exact_p_match_scipy(tmp_path, capsys):
    target, a, b = _paired_hits(400, seed=1)
    _classification(tmp_path / "A", "t1", target, a)
    _classification(tmp_path / "B", "t1", target, b, order=np.random.default_rng(5).permutation(400))  # paired by key
    result = compare(tmp_path / "A", tmp_path / "B")
    (row,) = result.tasks
    want_b, want_c = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert (row.b_count, row.c_count) == (want_b, want_c) and want_b > 0 and want_c > 0
    assert row.pvalue == pytest.approx(binomtest(want_b, want_b + want_c, 0.5).pvalue, rel=1e-12)
    assert row.n == 400 and row.difference == pytest.approx(b.mean() - a.mean(), abs=1e-12)
    assert row.a.value == pytest.approx(a.mean()) and row.b.value == pytest.approx(b.mean())
    assert row.a.compared == pytest.approx(a.mean()) and row.b.compared == pytest.approx(b.mean())
    code, out, _ = _run(capsys, str(tmp_path / "A"), str(tmp_path / "B"))
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("| t1"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[6:8] == [str(want_b), str(want_c)]
    assert cells[5].startswith(f"{100 * (b.mean() - a.mean()):+.2f} [")


def test_paired_bootstrap_interval_matches_scipy_paired_bootstrap(tmp_path):
    n = 1000
    target, a, b = _paired_hits(n, seed=2)
    _classification(tmp_path / "A", "t1", target, a)
    _classification(tmp_path / "B", "t1", target, b, order=np.arange(n)[::-1])
    row = compare(tmp_path / "A", tmp_path / "B", resamples=20000, seed=3).tasks[0]
    ref = scipy_bootstrap((a.astype(float), b.astype(float)), lambda x, y, axis=-1: y.mean(axis) - x.mean(axis),
                          paired=True, vectorized=True, n_resamples=20000, method="percentile",
                          random_state=np.random.default_rng(7)).confidence_interval
    iv = row.difference_interval
    tolerance = 1.01 / n + 0.05 * (ref.high - ref.low)  # a difference moves in steps of 1/n; Monte Carlo error
    assert abs(iv.low - ref.low) < tolerance and abs(iv.high - ref.high) < tolerance, (iv, ref)
    # unpaired, the interval would be far wider: the pairing is what makes it this narrow
    unpaired = scipy_bootstrap((a.astype(float), b.astype(float)), lambda x, y, axis=-1: y.mean(axis) - x.mean(axis),
                               paired=False, vectorized=True, n_resamples=5000, method="percentile",
                               random_state=np.random.default_rng(7)).confidence_interval
    assert (iv.high - iv.low) < 0.8 * (unpaired.high - unpaired.low)


def test_mean_per_class_recall_is_paired_within_classes(tmp_path):
    target, a, b = _paired_hits(240, seed=4)
    for side, hits in (("A", a), ("B", b)):
        _classification(tmp_path / side, "t1", target, hits)
        path = tmp_path / side / "runs" / MODEL / "t1.json"
        data = json.loads(path.read_text())
        data["evalkit"]["metric"] = "mean_per_class_recall"
        path.write_text(json.dumps(data))
    row = compare(tmp_path / "A", tmp_path / "B", resamples=4000).tasks[0]
    pred_a = np.where(a, target, (target + 1) % N_CLASSES)
    pred_b = np.where(b, target, (target + 1) % N_CLASSES)
    want = balanced_accuracy_score(target, pred_b) - balanced_accuracy_score(target, pred_a)
    assert row.metric == "mean_per_class_recall" and row.difference == pytest.approx(want, abs=1e-12)
    assert row.difference_interval.contains(want)
    assert (row.b_count, row.c_count) == (int(np.sum(a & ~b)), int(np.sum(~a & b)))


def test_holm_over_tasks_matches_statsmodels(tmp_path):
    ps = []
    for i, (flip_ab, flip_ba) in enumerate([(0.2, 0.02), (0.1, 0.08), (0.06, 0.05), (0.3, 0.01)]):
        target, a, b = _paired_hits(200, seed=10 + i, flip_ab=flip_ab, flip_ba=flip_ba)
        _classification(tmp_path / "A", f"task{i}", target, a)
        _classification(tmp_path / "B", f"task{i}", target, b)
        bb, cc = int(np.sum(a & ~b)), int(np.sum(~a & b))
        ps.append(binomtest(bb, bb + cc, 0.5).pvalue if bb + cc else 1.0)
    rows = compare(tmp_path / "A", tmp_path / "B").tasks
    want = multipletests(ps, method="holm")[1]
    assert [r.task for r in rows] == [f"task{i}" for i in range(4)]
    assert [r.pvalue for r in rows] == pytest.approx(ps, rel=1e-12)
    assert [r.pvalue_holm for r in rows] == pytest.approx(list(want), rel=1e-12)
    assert any(h > p for h, p in zip(want, ps, strict=True))  # the correction did something


def test_suite_average_is_a_paired_bootstrap_over_datasets(tmp_path):
    diffs, values_a = [], []
    for i in range(8):
        target, a, b = _paired_hits(100, seed=20 + i, p_a=0.5 + 0.05 * i, flip_ab=0.05 + 0.02 * i, flip_ba=0.05)
        _classification(tmp_path / "A", f"task{i}", target, a)
        _classification(tmp_path / "B", f"task{i}", target, b)
        diffs.append(b.mean() - a.mean())
        values_a.append(a.mean())
    result = compare(tmp_path / "A", tmp_path / "B", resamples=20000)
    (avg,) = result.averages
    assert avg.difference == pytest.approx(np.mean(diffs)) and avg.a == pytest.approx(np.mean(values_a))
    ref = scipy_bootstrap((np.array(diffs),), np.mean, n_resamples=20000, method="percentile",
                          random_state=np.random.default_rng(1)).confidence_interval
    width = ref.high - ref.low
    assert abs(avg.interval.low - ref.low) < 0.08 * width and abs(avg.interval.high - ref.high) < 0.08 * width


# ----------------------------------------------------------------------------- retrieval, few-shot, splits


def _retrieval_arrays(keys: list[str], captions_per_image: int, i2t_rank: np.ndarray, t2i_rank: np.ndarray,
                      ks=(1, 5, 10)) -> dict[str, np.ndarray]:
    n = len(keys)
    owner = np.repeat(np.arange(n), captions_per_image).astype(np.int32)
    return {"image_key": np.array(keys), "i2t_rank": i2t_rank.astype(np.int32),
            "i2t_hit": np.stack([(i2t_rank >= 0) & (i2t_rank < k) for k in ks], 1),
            "i2t_margin": np.zeros(n, np.float32), "t2i_image": owner, "t2i_rank": t2i_rank.astype(np.int32),
            "t2i_hit": np.stack([t2i_rank < k for k in ks], 1), "t2i_margin": np.zeros(len(owner), np.float32)}


def _recalls(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for j, k in enumerate((1, 5, 10)):
        out[f"text_retrieval_recall@{k}"] = float(arrays["i2t_hit"][:, j].mean())
        out[f"image_retrieval_recall@{k}"] = float(arrays["t2i_hit"][:, j].mean())
    out["mean_recall"] = float(np.mean(list(out.values())))
    return out


def test_retrieval_mcnemar_on_queries_at_k1_and_bootstrap_of_mean_recall(tmp_path):
    rng = np.random.default_rng(3)
    n, per = 80, 3
    keys = _keys(n)
    sides = {}
    for side in ("A", "B"):
        arrays = _retrieval_arrays(keys, per, rng.integers(0, 12, n), rng.integers(0, 12, n * per))
        _write(tmp_path / side, "ret", "retrieval", {"squash": arrays}, _recalls(arrays), metric="mean_recall",
               meta={"recall_k": [1, 5, 10]})
        sides[side] = arrays
    row = compare(tmp_path / "A", tmp_path / "B").tasks[0]
    a, b = sides["A"], sides["B"]
    hit_a = np.concatenate([a["i2t_hit"][:, 0], a["t2i_hit"][:, 0]])
    hit_b = np.concatenate([b["i2t_hit"][:, 0], b["t2i_hit"][:, 0]])
    want_b, want_c = int(np.sum(hit_a & ~hit_b)), int(np.sum(~hit_a & hit_b))
    assert (row.b_count, row.c_count) == (want_b, want_c) and want_b + want_c > 10
    assert row.pvalue == pytest.approx(binomtest(want_b, want_b + want_c, 0.5).pvalue)
    assert row.difference == pytest.approx(_recalls(b)["mean_recall"] - _recalls(a)["mean_recall"], abs=1e-12)
    assert row.n == n and row.difference_interval.low < row.difference < row.difference_interval.high


def test_fewshot_mcnemar_on_seed_zero_and_bootstrap_of_seed_means(tmp_path):
    rng = np.random.default_rng(8)
    n = 150
    target = rng.integers(0, N_CLASSES, n).astype(np.int32)
    preds = {}
    for side in ("A", "B"):
        pred = np.where(rng.random((6, n)) < 0.7, target[None, :], (target[None, :] + 1) % N_CLASSES).astype(np.int32)
        arrays = {"key": np.array(_keys(n)), "target": target, "shots": np.array([1, 1, 1, 4, 4, 4], np.int32),
                  "seed": np.array([0, 1, 2, 0, 1, 2], np.int32), "pred": pred}
        metrics = {"acc1@1shot": float((pred[:3] == target).mean()), "acc1@4shot": float((pred[3:] == target).mean())}
        _write(tmp_path / side, "fs", "fewshot", {"crop": arrays}, metrics, metric="acc1@4shot")
        preds[side] = pred
    row = compare(tmp_path / "A", tmp_path / "B").tasks[0]
    seed0_a, seed0_b = preds["A"][3] == target, preds["B"][3] == target
    assert (row.b_count, row.c_count) == (int(np.sum(seed0_a & ~seed0_b)), int(np.sum(~seed0_a & seed0_b)))
    assert row.tested == "seed-0 predictions at K = 4"
    assert row.difference == pytest.approx((preds["B"][3:] == target).mean() - (preds["A"][3:] == target).mean())


def test_a_task_of_several_splits_compares_the_mean_over_splits(tmp_path):
    split_hits = {}
    for side in ("A", "B"):
        written, parts_metrics = [], []
        for k in (1, 2):
            target, a, b = _paired_hits(50 + 30 * k, seed=40 + k)
            hits = a if side == "A" else b
            arrays = _class_arrays(_keys(len(target)), target, np.where(hits, target, (target + 1) % N_CLASSES),
                                   np.full(len(target), 5.0))
            written.append(write_records(records_path(tmp_path / side, MODEL, "sp", "fp32", part=f"split{k}"),
                                         "classification", {"crop": arrays}, {"part": f"split{k}", "precision": "fp32"}))
            parts_metrics.append(float(hits.mean()))
            split_hits[(side, k)] = hits
        metrics = {"acc1": float(np.mean(parts_metrics)), "acc1@split1": parts_metrics[0],
                   "acc1@split2": parts_metrics[1]}
        ev = {"precision": "fp32", "variant": "fp32", "metric": "acc1", "evaluated": 190,
              "records": result_entry(written, "classification")}
        write_result(TaskResult("sp", MODEL, "", "zeroshot_classification", metrics, evalkit=ev), tmp_path / side)
    row = compare(tmp_path / "A", tmp_path / "B").tasks[0]
    want = np.mean([split_hits[("B", k)].mean() - split_hits[("A", k)].mean() for k in (1, 2)])
    assert row.n == 80 + 110 and row.difference == pytest.approx(want, abs=1e-12)
    assert row.difference != pytest.approx(np.concatenate([split_hits[("B", 1)], split_hits[("B", 2)]]).mean()
                                           - np.concatenate([split_hits[("A", 1)], split_hits[("A", 2)]]).mean())
    assert row.b_count == sum(int(np.sum(split_hits[("A", k)] & ~split_hits[("B", k)])) for k in (1, 2))


# ----------------------------------------------------------------------------- flips


def test_flips_within_the_bound_hold_and_one_above_it_is_a_violation(tmp_path, capsys):
    n = 100
    target = np.arange(n) % N_CLASSES
    top_a = target.copy()
    margin_a = np.full(n, 16.0)
    margin_a[[3, 17, 40]] = [0.5, 2.0, 3.0]  # close calls
    # margin_bound("fp32") + margin_bound("bf16"), written out: 4 · 100 · 2ε each
    bound = 4 * 100 * 2 * (2 ** -23) + 4 * 100 * 2 * (2 ** -7)
    assert 6.0 < bound < 7.0
    top_b = top_a.copy()
    top_b[[3, 17]] = (target[[3, 17]] + 1) % N_CLASSES  # flips of samples A was unsure of
    margin_b = margin_a.copy()
    margin_b[60], margin_b[61] = 16.0 - 7.0, 16.0 + 6.0  # no flip; moved beyond the bound, and within it
    _classification(tmp_path / "A", "t1", target, top_a == target, margin=margin_a, top1=top_a)
    _classification(tmp_path / "B", "t1", target, top_b == target, precision="bf16", margin=margin_b, top1=top_b)
    result = compare(tmp_path / "A", tmp_path / "B")
    (flips,) = result.flip_sets
    assert [f.key for f in flips.flips] == ["img/0003.png", "img/0017.png"] and flips.bound == pytest.approx(bound)
    assert not result.violations
    # the bound's premise, on the samples that kept their top-2: one margin moved by more than the bound
    assert flips.moved == pytest.approx(7.0) and [f.key for _, f in result.margins_over] == ["img/0060.png"]
    code, out, _ = _run(capsys, str(tmp_path / "A"), str(tmp_path / "B"))
    assert code == 0 and "flip budget held: 2 flips, all within the bound" in out
    assert "margins moved by at least the bound in 1 sample (none flipped" in out
    assert "t1 [crop] img/0060.png: margin_A 16 -> margin_B 9 (moved 7 ≥ 6.25" in out

    top_b[[5]] = (target[5] + 2) % N_CLASSES  # a flip of a sample A was sure of (margin 16 > bound)
    margin_b[60] = 16.0
    _classification(tmp_path / "B", "t1", target, top_b == target, precision="bf16", margin=margin_b, top1=top_b)
    result = compare(tmp_path / "A", tmp_path / "B")
    assert [(s.mode, f.key, f.margin_a) for s, f in result.violations] == [("crop", "img/0005.png", 16.0)]
    assert not result.margins_over and result.flip_sets[0].moved == pytest.approx(6.0)
    code, out, _ = _run(capsys, str(tmp_path / "A"), str(tmp_path / "B"))
    assert code == 0 and "flip budget held" not in out
    assert "flip budget violated: 1 of 3 flips at or above the bound" in out
    assert "t1 [crop] img/0005.png: margin_A 16" in out and "class5 -> class1" in out
    assert "margins moved by less than the bound: at most 6 against 6.25" in out


# ----------------------------------------------------------------------------- bad input


def test_mismatched_samples_are_an_error_unless_intersect(tmp_path, capsys):
    target, a, b = _paired_hits(200, seed=6)
    _classification(tmp_path / "A", "t1", target, a)
    keep = np.setdiff1d(np.arange(200), np.arange(0, 200, 20))  # B lacks 10 samples
    _classification(tmp_path / "B", "t1", target[keep], b[keep], keys=[_keys(200)[i] for i in keep])
    code, out, err = _run(capsys, str(tmp_path / "A"), str(tmp_path / "B"))
    assert code == 2 and out == ""
    assert "t1: A has 200 samples, B 190; 10 keys only in A (img/0000.png, img/0020.png, img/0040.png, ...), " \
           "0 only in B (use --intersect to compare the 190 both have)" in err
    code, out, err = _run(capsys, str(tmp_path / "A"), str(tmp_path / "B"), "--intersect")
    assert code == 0 and err == ""
    assert "t1: compared on the 190 samples both have; dropped 10 only in A, 0 only in B" in out
    row = compare(tmp_path / "A", tmp_path / "B", intersect=True).tasks[0]
    assert (row.n, row.only_a, row.only_b) == (190, 10, 0)
    assert row.difference == pytest.approx(b[keep].mean() - a[keep].mean(), abs=1e-12)
    assert row.a.value == pytest.approx(a.mean()) and row.a.compared == pytest.approx(a[keep].mean())
    assert (row.b_count, row.c_count) == (int(np.sum(a[keep] & ~b[keep])), int(np.sum(~a[keep] & b[keep])))


def test_a_side_without_records(tmp_path, capsys):
    target, a, b = _paired_hits(100, seed=7)
    _classification(tmp_path / "A", "t1", target, a)
    path_b = _classification(tmp_path / "B", "t1", target, b, records=False)
    row = compare(tmp_path / "A", tmp_path / "B").tasks[0]  # acc1 is a proportion: its values can be compared
    assert row.kind == "values" and row.pvalue is None and row.difference_interval is None and not row.flips
    assert row.difference == pytest.approx(b.mean() - a.mean())
    assert row.b.interval is not None and row.b.interval.contains(b.mean())  # Wilson from N
    assert f"values only: B's result {path_b} was written without per-sample records" in row.notes[0]
    code, out, _ = _run(capsys, str(tmp_path / "A"), str(tmp_path / "B"))
    assert code == 0 and "b: A right, B wrong; c: A wrong, B right: no paired test (no records)" in out
    data = json.loads(path_b.read_text())
    data["evalkit"]["metric"] = "mean_per_class_recall"
    path_b.write_text(json.dumps(data))
    path_a = tmp_path / "A" / "runs" / MODEL / "t1.json"
    data = json.loads(path_a.read_text())
    data["evalkit"]["metric"] = "mean_per_class_recall"
    path_a.write_text(json.dumps(data))
    code, out, err = _run(capsys, str(tmp_path / "A"), str(tmp_path / "B"))
    assert code == 2 and out == ""
    assert f"t1: B's result {path_b} was written without per-sample records (re-run without --no-records): " \
           f"mean_per_class_recall cannot be compared without them" in err


def test_sides_by_folder_model_and_variant(tmp_path, capsys):
    target, a, b = _paired_hits(60, seed=9)
    _classification(tmp_path / "R", "t1", target, a)
    _classification(tmp_path / "R", "t1", target, b, precision="int8")
    _classification(tmp_path / "R", "t2", target, b, precision="int8")
    by_variant = compare(SideSpec(tmp_path / "R", variant="fp32"), SideSpec(tmp_path / "R", variant="int8"))
    assert [r.task for r in by_variant.tasks] == ["t1"] and by_variant.only_b == ["t2"]
    assert (by_variant.tasks[0].a.variant, by_variant.tasks[0].b.variant) == ("fp32", "int8")
    code, out, _ = _run(capsys, str(tmp_path / "R"), "--model", MODEL, "--variant", "fp32", "--variant", "int8",
                        "--json")
    assert code == 0 and json.loads(out)["tasks"][0]["difference"] == pytest.approx(100 * (b.mean() - a.mean()))
    by_path = compare(SideSpec(tmp_path / "R" / "runs" / MODEL, variant="fp32"), tmp_path / "R" / "runs" / MODEL / "int8")
    assert by_path.tasks[0].difference == pytest.approx(by_variant.tasks[0].difference)
    by_folders = compare(tmp_path / "R" / "runs" / MODEL, tmp_path / "R" / "runs" / MODEL / "int8")  # fp32: its own
    assert by_folders.tasks[0].difference == pytest.approx(by_variant.tasks[0].difference)
    # a results folder holding two variants of t1 is ambiguous; a folder that is no results folder is refused
    with pytest.raises(CompareError, match=r"A: .*R has 2 results of t1 \(toy fp32, toy int8\): name one"):
        compare(tmp_path / "R", tmp_path / "R" / "runs" / MODEL / "int8")
    with pytest.raises(CompareError, match=r"is the folder of 'int8', but --variant says 'fp32'"):
        compare(SideSpec(tmp_path / "R" / "runs" / MODEL / "int8", variant="fp32"), tmp_path / "R")
    code, _, err = _run(capsys, str(tmp_path), str(tmp_path / "R"))
    assert code == 2 and f"{tmp_path}: not a results folder" in err
    code, _, err = _run(capsys, str(tmp_path / "R"))
    assert code == 2 and "name a second folder, or two models" in err
    code, _, err = _run(capsys, str(tmp_path / "R"), str(tmp_path / "R"), "--variant", "fp32", "--tasks", "nope")
    assert code == 2 and "--tasks nope: no result of it" in err


def test_json_carries_the_same_figures(tmp_path, capsys):
    target, a, b = _paired_hits(300, seed=11)
    margin = np.where(np.random.default_rng(0).random(300) < 0.5, 0.1, 9.0)
    _classification(tmp_path / "A", "t1", target, a, margin=margin)
    _classification(tmp_path / "B", "t1", target, b, precision="bf16", margin=margin)
    _classification(tmp_path / "A", "t2", target, b)
    _classification(tmp_path / "B", "t2", target, a, precision="bf16")
    code, out, _ = _run(capsys, str(tmp_path / "A"), str(tmp_path / "B"), "--json")
    assert code == 0
    data = json.loads(out)
    result = compare(tmp_path / "A", tmp_path / "B")
    assert [t["task"] for t in data["tasks"]] == ["t1", "t2"]
    for got, row in zip(data["tasks"], result.tasks, strict=True):
        assert got["difference"] == pytest.approx(100 * row.difference)
        assert got["difference_ci"]["low"] == pytest.approx(100 * row.difference_interval.low)
        assert got["a"]["value"] == pytest.approx(100 * row.a.value)
        assert got["a"]["ci"]["method"] == "wilson"
        assert (got["mcnemar"]["b"], got["mcnemar"]["c"]) == (row.b_count, row.c_count)
        assert got["mcnemar"]["p_holm"] == pytest.approx(row.pvalue_holm)
    assert data["tasks"][0]["mcnemar"]["b"] == int(np.sum(a & ~b))
    assert data["averages"][0]["difference"] == pytest.approx(0.0, abs=1e-9)  # t2 mirrors t1
    flips = data["tasks"][0]["flips"][0]
    assert flips["flips"] == int(np.sum(a != b)) and flips["precision_b"] == "bf16"
    sets = [f for t in data["tasks"] for f in t["flips"]]
    assert data["flip_budget"]["violations"] == sum(s["margin_a"] >= f["bound"] for f in sets for s in f["samples"]) > 0
    assert data["flip_budget"]["flips"] == sum(f["flips"] for f in sets) == 2 * int(np.sum(a != b))
    assert data["flip_budget"]["held"] is (data["flip_budget"]["violations"] == 0)
    text = capsys.readouterr().out
    assert text == ""
    code, text, _ = _run(capsys, str(tmp_path / "A"), str(tmp_path / "B"))
    assert data["flip_budget"]["verdict"] in text


# ----------------------------------------------------------------------------- end to end

SHAPES = """\
task: sw-flips
version: 1
family: classification
source: {type: shapeworld, task: shape, split: test, n: 120, seed: 5}
classnames: [shape one, shape two, shape three, shape four, shape five, shape six]
templates: ["a photo of a {c}."]
metric: acc1
view: {transform: crop}
"""


def test_demo_model_fp32_against_bf16_end_to_end(tmp_path, capsys):
    """The demo model run twice (fp32, bf16) on 120 ShapeWorld images, compared from the command
    line: the flips it reports are the samples whose recorded top-1 differs, and the bound holds.
    Class names that say nothing of the shape make close calls (bf16's budget: a large share of the 120), so
    some samples do flip."""
    from evalkit.records import read_records

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "sw-flips.yaml").write_text(SHAPES)
    out = tmp_path / "out"
    for precision in ("fp32", "bf16"):
        assert cli.main(["run", "--model", "eva-clip-demo", "--tasks", "sw-flips", "--task-dir", str(tmp_path / "tasks"),
                         "--output-dir", str(out), "--precision", precision, "--quiet", "--no-cache"]) == 0
    capsys.readouterr()
    folder = out / "runs" / "eva-clip-demo"
    code, text, err = _run(capsys, str(folder), str(folder / "bf16"), "--json")
    assert code == 0, err
    data = json.loads(text)
    a = read_records(folder / "sw-flips.records.npz").arrays()
    b = read_records(folder / "bf16" / "sw-flips.records.npz").arrays()
    assert (a["key"] == b["key"]).all()
    changed = a["top_classes"][:, 0] != b["top_classes"][:, 0]
    (flips,) = data["tasks"][0]["flips"]
    assert flips["flips"] == int(changed.sum()) > 0 and flips["precision_b"] == "bf16"
    assert [s["key"] for s in flips["samples"]] == a["key"][changed].tolist()
    assert data["flip_budget"]["held"] is True and flips["bound"] == pytest.approx(4 * 100 * 2 * (2 ** -23 + 2 ** -7))
    hit_a, hit_b = a["top_classes"][:, 0] == a["target"], b["top_classes"][:, 0] == b["target"]
    mcnemar = data["tasks"][0]["mcnemar"]
    assert (mcnemar["b"], mcnemar["c"]) == (int(np.sum(hit_a & ~hit_b)), int(np.sum(~hit_a & hit_b)))
