"""`evalkit plan`: the memory plan of EVA-CLIP-18B/8B from the config alone (meta device, no weights).

The figures checked here are the ones the paper and the released files imply (protocol notes
§6.2): 17,630,494,720 + 694,987,520 (+1) parameters for the 18B, 36.65 GB of fp16 weights, and an
int8 model about half that.
"""

from __future__ import annotations

import json
import time

import pytest

from evalkit.cli import main as cli
from evalkit.cli.plan import make_plan, render_plan
from evalkit.models import CARDS, eva_config
from evalkit.models.memory_plan import (
    GPU_RUNTIME_RESERVE,
    activation_bytes,
    empty_model,
    plan_memory,
    weight_bytes,
)
from evalkit.models.quantize import NO_SPLIT_MODULES

GiB = 2**30


@pytest.fixture(scope="module")
def cfg18():
    return eva_config(CARDS["eva-clip-18b"])


@pytest.fixture(scope="module")
def plan18(cfg18):
    return plan_memory(cfg18, "2x40GiB", "fp16", batch_size=64, name="eva-clip-18b")


def test_18b_counts_and_bytes_per_precision(plan18):
    p, wb = plan18.parameters, plan18.weight_bytes
    assert (p["visual"], p["text"], p["other"]) == (17_630_494_720, 694_987_520, 1)
    assert p["total"] == 18_325_482_241
    assert wb["fp16"] == 2 * p["total"] and round(wb["fp16"] / 1e9, 1) == 36.7
    assert wb["fp32"] == 4 * p["total"]
    # int8: block Linear weights at one byte (plus one fp32 scale per row), the rest in fp16
    assert 0.5 < wb["int8"] / wb["fp16"] < 0.52
    assert 0.25 < wb["int4"] / wb["fp16"] < 0.28


def test_18b_fp16_on_two_40gib_gpus(plan18):
    assert plan18.fits and plan18.main == 0
    assert [d.device for d in plan18.per_device] == [0, 1]
    for d in plan18.per_device:
        assert d.used <= d.budget == 40 * GiB
        assert d.reserve == plan18.activation["peak"] + GPU_RUNTIME_RESERVE
    assert abs(plan18.per_device[0].weights - plan18.per_device[1].weights) < 0.05 * plan18.weight_bytes["fp16"]
    assert sum(d.weights for d in plan18.per_device) == plan18.weight_bytes["fp16"]
    # whole blocks, collapsed into ranges; the 48 vision blocks are split between the two GPUs
    assert any(m.startswith("visual.blocks.0-") for m in plan18.per_device[0].modules)
    assert any(m.startswith("visual.blocks.") and m.endswith("-47") for m in plan18.per_device[1].modules)
    model = empty_model(eva_config(CARDS["eva-clip-18b"]))
    blocks = [n for n, m in model.named_modules() if type(m).__name__ in NO_SPLIT_MODULES]
    assert len(blocks) == 48 + 32
    assert not [k for k in plan18.device_map if any(k.startswith(b + ".") for b in blocks)]


def test_int8_halves_the_per_device_weights(cfg18, plan18):
    int8 = plan_memory(cfg18, "2x40GiB", "int8", batch_size=64, name="eva-clip-18b")
    assert int8.fits
    ratio = sum(d.weights for d in int8.per_device) / sum(d.weights for d in plan18.per_device)
    assert 0.5 < ratio < 0.52


def test_activation_formula_for_the_18b(cfg18):
    b, B, n, w, h, heads = 2, 64, 257, 5120, 25600, 40
    image = b * B * (n * (2 * w + 2 * h) + 2 * heads * n * n) + B * 3 * 224 * 224 * 4
    text = b * B * (77 * (2 * 1280 + 2 * 5120) + 2 * 20 * 77 * 77)
    assert activation_bytes(cfg18, 64, 2) == {"image": image, "text": text, "peak": image}
    assert activation_bytes(cfg18, 32, 2)["peak"] < image  # scales with the batch


def test_not_fitting_says_why_and_what_would(cfg18):
    plan = plan_memory(cfg18, "1x24GiB", "fp16", batch_size=64, name="eva-clip-18b")
    assert not plan.fits and "do not fit" in plan.reason
    text = " | ".join(plan.suggestions)
    assert "more devices: --devices 2x24GiB fits" in text
    assert "--precision int8" in text
    fp32 = plan_memory(cfg18, "2x40GiB", "fp32", batch_size=256, name="eva-clip-18b")
    assert not fp32.fits
    batch = [s for s in fp32.suggestions if s.startswith("--batch-size")]
    assert batch, fp32.suggestions
    smaller = int(batch[0].split()[1].rstrip(":"))
    assert 1 <= smaller < 256
    assert plan_memory(cfg18, "2x40GiB", "fp32", batch_size=smaller, suggest=False).fits
    assert not plan_memory(cfg18, "2x40GiB", "fp32", batch_size=smaller + 1, suggest=False).fits


def test_8b_fits_one_24gib_gpu_in_fp16_but_not_fp32():
    cfg8 = eva_config(CARDS["eva-clip-8b"])
    assert weight_bytes(empty_model(cfg8), "fp16") == 2 * 8_220_748_545
    assert plan_memory(cfg8, "1x24GiB", "fp16", batch_size=32, suggest=False).fits
    assert not plan_memory(cfg8, "1x24GiB", "fp32", batch_size=32, suggest=False).fits


def test_real_gpu_indices_without_cuda_is_one_line(capsys):
    rc = cli.main(["plan", "--model", "eva-clip-18b", "--devices", "0,1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "CUDA is not available" in err[0]


def test_fake_cuda_devices_plan_like_real_ones(cfg18):
    plan = plan_memory(cfg18, "0,1,2,3", "fp16", batch_size=16, cuda_count=4,
                       gpu_free=lambda i: 24 * GiB, host_available=lambda: 200 * GiB)
    assert plan.fits and {d.device for d in plan.per_device} >= {0, 1}
    assert "cpu" not in plan.device_map.values()


def test_cli_text_and_json(capsys):
    started = time.perf_counter()
    rc = cli.main(["plan", "--model", "eva-clip-18b", "--devices", "2x40GiB", "--precision", "fp16"])
    out = capsys.readouterr().out
    assert rc == 0 and time.perf_counter() - started < 30
    assert "total 18,325,482,241" in out and "fp16/bf16 36.65 GB" in out and "fits: yes" in out
    assert "cuda:0" in out and "cuda:1" in out and "visual.blocks.0-" in out
    rc = cli.main(["plan", "--model", "eva-clip-18b", "--devices", "1x24GiB", "--json", "--batch-size", "8"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 1 and data["fits"] is False and data["suggestions"]
    assert data["parameters"]["total"] == 18_325_482_241 and data["weight_bytes"]["fp16"] == 36_650_964_482
    assert data["main_device"] == "cuda:0" and data["batch_size"] == 8


def test_cli_usage_errors(capsys):
    assert cli.main(["plan", "--model", "eva-clip-81b", "--devices", "2x40GiB"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert cli.main(["plan", "--model", "openclip-bigg-14", "--devices", "2x40GiB"]) == 1
    assert "EVA-CLIP cards" in capsys.readouterr().err
    assert cli.main(["plan", "--model", "eva-clip-8b", "--devices", "2x40GiB", "--batch-size", "0"]) == 2
    assert cli.main(["plan", "--model", "eva-clip-8b", "--devices", "2xlots"]) == 1
    assert "not a memory size" in capsys.readouterr().err


def test_render_lists_every_device_line(plan18):
    text = render_plan(plan18)
    assert text.count("40 GiB:") == 2 and "activations" in text and "runtime" in text


def test_make_plan_for_the_8b_448():
    plan = make_plan("eva-clip-8b-448", "1x80GiB", "bf16", 16)
    assert plan.fits and plan.activation["image"] > make_plan("eva-clip-8b", "1x80GiB", "bf16", 16).activation["image"]
