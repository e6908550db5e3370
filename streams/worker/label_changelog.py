"""The label join's changelog: its state checkpointed to a compacted Kafka topic, per input partition.

The label join (:mod:`streams.worker.labels`) holds predictions waiting for their labels, labels
waiting for their predictions, the join's counters, the label-derived results not yet
written, the error-stream detector and CBPE's calibration rows. All of it is checkpointed
here, **together with the input offsets it covers**, so it follows its partition to any
worker on any host (no shared ``state_dir``): the worker that gets a partition restores
the partition's newest complete checkpoint and re-reads only what came after it (the
offsets it covers are in the checkpoint; the input offsets are committed only after the
checkpoint that covers them is acknowledged, see ``LabelHook.hold_until_snapshot``).

**Topic.** ``<consumer_group>-<topic_labels>-join-changelog`` (one per consumer group:
the state goes with the group's offsets), ``Settings.topic_partitions`` partitions,
``cleanup.policy=compact``. Input partition ``p`` (of the inferences and of the labels
topic: they are co-partitioned) is checkpointed to changelog partition ``p % n``.

**Records.** One checkpoint of input partition ``p`` is a *generation* ``g`` (one more than
the generation it was restored from): its blob (zlib-compressed, see
:func:`streams.worker.labels.encode_partition`) cut into chunks of at most ``chunk_bytes``
(512 KiB: every record stays below Kafka's default 1 MB message limit), each a record with
key ``p<p>/<g % 2>/<i>`` and headers ``dw-gen``, ``dw-index``, ``dw-chunks``, ``dw-size``,
``dw-sha256``. A reader uses the newest generation whose chunks are all there and match
size and SHA-256; an incomplete one (a crash in the middle of a checkpoint) is ignored and
the one before it is used. Keys alternate between two slots, so writing generation ``g+1``
overwrites only the chunks of ``g-1``: compaction never removes the complete generation
``g`` while ``g+1`` is being written. Chunks of an older, longer generation that outlive
it under a slot's higher indices are ignored (another generation).

**Reading to the end.** The broker's end offsets are not trusted (tansu reports them
wrong, design.md): :meth:`LabelChangelog.load` first writes a small marker record (key
``__marker__/p<p>``, one per partition after compaction) and reads until it has passed the
marker's offset, so everything acknowledged before it — the previous owner's last
checkpoint — is read. It reads only the tail: from a few hundred records before the
marker, going back further only until it has a complete generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from detectors.errors import StorageError
from streams.settings import Settings

log = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024
"""Largest chunk record (Kafka's default message limit is 1 MB)."""
PRODUCER_MAX_REQUEST = 1_048_576
MARKER_PREFIX = "__marker__/"
TAIL_RECORDS = 256
"""Records before the marker read first when looking for the newest complete generation."""

H_GEN = "dw-gen"
H_INDEX = "dw-index"
H_CHUNKS = "dw-chunks"
H_SIZE = "dw-size"
H_SHA256 = "dw-sha256"


class ChangelogError(StorageError):
    """The label-join changelog could not be read or written (the message says why)."""


def changelog_topic(settings: Settings) -> str:
    """The topic the label join of a consumer group is checkpointed to.

    Named after the group and the labels topic: the state belongs to a group's progress
    through the topics (a worker of another group — a backlog run, a second deployment —
    starts from its own offsets and must not restore this one), as Faust names a table's
    changelog after its app.

    >>> changelog_topic(Settings(topic_labels="x.labels", consumer_group="g"))
    'g-x.labels-join-changelog'
    """
    return f"{settings.consumer_group}-{settings.topic_labels}-join-changelog"


def ensure_changelog_topic(settings: Settings) -> str:
    """Create the changelog topic (``topic_partitions`` partitions, compacted) if missing."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from streams.broker.admin import admin_client

    name = changelog_topic(settings)
    with admin_client(settings) as admin:
        if name in set(admin.list_topics()):
            return name
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(
                [NewTopic(name, settings.topic_partitions, 1, topic_configs={"cleanup.policy": "compact"})]
            )
    return name


@dataclass(frozen=True, slots=True)
class Generation:
    """One complete checkpoint of an input partition as read back: its blob and where it ended."""

    partition: int
    gen: int
    blob: bytes
    offset: int  # offset of its last chunk in the changelog partition


def chunk_records(
    partition: int, gen: int, blob: bytes, chunk_bytes: int = CHUNK_BYTES
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """The records ``(key, value, headers)`` of one generation (see module docstring).

    >>> [(k, len(v)) for k, v, _ in chunk_records(3, 7, b"x" * 5, chunk_bytes=2)]
    [(b'p3/1/0', 2), (b'p3/1/1', 2), (b'p3/1/2', 1)]
    """
    n = max(1, math.ceil(len(blob) / chunk_bytes))
    sha = hashlib.sha256(blob).hexdigest().encode()
    common = [
        (H_GEN, str(gen).encode()),
        (H_CHUNKS, str(n).encode()),
        (H_SIZE, str(len(blob)).encode()),
        (H_SHA256, sha),
    ]
    return [
        (
            f"p{partition}/{gen % 2}/{i}".encode(),
            blob[i * chunk_bytes : (i + 1) * chunk_bytes],
            common + [(H_INDEX, str(i).encode())],
        )
        for i in range(n)
    ]


class GenerationFold:
    """Records of one changelog partition folded into the newest complete generation of input ``partition``.

    Only chunks of ``partition`` count (a changelog partition may serve several input
    partitions). A generation is complete when all its chunks are there (the last chunk seen
    for each index wins) and their bytes match its size and SHA-256.
    """

    def __init__(self, partition: int) -> None:
        self.prefix = f"p{partition}/"
        self.partition = partition
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
            blob = b"".join(parts[i][0] for i in range(n))
            if len(blob) != size or hashlib.sha256(blob).hexdigest() != ident[1]:
                self.problems.append(f"generation {ident[0]}: its chunks do not match its size or SHA-256")
                continue
            best = Generation(self.partition, ident[0], blob, last)
        return best


class LabelChangelog:
    """Write and read label-join checkpoints on the changelog topic (see module docstring)."""

    def __init__(self, settings: Settings, timeout: float = 30.0, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.settings = settings
        self.topic = changelog_topic(settings)
        self.timeout = timeout
        self.chunk_bytes = int(chunk_bytes)
        self._producer = None
        self._partitions: int | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"the Kafka topic {self.topic}"

    async def _get_producer(self):
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            from streams.broker.security import aiokafka_options

            p = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                acks="all",
                linger_ms=0,
                max_request_size=PRODUCER_MAX_REQUEST,
                client_id="driftwatch-label-changelog",
                request_timeout_ms=int(self.timeout * 1000),
                **aiokafka_options(self.settings),
            )
            await p.start()
            self._producer = p
        return self._producer

    async def _target(self, partition: int) -> int:
        """The changelog partition of input ``partition``."""
        if self._partitions is None:
            producer = await self._get_producer()
            parts = await producer.partitions_for(self.topic)
            if not parts:
                raise ChangelogError(
                    f"topic {self.topic} has no partitions (is it created? `driftwatch worker` creates it)"
                )
            self._partitions = len(parts)
        return partition % self._partitions

    async def save(self, partition: int, gen: int, blob: bytes) -> int:
        """Write generation ``gen`` of input ``partition``; returns once the broker acknowledged every chunk
        (the caller may then commit the input offsets it covers). Returns the bytes written."""
        try:
            async with self._lock:
                target = await self._target(partition)
                producer = await self._get_producer()
                futs = [
                    await producer.send(self.topic, key=k, value=v, partition=target, headers=h)
                    for k, v, h in chunk_records(partition, gen, blob, self.chunk_bytes)
                ]
                await asyncio.wait_for(asyncio.gather(*futs), self.timeout)
        except Exception as e:
            raise ChangelogError(
                f"cannot write generation {gen} of partition {partition} ({len(blob)} bytes) to "
                f"{self.topic}: {type(e).__name__}: {e}"
            ) from e
        return len(blob)

    async def load(self, partition: int) -> Generation | None:
        """The newest complete generation of input ``partition`` (None: never checkpointed)."""
        try:
            async with self._lock:
                target = await self._target(partition)
                producer = await self._get_producer()
                meta = await asyncio.wait_for(
                    await producer.send(
                        self.topic, key=f"{MARKER_PREFIX}p{partition}".encode(), value=b"", partition=target
                    ),
                    self.timeout,
                )
            return await self._read_tail(partition, target, meta.offset)
        except ChangelogError:
            raise
        except Exception as e:
            raise ChangelogError(
                f"cannot read the checkpoint of partition {partition} from {self.topic}: {type(e).__name__}: {e}"
            ) from e

    async def _read_tail(self, partition: int, target: int, marker: int) -> Generation | None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams.broker.security import aiokafka_options

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            client_id="driftwatch-label-changelog",
            **aiokafka_options(self.settings),
        )
        await consumer.start()
        tp = TopicPartition(self.topic, target)
        deadline = time.monotonic() + self.timeout
        try:
            consumer.assign([tp])
            span = TAIL_RECORDS
            while True:
                start = max(0, marker - span)
                consumer.seek(tp, start)
                fold = GenerationFold(partition)
                position = start
                while position <= marker:
                    if time.monotonic() > deadline:
                        raise ChangelogError(
                            f"reading {self.topic}[{target}] timed out at offset {position} before "
                            f"the marker at {marker}"
                        )
                    batch = await consumer.getmany(tp, timeout_ms=500)
                    for rec in batch.get(tp, []):
                        position = rec.offset + 1
                        fold.add(rec.key, rec.value, rec.headers or (), rec.offset)
                    if not batch:  # compaction gaps, control batches: aiokafka's position moves past them
                        position = max(position, await consumer.position(tp))
                for p in fold.problems:
                    log.warning("label-join changelog %s[%d]: ignoring %s", self.topic, target, p)
                got = fold.newest()
                if got is not None or start == 0:
                    return got
                span *= 4
        finally:
            await consumer.stop()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
