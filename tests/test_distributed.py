"""Data parallel within a dataset, and resume at any world size (evalkit.features.distributed, issue 12).

Real processes on the gloo backend: ``python -m torch.distributed.run --standalone
--nproc-per-node 2 -m evalkit run ...`` against ``python -m evalkit run ...``. A test-only
``sitecustomize.py`` (written here, put on PYTHONPATH, active with EVALKIT_TEST_HOOKS=1; nothing
of it is in the package) patches modules as they are imported: it counts every forward pass of
every process into a file per process (images and prompts), SIGKILLs a process (of a chosen
rank) at the start of its N+1-th image forward, makes the demo's cache units small (so a
``--limit``-ed demo task has several), and registers a tiny open_clip architecture.

Every run uses one thread per process (torchrun's default for several processes), so one
process and two compute the very same numbers and predictions can be compared exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import make_wds, register_tiny_open_clip

from evalkit.features.distributed import DistributedError, Launch, detect, device_for_rank, devices_for_rank
from evalkit.features.embed import assign_units
from evalkit.tasks.spec import adhoc_name

DEMO_LIMIT = "56"  # 7 units of 8 per task; 280 captions: two passes of the text tower (256 a pass)
DEMO_ARGS = ["--model", "eva-clip-demo", "--tasks", "shapeworld-shape,shapeworld-retrieval", "--limit", DEMO_LIMIT]
UNIT = "8"
TINY = "evalkit-tiny-dist"

HOOKS = r'''
import importlib.abc
import importlib.util
import os
import sys


def _hooks():
    env = os.environ
    rank = env.get("RANK", "0")
    counts = env.get("EVALKIT_TEST_COUNTS")
    kill_after = int(env.get("EVALKIT_TEST_KILL_AFTER", "0"))
    kill_here = kill_after > 0 and env.get("EVALKIT_TEST_KILL_RANK", "0") == rank
    stall_here = env.get("EVALKIT_TEST_STALL_RANK") == rank
    hooks = {}

    def patch_encoder(module):
        import signal

        cls = module.Encoder
        images = [0]

        def log(kind, n):
            if counts:
                with open(os.path.join(counts, f"counts-{rank}-{os.getpid()}.txt"), "a") as f:
                    f.write(f"{kind} {n}\n")

        def wrap(name, kind, items):
            inner = getattr(cls, name)

            def counted(self, *args):
                if kind == "image":
                    if stall_here:  # until the launcher stops this process
                        import time

                        time.sleep(600)
                    if kill_here and images[0] >= kill_after:
                        os.kill(os.getpid(), signal.SIGKILL)
                    images[0] += 1
                log(kind, items(*args))
                return inner(self, *args)

            setattr(cls, name, counted)

        wrap("encode_image", "image", lambda batch: int(batch.shape[0]))
        wrap("encode_text", "text", lambda tokens: int(tokens.shape[0]))
        wrap("encode_text_suffix", "text", lambda prefixes, which, *rest: int(which.shape[0]))

    hooks["evalkit.models.encoder"] = patch_encoder
    if env.get("EVALKIT_TEST_UNIT_SIZE"):
        def small_units(module):
            module.UNIT_SIZE = int(env["EVALKIT_TEST_UNIT_SIZE"])

        hooks["evalkit.demo.sources"] = small_units
    if env.get("EVALKIT_TEST_OPEN_CLIP_CONFIG"):
        def add_config(module):
            import open_clip

            open_clip.add_model_config(env["EVALKIT_TEST_OPEN_CLIP_CONFIG"])

        hooks["evalkit.models.open_clip_model"] = add_config
    return hooks


class _AfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, hooks):
        self.hooks = hooks

    def find_spec(self, name, path, target=None):
        hook = self.hooks.get(name)
        if hook is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            hook(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("EVALKIT_TEST_HOOKS") == "1":
    sys.meta_path.insert(0, _AfterImport(_hooks()))
'''


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    """The hooks, and the tiny open_clip architecture's config (registered here too)."""
    root = tmp_path_factory.mktemp("dist")
    (root / "hooks").mkdir()
    (root / "hooks" / "sitecustomize.py").write_text(HOOKS)
    register_tiny_open_clip(root, name=TINY)
    return root


@contextlib.contextmanager
def _in_process(cache: str | None = None):
    """An in-process run as the subprocesses make it (one thread, units of 8); counts its image
    passes. Cheaper than a process: the references and the reruns run here."""
    import evalkit.demo.sources
    from evalkit.models.encoder import Encoder

    passes = {"image": 0}
    inner = Encoder.encode_image

    def counted(self, images):
        passes["image"] += int(images.shape[0])
        return inner(self, images)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(evalkit.demo.sources, "UNIT_SIZE", int(UNIT))
            mp.setattr(Encoder, "encode_image", counted)
            if cache is not None:
                mp.setenv("EVALKIT_CACHE", cache)
            yield passes
    finally:
        torch.set_num_threads(threads)


def _evaluate(out: Path, args: list[str], cache: str | None = None) -> None:
    from evalkit import api
    opts = dict(zip(args[::2], args[1::2], strict=True))
    api.evaluate(opts["--model"], opts["--tasks"], limit=int(opts["--limit"]), output_dir=out, progress=False,
                 save_predictions=True, raise_errors=True, cache_dir="default" if cache else None,
                 batch_size=int(opts.get("--batch-size", 64)))


def _run(world_dir: Path, work: Path, name: str, args: list[str], nproc: int = 1, **hooks: str
         ) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """``evalkit run`` in ``nproc`` processes; returns (the process, its output folder, its counts folder)."""
    out, counts = work / f"{name}-out", work / f"{name}-counts"
    counts.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_", "MASTER_",
                                                                       "SLURM_", "TORCHELASTIC", "EVALKIT_TEST"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(world_dir / "hooks"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        EVALKIT_TEST_HOOKS="1", EVALKIT_TEST_COUNTS=str(counts), EVALKIT_TEST_UNIT_SIZE=UNIT,
        EVALKIT_TEST_OPEN_CLIP_CONFIG=str(world_dir / f"{TINY}.json"),
        HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", EVALKIT_DIST_TIMEOUT="120",
        **{f"EVALKIT_TEST_{k.upper()}": v for k, v in hooks.items()},
    )
    env.setdefault("EVALKIT_CACHE", str(work / "cache"))
    if "cache" in hooks:
        env["EVALKIT_CACHE"] = hooks["cache"]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
    cmd = [sys.executable, *launcher, "-m", "evalkit", "run", "--output-dir", str(out), "--save-predictions", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work, timeout=240)
    return proc, out, counts


def _passes(counts: Path) -> dict[int, dict[str, int]]:
    """Per rank: images and prompts through the model."""
    out: dict[int, dict[str, int]] = {}
    for f in counts.glob("counts-*.txt"):
        rank = int(f.name.split("-")[1])
        mine = out.setdefault(rank, {"image": 0, "text": 0})
        for line in f.read_text().splitlines():
            kind, n = line.split()
            mine[kind] += int(n)
    return out


def _outputs(out: Path) -> dict[str, str | bytes | dict]:
    """Every file the run wrote: results (metrics and the world's keys), predictions (as text) and
    per-sample records (as bytes)."""
    found: dict[str, str | bytes | dict] = {}
    for p in sorted((out / "runs").rglob("*")):
        if p.suffix == ".json":
            found[p.name] = json.loads(p.read_text())
        elif p.suffix == ".npz":
            found[p.name] = p.read_bytes()
        elif p.is_file():
            found[p.name] = p.read_text()
    return found


def _same_results(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        if name.endswith(".json") and "metrics" in a[name]:  # a result (not a sidecar beside it)
            assert a[name]["metrics"] == b[name]["metrics"], name
            assert a[name]["evalkit"]["evaluated"] == b[name]["evalkit"]["evaluated"], name
        else:
            assert a[name] == b[name], name  # per-sample predictions, byte for byte


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def demo_reference(world_dir, tmp_path_factory):
    """One process, no cache: the demo tasks' outputs."""
    out = tmp_path_factory.mktemp("demo1") / "out"
    with _in_process():
        _evaluate(out, DEMO_ARGS)
    return _outputs(out)


# ----------------------------------------------------------------------------- 2 processes against 1


def test_two_processes_split_the_demo_tasks_and_give_one_process_results(world_dir, demo_reference, tmp_path):
    ref = demo_reference
    proc, out, counts = _run(world_dir, tmp_path, "two", DEMO_ARGS, nproc=2)
    _ok(proc)
    got = _outputs(out)
    _same_results(ref, got)
    # results printed once (rank 0), and written once
    assert proc.stdout.count("shapeworld-shape: acc1=") == 1 and proc.stdout.count("shapeworld-retrieval:") == 1
    passes = _passes(counts)
    assert sorted(passes) == [0, 1]
    per_rank = [0, 0]
    for name in ("shapeworld-shape.json", "shapeworld-retrieval.json"):
        ev = got[name]["evalkit"]
        assert ev["world_size"] == 2 and ref[name]["evalkit"]["world_size"] == 1
        assert sum(ev["samples_per_rank"]) == ev["samples"] == int(DEMO_LIMIT)
        assert min(ev["samples_per_rank"]) > 0  # both ranks had units (7 of 8: 4 and 3)
        assert ref[name]["evalkit"]["samples_per_rank"] == [int(DEMO_LIMIT)]
        # every rank's content digests came to rank 0 with its features (--limit: no root)
        assert ev["data_fingerprint"] == ref[name]["evalkit"]["data_fingerprint"]
        assert ev["data_fingerprint"]["hashed"] == int(DEMO_LIMIT) and ev["timings"]["forward_s"] > 0
        per_rank = [a + b for a, b in zip(per_rank, ev["samples_per_rank"], strict=True)]
    # each rank encoded what it reports, and no image twice: together, every sample once
    assert [passes[r]["image"] for r in (0, 1)] == per_rank
    assert sum(per_rank) == 2 * int(DEMO_LIMIT)
    # the text side split too (the captions take two passes, one a rank), every prompt encoded once
    shape, retrieval = got["shapeworld-shape.json"]["evalkit"], got["shapeworld-retrieval.json"]["evalkit"]
    prompts = shape["n_classifier_classes"] * shape["n_templates"] + retrieval["captions"]
    assert passes[1]["text"] > 0
    assert passes[0]["text"] + passes[1]["text"] == prompts


# ----------------------------------------------------------------------------- kill -9, resume at another size


def test_kill9_during_extraction_then_resume_with_two_processes(world_dir, tmp_path):
    """An open_clip model on a WebDataset of 6 shards (units of unknown size, so --limit makes
    rank 0 count them to plan): killed by SIGKILL after 2 image forwards (2 shards cached), then
    resumed by 2 processes: the same files as an uninterrupted run, fewer model passes."""
    data = make_wds(tmp_path / "wds_dist", n_per_class=4, nshards=6)
    args = ["--model", f"open_clip:{TINY}", "--tasks", f"wds:{data}", "--limit", "22", "--batch-size", "4"]
    with _in_process() as cold:
        _evaluate(tmp_path / "cold-out", args)
    assert cold["image"] == 22
    cache = str(tmp_path / "shared-cache")
    proc, _, counts = _run(world_dir, tmp_path, "killed", args, cache=cache, kill_after="2")
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert _passes(counts)[0]["image"] == 8  # two forwards of 4 done (two shards), killed at the third
    proc, out, counts = _run(world_dir, tmp_path, "resumed", args, nproc=2, cache=cache)
    _ok(proc)
    _same_results(_outputs(tmp_path / "cold-out"), _outputs(out))
    passes = _passes(counts)
    assert passes[0]["image"] + passes[1]["image"] == 22 - 8  # the two shards done before the kill: not again
    ev = _outputs(out)[f"{adhoc_name(f'wds:{data}')}.json"]["evalkit"]
    assert ev["world_size"] == 2 and ev["samples_per_rank"] == [passes[0]["image"], passes[1]["image"]]
    assert min(ev["samples_per_rank"]) > 0


# ----------------------------------------------------------------------------- a rank dies


def test_a_rank_that_dies_fails_the_job_and_the_next_attempt_reuses_its_cache(world_dir, demo_reference, tmp_path):
    """Rank 1 is killed by SIGKILL at the start of its third image forward (two units of its
    share done); rank 0 stalls at its first forward until the launcher stops it, so what the
    next attempt finds cached is rank 1's work alone."""
    cache = str(tmp_path / "cache")
    proc, out, counts = _run(world_dir, tmp_path, "dies", DEMO_ARGS, nproc=2, cache=cache, kill_after="2",
                             kill_rank="1", stall_rank="0")
    assert proc.returncode != 0
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s+exitcode\s*:\s*-9", proc.stderr), proc.stderr[-3000:]
    assert not list(out.rglob("*.json"))
    died = _passes(counts)
    assert died.get(0, {"image": 0})["image"] == 0 and died[1]["image"] == 2 * int(UNIT)
    # the next attempt, in one process: the two units rank 1 finished are not encoded again
    with _in_process(cache) as again:
        _evaluate(tmp_path / "again-out", DEMO_ARGS, cache)
    _same_results(demo_reference, _outputs(tmp_path / "again-out"))
    assert again["image"] == 2 * int(DEMO_LIMIT) - 2 * int(UNIT)


# ----------------------------------------------------------------------------- no launcher: as before


def test_one_process_makes_no_process_group_and_counts_its_samples(tmp_path, monkeypatch):
    from evalkit import api
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    first = api.evaluate("eva-clip-demo", "shapeworld-shape", limit=8, output_dir=tmp_path / "out", progress=False,
                         raise_errors=True)
    again = api.evaluate("eva-clip-demo", "shapeworld-shape", limit=8, output_dir=tmp_path / "out", progress=False,
                         raise_errors=True)
    assert not torch.distributed.is_initialized()
    assert (first.rank, first.world_size) == (0, 1)
    assert first.results[0].evalkit["world_size"] == 1
    assert first.results[0].evalkit["samples_per_rank"] == [8]
    assert again.results[0].evalkit["samples_per_rank"] == [0]  # all cached: nothing encoded


# ----------------------------------------------------------------------------- launcher environments


def test_detect_reads_each_launchers_environment():
    assert detect({}) is None
    assert detect({"RANK": "0", "WORLD_SIZE": "1"}) is None  # torchrun --nproc-per-node 1: one process
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "n1",
                "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x"}
    assert detect(torchrun) == Launch("torchrun", 3, 4, 1, 2, "n1", 29500)
    accelerate = {k: v for k, v in torchrun.items() if k not in ("TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE")}
    assert detect(accelerate) == Launch("env", 3, 4, 1, None, "n1", 29500)
    slurm = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8",
             "MASTER_ADDR": "node7", "MASTER_PORT": "12345"}
    assert detect(slurm) == Launch("slurm", 5, 8, 1, None, "node7", 12345)
    # the sbatch script itself (no srun step): one process, though the allocation has 8 tasks
    assert detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0"}) is None
    with pytest.raises(DistributedError, match=r"rank 5: slurm started 8 processes .*MASTER_ADDR=\$\(scontrol"):
        detect({k: v for k, v in slurm.items() if not k.startswith("MASTER")})
    with pytest.raises(DistributedError, match="rank 4 is not within a world of 4"):
        detect({**torchrun, "RANK": "4"})


def test_devices_per_rank():
    # --device cuda: each rank its own GPU; where the launcher gave each rank its own, that one
    assert device_for_rank("cuda", 3, 8, own_gpus=False) == "cuda:3"
    assert device_for_rank("cuda", 3, 1, own_gpus=True) == "cuda:0"
    assert device_for_rank("cpu", 3, 0, own_gpus=False) == "cpu"
    assert device_for_rank("cuda:5", 3, 8, own_gpus=False) == "cuda:5"  # as the user said
    with pytest.raises(DistributedError, match="local rank 4: --device cuda, but this node shows 2 GPU"):
        device_for_rank("cuda", 4, 2, own_gpus=False)
    # --devices: the node's GPUs, split evenly over its processes
    assert [devices_for_rank("auto", r, 4, 8, own_gpus=False) for r in range(4)] == ["0,1", "2,3", "4,5", "6,7"]
    assert devices_for_rank("cuda:4,cuda:5,cuda:6,cuda:7", 1, 2, 8, own_gpus=False) == "6,7"
    assert devices_for_rank("0,1", 1, 2, 2, own_gpus=True) == "0,1"  # srun --gpus-per-task: its own
    assert devices_for_rank("cpu", 1, 2, 0, own_gpus=False) == "cpu"
    with pytest.raises(DistributedError, match="3 GPU.* cannot be split evenly over the 2 processes"):
        devices_for_rank("0,1,2", 0, 2, 8, own_gpus=False)


def test_units_are_assigned_once_each_balanced_and_deterministically():
    assert assign_units([8] * 7, 2) == [0, 1, 0, 1, 0, 1, 0]
    assert assign_units([], 3) == []
    # a short last unit goes to the least loaded rank
    assert assign_units([10, 10, 10, 2], 3) == [0, 1, 2, 0]
    assert assign_units([10, 4, 4, 10], 2) == [0, 1, 1, 1]
    # sizes unknown: round-robin
    assert assign_units([None, 5, None, None], 2) == [0, 1, 0, 1]
    for sizes in ([3, 1, 4, 1, 5, 9, 2, 6], [7] * 13):
        for ranks in (1, 2, 3, 5):
            owner = assign_units(sizes, ranks)
            assert len(owner) == len(sizes) and set(owner) <= set(range(ranks))
            load = [sum(s for s, r in zip(sizes, owner, strict=True) if r == k) for k in range(ranks)]
            assert max(load) - min(load) <= max(sizes)



# ----------------------------------------------------------------------------- errors name their rank


def test_an_error_on_a_rank_reaches_rank_0_naming_that_rank():
    """What a rank sends to rank 0 when its share fails (every rank still reaches the gather)."""
    from evalkit.features.embed import SampleDecodeError, _outcome, _results

    class Rank1:
        rank = 1

    def share():
        raise SampleDecodeError("sample s7: cannot decode (truncated)")

    sent = _outcome(Rank1(), share)
    assert sent[0] == "error"
    with pytest.raises(SampleDecodeError, match=r"^rank 1: sample s7: cannot decode \(truncated\)$"):
        _results([("ok", ["rank 0's share"]), sent])
    assert _results([("ok", 1), ("ok", 2)]) == [1, 2]


def test_the_command_line_names_the_rank_of_an_error(monkeypatch, capsys):
    from evalkit import api
    from evalkit.cli import main as cli
    from evalkit.tasks.spec import TaskSpecError

    def fails(*args, **kwargs):  # a user's error (an EvalkitError): one line, naming the rank
        raise TaskSpecError("tasks.yaml: no such task")

    monkeypatch.setattr(api, "evaluate", fails)
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["run", "--model", "m", "--tasks", "t"]) == cli.EXIT_FAIL
    assert capsys.readouterr().err == "evalkit: error: rank 1: tasks.yaml: no such task\n"
