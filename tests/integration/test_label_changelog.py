"""The label-join changelog on the real broker: chunked generations, atomic restores, reading to the end.

:class:`streams.worker.label_changelog.LabelChangelog` against the session's tansu broker (whose end
offsets are wrong: the reader must not trust them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from streams.worker.label_changelog import (
    TAIL_RECORDS,
    LabelChangelog,
    changelog_topic,
    chunk_records,
    ensure_changelog_topic,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def changelog(settings):
    ensure_changelog_topic(settings)
    yield settings
    from streams.broker.admin import delete_topics

    with contextlib.suppress(Exception):
        delete_topics(settings, [changelog_topic(settings)])


def test_a_large_checkpoint_is_chunked_and_the_newest_complete_generation_is_read(changelog):
    s = changelog
    big = os.urandom(1_300_000)  # three chunks of at most 512 KiB, each below Kafka's 1 MB message limit

    async def run():
        store = LabelChangelog(s)
        try:
            assert await store.load(0) is None  # never checkpointed
            await store.save(0, 1, b"first")
            await store.save(0, 2, big)
            await store.save(1, 1, b"another partition")
            got = await store.load(0)
            assert (got.gen, got.blob) == (2, big)
            # a crash while writing generation 3: only its first chunk reached the broker
            producer = await store.producer()
            k, v, h = chunk_records(0, 3, os.urandom(1_300_000))[0]
            await (await producer.send(store.topic, key=k, value=v, partition=0, headers=h))
            got = await store.load(0)
            assert (got.gen, got.blob) == (2, big)  # the incomplete generation is ignored
            assert (await store.load(1)).blob == b"another partition"
            await store.save(0, 3, b"third")
            assert (await store.load(0)).blob == b"third"
        finally:
            await store.close()

    asyncio.run(run())


def test_the_reader_goes_back_as_far_as_the_newest_complete_generation(changelog):
    """Many records of other input partitions after a partition's last checkpoint (they share a changelog
    partition): the tail read widens until it has it; and a checkpoint written by another client just
    before a load is always read (the marker, not the broker's end offset, says where the end is)."""
    s = changelog
    n = s.topic_partitions

    async def run():
        store, other = LabelChangelog(s), LabelChangelog(s)
        try:
            await store.save(0, 5, b"old but newest")
            producer = await other.producer()
            futs = [
                await producer.send(other.topic, key=k, value=v, partition=0, headers=h)
                for g in range(TAIL_RECORDS * 2)
                for k, v, h in chunk_records(n, g + 1, b"x")
            ]
            await asyncio.gather(*futs)
            got = await store.load(0)
            assert (got.gen, got.blob) == (5, b"old but newest")
            for g in range(6, 16):  # a checkpoint, then at once a load by another client
                await other.save(0, g, f"gen {g}".encode())
                assert (await store.load(0)).blob == f"gen {g}".encode()
        finally:
            await store.close()
            await other.close()

    asyncio.run(run())
