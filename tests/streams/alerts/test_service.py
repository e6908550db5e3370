"""Alerting as the worker uses it: state and queued deliveries survive restarts (even
SIGKILL), replayed windows are skipped, silences from the CLI apply, latency is measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from detectors.records import ALERT
from streams.alerts.lifecycle import iso
from streams.alerts.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER
from streams.cli import main as cli
from tests.streams.alerts.helpers import (
    DRIFT_RULE,
    MINUTE,
    ROOT,
    SECRET,
    SECRET_ENV,
    T0,
    documented_verify,
    make_alerting,
    until,
    webhook,
    window,
)
from tests.streams.alerts.receiver import Receiver

VERIFY = documented_verify()


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)


def statuses(r: Receiver) -> list[str]:
    return [json.loads(q.body)["status"] for q in r.requests]


def test_state_and_pending_deliveries_survive_restarts_and_replays_are_skipped(tmp_path):
    receiver = Receiver().start()
    port = receiver.port
    hooks = [webhook("j", receiver.url)]

    async def run(fn):
        al = make_alerting(tmp_path, hooks)
        await al.start()
        try:
            return await fn(al)
        finally:
            await al.stop()

    async def first(al):
        al.on_window("m", "1", window(1, {"age": 0.001}))
        assert await al.drain(5)

    async def second(al):  # receiver is down now
        assert al.store.states()["m/1/feature_drift{detector=ks,feature=age}"].status == "firing"
        assert al.on_window("m", "1", window(2, {"age": 0.002}))[0].fields["status"] == "firing"
        al.on_window("m", "1", window(3, {"age": 0.5}))
        await asyncio.sleep(0.3)
        assert al.store.pending_count("j") == 1

    async def third(al):  # receiver is back
        assert await al.drain(10)
        assert al.on_window("m", "1", window(3, {"age": 0.5})) == []  # replay of a done window
        assert al.on_window("m", "1", window(2, {"age": 0.001})) == []  # older window
        await asyncio.sleep(0.2)

    asyncio.run(run(first))
    receiver.stop()
    asyncio.run(run(second))
    receiver = Receiver(port).start()
    asyncio.run(run(third))
    receiver.stop()
    # the first receiver saw the firing, the restarted one only the resolve
    assert statuses(receiver) == ["resolved"]


def test_queued_delivery_survives_sigkill(tmp_path):
    receiver = Receiver()  # not started: the endpoint is down while the worker dies
    cfg = {
        "models": [{"model_id": "m", "features": [{"name": "a", "kind": "numeric"}], "alerts": [DRIFT_RULE]}],
        "webhooks": [webhook("j", receiver.url)],
    }
    (tmp_path / "monitors.yaml").write_text(yaml.safe_dump(cfg))
    child = textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from streams.alerts.service import Alerting
        from streams.worker.monitors import load_monitors
        from streams.settings import Settings
        from tests.streams.alerts.helpers import window

        async def main():
            al = Alerting(load_monitors({str(tmp_path / "monitors.yaml")!r}),
                          Settings(state_dir={str(tmp_path / "state")!r}), publish=False)
            await al.start()
            al.on_window("m", "1", window(1, {{"age": 0.001}}))
            print("queued", flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
    """)
    with subprocess.Popen(  # leaving the block closes the pipe
        [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env={**os.environ, SECRET_ENV: SECRET}
    ) as proc:
        try:
            assert proc.stdout.readline().strip() == "queued"
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    receiver.start()

    async def restart():
        al = make_alerting(tmp_path, cfg["webhooks"])
        await al.start()
        try:
            assert await al.drain(10)
        finally:
            await al.stop()

    try:
        asyncio.run(restart())
    finally:
        receiver.stop()
    assert statuses(receiver) == ["firing"]


def test_silence_from_the_cli_applies_to_the_running_service(tmp_path, capsys):
    receiver = Receiver().start()
    state = str(tmp_path / "state")
    published = []

    async def publish(key, value, headers):
        published.append(json.loads(value))

    async def main():
        al = make_alerting(tmp_path, [webhook("j", receiver.url)], publish=publish)
        await al.start()
        try:
            assert (
                cli(
                    [
                        "alerts",
                        "--state-dir",
                        state,
                        "silence",
                        "--match",
                        "model=m",
                        "--match",
                        "feature=a*",
                        "--for",
                        "1h",
                        "--comment",
                        "testing",
                    ]
                )
                == 0
            )
            sid = capsys.readouterr().out.split()[1]
            recs = al.on_window("m", "1", window(1, {"age": 0.001, "bmi": 0.001}))
            assert {r.tags["feature"]: r.fields["silenced"] for r in recs} == {"age": True, "bmi": False}
            await until(lambda: len(published) == 2 and len(receiver.requests) == 1, 5)
            assert cli(["alerts", "--state-dir", state, "unsilence", sid]) == 0
            al.on_window("m", "1", window(2, {"age": 0.001, "bmi": 0.001}))  # silence gone: notify now
            assert await al.drain(5)
            await asyncio.sleep(0.2)
        finally:
            await al.stop()

    try:
        asyncio.run(main())
    finally:
        receiver.stop()
    got = [(json.loads(q.body)["labels"]["feature"], json.loads(q.body)["status"]) for q in receiver.requests]
    assert got == [("bmi", "firing"), ("age", "firing")]
    # the topic recorded both firings when they happened, the silenced one flagged
    assert sorted((p["labels"]["feature"], p["silenced"]) for p in published) == [("age", True), ("bmi", False)]
    # the late notification carries the same idempotency key as the recorded firing
    age_id = next(p["id"] for p in published if p["labels"]["feature"] == "age")
    assert receiver.requests[1].headers[IDEMPOTENCY_HEADER.lower()] == age_id

    capsys.readouterr()
    assert cli(["alerts", "--state-dir", state, "list"]) == 0
    out = capsys.readouterr().out
    assert "firing" in out and "m/1/feature_drift{detector=ks,feature=age}" in out
    assert cli(["alerts", "--state-dir", state, "deliveries", "--json"]) == 0
    log = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(d["endpoint"], d["status"]) for d in log} == {("j", "delivered"), ("kafka", "delivered")}


def test_cli_rejects_bad_input(tmp_path, capsys):
    state = str(tmp_path / "state")
    assert cli(["alerts", "--state-dir", state, "silence", "--match", "model=m", "--for", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["alerts", "--state-dir", state, "silence", "--match", "model", "--for", "1h"])
    assert cli(["alerts", "--state-dir", state, "unsilence", "nope"]) == 1
    assert cli(["alerts", "--state-dir", state, "silences"]) == 0
    assert cli(["alerts", "--state-dir", state, "list", "--status", "bogus"]) == 2


def test_alert_records_for_influxdb(tmp_path):
    async def main():
        al = make_alerting(tmp_path, [], rules=[{**DRIFT_RULE, "for_windows": 2}])
        await al.start()
        try:
            return [
                al.on_window("m", "1", window(i, {"age": p})) for i, p in enumerate([0.001, 0.002, 0.5, 0.6], start=1)
            ]
        finally:
            await al.stop()

    per_window = asyncio.run(main())
    assert [[r.fields["status"] for r in w] for w in per_window] == [["pending"], ["firing"], ["resolved"], []]
    r = per_window[1][0]
    assert r.measurement == ALERT and r.time_ns == window(2, {"age": 0})[0].time_ns
    assert r.tags == {
        "model": "m",
        "version": "1",
        "rule": "feature_drift",
        "severity": "warning",
        "feature": "age",
        "detector": "ks",
    }
    assert r.fields["firing"] == 1 and r.fields["value"] == 0.002 and r.fields["threshold"] == 0.01
    assert all(isinstance(r.fields[k], float) for k in ("value", "threshold"))


def test_window_close_to_signed_webhook_latency(tmp_path):
    """Window closes (on_window is called) → a signed webhook is at the receiver."""
    receiver = Receiver().start()
    latencies = []

    async def main():
        al = make_alerting(tmp_path, [webhook("j", receiver.url)])
        await al.start()
        try:
            for i in range(1, 21):  # a new feature drifts in every window: one firing each
                t0 = time.time()
                al.on_window("m", "1", window(i, {f"f{i:02d}": 0.001}))
                assert await until(lambda i=i: len(receiver.requests) == i, 10)
                latencies.append(receiver.requests[-1].at - t0)
        finally:
            await al.stop()

    try:
        asyncio.run(main())
    finally:
        receiver.stop()
    assert all(VERIFY(SECRET.encode(), q.body, q.headers[SIGNATURE_HEADER.lower()]) for q in receiver.requests)
    med, worst = statistics.median(latencies) * 1000, max(latencies) * 1000
    print(f"\nwindow close -> signed webhook received: median {med:.1f} ms, max {worst:.1f} ms (n=20)")
    assert max(latencies) < 10.0


def test_a_flapping_condition_reaches_a_real_receiver_as_one_firing_and_one_resolve(tmp_path):
    """keep_firing_for end to end: rule config → lifecycle → outbox → signed HTTP deliveries."""
    receiver = Receiver().start()
    flapping = [0.001, 0.5, 0.002, 0.4, 0.3, 0.001, 0.6, 0.003, 0.5, 0.5, 0.5, 0.5, 0.5]  # windows 1 min apart
    rules = [{**DRIFT_RULE, "keep_firing_for": "3m"}, {**DRIFT_RULE, "name": "no_hysteresis"}]

    async def run():
        al = make_alerting(tmp_path, [webhook("j", receiver.url)], rules=rules)
        await al.start()
        try:
            for i, p in enumerate(flapping, start=1):
                al.on_window("m", "1", window(i, {"age": p}))
            assert await al.drain(10)
            await asyncio.sleep(0.3)  # anything that would come twice comes now
        finally:
            await al.stop()

    try:
        asyncio.run(run())
    finally:
        receiver.stop()
    bodies = [json.loads(q.body) for q in receiver.requests]
    for q in receiver.requests:
        assert VERIFY(SECRET.encode(), q.body, q.headers[SIGNATURE_HEADER.lower()])
    kept = [(b["status"], b["window_end"]) for b in bodies if b["rule"] == "feature_drift"]
    # last breach in window 8; resolved in window 11, three minutes later
    assert kept == [("firing", iso(T0 + MINUTE)), ("resolved", iso(T0 + 11 * MINUTE))]
    # the same condition without keep_firing_for: a pair per flicker (the control)
    assert [b["status"] for b in bodies if b["rule"] == "no_hysteresis"] == ["firing", "resolved"] * 4
