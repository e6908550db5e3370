# size: the online detectors share one expected-run-time calibration and its cache
"""Online (event-by-event) drift detection with expected-run-time calibration.

Windowed tests answer once per window. Online detectors answer after every
event: they slide one or more small test windows over the stream and compare
each with the reference, against thresholds calibrated so that, on a stream
with no change, the expected time until a false alarm is the configured
*expected run time* (ERT, in events). They are meant for fast reaction on a key
feature or on the error stream of a model (concept drift).

Two statistics, after Ross et al. and as in alibi-detect's ``CVMDriftOnline``
and ``FETDriftOnline``:

* :class:`CVMOnline` — two-sample Cramér-von Mises between the reference and
  each sliding window, standardised by its null mean and variance (Anderson
  1962); continuous data; distribution-free, so thresholds depend only on the
  reference size, window sizes, ERT and number of features.
* :class:`FETOnline` — one-sided Fisher exact test on a 0/1 stream (e.g. "the
  model was wrong"), statistic ``1 - p`` smoothed by an exponential moving
  average; thresholds depend on the reference size and its number of ones.

Calibration simulates ``n_bootstraps`` streams under "no change" and, at each
time step, takes the ``1 - beta`` quantile of the maximum statistic over window
sizes among the streams that have not yet crossed (Ross et al., eq. 2), with
``beta = 1 - (1 - 1/ERT) ** (1/d)`` for ``d`` features. That is expensive, so
thresholds are cached on disk: pass ``cache_dir`` and the thresholds are read
from, or written to, one ``.npz`` file there whose name is a hash of everything
they depend on (see :func:`calibration_key`). Nothing else is read or written.

Engines: ``engine="native"`` (default) is numpy/scipy, vectorised over a batch
of events (no per-event Python loop) and keeps bounded state (the last
``max(window_sizes) - 1`` events). ``engine="alibi"`` runs alibi-detect's
detectors (Business Source License 1.1: production use needs a licence from
Seldon) with the same interface, the same cache and bounded state.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> det = CVMOnline(rng.normal(size=500), ert=200, window_sizes=(20,), n_bootstraps=400, seed=1)
>>> res = det.update(rng.normal(size=100) + 3.0)   # a big shift: found within a few events
>>> res.first_drift is not None and res.first_drift < 20
True
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detectors.errors import InvalidInputError

__all__ = [
    "CVMOnline",
    "CalibrationError",
    "FETOnline",
    "OnlineResult",
    "calibration_key",
    "cvm_window_stats",
    "fet_window_stats",
    "make_online",
    "normalise_cvm",
]

_CACHE_VERSION = 1  # bump when the calibration algorithm changes


class CalibrationError(InvalidInputError):
    """The reference or parameters do not allow threshold calibration."""


def _lfilter(*args, **kwargs):
    """``scipy.signal.lfilter``, imported on first use: scipy.signal and scipy.stats take
    seconds to import, and the worker imports this module (through the label join) while it
    starts, before it joins its consumer group."""
    from scipy.signal import lfilter

    return lfilter(*args, **kwargs)


def _hypergeom_cdf(*args):
    """``scipy.stats.hypergeom.cdf``, imported on first use (see :func:`_lfilter`)."""
    from scipy.stats import hypergeom

    return hypergeom.cdf(*args)


@dataclass(slots=True)
class OnlineResult:
    """What one :meth:`update` call saw.

    ``stats`` and ``thresholds`` have one entry per event of the batch: the
    largest statistic over window sizes and features, and the threshold in
    force at that event (NaN until the smallest window is full). ``drift``
    marks events where the detector fired; ``first_drift`` is the index in the
    batch of the first one (None if none). ``t`` is the number of events seen
    since the last reset, at the end of the batch. ``resets`` counts the resets
    done inside the batch (one per detection when ``reset_on_drift``).
    """

    stats: np.ndarray
    thresholds: np.ndarray
    drift: np.ndarray
    first_drift: int | None
    t: int
    resets: int = 0
    run_lengths: list[int] = field(default_factory=list)  # t at each detection

    @property
    def n_drift(self) -> int:
        return int(self.drift.sum())


# --------------------------------------------------------------------------------------------
# Helpers shared by both statistics
# --------------------------------------------------------------------------------------------


def _alibi_quantile(sample: np.ndarray, p: float, kind: int, interpolate: bool) -> float:
    """alibi-detect's ``utils.misc.quantile`` (types 6/7), reimplemented for the native engine."""
    n = sample.shape[0]
    if n == 0:
        raise CalibrationError("no simulated stream left to estimate a threshold: raise n_bootstraps")
    if not 1 / n <= p <= (n - 1) / n:
        raise CalibrationError(
            f"the {p}-quantile cannot be estimated from {n} simulated streams: raise n_bootstraps "
            "(it should be an order of magnitude larger than the ERT)"
        )
    h = (n + 1) * p if kind == 6 else (n - 1) * p + 1
    hf = int(h)
    need_next = hf != h and interpolate and hf < n
    kth = [hf - 1, hf] if need_next else [hf - 1]
    s = np.partition(sample, kth)  # O(n): only the order statistics needed
    q = s[hf - 1]
    if need_next:
        q = q + (h - hf) * (s[hf] - s[hf - 1])
    return float(q)


def calibration_key(kind: str, **params: object) -> str:
    """A stable hash of everything a set of thresholds depends on (the cache file's name).

    >>> calibration_key("cvm", n=10, ert=100.0) == calibration_key("cvm", ert=100.0, n=10)
    True
    """

    def norm(v: object) -> object:
        if isinstance(v, np.ndarray):
            return hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
        if isinstance(v, (np.integer, np.floating)):
            return v.item()
        if isinstance(v, (tuple, list)):
            return [norm(x) for x in v]
        return v

    payload = json.dumps({"kind": kind, "v": _CACHE_VERSION, **{k: norm(v) for k, v in params.items()}}, sort_keys=True)
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:24]}"


def _cache_load(cache_dir: Path | None, key: str) -> dict[str, np.ndarray] | None:
    if cache_dir is None:
        return None
    path = Path(cache_dir) / f"{key}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None  # a torn or foreign file: recalibrate and overwrite it


def _cache_save(cache_dir: Path | None, key: str, arrays: dict[str, np.ndarray]) -> None:
    if cache_dir is None:
        return
    d = Path(cache_dir)
    d.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{key}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, d / f"{key}.npz")  # atomic: readers never see a half-written file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _as_2d(x: np.ndarray | Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{what} must be 1-D (one feature) or 2-D (events x features), got shape {a.shape}")
    return a


def _check_windows(window_sizes: Sequence[int], n_ref: int) -> tuple[int, ...]:
    ws = tuple(int(w) for w in window_sizes)
    if not ws or min(ws) < 1:
        raise ValueError(f"window_sizes must be positive integers, got {window_sizes!r}")
    if len(set(ws)) != len(ws):
        raise ValueError(f"window_sizes must be distinct, got {window_sizes!r}")
    if n_ref < 2:
        raise CalibrationError(f"the reference needs at least 2 values, got {n_ref}")
    return ws


def _first_true(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


# --------------------------------------------------------------------------------------------
# Cramér-von Mises
# --------------------------------------------------------------------------------------------


def normalise_cvm(sum_sq: np.ndarray, n: int, w: int) -> np.ndarray:
    """Standardise the CvM sum of squared CDF differences (Anderson 1962, eqs. 3 and 14).

    ``sum_sq`` is the sum over the pooled sample of ``(F_ref - F_win)**2``; the
    result is ``(T - E[T]) / sd(T)`` with ``T = n w / (n + w)**2 * sum_sq``,
    the statistic scipy's ``cramervonmises_2samp`` reports.
    """
    mu = 1 / 6 + 1 / (6 * (n + w))
    var_num = (n + w + 1) * (4 * n * w * (n + w) - 3 * (n * n + w * w) - 2 * n * w)
    var_den = 45 * (n + w) * (n + w) * 4 * n * w
    prod = n * w / ((n + w) * (n + w))
    return (np.asarray(sum_sq) * prod - mu) / np.sqrt(var_num / var_den)


class _RefCDF:
    """Precomputed pieces of one reference column for the sliding CvM statistic."""

    def __init__(self, ref: np.ndarray) -> None:
        r = np.sort(ref)
        n = r.shape[0]
        self.sorted = r
        self.n = n
        fr = np.searchsorted(r, r, side="right") / n  # F_ref at each reference point (ties-aware)
        self.sum_fr2 = float(np.sum(fr * fr))
        # suffix[j] = sum of F_ref(r_i) over sorted positions i >= j
        self.suffix = np.concatenate([np.cumsum(fr[::-1])[::-1], [0.0]])

    def pieces(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """F_ref(v), h(v) = #{ref >= v}, g(v) = sum of F_ref over reference points >= v."""
        left = np.searchsorted(self.sorted, v, side="left")
        right = np.searchsorted(self.sorted, v, side="right")
        return right / self.n, (self.n - left).astype(np.float64), self.suffix[left]


def _cvm_rows(ref: _RefCDF, windows: np.ndarray | None, sorted_pieces=None) -> np.ndarray:
    """Standardised CvM statistic of each row of ``windows`` (rows = test windows) vs ``ref``.

    ``sorted_pieces``: ``(v, fr, h, g)`` — the rows already sorted and their
    :meth:`_RefCDF.pieces` — instead of ``windows``. Ties anywhere are handled
    exactly. Cost O(rows * w log w), no per-row loop.
    """
    if sorted_pieces is None:
        if windows is None:
            raise ValueError("_cvm_rows needs windows or sorted_pieces")
        v = np.sort(windows, axis=1)
        fr, h, g = ref.pieces(v)
    else:
        v, fr, h, g = sorted_pieces
    p, w = v.shape
    n = ref.n
    # term over reference points: sum_i (F_ref(r_i) - c_i/w)^2, c_i = #{window <= r_i}
    #   = sum F_ref^2 - 2/w sum_k g(v_k) + 1/w^2 sum_{k,l} min(h_k, h_l)
    hs = h[:, ::-1]  # ascending: h = #{ref >= v} is non-increasing in the sorted v
    coef = 2.0 * (w - np.arange(1, w + 1)) + 1.0
    pair_min = hs @ coef
    term_ref = ref.sum_fr2 - 2.0 / w * g.sum(axis=1) + pair_min / (w * w)
    # term over window points: sum_k (F_ref(v_k) - d_k/w)^2, d_k = #{window <= v_k}
    idx = np.arange(1, w + 1, dtype=np.float64)
    ends = np.where(np.concatenate([v[:, 1:] != v[:, :-1], np.ones((p, 1), bool)], axis=1), idx, np.inf)
    d = np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]
    diff = fr - d / w
    term_win = np.sum(diff * diff, axis=1)
    return normalise_cvm(term_ref + term_win, n, w)


def cvm_window_stats(x_ref: np.ndarray | _RefCDF, stream: np.ndarray, window_size: int) -> np.ndarray:
    """Standardised CvM statistic of every full sliding window of ``stream`` vs ``x_ref`` (1-D).

    Entry ``j`` is the statistic of ``stream[j : j + window_size]``.

    >>> import numpy as np
    >>> s = cvm_window_stats(np.arange(10.0), np.arange(10.0), 10)
    >>> float(np.round(s[0], 6)) == float(np.round(normalise_cvm(0.0, 10, 10), 6))
    True
    """
    ref = x_ref if isinstance(x_ref, _RefCDF) else _RefCDF(np.asarray(x_ref, dtype=np.float64).ravel())
    s = np.asarray(stream, dtype=np.float64).ravel()
    if s.shape[0] < window_size:
        return np.empty(0)
    # the reference pieces of each stream value once (not once per window holding it), then the
    # windows' sort order picks them: ~2x faster than sorting and searching every window
    view = np.lib.stride_tricks.sliding_window_view
    cols = [view(a, window_size) for a in (s, *ref.pieces(s))]
    out = np.empty(cols[0].shape[0])
    step = max(1, 2_000_000 // max(window_size, 1))
    for i in range(0, out.shape[0], step):  # chunks bound memory, not a per-event loop
        order = np.argsort(cols[0][i : i + step], axis=1)
        out[i : i + step] = _cvm_rows(ref, None, [np.take_along_axis(c[i : i + step], order, axis=1) for c in cols])
    return out


def _block_sums(sat: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sums of the square blocks [lo, hi) x [lo, hi) from padded summed-area tables (b, T+1, T+1)."""
    out = sat[:, hi, hi] - sat[:, lo, hi] - sat[:, hi, lo] + sat[:, lo, lo]
    return out.astype(np.float64)


def _simulate_cvm(
    n: int, window_sizes: tuple[int, ...], t_max: int, n_bootstraps: int, rng: np.random.Generator
) -> np.ndarray:
    """Null trajectories of the standardised CvM statistic, shape (n_bootstraps, t_max, n_windows).

    Rank-based closed form (no ties in simulated continuous data): with ``a_k``
    the number of reference points below stream point ``k``, the statistic of a
    window is linear in sums of ``a_k`` terms plus two pairwise sums
    (``min(n - a_k, n - a_l)`` and ``a_k [s_l <= s_k]``) over the window,
    which summed-area tables give for every window position at once.
    """
    n_w = len(window_sizes)
    stats = np.full((n_bootstraps, t_max, n_w), np.nan)
    # memory per batch ~ 3 * b * t_max^2 * 8 bytes: about 100 MB at most
    b_size = int(max(1, min(n_bootstraps, 4_000_000 // max(t_max * t_max, 1))))
    a_all_sum = (n + 1) * (2 * n + 1) / (6 * n)  # sum_i (i/n)^2
    for start in range(0, n_bootstraps, b_size):
        b = min(b_size, n_bootstraps - start)
        ref = np.sort(rng.random((b, n)), axis=1)
        s = rng.random((b, t_max))
        a = np.empty((b, t_max))
        for i in range(b):  # per simulated stream, vectorised over its events
            a[i] = np.searchsorted(ref[i], s[i])
        h = n - a
        g = (n * (n + 1) - a * (a + 1)) / (2 * n)
        # pairwise matrices and their summed-area tables, padded with a zero row/col; integer
        # counts, so int32 is exact while t_max^2 * n stays below 2^31 (halves memory traffic)
        itype = np.int32 if t_max * t_max * n < 2**31 - 1 else np.int64
        ai, hi_ = a.astype(itype), h.astype(itype)
        del ref
        sat1 = np.zeros((b, t_max + 1, t_max + 1), dtype=itype)
        m = np.minimum(hi_[:, :, None], hi_[:, None, :])
        np.cumsum(m, axis=2, out=m)
        np.cumsum(m, axis=1, out=sat1[:, 1:, 1:])
        sat2 = np.zeros((b, t_max + 1, t_max + 1), dtype=itype)
        np.multiply(ai[:, :, None], s[:, None, :] <= s[:, :, None], out=m)
        np.cumsum(m, axis=2, out=m)
        np.cumsum(m, axis=1, out=sat2[:, 1:, 1:])
        del m
        cg = np.concatenate([np.zeros((b, 1)), np.cumsum(g, axis=1)], axis=1)
        ca2 = np.concatenate([np.zeros((b, 1)), np.cumsum(a * a, axis=1)], axis=1)
        for k, w in enumerate(window_sizes):
            if w > t_max:
                continue
            hi = np.arange(w, t_max + 1)  # window = stream[hi - w : hi]
            lo = hi - w

            s1 = _block_sums(sat1, lo, hi)
            s2 = _block_sums(sat2, lo, hi)
            sg = cg[:, hi] - cg[:, lo]
            sa2 = ca2[:, hi] - ca2[:, lo]
            term_ref = a_all_sum - 2.0 / w * sg + s1 / (w * w)
            sum_d2 = w * (w + 1) * (2 * w + 1) / 6
            term_win = sa2 / (n * n) - 2.0 / (n * w) * s2 + sum_d2 / (w * w)
            stats[start : start + b, w - 1 :, k] = normalise_cvm(term_ref + term_win, n, w)
    return stats


def _thresholds_from_max_stats(
    max_stats: np.ndarray, beta: float, t_start: int, kind: int, interpolate: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Ross et al. eq. 2: per-time quantiles among streams not yet stopped; (thresholds, permit_probs)."""
    t_max = max_stats.shape[1]
    thresholds = np.full(t_max, np.nan)
    permit = np.full(t_max, np.nan)
    by_t = np.ascontiguousarray(max_stats.T)  # (t_max, streams): one contiguous row per step
    alive = np.ones(by_t.shape[1], dtype=bool)
    for t in range(t_start, t_max):  # sequential by definition; vectorised over streams
        idx = np.flatnonzero(alive)
        col = by_t[t, idx]
        thr = _alibi_quantile(col, 1 - beta, kind, interpolate)
        below = col < thr
        if kind == 7:  # continuous statistic: strictly above the threshold stops
            alive[idx[col > thr]] = False
            permit[t] = np.inf
        else:  # discrete statistic: streams at the threshold stop with a probability
            p_equal = float((col <= thr).mean() - below.mean())
            if p_equal == 0.0:
                permit[t] = np.inf
                alive[idx[~below]] = False
            else:
                undershoot = 1 - beta - float(below.mean())
                permit[t] = undershoot / p_equal
                equal = idx[col == thr]
                keep = rng.binomial(equal.shape[0], min(max(permit[t], 0.0), 1.0))
                alive[idx[col > thr]] = False
                alive[equal[keep:]] = False
        thresholds[t] = thr
    return thresholds, permit


def _first_passage_threshold(maxima: np.ndarray, top: np.ndarray, beta: float) -> tuple[float, float, float, float]:
    """Constant (randomised) threshold whose first-passage hazard per step is ``beta``.

    ``maxima``: each simulated stream's largest statistic over the regime's
    ``L`` steps; ``top``: the trajectories (K, L) of the K streams with the
    largest maxima, in decreasing order of maximum. A threshold ``v`` is
    crossed (``stat > v``) by the streams whose maximum exceeds it; the hazard
    is crossings / stream-steps survived, a crossing stream surviving until its
    first crossing. The statistic is discrete (Fisher's test on counts), so
    the hazard jumps between adjacent candidate thresholds ``hi > lo``; values
    in ``(lo, hi]`` then fire with a probability ``q`` chosen so the expected
    hazard is ``beta`` (alibi-detect randomises ties per step the same way).
    Returns ``(hi, lo, q, hazard)``.
    """
    n_streams = maxima.shape[0]
    steps = top.shape[1]
    desc = np.sort(maxima)[::-1]
    # distinct candidate thresholds, high to low. The smoothed statistic settles on the test's
    # discrete levels up to float noise, so levels are grouped at 1e-9 and each candidate sits
    # just above its level (values "at" a level do not cross it).
    # Candidates are the levels the kept trajectories visit (when ERT is short next to the
    # regime, every stream crosses and the threshold lies below all maxima).
    levels = np.round(np.concatenate([desc[: top.shape[0] + 1], top.ravel()]), 9)
    cand = np.unique(levels[np.isfinite(levels)])[::-1] + 1e-9

    def hazard(hi: float, lo: float, q: float) -> float:
        c = int(np.sum(desc > min(hi, lo)))
        if c == 0:
            return 0.0
        if c > top.shape[0]:
            return np.inf  # beyond the kept trajectories: certainly too many crossings
        tr = top[:c]
        hard = tr > hi
        band = (tr > lo) & ~hard
        t_hard = np.where(hard.any(axis=1), np.argmax(hard, axis=1), steps)  # first sure crossing
        live = np.arange(steps)[None, :] <= t_hard[:, None]  # steps a stream can still be alive at
        qq = min(q, 1 - 1e-12)
        log_keep = np.where(band & live, np.log1p(-qq), 0.0)
        surv_before = np.exp(np.cumsum(log_keep, axis=1) - log_keep)  # P(alive when step t starts)
        alive_steps = float(np.sum(np.where(live[:, :steps], surv_before, 0.0)))
        end_surv = np.where(t_hard < steps, 0.0, np.exp(log_keep.sum(axis=1)))
        crossings = float(np.sum(1.0 - end_surv))
        return crossings / ((n_streams - c) * steps + alive_steps)

    lo_i, hi_i = 0, cand.shape[0] - 1  # hazard at cand[lo_i] <= beta; find the largest such index
    if hazard(float(cand[hi_i]), float(cand[hi_i]), 0.0) <= beta:
        lo_i = hi_i
    else:
        while hi_i - lo_i > 1:  # hazard grows as the threshold falls: bisection
            mid = (lo_i + hi_i) // 2
            if hazard(float(cand[mid]), float(cand[mid]), 0.0) <= beta:
                lo_i = mid
            else:
                hi_i = mid
    hi = float(cand[lo_i])
    if lo_i + 1 >= cand.shape[0]:
        return hi, hi, 0.0, hazard(hi, hi, 0.0)
    lo = float(cand[lo_i + 1])
    if not np.isfinite(hazard(hi, lo, 1.0)):
        return hi, hi, 0.0, hazard(hi, hi, 0.0)
    a, b = 0.0, 1.0  # hazard(hi, lo, q) grows with q
    for _ in range(16):
        m = (a + b) / 2
        if hazard(hi, lo, m) <= beta:
            a = m
        else:
            b = m
    return hi, lo, a, hazard(hi, lo, a)


def _steady_tail(thr: np.ndarray, max_ws: int) -> np.ndarray:
    """Replace the last threshold (used for every later event) by the median of the last steps.

    Thresholds settle once the largest window has been full for a while, but
    each step's quantile is estimated from the surviving simulated streams
    alone, so the last one is noisy, and it alone sets the long-run false-alarm
    rate. The median over the last ``max_ws // 2`` steps has a far smaller
    Monte-Carlo error. (alibi-detect keeps the last raw estimate.)
    """
    out = thr.copy()
    span = max(1, max_ws // 2)
    tail = out[-span:]
    tail = tail[np.isfinite(tail)]
    if tail.size:
        out[-1] = float(np.median(tail, axis=0)) if out.ndim == 1 else np.median(tail, axis=0)
    return out


Engine = Literal["native", "alibi"]


class _OnlineBase:
    """State shared by both online detectors: reference, thresholds, bounded history."""

    kind: str = ""

    def __init__(
        self,
        x_ref: np.ndarray,
        ert: float,
        window_sizes: Sequence[int],
        n_bootstraps: int,
        seed: int | None,
        cache_dir: Path | str | None,
        reset_on_drift: bool,
        engine: Engine,
    ) -> None:
        if ert is None or not np.isfinite(ert) or ert <= 1:
            raise ValueError(f"ert must be a number of events > 1, got {ert!r}")
        if engine not in ("native", "alibi"):
            raise ValueError(f"engine must be 'native' or 'alibi', got {engine!r}")
        self.x_ref = _as_2d(x_ref, "x_ref")
        if np.isnan(self.x_ref).any():
            raise CalibrationError("the reference holds NaN: drop or impute missing values first")
        self.n, self.n_features = self.x_ref.shape
        self.window_sizes = _check_windows(window_sizes, self.n)
        self.max_ws = max(self.window_sizes)
        self.min_ws = min(self.window_sizes)
        self.ert = float(ert)
        self.fpr = 1.0 / self.ert
        self.beta = 1 - (1 - self.fpr) ** (1 / self.n_features)
        self.n_bootstraps = int(n_bootstraps)
        if self.n_bootstraps * self.beta < 1 and not (self.kind == "fet" and engine == "native"):
            raise CalibrationError(
                f"n_bootstraps={n_bootstraps} is too small for ert={ert} and {self.n_features} "
                f"feature(s): need at least {int(np.ceil(1 / self.beta))}, ideally 10x that"
            )
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.reset_on_drift = reset_on_drift
        self.engine = engine
        self.from_cache = False
        self.thresholds = np.empty(0)
        self._alibi: Any = None  # alibi-detect's detector (engine: alibi); untyped package

    # -- state -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new run (after a detection or a new reference); thresholds are kept."""
        self.t = 0
        self._tail = np.empty((0, self.n_features))
        if self._alibi is not None:
            self._alibi.reset_state()

    def threshold_at(self, t: np.ndarray) -> np.ndarray:
        """Threshold in force when the stream holds ``t`` events (1-based); NaN before the first."""
        idx = np.minimum(np.asarray(t) - 1, self.thresholds.shape[0] - 1)
        return self.thresholds[idx]

    def run_state(self) -> dict[str, np.ndarray]:
        """The current run (events since the last reset, the last ``max_ws - 1`` events, and
        for FET the smoothed statistics) as plain arrays, so a restarted process can
        :meth:`resume` it. Thresholds are not included: they come from the cache.

        The alibi engine keeps its run inside alibi-detect's object: its state is
        ``{"t": ...}`` only and :meth:`resume` starts a new run there.

        >>> import numpy as np
        >>> a = CVMOnline(np.arange(50.0), ert=50, window_sizes=(5,), n_bootstraps=200)
        >>> _ = a.update([10.0, 40.0, 25.0, 5.0, 33.0, 18.0, 47.0])
        >>> b = CVMOnline(np.arange(50.0), ert=50, window_sizes=(5,), n_bootstraps=200)
        >>> b.resume(a.run_state()); b.t, b.update([30.0]).stats.tolist() == a.update([30.0]).stats.tolist()
        (7, True)
        """
        out: dict[str, np.ndarray] = {"t": np.array([self.t], dtype=np.int64)}
        if self.engine == "native":
            out["tail"] = self._tail.copy()
        return out

    def resume(self, state: dict[str, np.ndarray]) -> None:
        """Continue the run saved by :meth:`run_state` (a state of another shape starts afresh)."""
        self.reset()
        if self.engine != "native" or "tail" not in state:
            return
        tail = np.asarray(state["tail"], dtype=np.float64).reshape(-1, self.n_features)
        if tail.shape[0] > self.max_ws - 1 or tail.shape[0] > int(state["t"][0]):
            return
        self.t = int(state["t"][0])
        self._tail = tail.copy()

    # -- subclass hooks --------------------------------------------------------------------
    def _native_stats(self, values: np.ndarray) -> np.ndarray:  # (T, n_windows, d)
        raise NotImplementedError

    def _crossed(self, stats_max: np.ndarray, thr: np.ndarray, t_idx: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return (stats_max > thr[:, None]).any(axis=1)

    def _check_values(self, values: np.ndarray) -> None:
        if np.isnan(values).any():
            raise ValueError("online detectors need complete values: drop or impute NaN first")

    # -- update ----------------------------------------------------------------------------
    def update(self, x: np.ndarray | Sequence[float]) -> OnlineResult:
        """Feed a batch of events in stream order; returns per-event statistics and verdicts.

        With ``reset_on_drift`` (default) the run restarts after each detection,
        as an operator would after acknowledging an alert.
        """
        values = _as_2d(x, "x")
        if values.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} feature(s), got {values.shape[1]}")
        self._check_values(values)
        if self.engine == "alibi":
            return self._update_alibi(values)
        stats_out, thr_out, drift_out = [], [], []
        resets, run_lengths = 0, []
        pos = 0
        total = values.shape[0]
        while pos < total:
            chunk = values[pos:]
            stats = self._native_stats(chunk)  # (T, n_windows, d)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                max_w = np.nanmax(stats, axis=1)  # (T, d), NaN where no window is full
            t_idx = self.t + np.arange(1, chunk.shape[0] + 1)
            thr = self.threshold_at(t_idx)
            crossed = self._crossed(max_w, thr, t_idx)
            first = _first_true(crossed) if self.reset_on_drift else None
            end = chunk.shape[0] if first is None else first + 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                stats_out.append(np.nanmax(max_w[:end], axis=1))
            thr_out.append(thr[:end])
            drift_out.append(crossed[:end])
            self._advance(chunk[:end], stats[:end])
            pos += end
            if first is not None:
                run_lengths.append(self.t)
                resets += 1
                self.reset()
        drift = np.concatenate(drift_out) if drift_out else np.zeros(0, bool)
        return OnlineResult(
            stats=np.concatenate(stats_out) if stats_out else np.empty(0),
            thresholds=np.concatenate(thr_out) if thr_out else np.empty(0),
            drift=drift,
            first_drift=_first_true(drift),
            t=self.t,
            resets=resets,
            run_lengths=run_lengths,
        )

    def _advance(self, consumed: np.ndarray, stats: np.ndarray) -> None:
        self.t += consumed.shape[0]
        keep = self.max_ws - 1
        self._tail = np.concatenate([self._tail, consumed])[-keep:] if keep else self._tail[:0]

    def _update_alibi(self, values: np.ndarray) -> OnlineResult:
        det = self._alibi
        stats, thr, drift = [], [], []
        resets, run_lengths = 0, []
        for row in values:  # alibi-detect's API is one event per call
            out = det.predict(row, return_test_stat=True)["data"]
            ts = np.asarray(out["test_stat"], dtype=np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                stats.append(float(np.nanmax(ts)) if np.isfinite(ts).any() else np.nan)
            th = np.asarray(out["threshold"], dtype=np.float64)
            thr.append(float(np.nanmax(th)) if np.isfinite(th).any() else np.nan)
            drift.append(bool(out["is_drift"]))
            self.t = int(det.t)
            # bound alibi's ever-growing history: it only ever reads the last max_ws entries
            det.xs = det.xs[-self.max_ws :]
            det.test_stats = det.test_stats[-1:]
            det.drift_preds = det.drift_preds[-1:]
            if drift[-1] and self.reset_on_drift:
                run_lengths.append(self.t)
                resets += 1
                self.reset()
        d = np.asarray(drift, dtype=bool)
        return OnlineResult(
            stats=np.asarray(stats),
            thresholds=np.asarray(thr),
            drift=d,
            first_drift=_first_true(d),
            t=self.t,
            resets=resets,
            run_lengths=run_lengths,
        )


class CVMOnline(_OnlineBase):
    """Online Cramér-von Mises drift detector for continuous values (one or more features).

    Parameters: ``x_ref`` (n,) or (n, d) reference; ``ert`` expected events
    between false alarms (counted from when the smallest window is full);
    ``window_sizes`` sliding test windows (small reacts fast to big changes,
    large finds small ones); ``n_bootstraps`` simulated null streams (at least
    10x ``ert`` for an accurate ERT); ``cache_dir`` folder for the threshold
    cache; ``engine`` "native" or "alibi".

    Thresholds are shared by all features (distribution-free statistic), so the
    cache key is (n, window sizes, ERT, features, n_bootstraps, seed) — not the
    reference's values: a new reference of the same size reuses them.
    """

    kind = "cvm"

    def __init__(
        self,
        x_ref: np.ndarray | Sequence[float],
        ert: float,
        window_sizes: Sequence[int] = (50, 200),
        *,
        n_bootstraps: int = 5000,
        seed: int | None = 0,
        cache_dir: Path | str | None = None,
        reset_on_drift: bool = True,
        engine: Engine = "native",
    ) -> None:
        super().__init__(
            np.asarray(x_ref, dtype=np.float64),
            ert,
            window_sizes,
            n_bootstraps,
            seed,
            cache_dir,
            reset_on_drift,
            engine,
        )
        self._refs = [_RefCDF(self.x_ref[:, j]) for j in range(self.n_features)]
        self.t_max = 2 * self.max_ws - 1
        key = calibration_key(
            "cvm",
            n=self.n,
            ert=self.ert,
            window_sizes=list(self.window_sizes),
            d=self.n_features,
            n_bootstraps=self.n_bootstraps,
            seed=seed,
            engine=engine,
        )
        self.cache_key = key
        cached = _cache_load(self.cache_dir, key)
        if engine == "alibi":
            self._alibi = _alibi_cvm(self, cached)
            self.thresholds = np.asarray(self._alibi.thresholds, dtype=np.float64).ravel()
            self.from_cache = cached is not None
            if cached is None:
                _cache_save(self.cache_dir, key, {"thresholds": self.thresholds})
        elif cached is not None:
            self.thresholds = cached["thresholds"]
            self.from_cache = True
        else:
            self.thresholds = self.calibrate()
            _cache_save(self.cache_dir, key, {"thresholds": self.thresholds})
        self.reset()

    def calibrate(self) -> np.ndarray:
        """Simulate null streams and return thresholds per time step (length ``2*max_ws-1``)."""
        stats = _simulate_cvm(self.n, self.window_sizes, self.t_max, self.n_bootstraps, self.rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            max_stats = np.nanmax(stats, axis=-1)
        thr, _ = _thresholds_from_max_stats(max_stats, self.beta, self.min_ws - 1, 7, True, self.rng)
        return _steady_tail(thr, self.max_ws)

    def _native_stats(self, values: np.ndarray) -> np.ndarray:
        full = np.concatenate([self._tail, values])
        off = self._tail.shape[0]  # events of the batch start at full[off]
        t_total = self.t + np.arange(1, values.shape[0] + 1)  # events seen after each new one
        out = np.full((values.shape[0], len(self.window_sizes), self.n_features), np.nan)
        for k, w in enumerate(self.window_sizes):
            ok = t_total >= w
            if not ok.any():
                continue
            first = int(np.argmax(ok))  # first new event whose window is full
            seg = full[off + first - w + 1 :]
            for j in range(self.n_features):
                out[first:, k, j] = cvm_window_stats(self._refs[j], seg[:, j], w)
        return out


class FETOnline(_OnlineBase):
    """Online Fisher-exact-test detector for 0/1 streams (e.g. the model's error indicator).

    ``alternative="greater"`` flags a rise in the rate of ones (more errors),
    "less" a fall. The statistic ``1 - p`` is smoothed with an exponential
    moving average of weight ``lam`` on the newest value, which breaks the ties
    of the discrete test; ties with the threshold still stop a stream with the
    calibrated probability, as in alibi-detect. Thresholds depend on the
    reference's size and its count of ones, which is what the cache key holds.
    """

    kind = "fet"

    def __init__(
        self,
        x_ref: np.ndarray | Sequence[float],
        ert: float,
        window_sizes: Sequence[int] = (50, 200),
        *,
        n_bootstraps: int = 5000,
        alternative: Literal["greater", "less"] = "greater",
        lam: float = 0.99,
        t_max: int | None = None,
        tail_steps: int | None = None,
        seed: int | None = 0,
        cache_dir: Path | str | None = None,
        reset_on_drift: bool = True,
        engine: Engine = "native",
    ) -> None:
        ref = np.asarray(x_ref)
        if ref.dtype == bool:
            ref = ref.astype(np.float64)
        super().__init__(
            np.asarray(ref, dtype=np.float64),
            ert,
            window_sizes,
            n_bootstraps,
            seed,
            cache_dir,
            reset_on_drift,
            engine,
        )
        if not np.isin(self.x_ref, (0.0, 1.0)).all():
            raise CalibrationError("FETOnline needs a 0/1 (or boolean) reference")
        self.sum_ref = self.x_ref.sum(axis=0)
        if ((self.sum_ref == 0) | (self.sum_ref == self.n)).any():
            raise CalibrationError("the reference is all 0s or all 1s: thresholds cannot be configured")
        if alternative not in ("greater", "less"):
            raise ValueError("alternative must be 'greater' or 'less'")
        if not 0 < lam <= 1:
            raise ValueError("lam must be in (0, 1]")
        self.alternative = alternative
        self.lam = float(lam)
        self._tables: dict[int, np.ndarray] = {}
        self.t_max = 2 * self.max_ws - 1 if t_max is None else int(t_max)
        if self.t_max < 2 * self.max_ws - 1:
            raise ValueError("t_max must be >= 2 * max(window_sizes) - 1")
        # steady-state events simulated per stream: a few ERTs (streams are stopped by then),
        # at least 4 largest windows, at most 2000 (more streams then, not longer ones)
        self.tail_steps = (
            int(tail_steps)
            if tail_steps is not None
            else int(min(max(2000, 4 * self.max_ws), max(4 * self.max_ws, 3 * self.ert)))
        )
        key = calibration_key(
            "fet",
            n=self.n,
            sum_ref=self.sum_ref.tolist(),
            ert=self.ert,
            window_sizes=list(self.window_sizes),
            n_bootstraps=self.n_bootstraps,
            t_max=self.t_max,
            alternative=alternative,
            lam=self.lam,
            seed=seed,
            engine=engine,
            tail_steps=self.tail_steps if engine == "native" else None,
            method="first-passage-randomised",
        )
        self.cache_key = key
        cached = _cache_load(self.cache_dir, key)
        self.band_low = np.full((self.t_max, self.n_features), np.nan)  # no randomised band
        self.band_q = np.zeros((self.t_max, self.n_features))
        self.hazards = np.full((len(self.window_sizes), self.n_features), np.nan)
        if engine == "alibi":
            self._alibi = _alibi_fet(self, cached)
            self.thresholds = np.asarray(self._alibi.thresholds, dtype=np.float64)
            self.permit_probs = np.asarray(self._alibi.permit_probs, dtype=np.float64)
            self.from_cache = cached is not None
            if cached is None:
                _cache_save(self.cache_dir, key, {"thresholds": self.thresholds, "permit": self.permit_probs})
        elif cached is not None:
            self.thresholds, self.permit_probs = cached["thresholds"], cached["permit"]
            self.band_low, self.band_q, self.hazards = cached["band_low"], cached["band_q"], cached["hazards"]
            self.from_cache = True
        else:
            self.thresholds, self.permit_probs = self.calibrate()
            _cache_save(
                self.cache_dir,
                key,
                {
                    "thresholds": self.thresholds,
                    "permit": self.permit_probs,
                    "band_low": self.band_low,
                    "band_q": self.band_q,
                    "hazards": self.hazards,
                },
            )
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._last = np.full((len(self.window_sizes), self.n_features), np.nan)

    def run_state(self) -> dict[str, np.ndarray]:
        out = super().run_state()
        if self.engine == "native":
            out["last"] = self._last.copy()
        return out

    def resume(self, state: dict[str, np.ndarray]) -> None:
        super().resume(state)
        last = state.get("last")
        if self.t and last is not None and np.shape(last) == self._last.shape:
            self._last = np.asarray(last, dtype=np.float64).copy()

    def threshold_at(self, t: np.ndarray) -> np.ndarray:  # (T, d)
        idx = np.minimum(np.asarray(t) - 1, self.thresholds.shape[0] - 1)
        return self.thresholds[idx]

    def _pvals(self, sum_win: np.ndarray, w: int, sum_ref: np.ndarray | float) -> np.ndarray:
        if self.alternative == "greater":
            return _hypergeom_cdf(sum_ref, self.n + w, sum_ref + sum_win, self.n)
        return _hypergeom_cdf(sum_win, self.n + w, sum_ref + sum_win, w)

    def _stat_table(self, w: int) -> np.ndarray:
        """``1 - p`` for every possible count of ones in a window of ``w`` events, shape (w+1, d).

        The test depends on the window only through its count, so one
        hypergeometric evaluation per count replaces one per event.
        """
        tab = self._tables.get(w)
        if tab is None:
            counts = np.arange(w + 1, dtype=np.float64)[:, None]
            tab = 1 - self._pvals(counts, w, self.sum_ref[None, :])
            self._tables[w] = tab
        return tab

    def _ema(self, raw: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """EMA along axis 0: y_t = (1-lam) y_{t-1} + lam x_t, starting raw where prev is NaN.

        One C-level IIR filter over time for all columns at once (no per-event loop).
        """
        lam = self.lam
        prev_eff = np.where(np.isnan(prev), raw[0], prev)  # y_0 = x_0 when there is no history
        out, _ = _lfilter([lam], [1.0, -(1 - lam)], raw, axis=0, zi=((1 - lam) * prev_eff)[None, :])
        return out

    def _sim_stats(self, f: int, b: int, steps: int) -> np.ndarray:
        """Smoothed statistic, max over full windows, of ``b`` null streams of ``steps`` events (b, steps).

        Each stream's rate is drawn from the posterior of the reference's rate
        (Jeffreys prior: Beta(ones + 1/2, zeros + 1/2)), not fixed at the
        reference's share of ones: the reference is itself a sample, and a
        stream whose true rate sits a little above it would otherwise alarm
        far more often than the ERT says (alibi-detect fixes the rate).
        """
        ones = self.sum_ref[f]
        p = self.rng.beta(ones + 0.5, self.n - ones + 0.5, size=(b, 1))
        xs = self.rng.random((b, steps)) < p
        cs = np.zeros((b, steps + 1), dtype=np.int64)
        np.cumsum(xs, axis=1, out=cs[:, 1:])
        out = np.full((b, steps), -np.inf)
        for w in self.window_sizes:
            if w > steps:
                continue
            raw = self._stat_table(w)[cs[:, w:] - cs[:, :-w], f]  # (b, steps - w + 1)
            sm, _ = _lfilter([self.lam], [1.0, -(1 - self.lam)], raw, axis=1, zi=((1 - self.lam) * raw[:, :1]))
            np.maximum(out[:, w - 1 :], sm, out=out[:, w - 1 :])
        return out

    def calibrate(self) -> tuple[np.ndarray, np.ndarray]:
        """Thresholds (t_max, d) and tie probabilities, by first-passage hazard per regime.

        Regimes are the stretches of the stream between the moments a new
        window size becomes full; the last regime is the steady state, which
        is simulated for ``tail_steps`` events. In each regime the threshold
        is constant and set so that the simulated first-passage hazard per
        event is ``beta`` (see :func:`_first_passage_threshold`). Streams are
        simulated in chunks, keeping only each stream's maximum per regime
        and the trajectories of the few highest, so memory stays bounded and
        large ERTs (1e5-1e6 events) are reachable: the steady state pools
        ``n_bootstraps * tail_steps`` simulated events instead of
        ``n_bootstraps`` per time step as in alibi-detect.
        """
        if self.n_bootstraps * self.tail_steps * self.beta < 5:
            raise CalibrationError(
                f"n_bootstraps * tail_steps = {self.n_bootstraps * self.tail_steps} simulated events are too "
                f"few for ert={self.ert:g}: need at least {int(np.ceil(5 / self.beta))}, ideally 10x that"
            )
        ws = sorted(self.window_sizes)
        bounds = [w - 1 for w in ws] + [ws[-1] - 1 + self.tail_steps]
        regimes = [(bounds[i], bounds[i + 1]) for i in range(len(ws))]
        steps = bounds[-1]
        thr = np.full((self.t_max, self.n_features), np.nan)
        permit = np.full((self.t_max, self.n_features), np.inf)
        self.hazards = np.full((len(regimes), self.n_features), np.nan)
        self.band_low = np.full((self.t_max, self.n_features), np.nan)
        self.band_q = np.zeros((self.t_max, self.n_features))
        chunk = int(max(1, min(self.n_bootstraps, 20_000_000 // max(steps, 1))))
        for f in range(self.n_features):
            maxima: list[list[np.ndarray]] = [[] for _ in regimes]
            tops: list[np.ndarray | None] = [None for _ in regimes]
            keep = [int(3 * self.beta * self.n_bootstraps * (e - s0)) + 64 for s0, e in regimes]
            for start in range(0, self.n_bootstraps, chunk):
                b = min(chunk, self.n_bootstraps - start)
                st = self._sim_stats(f, b, steps)
                for r, (s0, e) in enumerate(regimes):
                    seg = st[:, s0:e]
                    m = seg.max(axis=1)
                    maxima[r].append(m)
                    k = min(keep[r], b)
                    sel = np.argpartition(-m, k - 1)[:k] if k < b else np.arange(b)
                    top = tops[r]
                    cand = np.vstack([top, seg[sel]]) if top is not None else seg[sel]
                    cm = cand.max(axis=1)
                    tops[r] = cand[np.argsort(-cm, kind="stable")[: keep[r]]]
            for r, (s0, e) in enumerate(regimes):
                mx = np.concatenate(maxima[r])
                top = tops[r]
                assert top is not None  # n_bootstraps >= 1: the loop above ran at least once
                hi, lo, q, h_r = _first_passage_threshold(mx, top, self.beta)
                self.hazards[r, f] = h_r
                thr[s0 : min(e, self.t_max), f] = hi
                self.band_low[s0 : min(e, self.t_max), f] = lo
                self.band_q[s0 : min(e, self.t_max), f] = q
            for a in (thr, self.band_low, self.band_q):
                a[bounds[-2] :, f] = a[bounds[-2], f]
        return thr, permit

    def _check_values(self, values: np.ndarray) -> None:
        super()._check_values(values)
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError("FETOnline needs 0/1 (or boolean) values")

    def _native_stats(self, values: np.ndarray) -> np.ndarray:
        full = np.concatenate([self._tail, values])
        off = self._tail.shape[0]
        cs = np.concatenate([np.zeros((1, self.n_features)), np.cumsum(full, axis=0)])
        t_total = self.t + np.arange(1, values.shape[0] + 1)
        out = np.full((values.shape[0], len(self.window_sizes), self.n_features), np.nan)
        for k, w in enumerate(self.window_sizes):
            ok = t_total >= w
            if not ok.any():
                continue
            first = int(np.argmax(ok))
            hi = off + np.arange(first, values.shape[0]) + 1  # window = full[hi - w : hi]
            sums = np.rint(cs[hi] - cs[hi - w]).astype(np.int64)
            raw = np.take_along_axis(self._stat_table(w), sums, axis=0)
            out[first:, k, :] = self._ema(raw, self._last[k])
        return out

    def _crossed(self, stats_max: np.ndarray, thr: np.ndarray, t_idx: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            above = (stats_max > thr).any(axis=1)
            equal = stats_max == thr
        idx = np.minimum(t_idx - 1, self.thresholds.shape[0] - 1)
        if equal.any():  # alibi-detect's ties: a stream at the threshold stops with 1 - permit
            u = self.rng.random(equal.shape)
            above |= (equal & (u > self.permit_probs[idx])).any(axis=1)
        with np.errstate(invalid="ignore"):
            band = (stats_max > self.band_low[idx]) & (stats_max <= thr) & (self.band_q[idx] > 0)
        if band.any():  # native calibration: values between the two candidates fire with band_q
            u = self.rng.random(band.shape)
            above |= (band & (u < self.band_q[idx])).any(axis=1)
        return above

    def _advance(self, consumed: np.ndarray, stats: np.ndarray) -> None:
        super()._advance(consumed, stats)
        if stats.shape[0]:
            last = stats[-1]
            self._last = np.where(np.isnan(last), self._last, last)


# --------------------------------------------------------------------------------------------
# alibi-detect engine: its detectors, thresholds cached in the same files
# --------------------------------------------------------------------------------------------


def _alibi_cvm(owner: CVMOnline, cached: dict[str, np.ndarray] | None):
    from alibi_detect.cd import CVMDriftOnline

    class _Cached(CVMDriftOnline):
        def _configure_thresholds(self) -> None:
            if cached is not None:
                self.thresholds = cached["thresholds"].reshape(-1, 1)
            else:
                np.random.seed(owner.seed if owner.seed is not None else None)
                super()._configure_thresholds()

    return _Cached(
        owner.x_ref,
        ert=owner.ert,
        window_sizes=list(owner.window_sizes),
        n_bootstraps=owner.n_bootstraps,
        verbose=False,
    )


def _alibi_fet(owner: FETOnline, cached: dict[str, np.ndarray] | None):
    from alibi_detect.cd import FETDriftOnline

    class _Cached(FETDriftOnline):
        def _configure_thresholds(self) -> None:
            if cached is not None:
                self.thresholds = cached["thresholds"].astype(np.float32)
                self.permit_probs = cached["permit"]
            else:
                np.random.seed(owner.seed if owner.seed is not None else None)
                super()._configure_thresholds()

    return _Cached(
        owner.x_ref,
        ert=owner.ert,
        window_sizes=list(owner.window_sizes),
        n_bootstraps=owner.n_bootstraps,
        t_max=owner.t_max,
        alternative=owner.alternative,
        lam=owner.lam,
        verbose=False,
    )


def make_online(
    kind: Literal["cvm", "fet"], x_ref: np.ndarray, ert: float, window_sizes: Sequence[int], **kw: Any
) -> CVMOnline | FETOnline:
    """Build an online detector by name ("cvm" for continuous values, "fet" for 0/1); ``kw`` go to its constructor."""
    if kind == "cvm":
        return CVMOnline(x_ref, ert, window_sizes, **kw)
    if kind == "fet":
        return FETOnline(x_ref, ert, window_sizes, **kw)
    raise ValueError(f"unknown online detector {kind!r} (use 'cvm' or 'fet')")


def fet_window_stats(
    x_ref: np.ndarray, stream: np.ndarray, window_size: int, alternative: str = "greater"
) -> np.ndarray:
    """Unsmoothed ``1 - p`` of the one-sided Fisher exact test for every full sliding window (1-D)."""
    ref = np.asarray(x_ref, dtype=np.float64).ravel()
    s = np.asarray(stream, dtype=np.float64).ravel()
    n, w = ref.shape[0], window_size
    sum_ref = ref.sum()
    cs = np.concatenate([[0.0], np.cumsum(s)])
    sums = cs[w:] - cs[:-w]
    if alternative == "greater":
        p = _hypergeom_cdf(sum_ref, n + w, sum_ref + sums, n)
    else:
        p = _hypergeom_cdf(sums, n + w, sum_ref + sums, w)
    return 1 - p
