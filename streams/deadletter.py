"""Publish dead letters: the original bytes, the reason, and where they came from.

Every :class:`~streams.decode.DeadLetter` becomes one record on the dead-letter
topic (``Settings.topic_deadletter``):

* **value**: the original message value, byte for byte (``None`` stays ``None``);
* **key**: the original key;
* **headers** (UTF-8 text):

  ==================== ===========================================================
  ``dw-reason``        one of :data:`streams.decode.REASONS`
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

Each dead letter is also counted on the ``dw_deadletter`` measurement
(:func:`deadletter_record`): tags ``reason`` and ``model`` (only for models in
the monitor config — an unknown model id is attacker-controlled and would make
tag cardinality unbounded), field ``count`` = events. The point time is the
original record's Kafka timestamp plus a sub-millisecond offset derived from
partition and offset, so a replayed dead letter overwrites its own point
instead of counting twice.

>>> compact_rows((0, 1, 2, 3, 7, 9, 10))
'0-3,7,9-10'
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from detectors.records import DEADLETTER, T_MODEL, T_REASON, T_VERSION, Record
from streams.decode import DeadLetter

log = logging.getLogger(__name__)

MAX_DETAIL = 1000
MAX_ROWS_TEXT = 8000

#: ``send(key, value, headers) -> awaitable`` that resolves once the broker has the record
SendFn = Callable[[bytes | None, bytes | None, list[tuple[str, bytes]]], Awaitable[Awaitable[Any]]]


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
        ("dw-reason", dl.reason),
        ("dw-detail", detail),
        ("dw-rows", "all" if dl.rows is None else compact_rows(dl.rows)),
        ("dw-events", str(dl.n_events)),
        ("dw-source-topic", m.topic),
        ("dw-source-partition", str(m.partition)),
        ("dw-source-offset", str(m.offset)),
        ("dw-source-timestamp", "" if m.timestamp_ms is None else str(m.timestamp_ms)),
        ("dw-time", str(now_ms)),
    ]
    if dl.model_id is not None:
        h.append(("dw-model", dl.model_id))
    if dl.model_version is not None:
        h.append(("dw-version", dl.model_version))
    return [(k, v.encode("utf-8", "replace")) for k, v in h]


def deadletter_record(dl: DeadLetter, known_models: frozenset[str] | set[str]) -> Record:
    """The ``dw_deadletter`` point of one dead letter (idempotent, see module docstring)."""
    m = dl.message
    ts_ms = m.timestamp_ms if m.timestamp_ms is not None and m.timestamp_ms >= 0 else int(time.time() * 1000)
    time_ns = ts_ms * 1_000_000 + (m.partition % 1000) * 1000 + m.offset % 1000
    tags = {T_REASON: dl.reason}
    if dl.model_id is not None and dl.model_id in known_models:
        tags[T_MODEL] = dl.model_id
        if dl.model_version is not None:
            tags[T_VERSION] = dl.model_version
    fields = {"count": dl.n_events, "messages": 1, "partition": m.partition, "offset": m.offset}
    return Record(DEADLETTER, tags, fields, time_ns)


class DeadLetterPublisher:
    """Sends dead letters with :data:`SendFn`; counts them by reason."""

    def __init__(self, send: SendFn) -> None:
        self._send = send
        self.counts: Counter[str] = Counter()  # events per reason
        self.messages = 0

    async def publish(self, dl: DeadLetter) -> asyncio.Future:
        """Send one dead letter; the returned future resolves when the broker has it."""
        m = dl.message
        delivery = await self._send(m.key, m.value, headers_for(dl))
        self.counts[dl.reason] += dl.n_events
        self.messages += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dead letter %s from %s[%d]@%d: %s", dl.reason, m.topic, m.partition, m.offset, dl.detail[:200])
        return asyncio.ensure_future(delivery)
