"""Attack traffic generators and the demo's attack scenarios (fake broker: no service needed)."""

from __future__ import annotations

import doctest
import functools
from typing import Any

import numpy as np
import pytest

from streams.devstack import attacks as A
from streams.devstack.demo import DemoOptions, run_demo
from streams.devstack.models import build_wine
from streams.devstack.scenarios import SCENARIOS
from tests.streams.devstack.fake_broker import SETTINGS, FakeClient, Run


@functools.cache
def wine():
    return build_wine()


def test_doctests() -> None:
    assert doctest.testmod(A).failed == 0


# ----------------------------------------------------------------------------- evasion


def test_evasion_flips_the_demo_classifier_with_small_steps() -> None:
    m = wine()
    rng = np.random.default_rng(0)
    X, _ = m.sample(rng, 80)
    r = A.evasion(m.estimator, X, scale=m.std, step=0.05, max_steps=60, lo=m.lo, hi=m.hi, finish=m.finish_inputs)
    before, after = m.estimator.predict(X), m.estimator.predict(r.X)
    assert r.flipped.mean() > 0.95
    assert np.array_equal(r.flipped, before != after)
    # stopped as soon as the class changed: the result sits near the decision boundary
    p = np.sort(m.estimator.predict_proba(r.X[r.flipped]), axis=1)
    p0 = np.sort(m.estimator.predict_proba(X[r.flipped]), axis=1)
    assert np.median(p[:, -1] - p[:, -2]) < 0.5 * np.median(p0[:, -1] - p0[:, -2])
    # each feature moved by at most one step (of 0.05 std, plus rounding to the dataset's precision) per step
    moved = np.abs(r.X - X) / m.std
    assert (moved <= r.steps[:, None] * (0.05 + 0.5 * 10.0**-m.decimals / m.std) + 1e-9).all()
    assert (m.lo <= r.X).all()


def test_decision_gradient_of_a_linear_model_is_exact() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    y = rng.integers(0, 3, 300)
    clf = LogisticRegression(max_iter=500).fit(X, y)
    g = A.decision_gradient(clf, X[:5], np.full(5, 2), np.full(5, 0), np.full(4, 1e-3))
    np.testing.assert_allclose(g, np.tile(clf.coef_[2] - clf.coef_[0], (5, 1)), rtol=1e-6)


# ----------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("strategy", A.EXTRACTION_STRATEGIES)
def test_extraction_queries(strategy: str) -> None:
    m = wine()
    seeds, _ = m.sample(np.random.default_rng(2), 10)

    def make():
        return A.ExtractionAttack(
            m.estimator.predict,
            seeds,
            scale=m.std,
            strategy=strategy,
            step=0.1,
            rng=np.random.default_rng(3),
            finish=m.finish_inputs,
        )

    att = make()
    Q = np.vstack([att.take(7), att.take(150), att.take(43)])
    assert Q.shape == (200, m.n_inputs) and att.sent == 200
    np.testing.assert_array_equal(Q[:10], seeds)  # the seeds are queried first
    np.testing.assert_array_equal(Q, make().take(200))  # deterministic given the generator
    if strategy != "walk":
        assert np.unique(Q, axis=0).shape[0] == 200  # an attacker never asks twice
        # every synthetic query is one sign step (of λ std, before rounding) from an earlier one
        Z = Q / m.std
        d = np.abs(Z[10:, None, :] - Z[None, :, :])
        near = np.array([np.min(np.max(np.abs(d[i, : 10 + i] - 0.1), axis=1)) for i in range(190)])
        assert np.median(near) < 0.1
    with pytest.raises(ValueError, match="unknown extraction strategy"):
        A.ExtractionAttack(m.estimator.predict, seeds, scale=m.std, strategy="nope")


# ----------------------------------------------------------------------------- benign shift


def test_subpopulation_sample() -> None:
    m = wine()
    j = m.index("alcohol")
    rng = np.random.default_rng(4)
    X, y = A.subpopulation_sample(m, rng, 2000, "alcohol", 0.5, True)
    cut = np.quantile(m.X[:, j], 0.5)
    assert X.shape == (2000, m.n_inputs) and y.shape == (2000,)
    assert np.mean(X[:, j] >= cut - 3 * m.jitter * m.std[j]) > 0.99  # the rows' base values are above the cut
    assert X[:, j].mean() > m.X[:, j].mean() + 0.5 * m.std[j]
    low = A.subpopulation_rows(m.X, j, 0.5, above=False)
    assert (m.X[low, j] <= cut).all()
    # labels follow the rows: high-alcohol wines are mostly cultivar 0
    assert np.mean(y == "class_0") > np.mean(m.y == "class_0")


# ----------------------------------------------------------------------------- demo scenarios


def demo_events(**kw) -> tuple[Any, list[dict[str, Any]]]:
    """A demo run's summary and its inference events (model, source, features, predicted label)."""
    run = Run(seed=5, **kw)
    events = [
        {"model": model, "source": e["source_id"], "features": e["features"], "label": e["label"]}
        for model, evs in run.events.items()
        for e in evs
    ]
    return run.summary, events


def test_the_three_scenarios_are_registered() -> None:
    assert {"evasion", "extraction", "benign-shift"} <= set(SCENARIOS)


def test_demo_evasion_and_extraction_add_attack_clients() -> None:
    s, ev = demo_events(
        models=["wine", "diabetes"],
        events=400,
        rate=400,
        scenarios=["evasion:at=0.5,share=0.2", "extraction:share=0.1,source=probe-x"],
    )
    wine_ev = [e for e in ev if e["model"] == "wine"]
    evader = [e for e in wine_ev if e["source"] == "evader-1"]
    probe = [e for e in ev if e["source"] == "probe-x"]
    assert s.counters["evasion.wine.evasion_events"] == len(evader) > 0
    assert "evasion.diabetes.evasion_events" not in s.counters  # regression: nothing to evade
    assert 0.9 <= s.counters["evasion.wine.flipped"] / len(evader) <= 1.0
    assert s.counters["extraction.wine.extraction_queries"] + s.counters[
        "extraction.diabetes.extraction_queries"
    ] == len(probe)
    assert {e["model"] for e in probe} == {"wine", "diabetes"}
    assert s.events["wine"] == 400 + len(evader) + sum(1 for e in probe if e["model"] == "wine")
    # attack rows are valid events: in range, same features as the normal traffic
    assert set(evader[0]["features"]) == set(wine_ev[0]["features"])
    assert all(v >= 0 for e in evader for k, v in e["features"].items() if isinstance(v, float))


def test_demo_benign_shift_moves_the_normal_clients() -> None:
    _, base = demo_events(models=["wine"], events=600, rate=400)
    s, ev = demo_events(models=["wine"], events=600, rate=400, scenarios=["benign-shift"])
    alc0 = np.array([e["features"]["alcohol"] for e in base])
    alc1 = np.array([e["features"]["alcohol"] for e in ev])
    assert s.counters["benign-shift.wine.shifted_events"] == 600
    assert alc1.mean() > alc0.mean() + 0.4
    assert {e["source"] for e in ev} <= {e["source"] for e in base}  # the same client population
    assert s.events == {"wine": 600}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("extraction:strategy=magic", "unknown strategy"),
        ("evasion:step=0", "step > 0"),
        ("benign-shift:quantile=1.5", "quantile"),
        ("benign-shift:feature=colour", "not a numeric model input"),
    ],
)
def test_bad_scenario_parameters_fail_before_sending(text: str, message: str) -> None:
    FakeClient.instances.clear()
    with pytest.raises(ValueError, match=message):
        run_demo(
            SETTINGS, DemoOptions(models=["wine"], events=10, pace=False, scenarios=[text]), client_factory=FakeClient
        )
    assert FakeClient.instances == []
