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


def _unstable_records(rng) -> tuple[list, str]:
    """Windows of a model whose concept flips every window: the label join's collector (fed the flipping
    labels) says "concept unstable", and the real evaluator writes that as the windows' CBPE points."""
    from detectors.performance import CalibrationCollector

    col = CalibrationCollector(size=1000, min_rows=200)
    classes = ("no", "yes")
    now = time.time() - 1200
    recs = []
    for k in range(16):
        f = _frame(rng, 250)
        truth = (rng.random(250) < f.pred_proba[:, 1]) ^ (k % 2 == 1 and k >= 4)  # flips every window from 4
        col.add(f.pred_proba, classes, np.where(truth, "yes", "no").astype(object), f.pred_label)
        cal = col.calibration()
        ctx = WindowContext(
            model_id="m",
            version="1",
            frame=f,
            reference=None,
            features=FEATS,
            window_start=now + 60 * k,
            window_end=now + 60 * (k + 1),
            calibration=cal if cal is not None else col.unstable_reason or col.error or "waiting for labels",
        )
        recs += evaluate_window(ctx, [EstimatedPerformance()])
    assert col.unstable and col.unstable_reason
    return recs, col.unstable_reason


def test_concept_unstable_is_said_instead_of_a_number(db) -> None:
    recs, reason = _unstable_records(np.random.default_rng(1))
    last = [r for r in recs if r.tags.get("detector") == "cbpe"][-1]
    assert last.fields["status"] == "not calibrated" and "value" not in last.fields
    assert last.fields["reason"] == reason and reason.startswith("concept unstable: ")
    assert sample.write_records(db, recs) == len(recs)
    at = open_page("performance", model="m")
    no_exception(at)
    text = texts(at)
    assert "Estimated performance: not calibrated: concept unstable" in text
    assert "calibrations in a row did not last" in text and "no calibration lasts" in text
    # the tiles show no estimate of any metric from the calibrations before (they no longer stand)
    tiles = {m.label: m.delta for m in at.metric}
    assert tiles and all(d == "estimate: not calibrated" for d in tiles.values()), tiles


@pytest.mark.browser
@pytest.mark.slow
def test_concept_unstable_in_chromium(stack, tmp_path) -> None:
    """The same page in Debian's Chromium at 1,024 and 1,400 px: the headline and the evidence are visible,
    no exception; screenshots in test-artifacts/dashboard/ (git-ignored)."""
    from pathlib import Path

    from dashboard import browser
    from streams.devstack.localstack import settings_env
    from streams.settings import Settings
    from tests.dashboard.helpers import chromium, serving

    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
    artifacts.mkdir(parents=True, exist_ok=True)
    recs, _ = _unstable_records(np.random.default_rng(2))
    with fresh_db(stack, "dashcu") as conn:
        assert sample.write_records(conn, recs) == len(recs)
        env = settings_env(Settings(influx_url=stack.influx_url, influx_db=conn.db))
        env.update(DRIFTWATCH_DASHBOARD_AUTH="none")
        env.pop("DRIFTWATCH_DASHBOARD_ACCESS", None)
        with serving(env, tmp_path / "dashboard.log") as base:
            for width in (1024, 1400):
                with chromium(width=width) as page:
                    page.goto(browser.page_url(base, "performance", "model=m&range=24h"))
                    browser.wait_page(page, "Concept drift & performance")
                    page.get_by_text("not calibrated: concept unstable").first.wait_for(timeout=30_000)
                    browser.check_no_exception(page, f"performance at {width} px")
                    text = page.locator("[data-testid=stMain]").inner_text()
                    assert "calibrations in a row did not last" in text
                    shot = browser.screenshot(page, artifacts / f"performance_concept_unstable_{width}.png")
                    assert shot.stat().st_size > 20_000
