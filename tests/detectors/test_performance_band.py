"""CBPE's estimate judged against its band over the reference's chunks (NannyML's rule), by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors import records as R
from detectors.advanced import EstimatedPerformance, reference_calibration
from detectors.frame import Frame
from detectors.performance import CBPE
from detectors.reference import Reference, attach_reference_frame
from detectors.runner import WindowContext
from detectors.spec import DriftSpec, FeatureSpec

FEATS = (FeatureSpec(name="x", kind="numeric"),)


def _frame(rng, n, shift=0.0, t0=0.0):
    x = rng.normal(shift, 1, n)
    p = 1 / (1 + np.exp(-2 * x))
    truth = np.where(rng.random(n) < p, "1", "0").astype(object)
    return Frame.from_columns(
        event_id=np.arange(n).astype(str),
        event_time=t0 + np.arange(n, dtype=float),
        numeric={"x": x},
        pred_label=np.where(p > 0.5, "1", "0").astype(object),
        pred_proba=np.column_stack([1 - p, p]),
        classes=("0", "1"),
        label=truth,
    )


def _accuracy(recs):
    return next(r for r in recs if r.measurement == R.PERFORMANCE and r.tags[R.T_METRIC] == "accuracy")


def test_estimate_band_matches_chunks_by_hand():
    rng = np.random.default_rng(2)
    rows = _frame(rng, 6000)
    ref = attach_reference_frame(Reference.from_frame(rows, list(FEATS)), rows)
    cal = reference_calibration(ref)
    window = _frame(rng, 1000, t0=1e5)
    rec = _accuracy(EstimatedPerformance().evaluate(WindowContext("m", "1", window, ref, FEATS, DriftSpec())))
    # by hand: calibrated confidence of the served class, mean per chunk of 1,000 rows in time order
    p = CBPE(cal).calibrate(rows.pred_proba, rows.classes)
    conf = np.where(rows.pred_label == "1", p[:, 1], p[:, 0])
    chunks = conf[:6000].reshape(6, 1000).mean(axis=1)
    k = stats.norm.isf(0.05 / 2 / 4)
    assert rec.fields["threshold_method"] == "reference_chunks"
    assert rec.fields["band_k"] == pytest.approx(k)
    assert rec.fields["band_lower"] == pytest.approx(chunks.mean() - k * chunks.std())
    assert rec.fields["band_upper"] == pytest.approx(chunks.mean() + k * chunks.std())
    assert rec.fields["alarm"] == 0
    # a window far from the decision boundary: the estimated accuracy leaves the band upwards
    far = _frame(rng, 1000, shift=3.0, t0=2e5)
    recs = EstimatedPerformance().evaluate(WindowContext("m", "1", far, ref, FEATS, DriftSpec()))
    assert _accuracy(recs).fields["alarm"] == 1


def test_no_band_with_too_few_chunks():
    rng = np.random.default_rng(3)
    rows = _frame(rng, 3000)
    ref = attach_reference_frame(Reference.from_frame(rows, list(FEATS)), rows)
    rec = _accuracy(
        EstimatedPerformance().evaluate(WindowContext("m", "1", _frame(rng, 1000, t0=1e5), ref, FEATS, DriftSpec()))
    )
    assert "threshold_method" not in rec.fields and "alarm" not in rec.fields
    assert "lower" in rec.fields  # CBPE's own sampling band is still there
