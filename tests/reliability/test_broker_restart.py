"""Broker restart: the local broker keeps everything in memory; when it restarts the worker must
reconnect, say clearly what was lost, and carry on — no hang, no silent stall.

A dedicated local stack; the worker processes phase-1 traffic; tansu is
stopped (SIGTERM) and started again on the same port — every topic, message,
committed offset and group is gone. The *worker* must notice and recreate its
topics with the configured partition count (nobody else does: the first
producer send would auto-create them with a count of tansu's choosing); the
test waits for that, checks every partition count, then sends phase-2 traffic;
it must be windowed within a bounded time, and the worker's log must say the
broker lost its state.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streams.devstack.localstack import KAFKA, settings_env, terminate
from tests.reliability.helpers import Traffic, monitors_file, on_stack, tail, wait_for, windowed, worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RESULTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"  # gitignored


def _topics_on_broker(s, names: list[str]) -> dict[str, int] | str:
    """Partition count of each of ``names``, or what is missing (listing never auto-creates a topic)."""
    from streams.broker.admin import admin_client

    try:
        with admin_client(s, timeout_ms=5000) as admin:
            have = set(admin.list_topics())
            missing = [t for t in names if t not in have]
            if missing:
                return f"missing {missing}"
            return {d.get("name", d.get("topic")): len(d.get("partitions") or []) for d in admin.describe_topics(names)}
    except Exception as e:  # the broker may still be starting
        return repr(e)


def test_worker_survives_a_broker_restart(own_stack, settings, tmp_path):
    from streams.worker.references import references_topic
    from streams.worker.topics import worker_topics

    s = on_stack(settings, own_stack)
    mon = monitors_file(tmp_path, ["m"], window=500, first_n=500, idle=600.0)
    traffic = Traffic(s, seed=31)
    for _ in range(8):
        traffic.send("m", 250)
    traffic.flush()
    traffic.close()
    log = tmp_path / "worker.log"
    with worker(settings_env(s), mon, log) as proc:
        wait_for(lambda: True if windowed(s) >= 2000 else windowed(s), 90, "phase-1 windows", [proc], log)
        before = windowed(s)
        t0 = time.monotonic()
        pid = own_stack.status()["services"][KAFKA]["pid"]
        assert terminate(pid, 10) == "stopped"
        time.sleep(3)  # the worker notices the broker is gone
        own_stack.up()  # a new, empty broker on the same port
        # nobody but the worker recreates the topics; wait for it before any producer could auto-create them
        names = worker_topics(s)
        wait_for(
            lambda: isinstance(found := _topics_on_broker(s, names), dict) or found,
            30,
            "the worker to recreate its topics on the new broker",
            [proc],
            log,
        )
        recreated_in = time.monotonic() - t0
        counts = _topics_on_broker(s, names)
        want = {t: (1 if t == references_topic(s) else s.topic_partitions) for t in names}
        assert counts == want, f"topics recreated with the wrong partition counts: {counts} != {want}"
        traffic = Traffic(s, seed=32)
        traffic.next["m"] = 2000  # new events (new ids and times), not a replay of phase 1
        for _ in range(8):  # phase 2 on the new broker
            traffic.send("m", 250, drift=True)
        traffic.flush()
        traffic.close()
        wait_for(
            lambda: True if windowed(s) >= before + 2000 else windowed(s) - before,
            120,
            "phase-2 windows after the broker restart (no hang, no silent stall)",
            [proc],
            log,
        )
        took = time.monotonic() - t0
        assert proc.poll() is None
    text = log.read_text(errors="replace")
    said = [
        ln for ln in text.splitlines() if "lost" in ln.lower() and ("broker" in ln.lower() or "offset" in ln.lower())
    ]
    assert said, f"the worker did not say what the broker restart lost:\n{tail(log, 60)}"
    assert any("recreating them with" in ln for ln in said), f"no topic recreation in the log:\n{tail(log, 60)}"
    result = {
        "events_before": before,
        "events_after_restart": windowed(s) - before,
        "topics_recreated_after_s": round(recreated_in, 1),
        "partitions": counts,
        "recovered_in_s": round(took, 1),
        "log_lines": [ln[:240] for ln in said[:3]],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "broker_restart.json").write_text(json.dumps(result, indent=2) + "\n")
    print("broker restart:", json.dumps(result))
