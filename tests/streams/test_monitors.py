"""streams.monitors: the online-detection sections (drift.online, labels.online) and their validation."""

from __future__ import annotations

import pytest

from detectors.spec import ErrorStreamSpec, OnlineSpec
from streams.monitors import ConfigError, load_monitors, parse_monitors

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
    with pytest.raises(ConfigError, match=r"drift.online.features: 'nope' is not a feature of the model.*"
                                          r"numeric: \['x', 'y'\]"):
        parse_monitors(one(drift={"online": {"features": ["nope"]}}), "m.yaml")


@pytest.mark.parametrize("online, where, what", [
    ({"features": ["x"], "ert": 50_000}, "drift.online", "n_bootstraps .* must be larger than ert"),
    ({"features": ["x", "x"]}, "drift.online", "listed twice"),
    ({"window_sizes": [20, 20]}, "drift.online", "distinct"),
    ({"window_sizes": [1]}, "drift.online", "between 2 and 1000"),
    ({"ert": 1}, "drift.online.ert", "greater than 1"),
    ({"engine": "torch"}, "drift.online.engine", "'native' or 'alibi'"),
])
def test_bad_drift_online_is_refused_with_its_field(online, where, what):
    with pytest.raises(ConfigError, match=rf"models\[0\]\.{where}.*{what}"):
        parse_monitors(one(drift={"online": online}))


@pytest.mark.parametrize("online, what", [
    ({"ert": 1e8}, "n_bootstraps .* too small for ert"),
    ({"reference_size": 10}, "greater than or equal to 50"),
    ({"error_quantile": 1.0}, "less than 1"),
    ({"error_threshold": -1}, "greater than or equal to 0"),
    ({"window_sizes": [5, 5]}, "distinct"),
    ({"nope": 1}, "Extra inputs are not permitted"),
])
def test_bad_labels_online_is_refused_with_its_field(online, what):
    with pytest.raises(ConfigError, match=rf"models\[0\]\.labels\.online.*{what}"):
        parse_monitors(one(labels={"online": online}))


def test_the_demo_configures_online_detection():
    from streams.demo import EXAMPLES_DIR

    cfg = load_monitors(EXAMPLES_DIR / "demo.yaml")
    wine, diabetes = cfg.model("wine"), cfg.model("diabetes")
    assert wine.drift.online.features == ["alcohol"] and diabetes.drift.online.features == ["bmi"]
    assert wine.labels.online.enabled and diabetes.labels.online.error_quantile == 0.9
