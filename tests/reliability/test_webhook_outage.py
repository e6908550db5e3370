"""Webhook outage, end to end: the receiver is down for 60 s; every alert arrives after it returns,
once per idempotency key.

The per-endpoint retry queue itself (backoff, give-up, 5xx/429 handling,
persistence across restarts) is proven by ``tests/streams/alerts/test_webhooks.py``
and ``test_service.py``; this is the end-to-end variant: the real worker, real
traffic, an alert rule that fires on every window, and a receiver that refuses
connections for 60 s while alerts are raised.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.reliability.helpers import Traffic, monitors_file, wait_for, windowed, worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RESULTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"  # gitignored
OUTAGE_S = 60.0


def test_receiver_down_for_60s_gets_every_alert_once(settings, settings_env, tmp_path, consume_all):
    from streams.alerts.signing import IDEMPOTENCY_HEADER
    from tests.streams.alerts.receiver import Receiver

    receiver = Receiver()  # not started: connection refused
    mon = monitors_file(
        tmp_path,
        ["m", "k"],
        window=500,
        first_n=500,
        idle=600.0,
        extra={
            "webhooks": [
                {
                    "name": "ops",
                    "url": receiver.url,
                    "secret_env": "DW_TEST_SECRET",
                    "backoff_initial_seconds": 1,
                    "backoff_max_seconds": 8,
                }
            ]
        },
    )
    cfg = yaml.safe_load(mon.read_text())
    for m in cfg["models"]:
        m["alerts"] = [
            {
                "name": "drift_share",
                "signal": "drift_summary.share_drifted",
                "op": ">",
                "threshold": 0.0,
                "severity": "warning",
            },
            {"name": "windows", "signal": "window.n_events", "op": ">", "threshold": 0},
        ]
    mon.write_text(yaml.safe_dump(cfg))
    traffic = Traffic(settings, seed=41)
    for i in range(12):
        for m in ("m", "k"):
            traffic.send(m, 250, drift=i >= 4)
    traffic.flush()
    traffic.close()
    log = tmp_path / "worker.log"
    env = {**settings_env, "DW_TEST_SECRET": "x" * 24}
    t0 = time.monotonic()
    try:
        with worker(env, mon, log) as proc:
            wait_for(lambda: True if windowed(settings) == 6000 else windowed(settings), 90, "all windows", [proc], log)
            # the alerts topic is the record of truth: what the receiver must eventually get
            announced = consume_all(settings, settings.topic_alerts, timeout=20, idle=3)
            assert announced, "no alert was raised"
            keys = {
                dict(r.headers)[IDEMPOTENCY_HEADER].decode() for r in announced if IDEMPOTENCY_HEADER in dict(r.headers)
            }
            assert keys
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))
            assert not receiver.requests
            assert proc.poll() is None
            receiver.start()
            t_up = time.monotonic()
            wait_for(
                lambda: (
                    True
                    if {r.headers.get(IDEMPOTENCY_HEADER.lower()) for r in receiver.requests} >= keys
                    else len(receiver.requests)
                ),
                60,
                "every alert at the receiver after it came back",
                [proc],
                log,
            )
            delivered_in = time.monotonic() - t_up
            time.sleep(3)  # nothing more should come
    finally:
        receiver.stop()
    got = Counter(r.headers.get(IDEMPOTENCY_HEADER.lower()) for r in receiver.requests)
    dup = {k: n for k, n in got.items() if n > 1}
    assert not dup, f"delivered more than once: {dup}"
    assert set(got) == keys
    text = log.read_text(errors="replace")
    assert "ops" in text and ("retry" in text.lower() or "fail" in text.lower()), "no log line about the failures"
    result = {
        "outage_s": OUTAGE_S,
        "alerts": len(keys),
        "delivered_once": len(got),
        "duplicates": 0,
        "all_delivered_within_s_of_return": round(delivered_in, 1),
        "lost": 0,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "webhook_outage.json").write_text(json.dumps(result, indent=2) + "\n")
    print("webhook outage:", json.dumps(result))
