"""Worker crashes: SIGKILL three times at random points while traffic flows, restart each time.

Afterwards every window is in InfluxDB exactly once, with the same values as a
fault-free run of the same input (the same engine run in-process over the
topic's messages), and every produced event is counted in a window or in the
dead-letter topic (dead letters de-duplicated by their source position: a
dead letter published just before a kill is published again after the
restart, as its offset was not committed yet — at-least-once on that topic,
exactly-once in InfluxDB where the point is keyed by the source offset).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.reliability.helpers import (
    Traffic,
    compare_points,
    dead_letters,
    fault_free_points,
    monitors_file,
    start_worker,
    stop,
    stored_points,
    tail,
    unique_dead_letters,
    wait_for,
    windowed,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # each test runs workers for 30-100 s
RESULTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"  # gitignored


def test_three_sigkills_while_traffic_flows(settings, settings_env, tmp_path, consume_all):
    models = ["m", "k"]
    window = 500
    mon = monitors_file(tmp_path, models, window=window, first_n=window, idle=600.0)
    rng = np.random.default_rng(2024)
    traffic = Traffic(settings, seed=9)
    done = threading.Event()
    killed_three = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:  # demo-like traffic: a batch per model every ~0.5 s, a malformed message now and then
        try:  # flows until the third kill, then 8 more batches (the final worker's share)
            i, tail_left = 0, 8
            while tail_left > 0 and i < 400:
                for m in models:
                    traffic.send(m, 250, drift=(i // 20) % 2 == 1)
                if i % 8 == 3:
                    traffic.raw(b'{"broken": ', key=b"m")
                traffic.flush()
                time.sleep(0.5)
                i += 1
                if killed_three.is_set():
                    tail_left -= 1
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    producer = threading.Thread(target=produce, name="traffic", daemon=True)
    logs: list[Path] = []
    kills: list[dict] = []
    producer.start()
    try:
        for k in range(3):
            log = tmp_path / f"worker-{k}.log"
            logs.append(log)
            proc = start_worker(settings_env, mon, log)
            try:
                # a random point after this worker is up and has written a window of its own, so
                # that each restart has a checkpoint to resume from (traffic still flows)
                before = windowed(settings)
                wait_for(
                    lambda log=log: "Worker]: Ready" in log.read_text(errors="replace"),
                    90,
                    f"worker {k} ready",
                    [proc],
                    log,
                )
                wait_for(
                    lambda before=before: windowed(settings) > before, 90, f"worker {k} writes a window", [proc], log
                )
                delay = float(rng.uniform(0.5, 5.0))
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                assert not done.is_set(), "traffic ended before the kill: it must flow during all three"
                kills.append(
                    {
                        "worker": k,
                        "after_first_window_s": round(delay, 2),
                        "events_windowed_at_kill": windowed(settings),
                    }
                )
            finally:
                stop(proc)
        killed_three.set()
        done.wait(150)
        assert not errors, errors
        traffic.close()
        log = tmp_path / "worker-final.log"
        logs.append(log)
        full = sum((n // window) * window for n in traffic.next.values())
        proc = start_worker(settings_env, mon, log)
        try:
            wait_for(
                lambda: True if windowed(settings) >= full else windowed(settings),
                120,
                "every full window after three crashes",
                [proc],
                log,
            )
            time.sleep(1.0)
        finally:
            stop(proc)
    finally:
        killed_three.set()  # on an early failure too: the traffic thread stops after its last batches
        done.wait(60)
    assert "resuming" in "".join(p.read_text(errors="replace") for p in logs[1:]), (
        "a restarted worker should resume from its checkpoints"
    )
    got = stored_points(settings)
    want = fault_free_points(settings, mon, consume_all, n_messages=traffic.messages)
    problems = compare_points(got, want)
    assert not problems, "\n".join(problems[:20])
    n_windows = sum(1 for k in got if k[0] == "w")
    assert windowed(settings) == full  # each window exactly once (sum over distinct points)
    # accounting: every produced event is in a window, still in an open window, or dead-lettered
    _d, _by, recs = dead_letters(consume_all, settings, timeout=15)
    dead, duplicates = unique_dead_letters(recs)
    open_events = sum(n % window for n in traffic.next.values())
    assert traffic.events == windowed(settings) + open_events + dead, (
        traffic.events,
        windowed(settings),
        open_events,
        dead,
    )
    result = {
        "kills": kills,
        "windows": n_windows,
        "events_produced": traffic.events,
        "events_windowed": windowed(settings),
        "events_in_open_windows": open_events,
        "events_dead_lettered": dead,
        "dead_letter_duplicates_on_topic": duplicates,
        "lost": 0,
        "points_compared": len(got),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "crash_recovery.json").write_text(json.dumps(result, indent=2) + "\n")
    print("crash recovery:", json.dumps(result))
    for p in logs:
        assert "Traceback" not in p.read_text(errors="replace"), tail(p)
