"""The dashboard reads what the real detectors write, through the worker's own sink.

No synthetic shortcut here: windows of events go through ``detectors.runner.evaluate_window``
(drift, quality, histograms, segments), ``detectors.performance`` and ``detectors.impact``;
the records are written by ``streams.influx.sink.write_records`` to the real InfluxDB of
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
        event_id=np.array([f"e{t0}-{i}" for i in range(n)], dtype=object),
        event_time=np.full(n, t0),
        numeric=num,
        categorical={"region": region},
        pred_label=label,
        pred_proba=np.column_stack([1 - proba, proba]),
        classes=("no", "yes"),
    )


def real_records(now: float) -> list[Record]:
    from detectors.concept import JoinStats, join_records
    from detectors.impact import feature_impact, impact_records
    from detectors.performance import performance_records
    from detectors.reference import Reference
    from detectors.runner import WindowContext, default_evaluators, evaluate_window

    rng = np.random.default_rng(7)
    ref_frame = _frame(rng, 3000, now - 86400, 0.0)
    ref = Reference.from_frame(ref_frame, FEATURES, bins=10, segments=["region"])
    tags = {T_MODEL: MODEL, T_VERSION: "3"}
    out: list[Record] = impact_records(feature_impact(ref_frame, FEATURES), tags, int((now - 86400) * 1e9))
    stats = JoinStats()
    evaluators = default_evaluators()  # one list for the series of windows, as the worker keeps
    for k in range(WINDOWS):
        start, end = now - (WINDOWS - k) * 300.0, now - (WINDOWS - k - 1) * 300.0
        frame = _frame(rng, SIZE, start, 1.5 if k >= SHIFT_FROM else 0.0)
        ctx = WindowContext(
            MODEL, "3", frame, ref, FEATURES, DriftSpec(), segments=("region",), window_start=start, window_end=end
        )
        out += evaluate_window(ctx, evaluators)
        t = ctx.time_ns
        out += performance_records(
            {"accuracy": 0.8 - 0.1 * (k >= SHIFT_FROM), "f1": 0.7},
            tags,
            t,
            estimated=False,
            n=300,
            extra={"n_labels": 300, "label_delay_p50": 1800.0, "label_delay_p95": 3000.0},
        )
        # no estimate of our own: the default evaluators' CBPE writes what it says here (the reference has no
        # labels, so "not calibrated"); a hand-made estimate at the same time merged into that point
        stats.predictions += SIZE
        stats.matched += 300
        stats.pending_predictions = SIZE - 300
        out += join_records(stats, tags, t)
    return out


@pytest.fixture
def real_db(settings, monkeypatch: pytest.MonkeyPatch):
    import time

    from streams.influx.sink import write_records

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
    verdict = next(m.value for m in at.markdown if m.value.startswith("**Drift**"))
    assert "Kolmogorov-Smirnov statistic" in verdict and f"window of {SIZE} events" in verdict
    assert "reference of 3,000" in verdict
    assert len(at.get("vega_lite_chart")) == 3  # incl. reference vs current bins from b00.., e01..
    at.session_state["dw_rank_tab"] = "Ranked by impact"
    at.run()
    assert not at.exception
    assert at.dataframe[0].value["feature"].iloc[0] == "x1"  # by impact: big shift in an input that matters
    # segments come from the worker's segment tags
    seg = at.sidebar.selectbox[2]
    assert {"region=north", "region=south", "region=east"} <= set(seg.options)
    seg.select("region=north").run()
    assert not at.exception
    assert at.dataframe[0].value["feature"].iloc[0] == "x1"


def test_other_pages_on_real_detector_output(real_db) -> None:
    at = _open("overview")
    table = at.dataframe[0].value
    assert table["model"].tolist() == [MODEL] and list(table["status"].iloc[0]) == ["drifting"]
    at = _open("quality", model=MODEL)
    assert at.dataframe[0].value["feature"].notna().all()
    at = _open("performance", model=MODEL)
    acc = next(m for m in at.metric if m.label == "accuracy (realized)")
    assert acc.value == "70.0%" and acc.proto.delta == "estimate: not calibrated"
    assert any("not calibrated" in m.value for m in [*at.markdown, *at.info, *at.caption])  # and the page says why
    assert len(at.get("vega_lite_chart")) >= 3  # accuracy, f1, coverage/delay
    for page in ("adversarial", "alerts"):
        _open(page, model=MODEL)


# Sensitive features (issue 8, data minimisation) ------------------------------------------------

PRIVATE = "private"
PRIVATE_FEATURES = (
    FeatureSpec(name="x0", kind="numeric"),
    FeatureSpec(name="income", kind="numeric", sensitive=True, dp_epsilon=0.5),
    FeatureSpec(name="postcode", kind="categorical", sensitive=True, dp_epsilon=None),
)


def _private_frame(rng: np.random.Generator, n: int, t0: float) -> Frame:
    return Frame.from_columns(
        event_id=np.array([f"p{t0}-{i}" for i in range(n)], dtype=object),
        event_time=np.full(n, t0),
        numeric={"x0": rng.normal(0, 1, n), "income": rng.lognormal(10, 1, n)},
        categorical={"postcode": rng.choice(np.array(["1000", "2000", "3000"], dtype=object), n)},
        pred_label=np.full(n, "yes", dtype=object),
        pred_proba=np.column_stack([np.full(n, 0.3), np.full(n, 0.7)]),
        classes=("no", "yes"),
    )


def private_records(now: float) -> list[Record]:
    """Windows of a model with one noised and one withheld feature, through the real runner."""
    from detectors.reference import Reference
    from detectors.runner import WindowContext, default_evaluators, evaluate_window

    rng = np.random.default_rng(11)
    ref = Reference.from_frame(_private_frame(rng, 2000, now - 86400), PRIVATE_FEATURES, bins=10)
    out: list[Record] = []
    evaluators = default_evaluators()
    for k in range(4):
        start, end = now - (4 - k) * 300.0, now - (3 - k) * 300.0
        ctx = WindowContext(
            PRIVATE,
            "1",
            _private_frame(rng, 500, start),
            ref,
            PRIVATE_FEATURES,
            DriftSpec(),
            window_start=start,
            window_end=end,
        )
        out += evaluate_window(ctx, evaluators)
    return out


@pytest.fixture
def private_db(settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import time

    import yaml

    from streams.influx.sink import write_records

    write_records(settings, private_records(time.time()))
    config = tmp_path / "monitors.yaml"
    config.write_text(
        yaml.safe_dump({"models": [{"model_id": PRIVATE, "features": [f.model_dump() for f in PRIVATE_FEATURES]}]})
    )
    for k in ("PASSWORD", "PASSWORD_FILE", "AUTH", "ACCESS"):
        monkeypatch.delenv(f"DRIFTWATCH_DASHBOARD_{k}", raising=False)
    monkeypatch.setenv("DRIFTWATCH_INFLUX_URL", settings.influx_url)
    monkeypatch.setenv("DRIFTWATCH_INFLUX_DB", settings.influx_db)
    monkeypatch.setenv("DRIFTWATCH_DASHBOARD_REFRESH_SECONDS", "0")
    monkeypatch.setenv("DRIFTWATCH_MONITORS", str(config))
    return settings


def _notes(at: AppTest) -> str:
    return "\n".join([c.value for c in at.caption] + [i.value for i in at.info])


def test_drift_page_says_how_sensitive_histograms_are_published(private_db, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    # what the worker's runner stored: income noised at its epsilon, postcode nothing at all
    r = httpx.post(
        f"{private_db.influx_url}/query",
        data={
            "db": private_db.influx_db,
            "q": 'SELECT "noised", "epsilon", "e01", "n" FROM "dw_histogram" GROUP BY "feature"',
        },
        auth=(private_db.influx_username, private_db.influx_password.get_secret_value()),
    ).json()
    stored = {s["tags"]["feature"]: dict(zip(s["columns"], s["values"][-1])) for s in r["results"][0]["series"]}
    assert set(stored) == {"x0", "income"}  # postcode withheld
    assert stored["income"]["noised"] == 1 and stored["income"]["epsilon"] == 0.5 and stored["income"]["e01"] is None
    assert stored["x0"]["noised"] == 0 and stored["x0"]["e01"] is not None

    at = _open("drift", model=PRIVATE, feature="income")
    assert at.selectbox(key="dw_feature_sel").value == "income"
    assert "histogram noised (differential privacy, ε = 0.5)" in _notes(at)
    assert len(at.get("vega_lite_chart")) == 3  # share, heatmap and the (noised) distribution

    at = _open("drift", model=PRIVATE, feature="postcode")
    assert "histogram withheld: sensitive feature, no histogram published" in _notes(at)
    assert "dp_epsilon: null" in _notes(at)
    assert len(at.get("vega_lite_chart")) == 2  # no distribution plot: nothing was published
    assert any(m.value.startswith(("**Drift**", "**No drift**")) for m in at.markdown)  # its test is still shown

    at = _open("drift", model=PRIVATE, feature="x0")
    assert "noised" not in _notes(at) and "withheld" not in _notes(at)

    # without the model in the monitor config: the noised histogram still says so (its own fields);
    # a withheld one cannot be told from "nothing written yet", and the page does not pretend
    monkeypatch.setenv("DRIFTWATCH_MONITORS", str(Path(private_db.state_dir) / "no-such-config.yaml"))
    at = _open("drift", model=PRIVATE, feature="income")
    assert "histogram noised (differential privacy, ε = 0.5)" in _notes(at)
    at = _open("drift", model=PRIVATE, feature="postcode")
    assert "No histograms stored for `postcode`" in _notes(at) and "withheld:" not in _notes(at)
