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
    attach_reference_frame,
)
from detectors.frame import Frame
from detectors.multivariate import MULTIVARIATE_FEATURE
from detectors.reference import Reference
from detectors.runner import WindowContext, evaluate_window
from detectors.spec import DriftSpec, FeatureSpec

FEATS = (FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="y", kind="numeric"),
         FeatureSpec(name="c", kind="categorical"))


def _frame(rng, n, flip=False):
    cov = [[1, -0.9], [-0.9, 1]] if flip else [[1, 0.9], [0.9, 1]]
    xy = rng.multivariate_normal([0, 0], cov, n)
    p = 1 / (1 + np.exp(-2 * xy[:, 0]))
    return Frame.from_columns(
        event_id=np.arange(n).astype(str), event_time=np.arange(n, dtype=float),
        numeric={"x": xy[:, 0], "y": xy[:, 1]}, categorical={"c": rng.choice(["a", "b"], n).astype(object)},
        pred_label=np.where(p > 0.5, "1", "0").astype(object), pred_proba=np.column_stack([1 - p, p]),
        classes=("0", "1"), pred_value=p)


def _ctx(rng, ref, flip, multivariate="mmd"):
    return WindowContext(model_id="m", version="1", frame=_frame(rng, 500, flip), reference=ref,
                         features=FEATS, drift=DriftSpec(multivariate=multivariate), window_start=0.0,
                         window_end=10.0)


def test_evaluators_emit_their_records():
    rng = np.random.default_rng(0)
    ref_frame = _frame(rng, 800)
    ref = attach_reference_frame(Reference.from_frame(ref_frame, FEATS), ref_frame)
    evs = [PredictionDrift(), MultivariateDrift(n_permutations=50), EstimatedPerformance(),
           FeatureImpactEvaluator()]
    recs = evaluate_window(_ctx(rng, ref, flip=True), evs)
    by = {}
    for r in recs:
        by.setdefault(r.measurement, []).append(r)
    mv = [r for r in by[R.DRIFT] if r.tags[R.T_FEATURE] == MULTIVARIATE_FEATURE]
    assert len(mv) == 1 and mv[0].tags[R.T_DETECTOR] == "mmd" and mv[0].fields["drift"] == 1
    assert mv[0].fields["engine"] == "native" and mv[0].time_ns == 10 * 10**9
    assert {r.tags[R.T_METRIC] for r in by[R.PERFORMANCE]} >= {"accuracy", "f1", "log_loss"}
    assert all(r.tags[R.T_DETECTOR] == "cbpe" and r.fields["estimated"] for r in by[R.PERFORMANCE])
    assert {r.tags[R.T_FEATURE] for r in by[R.IMPACT]} == {"x", "y", "c"}
    assert any(r.tags[R.T_DETECTOR] == "summary" for r in by[R.PREDICTION])
    # PCA variant and the alibi engine request (MMD falls back to native, and says so)
    recs = evaluate_window(_ctx(rng, ref, flip=True, multivariate="pca"), [MultivariateDrift()])
    assert recs[0].tags[R.T_DETECTOR] == "pca" and recs[0].fields["drift"] == 1
    ctx = _ctx(rng, ref, flip=False)
    ctx = WindowContext(**{**ctx.__dict__, "drift": DriftSpec(multivariate="mmd", engine="alibi")})
    r = evaluate_window(ctx, [MultivariateDrift(n_permutations=50)])[0]
    assert r.fields["engine"] == "native" and r.fields["engine_note"] == "alibi MMD unavailable"


def test_silent_without_reference_rows_or_when_off():
    rng = np.random.default_rng(1)
    ref_frame = _frame(rng, 300)
    ref = Reference.from_frame(ref_frame, FEATS)  # no rows attached
    evs = [PredictionDrift(), MultivariateDrift(), FeatureImpactEvaluator()]
    assert evaluate_window(_ctx(rng, ref, flip=True), evs) == []
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
    ctx = WindowContext(model_id="m", version="1", frame=f, reference=ref, features=FEATS,
                        window_start=0.0, window_end=20.0)
    loud = evaluate_window(ctx, [ev])[0]
    assert loud.fields["drift"] == 1 and loud.fields["first_detection_time"] < 40
    assert list(tmp_path.glob("*.npz"))
