"""The Faust application: one factory, tansu-safe settings, nothing else.

``create_app(settings)`` builds the :class:`faust.App` every worker runs (the
consumer group is ``Settings.consumer_group``; more workers in the group split
the partitions). The settings that matter, and why:

* ``broker_session_timeout=6``, ``broker_heartbeat_interval=1``,
  ``broker_rebalance_timeout=6``: a group join takes half the session timeout
  on tansu; with Faust's defaults the first event arrives after ~30 s.
* ``consumer_auto_offset_reset="earliest"``: tansu's wrong end offsets make
  ``latest`` re-deliver old messages; ``earliest`` is also what "nothing is
  lost" needs for a new group.
* ``value_serializer="raw"``, ``key_serializer="raw"``: the worker decodes
  batches itself (orjson + numpy, :mod:`streams.worker.decode`).
* ``topic_allow_declare=False``, ``topic_disable_leader=True``: topics are
  created up front with an explicit partition count (:mod:`streams.worker.topics`);
  Faust must not auto-create anything.
* ``stream_wait_empty=False``: the agent keeps the events of open windows
  un-acked on purpose (offsets are committed only after the window results are
  written), so a rebalance must not wait for them to be acked.
* ``stream_buffer_maxsize=256``: one message carries up to ~1000 events; a
  small buffer keeps memory flat and lets backpressure reach the broker.
* the consumer's fetch wait is :data:`FETCH_MAX_WAIT_MS` (100 ms), not the
  1500 ms Faust hard-codes: aiokafka keeps one fetch in flight per broker, and
  while a busy partition's records are buffered its next fetch carries only the
  idle partitions (the labels topic, partitions without traffic), which the
  broker holds for the whole wait. The busy partition then sat idle for up to
  1.5 s each time — bursts of small messages (a flood of malformed ones)
  stalled that way every few hundred messages. Idle workers fetch ~10 times
  a second instead of ~once.
* the consumer polls for :data:`POLL_TIMEOUT_S` (100 ms), not Faust's 1 s: when a
  stream's buffer is full its partition is left out of the poll, and a poll in
  progress does not notice that the buffer drained — with a backlog of small
  messages the worker idled up to 1 s every ~200 messages.
* the worker never sends LeaveGroup (aiokafka sends it on close and after
  ``max_poll_interval`` idle): a stopped worker's partitions move once the session
  timeout (6 s) has passed, as after a SIGKILL. tansu 0.6.0 (the local broker)
  keeps a member that leaves while a join is in progress as the group's leader:
  every later join is answered with that departed leader, nobody can sync, and the
  whole group consumes nothing until the broker restarts. A member that just stops
  heartbeating is dropped properly, leader included. See docs/scale-out.md.
* Faust's "has not sent fetch request for TP since start" check counts from the
  last assignment, not from the consumer's start (:meth:`_Consumer.on_partitions_assigned`).
  Its "no recent fetch" check can never fire (it compares a monotonic clock with aiokafka's
  wall-clock fetch time): :mod:`streams.worker.fetch_watch` does that job, from the state
  :func:`partition_views` reads here.
* no tables, ``store="memory://"``: the worker's state is rebuilt from the
  committed offset plus the checkpoints in InfluxDB (see :mod:`streams.worker.pipeline`).
"""

from __future__ import annotations

import ssl
import time

import faust
from faust.transport.drivers import aiokafka as _driver

from streams.settings import Settings


def broker_url(settings: Settings) -> str:
    """``kafka://host1:port;host2:port`` from the comma-separated bootstrap list."""
    hosts = [h.strip() for h in settings.kafka_bootstrap.split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)


def credentials(settings: Settings):
    """Faust broker credentials for SASL/SSL settings (None for PLAINTEXT)."""
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    ctx = None
    if proto.endswith("SSL"):
        ctx = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if proto.startswith("SASL"):
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ctx,
        )
    return ctx


#: how long the broker may hold a fetch with no data (aiokafka's ``fetch_max_wait_ms``)
FETCH_MAX_WAIT_MS = 100
#: how long one poll of the consumer waits for records (Faust: 1 s)
POLL_TIMEOUT_S = 0.1


def _stay_in_group(coordinator):
    """A stand-in for aiokafka's ``GroupCoordinator._maybe_leave_group``: forget the generation, send nothing."""

    async def forget_generation() -> None:
        coordinator.reset_generation()

    return forget_generation


class _ConsumerThread(_driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its Fetcher in start(); Faust passes a fixed 1500 ms
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        # never LeaveGroup (module docstring): aiokafka sends it on close() and when the consumer sat idle for
        # max_poll_interval; the broker drops a silent member after the session timeout and rebalances then
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is not None:
            coordinator._maybe_leave_group = _stay_in_group(coordinator)

    async def seek_to_committed(self):
        return await self.call_thread(self._seek_assigned_to_committed)

    async def _seek_assigned_to_committed(self):
        """aiokafka's ``seek_to_committed``, for the partitions that are still assigned when each is sought.

        It asks the committed offset of one partition after another; a rebalance that revokes one
        meanwhile made the whole seek fail with ``IllegalStateError: No current assignment`` (Faust
        logs a warning, and the partitions after it were not sought back). A revoked partition is
        its new owner's to seek.
        """
        consumer = self._ensure_consumer()
        assigned = consumer._subscription.assigned_partitions
        out = {}
        for tp in list(assigned()):
            offset = await consumer.committed(tp)
            if tp not in assigned():
                continue
            out[tp] = offset
            if offset and offset > 0:
                consumer._fetcher.seek_to(tp, offset)
        return out


class _Consumer(_driver.Consumer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: partitions a rebalance is taking away: Faust forgets their committed offsets before the worker's
        #: revocation handler runs; a batch in flight must not read "no committed offset" as a fact
        #: (streams.worker.agents.Runtime._committed). Cleared when the next assignment begins.
        self.revoking: set = set()

    async def on_partitions_revoked(self, revoked) -> None:
        self.revoking.update(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned, generation_id: int = 0) -> None:
        self.revoking.clear()
        # Faust's "Aiokafka has not sent fetch request for TP since start" counted from the consumer's start, but
        # aiokafka keeps fetch times per assignment, empty until its first fetch answers: right after every
        # rebalance a worker older than stream_processing_timeout could log that ERROR for partitions fetched a
        # moment later. Its "since start" is since the assignment now: the ERROR means a partition not fetched.
        self._thread.time_started = time.monotonic()
        await super().on_partitions_assigned(assigned, generation_id)

    def _new_consumer_thread(self):
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout):
        # Faust polls with a 1 s timeout: a wait in progress does not see a partition that is
        # resumed because its stream buffer drained, so every full buffer stalled it up to 1 s
        if self.flow_active and not self.app.client_only and not self._get_active_partitions():
            await self.sleep(POLL_TIMEOUT_S)  # every partition paused (Faust sleeps 1 s here)
            return {}, set()
        return await super()._wait_next_records(min(timeout, POLL_TIMEOUT_S))


def partition_views(app: faust.App) -> list:
    """What the worker's consumer knows of each assigned partition (:class:`streams.worker.fetch_watch.PartitionView`):
    position, end offset and wall-clock time of the last fetch answer (aiokafka's), and whether it is held back on
    purpose (paused by aiokafka or by Faust's flow control and full stream buffers, or holding fetched records not
    handed over yet). Faust and aiokafka internals, read as Faust's own checks read them; [] when not running."""
    from aiokafka import TopicPartition

    from streams.worker.fetch_watch import PartitionView

    consumer = app.consumer
    if not isinstance(consumer, _Consumer):  # not started (or not this transport): nothing to read
        return []
    thread = getattr(consumer, "_thread", None)
    aio = getattr(thread, "_consumer", None)
    if aio is None:
        return []
    fetcher = aio._fetcher
    assignment = fetcher._subscriptions.subscription.assignment if fetcher._subscriptions.subscription else None
    if assignment is None or not assignment.active:
        return []
    active = consumer._get_active_partitions()
    buffered = set(fetcher._records)
    out = []
    for tp in consumer.assignment():
        atp = TopicPartition(tp.topic, tp.partition)
        state = assignment.state_value(atp)
        if state is None:
            continue
        out.append(
            PartitionView(
                tp.topic,
                tp.partition,
                position=state.position if state.has_valid_position else None,
                end=state.highwater,
                last_fetch=state.timestamp / 1000 if state.timestamp else None,
                held=tp not in active or state.paused or atp in buffered,
            )
        )
    return out


class _Transport(_driver.Transport):
    """Faust's aiokafka transport with :data:`FETCH_MAX_WAIT_MS` on the worker's consumer."""

    Consumer = _Consumer


class App(faust.App):
    """:class:`faust.App` whose consumer fetches with :data:`FETCH_MAX_WAIT_MS` (see module docstring)."""

    def _new_transport(self):
        return _Transport(self.conf.broker_consumer, self)


def create_app(settings: Settings, **overrides) -> faust.App:
    """The worker's Faust app (see module docstring); ``overrides`` go to :class:`faust.App`."""
    datadir = settings.state_dir / "faust" / settings.consumer_group
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    conf = dict(
        broker=broker_url(settings),
        broker_credentials=credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=6,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        stream_buffer_maxsize=256,
        producer_max_request_size=max(settings.max_message_bytes + 64 * 1024, 1_048_576),
        web_enabled=settings.worker_web_port != 0,
        web_port=settings.worker_web_port or 6066,
        web_bind="127.0.0.1",
        web_in_thread=False,
    )
    conf.update(overrides)
    return App(settings.consumer_group, **conf)
