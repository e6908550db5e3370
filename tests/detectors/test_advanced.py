"""The advanced evaluators through the runner: records produced once the reference rows are attached."""

from __future__ import annotations

import numpy as np

from detectors import records as R
from detectors.advanced import (
    EstimatedPerformance,
    FeatureImpactEvaluator,
    MultivariateDrift,
    OnlineDrift,
    PredictionDrift,
)
from detectors.frame import Frame
from detectors.multivariate import MULTIVARIATE_FEATURE
from detectors.reference import Reference, attach_reference_frame
from detectors.runner import WindowContext, evaluate_window
from detectors.spec import DriftSpec, FeatureSpec

FEATS = (
    FeatureSpec(name="x", kind="numeric"),
    FeatureSpec(name="y", kind="numeric"),
    FeatureSpec(name="c", kind="categorical"),
)


def _frame(rng, n, flip=False, labelled=False):
    cov = [[1, -0.9], [-0.9, 1]] if flip else [[1, 0.9], [0.9, 1]]
    xy = rng.multivariate_normal([0, 0], cov, n)
    p = 1 / (1 + np.exp(-2 * xy[:, 0]))
    truth = np.where(rng.random(n) < p, "1", "0").astype(object) if labelled else None
    return Frame.from_columns(
        event_id=np.arange(n).astype(str),
        event_time=np.arange(n, dtype=float),
        numeric={"x": xy[:, 0], "y": xy[:, 1]},
        categorical={"c": rng.choice(["a", "b"], n).astype(object)},
        pred_label=np.where(p > 0.5, "1", "0").astype(object),
        pred_proba=np.column_stack([1 - p, p]),
        classes=("0", "1"),
        pred_value=p,
        label=truth,
    )


def _ctx(rng, ref, flip, multivariate="mmd"):
    return WindowContext(
        model_id="m",
        version="1",
        frame=_frame(rng, 500, flip),
        reference=ref,
        features=FEATS,
        drift=DriftSpec(multivariate=multivariate),
        window_start=0.0,
        window_end=10.0,
    )


def test_evaluators_emit_their_records():
    rng = np.random.default_rng(0)
    ref_frame = _frame(rng, 800, labelled=True)  # labelled reference rows: CBPE is calibrated on them
    ref = attach_reference_frame(Reference.from_frame(ref_frame, FEATS), ref_frame)
    evs = [PredictionDrift(), MultivariateDrift(n_permutations=50), EstimatedPerformance(), FeatureImpactEvaluator()]
    recs = evaluate_window(_ctx(rng, ref, flip=True), evs)
    by = {}
    for r in recs:
        by.setdefault(r.measurement, []).append(r)
    mv = [r for r in by[R.DRIFT] if r.tags[R.T_FEATURE] == MULTIVARIATE_FEATURE]
    assert len(mv) == 1 and mv[0].tags[R.T_DETECTOR] == "mmd" and mv[0].fields["drift"] == 1
    assert mv[0].fields["engine"] == "native" and mv[0].time_ns == 10 * 10**9
    assert {r.tags[R.T_METRIC] for r in by[R.PERFORMANCE]} >= {"accuracy", "f1", "log_loss"}
    assert all(
        r.tags[R.T_DETECTOR] == "cbpe" and r.fields["estimated"] and r.fields["calibrated"] for r in by[R.PERFORMANCE]
    )
    acc = next(r for r in by[R.PERFORMANCE] if r.tags[R.T_METRIC] == "accuracy")
    assert acc.fields["lower"] < acc.fields["value"] < acc.fields["upper"] and acc.fields["calibration_n"] == 800
    assert {r.tags[R.T_DETECTOR]: r.fields["computed"] for r in by[R.STATUS]} == {
        "prediction_drift": 1,
        "estimated_performance": 1,
        "feature_impact": 1,
    }
    assert {r.tags[R.T_FEATURE] for r in by[R.IMPACT]} == {"x", "y", "c"}
    assert any(r.tags[R.T_DETECTOR] == "summary" for r in by[R.PREDICTION])
    # PCA variant and the alibi engine request (MMD falls back to native, and says so)
    recs = evaluate_window(_ctx(rng, ref, flip=True, multivariate="pca"), [MultivariateDrift()])
    assert recs[0].tags[R.T_DETECTOR] == "pca" and recs[0].fields["drift"] == 1
    ctx = _ctx(rng, ref, flip=False)
    ctx = WindowContext(**{**ctx.__dict__, "drift": DriftSpec(multivariate="mmd", engine="alibi")})
    r = evaluate_window(ctx, [MultivariateDrift(n_permutations=50)])[0]
    assert r.fields["engine"] == "native" and r.fields["engine_note"] == "alibi MMD unavailable"


def test_say_why_without_reference_rows_or_outputs_and_silent_when_off():
    rng = np.random.default_rng(1)
    ref_frame = _frame(rng, 300)
    ref = Reference.from_frame(ref_frame, FEATS)  # no rows attached
    evs = [PredictionDrift(), MultivariateDrift(), FeatureImpactEvaluator(), EstimatedPerformance()]
    recs = evaluate_window(_ctx(rng, ref, flip=True), evs)
    status = {r.tags[R.T_DETECTOR]: r.fields for r in recs if r.measurement == R.STATUS}
    assert {k: v["computed"] for k, v in status.items()} == {
        "prediction_drift": 0,
        "feature_impact": 0,
        "estimated_performance": 0,
    }
    assert "no rows attached" in status["prediction_drift"]["reason"]
    assert "not calibrated" in status["estimated_performance"]["reason"]
    cbpe = [r for r in recs if r.measurement == R.PERFORMANCE]  # a point that says so, and no value
    assert len(cbpe) == 1 and cbpe[0].fields["status"] == "not calibrated" and "value" not in cbpe[0].fields
    assert not [r for r in recs if r.measurement in (R.PREDICTION, R.IMPACT)]
    # rows without outputs (a file reference that declares none): the reason says which config keys to set
    bare = Frame.from_columns(
        event_id=ref_frame.event_id,
        event_time=ref_frame.event_time,
        numeric=ref_frame.numeric,
        categorical=ref_frame.categorical,
    )
    ref2 = attach_reference_frame(Reference.from_frame(bare, FEATS), bare)
    recs = evaluate_window(_ctx(rng, ref2, flip=True), [PredictionDrift(), FeatureImpactEvaluator()])
    assert all(r.measurement == R.STATUS and "reference.probabilities" in r.fields["reason"] for r in recs)
    attach_reference_frame(ref, ref_frame)
    assert evaluate_window(_ctx(rng, ref, flip=True, multivariate="none"), [MultivariateDrift()]) == []


def test_online_drift_keeps_state_across_windows(tmp_path):
    rng = np.random.default_rng(2)
    ref_frame = _frame(rng, 500)
    ref = Reference.from_frame(ref_frame, FEATS)
    ev = OnlineDrift(["x"], ert=200, window_sizes=(20,), n_bootstraps=1000, cache_dir=str(tmp_path))
    quiet = evaluate_window(_ctx(rng, ref, flip=False), [ev])
    assert quiet[0].tags[R.T_DETECTOR] == "cvm_online"
    f = _frame(rng, 500)
    f.numeric["x"] = f.numeric["x"] + 2.0
    ctx = WindowContext(
        model_id="m", version="1", frame=f, reference=ref, features=FEATS, window_start=0.0, window_end=20.0
    )
    loud = evaluate_window(ctx, [ev])[0]
    assert loud.fields["drift"] == 1 and loud.fields["first_detection_time"] < 40
    assert list(tmp_path.glob("*.npz"))


def _online_ctx(frame, ref, drift, end=10.0):
    return WindowContext(
        model_id="m",
        version="1",
        frame=frame,
        reference=ref,
        features=FEATS,
        drift=drift,
        window_start=end - 10.0,
        window_end=end,
    )


def test_online_drift_runs_from_the_monitor_config_and_finds_the_first_crossing(tmp_path):
    """``drift.online`` names the features; the first detection is where the CvM statistic (computed
    independently with cvm_window_stats over the events in time order) first crosses the threshold."""
    from detectors.online import cvm_window_stats
    from detectors.spec import OnlineSpec

    rng = np.random.default_rng(3)
    ref = Reference.from_frame(_frame(rng, 400), FEATS)
    spec = DriftSpec(online=OnlineSpec(features=["x"], ert=5000, window_sizes=[20], n_bootstraps=6000))
    ev = OnlineDrift(cache_dir=str(tmp_path))  # as registered: everything from the window's DriftSpec
    assert evaluate_window(_online_ctx(_frame(rng, 300), ref, DriftSpec()), [ev]) == []  # no features: off
    quiet = _frame(rng, 300)
    q = evaluate_window(_online_ctx(quiet, ref, spec), [ev])
    assert [(r.tags[R.T_FEATURE], r.tags[R.T_DETECTOR]) for r in q] == [("x", "cvm_online")]
    assert q[0].fields["n"] == 300 and q[0].fields["ert"] == 5000 and q[0].fields["engine"] == "native"
    assert q[0].fields["drift"] == 0 and q[0].fields["t"] == 300
    loud = _frame(rng, 300)
    loud.event_time = 1000.0 + rng.permutation(300).astype(float)  # out of order: fed in event-time order
    shifted = loud.event_time >= 1150
    loud.numeric["x"] = np.where(shifted, loud.numeric["x"] + 1.5, loud.numeric["x"])
    r = evaluate_window(_online_ctx(loud, ref, spec, end=20.0), [ev])[0]
    assert r.fields["drift"] == 1 and r.fields["n_detections"] >= 1
    det = ev.detector("m", "1", "x", ref, spec)
    order = np.argsort(loud.event_time)
    stream = np.r_[quiet.numeric["x"][np.argsort(quiet.event_time)], loud.numeric["x"][order]]
    stats = cvm_window_stats(ref.numeric["x"].values, stream, 20)  # statistic ending at event 19, 20, ...
    t = np.arange(20, stream.size + 1)  # events seen (the quiet window did not fire: no reset before)
    first = int(np.argmax(stats > det.thresholds[np.minimum(t - 1, det.thresholds.size - 1)]))
    assert r.fields["first_detection_time"] == loud.event_time[order][first + 19 - 300]
    assert r.fields["first_detection_time"] >= 1150


def test_online_drift_buffers_while_calibrating_in_the_background(tmp_path):
    import threading

    from detectors.spec import OnlineSpec

    gate = threading.Event()

    class Slow(OnlineDrift):
        def _build(self, values, p):
            gate.wait(30)
            return super()._build(values, p)

    rng = np.random.default_rng(4)
    ref = Reference.from_frame(_frame(rng, 400), FEATS)
    spec = DriftSpec(online=OnlineSpec(features=["x", "y"], ert=300, window_sizes=[20], n_bootstraps=1000))
    ev = Slow(cache_dir=str(tmp_path), background=True, max_buffer=250)
    assert evaluate_window(_online_ctx(_frame(rng, 200), ref, spec), [ev]) == []  # calibrating: nothing yet
    second = _frame(rng, 200)
    second.event_time = second.event_time + 200
    assert evaluate_window(_online_ctx(second, ref, spec, end=20.0), [ev]) == []
    gate.set()
    for w in ev._state.values():
        w.future.result(30)
    third = _frame(rng, 100)
    third.event_time = third.event_time + 400
    recs = evaluate_window(_online_ctx(third, ref, spec, end=30.0), [ev])
    assert sorted(r.tags[R.T_FEATURE] for r in recs) == ["x", "y"]
    for r in recs:  # 400 buffered, the oldest 150 dropped (bound 250), then the 100 of this window
        assert r.fields["n"] == 350 and r.fields["n_buffered"] == 250 and r.fields["n_dropped"] == 150


def test_row_based_evaluators_use_the_features_the_rows_carry():
    """A stored reference's rows leave sensitive features out: multivariate drift and impact run without them."""
    rng = np.random.default_rng(0)
    full = _frame(rng, 600)
    rows = full.take(np.arange(600))
    del rows.numeric["y"]  # as streams.worker.references.decode_rows returns it with 'y' sensitive
    window = _frame(rng, 500)
    window.numeric["y"] = window.numeric["y"] + 3.0  # a shift only 'y' shows

    def run(attached):
        ref = attach_reference_frame(Reference.from_frame(full, FEATS), attached)
        ctx = WindowContext(
            model_id="m",
            version="1",
            frame=window,
            reference=ref,
            features=FEATS,
            drift=DriftSpec(multivariate="mmd"),
            window_start=0.0,
            window_end=10.0,
        )
        return evaluate_window(ctx, [MultivariateDrift(n_permutations=50), FeatureImpactEvaluator()])

    without, with_y = run(rows), run(full)
    assert {r.tags[R.T_FEATURE] for r in without if r.measurement == R.IMPACT} == {"x", "c"}
    assert {r.tags[R.T_FEATURE] for r in with_y if r.measurement == R.IMPACT} == {"x", "y", "c"}
    mv = {
        name: next(r for r in recs if r.measurement == R.DRIFT)
        for name, recs in (("without", without), ("with", with_y))
    }
    assert mv["with"].fields["drift"] == 1 and mv["without"].fields["drift"] == 0  # 'y' is not compared at all
