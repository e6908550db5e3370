"""A chunked compacted-topic store: blobs kept on a Kafka topic, in chunks, read back to a marker.

Worker state that must follow a partition to any host (the label join, alert state) and the
stored references live on compacted Kafka topics. This module holds what they share:

* :class:`TopicClient` — one lazily started producer (``acks=all``, records below Kafka's
  default 1 MB message limit), a *marker* write, and reading a topic partition until past
  that marker. **Reading to the end** never trusts the broker's end offsets (tansu reports
  them wrong, design.md): the reader first writes a small marker record and gets its offset
  from the broker's acknowledgement, then reads until it has passed it, so everything
  acknowledged before — by any client, e.g. the previous owner's last checkpoint — is read.
* :func:`split_chunks` / :func:`join_chunks` — a blob cut into chunks of at most
  ``chunk_bytes`` (512 KiB) and put together again, checked against its size and SHA-256
  (a missing or corrupt chunk is refused, never half-used).
* :class:`ChangelogStore` — ``put(key, gen, blob)`` / ``restore(key)``: one *generation* of
  a key's state per checkpoint, read back as the newest complete one.

**Records of a generation.** Generation ``g`` of key ``k`` is its blob cut into chunks, each
a record with key ``<k>/<g % 2>/<i>`` and headers ``dw-gen``, ``dw-index``, ``dw-chunks``,
``dw-size``, ``dw-sha256``. A reader uses the newest generation (the one whose last chunk
came last in the log) whose chunks are all there and match size and SHA-256; an
incomplete one (a crash in the middle of a checkpoint) is ignored and the one before it is
used. Keys alternate between two slots, so writing generation ``g+1`` overwrites only the
chunks of ``g-1``: compaction never removes the complete generation ``g`` while ``g+1`` is
being written. Chunks of an older, longer generation that outlive it under a slot's
higher indices are ignored (another generation).

**Routing.** A store's topic may have several partitions: ``put``/``restore`` take a
``route`` (e.g. the input partition whose state the key holds) and use topic partition
``route % partitions``. A restore reads only the tail of that partition: from
``TAIL_RECORDS`` records before its marker, going back further only until it has a
complete generation of the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from detectors.errors import StorageError
from streams.settings import Settings

log = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024
"""Largest chunk record (Kafka's default message limit is 1 MB)."""
PRODUCER_MAX_REQUEST = 1_048_576  # Kafka's default max.request.size: chunks keep every record below it
MARKER_PREFIX = "__marker__/"
TAIL_RECORDS = 256
"""Records before the marker read first when looking for the newest complete generation."""

H_GEN = "dw-gen"
H_INDEX = "dw-index"
H_CHUNKS = "dw-chunks"
H_SIZE = "dw-size"
H_SHA256 = "dw-sha256"

Headers = list[tuple[str, bytes]]


class ChangelogError(StorageError):
    """A changelog topic could not be read or written (the message says which and why)."""


def ensure_compacted_topic(settings: Settings, name: str, partitions: int) -> str:
    """Create the topic (``partitions`` partitions, ``cleanup.policy=compact``) if missing; returns ``name``."""
    return ensure_topic(settings, name, partitions, {"cleanup.policy": "compact"})


def ensure_topic(settings: Settings, name: str, partitions: int, configs: dict[str, str]) -> str:
    """Create the topic (``partitions`` partitions, topic ``configs``) if missing; returns ``name``."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from streams.broker.admin import admin_client

    with admin_client(settings) as admin:
        if name in set(admin.list_topics()):
            return name
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    return name


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def split_chunks(blob: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """``blob`` in pieces of at most ``chunk_bytes`` (at least one, also for an empty blob).

    >>> [len(c) for c in split_chunks(b"x" * 5, 2)], split_chunks(b"", 2)
    ([2, 2, 1], [b''])
    """
    n = max(1, math.ceil(len(blob) / chunk_bytes))
    return [blob[i * chunk_bytes : (i + 1) * chunk_bytes] for i in range(n)]


def join_chunks(parts: Iterable[bytes | None], size: int, sha256: str) -> bytes:
    """The blob of ``parts`` (in order), checked against its ``size`` and ``sha256``; ValueError if a part is
    missing (None) or they do not match.

    >>> join_chunks([b"ab", b"c"], 3, sha256_hex(b"abc"))
    b'abc'
    """
    got = list(parts)
    missing = [i for i, p in enumerate(got) if p is None]
    if missing:
        raise ValueError(f"chunk {missing[0]} of {len(got)} is missing (a save was interrupted, or the topic lost it)")
    blob = b"".join(p for p in got if p is not None)
    if len(blob) != size or sha256_hex(blob) != sha256:
        raise ValueError(f"chunks do not match their size or SHA-256 (size {len(blob)} vs {size})")
    return blob


@dataclass(frozen=True, slots=True)
class Generation:
    """One complete checkpoint of a key as read back: its blob and where it ended."""

    key: str
    gen: int
    blob: bytes
    offset: int  # offset of its last chunk in the topic partition


def chunk_records(
    key: str, gen: int, blob: bytes, chunk_bytes: int = CHUNK_BYTES
) -> list[tuple[bytes, bytes, Headers]]:
    """The records ``(key, value, headers)`` of one generation of ``key`` (see module docstring).

    >>> [(k, len(v)) for k, v, _ in chunk_records("p3", 7, b"x" * 5, chunk_bytes=2)]
    [(b'p3/1/0', 2), (b'p3/1/1', 2), (b'p3/1/2', 1)]
    """
    chunks = split_chunks(blob, chunk_bytes)
    common: Headers = [
        (H_GEN, str(gen).encode()),
        (H_CHUNKS, str(len(chunks)).encode()),
        (H_SIZE, str(len(blob)).encode()),
        (H_SHA256, sha256_hex(blob).encode()),
    ]
    return [(f"{key}/{gen % 2}/{i}".encode(), c, [*common, (H_INDEX, str(i).encode())]) for i, c in enumerate(chunks)]


class GenerationFold:
    """Records of one topic partition folded into the newest complete generation of ``key``.

    Only chunks of ``key`` count (a topic partition may serve several keys). A generation is
    complete when all its chunks are there (the last chunk seen for each index wins) and their
    bytes match its size and SHA-256.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.prefix = f"{key}/"
        self._chunks: dict[tuple[int, str], dict[int, tuple[bytes, int]]] = {}  # (gen, sha) -> index -> (bytes, offset)
        self._shape: dict[tuple[int, str], tuple[int, int]] = {}  # (gen, sha) -> (chunks, size)
        self.problems: list[str] = []

    def add(self, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]], offset: int) -> None:
        k = (key or b"").decode(errors="replace")
        if not k.startswith(self.prefix) or value is None:
            return
        try:
            h = {name: v.decode() for name, v in headers}
            ident = (int(h[H_GEN]), h[H_SHA256])
            self._shape[ident] = (int(h[H_CHUNKS]), int(h[H_SIZE]))
            self._chunks.setdefault(ident, {})[int(h[H_INDEX])] = (value, offset)
        except (KeyError, ValueError, UnicodeDecodeError) as e:
            self.problems.append(f"record at offset {offset} ({k}): {type(e).__name__}: {e}")

    def add_record(self, rec: Any) -> None:
        """:meth:`add` of a consumer record."""
        self.add(rec.key, rec.value, rec.headers or (), rec.offset)

    def newest(self) -> Generation | None:
        """The complete generation whose last chunk came last in the log (None: none complete)."""
        best: Generation | None = None
        for ident, parts in self._chunks.items():
            n, size = self._shape[ident]
            if len(parts) < n or any(i not in parts for i in range(n)):
                continue
            last = max(off for _, off in parts.values())
            if best is not None and last <= best.offset:
                continue
            try:
                blob = join_chunks((parts[i][0] for i in range(n)), size, ident[1])
            except ValueError as e:
                self.problems.append(f"generation {ident[0]}: {e}")
                continue
            best = Generation(self.key, ident[0], blob, last)
        return best


class TopicClient:
    """A producer and readers of one topic, for stores that live on it (see module docstring).

    ``name`` is the client id (and names the store in messages); ``compression`` the
    producer's ``compression_type`` (None: the blobs are compressed already, or tiny).
    """

    error: type[StorageError] = ChangelogError

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        name: str,
        timeout: float = 30.0,
        compression: str | None = None,
        max_request_size: int = PRODUCER_MAX_REQUEST,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.name = name
        self.timeout = timeout
        self.compression = compression
        self.max_request_size = max_request_size
        self._producer: Any = None

    def __repr__(self) -> str:
        return f"the Kafka topic {self.topic}"

    async def producer(self) -> Any:
        """The (started) producer."""
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            from streams.broker.security import aiokafka_options

            p = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                acks="all",
                linger_ms=0,
                max_request_size=self.max_request_size,
                compression_type=self.compression,
                client_id=self.name,
                request_timeout_ms=int(self.timeout * 1000),
                **aiokafka_options(self.settings),
            )
            try:
                await p.start()
            except BaseException:
                await p.stop()  # a producer that failed to start still holds its client
                raise
            self._producer = p
        return self._producer

    async def send(self, key: str | bytes, value: bytes | None, partition: int, headers: Headers | None = None):
        """Send one record; returns the future of its acknowledgement (its metadata)."""
        producer = await self.producer()
        k = key.encode() if isinstance(key, str) else key
        return await producer.send(self.topic, key=k, value=value, partition=partition, headers=headers or [])

    async def send_all(self, records: Iterable[tuple[bytes, bytes | None, Headers]], partition: int) -> None:
        """Send records and wait until the broker acknowledged every one."""
        futs = [await self.send(k, v, partition, h) for k, v, h in records]
        if futs:
            await asyncio.wait_for(asyncio.gather(*futs), self.timeout)

    async def marker(self, key: str, partition: int) -> int:
        """Write a marker record (key ``__marker__/<key>``, empty value) and return its offset."""
        try:
            meta = await asyncio.wait_for(await self.send(MARKER_PREFIX + key, b"", partition), self.timeout)
        except Exception as e:
            raise self.error(f"cannot write a marker to {self.topic}[{partition}]: {type(e).__name__}: {e}") from e
        return int(meta.offset)

    async def consumer(self, partition: int, start: int | None = None):
        """A started consumer assigned to ``partition`` at offset ``start`` (None: its beginning)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams.broker.security import aiokafka_options

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            client_id=self.name,
            **aiokafka_options(self.settings),
        )
        await consumer.start()
        tp = TopicPartition(self.topic, partition)
        try:
            consumer.assign([tp])
            if start is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
        except BaseException:
            await consumer.stop()
            raise
        return consumer, tp

    async def read_until(self, consumer, tp, marker: int, add: Callable[[Any], Any], start: int = 0) -> None:
        """Feed every record of ``tp`` from ``start`` to ``add`` until past offset ``marker``."""
        deadline = time.monotonic() + self.timeout
        position = start
        while position <= marker:
            if time.monotonic() > deadline:
                raise self.error(
                    f"reading {self.topic}[{tp.partition}] timed out at offset {position} before the marker at {marker}"
                )
            batch = await consumer.getmany(tp, timeout_ms=500)
            for rec in batch.get(tp, []):
                position = rec.offset + 1
                add(rec)
            if not batch:  # compaction gaps, control batches: aiokafka's position moves past them
                position = max(position, await consumer.position(tp))

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class ChangelogStore(TopicClient):
    """Generations of blobs by key on a compacted topic: ``put`` and ``restore`` (see module docstring)."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        name: str,
        timeout: float = 30.0,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        super().__init__(settings, topic, name=name, timeout=timeout)
        self.chunk_bytes = int(chunk_bytes)
        self._partitions: int | None = None
        self._lock = asyncio.Lock()

    async def target(self, route: int) -> int:
        """The topic partition of ``route``."""
        if self._partitions is None:
            parts = await (await self.producer()).partitions_for(self.topic)
            if not parts:
                raise ChangelogError(
                    f"topic {self.topic} has no partitions (is it created? `driftwatch worker` creates it)"
                )
            self._partitions = len(parts)
        return int(route) % self._partitions

    async def put(self, key: str, gen: int, blob: bytes, route: int = 0) -> int:
        """Write generation ``gen`` of ``key``; returns (the bytes written) once the broker acknowledged every
        chunk — the caller may then commit the input offsets the state covers."""
        try:
            async with self._lock:
                await self.send_all(chunk_records(key, gen, blob, self.chunk_bytes), await self.target(route))
        except Exception as e:
            raise ChangelogError(
                f"cannot write generation {gen} of {key} ({len(blob)} bytes) to {self.topic}: {type(e).__name__}: {e}"
            ) from e
        return len(blob)

    async def restore(self, key: str, route: int = 0) -> Generation | None:
        """The newest complete generation of ``key`` (None: never written)."""
        try:
            async with self._lock:
                target = await self.target(route)
                marker = await self.marker(key, target)
            return await self._read_tail(key, target, marker)
        except ChangelogError:
            raise
        except Exception as e:
            raise ChangelogError(f"cannot read {key} from {self.topic}: {type(e).__name__}: {e}") from e

    async def _read_tail(self, key: str, target: int, marker: int) -> Generation | None:
        span = TAIL_RECORDS
        consumer, tp = await self.consumer(target, max(0, marker - span))
        try:
            while True:
                start = max(0, marker - span)
                consumer.seek(tp, start)
                fold = GenerationFold(key)
                await self.read_until(consumer, tp, marker, fold.add_record, start)
                for p in fold.problems:
                    log.warning("%s[%d]: ignoring %s", self.topic, target, p)
                got = fold.newest()
                if got is not None or start == 0:
                    return got
                span *= 4
        finally:
            await consumer.stop()
