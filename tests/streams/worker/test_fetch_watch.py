"""streams.worker.fetch_watch: the decision of the fetch watchdog (pure), and that a real worker runs it.

Faust's "no recent fetch" check compares ``time.monotonic()`` with aiokafka's wall-clock fetch time and
cannot fire (the module docstring); the first test shows that arithmetic with the installed Faust's own
code, the rest check the replacement's rule.
"""

from __future__ import annotations

import time

import pytest

from streams.worker.fetch_watch import FetchWatch, PartitionView

N = 30.0


def view(position=10, end=50, last_fetch=1000.0, held=False, partition=0, topic="t") -> PartitionView:
    return PartitionView(topic, partition, position=position, end=end, last_fetch=last_fetch, held=held)


def test_fausts_own_no_recent_fetch_check_cannot_fire():
    """faust's _verify_aiokafka_event_path: now = monotonic(), poll_at = aiokafka's timestamp / 1000, where
    aiokafka sets timestamp = int(1000 * time.time()) (epoch ms): the difference is hugely negative."""
    import inspect

    from aiokafka.consumer import fetcher
    from faust.transport.drivers import aiokafka as driver

    assert "now_ms = int(1000 * time.time())" in inspect.getsource(fetcher)
    src = inspect.getsource(driver.AIOKafkaConsumerThread._verify_aiokafka_event_path)
    assert "poll_at = aiotp_state.timestamp / 1000" in src and "secs_since_request = now - poll_at" in src
    now, poll_at = time.monotonic(), int(1000 * (time.time() - 3600)) / 1000  # last fetch an hour ago
    assert now - poll_at < 0  # never >= any timeout


def test_a_partition_with_a_backlog_and_no_fetch_for_n_seconds_is_stalled():
    w = FetchWatch(N)
    assert not w.stalled(1000.0 + N - 0.1, view())
    assert w.stalled(1000.0 + N, view())
    assert not w.stalled(1000.0 + 600, view(position=50, end=50))  # caught up: nothing to fetch
    assert not w.stalled(1000.0 + 600, view(held=True))  # paused or buffered on purpose (backpressure)
    assert not w.stalled(1000.0 + 600, view(end=None, last_fetch=None))  # never fetched: Faust's own check
    assert not w.stalled(1000.0 + 600, view(position=None))  # position unknown: no backlog known


def test_each_stall_is_reported_once_per_episode():
    w = FetchWatch(N)
    a, b = view(partition=0), view(partition=1, last_fetch=1010.0)
    stalls, ended = w.check(1035.0, [a, b])
    assert [(s.view.key, s.seconds) for s in stalls] == [(("t", 0), 35.0)] and ended == []
    stalls, ended = w.check(1045.0, [a, b])  # a still stalled: not again; b now stalled
    assert [s.view.key for s in stalls] == [("t", 1)] and ended == []
    assert w.stalled_now == [("t", 0), ("t", 1)]
    # a is held back for a while (still no fetch): the same episode, no new report
    assert w.check(1050.0, [view(partition=0, held=True), b]) == ([], [])
    assert w.check(1060.0, [a, b]) == ([], [])
    # a is fetched again: its episode ends; a later stall of a is a new episode, reported again
    stalls, ended = w.check(1061.0, [view(partition=0, last_fetch=1060.5), b])
    assert stalls == [] and ended == [("t", 0)]
    stalls, _ = w.check(1100.0, [view(partition=0, last_fetch=1060.5), b])
    assert [(s.view.key, s.seconds) for s in stalls] == [(("t", 0), 39.5)]


def test_an_episode_ends_when_the_backlog_is_gone_or_the_partition_is_revoked():
    w = FetchWatch(N)
    w.check(1040.0, [view(partition=0), view(partition=1)])
    stalls, ended = w.check(1041.0, [view(partition=0, position=50)])  # 0 caught up, 1 revoked
    assert stalls == [] and sorted(ended) == [("t", 0), ("t", 1)]
    assert w.stalled_now == []


def test_the_threshold_must_be_positive():
    with pytest.raises(ValueError, match="stall_seconds"):
        FetchWatch(0)


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_worker_watches_its_assigned_partitions_and_finds_no_stall(settings, settings_env, tmp_path):
    """The watch reads the real consumer's state (aiokafka/Faust internals): every assigned partition of both
    topics is watched, and a healthy worker under traffic reports no stall even with a 2-s threshold."""
    from tests.reliability.helpers import Traffic, monitors_file, tail, wait_for, windowed, worker

    log = tmp_path / "worker.log"
    env = {**settings_env, "DRIFTWATCH_WORKER_FETCH_STALL_SECONDS": "2"}
    with worker(env, monitors_file(tmp_path, ["m", "k"], window=500), log) as proc:
        traffic = Traffic(settings, seed=9)
        for _ in range(6):
            traffic.send("m", 500)
            traffic.send("k", 500)
        traffic.flush()
        traffic.close()
        wait_for(lambda: True if windowed(settings) >= 4000 else windowed(settings), 120, "windows", [proc], log)
        time.sleep(6)  # three looks of the watch after the backlog was read
        text = log.read_text(errors="replace")
    n = 2 * settings.topic_partitions  # inferences and labels
    assert f"fetch watch: {n} assigned partition(s) watched" in text, tail(log)
    assert "had no fetch for" not in text, tail(log)
