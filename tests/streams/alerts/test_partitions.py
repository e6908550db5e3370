"""streams.alerts.partitions: alert state per input partition follows the partition between workers.

In-process: two :class:`~streams.alerts.service.Alerting` services with state folders of their own
(two hosts) share a changelog kept in memory (the records the Kafka store writes, read back with the
same generation fold: :class:`MemoryChangelog`). The real worker, broker and webhook receiver are in
tests/integration/test_alert_handover.py.
"""

from __future__ import annotations

import asyncio

import pytest

from streams.alerts.partitions import AlertPartitions, VersionState, decode, encode
from tests.streams.alerts.helpers import make_alerting, window
from tests.streams.worker.changelogs import MemoryStore

KEY = "m/1/feature_drift{detector=ks,feature=age}"


class MemoryChangelog(MemoryStore):
    """The alert changelog's records in a list, in small chunks (several per checkpoint)."""

    def __init__(self) -> None:
        super().__init__(chunk_bytes=64)


def never(key, value, headers):  # the alerts topic's publisher: deliveries are not started here
    raise AssertionError("nothing is delivered in these tests")


def hosts(tmp_path, changelog):
    """Two services (state folders a/ and b/) checkpointing to the same changelog; every announcement is queued
    for the alerts topic in the service's own outbox."""
    return [
        make_alerting(
            tmp_path / name,
            [],
            partitions=AlertPartitions(changelog),
            store_path=tmp_path / name / "a.db",
            publish=never,
        )
        for name in "ab"
    ]


def announced(*services) -> list[tuple[str, str, str]]:
    """(status, event id, alert key) of every announcement queued in the services' outboxes, in queue order."""
    rows = [r for s in services for r in s.store.deliveries(limit=1000)]
    return [(r.event_status, r.event_id, r.alert_key) for r in sorted(rows, key=lambda r: r.created_ns)]


P_VALUES = [0.5, 0.001, 0.002, 0.3, 0.4, 0.001, 0.5]
"""p-values of feature ``age`` in windows 1..7 (the rule fires at the first p < 0.01): fires at 2, resolves at 4,
fires at 6, resolves at 7."""


def single_host(tmp_path) -> list[tuple[str, str, str]]:
    """The announcements of one service that evaluates every window (no move)."""
    (al, _) = hosts(tmp_path / "single", MemoryChangelog())

    async def run():
        await al.restore_partitions([0])
        for i, p in enumerate(P_VALUES, 1):
            al.on_window("m", "1", window(i, {"age": p}), partition=0)
            await al.sync(0)

    asyncio.run(run())
    got = announced(al)
    al.store.close()
    return got


def test_the_alert_state_moves_with_its_partition_and_announces_each_transition_once(tmp_path):
    want = single_host(tmp_path)
    assert [s for s, _, _ in want] == ["firing", "resolved", "firing", "resolved"]
    changelog = MemoryChangelog()
    a, b = hosts(tmp_path, changelog)
    owner = {1: a, 2: b, 3: a, 4: b, 5: b, 6: a, 7: b}  # the partition moves before most windows

    async def run():
        current = None
        for i, p in enumerate(P_VALUES, 1):
            if owner[i] is not current:
                if current is not None:
                    await current.revoke_partitions([0])
                    assert not current.owns(0)
                current = owner[i]
                await current.restore_partitions([0])
            current.on_window("m", "1", window(i, {"age": p}), partition=0)
            await current.sync(0)
        # a window the previous owner evaluated, read again by the new one: skipped
        await current.revoke_partitions([0])
        await a.restore_partitions([0])
        assert a.on_window("m", "1", window(7, {"age": 0.5}), partition=0) == []
        # the local copy for `driftwatch alerts list`: on the worker that owns the partition only
        assert b.store.states() == {} and a.store.states()[KEY].status == "resolved"

    asyncio.run(run())
    got = announced(a, b)
    for s in (a, b):
        s.store.close()
    assert got == want  # same announcements, same idempotency keys, each once across both hosts
    assert len({e for _, e, _ in got}) == len(got)


def test_an_announcing_window_is_in_kafka_before_its_results_a_quiet_one_at_the_next_flush(tmp_path):
    changelog = MemoryChangelog()
    a, b = hosts(tmp_path, changelog)

    async def run():
        await a.restore_partitions([0])
        a.on_window("m", "1", window(1, {"age": 0.001}), partition=0)  # fires (for_windows 1)
        await a.sync(0)
        assert changelog.puts == 1
        a.on_window("m", "1", window(2, {"age": 0.002}), partition=0)  # still firing: nothing to say
        await a.sync(0)
        assert changelog.puts == 1  # waits for the timer
        # a crash now (no revoke, no flush): the new owner has the firing state of window 1, so window 2
        # (read again, its results were not written) continues the episode: no second firing
        await b.restore_partitions([0])
        assert b.partitions.view(0, "m", "1").alerts[KEY].status == "firing"
        b.on_window("m", "1", window(2, {"age": 0.002}), partition=0)
        await b.sync(0)
        await b.flush()
        assert changelog.puts == 2
        assert (
            decode((await changelog.restore("p0")).blob)[("m", "1")].last_window_ns == window(2, {"age": 1})[0].time_ns
        )

    asyncio.run(run())
    assert [s for s, _, _ in announced(a, b)] == ["firing"]
    for s in (a, b):
        s.store.close()


def test_a_checkpoint_that_cannot_be_written_is_retried_and_holds_the_window_back(tmp_path):
    changelog = MemoryChangelog()
    (a, _) = hosts(tmp_path, changelog)

    async def run():
        await a.restore_partitions([0])
        a.on_window("m", "1", window(1, {"age": 0.001}), partition=0)
        changelog.fail = True
        assert await a.partitions.flush() == 0  # logged, retried at the next tick
        sync = asyncio.ensure_future(a.sync(0))  # the window's results wait until its alert state is in Kafka
        await asyncio.sleep(0.7)
        assert not sync.done() and changelog.puts == 0
        changelog.fail = False
        await asyncio.wait_for(sync, 5)
        assert changelog.puts == 1 and await a.partitions.flush() == 0  # written: nothing left to flush
        a.store.close()

    asyncio.run(run())
    got = asyncio.run(changelog.restore("p0"))
    assert decode(got.blob)[("m", "1")].alerts[KEY].status == "firing"


def test_encode_rejects_what_is_not_an_alert_checkpoint():
    assert decode(encode({})) == {}
    with pytest.raises(ValueError, match="not an alert-state checkpoint"):
        decode(b"garbage")
    assert VersionState().last_window_ns == 0


def test_partitions_that_come_or_go_while_the_worker_stops_are_left_to_the_next_owner(tmp_path):
    """A batch's restore or a rebalance that completes after ``stop`` (SIGTERM) neither crashes the worker on the
    closed store nor makes it evaluate windows (a worker crashed this way in the two-host test)."""
    changelog = MemoryChangelog()
    a, b = hosts(tmp_path, changelog)

    async def run():
        await b.restore_partitions([1])  # partition 1 has a checkpoint (written by b)
        b.on_window("m", "1", window(1, {"age": 0.001}), partition=1)
        await b.sync(1)
        await a.restore_partitions([0])
        a.on_window("m", "1", window(1, {"age": 0.001}), partition=0)
        await a.stop()
        assert changelog.puts == 2  # a's last checkpoint
        await a.restore_partitions([1])
        await a.revoke_partitions([0])
        assert not a.owns(0) and not a.owns(1)

    asyncio.run(run())
    assert decode(asyncio.run(changelog.restore("p0")).blob)[("m", "1")].alerts[KEY].status == "firing"


def test_a_sharded_models_alert_state_has_a_slot_of_its_own_beside_the_input_partition_of_that_number(tmp_path):
    """The merge step evaluates a sharded model on a partials-topic partition: its alert state is keyed ``m<n>``,
    so input partition ``n`` (restored, revoked, checkpointed as ``p<n>``) never takes or drops it, and it follows
    the partials partition to the next owner."""
    from streams.alerts.partitions import merge_slot

    want = single_host(tmp_path)
    changelog = MemoryChangelog()
    a, b = hosts(tmp_path, changelog)
    slot = merge_slot(0)
    assert (AlertPartitions.key(slot), AlertPartitions.route(slot), AlertPartitions.name(slot)) == (
        "m0",
        0,
        "partials partition 0",
    )

    async def run():
        await a.restore_partitions([0, slot])
        for i, p in enumerate(P_VALUES[:3], 1):  # fires at window 2, on a
            a.on_window("m", "1", window(i, {"age": p}), partition=slot)
            await a.sync(slot)
        await a.revoke_partitions([0])  # input partition 0 leaves a: the merge slot stays
        assert a.owns(slot) and not a.owns(0)
        await a.revoke_partitions([slot])
        await b.restore_partitions([slot])  # b merges from now on: resolves what a fired
        for i, p in enumerate(P_VALUES[3:], 4):
            b.on_window("m", "1", window(i, {"age": p}), partition=slot)
            await b.sync(slot)
        await b.restore_partitions([0])
        assert b.partitions is not None and b.partitions.models(0) == []  # nothing of the model in p0

    asyncio.run(run())
    got = announced(a, b)
    for s in (a, b):
        s.store.close()
    assert got == want
    assert "m0" in changelog.keys and "p0" not in changelog.keys
    with pytest.raises(ValueError, match="out of range"):
        merge_slot(-1)
