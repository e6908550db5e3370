"""Charts read at a glance (issue 18): one test per defect a new user met, under Streamlit's
AppTest against the real InfluxDB of the local stack.

The database holds what a newcomer has after twelve minutes of ``driftwatch up``: 30-second
windows of ``churn`` (drifting on ``f_001`` from the middle on, 30 % missing ``f_002``, 0.2 %
missing ``f_003``, an online CvM detector on ``f_000``) and a regression ``reg`` with realized
metrics only. The monitor config gives ``churn`` alert rules, whose thresholds the charts draw.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import charts as C
from dashboard import queries as Q
from dashboard import sample
from detectors import records as R
from detectors.records import Record
from streams.devstack.localstack import LocalStack
from tests.dashboard import test_app
from tests.dashboard.helpers import fresh_db
from tests.dashboard.test_app import _env, no_exception, texts

pytestmark = pytest.mark.integration

WINDOWS, CADENCE = 24, 30  # twelve minutes of 30 s windows
MONITORS = """
models:
  - model_id: churn
    features: [{name: f_000, kind: numeric}, {name: f_001, kind: numeric}]
    alerts:
      - {name: features_drifting, signal: drift_summary.share_drifted, op: ">=", threshold: 0.1, for_windows: 3}
      - {name: missing, signal: quality.missing_rate, where: {feature: "*"}, op: ">", threshold: 0.05}
      - {name: accuracy_drop, signal: performance.value, where: {metric: accuracy}, op: "<", threshold: 0.8}
  - model_id: reg
    task: regression
    features: [{name: x, kind: numeric}]
"""


def _extra(recs: list[Record]) -> list[Record]:
    """0.2 % missing in f_003, an online detector's point, a regression with realized metrics only."""
    out = []
    q3 = [
        r
        for r in recs
        if r.measurement == R.QUALITY and r.tags.get(R.T_FEATURE) == "f_003" and r.tags.get(R.T_MODEL) == "churn"
    ]
    out += [Record(R.QUALITY, r.tags, {**r.fields, "missing_rate": 0.002, "n_missing": 1}, r.time_ns) for r in q3]
    d5 = [
        r
        for r in recs
        if r.measurement == R.DRIFT and r.tags.get(R.T_FEATURE) == "f_005" and r.tags.get(R.T_MODEL) == "churn"
    ]  # judged against a stored band (detectors/thresholds.py)
    out += [
        Record(
            R.DRIFT,
            r.tags,
            {**r.fields, "judged": "p_value", "band_lower": 0.001, "threshold_method": "reference_chunks"},
            r.time_ns,
        )
        for r in d5
    ]
    last = max(r.time_ns for r in recs)
    out.append(
        Record(
            R.DRIFT,
            {R.T_MODEL: "churn", R.T_VERSION: "1", R.T_FEATURE: "f_000", R.T_DETECTOR: "cvm_online"},
            {"drift": 0, "statistic": 3.1, "threshold": 8.4, "n": 500, "ert": 20000, "n_detections": 0, "rank": 9},
            last,
        )
    )
    for k in range(WINDOWS):
        t = last - (WINDOWS - 1 - k) * CADENCE * 1_000_000_000
        base = {R.T_MODEL: "reg", R.T_VERSION: "1"}
        out.append(Record(R.WINDOW, base, {"n_events": 500, "events_per_s": 16.7, "n_invalid": 0}, t))
        out.append(
            Record(
                R.PERFORMANCE,
                {**base, R.T_METRIC: "mae", R.T_DETECTOR: "realized"},
                {"value": 40.0 + k, "n_labels": 250, "label_delay_p50": 5.0, "label_delay_p95": 6.0},
                t,
            )
        )
        # prediction drift of a regression's output, as the worker writes it (window size in n_cur)
        out.append(
            Record(
                R.PREDICTION,
                {**base, R.T_FEATURE: "__value__", R.T_DETECTOR: "ks"},
                {"statistic": 0.05, "p_value": 0.4, "threshold": 0.05, "drift": False, "n_cur": 500, "n_ref": 1000},
                t,
            )
        )
    return out


@pytest.fixture(scope="module")
def fresh(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Q.Conn, Path, pd.Timestamp]]:
    with fresh_db(stack, "glance") as conn:
        end = datetime.now(UTC).replace(microsecond=0)  # when the module's tests start, not at collection
        recs = list(
            sample.sample_records(
                ["churn"],
                n_features=8,
                windows=WINDOWS,
                cadence_s=CADENCE,
                end=end,
                drift_feature="f_001",
                quality_feature="f_002",
                false_alarms=False,
            )
        )
        recs += _extra(recs)
        sample.write_records(conn, recs)
        first = pd.Timestamp(min(r.time_ns for r in recs if r.measurement == R.WINDOW), unit="ns", tz="UTC")
        monitors = tmp_path_factory.mktemp("glance") / "monitors.yaml"
        monitors.write_text(MONITORS)
        yield conn, monitors, first


@pytest.fixture
def env(fresh, monkeypatch: pytest.MonkeyPatch) -> pd.Timestamp:
    conn, monitors, first = fresh
    _env(monkeypatch, conn.url, conn.db, monitors=str(monitors))
    return first


def open_page(page: str = "overview", **query: str) -> AppTest:
    at = test_app.open_page(page, **query)
    no_exception(at)
    return at


def specs(at: AppTest) -> list[dict]:
    """Every chart's Vega-Lite spec, with its datasets (Arrow, sent beside the spec) put back in."""
    import pyarrow as pa

    out = []
    for c in at.get("vega_lite_chart"):
        spec = json.loads(c.proto.spec)
        spec["datasets"] = {
            d.name: pa.ipc.open_stream(d.data.data).read_pandas().to_dict("records") for d in c.proto.datasets
        }
        out.append(spec)
    return out


def layers(spec: dict) -> list[dict]:
    """The leaf layers of a (possibly nested) layer chart."""
    if "layer" not in spec:
        return [spec]
    return [leaf for lay in spec["layer"] for leaf in layers(lay)]


def data(spec: dict, at: AppTest | None = None) -> list[pd.DataFrame]:
    """The data of each layer of a chart (inline datasets of the spec)."""
    ds = spec.get("datasets", {})
    return [pd.DataFrame(ds.get(lay.get("data", {}).get("name", ""), [])) for lay in layers(spec)]


def title_text(spec: dict) -> str:
    """A chart's title (a subtitle makes it a {text, subtitle} object)."""
    t = spec.get("title", "")
    return str(t.get("text", "")) if isinstance(t, dict) else str(t)


def titled(at: AppTest, start: str) -> dict:
    found = [s for s in specs(at) if title_text(s).startswith(start)]
    assert found, [s.get("title") for s in specs(at)]
    return found[0]


def has_rule(spec: dict, value: float | None = None) -> bool:
    rules = [lay for lay in layers(spec) if (lay.get("mark") or {}).get("type") == "rule" and lay["encoding"].get("y")]
    if value is None:
        return bool(rules)
    return any(value in pd.DataFrame(spec["datasets"][r["data"]["name"]])["y"].tolist() for r in rules)


# Range and time -----------------------------------------------------------------------------


def test_default_range_follows_the_data(env: pd.Timestamp) -> None:
    at = open_page("overview")
    assert at.sidebar.selectbox(key="dw_range").value == "auto"
    header = next(c.value for c in at.caption if "last updated" in c.value)
    # the data ends when the module's fixture wrote it; a slow run may still pass 15 minutes
    since = (pd.Timestamp.now(tz="UTC") - env).total_seconds() / 60
    shown = re.search(r"last (\d+) min \(since the data started at", header)
    assert shown and abs(int(shown.group(1)) - max(15.0, since)) <= 1.5, header
    tp = titled(at, "Events per second")
    (points,) = data(tp)[:1]
    # twelve minutes in 10 s buckets: a line of ~24 points per model, not one dot in a day
    assert points.groupby("model").size().min() >= 20


def test_heatmap_cells_start_with_the_data_and_end_now(env: pd.Timestamp) -> None:
    at = open_page("drift", model="churn")
    heat = next(s for s in specs(at) if (s.get("mark") or {}).get("type") == "rect")
    cells = data(heat)[0]
    start = pd.to_datetime(cells["time"], utc=True)
    end = pd.to_datetime(cells["end"], utc=True)
    assert start.min() >= env  # the first cell does not start before the first window closed
    assert end.max() <= pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=1)
    assert {t["title"] for t in heat["encoding"]["tooltip"] if "title" in t} >= {"from", "to"}


def test_the_change_is_marked_where_it_starts(env: pd.Timestamp) -> None:
    at = open_page("drift", model="churn")
    share = titled(at, "Share of features drifting")
    marker = [
        lay
        for lay in share["layer"]
        if (lay.get("mark") or {}).get("type") == "rule" and "x" in lay.get("encoding", {})
    ] or [
        inner
        for lay in share["layer"]
        for inner in lay.get("layer", [])
        if (inner.get("mark") or {}).get("type") == "rule"
    ]
    assert marker, share["layer"]
    cap = " ".join(c.value for c in at.caption)
    assert "Drifting since" in cap
    # the sample drifts from the middle of its twelve minutes on
    since = pd.Timestamp(cap.split("Drifting since **")[1].split(" UTC")[0], tz="UTC")
    assert env + pd.Timedelta(minutes=4) <= since <= env + pd.Timedelta(minutes=8)


# Overview ------------------------------------------------------------------------------------


def test_throughput_ticks_zero_and_one_colour_per_model(env: pd.Timestamp) -> None:
    at = open_page("overview")
    tp = titled(at, "Events per second")
    y = tp["encoding"]["y"]
    assert y["axis"]["format"] == ",.4~g" and y["scale"]["zero"] is True  # never "200.40079164520…"
    color = tp["encoding"]["color"]["scale"]
    assert color["scheme"] == C.PALETTE and color["domain"] == ["churn", "reg"]
    # a bucket's mean of its windows' events/s: the first and the current (partial) bucket of
    # a steady stream are no dips
    points = data(tp)[0]
    reg = pd.to_numeric(points.loc[points["model"] == "reg", "events_per_s"])
    assert len(reg) >= 20 and (reg.round(6) == 16.7).all(), reg.tolist()


# Titles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["overview", "drift", "quality", "performance", "adversarial"])
def test_axis_titles_fit_beside_the_plot(env: pd.Timestamp, page: str) -> None:
    """An axis title longer than the plot is tall pushes the chart out of its frame and cuts
    its title (what happened to "Combined adversarial score", "Label delay", ...): every
    y title fits in its limit, at ~6.5 px per character of an 11 px font."""
    at = open_page(page, model="churn")
    for spec in specs(at):
        for lay in layers(spec):
            y = (lay.get("encoding") or {}).get("y") or {}
            title, axis = y.get("title"), y.get("axis") or {}
            if not isinstance(title, str) or "titleLimit" not in axis:
                continue
            assert len(title) * 6.5 <= axis["titleLimit"], (spec.get("title"), title)


# Tables and texts ---------------------------------------------------------------------------


def test_tables_never_show_none(env: pd.Timestamp) -> None:
    at = open_page("drift", model="churn")
    ranked = at.dataframe[0].value
    online = ranked[ranked["test"] == "cvm_online"]
    assert len(online) == 1
    assert online["p-value"].iloc[0] == "—" and online["PSI"].iloc[0] == "—"
    # each row says the rule it was judged by: the online detector its statistic, f_005 its stored band
    assert online["rule"].iloc[0] == "statistic vs its threshold"
    f5 = ranked[ranked["feature"] == "f_005"]
    assert f5["rule"].iloc[0] == "reference chunks" and f5["band"].iloc[0] == "p-value ≥ 0.001"
    for df in (d.value for d in at.dataframe):
        assert not df.isna().any().any(), df


def test_percent_columns_read_alike_with_and_without_missing_cells() -> None:
    # a column with a missing cell is drawn as text: it must read as Streamlit's "percent" format
    # draws the complete column beside it ("2%", "2.13%"; not "2.0%" beside "2%"), and its row
    # names must fit ("bmi_class" was clipped)
    def page() -> None:
        import pandas as pd
        import streamlit as st

        from dashboard import ui

        df = pd.DataFrame({"feature": ["bmi_class", "s1"], "full": [0.02, 0.0213], "gappy": [0.02, None]})
        pct = st.column_config.NumberColumn(format="percent")
        ui.table(df, column_config={"full": pct, "gappy": pct})

    at = AppTest.from_function(page).run()
    no_exception(at)
    shown = at.dataframe[0].value
    assert list(shown["gappy"]) == ["2%", "—"]
    assert list(shown["full"]) == [0.02, 0.0213]  # numeric: Streamlit draws "2%", "2.13%"
    cfg = json.loads(at.dataframe[0].proto.columns)
    assert cfg["gappy"]["alignment"] == "right"  # as the numbers beside it
    assert cfg["feature"]["width"] == 8 * len("bmi_class") + 28


def test_online_detector_verdict_says_what_it_tested(env: pd.Timestamp) -> None:
    at = open_page("drift", model="churn", feature="f_000")
    at.selectbox(key="dw_feature_sel").set_value("f_000").run()
    no_exception(at)
    verdicts = [m.value for m in at.markdown if m.value.startswith(("**Drift**", "**No drift**"))]
    online = [v for v in verdicts if "cvm_online" in v]
    assert online and "500 events of the window tested one by one" in online[0], verdicts
    assert "a false alarm once per 20,000 events" in online[0]
    assert not any("window of — events" in v for v in verdicts)


def test_small_missing_rates_are_not_rounded_to_zero(env: pd.Timestamp) -> None:
    at = open_page("quality", model="churn")
    assert "`f_003` (peak 0.20%)" in texts(at)
    assert "`f_002` (peak 30.0%)" in texts(at)


def test_no_all_zero_heatmap_beside_no_missing_values(env: pd.Timestamp) -> None:
    at = open_page("quality", model="reg")  # a model without quality results at all
    assert "No data-quality results" in texts(at)
    at = open_page("quality", model="churn")
    at.radio(key="dw_q_rate").set_value("null_violation_rate").run()
    no_exception(at)
    heats = [s for s in specs(at) if (s.get("mark") or {}).get("type") == "rect"]
    ok = [s.value for s in at.success if "No null violation values" in s.value]
    assert ok and not heats


def test_regression_chart_names_only_the_lines_it_draws(env: pd.Timestamp) -> None:
    at = open_page("performance", model="reg")
    mae = titled(at, "mae")
    assert mae["title"] == "mae: realized (labels)"
    at = open_page("performance", model="churn")
    assert titled(at, "accuracy")["title"].startswith("accuracy: ")


def test_label_delay_in_seconds_when_short(env: pd.Timestamp) -> None:
    at = open_page("performance", model="reg")
    delay = titled(at, "Label delay")
    assert delay["encoding"]["y"]["title"] == "seconds"
    values = data(delay)[0]["delay"]
    assert values.between(4.9, 6.1).all()  # 5 s and 6 s, not 0.0833 min


def test_unknown_model_in_the_url_is_said(env: pd.Timestamp) -> None:
    at = open_page("overview", model="iris")
    warn = " ".join(w.value for w in at.warning)
    assert "No results for model `iris`" in warn and "`churn`" in warn


# Thresholds ---------------------------------------------------------------------------------


def test_threshold_lines_on_every_series_with_a_threshold(env: pd.Timestamp) -> None:
    at = open_page("drift", model="churn")
    assert has_rule(titled(at, "Share of features drifting"), 0.1)  # the alert rule's threshold
    at.session_state["dw_feature_history"] = True
    at.run()
    no_exception(at)
    assert has_rule(titled(at, "f_001: smallest p-value"))  # the test's corrected threshold

    at = open_page("quality", model="churn")
    at.session_state["dw_q_lines"] = True
    at.run()
    no_exception(at)
    assert has_rule(next(s for s in specs(at) if "worst features" in str(s.get("title"))), 0.05)

    at = open_page("performance", model="churn")
    assert has_rule(titled(at, "accuracy"), 0.8)

    at = open_page("adversarial", model="churn")
    for spec in specs(at):
        assert has_rule(spec), spec.get("title")


def test_stored_threshold_bands_are_drawn(env: pd.Timestamp) -> None:
    at = open_page("drift", model="churn", feature="f_005")
    at.selectbox(key="dw_feature_sel").set_value("f_005").run()
    at.session_state["dw_feature_history"] = True
    at.run()
    no_exception(at)
    p = titled(at, "f_005: smallest p-value")
    areas = [lay for lay in layers(p) if (lay.get("mark") or {}).get("type") == "area"]
    assert len(areas) == 1
    band = pd.DataFrame(p["datasets"][areas[0]["data"]["name"]])
    assert len(band) >= 20 and (band["band_from"] == 0.001).all()
    # a feature judged without a band gets none
    at.selectbox(key="dw_feature_sel").set_value("f_001").run()
    at.session_state["dw_feature_history"] = True
    at.run()
    no_exception(at)
    assert not [
        lay for lay in layers(titled(at, "f_001: smallest p-value")) if (lay.get("mark") or {}).get("type") == "area"
    ]


# Layout fixes seen at 1,024 px (issue 18; the Chromium side is tests/dashboard/test_layout.py) -----


@pytest.mark.parametrize("page", ["overview", "drift", "quality", "performance", "adversarial"])
def test_time_axes_are_24_hour_utc(env: pd.Timestamp, page: str) -> None:
    """Vega's default tick labels are 12-hour without AM/PM ("03:01" for 15:01, "03 PM"): every
    time axis says hours and minutes as the captions and tooltips do."""
    at = open_page(page, model="churn")
    axes = [
        (lay.get("encoding") or {}).get("x", {}).get("axis")
        for spec in specs(at)
        for lay in layers(spec)
        if (lay.get("encoding") or {}).get("x", {}).get("type") == "temporal"
    ]
    axes = [a for a in axes if a]
    assert axes, page
    for a in axes:
        assert a["format"]["hours"] == a["format"]["minutes"] == "%H:%M" and a["formatType"] == "time", a


def test_series_with_equal_values_get_distinct_dashes_and_a_note() -> None:
    """Two models at the same rate: the second line is dashed over the solid first (drawn
    first), and the subtitle says they lie on top of each other."""
    t = pd.date_range("2026-01-01", periods=5, freq="min", tz="UTC")
    df = pd.DataFrame(
        {
            "time": [*t, *t, *t],
            "model": ["b"] * 5 + ["a"] * 5 + ["c"] * 5,
            "events_per_s": [200.0] * 10 + [10.0, 12.0, 11.0, 13.0, 12.0],
        }
    )
    spec = C.lines(df, "events_per_s", color="model", title="Events per second").to_dict()
    dash = spec["encoding"]["strokeDash"]
    assert dash["field"] == "model" and dash["scale"]["domain"] == ["a", "b", "c"]
    assert dash["scale"]["range"][0] == [1, 0] and len({str(r) for r in dash["scale"]["range"]}) == 3
    rows = spec["datasets"][spec["data"]["name"]]
    assert [r["model"] for r in rows] == ["a"] * 5 + ["b"] * 5 + ["c"] * 5  # solid series drawn first
    assert spec["title"]["text"] == "Events per second"
    assert spec["title"]["subtitle"] == ["lines on top of each other:", "a = b"]
    # series that differ get no note
    apart = C.lines(df[df["model"] != "b"], "events_per_s", color="model", title="x").to_dict()
    assert apart["title"] == "x"


def test_prediction_drift_of_a_regression_names_the_output_and_its_window(env: pd.Timestamp) -> None:
    at = open_page("performance", model="reg")
    text = texts(at)
    assert "**predicted value** — latest window" in text and "window of 500 predictions vs reference of 1,000" in text
    assert "__value__" not in text and "window of — predictions" not in text
    (pred,) = [s for s in specs(at) if title_text(s).startswith("Prediction drift")]
    colors = [lay["encoding"]["color"] for lay in layers(pred) if "color" in (lay.get("encoding") or {})]
    assert colors and data(pred)[0]["output"].unique().tolist() == ["predicted value"]
