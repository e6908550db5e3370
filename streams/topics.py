"""The worker's topics: declared on the Faust app, created up front with explicit partitions.

* inferences (``Settings.topic_inferences``) and labels (``topic_labels``):
  raw bytes in, key = model id. Both have ``Settings.topic_partitions``
  partitions, so Faust co-partitions them: the worker that owns a model's
  inferences also owns its labels (the label join stays local).
* dead letters (``topic_deadletter``): written by :mod:`streams.deadletter`.
* references (``<topic_inferences>.references``, 1 partition, compacted):
  :mod:`streams.references`.

Topics are never auto-created: brokers choose their own partition count for
those (tansu at random) and tansu cannot add partitions later.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from streams.settings import Settings


@dataclass(frozen=True)
class Topics:
    inferences: faust.TopicT
    labels: faust.TopicT


def define_topics(app: faust.App, settings: Settings) -> Topics:
    """Declare the input topics on ``app`` (raw keys and values)."""

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                         partitions=settings.topic_partitions)

    return Topics(inferences=topic(settings.topic_inferences), labels=topic(settings.topic_labels))


def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create every topic the worker uses that does not exist yet (idempotent)."""
    from streams.kafka_admin import ensure_topics as _ensure
    from streams.references import ensure_references_topic

    counts = _ensure(settings)
    ensure_references_topic(settings)
    return counts
