# size: one mergeable summary type, its batch update and merge, and the window-close tests that read it share the bin layout
"""Mergeable window summaries: a window's state in memory bounded by configuration, not by events.

A window that keeps every raw row until it closes grows with its event count
(an hourly window of a busy model holds millions of rows). A
:class:`WindowSummary` keeps, instead, what the window-close tests need, and
is updated batch by batch in vectorised numpy (no per-event Python):

* **numeric features and outputs** — counts and value sums in fine bins cut at
  the reference's quantiles (``bins`` = 1,024 by default, plus a bin below the
  reference's minimum and one above its maximum; the reference's own histogram
  edges are always among the fine edges, so its coarse histogram is a sum of
  fine bins), the window's smallest and largest value, and the quality
  counters of :mod:`detectors.quality` (missing, type error, out of range,
  non-finite);
* **categorical features and the predicted class** — counts of the
  reference's ``max_categories`` most frequent categories, every other value
  hashed (CRC-32 of its UTF-8 text, stable across processes) into one of
  ``hash_buckets`` "other" buckets, and the quality counters (missing, type
  error, unknown category);
* **a reservoir of rows** (``reservoir`` rows) for what truly needs rows
  (multivariate MMD/PCA, feature impact): bottom-k sampling on a stable 64-bit
  hash of the event id, so it is a uniform sample and merging two reservoirs
  keeps the same rows as sampling the union;
* the event count, the event-time range and undeclared-feature counts.

Two partial windows combine with :func:`merge`: counts, counters and sums add,
extremes take min/max, reservoirs keep the union's bottom-k. Counts and the
reservoir are exact (``merge(summarise(a), summarise(b))`` equals
``summarise(a + b)``); the float value sums are equal up to rounding of the
summation order. A summary serialises to NPZ bytes (:meth:`WindowSummary.to_bytes`,
no pickled objects) for checkpoints.

Tests from a summary (:func:`summary_drift`, O(features × bins) at window
close; :func:`summary_quality` for the quality counts):

* **KS** — ``D`` is the largest gap of the two empirical CDFs at the fine
  edges. Both CDFs are exact there, so this is a lower bound of the exact D;
  within a bin neither CDF can rise by more than its bin's mass, so
  ``D_exact - D <= max over bins of the larger in-bin mass`` (about
  1/``bins`` for the reference; :func:`numeric_statistics` returns this upper
  bound as ``ks_upper``). Measured on normal, Student-t and lognormal data with
  1,024 bins and windows of 5,000 events: at most 0.00074 from
  ``scipy.stats.ks_2samp`` (99 % within 0.00064; tests/detectors/bench_summaries.py). p-value: the same
  asymptotic ``kstwo`` distribution as the exact path (:func:`~detectors.univariate.ks_pvalue`).
* **CvM** — Anderson's ``T = nm/N² Σ (F_n - G_m)²`` over the pooled sample,
  with ``(F_n - G_m)²`` inside each bin taken as the mean of the square of a
  line between its edge values (exact at the edges; a bin whose values all
  equal its left edge — ties — is exact). Measured within 3 % of
  ``scipy.stats.cramervonmises_2samp`` on continuous data. With heavy ties
  scipy's mid-rank formula is not T (two samples of one integer law give
  T ≈ 130), and the exact path follows scipy; the summary keeps T. p-value as
  the exact path's asymptotic one (:func:`~detectors.univariate.cvm_pvalue`).
* **chi-square** — the same 2 × K table as the exact path whenever the
  reference has at most ``max_categories`` categories and the window's unseen
  values fall into distinct hash buckets; otherwise unseen values sharing a
  bucket are one column (a smaller table, a slightly smaller statistic).
* **PSI, Jensen–Shannon** — exact: the reference's histogram bins (numeric)
  are unions of fine bins, categories as for chi-square.
* **Wasserstein** — each bin's mass placed at its mean value (the sums are
  kept for this) for both samples, then the exact 1-Wasserstein distance of
  those two discrete distributions. Moving mass inside its bin changes the
  distance by at most ``Σ (p_i + q_i) · width_i`` (outer bins: the window's own
  extent beyond the reference's range); returned as ``wasserstein_bound``.

The verdicts then follow the same rule as the exact path
(:func:`~detectors.univariate.drift_result`: correction, reference-chunk bands
and effect-size floors computed on the reference's rows). ``driftwatch bench
detection`` reports how often a summary verdict differs from the exact one.

>>> import numpy as np
>>> from detectors.frame import Frame
>>> from detectors.reference import Reference
>>> from detectors.spec import DriftSpec, FeatureSpec
>>> rng = np.random.default_rng(3)
>>> feats = [FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="c", kind="categorical")]
>>> def frame(n, shift, start=0):
...     return Frame.from_columns(event_id=np.arange(start, start + n).astype(str).astype(object),
...         event_time=np.zeros(n), numeric={"x": rng.normal(shift, 1, n)},
...         categorical={"c": rng.choice(["a", "b"], n).astype(object)})
>>> ref = Reference.from_frame(frame(4000, 0.0), feats)
>>> layout = SummaryLayout.build(ref, feats, bins=256, reservoir=100)
>>> a, b = layout.summary(), layout.summary()
>>> a.update(frame(1500, 1.0)); b.update(frame(1500, 1.0, start=1500))
>>> w = merge(a, b)
>>> w.n, w.reservoir.n, w.nbytes == a.nbytes  # 3,000 events in the bytes of 1,500
(3000, 100, True)
>>> res = summary_drift(w, ref, DriftSpec(threshold={"method": "p_value"}))
>>> res.engine, res.feature("x").drift, res.feature("c").drift
('summary', True, False)
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.errors import ConfigurationError, InvalidInputError
from detectors.frame import Codes, Frame, concat
from detectors.histograms import Histogram
from detectors.quality import FeatureQuality
from detectors.reference import (
    OTHER,
    Reference,
    as_str,
    hash_values,
    lookup,
    npz_bytes,
    npz_read,
    sorted_bin_counts,
)
from detectors.spec import DriftSpec, FeatureSpec
from detectors.twosample import _starts, binned_effects, chi2_2xk, cvm_pvalue, ks_pvalue
from detectors.univariate import MIN_SAMPLES, DriftResult, drift_result
from detectors.values import not_none

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_HASH_BUCKETS",
    "DEFAULT_MAX_CATEGORIES",
    "DEFAULT_RESERVOIR",
    "CategoricalLayout",
    "NumericLayout",
    "NumericStatistics",
    "Reservoir",
    "SummaryError",
    "SummaryLayout",
    "WindowSummary",
    "merge",
    "numeric_statistics",
    "output_totals",
    "row_keys",
    "summary_drift",
    "summary_histograms",
    "summary_quality",
]

DEFAULT_BINS = 1024
"""Fine reference-quantile bins per numeric feature (KS within ~1/bins of exact)."""
DEFAULT_MAX_CATEGORIES = 1000
"""Reference categories counted by name per categorical feature; the rest are hashed."""
DEFAULT_HASH_BUCKETS = 64
"""Buckets for values outside the kept categories (unseen categories) per categorical feature."""
DEFAULT_RESERVOIR = 2000
"""Rows kept per window for row-based detectors (MMD/PCA, feature impact)."""

FORMAT = "driftwatch-window-summary"
FORMAT_VERSION = 1
CHECKPOINT_DEFLATE_LEVEL = 1
"""zlib level of :meth:`WindowSummary.to_bytes`: an open window's summary is serialised at every checkpoint
(every 5 s, sooner under load): at the default level 6 that was ~32 ms per summary (20 features, 2,000-row
sample) and ~10 % of the worker's samples with 1M-event windows; level 1 takes ~10 ms for ~7 % more bytes."""


class SummaryError(InvalidInputError):
    """Summaries that cannot be combined (different layouts) or bytes that are no summary."""


# -- layout: the bins, fixed by the reference ---------------------------------------------


def fine_edges(sorted_values: np.ndarray, coarse: np.ndarray, bins: int) -> np.ndarray:
    """Fine bin edges of one numeric feature: its ``k / bins`` quantiles (0 and 1 included),
    the coarse histogram edges ``coarse``, and the value just above the maximum, sorted and unique.

    Bins are left-closed like :func:`~detectors.reference.sorted_bin_counts`: bin 0 is
    ``(-inf, min)``, bin i is ``[e[i-1], e[i])``, the last ``[nextafter(max), +inf)``.

    >>> fine_edges(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.5]), 2).tolist()[:4]
    [0.0, 1.5, 3.0, 3.0000000000000004]
    """
    if sorted_values.size == 0:
        return np.empty(0, dtype=np.float64)
    q = np.quantile(sorted_values, np.arange(bins + 1) / bins)
    top = np.nextafter(sorted_values[-1], np.inf)
    return np.unique(np.concatenate((q, np.asarray(coarse, dtype=np.float64), [top])))


def _stable_bucket(values: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket of each (unicode) value: CRC-32 of its UTF-8 text modulo ``buckets`` (stable across processes)."""
    return np.fromiter(
        (zlib.crc32(v.encode("utf-8", "surrogatepass")) % buckets for v in values.tolist()),
        dtype=np.int64,
        count=values.shape[0],
    )


@dataclass(frozen=True, eq=False)
class NumericLayout:
    """Fine bins of one numeric feature and the reference's counts in them.

    ``edges``: see :func:`fine_edges` (empty when the reference has no values: one bin);
    ``coarse``: the reference histogram bin of each fine bin; ``ref_counts``/``ref_sums``:
    the reference's values per fine bin; ``lo``/``hi``: the declared range (quality).
    """

    name: str
    edges: np.ndarray
    coarse: np.ndarray
    n_coarse: int
    ref_counts: np.ndarray
    ref_sums: np.ndarray
    ref_std: float
    lo: float = -math.inf
    hi: float = math.inf
    nullable: bool = True
    binned: bool = True  # False: the reference does not know the feature (quality only)

    @property
    def n_bins(self) -> int:
        return int(self.edges.shape[0]) + 1

    @property
    def ref_n(self) -> int:
        return int(self.ref_counts.sum())

    def __getstate__(self) -> dict:
        """Pickled without the bin lookup table (rebuilt on first use, :meth:`bin_index`)."""
        return {k: v for k, v in self.__dict__.items() if k != "_lut"}

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        """The fine bin of each value: ``np.searchsorted(edges, values, side="right")``, the same numbers.

        A binary search over ~1,000 edges per value was half of a summary's update. The edges are
        quantiles, so a uniform grid over their range holds at most two of them per cell (it is made
        fine enough, :func:`_bin_lut`): a value's bin is the edges in the cells before its own plus those
        of its own cell at or below it — three table reads, no search. The cell is computed from the value
        by the same rounded arithmetic for the values and the edges, which is monotone, so the count is
        exact. Edges too crowded for :data:`LUT_MAX_CELLS` cells (a heavy tail stretching the range) and
        non-finite values use the search.
        """
        lut = self.__dict__.get("_lut")
        if lut is None:
            lut = self.__dict__["_lut"] = _bin_lut(self.edges)
        if not lut:
            return np.searchsorted(self.edges, values, side="right")
        lo, hi, scale, before, first, second = lut
        x = np.asarray(values, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            cell = _cells(x, lo, scale, before.shape[0] - 1)
            b = before[cell] + (first[cell] <= x) + (second[cell] <= x)
            odd = ~((x >= lo) & (x < hi))  # outside the grid (a tail), NaN, infinities
        if odd.any():
            b[odd] = np.searchsorted(self.edges, x[odd], side="right")
        return b


LUT_CELLS_PER_EDGE = 4
"""Grid cells per fine edge to start with in :meth:`NumericLayout.bin_index`'s lookup table."""
LUT_MAX_CELLS = 1 << 15
"""At most this many cells (~0.6 MB per feature): edges more crowded than that keep the binary search."""


def _cells(x: np.ndarray, lo: float, scale: float, last: int) -> np.ndarray:
    """Grid cell of each value (monotone in the value; NaN and infinities land anywhere: call under
    ``np.errstate(invalid="ignore")`` if there may be some)."""
    cell = ((x - lo) * scale).astype(np.int64)
    return np.minimum(np.maximum(cell, 0, out=cell), last, out=cell)


def _bin_lut(edges: np.ndarray) -> tuple[float, float, float, np.ndarray, np.ndarray, np.ndarray] | tuple[()]:
    """``(lo, hi, cells per unit, edges below each cell, each cell's first and second edge (+inf: none))``
    for :meth:`NumericLayout.bin_index` over the edges from ``lo`` to ``hi``, or ``()`` when a grid does
    not pay. The grid spans all edges if at most two fall in a cell of :data:`LUT_MAX_CELLS`; else the
    edges of the outer 1/64, then 1/16, of each side are left to the search (a heavy tail stretches the
    range: the values there are few); else no grid."""
    e = edges.shape[0]
    if e < 64 or not np.isfinite(edges[[0, -1]]).all():
        return ()
    for trim in (0, e // 64, e // 16):
        inner = edges[trim : e - trim]
        lo, hi = float(inner[0]), float(inner[-1])
        if hi <= lo:
            continue
        k, cells = inner.shape[0], LUT_CELLS_PER_EDGE * inner.shape[0]
        while cells <= LUT_MAX_CELLS:  # finer until no cell holds more than two edges
            scale = cells / (hi - lo)
            ecell = _cells(inner, lo, scale, cells)  # cells + 1 of them: the last holds the top edge
            before = np.searchsorted(ecell, np.arange(cells + 1), side="left")
            count = np.diff(np.append(before, k))
            if count.max() <= 2:
                pad = np.append(inner, [np.inf, np.inf])
                first = np.where(count >= 1, pad[before], np.inf)
                second = np.where(count >= 2, pad[before + 1], np.inf)
                return lo, hi, scale, (before + trim).astype(np.int64), first, second
            cells *= 2
    return ()


@dataclass(frozen=True, eq=False)
class CategoricalLayout:
    """Columns of one categorical feature: ``categories`` (kept reference categories, sorted)
    then ``hash_buckets`` buckets for every other value; ``ref_counts`` per column.
    ``allowed``: the declared categories (quality; None: any)."""

    name: str
    categories: np.ndarray
    hash_buckets: int
    ref_counts: np.ndarray
    allowed: frozenset[str] | None = None
    nullable: bool = True
    binned: bool = True
    _index: dict = field(default_factory=dict, repr=False, compare=False)  # per process: hash lookup

    def __getstate__(self) -> dict:
        """Pickled without the hash index: string hashes are salted per process (rebuilt on use)."""
        return {**self.__dict__, "_index": {}}

    @property
    def n_columns(self) -> int:
        return int(self.categories.shape[0]) + self.hash_buckets

    def columns_of(self, col: np.ndarray, codes: Codes | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """``(column of each present value, present mask, number of values not allowed)``.

        Kept categories are matched by Python's string hash (salted per process, never
        stored), with a fall back to comparing text if two kept categories collide; other
        values are hashed into the buckets by their text, once per distinct value. With the
        column's ``codes`` (an Arrow batch's dictionary, :class:`~detectors.frame.Codes`) only its
        distinct values are looked up, and the rows take their value's column.
        """
        if codes is not None:
            values = codes.values
            idx_v, present_v, bad_v = self._columns_of(values)
            full = np.full(values.shape[0], -1, dtype=np.int64)
            full[present_v] = idx_v
            rows = codes.codes
            present = present_v[rows]
            not_allowed = 0
            if bad_v is not None:
                per_value = np.bincount(rows, minlength=values.shape[0])
                not_allowed = int(per_value[np.flatnonzero(present_v)[bad_v]].sum())
            return full[rows][present], present, not_allowed
        idx, present, bad = self._columns_of(col)
        return idx, present, 0 if bad is None else int(np.count_nonzero(bad))

    def _columns_of(self, col: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(column of each present value, present mask, which present values are not allowed | None)``."""
        hashes, present = hash_values(np.asarray(col, dtype=object))
        k = self.categories.shape[0]
        if "h" not in self._index:
            h = np.fromiter(map(hash, self.categories.tolist()), dtype=np.int64, count=k)
            order = np.argsort(h)
            hs = h[order]
            self._index["h"] = (hs, order, bool(np.any(hs[1:] == hs[:-1])))
            self._index["allowed"] = (
                None if self.allowed is None else np.isin(self.categories, np.array(sorted(self.allowed), dtype=str))
            )
        hs, order, collide = self._index["h"]
        values = None
        if collide or hs.size == 0:
            values = as_str(np.asarray(col, dtype=object)[present])
            idx = lookup(self.categories, values)
        else:
            pos = np.minimum(np.searchsorted(hs, hashes), hs.shape[0] - 1)
            idx = np.where(hs[pos] == hashes, order[pos], -1).astype(np.int64)
        other = np.flatnonzero(idx < 0)
        allowed = self.allowed
        bad_rows = None if allowed is None else np.zeros(idx.shape[0], dtype=bool)
        if other.size:
            values = as_str(np.asarray(col, dtype=object)[present][other]) if values is None else values[other]
            uniq, inv = np.unique(values, return_inverse=True)
            idx[other] = k + _stable_bucket(uniq, self.hash_buckets)[inv]
            if bad_rows is not None and allowed is not None:
                bad = np.array([u not in allowed for u in uniq.tolist()], dtype=bool)
                bad_rows[other] = bad[inv]
        if bad_rows is not None:
            kept = np.flatnonzero(idx < k)
            bad_rows[kept] = ~self._index["allowed"][idx[kept]]
        return idx, present, bad_rows


@dataclass(frozen=True, eq=False)
class SummaryLayout:
    """Everything fixed for the windows of one reference: bins, categories, reservoir size.

    Build with :meth:`build`; make empty summaries with :meth:`summary`.
    ``outputs``: the layout of the model outputs (prediction pseudo-features of
    :mod:`detectors.prediction`), None when the reference has none.
    """

    numeric: tuple[NumericLayout, ...]
    categorical: tuple[CategoricalLayout, ...]
    bins: int
    reservoir: int
    outputs: SummaryLayout | None = None
    proba_classes: tuple[str, ...] = ()
    fingerprint: str = ""

    @classmethod
    def build(
        cls,
        reference: Reference,
        features: Sequence[FeatureSpec] | None = None,
        *,
        bins: int = DEFAULT_BINS,
        max_categories: int = DEFAULT_MAX_CATEGORIES,
        hash_buckets: int = DEFAULT_HASH_BUCKETS,
        reservoir: int = DEFAULT_RESERVOIR,
        outputs: Any = None,
    ) -> SummaryLayout:
        """The layout of ``reference`` for ``features`` (default: the reference's).

        ``outputs``: a :class:`~detectors.prediction.PredictionReference` to summarise the
        model outputs too. Memory per summary is about ``8·2·(bins + 2)`` bytes per numeric
        feature, ``8·(max_categories + hash_buckets)`` per categorical one, plus ``reservoir`` rows.
        """
        if bins < 2:
            raise ConfigurationError(f"summary bins must be >= 2, got {bins}")
        if max_categories < 1 or hash_buckets < 1:
            raise ConfigurationError("summary max_categories and hash_buckets must be >= 1")
        if reservoir < 0:
            raise ConfigurationError(f"summary reservoir must be >= 0, got {reservoir}")
        features = tuple(reference.features if features is None else features)
        num, cat = [], []
        for f in features:
            if f.kind == "numeric":
                num.append(_numeric_layout(f, reference, bins))
            else:
                cat.append(_categorical_layout(f, reference, max_categories, hash_buckets))
        out_layout, classes = None, ()
        if outputs is not None:
            out_layout = cls.build(
                outputs.reference,
                None,
                bins=bins,
                max_categories=max_categories,
                hash_buckets=hash_buckets,
                reservoir=0,
            )
            classes = tuple(outputs.proba_classes)
        digest = hashlib.sha1()
        for n in num:
            digest.update(f"n:{n.name}:{n.binned}:{n.lo}:{n.hi}".encode())
            digest.update(n.edges.tobytes())
        for c in cat:
            digest.update(f"c:{c.name}:{c.hash_buckets}:{sorted(c.allowed or [])}".encode())
            digest.update("\x00".join(c.categories.tolist()).encode("utf-8", "surrogatepass"))
        digest.update(f"r:{reservoir}:o:{out_layout.fingerprint if out_layout else ''}:{classes}".encode())
        return cls(tuple(num), tuple(cat), int(bins), int(reservoir), out_layout, classes, digest.hexdigest())

    @property
    def width(self) -> int:
        """Columns of the numeric count matrix (the most fine bins of any feature)."""
        return max((n.n_bins for n in self.numeric), default=1)

    def summary(self) -> WindowSummary:
        """An empty summary of this layout."""
        return WindowSummary(self)

    # the reference side, padded like a summary's matrices (cached per layout)
    def ref_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(counts, sums)`` of the reference per numeric feature and fine bin, ``(F, width)``."""
        cache = self.__dict__.setdefault("_ref", {})
        if "m" not in cache:
            w = self.width
            counts = np.zeros((len(self.numeric), w), dtype=np.int64)
            sums = np.zeros((len(self.numeric), w), dtype=np.float64)
            for i, n in enumerate(self.numeric):
                counts[i, : n.n_bins] = n.ref_counts
                sums[i, : n.n_bins] = n.ref_sums
            cache["m"] = (counts, sums)
        return cache["m"]


def _numeric_layout(f: FeatureSpec, reference: Reference, bins: int) -> NumericLayout:
    lo = -math.inf if f.min is None else float(f.min)
    hi = math.inf if f.max is None else float(f.max)
    nref = reference.numeric.get(f.name)
    if nref is None or nref.values.size == 0:
        z = np.zeros(1, dtype=np.int64)
        return NumericLayout(f.name, np.empty(0), z, 1, z, np.zeros(1), 0.0, lo, hi, f.nullable, False)
    values = nref.values
    edges = fine_edges(values, nref.edges, bins)
    left = np.concatenate(([-np.inf], edges))
    coarse = np.searchsorted(nref.edges, left, side="right").astype(np.int64)
    counts = sorted_bin_counts(values, edges)
    csum = np.concatenate(([0.0], np.cumsum(values)))
    cut = np.concatenate(([0], np.searchsorted(values, edges, side="left"), [values.shape[0]]))
    sums = np.diff(csum[cut])
    return NumericLayout(
        f.name,
        edges,
        coarse,
        int(nref.edges.shape[0]) + 1,
        counts,
        sums,
        float(np.std(values)),
        lo,
        hi,
        f.nullable,
        True,
    )


def _categorical_layout(
    f: FeatureSpec, reference: Reference, max_categories: int, hash_buckets: int
) -> CategoricalLayout:
    allowed = None if f.allowed is None else frozenset(str(a) for a in f.allowed)
    cref = reference.categorical.get(f.name)
    if cref is None:
        return CategoricalLayout(
            f.name,
            np.empty(0, dtype="<U1"),
            hash_buckets,
            np.zeros(hash_buckets, dtype=np.int64),
            allowed,
            f.nullable,
            False,
        )
    order = np.lexsort((cref.categories, -cref.counts))
    kept = np.union1d(cref.categories[order[:max_categories]], cref.top.astype(str)).astype(str)
    layout = CategoricalLayout(f.name, kept, hash_buckets, np.zeros(0, dtype=np.int64), allowed, f.nullable, True)
    idx = lookup(kept, cref.categories.astype(str))
    rest = np.flatnonzero(idx < 0)
    if rest.size:
        idx[rest] = kept.shape[0] + _stable_bucket(cref.categories[rest].astype(str), hash_buckets)
    counts = np.bincount(idx, weights=cref.counts, minlength=layout.n_columns).astype(np.int64)
    object.__setattr__(layout, "ref_counts", counts)
    return layout


# -- the reservoir ------------------------------------------------------------------------

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def row_keys(event_id: np.ndarray) -> np.ndarray:
    """A stable 64-bit hash of each event id (FNV-1a over its code points, splitmix64 finaliser).

    Vectorised over the column (one numpy pass per character position); the same id
    gets the same key in every process, so bottom-k reservoirs merge exactly.

    >>> k = row_keys(np.array(["a", "bb", "a"], dtype=object))
    >>> bool(k[0] == k[2]), bool(k[0] == k[1])
    (True, False)
    """
    ids = np.asarray(event_id, dtype=object)
    n = ids.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    u = ids.astype(str)
    codes = u.view(np.uint32).reshape(n, -1).astype(np.uint64)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(codes.shape[1]):
            c = codes[:, j]
            h = np.where(c != 0, (h ^ c) * _FNV_PRIME, h)  # padding of shorter ids is not hashed
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


@dataclass(eq=False)
class Reservoir:
    """A uniform sample of at most ``capacity`` rows: the rows with the smallest :func:`row_keys`.

    Bottom-k sampling: the sample of a union is the bottom-k of the two samples, so
    :meth:`merge` is exact. Rows are kept in key order.
    """

    capacity: int
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    frame: Frame | None = None

    @property
    def n(self) -> int:
        return int(self.keys.shape[0])

    def _keep(self, keys: np.ndarray, frames: list[Frame]) -> None:
        frame = concat(frames) if len(frames) > 1 else frames[0]
        order = np.argsort(keys, kind="stable")[: self.capacity]
        self.keys = keys[order]
        self.frame = frame.take(order)

    def update(self, frame: Frame) -> None:
        """Offer the rows of ``frame``."""
        if self.capacity == 0 or len(frame) == 0:
            return
        keys = row_keys(frame.event_id)
        if self.n >= self.capacity:  # only rows below the current k-th key can enter
            cand = np.flatnonzero(keys < self.keys[-1])
            if cand.size == 0:
                return
            keys, frame = keys[cand], frame.take(cand)
        if self.frame is None:
            self._keep(keys, [frame])
        else:
            self._keep(np.concatenate((self.keys, keys)), [self.frame, frame])

    def merge(self, other: Reservoir) -> Reservoir:
        out = Reservoir(self.capacity)
        parts = [(r.keys, r.frame) for r in (self, other) if r.frame is not None and r.n]
        if parts:
            out._keep(np.concatenate([k for k, _ in parts]), [f for _, f in parts])
        return out


# -- the summary --------------------------------------------------------------------------

_ADD, _MIN, _MAX = "add", "min", "max"


def _binned_arrays(layout: SummaryLayout, prefix: str) -> dict[str, tuple[str, np.ndarray]]:
    f, c = len(layout.numeric), len(layout.categorical)
    return {
        f"{prefix}num_counts": (_ADD, np.zeros((f, layout.width), dtype=np.int64)),
        f"{prefix}num_sums": (_ADD, np.zeros((f, layout.width), dtype=np.float64)),
        f"{prefix}num_min": (_MIN, np.full(f, np.inf)),
        f"{prefix}num_max": (_MAX, np.full(f, -np.inf)),
        f"{prefix}num_missing": (_ADD, np.zeros(f, dtype=np.int64)),
        f"{prefix}num_type_error": (_ADD, np.zeros(f, dtype=np.int64)),
        f"{prefix}num_out_of_range": (_ADD, np.zeros(f, dtype=np.int64)),
        f"{prefix}num_nonfinite": (_ADD, np.zeros(f, dtype=np.int64)),
        f"{prefix}cat_counts": (_ADD, np.zeros(sum(x.n_columns for x in layout.categorical), dtype=np.int64)),
        f"{prefix}cat_missing": (_ADD, np.zeros(c, dtype=np.int64)),
        f"{prefix}cat_type_error": (_ADD, np.zeros(c, dtype=np.int64)),
        f"{prefix}cat_unknown": (_ADD, np.zeros(c, dtype=np.int64)),
    }


class WindowSummary:
    """The mergeable state of one window (see module docstring). Make with :meth:`SummaryLayout.summary`.

    ``n``: events; ``t_min``/``t_max``: event-time range; ``n_invalid_rows``: rows with a type error;
    ``arrays``: named count/sum
    arrays (``f.*`` features, ``o.*`` outputs); ``reservoir``: sampled rows;
    ``unknown``: undeclared feature name -> events carrying it (at most ``MAX_UNKNOWN`` names).
    """

    MAX_UNKNOWN = 64

    def __init__(self, layout: SummaryLayout) -> None:
        self.layout = layout
        self.n = 0
        self.t_min = math.inf
        self.t_max = -math.inf
        self.n_unknown_rows = 0
        self.n_invalid_rows = 0  # rows with at least one value of the wrong type
        self.unknown: dict[str, int] = {}
        spec = _binned_arrays(layout, "f.")
        if layout.outputs is not None:
            spec.update(_binned_arrays(layout.outputs, "o."))
        self._ops = {k: op for k, (op, _) in spec.items()}
        self.arrays: dict[str, np.ndarray] = {k: a for k, (_, a) in spec.items()}
        self.reservoir = Reservoir(layout.reservoir)
        self._starts = _starts(np.array([x.n_columns for x in layout.categorical], dtype=np.int64))

    # -- update ---------------------------------------------------------------------------

    def update(self, frame: Frame) -> None:
        """Add the rows of one decoded batch (vectorised; no per-event Python)."""
        n = len(frame)
        if n == 0:
            return
        self.n += n
        t = np.asarray(frame.event_time, dtype=np.float64)
        self.t_min = min(self.t_min, float(np.min(t)))
        self.t_max = max(self.t_max, float(np.max(t)))
        _update_binned(self.arrays, "f.", self.layout, frame)
        if self.layout.outputs is not None:
            from detectors.prediction import prediction_frame

            pf, _ = prediction_frame(frame, self.layout.proba_classes)
            _update_binned(self.arrays, "o.", self.layout.outputs, pf)
        self.reservoir.update(frame)
        te = [m for m in frame.type_error.values() if m is not None]
        if te:
            self.n_invalid_rows += int(np.logical_or.reduce(te).sum())
        if frame.unknown:
            self.n_unknown_rows += int(np.logical_or.reduce(list(frame.unknown.values())).sum())
            for name, mask in frame.unknown.items():
                c = int(np.count_nonzero(mask))
                if c and (name in self.unknown or len(self.unknown) < self.MAX_UNKNOWN):
                    self.unknown[name] = self.unknown.get(name, 0) + c

    # -- views ----------------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Bytes of the summary's arrays and reservoir columns (object columns: their pointers)."""
        total = sum(a.nbytes for a in self.arrays.values()) + self.reservoir.keys.nbytes
        fr = self.reservoir.frame
        if fr is not None:
            cols = [
                fr.event_id,
                fr.event_time,
                fr.source_id,
                *fr.numeric.values(),
                *fr.categorical.values(),
                *fr.type_error.values(),
                *fr.unknown.values(),
            ]
            cols += [a for a in (fr.pred_label, fr.pred_proba, fr.pred_value, fr.label) if a is not None]
            total += sum(a.nbytes for a in cols)
        return total

    def equals(self, other: WindowSummary, rtol: float = 1e-12) -> bool:
        """Same counts, counters and sampled rows; float sums equal within ``rtol`` (summation order)."""
        if self.layout.fingerprint != other.layout.fingerprint or self.n != other.n:
            return False
        if (self.t_min, self.t_max, self.n_unknown_rows, self.n_invalid_rows, self.unknown) != (
            other.t_min,
            other.t_max,
            other.n_unknown_rows,
            other.n_invalid_rows,
            other.unknown,
        ):
            return False
        for k, a in self.arrays.items():
            b = other.arrays[k]
            if a.dtype.kind == "f":
                if not np.allclose(a, b, rtol=rtol, atol=0.0, equal_nan=True):
                    return False
            elif not np.array_equal(a, b):
                return False
        return np.array_equal(self.reservoir.keys, other.reservoir.keys)

    # -- serialisation --------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """NPZ bytes (arrays and a JSON header, no pickled objects) for a checkpoint."""
        out = {f"a.{k}": v for k, v in self.arrays.items()}
        meta: dict[str, Any] = {
            "fingerprint": self.layout.fingerprint,
            "n": self.n,
            "t_min": self.t_min,
            "t_max": self.t_max,
            "n_unknown_rows": self.n_unknown_rows,
            "n_invalid_rows": self.n_invalid_rows,
            "unknown": self.unknown,
        }
        out["r.keys"] = self.reservoir.keys
        if self.reservoir.frame is not None:
            meta["frame"] = _frame_arrays(self.reservoir.frame, "r.", out)
        return npz_bytes(out, meta, FORMAT, FORMAT_VERSION, compress=CHECKPOINT_DEFLATE_LEVEL)

    @classmethod
    def from_bytes(cls, layout: SummaryLayout, blob: bytes) -> WindowSummary:
        """Inverse of :meth:`to_bytes` for the same ``layout`` (:class:`SummaryError` otherwise)."""
        meta, data = npz_read(blob, FORMAT, FORMAT_VERSION, "window summary", SummaryError)
        if meta["fingerprint"] != layout.fingerprint:
            raise SummaryError("the summary was made with another layout (reference or configuration changed)")
        s = cls(layout)
        s.n, s.t_min, s.t_max = int(meta["n"]), float(meta["t_min"]), float(meta["t_max"])
        s.n_unknown_rows, s.unknown = int(meta["n_unknown_rows"]), {k: int(v) for k, v in meta["unknown"].items()}
        s.n_invalid_rows = int(meta["n_invalid_rows"])
        for k in s.arrays:
            s.arrays[k] = data[f"a.{k}"]
        s.reservoir.keys = data["r.keys"]
        if "frame" in meta:
            s.reservoir.frame = _frame_from_arrays(meta["frame"], "r.", data)
        return s


def merge(a: WindowSummary, b: WindowSummary) -> WindowSummary:
    """The summary of the union of two partial windows (exact; see module docstring)."""
    if a.layout.fingerprint != b.layout.fingerprint:
        raise SummaryError("cannot merge summaries of different layouts")
    out = WindowSummary(a.layout)
    out.n = a.n + b.n
    out.t_min, out.t_max = min(a.t_min, b.t_min), max(a.t_max, b.t_max)
    out.n_unknown_rows = a.n_unknown_rows + b.n_unknown_rows
    out.n_invalid_rows = a.n_invalid_rows + b.n_invalid_rows
    out.unknown = dict(a.unknown)
    for k, v in b.unknown.items():
        if k in out.unknown or len(out.unknown) < WindowSummary.MAX_UNKNOWN:
            out.unknown[k] = out.unknown.get(k, 0) + v
    for k, op in a._ops.items():
        x, y = a.arrays[k], b.arrays[k]
        out.arrays[k] = x + y if op == _ADD else (np.minimum(x, y) if op == _MIN else np.maximum(x, y))
    out.reservoir = a.reservoir.merge(b.reservoir)
    return out


def _update_binned(arrays: dict[str, np.ndarray], prefix: str, layout: SummaryLayout, frame: Frame) -> None:
    """Add one batch to the ``prefix`` arrays (quality counted as :func:`detectors.quality.data_quality`)."""
    n = len(frame)
    if layout.numeric:
        f, w = len(layout.numeric), layout.width
        mat = np.empty((f, n), dtype=np.float64)
        te = np.zeros((f, n), dtype=bool)
        for i, nl in enumerate(layout.numeric):
            col = frame.numeric.get(nl.name)
            mat[i] = np.nan if col is None else col
            t = frame.type_error.get(nl.name)
            if t is not None:
                te[i] = t
        null = np.isnan(mat)
        finite = np.isfinite(mat)
        arrays[prefix + "num_missing"] += (null & ~te).sum(axis=1)
        arrays[prefix + "num_type_error"] += te.sum(axis=1)
        lo = np.array([nl.lo for nl in layout.numeric])[:, None]
        hi = np.array([nl.hi for nl in layout.numeric])[:, None]
        with np.errstate(invalid="ignore"):
            arrays[prefix + "num_out_of_range"] += ((mat < lo) | (mat > hi)).sum(axis=1)
        arrays[prefix + "num_nonfinite"] += (~finite & ~null).sum(axis=1)
        with np.errstate(invalid="ignore"):
            arrays[prefix + "num_min"] = np.minimum(
                arrays[prefix + "num_min"], np.where(finite, mat, np.inf).min(axis=1)
            )
            arrays[prefix + "num_max"] = np.maximum(
                arrays[prefix + "num_max"], np.where(finite, mat, -np.inf).max(axis=1)
            )
        flat = np.empty((f, n), dtype=np.int64)
        for i, nl in enumerate(layout.numeric):
            flat[i] = nl.bin_index(mat[i]) + i * w  # NaN lands last: dropped below
        keep = finite.ravel()
        idx = flat.ravel()[keep]
        arrays[prefix + "num_counts"] += np.bincount(idx, minlength=f * w).reshape(f, w)
        arrays[prefix + "num_sums"] += np.bincount(idx, weights=mat.ravel()[keep], minlength=f * w).reshape(f, w)
    if layout.categorical:
        counts = arrays[prefix + "cat_counts"]
        starts = _starts(np.array([c.n_columns for c in layout.categorical], dtype=np.int64))
        parts = []
        for i, cl in enumerate(layout.categorical):
            t = frame.type_error.get(cl.name)
            n_te = 0 if t is None else int(np.count_nonzero(t))
            col = frame.categorical.get(cl.name)
            if col is None:
                arrays[prefix + "cat_missing"][i] += n - n_te
                arrays[prefix + "cat_type_error"][i] += n_te
                continue
            idx, present, not_allowed = cl.columns_of(col, frame.codes_of(col))
            te = np.zeros(n, dtype=bool) if t is None else np.asarray(t, dtype=bool)
            arrays[prefix + "cat_missing"][i] += int((~present & ~te).sum())
            arrays[prefix + "cat_type_error"][i] += n_te
            arrays[prefix + "cat_unknown"][i] += not_allowed
            parts.append(idx + starts[i])
        if parts:
            counts += np.bincount(np.concatenate(parts), minlength=counts.shape[0])


# -- the reservoir frame as plain arrays -----------------------------------------------------


def _put_objects(col: np.ndarray, key: str, out: dict[str, np.ndarray]) -> None:
    col = np.asarray(col, dtype=object)
    present = not_none(col)
    text = np.full(col.shape[0], "", dtype=object)
    text[present] = col[present]
    out[key] = text.astype(str)
    out[key + ".present"] = present


def _get_objects(key: str, data: dict[str, np.ndarray]) -> np.ndarray:
    text = data[key].astype(object)
    text[~data[key + ".present"]] = None
    return text


def _frame_arrays(fr: Frame, p: str, out: dict[str, np.ndarray]) -> dict:
    meta = {
        "numeric": list(fr.numeric),
        "categorical": list(fr.categorical),
        "type_error": list(fr.type_error),
        "unknown": list(fr.unknown),
        "classes": list(fr.classes),
        "optional": [k for k in ("pred_label", "pred_proba", "pred_value", "label") if getattr(fr, k) is not None],
    }
    _put_objects(fr.event_id, p + "event_id", out)
    _put_objects(fr.source_id, p + "source_id", out)
    out[p + "event_time"] = fr.event_time
    for i, k in enumerate(fr.numeric):
        out[f"{p}num{i}"] = fr.numeric[k]
    for i, k in enumerate(fr.categorical):
        _put_objects(fr.categorical[k], f"{p}cat{i}", out)
    for i, k in enumerate(fr.type_error):
        out[f"{p}te{i}"] = fr.type_error[k]
    for i, k in enumerate(fr.unknown):
        out[f"{p}unk{i}"] = fr.unknown[k]
    for k in meta["optional"]:
        if k in ("pred_label", "label"):
            _put_objects(getattr(fr, k), p + k, out)
        else:
            out[p + k] = getattr(fr, k)
    return meta


def _frame_from_arrays(meta: dict, p: str, data: dict[str, np.ndarray]) -> Frame:
    opt = {k: (_get_objects(p + k, data) if k in ("pred_label", "label") else data[p + k]) for k in meta["optional"]}
    return Frame(
        event_id=_get_objects(p + "event_id", data),
        event_time=data[p + "event_time"],
        source_id=_get_objects(p + "source_id", data),
        numeric={k: data[f"{p}num{i}"] for i, k in enumerate(meta["numeric"])},
        categorical={k: _get_objects(f"{p}cat{i}", data) for i, k in enumerate(meta["categorical"])},
        type_error={k: data[f"{p}te{i}"] for i, k in enumerate(meta["type_error"])},
        pred_label=opt.get("pred_label"),
        pred_proba=opt.get("pred_proba"),
        classes=tuple(meta["classes"]),
        pred_value=opt.get("pred_value"),
        label=opt.get("label"),
        unknown={k: data[f"{p}unk{i}"] for i, k in enumerate(meta["unknown"])},
    )


# -- tests from summaries -------------------------------------------------------------------


@dataclass(frozen=True)
class NumericStatistics:
    """Per numeric feature (arrays of length F) the statistics of a window summary vs its reference.

    ``ks``: KS D at the fine edges (a lower bound of the exact D); ``ks_upper``: an upper
    bound of the exact D; ``cvm``: CvM T (approximation); ``wasserstein`` and
    ``wasserstein_bound`` (|approximation - exact| <= bound); ``ref_coarse``/``cur_coarse``:
    counts in the reference histogram's bins (for PSI/JS), one array per feature.
    """

    n_ref: np.ndarray
    n_cur: np.ndarray
    ks: np.ndarray
    ks_upper: np.ndarray
    cvm: np.ndarray
    wasserstein: np.ndarray
    wasserstein_bound: np.ndarray
    ref_coarse: list[np.ndarray]
    cur_coarse: list[np.ndarray]


def numeric_statistics(
    layout: SummaryLayout, counts: np.ndarray, sums: np.ndarray, cur_min: np.ndarray, cur_max: np.ndarray
) -> NumericStatistics:
    """KS, CvM and Wasserstein of every numeric feature from binned counts, O(features × bins).

    ``counts``/``sums``: the window's ``(F, width)`` fine-bin counts and value sums;
    ``cur_min``/``cur_max``: the window's extremes per feature (for the outer bins).
    """
    rc, rs = layout.ref_matrices()
    rc, cc = rc.astype(np.float64), counts.astype(np.float64)
    n = rc.sum(axis=1)
    m = cc.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fr = np.cumsum(rc, axis=1) / n[:, None]
        fc = np.cumsum(cc, axis=1) / m[:, None]
        d = fr - fc  # exact F_ref - F_cur at each bin's right end
        ks = np.abs(d).max(axis=1, initial=0.0)
        fr0 = np.concatenate((np.zeros((rc.shape[0], 1)), fr[:, :-1]), axis=1)
        fc0 = np.concatenate((np.zeros((rc.shape[0], 1)), fc[:, :-1]), axis=1)
        ks_upper = np.maximum(np.abs(fr - fc0), np.abs(fc - fr0)).max(axis=1, initial=0.0)
        # Wasserstein: each bin's mass at its mean, for both samples
        left = np.zeros_like(rc)
        right = np.zeros_like(rc)
        for i, nl in enumerate(layout.numeric):
            e = nl.edges
            if e.size == 0:
                left[i, :] = 0.0
                right[i, :] = 0.0
                continue
            nb = nl.n_bins
            left[i, 0] = min(e[0], cur_min[i]) if np.isfinite(cur_min[i]) else e[0]
            left[i, 1:nb] = e
            right[i, : nb - 1] = e
            right[i, nb - 1] = max(e[-1], cur_max[i]) if np.isfinite(cur_max[i]) else e[-1]
            left[i, nb:] = right[i, nb - 1]
            right[i, nb:] = right[i, nb - 1]
        rmean = np.where(rc > 0, rs / np.where(rc > 0, rc, 1.0), left)
        cmean = np.where(cc > 0, sums / np.where(cc > 0, cc, 1.0), left)
        # CvM: (F_ref - F_cur)^2 at the pooled points of a bin, as the mean square of a line between the
        # bin's edge values; a bin whose values all equal its left edge (mean == edge: ties) has the
        # right-edge value at every point
        tol = 1e-12 * np.maximum(np.abs(left), 1.0)
        tie = ((rc == 0) | (np.abs(rmean - left) <= tol)) & ((cc == 0) | (np.abs(cmean - left) <= tol))
        d0 = fr0 - fc0
        sq = np.where(tie, d * d, (d0 * d0 + d0 * d + d * d) / 3.0)
        cvm = n * m / (n + m) ** 2 * ((rc + cc) * sq).sum(axis=1)
        ref_first = rmean <= cmean
        x = np.empty((rc.shape[0], 2 * rc.shape[1]))
        x[:, 0::2] = np.where(ref_first, rmean, cmean)
        x[:, 1::2] = np.where(ref_first, cmean, rmean)
        x = np.maximum.accumulate(x, axis=1)
        wr = np.empty_like(x)
        wc = np.empty_like(x)
        wr[:, 0::2] = np.where(ref_first, rc, 0.0)
        wr[:, 1::2] = np.where(ref_first, 0.0, rc)
        wc[:, 0::2] = np.where(ref_first, 0.0, cc)
        wc[:, 1::2] = np.where(ref_first, cc, 0.0)
        gap = np.abs(np.cumsum(wr, axis=1) / n[:, None] - np.cumsum(wc, axis=1) / m[:, None])
        wass = (gap[:, :-1] * np.diff(x, axis=1)).sum(axis=1)
        bound = ((rc / n[:, None] + cc / m[:, None]) * (right - left)).sum(axis=1)
    ref_coarse, cur_coarse = [], []
    for i, nl in enumerate(layout.numeric):
        nb = nl.n_bins
        ref_coarse.append(np.bincount(nl.coarse, weights=rc[i, :nb], minlength=nl.n_coarse).astype(np.int64))
        cur_coarse.append(np.bincount(nl.coarse, weights=cc[i, :nb], minlength=nl.n_coarse).astype(np.int64))
    return NumericStatistics(
        n.astype(np.int64), m.astype(np.int64), ks, ks_upper, cvm, wass, bound, ref_coarse, cur_coarse
    )


def _select(layout: SummaryLayout, names: Collection[str] | None) -> tuple[list[int], list[int]]:
    num = [i for i, x in enumerate(layout.numeric) if x.binned and (names is None or x.name in names)]
    cat = [i for i, x in enumerate(layout.categorical) if x.binned and (names is None or x.name in names)]
    return num, cat


def summary_drift(
    summary: WindowSummary,
    reference: Reference,
    spec: DriftSpec,
    features: Sequence[str] | None = None,
    *,
    outputs: bool = False,
    min_samples: int = MIN_SAMPLES,
) -> DriftResult:
    """The window's univariate drift from its summary (same result type and verdict rule as
    :func:`detectors.univariate.univariate_drift`; ``engine`` is ``"summary"``).

    ``reference``: the reference the layout was built from (its rows give the chunk bands);
    ``outputs=True``: test the model outputs (``reference`` is then the
    :class:`~detectors.prediction.PredictionReference`'s reference), as
    :func:`detectors.prediction.prediction_drift`.
    """
    layout = summary.layout.outputs if outputs else summary.layout
    if layout is None:
        raise SummaryError("the summary's layout has no model outputs")
    p = "o." if outputs else "f."
    a = summary.arrays
    min_samples = max(int(min_samples), 2)
    num_idx, cat_idx = _select(layout, None if features is None else set(features))
    st = numeric_statistics(layout, a[p + "num_counts"], a[p + "num_sums"], a[p + "num_min"], a[p + "num_max"])
    num_ok = [i for i in num_idx if min(st.n_ref[i], st.n_cur[i]) >= min_samples]
    starts = _starts(np.array([c.n_columns for c in layout.categorical], dtype=np.int64))
    cat_tables = []
    for i in cat_idx:
        cl = layout.categorical[i]
        cur = a[p + "cat_counts"][starts[i] : starts[i] + cl.n_columns]
        keep = (cl.ref_counts + cur) > 0
        ra, cb = cl.ref_counts[keep], cur[keep]
        if min(int(ra.sum()), int(cb.sum())) >= min_samples:
            cat_tables.append((i, ra, cb))
    names = [layout.numeric[i].name for i in num_ok] + [layout.categorical[t[0]].name for t in cat_tables]
    wanted = [x.name for x in layout.numeric if x.name in reference.numeric] + [
        x.name for x in layout.categorical if x.name in reference.categorical
    ]
    if features is not None:
        wanted = [w for w in wanted if w in set(features)]
    skipped = [w for w in wanted if w not in names]
    # numeric
    if spec.numeric_test == "ks":
        nstat = st.ks[num_ok]
        np_ = ks_pvalue(nstat, st.n_ref[num_ok], st.n_cur[num_ok])
    else:
        nstat = st.cvm[num_ok]
        np_ = cvm_pvalue(nstat, st.n_ref[num_ok], st.n_cur[num_ok])
    z = np.empty(0)
    if num_ok:
        lens = np.array([st.ref_coarse[i].shape[0] for i in num_ok])
        npsi, njs = binned_effects(
            np.concatenate([st.ref_coarse[i] for i in num_ok]),
            np.concatenate([st.cur_coarse[i] for i in num_ok]),
            _starts(lens),
        )
    else:
        npsi, njs = z, z
    # categorical
    if cat_tables:
        ra = np.concatenate([t[1] for t in cat_tables])
        cb = np.concatenate([t[2] for t in cat_tables])
        cst = _starts(np.array([t[1].shape[0] for t in cat_tables]))
        cstat, cp, cdof = chi2_2xk(ra, cb, cst)
        cpsi, cjs = binned_effects(ra, cb, cst)
        cn = np.array([int(t[1].sum()) for t in cat_tables])
        cm = np.array([int(t[2].sum()) for t in cat_tables])
    else:
        cstat = cp = cdof = cpsi = cjs = z
        cn = cm = np.zeros(0, dtype=np.int64)
    num_names = names[: len(num_ok)]
    cat_names = names[len(num_ok) :]
    return drift_result(
        reference,
        spec,
        summary.n,
        num_names,
        cat_names,
        statistic=np.concatenate([nstat, cstat]),
        p_value=np.concatenate([np_, cp]),
        psi=np.concatenate([npsi, cpsi]),
        js=np.concatenate([njs, cjs]),
        wasserstein=st.wasserstein[num_ok],
        n_ref=np.concatenate([st.n_ref[num_ok], cn]),
        n_cur=np.concatenate([st.n_cur[num_ok], cm]),
        dof=np.concatenate([np.full(len(num_ok), np.nan), np.asarray(cdof, dtype=np.float64)]),
        skipped=skipped,
        engine="summary",
    )


def summary_quality(summary: WindowSummary, features: Sequence[FeatureSpec]) -> list[FeatureQuality]:
    """Quality counts of ``features`` (as :func:`detectors.quality.data_quality` on the window's rows)."""
    layout, a = summary.layout, summary.arrays
    index = {
        "numeric": ("num", {x.name: i for i, x in enumerate(layout.numeric)}),
        "categorical": ("cat", {x.name: i for i, x in enumerate(layout.categorical)}),
    }
    out = []
    for f in features:
        prefix, names = index[f.kind]
        if f.name not in names:
            raise SummaryError(f"feature {f.name!r} is not in the summary's layout")
        i = names[f.name]
        miss = int(a[f"f.{prefix}_missing"][i])
        out.append(
            FeatureQuality(
                f.name,
                f.kind,
                summary.n,
                miss,
                int(a[f"f.{prefix}_type_error"][i]),
                int(a["f.num_out_of_range"][i]) if f.kind == "numeric" else 0,  # a category has no range
                int(a["f.cat_unknown"][i]) if f.kind == "categorical" else 0,  # a number has no vocabulary
                0 if f.nullable else miss,
            )
        )
    return out


def summary_histograms(
    summary: WindowSummary, reference: Reference, features: Sequence[str] | None = None
) -> list[Histogram]:
    """The window's histograms over the reference's bins (as :func:`detectors.histograms.window_histograms`
    on the rows: numeric bins are unions of fine bins, categorical top-K bins unions of columns)."""
    layout, a = summary.layout, summary.arrays
    num = {x.name: i for i, x in enumerate(layout.numeric)}  # no reference values: one bin, as the rows' path
    cat = {x.name: i for i, x in enumerate(layout.categorical) if x.binned}
    starts = _starts(np.array([c.n_columns for c in layout.categorical], dtype=np.int64))
    names = list(features) if features is not None else [f.name for f in reference.features]
    out = []
    for name in names:
        if name in reference.numeric and name in num:
            nl = layout.numeric[num[name]]
            counts = np.bincount(
                nl.coarse, weights=a["f.num_counts"][num[name], : nl.n_bins], minlength=nl.n_coarse
            ).astype(np.int64)
            out.append(Histogram(name, "numeric", counts, edges=reference.numeric[name].edges))
        elif name in reference.categorical and name in cat:
            cl = layout.categorical[cat[name]]
            cref = reference.categorical[name]
            k = cref.top.shape[0]
            cols = a["f.cat_counts"][starts[cat[name]] : starts[cat[name]] + cl.n_columns]
            to_top = np.concatenate((cref.top_codes(cl.categories), np.full(cl.hash_buckets, k)))
            counts = np.bincount(to_top, weights=cols, minlength=k + 1).astype(np.int64)
            out.append(Histogram(name, "categorical", counts, labels=(*cref.top.tolist(), OTHER)))
    return out


def output_totals(summary: WindowSummary) -> tuple[dict[str, float], dict[str, int] | None]:
    """The window's mean of each numeric output and its count of each predicted class the reference
    knows (classes it never saw share hash buckets and are not named), for
    :func:`detectors.prediction.prediction_records`. The label counts are None without a label column."""
    from detectors.prediction import LABEL

    layout = summary.layout.outputs
    if layout is None:
        return {}, None
    a = summary.arrays
    counts = a["o.num_counts"].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = a["o.num_sums"].sum(axis=1) / counts
    out_means = {x.name: float(means[i]) for i, x in enumerate(layout.numeric) if counts[i] > 0}
    labels = None
    starts = _starts(np.array([c.n_columns for c in layout.categorical], dtype=np.int64))
    for i, cl in enumerate(layout.categorical):
        if cl.name == LABEL:
            cols = a["o.cat_counts"][starts[i] : starts[i] + cl.categories.shape[0]]
            labels = {c: int(v) for c, v in zip(cl.categories.tolist(), cols.tolist()) if v}
    return out_means, labels
