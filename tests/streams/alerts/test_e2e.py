"""From demo traffic with injected drift to a signed webhook: the whole way, measured.

``driftwatch demo`` publishes wine traffic to the real local broker and shifts two inputs
after a few seconds; ``driftwatch worker`` (a subprocess, as in production) windows it,
runs the detectors, writes InfluxDB and evaluates the alert rules; a local receiver gets
the webhooks. Latency = receiver arrival − the window's ``closed_at`` (the wall clock at
which the worker closed it, written on its ``dw_window`` point).
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from streams.influx.sink import query
from streams.lifetime import die_with_parent
from tests.streams.alerts.helpers import ROOT, SECRET, SECRET_ENV, documented_verify
from tests.streams.alerts.receiver import Receiver

pytestmark = pytest.mark.integration


def monitors_file(tmp_path: Path, receiver: Receiver) -> Path:
    demo = yaml.safe_load((ROOT / "streams" / "devstack" / "examples" / "demo.yaml").read_text())
    (wine,) = [m for m in demo["models"] if m["model_id"] == "wine"]
    wine["reference"] = {"file": str(ROOT / "streams" / "devstack" / "examples" / wine["reference"]["file"])}
    wine["alerts"] = [
        {
            "name": "feature_drift",
            "signal": "drift.drift",
            "where": {"feature": "*"},
            "op": "==",
            "threshold": 1,
            "for_windows": 2,
            "summary": "{feature} drifted on {model} v{version} (p={value})",
        },
        {
            "name": "share_drifted",
            "signal": "drift_summary.share_drifted",
            "op": ">=",
            "threshold": 0.1,
            "severity": "critical",
        },
    ]
    cfg = {
        "models": [wine],
        "dashboard_url": "http://127.0.0.1:8501",
        "webhooks": [
            {
                "name": "receiver",
                "url": receiver.url,
                "secret_env": SECRET_ENV,
                "backoff_initial_seconds": 0.2,
                "backoff_max_seconds": 2,
            }
        ],
    }
    path = tmp_path / "monitors.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow  # demo traffic through a worker to a webhook (~30 s)
def test_demo_drift_reaches_a_signed_webhook_within_10s_of_the_window_closing(settings, settings_env, tmp_path):
    from streams.devstack.demo import DemoOptions, run_demo

    receiver = Receiver().start()
    monitors = monitors_file(tmp_path, receiver)
    log = tmp_path / "worker.log"
    env = {**settings_env, SECRET_ENV: SECRET, "DRIFTWATCH_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    stop = threading.Event()
    demo = threading.Thread(
        target=run_demo,
        args=(
            settings,
            DemoOptions(
                models=["wine"], rate=400, duration=60, drift_at=10, seed=7, progress_every=0, create_topics=False
            ),
        ),
        kwargs={"stop": stop},
        daemon=True,
    )
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--monitors", str(monitors)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )
    try:
        demo.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            firing = [q for q in receiver.requests if json.loads(q.body)["status"] == "firing"]
            if len({json.loads(q.body)["rule"] for q in firing}) == 2:
                break
            assert worker.poll() is None, f"worker exited: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        time.sleep(3)  # anything that would come twice comes now
    finally:
        stop.set()
        demo.join(30)
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
        receiver.stop()

    reqs = [q for q in receiver.requests if json.loads(q.body)["status"] == "firing"]
    assert reqs, f"no firing webhook; worker log:\n{log.read_text()[-3000:]}"
    for source in ("docs/alerts.md", "README.md"):  # both printed snippets accept the real deliveries
        verify = documented_verify(source)
        assert all(verify(SECRET.encode(), q.body, q.headers["x-driftwatch-signature"]) for q in receiver.requests)
        assert not verify(SECRET.encode(), reqs[0].body, reqs[0].headers.get("x-no-such-header"))
    bodies = [json.loads(q.body) for q in reqs]
    assert {b["rule"] for b in bodies} == {"feature_drift", "share_drifted"}
    # one notification per alert key while it fires
    assert set(Counter(b["key"] for b in bodies).values()) == {1}
    latencies = []
    for q, b in zip(reqs, bodies):
        t_ns = _ns(b["window_end"])  # milliseconds in the payload
        rows = query(
            settings,
            "SELECT closed_at FROM dw_window WHERE model = 'wine' "
            f"AND time >= {t_ns - 1_000_000} AND time < {t_ns + 1_000_000}",
        )
        assert len(rows) <= 1
        assert rows, f"no dw_window point at {b['window_end']}"
        latencies.append(q.at - float(rows[0]["closed_at"]))
    print(
        f"\n{len(bodies)} firing webhooks ({sorted(Counter(b['rule'] for b in bodies).items())}); "
        f"window closed -> signed webhook received: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    assert max(latencies) < 10.0, latencies


def _ns(iso: str) -> int:
    from datetime import datetime

    dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(round(dt.timestamp() * 1000)) * 1_000_000
