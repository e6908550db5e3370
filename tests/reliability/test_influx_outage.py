"""InfluxDB outage: stop InfluxDB for 30 s mid-stream, restart it — no result lost.

A dedicated local stack (its own tansu and influxd on free ports) so only this
test's InfluxDB goes down. While it is down, traffic keeps flowing: the sink
retries with backoff (nothing dropped), offsets stay uncommitted, consumption
continues until the sink's queue is full and then pauses; a log line says
InfluxDB writes failed, another that they recovered. Afterwards the stored
windows equal a fault-free run of the same input, and produced = counted +
dead-lettered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streams.devstack.localstack import INFLUX, settings_env, terminate
from tests.reliability.helpers import (
    Traffic,
    compare_points,
    dead_letters,
    fault_free_points,
    monitors_file,
    on_stack,
    stored_points,
    unique_dead_letters,
    wait_for,
    windowed,
    worker,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RESULTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"  # gitignored
OUTAGE_S = 30.0


def test_influxdb_down_for_30s_mid_stream(own_stack, settings, tmp_path, consume_all):
    s = on_stack(settings, own_stack)
    models = ["m", "k"]
    mon = monitors_file(tmp_path, models, window=500, first_n=500, idle=600.0)
    traffic = Traffic(s, seed=17)
    for _ in range(8):  # phase 1: 2000 events per model
        for m in models:
            traffic.send(m, 250)
    traffic.raw(b"{oops", key=b"m")
    traffic.flush()
    log = tmp_path / "worker.log"
    with worker(settings_env(s), mon, log) as proc:
        wait_for(lambda: True if windowed(s) >= 4000 else windowed(s), 90, "phase-1 windows", [proc], log)
        influx_pid = own_stack.status()["services"][INFLUX]["pid"]
        t_down = time.monotonic()
        assert terminate(influx_pid, 10) == "stopped"
        for _ in range(8):  # phase 2 while InfluxDB is down: 2000 more events per model
            for m in models:
                traffic.send(m, 250, drift=True)
        traffic.flush()
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_down)))
        assert proc.poll() is None, "the worker died while InfluxDB was down"
        text = log.read_text(errors="replace")
        assert "InfluxDB write" in text and "failed" in text, "no log line says InfluxDB writes are failing"
        own_stack.up()  # InfluxDB only (the broker still runs); same data folder
        downtime = time.monotonic() - t_down
        for _ in range(4):  # phase 3 after the restart
            for m in models:
                traffic.send(m, 250, drift=True)
        traffic.flush()
        traffic.close()
        full = sum((n // 500) * 500 for n in traffic.next.values())
        wait_for(
            lambda: True if windowed(s) >= full else windowed(s), 120, "every window after the outage", [proc], log
        )
        wait_for(lambda: "recovered" in log.read_text(errors="replace"), 30, "a 'recovered' log line", [proc], log)
    got = stored_points(s)
    want = fault_free_points(s, mon, consume_all, n_messages=traffic.messages)
    problems = compare_points(got, want)
    assert not problems, "\n".join(problems[:20])
    assert windowed(s) == full
    _d, _by, recs = dead_letters(consume_all, s, timeout=10)
    dead, _dups = unique_dead_letters(recs)
    assert traffic.events == full + sum(n % 500 for n in traffic.next.values()) + dead
    lines = [
        ln
        for ln in log.read_text(errors="replace").splitlines()
        if "InfluxDB" in ln and ("failed" in ln or "recovered" in ln or "still failing" in ln)
    ]
    result = {
        "outage_s": round(downtime, 1),
        "windows": sum(1 for k in got if k[0] == "w"),
        "events_produced": traffic.events,
        "events_windowed": windowed(s),
        "events_dead_lettered": dead,
        "lost": 0,
        "log_lines": [ln[:240] for ln in lines[:3]],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "influx_outage.json").write_text(json.dumps(result, indent=2) + "\n")
    print("influx outage:", json.dumps(result))
