"""Rules: config validation and pure evaluation of a window's Records."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from detectors.records import ADVERSARIAL, DRIFT, DRIFT_SUMMARY, PERFORMANCE, QUALITY, SOURCE, Record
from streams.alerts.rules import (
    AlertRule,
    SilenceConfig,
    WebhookConfig,
    alert_key,
    compare,
    evaluate,
    parse_duration,
    render_summary,
)
from streams.worker.monitors import ConfigError, parse_monitors

T = 1_700_000_000_000_000_000


def rec(meas: str, fields: dict, **tags: str) -> Record:
    return Record(meas, {"model": "m", "version": "1", **tags}, fields, T)


def rule(**kw) -> AlertRule:
    base = {"name": "r", "signal": "drift.p_value", "op": "<", "threshold": 0.01}
    return AlertRule(**{**base, **kw})


WINDOW = [
    rec(DRIFT, {"p_value": 0.001, "statistic": 0.4, "drift": True}, feature="age", detector="ks"),
    rec(DRIFT, {"p_value": 0.2, "statistic": 0.05, "drift": False}, feature="income", detector="ks"),
    rec(DRIFT, {"p_value": 0.004, "statistic": 0.3, "drift": True}, feature="petal_w", detector="ks"),
    rec(DRIFT, {"p_value": float("nan")}, feature="empty", detector="ks"),
    rec(DRIFT_SUMMARY, {"share_drifted": 0.5}),
    rec(QUALITY, {"missing_rate": 0.3, "out_of_range_rate": 0.0}, feature="age"),
    rec(PERFORMANCE, {"value": 0.71}, metric="accuracy"),
    rec(PERFORMANCE, {"value": 0.9}, metric="f1"),
    rec(ADVERSARIAL, {"score": 0.93}),
    rec(SOURCE, {"extraction_flag": True}, source="client-7"),
    rec(SOURCE, {"extraction_flag": False}, source="client-8"),
    Record(DRIFT, {"model": "other", "version": "1", "feature": "age"}, {"p_value": 0.0}, T),
    Record(DRIFT, {"model": "m", "version": "2", "feature": "age"}, {"p_value": 0.0}, T),
]


def verdicts(r: AlertRule) -> dict[str, bool]:
    return {o.key: o.breached for o in evaluate([r], WINDOW, "m", "1")}


def test_any_feature_gives_one_alert_per_series_and_skips_nan_and_other_models():
    got = verdicts(rule(where={"feature": "*"}))
    assert got == {
        "m/1/r{detector=ks,feature=age}": True,
        "m/1/r{detector=ks,feature=income}": False,
        "m/1/r{detector=ks,feature=petal_w}": True,
    }


def test_where_glob_list_and_exact():
    assert list(verdicts(rule(where={"feature": "petal_*"}))) == ["m/1/r{detector=ks,feature=petal_w}"]
    assert len(verdicts(rule(where={"feature": ["age", "income"]}))) == 2
    assert verdicts(rule(where={"feature": "age"})) == {"m/1/r{detector=ks,feature=age}": True}
    assert verdicts(rule(where={"feature": "nope"})) == {}
    assert verdicts(rule(where={"segment": "*"})) == {}  # a tag the records lack never matches


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({"signal": "drift_summary.share_drifted", "op": ">=", "threshold": 0.3}, {"m/1/r": True}),
        ({"signal": "quality.missing_rate", "op": ">", "threshold": 0.1}, {"m/1/r{feature=age}": True}),
        (
            {"signal": "performance.value", "op": "<", "threshold": 0.8, "where": {"metric": "accuracy"}},
            {"m/1/r{metric=accuracy}": True},
        ),
        ({"signal": "adversarial.score", "op": ">", "threshold": 0.95}, {"m/1/r": False}),
        (
            {"signal": "source.extraction_flag", "op": "==", "threshold": True},
            {"m/1/r{source=client-7}": True, "m/1/r{source=client-8}": False},
        ),
        (
            {"signal": "dw_drift.drift", "op": "==", "threshold": True, "where": {"feature": "age"}},
            {"m/1/r{detector=ks,feature=age}": True},
        ),
    ],
)
def test_every_kind_of_signal(kw, expected):
    assert verdicts(rule(**kw)) == expected


def test_max_series_bounds_keys_and_duplicates_keep_the_last_value():
    assert len(verdicts(rule(where={"feature": "*"}, max_series=2))) == 2
    dup = [rec(DRIFT, {"p_value": 0.001}, feature="a"), rec(DRIFT, {"p_value": 0.5}, feature="a")]
    obs = evaluate([rule()], dup, "m", "1")
    assert [(o.value, o.breached) for o in obs] == [(0.5, False)]


def test_window_end_defaults_to_latest_record_time():
    obs = evaluate(
        [rule()],
        [Record(DRIFT, {"feature": "a"}, {"p_value": 0.0}, 7), Record(DRIFT, {"feature": "b"}, {"p_value": 0.0}, 9)],
        "m",
        "1",
    )
    assert {o.window_end_ns for o in obs} == {9}


def test_labels_of_an_observation():
    (o,) = evaluate([rule(labels={"team": "risk"}, severity="critical", where={"feature": "age"})], WINDOW, "m", "1")
    assert o.labels == {
        "alertname": "r",
        "model": "m",
        "version": "1",
        "severity": "critical",
        "feature": "age",
        "detector": "ks",
        "team": "risk",
    }


def test_compare_against_python_operators():
    import operator

    ops = {
        ">": operator.gt,
        ">=": operator.ge,
        "<": operator.lt,
        "<=": operator.le,
        "==": operator.eq,
        "!=": operator.ne,
    }
    for sym, fn in ops.items():
        for a in (0.0, 0.5, 1.0):
            for b in (0.0, 0.5, 1.0):
                assert compare(a, sym, b) is fn(a, b)
    assert compare(math.nan, "<", 1.0) is None
    assert compare("red", "==", "red") is True and compare("red", "!=", "red") is False
    assert compare("red", "<", 1.0) is None


def test_alert_key_is_bounded():
    k = alert_key("m", "1", "r", {"feature": "x" * 500})
    assert len(k) <= 240 and k != alert_key("m", "1", "r", {"feature": "x" * 499})


def test_summary_template_is_safe():
    assert render_summary("{feature} p={value:.2g}", {"feature": "age", "value": "n/a"}) == "age p=n/a"
    with pytest.raises(ValidationError, match="only plain names"):
        rule(summary="{value.__class__}")


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"signal": "drfit.p_value"}, "unknown signal 'drfit'"),
        ({"signal": "drift"}, "drift.p_value"),
        ({"op": "<", "threshold": "red"}, "text threshold"),
        ({"labels": {"severity": "x"}}, "set by driftwatch"),
        ({"labels": {"bad-name": "x"}}, "label name"),
        ({"where": {"model": "x"}}, "implied"),
        ({"for_windows": 0}, "greater than or equal to 1"),
        ({"severity": "fatal"}, "info"),
        ({"bogus": 1}, "Extra inputs"),
    ],
)
def test_bad_rules_say_what_is_wrong(kw, message):
    with pytest.raises(ValidationError, match=message):
        rule(**kw)


def test_durations():
    assert parse_duration("4h") == 14400.0 and parse_duration("90s") == 90.0 and parse_duration("7d") == 604800.0
    assert rule(repeat_interval="30m").repeat_interval == 1800.0
    assert rule(repeat_interval=0).repeat_interval is None
    with pytest.raises(ValidationError, match="not a duration"):
        rule(repeat_interval="soon")


def test_webhook_config_validation(monkeypatch, tmp_path):
    ok = WebhookConfig(name="ops", url="https://example.org/h", secret_env="DW_TEST_SECRET")
    monkeypatch.setenv("DW_TEST_SECRET", "s3cret")
    assert ok.resolve_secret() == b"s3cret"
    with pytest.raises(ValidationError, match="exactly one of url or url_env"):
        WebhookConfig(name="x", secret_env="A")
    with pytest.raises(ValidationError, match="every delivery is signed"):
        WebhookConfig(name="x", url="https://e.org")
    with pytest.raises(ValidationError, match="http"):
        WebhookConfig(name="x", url="ftp://e.org", secret_env="A")
    f = tmp_path / "secret"
    f.write_text("from-file\n")
    assert WebhookConfig(name="x", url="http://e", secret_file=f).resolve_secret() == b"from-file"
    monkeypatch.delenv("DW_TEST_SECRET")
    with pytest.raises(ValueError) as e:
        ok.resolve_secret()
    assert "DW_TEST_SECRET is not set" in str(e.value) and "s3cret" not in str(e.value)


def test_silence_needs_expiry_and_matchers():
    s = SilenceConfig(match={"model": "m"}, until="2030-01-01T00:00:00")
    assert s.until.tzinfo is not None
    with pytest.raises(ValidationError):
        SilenceConfig(match={"model": "m"})
    with pytest.raises(ValidationError):
        SilenceConfig(match={}, until="2030-01-01T00:00:00Z")


def monitors(alerts, webhooks=()):
    return {
        "models": [{"model_id": "m", "features": [{"name": "x", "kind": "numeric"}], "alerts": alerts}],
        "webhooks": list(webhooks),
    }


def test_monitor_config_checks_routes_and_names():
    good = {"name": "d", "signal": "drift.p_value", "op": "<", "threshold": 0.01, "webhooks": ["ops"]}
    cfg = parse_monitors(monitors([good], [{"name": "ops", "url": "http://h", "secret_env": "S"}]))
    assert cfg.models[0].alerts[0].webhooks == ["ops"]
    with pytest.raises(ConfigError, match="unknown webhook 'ops'"):
        parse_monitors(monitors([good]))
    with pytest.raises(ConfigError, match="duplicate alert rule name"):
        parse_monitors(monitors([{**good, "webhooks": None}, {**good, "webhooks": None}]))
    with pytest.raises(ConfigError, match=r"models\[0\]\.alerts\[0\]\.signal"):
        parse_monitors(monitors([{**good, "signal": "nope.x", "webhooks": None}]))


def test_segments_only_when_asked_for():
    recs = [
        rec(DRIFT, {"p_value": 0.001}, feature="age", segment="all"),
        rec(DRIFT, {"p_value": 0.001}, feature="age", segment="region=eu"),
        rec(DRIFT, {"p_value": 0.5}, feature="age", segment="region=us"),
    ]
    assert verdicts_of(rule(where={"feature": "*"}), recs) == {"m/1/r{feature=age}": True}
    assert verdicts_of(rule(where={"segment": "region=*"}), recs) == {
        "m/1/r{feature=age,segment=region=eu}": True,
        "m/1/r{feature=age,segment=region=us}": False,
    }


def verdicts_of(r, recs):
    return {o.key: o.breached for o in evaluate([r], recs, "m", "1")}


def test_for_and_keep_firing_for_take_prometheus_names_and_durations():
    r = rule(**{"for": "10m", "keep_firing_for": "1h"})
    assert (r.for_, r.keep_firing_for) == (600.0, 3600.0)
    assert (rule().for_, rule().keep_firing_for) == (0.0, 0.0)  # Prometheus' defaults: fire and resolve at once
    assert rule(for_=30).for_ == 30.0  # the Python name works too


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("for", "-5m", "not a duration"),
        ("for", -1, "greater than or equal to 0"),
        ("keep_firing_for", "soon", "not a duration"),
        ("keep_firing_for", "45d", "less than or equal to 2592000"),
    ],
)
def test_hysteresis_fields_are_validated_and_the_error_names_the_field(field, value, message):
    good = {"name": "d", "signal": "drift.p_value", "op": "<", "threshold": 0.01}
    with pytest.raises(ConfigError, match=rf"models\[0\]\.alerts\[0\]\.{field}: .*{message}"):
        parse_monitors(monitors([{**good, field: value}]))
