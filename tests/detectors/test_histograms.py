"""Histograms: bins fixed by the reference, exact merge across partitions, Laplace noise."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.frame import concat
from detectors.histograms import (
    Histogram,
    HistogramMismatch,
    bin_counts,
    histogram_fields,
    histogram_from_fields,
    laplace_noise,
    merge_all,
    merge_histograms,
    privatize,
    reference_histograms,
    window_histograms,
)
from detectors.reference import OTHER, Reference, sorted_bin_counts
from tests.detectors.drift_data import feature_specs, make_frame


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(17)


def test_numeric_bins_are_left_closed_with_open_outer_bins():
    edges = np.array([0.0, 1.0, 2.0])
    values = np.array([-5.0, 0.0, 0.5, 1.0, 1.999, 2.0, 1e9, np.nan])
    assert bin_counts(values, edges).tolist() == [1, 2, 2, 2]
    assert sorted_bin_counts(np.sort(values[:-1]), edges).tolist() == [1, 2, 2, 2]


def test_window_histograms_use_the_reference_bins(rng):
    specs = feature_specs(3, 2)
    ref = Reference.from_frame(make_frame(rng, 2000, n_numeric=3, n_categorical=2), specs, bins=8, top_k=4)
    w = make_frame(rng, 500, n_numeric=3, n_categorical=2, missing=0.1)
    hists = {h.feature: h for h in window_histograms(w, ref)}
    x = w.numeric["x1"]
    edges = ref.numeric["x1"].edges
    exp = np.histogram(x[~np.isnan(x)], bins=np.concatenate(([-np.inf], edges, [np.inf])))[0]
    np.testing.assert_array_equal(hists["x1"].counts, exp)
    assert hists["x1"].edges is edges
    c = w.categorical["c0"]
    top = ref.categorical["c0"].top.tolist()
    assert hists["c0"].labels == tuple(top) + (OTHER,)
    present = [v for v in c if v is not None]
    exp_c = [sum(v == t for v in present) for t in top] + [sum(v not in top for v in present)]
    assert hists["c0"].counts.tolist() == exp_c
    ref_h = {h.feature: h for h in reference_histograms(ref)}
    assert ref_h["x1"].counts.sum() == 2000 and ref_h["c0"].counts.sum() == 2000


def test_histograms_merge_across_partitions_exactly(rng):
    specs = feature_specs(3, 2)
    ref = Reference.from_frame(make_frame(rng, 2000, n_numeric=3, n_categorical=2), specs)
    parts = [
        make_frame(rng, n, n_numeric=3, n_categorical=2, missing=0.05, shift={"x0": 0.4}) for n in (100, 333, 1, 800)
    ]
    per_part = [window_histograms(p, ref) for p in parts]
    merged = {h.feature: h for h in merge_all(per_part)}
    whole = {h.feature: h for h in window_histograms(concat(parts), ref)}
    assert merged.keys() == whole.keys()
    for name, h in whole.items():
        np.testing.assert_array_equal(merged[name].counts, h.counts)
        assert merged[name].same_bins(h)
    # associative and commutative
    a, b, c = (g[0] for g in per_part[:3])
    np.testing.assert_array_equal(
        merge_histograms(a, merge_histograms(b, c)).counts, merge_histograms(merge_histograms(c, a), b).counts
    )


def test_merge_refuses_different_bins():
    a = Histogram("x", "numeric", np.array([1, 2]), edges=np.array([0.0]))
    with pytest.raises(HistogramMismatch, match="bins differ"):
        merge_histograms(a, Histogram("x", "numeric", np.array([1, 2]), edges=np.array([1.0])))
    with pytest.raises(HistogramMismatch):
        merge_histograms(a, Histogram("y", "numeric", np.array([1, 2]), edges=np.array([0.0])))
    c = Histogram("c", "categorical", np.array([1, 2]), labels=("a", OTHER))
    with pytest.raises(HistogramMismatch):
        merge_histograms(c, Histogram("c", "categorical", np.array([1, 2]), labels=("b", OTHER)))


def test_laplace_noise_has_the_right_scale():
    rng = np.random.default_rng(0)
    counts = np.full(20000, 1000)
    for eps in (0.5, 2.0):
        noisy = laplace_noise(counts, eps, rng)
        err = noisy - counts
        assert noisy.dtype == np.int64
        assert abs(err.mean()) < 0.05 / eps
        # Laplace(b) has variance 2 b^2 (rounding adds ~1/12)
        assert err.var() == pytest.approx(2 / eps**2 + 1 / 12, rel=0.06)
    assert (laplace_noise(np.zeros(1000), 0.1, rng) >= 0).all()  # clipped
    with pytest.raises(ValueError, match="epsilon"):
        laplace_noise(counts, 0.0, rng)


def test_privatize_drops_edges_and_labels():
    h = Histogram("x", "numeric", np.array([5, 6, 7]), edges=np.array([0.0, 1.0]))
    p = privatize(h, 1.0, np.random.default_rng(1))
    assert p.noised and p.epsilon == 1.0 and p.edges is None and p.labels is None
    f = histogram_fields(p)
    assert not any(k.startswith(("e", "l")) and k[1:].isdigit() for k in f)
    assert f["noised"] == 1 and f["epsilon"] == 1.0


def test_fields_roundtrip():
    h = Histogram("c", "categorical", np.array([3, 0, 9]), labels=("a,b c=d", "x\ny", OTHER))
    f = histogram_fields(h)
    assert f["l00"] == "a,b c=d" and f["l01"] == "x?y"  # safe: a value, control chars replaced
    back = histogram_from_fields("c", "categorical", f)
    assert back.counts.tolist() == [3, 0, 9] and back.labels == ("a,b c=d", "x?y", OTHER)
    n = Histogram("x", "numeric", np.array([1, 2, 3]), edges=np.array([0.5, 1.5]))
    f = histogram_fields(n)
    # e<i> is the lower edge of bin i: bin 0 = (-inf, 0.5), bin 1 = [0.5, 1.5), bin 2 = [1.5, inf)
    assert (f["e01"], f["e02"]) == (0.5, 1.5) and "e00" not in f and "e03" not in f
    back = histogram_from_fields("x", "numeric", f)
    assert back.same_bins(n) and back.counts.tolist() == [1, 2, 3]
