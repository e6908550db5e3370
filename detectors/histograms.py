"""Histograms of a window, comparable with the reference and mergeable by addition.

Bins are fixed by the :class:`~detectors.reference.Reference`, never by the
window, so histograms of different windows, partitions and workers line up:

* numeric — the reference-quantile edges (``bins`` bins, open-ended outer
  bins ``(-inf, e0)`` and ``[e_last, +inf)``, left-closed inside);
* categorical — the reference's top-K categories plus ``__other__`` (every
  other value, including categories the reference never saw).

Missing values are not counted (data quality counts them). Because the bins
are fixed, the histogram of a union of event sets is the sum of their
histograms: :func:`merge_histograms` adds counts after checking that the bins
are identical, so partitions processed by different workers combine exactly.

Sensitive features (``FeatureSpec.sensitive``) are published with Laplace
noise (:func:`laplace_noise`, sensitivity 1: one event changes one count by
one) and without edges or labels, or withheld altogether (see
:class:`~detectors.runner.Histograms`).

Records carry counts as integer fields ``b00``, ``b01``, … (bin order), numeric
edges as float fields ``e01``, ``e02``, … where ``e<i>`` is the lower (closed)
edge of bin ``i`` (bin 0 starts at -inf and the last bin ends at +inf, so
``e00`` and ``e<n>`` are not written), and categorical labels as **string field
values** ``l00``, … (label of bin ``i``) — names never become field keys
or tags, so no escaping or cardinality problem arises; labels are cut to 64
characters with control characters replaced (:func:`~detectors.reference.safe_label`).

>>> import numpy as np
>>> a = Histogram("x", "numeric", np.array([1, 2, 3]), edges=np.array([0.0, 1.0]))
>>> b = Histogram("x", "numeric", np.array([0, 5, 1]), edges=np.array([0.0, 1.0]))
>>> merge_histograms(a, b).counts.tolist()
[1, 7, 4]
>>> sorted(histogram_fields(a))
['b00', 'b01', 'b02', 'e01', 'e02', 'n', 'n_bins', 'noised']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import reduce

import numpy as np

from detectors.errors import InvalidInputError
from detectors.frame import Frame
from detectors.reference import (
    OTHER,
    Reference,
    WindowColumns,
    safe_label,
    sorted_bin_counts,
)


class HistogramMismatch(InvalidInputError):
    """Two histograms with different features or bins cannot be merged."""


@dataclass(frozen=True, eq=False)
class Histogram:
    """Counts of one feature over reference-defined bins (see module docstring)."""

    feature: str
    kind: str  # "numeric" | "categorical"
    counts: np.ndarray  # int64 per bin
    edges: np.ndarray | None = None  # numeric: interior edges, len(counts) - 1
    labels: tuple[str, ...] | None = None  # categorical: top-K labels + "__other__"
    noised: bool = False
    epsilon: float | None = None  # Laplace scale 1/epsilon when noised

    @property
    def n(self) -> int:
        return int(np.asarray(self.counts).sum())

    def same_bins(self, other: Histogram) -> bool:
        if (self.feature, self.kind) != (other.feature, other.kind):
            return False
        if self.counts.shape != other.counts.shape:
            return False
        if self.kind == "numeric":
            if self.edges is None or other.edges is None:
                return self.edges is None and other.edges is None
            return np.array_equal(self.edges, other.edges)
        return self.labels == other.labels


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of (unsorted) numeric ``values`` per reference bin; NaN / +-inf are not counted."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    idx = np.searchsorted(edges, values, side="right")  # x in [e_{k-1}, e_k) -> k
    return np.bincount(idx, minlength=edges.shape[0] + 1).astype(np.int64)


def _labels(reference: Reference, feature: str) -> tuple[str, ...]:
    return tuple(reference.categorical[feature].top.tolist()) + (OTHER,)


def window_histograms(
    frame: Frame, reference: Reference, features: Sequence[str] | None = None, *, columns: WindowColumns | None = None
) -> list[Histogram]:
    """Histogram of each feature (default: all of the reference) in ``frame``.

    ``columns``: the frame's prepared columns if already computed (the drift test
    sorts them anyway; counting bins of sorted values is one ``searchsorted``).
    """
    names = list(features) if features is not None else [f.name for f in reference.features]
    columns = columns if columns is not None else WindowColumns(frame)
    num = [n for n in names if n in reference.numeric]
    sorted_cols = dict(zip(num, columns.numeric(num)))
    out = []
    for name in names:
        if name in reference.numeric:
            edges = reference.numeric[name].edges
            out.append(Histogram(name, "numeric", sorted_bin_counts(sorted_cols[name], edges), edges=edges))
        elif name in reference.categorical:
            cref = reference.categorical[name]
            codes, _ = columns.category_codes(name, cref)
            counts = np.bincount(cref.top_bins(codes), minlength=cref.top.shape[0] + 1)
            counts = counts.astype(np.int64)
            out.append(Histogram(name, "categorical", counts, labels=_labels(reference, name)))
    return out


def reference_histograms(reference: Reference, features: Sequence[str] | None = None) -> list[Histogram]:
    """The reference's own histograms (precomputed when it was built)."""
    names = list(features) if features is not None else [f.name for f in reference.features]
    out = []
    for name in names:
        if name in reference.numeric:
            r = reference.numeric[name]
            out.append(Histogram(name, "numeric", r.counts.copy(), edges=r.edges))
        elif name in reference.categorical:
            c = reference.categorical[name]
            out.append(Histogram(name, "categorical", c.top_counts.copy(), labels=_labels(reference, name)))
    return out


def merge_histograms(*hists: Histogram) -> Histogram:
    """Sum of histograms over identical bins (partitions, workers, consecutive windows).

    Raises :class:`HistogramMismatch` when features or bins differ. The result is
    noised if any input was (independent noise adds; each event is still in one input).
    """
    if not hists:
        raise ValueError("merge_histograms needs at least one histogram")

    def add(a: Histogram, b: Histogram) -> Histogram:
        if not a.same_bins(b):
            raise HistogramMismatch(
                f"cannot merge histograms of {a.feature!r} ({a.kind}, {a.counts.shape[0]} bins) "
                f"and {b.feature!r} ({b.kind}, {b.counts.shape[0]} bins): bins differ"
            )
        eps = [e for e in (a.epsilon, b.epsilon) if e is not None]
        return replace(
            a,
            counts=np.asarray(a.counts) + np.asarray(b.counts),
            noised=a.noised or b.noised,
            epsilon=min(eps) if eps else None,
        )

    return reduce(add, hists)


def merge_all(groups: Iterable[Sequence[Histogram]]) -> list[Histogram]:
    """Merge lists of histograms (one list per partition/worker) feature by feature."""
    merged: dict[str, Histogram] = {}
    for group in groups:
        for h in group:
            merged[h.feature] = merge_histograms(merged[h.feature], h) if h.feature in merged else h
    return list(merged.values())


def laplace_noise(counts, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """``counts`` with Laplace(0, 1/epsilon) noise, rounded and clipped at 0 (int64).

    One event changes one bin by one (L1 sensitivity 1), so this is
    epsilon-differentially private for one release; rounding and clipping are
    post-processing and keep the guarantee. Releases compose: publishing the
    same events again with fresh noise spends epsilon again.

    >>> out = laplace_noise([10, 0, 5], 1.0, np.random.default_rng(0))
    >>> out.dtype, out.shape, bool((out >= 0).all())
    (dtype('int64'), (3,), True)
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    c = np.asarray(counts, dtype=np.float64)
    noisy = c + rng.laplace(0.0, 1.0 / epsilon, size=c.shape)
    return np.clip(np.rint(noisy), 0, None).astype(np.int64)


def privatize(h: Histogram, epsilon: float, rng: np.random.Generator) -> Histogram:
    """A sensitive feature's histogram: noised counts, no edges, no labels."""
    return Histogram(
        h.feature,
        h.kind,
        laplace_noise(h.counts, epsilon, rng),
        edges=None,
        labels=None,
        noised=True,
        epsilon=float(epsilon),
    )


def histogram_fields(h: Histogram) -> dict[str, float | int | str]:
    """Record fields: ``b<i>`` count, ``e<i>`` lower edge (numeric, i >= 1), ``l<i>`` label of bin i."""
    fields: dict[str, float | int | str] = {f"b{i:02d}": int(c) for i, c in enumerate(np.asarray(h.counts))}
    if h.edges is not None:
        fields.update({f"e{i + 1:02d}": float(e) for i, e in enumerate(h.edges)})
    if h.labels is not None:
        fields.update({f"l{i:02d}": safe_label(lab) for i, lab in enumerate(h.labels)})
    fields["n"] = h.n
    fields["n_bins"] = int(np.asarray(h.counts).shape[0])
    fields["noised"] = int(h.noised)
    if h.epsilon is not None:
        fields["epsilon"] = float(h.epsilon)
    return fields


def histogram_from_fields(feature: str, kind: str, fields: dict) -> Histogram:
    """Inverse of :func:`histogram_fields` (for readers of the stored points)."""
    nb = int(fields["n_bins"])
    counts = np.array([int(fields[f"b{i:02d}"]) for i in range(nb)], dtype=np.int64)
    edges = None
    if "e01" in fields or (kind == "numeric" and nb == 1 and not fields.get("noised")):
        edges = np.array([float(fields[f"e{i:02d}"]) for i in range(1, nb)])
    labels = None
    if "l00" in fields:
        labels = tuple(str(fields[f"l{i:02d}"]) for i in range(nb))
    eps = fields.get("epsilon")
    return Histogram(
        feature,
        kind,
        counts,
        edges=edges,
        labels=labels,
        noised=bool(fields.get("noised", 0)),
        epsilon=None if eps is None else float(eps),
    )
