"""The one precision type: ``--precision`` parsed once, shared by the CLI, loaders, planner and Encoder.

    fp32 / bf16 / fp16   every weight stored in that dtype, activations in it too
    amp                  fp32 weights, forward under autocast (fp16 on CUDA, bf16 elsewhere)
    int8 / int4          bitsandbytes LLM.int8 / NF4 for the block Linear layers
                         (evalkit.models.quantize), fp16 for every other tensor

No torch import here: ``evalkit --help`` and ``evalkit plan --help`` build their ``choices=`` from
:data:`PRECISION_NAMES` without paying for torch. Torch dtypes are resolved when asked for
(:attr:`Precision.dtype`, :meth:`Precision.autocast_dtype`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from evalkit.errors import EvalkitError
from evalkit.results import DEFAULT_VARIANT

if TYPE_CHECKING:
    import torch

__all__ = ["PlacementError", "Precision", "PRECISION_NAMES", "DEFAULT_PRECISION", "AUTO_PRECISION",
           "RUN_PRECISION_CHOICES", "parse_precision"]


class PlacementError(EvalkitError, ValueError):
    """A model that cannot be placed as asked (precision, devices, memory, offload): the one error
    of the big-model path, defined in its bottom module so every layer above raises the same type."""


@dataclass(frozen=True)
class Precision:
    """``weights``: torch dtype name of every tensor that is not quantised (activations run in it
    too); ``bytes_per_element``: its size, for planning; ``quantized``: ``"int8"``/``"int4"`` when
    bitsandbytes replaces the block Linear layers, whose weights then take
    ``quantized_bytes_per_element`` each (statistics aside); ``autocast``: the forward runs
    under ``torch.autocast``."""

    name: str
    weights: str
    bytes_per_element: int
    quantized: str | None = None
    quantized_bytes_per_element: float | None = None
    autocast: bool = False
    #: the machine epsilon of the narrowest number format the forward pass computes in (2^−mantissa
    #: bits; a quantised layer's rounding steps added): the rounding unit of the flip budget
    #: (:mod:`evalkit.models.flips`)
    epsilon: float = 2.0 ** -23

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype of the non-quantised weights, and of the inputs the model is given."""
        import torch

        return getattr(torch, self.weights)

    def autocast_dtype(self, device_type: str) -> torch.dtype | None:
        """The dtype autocast computes in on ``device_type`` (``"cuda"``, ``"cpu"``), or None
        when this precision runs without autocast."""
        if not self.autocast:
            return None
        import torch

        return torch.float16 if device_type == "cuda" else torch.bfloat16

    def __str__(self) -> str:
        return self.name


_FP16 = "float16"  # the dtype bitsandbytes' kernels take; what int8/int4 keep every other tensor in

_ALL = (
    Precision("fp32", "float32", 4, epsilon=2.0 ** -23),
    Precision("bf16", "bfloat16", 2, epsilon=2.0 ** -7),  # 7 mantissa bits
    Precision("fp16", "float16", 2, epsilon=2.0 ** -10),
    # autocast runs bf16 on a CPU, fp16 on CUDA: the larger (bf16's) is kept, as a result may not say which
    Precision("amp", "float32", 4, autocast=True, epsilon=2.0 ** -7),
    # LLM.int8 rounds the weights (per row) and the activations (per token) to 8 bits: two roundings
    Precision("int8", _FP16, 2, quantized="int8", quantized_bytes_per_element=1, epsilon=2 * 2.0 ** -7),
    # NF4 weights (16 levels), fp16 activations
    Precision("int4", _FP16, 2, quantized="int4", quantized_bytes_per_element=0.5, epsilon=2.0 ** -3 + 2.0 ** -10),
)
_BY_NAME = {p.name: p for p in _ALL}
#: bfloat16 by name, for what cites it (a card's release precision)
BF16: str = _ALL[1].name

#: Every precision, in the order the CLI lists them: the ``choices=`` of ``evalkit run`` and
#: ``evalkit plan`` and what the loaders accept.
PRECISION_NAMES: tuple[str, ...] = tuple(_BY_NAME)

#: fp32: fastest on CPUs. A run at the default precision with a card's own weights is the default
#: result variant (evalkit.results, torch-free and below everything), so the two are one definition.
DEFAULT_PRECISION: str = DEFAULT_VARIANT

#: ``evalkit run --precision auto`` (its default): the card's release precision on a GPU, fp32 on
#: the CPU, resolved to one of :data:`PRECISION_NAMES` before anything loads (evalkit.models.auto)
AUTO_PRECISION = "auto"
RUN_PRECISION_CHOICES: tuple[str, ...] = (AUTO_PRECISION, *PRECISION_NAMES)


def parse_precision(precision: str | Precision) -> Precision:
    """``"fp16"`` -> its :class:`Precision` (a Precision is returned as is); anything else raises
    :class:`PlacementError` naming the choices."""
    if isinstance(precision, Precision):
        return precision
    try:
        return _BY_NAME[precision]
    except (KeyError, TypeError):
        raise PlacementError(f"--precision {precision}: choose from {', '.join(PRECISION_NAMES)}") from None
