"""Alert state per input partition, checkpointed to a compacted Kafka topic: it follows its partition.

A model's windows are evaluated by the worker that owns the model's partition (the SDK keys
messages by model id). What the alert lifecycle remembers between windows — per model and
version, every alert's :class:`~streams.alerts.lifecycle.AlertState` (status, consecutive
breaching windows, since when it fires, whether the firing was notified, repeats) and the
*last evaluated window* mark — is held here per input partition and written to the
**alert-state changelog** (``<consumer_group>-<topic_inferences>-alerts-changelog``,
``topic_partitions`` partitions, compacted; key ``p<partition>``, the chunked generations of
:class:`streams.worker.changelog_store.ChangelogStore`). So it moves with the partition to
any worker on any host, with or without a shared ``state_dir``:

* **restore** — a worker that gets a partition reads the partition's newest checkpoint
  before it evaluates any window of it (:meth:`AlertPartitions.restore`, called with the
  label join's restore at the partition's first batch);
* **checkpoint before the window's results are written** — a window whose evaluation
  announced something (firing, resolved, a repeat) or changed an alert's status is
  checkpointed, and the broker has acknowledged it, before the window's points (with its
  ``dw_window`` checkpoint) go to InfluxDB (:meth:`AlertPartitions.sync`). A new owner
  resumes its windows after the last written one, so it never evaluates a window whose
  announcement the state does not hold (no second firing) and never skips one whose state
  change is missing (no lost resolve). Windows that changed nothing but counters and values
  are written by the 1 s timer (:meth:`AlertPartitions.flush`), at a rebalance
  (:meth:`AlertPartitions.revoke`, before the partition is handed over) and at shutdown;
* a **sharded model** (docs/scale-out.md) is evaluated by its merge step, on a partition of the
  partials topic, whose numbers collide with the input partitions': its state is held in a
  slot of its own, :func:`merge_slot` (key ``m<partition>``), which follows the partials
  partition the way ``p<partition>`` follows an input partition;
* the **idempotency key** of an announcement (:func:`streams.alerts.lifecycle.event_id`) is
  made of the alert key, the window end at which it fired, the status and the repeat count —
  all in the checkpoint — so it is the same whichever worker announces it.

Blob format: zlib-compressed JSON ``{"format": 1, "saved_at", "versions": [{"model", "version",
"last_window_ns", "alerts": [AlertState.to_dict(), ...]}]}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.alerts.lifecycle import AlertState
from streams.settings import Settings

log = logging.getLogger(__name__)

_FORMAT = 1


def changelog_topic(settings: Settings) -> str:
    """The topic the alert state of a consumer group is checkpointed to (the state goes with the group's offsets).

    >>> changelog_topic(Settings(topic_inferences="x.inferences", consumer_group="g"))
    'g-x.inferences-alerts-changelog'
    """
    return f"{settings.consumer_group}-{settings.topic_inferences}-alerts-changelog"


def ensure_changelog_topic(settings: Settings) -> str:
    """Create the alert-state changelog topic (``topic_partitions`` partitions, compacted) if missing."""
    from streams.worker.changelog_store import ensure_compacted_topic

    return ensure_compacted_topic(settings, changelog_topic(settings), settings.topic_partitions)


def alert_changelog(settings: Settings):
    """The :class:`~streams.worker.changelog_store.ChangelogStore` of the alert state."""
    from streams.worker.changelog_store import ChangelogStore

    return ChangelogStore(settings, changelog_topic(settings), name="driftwatch-alert-changelog")


MERGE_SLOTS = 1 << 20
"""Slots from here on hold the alert state of a partials-topic partition (:func:`merge_slot`); below, input partitions."""


def merge_slot(partition: int) -> int:
    """The alert-state slot of partials-topic partition ``partition`` (where sharded models are merged and
    evaluated): a namespace of its own, so it never takes the state of input partition ``partition``.

    >>> AlertPartitions.key(merge_slot(3)), AlertPartitions.key(3), AlertPartitions.route(merge_slot(3))
    ('m3', 'p3', 3)
    """
    if not 0 <= int(partition) < MERGE_SLOTS:
        raise ValueError(f"partition {partition} out of range [0, {MERGE_SLOTS})")
    return MERGE_SLOTS + int(partition)


@dataclass
class VersionState:
    """The alert state of one model version: the last evaluated window and the alerts that are not inactive."""

    last_window_ns: int = 0
    alerts: dict[str, AlertState] = field(default_factory=dict)


Versions = dict[tuple[str, str], VersionState]


def encode(versions: Versions, saved_at: float | None = None) -> bytes:
    """A partition's alert state as a checkpoint blob (:func:`decode` reads it).

    >>> st = AlertState("k", "m", "1", "r", "warning", {}, status="firing", firing_since_ns=5)
    >>> back = decode(encode({("m", "1"): VersionState(7, {"k": st})}))
    >>> back[("m", "1")].last_window_ns, back[("m", "1")].alerts["k"] == st
    (7, True)
    """
    doc = {
        "format": _FORMAT,
        "saved_at": time.time() if saved_at is None else saved_at,
        "versions": [
            {
                "model": m,
                "version": v,
                "last_window_ns": vs.last_window_ns,
                "alerts": [a.to_dict() for a in vs.alerts.values()],
            }
            for (m, v), vs in sorted(versions.items())
        ],
    }
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)


def decode(blob: bytes) -> Versions:
    """Inverse of :func:`encode` (ValueError: not an alert-state checkpoint of a known format)."""
    try:
        doc = json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as e:
        raise ValueError(f"not an alert-state checkpoint: {e}") from None
    if doc.get("format") != _FORMAT:
        raise ValueError(f"unknown alert-state checkpoint format {doc.get('format')!r}")
    out: Versions = {}
    for d in doc["versions"]:
        alerts = (AlertState.from_dict(a) for a in d["alerts"])
        out[(str(d["model"]), str(d["version"]))] = VersionState(int(d["last_window_ns"]), {a.key: a for a in alerts})
    return out


class AlertPartitions:
    """The alert state of the input partitions this worker owns, checkpointed to ``store`` (see module docstring).

    ``store``: a :class:`~streams.worker.changelog_store.ChangelogStore` (or any object with its
    async ``put(key, gen, blob, route)`` / ``restore(key, route)`` / ``close()``).
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._parts: dict[int, Versions] = {}
        self._gen: dict[int, int] = {}
        self._dirty: set[int] = set()
        self._urgent: set[int] = set()
        self._lock = asyncio.Lock()
        self.closed = False
        self.checkpoints = {"count": 0, "bytes": 0}

    @staticmethod
    def key(partition: int) -> str:
        """The changelog key of a slot: ``p<n>`` for input partition n, ``m<n>`` for partials partition n."""
        p = int(partition)
        return f"m{p - MERGE_SLOTS}" if p >= MERGE_SLOTS else f"p{p}"

    @staticmethod
    def name(partition: int) -> str:
        """A slot in log lines: ``partition <n>`` or ``partials partition <n>``."""
        p = int(partition)
        return f"partials partition {p - MERGE_SLOTS}" if p >= MERGE_SLOTS else f"partition {p}"

    @staticmethod
    def route(partition: int) -> int:
        """The partition number a slot's checkpoints are routed by (the input or partials partition's own)."""
        p = int(partition)
        return p - MERGE_SLOTS if p >= MERGE_SLOTS else p

    def owns(self, partition: int) -> bool:
        """Whether the partition's state has been restored here (and not revoked since, nor the worker stopping)."""
        return not self.closed and int(partition) in self._parts

    async def restore(self, partitions: Iterable[int]) -> list[int]:
        """Partitions new to this worker: their alert state from their newest checkpoint (empty if none).
        Raises :class:`~streams.worker.changelog_store.ChangelogError` if the changelog cannot be read: the
        batch fails and is read again (the worker stops rather than evaluate without the state)."""
        todo = sorted({int(p) for p in partitions} - set(self._parts))
        if not todo:
            return []
        got = await asyncio.gather(*(self.store.restore(self.key(p), route=self.route(p)) for p in todo))
        if self.closed:  # the worker stopped meanwhile: it evaluates nothing more
            return []
        for p, g in zip(todo, got):
            versions: Versions = {}
            if g is not None:
                try:
                    versions = decode(g.blob)
                except ValueError:  # a damaged checkpoint must not stop the worker
                    log.exception("the alert-state checkpoint of %s is unusable: its alerts start afresh", self.name(p))
                self._gen[p] = g.gen
                firing = sum(a.status == "firing" for vs in versions.values() for a in vs.alerts.values())
                log.info(
                    "alert state of %s restored from %r (generation %d): %d model version(s), %d alert(s) firing",
                    self.name(p),
                    self.store,
                    g.gen,
                    len(versions),
                    firing,
                )
            self._parts.setdefault(p, versions)
        return todo

    def view(self, partition: int, model: str, version: str) -> VersionState:
        """The state of a model version in a partition (restored before: see :meth:`restore`)."""
        return self._parts.get(int(partition), {}).get((model, version)) or VersionState()

    def update(
        self, partition: int, model: str, version: str, window_end_ns: int, states: Iterable[AlertState], urgent: bool
    ) -> None:
        """A window of the model version was evaluated: its new alert states (inactive ones are forgotten).
        ``urgent``: it announced something or changed a status (:meth:`sync` writes it before its results)."""
        p = int(partition)
        vs = self._parts.setdefault(p, {}).setdefault((model, version), VersionState())
        vs.last_window_ns = int(window_end_ns)
        for st in states:
            if st.status == "inactive":
                vs.alerts.pop(st.key, None)
            else:
                vs.alerts[st.key] = st
        self._dirty.add(p)
        if urgent:
            self._urgent.add(p)

    def models(self, partition: int) -> list[tuple[str, str]]:
        return sorted(self._parts.get(int(partition), {}))

    async def _write(self, partitions: Iterable[int]) -> int:
        """Checkpoint ``partitions`` (their state as it is when the write starts); returns the bytes written."""
        n = 0
        if self.closed:
            return 0
        async with self._lock:  # one writer: the state written last is always the newest
            for p in sorted(set(partitions) & self._dirty):
                versions = self._parts.get(p)
                if versions is None:
                    continue
                urgent = p in self._urgent
                self._dirty.discard(p)  # changes made while the write is under way make it dirty again
                self._urgent.discard(p)
                gen = self._gen.get(p, 0) + 1
                try:
                    n += await self.store.put(self.key(p), gen, encode(versions), route=self.route(p))
                except BaseException:
                    self._dirty.add(p)
                    if urgent:
                        self._urgent.add(p)
                    raise
                self._gen[p] = gen
                self.checkpoints["count"] += 1
        self.checkpoints["bytes"] += n
        return n

    async def sync(self, partition: int, max_backoff: float = 10.0) -> None:
        """If the last evaluation of ``partition`` was urgent, checkpoint it now: returns once acknowledged (the
        window's results are written after), retrying while the broker is away — the windows wait rather than
        be written ahead of their alert state — or once the partition is no longer this worker's."""
        from streams.retry import Backoff

        p = int(partition)
        delays = Backoff(0.5, max_backoff).delays()
        while p in self._urgent and self.owns(p):
            try:
                await self._write([p])
            except Exception as e:
                wait = next(delays)
                log.warning("cannot checkpoint the alert state of %s (%s); retrying in %.1f s", self.name(p), e, wait)
                await asyncio.sleep(wait)

    async def flush(self) -> int:
        """Checkpoint every partition whose state changed (the worker's 1 s timer, shutdown)."""
        try:
            return await self._write(list(self._dirty))
        except Exception:  # broker away: the next tick tries again
            log.exception("writing the alert-state checkpoint to %r failed; retrying", self.store)
            return 0

    async def revoke(self, partitions: Iterable[int]) -> list[tuple[str, str]]:
        """Partitions leave this worker: checkpoint their state for the next owner, then forget it.
        Returns the model versions handed over."""
        parts = {int(p) for p in partitions} & set(self._parts)
        if not parts:
            return []
        try:
            await self._write(parts)
        except Exception:  # the next owner then starts from the previous checkpoint
            log.exception(
                "the alert state of %s could not be saved at the rebalance", [self.name(p) for p in sorted(parts)]
            )
        gone = [mv for p in sorted(parts) for mv in sorted(self._parts.pop(p, {}))]
        for p in parts:
            self._gen.pop(p, None)
            self._dirty.discard(p)
            self._urgent.discard(p)
        log.info("alert state of %s handed over", [self.name(p) for p in sorted(parts)])
        return gone

    def prune(self, resolved_before_ns: int) -> int:
        """Forget alerts resolved before the cut-off (an alert that fires again starts as a new one anyway)."""
        n = 0
        for p, versions in self._parts.items():
            for vs in versions.values():
                old = [k for k, a in vs.alerts.items() if a.status == "resolved" and a.resolved_ns < resolved_before_ns]
                for k in old:
                    del vs.alerts[k]
                if old:
                    self._dirty.add(p)
                n += len(old)
        return n

    async def close(self) -> None:
        """The last checkpoint (shutdown), then the producer stops; windows evaluated later are not written
        (:meth:`owns` is False from now on: the next owner evaluates them)."""
        try:
            await self._write(list(self._dirty))
        except Exception:
            log.exception("the alert state could not be saved at shutdown")
        finally:
            self.closed = True
            await self.store.close()
