"""The floor: a plain aiokafka consumer that decodes the messages and does nothing else.

Run as its own process (``python -m benchmarks.floor ...``) so its CPU can be
read apart from the benchmark's: it assigns every partition of the topic (no
consumer group, so no join delay), reads from the beginning with ``getmany``,
``orjson.loads`` every value and counts the events of each batch
(``len(doc["event_time"])``). With ``--columnar`` it also turns every feature
column into a numpy array (what a worker must at least do). With ``--wire arrow``
the messages are the SDK's Arrow IPC batches: it reads each with
``pyarrow.ipc.open_stream(value).read_all()`` and counts its rows (``--columnar``:
every feature column ``to_numpy``), so the worker's ratio to the floor compares the
same format with the same format. It stops when
``--events`` events have been counted and prints one JSON line:
events, messages, seconds (first message fetched → last decoded), events_per_s.

This is the ceiling for any consumer of these messages in Python on this
machine: the worker is asked to reach at least half of it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson


def _arrow_reader(columnar: bool):
    """``value -> events`` for Arrow IPC batches (the floor's counterpart of ``orjson.loads``)."""
    import pyarrow as pa

    open_stream = pa.ipc.open_stream

    def read(value: bytes) -> int:
        table = open_stream(value).read_all()
        if columnar:
            feats = table.column("features").combine_chunks()
            for col in feats.flatten():
                col.to_numpy(zero_copy_only=False)
        return table.num_rows

    return read


async def consume(bootstrap: str, topic: str, events: int, columnar: bool, timeout: float, wire: str = "json") -> dict:
    import numpy as np
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
        client_id="driftwatch-bench-floor",
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        parts = None
        while not parts:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                if time.monotonic() > deadline:
                    raise SystemExit(f"floor: topic {topic!r} not found")
                await consumer.force_metadata_update()
                await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        n_ev = n_msg = 0
        t_first = None
        cpu_first = 0.0
        loads = orjson.loads
        asarray = np.asarray
        arrow = _arrow_reader(columnar) if wire == "arrow" else None
        while n_ev < events:
            if time.monotonic() > deadline:
                raise SystemExit(f"floor: only {n_ev} of {events} events within {timeout:.0f} s")
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if t_first is None and batches:
                t_first = time.perf_counter()
                cpu_first = time.process_time()
            for records in batches.values():
                if arrow is not None:
                    for rec in records:
                        n_ev += arrow(rec.value)
                    n_msg += len(records)
                    continue
                for rec in records:
                    doc = loads(rec.value)
                    n_ev += len(doc["event_time"])
                    n_msg += 1
                    if columnar:
                        for col in doc["features"].values():
                            asarray(col)
        t_last = time.perf_counter()
        cpu_last = time.process_time()
    finally:
        await consumer.stop()
    seconds = t_last - (t_first or t_last)
    return {
        "events": n_ev,
        "messages": n_msg,
        "seconds": round(seconds, 4),
        "events_per_s": round(n_ev / seconds, 1) if seconds > 0 else None,
        "columnar": columnar,
        "wire": wire,
        "cpu_percent_self": round(100 * (cpu_last - cpu_first) / seconds, 1) if seconds > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--events", type=int, required=True, help="stop after this many events")
    p.add_argument("--columnar", action="store_true", help="also build numpy columns")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--wire", choices=("json", "arrow"), default="json", help="the messages' wire format")
    args = p.parse_args(argv)
    result = asyncio.run(consume(args.bootstrap, args.topic, args.events, args.columnar, args.timeout, args.wire))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
