# size: one class, Pipeline, drives ingestion, the reference lifecycle, evaluation hand-off, dead letters and open-window checkpoints over shared per-stream state (acks: commits.py, checkpoints: checkpoints.py and window_changelog.py, evaluation: evaluation.py)
"""The worker's engine, without Faust: decode → windows → detectors → sink, and the commit bookkeeping.

:class:`Pipeline` gets batches of raw messages (with an opaque *token* each —
the Faust event the agent must ack) and drives everything else:

1. :class:`~streams.worker.decode.Decoder` turns them into frames per stream key
   (topic, partition, model, version), labels and dead letters;
2. per stream key, a :class:`StreamState` feeds the reference (``first_n``:
   the first N events build it; ``file``: loaded once; ``rolling``: the
   previous window; a reference set with ``driftwatch reference set`` overrides
   these, see :meth:`Pipeline.watch_references`; the reference's rows are attached
   for the row-based evaluators) and the windows (:mod:`streams.worker.windows`);
3. each closed window runs through ``detectors.runner.evaluate_window`` (all
   features at once) and its records, plus a ``dw_window`` point carrying the
   counts and the window's :class:`~streams.worker.windows.Checkpoint`, go to the
   :class:`~streams.influx.sink.InfluxSink` as one unit;
4. dead letters go to the dead-letter topic (:mod:`streams.worker.deadletter`) and are
   counted on ``dw_deadletter``; label events go to the label join.

**Offsets are committed only after the results that depend on them are
written.** :class:`~streams.worker.commits.AckTracker` keeps, per topic partition, a reference count
per message: +1 while the batch is processed, +1 per open-window piece holding
its rows (released when the window's unit is confirmed by InfluxDB — for a
rolling reference, when the *next* window is written, since it depends on
this one), +1 while a ``first_n`` reference built from it is not yet stored,
+1 per dead letter until the broker has it and its count is written. A
message is acked (so Faust may commit it) when its count reaches 0 **and**
every earlier message of its partition is acked: Faust then commits a
contiguous prefix (which also side-steps Faust's own gap handling).

**Restarts.** When a partition is (re)assigned, its state is rebuilt lazily:
the first time a stream key is seen, its last :class:`~streams.worker.windows.Checkpoint`
is read back from InfluxDB (the newest ``dw_window`` point of that key and
partition) and its stored reference from the reference topic. Rows already in
written windows are skipped, windows restart exactly where they were: the
same points are rewritten at most (idempotent), none are lost. Checkpoints are
only trusted when the consumer group has a committed offset for the partition:
without one, consumption starts from the beginning and everything is rebuilt
from scratch (e.g. the local broker restarted and lost its topics while
InfluxDB kept old points).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

import numpy as np

from detectors.errors import ServiceError
from detectors.frame import Frame, concat
from detectors.records import (  # dw_window's fields: one vocabulary for the worker, the dashboard, the benchmarks
    F_CLOSE_REASON,
    F_CLOSED_AT,
    F_DRIFT_EVALUATED,
    F_DURATION,
    F_EVENTS_PER_S,
    F_N_EVENTS,
    F_N_INVALID,
    F_REFERENCE,
    F_SUMMARISED,
    F_WINDOW_START,
    SHARD,
    T_MODEL,
    T_SHARD,
    T_VERSION,
    WINDOW,
    Record,
)
from streams.alerts.partitions import merge_slot
from streams.retry import Backoff
from streams.settings import Settings
from streams.worker.checkpoints import CheckpointSource, checkpoint_fields
from streams.worker.commits import AckTracker
from streams.worker.deadletter import DeadLetterPublisher, deadletter_record, deadletter_records
from streams.worker.decode import R_LATE, DeadLetter, Decoded, Decoder, FramePart, RawMessage, StreamKey
from streams.worker.detector_process import DetectorProcess
from streams.worker.evaluation import Evaluator, default_evaluator, evaluate_closed
from streams.worker.monitors import ConfigError, ModelMonitor, MonitorsConfig
from streams.worker.shards import (
    MAX_PARTIAL_BYTES,
    MergeBuffer,
    PartialError,
    ShardRows,
    merge_partials,
    merged_window,
    partial_of,
    read_message,
)
from streams.worker.window_changelog import Entry, EntryKey, WindowChangelog
from streams.worker.windows import Checkpoint, ClosedWindow, CountWindows, OpenTimeWindows, Position, TimeWindows

log = logging.getLogger(__name__)

MAX_WAITING_WINDOWS = 8
"""A sharded model with more windows than this waiting for partials gets a WARNING naming the missing shards."""


class PartitionRevoked(ServiceError):
    """Raised by the ``committed`` callback for a partition that a rebalance is taking away (its committed
    offset is no longer known): the batch is left to the partition's next owner, who re-reads it."""


def _invalid_rows(frame: Frame) -> int:
    """Rows with at least one value of the wrong type."""
    masks = [m for m in frame.type_error.values() if m is not None]
    if not masks:
        return 0
    return int(np.logical_or.reduce(masks).sum())


# ----------------------------------------------------------------------------- per stream key


ROLLING_HISTORY_ROWS = 2000
"""Rows kept of each past window of a rolling reference's history (evenly spaced, in order): 100 windows of
100,000 events x 50 features would otherwise hold 4 GB per stream. The band's effect sizes do not depend on
the count; its KS inflation is computed at the kept sizes (docs/detection-science.md)."""


def thin_rows(frame: Frame, limit: int) -> Frame:
    """At most ``limit`` rows of ``frame``, evenly spaced and in order (all of them when it has fewer)."""
    n = len(frame)
    if n <= limit:
        return frame
    return frame.take(np.unique(np.linspace(0, n - 1, limit).astype(np.int64)))


def _preload_detectors() -> None:
    """Import, on a thread, the detector modules the event loop itself needs at the first windows after a
    reference (the window summaries' layout and prediction reference: scipy.stats and the drift engines,
    3 s of imports here, far more on a busy host), so the first window does not import them on the loop
    and stall every timer (Faust logged "Timer livelock is overlapping" there)."""
    import threading

    def load() -> None:
        try:
            from detectors import advanced, summaries  # noqa: F401
        except Exception:  # the loop imports them when needed, and reports what fails there
            log.debug("preloading the detector modules failed", exc_info=True)

    threading.Thread(target=load, name="import-detectors", daemon=True).start()


@dataclass
class StreamState:
    """Everything kept for one stream key (topic partition, model, version)."""

    key: StreamKey
    model: ModelMonitor
    windows: CountWindows | TimeWindows
    reference: Any = None  # detectors.reference.Reference
    ref_end_pos: Position | None = None  # first_n: windows starting after it are drift-tested
    builder: list[FramePart] | None = None  # first_n rows collected so far
    builder_rows: int = 0
    builder_holds: list[np.ndarray] = field(default_factory=list)
    prev_frames: list[Frame] = field(default_factory=list)  # rolling: the previous window (rebuilt on replay)
    prev_holds: list[np.ndarray] = field(default_factory=list)  # rolling: released when the next is written
    # rolling: whole windows before the previous one, oldest first (at most reference.rolling_history; in memory
    # only: after a restart the band is rebuilt from the windows that follow)
    rolling_history: list[Frame] = field(default_factory=list)
    summary_layout: Any = None  # (reference, detectors.summaries.SummaryLayout) of the summarised windows
    summary_refs: dict[int, Any] = field(default_factory=dict)  # id(open window summary) -> its reference
    last_event_at: float = field(default_factory=time.monotonic)
    windows_closed: int = 0
    pinned: bool = False  # the reference was set by an operator (`driftwatch reference set`)
    resumed_from: Checkpoint | None = None  # the checkpoint this stream state was rebuilt from
    last_reference: Any = None  # the reference the last window closed here was judged against
    prepared: Any = None  # the reference the detectors' one-off fits were started on (_prepare_detectors)
    unwritten: int = 0  # closed windows not yet confirmed by InfluxDB (no open-window checkpoint meanwhile)
    covered: list[np.ndarray] = field(default_factory=list)  # held until an open-window checkpoint has them
    # a sharded model's merge step (a stream key of the partials topic; streams/worker/shards.py): the partials of
    # its windows not yet complete, and the point time of the newest merged window
    merge: MergeBuffer | None = None
    merge_last_ns: int = -1

    @property
    def shard(self) -> bool:
        """A shard of a sharded model: its windows are published as partials, not tested here."""
        return self.model.shards > 1 and self.merge is None


@dataclass
class _TP:
    tracker: AckTracker
    streams: dict[StreamKey, StreamState] = field(default_factory=dict)
    trusted: bool | None = None  # checkpoints usable (the group has a committed offset)
    entries: dict[EntryKey, Entry] | None = None  # open-window checkpoint entries (None: not loaded yet)


@dataclass
class PipelineStats:
    messages: int = 0
    events: int = 0  # rows decoded into frames
    windows: int = 0
    windowed_events: int = 0
    dead_letters: int = 0
    dead_events: int = 0
    late_events: int = 0
    labels: int = 0
    skipped_replayed: int = 0
    evaluate_s: float = 0.0
    decode_s: float = 0.0


class Pipeline:
    """The engine (see module docstring). Not thread-safe: one asyncio task drives it."""

    def __init__(
        self,
        settings: Settings,
        monitors: MonitorsConfig,
        *,
        sink,
        deadletters: DeadLetterPublisher,
        ack: Callable[[Any], None] = lambda token: None,
        references=None,  # streams.worker.references.ReferenceStore
        checkpoints: CheckpointSource | None = None,
        committed: Callable[[str, int], int | None] = lambda topic, partition: None,
        end_offset: Callable[[str, int], int | None] = lambda topic, partition: None,
        evaluator: Evaluator | DetectorProcess | Literal["default"] | None = "default",
        label_hook=None,
        alerting=None,  # streams.alerts.Alerting: rules evaluated on every closed window
        max_future_s: float = 86_400.0,
        clock: Callable[[], float] = time.monotonic,
        eval_thread: bool = True,
        max_windows_in_flight: int = 1,
        chunk_bytes: int = 1_000_000,
        deadletter_linger: float = 0.5,
        deadletter_max: int = 2000,
        window_changelog: WindowChangelog | None = None,
        partials: Any = None,  # streams.worker.changelog_store.TopicClient of the partials topic (sharded models)
    ) -> None:
        self.settings = settings
        self.monitors = monitors
        self.models = {m.model_id: m for m in monitors.models}
        for i, m in enumerate(monitors.models):
            if m.shards > settings.topic_partitions:
                raise ConfigError(
                    f"models[{i}].shards: {m.model_id} has {m.shards} shards but the topics have "
                    f"{settings.topic_partitions} partitions (DRIFTWATCH_TOPIC_PARTITIONS)"
                )
        self.known_models = frozenset(self.models)
        self.decoder = Decoder(monitors, settings.max_message_bytes, max_future_s)
        self.sink = sink
        self.deadletters = deadletters
        self._undeclared_warned: set[tuple[str, str]] = set()  # (model, feature) logged once (bounded)
        self.ack = ack
        self.references = references
        self.checkpoints = checkpoints
        self.committed = committed
        self.end_offset = end_offset
        if evaluator == "default":
            from streams.worker.labels import online_cache_dir

            evaluator = default_evaluator(online_cache_dir(settings.state_dir))
        self.evaluator: Evaluator | DetectorProcess | None = evaluator
        if isinstance(evaluator, DetectorProcess):  # an in-process evaluator imports them itself, on a thread
            _preload_detectors()
        self.label_hook = label_hook
        self.alerting = alerting
        self.clock = clock
        self.stats = PipelineStats()
        self.lock = asyncio.Lock()
        self._tps: dict[tuple[str, int], _TP] = {}
        self._epoch = 0  # rebalances seen (revoke)
        self._revoked_at: dict[tuple[str, int], int] = {}  # partition -> the rebalance that revoked it last
        self._stored_refs: dict[tuple[str, str], Any] = {}
        self._file_refs: dict[str, Any] = {}
        self._decoded: dict[tuple[str, str], tuple[Any, Any]] = {}  # key -> (StoredReference, Reference)
        self._refs_live = False  # watch_references() keeps _stored_refs current
        self._warned: set[tuple] = set()
        self._lost_warned: set[tuple[str, int]] = set()  # partitions whose lost broker state was reported
        self._pending: set[asyncio.Future] = set()
        # detectors run on one thread (numpy releases the GIL in its heavy parts), overlapping decoding
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="detectors") if eval_thread else None
        self._chain: asyncio.Future | None = None
        self._in_flight = 0
        self._to_prepare: dict[StreamKey, tuple[ModelMonitor, Any, bool]] = {}  # see _prepare_detectors
        self.max_windows_in_flight = max_windows_in_flight
        self.chunk_bytes = chunk_bytes
        self._room = asyncio.Event()
        # dead letters waiting to be flushed (published + counted), see _dead_letters
        self.deadletter_linger = deadletter_linger
        self.deadletter_max = deadletter_max
        self._dl_pending: list[tuple[DeadLetter, AckTracker]] = []
        self._dl_since = 0.0
        # open summarised windows checkpointed to Kafka (streams/worker/window_changelog.py)
        self.window_changelog = window_changelog
        self._windows_saved_at = clock()
        self._covered = 0  # messages held until an open-window checkpoint has them
        self._saving: asyncio.Task | None = None
        # sharded models (streams/worker/shards.py): partials are published to and merged from this topic
        self.partials = partials
        self.partials_topic = partials.topic if partials is not None else None
        if partials is not None and label_hook is not None:  # a shard's joined rows go to its model's merge owner
            label_hook.publish = self._publish_rows

    # -- partitions --------------------------------------------------------------
    def revoke(self, tps: Iterable[tuple[str, int]]) -> None:
        """Partitions left this worker (a rebalance): forget their state, and do not process the rest of a
        batch handed to :meth:`process` before (its later chunks): their next owner reads them again."""
        revoked = [(topic, partition) for topic, partition in tps]
        self._epoch += 1
        for tp in revoked:
            self._revoked_at[tp] = self._epoch
        self.forget(revoked)

    def forget(self, tps: Iterable[tuple[str, int]] | None = None) -> None:
        """Drop the state of partitions (revoked, or re-read from the committed offset)."""
        for topic, partition in list(self._tps) if tps is None else list(tps):
            st = self._tps.pop((topic, partition), None)
            if st is not None:
                st.tracker.active = False  # results still in flight will not ack old messages
                for state in st.streams.values():  # their holds go with the tracker
                    self._covered -= sum(len(h) for h in state.covered)
                if self.window_changelog is not None and st.entries is not None:
                    self.window_changelog.forget(partition)

    def _tp(self, topic: str, partition: int, first_offset: int) -> _TP:
        tp = (topic, partition)
        st = self._tps.get(tp)
        # a jump back means the partition is read again from the committed offset (forward gaps are
        # normal: transaction markers take offsets; a partition that moved away and back was forgotten
        # by the rebalance hook)
        if st is not None and first_offset <= st.tracker.last_offset:
            log.info(
                "%s[%d] is read again from offset %d (was at %d): rebuilding its windows from the checkpoints",
                topic,
                partition,
                first_offset,
                st.tracker.last_offset,
            )
            self.forget([tp])
            st = None
        if st is None:
            st = self._tps[tp] = _TP(AckTracker(self.ack))
        return st

    # -- main entry --------------------------------------------------------------
    async def process(self, messages: Sequence[RawMessage], tokens: Sequence[Any] | None = None) -> None:
        """Process one batch of messages (in consumption order).

        Large batches are cut into chunks of about ``chunk_bytes`` of values, with
        a return to the event loop between chunks, so results of closed windows
        reach InfluxDB while a long backlog is being decoded (latency stays low).
        """
        tokens = tokens if tokens is not None else messages
        epoch = self._epoch
        start, size = 0, 0
        for i, m in enumerate(messages):
            size += len(m.value) if m.value else 0
            if size >= self.chunk_bytes or i == len(messages) - 1:
                async with self.lock:
                    chunk, chunk_tokens = messages[start : i + 1], tokens[start : i + 1]
                    if self._epoch != epoch:  # a rebalance since the batch came: drop what was revoked
                        keep = [
                            k for k, x in enumerate(chunk) if self._revoked_at.get((x.topic, x.partition), 0) <= epoch
                        ]
                        chunk, chunk_tokens = [chunk[k] for k in keep], [chunk_tokens[k] for k in keep]
                    try:
                        await self._process(chunk, chunk_tokens)
                    except PartitionRevoked as e:
                        # a rebalance began during this chunk (Faust revokes every partition of the worker at
                        # once): nothing of it is acked, and the rest of the batch is dropped too; the
                        # partitions are read again from their committed offsets by whoever gets them
                        log.info("%s: the rest of this batch is left to the next owner", e)
                        self.revoke({(x.topic, x.partition) for x in messages})
                await asyncio.sleep(0)
                start, size = i + 1, 0
        wc = self.window_changelog
        idle = self._saving is None or self._saving.done()
        if wc is not None and self._covered >= wc.max_covered and not wc.lock.locked() and idle:
            # many messages wait for an open-window checkpoint: take one now (it gets the lock between batches)
            self._saving = asyncio.ensure_future(self.save_windows())
            self._track(self._saving)

    async def _process(self, messages: Sequence[RawMessage], tokens: Sequence[Any]) -> None:
        if not messages:
            return
        by_tp: dict[tuple[str, int], list[int]] = {}
        offsets = [m.offset for m in messages]
        for i, m in enumerate(messages):
            by_tp.setdefault((m.topic, m.partition), []).append(i)
        tps: dict[tuple[str, int], _TP] = {}
        for tp, idx in by_tp.items():
            st = self._tp(tp[0], tp[1], messages[idx[0]].offset)
            tps[tp] = st
            for i in idx:
                st.tracker.register(messages[i].offset, tokens[i], messages[i])
        self.stats.messages += len(messages)
        partials = [m for m in messages if m.topic == self.partials_topic]
        if partials:
            messages = [m for m in messages if m.topic != self.partials_topic]
        try:
            if partials:
                # the merge step's alert state and label results (their own slots) before any window
                slots = sorted({merge_slot(m.partition) for m in partials})
                restores = [h.restore_partitions(slots) for h in (self.label_hook, self.alerting) if h is not None]
                if restores:
                    await asyncio.gather(*restores)
                await self._merge(partials, tps)
            t0 = time.perf_counter()
            decoded = self.decoder.decode(messages)
            self.stats.decode_s += time.perf_counter() - t0
            await self._handle(decoded, {tp: st for tp, st in tps.items() if tp[0] != self.partials_topic})
        except BaseException:
            # never ack what was not fully processed: drop these partitions' state, so nothing of
            # theirs is acked any more; the caller stops and they are re-read from the committed offset
            self.forget(tps)
            raise
        for tp, idx in by_tp.items():
            tps[tp].tracker.release(offsets[i] for i in idx)

    async def _handle(self, decoded: Decoded, tps: dict[tuple[str, int], _TP]) -> None:
        # partitions new to this worker: their label join and alert state from their checkpoints in Kafka
        new = sorted({p for _, p in tps})
        restores = [h.restore_partitions(new) for h in (self.label_hook, self.alerting) if h is not None]
        if restores:  # concurrently: one round trip
            await asyncio.gather(*restores)
        for topic, partition, model_id in decoded.unkeyed:
            w = ("unkeyed", topic, partition, model_id)
            if w not in self._warned:
                self._warned.add(w)
                log.warning(
                    "messages of model %r in %s[%d] are not keyed by the model id: its windows are kept "
                    "per partition (key messages by model id, as the SDK does)",
                    model_id,
                    topic,
                    partition,
                )
        if decoded.dead:  # one InfluxDB unit and one confirmation for the whole batch (hostile floods)
            await self._dead_letters(decoded.dead, tps)
        for key, part in decoded.frames.items():
            st_tp = tps[(key.topic, key.partition)]
            state = st_tp.streams.get(key)
            if state is None:
                state = await self._new_state(key, st_tp)
            self.stats.events += len(part.frame)
            if part.frame.unknown:
                self._warn_undeclared(key.model_id, part.frame.unknown)
            await self._feed(state, part, st_tp.tracker)
        if decoded.labels:
            self.stats.labels += sum(len(p) for p in decoded.labels)
            if self.label_hook is not None:
                for p in decoded.labels:
                    self.label_hook.on_labels(p)
        if self.label_hook is not None:
            for key, part in decoded.frames.items():  # a sharded model's: one join per shard (LabelHook)
                self.label_hook.on_predictions(key, part.frame, part.origin)
            # messages fed to the label join stay un-acked until a checkpoint of the join holds them
            for topic, partition, offsets in self.label_hook.take_fed():
                fed_tp = tps.get((topic, partition))
                if fed_tp is not None:
                    fed_tp.tracker.hold(offsets.tolist())
                    self.label_hook.hold_until_snapshot(fed_tp.tracker, offsets)

    async def _catch_up_labels(self, lkey: StreamKey, key: StreamKey, ck: Checkpoint | None) -> None:
        """Windows of ``key`` written after the label join's last snapshot (a crash) that its restored state
        (key ``lkey``) does not know: their predictions' labels go to them."""
        if ck is None or self.label_hook is None or self.checkpoints is None:
            return
        after = self.label_hook.last_window_ns(lkey)
        if after is not None and after < ck.time_ns:
            count = self.models[key.model_id].window.size_events is not None
            for c in await self.checkpoints.since(key, after):
                self.label_hook.add_window(lkey, c.time_ns, c.max_event_time if count else c.closed_until)

    def _warn_undeclared(self, model_id: str, unknown: dict) -> None:
        """Log once per (model, name) that events carry a feature the config does not declare (bounded)."""
        from detectors.reference import safe_label

        warned = self._undeclared_warned
        new = [n for n in unknown if (model_id, n) not in warned]
        if not new or len(warned) >= 200:
            return
        warned.update((model_id, n) for n in new)
        log.warning(
            "model %s: events carry feature(s) %s that the monitor config does not declare: not monitored, "
            "counted as data quality unknown_feature (feature __undeclared__) — a typo, or a feature to add",
            model_id,
            ", ".join(repr(safe_label(n)) for n in new[:10]),
        )

    # -- stream state ------------------------------------------------------------
    async def _new_state(self, key: StreamKey, st_tp: _TP) -> StreamState:
        model = self.models[key.model_id]
        if st_tp.trusted is None:
            st_tp.trusted = self.committed(key.topic, key.partition) is not None
        ck = None
        sharded = model.shards > 1
        if st_tp.trusted and self.checkpoints is not None:
            ck = await (self.checkpoints.latest(key, SHARD) if sharded else self.checkpoints.latest(key))
        elif self.checkpoints is not None and (key.topic, key.partition) not in self._lost_warned:
            old = await self.checkpoints.latest(key)  # only to say what happened, never to resume from
            if old is not None:
                self._lost_warned.add((key.topic, key.partition))
                self._report_untrusted(key, old)
        win = model.window
        if not sharded:  # a shard's windows get no labels (its merge owner's merged windows do)
            await self._catch_up_labels(key, key, ck)
        if win.size_events is not None:  # a shard's windows hold its share of the model's (size_events/shards)
            windows: CountWindows | TimeWindows = CountWindows(win.size_events // model.shards, ck)
        elif win.size_seconds is not None:
            windows = TimeWindows(win.size_seconds, win.grace_seconds, win.max_open_windows, ck)
            if windows.grace_capped:
                log.warning(
                    "%s: grace %.0f s capped to %.0f s (at most %d open windows)",
                    key.model_id,
                    windows.requested_grace,
                    windows.grace,
                    windows.max_open,
                )
        else:  # WindowConfig's validator rules this out
            raise ConfigError(f"{key.model_id}: the window needs exactly one of size_events or size_seconds")
        state = StreamState(key, model, windows, resumed_from=ck)
        # event-time windows summarised from the moment they open (summary_min_seconds)
        from_start = (
            isinstance(windows, TimeWindows)
            and win.summary_min_seconds is not None
            and windows.size >= win.summary_min_seconds
        )
        if (
            isinstance(windows, CountWindows)
            and (
                sharded  # partials are summaries, whatever their size
                or (
                    win.summary_min_events is not None
                    and windows.size >= win.summary_min_events
                    and not model.reference.rolling
                )
            )
        ) or (
            isinstance(windows, TimeWindows)
            and not model.reference.rolling
            and (from_start or win.summary_min_events is not None)
        ):
            windows.summarise = partial(self._open_summary, state)
            windows.checkpointed = self.window_changelog is not None
            if isinstance(windows, TimeWindows) and not from_start:
                # rows until a window holds summary_min_events of them: bounded memory, exact results below it
                windows.summary_after = win.summary_min_events
        ref_cfg = model.reference
        # operator-set references apply to every kind of source
        await self._stored_reference(key, wait=ref_cfg.first_n is not None)
        self._configure_reference(state, None)
        resumed = None
        if windows.checkpointed:
            resumed = await self._resume_open_window(state, st_tp, ck)
        st_tp.streams[key] = state
        if sharded and key.partition not in self._shard_partitions(model):
            log.error(
                "%s v%s: events in %s[%d], which is not one of its shards' partitions %s (a producer without "
                "shards=%d?): their windows are never merged",
                key.model_id,
                key.model_version,
                key.topic,
                key.partition,
                list(self._shard_partitions(model)),
                model.shards,
            )
        log.info(
            "%s %s v%s in %s[%d]%s: %s%s, %s",
            "resuming" if ck or resumed else "starting",
            key.model_id,
            key.model_version,
            key.topic,
            key.partition,
            f" (shard of {model.shards})" if sharded else "",
            f"after window #{ck.seq} (ends at offset {ck.end_pos[0]})" if ck else "no checkpoint",
            f"; open window{'s' if isinstance(resumed, OpenTimeWindows) else ''} #{resumed.seq} restored from "
            f"{self.window_changelog!r} ({resumed.n} events, up to offset {resumed.last_pos[0]})"
            if resumed
            else "",
            "reference set by an operator"
            if state.pinned
            else "stored reference"
            if state.reference is not None and ref_cfg.first_n
            else ("building the reference" if state.builder is not None else "reference from config"),
        )
        return state

    async def _resume_open_window(self, state: StreamState, st_tp: _TP, ck: Checkpoint | None):
        """Restore the stream key's open summarised window(s) from the partition's open-window checkpoint
        (:mod:`streams.worker.window_changelog`), if it holds them after the newest written window ``ck``.
        Returns the :class:`~streams.worker.windows.OpenWindow` (count) or
        :class:`~streams.worker.windows.OpenTimeWindows` (event time) resumed, or None."""
        key = state.key
        assert self.window_changelog is not None
        if st_tp.entries is None:
            # a checkpoint that cannot be read raises: the batch fails and the worker stops rather than
            # go on without the state (the messages it covers were acked)
            st_tp.entries = await self.window_changelog.load(key.partition) if st_tp.trusted else {}
            st_tp.entries = {k: e for k, e in st_tp.entries.items() if k[0] == key.topic}
        entry = st_tp.entries.get((key.topic, key.model_id, key.model_version))
        expected = ck.seq + 1 if ck is not None else 0
        timed = isinstance(state.windows, TimeWindows)
        if entry is None or (entry.kind == "time") != timed:
            return None  # none, or of another window kind (the config changed)
        if timed:
            # open event-time windows outlive windows closed after the checkpoint: those are dropped from it
            # (TimeWindows.resume), the others go on
            return await self._resume_time_windows(state, entry)
        if entry.seq < expected:
            return None  # stale: the windows written since cover it
        if entry.seq > expected:
            log.warning(
                "%s v%s in %s[%d]: the open-window checkpoint is window #%d but InfluxDB's newest window is #%d "
                "(points deleted?): going on from the checkpoint",
                key.model_id,
                key.model_version,
                key.topic,
                key.partition,
                entry.seq,
                expected - 1,
            )
        assert isinstance(state.windows, CountWindows)
        layout, opened_with = await self._layout_for(state, entry.fingerprint, entry.seq)
        summary = self._restored_summary(state, layout, entry.summary, entry.seq, entry.n, entry.last_pos[0])
        if summary is None:  # no reference at all: a new window starts after its rows
            state.windows.checkpoint = Checkpoint(entry.seq - 1, entry.last_pos, entry.last_pos, entry.last_time_ns)
            state.windows.next_seq = entry.seq
            return None
        ow = entry.open_window(summary)
        state.windows.resume(ow)
        state.summary_refs[id(summary)] = opened_with
        return ow

    async def _resume_time_windows(self, state: StreamState, entry: Entry) -> OpenTimeWindows:
        """Restore a stream key's open summarised event-time windows (all of them, with the watermark state)."""
        assert isinstance(state.windows, TimeWindows)
        summaries, refs = [], []
        for _w, n, _a, last, fingerprint, blob in entry.windows:
            layout, opened_with = await self._layout_for(state, fingerprint, entry.seq)
            summaries.append(self._restored_summary(state, layout, blob, entry.seq, n, last))
            refs.append(opened_with)
        ow = entry.open_time_windows(summaries)
        # a window with no reference to lay its summary out with is dropped (an ERROR said so)
        ow = replace(ow, windows=tuple(w for w in ow.windows if w[4] is not None))
        state.windows.resume(ow)
        for summary, opened_with in zip(summaries, refs):
            if summary is not None:
                state.summary_refs[id(summary)] = opened_with
        return ow

    async def _layout_for(self, state: StreamState, fingerprint: str, seq: int) -> tuple[Any, Any]:
        """The summary layout of fingerprint ``fingerprint`` and the reference it was cut from: the current
        reference's, or, if the reference changed since the checkpoint (``driftwatch reference set``/``reset``),
        the one stored beside the checkpoints — a window goes on with the reference it was opened with, as an
        uninterrupted worker's does. ``(None, None)``: no reference; the current layout if the old one is gone."""
        key = state.key
        assert self.window_changelog is not None
        layout, opened_with = self._summary_layout(state), state.reference
        if layout is None or layout.fingerprint != fingerprint:
            old = await self.window_changelog.load_reference(key.partition, fingerprint)
            old_layout = self._layout_of(state, old) if old is not None else None
            if old_layout is not None and old_layout.fingerprint == fingerprint:
                layout, opened_with = old_layout, old
                log.info(
                    "%s v%s in %s[%d]: the open window #%d was opened with another reference than the current "
                    "one: it goes on with that reference (stored beside the checkpoints); the current one applies "
                    "from the next window",
                    key.model_id,
                    key.model_version,
                    key.topic,
                    key.partition,
                    seq,
                )
        return layout, opened_with

    @staticmethod
    def _restored_summary(state: StreamState, layout: Any, blob: bytes, seq: int, n: int, last_offset: int) -> Any:
        """A checkpointed summary on ``layout``; if it cannot be (another layout, no reference), an ERROR and an
        empty summary — the rows it held are not read again (their messages were acked): the window keeps its
        bounds (the windows after it are those of an uninterrupted run) without them — or None with no layout."""
        from detectors.summaries import SummaryError, WindowSummary

        key = state.key
        try:
            if layout is None:
                raise SummaryError("there is no reference to lay the summary out with")
            return WindowSummary.from_bytes(layout, blob)
        except SummaryError as e:
            log.error(
                "%s v%s in %s[%d]: the checkpointed open window #%d (%d events up to offset %d) cannot be "
                "restored (%s; the reference it was opened with is not stored beside the checkpoints): the "
                "window goes on without those events",
                key.model_id,
                key.model_version,
                key.topic,
                key.partition,
                seq,
                n,
                last_offset,
                e,
            )
            return None if layout is None else layout.summary()

    def _summary_layout(self, state: StreamState):
        """The summary layout of the state's reference (built once per reference), or None without one."""
        ref = state.reference
        if ref is None:
            return None
        if state.summary_layout is None or state.summary_layout[0] is not ref:
            state.summary_layout = (ref, self._layout_of(state, ref))
        return state.summary_layout[1]

    @staticmethod
    def _layout_of(state: StreamState, ref):
        """The summary layout ``ref`` gives the state's model (``window.summary_bins`` / ``summary_reservoir``)."""
        from detectors.advanced import prediction_reference
        from detectors.summaries import SummaryLayout

        win = state.model.window
        try:
            outputs = prediction_reference(ref)
        except ValueError:  # no reference rows, or they carry no model output
            outputs = None
        return SummaryLayout.build(
            ref, state.model.features, bins=win.summary_bins, reservoir=win.summary_reservoir, outputs=outputs
        )

    def _open_summary(self, state: StreamState):
        """A summary for the count window that opens now (``window.summary_min_events``), or None to keep its
        rows: there is no reference yet (the window is not drift-tested anyway), or it has no layout."""
        layout = self._summary_layout(state)
        if layout is None:
            return None
        summary = layout.summary()
        state.summary_refs[id(summary)] = state.reference
        return summary

    def _report_untrusted(self, key: StreamKey, old: Checkpoint) -> None:
        """No committed offset, but InfluxDB holds windows of this partition: say why, with the evidence.

        Two causes look alike: the broker lost its state (an in-memory broker restarted, the topic
        was recreated), or the group never committed (a restart before the first commit, e.g. while
        the messages of a ``first_n`` reference were still held until it was stored). Only the
        broker's end offset tells them apart: if the partition ends before the first message of
        the newest written window, the broker no longer holds what was windowed — a warning;
        otherwise the messages are all there and are simply read again (windows are rewritten
        with the same values) — an info line.
        """
        end = self.end_offset(key.topic, key.partition)
        if end is not None and end <= old.start_pos[0]:
            log.warning(
                "%s[%d]: the broker has no committed offset for group %s and the partition ends at offset %d, "
                "but InfluxDB holds windows of %s v%s from offset %d to %d (window #%d): the broker lost its "
                "state (an in-memory broker restarted, or the topic was recreated). Events it held that were "
                "not yet in a written window are lost; consumption restarts from the beginning of what the "
                "broker has now.",
                key.topic,
                key.partition,
                self.settings.consumer_group,
                end,
                key.model_id,
                key.model_version,
                old.start_pos[0],
                old.end_pos[0],
                old.seq,
            )
        else:
            log.info(
                "%s[%d]: no committed offset for group %s yet (InfluxDB holds windows of %s v%s up to offset %d, "
                "window #%d; the partition ends at %s): reading the partition from its first offset, the "
                "windows are rebuilt and rewritten with the same values.",
                key.topic,
                key.partition,
                self.settings.consumer_group,
                key.model_id,
                key.model_version,
                old.end_pos[0],
                old.seq,
                "an unknown offset" if end is None else f"offset {end}",
            )

    # -- references --------------------------------------------------------------
    def _configure_reference(self, state: StreamState, tracker: AckTracker | None) -> None:
        """Pick the state's reference: one set by an operator, else the configured source.

        Called for a new stream key and whenever the stored references change
        (``driftwatch reference set/reset``, see :meth:`watch_references`). A reference with
        labelled rows calibrates CBPE from here on, also for the labels joined before the first window.
        """
        self._pick_reference(state, tracker)
        self._calibration(state.model, state.key, state.reference)

    def _pick_reference(self, state: StreamState, tracker: AckTracker | None) -> None:
        from streams.worker.references import ORIGIN_SET, applicable

        key, model = state.key, state.model
        cfg = model.reference
        stored = applicable(self._stored_refs, key.model_id, key.model_version)
        if stored is not None and stored.origin == ORIGIN_SET:
            ref = self._decode(stored)
            if ref is None:  # unusable: as if it were not there
                stored = self._stored_refs.get((key.model_id, key.model_version))
                stored = None if stored is None or stored.origin == ORIGIN_SET else stored
            else:
                self._drop_builder(state, tracker)
                state.reference, state.ref_end_pos, state.pinned = ref, (-1, -1), True
                return
        state.pinned = False
        if cfg.file is not None:
            state.reference = self._file_reference(model)
        elif cfg.first_n is not None:
            ref = self._decode(stored) if stored is not None else None
            if ref is not None and stored is not None:
                state.reference = ref
                same = stored.topic == key.topic and stored.partition == key.partition
                state.ref_end_pos = stored.end_pos if same else (-1, -1)
                self._drop_builder(state, tracker)
            elif state.builder is None:  # none stored (or reset): the next first_n events build it
                state.reference, state.ref_end_pos, state.builder = None, None, []
        else:  # rolling: the previous window
            state.reference = None

    def _drop_builder(self, state: StreamState, tracker: AckTracker | None) -> None:
        if state.builder is not None and tracker is not None:
            for h in state.builder_holds:
                tracker.release(h.tolist())
        state.builder, state.builder_rows, state.builder_holds = None, 0, []

    def _decode(self, stored):
        """The Reference of a stored one (decoded once; the in-memory one if this worker built it)."""
        k = (stored.model_id, stored.version)
        have = self._decoded.get(k)
        if have is not None and (have[0] is stored or have[0].blob == stored.blob):
            return have[1]
        from detectors.reference import ReferenceDataError

        try:
            ref = stored.reference()
        except ReferenceDataError as e:
            log.error("the stored reference of %s v%s is unusable (%s): using the configured source", k[0], k[1], e)
            return None
        self._decoded[k] = (stored, ref)
        return ref

    async def watch_references(self, retry_max: float = 30.0) -> None:
        """Follow the reference topic until cancelled: references set or reset by the CLI apply at once.

        A set reference replaces the reference of the matching stream keys from
        the next closing window on; a reset sends them back to the configured
        source (``first_n``: the next N events build a new one). Worker-built
        references of other workers only update the cache (stream keys seen later
        use them). While the topic cannot be followed, new stream keys load the
        store themselves, as without this task.
        """
        if self.references is None:
            return
        retry = Backoff(0.5, retry_max)
        delays = retry.delays()

        async def snapshot(refs) -> None:
            nonlocal delays
            delays = retry.delays()  # followed again: the next failure starts from the first delay
            for k, stored in refs.items():
                await self._reference_changed(k, stored)
            self._refs_live = True

        while True:
            error: Exception | None = None
            try:
                await self.references.follow(snapshot, self._reference_changed)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the broker may be briefly unavailable
                error = e
            finally:
                self._refs_live = False
            wait = next(delays)
            if error is not None:
                log.warning("following the stored references failed (%s); retrying in %.1f s", error, wait)
            await asyncio.sleep(wait)

    async def _reference_changed(self, k: tuple[str, str], stored) -> None:
        """A stored reference appeared, changed or was reset (``stored`` None)."""
        from streams.worker.references import ALL_VERSIONS, ORIGIN_SET

        have = self._stored_refs.get(k)
        if stored is not None and have is not None and have.blob == stored.blob and have.origin == stored.origin:
            return  # unchanged (e.g. this worker's own save coming back)
        if stored is None and have is None:
            return
        if stored is None:
            self._stored_refs.pop(k, None)
        else:
            self._stored_refs[k] = stored
        operator = stored is None or stored.origin == ORIGIN_SET
        if not operator:
            return  # another worker's first_n reference: stream keys seen later use it
        async with self.lock:
            for st_tp in self._tps.values():
                for state in st_tp.streams.values():
                    if state.key.model_id != k[0] or k[1] not in (state.key.model_version, ALL_VERSIONS):
                        continue
                    self._configure_reference(state, st_tp.tracker)
                    log.info(
                        "%s v%s in %s[%d]: reference %s (%s)",
                        state.key.model_id,
                        state.key.model_version,
                        state.key.topic,
                        state.key.partition,
                        "set by an operator" if state.pinned else "reset to the configured source",
                        getattr(state.reference, "source", None)
                        if state.pinned
                        else (
                            "building from the next events"
                            if state.builder is not None
                            else state.model.reference.model_dump(exclude_none=True, exclude_defaults=True)
                        ),
                    )

    def _file_reference(self, model: ModelMonitor):
        if model.model_id not in self._file_refs:
            from detectors.reference import ReferenceDataError
            from streams.worker.monitors import file_reference

            try:
                self._file_refs[model.model_id] = file_reference(model)
            except (ReferenceDataError, OSError, ValueError) as e:
                log.error("%s: the reference file cannot be used, windows get no drift tests: %s", model.model_id, e)
                self._file_refs[model.model_id] = None
        return self._file_refs[model.model_id]

    async def _stored_reference(self, key: StreamKey, wait: bool = True):
        """The stored reference of ``key`` (loading the store unless the watcher keeps it current).

        ``wait``: retry until the store can be read (``first_n``: building a second, different
        reference must not happen); otherwise one attempt, and the watcher applies a set
        reference later.
        """
        if self.references is None:
            return None
        k = (key.model_id, key.model_version)
        if k not in self._stored_refs and not self._refs_live:
            async for attempt in Backoff(0.5, 10.0).attempts_async():
                try:
                    self._stored_refs.update(await self.references.load())
                    break
                except Exception as e:  # the broker may be briefly unavailable
                    if not wait:
                        log.warning(
                            "cannot read stored references (%s): %s v%s starts with its configured reference source",
                            e,
                            key.model_id,
                            key.model_version,
                        )
                        break
                    log.warning("cannot read stored references (%s); retrying in %.1f s", e, attempt.wait)
        return self._stored_refs.get(k)

    # -- feeding rows ------------------------------------------------------------
    async def _feed(self, state: StreamState, part: FramePart, tracker: AckTracker) -> None:
        state.last_event_at = self.clock()
        if state.builder is not None:
            await self._feed_builder(state, part, tracker)
        added = state.windows.add(part.frame, part.origin)
        for held in added.entered:
            tracker.hold(held.tolist())
        for held in added.covered:  # released by the next open-window checkpoint (save_windows)
            tracker.hold(held.tolist())
            state.covered.append(held)
            self._covered += len(held)
        if added.moved:  # a window's rows (held as they entered) became a summary: the checkpoint releases them
            state.covered.extend(added.moved)
            self._covered += sum(len(h) for h in added.moved)
        if added.skipped:
            self.stats.skipped_replayed += added.skipped
        if added.replayed.size and state.model.reference.rolling:
            # the last written window, replayed: the rolling reference of the next one; its messages stay
            # un-acked until the next window is written (it depends on them)
            state.prev_frames.append(part.frame.take(added.replayed))
            held = np.unique(part.origin[added.replayed])
            tracker.hold(held.tolist())
            state.prev_holds.append(held)
        if added.late.size:
            await self._late(state, part, added.late, tracker)
        for w in added.closed:
            await self._window_closed(state, w, tracker)
        if state.reference is not state.prepared:  # after the windows that closed: they do not wait for it
            self._prepare_detectors(state)

    def _prepare_detectors(self, state: StreamState) -> None:
        """Start the detectors' one-off fits on the stream's (new) reference before its first window closes.

        The fits (adversarial monitor and extraction calibration, feature impacts: 1–2 s of CPU per model)
        used to run inside the first window judged against the reference, which carried them in its
        close → written latency. They are queued here and handed to the detectors (``DetectorProcess.prepare``,
        or the evaluation thread) once no window is in flight, so no window waits behind them unless it
        closes while they run; while windows keep the detectors busy (a backlog) they stay queued, and the
        first window does the fits itself, as before. Inline evaluation (no thread) leaves them to the first
        window too: the event loop must not wait on them.
        """
        state.prepared = ref = state.reference
        if ref is None or state.model.reference.rolling or self.evaluator is None:
            self._to_prepare.pop(state.key, None)
            return
        w = state.windows  # summarised from the start (not rows first, summarised past summary_min_events)
        summarised = w.summarise is not None and not (isinstance(w, TimeWindows) and w.summary_after is not None)
        self._to_prepare[state.key] = (state.model, ref, summarised)
        if not self._in_flight:
            self._submit_prepares()

    def _submit_prepares(self) -> None:
        todo, self._to_prepare = self._to_prepare, {}
        for key, (model, ref, summarised) in todo.items():
            try:
                if isinstance(self.evaluator, DetectorProcess):
                    self.evaluator.prepare(model, key, ref, summarised)
                    continue
                prepare = getattr(self.evaluator, "prepare", None)
                if prepare is not None and self._executor is not None:  # one thread: in order with the windows
                    self._executor.submit(prepare, model, key, ref, summarised)
            except RuntimeError:  # shutting down (no new jobs): the first window would fit anyway
                log.debug("%s v%s: detectors not prepared (shutting down)", key.model_id, key.model_version)

    async def _feed_builder(self, state: StreamState, part: FramePart, tracker: AckTracker) -> None:
        builder, first_n = state.builder, state.model.reference.first_n
        if builder is None or first_n is None:  # only while a first_n reference is being built (_feed checks)
            return
        need = first_n - state.builder_rows
        take = (
            part
            if len(part.frame) <= need
            else FramePart(
                part.frame.take(slice(0, need)),
                part.origin[:need],
                None if part.row_index is None else part.row_index[:need],
            )
        )
        builder.append(take)
        state.builder_rows += len(take.frame)
        held = np.unique(take.origin)
        tracker.hold(held.tolist())
        state.builder_holds.append(held)
        if state.builder_rows < first_n:
            return
        from detectors.reference import Reference, attach_reference_frame

        frames = [p.frame for p in builder]
        origin = np.concatenate([p.origin for p in builder])
        ordinals = _ordinals_of_last(builder)
        model = state.model
        rows = concat(frames)
        # hundreds of ms per model (seconds when several references fill in the same round on a busy host):
        # built on a thread so the worker's timers (label results, checkpoints, Faust's) keep running
        built = await asyncio.get_running_loop().run_in_executor(
            None,
            partial(
                Reference.from_frame,
                rows,
                model.features,
                bins=model.drift.histogram_bins,
                segments=model.segments,
                source=f"first {model.reference.first_n} events of {model.model_id} v{state.key.model_version}",
            ),
        )
        if state.builder is not builder:  # a reference was set or reset meanwhile (driftwatch reference ...)
            return
        state.reference = attach_reference_frame(built, rows)
        state.ref_end_pos = end_pos = (int(origin[-1]), ordinals)
        holds, state.builder, state.builder_holds = state.builder_holds, None, []
        moved = state.windows.summarise_open()  # a long first window: its rows become a summary now
        if moved:
            state.covered.extend(moved)
            self._covered += sum(len(h) for h in moved)
        log.info(
            "%s v%s: reference built from the first %d events (ends at %s[%d]@%d)",
            model.model_id,
            state.key.model_version,
            state.builder_rows,
            state.key.topic,
            state.key.partition,
            origin[-1],
        )
        await self._store_reference(state, end_pos, holds, tracker)

    async def _store_reference(
        self, state: StreamState, end_pos: Position, holds: list[np.ndarray], tracker: AckTracker
    ) -> None:
        def release(_f=None) -> None:
            for h in holds:
                tracker.release(h.tolist())

        if self.references is None:
            release()
            return
        from detectors.reference import reference_frame
        from streams.worker.references import StoredReference, encode_rows

        key = state.key
        rows = reference_frame(state.reference)  # stored too (sensitive features left out): see streams/references
        stored = StoredReference(
            key.model_id,
            key.model_version,
            state.reference.to_bytes(),
            key.topic,
            key.partition,
            end_pos,
            state.builder_rows,
            time.time(),
            rows_blob=encode_rows(rows, state.model.features) if rows is not None else b"",
        )
        self._stored_refs[(key.model_id, key.model_version)] = stored
        self._decoded[(key.model_id, key.model_version)] = (stored, state.reference)

        async def save() -> None:
            async for attempt in Backoff(0.5, 10.0, retries=7).attempts_async():
                try:
                    await self.references.save(stored)
                    return
                except Exception as e:  # the broker may be briefly unavailable: retried
                    log.warning(
                        "storing the reference of %s v%s failed (%s); attempt %d",
                        key.model_id,
                        key.model_version,
                        e,
                        attempt.number,
                    )
            log.error(
                "the reference of %s v%s (%d bytes) could not be stored: a restart will build a new one",
                key.model_id,
                key.model_version,
                len(stored.blob),
            )

        task = asyncio.ensure_future(save())
        self._track(task)
        task.add_done_callback(release)

    async def _late(self, state: StreamState, part: FramePart, late: np.ndarray, tracker: AckTracker) -> None:
        key = state.key
        w = state.windows
        self.stats.late_events += int(late.size)
        offsets = part.origin[late]
        rows = part.row_index[late] if part.row_index is not None else np.full(late.size, -1)
        times = part.frame.event_time[late]
        # one dead letter per message (we need its bytes: the tracker holds the token = the message)
        by_off: dict[int, list[int]] = {}
        for o, r in zip(offsets.tolist(), rows.tolist()):
            by_off.setdefault(o, []).append(r)
        for o, rs in by_off.items():
            msg = tracker.message(o)
            if msg is None:
                continue
            closed = (  # only event-time windows have late rows
                f"; windows closed until {w.closed_until:.3f}, grace {w.grace:g} s"
                if isinstance(w, TimeWindows)
                else ""
            )
            detail = (
                f"{len(rs)} event(s) of {key.model_id} v{key.model_version} arrived after their window "
                f"closed (event time {float(times.min()):.3f}{closed})"
            )
            dl = DeadLetter(
                msg, R_LATE, detail, None if rs == [-1] else tuple(rs), len(rs), key.model_id, key.model_version
            )
            await self._dead_letter(dl, tracker)

    # -- results -----------------------------------------------------------------
    async def _window_closed(self, state: StreamState, w: ClosedWindow, tracker: AckTracker) -> None:
        """Queue a closed window for evaluation; results reach the sink in closing order.

        What depends on the order of the stream (which reference, the rolling state,
        which messages the result releases) is decided here, synchronously; the
        detectors then run on the evaluation thread while the next messages are
        decoded, and a chain of tasks hands the results to the sink in order.
        """
        if state.shard:
            await self._publish_partial(state, w, tracker)
            return
        key, model = state.key, state.model
        cfg = model.reference
        reference, ref_kind, rolling_frames = None, "none", None
        if state.pinned and state.reference is not None:
            reference, ref_kind = state.reference, "set"
        elif cfg.file is not None:
            reference, ref_kind = state.reference, "file"
        elif cfg.first_n is not None:
            if state.reference is not None and state.ref_end_pos is not None and w.start_pos > state.ref_end_pos:
                reference, ref_kind = state.reference, "first_n"
        elif cfg.rolling and state.prev_frames:
            rolling_frames, ref_kind = [*state.rolling_history, concat(state.prev_frames)], "rolling"
        if w.summary is not None:  # judged against the reference its bins were cut from
            built = state.summary_refs.pop(id(w.summary), None)
            if reference is not None and built is not None:
                reference = built
        w.reference_points = _reference_points(state, w, reference, ref_kind, model.window.reference_points_every)
        state.last_reference = reference
        duration = max(w.end_time - w.start_time, 0.0)
        fields: dict[str, Any] = {
            F_N_EVENTS: w.n,
            F_N_INVALID: _invalid_rows(w.frame) if w.summary is None else w.summary.n_invalid_rows,
            F_SUMMARISED: int(w.summary is not None),
            F_WINDOW_START: w.start_time,
            F_DURATION: duration,
            F_CLOSED_AT: time.time(),
            F_CLOSE_REASON: w.reason,
            F_DRIFT_EVALUATED: ref_kind != "none" and (reference is not None or rolling_frames is not None),
            F_REFERENCE: ref_kind,
            **checkpoint_fields(key, w.checkpoint),
        }
        if duration > 0:
            fields[F_EVENTS_PER_S] = w.n / duration
        # the label hook first: it attributes the labels joined since its last timer tick, so CBPE's calibration
        # of this window uses every label joined before the window closed (taken before, it missed up to a
        # second's labels)
        labelled = None
        if self.label_hook is not None:  # a merged window's label results are in its partials partition's slot
            labelled = self.label_hook.on_window(self._label_key(state), w)
        w.calibration = self._calibration(model, key, reference)
        if cfg.rolling:
            release = state.prev_holds
            state.prev_holds = w.holds
            if state.prev_frames and cfg.rolling_history > 0:
                past = thin_rows(concat(state.prev_frames), ROLLING_HISTORY_ROWS)
                state.rolling_history = [*state.rolling_history, past][-cfg.rolling_history :]
            state.prev_frames = [w.frame]
        else:
            release = w.holds
        self.stats.windows += 1
        self.stats.windowed_events += w.n
        state.windows_closed += 1
        state.unwritten += 1
        epoch = self._epoch
        alerted = self.alerting is not None and bool(self.alerting.rules_for(key.model_id))
        # the alert state of a merged window (a sharded model) is in its partials partition's own slot
        slot = merge_slot(key.partition) if key.topic == self.partials_topic else key.partition

        async def finish(previous: asyncio.Future | None) -> None:
            records: list[Record]
            if self.evaluator is None:
                records, seconds = [], 0.0
            elif isinstance(self.evaluator, DetectorProcess):
                records, seconds = await self.evaluator.evaluate(model, key, w, reference, rolling_frames)
            elif self._executor is None:
                records, seconds = evaluate_closed(self.evaluator, model, key, w, reference, rolling_frames)
            else:
                records, seconds = await asyncio.get_running_loop().run_in_executor(
                    self._executor, evaluate_closed, self.evaluator, model, key, w, reference, rolling_frames
                )
            self.stats.evaluate_s += seconds
            records = [r if r.time_ns == w.time_ns else replace(r, time_ns=w.time_ns) for r in records]
            if previous is not None:
                await asyncio.wait([previous])  # results go to the sink in closing order
            if labelled is not None:
                records.extend(labelled.records)
            records.append(Record(WINDOW, {T_MODEL: key.model_id, T_VERSION: key.model_version}, fields, w.time_ns))
            if alerted:
                if self._revoked_at.get((key.topic, key.partition), 0) > epoch or not self.alerting.owns(slot):
                    # the partition left since the window closed: its alert state went to the next owner, who
                    # evaluates this window again (it re-reads its messages, none was acked): write nothing of it
                    if labelled is not None:
                        labelled.failed()
                    return
                try:  # never blocks on the network: deliveries have their own queues
                    records.extend(self.alerting.on_window(key.model_id, key.model_version, records, w.time_ns, slot))
                except Exception:  # alerting must not stop detection
                    log.exception(
                        "alert evaluation failed on window #%d of %s v%s", w.seq, key.model_id, key.model_version
                    )
                # a window that changed an alert's status: its alert state is in Kafka before its results (and
                # its dw_window checkpoint) are in InfluxDB, so whoever resumes after it has that state
                await self.alerting.sync(slot)
            fut = await self.sink.submit(records)

            def done(_f: asyncio.Future) -> None:
                if _f.cancelled() or _f.exception() is not None:
                    if labelled is not None:
                        labelled.failed()
                    return  # not written: keep the messages un-acked (they are re-read after a restart)
                state.unwritten -= 1
                if labelled is not None:
                    labelled.confirm()
                for h in release:
                    tracker.release(h.tolist())

            fut.add_done_callback(done)

        await self._chain_job(finish)

    # -- sharded models (streams/worker/shards.py) ---------------------------------
    def _shard_partitions(self, model: ModelMonitor) -> tuple[int, ...]:
        from streams.wire.contract import shard_partitions

        return shard_partitions(model.model_id, model.shards, self.settings.topic_partitions)

    async def _publish_partial(self, state: StreamState, w: ClosedWindow, tracker: AckTracker) -> None:
        """A shard's closed window goes to the partials topic (the model's merge owner tests it), then its
        ``dw_shard`` point (count and checkpoint: where this shard resumes) to InfluxDB; its messages are
        released once both are confirmed. In closing order, after the windows closed before."""
        key = state.key
        if self.partials is None:
            raise ConfigError(
                f"{key.model_id}: shards: {state.model.shards} needs the partials topic (a worker runtime)"
            )
        if w.summary is None:  # the window opened before its layout existed: summarise its rows now
            layout = self._summary_layout(state)
            if layout is None:
                raise ConfigError(f"{key.model_id}: a sharded model's windows need a reference (reference.file)")
            w.summary = layout.summary()
            w.summary.update(w.frame)
        state.summary_refs.pop(id(w.summary), None)
        from streams.wire.contract import home_partition

        target = home_partition(key.model_id, self.settings.topic_partitions)
        fields: dict[str, Any] = {F_N_EVENTS: w.n, F_CLOSE_REASON: w.reason, **checkpoint_fields(key, w.checkpoint)}
        tags = {T_MODEL: key.model_id, T_VERSION: key.model_version, T_SHARD: str(key.partition)}
        record = Record(SHARD, tags, fields, w.time_ns)
        self.stats.windows += 1
        self.stats.windowed_events += w.n
        state.windows_closed += 1
        state.unwritten += 1
        epoch, release = self._epoch, w.holds
        blob = await asyncio.to_thread(lambda: partial_of(key.model_id, key.model_version, key.partition, w).to_bytes())
        if len(blob) > MAX_PARTIAL_BYTES:  # the broker would refuse it: the model's windows cannot be merged
            raise ConfigError(
                f"models[{key.model_id}].window: a partial window of {key.model_id} is {len(blob):,} bytes, over "
                f"{MAX_PARTIAL_BYTES:,}: lower window.summary_reservoir or window.summary_bins"
            )

        async def finish(previous: asyncio.Future | None) -> None:
            if previous is not None:
                await asyncio.wait([previous])
            async for attempt in Backoff(0.5, 10.0).attempts_async():
                if self._revoked_at.get((key.topic, key.partition), 0) > epoch:
                    return  # the shard's next owner publishes this window again (its messages are not acked)
                try:
                    await asyncio.wait_for(await self.partials.send(key.model_id, blob, target), 30.0)
                    break
                except Exception as e:  # broker away: the window waits, its messages stay un-acked
                    log.warning(
                        "publishing partial window #%d of %s v%s (%s[%d]) failed (%r); retrying in %.1f s",
                        w.seq,
                        key.model_id,
                        key.model_version,
                        key.topic,
                        key.partition,
                        e,
                        attempt.wait,
                    )
            fut = await self.sink.submit([record])

            def done(f: asyncio.Future) -> None:
                if f.cancelled() or f.exception() is not None:
                    return  # not written: re-read after a restart, published again (the merge keeps one)
                state.unwritten -= 1
                for h in release:
                    tracker.release(h.tolist())

            fut.add_done_callback(done)

        await self._chain_job(finish)

    async def _merge(self, messages: Sequence[RawMessage], tps: dict[tuple[str, int], _TP]) -> None:
        from detectors.summaries import SummaryError

        """Partials (messages of the partials topic) into their models' merge buffers; every window they
        complete is merged and goes through :meth:`_window_closed` like any summarised window. A partial is
        held (un-acked) until its window is written; one that cannot be used is logged and acked."""
        for m in messages:
            st_tp = tps[(m.topic, m.partition)]
            try:
                p = read_message(m.value or b"")
            except PartialError as e:
                log.error("%s[%d]@%d: %s: skipped", m.topic, m.partition, m.offset, e)
                continue
            if isinstance(p, ShardRows):
                self._merge_rows(m, p, st_tp)
                continue
            model = self._sharded(m, p.model_id, "a partial window")
            if model is None:
                continue
            key = StreamKey(m.topic, m.partition, p.model_id, p.model_version)
            state = st_tp.streams.get(key)
            if state is None:
                state = await self._new_merge_state(key, model, st_tp)
            assert state.merge is not None
            added = state.merge.add(p, m.offset)
            if added.dropped == "unexpected":
                log.error(
                    "%s v%s: a partial window from partition %d, not one of its shards %s: skipped",
                    p.model_id,
                    p.model_version,
                    p.partition,
                    list(state.merge.shards),
                )
                continue
            if added.dropped:  # its window is written already (a shard re-read after a restart)
                continue
            waiting = state.merge.waiting
            if len(waiting) > MAX_WAITING_WINDOWS and ("waiting", key) not in self._warned:
                self._warned.add(("waiting", key))
                first = min(waiting)
                log.warning(
                    "%s v%s: %d windows wait to be merged; the oldest, #%d, for the partials of partitions %s "
                    "(a shard that gets no events holds the model's windows back: is every producer sharded?)",
                    p.model_id,
                    p.model_version,
                    len(waiting),
                    first,
                    waiting[first],
                )
            st_tp.tracker.hold([m.offset])
            if added.replaced:  # an older copy of this partial: its message is not needed any more
                st_tp.tracker.release(added.replaced)
            layout = self._summary_layout(state)
            if added.complete and layout is None:
                raise ConfigError(f"{p.model_id}: a sharded model's windows need a reference (reference.file)")
            for c in added.complete:
                try:
                    summary = await asyncio.to_thread(merge_partials, layout, c.partials)
                except SummaryError as e:  # a shard cut its window from another reference (one was set meanwhile)
                    log.error(
                        "%s v%s: merged window #%d is not written: its partials cannot be merged with this "
                        "worker's reference (%s)",
                        p.model_id,
                        p.model_version,
                        c.seq,
                        e,
                    )
                    st_tp.tracker.release(c.tokens)
                    continue
                w = merged_window(c, summary, state.merge_last_ns)
                state.merge_last_ns = w.time_ns
                w.holds = [np.array(sorted(set(c.tokens)), dtype=np.int64)]
                await self._window_closed(state, w, st_tp.tracker)

    def _sharded(self, m: RawMessage, model_id: str, what: str) -> ModelMonitor | None:
        """The monitor of ``model_id`` when it is sharded; else None, with one ERROR line naming ``what`` the
        partials message held."""
        model = self.models.get(model_id)
        if model is None or model.shards <= 1:
            log.error(
                "%s[%d]@%d: %s of %r, which the monitor config does not shard: skipped",
                m.topic,
                m.partition,
                m.offset,
                what,
                model_id,
            )
            return None
        return model

    def _merge_rows(self, m: RawMessage, rows: ShardRows, st_tp: _TP) -> None:
        """A shard's batch of joined rows to its model's label results here (the merge owner); its message is
        held until a label-join checkpoint holds the rows (or acked now if this worker joins no labels)."""
        model = self._sharded(m, rows.model_id, "joined rows")
        if model is None:
            return
        if rows.partition not in self._shard_partitions(model):
            log.error(
                "%s: joined rows from partition %d, not one of its shards: skipped", rows.model_id, rows.partition
            )
            return
        if self.label_hook is None:
            return
        fresh = self.label_hook.on_shard_rows(
            rows.model_id, merge_slot(m.partition), rows.partition, rows.seq, rows.rows, rows.stats
        )
        if fresh and self.label_hook.store is not None:
            st_tp.tracker.hold([m.offset])
            self.label_hook.hold_until_snapshot(st_tp.tracker, np.array([m.offset], dtype=np.int64))

    async def _publish_rows(self, model_id: str, partition: int, seq: int, rows: Any, stats: dict[str, int]) -> None:
        """A shard's batch of joined rows and counters (:class:`ShardRows`) to its model's merge owner, acknowledged."""
        from streams.wire.contract import home_partition

        assert self.partials is not None
        blob = await asyncio.to_thread(lambda: ShardRows(model_id, partition, seq, rows, stats).to_bytes())
        target = home_partition(model_id, self.settings.topic_partitions)
        await asyncio.wait_for(await self.partials.send(model_id, blob, target), 30.0)

    def _label_key(self, state: StreamState) -> StreamKey:
        """The label hook's key of a stream: a merged window's partition is its partials partition's merge slot."""
        key = state.key
        return key._replace(partition=merge_slot(key.partition)) if state.merge is not None else key

    async def _new_merge_state(self, key: StreamKey, model: ModelMonitor, st_tp: _TP) -> StreamState:
        """The merge step of a sharded model version, resumed after its newest merged window in InfluxDB."""
        if st_tp.trusted is None:
            st_tp.trusted = self.committed(key.topic, key.partition) is not None
        ck = await self.checkpoints.latest(key) if st_tp.trusted and self.checkpoints is not None else None
        assert model.window.size_events is not None  # ModelMonitor: a sharded model has count windows
        state = StreamState(key, model, CountWindows(model.window.size_events, ck), resumed_from=ck)
        state.merge = MergeBuffer(self._shard_partitions(model), ck.seq if ck is not None else -1)
        state.merge_last_ns = ck.time_ns if ck is not None else -1
        if self.label_hook is not None:
            lkey = self._label_key(state)
            self.label_hook.merge_model(key.model_id, lkey.partition)
            await self._catch_up_labels(lkey, key, ck)
        await self._stored_reference(key, wait=False)
        self._configure_reference(state, None)
        st_tp.streams[key] = state
        log.info(
            "merging %s v%s from its %d shards (partitions %s) in %s[%d]: %s",
            key.model_id,
            key.model_version,
            model.shards,
            list(state.merge.shards),
            key.topic,
            key.partition,
            f"after window #{ck.seq}" if ck is not None else "from its first window",
        )
        return state

    def _calibration(self, model: ModelMonitor, key: StreamKey, reference):
        """CBPE's calibration for a window of ``key`` (or why there is none, as text): the labelled rows of
        its reference (a file with a label column), else the model's first joined labels."""
        if model.task != "classification":
            return None
        from detectors.performance import Calibration, reference_calibration  # light: no scipy/alibi import

        cal = reference_calibration(reference, model.performance.min_calibration_rows)
        if self.label_hook is None:
            return cal if isinstance(cal, Calibration) else f"{cal}, and this worker joins no labels"
        self.label_hook.use_reference_calibration(key.model_id, cal if isinstance(cal, Calibration) else None)
        return self.label_hook.calibration(key.model_id)

    async def _chain_job(self, finish: Callable[[asyncio.Future | None], Awaitable[None]]) -> None:
        """Run a closed window's ``finish`` after the previous window's (results are written in window
        order), and wait while more than ``max_windows_in_flight`` are under way (backpressure: the
        detectors or the sink are behind)."""
        task = asyncio.ensure_future(finish(self._chain))
        self._chain = task
        self._track(task)
        task.add_done_callback(self._job_done)
        self._in_flight += 1
        while self._in_flight > self.max_windows_in_flight:
            self._room.clear()
            await self._room.wait()

    def _job_done(self, task: asyncio.Future) -> None:
        self._in_flight -= 1
        self._room.set()
        if not self._in_flight and self._to_prepare:
            self._submit_prepares()
        if not task.cancelled() and task.exception() is not None:
            log.error("writing a window's results failed: %r", task.exception())

    async def _dead_letter(self, dl: DeadLetter, tracker: AckTracker) -> None:
        self.stats.dead_letters += 1
        self.stats.dead_events += dl.n_events
        offset = dl.message.offset
        tracker.hold([offset])
        async for attempt in Backoff(0.5, retries=5).attempts_async():
            try:
                delivery = await self.deadletters.publish(dl)
                break
            except Exception as e:  # the broker may be briefly unavailable
                if attempt.wait is None:
                    raise
                log.warning("publishing a dead letter failed (%s); retrying in %.1f s", e, attempt.wait)
        written = await self.sink.submit([deadletter_record(dl, self.known_models)])
        both = asyncio.gather(delivery, written)
        self._track(both)

        def done(f: asyncio.Future) -> None:
            if f.cancelled() or f.exception() is not None:
                log.error(
                    "dead letter of %s[%d]@%d not confirmed (%s): the message stays un-acked",
                    dl.message.topic,
                    dl.message.partition,
                    offset,
                    "cancelled" if f.cancelled() else f.exception(),
                )
                return
            tracker.release([offset])

        both.add_done_callback(done)

    async def _dead_letters(self, dls: Sequence[DeadLetter], tps: dict[tuple[str, int], _TP]) -> None:
        """Dead letters of one batch: their messages are held, then flushed with the ones before them.

        A flush (:meth:`_flush_dead_letters`) happens once ``deadletter_max`` dead letters are
        waiting or the oldest has waited ``deadletter_linger`` seconds (checked here and by
        :meth:`tick`, every second): a flood of malformed messages costs one produce request
        and one InfluxDB write per flush instead of per message (or per batch), so it does not
        slow the valid traffic down (tests/reliability/test_hostile_input.py, docs/reliability.md).
        """
        if not self._dl_pending:
            self._dl_since = self.clock()
        events = 0
        held: dict[AckTracker, list[int]] = {}
        pending = self._dl_pending
        for dl in dls:
            m = dl.message
            tracker = tps[(m.topic, m.partition)].tracker
            held.setdefault(tracker, []).append(m.offset)
            pending.append((dl, tracker))
            events += dl.n_events
        self.stats.dead_letters += len(dls)
        self.stats.dead_events += events
        for tracker, offsets in held.items():
            tracker.hold(offsets)
        if len(pending) >= self.deadletter_max or self.clock() - self._dl_since >= self.deadletter_linger:
            await self._flush_dead_letters()

    async def _flush_dead_letters(self) -> None:
        """Publish the waiting dead letters in order and write their counts; release their messages after both.

        The messages are acked (so their offsets may be committed) only once the broker has
        confirmed every dead letter of the flush and InfluxDB has the aggregated counts
        (:func:`streams.worker.deadletter.deadletter_records`). Dead letters of partitions this
        worker no longer owns are dropped: their new owner reads those messages again.
        """
        pending, self._dl_pending = self._dl_pending, []
        pending = [(dl, tr) for dl, tr in pending if tr.active]
        if not pending:
            return
        dls = [dl for dl, _tr in pending]
        held: dict[AckTracker, list[int]] = {}
        for dl, tracker in pending:
            held.setdefault(tracker, []).append(dl.message.offset)
        delivered = await self.deadletters.publish_batch(dls)
        written = await self.sink.submit(deadletter_records(dls, self.known_models))
        both = asyncio.gather(written, delivered)
        self._track(both)

        def done(f: asyncio.Future) -> None:
            if f.cancelled() or f.exception() is not None:
                log.error(
                    "%d dead letter(s) not confirmed (%s): their messages stay un-acked",
                    len(dls),
                    "cancelled" if f.cancelled() else f.exception(),
                )
                return
            for tracker, offsets in held.items():
                tracker.release(offsets)

        both.add_done_callback(done)

    async def flush_dead_letters(self) -> None:
        """Flush the waiting dead letters now (shutdown, tests)."""
        if self._dl_pending:
            async with self.lock:
                await self._flush_dead_letters()

    def _track(self, fut: asyncio.Future) -> None:
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    # -- timers ------------------------------------------------------------------
    async def tick(self, now: float | None = None) -> int:
        """Close windows idle for longer than their ``idle_close_seconds``; returns how many closed."""
        now = self.clock() if now is None else now
        closed = 0
        if self.lock.locked():  # messages are being processed: nothing is idle right now
            return 0
        async with self.lock:
            if self._dl_pending and now - self._dl_since >= self.deadletter_linger:
                await self._flush_dead_letters()
            for st_tp in list(self._tps.values()):
                for state in list(st_tp.streams.values()):
                    if state.windows.n_open and now - state.last_event_at >= state.model.window.idle_close_seconds:
                        out = state.windows.close_idle()
                        ws = [out] if isinstance(out, ClosedWindow) else list(out or [])
                        for w in ws:
                            await self._window_closed(state, w, st_tp.tracker)
                            closed += 1
        return closed

    async def flush_labels(self) -> int:
        """Label-derived results that changed since the last call go to InfluxDB (the worker's 1 s timer):
        a label's realized performance and error-stream verdict are written within about a second of its
        arrival, also when no window closes any more (a paused or ended stream). Returns the records."""
        if self.label_hook is None:
            return 0
        async with self.lock:
            out = self.label_hook.flush()
            if not out.records:
                return 0

            async def submit(previous: asyncio.Future | None) -> None:
                if previous is not None:
                    await asyncio.wait([previous])  # after the windows closed before (same points: last wins)
                fut = await self.sink.submit(out.records)

                def done(f: asyncio.Future) -> None:
                    if f.cancelled() or f.exception() is not None:
                        out.failed()
                    else:
                        out.confirm()

                fut.add_done_callback(done)

            task = asyncio.ensure_future(submit(self._chain))
            self._chain = task
            self._track(task)
        return len(out.records)

    async def save_windows(self, force: bool = False, partitions: Iterable[int] | None = None) -> int:
        """Checkpoint the open summarised windows to Kafka (:mod:`streams.worker.window_changelog`), if due.

        Due every ``window_changelog.every`` seconds, or once ``max_covered`` messages wait for a
        checkpoint, or ``force`` (revoke, shutdown). The open windows are copied under the pipeline's
        lock (a few ms each) and serialised on a thread (~0.1 s each: compression), so the batches go
        on meanwhile; once the broker has acknowledged a partition's checkpoint, the messages whose rows
        it holds are released (acked, so their offsets may be committed). ``partitions``: only these
        input partitions. Returns the bytes written.
        """
        wc = self.window_changelog
        if wc is None or (not force and wc.lock.locked()):
            return 0
        if not force and self.clock() - self._windows_saved_at < wc.every and self._covered < wc.max_covered:
            return 0
        only = None if partitions is None else {int(p) for p in partitions}
        async with wc.lock:  # one checkpoint at a time: generations in order
            t0 = time.perf_counter()
            async with self.lock:
                captured = self._capture_windows(only)
                self._windows_saved_at = self.clock()
            written = 0
            for part, sts, todo, release in captured:
                try:
                    refs = {  # the references of summary layouts not yet stored beside this partition's checkpoints
                        fp: (ref, st_.model.features)
                        for _st, _ek, _ow, opened, st_ in todo
                        for fp, ref in opened
                        if ref is not None and not wc.has_reference(part, fp)
                    }
                    made, blobs = (
                        await asyncio.to_thread(_entries_of, [ow for _st, _ek, ow, _r, _s in todo], refs)
                        if todo
                        else ([], {})
                    )
                    for fingerprint, blob in blobs.items():  # before the entries that need them
                        written += await wc.save_reference(part, fingerprint, blob)
                    for (st, ek, _ow, _r, _s), entry in zip(todo, made):
                        if st.entries is not None:
                            st.entries[ek] = entry
                    entries: dict[EntryKey, Entry] = {}
                    for st in sts:
                        entries.update(st.entries or {})
                    written += await wc.save(part, entries)
                except Exception:  # broker away...: the messages stay held, the next checkpoint tries again
                    log.exception("writing the open-window checkpoint of partition %d to %r failed", part, wc)
                    for _tracker, state, held in release:
                        state.covered[:0] = held
                        self._covered += sum(len(h) for h in held)
                    continue
                for tracker, _state, held in release:
                    for h in held:
                        tracker.release(h.tolist())
            if captured:
                dt = time.perf_counter() - t0
                st = wc.stats
                st["count"] += 1
                st["bytes"] += written
                st["seconds"] += dt
                st["last_bytes"], st["last_ms"] = written, 1e3 * dt
                log.log(
                    logging.WARNING if dt > wc.every else logging.DEBUG,  # slower than the interval: worth a look
                    "open-window checkpoint of %d partition(s): %d bytes in %.1f ms",
                    len(captured),
                    written,
                    1e3 * dt,
                )
        return written

    def _capture_windows(self, only: set[int] | None) -> list[tuple[int, list[_TP], list, list]]:
        """Per input partition with something new: ``(partition, its _TPs, [(tp, entry key, copy of the open
        window(s), [(layout fingerprint, the reference a summary was opened with), ...], its stream state), ...] to
        serialise, [(tracker, state, [offsets, ...]), ...] the messages it releases)``. A
        stream key with a closed window not yet confirmed keeps its previous entry and its holds (see the
        window_changelog module)."""
        import copy

        by_part: dict[int, list[_TP]] = {}
        for (_topic, part), st in self._tps.items():
            if st.entries is not None and (only is None or part in only):
                by_part.setdefault(part, []).append(st)
        out = []
        for part, sts in sorted(by_part.items()):
            todo = []
            release = []
            changed = False
            for st in sts:
                assert st.entries is not None
                for key, state in st.streams.items():
                    w = state.windows
                    # event-time windows that opened with rows (before a reference) are held until written
                    if not w.checkpointed or state.unwritten or (isinstance(w, TimeWindows) and w.has_rows):
                        continue
                    ek = (key.topic, key.model_id, key.model_version)
                    ow, old = w.open_window(), st.entries.get(ek)
                    if ow is None:
                        changed |= st.entries.pop(ek, None) is not None
                    elif old is None or (old.seq, old.n, old.last_pos) != (ow.seq, ow.n, ow.last_pos):
                        live = ow.summaries if isinstance(ow, OpenTimeWindows) else [ow.summary]
                        copies = [copy.deepcopy(s, {id(s.layout): s.layout}) for s in live]
                        # the references the summaries were opened with: stored beside them, once
                        opened = [(s.layout.fingerprint, state.summary_refs.get(id(s))) for s in live]
                        if isinstance(ow, OpenTimeWindows):
                            ow = replace(ow, windows=tuple((*w_[:4], c) for w_, c in zip(ow.windows, copies)))
                        else:
                            ow = replace(ow, summary=copies[0])
                        todo.append((st, ek, ow, opened, state))
                        changed = True
                    if state.covered:
                        release.append((st.tracker, state, state.covered))
                        self._covered -= sum(len(h) for h in state.covered)
                        state.covered = []
                        changed = True
            if changed:
                out.append((part, sts, todo, release))
        return out

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for background work (window evaluations, reference stores, dead letters) to finish."""
        await self.flush_dead_letters()
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            await asyncio.wait(list(self._pending), timeout=max(deadline - time.monotonic(), 0.01))

    # -- introspection -----------------------------------------------------------
    def pending_messages(self) -> int:
        return sum(len(st.tracker) for st in self._tps.values())

    def open_events(self) -> int:
        return sum(s.windows.n_open for st in self._tps.values() for s in st.streams.values())


def _entries_of(windows: list, refs: dict[str, tuple[Any, Any]]) -> tuple[list[Entry], dict[str, bytes]]:
    """The checkpoint entries of open windows, and the references ``{layout fingerprint: (reference, features)}``
    their summaries were opened with as stored beside them (serialises both: on a thread)."""
    from streams.worker.window_changelog import encode_reference

    return [Entry.of(ow) for ow in windows], {fp: encode_reference(ref, feats) for fp, (ref, feats) in refs.items()}


#: default of ``window.reference_points_every``: the reference's own points at least every this many windows
REFERENCE_POINTS_EVERY = 100


def _reference_points(
    state: StreamState, w: ClosedWindow, reference: Any, ref_kind: str, every: int = REFERENCE_POINTS_EVERY
) -> bool:
    """Whether window ``w`` writes the points that describe its reference (histograms, feature impacts).

    They are the same for every window judged against one reference, and the dashboard reads only
    the latest of each (``dashboard/queries.py``: ``histogram``, ``drift_latest``): with every
    window they were a third of a 5,000-event window's points. They are written by the window that
    starts using a reference and by every ``every``-th window of the stream (``window.reference_points_every``) — a
    function of the stream's windows and references, not of this process's history, so a worker
    that restarts or takes a partition over writes the same points as one that ran through
    (``tests/integration/test_scale_out.py`` compares every point).
    """
    if ref_kind == "rolling" or w.seq % every == 0:
        return True  # a rolling reference is a new one with every window
    if reference is None:
        return False
    if state.windows_closed:  # the previous window closed here: was it judged against this reference?
        return state.last_reference is not reference
    ck = state.resumed_from
    if ck is None:
        return True  # the stream's first window
    # the previous window (#ck.seq) was written before this state was rebuilt
    if ref_kind == "first_n":  # judged only if it started after the reference's last event
        return not (state.ref_end_pos is not None and ck.start_pos > state.ref_end_pos)
    # a file or operator-set reference: the one the previous window had (one set while no worker owned
    # the partition shows with the next every-th window)
    return False


def _ordinals_of_last(parts: list[FramePart]) -> int:
    """Ordinal (among this key's rows in its message) of the last row of the collected parts."""
    from streams.worker.windows import row_ordinals

    last = parts[-1]
    origin = last.origin
    # rows of the same message may span the previous parts too (a message is decoded whole, so no)
    return int(row_ordinals(origin)[-1])
