"""The merged-sample statistics (KS D, Wasserstein, CvM T) equal scipy's, ties and signed zeros included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors.twosample import _merge_stats


def samples(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    n, m = int(rng.integers(2, 400)), int(rng.integers(2, 400))
    if kind == "ties":  # rounded: many equal values within and across the samples
        r, c = np.round(rng.normal(size=n), 1), np.round(rng.normal(0.2, 1, size=m), 1)
    elif kind == "zeros":  # -0.0 in one sample, 0.0 in the other: equal values
        r = np.concatenate((np.zeros(5), rng.normal(size=n)))
        c = np.concatenate((np.full(7, -0.0), rng.normal(size=m)))
    else:
        r, c = rng.normal(size=n), rng.standard_t(3, size=m)
    return np.sort(r), np.sort(c)


@pytest.mark.parametrize("kind", ["continuous", "ties", "zeros"])
def test_merged_statistics_equal_scipys(kind):
    rng = np.random.default_rng({"continuous": 0, "ties": 1, "zeros": 2}[kind])
    for _ in range(40):
        r, c = samples(rng, kind)
        ks, w, t = _merge_stats(r, c, cvm=True)
        assert ks == pytest.approx(stats.ks_2samp(r, c).statistic, abs=1e-12)
        assert w == pytest.approx(stats.wasserstein_distance(r, c), rel=1e-9, abs=1e-12)
        assert t == pytest.approx(stats.cramervonmises_2samp(r, c).statistic, rel=1e-9, abs=1e-12)
        ks2, w2, t2 = _merge_stats(r, c, cvm=False)
        assert (ks2, w2) == (ks, w) and np.isnan(t2)
