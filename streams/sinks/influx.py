"""Write :class:`~detectors.records.Record` s to InfluxDB, off the hot path; query it back.

One code path for every InfluxDB the project supports: the **v1 HTTP API** —
``POST /write?db=…&precision=ns`` with line protocol, ``/query`` with InfluxQL —
which InfluxDB 1.x serves natively, 2.x through its v1 compatibility API
(database = bucket name, ``Authorization: Token …``; 2.7+ maps every bucket
automatically, older 2.x need ``influx v1 dbrp create``) and 3.x too.

:class:`InfluxSink` is an asyncio writer: the worker :meth:`~InfluxSink.submit` s
the records of one window as a *unit* and gets a future that resolves once
InfluxDB has confirmed them; only then does it commit the Kafka offsets the
window depends on. A background task batches units (up to ``max_batch_points``
points per request; a unit is never split, so a window's points land in one
request) and writes them in order. While InfluxDB is down or answers 5xx/429
the task retries with exponential backoff (0.25 s … 30 s) — nothing is dropped
— and :meth:`~InfluxSink.submit` blocks once ``max_pending_points`` are waiting,
which pauses consumption (backpressure) instead of growing memory. A log line
says when writes start failing (and every 30 s while they do) and when they
recover. A 400 answer (InfluxDB wrote what it could and refused the rest, e.g.
a field type conflict) cannot be fixed by retrying: it is logged with
InfluxDB's message and the unit completes, so one bad point does not stall the
stream.

Points are idempotent: the time is the window end and the tags are bounded
(model, version, feature, …), so rewriting a window overwrites its points.
Numbers are written as floats (integers too: a field that is sometimes an int and
sometimes a float would make InfluxDB refuse the point); NaN and ±inf are left
out (line protocol cannot carry them); booleans and strings stay as they are.

>>> from detectors.records import Record
>>> to_line(Record("dw_drift", {"model": "m 1", "feature": "x"}, {"p_value": 0.5, "n": 3, "drift": True}, 10))
'dw_drift,feature=x,model=m\\\\ 1 drift=true,n=3.0,p_value=0.5 10'
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from detectors.records import Record
from streams.settings import Settings

log = logging.getLogger(__name__)


class InfluxQueryError(RuntimeError):
    """InfluxDB refused a query or could not be reached (the message says which and why)."""


class DatabaseNotFound(InfluxQueryError):
    """The database does not exist (nothing has been written yet)."""


# ----------------------------------------------------------------------------- line protocol

_MEAS_ESC = str.maketrans({",": "\\,", " ": "\\ ", "\n": " "})
_KEY_ESC = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": " "})


def _escape_key(s: str) -> str:
    return s.translate(_KEY_ESC)


def _field_value(v: Any) -> str | None:
    """Line-protocol text of a field value, or None to leave the field out."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return None
        return repr(f)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if v is None:
        return None
    raise TypeError(f"field value of type {type(v).__name__} cannot be written to InfluxDB")


def to_line(record: Record) -> str | None:
    """One record as a line of line protocol (None when it has no writable field).

    Tags with empty values are left out (InfluxDB refuses them); tags and fields
    are sorted by key, as InfluxDB recommends.
    """
    fields = []
    for k in sorted(record.fields):
        text = _field_value(record.fields[k])
        if text is not None:
            fields.append(f"{_escape_key(k)}={text}")
    if not fields:
        return None
    head = record.measurement.translate(_MEAS_ESC)
    for k in sorted(record.tags):
        v = record.tags[k]
        if v is None or v == "":
            continue
        head += f",{_escape_key(k)}={_escape_key(str(v))}"
    return f"{head} {','.join(fields)} {int(record.time_ns)}"


def to_lines(records: Iterable[Record]) -> list[str]:
    """Line protocol of many records (records without writable fields are left out)."""
    out = []
    for r in records:
        line = to_line(r)
        if line is not None:
            out.append(line)
    return out


# ----------------------------------------------------------------------------- HTTP basics


def database(settings: Settings) -> str:
    """The v1 database name: ``influx_db`` (1.x) or the bucket (2.x, v1 compatibility)."""
    if settings.influx_version == 2:
        return settings.influx_bucket or settings.influx_db
    return settings.influx_db


def auth_options(settings: Settings) -> dict[str, Any]:
    """``headers``/``auth`` for httpx: a 2.x token, or 1.x user and password (never logged)."""
    if settings.influx_token is not None:
        return {"headers": {"Authorization": f"Token {settings.influx_token.get_secret_value()}"}}
    if settings.influx_username:
        pw = settings.influx_password.get_secret_value() if settings.influx_password else ""
        return {"auth": (settings.influx_username, pw)}
    return {}


def _rows(body: dict[str, Any], influxql: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for res in body.get("results", []):
        err = res.get("error")
        if err:
            if "database not found" in err:
                raise DatabaseNotFound(err)
            raise InfluxQueryError(f"InfluxDB rejected {influxql[:200]!r}: {err}")
        for s in res.get("series") or []:
            cols = s.get("columns") or []
            tags = s.get("tags") or {}
            name = s.get("name")
            for values in s.get("values") or []:
                row = dict(zip(cols, values))
                row.update(tags)
                if name is not None:
                    row.setdefault("measurement", name)
                out.append(row)
    if "error" in body:
        raise InfluxQueryError(f"InfluxDB rejected {influxql[:200]!r}: {body['error']}")
    return out


def query(settings: Settings, influxql: str, db: str | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Run InfluxQL on ``/query`` and return one dict per row.

    A row holds the columns (``time`` in epoch **nanoseconds**), the series' tags
    (``GROUP BY``) and ``measurement``. Raises :class:`DatabaseNotFound` /
    :class:`InfluxQueryError`.
    """
    params = {"q": influxql, "db": db or database(settings), "epoch": "ns"}
    try:
        resp = httpx.get(settings.influx_url.rstrip("/") + "/query", params=params, timeout=timeout,
                         **auth_options(settings))
    except httpx.HTTPError as e:
        raise InfluxQueryError(f"cannot reach InfluxDB at {settings.influx_url}: {type(e).__name__}: {e}") from e
    return _check_query(resp, influxql)


async def aquery(
    client: httpx.AsyncClient, settings: Settings, influxql: str, db: str | None = None
) -> list[dict[str, Any]]:
    """:func:`query` on an existing async client (the worker's)."""
    params = {"q": influxql, "db": db or database(settings), "epoch": "ns"}
    try:
        resp = await client.get("/query", params=params)
    except httpx.HTTPError as e:
        raise InfluxQueryError(f"cannot reach InfluxDB at {settings.influx_url}: {type(e).__name__}: {e}") from e
    return _check_query(resp, influxql)


def _check_query(resp: httpx.Response, influxql: str) -> list[dict[str, Any]]:
    if resp.status_code >= 300:
        try:
            body = resp.json()
        except ValueError:
            body = {"error": resp.text[:300]}
        err = str(body.get("error") or resp.text[:300])
        if "database not found" in err:
            raise DatabaseNotFound(err)
        raise InfluxQueryError(f"InfluxDB answered {resp.status_code} to {influxql[:200]!r}: {err}")
    return _rows(resp.json(), influxql)


def write_lines(settings: Settings, lines: Sequence[str], timeout: float = 10.0) -> None:
    """Write line protocol synchronously (tools and tests); raise on any error."""
    resp = httpx.post(
        settings.influx_url.rstrip("/") + "/write",
        params={"db": database(settings), "precision": "ns"},
        content="\n".join(lines).encode(),
        timeout=timeout,
        **auth_options(settings),
    )
    if resp.status_code >= 300:
        raise InfluxQueryError(f"InfluxDB refused the write ({resp.status_code}): {resp.text[:300]}")


def write_records(settings: Settings, records: Iterable[Record]) -> None:
    """Write records synchronously (tools and tests)."""
    lines = to_lines(records)
    if lines:
        write_lines(settings, lines)


# ----------------------------------------------------------------------------- async sink


@dataclass(slots=True)
class _Unit:
    lines: list[str]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class SinkStats:
    """What the sink did (the benchmark and the logs read these)."""

    points: int = 0
    requests: int = 0
    failures: int = 0
    rejected_requests: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=10_000))  # submit -> confirmed, s


class InfluxSink:
    """Batched, retried, bounded asynchronous writer (see module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_batch_points: int = 5000,
        max_pending_points: int = 200_000,
        timeout: float = 10.0,
        max_backoff: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.max_batch_points = max_batch_points
        self.max_pending_points = max_pending_points
        self.timeout = timeout
        self.max_backoff = max_backoff
        self._transport = transport
        self.stats = SinkStats()
        self._queue: deque[_Unit] = deque()
        self._pending_points = 0
        self._wakeup: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None
        self._stopping = False
        self._down_since: float | None = None
        self._last_complaint = 0.0

    @property
    def pending_points(self) -> int:
        return self._pending_points

    @property
    def client(self) -> httpx.AsyncClient:
        """The async HTTP client (also used for the worker's checkpoint queries)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.settings.influx_url.rstrip("/"), timeout=self.timeout, transport=self._transport,
                **auth_options(self.settings),
            )
        return self._client

    async def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._room = asyncio.Event()
            self._room.set()
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="influx-sink")

    async def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (for up to ``timeout`` s), then stop; unwritten units are cancelled."""
        if self._task is None:
            return
        self._stopping = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            log.warning("InfluxDB sink stopped with %d points not written (they will be rewritten after restart)",
                        self._pending_points)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        finally:
            for unit in self._queue:
                if not unit.future.done():
                    unit.future.cancel()
            self._queue.clear()
            self._pending_points = 0
            self._task = None
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    async def submit(self, records: Iterable[Record]) -> asyncio.Future:
        """Queue one unit of records; returns a future resolved when InfluxDB has them.

        Waits (backpressure) while more than ``max_pending_points`` are queued.
        """
        if self._task is None:
            await self.start()
        lines = to_lines(records)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        while self._pending_points and self._pending_points + len(lines) > self.max_pending_points:
            self._room.clear()
            await self._room.wait()
        self._queue.append(_Unit(lines, fut))
        self._pending_points += len(lines)
        self._wakeup.set()
        return fut

    async def flush(self) -> None:
        """Wait until everything submitted so far is written."""
        futures = [u.future for u in self._queue]
        if futures:
            await asyncio.gather(*futures, return_exceptions=True)

    # -- writer task -------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.25
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch: list[_Unit] = []
            n = 0
            for unit in self._queue:
                if batch and n + len(unit.lines) > self.max_batch_points:
                    break
                batch.append(unit)
                n += len(unit.lines)
            ok, retry = await self._post(batch, n) if n else (True, False)
            if not ok and retry:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.25
            now = time.monotonic()
            for unit in batch:
                self._queue.popleft()
                self.stats.latencies.append(now - unit.enqueued)
                if not unit.future.done():
                    unit.future.set_result(len(unit.lines))
            self._pending_points -= n
            if self._pending_points <= self.max_pending_points:
                self._room.set()

    async def _post(self, batch: list[_Unit], n: int) -> tuple[bool, bool]:
        """Write one request: (written, worth retrying)."""
        body = "\n".join(line for u in batch for line in u.lines).encode()
        params = {"db": database(self.settings), "precision": "ns"}
        self.stats.requests += 1
        try:
            resp = await self.client.post("/write", params=params, content=body)
        except httpx.HTTPError as e:
            self._failed(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, n)
            return False, True
        code = resp.status_code
        if code < 300:
            if self._down_since is not None:
                log.info("InfluxDB writes recovered after %.1f s (%d points queued)",
                         time.monotonic() - self._down_since, self._pending_points)
                self._down_since = None
            self.stats.points += n
            return True, False
        text = resp.text.strip()[:300]
        if code == 400:  # a partial write or a bad point: retrying cannot help
            self.stats.rejected_requests += 1
            log.error("InfluxDB refused part of a write of %d points (HTTP 400): %s", n, text)
            return True, False
        hint = ""
        if code == 404:
            hint = f" (does database {database(self.settings)!r} exist?)"
        elif code in (401, 403):
            hint = " (check the InfluxDB credentials/token)"
        self._failed(f"HTTP {code}: {text}{hint}", n)
        return False, True

    def _failed(self, what: str, n: int) -> None:
        self.stats.failures += 1
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._last_complaint = now
            log.warning("InfluxDB write of %d points failed (%s); retrying with backoff, %d points queued, "
                        "consumption pauses at %d", n, what, self._pending_points, self.max_pending_points)
        elif now - self._last_complaint >= 30:
            self._last_complaint = now
            log.warning("InfluxDB still failing for %.0f s (%s); %d points queued",
                        now - self._down_since, what, self._pending_points)
