"""Small statistics shared by the adversarial detectors: calibrated exceedance tests,
combination of component p-values, and a vectorised Shapiro–Wilk W.

Exceedance calibration (outlier scores, low margins, squeeze distances): the
threshold ``t`` is an order statistic of ``m`` calibration scores, so for
exchangeable benign data the rate at which a new score exceeds it is exactly
``Beta(k + 1, m - k)`` distributed (``k`` calibration scores above ``t``) and
the number of exceedances in a window of ``n`` events is beta-binomial
``(n, k + 1, m - k)``. :func:`exceedance_pvalue` uses that (``"beta-binomial"``,
default: calibrated whatever the reference size) or the one-sided binomial test
with the reference rate taken as known (``"binomial"``, as
``scipy.stats.binomtest(k, n, p0, alternative="greater")``).

>>> import numpy as np
>>> cal = calibrate_upper(np.arange(1000.0), rate=0.05)
>>> cal.threshold, cal.n_above, round(cal.ref_rate, 4)
(950.0, 49, 0.05)
>>> round(exceedance_pvalue(25, 500, cal), 2), exceedance_pvalue(60, 500, cal) < 1e-5
(0.51, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special, stats


@dataclass(frozen=True, slots=True)
class Calibration:
    """An upper threshold on a score and how often calibration scores exceed it."""

    threshold: float
    n_cal: int  # calibration scores
    n_above: int  # calibration scores strictly above the threshold

    @property
    def ref_rate(self) -> float:
        """Expected exceedance rate of a new benign score: ``(k + 1) / (m + 1)``."""
        return (self.n_above + 1) / (self.n_cal + 1)


def calibrate_upper(scores: np.ndarray, rate: float) -> Calibration:
    """Threshold at the order statistic that leaves ~``rate`` of ``scores`` above it.

    ``t = s_(j)`` with ``j = ceil((1 - rate) * (m + 1))`` (capped at ``m``): a new
    exchangeable score exceeds it with probability ``(m - j + 1) / (m + 1) <= rate``
    when there are no ties.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))
    s = s[np.isfinite(s)]
    m = s.shape[0]
    if m < 2:
        raise ValueError(f"need at least 2 calibration scores, got {m}")
    if not 0 < rate < 1:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    j = min(m, int(np.ceil((1.0 - rate) * (m + 1))))
    t = float(s[j - 1])
    return Calibration(threshold=t, n_cal=m, n_above=int((s > t).sum()))


def exceedance_pvalue(k: int, n: int, cal: Calibration, test: str = "beta-binomial") -> float:
    """One-sided p-value of ``k`` exceedances in ``n`` events (more than the reference)."""
    if n <= 0 or k <= 0:
        return 1.0
    if test == "binomial":
        return float(stats.binom.sf(k - 1, n, cal.ref_rate))
    if test == "beta-binomial":
        return float(stats.betabinom.sf(k - 1, n, cal.n_above + 1, cal.n_cal - cal.n_above))
    raise ValueError(f"unknown rate test {test!r}; use 'beta-binomial' or 'binomial'")


def bonferroni_min(pvalues: list[float]) -> float:
    """Combined p-value of several component tests: ``min(1, K * min p)`` (valid under any dependence)."""
    ps = [p for p in pvalues if p is not None and np.isfinite(p)]
    if not ps:
        return 1.0
    return float(min(1.0, len(ps) * min(ps)))


# -- Shapiro-Wilk W, vectorised ------------------------------------------------------------

_C1 = (0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056)
_C2 = (0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633)


def _poly(c: tuple[float, ...], x: float) -> float:
    return float(sum(ci * x**i for i, ci in enumerate(c)))


@lru_cache(maxsize=512)
def shapiro_coefficients(n: int) -> np.ndarray:
    """The full antisymmetric Shapiro–Wilk coefficient vector for ``n`` sorted values.

    Royston's approximation (algorithm AS R94, the one ``scipy.stats.shapiro`` runs):
    expected normal order statistics ``m_i = Φ⁻¹((i − 3/8)/(n + 1/4))``, the two most
    extreme coefficients from Royston's polynomials, the rest ``m_i`` normalised.
    """
    if n < 3:
        raise ValueError(f"Shapiro-Wilk needs at least 3 values, got {n}")
    nn2 = n // 2
    half = np.empty(nn2)
    if n == 3:
        half[0] = np.sqrt(0.5)
    else:
        m = special.ndtri((np.arange(1, nn2 + 1) - 0.375) / (n + 0.25))  # negative
        summ2 = 2.0 * float((m**2).sum())
        ssumm2 = np.sqrt(summ2)
        rsn = 1.0 / np.sqrt(n)
        a1 = _poly(_C1, rsn) - m[0] / ssumm2
        if n > 5:
            i1 = 2
            a2 = -m[1] / ssumm2 + _poly(_C2, rsn)
            fac = np.sqrt((summ2 - 2.0 * m[0] ** 2 - 2.0 * m[1] ** 2) / (1.0 - 2.0 * a1**2 - 2.0 * a2**2))
            half[1] = a2
        else:
            i1 = 1
            fac = np.sqrt((summ2 - 2.0 * m[0] ** 2) / (1.0 - 2.0 * a1**2))
        half[0] = a1
        half[i1:] = -m[i1:] / fac
    full = np.zeros(n)
    full[:nn2] = -half
    full[n - nn2 :] = half[::-1]
    full.setflags(write=False)
    return full


def shapiro_w(samples: np.ndarray) -> np.ndarray:
    """Shapiro–Wilk W of each row of ``samples`` (2-D, same length ``n`` ≥ 3), vectorised.

    W is the squared correlation between the sorted row and the coefficient vector,
    as in AS R94 (``scipy.stats.shapiro(row).statistic`` agrees to ~1e-6). A row with
    zero range (all values equal) gets W = 0: as far from a normal sample as it gets.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64), axis=1)
    n = x.shape[1]
    a = shapiro_coefficients(n)
    xc = x - x.mean(axis=1, keepdims=True)
    ac = a - a.mean()
    sax = xc @ ac
    ssx = np.einsum("ij,ij->i", xc, xc)
    ssa = float(ac @ ac)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = sax**2 / (ssa * ssx)
    w[~(ssx > 0)] = 0.0
    return np.clip(w, 0.0, 1.0)
