"""Adversarial records end to end: demo attack traffic → detectors → the real InfluxDB →
the dashboard's queries, and the alert rules on the same records."""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.adversarial import Options, World
from detectors import records as R
from detectors.adversarial import AdversarialMonitor, AdversarialSpec
from streams.alerts.rules import AlertRule, evaluate
from streams.devstack.attacks import ExtractionAttack, evasion
from streams.influx.sink import database, query, write_records
from tests.reliability.helpers import worker

pytestmark = pytest.mark.integration


def _windows(world: World, rng: np.random.Generator, n_windows: int, attack: bool):
    """Windows of 500 events from 10 clients; with ``attack``, evasion attempts and one prober."""
    m = world.model
    clients = np.array([f"client-{i}" for i in range(10)], dtype=object)
    prober = ExtractionAttack(m.estimator.predict, m.sample(rng, 10)[0], scale=m.std, rng=rng, finish=m.finish_inputs)
    for _ in range(n_windows):
        X, _ = m.sample(rng, 500)
        src = clients[rng.integers(0, 10, 500)]
        if attack:
            r = evasion(m.estimator, X[:50], scale=m.std, finish=m.finish_inputs, lo=m.lo, hi=m.hi)
            X[:50] = r.X
            src[:50] = "evader-1"
            X[50:110] = prober.take(60)
            src[50:110] = "prober-1"
        yield X, src


def test_records_reach_influxdb_the_dashboard_and_the_alert_rules(settings) -> None:
    from dashboard import queries as Q

    world = World(Options())
    rng = np.random.default_rng(7)
    m = world.model
    X_ref, _ = m.sample(rng, 1000)
    ref = world.frame(X_ref, np.full(1000, None, dtype=object))
    spec = AdversarialSpec.model_validate({"extraction": {"simulations": 120, "horizon": 400}})
    mon = AdversarialMonitor.fit(ref, world.features, spec)
    tags = {R.T_MODEL: "wine", R.T_VERSION: "1"}
    t_end = time.time()
    records, per_window = [], []
    plan = [False] * 4 + [True] * 4
    for k, (X, src) in enumerate(_windows(world, rng, 4, False)):
        per_window.append(mon.records(mon.evaluate(world.frame(X, src)), tags, int((t_end - 60 + 5 * k) * 1e9)))
    for k, (X, src) in enumerate(_windows(world, rng, 4, True)):
        per_window.append(mon.records(mon.evaluate(world.frame(X, src)), tags, int((t_end - 40 + 5 * k) * 1e9)))
    for recs in per_window:
        records.extend(recs)
    write_records(settings, records)

    # what InfluxDB holds: one point per window, booleans and numbers typed as written
    rows = query(
        settings,
        f'SELECT "score", "flagged", "outlier_rate", "low_margin_p_value" FROM "{R.ADVERSARIAL}"',
        db=database(settings),
    )
    assert len(rows) == len(plan)
    flagged = [r["flagged"] for r in rows]
    assert flagged == plan  # benign windows not flagged, attacked ones flagged
    assert all(isinstance(r["flagged"], bool) and 0 <= r["score"] <= 1 for r in rows)

    # the dashboard's Adversarial page queries
    conn = Q.Conn.from_settings(settings)
    scope = Q.Scope(Q.TimeRange.last("1h"), model="wine", version="1", segment=None)
    series = Q.adversarial_series(conn, scope)
    assert len(series) and {"score", "outlier_rate", "low_margin_rate"} <= set(series.columns)
    latest = Q.adversarial_latest(conn, scope)
    assert bool(latest.iloc[0]["flagged"]) and latest.iloc[0]["score"] > 0.99
    src = Q.sources(conn, scope)
    flagged_sources = set(src.loc[src["flagged_windows"] > 0, R.T_SOURCE])
    assert "prober-1" in flagged_sources
    assert not flagged_sources & {f"client-{i}" for i in range(10)}

    # alert rules on the documented signals: the combined score and the per-source flag
    rules = [
        AlertRule(name="adversarial", signal="adversarial.score", op=">=", threshold=0.99),
        AlertRule(name="extraction", signal="source.extraction_flag", op="==", threshold=True),
    ]
    obs = evaluate(rules, per_window[-1], "wine", "1")
    breached = {(o.rule.name, o.series.get(R.T_SOURCE)) for o in obs if o.breached}
    assert ("adversarial", None) in breached and ("extraction", "prober-1") in breached
    assert not any(o.breached for o in evaluate(rules, per_window[0], "wine", "1"))


@pytest.mark.slow  # runs the demo's attack scenarios through a worker (25-50 s)
def test_demo_attacks_through_the_worker(settings, settings_env, tmp_path) -> None:
    """``driftwatch demo`` attack scenarios → Kafka → ``driftwatch worker`` → InfluxDB.

    The worker fits the adversarial detectors on the rows of the demo's reference file
    (``warmup_events`` is only the fallback without reference rows); one client probes the
    model from the start and evasion attempts come in a later stretch.
    """
    from streams.devstack.demo import DemoOptions, run_demo
    from streams.devstack.models import EXAMPLES_DIR

    opts = DemoOptions(
        models=["wine"],
        rate=200,
        events=6000,
        pace=False,
        seed=11,
        label_fraction=0.0,
        create_topics=False,
        progress_every=0,
        scenarios=["extraction:share=0.05", "evasion:at=17.5,until=25,share=0.15"],
    )
    summary = run_demo(settings, opts)
    assert summary.delivered
    log = tmp_path / "worker.log"
    with worker(settings_env, EXAMPLES_DIR / "demo.yaml", log) as proc:
        deadline = time.monotonic() + 150
        rows: list = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"worker exited: {log.read_text(errors='replace')[-3000:]}"
            try:
                rows = query(
                    settings,
                    f'SELECT "score", "flagged", "flagged_by", "low_margin_source_suspect" FROM "{R.ADVERSARIAL}"',
                    db=database(settings),
                )
            except Exception:  # the database appears with the first write
                rows = []
            if len(rows) >= 13:
                break
            time.sleep(1.0)
        assert len(rows) >= 13, (
            f"only {len(rows)} adversarial points; worker log:\n{log.read_text(errors='replace')[-3000:]}"
        )
        sources = query(
            settings,
            f'SELECT "extraction_flag", "source" FROM "{R.SOURCE}" WHERE "source" = \'prober-1\'',
            db=database(settings),
        )
    # the detectors are fitted on the rows of the reference file (attached by the worker), so every
    # window is scored; evasion runs over simulated seconds 17.5-25: with the prober's 5% on top a
    # 500-event window spans ~2.4 s, so windows 7-10 (0-based) hold evader-1's events (window 7 only
    # its last ~30): the low-margin source contrast flags exactly those, naming evader-1
    # prober-1 (5% of the traffic, ~25 queries a window) is flagged for extraction once tested, at 100
    # distances (window 4): from then on the window is flagged by `extraction` too (one flagged client
    # among ~20 tested is beyond what 1-in-10,000 benign clients explains)
    flagged = [bool(r["flagged"]) for r in rows]
    verdicts = [(r["flagged"], r.get("flagged_by"), r.get("low_margin_source_suspect")) for r in rows]
    assert not any(flagged[:3]) and all(flagged[7:11]), verdicts
    for i, r in enumerate(rows):
        if 7 <= i <= 10:  # the evasion windows: the low-margin contrast, naming the evader
            assert "low_margin_source" in r["flagged_by"] and r["low_margin_source_suspect"] == "evader-1", verdicts
        elif r["flagged"]:  # elsewhere only the prober's extraction flag
            assert r["flagged_by"] == "extraction", verdicts
    assert any(bool(r["extraction_flag"]) for r in sources), sources


def _wait_for(settings, proc, log, q: str, n: int, timeout: float = 180.0) -> list:
    """Rows of ``q`` once there are at least ``n`` (the worker must stay up meanwhile)."""
    deadline = time.monotonic() + timeout
    rows: list = []
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited: {log.read_text(errors='replace')[-3000:]}"
        try:
            rows = query(settings, q, db=database(settings))
        except Exception:  # the database appears with the first write
            rows = []
        if len(rows) >= n:
            return rows
        time.sleep(1.0)
    raise AssertionError(f"only {len(rows)} rows for {q}; worker log:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.mark.slow  # runs the demo's attack scenarios through a worker (25-50 s)
def test_demo_drift_flags_nothing_through_the_worker_but_evasion_during_it_does(
    settings, settings_env, tmp_path
) -> None:
    """The demo's data drift (``driftwatch up``: wine alcohol + color_intensity, diabetes bmi + bp,
    +1 std) through ``driftwatch demo`` → Kafka → ``driftwatch worker`` → InfluxDB: the
    population low-margin / outlier rates rise (the inputs moved), but no window and no source is
    flagged; an evasion stretch inside the drift is flagged, by the low-margin source contrast,
    with the evader named in the verdict.
    """
    from streams.devstack.demo import DemoOptions, run_demo
    from streams.devstack.models import EXAMPLES_DIR

    opts = DemoOptions(
        models=["wine", "diabetes"],
        rate=200,
        events=9000,
        pace=False,
        seed=5,
        label_fraction=0.0,
        create_topics=False,
        progress_every=0,
        drift_at=10.0,
        scenarios=["evasion:at=32.5,until=37.5,share=0.15"],
    )
    assert run_demo(settings, opts).delivered
    log = tmp_path / "worker.log"
    fields = (
        '"score", "flagged", "flagged_by", "top_component", "low_margin_rate", "outlier_rate", '
        '"low_margin_source_suspect", "model"'
    )
    with worker(settings_env, EXAMPLES_DIR / "demo.yaml", log) as proc:
        q = f'SELECT {fields} FROM "{R.ADVERSARIAL}" GROUP BY "model"'
        _wait_for(settings, proc, log, f'SELECT count("score") FROM "{R.ADVERSARIAL}" WHERE "model" = \'diabetes\'', 1)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            rows = query(settings, q, db=database(settings))
            by = {m: [r for r in rows if r.get("model") == m] for m in ("wine", "diabetes")}
            if len(by["wine"]) >= 18 and len(by["diabetes"]) >= 17:
                break
            time.sleep(1.0)
        sources = query(
            settings,
            f'SELECT "flag", "extraction_flag", "flagged_by", "source", "model" FROM "{R.SOURCE}" GROUP BY "model"',
            db=database(settings),
        )
    wine, diabetes = by["wine"], by["diabetes"]
    assert len(wine) >= 18 and len(diabetes) >= 17, (len(wine), len(diabetes))
    # 500-event windows at 200 events/s: drift from window 4 on (t = 10 s); evasion events (15% on top)
    # over t = 32.5-37.5 s, i.e. the two or three wine windows that follow window 13
    evasion = [i for i, r in enumerate(wine) if r["flagged"]]
    assert evasion and all(13 <= i <= 16 for i in evasion), [(r["flagged"], r["top_component"]) for r in wine]
    for i in evasion:
        assert "low_margin_source" in wine[i]["flagged_by"] and wine[i]["low_margin_source_suspect"] == "evader-1"
    quiet = wine[:13]
    assert not any(r["flagged"] for r in quiet + diabetes), [r["score"] for r in quiet + diabetes]
    assert not any(r.get("flagged_by") for r in quiet + diabetes)
    # the inputs did move: the population rates against the reference rose with the drift
    # (the margin threshold comes from the reference file's probabilities, or, for a reference without
    # them, from the stream's first 1,000 predictions: windows 0-1 then have no low-margin rate)
    before = np.mean([r["low_margin_rate"] for r in wine[:4] if r.get("low_margin_rate") is not None])
    after = np.mean([r["low_margin_rate"] for r in wine[5:13]])
    assert after > before + 0.05, (before, after)
    # no source flagged, in either model, except the evader (by the contrast, not extraction)
    flagged = {
        (r["model"], r["source"]): r.get("flagged_by") for r in sources if r.get("flag") or r.get("extraction_flag")
    }
    assert set(flagged) <= {("wine", "evader-1")}, flagged
