"""The box command's defaults (issue 16 §1): ``--device auto`` and ``--precision auto``, chosen
with fake device lists as the planner's tests do, recorded in the result, and a model that cannot
fit stopped before any weights are located or read."""

from __future__ import annotations

import json

import pytest
from fixtures import make_wds

from evalkit.cli import main as cli
from evalkit.models.auto import choose_placement
from evalkit.models.precision import PlacementError

GiB = 2**30


def _fake(n_gpus: int, gpu_gib: float, host_gib: float = 200) -> dict:
    return {"cuda_count": n_gpus, "gpu_free": lambda i: int(gpu_gib * GiB), "host_available": lambda: int(host_gib * GiB)}


def test_cpu_box_runs_small_models_at_fp32_on_the_cpu():
    p = choose_placement("eva-clip-demo", **_fake(0, 0, 16))
    assert (p.device, p.devices, p.precision) == ("cpu", None, "fp32")
    assert p.chosen == {"precision": "fp32", "device": "cpu (no GPU visible)"}


def test_18b_on_one_80gib_gpu_is_one_device_at_its_release_precision():
    p = choose_placement("eva-clip-18b", **_fake(1, 80))
    assert (p.device, p.devices, p.precision) == ("cuda", None, "fp16")
    assert p.chosen["precision"] == "fp16" and p.chosen["device"].startswith("cuda")
    assert p.fit["weights_bytes"] == pytest.approx(36.65e9, rel=1e-3)  # the fp16 checkpoint's size


def test_18b_split_over_every_gpu_when_one_is_too_small():
    p = choose_placement("eva-clip-18b", **_fake(4, 24))
    assert (p.devices, p.precision) == ("auto", "fp16")
    assert "4 GPUs" in p.chosen["devices"]
    # the same model fits one larger GPU: the choice follows the memory, not the count
    assert choose_placement("eva-clip-18b", **_fake(4, 80)).devices is None


def test_release_precision_is_the_cards_own():
    # EVA-CLIP-8B's released checkpoint is fp32 (32.9 GB for 8.2B parameters)
    assert choose_placement("eva-clip-8b", **_fake(1, 80)).precision == "fp32"
    assert choose_placement("open_clip:ViT-B-32", **_fake(1, 80)).precision == "fp32"
    # a Uni3D point tower runs at its text tower's precision (the 18B's: fp16)
    assert choose_placement("uni3d-b-eva-clip-18b", **_fake(1, 80)).precision == "fp16"
    assert choose_placement("uni3d-b-eva-clip-18b", **_fake(0, 0, 300)).precision == "fp32"


def test_explicit_options_are_kept_and_not_recorded_as_auto():
    p = choose_placement("eva-clip-18b", device="cuda:0", precision="int8", **_fake(2, 80))
    assert (p.device, p.devices, p.precision, p.chosen) == ("cuda:0", None, "int8", {})


def test_18b_on_a_cpu_box_stops_with_the_plans_figures_and_what_would_fit():
    with pytest.raises(PlacementError) as e:
        choose_placement("eva-clip-18b", **_fake(0, 0, 24))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("eva-clip-18b at fp32 does not fit on the CPU")
    assert "needs about 7" in msg and "GB" in msg  # 73 GB of fp32 weights plus activations
    assert "--precision int" in msg and "GPUs" in msg and "evalkit plan --model eva-clip-18b" in msg


def test_explicit_cuda_without_a_gpu_is_refused_before_planning():
    with pytest.raises(PlacementError, match="--device cuda: CUDA is not available"):
        choose_placement("eva-clip-demo", device="cuda", **_fake(0, 0))


def test_box_command_on_a_cpu_box_reads_no_weights(monkeypatch, tmp_path, capsys):
    """`evalkit run --model eva-clip-18b --tasks ...` as typed, on this machine, with its data there
    (the demo's generated task stands in for ImageNet): one line, exit 1, and no checkpoint is
    looked for (no download of 36.7 GB). Without the data, the data is what it reports first."""
    import evalkit.models.auto as auto
    import evalkit.models.families as families

    def located(*a, **k):
        raise AssertionError("the checkpoint was looked for")

    monkeypatch.setattr(families, "locate", located)
    monkeypatch.setattr(auto, "visible_gpus", lambda: 0)
    monkeypatch.setattr("evalkit.models.devices.host_memory_available", lambda: 24 * GiB)
    rc = cli.main(["run", "--model", "eva-clip-18b", "--tasks", "shapeworld-shape", "--output-dir",
                   str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and "does not fit on the CPU" in err and "--precision int" in err
    assert not list((tmp_path / "out").rglob("*.json"))  # nothing written either
    rc = cli.main(["run", "--model", "eva-clip-18b", "--tasks", "imagenet,objectnet", "--data-root",
                   str(tmp_path / "nodata"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.splitlines()
    assert rc == 1 and len(err) == 2 and err[0].startswith("evalkit: error: imagenet1k: ")


def test_result_records_what_auto_chose(tiny_arch, tmp_path):
    root = make_wds(tmp_path / "wds_auto", n_per_class=1, nshards=1)
    assert cli.main(["run", "--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root}", "--output-dir",
                     str(tmp_path / "out"), "--quiet"]) == 0
    [path] = (tmp_path / "out" / "runs").rglob("wds_auto-*.json")
    ev = json.loads(path.read_text())["evalkit"]
    assert ev["auto"] == {"precision": "fp32", "device": "cpu (no GPU visible)"}
    assert ev["precision"] == "fp32" and ev["device"] == "cpu"
    # given explicitly: nothing recorded as chosen
    assert cli.main(["run", "--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root}", "--output-dir",
                     str(tmp_path / "out2"), "--quiet", "--device", "cpu", "--precision", "fp32"]) == 0
    [path] = (tmp_path / "out2" / "runs").rglob("wds_auto-*.json")
    assert "auto" not in json.loads(path.read_text())["evalkit"]


def test_a_launched_job_checks_one_ranks_share():
    """torchrun with 4 processes on 8 GPUs of 24 GiB: the 18B does not fit one GPU, so each process
    gets two (devices_for_rank's even split) and the fit is checked for two; with 8 processes each
    would get one GPU and an eighth of the host's memory for the rest: it does not fit."""
    p = choose_placement("eva-clip-18b", ranks_per_node=4, **_fake(8, 24, 400))
    assert p.devices == "0,1,2,3,4,5,6,7" and p.fit["devices"] == "0,1" and p.fit["fits"]
    assert "2 GPUs per process" in p.chosen["devices"]
    with pytest.raises(PlacementError, match="does not fit on GPU 0:"):
        choose_placement("eva-clip-18b", ranks_per_node=8, **_fake(8, 24, 80))
    # the launcher gave each process GPUs of its own: each sees its 2 and takes them whole
    assert choose_placement("eva-clip-18b", ranks_per_node=4, own_gpus=True, **_fake(2, 24, 400)).devices == "auto"


def test_wants_cuda_before_anything_is_measured():
    from evalkit.models.auto import wants_cuda

    assert wants_cuda("auto", None, 2) and not wants_cuda("auto", None, 0)
    assert wants_cuda("cuda:1", None, 2) and not wants_cuda("cpu", None, 2)
    assert wants_cuda("auto", "0,1", 2) and not wants_cuda("auto", "cpu", 2) and not wants_cuda("auto", "auto", 0)


def test_per_gpu_max_memory_with_auto_is_not_an_error():
    p = choose_placement("eva-clip-18b", max_memory="0=20GiB,1=20GiB", **_fake(2, 80))
    assert p.devices == "auto" and p.fit["fits"]  # 20 GiB caps: the 18B does not fit one, so both
    assert choose_placement("eva-clip-demo", max_memory="0=3GiB,1=3GiB", **_fake(2, 80)).device == "cuda"


def test_explicit_devices_leave_auto_device_following_them():
    p = choose_placement("eva-clip-demo", devices="0,1", **_fake(2, 80))
    assert (p.device, p.devices, p.precision) == ("cuda", "0,1", "fp32")
    with pytest.raises(PlacementError, match="--device cuda:3: GPU 3 does not exist; 2 visible"):
        choose_placement("eva-clip-demo", device="cuda:3", **_fake(2, 80))
