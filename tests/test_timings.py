"""Where a run's time went (issue 19, item 5): every result's ``timings`` (data, forward, text,
scoring, other, wall, samples/s) measure what they say, for every family; and neither timings
nor where a fingerprint's digests came from make two run-log lines of one result differ."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from evalkit.data.fingerprint import content_digest, labelled_digest
from evalkit.data.sources import SourceData, range_units
from evalkit.features.embed import embed

KEYS = {"wall_s", "data_s", "forward_s", "text_s", "scoring_s", "other_s", "embed_s", "samples", "samples_per_s",
        "overlap"}

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:clip_benchmark"),
              pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning")]


class SlowView:
    """A runtime view whose per-batch step takes ``delay`` seconds (the stand-in of a forward)."""

    identity = "slow"
    batch_key = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.batches = 0

    def sample(self, loaded):
        return torch.from_numpy(loaded).float()

    def embed(self, encoder, batch):
        time.sleep(self.delay)
        self.batches += 1
        return torch.nn.functional.normalize(batch[:, :4], dim=-1)


def _slow_data(n: int, delay: float) -> SourceData:
    import numpy as np

    def get(i: int):
        def load():
            time.sleep(delay)
            return np.full((8,), i + 1, dtype=np.float32)
        return f"s{i}", load, i % 3

    return SourceData(range_units("slow", n, get, chunk=8), ["a", "b", "c"])


def test_the_loader_and_forward_clocks_count_what_they_time():
    encoder = SimpleNamespace(name="fake", fingerprint="fake", embed_dim=4, device="cpu")
    view = SlowView(0.03)
    (emb,) = embed(encoder, _slow_data(20, 0.01), {"v": view}, batch_size=4, progress=False).values()
    assert view.batches == 5  # units of 8, 8, 4: batches of 4, 4, 4, 4, 4
    assert 5 * 0.03 <= emb.forward_seconds < 5 * 0.03 + 0.5
    assert 20 * 0.01 <= emb.data_seconds < 20 * 0.01 + 0.5
    assert emb.seconds >= emb.forward_seconds
    # the digests travelled with the batches, each the sample's decoded content with its label
    import numpy as np

    fp = emb.fingerprint
    want = sorted(labelled_digest(content_digest(np.full((8,), i + 1, dtype=np.float32)), i % 3) for i in range(20))
    assert sorted(fp.digests) == want and fp.complete and fp.origin == "run"


def _result(out: Path):
    from evalkit.results import iter_results

    (result,) = list(iter_results(out))
    return result.evalkit


def _check(t: dict) -> None:
    assert set(t) == KEYS
    assert all(t[k] >= 0 for k in KEYS - {"samples_per_s", "overlap", "samples"})
    assert t["samples_per_s"] == pytest.approx(t["samples"] / t["wall_s"], rel=0.01)
    # the clocks that partition the wall time: embedding passes, text, scoring, the rest
    assert t["embed_s"] + t["text_s"] + t["scoring_s"] + t["other_s"] == pytest.approx(t["wall_s"], abs=2e-3)


def test_a_classification_result_says_where_its_time_went(tiny_arch, tmp_path):
    from fixtures import make_wds

    from evalkit.api import evaluate

    task = f"wds:{make_wds(tmp_path / 'wds_t', n_per_class=4, nshards=2)}"
    for out in ("o1", "o2"):
        assert evaluate(f"open_clip:{tiny_arch}", task, output_dir=tmp_path / out, cache_dir=tmp_path / "cache",
                        progress=False, raise_errors=True).ok
    first, cached = _result(tmp_path / "o1"), _result(tmp_path / "o2")
    t = first["timings"]
    _check(t)
    assert t["samples"] == first["samples"] == 24 and t["data_s"] > 0 and t["forward_s"] > 0
    assert t["text_s"] == pytest.approx(first["classifier_seconds"], abs=1e-4)
    assert t["wall_s"] == pytest.approx(first["wall_time_s"], abs=0.05)
    assert first["image_seconds"] == pytest.approx(t["embed_s"], abs=1e-4) and first["images_per_s"] > 0
    # all cached: nothing decoded, nothing through the model
    _check(cached["timings"])
    assert cached["timings"]["data_s"] == cached["timings"]["forward_s"] == 0


def test_retrieval_and_few_shot_results_have_timings(tmp_path):
    from evalkit.api import evaluate

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "sw-fs.yaml").write_text(
        "task: sw-fs\nversion: 1\nfamily: linear_probe\nmetric: acc1@2shot\n"
        "source: {type: shapeworld, task: shape, split: test, n: 48, seed: 5}\n"
        "train_source: {type: shapeworld, task: shape, split: train, n: 48, seed: 5}\n"
        "fewshot: {shots: [1, 2], seeds: 1, epochs: 1, wd_points: 3, wd_init_points: 3, wd_refine_span: 1}\n")
    assert evaluate("eva-clip-demo", "sw-fs", task_dirs=[tasks], output_dir=tmp_path / "fs", cache_dir=None,
                    progress=False, raise_errors=True).ok
    fs = _result(tmp_path / "fs")
    _check(fs["timings"])
    # a probe has no text side; training the probes is scoring; both splits' samples and passes count
    assert fs["timings"]["text_s"] == 0 and fs["timings"]["scoring_s"] >= fs["probe_seconds"] - 1e-3
    assert fs["timings"]["samples"] == 96 and fs["timings"]["embed_s"] == pytest.approx(
        fs["image_seconds"] + fs["train_image_seconds"], abs=1e-3)
    assert fs["train_data_fingerprint"]["complete"] and fs["train_data_fingerprint"]["samples"] == 48
    assert evaluate("eva-clip-demo", "shapeworld-retrieval", output_dir=tmp_path / "rt", cache_dir=None, limit=64,
                    progress=False, raise_errors=True).ok
    rt = _result(tmp_path / "rt")
    _check(rt["timings"])
    assert rt["timings"]["text_s"] == pytest.approx(rt["text_seconds"], abs=1e-4) and rt["timings"]["text_s"] > 0


def test_timings_and_the_digests_origin_do_not_make_a_run_log_line_new(tmp_path):
    from evalkit.results import TaskResult, append_run_log, read_run_log

    fp = {"scheme": "evalkit-content-v1", "root": "ab" * 32, "samples": 3, "hashed": 3, "undecodable": 0,
          "duplicates": 0, "complete": True, "from": "run"}

    def result(fingerprint: dict, wall: float) -> TaskResult:
        return TaskResult("t", "m", "w.pt", "zeroshot_classification", {"acc1": 0.5},
                          evalkit={"metric": "acc1", "data_fingerprint": fingerprint,
                                   "timings": {"wall_s": wall, "data_s": wall / 2}, "wall_time_s": wall})

    append_run_log(tmp_path, result(fp, 1.0))
    append_run_log(tmp_path, result({**fp, "from": "cache"}, 0.1))  # a resume from the cache: the same
    (line,) = read_run_log(tmp_path)
    assert line["data_fingerprint"] == fp and line["timings"]["wall_s"] == 1.0
    append_run_log(tmp_path, result({**fp, "root": "cd" * 32}, 0.1))  # other data: a line of its own
    lines = read_run_log(tmp_path)
    assert len(lines) == 2 and lines[1]["data_fingerprint"]["root"] == "cd" * 32 and lines[1]["timings"]["wall_s"] == 0.1
