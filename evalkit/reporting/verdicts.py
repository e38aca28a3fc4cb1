"""How a verified number is judged against a claimed one: one rule for `evalkit report` and
`evalkit check` (pandas- and torch-free, so the command line's --help can cite it)."""

from __future__ import annotations

# Percentage points a number may differ and still agree: `evalkit check`'s default and `evalkit
# report`'s, so "verified" in the report and "ok" in the check mean the same.
# The papers print one decimal (±0.05 of rounding), and a run on other hardware or at another
# precision moves a top-1 by a few tenths; a CI job against its own baseline may ask for less.
DEFAULT_TOLERANCE = 0.5
