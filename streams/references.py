"""Persisted references: a ``first_n`` reference survives restarts and partition moves.

When a model version's first N events have built its reference, the worker
stores it on a Kafka topic (``<topic_inferences>.references``, one partition,
``cleanup.policy=compact``): key ``"model/version"``, value
:meth:`detectors.reference.Reference.to_bytes`, headers with where the reference
ended in the inference stream (topic, partition, offset, row) and how many rows it
has. A restarted worker — or the worker that takes the partition over — loads it
instead of building a different one from whatever it replays.

Reading "to the end" of a topic without trusting end offsets (tansu reports
them wrong, see design.md): :meth:`ReferenceStore.load` first produces a small
*marker* record to the topic and gets its offset back from the broker's produce
acknowledgement; then it reads the partition from the beginning until it has
passed that offset. Everything stored before the marker was written is
therefore read, on any broker, whatever its ListOffsets answers. Markers are a
few bytes each (one per load; compaction keeps one, brokers without compaction
keep them all: a few KB per day).

The topic is compacted, so a key's last value wins; ``reset`` (tombstone)
forgets a reference (used by ``driftwatch reference reset``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from streams.settings import Settings
from streams.security import aiokafka_options

log = logging.getLogger(__name__)

MARKER_PREFIX = "__marker__/"
MAX_REFERENCE_BYTES = 16 * 1024 * 1024
H_TOPIC = "dw-topic"
H_PARTITION = "dw-partition"
H_END_OFFSET = "dw-end-offset"
H_END_ROW = "dw-end-row"
H_ROWS = "dw-rows"
H_CREATED = "dw-created"


class ReferenceStoreError(RuntimeError):
    """The reference topic could not be read or written (the message says why)."""


def references_topic(settings: Settings) -> str:
    """The topic the references live on (derived from the inference topic's name)."""
    return f"{settings.topic_inferences}.references"


def store_key(model_id: str, version: str) -> bytes:
    return f"{model_id}/{version}".encode()


@dataclass(frozen=True, slots=True)
class StoredReference:
    """A reference as stored: its bytes and where in the inference stream it ended."""

    model_id: str
    version: str
    blob: bytes
    topic: str
    partition: int
    end_pos: tuple[int, int]
    rows: int
    created: float

    def reference(self):
        from detectors.reference import Reference

        return Reference.from_bytes(self.blob)


def ensure_references_topic(settings: Settings) -> str:
    """Create the references topic (1 partition, compacted, 16 MB messages) if missing."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from streams.kafka_admin import admin_client

    name = references_topic(settings)
    with admin_client(settings) as admin:
        if name in set(admin.list_topics()):
            return name
        topic = NewTopic(name, 1, 1, topic_configs={
            "cleanup.policy": "compact", "max.message.bytes": str(MAX_REFERENCE_BYTES)})
        try:
            admin.create_topics([topic])
        except TopicAlreadyExistsError:
            pass
    return name


def _headers(headers) -> dict[str, str]:
    return {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in (headers or [])}


class ReferenceStore:
    """Load and save references on the references topic (see module docstring)."""

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self.settings = settings
        self.topic = references_topic(settings)
        self.timeout = timeout
        self._producer = None
        self._lock = asyncio.Lock()

    async def _get_producer(self):
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            p = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                acks="all",
                linger_ms=0,
                max_request_size=MAX_REFERENCE_BYTES,
                compression_type="gzip",
                client_id="driftwatch-references",
                **aiokafka_options(self.settings),
            )
            await p.start()
            self._producer = p
        return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def save(self, stored: StoredReference) -> None:
        """Store a reference; returns once the broker has acknowledged it."""
        producer = await self._get_producer()
        headers = [
            (H_TOPIC, stored.topic.encode()),
            (H_PARTITION, str(stored.partition).encode()),
            (H_END_OFFSET, str(stored.end_pos[0]).encode()),
            (H_END_ROW, str(stored.end_pos[1]).encode()),
            (H_ROWS, str(stored.rows).encode()),
            (H_CREATED, repr(stored.created).encode()),
        ]
        try:
            fut = await producer.send(self.topic, key=store_key(stored.model_id, stored.version), value=stored.blob,
                                      partition=0, headers=headers)
            await asyncio.wait_for(fut, self.timeout)
        except Exception as e:
            raise ReferenceStoreError(
                f"cannot store the reference of {stored.model_id}/{stored.version} "
                f"({len(stored.blob)} bytes) on {self.topic}: {type(e).__name__}: {e}") from e

    async def reset(self, model_id: str, version: str) -> None:
        """Forget a stored reference (tombstone)."""
        producer = await self._get_producer()
        fut = await producer.send(self.topic, key=store_key(model_id, version), value=None, partition=0)
        await asyncio.wait_for(fut, self.timeout)

    async def load(self) -> dict[tuple[str, str], StoredReference]:
        """Every stored reference, read up to a marker written just before (see module docstring)."""
        async with self._lock:
            producer = await self._get_producer()
            marker = (MARKER_PREFIX + uuid.uuid4().hex).encode()
            try:
                fut = await producer.send(self.topic, key=marker, value=b"", partition=0)
                meta = await asyncio.wait_for(fut, self.timeout)
            except Exception as e:
                raise ReferenceStoreError(f"cannot write a marker to {self.topic}: {type(e).__name__}: {e}") from e
            return await self._read_until(meta.offset)

    async def _read_until(self, marker_offset: int) -> dict[tuple[str, str], StoredReference]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=MAX_REFERENCE_BYTES + 1024,
            client_id="driftwatch-references",
            **aiokafka_options(self.settings),
        )
        await consumer.start()
        out: dict[tuple[str, str], StoredReference] = {}
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            deadline = time.monotonic() + self.timeout
            position = 0
            while position <= marker_offset:
                if time.monotonic() > deadline:
                    raise ReferenceStoreError(
                        f"reading {self.topic} timed out at offset {position} before the marker at {marker_offset}")
                batch = await consumer.getmany(tp, timeout_ms=500)
                for rec in batch.get(tp, []):
                    position = rec.offset + 1
                    key = (rec.key or b"").decode(errors="replace")
                    if key.startswith(MARKER_PREFIX) or "/" not in key:
                        continue
                    model_id, version = key.rsplit("/", 1)
                    if rec.value is None:
                        out.pop((model_id, version), None)
                        continue
                    h = _headers(rec.headers)
                    try:
                        out[(model_id, version)] = StoredReference(
                            model_id, version, rec.value, h.get(H_TOPIC, ""), int(h.get(H_PARTITION, -1)),
                            (int(h.get(H_END_OFFSET, -1)), int(h.get(H_END_ROW, -1))),
                            int(h.get(H_ROWS, 0)), float(h.get(H_CREATED, 0.0)))
                    except ValueError:
                        log.warning("ignoring a malformed reference record for %s at offset %d", key, rec.offset)
                if not batch:
                    # aiokafka may report the position past records it skipped (control batches)
                    position = max(position, await consumer.position(tp))
        finally:
            await consumer.stop()
        return out
