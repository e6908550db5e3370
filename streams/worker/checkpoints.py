"""Window checkpoints: written with each ``dw_window`` point, read back when a partition is (re)assigned.

A restarted worker resumes each stream key exactly where its last written window ended
(:class:`~streams.worker.windows.Checkpoint`); the checkpoint travels as ``ckpt_*`` fields of
the window's ``dw_window`` point (names in :data:`detectors.records.CKPT_FIELDS`), so it is
confirmed by InfluxDB together with the results it protects.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

from detectors.records import CKPT_FIELDS, F_SEQ, T_MODEL, T_VERSION, WINDOW
from streams.retry import Backoff
from streams.settings import Settings
from streams.worker.decode import StreamKey
from streams.worker.windows import Checkpoint

log = logging.getLogger(__name__)


def checkpoint_fields(key: StreamKey, ck: Checkpoint) -> dict[str, Any]:
    """The checkpoint as ``dw_window`` fields (non-finite values are left out by the sink)."""
    return {
        CKPT_FIELDS["topic"]: key.topic,
        CKPT_FIELDS["partition"]: key.partition,
        CKPT_FIELDS["start_offset"]: ck.start_pos[0],
        CKPT_FIELDS["start_row"]: ck.start_pos[1],
        CKPT_FIELDS["end_offset"]: ck.end_pos[0],
        CKPT_FIELDS["end_row"]: ck.end_pos[1],
        CKPT_FIELDS["closed_until"]: ck.closed_until,
        CKPT_FIELDS["max_event_time"]: ck.max_event_time,
        CKPT_FIELDS["window_start"]: ck.window_start,
        F_SEQ: ck.seq,
    }


def checkpoint_from_row(row: dict[str, Any]) -> Checkpoint | None:
    """Inverse of :func:`checkpoint_fields` on a queried ``dw_window`` row."""

    def num(name: str, default: float = -math.inf) -> float:
        v = row.get(CKPT_FIELDS[name])
        return default if v is None else float(v)

    try:
        return Checkpoint(
            seq=int(row[F_SEQ]),
            start_pos=(int(num("start_offset")), int(num("start_row"))),
            end_pos=(int(num("end_offset")), int(num("end_row"))),
            time_ns=int(row["time"]),
            closed_until=num("closed_until"),
            max_event_time=num("max_event_time"),
            window_start=num("window_start"),
        )
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


class CheckpointSource:
    """Reads the newest checkpoint of a stream key back from InfluxDB (retrying while it is down)."""

    def __init__(self, settings: Settings, client_getter: Callable[[], Any], max_backoff: float = 10.0) -> None:
        self.settings = settings
        self._client = client_getter
        self.max_backoff = max_backoff

    async def latest(self, key: StreamKey, measurement: str = WINDOW) -> Checkpoint | None:
        """The newest checkpoint of ``key`` (``measurement``: ``dw_shard`` for a shard of a sharded model)."""
        rows = await self._query(key, "ORDER BY time DESC LIMIT 1", measurement)
        return checkpoint_from_row(rows[0]) if rows else None

    async def since(self, key: StreamKey, after_ns: int, limit: int = 1000) -> list[Checkpoint]:
        """Checkpoints of the (at most ``limit`` newest) windows of ``key`` written after ``after_ns``, oldest
        first (the label join learns the windows a crashed worker wrote after its last label snapshot)."""
        rows = await self._query(key, f"AND time > {int(after_ns)} ORDER BY time DESC LIMIT {int(limit)}")
        return [c for c in map(checkpoint_from_row, reversed(rows)) if c is not None]

    async def _query(self, key: StreamKey, tail: str, measurement: str = WINDOW) -> list[dict[str, Any]]:
        from streams.influx.influxql import quote_ident
        from streams.influx.influxql import quote_literal as lit
        from streams.influx.sink import DatabaseNotFound, InfluxQueryError, aquery

        q = (
            f"SELECT * FROM {quote_ident(measurement)} WHERE {quote_ident(T_MODEL)} = {lit(key.model_id)}"
            f" AND {quote_ident(T_VERSION)} = {lit(key.model_version)}"
            f" AND {quote_ident(CKPT_FIELDS['topic'])} = {lit(key.topic)}"
            f" AND {quote_ident(CKPT_FIELDS['partition'])} = {int(key.partition)} {tail}"
        )
        delays = Backoff(0.5, self.max_backoff).delays()
        while True:
            try:
                return await aquery(self._client(), self.settings, q)
            except DatabaseNotFound:
                return []
            except InfluxQueryError as e:
                wait = next(delays)
                log.warning(
                    "cannot read the checkpoint of %s from InfluxDB (%s); retrying in %.1f s",
                    "/".join(map(str, key)),
                    e,
                    wait,
                )
                await asyncio.sleep(wait)
