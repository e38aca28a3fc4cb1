"""Throughput knobs (evalkit.features.batching) and the GPU benchmark's CPU-testable parts (benchmarks/bench_gpu.py).

No test runs CUDA: the CUDA paths are driven by fakes (an encoder that says it is on
``cuda:0``, a forward that raises ``torch.cuda.OutOfMemoryError`` above a threshold, device
properties from a lambda, ``torch.cuda.is_available`` monkeypatched), and the benchmark runs its
whole path on the CPU with ``--smoke``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fixtures import FakeClock
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from evalkit.features.batching import (
    MEMORY_FILE,
    BatchSize,
    largest_fitting_batch,
    loader_kwargs,
    parse_batch_size,
    prefetch_depth,
    resolve_batch_size,
    resolve_for_views,
    to_device,
)
from evalkit.models.eva_clip import EvaVisionConfig, EvaVisionTransformer
from evalkit.models.precision import PlacementError

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


# -- fakes --------------------------------------------------------------------------------------


def fake_encoder(device: str = "cuda:0", fingerprint: str = "model-a", model: nn.Module | None = None,
                 device_map: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(name="fake", fingerprint=fingerprint, device=device, device_map=device_map,
                           model=model if model is not None else nn.Linear(4, 4), towers={})


class FakeView:
    def __init__(self, key: str = "image-step", identity: str = "image:crop") -> None:
        self.batch_key = ("fake", key)
        self.identity = identity
        self.batches: list[tuple[tuple[int, ...], torch.dtype]] = []
        self.oom_above: int | None = None

    def sample(self, loaded):
        return loaded

    def embed(self, encoder, batch):
        self.batches.append((tuple(batch.shape), batch.dtype))
        if self.oom_above is not None and batch.shape[0] > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.zeros(batch.shape[0], 4)


class OomAbove:
    """A forward that runs out of memory for batches above ``limit``; counts its calls."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: list[int] = []

    def __call__(self, b: int) -> None:
        self.calls.append(b)
        if b > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fake: batch {b} > {self.limit})")


def no_forward(b: int) -> None:
    raise AssertionError(f"the search ran (batch {b}) where a remembered size was expected")


def gpu(name: str = "FakeGPU H200", total: int = 141 * GIB):
    return lambda index: (name, total)


SHAPE = (3, 224, 224)


# -- --batch-size auto on CUDA ----------------------------------------------------------------


def test_auto_finds_the_largest_batch_that_fits_and_keeps_a_margin(tmp_path):
    forward = OomAbove(37)
    got = resolve_batch_size("auto", fake_encoder(), FakeView(), SHAPE, cache_dir=tmp_path, forward=forward,
                             device_info=gpu())
    # 37 fits, 38 does not: 90 % of 37, rounded down
    assert got == BatchSize(33, "searched")  # 37 fits, 38 does not: floor(0.9 * 37)
    assert 37 in forward.calls and 38 in forward.calls  # both sides of the edge were tried
    assert len(forward.calls) <= 2 * math.ceil(math.log2(64)) + 1
    memory = json.loads((tmp_path / MEMORY_FILE).read_text())
    (record,) = memory.values()
    assert record["largest"] == 37 and record["sample_shape"] == list(SHAPE) and record["fingerprint"] == "model-a"
    assert record["devices"] == [{"index": 0, "name": "FakeGPU H200", "total_memory": 141 * GIB}]


def test_a_remembered_search_is_reused_without_a_forward(tmp_path):
    view = FakeView()
    first = resolve_batch_size("auto", fake_encoder(), view, SHAPE, cache_dir=tmp_path, forward=OomAbove(100),
                               device_info=gpu())
    again = resolve_batch_size("auto", fake_encoder(), view, SHAPE, cache_dir=tmp_path, forward=no_forward,
                               device_info=gpu())
    assert first == BatchSize(90, "searched") and again == BatchSize(90, "remembered")
    # the margin is applied when read, so a different margin needs no new search
    half = resolve_batch_size("auto", fake_encoder(), view, SHAPE, cache_dir=tmp_path, forward=no_forward,
                              device_info=gpu(), margin=0.5)
    assert half == BatchSize(50, "remembered")


@pytest.mark.parametrize("change", ["device name", "device memory", "model", "view step", "sample shape",
                                    "device map"])
def test_the_memory_is_keyed_by_device_model_and_view(tmp_path, change):
    base = {"encoder": fake_encoder(), "view": FakeView(), "shape": SHAPE, "info": gpu()}
    resolve_batch_size("auto", base["encoder"], base["view"], base["shape"], cache_dir=tmp_path,
                       forward=OomAbove(100), device_info=base["info"])
    other = dict(base)
    if change == "device name":
        other["info"] = gpu(name="FakeGPU A100")
    elif change == "device memory":
        other["info"] = gpu(total=80 * GIB)
    elif change == "model":
        other["encoder"] = fake_encoder(fingerprint="model-b")
    elif change == "view step":
        other["view"] = FakeView(key="pooled-frames")
    elif change == "sample shape":
        other["shape"] = (3, 448, 448)
    else:
        other["encoder"] = fake_encoder(device_map={"visual": 0, "text": 0})
    forward = OomAbove(20)
    got = resolve_batch_size("auto", other["encoder"], other["view"], other["shape"], cache_dir=tmp_path,
                             forward=forward, device_info=other["info"])
    assert got == BatchSize(18, "searched") and forward.calls
    assert len(json.loads((tmp_path / MEMORY_FILE).read_text())) == 2  # both kept


def test_the_same_step_under_another_transform_shares_the_search(tmp_path):
    # crop and squash differ in identity (their geometry) but not in what a batch costs
    resolve_batch_size("auto", fake_encoder(), FakeView(identity="image:crop"), SHAPE, cache_dir=tmp_path,
                       forward=OomAbove(100), device_info=gpu())
    got = resolve_batch_size("auto", fake_encoder(), FakeView(identity="image:squash"), SHAPE, cache_dir=tmp_path,
                             forward=no_forward, device_info=gpu())
    assert got == BatchSize(90, "remembered")


def test_a_model_split_over_gpus_is_keyed_by_every_gpu(tmp_path):
    seen = []

    def info(index):
        seen.append(index)
        return ("FakeGPU", 40 * GIB)

    enc = fake_encoder(device_map={"visual.blocks.0": 0, "visual.blocks.1": 2, "text": "cpu"})
    resolve_batch_size("auto", enc, FakeView(), SHAPE, cache_dir=tmp_path, forward=OomAbove(9), device_info=info)
    assert seen == [0, 2]
    (record,) = json.loads((tmp_path / MEMORY_FILE).read_text()).values()
    assert [d["index"] for d in record["devices"]] == [0, 2]


def test_the_memory_lives_in_the_cache_folder_by_default(tmp_path):
    resolve_batch_size("auto", fake_encoder(), FakeView(), SHAPE, forward=OomAbove(5), device_info=gpu())
    assert (Path(os.environ["EVALKIT_CACHE"]) / MEMORY_FILE).is_file()  # conftest points it at tmp_path


def test_remember_false_neither_reads_nor_writes(tmp_path):
    resolve_batch_size("auto", fake_encoder(), FakeView(), SHAPE, cache_dir=tmp_path, forward=OomAbove(5),
                       device_info=gpu(), remember=False)
    assert not (tmp_path / MEMORY_FILE).exists()


def test_an_error_that_is_not_oom_propagates_and_nothing_is_remembered(tmp_path):
    def forward(b):
        if b >= 8:
            raise ValueError("shape mismatch in the view")

    with pytest.raises(ValueError, match="shape mismatch"):
        resolve_batch_size("auto", fake_encoder(), FakeView(), SHAPE, cache_dir=tmp_path, forward=forward,
                           device_info=gpu())
    assert not (tmp_path / MEMORY_FILE).exists()


def test_not_even_one_sample_fits_is_a_placement_error_naming_view_and_device(tmp_path):
    with pytest.raises(PlacementError, match=r"not even one sample of view image:crop fits on cuda:0 \(FakeGPU H200"):
        resolve_batch_size("auto", fake_encoder(), FakeView(), SHAPE, cache_dir=tmp_path, forward=OomAbove(0),
                           device_info=gpu())


def test_an_unreadable_memory_file_is_searched_again_and_rewritten(tmp_path, caplog):
    (tmp_path / MEMORY_FILE).write_text("{ not json")
    forward = OomAbove(10)
    with caplog.at_level(logging.WARNING, logger="evalkit.features.batching"):
        got = resolve_batch_size("auto", fake_encoder(), FakeView(), SHAPE, cache_dir=tmp_path, forward=forward,
                                 device_info=gpu())
    assert got == BatchSize(9, "searched") and forward.calls
    assert MEMORY_FILE in caplog.text and "unreadable" in caplog.text
    assert len(json.loads((tmp_path / MEMORY_FILE).read_text())) == 1


def test_the_default_forward_runs_the_views_batch_step_on_synthetic_samples(tmp_path):
    view = FakeView()
    view.oom_above = 5
    got = resolve_batch_size("auto", fake_encoder(), view, (3, 8, 8), cache_dir=tmp_path, device_info=gpu())
    assert got == BatchSize(4, "searched")  # 5 fits, 6 does not: floor(4.5)
    sizes = [shape[0] for shape, _ in view.batches]
    assert 5 in sizes and 6 in sizes
    assert all(shape[1:] == (3, 8, 8) and dtype == torch.uint8 for shape, dtype in view.batches)


@pytest.mark.parametrize("limit", [*range(1, 70), 100, 1000, 1023, 5000])
def test_largest_fitting_batch_is_exact_below_64_and_within_1_32_above(limit):
    calls = []

    def fits(b):
        calls.append(b)
        return b <= limit

    got = largest_fitting_batch(fits, max_batch=1024)
    expected = min(limit, 1024)
    assert got <= expected and fits(got)
    if expected < 64:
        assert got == expected
    else:
        assert expected - got <= got / 32
    assert len(calls) <= 11 + 6  # doubling to 1024, then at most log2(1024/32)+1 bisection steps


def test_a_number_is_used_as_given():
    assert resolve_batch_size(16, fake_encoder(), FakeView(), SHAPE, forward=no_forward) == BatchSize(16, "given")
    assert resolve_batch_size("24", fake_encoder(), FakeView(), SHAPE, forward=no_forward) == BatchSize(24, "given")
    assert parse_batch_size("AUTO") == "auto"
    for bad in ("0", "-3", "many", "2.5", 0):
        with pytest.raises(ValueError, match="--batch-size: expected 'auto' or a whole number >= 1"):
            parse_batch_size(bad)


# -- --batch-size auto off CUDA ---------------------------------------------------------------


def test_on_the_cpu_auto_is_the_documented_default_without_a_forward(tmp_path):
    small = resolve_batch_size("auto", fake_encoder("cpu"), FakeView(), SHAPE, cache_dir=tmp_path, forward=no_forward)
    assert small == BatchSize(64, "cpu-default")
    # over a billion parameters (counted on meta, nothing allocated): 8
    big = nn.Linear(40_000, 30_000, device="meta")
    assert sum(p.numel() for p in big.parameters()) > 10**9
    got = resolve_batch_size("auto", fake_encoder("cpu", model=big), FakeView(), SHAPE, cache_dir=tmp_path,
                             forward=no_forward)
    assert got == BatchSize(8, "cpu-default")
    assert not (tmp_path / MEMORY_FILE).exists()


# -- several views, probed from a unit's samples -------------------------------------------------


def _samples(items):
    """(key, load, label) triples; an item that is an exception fails to load."""
    def load_of(item):
        def load():
            if isinstance(item, Exception):
                raise item
            return item
        return load
    return [(f"s{i}", load_of(item), 0) for i, item in enumerate(items)]


class ShapedView(FakeView):
    def __init__(self, shape, key="image-step", identity="image:crop"):
        super().__init__(key, identity)
        self.shape = shape

    def sample(self, loaded):
        return torch.zeros(self.shape, dtype=torch.uint8)


def test_views_of_one_step_and_shape_share_one_search_the_first_decodable_sample_sizes_it(tmp_path):
    crop, squash = ShapedView(SHAPE, identity="image:crop"), ShapedView(SHAPE, identity="image:squash")
    crop.oom_above = squash.oom_above = 20
    got = resolve_for_views("auto", fake_encoder(), {"crop": crop, "squash": squash},
                            _samples([OSError("truncated file"), "image"]), device_info=gpu(), remember=False)
    assert got == BatchSize(18, "searched")
    assert crop.batches and not squash.batches  # one search for both, even with no memory to share it
    assert all(shape[1:] == SHAPE for shape, _ in crop.batches)


def test_views_of_different_shapes_take_the_smaller_batch(tmp_path):
    image, frames = ShapedView((3, 16, 16)), ShapedView((8, 3, 16, 16), key="pooled-frames")
    image.oom_above, frames.oom_above = 200, 25
    got = resolve_for_views("auto", fake_encoder(), {"image": image, "frames": frames}, _samples(["x"]),
                            cache_dir=tmp_path, device_info=gpu())
    assert got == BatchSize(22, "searched")  # floor(0.9 * 25)
    assert image.batches and frames.batches


def test_no_decodable_sample_falls_back_and_cpu_decodes_nothing(tmp_path):
    view = ShapedView(SHAPE)
    got = resolve_for_views("auto", fake_encoder(), {"v": view}, _samples([OSError("bad")] * 40),
                            cache_dir=tmp_path, device_info=gpu())
    assert got == BatchSize(64, "fallback") and not view.batches

    def never():
        raise AssertionError("a sample was decoded for a CPU model")

    got = resolve_for_views("auto", fake_encoder("cpu"), {"v": view}, [("k", never, 0)], cache_dir=tmp_path)
    assert got == BatchSize(64, "cpu-default")
    assert resolve_for_views(12, fake_encoder(), {"v": view}, [("k", never, 0)]) == BatchSize(12, "given")


# -- pinned memory, non-blocking copies, prefetch ----------------------------------------------


def test_loader_kwargs_on_the_cpu_pin_nothing_and_the_loader_takes_them():
    assert loader_kwargs("cpu", 0) == {"pin_memory": False}
    assert loader_kwargs("cpu", 0, prefetch=5) == {"pin_memory": False}  # the thread's depth, not the loader's
    assert loader_kwargs("cpu", 4, prefetch=6) == {"pin_memory": False, "prefetch_factor": 2}
    assert loader_kwargs("cpu", 4, prefetch=1) == {"pin_memory": False, "prefetch_factor": 1}
    assert loader_kwargs("cpu", 3, prefetch=7) == {"pin_memory": False, "prefetch_factor": 3}  # ceil(7 / 3)
    assert loader_kwargs("cpu", 2) == {"pin_memory": False}  # torch's own default stays
    data = list(range(10))
    for workers, prefetch in ((0, 3), (2, 3)):
        loader = DataLoader(data, batch_size=2, num_workers=workers, **loader_kwargs("cpu", workers, prefetch))
        assert loader.prefetch_factor == (2 if workers else None)


def test_loader_kwargs_pin_memory_for_a_cuda_model(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loader_kwargs("cuda:1", 0) == {"pin_memory": True}
    assert loader_kwargs("cuda", 8, prefetch=4) == {"pin_memory": True, "prefetch_factor": 1}
    assert loader_kwargs("cpu", 0) == {"pin_memory": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loader_kwargs("cuda:0", 0) == {"pin_memory": False}  # no CUDA: nothing to pin for


def test_prefetch_depth_and_bad_values():
    assert prefetch_depth() == 2 and prefetch_depth(7) == 7
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="--prefetch: expected a whole number >= 1"):
            loader_kwargs("cpu", 2, prefetch=bad)
        with pytest.raises(ValueError, match="--prefetch"):
            prefetch_depth(bad)


class FakeBatch:
    """Stands in for a host tensor: records how it was copied."""

    def __init__(self, pinned: bool) -> None:
        self.device = torch.device("cpu")
        self.pinned = pinned
        self.copies: list[tuple] = []

    def is_pinned(self) -> bool:
        return self.pinned

    def to(self, device, dtype=None, non_blocking=False):
        self.copies.append((device, dtype, non_blocking))
        return self


@pytest.mark.parametrize(("pinned", "device", "non_blocking"), [
    (True, "cuda:0", True), (False, "cuda:0", False), (True, "cpu", False), (False, "cpu", False),
])
def test_to_device_is_non_blocking_only_from_pinned_memory_to_cuda(pinned, device, non_blocking):
    batch = FakeBatch(pinned)
    to_device(batch, device, torch.float16)
    assert batch.copies == [(torch.device(device), torch.float16, non_blocking)]


def test_to_device_on_the_cpu_is_an_ordinary_conversion():
    t = torch.arange(6, dtype=torch.uint8)
    assert to_device(t, "cpu") is t
    out = to_device(t, "cpu", torch.float32)
    assert out.dtype == torch.float32 and torch.equal(out, t.float())


# -- benchmarks/bench_gpu.py: the pure pieces --------------------------------------------------

TINY = EvaVisionConfig(image_size=28, layers=2, width=8, head_width=4, mlp_ratio=2, patch_size=14)


def test_vision_flops_by_hand_for_a_tiny_config():
    # grid 2 -> N = 5 tokens; W = 8, H = 16
    # per token: 2 * (8*24 + 8*8 + 8*16 + 16*8) = 2 * 512 = 1024  ->  5 tokens: 5120
    # attention: Q.K^T and P.V, 2 * N^2 * W each = 2 * 2 * 25 * 8 = 800
    # stem: 4 patches * 2 * (3*14*14) * 8 = 37632; head: 2 * 8 * 4 = 64
    f = bench.vision_flops(TINY, embed_dim=4)
    assert f["tokens"] == 5
    assert f["per_block_linear"] == 5120 and f["per_block_attention"] == 800 and f["per_block"] == 5920
    assert f["stem_and_head"] == 37632 + 64
    assert f["total"] == 2 * 5920 + 37632 + 64 == 49536
    assert bench.vision_flops(TINY, 4, layers=5)["total"] == 5 * 5920 + 37696


def test_vision_flops_match_torchs_flop_counter_on_the_real_tower():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    tower = EvaVisionTransformer(TINY, 4).eval()
    # the math backend: attention as the two matmuls the counter sees (fused kernels it may not)
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        tower(torch.randn(3, 3, 28, 28))
    assert counter.get_total_flops() == 3 * bench.vision_flops(TINY, 4)["total"]


def test_the_18b_blocks_linear_flops_are_two_per_weight_per_token():
    cfg = bench.config_18b().vision
    assert (cfg.layers, cfg.width, cfg.heads, cfg.mlp_hidden, cfg.grid**2 + 1) == (48, 5120, 40, 25600, 257)
    with torch.device("meta"):
        block_weights = sum(m.weight.numel() for m in EvaVisionTransformer(
            EvaVisionConfig(**{**cfg.__dict__, "layers": 1}), 1536).blocks[0].modules() if isinstance(m, nn.Linear))
    f = bench.vision_flops(cfg, 1536)
    assert f["per_block_linear"] == 2 * block_weights * 257
    assert f["per_block_attention"] == 4 * 257**2 * 5120
    assert 9.0e12 < f["total"] < 9.3e12  # about 9.1 TFLOP per 224-px image


def test_extrapolation_mfu_and_blocks_that_fit_arithmetic():
    # 12 of 48 identical blocks, stem negligible: a quarter of the FLOPs, a quarter of the speed
    assert bench.full_depth_images_per_s(100.0, 2e12, 8e12) == pytest.approx(25.0)
    f12 = bench.vision_flops(bench.config_18b().vision, 1536, layers=12)["total"]
    f48 = bench.vision_flops(bench.config_18b().vision, 1536)["total"]
    assert bench.full_depth_images_per_s(400.0, f12, f48) == pytest.approx(400 * f12 / f48)
    assert 100 < bench.full_depth_images_per_s(400.0, f12, f48) < 101  # 12 blocks + stem vs 48 + stem
    assert bench.mfu(25.0, 8e12, 1e15) == pytest.approx(0.2)
    assert bench.mfu(25.0, 8e12, None) is None
    # 100 GiB free, 85 % usable = 85 GiB; 5 GiB others + 10 GiB activations -> 70 GiB for 7-GiB blocks
    assert bench.blocks_that_fit(100 * GIB, 7 * GIB, 5 * GIB, 10 * GIB, max_blocks=48) == 10
    assert bench.blocks_that_fit(100 * GIB, 1 * GIB, 5 * GIB, 10 * GIB, max_blocks=48) == 48
    assert bench.blocks_that_fit(10 * GIB, 7 * GIB, 5 * GIB, 10 * GIB, max_blocks=48) == 0


def test_sweep_stops_at_the_first_oom_and_keeps_the_deadline():
    clock = FakeClock()

    def forward(b):  # 10 ms per image; out of memory above 40
        if b > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        clock.now += 0.01 * b

    rows = bench.sweep(forward, (8, 16, 32, 64, 128), seconds=1.0, deadline=1e9, flops_per_image=1e12,
                       flops_full=4e12, peak=1e15, clock=clock)
    assert [r["batch"] for r in rows] == [8, 16, 32, 64] and rows[-1] == {"batch": 64, "oom": True}
    first = rows[0]
    assert first["images_per_s"] == pytest.approx(100.0)  # 10 ms an image, whatever the batch
    assert first["images_per_s_full_depth"] == pytest.approx(25.0)
    assert first["mfu"] == pytest.approx(100 * 1e12 / 1e15)
    assert first["iterations"] == math.ceil(1.0 / 0.08)
    # a deadline that leaves room for the first settings only: the rest is skipped, not run
    clock.now = 0.0
    rows = bench.sweep(lambda b: setattr(clock, "now", clock.now + 0.01 * b), (8, 16, 32, 64), seconds=1.0,
                       deadline=3.0, flops_per_image=1e12, flops_full=1e12, peak=None, clock=clock)
    ran = [r["batch"] for r in rows if "images_per_s" in r]
    skipped = [r["batch"] for r in rows if "skipped" in r]
    assert ran == [8, 16] and skipped == [32, 64] and clock.now <= 3.0


def test_sweep_lets_an_error_that_is_not_oom_through():
    def forward(b):
        raise ValueError("bad shape")

    with pytest.raises(ValueError, match="bad shape"):
        bench.sweep(forward, (8,), seconds=0.1, deadline=1e9, flops_per_image=1.0, flops_full=1.0, peak=None)


def test_the_split_over_two_gpus_uses_the_projects_device_map():
    from evalkit.models.device_map import device_of

    _model, device_map = bench.split_device_map(bench.config_18b(), {0: 40 * GIB, 1: 40 * GIB}, batch=128)
    assert set(device_map.values()) == {0, 1}  # no CPU, no disk: 2 x 40 GiB hold the fp16 18B
    # whole blocks per device (no entry below a block), the vision tower's 48 blocks over both GPUs
    assert not [n for n in device_map if n.startswith("visual.blocks.") and n.count(".") > 2]
    where = [device_of(f"visual.blocks.{i}", device_map) for i in range(48)]
    assert set(where) == {0, 1} and where == sorted(where)  # in order: the first blocks on cuda:0


# -- benchmarks/bench_gpu.py: the script ---------------------------------------------------------


def test_without_a_gpu_the_benchmark_says_so_and_writes_the_no_gpu_json(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine that has one
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout
    report = json.loads(out.read_text())
    assert report["cuda"] is False and report["model"] == "eva-clip-18b"
    assert report["flops_per_image"]["layers"] == 48


def test_the_smoke_run_takes_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "smoke.json"
    assert bench.main(["--smoke", "--json", str(out), "--batches", "1,2", "--gemm-sizes", "64",
                       "--gemm-seconds", "0.01", "--seconds", "0.01", "--max-blocks", "2"]) == 0
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["cuda"] is False
    assert set(report["peak"]) == {"fp16", "bf16", "int8"}
    for precision in ("fp16", "bf16", "int8"):
        entry = report["precisions"][precision]
        assert entry["blocks_built"] == 2, entry
        rows = [r for r in entry["rows"] if "images_per_s" in r]
        assert [r["batch"] for r in rows] == [1, 2]
        for r in rows:  # 2 of the toy config's 4 blocks built: the full depth is slower
            assert 0 < r["images_per_s_full_depth"] < r["images_per_s"]
    assert report["split"]["gpus"] == 0 and "nothing to split" in report["split"]["skipped"]


def test_auto_batch_size_is_recorded_in_the_result(tmp_path):
    from evalkit import api
    r = api.evaluate("eva-clip-demo", "shapeworld-shape", batch_size="auto", limit=8, output_dir=tmp_path,
                     progress=False, cache_dir=None, raise_errors=True).results[0]
    assert r.evalkit["batch_size"] == "auto" and r.evalkit["batch_size_used"] == 64  # the CPU default
