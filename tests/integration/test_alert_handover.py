"""Alerts follow their partitions between two hosts: every alert fires once and resolves once.

Two real workers (``driftwatch worker`` child processes) with state folders of their own — as on
two hosts, nothing shared but the broker and InfluxDB of the test session — in one consumer group;
a real HTTP webhook receiver (:class:`tests.streams.alerts.receiver.Receiver`). Four models, one
per partition, each with a rule on its feature ``x0``'s KS p-value (fires after two breaching
windows, resolves at the first clear one). The traffic drifts twice and recovers twice, one
window of every model per step, while the partitions move back and forth between the workers
(joins and leaves — by SIGTERM, or in the ``sigkill`` variant by SIGKILL — the rebalance starting while
the step's traffic is being read; a joining worker has its partitions before anyone leaves).

Asserted: the receiver got, for every model, exactly the two firings and two resolves the
schedule implies — at the windows the schedule implies (independent of the workers: window ``k``
of a model ends at its last event's time), with four distinct idempotency keys, each delivered
exactly once (``sigkill``: at least once, the same key each time; repeats are counted and printed); every
window written once; and the workers' logs show the alert state restored
from the changelog topic by both hosts and handed over at the rebalances.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections import Counter
from datetime import datetime

import pytest
import yaml

from tests.reliability.helpers import (
    T0,
    WORKER_READY,
    Traffic,
    monitors_file,
    start_worker,
    stop,
    tail,
    wait_assigned,
    wait_for,
    windowed,
)
from tests.streams.alerts.helpers import SECRET, SECRET_ENV
from tests.streams.alerts.receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW = 250
DRIFT = [False, False, True, True, True, False, False, True, True, False, False, False]
"""Per step (one window of every model): window 0 builds the reference (first_n); windows 2-4 and 7-8 drift."""
MEMBERS = [
    {"a"},
    {"a", "b"},  # b joins: half the partitions move to b
    {"b"},  # a leaves: all on b
    {"a", "b"},  # a joins again
    {"a"},  # b leaves: all on a
    {"a", "b"},
    {"b"},
    {"a", "b"},
    {"a"},
    {"a", "b"},
    {"b"},
    {"a", "b"},
]
"""Who is in the group while each step's traffic is read (a change starts right after the step's traffic is sent)."""


def expected_transitions() -> list[tuple[str, int]]:
    """(status, window index) the rule implies: firing at the second drifted window in a row, resolved at the
    first clear window after (the first window is the reference: not tested)."""
    out, run, firing = [], 0, False
    for k, drift in enumerate(DRIFT):
        if k == 0:
            continue
        run = run + 1 if drift else 0
        if run >= 2 and not firing:
            out.append(("firing", k))
            firing = True
        elif not drift and firing:
            out.append(("resolved", k))
            firing = False
    return out


def window_end_ms(k: int) -> int:
    """Point time (ms) of window ``k`` of a model: its last event's time (count windows of WINDOW events)."""
    return round((T0 + ((k + 1) * WINDOW - 1) * 0.01) * 1000)


def iso_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.parametrize("leave", ["sigterm", "sigkill"])
def test_alerts_fire_once_and_resolve_once_while_partitions_move_between_two_hosts(settings, tmp_path, leave):
    """``sigterm``: workers leave gracefully (the alert state is checkpointed at the rebalance): every
    announcement is delivered exactly once. ``sigkill``: every leave is a crash — the partitions come to the
    other worker after the session timeout, from the last checkpoints (a status change is in Kafka before its
    window's results) — every announcement is delivered, with the same idempotency key wherever it was made;
    at least once (a crash between queueing and acknowledging can repeat it, under the same key)."""
    from benchmarks.traffic import balanced_model_ids
    from streams.alerts.partitions import changelog_topic
    from streams.broker.admin import delete_topics
    from streams.devstack.localstack import settings_env

    want = expected_transitions()
    assert [s for s, _ in want] == ["firing", "resolved", "firing", "resolved"]
    models = balanced_model_ids(4, settings.topic_partitions, prefix="al")
    receiver = Receiver().start()
    rule = {
        "name": "x0_drift",
        "signal": "drift.p_value",
        "where": {"feature": "x0", "detector": "ks"},
        "op": "<",
        "threshold": 1e-6,
        "for_windows": 2,
    }
    mon = monitors_file(
        tmp_path,
        models,
        window=WINDOW,
        first_n=WINDOW,
        extra={
            "webhooks": [
                {
                    "name": "receiver",
                    "url": receiver.url,
                    "secret_env": SECRET_ENV,
                    "backoff_initial_seconds": 0.2,
                    "backoff_max_seconds": 1,
                }
            ]
        },
    )
    cfg = yaml.safe_load(mon.read_text())
    for m in cfg["models"]:
        m["alerts"] = [rule]
    mon.write_text(yaml.safe_dump(cfg))

    folders = {name: tmp_path / f"host-{name}" for name in "ab"}
    envs = {
        name: {
            **settings_env(
                settings.model_copy(
                    update={
                        "state_dir": folders[name],
                        "worker_web_port": 0 if name == "b" else settings.worker_web_port,
                    }
                )
            ),
            SECRET_ENV: SECRET,
        }
        for name in "ab"
    }
    logs = {name: tmp_path / f"{name}.log" for name in "ab"}
    procs: dict = {}
    traffic = Traffic(settings, seed=16)

    starts = Counter()
    try:
        for step, members in enumerate(MEMBERS):
            for m in models:
                traffic.send(m, WINDOW, drift=DRIFT[step])
            traffic.flush()
            for name in sorted(set(procs) - members):  # leaves (SIGTERM: its last checkpoints, then it goes)
                if leave == "sigkill":
                    procs[name].send_signal(signal.SIGKILL)
                    procs.pop(name).wait(10)
                else:
                    rc = stop(procs.pop(name), timeout=30)
                    assert rc == 0, (rc, tail(logs[name]))
            for name in sorted(members - set(procs)):  # joins, while the step's traffic is being read
                before = logs[name].read_text(errors="replace").count(WORKER_READY) if logs[name].exists() else 0
                procs[name] = start_worker(envs[name], mon, logs[name])
                starts[name] += 1
                # it has partitions before anyone leaves (a worker stopped in its start-up is another test)
                wait_assigned(procs[name], logs[name], before + 1, f"worker {name}")
            expected = (step + 1) * WINDOW * len(models)
            wait_for(
                lambda expected=expected: windowed(settings) == expected,
                180,
                f"step {step} windowed by {sorted(members)}",
                list(procs.values()),
                logs[sorted(members)[0]],
            )
        n_want = len(want) * len(models)
        wait_for(
            lambda: len(receiver.requests) >= n_want or len(receiver.requests),
            60,
            f"{n_want} webhook deliveries",
            list(procs.values()),
            logs["a"],
        )
        time.sleep(5.0)  # a second delivery of anything would come now
    finally:
        for p in procs.values():
            stop(p, timeout=30)
        traffic.close()
        receiver.stop()
        with contextlib.suppress(Exception):
            delete_topics(settings, [changelog_topic(settings)])

    bodies = [json.loads(q.body) for q in receiver.requests]
    keys = [q.headers.get("idempotency-key") for q in receiver.requests]
    assert all(keys) and [b["id"] for b in bodies] == keys
    repeated = len(keys) - len(set(keys))
    if leave == "sigterm":
        assert repeated == 0, Counter(keys).most_common(3)  # nothing delivered twice
    else:  # a receiver keeps the first of each idempotency key
        bodies = list({b["id"]: b for b in reversed(bodies)}.values())
    for m in models:
        got = sorted((iso_ms(b["window_end"]), b["status"]) for b in bodies if b["model"] == m)
        assert got == [(window_end_ms(k), s) for s, k in want], (m, got, tail(logs["a"]), tail(logs["b"]))
    assert len(bodies) == len(want) * len(models)
    assert windowed(settings) == len(MEMBERS) * WINDOW * len(models)
    text = {name: log.read_text(errors="replace") for name, log in logs.items()}
    for name in "ab":  # each host took partitions over from the other's checkpoints, and handed them over
        assert "alert state of partition" in text[name] and "restored from the Kafka topic" in text[name], tail(
            logs[name]
        )
        assert "handed over" in text[name], tail(logs[name])
        assert "Traceback" not in text[name], tail(logs[name])
    # nothing of the alert state is shared through the folders: each holds only its own outbox of deliveries
    delivered = {name: 0 for name in "ab"}
    import sqlite3

    for name in "ab":
        with contextlib.closing(sqlite3.connect(folders[name] / "alerts" / "alerts.sqlite3")) as db:
            delivered[name] = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE target='receiver' AND status='delivered'"
            ).fetchone()[0]
    if leave == "sigterm":
        assert sum(delivered.values()) == len(bodies), delivered
    print(
        f"\n{leave}: webhook deliveries by host: {delivered}; worker starts: {dict(starts)}; "
        f"the same announcement delivered again: {repeated}"
    )
