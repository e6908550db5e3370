"""Multiple-testing corrections against scipy's BH adjustment and alibi-detect's fdr."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from detectors.correction import bh_threshold, correct


def test_bonferroni_divides_the_level_by_the_number_of_tests():
    r = correct([0.001, 0.004, 0.2, 0.9], level=0.05, method="bonferroni")
    assert r.threshold == pytest.approx(0.0125)
    assert r.reject.tolist() == [True, True, False, False]
    assert (r.n_tests, r.n_rejected, r.any) == (4, 2, True)


def test_none_uses_the_level_as_is():
    r = correct([0.01, 0.04, 0.06], level=0.05, method="none")
    assert r.threshold == 0.05 and r.reject.tolist() == [True, True, False]


def test_nan_p_values_are_not_tests():
    r = correct([0.001, np.nan, 0.5], level=0.05, method="bonferroni")
    assert r.n_tests == 2 and r.threshold == pytest.approx(0.025)
    assert r.reject.tolist() == [True, False, False]


@pytest.mark.parametrize("seed", range(20))
def test_fdr_rejects_what_benjamini_hochberg_rejects(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    # a mix of nulls and signals so that some, none or all are rejected
    p = np.concatenate([rng.uniform(size=n), rng.uniform(0, 0.01, size=int(rng.integers(0, 5)))])
    r = correct(p, level=0.1, method="fdr")
    adjusted = false_discovery_control(p, method="bh")
    np.testing.assert_array_equal(r.reject, adjusted <= 0.1)


def test_fdr_threshold_is_alibis():
    from alibi_detect.utils.statstest import fdr

    rng = np.random.default_rng(0)
    for _ in range(50):
        p = np.concatenate([rng.uniform(size=15), rng.uniform(0, 0.005, size=int(rng.integers(0, 4)))])
        drift, thr = fdr(p, q_val=0.05)
        ours = correct(p, 0.05, "fdr")
        assert ours.any == bool(drift)
        if drift:
            assert ours.threshold == pytest.approx(float(thr))
        else:
            assert ours.threshold == pytest.approx(0.05 / p.shape[0])  # documented choice


def test_bh_threshold_without_rejections_is_level_over_n():
    assert bh_threshold(np.array([0.5, 0.9]), 0.05) == pytest.approx(0.025)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown correction"):
        correct([0.1], 0.05, "holm")
    with pytest.raises(ValueError, match="level"):
        correct([0.1], 1.5, "bonferroni")
