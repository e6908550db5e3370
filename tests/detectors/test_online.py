"""Online CvM / FET detectors: statistics vs scipy, engines vs alibi-detect, ERT, cache, bounds."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import stats

from detectors.online import (
    CalibrationError,
    CVMOnline,
    FETOnline,
    _alibi_cvm,
    _alibi_fet,
    _simulate_cvm,
    calibration_key,
    cvm_window_stats,
    fet_window_stats,
    normalise_cvm,
)


def _standardised_scipy(ref: np.ndarray, win: np.ndarray) -> float:
    t = stats.cramervonmises_2samp(ref, win).statistic
    n, w = len(ref), len(win)
    return float(normalise_cvm(t * (n + w) ** 2 / (n * w), n, w))


def test_cvm_window_stats_match_scipy():
    rng = np.random.default_rng(0)
    ref, s = rng.normal(size=300), rng.normal(0.3, 1, size=120)
    got = cvm_window_stats(ref, s, 50)
    assert got.shape == (71,)
    for j in (0, 17, 70):
        assert got[j] == pytest.approx(_standardised_scipy(ref, s[j : j + 50]), rel=1e-9, abs=1e-9)


def test_cvm_window_stats_handle_ties_exactly():
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 5, 200).astype(float)
    s = rng.integers(0, 6, 90).astype(float)

    def brute(r, w):
        pool = np.concatenate([r, w])
        f = (r[None, :] <= pool[:, None]).mean(1)
        g = (w[None, :] <= pool[:, None]).mean(1)
        return normalise_cvm(((f - g) ** 2).sum(), len(r), len(w))

    got = cvm_window_stats(ref, s, 40)
    for j in (0, 25, 50):
        assert got[j] == pytest.approx(brute(ref, s[j : j + 40]), rel=1e-12)


def test_null_simulation_equals_direct_statistic():
    """The closed-form simulation (summed-area tables) gives the direct statistic of the same data."""
    n, ws, t_max = 40, (5, 12), 23
    sim = _simulate_cvm(n, ws, t_max, 3, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    ref = np.sort(rng.random((3, n)), axis=1)
    s = rng.random((3, t_max))
    for b in range(3):
        for k, w in enumerate(ws):
            np.testing.assert_allclose(sim[b, w - 1 :, k], cvm_window_stats(ref[b], s[b], w), rtol=1e-10)
            assert np.isnan(sim[b, : w - 1, k]).all()


def test_fet_statistic_is_one_minus_fisher_exact():
    rng = np.random.default_rng(2)
    ref = (rng.random(300) < 0.2).astype(float)
    s = (rng.random(80) < 0.35).astype(float)
    w = 30
    got = fet_window_stats(ref, s, w)
    for j in (0, 20, 50):
        k = s[j : j + w].sum()
        table = [[k, w - k], [ref.sum(), len(ref) - ref.sum()]]
        p = stats.fisher_exact(table, alternative="greater").pvalue
        assert got[j] == pytest.approx(1 - p, abs=1e-12)


def _alibi_twin(det, kind: str):
    """A copy of ``det`` running alibi-detect with the same thresholds."""
    twin = copy.copy(det)
    twin.engine = "alibi"
    if kind == "cvm":
        twin._alibi = _alibi_cvm(det, {"thresholds": det.thresholds})
    else:
        twin._alibi = _alibi_fet(det, {"thresholds": det.thresholds, "permit": det.permit_probs})
    twin.reset()
    return twin


def test_cvm_engines_same_statistics_and_verdicts():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(200, 2))
    nat = CVMOnline(ref, ert=100, window_sizes=(10, 30), n_bootstraps=1000, seed=1, reset_on_drift=False)
    ali = _alibi_twin(nat, "cvm")
    x = np.concatenate([rng.normal(size=(150, 2)), rng.normal(size=(100, 2)) + [0.8, 0.0]])
    a, b = nat.update(x[:70]), nat.update(x[70:])  # the native engine in two batches
    r = ali.update(x)
    s_nat = np.concatenate([a.stats, b.stats])
    d_nat = np.concatenate([a.drift, b.drift])
    fin = np.isfinite(r.stats)
    assert np.array_equal(fin, np.isfinite(s_nat))
    np.testing.assert_allclose(s_nat[fin], r.stats[fin], atol=1e-5)  # alibi computes in float32
    assert d_nat.sum() > 0
    assert np.array_equal(d_nat, r.drift)


def test_fet_engines_same_statistics_and_verdicts():
    rng = np.random.default_rng(4)
    ref = (rng.random((300, 1)) < 0.3).astype(float)
    nat = FETOnline(ref, ert=100, window_sizes=(10, 30), n_bootstraps=2000, seed=1, reset_on_drift=False)
    ali = _alibi_twin(nat, "fet")
    x = np.concatenate([rng.random((150, 1)) < 0.3, rng.random((100, 1)) < 0.55]).astype(float)
    a, b = nat.update(x[:33]), nat.update(x[33:])
    r = ali.update(x)
    s_nat = np.concatenate([a.stats, b.stats])
    d_nat = np.concatenate([a.drift, b.drift])
    fin = np.isfinite(r.stats)
    np.testing.assert_allclose(s_nat[fin], r.stats[fin], atol=1e-6)
    # verdicts agree except where a float32 statistic ties with its threshold
    near = np.abs(r.stats - r.thresholds) < 1e-5
    assert np.array_equal(d_nat[~near], r.drift[~near])
    assert d_nat.sum() > 10


def test_cvm_thresholds_agree_with_alibi_calibration():
    """Same scheme (Ross et al.): settled thresholds agree within Monte-Carlo error.

    Early thresholds differ a little more: alibi-detect 0.13's simulation
    (``_ids_to_stats``) evaluates the window-CDF term at the points of the
    window one step earlier (an off-by-one; its live ``score`` is exact), while
    the native simulation is checked above to equal the exact statistic.
    """
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 1))
    ali = CVMOnline(x, ert=50, window_sizes=(10, 25), n_bootstraps=2000, seed=3, engine="alibi")
    nat = CVMOnline(x, ert=50, window_sizes=(10, 25), n_bootstraps=2000, seed=3)
    settled = slice(25, 45)
    assert np.nanmean(nat.thresholds[settled]) == pytest.approx(np.nanmean(ali.thresholds[settled]), rel=0.06)


def test_fet_thresholds_agree_with_alibi_in_steady_state():
    rng = np.random.default_rng(6)
    ref = (rng.random((500, 1)) < 0.25).astype(float)
    ali = FETOnline(ref, ert=100, window_sizes=(20,), n_bootstraps=3000, seed=2, engine="alibi")
    nat = FETOnline(ref, ert=100, window_sizes=(20,), n_bootstraps=3000, seed=2)
    assert np.nanmedian(nat.thresholds[20:]) == pytest.approx(np.nanmedian(ali.thresholds[20:]), abs=0.01)


@pytest.mark.parametrize("kind", ["cvm", "fet"])
def test_run_length_under_no_change_is_close_to_ert(kind, tmp_path):
    rng = np.random.default_rng(7)
    ert, ws = 150, (10, 30)
    runs = []
    for r in range(6):  # several references: ERT is calibrated over references
        if kind == "cvm":
            det = CVMOnline(
                rng.normal(size=200), ert=ert, window_sizes=ws, n_bootstraps=3000, seed=1, cache_dir=tmp_path
            )
            runs += det.update(rng.normal(size=8000)).run_lengths
        else:
            ref = rng.random(400) < 0.2
            det = FETOnline(ref, ert=ert, window_sizes=ws, n_bootstraps=3000, seed=r)
            runs += det.update((rng.random(8000) < ref.mean()).astype(float)).run_lengths
    mean_run = np.mean(np.asarray(runs) - (min(ws) - 1))
    assert len(runs) > 150
    assert 0.75 * ert < mean_run < 1.3 * ert, mean_run


def test_large_ert_fet_calibration_is_cheap_and_quiet():
    rng = np.random.default_rng(8)
    ref = (rng.random(3000) < 0.1).astype(float)
    det = FETOnline(ref, ert=200_000, window_sizes=(100, 300), n_bootstraps=5000, seed=0, tail_steps=2000)
    assert det.hazards[-1, 0] == pytest.approx(1 / 200_000, rel=0.3)
    res = det.update((rng.random(50_000) < 0.1).astype(float))
    assert res.n_drift <= 2
    res = det.update((rng.random(3000) < 0.25).astype(float))  # error rate 10% -> 25%
    assert res.first_drift is not None and res.first_drift < 400


def test_detects_shift_quickly_and_resets():
    rng = np.random.default_rng(9)
    det = CVMOnline(rng.normal(size=500), ert=200, window_sizes=(20,), n_bootstraps=1000, seed=1)
    res = det.update(np.concatenate([rng.normal(size=100), rng.normal(3, 1, size=100)]))
    after = res.drift[100:]
    assert after.any() and np.argmax(after) < 20
    assert res.resets == res.n_drift and res.run_lengths


def test_state_is_bounded():
    rng = np.random.default_rng(10)
    nat = CVMOnline(rng.normal(size=100), ert=50, window_sizes=(5, 15), n_bootstraps=500, seed=1)
    ali = _alibi_twin(nat, "cvm")
    x = rng.normal(size=3000)
    nat.update(x)
    ali.update(x[:400])
    assert nat._tail.shape[0] <= 14
    assert ali._alibi.xs.shape[0] <= 15 and ali._alibi.test_stats.shape[0] <= 1


def test_threshold_cache_is_written_and_reused(tmp_path):
    rng = np.random.default_rng(11)
    a = CVMOnline(rng.normal(size=100), ert=50, window_sizes=(5, 15), n_bootstraps=500, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and files[0].stem == a.cache_key and not a.from_cache
    # CvM thresholds are distribution-free: another reference of the same size reuses them
    b = CVMOnline(rng.normal(5, 2, size=100), ert=50, window_sizes=(5, 15), n_bootstraps=500, cache_dir=tmp_path)
    assert b.from_cache and np.array_equal(a.thresholds, b.thresholds, equal_nan=True)
    c = CVMOnline(rng.normal(size=100), ert=60, window_sizes=(5, 15), n_bootstraps=500, cache_dir=tmp_path)
    assert not c.from_cache and len(list(tmp_path.glob("*.npz"))) == 2
    files[0].write_bytes(b"torn")  # a damaged file is recalibrated, not trusted
    d = CVMOnline(rng.normal(size=100), ert=50, window_sizes=(5, 15), n_bootstraps=500, cache_dir=tmp_path)
    assert not d.from_cache and np.array_equal(a.thresholds, d.thresholds, equal_nan=True)
    f1 = FETOnline(np.r_[np.zeros(80), np.ones(20)], ert=50, window_sizes=(10,), n_bootstraps=500, cache_dir=tmp_path)
    f2 = FETOnline(np.r_[np.zeros(80), np.ones(20)], ert=50, window_sizes=(10,), n_bootstraps=500, cache_dir=tmp_path)
    assert f2.from_cache and np.array_equal(f1.thresholds, f2.thresholds, equal_nan=True)
    assert calibration_key("fet", n=1) != calibration_key("cvm", n=1)


def test_bad_input_is_refused_clearly():
    with pytest.raises(CalibrationError, match="NaN"):
        CVMOnline([1.0, np.nan, 2.0], ert=50, window_sizes=(2,), n_bootstraps=500)
    with pytest.raises(CalibrationError, match="n_bootstraps"):
        CVMOnline(np.arange(50.0), ert=5000, window_sizes=(5,), n_bootstraps=100)
    with pytest.raises(CalibrationError, match="0/1"):
        FETOnline([0.0, 0.5, 1.0], ert=50, window_sizes=(2,), n_bootstraps=500)
    with pytest.raises(CalibrationError, match="all 0s"):
        FETOnline(np.zeros(20), ert=50, window_sizes=(2,), n_bootstraps=500)
    det = FETOnline(np.r_[np.zeros(30), np.ones(10)], ert=50, window_sizes=(5,), n_bootstraps=500)
    with pytest.raises(ValueError, match="0/1"):
        det.update([0.0, 2.0])
    with pytest.raises(ValueError, match="ert"):
        CVMOnline(np.arange(50.0), ert=1, window_sizes=(5,), n_bootstraps=100)


@pytest.mark.parametrize("kind", ["cvm", "fet"])
def test_a_resumed_run_equals_the_uninterrupted_one(kind):
    """run_state() / resume(): a restarted process goes on with the same statistics (no reset)."""
    rng = np.random.default_rng(12)
    if kind == "cvm":
        ref, x = rng.normal(size=300), rng.normal(size=400)

        def make():
            return CVMOnline(ref, ert=5000, window_sizes=(10, 30), n_bootstraps=6000, seed=1)
    else:
        ref, x = (rng.random(400) < 0.2).astype(float), (rng.random(400) < 0.2).astype(float)

        def make():
            return FETOnline(ref, ert=5000, window_sizes=(10, 30), n_bootstraps=500, seed=1)

    whole = make()
    full = whole.update(x)
    assert full.n_drift == 0  # quiet: no reset inside, so the statistics are comparable one to one
    first = make()
    head = first.update(x[:157])
    resumed = make()
    resumed.resume(first.run_state())
    tail = resumed.update(x[157:])
    assert resumed.t == whole.t == 400
    np.testing.assert_allclose(np.r_[head.stats, tail.stats], full.stats, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(np.r_[head.thresholds, tail.thresholds], full.thresholds, equal_nan=True)
    fresh = make()  # without resume: a new run (no statistic until the smallest window is full again)
    assert np.isnan(fresh.update(x[157:166]).stats).all()
    bad = make()
    bad.resume({"t": np.array([3]), "tail": np.zeros((50, 1))})  # a tail longer than the run: ignored
    assert bad.t == 0
