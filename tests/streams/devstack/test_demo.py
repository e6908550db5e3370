"""streams.devstack.demo: traffic, scenarios, determinism, the shipped config and references, the real broker."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from streams.devstack import demo as D
from streams.devstack import models as M
from streams.devstack.demo import DemoOptions, run_demo
from streams.devstack.models import build_models
from streams.devstack.scenarios import (
    MALFORMED_KINDS,
    SCENARIOS,
    Scenario,
    malformed_message,
    param,
    parse_scenario,
    register_scenario,
)
from streams.lifetime import die_with_parent
from streams.settings import Settings
from streams.worker.decode import Decoder
from streams.worker.decode import RawMessage as DecodeMessage
from streams.worker.monitors import load_monitors
from tests.streams.devstack.fake_broker import SETTINGS, FakeClient, Run

DEMO_YAML = M.EXAMPLES_DIR / "demo.yaml"
CONFIG = load_monitors(DEMO_YAML)


@functools.cache
def models() -> dict[str, M.DemoModel]:
    """The trained demo models (built on first use: importing scikit-learn takes seconds)."""
    return build_models(["wine", "diabetes"])


def feature_specs(model: str):
    return CONFIG.model(model).features


# ----------------------------------------------------------------------------- the stationary stream
def test_stationary_traffic_follows_the_config_and_counts_add_up() -> None:
    r = Run(events=600, rate=200, label_fraction=0.5, label_delay=2.0)
    s = r.summary
    assert s.events == {"wine": 600, "diabetes": 600}
    assert {m: len(v) for m, v in r.events.items()} == s.events
    assert {m: len(v) for m, v in r.labels.items()} == s.labels
    n_labels = s.total_labels  # Binomial(1200, 0.5): mean 600, sd 17
    assert abs(n_labels - 600) < 5 * 17
    assert s.malformed == {} and r.raw_messages == []
    assert s.producer["inferences_delivered"] == 1200 and s.producer["dropped_buffer_full"] == 0
    for model, evs in r.events.items():
        specs = feature_specs(model)
        assert [sp.name for sp in specs] == list(evs[0]["features"])
        for sp in specs:
            col = r.column(model, sp.name)
            assert None not in col
            if sp.kind == "numeric":
                assert sp.min <= min(col) and max(col) <= sp.max, sp.name
            else:
                assert set(col) <= set(sp.allowed), sp.name
        ids = {e["event_id"] for e in evs}
        assert len(ids) == len(evs)
        assert {x["event_id"] for x in r.labels[model]} <= ids
        sources = Counter(e["source_id"] for e in evs)
        assert len(sources) > 5 and sources.most_common(1)[0][0] == "client-01"
    # labels come label_delay after their event (to within one tick)
    times = {e["event_id"]: e["event_time"] for evs in r.events.values() for e in evs}
    gaps = np.array([x["label_time"] - times[x["event_id"]] for xs in r.labels.values() for x in xs])
    assert np.all(gaps <= 2.0 + 1e-6) and np.all(gaps >= 2.0 - D.TICK_SECONDS - 1e-6)
    # the classifier is a good one, its probabilities are probabilities, the regression is sane
    wine = r.events["wine"]
    assert all(
        abs(sum(e["proba"].values()) - 1) < 1e-3 and e["label"] == max(e["proba"], key=e["proba"].get) for e in wine
    )
    truth = {x["event_id"]: x["label"] for x in r.labels["wine"]}
    acc = np.mean([e["label"] == truth[e["event_id"]] for e in wine if e["event_id"] in truth])
    assert acc > 0.85
    dia = {e["event_id"]: e["value"] for e in r.events["diabetes"]}
    resid = np.array([x["label"] - dia[x["event_id"]] for x in r.labels["diabetes"]])
    assert abs(resid.mean()) < 10 and resid.std() < 70  # target sd is 77


def test_numpy_predictions_equal_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    for model in models().values():
        X, _ = model.sample(rng, 500)
        X[:50] += 3 * model.std  # off the data too
        got = model.predict(X)
        if model.task == "classification":
            np.testing.assert_allclose(got["proba"], model.estimator.predict_proba(X), rtol=1e-10, atol=1e-12)
            assert list(got["label"]) == [model.classes[i] for i in model.estimator.predict(X)]
        else:
            np.testing.assert_allclose(got["value"], model.estimator.predict(X), rtol=1e-10)


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    kw = dict(
        events=200,
        rate=100,
        malformed_rate=0.05,
        drift_at=1.0,
        quality_break_at=1.0,
        concept_drift_at=1.0,
        start_time=1_700_000_000.0,
    )
    a, b, c = Run(seed=5, **kw), Run(seed=5, **kw), Run(seed=6, **kw)
    # the same events, labels and garbage bytes (how the SDK cuts them into messages depends on timing)
    assert a.events == b.events and a.raw_messages == b.raw_messages
    assert {m: sorted(x, key=str) for m, x in a.labels.items()} == {m: sorted(x, key=str) for m, x in b.labels.items()}
    assert a.summary.counters == b.summary.counters and a.summary.malformed == b.summary.malformed
    assert a.events != c.events
    ids_a = {e["event_id"] for evs in a.events.values() for e in evs}
    ids_c = {e["event_id"] for evs in c.events.values() for e in evs}
    assert not ids_a & ids_c  # another seed never reuses event ids


def test_without_a_seed_one_is_drawn_and_reported() -> None:
    r1, r2 = Run(events=10, seed=None), Run(events=10, seed=None)
    assert r1.summary.seed != r2.summary.seed
    assert f"seed {r1.summary.seed}" in r1.summary.format()


# ----------------------------------------------------------------------------- config and references
def test_demo_yaml_describes_the_demo_models() -> None:
    assert [m.model_id for m in CONFIG.models] == ["wine", "diabetes"]
    for mon in CONFIG.models:
        model = models()[mon.model_id]
        assert mon.task == model.task
        assert [f.name for f in mon.features] == model.feature_names
        for f in mon.features:
            assert f.kind == ("categorical" if f.name in model.categorical else "numeric")
            if f.kind == "categorical":
                assert f.allowed == model.categorical[f.name][1]
            else:  # the whole dataset fits the range, with room for jitter
                j = model.index(f.name)
                col = model.X[:, j]
                assert f.min <= col.min() - 0.5 * col.std() or f.min == model.lo[j]  # or the physical bound
                assert col.max() + 0.5 * col.std() <= f.max
            assert f.nullable is False
        assert mon.window.size_events == 500
        assert mon.reference.file == M.reference_path(mon.model_id).resolve()


def test_check_config_accepts_the_demo_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    from streams.cli import main

    assert main(["check-config", str(DEMO_YAML)]) == 0
    assert "ok  wine: 15 features" in capsys.readouterr().out


def test_shipped_references_are_what_the_generator_writes(tmp_path: Path) -> None:
    for model in models().values():
        fresh = M.write_reference_csv(model, tmp_path / f"{model.model_id}.csv")
        assert fresh.read_bytes() == M.reference_path(model.model_id).read_bytes(), (
            f"{model.model_id}: regenerate with `driftwatch demo --write-reference streams/devstack/examples`"
        )


def test_references_load_and_stay_in_range() -> None:
    from detectors.reference import Reference

    for mon in CONFIG.models:
        ref = Reference.from_file(mon.reference.file, mon.features)
        assert ref.n_rows == M.REFERENCE_ROWS
        rows = M.reference_rows(models()[mon.model_id])
        for f in mon.features:
            if f.kind == "numeric":
                assert f.min <= min(rows[f.name]) and max(rows[f.name]) <= f.max
            else:
                assert set(rows[f.name]) <= set(f.allowed)


def _p_values(stream: dict[str, list], reference: dict[str, list], model) -> dict[str, float]:
    out = {}
    for name in model.feature_names:
        if name in model.categorical:
            cats = model.categorical[name][1]
            table = np.array([[Counter(stream[name])[c] for c in cats], [Counter(reference[name])[c] for c in cats]])
            table = table[:, table.sum(axis=0) > 0]
            out[name] = stats.chi2_contingency(table)[1]
        else:
            out[name] = stats.ks_2samp(stream[name], reference[name]).pvalue
    return out


def test_stationary_stream_matches_its_reference_and_drift_does_not() -> None:
    """KS / chi-square (scipy) of 1000 live events vs the shipped reference, Bonferroni at 1%."""
    r = Run(events=1000, rate=500, seed=11)
    drifted = Run(events=1000, rate=500, seed=11, drift_at=0.0, drift_shift=0.5)
    n_tests = sum(len(m.feature_names) for m in models().values())
    for model in models().values():
        ref = M.reference_rows(model)
        live = {f: r.column(model.model_id, f) for f in model.feature_names}
        p = _p_values(live, ref, model)
        assert min(p.values()) > 0.01 / n_tests, p
        moved = _p_values({f: drifted.column(model.model_id, f) for f in model.feature_names}, ref, model)
        for f in model.default_drift_features:  # half a standard deviation is plainly visible
            assert moved[f] < 1e-6, (f, moved[f])


# ----------------------------------------------------------------------------- scenarios
def test_data_drift_shifts_the_chosen_inputs_from_its_start() -> None:
    r = Run(events=2000, rate=200, drift_at=5.0, drift_features=["alcohol", "bmi"], drift_shift=1.0)
    assert r.summary.counters["data-drift.wine.shifted_events"] == 1000
    for model, feature, other in (("wine", "alcohol", "ash"), ("diabetes", "bmi", "s1")):
        m = models()[model]
        x = r.numeric(model, feature)
        before, after = x[:1000], x[1000:]  # 200/s: the first 1000 events come before t = 5 s
        sd = m.std[m.index(feature)]
        assert abs((after.mean() - before.mean()) - sd) < 0.2 * sd
        y = r.numeric(model, other)
        assert abs(y[1000:].mean() - y[:1000].mean()) < 0.2 * m.std[m.index(other)]
    # the model sees the drift: alcohol moved up, so did the share of "high" alcohol_level
    lvl = r.column("wine", "alcohol_level")
    assert lvl[1000:].count("high") > 1.5 * lvl[:1000].count("high")


def test_quality_break_counts_match_what_was_published_and_what_the_decoder_sees() -> None:
    r = Run(events=2000, rate=400, quality_break_at=0.0, seed=3)
    c = r.summary.counters
    dec = Decoder(CONFIG)
    for model, feats in (("wine", ["magnesium", "alcohol_level"]), ("diabetes", ["s5", "bmi_class"])):
        nulls = oor = bad = 0
        for f in feats:
            spec = next(s for s in feature_specs(model) if s.name == f)
            col = r.column(model, f)
            nulls += sum(v is None for v in col)
            if spec.kind == "numeric":
                bad += sum(isinstance(v, str) for v in col)
                oor += sum(isinstance(v, float) and not spec.min <= v <= spec.max for v in col)
            else:
                bad += sum(isinstance(v, float) for v in col)
                oor += sum(isinstance(v, str) and v not in spec.allowed for v in col)
        assert (nulls, oor, bad) == (
            c[f"quality-break.{model}.null_values"],
            c[f"quality-break.{model}.out_of_range_values"],
            c[f"quality-break.{model}.type_errors"],
        )
        n = 2 * 2000  # two features: Binomial(4000, p)
        for got, p in ((nulls, 0.3), (oor, 0.2), (bad, 0.05)):
            assert abs(got - n * p) < 5 * np.sqrt(n * p * (1 - p)), (model, got, p)
        # the worker's decoder keeps the events and marks the wrong types
        msgs = [
            DecodeMessage(v, k, t, 0, i, int(time.time() * 1000))
            for i, (t, k, v) in enumerate(r.sdk_messages)
            if k == model.encode() and t == SETTINGS.topic_inferences
        ]
        out = dec.decode(msgs)
        assert out.dead == []
        frames = list(out.frames.values())
        assert sum(len(p.frame) for p in frames) == 2000
        assert sum(int(p.frame.type_error[f].sum()) for p in frames for f in feats) == bad


def test_concept_drift_changes_labels_not_inputs() -> None:
    r = Run(events=2000, rate=200, label_fraction=1.0, concept_drift_at=5.0, concept_flip=0.4, concept_shift=1.0)
    wine = {e["event_id"]: e for e in r.events["wine"]}
    order = sorted(wine)
    early, late = set(order[:1000]), set(order[1000:])
    wrong = {eid: wine[eid]["label"] != x["label"] for x in r.labels["wine"] for eid in [x["event_id"]]}
    d0 = np.mean([wrong[e] for e in early])
    d1 = np.mean([wrong[e] for e in late])
    assert d0 < 0.15 and 0.3 < d1 - d0 < 0.5  # ~40 % of the labels moved to another class
    assert abs(r.summary.counters["concept-drift.wine.flipped_labels"] - 400) < 5 * np.sqrt(1000 * 0.24)
    dia = {e["event_id"]: e["value"] for e in r.events["diabetes"]}
    order = sorted(dia)
    resid = {x["event_id"]: x["label"] - dia[x["event_id"]] for x in r.labels["diabetes"]}
    shift = np.mean([resid[e] for e in order[1000:]]) - np.mean([resid[e] for e in order[:1000]])
    assert abs(shift - models()["diabetes"].y_std) < 10  # one standard deviation of the target (77)
    # inputs did not move
    a = r.numeric("wine", "alcohol")
    assert abs(a[1000:].mean() - a[:1000].mean()) < 0.1


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_every_malformed_kind_is_dead_lettered_by_the_decoder(kind: str) -> None:
    from streams.worker import decode

    expected = {
        "invalid_json": decode.R_INVALID_JSON,
        "empty": decode.R_EMPTY,
        "nan_literal": decode.R_NON_FINITE,
        "unknown_model": decode.R_UNKNOWN_MODEL,
        "bad_schema_version": decode.R_UNSUPPORTED_VERSION,
        "not_json": decode.R_INVALID_ENCODING,
    }
    dec = Decoder(CONFIG)
    rng = np.random.default_rng(0)
    for model in models().values():
        st = D._Stream(model, 0, 1, 5)
        b = st.batch(0.0, time.time() + np.arange(20) * 0.01, 0.5)
        b.pred, b.features = model.predict(b.X), model.derive(b.X)
        for _ in range(5):
            msg = malformed_message(kind, b, rng)
            assert msg.kind == kind
            out = dec.decode([DecodeMessage(msg.value, msg.key, "t", 0, 0, int(time.time() * 1000))])
            assert out.frames == {} and out.labels == [] and len(out.dead) == 1, (kind, out)
            if kind in expected:
                assert out.dead[0].reason == expected[kind]
            assert (msg.topic == "labels") == (kind == "label_wrong_type")


def test_malformed_rate_and_bookkeeping() -> None:
    r = Run(events=1000, rate=500, malformed_rate=0.05)
    s = r.summary
    assert len(r.raw_messages) == s.total_malformed == sum(s.malformed_by_topic.values())
    assert abs(s.total_malformed - 100) < 5 * 10  # Poisson(0.05 * 2000)
    assert set(s.malformed) <= set(MALFORMED_KINDS) and len(s.malformed) >= 8
    on_labels = sum(1 for t, _, _ in r.raw_messages if t == SETTINGS.topic_labels)
    assert on_labels == s.malformed.get("label_wrong_type", 0) == s.malformed_by_topic.get(SETTINGS.topic_labels, 0)
    assert s.total_events == 2000  # garbage comes on top of the valid traffic


def test_parse_scenario_and_its_errors() -> None:
    s = parse_scenario("data-drift:at=3,features=alcohol+hue,shift=2,until=9,models=wine")
    assert (s.at, s.features, s.shift, s.until, s.models) == (3.0, ["alcohol", "hue"], 2.0, 9.0, ["wine"])
    assert s.describe() == "data-drift(at=3.0, until=9.0, models=wine, features=alcohol+hue, shift=2.0)"
    assert s.applies(models()["wine"], 3.0) and not s.applies(models()["wine"], 9.0)
    assert not s.applies(models()["diabetes"], 5.0) and not s.applies(models()["wine"], 2.9)
    with pytest.raises(ValueError, match=r"unknown scenario 'nope'; known: .*data-drift"):
        parse_scenario("nope")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['shfit'\]"):
        parse_scenario("data-drift:shfit=2")
    with pytest.raises(ValueError, match="parameter shift: 'big' is not a valid float"):
        parse_scenario("data-drift:shift=big")
    with pytest.raises(ValueError, match="expected key=value"):
        parse_scenario("data-drift:shift")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": 0}, "rate"),
        ({"start_time": 1.0, "pace": True}, "start_time"),
        ({"label_fraction": 1.5}, "label_fraction"),
        ({"models": ["wine", "titanic"]}, r"unknown demo model\(s\) \['titanic'\]"),
        ({"drift_at": 1.0, "drift_features": ["alcohol", "colour"]}, r"unknown feature\(s\) \['colour'\]"),
        ({"drift_at": 1.0, "drift_features": ["alcohol_level"]}, "not a numeric model input"),
        ({"quality_break_at": 1.0, "quality_features": ["nope"]}, r"unknown feature\(s\) \['nope'\]"),
        ({"scenarios": ["malformed:kinds=empty+garbage"]}, r"unknown kind\(s\) \['garbage'\]"),
        ({"scenarios": ["concept-drift:flip=2"]}, "flip must be in"),
        ({"scenarios": ["data-drift:models=iris"]}, r"unknown model\(s\) \['iris'\]"),
    ],
)
def test_bad_options_fail_before_anything_is_sent(options: dict[str, Any], message: str) -> None:
    FakeClient.instances.clear()
    with pytest.raises(ValueError, match=message):
        run_demo(SETTINGS, DemoOptions(**{"events": 10, "pace": False, **options}), client_factory=FakeClient)
    assert FakeClient.instances == []


def test_a_new_scenario_plugs_in_through_the_registry() -> None:
    """What the adversarial engineer will do: register a scenario, run it by name."""

    class Probe(Scenario):
        name = "test-probe"
        help = "an extra client sends uniformly random inputs"
        share: float = param(0.5, "extra events per normal event")

        def on_inputs(self, batch, rng):
            m = batch.model
            n = int(round(len(batch) * self.share))
            lo, hi = m.X.min(axis=0), m.X.max(axis=0)
            batch.extend(rng.uniform(lo, hi, (n, m.n_inputs)), source_id="attacker-1")
            self.count(batch, "probe_events", n)

    register_scenario(Probe)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_scenario(type("Other", (Scenario,), {"name": "test-probe"}))
        r = Run(events=400, rate=200, label_fraction=1.0, scenarios=["test-probe:at=1,share=0.5,models=wine"])
    finally:
        SCENARIOS.pop("test-probe")
    probes = [e for e in r.events["wine"] if e["source_id"] == "attacker-1"]
    assert len(probes) == r.summary.counters["test-probe.wine.probe_events"] == 100  # 0.5 x the 200 events after 1 s
    assert r.summary.events == {"wine": 500, "diabetes": 400}
    assert not any(e["source_id"] == "attacker-1" for e in r.events["diabetes"])
    labelled = {x["event_id"] for x in r.labels["wine"]}
    assert not labelled & {e["event_id"] for e in probes}  # no truth for the attacker's queries
    assert len(labelled) == 400


def test_scenario_parameters_must_not_shadow_hooks() -> None:
    with pytest.raises(ValueError, match="clash"):
        register_scenario(
            type(
                "Bad", (Scenario,), {"name": "bad", "__annotations__": {"on_inputs": "float"}, "on_inputs": param(1.0)}
            )
        )
    assert "bad" not in SCENARIOS


def test_scenario_parameters_are_declared_once_with_their_type() -> None:
    class Typed(Scenario):
        name = "test-typed"
        share: float = param(0.5, "a share")
        kinds: list[str] | None = param(None, "some kinds")

    assert {k: (p.type, p.default, p.help) for k, p in Typed.params.items()} == {
        "share": (float, 0.5, "a share"),
        "kinds": (list, None, "some kinds"),
    }
    t = Typed(share="0.25", kinds="a+b")
    assert (t.share, t.kinds) == (0.25, ["a", "b"]) and Typed().share == 0.5
    with pytest.raises(TypeError, match="needs its type"):
        type("Untyped", (Scenario,), {"name": "untyped", "share": param(0.5)})
    with pytest.raises(TypeError, match="a parameter is float"):
        type("Odd", (Scenario,), {"name": "odd", "__annotations__": {"x": "dict"}, "x": param({})})
    with pytest.raises(TypeError, match="not params"):
        type("Old", (Scenario,), {"name": "old", "params": {}})


def test_stop_event_ends_an_endless_paced_run() -> None:
    stop = threading.Event()
    FakeClient.instances.clear()

    def stop_once_traffic_flows() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(c.sent for c in list(FakeClient.instances)):
            time.sleep(0.02)
        time.sleep(0.3)
        stop.set()

    threading.Thread(target=stop_once_traffic_flows, daemon=True).start()
    s = run_demo(
        SETTINGS, DemoOptions(rate=100, seed=1, progress_every=0, label_delay=30), stop=stop, client_factory=FakeClient
    )
    assert s.interrupted and 0 < s.events["wine"] < 1000
    assert s.total_labels == 0  # none was due yet: none published, none counted


def test_cli_lists_scenarios_and_writes_references(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streams.cli import main

    assert main(["demo", "--list-scenarios"]) == 0
    out = capsys.readouterr().out
    for name in ("data-drift", "quality-break", "concept-drift", "malformed"):
        assert f"{name}: " in out
    assert main(["demo", "--write-reference", str(tmp_path), "--models", "wine"]) == 0
    assert (tmp_path / "wine_reference.csv").read_bytes() == M.reference_path("wine").read_bytes()


def test_cli_flags_map_to_options() -> None:
    import argparse

    p = argparse.ArgumentParser()
    D.add_arguments(p)
    a = p.parse_args(
        [
            "--rate",
            "50",
            "--events",
            "7",
            "--drift-at",
            "60",
            "--drift-features",
            "alcohol,bmi",
            "--drift-shift",
            "2",
            "--quality-break-at",
            "90",
            "--malformed-rate",
            "0.01",
            "--concept-drift-at",
            "120",
            "--label-delay",
            "3",
            "--label-fraction",
            "0.2",
            "--seed",
            "4",
            "--no-pace",
            "--scenario",
            "data-drift:at=5",
            "--quiet",
        ]
    )
    o = D.options_from_args(a)
    assert (o.rate, o.events, o.duration, o.drift_at, o.drift_features, o.drift_shift) == (
        50.0,
        7,
        None,
        60.0,
        ["alcohol", "bmi"],
        2.0,
    )
    assert (o.quality_break_at, o.malformed_rate, o.concept_drift_at, o.label_delay, o.label_fraction) == (
        90.0,
        0.01,
        120.0,
        3.0,
        0.2,
    )
    assert (o.seed, o.pace, o.scenarios, o.progress_every) == (4, False, ["data-drift:at=5"], 0.0)
    assert [s.name for s in o.build_scenarios()] == [
        "data-drift",
        "quality-break",
        "malformed",
        "concept-drift",
        "data-drift",
    ]
    with pytest.raises(SystemExit):
        p.parse_args(["--events", "5", "--duration", "3"])


# ----------------------------------------------------------------------------- the real broker
def _topic_contents(settings: Settings, consume_all) -> tuple[dict, dict]:
    """Per topic: events in valid SDK batches by model, and how many messages were dead-lettered."""
    dec = Decoder(CONFIG)
    out_events: dict[str, Counter] = {}
    dead: dict[str, int] = {}
    for topic in (settings.topic_inferences, settings.topic_labels):
        recs = consume_all(settings, topic, expected=None, timeout=20, idle=2.0)
        out = dec.decode([DecodeMessage(r.value, r.key, r.topic, r.partition, r.offset, r.timestamp) for r in recs])
        dead[topic] = len({(d.message.partition, d.message.offset) for d in out.dead})
        c: Counter = Counter()
        for key, p in out.frames.items():
            c[key.model_id] += len(p.frame)
        for p in out.labels:
            c[p.model_id] += len(p)
        out_events[topic] = c
    return out_events, dead


@pytest.mark.integration
@pytest.mark.slow  # the demo on the real broker (~6 s)
def test_demo_on_the_real_broker_publishes_what_it_reports(settings: Settings, consume_all) -> None:
    opts = DemoOptions(
        events=600,
        rate=600,
        label_delay=0.5,
        label_fraction=0.5,
        malformed_rate=0.02,
        seed=3,
        drift_at=0.5,
        quality_break_at=0.5,
        progress_every=0,
    )
    s = run_demo(settings, opts)
    assert s.delivered and not s.interrupted
    assert s.elapsed_s >= 1.0  # paced: 600 events at 600/s, then the last labels 0.5 s later
    assert s.events == {"wine": 600, "diabetes": 600}
    assert s.total_malformed > 5
    events, dead = _topic_contents(settings, consume_all)
    assert dict(events[settings.topic_inferences]) == s.events
    assert dict(events[settings.topic_labels]) == s.labels
    assert dead[settings.topic_inferences] == s.malformed_by_topic.get(settings.topic_inferences, 0)
    assert dead[settings.topic_labels] == s.malformed_by_topic.get(settings.topic_labels, 0)
    assert sum(dead.values()) == s.total_malformed


@pytest.mark.integration
@pytest.mark.slow  # the demo on the real broker (~6 s)
def test_demo_command_line(settings_env: dict[str, str], settings: Settings, consume_all) -> None:
    env = {**os.environ, **settings_env}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "demo",
            "--events",
            "100",
            "--rate",
            "1000",
            "--no-pace",
            "--seed",
            "5",
            "--label-delay",
            "0",
            "--label-fraction",
            "1",
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "200 events" in proc.stdout and "200 labels" in proc.stdout and "lost 0" in proc.stdout
    events, dead = _topic_contents(settings, consume_all)
    assert dict(events[settings.topic_inferences]) == {"wine": 100, "diabetes": 100}
    assert sum(dead.values()) == 0


@pytest.mark.integration
@pytest.mark.slow  # an endless demo on the real broker (~7 s)
def test_sigterm_stops_an_endless_demo_and_loses_nothing(
    settings_env: dict[str, str], settings: Settings, consume_all
) -> None:
    import re
    import signal

    env = {**os.environ, **settings_env}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "demo",
            "--rate",
            "300",
            "--label-delay",
            "0.5",
            "--seed",
            "9",
            "--quiet",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent(),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until traffic flows
            recs = consume_all(settings, settings.topic_inferences, expected=1, timeout=2)
            if recs:
                break
            assert proc.poll() is None, proc.communicate()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "demo interrupted" in out, out
    m = re.search(r"  wine\s+(\d+) events\s+(\d+) labels\n  diabetes\s+(\d+) events\s+(\d+) labels", out)
    assert m, out
    wine, wine_labels, dia, dia_labels = map(int, m.groups())
    assert wine > 0 and dia > 0
    events, _dead = _topic_contents(settings, consume_all)
    assert dict(events[settings.topic_inferences]) == {"wine": wine, "diabetes": dia}
    assert events[settings.topic_labels].get("wine", 0) == wine_labels
    assert events[settings.topic_labels].get("diabetes", 0) == dia_labels


def test_demo_references_run_prediction_drift_impact_and_calibrated_cbpe() -> None:
    """The shipped reference files declare their output and label columns (demo.yaml): with them a file
    reference gets prediction drift, feature impact, and (wine) a calibrated CBPE; a window of drifted
    traffic (alcohol + 1.5 sd) shows prediction drift."""
    from detectors import records as R
    from detectors.advanced import EstimatedPerformance, FeatureImpactEvaluator, PredictionDrift
    from detectors.frame import Frame
    from detectors.outputs import read_reference_rows
    from detectors.reference import Reference, attach_reference_frame
    from detectors.runner import WindowContext, evaluate_window

    rng = np.random.default_rng(3)
    for mon in CONFIG.models:
        model = models()[mon.model_id]
        rows = read_reference_rows(mon.reference.file, mon.features, mon.reference.outputs(), mon.task)
        assert rows.label is not None and (rows.pred_label is not None or rows.pred_value is not None)
        ref = attach_reference_frame(Reference.from_frame(rows, mon.features), rows)
        X, _ = model.sample(rng, 500)
        X[:, model.index(model.default_drift_features[0])] += (
            1.5 * model.std[model.index(model.default_drift_features[0])]
        )
        X = model.finish_inputs(X)
        cols, out = model.derive(X), model.predict(X)
        num = {k: np.asarray(v, dtype=float) for k, v in cols.items() if k not in model.categorical}
        cat = {k: np.asarray(v, dtype=object) for k, v in cols.items() if k in model.categorical}
        frame = Frame.from_columns(
            event_id=np.arange(500).astype(str),
            event_time=np.zeros(500),
            numeric=num,
            categorical=cat,
            pred_label=out.get("label"),
            pred_proba=out.get("proba"),
            classes=tuple(model.classes) if "proba" in out else (),
            pred_value=out.get("value"),
        )
        ctx = WindowContext(
            model_id=mon.model_id,
            version="1",
            frame=frame,
            reference=ref,
            features=tuple(mon.features),
            drift=mon.drift,
            task=mon.task,
            window_end=1.0,
            impact=mon.impact,
        )
        recs = evaluate_window(ctx, [PredictionDrift(), FeatureImpactEvaluator(), EstimatedPerformance()])
        status = {r.tags[R.T_DETECTOR]: r.fields for r in recs if r.measurement == R.STATUS}
        assert status["prediction_drift"]["computed"] == 1 and status["feature_impact"]["computed"] == 1
        summary = next(r for r in recs if r.measurement == R.PREDICTION and r.tags[R.T_FEATURE] == "__all__")
        assert summary.fields["drift"] == 1, mon.model_id
        assert {r.tags[R.T_FEATURE] for r in recs if r.measurement == R.IMPACT} == {f.name for f in mon.features}
        if mon.task == "classification":
            acc = next(r for r in recs if r.measurement == R.PERFORMANCE and r.tags[R.T_METRIC] == "accuracy")
            assert acc.fields["calibrated"] is True and acc.fields["calibration_n"] == M.REFERENCE_ROWS
            assert acc.fields["lower"] <= acc.fields["value"] <= acc.fields["upper"]


def test_demo_yaml_ships_alert_rules_of_every_kind() -> None:
    """The demo shows the whole product: data drift, data quality, concept drift and adversarial
    rules on each model (issue 18); `driftwatch up` adds the webhook (tests/streams/alerts/test_sink.py)."""
    assert CONFIG.webhooks == []  # so check-config and a worker by hand need no URL or secret
    for mon in CONFIG.models:
        kinds = {r.signal.split(".")[0] for r in mon.alerts}
        assert kinds == {"drift_summary", "quality", "performance", "source"}, mon.model_id
        # none of them watches the adversarial score, which is high on plain drift (issue 18)
        assert not [r for r in mon.alerts if r.signal.startswith("adversarial.")]
        # the error stream's online verdict flickers 1/0 while the rate is up: every rule keeps
        # firing a minute (24 windows) after its last breach, so a flicker is no new FIRING/RESOLVED
        assert {r.keep_firing_for for r in mon.alerts} == {60.0}, mon.model_id
