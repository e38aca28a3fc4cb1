"""The flip budget: how many samples could change their top-1 through numerics alone.

A zero-shot logit is ``s · ⟨f, t⟩`` with ``f`` the image (video, point-cloud) embedding and ``t``
a class embedding, both of unit length, and ``s`` the logit scale (100). Computed at a precision,
each embedding carries an error ``e`` relative to its exact value. Then, for any class,

    |s·⟨f + e_f, t + e_t⟩ − s·⟨f, t⟩| ≤ s·(‖e_f‖ + ‖e_t‖ + ‖e_f‖·‖e_t‖) ≈ s·(η_image + η_text),

and the top-1/top-2 margin, a difference of two logits, moves by at most twice that. A sample can
only change its top-1 when its margin is smaller than the bound

    B = 2 · s · (η_image + η_text) = 4 · s · η   (both towers at the same precision).

``η`` is the relative error of an embedding at the precision: :func:`relative_error`, twice the
machine epsilon ε of the narrowest number format the forward pass computes in (ε = 2^−(mantissa
bits); each precision's ε is a field of its row in :mod:`evalkit.models.precision`):

=========  ===================  ===============================================================
precision  η                    why
=========  ===================  ===============================================================
fp32       2 · 2^−23            float32's epsilon
fp16       2 · 2^−10            float16's epsilon
bf16       2 · 2^−7             bfloat16's epsilon (7 mantissa bits)
amp        2 · 2^−7             autocast computes in bf16 on a CPU (fp16 on CUDA: the larger bf16
                                bound is kept, since a result may not say which)
int8       2 · (2 · 2^−7)       LLM.int8 rounds both the weights (per row) and the activations
                                (per token) to 8 bits: two 8-bit roundings
int4       2 · (2^−3 + 2^−10)   NF4 weights (16 levels) with fp16 activations
=========  ===================  ===============================================================

One ε per tower is a model of the accumulated rounding, not a proof: deep networks amplify it, and
one ε was not enough on the demo model at int8 (a margin moved by 7.8 logits against the 6.25 that
one ε allows). The factor 2 keeps every margin move seen on the demo and the eva27 miniatures (fp32
against bf16 and int8, checked with ``evalkit compare``) at or below 62 % of the bound: 2.5 of 6.25
at bf16, 7.8 of 12.5 at int8. The bound stays checked against reality: ``evalkit compare`` of two
precisions counts the samples whose top-1 actually changed, each of which must have had a margin
below ``B_A + B_B`` (each run's margin lies within ``B`` of the exact one), and lists every sample
whose margin moved by the bound or more without flipping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evalkit.models.precision import Precision, parse_precision

__all__ = ["SAFETY", "LOGIT_SCALE", "relative_error", "margin_bound", "FlipBudget", "flip_budget"]

SAFETY = 2.0  # epsilons per tower: see the module's notes
LOGIT_SCALE = 100.0  # clip_benchmark's fixed zero-shot logit scale (evalkit.metrics.classification_logits)


def relative_error(precision: str | Precision) -> float:
    """``η = SAFETY · ε``: the relative error of a unit embedding computed at ``precision``.
    Unknown precision: a :class:`~evalkit.models.precision.PlacementError` (a ValueError) naming it."""
    return SAFETY * parse_precision(precision).epsilon


def margin_bound(precision: str | Precision, logit_scale: float = LOGIT_SCALE) -> float:
    """``B = 4 · s · η``: the largest top-1/top-2 margin (in logits) that numerics at
    ``precision`` could close, both towers computed at it."""
    return 4.0 * logit_scale * relative_error(precision)


@dataclass(frozen=True)
class FlipBudget:
    """``samples`` of ``n`` have a margin below ``bound``: numerics alone can move the top-1
    accuracy by at most ``±points`` (percentage points)."""

    precision: str
    bound: float
    samples: int
    n: int

    @property
    def points(self) -> float:
        return 100.0 * self.samples / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, object]:
        return {"precision": self.precision, "margin_bound": self.bound, "samples": self.samples, "n": self.n,
                "acc1_points": self.points, "method": "margin < 4·s·η(precision)"}

    def describe(self) -> str:
        return (f"numerics alone can move acc1 by at most ±{self.points:.2f} points "
                f"({self.samples} of {self.n} samples have a top-1/top-2 margin below {self.bound:.3g} at {self.precision})")


def flip_budget(margins: np.ndarray, precision: str | Precision, logit_scale: float = LOGIT_SCALE) -> FlipBudget:
    """The samples whose ``margins`` (top-1 minus top-2 logit) lie below the bound of ``precision``."""
    bound = margin_bound(precision, logit_scale)
    margins = np.asarray(margins, dtype=np.float64)
    return FlipBudget(str(precision), bound, int(np.count_nonzero(margins < bound)), int(margins.shape[0]))
