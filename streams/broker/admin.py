"""Create, delete and read driftwatch's Kafka topics (kafka-python ``KafkaAdminClient``).

Every topic is created up front with an explicit partition count: brokers that
auto-create topics choose their own count (tansu picks one at random) and tansu does
not support CreatePartitions, so a topic's partition count is fixed at creation.

:func:`consume_all` reads a topic from its beginning, for tests and debugging (e.g.
"what is in the dead-letter topic?"). It stops after ``expected`` records or when the
topic has been quiet for ``idle`` seconds — never by comparing with the reported end
offsets, which tansu gets wrong (design.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code

from detectors.errors import ServiceError
from streams.settings import Settings

log = logging.getLogger(__name__)


class TopicError(ServiceError):
    """Topics could not be created, deleted or read; the message says which and why."""


def topic_names(settings: Settings, extra: Iterable[str] = ()) -> list[str]:
    """The service's topics (inferences, labels, dead-letter, alerts) plus ``extra``.

    >>> topic_names(Settings(), ["x"])
    ['driftwatch.inferences', 'driftwatch.labels', 'driftwatch.deadletter', 'driftwatch.alerts', 'x']
    """
    names = [settings.topic_inferences, settings.topic_labels, settings.topic_deadletter, settings.topic_alerts]
    for n in extra:
        if n not in names:
            names.append(n)
    return names


@contextlib.contextmanager
def admin_client(settings: Settings, timeout_ms: int = 10_000) -> Iterator[KafkaAdminClient]:
    """A connected ``KafkaAdminClient`` (closed on exit), or :class:`TopicError`."""
    try:
        client = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="driftwatch-admin",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            **settings.kafka_client_options(),
        )
    except KafkaError as e:
        raise TopicError(
            f"cannot reach the Kafka broker at {settings.kafka_bootstrap} ({type(e).__name__}: {e}): "
            "is it running? (`driftwatch stack status`; set DRIFTWATCH_KAFKA_BOOTSTRAP for another broker)"
        ) from e
    try:
        yield client
    finally:
        client.close()


def ensure_topics(
    settings: Settings,
    partitions: int | None = None,
    extra: Iterable[str] = (),
    replication_factor: int = 1,
    timeout_ms: int = 10_000,
) -> dict[str, int]:
    """Create the service's topics (and ``extra``) that do not exist yet. Idempotent.

    ``partitions`` defaults to ``settings.topic_partitions``. Existing topics are left
    as they are (a different partition count is logged as a warning: partitions
    cannot be changed on tansu). Returns ``{topic: partition count}`` for all of them.
    """
    n = partitions or settings.topic_partitions
    names = topic_names(settings, extra)
    with admin_client(settings, timeout_ms) as admin:
        existing = set(admin.list_topics())
        missing = [t for t in names if t not in existing]
        if missing:
            new = {t: {"num_partitions": n, "replication_factor": replication_factor} for t in missing}
            try:
                resp = admin.create_topics(new, timeout_ms=timeout_ms, raise_errors=False)
            except KafkaError as e:
                raise TopicError(f"cannot create topics {missing} on {settings.kafka_bootstrap}: {e}") from e
            _raise_topic_errors(resp, "create", settings, ignore=(TopicAlreadyExistsError,))
            log.info("created topics %s with %d partitions", missing, n)
        counts = _partition_counts(admin, names)
    for t, c in counts.items():
        if c != n and t not in missing:
            log.warning("topic %s exists with %d partitions, not %d (left as is)", t, c, n)
    return counts


def delete_topics(settings: Settings, names: Iterable[str] | None = None, timeout_ms: int = 10_000) -> list[str]:
    """Delete ``names`` (default: the service's four topics); missing ones are ignored.

    Returns the names that were deleted. On tansu this also frees their memory.
    """
    wanted = list(names) if names is not None else topic_names(settings)
    with admin_client(settings, timeout_ms) as admin:
        existing = set(admin.list_topics())
        todo = [t for t in wanted if t in existing]
        if todo:
            try:
                resp = admin.delete_topics(todo, timeout_ms=timeout_ms, raise_errors=False)
            except KafkaError as e:
                raise TopicError(f"cannot delete topics {todo} on {settings.kafka_bootstrap}: {e}") from e
            _raise_topic_errors(resp, "delete", settings, ignore=(UnknownTopicOrPartitionError,))
    return todo


def list_topics(settings: Settings, timeout_ms: int = 10_000) -> list[str]:
    """All topic names on the broker, sorted."""
    with admin_client(settings, timeout_ms) as admin:
        return sorted(admin.list_topics())


def committed_offsets(settings: Settings, topic: str | None = None, timeout_ms: int = 10_000) -> dict[int, int]:
    """The worker group's committed offsets of ``topic`` (default: the inference topic), per partition.

    A partition with no committed offset is absent. Used to watch every partition being consumed
    (the benchmarks, the rebalance and checkpoint tests).
    """
    topic = topic or settings.topic_inferences
    group = settings.consumer_group
    with admin_client(settings, timeout_ms) as admin:
        got = admin.list_group_offsets({group: None})[group]
    return {tp.partition: om.offset for tp, om in got.items() if tp.topic == topic and om.offset >= 0}


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for desc in admin.describe_topics(names):
        name = desc.get("name", desc.get("topic"))
        out[name] = len(desc.get("partitions") or [])
    return out


def _raise_topic_errors(resp: dict[str, Any], what: str, settings: Settings, ignore: tuple[type, ...]) -> None:
    """Raise :class:`TopicError` for per-topic errors in a Create/DeleteTopics result dict."""
    problems = []
    for item in resp.get("topics") or []:
        code = item.get("error_code", 0)
        if not code:
            continue
        err = for_code(code)
        if issubclass(err, ignore):
            continue
        problems.append(f"{item.get('name')}: {item.get('error_message') or err.__name__}")
    if problems:
        raise TopicError(f"cannot {what} topics on {settings.kafka_bootstrap}: " + "; ".join(problems))


def consume_all(
    settings: Settings,
    topic: str,
    expected: int | None = None,
    timeout: float = 15.0,
    idle: float = 1.5,
) -> list[Any]:
    """Read ``topic`` from the beginning of every partition, without a consumer group.

    Stops as soon as ``expected`` records have arrived; with ``expected=None``, once
    at least one poll has been made and nothing new came for ``idle`` seconds. Gives
    up after ``timeout`` seconds and returns what it has (the caller asserts on the
    count). Returns kafka-python ``ConsumerRecord`` objects (``.key``, ``.value`` as
    bytes, ``.headers``, ``.partition``, ``.offset``, ``.timestamp``), sorted by
    (partition, offset).
    """
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        request_timeout_ms=10_000,
        client_id="driftwatch-consume-all",
        **settings.kafka_client_options(),
    )
    try:
        deadline = time.monotonic() + timeout
        parts = None
        while time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            time.sleep(0.1)
        if not parts:
            raise TopicError(f"topic {topic!r} does not exist on {settings.kafka_bootstrap} (waited {timeout:.0f} s)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            if expected is not None and len(records) >= expected:
                break
            batch = consumer.poll(timeout_ms=200)
            got = [r for rs in batch.values() for r in rs]
            if got:
                records.extend(got)
                last_new = time.monotonic()
            elif expected is None and time.monotonic() - last_new >= idle:
                break
        records.sort(key=lambda r: (r.partition, r.offset))
        return records
    finally:
        consumer.close()
