"""One precision: ``--precision`` is parsed once, into one type the CLI, loaders, planner and Encoder share.

What must hold: the choices of ``evalkit run`` and ``evalkit plan`` and what the loaders accept
are the one tuple ``PRECISION_NAMES``; a bad name fails naming every choice, wherever it enters;
each precision maps to the dtypes it promises; no other module keeps a precision table of its
own; and the CLI gets its choices without importing torch.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evalkit import models
from evalkit.cli import main as cli
from evalkit.cli import plan as plan_cli
from evalkit.models import CARDS, ModelLoadError, eva_config
from evalkit.models.encoder import Encoder
from evalkit.models.memory_plan import plan_memory
from evalkit.models.precision import (
    DEFAULT_PRECISION,
    PRECISION_NAMES,
    RUN_PRECISION_CHOICES,
    PlacementError,
    Precision,
    parse_precision,
)
from evalkit.models.streaming import load_eva_clip
from evalkit.results import DEFAULT_VARIANT

REPO = Path(__file__).resolve().parents[1]
CHOICES = "choose from fp32, bf16, fp16, amp, int8, int4"

#: name -> (weights/input dtype, bytes per element, quantised as, bytes per quantised weight,
#: autocast dtype on cuda, on cpu)
EXPECTED = {
    "fp32": (torch.float32, 4, None, None, None, None),
    "bf16": (torch.bfloat16, 2, None, None, None, None),
    "fp16": (torch.float16, 2, None, None, None, None),
    "amp": (torch.float32, 4, None, None, torch.float16, torch.bfloat16),
    "int8": (torch.float16, 2, "int8", 1, None, None),
    "int4": (torch.float16, 2, "int4", 0.5, None, None),
}


def _precision_action(parser: argparse.ArgumentParser, command: str) -> argparse.Action:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return next(a for a in sub.choices[command]._actions if "--precision" in a.option_strings)


def test_cli_planner_and_loader_share_one_tuple():
    parser = cli.build_parser()
    run, plan = _precision_action(parser, "run"), _precision_action(parser, "plan")
    # run adds "auto" (its default, resolved to one of the names before anything loads)
    assert run.choices is RUN_PRECISION_CHOICES and RUN_PRECISION_CHOICES == ("auto", *PRECISION_NAMES)
    assert plan.choices is PRECISION_NAMES
    assert plan_cli.PRECISION_NAMES is PRECISION_NAMES
    assert PRECISION_NAMES == tuple(EXPECTED)
    assert run.default == "auto" and DEFAULT_PRECISION == models.DEFAULT_PRECISION == DEFAULT_VARIANT == "fp32"
    assert plan.default in PRECISION_NAMES
    # what the loaders and the planner accept is exactly that tuple
    for name in PRECISION_NAMES:
        assert parse_precision(name).name == name
        assert parse_precision(parse_precision(name)) is parse_precision(name)


def test_every_precision_maps_to_its_dtypes():
    for name, (dtype, nbytes, quantized, qbytes, cuda_autocast, cpu_autocast) in EXPECTED.items():
        p = parse_precision(name)
        assert isinstance(p, Precision) and str(p) == name
        assert p.dtype == dtype and p.bytes_per_element == nbytes == dtype.itemsize, name
        assert p.quantized == quantized and p.quantized_bytes_per_element == qbytes, name
        assert p.autocast_dtype("cuda") == cuda_autocast and p.autocast_dtype("cpu") == cpu_autocast, name


def test_the_encoder_runs_at_its_precision():
    for name, (dtype, *_rest, cpu_autocast) in EXPECTED.items():
        enc = Encoder(name="stub", model=torch.nn.Identity(), tokenizer=lambda texts: torch.zeros(len(texts), 4),
                      embed_dim=3, causal_text=True,
                      precision=parse_precision(name))
        assert enc.precision == name and isinstance(enc.precision, str)  # what results record: the name
        assert enc.precision_spec is parse_precision(name) and enc.input_dtype == dtype
        with enc._autocast():
            assert torch.is_autocast_enabled("cpu") == (cpu_autocast is not None), name
            if cpu_autocast is not None:
                assert torch.get_autocast_dtype("cpu") == cpu_autocast


@pytest.fixture(scope="module")
def demo_cfg():
    return eva_config(CARDS["eva-clip-demo"])


def test_a_bad_precision_names_the_choices_wherever_it_enters(demo_cfg, capsys):
    with pytest.raises(PlacementError, match=f"--precision fp8: {CHOICES}$"):
        parse_precision("fp8")
    with pytest.raises(ModelLoadError, match=f"--precision fp8: {CHOICES}$"):
        models.load("eva-clip-demo", precision="fp8")
    with pytest.raises(PlacementError, match=CHOICES):
        load_eva_clip(demo_cfg, {}, precision="fp8")
    with pytest.raises(PlacementError, match=CHOICES):
        plan_memory(demo_cfg, "2x1GiB", "fp8")
    with pytest.raises(PlacementError, match=CHOICES):
        Encoder(name="stub", model=torch.nn.Identity(), tokenizer=lambda texts: torch.zeros(len(texts), 4),
                embed_dim=3, causal_text=True, precision="half")
    for command in (["run", "--model", "m", "--tasks", "t"], ["plan", "--model", "m"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args([*command, "--precision", "fp8"])
        err = capsys.readouterr().err
        assert "invalid choice: 'fp8'" in err and all(repr(n) in err for n in PRECISION_NAMES), err


def test_the_planner_plans_every_precision(demo_cfg):
    for name in PRECISION_NAMES:
        assert plan_memory(demo_cfg, "1x1GiB", name, batch_size=2, suggest=False).precision == name


def test_no_other_module_keeps_a_precision_table():
    """"bf16" is written once in evalkit: in evalkit/models/precision.py. Another string -> dtype
    table or list of precisions would have to name it again."""
    found = []
    for path in sorted((REPO / "evalkit").rglob("*.py")):
        if path == REPO / "evalkit" / "models" / "precision.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and node.value == "bf16":
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, found


def test_the_cli_gets_its_choices_without_torch():
    code = ("import sys; from evalkit.cli.main import build_parser; build_parser(); "
            "import evalkit.models.precision; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr
