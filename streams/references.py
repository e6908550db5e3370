"""Stored references: shared by every worker, surviving restarts, set and reset by operators.

The references live on a Kafka topic (``<topic_inferences>.references``, one
partition, ``cleanup.policy=compact``), keyed ``"model/version"``:

* a worker that built a ``first_n`` reference stores it there (origin
  ``first_n``), with where it ended in the inference stream (topic, partition,
  offset, row), so a restarted worker — or the one that takes the partition
  over — loads it instead of building a different one from what it replays;
* ``driftwatch reference set`` stores one built from a file (origin ``set``);
  it overrides the configured source of that model version (key
  ``"model/*"``: of every version without a ``set`` reference of its own);
* ``driftwatch reference reset`` writes tombstones: the workers go back to the
  configured source (file, the next ``first_n`` events, the rolling window).

Value of a record: the bytes of :meth:`detectors.reference.Reference.to_bytes`,
headers with the metadata (``dw-*``). **Large references are chunked**: a
reference of 5000 rows x 20 features is ~580 kB, with one segment feature
~1.25 MB — over the 1 MB message limit of a default Kafka broker and client.
A blob larger than ``chunk_bytes`` (512 KiB) is written as chunk records
(key ``__chunk__/model/version/<sha256[:16]>/<i>``), then a small JSON
*manifest* under the reference's key (header ``dw-chunks``) with the blob's
size and SHA-256. The manifest is written only after the broker acknowledged
every chunk (one partition: the chunks come before it in the log), and a reader
checks size and checksum; a manifest whose chunks are missing or corrupt is
ignored with a warning (the worker falls back to its configured source), never
half-used. Chunk keys carry the blob's digest, so a new reference never
overwrites the chunks the current manifest points at; the chunks of the
replaced reference are tombstoned after the new manifest is acknowledged.

Reading "to the end" of a topic without trusting end offsets (tansu reports
them wrong, see design.md): :meth:`ReferenceStore.load` first produces a small
*marker* record to the topic and gets its offset back from the broker's produce
acknowledgement; then it reads the partition from the beginning until it has
passed that offset. Everything stored before the marker was written is
therefore read, on any broker, whatever its ListOffsets answers. Markers are a
few bytes each (one per load; compaction keeps one, brokers without compaction
keep them all: a few KB per day).

:meth:`ReferenceStore.follow` does the same, then keeps reading: a running
worker applies a reference set or reset by the CLI within about a second
(:meth:`streams.pipeline.Pipeline.watch_references`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from streams.settings import Settings
from streams.security import aiokafka_options

log = logging.getLogger(__name__)

MARKER_PREFIX = "__marker__/"
CHUNK_PREFIX = "__chunk__/"
ALL_VERSIONS = "*"
"""Version of a reference that applies to every version of a model (``reference set`` without ``--version``)."""
ORIGIN_FIRST_N = "first_n"
"""Built by a worker from the first N events of a model version."""
ORIGIN_SET = "set"
"""Set by an operator (``driftwatch reference set``): overrides the configured source."""
CHUNK_BYTES = 512 * 1024
"""Blobs larger than this are chunked (Kafka's default message limit is 1 MB)."""
MAX_REFERENCE_BYTES = 256 * 1024 * 1024
"""Refuse to store a larger reference (it would have to be held in every worker's memory)."""
PRODUCER_MAX_REQUEST = 1_048_576  # Kafka's default max.request.size: chunks keep every record below it
MANIFEST_FORMAT = "driftwatch-reference-manifest"

H_TOPIC = "dw-topic"
H_PARTITION = "dw-partition"
H_END_OFFSET = "dw-end-offset"
H_END_ROW = "dw-end-row"
H_ROWS = "dw-rows"
H_CREATED = "dw-created"
H_ORIGIN = "dw-origin"
H_SOURCE = "dw-source"
H_CHUNKS = "dw-chunks"
H_SHA256 = "dw-sha256"
H_SIZE = "dw-size"
H_INDEX = "dw-index"


class ReferenceStoreError(RuntimeError):
    """The reference topic could not be read or written (the message says why)."""


def references_topic(settings: Settings) -> str:
    """The topic the references live on (derived from the inference topic's name)."""
    return f"{settings.topic_inferences}.references"


def store_key(model_id: str, version: str) -> bytes:
    return f"{model_id}/{version}".encode()


def chunk_key(model_id: str, version: str, sha256: str, index: int) -> str:
    return f"{CHUNK_PREFIX}{model_id}/{version}/{sha256[:16]}/{index}"


def _chunk_owner(key: str) -> tuple[str, str] | None:
    """``(model, version)`` of a chunk key (model ids may contain ``/``)."""
    parts = key[len(CHUNK_PREFIX):].rsplit("/", 3)
    return (parts[0], parts[1]) if len(parts) == 4 else None


@dataclass(frozen=True, slots=True)
class StoredReference:
    """A reference as stored: its bytes, where it came from and (first_n) where it ended."""

    model_id: str
    version: str
    blob: bytes
    topic: str
    partition: int
    end_pos: tuple[int, int]
    rows: int
    created: float
    origin: str = ORIGIN_FIRST_N
    source: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.blob).hexdigest()

    def reference(self):
        from detectors.reference import Reference

        return Reference.from_bytes(self.blob)


def applicable(refs: dict[tuple[str, str], StoredReference], model_id: str,
               version: str) -> StoredReference | None:
    """The stored reference a model version uses, if any.

    An operator's reference of the version beats one set for all versions,
    which beats the version's worker-built ``first_n`` reference.

    >>> a = StoredReference("m", "1", b"", "", -1, (-1, -1), 0, 0.0)
    >>> s = StoredReference("m", "*", b"", "", -1, (-1, -1), 0, 0.0, origin=ORIGIN_SET)
    >>> applicable({("m", "1"): a}, "m", "1") is a, applicable({("m", "1"): a, ("m", "*"): s}, "m", "1") is s
    (True, True)
    """
    exact = refs.get((model_id, version))
    if exact is not None and exact.origin == ORIGIN_SET:
        return exact
    every = refs.get((model_id, ALL_VERSIONS))
    if every is not None and every.origin == ORIGIN_SET:
        return every
    return exact


def ensure_references_topic(settings: Settings) -> str:
    """Create the references topic (1 partition, compacted) if missing.

    No ``max.message.bytes`` override is needed: large references are chunked.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from streams.kafka_admin import admin_client

    name = references_topic(settings)
    with admin_client(settings) as admin:
        if name in set(admin.list_topics()):
            return name
        topic = NewTopic(name, 1, 1, topic_configs={"cleanup.policy": "compact"})
        try:
            admin.create_topics([topic])
        except TopicAlreadyExistsError:
            pass
    return name


def _headers(headers) -> dict[str, str]:
    return {k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in (headers or [])}


class _Fold:
    """The topic's records folded into the current state (last value per key wins)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], tuple[dict[str, str], bytes, int]] = {}  # headers, value, offset
        self.chunks: dict[str, bytes] = {}
        self.problems: dict[tuple[str, str], str] = {}

    def add(self, rec) -> tuple[str, str] | None:
        """Fold one record in; returns the reference key it changed (None: marker, chunk, foreign)."""
        key = (rec.key or b"").decode(errors="replace")
        if key.startswith(MARKER_PREFIX):
            return None
        if key.startswith(CHUNK_PREFIX):
            if rec.value is None:
                self.chunks.pop(key, None)
            else:
                self.chunks[key] = rec.value
            return None
        if "/" not in key:
            return None
        k = tuple(key.rsplit("/", 1))
        if rec.value is None:
            self.entries.pop(k, None)
        else:
            self.entries[k] = (_headers(rec.headers), rec.value, rec.offset)
        return k  # type: ignore[return-value]

    def get(self, k: tuple[str, str]) -> StoredReference | None:
        """The stored reference under ``k`` (None: absent, or unusable — see ``problems``)."""
        self.problems.pop(k, None)
        entry = self.entries.get(k)
        if entry is None:
            return None
        h, value, offset = entry
        try:
            if H_CHUNKS in h:
                blob = self._assemble(k, h, value)
            else:
                blob = value
            return StoredReference(
                k[0], k[1], blob, h.get(H_TOPIC, ""), int(h.get(H_PARTITION, -1)),
                (int(h.get(H_END_OFFSET, -1)), int(h.get(H_END_ROW, -1))),
                int(h.get(H_ROWS, 0)), float(h.get(H_CREATED, 0.0)),
                h.get(H_ORIGIN, ORIGIN_FIRST_N), h.get(H_SOURCE, ""))
        except (ValueError, KeyError) as e:
            self.problems[k] = f"record at offset {offset}: {e}"
            log.warning("ignoring the stored reference of %s/%s: %s", k[0], k[1], self.problems[k])
            return None

    def _assemble(self, k: tuple[str, str], h: dict[str, str], value: bytes) -> bytes:
        manifest = json.loads(value)
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a reference manifest: format={manifest.get('format')!r}")
        n, sha, size = int(manifest["chunks"]), str(manifest["sha256"]), int(manifest["size"])
        parts = []
        for i in range(n):
            part = self.chunks.get(chunk_key(k[0], k[1], sha, i))
            if part is None:
                raise ValueError(f"chunk {i} of {n} is missing (a save was interrupted, or the topic lost it)")
            parts.append(part)
        blob = b"".join(parts)
        if len(blob) != size or hashlib.sha256(blob).hexdigest() != sha:
            raise ValueError(f"chunks do not match the manifest (size {len(blob)} vs {size}, or SHA-256)")
        return blob

    def chunk_keys(self, k: tuple[str, str]) -> set[str]:
        return {c for c in self.chunks if _chunk_owner(c) == k}

    def snapshot(self) -> dict[tuple[str, str], StoredReference]:
        out = {}
        for k in list(self.entries):
            got = self.get(k)
            if got is not None:
                out[k] = got
        return out


class ReferenceStore:
    """Load, save, reset and follow references on the references topic (see module docstring)."""

    def __init__(self, settings: Settings, timeout: float = 30.0, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.settings = settings
        self.topic = references_topic(settings)
        self.timeout = timeout
        self.chunk_bytes = int(chunk_bytes)
        self.problems: dict[tuple[str, str], str] = {}  # unusable records seen by the last load
        self._producer = None
        self._lock = asyncio.Lock()
        self._chunks: dict[tuple[str, str], set[str]] = {}  # chunk keys seen or written per reference

    async def _get_producer(self):
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            p = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                acks="all",
                linger_ms=0,
                max_request_size=PRODUCER_MAX_REQUEST,
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

    async def _send(self, key: str | bytes, value: bytes | None, headers=None):
        """Send one record to partition 0; returns the future of its acknowledgement."""
        producer = await self._get_producer()
        key = key.encode() if isinstance(key, str) else key
        return await producer.send(self.topic, key=key, value=value, partition=0, headers=headers or [])

    async def save(self, stored: StoredReference) -> None:
        """Store a reference (chunked if large); returns once the broker has acknowledged it."""
        k = (stored.model_id, stored.version)
        blob = stored.blob
        what = f"the reference of {stored.model_id}/{stored.version} ({len(blob)} bytes) on {self.topic}"
        if len(blob) > MAX_REFERENCE_BYTES:
            raise ReferenceStoreError(f"cannot store {what}: larger than {MAX_REFERENCE_BYTES} bytes")
        headers = [
            (H_TOPIC, stored.topic.encode()),
            (H_PARTITION, str(stored.partition).encode()),
            (H_END_OFFSET, str(stored.end_pos[0]).encode()),
            (H_END_ROW, str(stored.end_pos[1]).encode()),
            (H_ROWS, str(stored.rows).encode()),
            (H_CREATED, repr(stored.created).encode()),
            (H_ORIGIN, stored.origin.encode()),
            (H_SOURCE, stored.source[:1000].encode()),
        ]
        written: set[str] = set()
        try:
            if len(blob) <= self.chunk_bytes:
                value = blob
            else:
                sha = hashlib.sha256(blob).hexdigest()
                n = math.ceil(len(blob) / self.chunk_bytes)
                futs = []
                for i in range(n):
                    ck = chunk_key(stored.model_id, stored.version, sha, i)
                    written.add(ck)
                    futs.append(await self._send(ck, blob[i * self.chunk_bytes:(i + 1) * self.chunk_bytes],
                                                 [(H_SHA256, sha.encode()), (H_INDEX, str(i).encode())]))
                await asyncio.wait_for(asyncio.gather(*futs), self.timeout)  # every chunk before the manifest
                value = json.dumps({"format": MANIFEST_FORMAT, "version": 1, "chunks": n, "sha256": sha,
                                    "size": len(blob)}).encode()
                headers += [(H_CHUNKS, str(n).encode()), (H_SHA256, sha.encode()), (H_SIZE, str(len(blob)).encode())]
            await asyncio.wait_for(await self._send(store_key(*k), value, headers), self.timeout)
        except ReferenceStoreError:
            raise
        except Exception as e:
            raise ReferenceStoreError(f"cannot store {what}: {type(e).__name__}: {e}") from e
        stale = self._chunks.get(k, set()) - written
        self._chunks[k] = written
        await self._tombstone(stale)

    async def _tombstone(self, keys) -> None:
        """Delete chunk records no manifest points at any more (best effort: they are only garbage)."""
        try:
            futs = [await self._send(c, None) for c in sorted(keys)]
            if futs:
                await asyncio.wait_for(asyncio.gather(*futs), self.timeout)
        except Exception as e:  # noqa: BLE001
            log.warning("could not delete %d stale reference chunk(s) on %s: %s", len(keys), self.topic, e)

    async def reset(self, model_id: str, version: str) -> None:
        """Forget a stored reference (tombstones for it and its chunks)."""
        k = (model_id, version)
        if k not in self._chunks:  # learn its chunk keys (the CLI has loaded already)
            await self.load()
        try:
            await asyncio.wait_for(await self._send(store_key(model_id, version), None), self.timeout)
        except Exception as e:
            raise ReferenceStoreError(f"cannot reset the reference of {model_id}/{version} on {self.topic}: "
                                      f"{type(e).__name__}: {e}") from e
        await self._tombstone(self._chunks.pop(k, set()))

    async def _marker(self) -> int:
        marker = (MARKER_PREFIX + uuid.uuid4().hex).encode()
        try:
            meta = await asyncio.wait_for(await self._send(marker, b""), self.timeout)
        except Exception as e:
            raise ReferenceStoreError(f"cannot write a marker to {self.topic}: {type(e).__name__}: {e}") from e
        return meta.offset

    async def load(self) -> dict[tuple[str, str], StoredReference]:
        """Every stored reference, read up to a marker written just before (see module docstring)."""
        async with self._lock:
            marker_offset = await self._marker()
            consumer, tp = await self._consumer()
            try:
                fold = _Fold()
                await self._read_until(consumer, tp, fold, marker_offset)
            finally:
                await consumer.stop()
            return self._learn(fold)

    def _learn(self, fold: _Fold) -> dict[tuple[str, str], StoredReference]:
        out = fold.snapshot()
        self.problems = dict(fold.problems)
        for k in set(fold.entries) | {_chunk_owner(c) for c in fold.chunks} - {None}:
            self._chunks[k] = fold.chunk_keys(k)  # type: ignore[index]
        return out

    async def _consumer(self):
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            client_id="driftwatch-references",
            **aiokafka_options(self.settings),
        )
        await consumer.start()
        tp = TopicPartition(self.topic, 0)
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
        except BaseException:
            await consumer.stop()
            raise
        return consumer, tp

    async def _read_until(self, consumer, tp, fold: _Fold, marker_offset: int) -> None:
        deadline = time.monotonic() + self.timeout
        position = 0
        while position <= marker_offset:
            if time.monotonic() > deadline:
                raise ReferenceStoreError(
                    f"reading {self.topic} timed out at offset {position} before the marker at {marker_offset}")
            batch = await consumer.getmany(tp, timeout_ms=500)
            for rec in batch.get(tp, []):
                position = rec.offset + 1
                fold.add(rec)
            if not batch:
                # aiokafka may report the position past records it skipped (control batches)
                position = max(position, await consumer.position(tp))

    async def follow(
        self,
        on_snapshot: Callable[[dict[tuple[str, str], StoredReference]], Awaitable[None]],
        on_change: Callable[[tuple[str, str], StoredReference | None], Awaitable[None]],
        poll_ms: int = 1000,
    ) -> None:
        """Load every reference (``on_snapshot``), then report each change (``on_change``) until cancelled.

        A change is a new or replaced reference, or ``None`` for a reset (or an
        unusable record: the reader falls back as after a reset). Errors propagate:
        the caller retries with a new ``follow`` (which starts with a new snapshot).
        """
        marker_offset = await self._marker()
        consumer, tp = await self._consumer()
        try:
            fold = _Fold()
            await self._read_until(consumer, tp, fold, marker_offset)
            await on_snapshot(self._learn(fold))
            while True:
                batch = await consumer.getmany(tp, timeout_ms=poll_ms)
                changed: list[tuple[str, str]] = []
                for rec in batch.get(tp, []):
                    k = fold.add(rec)
                    if k is not None and k not in changed:
                        changed.append(k)
                for k in changed:
                    got = fold.get(k)
                    self._chunks[k] = fold.chunk_keys(k)
                    await on_change(k, got)
        finally:
            await consumer.stop()
