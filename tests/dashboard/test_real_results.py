"""The dashboard reads what the real detectors write, through the worker's own sink.

No synthetic shortcut here: windows of events go through ``detectors.runner.evaluate_window``
(drift, quality, histograms, segments), ``detectors.performance`` and ``detectors.impact``;
the records are written by ``streams.sinks.influx.write_records`` to the real InfluxDB of
the local stack. If a measurement, tag or field is renamed on the writing side without
the dashboard following, this test fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import dashboard
from detectors.frame import Frame
from detectors.records import T_MODEL, T_VERSION, Record
from detectors.spec import DriftSpec, FeatureSpec

pytestmark = pytest.mark.integration

APP = str(Path(dashboard.__file__).with_name("app.py"))
MODEL = "real"
FEATURES = (
    *(FeatureSpec(name=f"x{i}", kind="numeric", min=-8, max=8) for i in range(4)),
    FeatureSpec(name="region", kind="categorical", allowed=["north", "south", "east"]),
)
WINDOWS, SIZE, SHIFT_FROM = 12, 400, 6


def _frame(rng: np.random.Generator, n: int, t0: float, shift: float) -> Frame:
    num = {f"x{i}": rng.normal(shift if i == 1 else 0.0, 1.0, n) for i in range(4)}
    region = rng.choice(np.array(["north", "south", "east"], dtype=object), n, p=[0.5, 0.3, 0.2])
    proba = rng.uniform(0.55, 0.95, n)
    label = np.where(num["x1"] > 0, "yes", "no").astype(object)
    return Frame.from_columns(
        event_id=np.array([f"e{t0}-{i}" for i in range(n)], dtype=object), event_time=np.full(n, t0),
        numeric=num, categorical={"region": region}, pred_label=label,
        pred_proba=np.column_stack([1 - proba, proba]), classes=("no", "yes"),
    )


def real_records(now: float) -> list[Record]:
    from detectors.concept import JoinStats, join_records
    from detectors.impact import feature_impact, impact_records
    from detectors.performance import performance_records
    from detectors.reference import Reference
    from detectors.runner import WindowContext, evaluate_window

    rng = np.random.default_rng(7)
    ref_frame = _frame(rng, 3000, now - 86400, 0.0)
    ref = Reference.from_frame(ref_frame, FEATURES, bins=10, segments=["region"])
    tags = {T_MODEL: MODEL, T_VERSION: "3"}
    out: list[Record] = impact_records(feature_impact(ref_frame, FEATURES), tags, int((now - 86400) * 1e9))
    stats = JoinStats()
    for k in range(WINDOWS):
        start, end = now - (WINDOWS - k) * 300.0, now - (WINDOWS - k - 1) * 300.0
        frame = _frame(rng, SIZE, start, 1.5 if k >= SHIFT_FROM else 0.0)
        ctx = WindowContext(MODEL, "3", frame, ref, FEATURES, DriftSpec(), segments=("region",),
                            window_start=start, window_end=end)
        out += evaluate_window(ctx)
        t = ctx.time_ns
        out += performance_records({"accuracy": 0.8 - 0.1 * (k >= SHIFT_FROM), "f1": 0.7}, tags, t, estimated=False,
                                   n=300, extra={"n_labels": 300, "label_delay_p50": 1800.0, "label_delay_p95": 3000.0})
        out += performance_records({"accuracy": 0.81, "accuracy_std": 0.02, "n": SIZE}, tags, t, estimated=True)
        stats.predictions += SIZE
        stats.matched += 300
        stats.pending_predictions = SIZE - 300
        out += join_records(stats, tags, t)
    return out


@pytest.fixture
def real_db(settings, monkeypatch: pytest.MonkeyPatch):
    import time

    from streams.sinks.influx import write_records

    write_records(settings, real_records(time.time()))
    for k in ("PASSWORD", "PASSWORD_FILE", "AUTH", "ACCESS"):
        monkeypatch.delenv(f"DRIFTWATCH_DASHBOARD_{k}", raising=False)
    monkeypatch.setenv("DRIFTWATCH_INFLUX_URL", settings.influx_url)
    monkeypatch.setenv("DRIFTWATCH_INFLUX_DB", settings.influx_db)
    monkeypatch.setenv("DRIFTWATCH_DASHBOARD_REFRESH_SECONDS", "0")
    return settings


def _open(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query)
    at.run()
    if page != "overview":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, "\n".join(str(e.value) for e in at.exception)
    return at


def test_drift_page_on_real_detector_output(real_db) -> None:
    at = _open("drift", model=MODEL)
    ranked = at.dataframe[0].value
    assert ranked["feature"].iloc[0] == "x1" and bool(ranked["verdict"].iloc[0])
    assert set(ranked["test"]) == {"Kolmogorov-Smirnov", "chi-squared"}
    assert ranked["importance"].notna().all()  # dw_impact joined in
    assert at.dataframe[1].value["feature"].iloc[0] == "x1"  # by impact: big shift in an input that matters
    verdict = next(m.value for m in at.markdown if m.value.startswith("**Drift**"))
    assert "Kolmogorov-Smirnov statistic" in verdict and f"window of {SIZE} events" in verdict
    assert "reference of 3,000" in verdict
    assert len(at.get("vega_lite_chart")) == 5  # incl. reference vs current bins from b00.., e01..
    # segments come from the worker's segment tags
    seg = at.sidebar.selectbox[2]
    assert {"region=north", "region=south", "region=east"} <= set(seg.options)
    seg.select("region=north").run()
    assert not at.exception
    assert at.dataframe[0].value["feature"].iloc[0] == "x1"


def test_other_pages_on_real_detector_output(real_db) -> None:
    at = _open("overview")
    table = at.dataframe[0].value
    assert table["model"].tolist() == [MODEL] and table["status"].iloc[0] == "drifting"
    at = _open("quality", model=MODEL)
    assert at.dataframe[0].value["feature"].notna().all()
    at = _open("performance", model=MODEL)
    acc = next(m for m in at.metric if m.label == "accuracy (realized)")
    assert acc.value == "70.0%" and "81.0%" in acc.proto.delta
    assert len(at.get("vega_lite_chart")) >= 3  # accuracy, f1, coverage/delay
    for page in ("adversarial", "alerts"):
        _open(page, model=MODEL)
