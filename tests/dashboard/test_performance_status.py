"""The performance page says what the worker could not compute, and why: CBPE "not calibrated", prediction
drift and impact without reference outputs (records from the real evaluators, real InfluxDB, AppTest)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dashboard import sample
from detectors.advanced import EstimatedPerformance, FeatureImpactEvaluator, PredictionDrift
from detectors.frame import Frame
from detectors.reference import Reference, attach_reference_frame
from detectors.runner import WindowContext, evaluate_window
from detectors.spec import FeatureSpec
from tests.dashboard.helpers import fresh_db
from tests.dashboard.test_app import _env, no_exception, open_page, texts

pytestmark = pytest.mark.integration
FEATS = (FeatureSpec(name="x", kind="numeric"),)


@pytest.fixture
def db(stack, monkeypatch: pytest.MonkeyPatch):
    with fresh_db(stack, "dashps") as conn:
        _env(monkeypatch, conn.url, conn.db)
        yield conn


def _frame(rng, n, outputs=True):
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-x))
    kw = (
        dict(
            pred_label=np.where(p > 0.5, "yes", "no").astype(object),
            pred_proba=np.column_stack([1 - p, p]),
            classes=("no", "yes"),
        )
        if outputs
        else {}
    )
    return Frame.from_columns(event_id=np.arange(n).astype(str), event_time=np.zeros(n), numeric={"x": x}, **kw)


def test_a_file_reference_without_outputs_or_labels_is_explained(db) -> None:
    rng = np.random.default_rng(0)
    rows = _frame(rng, 500, outputs=False)  # a reference file that declares no output/label columns
    ref = attach_reference_frame(Reference.from_frame(rows, FEATS), rows)
    now = time.time() - 600
    recs = []
    for k in range(3):
        ctx = WindowContext(
            model_id="m",
            version="1",
            frame=_frame(rng, 200),
            reference=ref,
            features=FEATS,
            window_start=now + 60 * k,
            window_end=now + 60 * (k + 1),
        )
        recs += evaluate_window(ctx, [PredictionDrift(), FeatureImpactEvaluator(), EstimatedPerformance()])
    assert sample.write_records(db, recs) == len(recs)
    at = open_page("performance", model="m")
    no_exception(at)
    text = texts(at)
    assert "Estimated performance: not calibrated" in text and "carry no labels" in text
    assert "Prediction drift is not computed" in text and "reference.probabilities" in text
    assert "Not computed" in [h.value for h in at.subheader]
    assert "**Feature impact**" in text
    assert not any(m.label == "accuracy (realized)" for m in at.metric)  # no number from an uncalibrated guess
