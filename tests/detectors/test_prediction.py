"""Prediction drift vs scipy (chi-square on classes, KS on probabilities and values), records."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors.frame import Frame
from detectors.prediction import ALL, LABEL, VALUE, PredictionReference, prediction_drift, prediction_records
from detectors.records import PREDICTION
from detectors.spec import DriftSpec


def _frame(rng, n, shift=0.0, classes=("no", "yes")):
    p = np.clip(rng.beta(2, 5, n) + shift, 0, 1)
    proba = np.column_stack([1 - p, p])
    lab = np.where(p > 0.4, classes[1], classes[0]).astype(object)
    return Frame.from_columns(
        event_id=np.arange(n).astype(str),
        event_time=np.zeros(n),
        pred_label=lab,
        pred_proba=proba,
        classes=classes,
        pred_value=10 * p,
    )


def test_statistics_match_scipy():
    rng = np.random.default_rng(0)
    ref_f, win_f = _frame(rng, 800), _frame(rng, 600, 0.05)
    ref = PredictionReference.from_frame(ref_f)
    res = prediction_drift(win_f, ref, DriftSpec())
    by = {f.feature: f for f in res.features}
    assert set(by) == {LABEL, "proba:yes", VALUE}  # binary: the complement column is not tested
    ks = stats.ks_2samp(ref_f.pred_value, win_f.pred_value, method="asymp")
    assert by[VALUE].statistic == pytest.approx(ks.statistic)
    assert by[VALUE].p_value == pytest.approx(ks.pvalue, rel=1e-6)
    a = [np.sum(ref_f.pred_label == c) for c in ("no", "yes")]
    b = [np.sum(win_f.pred_label == c) for c in ("no", "yes")]
    chi = stats.chi2_contingency([a, b])
    assert by[LABEL].statistic == pytest.approx(chi.statistic)
    assert by[LABEL].p_value == pytest.approx(chi.pvalue, rel=1e-9)
    assert res.threshold == pytest.approx(0.05 / 3)  # Bonferroni over the three outputs


def test_engines_agree_on_predictions():
    rng = np.random.default_rng(1)
    ref = PredictionReference.from_frame(_frame(rng, 500))
    win = _frame(rng, 400, 0.1)
    nat = prediction_drift(win, ref, DriftSpec(engine="native"))
    ali = prediction_drift(win, ref, DriftSpec(engine="alibi"))
    for f in nat.features:
        g = ali.feature(f.feature)
        assert g.p_value == pytest.approx(f.p_value, rel=1e-4, abs=1e-7) and g.drift == f.drift


def test_stationary_outputs_rarely_alarm_and_shift_is_found():
    rng = np.random.default_rng(2)
    ref = PredictionReference.from_frame(_frame(rng, 1000))
    alarms = sum(prediction_drift(_frame(rng, 1000), ref, DriftSpec()).drift for _ in range(40))
    assert alarms <= 6
    assert prediction_drift(_frame(rng, 1000, 0.1), ref, DriftSpec()).drift


def test_multiclass_and_regression_only():
    rng = np.random.default_rng(3)
    k = 25
    p = rng.dirichlet(np.ones(k), 300)
    classes = tuple(f"c{i}" for i in range(k))
    f = Frame.from_columns(event_id=np.arange(300).astype(str), event_time=np.zeros(300), pred_proba=p, classes=classes)
    ref = PredictionReference.from_frame(f, max_classes=20)
    assert len(ref.proba_classes) == 20
    g = Frame.from_columns(event_id=np.arange(50).astype(str), event_time=np.zeros(50), pred_value=rng.normal(size=50))
    with pytest.raises(ValueError, match="no prediction"):
        PredictionReference.from_frame(Frame.from_columns(event_id=np.arange(3).astype(str), event_time=np.zeros(3)))
    rref = PredictionReference.from_frame(g)
    assert [x.feature for x in prediction_drift(g, rref, DriftSpec()).features] == [VALUE]


def test_records():
    rng = np.random.default_rng(4)
    ref_f, win_f = _frame(rng, 300), _frame(rng, 300, 0.2)
    ref = PredictionReference.from_frame(ref_f)
    res = prediction_drift(win_f, ref, DriftSpec())
    recs = prediction_records(res, win_f, ref, {"model": "m", "version": "1"}, 42)
    assert all(r.measurement == PREDICTION and r.time_ns == 42 for r in recs)
    tests = [r for r in recs if r.tags["detector"] in ("ks", "chi2")]
    assert {r.tags["feature"] for r in tests} == {LABEL, "proba:yes", VALUE}
    v = next(r for r in tests if r.tags["feature"] == VALUE).fields
    assert v["drift"] == 1 and v["mean_window"] > v["mean_ref"] and {"p_value", "n_cur", "psi"} <= set(v)
    shares = {r.tags["segment"]: r.fields for r in recs if r.tags["detector"] == "share"}
    assert set(shares) == {"no", "yes"}
    assert sum(s["window_share"] for s in shares.values()) == pytest.approx(1.0)
    summary = next(r for r in recs if r.tags["feature"] == ALL)
    assert summary.fields["n_tested"] == 3 and summary.fields["drift"] == 1


def test_prediction_drift_is_judged_against_the_reference_chunks_of_its_outputs():
    """The reference's outputs are kept in time order: an autocorrelated score gets a chunk band."""
    from detectors.spec import ThresholdSpec
    from detectors.univariate import judge_windows

    rng = np.random.default_rng(4)
    n = 16_000
    e = rng.normal(size=n) * np.sqrt(1 - 0.98**2)
    x = np.empty(n)
    x[0] = 0.0
    for t in range(1, n):
        x[t] = 0.98 * x[t - 1] + e[t]

    def frame(v):
        return Frame.from_columns(
            event_id=np.arange(len(v)).astype(str), event_time=np.arange(len(v), dtype=float), pred_value=v
        )

    pref = PredictionReference.from_frame(frame(x[:10_000]))
    spec = DriftSpec(threshold=ThresholdSpec(method="reference_chunks"))
    results = [prediction_drift(frame(x[a : a + 1000]), pref, spec) for a in range(10_000, n, 1000)]
    v = results[0].features[0].verdict
    assert v.method == "reference_chunks" and v.judged == "statistic" and v.upper is not None
    # the same verdicts as the drift tests' pure entry point on the same arrays (one code path)
    same = judge_windows(
        {"__value__": x[:10_000]}, [{"__value__": x[a : a + 1000]} for a in range(10_000, n, 1000)], "reference_chunks"
    )
    assert [r.drift for r in results] == [r.drift for r in same]
    assert [r.features[0].verdict.upper for r in results] == pytest.approx([r.features[0].verdict.upper for r in same])
    recs = prediction_records(results[0], frame(x[10_000:11_000]), pref, {"model": "m", "version": "1"}, 0)
    subject = next(r for r in recs if r.tags["feature"] == "__value__")
    assert subject.fields["threshold_method"] == "reference_chunks" and subject.fields["band_upper"] == v.upper
    summary = next(r for r in recs if r.tags["feature"] == "__all__")
    assert summary.fields["threshold_method"] == "reference_chunks"
