"""Multivariate drift: MMD and PCA reconstruction vs scikit-learn / scipy, joint shifts, false alarms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.metrics.pairwise import rbf_kernel as sk_rbf

from detectors.frame import Frame
from detectors.multivariate import (
    EngineUnavailable,
    MMDDrift,
    PCADrift,
    RowEncoder,
    _permuted_mmd2,
    median_sigma,
    mmd2_unbiased,
    rbf_kernel,
)


def test_kernel_and_unbiased_mmd_match_sklearn_and_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.normal(0.5, 1, size=(30, 3))
    sigma = 1.7
    z = np.vstack([x, y])
    k = rbf_kernel(z, z, sigma)
    np.testing.assert_allclose(k, sk_rbf(z, z, gamma=1 / (2 * sigma**2)), atol=1e-12)
    kxx, kyy, kxy = (
        sk_rbf(x, x, gamma=1 / (2 * sigma**2)),
        sk_rbf(y, y, gamma=1 / (2 * sigma**2)),
        sk_rbf(x, y, gamma=1 / (2 * sigma**2)),
    )
    n, m = len(x), len(y)
    expected = (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )
    assert mmd2_unbiased(k, n) == pytest.approx(expected, rel=1e-12)


def test_median_heuristic_is_the_lower_median_of_distinct_pairs():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(25, 4))
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    off = np.sort(d[~np.eye(25, dtype=bool)])
    assert median_sigma(z) == pytest.approx(np.sqrt(0.5 * off[off.size // 2 - 1]), rel=1e-10)


def test_vectorised_permutations_equal_a_naive_loop():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(30, 2))
    k = rbf_kernel(z, z, 1.0)
    perms = np.argsort(rng.random((7, 30)), axis=1)
    got = _permuted_mmd2(k, 18, perms)
    for i, p in enumerate(perms):
        assert got[i] == pytest.approx(mmd2_unbiased(k[np.ix_(p, p)], 18), rel=1e-10)


def _flip(rng, n):  # same N(0,1) marginals, correlation +0.9 -> -0.9
    ref = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], n)
    cur = rng.multivariate_normal([0, 0], [[1, -0.9], [-0.9, 1]], n)
    return ref, cur


def test_joint_shift_invisible_per_feature_is_found():
    rng = np.random.default_rng(3)
    ref, cur = _flip(rng, 600)
    per_feature = [stats.ks_2samp(ref[:, j], cur[:, j]).pvalue for j in range(2)]
    assert min(per_feature) > 0.05 / 2  # Bonferroni KS sees nothing
    assert MMDDrift(ref, n_permutations=100, seed=0).test(cur).drift
    assert PCADrift(ref, seed=0).test(cur).drift


def test_mmd_false_alarm_rate_and_p_value_range():
    rng = np.random.default_rng(4)
    alarms, ps = 0, []
    for _ in range(60):  # fresh reference each time: the marginal false-alarm rate
        det = MMDDrift(rng.normal(size=(80, 3)), n_permutations=50, seed=int(rng.integers(1e9)))
        r = det.test(rng.normal(size=(80, 3)))
        alarms += r.drift
        ps.append(r.p_value)
    assert alarms <= 9  # level 0.05: binomial(60, .05) exceeds 9 with probability < 0.2 %
    assert min(ps) >= 1 / 51 and max(ps) <= 1
    assert stats.kstest(ps, "uniform").pvalue > 0.001


def test_mmd_subsamples_to_bound_cost():
    rng = np.random.default_rng(5)
    det = MMDDrift(rng.normal(size=(3000, 2)), max_ref=200, max_test=150, n_permutations=20)
    r = det.test(rng.normal(size=(5000, 2)))
    assert (r.n_ref, r.n_window) == (200, 150)


def test_pca_errors_and_test_match_sklearn_and_scipy():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    det = PCADrift(x, variance=0.8, seed=1)
    idx = np.random.default_rng(1).permutation(400)
    fit = x[idx[:200]]
    pca = PCA(n_components=det.n_components).fit(fit)
    assert pca.explained_variance_ratio_.sum() >= 0.8 - 1e-9
    assert pca.explained_variance_ratio_[:-1].sum() < 0.8
    w = rng.normal(size=(150, 5)) @ rng.normal(size=(5, 5))
    rec = pca.inverse_transform(pca.transform(w))
    np.testing.assert_allclose(det.errors(w), np.linalg.norm(w - rec, axis=1), rtol=1e-8)
    r = det.test(w)
    expected = stats.ttest_ind(det.errors(w), det.errors(x[idx[200:]]), equal_var=False)
    assert r.p_value == pytest.approx(expected.pvalue, rel=1e-10)
    assert r.statistic == pytest.approx(det.errors(w).mean())


def test_pca_false_alarm_rate():
    rng = np.random.default_rng(7)
    alarms = sum(PCADrift(rng.normal(size=(300, 4)), seed=i).test(rng.normal(size=(200, 4))).drift for i in range(200))
    assert alarms <= 19  # 5 % of 200 = 10; binomial tail above 19 < 0.5 %


def test_row_encoder_standardises_imputes_and_one_hots():
    n = 6
    f = Frame.from_columns(
        event_id=np.arange(n).astype(str),
        event_time=np.zeros(n),
        numeric={"x": np.array([1.0, 2, 3, 4, 5, 6])},
        categorical={"c": np.array(["a", "a", "b", "a", "b", "z"], dtype=object)},
    )
    enc = RowEncoder(["x"], ["c"], max_categories=2).fit(f)
    g = Frame.from_columns(
        event_id=np.arange(3).astype(str),
        event_time=np.zeros(3),
        numeric={"x": np.array([3.5, np.nan, 10.0])},
        categorical={"c": np.array(["b", None, "new"], dtype=object)},
    )
    z = enc.transform(g)
    assert z.shape == (3, 1 + 3)
    assert z[0, 0] == pytest.approx(0.0) and z[1, 0] == 0.0  # mean; missing -> mean
    assert z[2, 0] == pytest.approx((10 - 3.5) / np.std([1, 2, 3, 4, 5, 6]))
    np.testing.assert_allclose(z[:, 1:] * np.sqrt(2), [[0, 1, 0], [0, 0, 0], [0, 0, 1]])


def test_alibi_mmd_engine_needs_a_deep_learning_backend():
    with pytest.raises(EngineUnavailable, match="PyTorch or TensorFlow"):
        MMDDrift(np.zeros((10, 2)) + np.arange(10)[:, None], engine="alibi")
