"""``driftwatch worker``: run one Faust worker that monitors the inference stream.

Loads the monitor config (``--monitors FILE``, default ``Settings.monitors``),
creates the topics it needs (idempotent), makes sure the InfluxDB database
exists (1.x: CREATE DATABASE; 2.x: the bucket, via BucketsApi), then runs the
Faust worker in the foreground until SIGINT/SIGTERM (its shutdown bounded by
``DRIFTWATCH_WORKER_SHUTDOWN_TIMEOUT_SECONDS``, :mod:`streams.worker.shutdown`). Start more workers with the same
``DRIFTWATCH_CONSUMER_GROUP`` to split the partitions between them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("streams.cli.worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--monitors", type=Path, default=None, help="monitor config (YAML); default: DRIFTWATCH_MONITORS / the demo's"
    )
    parser.add_argument("--batch", type=int, default=200, help="messages handed to the pipeline at once (default 200)")
    parser.add_argument("--within", type=float, default=0.2, help="seconds to wait for a batch to fill (default 0.2)")
    parser.add_argument(
        "--no-create-topics",
        action="store_true",
        help="do not create missing topics, at start or when the broker loses them (they must exist)",
    )


def build(
    settings, monitors, *, batch: int = 200, within: float = 0.2, evaluator="default", recreate_topics: bool = True
):
    """The Faust app with the driftwatch agents registered, and its runtime.

    ``recreate_topics``: topics the broker lost while the worker runs are recreated
    (:class:`streams.worker.topics.TopicWatch`); off with ``--no-create-topics``.
    """
    from streams.worker.agents import Runtime
    from streams.worker.app import create_app
    from streams.worker.topics import define_topics

    app = create_app(settings)
    topics = define_topics(app, settings, sharded=monitors.sharded)
    runtime = Runtime(
        app,
        settings,
        monitors,
        topics,
        batch=batch,
        within=within,
        evaluator=evaluator,
        recreate_topics=recreate_topics,
    )
    return app, runtime


def run(args: argparse.Namespace) -> int:
    from streams.settings import Settings
    from streams.worker.monitors import ConfigError, load_monitors

    settings = Settings()
    from streams.broker.security import redact_secrets_in_logs

    redact_secrets_in_logs(settings)  # client libraries log passwords at DEBUG (docs/reliability.md)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "aiokafka"):  # one line per request / fetch otherwise
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    # but the group membership (joins, the leader, syncs, assignments, leaves): a few lines per rebalance
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(max(logging.INFO, logging.getLogger().level))
    path = args.monitors or settings.monitors
    try:
        monitors = load_monitors(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    redact_secrets_in_logs(settings, monitors)  # + webhook secrets and secret URLs
    if not args.no_create_topics:
        from streams.broker.admin import TopicError
        from streams.worker.topics import ensure_topics

        try:
            ensure_topics(settings, sharded=monitors.sharded)  # the partials topic only when a model is sharded
        except TopicError as e:
            print(f"driftwatch worker: {e}", file=sys.stderr)
            return 1
    try:
        from streams.influx.admin import ensure_database

        ensure_database(settings)
    except Exception as e:  # InfluxDB may come later: the sink retries and logs
        log.warning("could not make sure the InfluxDB database exists (%s); writes will retry", e)
    from streams.worker.shutdown import Worker

    app, runtime = build(
        settings, monitors, batch=args.batch, within=args.within, recreate_topics=not args.no_create_topics
    )
    log.info(
        "worker for %d model(s) from %s: group %s, topic %s (%d partitions), InfluxDB %s db %s",
        len(monitors.models),
        path,
        settings.consumer_group,
        settings.topic_inferences,
        settings.topic_partitions,
        settings.influx_url,
        settings.influx_db,
    )
    # a shutdown that overruns settings.worker_shutdown_timeout_seconds ends the process anyway (shutdown.py)
    worker = Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        shutdown_timeout=settings.worker_shutdown_timeout_seconds,
        kill_children=runtime.kill_children,
    )
    runtime.deadline = worker.deadline  # the orderly shutdown's steps share it
    try:
        worker.execute_from_commandline()
    except SystemExit as e:
        return int(e.code or 0)
    return 0
