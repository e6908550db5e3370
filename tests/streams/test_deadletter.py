"""streams.deadletter: headers, row ranges, idempotent DEADLETTER points."""

from __future__ import annotations

import asyncio

from detectors.records import DEADLETTER
from streams.deadletter import DeadLetterPublisher, compact_rows, deadletter_record, headers_for, parse_rows
from streams.decode import DeadLetter, RawMessage


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
