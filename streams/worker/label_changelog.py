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
topic: they are co-partitioned) is checkpointed under key ``p<p>`` to changelog partition
``p % n``. A sharded model's merge owner keeps the model's label results in the merge slot of
its partials partition ``q`` (:func:`streams.alerts.partitions.merge_slot`), under key ``m<q>``
routed like ``q``.

**Records, reading to the end.** One checkpoint of input partition ``p`` is a *generation*
``g`` (one more than the generation it was restored from): its blob (zlib-compressed, see
:func:`streams.worker.labels.encode_partition`) in chunk records of the generic
:class:`streams.worker.changelog_store.ChangelogStore` (chunks, generation slots, size and
SHA-256 checks, the newest complete generation read back past a marker record: see there).
"""

from __future__ import annotations

from streams.alerts.partitions import MERGE_SLOTS
from streams.settings import Settings
from streams.worker.changelog_store import (
    CHUNK_BYTES,
    TAIL_RECORDS,
    ChangelogError,
    ChangelogStore,
    Generation,
    ensure_compacted_topic,
)
from streams.worker.changelog_store import GenerationFold as _Fold
from streams.worker.changelog_store import chunk_records as _chunk_records

__all__ = [
    "CHUNK_BYTES",
    "TAIL_RECORDS",
    "ChangelogError",
    "Generation",
    "GenerationFold",
    "LabelChangelog",
    "changelog_topic",
    "chunk_records",
    "ensure_changelog_topic",
    "partition_key",
]


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
    return ensure_compacted_topic(settings, changelog_topic(settings), settings.topic_partitions)


def partition_key(partition: int) -> str:
    """The store key of an input partition's checkpoint (``m<q>``: the merge slot of partials partition ``q``).

    >>> from streams.alerts.partitions import merge_slot
    >>> partition_key(3), partition_key(merge_slot(3))
    ('p3', 'm3')
    """
    p = int(partition)
    return f"m{p - MERGE_SLOTS}" if p >= MERGE_SLOTS else f"p{p}"


def route(partition: int) -> int:
    """The partition number a checkpoint is routed by: the input partition's, or the merge slot's partials partition's."""
    p = int(partition)
    return p - MERGE_SLOTS if p >= MERGE_SLOTS else p


def chunk_records(partition: int, gen: int, blob: bytes, chunk_bytes: int = CHUNK_BYTES):
    """The records ``(key, value, headers)`` of one checkpoint of input ``partition``.

    >>> [(k, len(v)) for k, v, _ in chunk_records(3, 7, b"x" * 5, chunk_bytes=2)]
    [(b'p3/1/0', 2), (b'p3/1/1', 2), (b'p3/1/2', 1)]
    """
    return _chunk_records(partition_key(partition), gen, blob, chunk_bytes)


class GenerationFold(_Fold):
    """Records of one changelog partition folded into the newest complete checkpoint of input ``partition``."""

    def __init__(self, partition: int) -> None:
        super().__init__(partition_key(partition))
        self.partition = int(partition)


class LabelChangelog(ChangelogStore):
    """Write and read label-join checkpoints on the changelog topic (see module docstring)."""

    def __init__(self, settings: Settings, timeout: float = 30.0, chunk_bytes: int = CHUNK_BYTES) -> None:
        super().__init__(
            settings,
            changelog_topic(settings),
            name="driftwatch-label-changelog",
            timeout=timeout,
            chunk_bytes=chunk_bytes,
        )

    async def save(self, partition: int, gen: int, blob: bytes) -> int:
        """Write generation ``gen`` of input ``partition``; returns once the broker acknowledged every chunk
        (the caller may then commit the input offsets it covers). Returns the bytes written."""
        return await self.put(partition_key(partition), gen, blob, route=route(partition))

    async def load(self, partition: int) -> Generation | None:
        """The newest complete generation of input ``partition`` (None: never checkpointed)."""
        return await self.restore(partition_key(partition), route=route(partition))
