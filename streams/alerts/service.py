"""The worker's entry point to alerting: evaluate each closed window, queue announcements.

Wiring (``streams/worker/agents.py`` and ``streams/worker/pipeline.py`` do this)::

    alerting = Alerting(monitors, settings, write_records=sink.submit)  # InfluxDB sink
    await alerting.start()                      # starts the delivery queues
    ...
    # for every closed window of (model, version), with its Records, in closing order:
    alert_records = alerting.on_window(model_id, version, records, window_end_ns)
    await sink.submit(records + alert_records)  # dw_alert points go with the window's points
    ...
    await alerting.stop()

:meth:`Alerting.on_window` is synchronous and never touches the network: it evaluates
the model's rules, advances each alert's lifecycle, and in one SQLite transaction saves
the states and queues one outbox row per target (the alerts topic and every routed
webhook). The delivery tasks pick the rows up at once; a dead endpoint only delays its
own queue. A window replayed after a crash (same or older ``window_end_ns``) is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from detectors.records import ALERT, T_MODEL, T_RULE, T_SEVERITY, T_VERSION, Record
from streams.alerts.lifecycle import AlertEvent, AlertState, Step, advance
from streams.alerts.partitions import AlertPartitions
from streams.alerts.rules import SEVERITIES, AlertRule, SilenceConfig, WebhookConfig, evaluate
from streams.alerts.store import AlertStore, Silence, default_path
from streams.alerts.webhooks import (
    KAFKA_TARGET,
    Dispatcher,
    KafkaTarget,
    Publish,
    RecordWriter,
    Target,
    WebhookTarget,
    _dumps,
    payload_json,
    render_body,
)

log = logging.getLogger(__name__)


#: dashboard page (url path, dashboard/ui.py PAGES) that shows each signal
DASHBOARD_PAGES = {
    "drift": "drift",
    "dw_drift": "drift",
    "drift_summary": "drift",
    "dw_drift_summary": "drift",
    "prediction": "drift",
    "dw_prediction": "drift",
    "quality": "quality",
    "dw_quality": "quality",
    "performance": "performance",
    "dw_performance": "performance",
    "adversarial": "adversarial",
    "dw_adversarial": "adversarial",
    "source": "adversarial",
    "dw_source": "adversarial",
    "window": "overview",
    "dw_window": "overview",
    "deadletter": "overview",
    "dw_deadletter": "overview",
}


def config_silences(silences: Iterable[SilenceConfig]) -> list[Silence]:
    """The config file's silences as :class:`Silence` objects (source ``config``)."""
    out = []
    for i, s in enumerate(silences):
        starts = int(s.starts.timestamp() * 1e9) if s.starts else 0
        out.append(
            Silence(
                id=f"config-{i}",
                matchers=dict(s.match),
                starts_ns=starts,
                ends_ns=int(s.until.timestamp() * 1e9),
                comment=s.comment,
                source="config",
            )
        )
    return out


def alert_record(state: AlertState, series: dict[str, str], threshold: Any) -> Record:
    """The ``dw_alert`` point of one alert in one window (fields keep one type each)."""
    tags = {**series, T_MODEL: state.model, T_VERSION: state.version, T_RULE: state.rule, T_SEVERITY: state.severity}
    fields: dict[str, Any] = {
        "status": state.status,
        "firing": 1 if state.status == "firing" else 0,
        "consecutive": int(state.consecutive),
        "summary": state.summary,
        "key": state.key,
        "silenced": bool(state.silenced),
        "notified": bool(state.notified),
    }
    v = state.value
    if isinstance(v, (bool, int, float)):
        fields["value"] = float(v)
    else:
        fields["value_str"] = str(v)
    if isinstance(threshold, (bool, int, float)):
        fields["threshold"] = float(threshold)
    else:
        fields["threshold_str"] = str(threshold)
    return Record(ALERT, tags, fields, state.last_window_ns)


class Alerting:
    """Rules → lifecycle → durable outbox → delivery queues, for one worker process.

    ``monitors`` is a :class:`streams.worker.monitors.MonitorsConfig`; ``settings`` a
    :class:`streams.settings.Settings` (state_dir, alerts topic, Kafka, dashboard port).
    ``write_records`` receives ``dw_delivery`` Records as deliveries progress (sync or
    async callable). ``publish(key, value, headers)`` replaces the built-in aiokafka
    producer for the alerts topic (``publish=False`` disables the topic, for tests).

    ``partitions``: an :class:`~streams.alerts.partitions.AlertPartitions` — the worker's —
    keeps the alert state per input partition in Kafka, so it follows the partition to any
    host (windows are then evaluated with their ``partition``); without it (tests, one
    process) the state lives in the local store. The store always holds the outbox (each
    worker delivers what it queued), the silences, and a copy of the states of the
    partitions this worker owns (``driftwatch alerts list``).
    """

    def __init__(
        self,
        monitors: Any,
        settings: Any,
        *,
        write_records: RecordWriter | None = None,
        publish: Publish | bool | None = None,
        store_path: Path | str | None = None,
        dashboard_url: str | None = None,
        clock_ns: Any = time.time_ns,
        retention_seconds: float = 7 * 86_400.0,
        partitions: AlertPartitions | None = None,
    ) -> None:
        self.monitors = monitors
        self.settings = settings
        self.webhooks: dict[str, WebhookConfig] = {w.name: w for w in getattr(monitors, "webhooks", [])}
        self._config_silences = config_silences(getattr(monitors, "silences", []))
        base = dashboard_url or getattr(monitors, "dashboard_url", None)
        if base is None and settings is not None:
            base = f"http://127.0.0.1:{settings.dashboard_port}"
        self.dashboard_base = (base or "").rstrip("/")
        self.store = AlertStore(store_path or default_path(settings.state_dir))
        self.partitions = partitions
        self.clock_ns = clock_ns
        targets: list[Target] = [WebhookTarget(w) for w in self.webhooks.values()]
        self.topic_enabled = publish is not False
        if self.topic_enabled:
            targets.insert(0, KafkaTarget(settings, publish=publish if callable(publish) else None))
        self.dispatcher = Dispatcher(self.store, targets, write_records=write_records)
        self.retention_seconds = retention_seconds
        self._started = False
        self._pruner: asyncio.Task[None] | None = None

    # lifecycle of the service ---------------------------------------------------------
    async def start(self) -> None:
        """Start the delivery queues (rows left by a previous run are delivered first)."""
        if not self._started:
            await self.dispatcher.start()
            self._pruner = asyncio.create_task(self._prune_forever(), name="alerts-prune")
            self._started = True
            pending = self.store.pending_count()
            if pending:
                log.info("alerts: %d deliveries pending from the previous run", pending)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop delivering; undelivered rows stay in the store for the next start."""
        if self._started:
            if self._pruner is not None:
                self._pruner.cancel()
                await asyncio.gather(self._pruner, return_exceptions=True)
            await self.dispatcher.stop(timeout)
            self._started = False
        if self.partitions is not None:  # the last checkpoint of the alert state
            await self.partitions.close()
        self.store.close()

    async def _prune_forever(self, every: float = 3600.0) -> None:
        """Forget finished deliveries, resolved alerts and expired silences after the retention."""
        while True:
            try:
                cutoff = self.clock_ns() - int(self.retention_seconds * 1e9)
                n = self.store.prune(cutoff)
                if self.partitions is not None:
                    n += self.partitions.prune(cutoff)
                if n:
                    log.info("alerts: pruned %d old rows from the alert store", n)
            except Exception as e:  # housekeeping must not stop the worker
                log.warning("alerts: pruning the alert store failed: %s", e)
            await asyncio.sleep(every)

    async def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued delivery is done (delivered or failed)."""
        return await self.dispatcher.drain(timeout)

    # evaluation ----------------------------------------------------------------------------
    def rules_for(self, model: str) -> list[AlertRule]:
        m = self.monitors.model(model)
        return list(m.alerts) if m is not None else []

    def active_silences(self, now_ns: int | None = None) -> list[Silence]:
        now = self.clock_ns() if now_ns is None else now_ns
        return [s for s in (*self._config_silences, *self.store.silences(now_ns=now)) if s.active(now)]

    def dashboard_link(self, model: str, version: str, series: dict[str, str], signal: str = "") -> str | None:
        """Where to look: the dashboard page of the signal, filtered to the model, version and feature.

        >>> a = Alerting.__new__(Alerting); a.dashboard_base = "http://d:8501"
        >>> a.dashboard_link("iris", "2", {"feature": "petal"}, "drift.p_value")
        'http://d:8501/drift?model=iris&version=2&feature=petal'
        """
        if not self.dashboard_base:
            return None
        page = DASHBOARD_PAGES.get(signal.partition(".")[0], "alerts")
        q = {"model": model, "version": version}
        if "feature" in series:
            q["feature"] = series["feature"]
        return f"{self.dashboard_base}/{page}?{urlencode(q)}"

    # alert state per partition (the worker) ----------------------------------------------
    async def restore_partitions(self, partitions: Iterable[int]) -> None:
        """Partitions new to this worker: their alert state from Kafka, before any of their windows is evaluated
        (and the local copy for ``driftwatch alerts list``)."""
        if self.partitions is None or self.partitions.closed:  # stopping: the next owner restores them
            return
        for p in await self.partitions.restore(partitions):
            for model, version in self.partitions.models(p):
                self.store.replace_states(model, version, self.partitions.view(p, model, version).alerts.values())

    def owns(self, partition: int) -> bool:
        """Whether windows of ``partition`` may be evaluated here (its alert state is here)."""
        return self.partitions is None or self.partitions.owns(partition)

    async def sync(self, partition: int) -> None:
        """Before a window's results are written: its alert state is in Kafka if the window changed a status."""
        if self.partitions is not None:
            await self.partitions.sync(partition)

    async def flush(self) -> None:
        """The 1 s timer: checkpoint the alert state that changed since."""
        if self.partitions is not None:
            await self.partitions.flush()

    async def revoke_partitions(self, partitions: Iterable[int]) -> None:
        """Partitions leave this worker: their alert state goes to Kafka for the next owner and is forgotten here."""
        if self.partitions is None or self.partitions.closed:  # stopped: the last checkpoint is written
            return
        for model, version in await self.partitions.revoke(partitions):
            self.store.replace_states(model, version, ())

    # evaluation ----------------------------------------------------------------------------
    def on_window(
        self,
        model: str,
        version: str,
        records: Sequence[Record],
        window_end_ns: int | None = None,
        partition: int | None = None,
    ) -> list[Record]:
        """Evaluate one closed window; queue announcements; return its ``dw_alert`` Records.

        ``window_end_ns`` defaults to the latest ``time_ns`` among ``records``; it must grow
        from one window of a (model, version) to the next, as the InfluxDB points' times do.
        ``partition``: the input partition of the model's events (with ``partitions``, its
        state is used and updated; the caller then awaits :meth:`sync` before writing the
        window's results). Never blocks on the network; raises
        :class:`~streams.alerts.store.StoreError` only if the local store cannot be written.
        """
        rules = self.rules_for(model)
        if not rules:
            return []
        version = str(version)
        if window_end_ns is None:
            window_end_ns = max((r.time_ns for r in records), default=0)
        by_partition = self.partitions is not None and partition is not None
        if by_partition:
            assert self.partitions is not None and partition is not None
            held = self.partitions.view(partition, model, version)
            mark, previous = held.last_window_ns, dict(held.alerts)
        else:
            mark, previous = self.store.last_window(model, version), self.store.states(model, version)
        if window_end_ns <= mark:
            log.info("alerts: window %s/%s@%d already evaluated, skipped", model, version, window_end_ns)
            return []
        observations = evaluate(rules, records, model, version, window_end_ns)
        now = self.clock_ns()
        silences = self.active_silences(now)
        steps: list[tuple[Step, dict[str, str]]] = []
        for obs in observations:
            silenced = any(s.matches(obs.labels) for s in silences)
            steps.append((advance(previous.get(obs.key), obs, now_ns=now, silenced=silenced), obs.series))
        outbox: list[dict[str, Any]] = []
        events: list[AlertEvent] = []
        for step, series in steps:
            if step.event is None:
                continue
            ev = replace(step.event, dashboard_url=self.dashboard_link(model, version, series, step.event.signal))
            events.append(ev)
            outbox.extend(self._route(ev))
        states = [s.state for s, _ in steps]
        ids = self.store.commit_window(model, version, window_end_ns, states, outbox)
        if by_partition:
            assert self.partitions is not None and partition is not None
            urgent = bool(events) or any(s.changed for s, _ in steps)
            self.partitions.update(partition, model, version, window_end_ns, states, urgent)
        if ids:
            self.dispatcher.wake(sorted({row["target"] for row in outbox}))
        for ev in events:
            log.info("alerts: %s %s%s: %s", ev.status, ev.key, " (silenced)" if not ev.notify else "", ev.summary)
        threshold = {r.name: r.threshold for r in rules}
        return [
            alert_record(s.state, series, threshold[s.state.rule])
            for s, series in steps
            if s.state.status in ("pending", "firing") or s.changed
        ]

    def _route(self, ev: AlertEvent) -> list[dict[str, Any]]:
        """One outbox row per target that should receive ``ev``."""
        base = {
            "event_id": ev.id,
            "event_status": ev.status,
            "alert_key": ev.key,
            "model": ev.model,
            "version": ev.version,
            "rule": ev.rule,
            "severity": ev.severity,
        }
        rows = []
        if self.topic_enabled and ev.repeat == 0:  # the topic records transitions, not reminders
            rows.append({**base, "target": KAFKA_TARGET, "body": _dumps(payload_json(ev))})
        if not ev.notify:
            return rows
        sev = SEVERITIES.index(ev.severity)
        for name, w in self.webhooks.items():
            if ev.webhooks is not None and name not in ev.webhooks:
                continue
            if sev < SEVERITIES.index(w.min_severity):
                continue
            if ev.status == "resolved" and not w.send_resolved:
                continue
            body = render_body(ev, w.format, receiver=name, external_url=self.dashboard_base)
            rows.append({**base, "target": name, "body": body})
        return rows
