"""How a verified number is judged against a claimed one: the verdict rules of `evalkit report`,
and the plain tolerance `evalkit check --tolerance` keeps (pandas- and torch-free, so the command
line's --help can cite them).

A claim printed to ``d`` decimals stands for every value that prints as it: the *rounding
interval* ``[c − ½·10⁻ᵈ, c + ½·10⁻ᵈ]``. The claim was measured on the same test set as the
verified number, so two questions are asked, in this order:

``reproduced``
    the verified value lies in the rounding interval widened on both sides by the run's flip
    budget (:mod:`evalkit.models.flips`: the points numerics alone could move it): the same predictions,
    up to numerics, would print the claimed number.
``consistent``
    not reproduced, but the claim lies inside the verified value's interval: the gap is smaller
    than what the test set can resolve, so it changes no conclusion.
``differs``
    the claim lies outside the verified interval. The row carries the signed Δ (verified −
    claimed) and the p-value of a test of the verified samples against the claimed value (exact
    binomial for a proportion, the bootstrap otherwise), Holm-corrected over every claim of the
    report that has a test.

A verified number without an interval (a result written before records, for a metric that is not
a proportion) is ``reproduced`` when it prints as the claim, else ``untested``: no interval, so no
claim can be said to lie outside it; re-running with records judges it.
A ``--limit`` run's number is ``partial`` (a subset of the test set is never a reproduction); a
claim without a result is ``not run``, a result without a claim ``no claim``.

Every value here is in percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# `evalkit check --tolerance`: percentage points a number may move and still pass, for those who
# want a plain threshold instead of the statistics.
DEFAULT_TOLERANCE = 0.5

VERDICTS = ("reproduced", "consistent", "differs", "untested", "partial", "not run", "no claim")
#: what the report says of each verdict, in its own words
MEANING = {
    "reproduced": "the verified value prints as the claim, up to rounding and the flip budget",
    "consistent": "the gap is smaller than what the test set can resolve, so it changes no conclusion",
    "differs": "the claim lies outside the verified interval",
    "untested": "not reproduced, and the verified number has no interval to test the claim against (a result "
                "without per-sample records: re-run it to judge the claim)",
    "partial": "a subset of the test set (--limit) or of an average's members: never a reproduction",
    "not run": "no result for this claim",
    "no claim": "a result no claim covers",
}
SIGNIFICANCE = 0.05  # a Holm-adjusted p-value below this: the difference is significant


def claim_decimals(text: str | float) -> int:
    """The decimals a claim was printed with: from its text (``"91.60"`` -> 2, ``"91.6"`` -> 1,
    ``"92"`` -> 0); a float gives its shortest repr's."""
    s = str(text).strip()
    if "e" in s.lower():
        s = f"{float(s):f}".rstrip("0")
    return len(s.split(".", 1)[1]) if "." in s else 0


def rounding_interval(claimed: float, decimals: int) -> tuple[float, float]:
    """``[c − ½·10⁻ᵈ, c + ½·10⁻ᵈ]``: every value that prints as the claim."""
    half = 0.5 * 10.0 ** (-decimals)
    return claimed - half, claimed + half


@dataclass(frozen=True)
class Verdict:
    """One claim judged. ``reproduce_low``/``high``: the rounding interval widened by the flip
    budget; ``ci_low``/``high``: the verified interval (NaN without one); ``pvalue``: the test
    of the claimed value (NaN without one), ``test`` its name; ``reason``: one line saying why."""

    status: str
    delta: float
    reproduce_low: float
    reproduce_high: float
    ci_low: float
    ci_high: float
    pvalue: float
    test: str
    reason: str


def judge(claimed: float, decimals: int, verified: float, *, ci: tuple[float, float] | None = None,
          flip_points: float = 0.0, pvalue: float | None = None, test: str = "",
          tolerance: float = 1e-9) -> Verdict:
    """The verdict on ``claimed`` (printed to ``decimals``) given ``verified`` and its interval
    ``ci`` (percent), the run's ``flip_points`` and the ``pvalue`` of the claimed value under
    ``test``. ``tolerance`` absorbs float noise at the interval's ends only."""
    lo, hi = rounding_interval(claimed, decimals)
    lo, hi = lo - flip_points, hi + flip_points
    delta = round(verified - claimed, 6) + 0.0
    ci_low, ci_high = ci if ci is not None else (math.nan, math.nan)
    p = math.nan if pvalue is None else float(pvalue)
    if lo - tolerance <= verified <= hi + tolerance:
        budget = f" ± {flip_points:.2f} flip budget" if flip_points else ""
        return Verdict("reproduced", delta, lo, hi, ci_low, ci_high, p, test,
                       f"{verified:.2f} lies in the claim's rounding interval{budget} [{lo:.3f}, {hi:.3f}]")
    if ci is None:
        return Verdict("untested", delta, lo, hi, ci_low, ci_high, p, test,
                       f"Δ {delta:+.2f} outside the rounding interval; no interval to test it against "
                       "(a result without per-sample records)")
    if ci_low - tolerance <= claimed <= ci_high + tolerance:
        return Verdict("consistent", delta, lo, hi, ci_low, ci_high, p, test,
                       f"the claim lies inside the verified interval [{ci_low:.2f}, {ci_high:.2f}]: "
                       "the gap is smaller than what the test set can resolve, so it changes no conclusion")
    return Verdict("differs", delta, lo, hi, ci_low, ci_high, p, test,
                   f"the claim lies outside the verified interval [{ci_low:.2f}, {ci_high:.2f}] (Δ {delta:+.2f})")


def holm_adjusted(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values over the tests that exist (NaN stays NaN, and is not counted)."""
    from evalkit.stats import holm

    present = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    adjusted = holm([pvalues[i] for i in present])
    out = [math.nan] * len(pvalues)
    for i, a in zip(present, adjusted, strict=True):
        out[i] = a
    return out
