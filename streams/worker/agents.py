"""Faust agents: the thin layer between Faust and :class:`streams.worker.pipeline.Pipeline`.

* ``inferences`` and ``labels`` agents read their topic with
  ``stream.take_events(batch, within)``: one call per batch of messages, all
  per-event work is numpy inside the pipeline (Faust costs ~150 µs per
  message; the SDK packs ~1000 events into one).
* Manual acks: ``take_events`` acks every event it yielded; the agent takes an
  extra reference on each message first (``message.incref()``), so the message
  stays un-acked until the pipeline's :class:`~streams.worker.commits.AckTracker`
  calls ``event.ack()`` — after the window results that depend on it are
  written. Faust then commits the offsets.
* A 1 s timer closes idle windows; another logs throughput every 30 s. The 1 s timers that write
  (label results and checkpoints, open-window checkpoints, alert state) only start their job as a
  task (:meth:`Runtime.background_timer`): it may wait seconds for the pipeline's lock or the broker.
* On rebalance the pipeline forgets the revoked partitions; Faust re-reads the
  new assignment from the committed offsets and the pipeline rebuilds its
  windows from the checkpoints (see :mod:`streams.worker.pipeline`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import faust
from faust.transport.consumer import Consumer
from faust.types import TP

from streams.influx.sink import InfluxSink
from streams.settings import Settings
from streams.worker.checkpoints import CheckpointSource
from streams.worker.deadletter import DeadLetterPublisher, KafkaBatchSender
from streams.worker.decode import RawMessage, content_type
from streams.worker.detector_process import DetectorProcess
from streams.worker.evaluation import Evaluator
from streams.worker.fetch_watch import FetchWatch
from streams.worker.monitors import MonitorsConfig
from streams.worker.pipeline import PartitionRevoked, Pipeline
from streams.worker.references import ReferenceStore
from streams.worker.shutdown import ShutdownDeadline
from streams.worker.topics import Topics, TopicWatch
from streams.worker.window_changelog import WindowChangelog, window_store

if TYPE_CHECKING:  # imported only when a model has alert rules
    from streams.alerts import Alerting

log = logging.getLogger(__name__)


def raw_message(event: Any) -> RawMessage:
    m = event.message
    ts = m.timestamp
    return RawMessage(
        m.value, m.key, m.topic, m.partition, m.offset, int(ts * 1000) if ts else None, content_type(m.headers)
    )


class Runtime:
    """Everything one worker process holds: sink, pipeline, and their wiring into ``app``."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        monitors: MonitorsConfig,
        topics: Topics,
        *,
        batch: int = 200,
        within: float = 0.2,
        stats_every: float = 30.0,
        evaluator: Evaluator | DetectorProcess | Literal["default"] | None = "default",
        recreate_topics: bool = True,
        topic_watch_every: float = 2.0,
    ) -> None:
        self.app = app
        self.settings = settings
        self.topics = topics
        self.batch = batch
        self.within = within
        self.sink = InfluxSink(settings)
        self.references = ReferenceStore(settings)
        self.alerting: Alerting | None = None
        if any(m.alerts for m in monitors.models):
            from streams.alerts import Alerting
            from streams.alerts.partitions import AlertPartitions, alert_changelog

            # alert state per input partition, in Kafka: it follows the partition to any host
            self.alerting = Alerting(
                monitors,
                settings,
                write_records=self.sink.submit,
                partitions=AlertPartitions(alert_changelog(settings)),
            )

        # dead letters of a batch go out as one record batch per partition on their own producer
        self.deadletter_sender = KafkaBatchSender(settings)
        # the broker lost its topics (in-memory broker restarted): recreate them with the configured partitions
        self.topic_watch = TopicWatch(
            settings, topic_watch_every, recreate=recreate_topics, sharded=topics.partials is not None
        )
        if evaluator == "default" and settings.detector_process:
            from streams.worker.labels import online_cache_dir

            evaluator = DetectorProcess(str(online_cache_dir(settings.state_dir)))
        self.pipeline = Pipeline(
            settings,
            monitors,
            sink=self.sink,
            deadletters=DeadLetterPublisher(send_batch=self.deadletter_sender),
            ack=lambda event: event.ack(),
            references=self.references,
            checkpoints=CheckpointSource(settings, lambda: self.sink.client),
            committed=self._committed,
            end_offset=self._end_offset,
            evaluator=evaluator,
            label_hook=_label_hook(monitors, settings),
            alerting=self.alerting,
            window_changelog=WindowChangelog(window_store(settings)),
            partials=self._partials_client(topics),
        )
        self._last_stats = (time.monotonic(), 0, 0)
        self.stale = 0  # events dropped because they were fetched before a rebalance
        self.revoked: dict = {}  # TP -> consumer generation when it was revoked (until the next assignment)
        self.background: dict[str, asyncio.Future] = {}  # timer name -> the job it started last
        #: partitions assigned, with a backlog and not fetched (Faust's own check never fires): fetch_watch.py
        self.fetch_watch = (
            FetchWatch(settings.worker_fetch_stall_seconds) if settings.worker_fetch_stall_seconds else None
        )
        self._fetch_watched: frozenset[tuple[str, int]] = frozenset()
        #: the shutdown's deadline (streams.worker.shutdown; set by the CLI): the shutdown steps share it
        self.deadline: ShutdownDeadline | None = None
        self._register(stats_every)

    def _partials_client(self, topics: Topics):
        """The producer side of the partials topic (sharded models' partial windows), or None."""
        if topics.partials is None:
            return None
        from streams.worker.changelog_store import TopicClient
        from streams.worker.shards import MAX_PARTIAL_BYTES

        return TopicClient(
            self.settings,
            topics.partials.get_topic_name(),
            name="driftwatch-partials",
            max_request_size=MAX_PARTIAL_BYTES + 64 * 1024,
        )

    def kill_children(self) -> list[int]:
        """SIGKILL the detector process, if the detectors run in one (the shutdown deadline's last step)."""
        evaluator = self.pipeline.evaluator
        return evaluator.kill() if isinstance(evaluator, DetectorProcess) else []

    def check_fetches(self) -> None:
        """One look of the fetch watchdog: an ERROR per partition newly stalled, an INFO when one recovers."""
        if self.fetch_watch is None or self.app.rebalancing:
            return
        from streams.worker.app import partition_views

        try:
            views = partition_views(self.app)
        except Exception:  # Faust/aiokafka internals: no answer this round
            log.debug("fetch watch: partition state not readable", exc_info=True)
            return
        watched = frozenset(v.key for v in views)
        if watched != self._fetch_watched:  # once per assignment: the watch reads the consumer's state
            self._fetch_watched = watched
            log.info(
                "fetch watch: %d assigned partition(s) watched (reported if one with a backlog has no fetch for %g s)",
                len(watched),
                self.fetch_watch.stall_seconds,
            )
        stalls, ended = self.fetch_watch.check(time.time(), views)
        for st in stalls:
            v = st.view
            log.error(
                "partition %s[%d] is assigned to this worker and has a backlog (position %s, end %s) but had no "
                "fetch for %.0f s: its events are not being read (DRIFTWATCH_WORKER_FETCH_STALL_SECONDS=%g)",
                v.topic,
                v.partition,
                v.position,
                v.end,
                st.seconds,
                self.fetch_watch.stall_seconds,
            )
        for topic, partition in ended:
            log.info("partition %s[%d] is fetched again (or no longer stalled)", topic, partition)

    def budget(self, timeout: float) -> float:
        """Seconds a shutdown step may take: ``timeout``, cut to what the shutdown deadline leaves it."""
        return timeout if self.deadline is None else self.deadline.budget(timeout)

    def background_timer(self, name: str, job: Callable[[], Awaitable[Any]], interval: float = 1.0) -> None:
        """A Faust timer whose tick only *starts* ``job`` as a task, unless the job it started before is still
        running (then the tick is skipped).

        Why: the timers' jobs wait for the pipeline's lock, which a batch holds while it waits for room in the
        detectors' queue (seconds at start-up, while the detector process imports and calibrates its first
        window), and for the broker's acknowledgement of a checkpoint. Awaited in the timer itself, such a
        wait made Faust log "Timer driftwatch-label-snapshots is overlapping" at every start-up; the work
        itself is the same either way (one run at a time, each as soon as it can).
        """

        @self.app.timer(interval=interval, name=name)
        async def tick() -> None:
            running = self.background.get(name)
            if running is None or running.done():
                task = self.background[name] = asyncio.ensure_future(job())
                task.add_done_callback(partial(_job_failed, name))

    async def settle_background(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for the jobs the timers started (shutdown)."""
        running = [t for t in self.background.values() if not t.done()]
        if running:
            await asyncio.wait(running, timeout=timeout)

    def _committed(self, topic: str, partition: int) -> int | None:
        if TP(topic, partition) in getattr(self.app.consumer, "revoking", ()):  # Faust forgot its offset already
            raise PartitionRevoked(f"{topic}[{partition}] is being revoked")
        consumer = self.app.consumer
        if not isinstance(consumer, Consumer):  # the offsets are an internal of Faust's Consumer, not of ConsumerT
            return None
        try:
            return consumer._committed_offset.get(TP(topic, partition))
        except Exception:  # a Faust internal: no answer means "do not trust checkpoints"
            log.debug("no committed offset known for %s[%d]", topic, partition, exc_info=True)
            return None

    def _end_offset(self, topic: str, partition: int) -> int | None:
        """The partition's end offset as of the last fetch (None if unknown): evidence of a broker that lost
        its state (:meth:`streams.worker.pipeline.Pipeline._report_untrusted`)."""
        try:
            end = self.app.consumer.highwater(TP(topic, partition))
        except Exception:  # a Faust internal: no answer means "unknown"
            log.debug("no end offset known for %s[%d]", topic, partition, exc_info=True)
            return None
        return None if end is None or end < 0 else int(end)

    def _revoked(self, m) -> bool:
        """A message of a partition revoked since it was fetched (same generation: the consumer has not joined
        the new one yet, and still lists the partition as assigned)."""
        at = self.revoked.get(m.tp)
        return at is not None and m.generation_id is not None and m.generation_id <= at

    async def handle(self, events: list) -> None:
        """One batch of Faust events into the pipeline (the events are acked by the pipeline).

        Events fetched before a rebalance (older consumer generation, or a partition
        no longer assigned) are left alone: never processed and never acked — the
        partition's owner reads them again from the committed offset.
        """
        gen = self.app.consumer_generation_id
        try:
            assigned = self.app.consumer.assignment()
        except Exception:  # consumer not started: nothing is assigned
            log.debug("no partition assignment yet", exc_info=True)
            assigned = set()
        msgs, live = [], []
        for e in events:
            m = e.message
            m.incref()  # take_events acks on its own after the batch: keep one reference for us
            if (m.generation_id is not None and m.generation_id != gen) or m.tp not in assigned or self._revoked(m):
                self.stale += 1
                continue
            msgs.append(raw_message(e))
            live.append(e)
        if msgs:
            try:
                await self.pipeline.process(msgs, live)
            except Exception as exc:
                # at-least-once: stop rather than skip a batch; the restarted worker re-reads it
                log.critical(
                    "processing failed, stopping the worker (it resumes from the committed offsets): %r",
                    exc,
                    exc_info=True,
                )
                await self.app.crash(exc)
                raise

    def _register(self, stats_every: float) -> None:
        app, rt = self.app, self

        @app.agent(self.topics.inferences, name="driftwatch-inferences")
        async def inferences(stream):
            async for events in stream.take_events(rt.batch, within=rt.within):
                await rt.handle(events)

        @app.agent(self.topics.labels, name="driftwatch-labels")
        async def labels(stream):
            async for events in stream.take_events(rt.batch, within=rt.within):
                await rt.handle(events)

        agents = [inferences, labels]
        if self.topics.partials is not None:

            @app.agent(self.topics.partials, name="driftwatch-partials")
            async def partials(stream):  # sharded models: the merge step of the models whose partition this is
                async for events in stream.take_events(rt.batch, within=rt.within):
                    await rt.handle(events)

            agents.append(partials)

        alerting = rt.alerting
        if alerting is not None:

            @app.task
            async def start_alerting():  # delivery queues (rows left by a previous run go first)
                await alerting.start()

        @app.task
        async def watch_topics():
            await rt.topic_watch.run()

        @app.task
        async def watch_references():  # references set/reset by `driftwatch reference` apply without a restart
            await rt.pipeline.watch_references()

        @app.timer(interval=1.0, name="driftwatch-idle-close")
        async def idle_close():
            await rt.pipeline.tick()

        if rt.pipeline.label_hook is not None:
            hook = rt.pipeline.label_hook

            async def label_snapshots() -> None:  # label results within ~1 s; the join checkpointed (labels.py)
                await rt.pipeline.flush_labels()
                await hook.snapshot_if_due()

            rt.background_timer("driftwatch-label-snapshots", label_snapshots)

        # open summarised windows to Kafka, their messages acked (window_changelog.py)
        rt.background_timer("driftwatch-window-checkpoints", rt.pipeline.save_windows)

        if alerting is not None:  # alert state that changed without a status change (streams/alerts/partitions.py)
            rt.background_timer("driftwatch-alert-state", alerting.flush)

        if rt.fetch_watch is not None:  # assigned partitions with a backlog and no fetch (fetch_watch.py)

            @app.timer(interval=min(5.0, rt.fetch_watch.stall_seconds / 3), name="driftwatch-fetch-watch")
            async def fetch_watch():
                rt.check_fetches()

        @app.timer(interval=stats_every, name="driftwatch-stats")
        async def stats():
            rt.log_stats()

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's SignalHandlerT (VarArg/NamedArg) matches no function
        async def on_revoked(app: faust.App, revoked: set[TP], **kwargs: Any) -> None:
            # until the next assignment, the consumer still lists them as assigned and the generation is the old
            # one: a batch fetched before is not processed (its label join was just handed over)
            rt.revoked.update(dict.fromkeys(revoked, app.consumer_generation_id))
            try:  # the open summarised windows go to the partitions' next owner (else it re-reads more)
                await asyncio.wait_for(
                    # within the rebalance timeout (6 s): later, the partitions' next owner may already write its own
                    rt.pipeline.save_windows(force=True, partitions={tp.partition for tp in revoked}),
                    4.0,
                )
            except Exception as e:
                log.warning("open windows not checkpointed at the rebalance (%r): their next owner re-reads more", e)
            rt.pipeline.revoke((tp.topic, tp.partition) for tp in revoked)
            from streams.alerts.partitions import merge_slot

            if rt.pipeline.label_hook is not None:  # the join state goes to the partitions' next owner
                partials = rt.pipeline.partials_topic  # a merge step's label results: the partition's merge slot
                async with rt.pipeline.lock:
                    await rt.pipeline.label_hook.revoke(
                        (tp.topic, merge_slot(tp.partition) if tp.topic == partials else tp.partition) for tp in revoked
                    )
            if rt.alerting is not None:  # the alert state too (windows closed before and not yet evaluated are dropped)
                await rt.alerting.revoke_partitions(
                    tp.partition if tp.topic == rt.settings.topic_inferences else merge_slot(tp.partition)
                    for tp in revoked
                    if tp.topic in (rt.settings.topic_inferences, rt.pipeline.partials_topic)
                )

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode's SignalHandlerT (VarArg/NamedArg) matches no function
        async def on_assigned(app: faust.App, assigned: set[TP], **kwargs: Any) -> None:
            rt.revoked.clear()

        @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's SignalHandlerT (VarArg/NamedArg) matches no function
        async def on_shutdown(app: faust.App, **kwargs: Any) -> None:
            # each step's wait is cut to what the shutdown deadline leaves (rt.budget): one stuck on a broker or an
            # InfluxDB that is gone leaves the later steps and Faust's own stop their time (streams/worker/shutdown.py)
            try:
                # a checkpoint the timers started finishes (or is read again)
                await rt.settle_background(rt.budget(5.0))
                if rt.alerting is not None:
                    await rt.alerting.stop()
                try:  # dead letters still waiting for their flush (else their messages are simply read again)
                    await asyncio.wait_for(rt.pipeline.flush_dead_letters(), rt.budget(5.0))
                except Exception as e:
                    log.warning("dead letters not flushed at shutdown (%r): their messages are read again", e)
                if rt.pipeline.label_hook is not None:
                    try:  # label results not yet written, then the last label-join snapshot
                        await asyncio.wait_for(rt.pipeline.flush_labels(), rt.budget(5.0))
                    except Exception as e:
                        log.warning("label results not flushed at shutdown (%r): they are written after the restart", e)
                    try:  # the last label-join checkpoint: the next owner re-reads nothing
                        await asyncio.wait_for(rt.pipeline.label_hook.close(), rt.budget(30.0))
                    except Exception as e:
                        log.warning("label-join state not saved at shutdown (%r)", e)
                try:  # the open summarised windows: a restart re-reads nothing before this
                    await asyncio.wait_for(rt.pipeline.save_windows(force=True), rt.budget(10.0))
                except Exception as e:
                    log.warning("open windows not checkpointed at shutdown (%r): the restart re-reads more", e)
                if rt.pipeline.window_changelog is not None:
                    await rt.pipeline.window_changelog.close()
                if rt.pipeline.partials is not None:
                    await rt.pipeline.partials.close()
                await rt.sink.stop(timeout=rt.budget(5.0))
                await rt.deadletter_sender.stop()
                await rt.references.close()
            finally:  # whatever failed above, the detector process ends with the worker
                if isinstance(rt.pipeline.evaluator, DetectorProcess):
                    rt.pipeline.evaluator.close()

        self.agents = tuple(agents)

    def log_stats(self) -> None:
        s = self.pipeline.stats
        now = time.monotonic()
        t0, ev0, w0 = self._last_stats
        dt = max(now - t0, 1e-9)
        self._last_stats = (now, s.events, s.windows)
        log.info(
            "%.0f events/s, %d windows (+%d), %d events windowed, %d dead-lettered (by reason and model: %s), %d late, "
            "%d events in open windows, %d messages un-acked, %d points queued for InfluxDB",
            (s.events - ev0) / dt,
            s.windows,
            s.windows - w0,
            s.windowed_events,
            s.dead_events,
            self.pipeline.deadletters.summary(),
            s.late_events,
            self.pipeline.open_events(),
            self.pipeline.pending_messages(),
            self.sink.pending_points,
        )


def _job_failed(name: str, task: asyncio.Future) -> None:
    """Log a timer job that raised (each job keeps its own state for the next run; the worker goes on)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the %s job failed: %r", name, task.exception(), exc_info=task.exception())


def _label_hook(monitors: MonitorsConfig, settings: Settings):
    try:
        from streams.worker.labels import LabelHook
    except ImportError:
        return None
    from streams.worker.label_changelog import LabelChangelog

    return LabelHook(monitors, settings, store=LabelChangelog(settings))
