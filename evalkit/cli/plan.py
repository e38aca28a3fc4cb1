"""``evalkit plan``: where an EVA-CLIP model would go and whether it fits, without any weights.

    evalkit plan --model eva-clip-18b --devices 2x40GiB --precision fp16 [--batch-size 64] [--json]

Builds the model on the ``meta`` device (no memory), sizes its weights at every precision,
estimates activation memory for the batch size, and runs the same device-map computation the
loader uses (``evalkit.models.memory_plan``). Exit code 0 when it fits, 1 when it does not (with
suggestions), 2 for usage errors. Heavy imports happen inside the command so ``evalkit --help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from evalkit.cli.help import HelpFormatter
from evalkit.models.precision import PRECISION_NAMES  # torch-free: this module is imported for --help

__all__ = ["register_cli", "cmd_plan", "make_plan", "render_plan"]


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plan",
        help="memory plan of an EVA-CLIP model over devices (no weights needed)",
        description="Parameter counts, weight bytes per precision, activation estimate, device map "
        "and whether it fits. Exit code 0 when it fits, 1 when it does not.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, help="an EVA-CLIP card: eva-clip-18b, eva-clip-8b, eva-clip-8b-448, ...")
    p.add_argument("--devices", default="auto",
                   help="planning sizes (2x40GiB, 80GiB,40GiB), GPU indices of this machine (0,1), cpu or auto")
    p.add_argument("--precision", default="fp16", choices=PRECISION_NAMES, help="weights dtype to plan for")
    p.add_argument("--batch-size", type=int, default=64, help="images (and texts) per forward pass")
    p.add_argument("--max-memory", help="per-device caps, e.g. 0=38GiB,1=38GiB,cpu=64GiB, or one size for every GPU")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)


def make_plan(model: str, devices: str, precision: str, batch_size: int, max_memory: str | None = None):
    """The :class:`~evalkit.models.memory_plan.MemoryPlan` of a model card."""
    from evalkit.models import CARDS, ModelLoadError, eva_config
    from evalkit.models.memory_plan import plan_memory
    from evalkit.registry import UnknownNameError

    if model not in CARDS:
        raise UnknownNameError("model", model, [n for n, c in CARDS.items() if c.family == "eva_clip"])
    card = CARDS[model]
    if card.family != "eva_clip":
        raise ModelLoadError(f"{model}: `evalkit plan` covers EVA-CLIP cards (eva-clip-18b, eva-clip-8b, ...)")
    cfg = eva_config(card)
    return plan_memory(cfg, devices, precision, batch_size=batch_size, max_memory=max_memory, name=model)


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _budget(n: int | None) -> str:
    if n is None:
        return "no limit"
    gib = n / 2**30
    return f"{gib:g} GiB" if abs(gib - round(gib)) < 1e-9 else f"{n / 1e9:.2f} GB"


def render_plan(plan: Any) -> str:
    from evalkit.models.devices import device_label
    from evalkit.models.memory_plan import GPU_RUNTIME_RESERVE

    p = plan.parameters
    wb = plan.weight_bytes
    lines = [
        f"{plan.model} on --devices {plan.devices}, {plan.precision}, batch {plan.batch_size}",
        "",
        f"parameters   visual {p['visual']:,}   text {p['text']:,}   other {p['other']:,}   total {p['total']:,}",
        f"weights      fp32 {_gb(wb['fp32'])}   fp16/bf16 {_gb(wb['fp16'])}   int8 {_gb(wb['int8'])}   "
        f"int4 {_gb(wb['int4'])}",
        f"activations  {_gb(plan.activation['peak'])} reserved on every device holding blocks "
        f"(image tower {_gb(plan.activation['image'])}, text tower {_gb(plan.activation['text'])})",
        "             b x B x [N x (2W + 2H) + 2 x heads x N^2] + input; N tokens, W width, H MLP width, "
        "b bytes per value",
        "",
        "device map",
    ]
    for d in plan.per_device:
        label = device_label(d.device)
        if d.device == "disk":
            head = f"  {'left':7s} {_gb(d.weights)} of weights that do not fit on the devices"
        else:
            runtime = GPU_RUNTIME_RESERVE if isinstance(d.device, int) else 0
            pct = f" ({100 * d.used / d.budget:.0f}%)" if d.budget else ""
            head = (f"  {label:7s} {_budget(d.budget):>9s}: weights {_gb(d.weights)} + activations "
                    f"{_gb(d.reserve - runtime)}" + (f" + runtime {_gb(runtime)}" if runtime else "")
                    + f" = {_gb(d.used)}{pct}")
        lines.append(head)
        lines.append(f"          {', '.join(d.modules) if d.modules else '(nothing)'}")
    lines.append("")
    if plan.fits:
        lines.append("fits: yes")
    else:
        lines.append(f"fits: NO ({plan.reason})")
        for s in plan.suggestions:
            lines.append(f"  try {s}")
    for w in plan.warnings:
        lines.append(f"note: {w}")
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        print(f"evalkit: error: --batch-size {args.batch_size}: must be at least 1", file=sys.stderr)
        return 2
    plan = make_plan(args.model, args.devices, args.precision, args.batch_size, args.max_memory)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(render_plan(plan))
    return 0 if plan.fits else 1
