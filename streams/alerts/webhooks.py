"""Webhook payloads and delivery: signed, retried, one queue per endpoint, never blocking detection.

Payload formats (examples in docs/alerts.md):

- ``json``: driftwatch's own flat JSON object (also the value on the alerts topic);
- ``slack``: a Slack incoming-webhook message (``text`` + Block Kit ``blocks``);
- ``alertmanager``: the Prometheus Alertmanager webhook receiver format (``version: "4"``),
  so tools that accept Alertmanager notifications accept driftwatch's.

Delivery (:class:`Dispatcher`): every target (each webhook, and the alerts Kafka topic)
has its own asyncio task working through its own rows of the durable outbox
(:mod:`streams.alerts.store`) in order, so a slow or dead endpoint delays only its own
deliveries. Each attempt is signed afresh over the unchanged body, carries the
``Idempotency-Key``, and is bounded by the endpoint's timeout. Connection errors,
timeouts, 408, 429 and 5xx are retried with capped exponential backoff and jitter
(``Retry-After`` is honoured up to the cap) until ``give_up_after``; other 4xx answers
fail at once (retrying would not change them). Outcomes go to the outbox (the
``driftwatch alerts deliveries`` log) and, as ``dw_delivery`` Records, to InfluxDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from detectors.records import DELIVERY, T_ENDPOINT, T_MODEL, T_RULE, T_VERSION, Record
from streams.alerts.lifecycle import AlertEvent, iso
from streams.alerts.rules import RuleError, WebhookConfig
from streams.alerts.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign
from streams.alerts.store import AlertStore, OutboxRow
from streams.retry import Backoff

log = logging.getLogger(__name__)

USER_AGENT = "driftwatch-alerts/1"
KAFKA_TARGET = "kafka"
MAX_LOG_TASKS = 1000
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing

RecordWriter = Callable[[list[Record]], Any]  # sync or async; e.g. the InfluxDB sink's write


# Payloads ------------------------------------------------------------------------------
def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str).encode()


def _num(v: Any) -> Any:
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)
    return v


def payload_json(ev: AlertEvent) -> dict[str, Any]:
    """driftwatch's generic JSON (``schema: driftwatch.alert/v1``)."""
    return {
        "schema": "driftwatch.alert/v1",
        "id": ev.id,
        "status": ev.status,
        "key": ev.key,
        "fingerprint": ev.fingerprint,
        "rule": ev.rule,
        "model": ev.model,
        "version": ev.version,
        "severity": ev.severity,
        "summary": ev.summary,
        "description": ev.description,
        "signal": ev.signal,
        "op": ev.op,
        "threshold": _num(ev.threshold),
        "value": _num(ev.value),
        "for_windows": ev.for_windows,
        "consecutive_windows": ev.consecutive,
        "starts_at": iso(ev.starts_at_ns),
        "ends_at": iso(ev.ends_at_ns) if ev.ends_at_ns else None,
        "window_end": iso(ev.window_end_ns),
        "repeat": ev.repeat,
        "silenced": ev.silenced,
        "labels": ev.labels,
        "dashboard_url": ev.dashboard_url,
    }


_SLACK_ICON = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}


def payload_slack(ev: AlertEvent) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (notifications, fallback) and ``blocks``."""
    firing = ev.status == "firing"
    icon = _SLACK_ICON.get(ev.severity, ":bell:") if firing else ":white_check_mark:"
    head = f"{icon} [{ev.status.upper()}{' again' if ev.repeat else ''}] {ev.summary}"
    labels = ", ".join(f"{k}={v}" for k, v in sorted(ev.labels.items()) if k not in ("alertname",))
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{_slack_escape(head)}*\n{_slack_escape(ev.description)}"},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Model*\n{_slack_escape(ev.model)} v{_slack_escape(ev.version)}"},
                {"type": "mrkdwn", "text": f"*Severity*\n{ev.severity}"},
                {"type": "mrkdwn", "text": f"*Signal*\n`{ev.signal} {ev.op} {ev.threshold}`"},
                {"type": "mrkdwn", "text": f"*Value*\n{_num(ev.value)}"},
            ],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(f"{labels} · id {ev.id}")}]},
    ]
    if ev.dashboard_url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open dashboard"},
                        "url": ev.dashboard_url,
                    }
                ],
            }
        )
    return {"text": _slack_escape(head), "blocks": blocks}


def _slack_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload_alertmanager(ev: AlertEvent, receiver: str, external_url: str = "") -> dict[str, Any]:
    """Prometheus Alertmanager webhook format, version 4, one alert per notification."""
    group = {k: ev.labels[k] for k in ("alertname", "model", "version") if k in ev.labels}
    annotations = {
        "summary": ev.summary,
        "description": ev.description,
        "value": str(_num(ev.value)),
        "threshold": f"{ev.op} {ev.threshold}",
    }
    if ev.dashboard_url:
        annotations["dashboard"] = ev.dashboard_url
    return {
        "version": "4",
        "groupKey": "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group.items())) + "}",
        "truncatedAlerts": 0,
        "status": ev.status,
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": dict(ev.labels),
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": ev.status,
                "labels": dict(ev.labels),
                "annotations": annotations,
                "startsAt": iso(ev.starts_at_ns),
                "endsAt": iso(ev.ends_at_ns) if ev.ends_at_ns else ZERO_TIME,
                "generatorURL": ev.dashboard_url or external_url,
                "fingerprint": ev.fingerprint,
            }
        ],
    }


def render_body(ev: AlertEvent, fmt: str, receiver: str = "", external_url: str = "") -> bytes:
    """The exact bytes sent (and signed) for ``ev`` in format ``fmt``."""
    if fmt == "json":
        return _dumps(payload_json(ev))
    if fmt == "slack":
        return _dumps(payload_slack(ev))
    if fmt == "alertmanager":
        return _dumps(payload_alertmanager(ev, receiver, external_url))
    raise ValueError(f"unknown webhook format {fmt!r}")


# Targets -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one try: delivered, or why not and whether trying again may help."""

    ok: bool
    retryable: bool = True
    http_status: int = 0
    error: str = ""
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with jitter: attempt n waits in [d/2, d], d = min(cap, initial·2^(n-1)).

    >>> p = RetryPolicy(1.0, 8.0, 60.0)
    >>> [p.delay(n, rng=lambda: 1.0) for n in (1, 2, 3, 4, 5)]
    [1.0, 2.0, 4.0, 8.0, 8.0]
    >>> p.delay(3, rng=lambda: 0.0)
    2.0
    """

    initial: float = 1.0
    cap: float = 60.0
    give_up_after: float = 86_400.0

    def delay(self, attempts: int, retry_after: float | None = None, rng: Callable[[], float] = random.random) -> float:
        d = Backoff(self.initial, self.cap, jitter=0.5).delay(attempts, rng)
        if retry_after is not None:
            d = max(d, min(retry_after, self.cap))
        return d


class Target(Protocol):
    """A delivery destination: a webhook endpoint or the alerts topic."""

    name: str
    policy: RetryPolicy

    async def send(self, row: OutboxRow, attempt: int) -> Attempt: ...

    async def close(self) -> None: ...


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text[:300]


class WebhookTarget:
    """POSTs signed bodies to one endpoint with its own client, timeout and retry policy."""

    def __init__(self, cfg: WebhookConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.policy = RetryPolicy(cfg.backoff_initial_seconds, cfg.backoff_max_seconds, cfg.give_up_after)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.cfg.timeout_seconds),
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
            )
        return self._client

    async def send(self, row: OutboxRow, attempt: int) -> Attempt:
        # URL and secret are read per attempt: a missing env var is fixed without a restart
        # of the queue's contents, and neither ever appears in a message.
        try:
            url = self.cfg.resolve_url()
            secret = self.cfg.resolve_secret()
        except RuleError as e:
            return Attempt(ok=False, error=str(e))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, row.body),
            IDEMPOTENCY_HEADER: row.event_id,
            "X-Driftwatch-Event": row.event_status,
            "X-Driftwatch-Attempt": str(attempt),
        }
        try:
            resp = await self._http().post(url, content=row.body, headers=headers)
        except httpx.TimeoutException as e:
            return Attempt(ok=False, error=f"timeout after {self.cfg.timeout_seconds:g}s ({type(e).__name__})")
        except httpx.HTTPError as e:
            return Attempt(ok=False, error=_scrub(f"{type(e).__name__}: {e}", [url, secret.decode()]))
        code = resp.status_code
        if 200 <= code < 300:
            return Attempt(ok=True, http_status=code)
        retry_after = None
        with contextlib.suppress(ValueError, TypeError):
            retry_after = float(resp.headers.get("Retry-After", ""))
        retryable = code in (408, 425, 429) or code >= 500
        snippet = _scrub(resp.text[:120].replace("\n", " "), [url, secret.decode()]) if resp.content else ""
        return Attempt(
            ok=False,
            retryable=retryable,
            http_status=code,
            error=f"HTTP {code}" + (f": {snippet}" if snippet else ""),
            retry_after=retry_after,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


Publish = Callable[[bytes, bytes, list[tuple[str, bytes]]], Awaitable[None]]


class KafkaTarget:
    """Publishes announcements to the alerts topic (key = alert key), through the same outbox.

    ``publish(key, value, headers)`` may be given (e.g. the worker's Faust topic send);
    otherwise an aiokafka producer is created from the settings on first use.
    """

    def __init__(
        self,
        settings: Any = None,
        publish: Publish | None = None,
        topic: str | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.name = KAFKA_TARGET
        self.policy = policy or RetryPolicy(0.5, 30.0, 7 * 86_400.0)
        self._settings = settings
        self._publish = publish
        self._topic = topic or (settings.topic_alerts if settings is not None else None)
        self._producer: Any = None

    async def _producer_send(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if self._producer is None:
            from aiokafka import AIOKafkaProducer  # lazy: the CLI never needs it
            from aiokafka.helpers import create_ssl_context

            opts = dict(self._settings.kafka_client_options())
            cafile = opts.pop("ssl_cafile", None)
            if cafile:
                opts["ssl_context"] = create_ssl_context(cafile=cafile)
            producer = AIOKafkaProducer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                acks="all",
                request_timeout_ms=10_000,
                client_id="driftwatch-alerts",
                **opts,
            )
            await producer.start()
            self._producer = producer
        await self._producer.send_and_wait(self._topic, value=value, key=key, headers=headers)

    async def send(self, row: OutboxRow, attempt: int) -> Attempt:
        headers = [(IDEMPOTENCY_HEADER, row.event_id.encode()), ("event", row.event_status.encode())]
        try:
            if self._publish is not None:
                await self._publish(row.alert_key.encode(), row.body, headers)
            else:
                await asyncio.wait_for(self._producer_send(row.alert_key.encode(), row.body, headers), 30)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any broker failure is retried
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()
                self._producer = None
            return Attempt(ok=False, error=f"{type(e).__name__}: {e}"[:300])
        return Attempt(ok=True)

    async def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None


# Dispatcher ----------------------------------------------------------------------------
def delivery_record(row: OutboxRow, latency_ms: float = 0.0) -> Record:
    """The ``dw_delivery`` point of one delivery; rewritten as it progresses (same time and tags)."""
    return Record(
        DELIVERY,
        {T_ENDPOINT: row.target, T_MODEL: row.model, T_VERSION: row.version, T_RULE: row.rule},
        {
            "status": "retrying" if row.status == "pending" and row.attempts else row.status,
            "attempts": int(row.attempts),
            "last_error": row.last_error,
            "http_status": int(row.http_status),
            "latency_ms": float(latency_ms),
            "event": row.event_status,
            "idempotency_key": row.event_id,
            "alert_key": row.alert_key,
        },
        row.created_ns,
    )


class Dispatcher:
    """One asyncio task per target draining its outbox rows in order, with retries.

    Only one dispatcher per store file delivers at a time (an ``flock`` next to it);
    another one waits in standby, so two workers sharing a state_dir do not double-send.
    """

    def __init__(
        self,
        store: AlertStore,
        targets: Sequence[Target],
        *,
        write_records: RecordWriter | None = None,
        idle_poll_seconds: float = 5.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.targets = {t.name: t for t in targets}
        self.write_records = write_records
        self.idle_poll = idle_poll_seconds
        self.rng = rng
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock_file: Any = None
        self._stopping = False
        self._log_tasks: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        for name in self.targets:
            self._wake[name] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._run(name), name=f"alerts-delivery-{name}"))

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the queues (an in-flight attempt gets ``timeout`` s; unfinished rows stay queued)."""
        self._stopping = True
        for ev in self._wake.values():
            ev.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
        if self._log_tasks:  # give the delivery log a moment, then let go
            await asyncio.wait(list(self._log_tasks), timeout=1.0)
            for log_task in list(self._log_tasks):
                log_task.cancel()
        for target in self.targets.values():
            with contextlib.suppress(Exception):
                await target.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def wake(self, names: Sequence[str] | None = None) -> None:
        """Tell target queues that rows were queued (safe from any thread)."""
        if self._loop is None or self._loop.is_closed():
            return
        events = [self._wake[n] for n in (names if names is not None else self._wake) if n in self._wake]

        def _set() -> None:
            for ev in events:
                ev.set()

        try:
            if asyncio.get_running_loop() is self._loop:
                _set()
                return
        except RuntimeError:
            pass
        self._loop.call_soon_threadsafe(_set)

    def _try_lock(self) -> bool:
        if self._lock_file is not None:
            return True
        path = Path(self.store.path).with_suffix(".dispatch.lock")
        f = open(path, "a+")  # noqa: SIM115 - held for the dispatcher's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._lock_file = f
        return True

    async def _wait(self, name: str, seconds: float) -> None:
        ev = self._wake[name]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout=max(0.0, seconds))
        ev.clear()

    async def _emit(self, records: list[Record]) -> None:
        """Hand delivery-log points to ``write_records`` without ever waiting for it.

        An async writer (e.g. the InfluxDB sink's ``submit``, which blocks while InfluxDB is
        down and its queue is full) runs as a background task; at most
        ``MAX_LOG_TASKS`` are in flight, beyond that points are dropped with a warning —
        the outbox in SQLite keeps the full log regardless.
        """
        if self.write_records is None:
            return
        try:
            res = self.write_records(records)
        except Exception as e:  # the delivery log must never stop deliveries
            log.warning("alerts: could not write %d delivery record(s): %s", len(records), e)
            return
        if not inspect.isawaitable(res):
            return
        if len(self._log_tasks) >= MAX_LOG_TASKS:
            if inspect.iscoroutine(res):
                res.close()
            log.warning("alerts: delivery log writer is behind; %d point(s) not written to InfluxDB", len(records))
            return
        task = asyncio.ensure_future(res)
        self._log_tasks.add(task)
        task.add_done_callback(self._log_done)

    def _log_done(self, task: asyncio.Future[Any]) -> None:
        self._log_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("alerts: could not write delivery records: %s", task.exception())

    async def _run(self, name: str) -> None:
        target = self.targets[name]
        while not self._stopping:
            if not self._try_lock():
                await self._wait(name, self.idle_poll)
                continue
            try:
                row = self.store.head(name)
            except Exception as e:
                log.error("alerts: cannot read the outbox: %s", e)
                await self._wait(name, self.idle_poll)
                continue
            if row is None:
                await self._wait(name, self.idle_poll)
                continue
            now = time.time_ns()
            if row.next_attempt_ns > now:
                await self._wait(name, (row.next_attempt_ns - now) / 1e9)
                continue
            if row.attempts and now - row.created_ns > target.policy.give_up_after * 1e9:
                row = self.store.record_attempt(
                    row.id,
                    status="failed",
                    attempts=row.attempts,
                    last_error=f"gave up after "
                    f"{row.attempts} attempts over {target.policy.give_up_after:g}s; last: {row.last_error}",
                    http_status=row.http_status,
                )
                log.error("alerts: delivery %s to %s failed for good: %s", row.event_id, name, row.last_error)
                await self._emit([delivery_record(row)])
                continue
            attempt = row.attempts + 1
            try:
                res = await target.send(row, attempt)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a target bug must not kill its queue
                res = Attempt(ok=False, error=f"{type(e).__name__}: {e}"[:300])
            done = time.time_ns()
            if res.ok:
                row = self.store.record_attempt(
                    row.id, status="delivered", attempts=attempt, http_status=res.http_status, last_error=row.last_error
                )
                log.info("alerts: %s %s delivered to %s (attempt %d)", row.event_status, row.alert_key, name, attempt)
            elif res.retryable:
                delay = target.policy.delay(attempt, res.retry_after, self.rng)
                row = self.store.record_attempt(
                    row.id,
                    status="pending",
                    attempts=attempt,
                    next_attempt_ns=done + int(delay * 1e9),
                    last_error=res.error,
                    http_status=res.http_status,
                )
                log.warning(
                    "alerts: delivery to %s failed (attempt %d, retry in %.1fs): %s", name, attempt, delay, res.error
                )
            else:
                row = self.store.record_attempt(
                    row.id, status="failed", attempts=attempt, last_error=res.error, http_status=res.http_status
                )
                log.error("alerts: delivery to %s rejected, not retried: %s", name, res.error)
            await self._emit([delivery_record(row, (done - row.created_ns) / 1e6)])

    async def drain(self, timeout: float) -> bool:
        """Wait until no delivery is pending (tests, graceful shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.store.pending_count() == 0:
                return True
            await asyncio.sleep(0.05)
        return self.store.pending_count() == 0
