"""Commit bookkeeping: a Kafka offset is acked only when nothing written from it is still in flight.

:class:`AckTracker` keeps, per topic partition, a reference count per message (the pipeline
holds a message while its batch is processed, while an open window, an unstored ``first_n``
reference or an unconfirmed dead letter holds its rows) and acks messages in offset order once
their count is 0 and every earlier message of the partition is acked: Faust then commits a
contiguous prefix. The why and the whole protocol: :mod:`streams.worker.pipeline`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from streams.worker.decode import RawMessage


class AckTracker:
    """Per topic partition: ack messages in offset order once nothing holds them.

    >>> acked = []
    >>> t = AckTracker(acked.append)
    >>> for off in (10, 11, 12): t.register(off, f"m{off}", None)
    >>> t.hold([11]); t.release([10, 11, 12]); acked
    ['m10']
    >>> t.release([11]); acked
    ['m10', 'm11', 'm12']
    """

    __slots__ = ("_ack", "_order", "_pending", "acked", "active", "last_offset")

    def __init__(self, ack: Callable[[Any], None]) -> None:
        self._ack = ack
        self._pending: dict[int, list] = {}  # offset -> [refcount, token, RawMessage]
        self._order: deque[int] = deque()
        self.active = True
        self.last_offset = -1
        self.acked = 0

    def __len__(self) -> int:
        return len(self._order)

    def register(self, offset: int, token: Any, message: RawMessage | None) -> None:
        """A new message (refcount 1: it is being processed)."""
        if offset in self._pending:  # the same message again (should not happen): keep the first
            self._pending[offset][0] += 1
            return
        self._pending[offset] = [1, token, message]
        self._order.append(offset)
        self.last_offset = max(self.last_offset, offset)

    def hold(self, offsets: Iterable[int]) -> None:
        for o in offsets:
            e = self._pending.get(int(o))
            if e is not None:
                e[0] += 1

    def release(self, offsets: Iterable[int]) -> None:
        pending = self._pending
        for o in offsets:
            e = pending.get(int(o))
            if e is not None:
                e[0] -= 1
        order = self._order
        while order and pending[order[0]][0] <= 0:
            token = pending.pop(order.popleft())[1]
            self.acked += 1
            if self.active:
                self._ack(token)

    def message(self, offset: int) -> RawMessage | None:
        e = self._pending.get(offset)
        return None if e is None else e[2]

    @property
    def oldest_pending(self) -> int | None:
        return self._order[0] if self._order else None
