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

The third test does the same with event-time windows kept as summaries (``window.summary_min_seconds``):
every open window is restored with the watermark state, the re-read is bounded, the points equal.

The second test sets another reference (``driftwatch reference set``) between the checkpoint and the kill:
the window opened before goes on with the reference it was opened with, without an ERROR or a lost event.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from streams.broker.admin import committed_offsets
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

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~70 s each: traffic and two workers

WINDOW = 50_000
BATCH = 250  # events per message
RATE = 10.0  # messages per second (2,500 events/s)
N_MESSAGES = 2 * WINDOW // BATCH  # two windows


def paced_sender(traffic: Traffic, messages: int) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    """A thread (not started) that sends ``messages`` batches of BATCH events at RATE messages per second;
    the event is set when it is done, the list holds what it raised."""
    sent = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            t0 = time.monotonic()
            for i in range(messages):
                traffic.send("m", BATCH)
                traffic.flush()
                time.sleep(max(0.0, t0 + (i + 1) / RATE - time.monotonic()))
        except BaseException as e:
            errors.append(e)
        finally:
            sent.set()

    return threading.Thread(target=produce, name="traffic", daemon=True), sent, errors


def reference_file(tmp_path: Path, shift: float = 0.0, name: str = "reference.csv") -> Path:
    """Rows drawn like the traffic's (tests.reliability.helpers.batch_doc), as a CSV reference (``shift``: numeric
    features moved by that much)."""
    rng = np.random.default_rng(5)
    n = 4000
    cols = {k: rng.normal(shift, 1.0, n) for k in NUMERIC}
    cols[CATEGORICAL[0]] = LEVELS[rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])]
    cols[CATEGORICAL[1]] = LEVELS[rng.choice(4, size=n)]
    path = tmp_path / name
    lines = [",".join(cols)] + [",".join(str(cols[k][i]) for k in cols) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def monitors(tmp_path: Path, window: int = WINDOW) -> Path:
    features = [{"name": n, "kind": "numeric"} for n in NUMERIC] + [
        {"name": c, "kind": "categorical"} for c in CATEGORICAL
    ]
    cfg = {
        "models": [
            {
                "model_id": "m",
                "features": features,
                "window": {"size_events": window, "summary_min_events": 10_000, "idle_close_seconds": 600},
                "reference": {"file": str(reference_file(tmp_path))},
                "drift": {"p_val": 0.001, "correction": "bonferroni"},
            }
        ]
    }
    path = tmp_path / "monitors.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tear_down(settings, traffic: Traffic, *workers) -> None:
    """Stop the workers and the traffic, and delete the window changelog (tansu keeps it in memory)."""
    from streams.broker.admin import delete_topics
    from streams.worker.window_changelog import window_changelog_topic

    for w in workers:
        if w is not None:
            stop(w)
    traffic.close()
    delete_topics(settings, [window_changelog_topic(settings)])


def test_sigkill_mid_window_resumes_from_the_window_changelog(settings, settings_env, tmp_path, consume_all):
    mon = monitors(tmp_path)
    traffic = Traffic(settings, seed=11)
    producer, sent, errors = paced_sender(traffic, N_MESSAGES)

    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    env_b = {**settings_env, "DRIFTWATCH_STATE_DIR": str(tmp_path / "state-b")}  # as on another host
    a = start_worker(settings_env, mon, log_a)
    b = None
    try:
        wait_for(lambda: "Worker ready" in log_a.read_text(errors="replace"), 60, "worker a ready", [a], log_a)
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
        tear_down(settings, traffic, a, b)


def test_a_window_opened_before_a_reference_set_is_restored_after_a_sigkill(
    settings, settings_env, tmp_path, consume_all
):
    """The open summarised window is checkpointed, an operator sets another reference (``driftwatch reference
    set``), the worker is SIGKILLed and another one (its own state folder) takes over: that window goes on with
    the reference it was opened with (stored beside the checkpoints on the window changelog), as the live
    worker's would — no ERROR line, none of its events lost, and every window and drift point equal to a
    fault-free run's (whose windows were all opened with the first reference). Before, the new worker logged an
    ERROR and the window went on without the events before the checkpoint."""
    import subprocess
    import sys

    window, per_window = 20_000, 20_000 // BATCH
    mon = monitors(tmp_path, window)
    traffic = Traffic(settings, seed=13)
    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    env_b = {**settings_env, "DRIFTWATCH_STATE_DIR": str(tmp_path / "state-b")}
    a = start_worker(settings_env, mon, log_a)
    b = None
    try:
        wait_for(lambda: "Worker ready" in log_a.read_text(errors="replace"), 60, "worker a ready", [a], log_a)
        first = per_window + per_window // 2  # the first window and half of the second
        for _ in range(first):
            traffic.send("m", BATCH)
        traffic.flush()
        wait_for(lambda: windowed(settings) >= window, 90, "the first window", [a], log_a)
        # every message acked: the open window's through a checkpoint of it (they are not written yet)
        wait_for(lambda: committed_offsets(settings).get(0, 0) >= first or None, 60, "a checkpoint", [a], log_a)
        shifted = reference_file(tmp_path, shift=3.0, name="shifted.csv")
        cli = [sys.executable, "-m", "streams.cli", "reference", "set", "m", "--file", str(shifted)]
        done = subprocess.run([*cli, "--monitors", str(mon)], env=settings_env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(lambda: "reference set by an operator" in log_a.read_text(errors="replace"), 30, "a applied it", [a])
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        b = start_worker(env_b, mon, log_b)
        wait_for(lambda: "Worker ready" in log_b.read_text(errors="replace"), 60, "worker b ready", [b], log_b)
        for _ in range(2 * per_window - first):  # the rest of the second window
            traffic.send("m", BATCH)
        traffic.flush()
        wait_for(lambda: windowed(settings) == 2 * window, 90, "both windows written", [b], log_b)
        stop(b)
        text_b = log_b.read_text(errors="replace")
        assert "open window #1 restored from" in text_b, tail(log_b)
        assert "opened with another reference than the current one" in text_b, tail(log_b)
        errors_b = [ln for ln in text_b.splitlines() if " ERROR " in ln or "[ERROR]" in ln]
        assert not errors_b, errors_b
        problems = compare_points(
            stored_points(settings), fault_free_points(settings, mon, consume_all, 2 * per_window)
        )
        assert not problems, "\n".join(problems)
    finally:
        tear_down(settings, traffic, a, b)


# -- event-time windows -----------------------------------------------------------------------------------
T_SIZE = 500.0  # event seconds per window: the traffic carries 100 events per event second (helpers.batch_doc),
T_GRACE = 100.0  # so 50,000 events (20 s of traffic) per window, and the grace keeps the one before open 4 s more
T_MESSAGES = 700  # 70 s of traffic: three windows and more


# how the event-time windows become summaries: from their start, or (the default rule) once they hold 5,000 rows
SUMMARISED = {"from-start": {"summary_min_seconds": 60}, "past-5000-rows": {"summary_min_events": 5000}}


def time_monitors(tmp_path: Path, summarised: str = "from-start") -> Path:
    """The model of :func:`monitors` on 500-s event-time windows with a 100-s grace, kept as summaries
    (``summarised``: a key of :data:`SUMMARISED`)."""
    path = monitors(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["models"][0]["window"] = {
        "size_seconds": T_SIZE,
        "grace_seconds": T_GRACE,
        **SUMMARISED[summarised],
        "idle_close_seconds": 600,  # only the watermark closes windows (as in the fault-free run)
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def first_message_of_window_open_at(messages: int) -> int:
    """The message holding the first event of the oldest event-time window open after ``messages`` messages
    (what a restart re-read from before the open windows were checkpointed)."""
    import math

    from tests.reliability.helpers import T0

    watermark = T0 + (messages * BATCH - 1) * 0.01 - T_GRACE
    start = math.floor(watermark / T_SIZE) * T_SIZE
    return max(0, math.ceil((start - T0) / 0.01)) // BATCH


@pytest.mark.parametrize("summarised", list(SUMMARISED))
def test_sigkill_mid_event_time_window_resumes_every_open_window_from_the_changelog(
    settings, settings_env, tmp_path, consume_all, summarised
):
    """Event-time windows kept as summaries (from their start, or rows until 5,000 then a summary): worker A is SIGKILLed in the middle of a window; B (its own state
    folder) restores every open window with the watermark and closed-until state from the window changelog. The
    re-read is at most ~10 s of traffic (before: from the oldest open window's first event, up to its 20 s plus
    the 4-s grace), and every window and drift point equals a fault-free run's."""
    mon = time_monitors(tmp_path, summarised)
    traffic = Traffic(settings, seed=17)
    producer, sent, errors = paced_sender(traffic, T_MESSAGES)

    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    env_b = {**settings_env, "DRIFTWATCH_STATE_DIR": str(tmp_path / "state-b")}
    a = start_worker(settings_env, mon, log_a)
    b = None
    try:
        wait_for(lambda: "Worker ready" in log_a.read_text(errors="replace"), 60, "worker a ready", [a], log_a)
        producer.start()
        wait_for(lambda: windowed(settings) > 0, 90, "the first window", [a], log_a)
        seen = traffic.messages
        wait_for(lambda: traffic.messages >= seen + 120, 60, "12 s more traffic", [a], log_a)
        at_kill = traffic.messages
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        time.sleep(1.0)
        committed = committed_offsets(settings)
        assert len(committed) == 1, committed
        (offset,) = committed.values()
        reread, opened = at_kill - offset, first_message_of_window_open_at(at_kill)
        print(
            f"\nSIGKILL after {at_kill} messages; committed offset {offset}: {reread} messages "
            f"({reread * BATCH} events, {reread / RATE:.1f} s of traffic) to re-read; the oldest open window began "
            f"at message {opened} ({(at_kill - opened) / RATE:.1f} s of traffic re-read without its checkpoint)"
        )
        assert offset > opened, "the open windows' messages were not acked before they closed"
        assert reread / RATE <= 10.0, f"re-reads {reread / RATE:.1f} s of traffic"

        b = start_worker(env_b, mon, log_b)
        wait_for(lambda: sent.is_set(), 120, "the traffic", [b], log_b)
        assert not errors, errors
        want = fault_free_points(settings, mon, consume_all, T_MESSAGES)
        n_want = sum(v[0] for k, v in want.items() if k[0] == "w")
        assert len([k for k in want if k[0] == "w"]) >= 3 and {k for k in want if k[0] == "d"}
        wait_for(lambda: windowed(settings) >= n_want, 90, "every closed window written", [b], log_b)
        text_b = log_b.read_text(errors="replace")
        assert "open windows #" in text_b and "restored from" in text_b, tail(log_b)
        problems = compare_points(stored_points(settings), want)
        assert not problems, "\n".join(problems)
        stop(b)
        errors_b = [ln for ln in log_b.read_text(errors="replace").splitlines() if " ERROR " in ln]
        assert not errors_b, errors_b
    finally:
        tear_down(settings, traffic, a, b)
