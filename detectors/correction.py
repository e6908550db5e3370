"""Multiple-testing correction for many per-feature drift tests.

A window tests every feature at once; without a correction, 20 features at a
5 % level would flag roughly one window in three on a perfectly stationary
stream. Two corrections are offered, with alibi-detect's conventions so both
engines make the same verdicts:

* ``bonferroni`` — each feature is tested at ``level / n``; the family-wise
  error rate (any false alarm in the window) is at most ``level``.
* ``fdr`` — Benjamini–Hochberg: sort the p-values, find the largest ``k`` with
  ``p_(k) < level * k / n`` and reject the ``k`` smallest; the expected share of
  false discoveries is at most ``level`` (under the global null this is also
  the family-wise rate).
* ``none`` — every feature at ``level`` (for a single feature, or exploration).

The rejection rule is always "``p < threshold``" with one corrected
``threshold`` per window, so a DRIFT record can show the bar its p-value had
to clear. When FDR rejects nothing, the reported threshold is ``level / n``,
the bar the smallest p-value would have had to clear.

>>> r = correct([0.001, 0.02, 0.4], level=0.05, method="bonferroni")
>>> round(r.threshold, 4), r.reject.tolist()
(0.0167, [True, False, False])
>>> r = correct([0.001, 0.02, 0.4], level=0.05, method="fdr")
>>> round(r.threshold, 4), r.reject.tolist()
(0.0333, [True, True, False])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("bonferroni", "fdr", "none")


@dataclass(frozen=True, slots=True)
class CorrectionResult:
    """Corrected threshold and per-test verdicts for one family of p-values."""

    method: str
    level: float  # configured family level (p_val / q_val)
    n_tests: int
    threshold: float  # reject where p < threshold
    reject: np.ndarray  # bool per input p-value (NaN p-values never reject)

    @property
    def n_rejected(self) -> int:
        return int(self.reject.sum())

    @property
    def any(self) -> bool:
        return bool(self.reject.any())


def bh_threshold(p_values: np.ndarray, level: float) -> float:
    """Benjamini–Hochberg step-up threshold (alibi-detect's ``fdr`` convention).

    Returns ``level * k / n`` for the largest ``k`` with ``p_(k) < level * k / n``,
    or ``level / n`` when no such ``k`` exists.
    """
    p = np.sort(np.asarray(p_values, dtype=np.float64))
    n = p.shape[0]
    if n == 0:
        return float(level)
    bars = level * np.arange(1, n + 1) / n
    below = np.nonzero(p < bars)[0]
    return float(bars[below[-1]] if below.size else bars[0])


def correct(p_values, level: float, method: str = "bonferroni") -> CorrectionResult:
    """Apply ``method`` at family level ``level`` to ``p_values`` (NaN = not tested)."""
    if method not in METHODS:
        raise ValueError(f"unknown correction {method!r}; expected one of {METHODS}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    tested = ~np.isnan(p)
    n = int(tested.sum())
    if method == "none" or n <= 1:
        threshold = float(level)
    elif method == "bonferroni":
        threshold = float(level) / n
    else:
        threshold = bh_threshold(p[tested], level)
    reject = tested & (np.where(tested, p, 1.0) < threshold)
    return CorrectionResult(method, float(level), n, threshold, reject)
