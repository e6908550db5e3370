"""Publish dead letters: the original bytes, the reason, and where they came from.

Every :class:`~streams.worker.decode.DeadLetter` becomes one record on the dead-letter
topic (``Settings.topic_deadletter``):

* **value**: the original message value, byte for byte (``None`` stays ``None``);
* **key**: the original key;
* **headers** (UTF-8 text):

  ==================== ===========================================================
  ``dw-reason``        one of :data:`streams.wire.contract.REASONS`
  ``dw-detail``        what is wrong, for humans (at most 1000 characters)
  ``dw-rows``          ``all``, or the bad rows' indexes inside the message
                       (JSON array index / column index), as ranges ``0-3,7``
  ``dw-events``        how many events this dead letter accounts for
  ``dw-model``         model id and version, when known
  ``dw-version``
  ``dw-source-topic``  where the original came from
  ``dw-source-partition``
  ``dw-source-offset``
  ``dw-source-timestamp`` its Kafka timestamp (epoch ms)
  ``dw-time``          when it was dead-lettered (epoch ms)
  ==================== ===========================================================

A message with several bad rows of one reason gives one dead letter (rows
listed); bad rows with different reasons give one per reason. The value is
never cut or rewritten, so a fixed consumer can replay it.

Dead letters are counted on the ``dw_deadletter`` measurement, aggregated
(:func:`deadletter_records`): one point per (source topic partition, reason,
model, version) of the dead letters flushed together (the pipeline flushes
every 0.5 s or 2,000 dead letters), not one per message — a flood of malformed
messages must not turn into a flood of InfluxDB points. Tags ``reason`` and
``model`` (only for models in the monitor config — an unknown model id is
attacker-controlled and would make tag cardinality unbounded); fields
``count`` (events), ``messages``, ``partition``, ``offset`` (the first
dead-lettered offset of the group), ``last_offset`` and ``model_id``: the model
the messages named, also when it is not in the config (a field, so it adds no
series; made printable and cut at 64 characters), so "unknown_model 2" can say
*which* model. A flush groups at most :data:`MAX_NAMED_UNKNOWN` unknown model
ids; the rest share one point without ``model_id``. The point time is the
first message's Kafka timestamp plus a sub-millisecond offset derived from its
partition and offset, so a group of one message gives exactly the point of
:func:`deadletter_record`, and a replay grouped the same way overwrites its own
points. Messages replayed after a crash can be grouped differently (batch
boundaries depend on fetch timing): the counts are then *at least once*, like
the dead-letter topic itself — never fewer.

:meth:`DeadLetterPublisher.publish_batch` sends a list of dead letters without
waiting for each delivery; with :class:`KafkaBatchSender` they go out as one
record batch per partition, in order, and one future resolves when the broker
has all of them.

>>> compact_rows((0, 1, 2, 3, 7, 9, 10))
'0-3,7,9-10'
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from detectors.records import DEADLETTER, T_MODEL, T_REASON, T_VERSION, FieldValue, Record
from detectors.reference import safe_label
from streams.retry import Backoff
from streams.wire.contract import R_UNKNOWN_MODEL
from streams.worker.decode import DeadLetter

if TYPE_CHECKING:  # aiokafka is imported when the sender starts (the module is imported without a broker too)
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

log = logging.getLogger(__name__)

MAX_DETAIL = 1000
MAX_ROWS_TEXT = 8000
MAX_NAMED_UNKNOWN = 20
"""Unknown model ids named (own point, ``model_id`` field) per flush; a flood of random ids shares one point."""
MAX_LOGGED = 100
"""(reason, model) pairs the worker log announces and counts by name; the rest are counted as ``(other)``."""

#: ``(key, value, headers)`` of one dead letter on the topic
DeadLetterRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
#: ``send(key, value, headers) -> awaitable`` that resolves once the broker has the record
SendFn = Callable[[bytes | None, bytes | None, list[tuple[str, bytes]]], Awaitable[Awaitable[Any]]]
#: ``send_batch([(key, value, headers), ...]) -> awaitable`` of one future for the whole list
BatchSendFn = Callable[[Sequence[DeadLetterRecord]], Awaitable[Awaitable[Any]]]


def compact_rows(rows: Iterable[int]) -> str:
    """Sorted row indexes as ranges (``0-3,7``), cut at :data:`MAX_ROWS_TEXT` characters."""
    rows = sorted(set(rows))
    parts: list[str] = []
    i = 0
    while i < len(rows):
        j = i
        while j + 1 < len(rows) and rows[j + 1] == rows[j] + 1:
            j += 1
        parts.append(str(rows[i]) if i == j else f"{rows[i]}-{rows[j]}")
        i = j + 1
    text = ",".join(parts)
    if len(text) > MAX_ROWS_TEXT:
        cut = text[:MAX_ROWS_TEXT].rsplit(",", 1)[0]
        text = cut + ",…"
    return text


def parse_rows(text: str) -> list[int] | None:
    """Inverse of :func:`compact_rows` (``None`` for ``all``)."""
    if text == "all":
        return None
    out: list[int] = []
    for part in text.split(","):
        if part == "…" or not part:
            continue
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def headers_for(dl: DeadLetter, now_ms: int | None = None) -> list[tuple[str, bytes]]:
    """The dead-letter record's headers (see module docstring)."""
    m = dl.message
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    detail = dl.detail if len(dl.detail) <= MAX_DETAIL else dl.detail[: MAX_DETAIL - 1] + "…"
    h = [
        ("dw-reason", dl.reason.encode("utf-8", "replace")),
        ("dw-detail", detail.encode("utf-8", "replace")),
        ("dw-rows", b"all" if dl.rows is None else compact_rows(dl.rows).encode("utf-8")),
        ("dw-events", b"%d" % dl.n_events),
        ("dw-source-topic", m.topic.encode("utf-8", "replace")),
        ("dw-source-partition", b"%d" % m.partition),
        ("dw-source-offset", b"%d" % m.offset),
        ("dw-source-timestamp", b"" if m.timestamp_ms is None else b"%d" % m.timestamp_ms),
        ("dw-time", b"%d" % now_ms),
    ]
    if dl.model_id is not None:
        h.append(("dw-model", dl.model_id.encode("utf-8", "replace")))
    if dl.model_version is not None:
        h.append(("dw-version", dl.model_version.encode("utf-8", "replace")))
    return h


def deadletter_record(dl: DeadLetter, known_models: frozenset[str] | set[str]) -> Record:
    """The ``dw_deadletter`` point of one dead letter (idempotent, see module docstring)."""
    m = dl.message
    ts_ms = m.timestamp_ms if m.timestamp_ms is not None and m.timestamp_ms >= 0 else int(time.time() * 1000)
    time_ns = ts_ms * 1_000_000 + (m.partition % 1000) * 1000 + m.offset % 1000
    tags: dict[str, str] = {T_REASON: dl.reason}
    if dl.model_id is not None and dl.model_id in known_models:
        tags[T_MODEL] = dl.model_id
        if dl.model_version is not None:
            tags[T_VERSION] = dl.model_version
    fields: dict[str, FieldValue] = {
        "count": dl.n_events,
        "messages": 1,
        "partition": m.partition,
        "offset": m.offset,
        "last_offset": m.offset,
    }
    if dl.model_id is not None:
        fields["model_id"] = safe_label(dl.model_id)
    return Record(DEADLETTER, tags, fields, time_ns)


def deadletter_records(dls: Iterable[DeadLetter], known_models: frozenset[str] | set[str]) -> list[Record]:
    """``dw_deadletter`` points of a batch of dead letters, aggregated (see module docstring).

    >>> from streams.worker.decode import RawMessage
    >>> msgs = [RawMessage(b"x", b"m", "t", 0, off, 1_700_000_000_000) for off in (5, 6, 7)]
    >>> recs = deadletter_records([DeadLetter(m, "schema", "bad") for m in msgs], {"m"})
    >>> [(r.tags, r.fields["count"], r.fields["offset"], r.fields["last_offset"]) for r in recs]
    [({'reason': 'schema'}, 3, 5, 7)]
    """
    groups: dict[tuple, list] = {}  # key -> [first dead letter, events, messages, last offset]
    unknown: set[str] = set()
    for dl in dls:
        m = dl.message
        model = dl.model_id
        if model is not None and model not in known_models:
            if model not in unknown and len(unknown) >= MAX_NAMED_UNKNOWN:
                model = None
            else:
                unknown.add(model)
        version = dl.model_version if model is not None else None
        k = (m.topic, m.partition, dl.reason, model, version)
        g = groups.get(k)
        if g is None:
            groups[k] = [dl, dl.n_events, 1, m.offset]
        else:
            g[1] += dl.n_events
            g[2] += 1
            g[3] = max(g[3], m.offset)
    out = []
    for k, (first, events, messages, last) in groups.items():
        r = deadletter_record(first, known_models)
        r.fields.update(count=events, messages=messages, last_offset=last)
        if k[3] is None:
            r.fields.pop("model_id", None)
        out.append(r)
    return out


class DeadLetterPublisher:
    """Sends dead letters and counts them by reason.

    ``send`` sends one record (:data:`SendFn`); ``send_batch`` (optional, e.g. a
    :class:`KafkaBatchSender`) sends a list of ``(key, value, headers)`` in order
    and returns one future for all of them — what :meth:`publish_batch` uses when
    given, so a batch of dead letters costs one produce request instead of one
    producer call per dead letter.
    """

    def __init__(self, send: SendFn | None = None, *, send_batch: BatchSendFn | None = None) -> None:
        if send_batch is None:
            if send is None:
                raise TypeError("DeadLetterPublisher needs send or send_batch")
            send_batch = _one_by_one(send)
        self._send = send
        self._send_batch = send_batch
        self.counts: Counter[str] = Counter()  # events per reason
        self.by_model: Counter[tuple[str, str]] = Counter()  # events per (reason, model id) (bounded)
        self.messages = 0

    def _count(self, dl: DeadLetter) -> None:
        """Count a published dead letter; the first of each (reason, model) is logged with what to do."""
        self.counts[dl.reason] += dl.n_events
        model = "(none)" if dl.model_id is None else safe_label(dl.model_id)
        key = (dl.reason, model)
        if key not in self.by_model:
            if len(self.by_model) >= MAX_LOGGED:
                key = (dl.reason, "(other)")
            else:
                hint = (
                    "declare the model in the monitor config, then `driftwatch deadletter replay --reason "
                    f"{dl.reason} --model {model}`"
                    if dl.reason == R_UNKNOWN_MODEL
                    else "`driftwatch deadletter list` shows them, `deadletter replay` sends them again once fixed"
                )
                log.warning("dead-lettering events of model %s: %s (%s); %s", model, dl.reason, dl.detail[:200], hint)
        self.by_model[key] += dl.n_events

    def summary(self) -> str:
        """``unknown_model 2 (iris 2), schema 1 (wine 1)``: events per reason and model, for the log."""
        if not self.counts:
            return "none"
        parts = []
        for reason, n in self.counts.most_common():
            models = sorted(((m, c) for (r, m), c in self.by_model.items() if r == reason), key=lambda x: -x[1])
            named = ", ".join(f"{m} {c}" for m, c in models[:5]) + (", …" if len(models) > 5 else "")
            parts.append(f"{reason} {n} ({named})" if named else f"{reason} {n}")
        return ", ".join(parts)

    async def publish(self, dl: DeadLetter) -> asyncio.Future:
        """Send one dead letter; the returned future resolves when the broker has it."""
        if self._send is None:
            return await self.publish_batch([dl], retries=0)
        m = dl.message
        delivery = await self._send(m.key, m.value, headers_for(dl))
        self._count(dl)
        self.messages += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dead letter %s from %s[%d]@%d: %s", dl.reason, m.topic, m.partition, m.offset, dl.detail[:200])
        return asyncio.ensure_future(delivery)

    async def publish_batch(self, dls: Sequence[DeadLetter], retries: int = 5, backoff: float = 0.5) -> asyncio.Future:
        """Send the dead letters of one batch, in order, without waiting for their delivery.

        The returned future resolves once the broker has every one of them, and
        fails if any delivery fails. A send that raises (broker briefly
        unavailable) is retried ``retries`` times with exponential backoff before
        the error propagates (a retried batch may be published twice: the
        dead-letter topic is at-least-once).
        """
        if not dls:
            return _done()
        now_ms = int(time.time() * 1000)
        records = [(dl.message.key, dl.message.value, headers_for(dl, now_ms)) for dl in dls]
        async for attempt in Backoff(backoff, cap=30.0, retries=retries).attempts_async():
            try:
                delivered = await self._send_batch(records)
                break
            except Exception as e:  # the broker may be briefly unavailable
                if attempt.wait is None:
                    raise
                log.warning(
                    "publishing %d dead letter(s) failed (%s); retrying in %.1f s", len(records), e, attempt.wait
                )
        for dl in dls:
            self._count(dl)
        self.messages += len(dls)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%d dead letter(s) from %s[%d]@%d..: %s",
                len(dls),
                dls[0].message.topic,
                dls[0].message.partition,
                dls[0].message.offset,
                dict(Counter(d.reason for d in dls)),
            )
        return asyncio.ensure_future(delivered)


def _one_by_one(send: SendFn) -> BatchSendFn:
    """:data:`BatchSendFn` over a :data:`SendFn`: one producer call per record, one future for all."""

    async def send_batch(records: Sequence[DeadLetterRecord]) -> asyncio.Future[list[Any]]:
        # each send only appends to the producer's batch (it waits only when that is full)
        return asyncio.gather(*[await send(k, v, h) for k, v, h in records])

    return send_batch


def _done() -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result([])
    return fut


class KafkaBatchSender:
    """:data:`BatchSendFn` on a dedicated aiokafka producer: one record batch per partition per call.

    Records are spread over the dead-letter topic's partitions by key with the
    Kafka default partitioner (murmur2, as every Kafka client does; records
    without a key go round-robin), appended to one ``BatchBuilder`` per
    partition (a new one when it is full) and submitted with ``send_batch``:
    per record this costs an append, not a producer call. Order is kept per
    partition. The producer is started on first use and retried by the caller
    (:meth:`DeadLetterPublisher.publish_batch`) while the broker is away.
    """

    def __init__(self, settings: Any, topic: str | None = None, client_id: str = "driftwatch-deadletters") -> None:
        self.settings = settings
        self.topic = topic or settings.topic_deadletter
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._partitioner: DefaultPartitioner | None = None
        self._rr = 0

    async def _get(self) -> tuple[AIOKafkaProducer, DefaultPartitioner]:
        """The started producer and the partitioner (made on first use)."""
        if self._producer is None or self._partitioner is None:
            from aiokafka import AIOKafkaProducer
            from aiokafka.partitioner import DefaultPartitioner

            from streams.broker.security import aiokafka_options

            size = max(int(self.settings.max_message_bytes) + 64 * 1024, 1_048_576)
            p = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                acks="all",
                linger_ms=0,
                max_batch_size=size,
                max_request_size=size,
                client_id=self.client_id,
                **aiokafka_options(self.settings),
            )
            try:
                await p.start()
            except BaseException:
                await p.stop()
                raise
            self._producer, self._partitioner = p, DefaultPartitioner()
        return self._producer, self._partitioner

    async def __call__(self, records: Sequence[DeadLetterRecord]) -> asyncio.Future:
        p, partitioner = await self._get()
        partitions = sorted(await p.partitions_for(self.topic))
        by_part: dict[int, list] = {}
        for rec in records:
            key = rec[0]
            if key is None:
                part = partitions[self._rr % len(partitions)]
                self._rr += 1
            else:
                part = partitioner(key, partitions, partitions)
            by_part.setdefault(part, []).append(rec)
        deliveries = []
        for part, recs in by_part.items():
            batch = p.create_batch()
            for key, value, headers in recs:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full
                    deliveries.append(await p.send_batch(batch, self.topic, partition=part))
                    batch = p.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers)  # a first record always fits
            deliveries.append(await p.send_batch(batch, self.topic, partition=part))
        return asyncio.gather(*deliveries)

    async def stop(self) -> None:
        if self._producer is not None:
            p, self._producer = self._producer, None
            await p.stop()
