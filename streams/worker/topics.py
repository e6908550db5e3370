"""The worker's topics: declared on the Faust app, created up front with explicit partitions.

* inferences (``Settings.topic_inferences``) and labels (``topic_labels``):
  raw bytes in, key = model id. Both have ``Settings.topic_partitions``
  partitions, so Faust co-partitions them: the worker that owns a model's
  inferences also owns its labels (the label join stays local).
* dead letters (``topic_deadletter``): written by :mod:`streams.worker.deadletter`.
* references (``<topic_inferences>.references``, 1 partition, compacted):
  :mod:`streams.worker.references`.
* the label join's changelog (``<consumer_group>-<topic_labels>-join-changelog``, ``topic_partitions``
  partitions, compacted): :mod:`streams.worker.label_changelog`.
* the open summarised windows' changelog (``<consumer_group>-<topic_inferences>-window-changelog``,
  ``topic_partitions`` partitions, compacted): :mod:`streams.worker.window_changelog`.
* the alert state's changelog (``<consumer_group>-<topic_inferences>-alerts-changelog``,
  ``topic_partitions`` partitions, compacted): :mod:`streams.alerts.partitions`.
* the partial windows of sharded models (``<consumer_group>-<topic_inferences>-partials``,
  ``topic_partitions`` partitions, *not* compacted — every partial counts): read by an agent of the
  same group, so each model's merge step has one owner (:mod:`streams.worker.shards`). Created, declared
  and watched only when some monitor sets ``shards`` above 1 (``sharded=True`` below): a worker started
  with a config that newly shards a model creates it then.

Topics are never auto-created: brokers choose their own partition count for
those (tansu at random) and tansu cannot add partitions later.

A broker can also *lose* the topics while the worker runs (the local broker
keeps everything in memory: a restart loses every topic, offset and group).
:class:`TopicWatch` looks at the broker's metadata every few seconds and, when
one of the worker's topics is missing, says so and recreates them all with the
configured partition count — before the first producer send auto-creates them
with a count of the broker's choosing (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import faust

from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    inferences: faust.TopicT
    labels: faust.TopicT
    partials: faust.TopicT | None = None  # sharded models' partial windows (None: no model is sharded)


def partials_topic_name(settings: Settings) -> str:
    """The group's partials topic (:func:`streams.worker.shards.partials_topic`)."""
    from streams.worker.shards import partials_topic

    return partials_topic(settings.consumer_group, settings.topic_inferences)


def define_topics(app: faust.App, settings: Settings, sharded: bool = False) -> Topics:
    """Declare the input topics on ``app`` (raw keys and values); ``sharded``: the partials topic too."""

    def topic(name: str) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )

    return Topics(
        inferences=topic(settings.topic_inferences),
        labels=topic(settings.topic_labels),
        partials=topic(partials_topic_name(settings)) if sharded else None,
    )


def ensure_topics(settings: Settings, sharded: bool = False) -> dict[str, int]:
    """Create every topic the worker uses that does not exist yet (idempotent); ``sharded``: the partials
    topic too (some model has ``shards`` > 1)."""
    from streams.alerts.partitions import ensure_changelog_topic as ensure_alert_changelog
    from streams.broker.admin import ensure_topics as _ensure
    from streams.worker.changelog_store import ensure_topic
    from streams.worker.label_changelog import ensure_changelog_topic
    from streams.worker.references import ensure_references_topic
    from streams.worker.shards import PARTIALS_TOPIC_CONFIGS
    from streams.worker.window_changelog import ensure_window_changelog_topic

    counts = _ensure(settings)
    if sharded:
        ensure_topic(settings, partials_topic_name(settings), settings.topic_partitions, PARTIALS_TOPIC_CONFIGS)
    ensure_references_topic(settings)
    ensure_changelog_topic(settings)
    ensure_window_changelog_topic(settings)
    ensure_alert_changelog(settings)
    return counts


def worker_topics(settings: Settings, sharded: bool = False) -> list[str]:
    """Every topic the worker needs: inferences, labels, dead letters, alerts, references, the changelogs (label
    join, open windows, alert state), and with ``sharded`` the partials topic."""
    from streams.alerts.partitions import changelog_topic as alert_changelog_topic
    from streams.broker.admin import topic_names
    from streams.worker.label_changelog import changelog_topic
    from streams.worker.references import references_topic
    from streams.worker.window_changelog import window_changelog_topic

    return topic_names(
        settings,
        [
            references_topic(settings),
            changelog_topic(settings),
            window_changelog_topic(settings),
            alert_changelog_topic(settings),
            *([partials_topic_name(settings)] if sharded else []),
        ],
    )


class TopicWatch:
    """Recreates the worker's topics when the broker has lost them (see module docstring).

    One metadata request every ``interval`` seconds on a small aiokafka client
    (cheap; it never auto-creates a topic). When topics are missing: a WARNING
    naming them, then :func:`ensure_topics` (idempotent: only the missing ones
    are created, with ``Settings.topic_partitions``). With ``recreate=False``
    (``driftwatch worker --no-create-topics``) it only warns. ``sharded``: the partials topic is one of them.
    """

    def __init__(self, settings: Settings, interval: float = 2.0, recreate: bool = True, sharded: bool = False) -> None:
        self.settings = settings
        self.interval = interval
        self.recreate = recreate
        self.sharded = sharded
        self.topics = worker_topics(settings, sharded)
        self.recreated = 0  # times topics were found missing and recreated
        self._warned: frozenset[str] = frozenset()
        self._wrong: set[tuple[str, int]] = set()  # (topic, partition count) already warned about

    async def missing(self, client) -> list[str]:
        md = await client.fetch_all_metadata()
        have = md.topics()
        self._check_counts({t: len(md.partitions_for_topic(t) or ()) for t in self.topics if t in have})
        return [t for t in self.topics if t not in have]

    def _check_counts(self, counts: dict[str, int]) -> None:
        """Warn (once per topic and count) about a topic someone else created with another partition count."""
        from streams.worker.references import references_topic

        refs = references_topic(self.settings)
        for t, n in counts.items():
            want = 1 if t == refs else self.settings.topic_partitions
            if n != want and (t, n) not in self._wrong:
                self._wrong.add((t, n))
                log.warning(
                    "topic %s has %d partitions, not %d: it was created by someone else (a producer's first "
                    "send auto-creates topics with the broker's count); windows stay correct, but the "
                    "labels join and scale-out need co-partitioned topics — recreate it with %d",
                    t,
                    n,
                    want,
                    want,
                )

    async def check(self, client) -> list[str]:
        """One round: the topics found missing (and recreated, unless ``recreate`` is off)."""
        gone = await self.missing(client)
        if not gone:
            self._warned = frozenset()
            return []
        if not self.recreate:
            if frozenset(gone) != self._warned:
                self._warned = frozenset(gone)
                log.warning(
                    "topics %s are missing on %s (the broker lost its state, or they were deleted) and "
                    "--no-create-topics is set: create them with %d partitions before producers send, or "
                    "the broker picks its own partition count",
                    gone,
                    self.settings.kafka_bootstrap,
                    self.settings.topic_partitions,
                )
            return gone
        log.warning(
            "topics %s are missing on %s: the broker lost its state (an in-memory broker restarted, or the "
            "topics were deleted); recreating them with %d partitions before a producer auto-creates them "
            "with a count of the broker's choosing",
            gone,
            self.settings.kafka_bootstrap,
            self.settings.topic_partitions,
        )
        counts = await asyncio.to_thread(ensure_topics, self.settings, self.sharded)
        self.recreated += 1
        log.info("topics recreated: %s", {t: counts.get(t, 1) for t in gone})
        return gone

    async def connect(self):
        """A bootstrapped aiokafka client for :meth:`check` (the security settings applied)."""
        from aiokafka import AIOKafkaClient

        from streams.broker.security import aiokafka_options

        client = AIOKafkaClient(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id="driftwatch-topic-watch",
            request_timeout_ms=10_000,
            **aiokafka_options(self.settings),
        )
        try:
            await client.bootstrap()
        except BaseException:
            await client.close()
            raise
        return client

    async def run(self) -> None:
        """Check every ``interval`` seconds until cancelled (a broker that is away is retried quietly)."""
        client = None
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    if client is None:
                        client = await self.connect()
                    await self.check(client)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # broker away or restarting: next round
                    log.debug("topic watch: %r", e)
                    if client is not None:
                        try:
                            await client.close()
                        except Exception as close_error:  # the client is dropped either way
                            log.debug("topic watch: closing the admin client: %r", close_error)
                        client = None
        finally:
            if client is not None:
                await client.close()
