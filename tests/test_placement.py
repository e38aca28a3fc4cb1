"""The streaming, device-mapped loader (evalkit/models/streaming.py, devices.py, device_map.py) on tiny EVA-CLIP models.

What must hold: every checkpoint layout streams into a meta-built model and gives the features of
the model it was written from; at most one shard is alive at a time; on the CPU a tensor stored in
the target dtype is used from its file mapping, not copied; a model split over devices by a
forced map (blocks on the CPU, others offloaded to disk, so accelerate's hooks really move the
weights) gives the same features as the unsplit model; the device-map logic for GPUs (balanced,
whole blocks, offload, glue tensors) works from fake device lists; and every bad input is one
clear line with a non-zero exit code, leaving nothing loaded behind.
"""

from __future__ import annotations

import gc
import json
import os
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_checkpoint import TINY, WRITERS, _cfg, _random_model, to_hf

from evalkit.cli import main as cli
from evalkit.models import CARDS, ModelLoadError, memory_plan, streaming
from evalkit.models import load as load_model
from evalkit.models.checkpoint import CheckpointError, resize_pos_embed, save_sharded
from evalkit.models.device_map import (
    _GLUE,
    collapse_device_map,
    compute_device_map,
    covered_whole,
    device_of,
    execution_device,
)
from evalkit.models.devices import device_budgets, parse_devices, parse_max_memory, parse_size
from evalkit.models.eva_clip import EvaClipConfig
from evalkit.models.memory_plan import empty_model
from evalkit.models.precision import PlacementError, parse_precision
from evalkit.models.streaming import load_eva_clip
from evalkit.models.zoo import ModelCard
from evalkit.results import result_path, run_variant

GiB = 2**30


@pytest.fixture(scope="module")
def reference():
    """A tiny 18B-style model with small random weights (features stay well conditioned), and
    its features on fixed inputs."""
    model = _random_model(seed=1).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.05)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 56, 56, generator=g)
    tokens = torch.randint(1, 900, (3, 12), generator=g)
    tokens[:, 7] = 999  # EOT: the largest id
    with torch.no_grad():
        feats = model.encode_image(images), model.encode_text(tokens)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    return sd, images, tokens, feats


def _features(model, images, tokens):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def _file_mapped(folder: Path) -> list[tuple[int, int]]:
    """Address ranges of this process mapped from files under ``folder`` (Linux)."""
    out = []
    folder = os.path.realpath(folder)
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5].startswith(folder):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi))
    return out


# --------------------------------------------------------------------------------------------
# Streaming: every layout, exactly
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(WRITERS))
def test_every_layout_streams_to_the_same_features(layout, reference, tmp_path):
    sd, images, tokens, (fi, ft) = reference
    path = WRITERS[layout][0](sd, tmp_path)
    placed = load_eva_clip(_cfg(), path, precision="fp32", devices="cpu")
    gi, gt = _features(placed.model, images, tokens)
    assert torch.allclose(gi, fi, atol=1e-5, rtol=0) and torch.allclose(gt, ft, atol=1e-5, rtol=0)
    assert placed.report["layout"] == WRITERS[layout][1]
    assert placed.main_device == "cpu" and placed.device_map == {"": "cpu"}
    assert not any(p.is_meta or p.requires_grad for p in placed.model.parameters())


def test_digest_depends_on_weights_not_on_files(reference, tmp_path):
    sd = reference[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = load_eva_clip(_cfg(), WRITERS["safetensors"][0](sd, tmp_path / "a"), devices="cpu").digest
    b = load_eva_clip(_cfg(), WRITERS["hf-split-qkv"][0](sd, tmp_path / "b"), devices="cpu").digest
    changed = dict(sd, **{"visual.blocks.1.mlp.fc1.weight": sd["visual.blocks.1.mlp.fc1.weight"] + 1})
    c = load_eva_clip(_cfg(), changed, devices="cpu").digest
    assert a == b != c


def test_hf_qkv_pieces_in_different_shards_are_held_back_until_complete(reference, tmp_path):
    sd, images, tokens, (fi, ft) = reference
    hf = to_hf(sd, split_qkv=True)
    q_keys = [k for k in hf if ".q_proj." in k]
    first = {k: hf[k].contiguous() for k in q_keys}
    second = {k: v.contiguous() for k, v in hf.items() if k not in first}
    save_file(first, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(second, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {**dict.fromkeys(first, "model-00001-of-00002.safetensors"),
                  **dict.fromkeys(second, "model-00002-of-00002.safetensors")}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    placed = load_eva_clip(_cfg(), tmp_path, devices="cpu")
    gi, gt = _features(placed.model, images, tokens)
    assert torch.allclose(gi, fi, atol=1e-5) and torch.allclose(gt, ft, atol=1e-5)
    assert any("fused split q/k/v" in n for n in placed.report["notes"])


def test_at_most_one_shard_is_alive_at_a_time(reference, tmp_path, monkeypatch):
    """fp16 shards loaded as fp32: every tensor is converted, so when the next shard is read no
    tensor of an earlier one may still be referenced (host memory stays near one shard)."""
    sd = {k: v.half() for k, v in reference[0].items()}
    save_sharded(sd, tmp_path, max_shard_bytes=2**16)
    real = streaming.iter_checkpoint_shards
    earlier: list[weakref.ref] = []
    shards = 0

    def spy(files):
        nonlocal shards
        for file, tensors in real(files):
            alive = [r for r in earlier if r() is not None]
            assert not alive, f"{len(alive)} tensors of earlier shards still alive when {file.name} was read"
            earlier.extend(weakref.ref(t) for t in tensors.values())
            shards += 1
            yield file, tensors
            del tensors

    monkeypatch.setattr(streaming, "iter_checkpoint_shards", spy)
    placed = load_eva_clip(_cfg(), tmp_path, precision="fp32", devices="cpu")
    assert shards > 5
    assert all(p.dtype == torch.float32 for p in placed.model.parameters())


def test_cpu_load_in_stored_dtype_uses_the_file_mapping(reference, tmp_path):
    """fp16 files loaded as fp16 on the CPU are not copied: the weights live in the (copy-on-write)
    file mappings; loaded as fp32 they are converted into memory of their own."""
    sd = {k: v.half() for k, v in reference[0].items()}
    save_sharded(sd, tmp_path / "st", max_shard_bytes=2**16)
    torch.save(sd, tmp_path / "m.pt")
    for path in (tmp_path / "st", tmp_path / "m.pt"):
        model = load_eva_clip(_cfg(), path, precision="fp16", devices="cpu").model
        ranges = _file_mapped(tmp_path)
        params = list(model.parameters())
        assert all(any(lo <= p.data_ptr() < hi for lo, hi in ranges) for p in params), path
        del model
        gc.collect()
    model = load_eva_clip(_cfg(), tmp_path / "st", precision="fp32", devices="cpu").model
    ranges = _file_mapped(tmp_path)
    assert not any(any(lo <= p.data_ptr() < hi for lo, hi in ranges) for p in model.parameters())


def test_pos_embed_of_another_resolution_is_resized_while_streaming(reference, tmp_path):
    sd = reference[0]
    cfg = EvaClipConfig.from_dict({**TINY, "vision_cfg": {**TINY["vision_cfg"], "image_size": 70}})
    save_sharded(sd, tmp_path, max_shard_bytes=2**16)
    placed = load_eva_clip(cfg, tmp_path, devices="cpu")
    want = resize_pos_embed(sd["visual.pos_embed"], (70 // 14) ** 2 + 1)
    assert torch.equal(placed.model.visual.pos_embed, want)
    assert placed.report["resized"] == ["visual.pos_embed: 17 -> 26 tokens (bicubic)"]


def test_allow_missing_keeps_initial_values_and_is_needed(reference, tmp_path):
    sd = {k: v for k, v in reference[0].items() if k not in ("logit_scale", "visual.head.weight")}
    save_sharded(sd, tmp_path, max_shard_bytes=2**16)
    with pytest.raises(CheckpointError, match="2 missing keys"):
        load_eva_clip(_cfg(), tmp_path, devices="cpu")
    placed = load_eva_clip(_cfg(), tmp_path, devices="cpu", allow_missing=["logit_scale", "visual.head.*"])
    assert sorted(placed.report["missing_allowed"]) == ["logit_scale", "visual.head.weight"]
    head = placed.model.visual.head.weight
    assert not head.is_meta and head.std() > 0  # nn.Linear's own init, not zeros
    assert placed.model.logit_scale.item() == 0.0


# --------------------------------------------------------------------------------------------
# Model parallel: a forced map over the CPU and disk
# --------------------------------------------------------------------------------------------

SPLIT_MAP = {
    "logit_scale": "cpu",
    "visual.cls_token": "disk",  # glue: moved to where the patch embedding runs
    "visual.pos_embed": "cpu",
    "visual.patch_embed": "disk",
    "visual.blocks.0": "cpu",
    "visual.blocks.1": "disk",
    "visual.norm": "disk",
    "visual.head": "cpu",
    "text.token_embedding": "disk",
    "text.positional_embedding": "cpu",
    "text.transformer.resblocks.0": "disk",
    "text.transformer.resblocks.1": "cpu",
    "text.ln_final": "disk",
    "text.text_projection": "disk",
}


def test_split_model_gives_the_features_of_the_unsplit_one(reference, tmp_path, caplog):
    sd, images, tokens, (fi, ft) = reference
    save_sharded(sd, tmp_path / "ck", max_shard_bytes=2**16)
    offload = tmp_path / "offload"
    with caplog.at_level("WARNING", logger="evalkit.placement"):
        placed = load_eva_clip(_cfg(), tmp_path / "ck", devices="cpu", device_map=SPLIT_MAP, offload_dir=offload)
    model = placed.model
    # offloaded weights are not in the model until a hook brings them in
    assert model.visual.blocks[1].mlp.fc1.weight.is_meta and model.text.ln_final.weight.is_meta
    assert not model.visual.blocks[0].mlp.fc1.weight.is_meta
    assert placed.device_map["visual.cls_token"] == "cpu" and placed.device_map["text.text_projection"] == "cpu"
    assert hasattr(model.visual.blocks[1], "_hf_hook") and hasattr(model.text, "_hf_hook")
    assert (Path(placed.offload_dir) / "visual.blocks.1.mlp.fc1.weight.dat").is_file()
    assert "2 of 4 blocks" in caplog.text and "disk" in caplog.text
    gi, gt = _features(model, images, tokens)
    assert torch.allclose(gi, fi, atol=1e-6, rtol=0) and torch.allclose(gt, ft, atol=1e-6, rtol=0)
    assert model.visual.blocks[1].mlp.fc1.weight.is_meta  # moved back out after the forward
    folder = Path(placed.offload_dir)
    del model, placed
    gc.collect()
    assert not folder.exists(), "offloaded weights outlive the model"


def test_disk_offload_needs_an_offload_dir(reference):
    with pytest.raises(PlacementError, match="--offload-dir"):
        load_eva_clip(_cfg(), reference[0], devices="cpu", device_map=SPLIT_MAP)


def test_cpu_too_small_offloads_to_disk_only_with_offload_dir(reference, tmp_path, caplog):
    sd, images, tokens, (fi, ft) = reference
    with pytest.raises(PlacementError, match="does not fit on the CPU.*offload-dir"):
        load_eva_clip(_cfg(), sd, devices="cpu", max_memory="cpu=1MiB", batch_size=1)
    with caplog.at_level("WARNING", logger="evalkit.placement"):
        placed = load_eva_clip(_cfg(), sd, devices="cpu", max_memory="cpu=1MiB", batch_size=1,
                               offload_dir=tmp_path)
    assert "disk" in set(placed.device_map.values()) and "slower" in caplog.text
    gi, gt = _features(placed.model, images, tokens)
    assert torch.allclose(gi, fi, atol=1e-6) and torch.allclose(gt, ft, atol=1e-6)


# --------------------------------------------------------------------------------------------
# GPU logic from fake device lists
# --------------------------------------------------------------------------------------------


def test_parse_devices_and_sizes():
    assert parse_devices("0,1,2,3").gpus == (0, 1, 2, 3)
    assert parse_devices("cuda:0,cuda:2").gpus == (0, 2)
    assert parse_devices("cuda").gpus == (0,) and parse_devices("cuda:1").gpus == (1,)
    assert parse_devices("cpu").cpu and parse_devices("auto").auto
    assert parse_devices("2x40GiB").sizes == (40 * GiB, 40 * GiB)
    assert parse_devices("80GB,40GiB").sizes == (80 * 10**9, 40 * GiB)
    assert parse_size("40gb") == 40 * 10**9  # lower-case b is bytes here, not bits
    assert parse_size("1.5GiB") == int(1.5 * GiB)
    for bad in ("", "0,0", "0,40GiB", "gpu0", "cpu,0", "0x40GiB"):
        with pytest.raises(PlacementError):
            parse_devices(bad)
    assert parse_max_memory("0=38GiB, cpu=64GiB") == {0: 38 * GiB, "cpu": 64 * GiB}
    assert parse_max_memory("30GiB") == {"*": 30 * GiB}
    with pytest.raises(PlacementError, match="unknown device"):
        parse_max_memory("tpu=1GiB")


def test_device_budgets_for_gpus_without_cuda():
    free = {0: 20 * GiB, 1: 30 * GiB, 2: 40 * GiB}
    kw = {"cuda_count": 3, "gpu_free": free.__getitem__, "host_available": lambda: 65 * GiB}
    assert device_budgets(parse_devices("0,2"), **kw) == {0: 20 * GiB, 2: 40 * GiB, "cpu": 64 * GiB}
    assert device_budgets(parse_devices("auto"), **kw) == {0: 20 * GiB, 1: 30 * GiB, 2: 40 * GiB, "cpu": 64 * GiB}
    capped = device_budgets(parse_devices("0,1"), parse_max_memory("10GiB,cpu=8GiB"), **kw)
    assert capped == {0: 10 * GiB, 1: 10 * GiB, "cpu": 8 * GiB}
    assert device_budgets(parse_devices("2x40GiB"), **kw) == {0: 40 * GiB, 1: 40 * GiB}  # no CPU when planning
    with pytest.raises(PlacementError, match="GPU 3 does not exist"):
        device_budgets(parse_devices("0,3"), **kw)
    with pytest.raises(PlacementError, match="CUDA is not available"):
        device_budgets(parse_devices("0,1"), cuda_count=0)
    with pytest.raises(PlacementError, match="names GPU 5"):
        device_budgets(parse_devices("0"), {5: GiB}, **kw)
    assert device_budgets(parse_devices("auto"), cuda_count=0, host_available=lambda: 9 * GiB) == {"cpu": 8 * GiB}


def _blocks_whole(model, device_map):
    blocks = [n for n, m in model.named_modules() if type(m).__name__ in ("VisionBlock", "TextBlock")]
    for key in device_map:
        assert not any(key.startswith(b + ".") for b in blocks), f"{key}: a block is split"


def test_device_map_over_fake_gpus_is_balanced_whole_blocks_and_glued():
    cfg = _cfg(layers=8, width=128, head_width=32)
    model = empty_model(cfg)
    per_gpu = 1_400_000  # bytes: about a third of the fp16 weights each
    device_map = compute_device_map(model, {0: per_gpu, 1: per_gpu, 2: per_gpu, 3: per_gpu}, "fp16")
    _blocks_whole(model, device_map)
    used = sorted({d for d in device_map.values()})
    assert used[0] == 0 and len(used) >= 2 and all(isinstance(d, int) for d in used)
    rows = collapse_device_map(device_map)
    assert any("visual.blocks." in item and "-" in item for _, items in rows for item in items)
    # the class token and position embedding sit with the patch embedding that adds them
    patch = device_of("visual.patch_embed", device_map)
    assert device_of("visual.cls_token", device_map) == patch
    assert device_of("visual.pos_embed", device_map) == patch
    # too little GPU memory: the rest goes to the CPU, and the glue runs on the main GPU
    small = compute_device_map(model, {0: 300_000, 1: 300_000, "cpu": 10**9}, "fp16")
    assert "cpu" in small.values()
    _blocks_whole(model, small)
    for glue, consumer in _GLUE.items():
        if not covered_whole(glue.rpartition(".")[0], small) and consumer:
            want = execution_device(device_of(consumer, small), 0)
            assert device_of(glue, small) == want


def test_quantized_layers_are_never_offloaded_from_gpus():
    cfg = _cfg(layers=8, width=128, head_width=32)
    model = empty_model(cfg)
    reserve = memory_plan.GPU_RUNTIME_RESERVE + memory_plan.activation_bytes(cfg, 1, 2)["peak"]
    budgets = {0: reserve + 1_500_000, "cpu": 10**9}
    fp16 = memory_plan.plan_for_budgets("tiny", cfg, model, parse_precision("fp16"), budgets, 1, "0",
                                allow_cpu_offload=True, allow_disk=False)
    assert fp16.fits and fp16.offloaded.get("cpu", 0) > 0 and "over PCIe" in fp16.warnings[0]
    int8 = memory_plan.plan_for_budgets("tiny", cfg, model, parse_precision("int8"), {**budgets, 0: reserve + 100_000},
                                1, "0", allow_cpu_offload=True, allow_disk=False)
    assert not int8.fits and "cannot be offloaded" in int8.reason


def test_loading_onto_gpus_on_a_machine_without_cuda_is_one_clear_error(reference):
    with pytest.raises(PlacementError, match="CUDA is not available"):
        load_eva_clip(_cfg(), reference[0], devices="0,1", cuda_count=0)
    with pytest.raises(PlacementError, match="sizes describe devices for `evalkit plan`"):
        load_eva_clip(_cfg(), reference[0], devices="2x40GiB")


# --------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing left loaded
# --------------------------------------------------------------------------------------------


CLI_TEXT = {"vocab_size": 49408}  # the CLI tokenises with the real CLIP BPE


@pytest.fixture
def tiny_card(monkeypatch):
    config = json.loads(json.dumps(TINY))
    config["text_cfg"].update(CLI_TEXT)
    monkeypatch.setitem(CARDS, "tiny-eva", ModelCard("tiny-eva", "eva_clip", "test card", arch={"config": config}))
    return "tiny-eva"


@pytest.fixture(scope="module")
def cli_weights():
    return _random_model(_cfg(text=CLI_TEXT)).state_dict()


def _run(capsys, *argv):
    capsys.readouterr()
    rc = cli.main(["run", "--tasks", "demo", "--no-cache", "--quiet", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_cli_missing_weights_path(tiny_card, tmp_path, capsys):
    rc, err = _run(capsys, "--model", tiny_card, "--weights", str(tmp_path / "nope.pt"))
    assert rc == 1 and len(err) == 1 and "nope.pt" in err[0] and "does not exist" in err[0]


def test_result_records_the_device_map_of_a_split_model(tiny_card, cli_weights, tmp_path, capsys):
    import json

    torch.save(cli_weights, tmp_path / "w.pt")
    out = tmp_path / "out"
    rc, err = _run(capsys, "--model", tiny_card, "--weights", str(tmp_path / "w.pt"), "--devices", "cpu",
                   "--max-memory", "cpu=1MiB", "--batch-size", "1", "--offload-dir", str(tmp_path / "off"),
                   "--limit", "4", "--output-dir", str(out))
    assert rc == 0, err
    w = str(tmp_path / "w.pt")
    result = json.loads(result_path(out, tiny_card, "shapeworld-shape", variant=run_variant("fp32", w, limit=4))
                        .read_text())
    placed = result["evalkit"]["device_map"]
    # the CLIP BPE embedding (49408 rows) is most of this model: under 1 MiB of RAM all of it goes to disk
    assert "disk" in set(placed.values()) <= {"cpu", "disk"}
    rc, _ = _run(capsys, "--model", tiny_card, "--weights", str(tmp_path / "w.pt"), "--limit", "4",
                 "--output-dir", str(tmp_path / "one"))
    assert rc == 0
    one = json.loads(result_path(tmp_path / "one", tiny_card, "shapeworld-shape",
                                 variant=run_variant("fp32", w, limit=4)).read_text())
    assert one["evalkit"]["device_map"] is None and one["evalkit"]["device"] == "cpu"


def test_cli_8b_weights_for_the_18b_at_full_size_on_meta(tmp_path, capsys):
    """The real 8B key/shape set (on meta: no memory) against the real 18B architecture."""
    from evalkit.models import eva_config

    ckpt = tmp_path / "EVA_CLIP_8B_psz14_s9B.pt"
    torch.save(empty_model(eva_config(CARDS["eva-clip-8b"])).state_dict(), ckpt)
    assert ckpt.stat().st_size < 10**6
    rc, err = _run(capsys, "--model", "eva-clip-18b", "--weights", str(ckpt), "--max-memory", "200GiB")
    assert rc == 1 and len(err) == 1
    assert "EVA_CLIP_8B_psz14_s9B.pt does not fit eva-clip-18b" in err[0]
    assert "144 missing keys, 295 shape mismatches (missing visual.blocks.*.norm1.weight ×16" in err[0]
    with pytest.raises(ModelLoadError) as e:
        load_model("eva-clip-18b", weights=str(ckpt))
    assert "visual.blocks.*.attn.qkv.weight ×32 checkpoint [12288, 4096] vs model [15360, 5120]" in str(e.value)


def test_cli_index_naming_a_missing_shard(tiny_card, cli_weights, tmp_path, capsys):
    save_sharded(cli_weights, tmp_path, max_shard_bytes=2**16)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[1]
    shard.unlink()
    rc, err = _run(capsys, "--model", tiny_card, "--weights", str(tmp_path))
    assert rc == 1 and len(err) == 1 and shard.name in err[0] and "do not exist" in err[0]


def test_cli_truncated_safetensors(tiny_card, cli_weights, tmp_path, capsys):
    save_sharded(cli_weights, tmp_path, max_shard_bytes=2**16)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    rc, err = _run(capsys, "--model", tiny_card, "--weights", str(tmp_path))
    assert rc == 1 and len(err) == 1 and shard.name in err[0] and "truncated" in err[0]


def test_cli_int8_without_bitsandbytes(tiny_card, cli_weights, tmp_path, capsys, monkeypatch):
    save_sharded(cli_weights, tmp_path, max_shard_bytes=2**16)
    monkeypatch.setitem(__import__("sys").modules, "bitsandbytes", None)  # import now raises ImportError
    rc, err = _run(capsys, "--model", tiny_card, "--weights", str(tmp_path), "--precision", "int8")
    assert rc == 1 and len(err) == 1
    assert "--precision int8 needs bitsandbytes" in err[0] and "pip install" in err[0]


def test_cli_big_model_flags_reach_the_loader(tiny_card, cli_weights, tmp_path, capsys):
    sd = {k: v for k, v in cli_weights.items() if k != "logit_scale"}
    save_sharded(sd, tmp_path / "ck", max_shard_bytes=2**20)
    out = tmp_path / "out"
    rc, err = _run(capsys, "--model", tiny_card, "--weights", str(tmp_path / "ck"), "--output-dir", str(out))
    assert rc == 1 and len(err) == 1 and "1 missing keys (missing logit_scale)" in err[0]
    rc, err = _run(capsys, "--model", tiny_card, "--weights", str(tmp_path / "ck"), "--allow-missing", "logit_scale",
                   "--devices", "cpu", "--max-memory", "cpu=1MiB", "--offload-dir", str(tmp_path / "off"),
                   "--limit", "4", "--batch-size", "2", "--output-dir", str(out))
    assert rc == 0, err
    variant = run_variant("fp32", str(tmp_path / "ck"), limit=4)  # other weights, a limited run: their own folder
    result = json.loads(result_path(out, "tiny-eva", "shapeworld-shape", variant=variant).read_text())
    assert result["evalkit"]["evaluated"] == 4


def test_open_clip_models_refuse_big_model_options():
    with pytest.raises(ModelLoadError, match="are for EVA-CLIP models"):
        load_model("open_clip:ViT-B-32", precision="int8")


def test_failure_mid_stream_leaves_nothing_loaded(reference, tmp_path, monkeypatch):
    save_sharded(reference[0], tmp_path / "ck", max_shard_bytes=2**16)
    built = []
    real_empty, real_iter = streaming.empty_model, streaming.iter_checkpoint_shards

    def keep(cfg):
        built.append(real_empty(cfg))
        return built[-1]

    def dies_after_three(files):
        for i, item in enumerate(real_iter(files)):
            if i == 3:
                raise CheckpointError("shard 4 vanished")
            yield item

    monkeypatch.setattr(streaming, "empty_model", keep)
    monkeypatch.setattr(streaming, "iter_checkpoint_shards", dies_after_three)
    offload = tmp_path / "offload"
    with pytest.raises(CheckpointError, match="shard 4 vanished"):
        load_eva_clip(_cfg(), tmp_path / "ck", device_map=SPLIT_MAP, offload_dir=offload)
    model = built[-1]
    assert all(p.is_meta for p in model.parameters()), "half-loaded tensors left in the model"
    assert list(offload.iterdir()) == [], "offloaded files left behind"
