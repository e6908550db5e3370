"""Write :class:`~detectors.records.Record` s to InfluxDB, off the hot path; query it back.

Writes speak each server's own API (``Settings.influx_version``):

* **1.x**: ``POST /write?db=…&precision=ns`` with line protocol (httpx; optional
  user/password as HTTP basic auth);
* **2.x**: ``POST /api/v2/write?org=…&bucket=…&precision=ns`` through
  influxdb-client's ``WriteApi`` (``SYNCHRONOUS``; the sink already batches), called
  in the sink's own thread so the event loop never waits on it, ``Authorization:
  Token …``. The body is byte for byte the line protocol the 1.x path sends.

Queries use InfluxQL on the v1 ``/query`` endpoint for both: 1.x natively, 2.x through
its v1 compatibility API (database = bucket name, ``Authorization: Token …``; 2.7+
maps every bucket automatically, older 2.x need ``influx v1 dbrp create``), and 3.x
too. docs/influxdb.md explains the choice.

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
a field type conflict; 2.x answers 422 for points outside the bucket's retention)
cannot be fixed by retrying: it is logged with
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
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from detectors.errors import ConfigurationError
from detectors.records import Record
from streams.influx import client as influx_client
from streams.influx.client import (  # noqa: F401 - the errors are re-exported: callers catch them from here
    DatabaseNotFound,
    InfluxQueryError,
    InfluxTarget,
    InfluxUnavailable,
)
from streams.retry import Backoff
from streams.settings import Settings

if TYPE_CHECKING:  # influxdb-client is imported where it is used: it costs ~0.5 s of start-up
    from concurrent.futures import ThreadPoolExecutor

    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import WriteApi

log = logging.getLogger(__name__)


class InfluxConfigError(ConfigurationError):
    """The settings cannot work (e.g. InfluxDB 2.x without a token or organisation)."""


# ----------------------------------------------------------------------------- line protocol

_MEAS_ESC = str.maketrans({",": "\\,", " ": "\\ ", "\n": " "})
_KEY_ESC = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": " "})


def _escape_key(s: str) -> str:
    return s.translate(_KEY_ESC)


def _field_value(v: Any) -> str | None:
    """Line-protocol text of a field value, or None to leave the field out."""
    t = type(v)  # fast path for the plain Python types detectors produce (~1,400 fields per window)
    if t is float:
        return repr(v) if math.isfinite(v) else None
    if t is int:
        return repr(float(v))
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
    values = record.fields
    for k in sorted(values):
        text = _field_value(values[k])
        if text is not None:
            fields.append(_escaped_name(k) + "=" + text)
    if not fields:
        return None
    head = record.measurement.translate(_MEAS_ESC)
    tags = record.tags
    for k in sorted(tags):
        v = tags[k]
        if v is None or v == "":
            continue
        head += "," + _escaped_name(k) + "=" + _escape_key(str(v))
    return f"{head} {','.join(fields)} {int(record.time_ns)}"


_NAME_CACHE: dict[str, str] = {}


def _escaped_name(k: str) -> str:
    """:func:`_escape_key` of a field or tag *name* (a small, fixed vocabulary: cached)."""
    e = _NAME_CACHE.get(k)
    if e is None:
        if len(_NAME_CACHE) > 10_000:  # names are bounded by design; stay bounded regardless
            _NAME_CACHE.clear()
        e = _NAME_CACHE[k] = _escape_key(k)
    return e


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
    return InfluxTarget.from_settings(settings).db


def v2_target(settings: Settings) -> tuple[str, str]:
    """``(org, bucket)`` of InfluxDB 2.x writes; :class:`InfluxConfigError` if the token or org is missing.

    >>> v2_target(Settings(influx_version=2, influx_token="t", influx_org="o", influx_bucket="b"))
    ('o', 'b')
    """
    _token, org = _v2_credentials(settings)
    return org, database(settings)


def _v2_credentials(settings: Settings) -> tuple[str, str]:
    """``(token, org)`` of InfluxDB 2.x; :class:`InfluxConfigError` naming what is missing."""
    token = settings.influx_token.get_secret_value() if settings.influx_token is not None else ""
    org = settings.influx_org or ""
    missing = [
        name for name, value in (("DRIFTWATCH_INFLUX_TOKEN", token), ("DRIFTWATCH_INFLUX_ORG", org)) if not value
    ]
    if missing:
        raise InfluxConfigError(
            f"InfluxDB 2.x (DRIFTWATCH_INFLUX_VERSION=2) needs {' and '.join(missing)} "
            "(the bucket is DRIFTWATCH_INFLUX_BUCKET, else DRIFTWATCH_INFLUX_DB)"
        )
    return token, org


def v2_client(settings: Settings, timeout: float = 10.0) -> InfluxDBClient:
    """An influxdb-client ``InfluxDBClient`` for 2.x (imported here: it costs ~0.5 s of start-up).

    No client-side retries (the sink retries with its own backoff), no gzip.
    """
    token, org = _v2_credentials(settings)
    from influxdb_client import InfluxDBClient

    return InfluxDBClient(
        url=settings.influx_url.rstrip("/"),
        token=token,
        org=org,
        timeout=int(timeout * 1000),
        retries=False,
    )


def v2_error(exc: Exception) -> tuple[int, str] | str:
    """An influxdb-client write error as ``(HTTP status, InfluxDB's message)``, or a transport failure text.

    InfluxDB 2.x answers errors as JSON ``{"code": …, "message": …}``; the message is
    kept, the response headers (which the exception's ``str`` would print) are not.
    """
    status = getattr(exc, "status", None)
    if status:  # influxdb_client.rest.ApiException carrying an HTTP answer
        text = getattr(exc, "message", None) or getattr(exc, "body", None) or getattr(exc, "reason", None) or ""
        return int(status), str(text).strip()[:300]
    detail = str((getattr(exc, "reason", None) if status == 0 else None) or exc).strip()  # 0: TLS, request prep
    first = detail.splitlines()[0] if detail else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _v2_transport_errors() -> tuple[type[Exception], ...]:
    import urllib3
    from influxdb_client.rest import ApiException

    return (ApiException, urllib3.exceptions.HTTPError, OSError)


def auth_options(settings: Settings) -> dict[str, Any]:
    """``headers``/``auth`` for httpx: a 2.x token, or 1.x user and password (never logged)."""
    return InfluxTarget.from_settings(settings).auth_options()


def query(settings: Settings, influxql: str, db: str | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Run InfluxQL on ``/query`` and return one dict per row (:func:`streams.influx.client.query`).

    A row holds the columns (``time`` in epoch **nanoseconds**), the series' tags
    (``GROUP BY``) and ``measurement``. Raises :class:`DatabaseNotFound` /
    :class:`InfluxQueryError` (:class:`InfluxUnavailable` when InfluxDB cannot be reached).
    """
    return influx_client.query(InfluxTarget.from_settings(settings), influxql, db=db, timeout=timeout)


async def aquery(
    client: httpx.AsyncClient, settings: Settings, influxql: str, db: str | None = None
) -> list[dict[str, Any]]:
    """:func:`query` on an existing async client (the worker's)."""
    return await influx_client.aquery(client, InfluxTarget.from_settings(settings), influxql, db=db)


def write_lines(settings: Settings, lines: Sequence[str], timeout: float = 10.0) -> None:
    """Write line protocol synchronously (tools and tests); raise on any error.

    2.x: ``/api/v2/write`` through influxdb-client; 1.x: ``/write``.
    """
    if settings.influx_version == 2:
        org, bucket = v2_target(settings)
        from influxdb_client.client.write_api import SYNCHRONOUS

        with v2_client(settings, timeout) as client:
            try:
                client.write_api(write_options=SYNCHRONOUS).write(
                    bucket=bucket, org=org, record="\n".join(lines).encode(), write_precision="ns"
                )
            except _v2_transport_errors() as e:
                err = v2_error(e)
                if isinstance(err, str):
                    raise InfluxQueryError(f"cannot reach InfluxDB at {settings.influx_url}: {err}") from None
                raise InfluxQueryError(f"InfluxDB refused the write ({err[0]}): {err[1]}") from None
        return
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
        self._wakeup = asyncio.Event()  # both made again by start(), for the running loop
        self._room = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None
        self._stopping = False
        self._down_since: float | None = None
        self._last_complaint = 0.0
        self._v2: tuple[InfluxDBClient, WriteApi] | None = None  # made in the writer thread
        self._v2_executor: ThreadPoolExecutor | None = None
        if settings.influx_version == 2:
            self._v2_org, self._v2_bucket = v2_target(settings)  # fail at start, not at the first window

    @property
    def pending_points(self) -> int:
        return self._pending_points

    @property
    def client(self) -> httpx.AsyncClient:
        """The async HTTP client (also used for the worker's checkpoint queries)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.settings.influx_url.rstrip("/"),
                timeout=self.timeout,
                transport=self._transport,
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
        if self._task is None:  # never started: its clients may still have been used (``client`` for queries)
            await self._close_clients()
            return
        self._stopping = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.warning(
                "InfluxDB sink stopped with %d points not written (they will be rewritten after restart)",
                self._pending_points,
            )
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            for unit in self._queue:
                if not unit.future.done():
                    unit.future.cancel()
            self._queue.clear()
            self._pending_points = 0
            self._task = None
            await self._close_clients()

    async def _close_clients(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._v2_executor is not None:
            executor, self._v2_executor = self._v2_executor, None
            await asyncio.get_running_loop().run_in_executor(executor, self._close_v2)
            executor.shutdown(wait=False)

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
        retry = Backoff(0.25, self.max_backoff)
        delays = retry.delays()
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
            ok, again = await self._post(batch, n) if n else (True, False)
            if not ok and again:
                await asyncio.sleep(next(delays))
                continue
            delays = retry.delays()
            now = time.monotonic()
            for unit in batch:
                self._queue.popleft()
                self.stats.latencies.append(now - unit.enqueued)
                if not unit.future.done():
                    unit.future.set_result(len(unit.lines))
            self._pending_points -= n
            if self._pending_points <= self.max_pending_points:
                self._room.set()

    async def _send_v1(self, body: bytes) -> tuple[int, str] | str:
        """``POST /write`` (1.x): (status, text), or the transport failure."""
        params = {"db": database(self.settings), "precision": "ns"}
        try:
            resp = await self.client.post("/write", params=params, content=body)
        except httpx.HTTPError as e:
            return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return resp.status_code, (resp.text.strip()[:300] if resp.status_code >= 300 else "")

    async def _send_v2(self, body: bytes) -> tuple[int, str] | str:
        """``POST /api/v2/write`` (2.x) through influxdb-client, in the sink's own thread."""
        if self._v2_executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._v2_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="influx-v2-write")
        try:
            await asyncio.get_running_loop().run_in_executor(self._v2_executor, self._write_v2, body)
        except _v2_transport_errors() as e:  # an HTTP answer (ApiException) or no answer at all
            return v2_error(e)
        return 204, ""

    def _write_v2(self, body: bytes) -> None:
        """Blocking write (runs in the sink's thread; the client is created there on first use)."""
        if self._v2 is None:
            from influxdb_client.client.write_api import SYNCHRONOUS

            client = v2_client(self.settings, self.timeout)
            self._v2 = (client, client.write_api(write_options=SYNCHRONOUS))
        self._v2[1].write(
            bucket=self._v2_bucket,
            org=self._v2_org,
            record=body,
            write_precision="ns",  # type: ignore[arg-type]  # influxdb-client's WritePrecision.NS is a str too
        )

    def _close_v2(self) -> None:
        if self._v2 is not None:
            client, self._v2 = self._v2[0], None
            client.close()

    async def _post(self, batch: list[_Unit], n: int) -> tuple[bool, bool]:
        """Write one request: (written, worth retrying)."""
        body = "\n".join(line for u in batch for line in u.lines).encode()
        self.stats.requests += 1
        sent = await (self._send_v2(body) if self.settings.influx_version == 2 else self._send_v1(body))
        if isinstance(sent, str):  # no answer: connection refused, timeout, ...
            self._failed(sent, n)
            return False, True
        code, text = sent
        if code < 300:
            if self._down_since is not None:
                log.info(
                    "InfluxDB writes recovered after %.1f s (%d points queued)",
                    time.monotonic() - self._down_since,
                    self._pending_points,
                )
                self._down_since = None
            self.stats.points += n
            return True, False
        if code in (400, 422):  # a partial write or a bad point (2.x: 422 = outside retention): retrying cannot help
            self.stats.rejected_requests += 1
            log.error("InfluxDB refused part of a write of %d points (HTTP %d): %s", n, code, text)
            return True, False
        hint = ""
        if code == 404:
            what = "bucket" if self.settings.influx_version == 2 else "database"
            hint = f" (does {what} {database(self.settings)!r} exist?)"
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
            log.warning(
                "InfluxDB write of %d points failed (%s); retrying with backoff, %d points queued, "
                "consumption pauses at %d",
                n,
                what,
                self._pending_points,
                self.max_pending_points,
            )
        elif now - self._last_complaint >= 30:
            self._last_complaint = now
            log.warning(
                "InfluxDB still failing for %.0f s (%s); %d points queued",
                now - self._down_since,
                what,
                self._pending_points,
            )
