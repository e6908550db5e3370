"""A SIGKILL in the middle of a long summarised window: the next worker restores it from Kafka.

Real broker, real InfluxDB, ``driftwatch worker`` as a child process. One model, count windows of
50,000 events kept as summaries (``window.summary_min_events``), traffic at a steady 2,500 events/s
(a window lasts 20 s). Worker A is SIGKILLed in the middle of the second window; worker B (same group,
its own state folder, as on another host) takes the partition over. Checked:

* B restores the open window from the window changelog topic (its log says so);
* the amount re-read — messages between the group's committed offset after the kill and what A had
  read — is at most ~10 s of traffic (the checkpoint interval is 5 s, Faust commits every 1 s); before
  the window changelog it was everything since the open window began;
* every window point and drift point equals a fault-free run's (the same engine in-process over the
  topic's messages), and every produced event is in a window.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.reliability.helpers import (
    CATEGORICAL,
    LEVELS,
    NUMERIC,
    Traffic,
    compare_points,
    fault_free_points,
    start_worker,
    stop,
    stored_points,
    tail,
    wait_for,
    windowed,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~70 s: 40 s of traffic and two workers

WINDOW = 50_000
BATCH = 250  # events per message
RATE = 10.0  # messages per second (2,500 events/s)
N_MESSAGES = 2 * WINDOW // BATCH  # two windows


def reference_file(tmp_path: Path) -> Path:
    """Rows drawn like the traffic's (tests.reliability.helpers.batch_doc), as a CSV reference."""
    rng = np.random.default_rng(5)
    n = 4000
    cols = {k: rng.normal(0.0, 1.0, n) for k in NUMERIC}
    cols[CATEGORICAL[0]] = LEVELS[rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])]
    cols[CATEGORICAL[1]] = LEVELS[rng.choice(4, size=n)]
    path = tmp_path / "reference.csv"
    lines = [",".join(cols)] + [",".join(str(cols[k][i]) for k in cols) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def monitors(tmp_path: Path) -> Path:
    features = [{"name": n, "kind": "numeric"} for n in NUMERIC] + [
        {"name": c, "kind": "categorical"} for c in CATEGORICAL
    ]
    cfg = {
        "models": [
            {
                "model_id": "m",
                "features": features,
                "window": {"size_events": WINDOW, "summary_min_events": 10_000, "idle_close_seconds": 600},
                "reference": {"file": str(reference_file(tmp_path))},
                "drift": {"p_val": 0.001, "correction": "bonferroni"},
            }
        ]
    }
    path = tmp_path / "monitors.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def committed_offsets(settings) -> dict[int, int]:
    """The consumer group's committed offsets of the inference topic, per partition."""
    from streams.broker.admin import admin_client

    with admin_client(settings) as admin:
        got = admin.list_group_offsets({settings.consumer_group: None})[settings.consumer_group]
    return {tp.partition: om.offset for tp, om in got.items() if tp.topic == settings.topic_inferences}


def test_sigkill_mid_window_resumes_from_the_window_changelog(settings, settings_env, tmp_path, consume_all):
    from streams.broker.admin import delete_topics
    from streams.worker.window_changelog import window_changelog_topic

    mon = monitors(tmp_path)
    traffic = Traffic(settings, seed=11)
    sent = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            t0 = time.monotonic()
            for i in range(N_MESSAGES):
                traffic.send("m", BATCH)
                traffic.flush()
                time.sleep(max(0.0, t0 + (i + 1) / RATE - time.monotonic()))
        except BaseException as e:
            errors.append(e)
        finally:
            sent.set()

    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    env_b = {**settings_env, "DRIFTWATCH_STATE_DIR": str(tmp_path / "state-b")}  # as on another host
    a = start_worker(settings_env, mon, log_a)
    b = None
    try:
        wait_for(lambda: "Worker ready" in log_a.read_text(errors="replace"), 60, "worker a ready", [a], log_a)
        producer = threading.Thread(target=produce, name="traffic", daemon=True)
        producer.start()
        # the first window written, then ~60 % into the second one
        wait_for(lambda: windowed(settings) >= WINDOW, 90, "the first window", [a], log_a)
        wait_for(lambda: traffic.messages >= int(1.6 * WINDOW / BATCH), 60, "mid second window", [a], log_a)
        at_kill = traffic.messages
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        time.sleep(1.0)
        committed = committed_offsets(settings)
        assert len(committed) == 1, committed
        (offset,) = committed.values()
        reread = at_kill - offset
        seconds = reread / RATE
        print(
            f"\nSIGKILL after {at_kill} messages; committed offset {offset}: {reread} messages "
            f"({reread * BATCH} events, {seconds:.1f} s of traffic) to re-read; window began at message "
            f"{WINDOW // BATCH}"
        )
        assert offset > WINDOW // BATCH + 10, "the open window's messages were not acked before it closed"
        assert seconds <= 10.0, f"re-reads {seconds:.1f} s of traffic"

        b = start_worker(env_b, mon, log_b)
        wait_for(lambda: sent.is_set(), 90, "the traffic", [b], log_b)
        assert not errors, errors
        wait_for(lambda: windowed(settings) == N_MESSAGES * BATCH, 90, "every event in a window", [b], log_b)
        text_b = log_b.read_text(errors="replace")
        assert "open window #1 restored from" in text_b, tail(log_b)
        got = stored_points(settings)
        want = fault_free_points(settings, mon, consume_all, N_MESSAGES)
        assert {k for k in want if k[0] == "w"} and {k for k in want if k[0] == "d"}
        problems = compare_points(got, want)
        assert not problems, "\n".join(problems)
        stop(b)
        errors_b = [ln for ln in log_b.read_text(errors="replace").splitlines() if " ERROR " in ln]
        assert not errors_b, errors_b
    finally:
        stop(a)
        if b is not None:
            stop(b)
        traffic.close()
        delete_topics(settings, [window_changelog_topic(settings)])
