"""Feature impact vs scikit-learn's estimators; ranking; records."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

from detectors.frame import Frame
from detectors.impact import feature_impact, impact_records, rank_drift_by_impact
from detectors.records import IMPACT
from detectors.spec import FeatureSpec

FEATS = [
    FeatureSpec(name="a", kind="numeric"),
    FeatureSpec(name="b", kind="numeric"),
    FeatureSpec(name="c", kind="categorical"),
    FeatureSpec(name="noise", kind="numeric"),
]


def _frame(rng, n=1500, task="classification"):
    a, b, noise = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    c = rng.choice(["u", "v", "w"], n).astype(object)
    score = 2 * a + 0.7 * b + (c == "w") * 1.0
    kw = (
        dict(pred_label=np.where(score > 0.5, "pos", "neg").astype(object))
        if task == "classification"
        else dict(pred_value=score + 0.05 * rng.normal(size=n))
    )
    return Frame.from_columns(
        event_id=np.arange(n).astype(str),
        event_time=np.zeros(n),
        numeric={"a": a, "b": b, "noise": noise},
        categorical={"c": c},
        **kw,
    )


def test_mutual_information_equals_sklearn():
    rng = np.random.default_rng(0)
    f = _frame(rng)
    imp = {i.feature: i for i in feature_impact(f, FEATS, seed=3)}
    _, codes = np.unique(f.categorical["c"].astype(str), return_inverse=True)
    x = np.column_stack([f.numeric["a"], f.numeric["b"], codes, f.numeric["noise"]])
    ref = mutual_info_classif(
        x, f.pred_label.astype(str), discrete_features=[False, False, True, False], random_state=3
    )
    for name, v in zip(["a", "b", "c", "noise"], ref):
        assert imp[name].importance == pytest.approx(v)
    assert [i.feature for i in sorted(imp.values(), key=lambda i: i.rank)][:2] == ["a", "b"]
    assert sum(i.normalized for i in imp.values()) == pytest.approx(1.0)


def test_regression_target_and_missing_values():
    rng = np.random.default_rng(1)
    f = _frame(rng, task="regression")
    f.numeric["b"][:100] = np.nan
    imp = feature_impact(f, FEATS, seed=0)
    assert imp[0].feature == "a" and imp[-1].feature == "noise"
    b = f.numeric["b"].copy()
    b[np.isnan(b)] = np.nanmedian(b)  # median imputation, then scikit-learn's estimator
    _, codes = np.unique(f.categorical["c"].astype(str), return_inverse=True)
    x = np.column_stack([f.numeric["a"], b, codes, f.numeric["noise"]])
    ref = mutual_info_regression(x, f.pred_value, discrete_features=[False, False, True, False], random_state=0)
    assert next(i for i in imp if i.feature == "b").importance == pytest.approx(ref[1])


def test_permutation_importance_on_a_surrogate():
    rng = np.random.default_rng(2)
    f = _frame(rng, 800)
    imp = feature_impact(f, FEATS, method="permutation", n_repeats=2)
    assert imp[0].feature == "a" and imp[0].fidelity > 0.9
    assert next(i for i in imp if i.feature == "noise").importance < 0.02


def test_records_and_drift_ranking():
    rng = np.random.default_rng(3)
    imp = feature_impact(_frame(rng, 600), FEATS)
    recs = impact_records(imp, {"model": "m"}, 9)
    assert {r.tags["feature"] for r in recs} == {"a", "b", "c", "noise"}
    assert all(r.measurement == IMPACT and r.tags["detector"] == "mi" for r in recs)
    ranked = rank_drift_by_impact({"a": 0.1, "noise": 0.9, "b": 0.5}, imp)
    assert ranked[0][0] in ("a", "b") and ranked[-1][0] in ("c", "noise")
    with pytest.raises(ValueError, match="no prediction"):
        feature_impact(
            Frame.from_columns(
                event_id=np.arange(30).astype(str), event_time=np.zeros(30), numeric={"a": np.zeros(30)}
            ),
            FEATS[:1],
        )
