# size: the verdict rules (chunk bands, effect floors, saturation) share their calibration code
"""Thresholds calibrated on the reference: chunk bands and effect-size floors.

A p-value answers "could these two samples come from one distribution?". On
real streams the answer is nearly always no — seasons, autocorrelation and
slow trends move the data by themselves — so a windowed test at 1,000 events
flags almost every window (docs/detection-science.md, "Thresholds"). Two
other ways to judge a window statistic, both available for every statistic:

* **reference chunks** (NannyML's ``StandardDeviationThreshold``): cut the
  reference, in time order, into contiguous chunks of the window's size;
  compute the statistic of each chunk against the rest of the reference; the
  band is ``mean ± k·sd`` of those values. A window is judged against how much
  the statistic moves *inside* the reference, autocorrelation included.
  Each chunk is compared with the reference **without** it (NannyML keeps it
  in, which biases the chunk values low and the band too narrow: a window is
  never part of the reference it is compared with).
* **effect band**: the same chunks' effect sizes (below), each chunk against the
  rest; ``both`` also requires the window's effect above the upper end of their
  log-normal band at the per-feature level (:func:`log_band` with the normal quantile; against a rolling
  reference, whose few past moves estimate mean and sd, the Student-t prediction band
  :func:`log_prediction_band`), so a window must move the distribution more than the
  reference moves between its own chunks. Where the statistic's band is at or
  above the largest value the statistic can take (:func:`statistic_max`: KS
  D = 1 — ten values of a random walk against 70 others are often wholly apart),
  the statistic cannot tell a quiet window from one 10 sd away; the effect band
  alone decides (before, such a feature could never alarm).
* **effect-size floor** (Evidently's default for samples over 1,000): the
  Wasserstein distance divided by the reference's standard deviation above
  0.1 (numeric), the Jensen–Shannon distance (natural log) above 0.1
  (categorical). It ignores sample size entirely.

:func:`sd_band`, :func:`chunk_slices` and :func:`chunk_band` are generic
(any statistic of a block of reference rows: a quality rate, a prediction
drift statistic, an estimated metric); :func:`drift_bands` computes the bands
of the per-feature drift statistics and effect sizes for
:func:`detectors.univariate.univariate_drift`; :func:`judge_windows` is the
one call a benchmark makes: reference array + windows + method in, verdicts out.

>>> band = sd_band(np.array([0.10, 0.12, 0.11, 0.09]), 3.0, two_sided=False)
>>> band.lower is None, round(band.upper, 4)
(True, 0.1385)
>>> [(s.start, s.stop) for s in chunk_slices(10, 3)]
[(0, 3), (3, 6), (6, 9)]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from detectors.frame import Frame
from detectors.reference import Reference, quantile_edges, reference_frame, rolling_history
from detectors.spec import DriftSpec, ThresholdSpec
from detectors.twosample import _starts, binned_effects, chi2_2xk, cvm_pvalue, numeric_block
from detectors.values import not_none

METHODS = ("p_value", "reference_chunks", "effect_size", "both")
LN2_SQRT = math.sqrt(math.log(2.0))
"""Base-2 Jensen–Shannon distance × this = natural-log distance (Evidently's unit)."""


@dataclass(frozen=True, slots=True)
class Band:
    """An acceptance band: a value outside ``[lower, upper]`` is an alarm (None = unbounded)."""

    lower: float | None
    upper: float | None

    def outside(self, value: float) -> bool:
        """True when ``value`` is below ``lower`` or above ``upper`` (NaN is never outside)."""
        if value is None or not math.isfinite(value):
            return False
        return (self.lower is not None and value < self.lower) or (self.upper is not None and value > self.upper)


def sd_band(
    values: np.ndarray,
    multiplier: float,
    *,
    two_sided: bool = True,
    clip: tuple[float | None, float | None] = (None, None),
) -> Band:
    """``mean ± multiplier · sd`` of ``values`` (NaN ignored; sd with ddof=0 as NannyML).

    ``two_sided=False``: upper bound only (distances: smaller is never an alarm).
    ``clip``: the statistic's own range (e.g. rates in [0, 1]).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Band(None, None)
    mean, sd = float(v.mean()), float(v.std())
    lo = mean - multiplier * sd if two_sided else None
    hi = mean + multiplier * sd
    if clip[0] is not None:
        lo = None if lo is None or lo <= clip[0] else lo
    return Band(lo, None if clip[1] is not None and hi >= clip[1] else hi)


def log_band(values: np.ndarray, multiplier: float) -> float | None:
    """Upper end ``exp(mean + multiplier · sd)`` of the logs of the positive finite ``values`` (ddof 0).

    For distances (an effect size of each reference chunk against the rest): they are
    positive and right-skewed, so a normal band on their raw values (``mean + k·sd``) sits
    inside their own upper tail; on the log scale it does not. None with fewer than two
    positive values.

    >>> round(log_band(np.array([0.5, 1.0, 2.0]), 1.0), 4)
    1.7611
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 2:
        return None
    lv = np.log(v)
    return float(np.exp(lv.mean() + multiplier * lv.std()))


def prediction_multiplier(level: float, n: int) -> float:
    """k of a one-sided normal *prediction* band from ``n`` values: ``t.isf(level, n - 1) · sqrt(1 + 1/n)``.

    A band ``mean + k·sd`` (sd with ddof 1) of ``n`` values holds the next value drawn from their
    normal distribution with probability ``1 - level`` exactly; ``multiplier_for_level`` (the normal
    quantile) assumes mean and sd known and, from the 5–20 past windows a rolling reference has early
    on, alarms several times more often than ``level`` (with 7 values at level 0.01: 2.33 vs 3.36).
    Tends to :func:`multiplier_for_level` as ``n`` grows (50 values: +5 %).
    """
    if n < 2:
        raise ValueError(f"a prediction band needs at least 2 values, got {n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(stats.t.isf(level, n - 1) * math.sqrt(1.0 + 1.0 / n))


def log_prediction_band(values: np.ndarray, level: float) -> float | None:
    """Upper end of the one-sided prediction band at ``level`` of the logs of the positive finite ``values``.

    ``exp(mean + prediction_multiplier(level, n) · sd)`` of the logs (sd ddof 1): the effect a new
    chunk or window exceeds with probability ``level`` when the effects are log-normal, whatever their
    count — the band :func:`log_band` gives with k from the level, corrected for having estimated mean
    and sd from ``n`` values. None with fewer than two positive values.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 2:
        return None
    lv = np.log(v)
    return float(np.exp(lv.mean() + prediction_multiplier(level, int(v.size)) * lv.std(ddof=1)))


def statistic_max(test: str, n_ref: int, n_cur: int) -> float:
    """The largest value ``test``'s statistic can take at these sample sizes (complete separation).

    ``ks``: 1; ``chi2`` (2 × k table, no continuity correction): ``n_ref + n_cur``
    (Cramér's V = 1); ``cvm``: ``nm/(n+m) − (4nm − 1)/(6(n+m))`` (Anderson's T with
    every current value beyond every reference value). A band at or above it can
    never be crossed: the test is blind there (:func:`drift_verdicts`).
    """
    if test == "ks":
        return 1.0
    n, m = float(n_ref), float(n_cur)
    if n <= 0 or m <= 0:
        return float("nan")
    if test == "chi2":
        return n + m
    if test == "cvm":
        return n * m / (n + m) - (4.0 * n * m - 1.0) / (6.0 * (n + m))
    raise ValueError(f"unknown test {test!r}")


def chunk_slices(n_rows: int, size: int, max_chunks: int | None = None) -> list[slice]:
    """Contiguous chunks of ``size`` rows in order; the incomplete tail is dropped.

    With more than ``max_chunks`` complete chunks, ``max_chunks`` of them spread
    evenly over the reference are kept (bounded cost for long references).
    """
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    n = n_rows // size
    idx = np.arange(n)
    if max_chunks is not None and n > max_chunks:
        idx = np.unique(np.round(np.linspace(0, n - 1, max_chunks)).astype(np.int64))
    return [slice(int(i) * size, int(i + 1) * size) for i in idx]


def chunk_band(
    statistic: Callable[[slice], float],
    n_rows: int,
    size: int,
    multiplier: float,
    *,
    min_chunks: int = 5,
    max_chunks: int | None = 50,
    two_sided: bool = True,
    clip: tuple[float | None, float | None] = (None, None),
) -> Band | None:
    """Band of ``statistic(chunk)`` over the reference's chunks of ``size`` rows.

    Generic: ``statistic`` gets a slice of the (time-ordered) reference rows and
    returns a number — a quality rate, a prediction-drift statistic, an estimated
    metric. None when fewer than ``min_chunks`` chunks fit.
    """
    slices = chunk_slices(n_rows, size, max_chunks)
    if len(slices) < min_chunks:
        return None
    return sd_band(
        np.array([statistic(s) for s in slices], dtype=np.float64), multiplier, two_sided=two_sided, clip=clip
    )


def multiplier_for_level(level: float) -> float:
    """k with one-sided normal tail ``level``: ``Φ⁻¹(1 - level)`` (3 ↔ 0.00135)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(stats.norm.isf(level))


def sd_multiplier(spec: ThresholdSpec, family_level: float, n_tests: int) -> float:
    """The k in force: the configured one, or derived from the level split over ``n_tests``."""
    if spec.sd_multiplier is not None:
        return float(spec.sd_multiplier)
    return multiplier_for_level(family_level / max(int(n_tests), 1))


def null_quantile(test: str, q_upper: float, n_ref, n_cur, dof=None) -> np.ndarray:
    """The statistic's value with upper-tail probability ``q_upper`` under no drift (iid samples).

    ``ks``: ``kstwo.isf(q, round(n·m/(n+m)))`` (the distribution the KS p-value uses);
    ``chi2``: ``chi2.isf(q, dof)``; ``cvm``: the asymptotic CvM p-value inverted by bisection.
    """
    n_ref = np.asarray(n_ref, dtype=np.float64)
    n_cur = np.asarray(n_cur, dtype=np.float64)
    if test == "ks":
        return np.asarray(stats.kstwo.isf(q_upper, np.round(n_ref * n_cur / (n_ref + n_cur))), dtype=np.float64)
    if test == "chi2":
        return np.asarray(stats.chi2.isf(q_upper, np.maximum(np.asarray(dof, dtype=np.float64), 1)), dtype=np.float64)
    if test == "cvm":
        lo = np.zeros(np.broadcast(n_ref, n_cur).shape)
        hi = np.full(lo.shape, 50.0)
        for _ in range(60):
            mid = (lo + hi) / 2
            above = cvm_pvalue(mid, n_ref, n_cur) > q_upper
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        return (lo + hi) / 2
    raise ValueError(f"unknown test {test!r}")


@functools.lru_cache(maxsize=4096)
def _critical(test: str, q_upper: float, n_ref: int, n_cur: int, dof: int) -> float:
    """:func:`null_quantile` of one test and sizes, cached (count windows repeat their sizes)."""
    return float(null_quantile(test, q_upper, n_ref, n_cur, dof))


def time_order(frame: Frame) -> np.ndarray:
    """Row order by event time, stable (a file without times keeps its row order)."""
    return np.argsort(frame.event_time, kind="stable")


# -- the drift statistics of the reference's chunks ----------------------------------------


@dataclass(frozen=True)
class ChunkValues:
    """Per-feature drift statistics of each reference chunk against the rest of the reference.

    Arrays are (n_chunks,) per feature name: the test statistic (KS D, CvM T or
    chi-square), PSI, JS distance (base 2) and Wasserstein (numeric; NaN for
    categorical). ``size``: rows per chunk.
    """

    size: int
    n_chunks: int
    statistic: dict[str, np.ndarray]
    psi: dict[str, np.ndarray]
    js: dict[str, np.ndarray]
    wasserstein: dict[str, np.ndarray]
    ratio: dict[str, np.ndarray]  # statistic / its median under no drift at the chunk's sizes
    effect: dict[str, np.ndarray] | None = None  # each chunk's own effect size (successive windows), else None
    sd_floor: dict[str, float] | None = None  # successive windows: the smallest sd an effect is divided by

    def band(self, name: str, value: str, multiplier: float) -> Band:
        """Upper band (mean + k·sd) of one feature's chunk ``value`` ("statistic", "psi", ...)."""
        return sd_band(getattr(self, value)[name], multiplier, two_sided=False)

    def effects(self, name: str, kind: str, ref_std: float) -> np.ndarray:
        """Each chunk's effect size against the rest, in :func:`effect_size`'s units.

        Successive windows (:func:`successive_values`) carry their own, each against its predecessor's sd.
        """
        if self.effect is not None and name in self.effect:
            return self.effect[name]  # already divided by max(predecessor's sd, sd_floor)
        if kind == "numeric":
            return self.wasserstein[name] / (ref_std if ref_std > 0 else 1e-3)
        return self.js[name] * LN2_SQRT

    def inflation(self, name: str) -> float:
        """How much larger the statistic runs inside the reference than on independent samples.

        The median over chunks of statistic / null median, floored at 1 (never
        more sensitive than the test). ~1 for iid data; > 1 where the reference
        moves by itself (autocorrelation, seasons): the effective sample size is
        smaller than the count.
        """
        r = self.ratio[name]
        r = r[np.isfinite(r)]
        return max(1.0, float(np.median(r))) if r.size else float("nan")


def _remove_sorted(values: np.ndarray, sub: np.ndarray) -> np.ndarray:
    """Sorted ``values`` without the multiset ``sub`` (sorted, contained in ``values``), O(n)."""
    if sub.size == 0:
        return values
    first = np.searchsorted(values, sub, side="left")
    within = np.arange(sub.shape[0]) - np.searchsorted(sub, sub, side="left")  # k-th copy of a tie
    return np.delete(values, first + within)


def chunk_values(
    reference: Reference,
    rows: Frame,
    names: Sequence[str],
    size: int,
    numeric_test: str,
    *,
    max_chunks: int | None = 50,
) -> ChunkValues:
    """Drift statistics of every chunk of ``size`` rows of ``rows`` (time order) vs the rest.

    ``rows`` are the reference's own rows (the frame it was built from); the
    statistics are those :func:`~detectors.univariate.univariate_drift` computes
    for a window, with the reference's bins, so chunk and window values are
    comparable.
    """
    order = time_order(rows)
    slices = chunk_slices(len(rows), size, max_chunks)
    num = [n for n in names if n in reference.numeric and n in rows.numeric]
    cat = [n for n in names if n in reference.categorical and n in rows.categorical]
    out = {
        k: {n: np.full(len(slices), np.nan) for n in num + cat}
        for k in ("statistic", "psi", "js", "wasserstein", "ratio")
    }
    num_cols = {}
    for n in num:
        col = np.asarray(rows.numeric[n], dtype=np.float64)[order]
        num_cols[n] = np.where(np.isfinite(col), col, np.nan)
    cat_codes = {}
    for n in cat:
        col = np.asarray(rows.categorical[n], dtype=object)[order]
        present = not_none(col)
        codes = np.full(col.shape[0], -1, dtype=np.int64)
        codes[present] = reference.categorical[n].codes(col[present].astype(str))
        cat_codes[n] = codes
    for j, s in enumerate(slices):
        if num:
            cur = [np.sort(num_cols[n][s][~np.isnan(num_cols[n][s])]) for n in num]
            rest = [_remove_sorted(reference.numeric[n].values, c) for n, c in zip(num, cur)]
            ok = [i for i, (r, c) in enumerate(zip(rest, cur)) if r.size >= 2 and c.size >= 2]
            if ok:
                blk = numeric_block(
                    [rest[i] for i in ok],
                    [cur[i] for i in ok],
                    [reference.numeric[num[i]].edges for i in ok],
                    [num[i] for i in ok],
                    cvm=numeric_test == "cvm",
                )
                st = blk.ks if blk.cvm is None else blk.cvm  # cvm is computed only when asked
                med = null_quantile(numeric_test, 0.5, blk.n_ref, blk.n_cur)
                for k, i in enumerate(ok):
                    out["ratio"][num[i]][j] = st[k] / med[k] if med[k] > 0 else np.nan
                    out["statistic"][num[i]][j] = st[k]
                    out["psi"][num[i]][j] = blk.psi[k]
                    out["js"][num[i]][j] = blk.js[k]
                    out["wasserstein"][num[i]][j] = blk.wasserstein[k]
        if cat:
            a_l, b_l = [], []
            for n in cat:
                total = reference.categorical[n].counts
                c = cat_codes[n][s]
                chunk = np.bincount(c[c >= 0], minlength=total.shape[0])
                a_l.append(total - chunk)
                b_l.append(chunk)
            lens = np.array([a.shape[0] for a in a_l])
            a, b = np.concatenate(a_l), np.concatenate(b_l)
            keep = (a + b) > 0  # a category absent from both sides is no column of the table
            seg = np.repeat(np.arange(len(cat)), lens)
            a, b, seg = a[keep], b[keep], seg[keep]
            kept = np.bincount(seg, minlength=len(cat))
            valid = (
                (kept > 0)
                & (np.bincount(seg, weights=a, minlength=len(cat)) > 0)
                & (np.bincount(seg, weights=b, minlength=len(cat)) > 0)
            )
            if valid.all():  # every feature has values on both sides (else: this chunk stays NaN)
                starts = _starts(kept)
                st, _, dof = chi2_2xk(a, b, starts)
                psi, js = binned_effects(a, b, starts)
                med = null_quantile("chi2", 0.5, 0, 0, dof)
                for i, n in enumerate(cat):
                    out["statistic"][n][j], out["psi"][n][j], out["js"][n][j] = st[i], psi[i], js[i]
                    out["ratio"][n][j] = st[i] / med[i] if dof[i] > 0 and med[i] > 0 else np.nan
    return ChunkValues(size, len(slices), out["statistic"], out["psi"], out["js"], out["wasserstein"], out["ratio"])


def successive_values(
    reference: Reference,
    windows: Sequence[Frame],
    names: Sequence[str],
    numeric_test: str,
) -> ChunkValues:
    """Drift statistics of each window of a rolling reference's history against the window before it.

    ``windows``: consecutive windows in time order (:func:`detectors.reference.rolling_history`); value
    ``j`` is window ``j + 1`` judged as the worker judges a window against a rolling reference of the
    previous window: KS D / CvM T (numeric, bins at the predecessor's quantiles for PSI and JS),
    chi-square (categorical), and the effect size against the *predecessor's* sd. On a trending or
    random-walk series every window lies beside the one before it by some amount; these values say
    how much, so the band (:func:`drift_verdicts`) is the series' own window-to-window movement rather
    than the spread of one fixed block of rows. ``size`` is the mean window size.
    """
    num = [n for n in names if n in reference.numeric]
    cat = [n for n in names if n in reference.categorical]
    n_pairs = max(len(windows) - 1, 0)
    out = {
        k: {n: np.full(n_pairs, np.nan) for n in num + cat}
        for k in ("statistic", "psi", "js", "wasserstein", "ratio", "effect")
    }
    floors = {n: successive_sd_floor([w.numeric[n] for w in windows if n in w.numeric]) for n in num}
    for j in range(n_pairs):
        prev, cur = windows[j], windows[j + 1]
        rs, cs, ok = [], [], []
        for n in num:
            if n not in prev.numeric or n not in cur.numeric:
                continue
            r = np.sort(np.asarray(prev.numeric[n], dtype=np.float64))
            c = np.sort(np.asarray(cur.numeric[n], dtype=np.float64))
            r, c = r[np.isfinite(r)], c[np.isfinite(c)]
            if r.size >= 2 and c.size >= 2:
                rs.append(r)
                cs.append(c)
                ok.append(n)
        if ok:
            blk = numeric_block(rs, cs, [quantile_edges(r, reference.bins) for r in rs], ok, cvm=numeric_test == "cvm")
            st = blk.ks if blk.cvm is None else blk.cvm
            med = null_quantile(numeric_test, 0.5, blk.n_ref, blk.n_cur)
            for k, n in enumerate(ok):
                out["statistic"][n][j], out["psi"][n][j], out["js"][n][j] = st[k], blk.psi[k], blk.js[k]
                out["wasserstein"][n][j] = blk.wasserstein[k]
                out["ratio"][n][j] = st[k] / med[k] if med[k] > 0 else np.nan
                scale = max(float(np.std(rs[k])), floors[n])
                out["effect"][n][j] = effect_size("numeric", float(blk.wasserstein[k]), 0.0, scale)
        for n in cat:
            if n not in prev.categorical or n not in cur.categorical:
                continue
            pv, cv = (np.asarray(f.categorical[n], dtype=object) for f in (prev, cur))
            pv, cv = pv[not_none(pv)].astype(str), cv[not_none(cv)].astype(str)
            if pv.size == 0 or cv.size == 0:
                continue
            cats, codes = np.unique(np.concatenate([pv, cv]), return_inverse=True)
            a = np.bincount(codes[: pv.size], minlength=cats.size)
            b = np.bincount(codes[pv.size :], minlength=cats.size)
            starts = np.zeros(1, dtype=np.int64)
            st_c, _, dof = chi2_2xk(a, b, starts)
            psi_c, js_c = binned_effects(a, b, starts)
            med_c = null_quantile("chi2", 0.5, 0, 0, dof)
            out["statistic"][n][j], out["psi"][n][j], out["js"][n][j] = st_c[0], psi_c[0], js_c[0]
            out["ratio"][n][j] = st_c[0] / med_c[0] if dof[0] > 0 and med_c[0] > 0 else np.nan
            out["effect"][n][j] = float(js_c[0]) * LN2_SQRT
    size = int(round(float(np.mean([len(w) for w in windows[1:]])))) if n_pairs else 0
    return ChunkValues(
        size, n_pairs, out["statistic"], out["psi"], out["js"], out["wasserstein"], out["ratio"], out["effect"], floors
    )


SD_FLOOR_QUANTILE = 0.1
"""A rolling reference's effect divides by the predecessor's sd, but never by less than this quantile of
the sds of the windows in its history (:func:`successive_sd_floor`)."""


def successive_sd_floor(windows: Sequence[np.ndarray]) -> float:
    """The smallest sd a successive window's effect size is divided by: the :data:`SD_FLOOR_QUANTILE`
    quantile of the windows' own sds (finite values; 0.0 without any).

    Against a rolling reference the effect is Wasserstein / the *previous* window's sd. A window that
    happens to be flat — a sensor at its resolution, a stuck value, a calm week of a price — has an sd
    near 0 (Evidently's guard: 1e-3), and the next window's ordinary step then scores tens or hundreds
    of sds (bench real's occupancy_2: a temperature step of 0.09 after a constant window scored 104
    against a band of 18). A flat window says nothing about how much the series moves; the sds the
    series usually shows do. Floored at the 10 % quantile, a calm window still counts as calm (a
    crash after a quiet fortnight is still many sds: bitcoin_2), a constant one no longer as 0.
    """
    sds = []
    for w in windows:
        v = np.asarray(w, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size >= 2:
            sds.append(float(v.std()))
    return float(np.quantile(sds, SD_FLOOR_QUANTILE)) if sds else 0.0


def chunk_size_key(m: int) -> int:
    """Window size rounded to two significant digits: time windows of varying counts share bands."""
    if m < 100:
        return int(m)
    e = 10 ** (int(math.log10(m)) - 1)
    return int(round(m / e) * e)


def drift_chunks(
    reference: Reference, rows: Frame | None, names: Sequence[str], window_rows: int, spec: DriftSpec
) -> ChunkValues | None:
    """The reference's chunk values for windows of ``window_rows`` rows, cached on the reference.

    None when the reference has no rows attached or fewer than
    ``spec.threshold.min_chunks`` chunks of that size fit in it. A rolling reference with its
    history attached (:func:`detectors.reference.attach_rolling_history`) gives its successive
    windows instead (:func:`successive_values`; None with fewer than ``min_chunks`` of them).
    """
    history = rolling_history(reference)
    if history is not None:
        if len(history) - 1 < spec.threshold.min_chunks:
            return None
        hkey = ("drift_successive", spec.numeric_test, tuple(names))
        if hkey not in reference._cache:
            reference._cache[hkey] = successive_values(reference, history, names, spec.numeric_test)
        return reference._cache[hkey]
    if rows is None or window_rows < 2:
        return None
    size = chunk_size_key(window_rows)
    if len(rows) // size < spec.threshold.min_chunks:
        return None
    key = ("drift_chunks", size, spec.numeric_test, spec.threshold.max_chunks, tuple(names))
    cache = reference._cache
    if key not in cache:
        cache[key] = chunk_values(reference, rows, names, size, spec.numeric_test, max_chunks=spec.threshold.max_chunks)
    return cache[key]


# -- effect sizes in Evidently's units ------------------------------------------------------


def effect_size(kind: str, wasserstein: float | None, js_base2: float, ref_std: float) -> float:
    """Evidently's large-sample drift score: normed Wasserstein (numeric), JS distance ln (categorical)."""
    if kind == "numeric":
        if wasserstein is None:
            raise ValueError("effect_size of a numeric feature needs its Wasserstein distance")
        return float(wasserstein) / (ref_std if ref_std > 0 else 1e-3)  # Evidently's guard for sd 0
    return float(js_base2) * LN2_SQRT


@dataclass(frozen=True, slots=True)
class FeatureVerdict:
    """How one feature's window verdict was made, with the band it was judged against.

    ``method``: the method in force for this feature (``reference_chunks`` and
    ``both`` fall back to ``p_and_effect`` — p below the corrected level **and**
    effect above the floor — when the reference has too few chunks or no rows);
    ``judged``: the value compared with the band (``p_value``,
    ``statistic`` or ``effect``); ``lower``/``upper``: the band of ``judged``;
    ``effect``/``effect_floor``: Evidently's effect size and its floor;
    ``note``: why a fallback happened (empty otherwise).
    """

    method: str
    judged: str
    value: float
    lower: float | None
    upper: float | None
    effect: float
    effect_floor: float
    drift: bool
    note: str = ""
    effect_band: float | None = None

    def fields(self) -> dict:
        """Record fields: ``threshold_method``, ``judged``, ``band_lower``/``band_upper`` (absent =
        unbounded), ``effect``, ``effect_floor``, ``effect_band`` (the reference chunks' effect band the
        effect had to exceed too), ``threshold_note`` (why a chunk method fell back, or that the
        statistic saturates)."""
        out = {
            "threshold_method": self.method,
            "judged": self.judged,
            "band_lower": self.lower,
            "band_upper": self.upper,
            "effect": self.effect,
            "effect_floor": self.effect_floor,
            "effect_band": self.effect_band,
            "threshold_note": self.note or None,
        }
        return {k: v for k, v in out.items() if v is not None and not (isinstance(v, float) and not math.isfinite(v))}


def drift_verdicts(
    reference: Reference,
    window_rows: int,
    names: Sequence[str],
    kinds: Sequence[str],
    tests: Sequence[str],
    statistic: np.ndarray,
    p_value: np.ndarray,
    js: np.ndarray,
    wasserstein: Sequence[float | None],
    n_ref: np.ndarray,
    n_cur: np.ndarray,
    dof: np.ndarray,
    p_threshold: float,
    p_reject: np.ndarray,
    spec: DriftSpec,
) -> list[FeatureVerdict]:
    """Per-feature verdicts under ``spec.threshold.method`` (see :class:`FeatureVerdict`).

    ``p_threshold``/``p_reject``: the corrected p-value bar and its verdicts
    (:func:`detectors.correction.correct`), used by ``p_value``. ``both`` also
    requires the effect above the chunks' effect band (:meth:`ChunkValues.effects`;
    :func:`log_band` at the per-feature level's normal quantile, :func:`log_prediction_band` for a rolling
    reference's successive windows, :func:`log_band` with ``sd_multiplier`` when set); where the statistic's band reaches
    :func:`statistic_max` the verdict is judged on the effect against that band
    (``judged="effect"``, a note says why). The chunk band
    (``sd_multiplier`` unset) is ``inflation × null_quantile(level / n)``: the
    statistic's critical value at the Bonferroni share of the family level,
    widened by how much more the statistic moves between reference chunks than
    between independent samples (:meth:`ChunkValues.inflation`). With
    ``sd_multiplier`` set it is NannyML's ``mean + k·sd`` of the chunk values.
    """
    t = spec.threshold
    method = t.method
    chunks = None
    note = ""
    if method in ("reference_chunks", "both"):
        rows = reference_frame(reference)
        chunks = drift_chunks(reference, rows, list(names), window_rows, spec)
        history = rolling_history(reference)
        if chunks is None:
            note = (
                f"the rolling reference's history holds {max(len(history) - 1, 0)} successive windows, "
                f"fewer than {t.min_chunks}"
                if history is not None
                else "the reference has no rows"
                if rows is None
                else f"the reference ({len(rows)} rows) holds fewer than {t.min_chunks} chunks of "
                f"{chunk_size_key(window_rows)}"
            )
    per_test = spec.p_val / max(len(names), 1)
    out = []
    for i, (name, kind) in enumerate(zip(names, kinds)):
        floor = t.numeric_floor if kind == "numeric" else t.categorical_floor
        ref_std = float(np.std(reference.numeric[name].values)) if kind == "numeric" else 0.0
        if chunks is not None and chunks.sd_floor is not None and kind == "numeric":
            ref_std = max(ref_std, chunks.sd_floor.get(name, 0.0))  # a rolling reference's flat predecessor
        eff = effect_size(kind, wasserstein[i], float(js[i]), ref_std)
        if method == "p_value":
            out.append(
                FeatureVerdict(
                    "p_value", "p_value", float(p_value[i]), float(p_threshold), None, eff, floor, bool(p_reject[i])
                )
            )
            continue
        if method == "effect_size":
            out.append(FeatureVerdict("effect_size", "effect", eff, None, floor, eff, floor, bool(eff > floor)))
            continue
        upper = eff_upper = None
        if chunks is not None:
            effects = chunks.effects(name, kind, ref_std)
            if t.sd_multiplier is not None:
                eff_upper = log_band(effects, float(t.sd_multiplier))
                upper = chunks.band(name, "statistic", float(t.sd_multiplier)).upper
            elif chunks.effect is not None:  # a rolling reference: a prediction band from its few past moves
                eff_upper = log_prediction_band(effects, per_test)
            else:  # chunks of one reference block: the normal quantile (a t band from 6 chunks at a
                # Bonferroni level missed a one-sd shift: tests/integration/test_references.py)
                eff_upper = log_band(effects, multiplier_for_level(per_test))
            if t.sd_multiplier is None:
                c = chunks.inflation(name)
                if math.isfinite(c):
                    upper = c * _critical(
                        tests[i], per_test, int(n_ref[i]), int(n_cur[i]), int(dof[i]) if tests[i] == "chi2" else 0
                    )
        if upper is None or not math.isfinite(upper):  # significant and large: noise cannot pass
            out.append(
                FeatureVerdict(
                    "p_and_effect",
                    "p_value",
                    float(p_value[i]),
                    float(p_threshold),
                    None,
                    eff,
                    floor,
                    bool(p_reject[i] and eff > floor),
                    note or f"no chunk values for {name!r}",
                )
            )
            continue
        top = statistic_max(tests[i], int(n_ref[i]), int(n_cur[i]))
        saturated = eff_upper is not None and math.isfinite(top) and upper >= top
        above = float(statistic[i]) > upper
        over_band = eff_upper is None or eff > eff_upper
        if method == "both":
            drift = (saturated or above) and over_band and eff > floor
        else:
            drift = over_band if saturated else above
        note = (
            (
                f"the statistic's band ({upper:.4g}) reaches its maximum ({top:.4g}) at these sizes: "
                f"judged on the effect against the reference chunks' effects"
            )
            if saturated
            else ""
        )
        out.append(
            FeatureVerdict(
                method,
                "effect" if saturated else "statistic",
                eff if saturated else float(statistic[i]),
                None,
                eff_upper if saturated else float(upper),
                eff,
                floor,
                bool(drift),
                note,
                eff_upper if method == "both" or saturated else None,
            )
        )
    return out


# -- the one call a benchmark makes -----------------------------------------------------------


def describe(spec: DriftSpec, n_features: int, window: str = "a window", rolling_history: int | None = None) -> str:
    """The verdict rule of ``spec`` in words (``driftwatch check-config`` prints it).

    ``rolling_history``: the model's reference is ``rolling`` with this many past windows calibrating
    the band (their successive changes take the place of the reference's chunks).
    """
    t = spec.threshold
    level = f"family level {spec.p_val:.3g} ({spec.correction} over {n_features} feature(s))"
    test = {"ks": "Kolmogorov-Smirnov", "cvm": "Cramer-von Mises"}[spec.numeric_test]
    floor = (
        f"Wasserstein distance / reference std > {t.numeric_floor:g} (numeric), Jensen-Shannon "
        f"distance > {t.categorical_floor:g} (categorical)"
    )
    if t.sd_multiplier is not None:
        band = (
            f"above mean + {t.sd_multiplier:g} sd of the same statistic on the reference's chunks of "
            f"{window}'s size, in time order (NannyML's rule)"
        )
    else:
        band = (
            f"above its critical value at the {level}, widened by how much more it moves between the "
            f"reference's chunks of {window}'s size (in time order) than between independent samples"
        )
    fallback = (
        f" With fewer than {t.min_chunks} such chunks in the reference (or no reference rows) a feature "
        f"drifts when its p-value is below the corrected level and {floor}."
    )
    if rolling_history:
        fallback = fallback.replace("such chunks in the reference", "past windows (the first windows, after a restart)")
    eff_band = (
        "the effect size is above the log-normal prediction band of the same effect on those chunks (each against "
        "the rest of the reference)"
    )
    if rolling_history:  # rolling: the chunks are the past windows, each against the one before it
        chunks = f"the reference's chunks of {window}'s size (in time order)"
        succ = (
            f"the last {rolling_history} windows, each against the window before it (the series' own "
            f"window-to-window movement, trend included)"
        )
        band = band.replace(chunks, succ).replace(f"the reference's chunks of {window}'s size, in time order", succ)
        eff_band = eff_band.replace(
            "those chunks (each against the rest of the reference)",
            "those windows (each against its predecessor, over the predecessor's sd or, if less, the 10 % "
            "quantile of the windows' sds)",
        )
    saturated = (
        f" Where that band reaches the largest value the statistic can take at these sizes (short "
        f"windows of a series that moves by itself), the statistic cannot tell, and {eff_band} decides."
    )
    return {
        "p_value": f"a feature drifts when its {test} / chi-square p-value is below the {level}.",
        "effect_size": f"a feature drifts when {floor} (Evidently's large-sample rule; no p-value).",
        "reference_chunks": f"a feature drifts when its {test} / chi-square statistic is {band}."
        + saturated
        + fallback,
        "both": f"a feature drifts when its {test} / chi-square statistic is {band}, {eff_band}, and {floor}."
        + saturated
        + fallback,
    }[t.method]


# -- rates (data quality): chunk band, or a binomial bound when the reference has none -------


@functools.lru_cache(maxsize=8192)
def binomial_rate_upper(ref_count: int, ref_n: int, window_n: int, level: float) -> float:
    """Largest window rate of an event kind that is no alarm at ``level``, from the reference's count.

    Memoised: a window judges ~60 rates, each two scipy distribution calls (~0.4 ms of
    argument checking apiece), and with a fixed reference and window size the arguments
    repeat from window to window — this was a third of the detectors' time per 5,000-event
    window. The bound is a pure function of its four arguments.

    A band on a rate is degenerate when the reference has none of it (sd 0: any
    single missing value would be "outside"). Instead: ``p_u``, the one-sided
    Clopper–Pearson upper bound of the reference rate at ``level``
    (``beta.ppf(1 - level, x + 1, N - x)``; ``1 - level^(1/N)`` for x = 0), then
    the window's count ``c`` with ``P(X > c) ≤ level`` for ``X ~ Binomial(n, p_u)``;
    the bound is ``c / n``. A window alarms when its rate is above it.

    >>> round(binomial_rate_upper(0, 5000, 1000, 0.001), 4)
    0.006
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if window_n <= 0:
        return float("nan")
    if ref_n <= 0 or ref_count >= ref_n:
        return 1.0
    p_u = float(stats.beta.ppf(1.0 - level, ref_count + 1, ref_n - ref_count))
    return float(stats.binom.isf(level, window_n, p_u)) / window_n


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """How one rate of one window was judged: ``method`` (``reference_chunks`` | ``binomial``), the band's
    upper end, and whether the rate is above it."""

    method: str
    value: float
    upper: float
    alarm: bool


def judge_rate(
    value: float,
    chunk_rates: np.ndarray | None,
    ref_count: int,
    ref_n: int,
    window_n: int,
    level: float,
    multiplier: float,
) -> RateVerdict:
    """A window rate against the wider of ``mean + k·sd`` of the reference chunks' rates (time order)
    and :func:`binomial_rate_upper` at ``level``.

    The binomial bound alone covers the case where the chunks do not vary (sd 0: the reference has
    none of it) or are too few. It is also the floor of the chunk band: with a few events per chunk
    (a rate of 0.3 % in chunks of 1,000) the normal band of 10 chunks is far narrower than the
    counts' own sampling noise — measured, 81 of 200 stationary windows of 20 features alarmed at a
    family level of 0.05 with the chunk band alone, 0 with the floor. The chunk band wins where the
    reference's rate moves more than sampling (bursts of missing values, autocorrelation).
    """
    floor = binomial_rate_upper(ref_count, ref_n, window_n, level)
    if chunk_rates is not None:
        v = np.asarray(chunk_rates, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size and float(v.std()) > 0:
            upper = sd_band(v, multiplier, two_sided=False).upper
            upper = 1.0 if upper is None else min(float(upper), 1.0)
            if upper > floor:
                return RateVerdict("reference_chunks", float(value), upper, bool(value > upper))
    return RateVerdict("binomial", float(value), floor, bool(value > floor))
