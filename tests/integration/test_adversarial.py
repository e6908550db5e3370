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
from streams.attacks import ExtractionAttack, evasion
from streams.sinks.influx import database, query, write_records

pytestmark = pytest.mark.integration


def _windows(world: World, rng: np.random.Generator, n_windows: int, attack: bool):
    """Windows of 500 events from 10 clients; with ``attack``, evasion attempts and one prober."""
    m = world.model
    clients = np.array([f"client-{i}" for i in range(10)], dtype=object)
    prober = ExtractionAttack(m.estimator.predict, m.sample(rng, 10)[0], scale=m.std, rng=rng,
                              finish=m.finish_inputs)
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
    rows = query(settings, f'SELECT "score", "flagged", "outlier_rate", "low_margin_p_value" FROM "{R.ADVERSARIAL}"',
                 db=database(settings))
    assert len(rows) == len(plan)
    flagged = [r["flagged"] for r in rows]
    assert flagged == plan  # benign windows not flagged, attacked ones flagged
    assert all(isinstance(r["flagged"], bool) and 0 <= r["score"] <= 1 for r in rows)

    # the dashboard's Adversarial page queries
    conn = Q.Conn(settings.influx_url, database(settings))
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


def test_demo_attacks_through_the_worker(settings, settings_env, tmp_path) -> None:
    """``driftwatch demo`` attack scenarios → Kafka → ``driftwatch worker`` → InfluxDB.

    The worker fits the adversarial detectors on the rows of the demo's reference file
    (``warmup_events`` is only the fallback without reference rows); one client probes the
    model from the start and evasion attempts come in a later stretch.
    """
    import subprocess
    import sys

    from streams.demo import EXAMPLES_DIR, DemoOptions, run_demo

    opts = DemoOptions(models=["wine"], rate=200, events=6000, pace=False, seed=11, label_fraction=0.0,
                       create_topics=False, progress_every=0,
                       scenarios=["extraction:share=0.05", "evasion:at=17.5,until=25,share=0.15"])
    summary = run_demo(settings, opts)
    assert summary.delivered
    log = tmp_path / "worker.log"
    env = {**settings_env, "DRIFTWATCH_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--monitors",
                                 str(EXAMPLES_DIR / "demo.yaml")], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        rows: list = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"worker exited: {log.read_text(errors='replace')[-3000:]}"
            try:
                rows = query(settings, f'SELECT "score", "flagged", "low_margin_rate" FROM "{R.ADVERSARIAL}"',
                             db=database(settings))
            except Exception:  # noqa: BLE001 - the database appears with the first write
                rows = []
            if len(rows) >= 13:
                break
            time.sleep(1.0)
        assert len(rows) >= 13, f"only {len(rows)} adversarial points; worker log:\n{log.read_text(errors='replace')[-3000:]}"
        sources = query(settings, f'SELECT "extraction_flag", "source" FROM "{R.SOURCE}" WHERE "source" = \'prober-1\'',
                        db=database(settings))
    finally:
        proc.terminate()
        proc.wait(20)
    # the detectors are fitted on the rows of the reference file (attached by the worker), so every
    # window is scored; evasion runs over simulated seconds 17.5-25, i.e. windows 9-11 of the
    # 500-event windows (attack events come on top)
    # (seeded: measured flags [F x 8, T, T, T, F, F] for windows 1..13)
    flagged = [bool(r["flagged"]) for r in rows]
    assert flagged[8:11] == [True] * 3 and not any(flagged[:8]) and not any(flagged[11:]), flagged
    assert any(bool(r["extraction_flag"]) for r in sources), sources
