"""streams.worker.deadletter: headers, row ranges, idempotent DEADLETTER points."""

from __future__ import annotations

import asyncio

import pytest

from detectors.records import DEADLETTER
from streams.worker.deadletter import DeadLetterPublisher, compact_rows, deadletter_record, headers_for, parse_rows
from streams.worker.decode import DeadLetter, RawMessage


def dl(rows=None, reason="schema", model="m", offset=1234, ts=1_700_000_000_123) -> DeadLetter:
    msg = RawMessage(b'{"orig": 1}', b"m", "t.inf", 3, offset, ts)
    return DeadLetter(msg, reason, "x" * 5000, rows, 1 if rows is None else len(rows), model, "1")


def test_row_ranges_round_trip():
    rows = [0, 1, 2, 5, 9, 10, 11, 40]
    assert compact_rows(rows) == "0-2,5,9-11,40"
    assert parse_rows(compact_rows(rows)) == rows
    assert parse_rows("all") is None
    long = compact_rows(range(0, 100_000, 2))
    assert len(long) <= 8002 and long.endswith(",…")


def test_headers_keep_the_source_and_cut_the_detail():
    h = dict(headers_for(dl(rows=(2, 3)), now_ms=42))
    assert h["dw-reason"] == b"schema" and h["dw-rows"] == b"2-3" and h["dw-events"] == b"2"
    assert h["dw-source-topic"] == b"t.inf" and h["dw-source-partition"] == b"3"
    assert h["dw-source-offset"] == b"1234" and h["dw-source-timestamp"] == b"1700000000123"
    assert h["dw-time"] == b"42" and h["dw-model"] == b"m" and h["dw-version"] == b"1"
    assert len(h["dw-detail"].decode()) == 1000
    assert dict(headers_for(dl()))["dw-rows"] == b"all"


def test_deadletter_points_are_idempotent_and_bounded():
    a, b = deadletter_record(dl(), {"m"}), deadletter_record(dl(), {"m"})
    assert a == b and a.measurement == DEADLETTER  # a replayed dead letter overwrites its own point
    assert a.time_ns // 1_000_000 == 1_700_000_000_123
    assert deadletter_record(dl(offset=1235), {"m"}).time_ns != a.time_ns
    assert a.tags == {"reason": "schema", "model": "m", "version": "1"}
    unknown = deadletter_record(dl(reason="unknown_model", model="attacker-chosen"), {"m"})
    assert unknown.tags == {"reason": "unknown_model"}  # no unbounded tag values


def test_publisher_sends_original_bytes_and_counts():
    sent = []

    async def send(key, value, headers):
        sent.append((key, value, headers))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result("ok")
        return fut

    async def main():
        pub = DeadLetterPublisher(send)
        fut = await pub.publish(dl(rows=(1, 2, 3)))
        return pub, await fut

    pub, result = asyncio.run(main())
    assert result == "ok" and sent[0][0] == b"m" and sent[0][1] == b'{"orig": 1}'
    assert pub.counts == {"schema": 3} and pub.messages == 1


def test_deadletter_points_are_aggregated_per_partition_reason_and_model():
    from streams.worker.deadletter import deadletter_records

    dls = [
        dl(offset=10),
        dl(offset=11, rows=(1, 2)),
        dl(offset=12, reason="invalid_json", model=None),
        dl(offset=13, reason="unknown_model", model="attacker-1"),
        dl(offset=14, reason="unknown_model", model="attacker-2"),
    ]
    recs = {
        (r.tags.get("reason"), r.tags.get("model"), r.fields.get("model_id")) for r in deadletter_records(dls, {"m"})
    }
    # attacker ids never become tags; they are named in a field (no new series)
    assert recs == {
        ("schema", "m", "m"),
        ("invalid_json", None, None),
        ("unknown_model", None, "attacker-1"),
        ("unknown_model", None, "attacker-2"),
    }
    recs = {(r.tags.get("reason"), r.tags.get("model")): r for r in deadletter_records(dls[:3], {"m"})}
    schema = recs[("schema", "m")]
    assert (
        schema.fields["count"],
        schema.fields["messages"],
        schema.fields["offset"],
        schema.fields["last_offset"],
    ) == (3, 2, 10, 11)
    assert schema.time_ns == deadletter_record(dls[0], {"m"}).time_ns  # keyed by its first message
    one = deadletter_records([dls[0]], {"m"})[0]
    assert one == deadletter_record(dls[0], {"m"})  # a group of one is the per-message point


def test_publish_batch_sends_in_order_with_either_sender():
    batches, singles = [], []

    async def send_batch(records):
        batches.append(list(records))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(len(records))
        return fut

    async def send(key, value, headers):
        singles.append(value)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    dls = [dl(offset=o) for o in range(5)]
    for d, o in zip(dls, range(5)):
        d.message.value = b"v%d" % o

    async def main():
        a = DeadLetterPublisher(send_batch=send_batch)
        await (await a.publish_batch(dls))
        b = DeadLetterPublisher(send)
        await (await b.publish_batch(dls))
        return a, b

    a, b = asyncio.run(main())
    assert len(batches) == 1 and [v for _k, v, _h in batches[0]] == [b"v0", b"v1", b"v2", b"v3", b"v4"]
    assert singles == [b"v0", b"v1", b"v2", b"v3", b"v4"]
    assert a.messages == b.messages == 5 and a.counts == b.counts == {"schema": 5}


def test_publish_batch_retries_a_failing_send():
    attempts = []

    async def send_batch(records):
        attempts.append(len(records))
        if len(attempts) < 3:
            raise ConnectionError("broker away")
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def main():
        pub = DeadLetterPublisher(send_batch=send_batch)
        await (await pub.publish_batch([dl()], backoff=0.01))

    asyncio.run(main())
    assert attempts == [1, 1, 1]


@pytest.mark.integration
def test_kafka_batch_sender_keeps_order_key_partitioning_and_bytes(settings, consume_all):
    """The real producer: records by key on the partition any Kafka client would pick, in order, bytes intact."""
    from aiokafka.partitioner import DefaultPartitioner

    from streams.worker.deadletter import KafkaBatchSender

    keys = [b"m", b"other", b"m", None, b"k2"] * 40
    records = [(k, b"value-%d" % i, [("dw-n", b"%d" % i)]) for i, k in enumerate(keys)]

    async def main():
        sender = KafkaBatchSender(settings)
        try:
            await (await sender(records[:100]))
            await (await sender(records[100:]))
        finally:
            await sender.stop()

    asyncio.run(main())
    got = consume_all(settings, settings.topic_deadletter, expected=len(records), timeout=30)
    assert len(got) == len(records)
    parts = list(range(settings.topic_partitions))
    part = DefaultPartitioner()
    by_part: dict[int, list[int]] = {}
    for r in got:
        i = int(dict(r.headers)["dw-n"])
        assert r.value == b"value-%d" % i and r.key == keys[i]
        if keys[i] is not None:
            assert r.partition == part(keys[i], parts, parts)
        by_part.setdefault(r.partition, []).append((r.offset, i))
    for seq in by_part.values():  # per partition, offsets follow the sending order
        assert [i for _o, i in sorted(seq)] == sorted(i for _o, i in seq)


def test_a_flood_of_unknown_model_ids_is_named_up_to_a_bound():
    from streams.worker.deadletter import MAX_NAMED_UNKNOWN, deadletter_records

    dls = [dl(offset=i, reason="unknown_model", model=f"rnd-{i}") for i in range(200)]
    recs = deadletter_records(dls, {"m"})
    assert len(recs) == MAX_NAMED_UNKNOWN + 1 and all("model" not in r.tags for r in recs)
    assert sum(r.fields["count"] for r in recs) == 200
    assert sum("model_id" not in r.fields for r in recs) == 1  # the rest share one unnamed point


def test_the_log_names_model_and_reason(caplog):
    async def send(key, value, headers):
        fut = asyncio.get_running_loop().create_future()
        fut.set_result("ok")
        return fut

    async def main():
        pub = DeadLetterPublisher(send)
        for _ in range(2):
            await pub.publish(dl(reason="unknown_model", model="iris"))
        return pub

    with caplog.at_level("WARNING", logger="streams.worker.deadletter"):
        pub = asyncio.run(main())
    assert pub.summary() == "unknown_model 2 (iris 2)"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "iris" in warned[0] and "unknown_model" in warned[0]
    assert "deadletter replay" in warned[0]
