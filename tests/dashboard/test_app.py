"""Every dashboard page under Streamlit's AppTest, against the real InfluxDB of the local stack.

The database is filled with synthetic results (``dashboard.sample``) written over the
v1 ``/write`` API: model ``churn`` drifts on ``f_001`` and loses 30 % of ``f_002``
from the middle of the span on, with a critical alert firing and one failed webhook
delivery; ``fraud`` and ``ranker`` are healthy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from streamlit.testing.v1 import AppTest

import dashboard
from dashboard import auth, sample
from dashboard import queries as Q
from detectors import records as R
from streams.devstack.localstack import LocalStack
from tests.dashboard.helpers import fresh_db

pytestmark = pytest.mark.integration

APP = str(Path(dashboard.__file__).with_name("app.py"))
MODELS = ["churn", "fraud", "ranker"]
DRIFTING = "f_001"
BROKEN = "f_002"
SEGMENT = "country=de"
PAGES = ["drift", "quality", "performance", "adversarial", "alerts"]


@pytest.fixture(scope="module")
def populated(stack: LocalStack) -> Iterator[Q.Conn]:
    """One database with 8 hours of results (5-minute windows) for three models."""
    with fresh_db(stack, "dash") as conn:
        recs = sample.sample_records(
            MODELS,
            n_features=8,
            windows=96,
            cadence_s=300,
            drift_feature=DRIFTING,
            quality_feature=BROKEN,
            segments=[SEGMENT],
            false_alarms=False,
        )
        n = sample.write_records(conn, recs)
        assert n > 10_000
        yield conn


def _env(monkeypatch: pytest.MonkeyPatch, url: str, db: str, **extra: str) -> None:
    for k in ("PASSWORD", "PASSWORD_FILE", "AUTH", "ACCESS"):
        monkeypatch.delenv(f"DRIFTWATCH_DASHBOARD_{k}", raising=False)
    monkeypatch.setenv("DRIFTWATCH_INFLUX_URL", url)
    monkeypatch.setenv("DRIFTWATCH_INFLUX_DB", db)
    monkeypatch.setenv("DRIFTWATCH_INFLUX_VERSION", "1")
    for k in ("INFLUX_PASSWORD", "INFLUX_TOKEN"):  # the stack's user and password file stay (conftest)
        monkeypatch.delenv(f"DRIFTWATCH_{k}", raising=False)
    monkeypatch.setenv("DRIFTWATCH_DASHBOARD_REFRESH_SECONDS", "0")
    for k, v in extra.items():
        monkeypatch.setenv(f"DRIFTWATCH_{k.upper()}", v)


@pytest.fixture
def env(populated: Q.Conn, monkeypatch: pytest.MonkeyPatch) -> Q.Conn:
    _env(monkeypatch, populated.url, populated.db)
    return populated


def open_page(page: str = "overview", **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query)
    at.run()
    if page != "overview":
        at.switch_page(f"views/{page}.py").run()
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, "\n".join(str(e.value) for e in at.exception)


def charts(at: AppTest) -> list:
    return at.get("vega_lite_chart")


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.info] + [e.value for e in at.error] + [e.value for e in at.warning]
    parts += [e.value for e in at.success]
    return "\n".join(parts)


# Pages ------------------------------------------------------------------------------------


def test_overview_shows_every_model_and_its_health(env: Q.Conn) -> None:
    at = open_page()
    no_exception(at)
    assert at.title[0].value == "Overview"
    assert metric(at, "Models") == "3"
    assert metric(at, "Alerts firing") == "1"
    table = at.dataframe[0].value
    assert table["model"].tolist() == MODELS
    status = dict(zip(table["model"], (next(iter(s)) for s in table["status"])))  # one coloured label per row
    assert status["churn"] == "critical"
    assert status["fraud"] == "ok" and status["ranker"] == "ok"
    assert "critical alert(s) firing" in table.loc[table["model"] == "churn", "why"].iloc[0]
    assert (table["events/s"] > 0).all()
    assert table["last window"].notna().all()
    assert len(charts(at)) == 2  # events/s and invalid rate per model
    # "Open a model": the most severe model first; its page links keep the time range
    pick = at.selectbox(key="dw_ov_open")
    assert pick.options[0].startswith("churn") and pick.value == "churn"
    links = {p.value: parse_qs(p.proto.query_string) for p in at.get("page_link")}
    assert {"drift", "quality", "performance", "alerts"} <= set(links)
    assert links["drift"]["model"] == ["churn"] and links["drift"]["range"] == ["auto"]
    pick.select("fraud").run()
    no_exception(at)
    q = parse_qs(next(p for p in at.get("page_link") if p.value == "quality").proto.query_string)
    assert q["model"] == ["fraud"] and q["range"] == ["auto"]


def test_drift_page_shows_the_drifting_feature_with_its_evidence(env: Q.Conn) -> None:
    at = open_page("drift", model="churn")
    no_exception(at)
    assert at.title[0].value == "Data drift"
    ranked = at.dataframe[0].value
    assert ranked["feature"].iloc[0] == DRIFTING
    assert ranked["verdict"].tolist() == [True] + [False] * 7  # the "drift" checkbox column
    for col in ("test", "statistic", "p-value", "threshold", "PSI", "JS distance", "window n", "reference n"):
        assert col in ranked
    assert ranked["p-value"].iloc[0] < ranked["threshold"].iloc[0]
    # points written without a verdict rule were judged on the p-value alone: said so, no band invented
    assert ranked["rule"].tolist() == ["p-value"] * 8 and ranked["band"].tolist() == ["—"] * 8
    assert len(at.dataframe) == 1  # lazy tabs: only the open ranking is built
    # the detail of the (default) top feature: verdict sentence with test, statistic, p, threshold, windows
    verdict = next(m.value for m in at.markdown if m.value.startswith("**Drift**"))
    for part in ("Kolmogorov-Smirnov statistic", "< threshold", "window of", "reference of 2,000", "window ending"):
        assert part in verdict, verdict
    assert re.search(r"p (= [0-9.e+-]+|< 1e-16) < threshold 0.00625", verdict), verdict
    detail = next(m.value for m in at.markdown if m.value.startswith("**Statistic**"))
    for part in (
        "(Kolmogorov-Smirnov)",
        "**p-value**",
        "**threshold** 0.00625",
        "**PSI**",
        "**JS distance**",
        "**Wasserstein**",
    ):
        assert part in detail, detail
    assert at.selectbox(key="dw_feature_sel").value == DRIFTING
    assert at.query_params["feature"] == [DRIFTING] or at.query_params["feature"] == DRIFTING
    assert metric(at, "Drifting features") == "1 / 8"
    assert "Bonferroni" in texts(at)
    # share over time, heatmap, distributions (the feature's history waits in its expander)
    assert len(charts(at)) == 3
    assert not any("noised" in c.value or "withheld" in c.value for c in at.caption)  # not a sensitive feature
    # the other ranking, when its tab is opened
    at.session_state["dw_rank_tab"] = "Ranked by impact"
    at.run()
    no_exception(at)
    by_impact = at.dataframe[0].value
    assert by_impact["feature"].iloc[0] == DRIFTING and "impact" in by_impact
    # the feature's history, when its expander is opened: p-value and effect sizes over time + its last windows
    at.session_state["dw_feature_history"] = True
    at.run()
    no_exception(at)
    assert len(charts(at)) == 5
    windows = at.dataframe[1].value
    assert len(windows) == 20 and windows["drift"].all()


def test_drift_page_of_a_healthy_model(env: Q.Conn) -> None:
    at = open_page("drift", model="fraud", range="7d")
    no_exception(at)
    ranked = at.dataframe[0].value
    assert not ranked["verdict"].any()
    assert any(m.value.startswith("**No drift**") for m in at.markdown)


def test_drift_feature_detail_follows_the_selection(env: Q.Conn) -> None:
    at = open_page("drift", model="churn", feature="c_004")
    no_exception(at)
    assert at.selectbox(key="dw_feature_sel").value == "c_004"
    verdict = next(m.value for m in at.markdown if m.value.startswith("**No drift**"))
    assert "chi-squared" in verdict
    at.selectbox(key="dw_feature_sel").select("f_003").run()
    no_exception(at)
    assert at.query_params["feature"] in ("f_003", ["f_003"])


def test_quality_page(env: Q.Conn) -> None:
    at = open_page("quality", model="churn")
    no_exception(at)
    assert metric(at, "Worst missing rate") == "30.0%"
    latest = at.dataframe[0].value
    assert latest["feature"].iloc[0] == BROKEN
    dead = at.dataframe[1].value  # a message without a model (not_json) counts on every model's page
    assert dead["reason"].tolist() == ["schema", "not_json"] and dead["count"].iloc[0] > 1
    assert len(charts(at)) == 2  # heatmap, dead letters (the worst features' lines wait in their expander)
    assert f"`{BROKEN}` (peak 30.0%)" in texts(at)
    at.session_state["dw_q_lines"] = True
    at.run()
    no_exception(at)
    assert len(charts(at)) == 3
    at.radio(key="dw_q_rate").set_value("unknown_category_rate").run()
    no_exception(at)


def test_performance_page(env: Q.Conn) -> None:
    at = open_page("performance", model="churn")
    no_exception(at)
    assert at.title[0].value == "Concept drift & performance"
    # accuracy realized vs estimated (with the estimate's band), estimation error, coverage, delay, prediction drift
    assert len(charts(at)) == 5
    assert "calibrated on" in texts(at) and "Estimation error" in str(charts(at)[1].proto.spec)
    acc = next(m for m in at.metric if m.label == "accuracy (realized)")
    assert acc.value.endswith("%") and "estimated" in acc.proto.delta
    assert any("predicted class" in m.value and "chi-squared" in m.value for m in at.markdown)
    assert "predictions labelled" in texts(at)


def test_adversarial_page_flags_the_scraper(env: Q.Conn) -> None:
    at = open_page("adversarial", model="churn")
    no_exception(at)
    assert "scraper-7" in at.error[0].value
    tables = [d.value for d in at.dataframe]
    src = next(t for t in tables if "source" in t)
    assert src["source"].iloc[0] == "scraper-7" and src["flagged_windows"].iloc[0] > 0
    assert "flagged_by" in src  # (of its latest point: empty unless flagged now)
    # which component raised each flagged window, and against whom
    flags = next(t for t in tables if "verdict" in t)
    assert len(flags) and (flags["verdict"] == "flagged by outlier (source contrast) — scraper-7").all()
    assert "flagged by outlier (source contrast) — scraper-7" in at.warning[0].value
    assert len(charts(at)) == 2
    at = open_page("adversarial", model="fraud")
    assert "No source flagged" in texts(at)


def test_adversarial_page_leaves_out_what_the_latest_window_did_not_measure(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A component without a value in the latest window (a regression model has no decision margin) is
    named as not measured, never shown as a dash or as "— vs —"."""
    with fresh_db(stack, "advgap") as conn:
        recs = list(sample.sample_records(["reg"], n_features=3, windows=6, cadence_s=300))
        last = max(r.time_ns for r in recs if r.measurement == R.ADVERSARIAL)
        for r in recs:
            if r.measurement == R.ADVERSARIAL and r.time_ns == last:
                for k in [k for k in r.fields if k.startswith("low_margin")]:
                    del r.fields[k]
        sample.write_records(conn, recs)
        _env(monkeypatch, conn.url, conn.db)
        at = open_page("adversarial", model="reg", range="7d")
        no_exception(at)
        shown = [m.label for m in at.metric]
        assert "outlier (source contrast) p-value" in shown
        assert not any(label.startswith("low margin") for label in shown), shown
        assert "Not measured in the latest window: low margin (source contrast)" in texts(at)
        assert "— vs —" not in texts(at) and "p = —" not in texts(at)


def test_alerts_page(env: Q.Conn) -> None:
    at = open_page("alerts", model="churn")
    no_exception(at)
    assert metric(at, "Firing now") == "1"
    assert metric(at, "Resolved in range") == "1"
    assert metric(at, "Failed deliveries") == "1"
    assert "slack" in at.error[0].value
    assert len(charts(at)) == 1
    changes = at.dataframe[1].value
    assert {"pending", "firing", "resolved"} <= set(changes["status"])
    at = open_page("alerts", model="fraud")
    no_exception(at)
    assert metric(at, "Firing now") == "0"
    assert "No alert was pending" in texts(at)


def test_alerts_page_shows_the_false_alarm_budget(
    populated: Q.Conn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    feats = [{"name": f"f_{i:03d}", "kind": "numeric"} for i in range(8)]
    cfg = tmp_path / "monitors.yaml"
    cfg.write_text(
        json.dumps(
            {
                "alarm_budget": {"false_alarms": 2, "per": "day"},
                "models": [
                    {"model_id": "churn", "features": feats, "window": {"size_seconds": 300}},
                    {"model_id": "fraud", "features": feats, "window": {"size_events": 1000}},
                    {"model_id": "ranker", "features": feats, "window": {"size_seconds": 300}},
                ],
            }
        )
    )
    _env(monkeypatch, populated.url, populated.db, monitors=str(cfg))
    at = open_page("alerts", model="churn")
    no_exception(at)
    assert metric(at, "Budget per day") == "2"
    # alarms spent, counted independently: drift verdicts of the univariate summaries in the last day
    rows = Q.run(
        populated,
        'SELECT count("drift") FROM "dw_drift_summary" WHERE "drift" = 1 AND '
        '"detector" = \'univariate\' AND time > now() - 86400s GROUP BY "model"',
    )[0]
    by_model = {r["tags"]["model"]: r["values"][0][1] for r in rows}
    assert by_model.get("churn", 0) > 0  # churn drifts in the sample
    assert metric(at, "Alarms spent (last day)") == str(sum(by_model.values()))
    table = next(d.value for d in at.dataframe if "allotted" in d.value)
    assert table["model"].tolist() == MODELS
    assert table["allotted"].sum() == pytest.approx(2.0)  # the whole budget, shared by families
    assert table.loc[table["model"] == "churn", "spent"].iloc[0] == by_model["churn"]
    churn = table[table["model"] == "churn"].iloc[0]
    assert churn["windows"] == pytest.approx(288) and churn["rate from"] == "size_seconds"
    # B / (families x windows per day): 4 alarming families per model (drift, quality, prediction, CBPE)
    assert churn["families by kind"] == "drift 1, quality 1, prediction 1, performance 1"
    assert churn["level per window"] == pytest.approx(2 / (12 * 288))
    assert churn["level per test"] == pytest.approx(2 / (12 * 288) / 8)
    assert churn["online alarms"] == 0  # no online detector configured
    fraud = table[table["model"] == "fraud"].iloc[0]
    assert fraud["rate from"] == "observed" and fraud["windows"] > 0  # from the stored events/s
    assert "over the budget" in texts(at)


# Navigation --------------------------------------------------------------------------------


def test_filters_come_from_the_url_and_survive_page_switches(env: Q.Conn) -> None:
    at = open_page("overview", model="fraud", range="7d")
    no_exception(at)
    assert at.sidebar.selectbox[0].value == "fraud"
    assert at.sidebar.selectbox[3].value == "7d"
    for page in PAGES:
        at.switch_page(f"views/{page}.py").run()
        no_exception(at)
        assert at.sidebar.selectbox[0].value == "fraud", page
        assert at.query_params["model"] in ("fraud", ["fraud"]), page
        assert at.query_params["range"] in ("7d", ["7d"]), page
    # in-page links carry the filters too
    link = at.get("page_link")[0]
    q = parse_qs(link.proto.query_string)
    assert q["model"] == ["fraud"] and q["range"] == ["7d"]


def test_version_and_segment_filters(env: Q.Conn) -> None:
    at = open_page("drift", model="churn")
    version, segment = at.sidebar.selectbox[1], at.sidebar.selectbox[2]
    assert version.options == ["(all versions)", "1"]
    assert segment.options == ["(all traffic)", SEGMENT]
    segment.select(SEGMENT).run()
    no_exception(at)
    assert at.query_params["segment"] in (SEGMENT, [SEGMENT])
    assert f"segment {SEGMENT}" in texts(at)
    assert at.dataframe[0].value["feature"].iloc[0] == DRIFTING
    at.sidebar.selectbox[1].select("1").run()
    no_exception(at)
    # a segment without data for another model: empty states, not errors
    at = open_page("quality", model="fraud", segment=SEGMENT)
    no_exception(at)


def _heatmaps(at: AppTest) -> list[dict]:
    import json

    specs = [json.loads(c.proto.spec) for c in charts(at)]
    return [s for s in specs if s.get("mark", {}).get("type") == "rect"]


def test_wide_models_draw_the_top_features_and_the_rest_on_demand(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """50 features: the heatmaps draw the top 20 (the drifting / broken one first), the other
    30 behind an expander whose heatmap is only built when it is opened."""
    conn = Q.Conn.from_settings(settings)
    sample.write_records(
        conn,
        sample.sample_records(
            ["wide"], n_features=50, windows=48, drift_feature="f_031", quality_feature="f_032", false_alarms=False
        ),
    )
    _env(monkeypatch, settings.influx_url, settings.influx_db)
    at = open_page("drift", model="wide")
    no_exception(at)
    (heat,) = _heatmaps(at)
    assert heat["title"].startswith(f"The {Q.HEATMAP_TOP} features with the most drifting windows")
    rows = heat["encoding"]["y"]["sort"]
    assert len(rows) == Q.HEATMAP_TOP and rows[0] == "f_031"
    assert next(e.label for e in at.expander) == "All 50 features × time"
    at.session_state["dw_heat_all"] = True
    at.run()
    no_exception(at)
    _top, everything = _heatmaps(at)
    assert len(everything["encoding"]["y"]["sort"]) == 50 and everything["title"].startswith("All 50 features")

    at = open_page("quality", model="wide")
    no_exception(at)
    (heat,) = _heatmaps(at)
    rows = heat["encoding"]["y"]["sort"]
    assert len(rows) == Q.HEATMAP_TOP and rows[0] == "f_032"
    at.session_state["dw_q_heat_all"] = True
    at.run()
    no_exception(at)
    assert [len(h["encoding"]["y"]["sort"]) for h in _heatmaps(at)] == [Q.HEATMAP_TOP, 50]


def test_custom_date_range(env: Q.Conn) -> None:
    at = open_page("drift", model="churn", range="custom")
    no_exception(at)
    assert at.query_params["from"] and at.query_params["to"]
    assert "(UTC)" in texts(at)


def test_empty_states_say_what_to_do(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, settings.influx_url, settings.influx_db)
    at = open_page()
    no_exception(at)
    assert "No data yet: is the worker running?" in at.info[0].value
    assert not charts(at)
    # a database that does not exist at all: same message
    _env(monkeypatch, settings.influx_url, f"{settings.influx_db}_missing")
    at = open_page()
    no_exception(at)
    assert "No data yet: is the worker running?" in at.info[0].value


def test_a_model_without_results_in_the_range(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = Q.Conn.from_settings(settings)
    # only an old window: nothing in the last 15 minutes
    from datetime import datetime, timedelta

    sample.write_records(
        conn, sample.sample_records(["old"], n_features=3, windows=2, end=datetime.now(UTC) - timedelta(hours=3))
    )
    _env(monkeypatch, settings.influx_url, settings.influx_db)
    for page in ["overview", *PAGES]:
        at = open_page(page, model="old", range="15m")
        no_exception(at)
        assert not charts(at), page
        assert at.info, page


def test_unreachable_influxdb_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.devstack.localstack import free_port

    _env(monkeypatch, f"http://127.0.0.1:{free_port()}", "nothing")
    at = open_page()
    no_exception(at)
    assert "InfluxDB cannot be reached" in at.error[0].value
    assert "driftwatch stack up" in at.error[0].value


# Access -------------------------------------------------------------------------------------


def test_password_login(populated: Q.Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, populated.url, populated.db, dashboard_password="hunter2")
    at = AppTest.from_file(APP, default_timeout=60).run()
    no_exception(at)
    assert not at.get("page_link") and not at.dataframe
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert "Wrong user or password" in at.error[0].value
    at.text_input[0].input("hunter2")
    at.button[0].click().run()
    no_exception(at)
    assert at.title[0].value == "Overview"
    assert at.sidebar.selectbox[0].options == MODELS


def test_per_user_model_lists(populated: Q.Conn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    access = tmp_path / "access.yaml"
    access.write_text(
        "users:\n"
        f"  bob: {{models: [fraud], password_hash: '{auth.hash_password('bobpw', iterations=1000)}'}}\n"
        "default_models: [ranker]\n"
    )
    _env(monkeypatch, populated.url, populated.db, dashboard_password="shared", dashboard_access=str(access))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input[0].input("bob")
    at.text_input[1].input("bobpw")
    at.button[0].click().run()
    no_exception(at)
    assert at.sidebar.selectbox[0].options == ["fraud"]
    assert at.dataframe[0].value["model"].tolist() == ["fraud"]
    # a model outside the list cannot be forced through the URL
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["model"] = "churn"
    at.run()
    at.text_input[0].input("")
    at.text_input[1].input("shared")
    at.button[0].click().run()
    no_exception(at)
    assert at.sidebar.selectbox[0].options == ["ranker"]
    assert at.sidebar.selectbox[0].value == "ranker"


def test_oidc_login_and_access(populated: Q.Conn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    access = tmp_path / "access.yaml"
    access.write_text("users:\n  alice@example.com: {models: ['*']}\n  bob@example.com: {models: ['fr*']}\n")
    _env(monkeypatch, populated.url, populated.db, dashboard_auth="oidc", dashboard_access=str(access))
    if auth.authlib_problem() is not None:  # this venv has no Authlib: the login button's path as if it had
        monkeypatch.setattr(auth, "authlib_problem", lambda: None)
    at = AppTest.from_file(APP, default_timeout=60)
    at.user = {"is_logged_in": False}
    at.run()
    no_exception(at)
    assert at.button[0].label == "Log in"
    assert not at.dataframe
    at = AppTest.from_file(APP, default_timeout=60)
    at.user = {"is_logged_in": True, "email": "bob@example.com"}
    at.run()
    no_exception(at)
    assert at.sidebar.selectbox[0].options == ["fraud"]
    assert "bob@example.com" in "\n".join(c.value for c in at.sidebar.caption)
    at = AppTest.from_file(APP, default_timeout=60)
    at.user = {"is_logged_in": True, "email": "mallory@example.com"}
    at.run()
    no_exception(at)
    assert "may not see any" in at.warning[0].value


def test_oidc_without_authlib_says_what_to_install(populated: Q.Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    """OIDC configured, Authlib missing: a clear message naming the extra, no login button, no
    traceback (``st.login`` would raise StreamlitMissingAuthlibError at the click), nobody let in."""
    import sys

    _env(monkeypatch, populated.url, populated.db, dashboard_auth="oidc")
    monkeypatch.setitem(sys.modules, "authlib", None)  # import authlib -> ImportError, installed or not
    assert auth.authlib_problem() == "Authlib is not installed"
    at = AppTest.from_file(APP, default_timeout=60)
    at.user = {"is_logged_in": False}
    at.run()
    no_exception(at)
    msg = at.error[0].value
    assert "OIDC login is configured, but Authlib is not installed" in msg
    assert "pip install 'driftwatch[oidc]'" in msg and "Authlib>=1.3.2" in msg
    assert not at.button and not at.dataframe and not at.sidebar.selectbox


def test_the_band_column_reads_as_the_judged_value_and_its_limits() -> None:
    from dashboard.ui import band_text as _band

    assert _band({"judged": "p_value", "band_lower": 0.00125}) == "p-value ≥ 0.00125"
    assert _band({"judged": "statistic", "band_upper": 0.08, "band_lower": float("nan")}) == "statistic ≤ 0.08"
    assert _band({"judged": "effect", "band_lower": 0.0, "band_upper": 0.1}) == "effect 0–0.1"
    assert _band({"judged": "p_value"}) == "—" and _band({}) == "—"
