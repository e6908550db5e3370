"""Thresholds calibrated on the reference, checked against scipy/numpy computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from detectors.frame import Frame
from detectors.reference import Reference, attach_reference_frame
from detectors.spec import DriftSpec, FeatureSpec, ThresholdSpec
from detectors.thresholds import (
    chunk_slices,
    chunk_values,
    log_band,
    multiplier_for_level,
    null_quantile,
    sd_band,
    statistic_max,
)
from detectors.twosample import cvm_pvalue
from detectors.univariate import judge_windows


def test_sd_band_is_mean_plus_k_sd_by_hand():
    v = np.array([0.2, 0.5, 0.3, 0.9, np.nan])
    b = sd_band(v, 3.0)
    x = v[:4]
    mean, sd = x.sum() / 4, np.sqrt(((x - x.sum() / 4) ** 2).sum() / 4)
    assert b.lower == pytest.approx(mean - 3 * sd) and b.upper == pytest.approx(mean + 3 * sd)
    assert sd_band(v, 3.0, two_sided=False).lower is None
    assert sd_band(v, 3.0, clip=(0.0, 1.0)).lower is None  # below the statistic's range: unbounded
    assert b.outside(b.upper + 1e-9) and not b.outside(b.upper) and not b.outside(float("nan"))


def test_chunks_keep_time_order_and_drop_the_tail():
    assert [(s.start, s.stop) for s in chunk_slices(25, 10)] == [(0, 10), (10, 20)]
    spread = chunk_slices(1000, 10, max_chunks=5)
    assert len(spread) == 5 and spread[0].start == 0 and spread[-1].stop == 1000


def _frame(num: dict, cat: dict | None = None, times=None) -> Frame:
    n = len(next(iter(num.values())))
    return Frame.from_columns(
        event_id=np.arange(n).astype(str),
        event_time=np.arange(n, dtype=float) if times is None else times,
        numeric=num,
        categorical=cat or {},
    )


def test_chunk_statistics_match_scipy_on_chunk_versus_rest():
    rng = np.random.default_rng(3)
    n = 1200
    x = rng.normal(size=n)
    x[rng.random(n) < 0.05] = np.nan
    c = rng.choice(np.array(["a", "b", "c"], dtype=object), size=n, p=[0.5, 0.3, 0.2])
    times = rng.permutation(n).astype(float)  # rows arrive shuffled: the chunks follow event time
    rows = _frame({"x": x}, {"c": c}, times)
    feats = [FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="c", kind="categorical")]
    ref = Reference.from_frame(rows, feats)
    cv = chunk_values(ref, rows, ["x", "c"], 200, "ks")
    assert cv.n_chunks == 6
    order = np.argsort(times, kind="stable")
    for j in range(6):
        idx = order[j * 200 : (j + 1) * 200]
        rest = np.setdiff1d(np.arange(n), idx)
        xc, xr = x[idx], x[rest]
        ks = stats.ks_2samp(xc[~np.isnan(xc)], xr[~np.isnan(xr)]).statistic
        assert cv.statistic["x"][j] == pytest.approx(ks, abs=1e-12)
        w = stats.wasserstein_distance(xc[~np.isnan(xc)], xr[~np.isnan(xr)])
        assert cv.wasserstein["x"][j] == pytest.approx(w, rel=1e-9)
        table = np.array([[np.sum(c[rest] == k) for k in "abc"], [np.sum(c[idx] == k) for k in "abc"]])
        assert cv.statistic["c"][j] == pytest.approx(stats.chi2_contingency(table)[0], rel=1e-9)
        med = stats.kstwo.median(
            round(len(xr[~np.isnan(xr)]) * len(xc[~np.isnan(xc)]) / (len(xr[~np.isnan(xr)]) + len(xc[~np.isnan(xc)])))
        )
        assert cv.ratio["x"][j] == pytest.approx(ks / med, rel=1e-6)
        assert cv.ratio["c"][j] == pytest.approx(cv.statistic["c"][j] / stats.chi2.median(2), rel=1e-9)


def test_null_quantiles_invert_the_p_values():
    q = null_quantile("ks", 0.001, 5000, 1000)
    assert stats.kstwo.sf(q, round(5000 * 1000 / 6000)) == pytest.approx(0.001, rel=1e-6)
    assert null_quantile("chi2", 0.01, 0, 0, 4) == pytest.approx(stats.chi2.isf(0.01, 4))
    t = null_quantile("cvm", 0.01, 2000, 500)
    assert float(cvm_pvalue(t, 2000, 500)) == pytest.approx(0.01, rel=1e-6)
    assert multiplier_for_level(0.00135) == pytest.approx(3.0, abs=1e-3)


def _ar1(rng, n, d, phi):
    """AR(1) columns: a stationary stream whose values move by themselves (autocorrelation)."""
    e = rng.normal(size=(n, d)) * np.sqrt(1 - phi**2)
    x = np.empty((n, d))
    x[0] = rng.normal(size=d)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def test_chunk_band_absorbs_autocorrelation_that_the_p_value_calls_drift():
    rng = np.random.default_rng(7)
    x = _ar1(rng, 30_000, 5, 0.98)
    ref, quiet = x[:10_000], [x[i : i + 1000] for i in range(10_000, 30_000, 1000)]
    p_flags = sum(r.drift for r in judge_windows(ref, quiet, "p_value"))
    c_flags = sum(r.drift for r in judge_windows(ref, quiet, "reference_chunks"))
    assert p_flags >= 10  # the classical test flags most windows of a stationary but autocorrelated stream
    assert c_flags <= p_flags / 3
    shifted = [w + np.array([3.0, 0, 0, 0, 0]) for w in quiet[:5]]
    assert all(r.drift for r in judge_windows(ref, shifted, "both"))
    r = judge_windows(ref, shifted[:1], "reference_chunks")[0]
    v = r.feature("x0").verdict
    assert v.method == "reference_chunks" and v.judged == "statistic" and v.upper > 0 and v.lower is None
    assert r.threshold_method == "reference_chunks"


def test_chunk_band_keeps_the_false_alarm_level_on_iid_data():
    rng = np.random.default_rng(11)
    ref = rng.normal(size=(10_000, 10))
    quiet = [rng.normal(size=(1000, 10)) for _ in range(60)]
    for method in ("reference_chunks", "both"):
        assert sum(r.drift for r in judge_windows(ref, quiet, method)) <= 3  # family level 0.05: ~3 of 60


def test_p_value_method_is_the_bonferroni_ks_test_by_hand():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(2000, 3))
    w = rng.normal(size=(500, 3)) + np.array([0.25, 0.0, 0.0])
    r = judge_windows(ref, [w], "p_value")[0]
    for i in range(3):
        p = stats.ks_2samp(ref[:, i], w[:, i], method="asymp").pvalue
        f = r.feature(f"x{i}")
        assert f.p_value == pytest.approx(p, rel=1e-6) and f.drift == (p < 0.05 / 3)
        assert f.verdict.judged == "p_value" and f.verdict.lower == pytest.approx(0.05 / 3)


def test_effect_size_is_evidentlys_normed_wasserstein_and_js():
    rng = np.random.default_rng(2)
    ref = {"x": rng.normal(10, 2, 3000), "c": rng.choice(np.array(["a", "b"], dtype=object), 3000)}
    w = {"x": rng.normal(10.5, 2, 3000), "c": rng.choice(np.array(["a", "b"], dtype=object), 3000, p=[0.8, 0.2])}
    r = judge_windows(ref, [w], "effect_size", kinds={"c": "categorical"})[0]
    x = r.feature("x").verdict
    assert x.effect == pytest.approx(stats.wasserstein_distance(ref["x"], w["x"]) / np.std(ref["x"]), rel=1e-9)
    assert x.drift == (x.effect > 0.1) and x.upper == 0.1
    pr = np.array([np.mean(ref["c"] == k) for k in "ab"])
    pw = np.array([np.mean(w["c"] == k) for k in "ab"])
    from scipy.spatial.distance import jensenshannon

    assert r.feature("c").verdict.effect == pytest.approx(jensenshannon(pr, pw), rel=1e-9)  # natural log


def test_short_reference_falls_back_to_significant_and_large():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(1000, 2))
    r = judge_windows(ref, [rng.normal(size=(1000, 2))], "both")[0]
    v = r.feature("x0").verdict
    assert v.method == "p_and_effect" and "fewer than 5 chunks" in v.note and not r.drift


def test_reference_without_rows_falls_back():
    rng = np.random.default_rng(1)
    feats = [FeatureSpec(name="x", kind="numeric")]
    ref = Reference.from_frame(_frame({"x": rng.normal(size=5000)}), feats)
    from detectors.univariate import univariate_drift

    res = univariate_drift(
        _frame({"x": rng.normal(size=500)}), ref, DriftSpec(threshold=ThresholdSpec(method="reference_chunks"))
    )
    assert res.features[0].verdict.note == "the reference has no rows"
    attach_reference_frame(ref, _frame({"x": rng.normal(size=5000)}))


def test_threshold_spec_rejects_nonsense():
    with pytest.raises(ValidationError, match="max_chunks"):
        ThresholdSpec(min_chunks=10, max_chunks=5)
    with pytest.raises(ValidationError):
        ThresholdSpec(method="magic")


def test_log_band_is_the_lognormal_upper_end_by_hand():
    v = np.array([0.3, 0.5, 1.2, 0.8, 0.0, np.nan, 2.5])
    x = np.log(np.array([0.3, 0.5, 1.2, 0.8, 2.5]))  # zeros and NaN have no log: left out
    m, sd = x.sum() / 5, np.sqrt(((x - x.sum() / 5) ** 2).sum() / 5)
    assert log_band(v, 2.0) == pytest.approx(np.exp(m + 2.0 * sd), rel=1e-12)
    assert log_band(np.array([1.0, 0.0]), 2.0) is None


def test_statistic_max_is_what_scipy_gives_for_separated_samples():
    for n, m in ((80, 10), (1000, 250), (7, 3)):
        a, b = np.arange(n, dtype=float), np.arange(n, n + m, dtype=float) + 0.5
        assert statistic_max("ks", n, m) == stats.ks_2samp(a, b).statistic == 1.0
        assert statistic_max("cvm", n, m) == pytest.approx(stats.cramervonmises_2samp(a, b).statistic, rel=1e-12)
        table = np.array([[n // 2, n - n // 2, 0], [0, 0, m]])  # no category shared by the two samples
        assert statistic_max("chi2", n, m) == pytest.approx(stats.chi2_contingency(table, correction=False)[0])


def _random_walk(rng, n):
    return np.cumsum(rng.normal(size=n))


def _t_band(effects: list[float], level: float) -> float:
    """The one-sided normal prediction band of the effects' logs, by hand (Student's t, sd with ddof 1)."""
    lv, n = np.log(effects), len(effects)
    return float(np.exp(lv.mean() + stats.t.isf(level, n - 1) * np.sqrt(1 + 1 / n) * lv.std(ddof=1)))


def test_a_saturated_band_judges_the_effect_against_the_chunks_effects():
    # a random walk: chunks of 10 of an 80-row reference are far from the rest, their KS statistics run
    # near 1, and the inflated critical value is above 1 — the statistic could never cross it.
    rng = np.random.default_rng(4)
    x = _random_walk(rng, 80)
    ref = x[:, None]
    sd = x.std()
    inside = x[30:40, None] + rng.normal(scale=0.05 * sd, size=(10, 1))  # inside what the reference holds
    far = (x.min() - 12 * sd + rng.normal(scale=0.1 * sd, size=10))[:, None]  # far below all of it
    spec = DriftSpec(p_val=0.01)
    r_in, r_far = judge_windows(ref, [inside, far], "both", spec=spec)
    v = r_far.feature("x0").verdict
    assert v.judged == "effect" and "maximum" in v.note
    # the band is the log-normal band of the chunks' effects (chunk vs rest, Wasserstein / reference sd)
    effects = []
    for j in range(8):
        c = x[j * 10 : (j + 1) * 10]
        rest = np.r_[x[: j * 10], x[(j + 1) * 10 :]]
        effects.append(stats.wasserstein_distance(c, rest) / sd)
    # chunks of one reference block: the normal quantile (the t prediction band is a rolling reference's)
    lv = np.log(effects)
    assert v.effect_band == pytest.approx(float(np.exp(lv.mean() + stats.norm.isf(0.01) * lv.std())), rel=1e-9)
    assert v.upper == pytest.approx(v.effect_band)
    assert v.effect == pytest.approx(stats.wasserstein_distance(far[:, 0], x) / sd, rel=1e-9)
    assert r_far.drift and not r_in.drift
    c_in, c_far = judge_windows(ref, [inside, far], "reference_chunks", spec=spec)  # the same rule without floor
    assert c_far.drift and not c_in.drift and c_far.feature("x0").verdict.judged == "effect"
    # the band on the statistic is at or above the statistic's maximum: before, no window could alarm
    from detectors.thresholds import _critical

    rows = _frame({"x0": x})
    ref_x = attach_reference_frame(Reference.from_frame(rows, [FeatureSpec(name="x0", kind="numeric")]), rows)
    cv = chunk_values(ref_x, rows, ["x0"], 10, "ks")
    assert cv.inflation("x0") * _critical("ks", 0.01, 80, 10, 0) >= 1.0


def test_both_requires_the_effect_above_the_chunks_effect_band():
    rng = np.random.default_rng(8)
    x = _ar1(rng, 20_000, 1, 0.9)
    ref = x[:10_000]
    r = judge_windows(ref, [x[10_000:11_000], x[11_000:12_000] + 1.0], "both")
    for res in r:
        v = res.feature("x0").verdict
        assert v.effect_band is not None and v.judged == "statistic"
        assert res.drift == (v.value > v.upper and v.effect > max(v.effect_floor, v.effect_band))
    assert not r[0].drift and r[1].drift
    assert "effect_band" in r[1].feature("x0").verdict.fields()


def _rolling_reference(windows: list[np.ndarray], cats: list[np.ndarray] | None = None) -> Reference:
    """The worker's rolling reference: the last window, with all of them as its history."""
    from detectors.reference import attach_rolling_history

    frames = [_frame({"x": w}, None if cats is None else {"c": c}) for w, c in zip(windows, cats or windows)]
    feats = [FeatureSpec(name="x", kind="numeric")]
    if cats is not None:
        feats.append(FeatureSpec(name="c", kind="categorical"))
    ref = attach_reference_frame(Reference.from_frame(frames[-1], feats), frames[-1])
    return attach_rolling_history(ref, frames)


def test_successive_windows_match_scipy_window_against_its_predecessor():
    from detectors.thresholds import successive_values

    rng = np.random.default_rng(11)
    xs = [rng.normal(loc=j * 0.3, size=12) for j in range(7)]
    cs = [rng.choice(np.array(["a", "b", "c"], dtype=object), size=12) for _ in range(7)]
    ref = _rolling_reference(xs, cs)
    from detectors.reference import rolling_history

    cv = successive_values(ref, rolling_history(ref), ["x", "c"], "ks")
    assert cv.n_chunks == 6
    for j in range(6):
        prev, cur = xs[j], xs[j + 1]
        assert cv.statistic["x"][j] == pytest.approx(stats.ks_2samp(cur, prev).statistic, abs=1e-12)
        w = stats.wasserstein_distance(cur, prev)
        assert cv.wasserstein["x"][j] == pytest.approx(w, rel=1e-9)
        floor = np.quantile([x.std() for x in xs], 0.1)  # the predecessor's sd, floored (the next test)
        assert cv.effects("x", "numeric", 123.0)[j] == pytest.approx(w / max(prev.std(), floor), rel=1e-9)
        assert cv.ratio["x"][j] == pytest.approx(cv.statistic["x"][j] / stats.kstwo.median(6), rel=1e-9)
        cats = sorted(set(cs[j]) | set(cs[j + 1]))
        table = np.array([[np.sum(cs[j] == k) for k in cats], [np.sum(cs[j + 1] == k) for k in cats]])
        assert cv.statistic["c"][j] == pytest.approx(stats.chi2_contingency(table)[0], rel=1e-9)


def test_a_rolling_reference_is_judged_against_the_series_own_window_to_window_moves():
    # a random walk in windows of 10: each window lies beside the previous one by some amount; the band is
    # how far every earlier window moved from its predecessor, so the walk going on is quiet and a jump is not
    rng = np.random.default_rng(5)
    x = _random_walk(rng, 410)
    windows = [x[k * 10 : (k + 1) * 10] for k in range(41)]
    spec = DriftSpec(p_val=0.01)
    ref = _rolling_reference(windows[:40])
    from detectors.univariate import univariate_drift

    quiet = univariate_drift(_frame({"x": windows[40]}), ref, spec)
    sd = windows[39].std()
    jump = univariate_drift(_frame({"x": windows[39].max() + 12 * sd + rng.normal(scale=sd, size=10)}), ref, spec)
    v = jump.feature("x").verdict
    assert v.method == "both" and not quiet.drift and jump.drift
    floor = np.quantile([w.std() for w in windows[:40]], 0.1)
    effects = [stats.wasserstein_distance(windows[j + 1], windows[j]) / max(windows[j].std(), floor) for j in range(39)]
    # a rolling reference: the Student-t prediction band of its few past moves
    assert v.effect_band == pytest.approx(_t_band(effects, 0.01), rel=1e-9)
    # with fewer than min_chunks successive windows: significant and large, and the note says why
    few = univariate_drift(_frame({"x": windows[40]}), _rolling_reference(windows[36:40]), spec)
    fv = few.feature("x").verdict
    assert fv.method == "p_and_effect" and "rolling reference's history holds 3" in fv.note


def test_prediction_band_holds_its_level_for_a_new_value_from_few_values():
    # independent check: simulate n log-normal effects and one more; the new one exceeds the band at the level
    from detectors.thresholds import log_prediction_band, prediction_multiplier

    rng = np.random.default_rng(21)
    for n, level in ((6, 0.01), (12, 0.0025), (40, 0.01)):
        logs = rng.normal(size=(200_000, n + 1))
        m, s = logs[:, :n].mean(1), logs[:, :n].std(1, ddof=1)
        k = prediction_multiplier(level, n)
        rate = float(np.mean(logs[:, n] > m + k * s))
        assert rate == pytest.approx(level, abs=4 * np.sqrt(level / 200_000) + 1e-4)
        z_rate = float(np.mean(logs[:, n] > m + multiplier_for_level(level) * s))
        assert z_rate > 1.3 * level  # the normal quantile alone alarms too often from few values
        v = np.exp(logs[0, :n])
        assert log_prediction_band(v, level) == pytest.approx(
            np.exp(np.log(v).mean() + stats.t.isf(level, n - 1) * np.sqrt(1 + 1 / n) * np.log(v).std(ddof=1)),
            rel=1e-12,
        )
    assert prediction_multiplier(0.01, 10_000) == pytest.approx(multiplier_for_level(0.01), rel=1e-3)
    assert log_prediction_band(np.array([1.0, 0.0, np.nan]), 0.01) is None


def test_a_flat_predecessor_divides_the_effect_by_the_series_usual_sd_not_by_zero():
    # a sensor at its resolution: one window constant, the next one step of 0.1 off; against the
    # predecessor's sd (0: Evidently's 1e-3 guard) the step was 100 sds; the floor is the 10 % quantile
    # of the history windows' sds
    from detectors.reference import rolling_history
    from detectors.thresholds import successive_sd_floor, successive_values
    from detectors.univariate import univariate_drift

    rng = np.random.default_rng(3)
    windows = [20 + 0.1 * rng.standard_normal(10).round(1) + 0.05 * j for j in range(30)]
    windows[28] = np.full(10, 21.5)
    ref = _rolling_reference(windows)
    cv = successive_values(ref, rolling_history(ref), ["x"], "ks")
    floor = float(np.quantile([w.std() for w in windows], 0.1))
    assert successive_sd_floor(windows) == pytest.approx(floor, rel=1e-12) and floor > 0
    w = stats.wasserstein_distance(windows[29], windows[28])
    assert cv.effects("x", "numeric", 1.0)[28] == pytest.approx(w / floor, rel=1e-9)  # not w / 1e-3
    for j in (0, 5):  # an ordinary predecessor keeps its own sd
        sd = max(windows[j].std(), floor)
        assert cv.effects("x", "numeric", 1.0)[j] == pytest.approx(
            stats.wasserstein_distance(windows[j + 1], windows[j]) / sd, rel=1e-9
        )
    step = windows[28] + 0.1  # the next window, one resolution step up
    v = univariate_drift(_frame({"x": step}), _rolling_reference(windows[:29]), DriftSpec(p_val=0.01))
    fv = v.feature("x").verdict
    floor29 = float(np.quantile([x.std() for x in windows[:29]], 0.1))
    assert fv.effect == pytest.approx(0.1 / floor29, rel=1e-9) and fv.effect < 100
