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
  batches itself (orjson + numpy, :mod:`streams.decode`).
* ``topic_allow_declare=False``, ``topic_disable_leader=True``: topics are
  created up front with an explicit partition count (:mod:`streams.topics`);
  Faust must not auto-create anything.
* ``stream_wait_empty=False``: the agent keeps the events of open windows
  un-acked on purpose (offsets are committed only after the window results are
  written), so a rebalance must not wait for them to be acked.
* ``stream_buffer_maxsize=256``: one message carries up to ~1000 events; a
  small buffer keeps memory flat and lets backpressure reach the broker.
* no tables, ``store="memory://"``: the worker's state is rebuilt from the
  committed offset plus the checkpoints in InfluxDB (see :mod:`streams.pipeline`).
"""

from __future__ import annotations

import ssl

import faust

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
    return faust.App(settings.consumer_group, **conf)
