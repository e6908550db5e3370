"""streams.worker.monitors: the online-detection sections (drift.online, labels.online) and their validation."""

from __future__ import annotations

import pytest

from detectors.spec import ErrorStreamSpec, OnlineSpec
from streams.worker.monitors import ConfigError, load_monitors, parse_monitors

FEATURES = [{"name": "x", "kind": "numeric"}, {"name": "y", "kind": "numeric"}, {"name": "c", "kind": "categorical"}]


def one(**model) -> dict:
    return {"models": [{"model_id": "m", "features": FEATURES, **model}]}


def test_defaults_are_off_for_features_and_on_for_labels():
    m = parse_monitors(one()).models[0]
    assert m.drift.online.features == [] and m.labels.online.enabled
    assert m.labels.online == ErrorStreamSpec() and m.drift.online == OnlineSpec()


def test_online_features_must_be_numeric_features_of_the_model():
    m = parse_monitors(one(drift={"online": {"features": ["y", "x"], "ert": 5000, "window_sizes": [50, 20]}}))
    spec = m.models[0].drift.online
    assert spec.features == ["y", "x"] and spec.window_sizes == [20, 50] and spec.ert == 5000
    with pytest.raises(ConfigError, match=r"m.yaml: models\[0\]: .*drift.online.features: 'c' is a categorical"):
        parse_monitors(one(drift={"online": {"features": ["c"]}}), "m.yaml")
    with pytest.raises(
        ConfigError,
        match=r"drift.online.features: 'nope' is not a feature of the model.*"
        r"numeric: \['x', 'y'\]",
    ):
        parse_monitors(one(drift={"online": {"features": ["nope"]}}), "m.yaml")


@pytest.mark.parametrize(
    "online, where, what",
    [
        ({"features": ["x"], "ert": 50_000}, "drift.online", "n_bootstraps .* must be larger than ert"),
        ({"features": ["x", "x"]}, "drift.online", "listed twice"),
        ({"window_sizes": [20, 20]}, "drift.online", "distinct"),
        ({"window_sizes": [1]}, "drift.online", "between 2 and 1000"),
        ({"ert": 1}, "drift.online.ert", "greater than 1"),
        ({"engine": "torch"}, "drift.online.engine", "'native' or 'alibi'"),
    ],
)
def test_bad_drift_online_is_refused_with_its_field(online, where, what):
    with pytest.raises(ConfigError, match=rf"models\[0\]\.{where}.*{what}"):
        parse_monitors(one(drift={"online": online}))


@pytest.mark.parametrize(
    "online, what",
    [
        ({"ert": 1e8}, "n_bootstraps .* too small for ert"),
        ({"reference_size": 10}, "greater than or equal to 50"),
        ({"error_quantile": 1.0}, "less than 1"),
        ({"error_threshold": -1}, "greater than or equal to 0"),
        ({"window_sizes": [5, 5]}, "distinct"),
        ({"nope": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_labels_online_is_refused_with_its_field(online, what):
    with pytest.raises(ConfigError, match=rf"models\[0\]\.labels\.online.*{what}"):
        parse_monitors(one(labels={"online": online}))


def test_the_demo_configures_online_detection():
    from streams.devstack.models import EXAMPLES_DIR

    cfg = load_monitors(EXAMPLES_DIR / "demo.yaml")
    wine, diabetes = cfg.model("wine"), cfg.model("diabetes")
    assert wine.drift.online.features == ["alcohol"] and diabetes.drift.online.features == ["bmi"]
    assert wine.labels.online.enabled and diabetes.labels.online.error_quantile == 0.9


# -- the false-alarm budget (alarm_budget) ------------------------------------------------------


def _budgeted(**budget):
    feats = [{"name": "a", "kind": "numeric"}, {"name": "c", "kind": "categorical"}]
    return parse_monitors(
        {
            "alarm_budget": {"false_alarms": 2, "per": "day", **budget},
            "models": [
                {"model_id": "seg", "features": feats, "segments": ["c"], "window": {"size_seconds": 300}},
                {"model_id": "evt", "features": feats, "window": {"size_events": 1000}},
            ],
        }
    )


def test_alarm_budget_sets_the_drift_level_of_each_model():
    cfg = _budgeted(event_rates={"evt": 10.0})
    seg, evt = cfg.models
    families = seg.families + evt.families
    # drift and quality for the window and at most 10 segment values + __other__; prediction drift; CBPE
    assert seg.family_counts == {"drift": 12, "quality": 12, "prediction": 1, "performance": 1}
    assert seg.families == 2 * (1 + 11) + 2 and evt.families == 4
    assert seg.drift.p_val == pytest.approx(2 / (families * 288))
    assert evt.drift.p_val == pytest.approx(2 / (families * 86_400 * 10 / 1000))
    plan = cfg.budget_plan()
    assert [line.rate_source for line in plan] == ["size_seconds", "declared"]
    assert sum(line.share_per_day for line in plan) == pytest.approx(2.0)


def test_alarm_budget_without_a_rate_follows_the_observed_one():
    cfg = _budgeted()
    evt = cfg.model("evt")
    assert evt.observes_rate and evt.drift.p_val == 0.05  # the configured level until a window is seen
    assert evt.drift_for_rate(5.0).p_val == pytest.approx(2 / ((26 + 4) * 86_400 * 5 / 1000))  # 26 + 4 families
    assert cfg.budget_plan({"evt": 5.0})[1].rate_source == "observed"


def test_alarm_budget_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"alarm_budget.event_rates: 'nope' is not a configured model_id"):
        _budgeted(event_rates={"nope": 1.0})
    with pytest.raises(ConfigError, match=r"alarm_budget.false_alarms"):
        _budgeted(false_alarms=0)


@pytest.mark.parametrize(
    ("model", "what"),
    [
        ({"window": {"size_seconds": 60}}, r"shards: 4 needs count windows"),
        ({"window": {"size_events": 1001}}, r"window.size_events: 1001 is not a multiple of shards \(4\)"),
        ({"window": {"size_events": 1000}, "reference": {"first_n": 500}}, r"shards: 4 needs reference.file"),
        ({"window": {"size_events": 1000}, "reference": {"rolling": True}}, r"shards: 4 needs reference.file"),
        ({"shards": 0}, r"shards"),
    ],
)
def test_a_sharded_model_needs_aligned_count_windows_and_a_file_reference(tmp_path, model, what):
    ref = tmp_path / "ref.csv"
    ref.write_text("x,y,c\n1.0,2.0,a\n2.0,3.0,b\n")
    cfg = one(shards=4, reference={"file": str(ref)})
    cfg["models"][0].update(model)
    with pytest.raises(ConfigError, match=what):
        parse_monitors(cfg, "m.yaml")
    ok = one(shards=4, window={"size_events": 1000}, reference={"file": str(ref)})
    assert parse_monitors(ok).models[0].shards == 4
    # alert rules are evaluated by the merge step (their state in the partials partition's own slot)
    rules = [{"name": "a", "signal": "drift.p_value", "op": "<", "threshold": 0.01}]
    alerted = one(shards=4, window={"size_events": 1000}, reference={"file": str(ref)}, alerts=rules)
    assert parse_monitors(alerted).models[0].alerts[0].name == "a"
