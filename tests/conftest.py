"""Session-wide fixtures: a real local stack (tansu + InfluxDB 1.x) and per-test settings.

- ``stack`` (session): a running :class:`streams.devstack.localstack.LocalStack` on free loopback
  ports under pytest's temp folder; ``stack.bootstrap`` / ``stack.influx_url``. Its InfluxDB
  has authentication on: ``stack.influx_auth`` is the admin ``(user, password)``, and for
  the session the process environment names it (``DRIFTWATCH_INFLUX_USERNAME`` and
  ``DRIFTWATCH_INFLUX_PASSWORD_FILE``), so every ``Settings()`` and every child process
  started with ``os.environ`` can read and write. If the stack cannot start, every test
  that needs it FAILS with the reason (never skips).
- ``settings`` (function): :class:`streams.settings.Settings` pointing at the stack,
  with unique topic names (``t<hex>.inferences`` …, created with 4 partitions), a unique
  consumer group, a unique created InfluxDB database, free worker/dashboard ports and
  ``state_dir`` under ``tmp_path``. Topics and database are deleted afterwards.
- ``settings_env`` (function): environment for child processes (``driftwatch worker`` …)
  so their ``Settings()`` equals ``settings``.
- ``consume_all`` : :func:`streams.broker.admin.consume_all` — read a topic from the
  beginning until ``expected`` records or a timeout (never "to the end": tansu's end
  offsets are wrong).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.devstack.localstack import LocalStack, StackError, free_ports
from streams.devstack.localstack import settings_env as _settings_env
from streams.settings import Settings

log = logging.getLogger("tests.conftest")

TEST_PARTITIONS = 4


@pytest.fixture(autouse=True)
def _collect_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """A ResourceWarning is an error (pyproject.toml): collect at the end of every slow test (they start
    workers, stacks and browsers), so a leak fails the test that made it, not whichever test runs next."""
    yield
    if request.node.get_closest_marker("slow") is not None:
        gc.collect()


def pytest_report_header(config: pytest.Config) -> list[str]:
    stack = LocalStack(Path("."), 0, 0)
    parts = []
    for name, resolve in (("tansu", stack.resolve_tansu), ("influxd", stack.resolve_influxd)):
        try:
            parts.append(f"{name} {resolve()}")
        except StackError as e:
            parts.append(f"{name} MISSING ({e})")
    return ["driftwatch local stack: " + ", ".join(parts)]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A running local stack for the whole session (stopped at the end)."""
    state_dir = tmp_path_factory.mktemp("stack")
    s: LocalStack | None = None
    error: StackError | None = None
    for _attempt in range(3):  # a free port can be taken by someone else before we bind it
        kafka_port, influx_port = free_ports(2)
        candidate = LocalStack(state_dir, kafka_port, influx_port, start_timeout=30, die_with_parent=True)
        try:
            candidate.up()
        except StackError as e:
            error = e
            if "in use" in str(e):
                continue
            break
        s = candidate
        break
    if s is None:
        pytest.fail(f"the local stack (tansu + InfluxDB) could not start: {error}", pytrace=False)
    names = ("DRIFTWATCH_INFLUX_USERNAME", "DRIFTWATCH_INFLUX_PASSWORD_FILE")
    saved = {k: os.environ.get(k) for k in names}
    user = s.influx_env()
    os.environ.update({k: user[k] for k in names})
    try:
        yield s
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s.down()


@pytest.fixture
def settings(stack: LocalStack, tmp_path: Path) -> Iterator[Settings]:
    """Settings for one test: its own topics (4 partitions), group and database."""
    from streams.broker.admin import delete_topics, ensure_topics, topic_names
    from streams.devstack.localstack import free_port
    from streams.influx.admin import drop_database, ensure_database

    tag = uuid.uuid4().hex[:10]
    s = Settings(
        kafka_bootstrap=stack.bootstrap,
        kafka_security_protocol="PLAINTEXT",
        topic_inferences=f"t{tag}.inferences",
        topic_labels=f"t{tag}.labels",
        topic_deadletter=f"t{tag}.deadletter",
        topic_alerts=f"t{tag}.alerts",
        topic_partitions=TEST_PARTITIONS,
        consumer_group=f"g{tag}",
        influx_version=1,
        influx_url=stack.influx_url,
        influx_db=f"d{tag}",
        influx_username=stack.influx_auth[0],
        influx_password=stack.influx_auth[1],
        influx_token=None,
        state_dir=tmp_path / "state",
        kafka_port=stack.kafka_port,
        influx_port=stack.influx_port,
        worker_web_port=free_port(),
        dashboard_port=free_port(),
    )
    try:
        ensure_topics(s, partitions=TEST_PARTITIONS)
        ensure_database(s)
    except Exception as e:
        pytest.fail(f"could not prepare topics/database on the local stack: {e}", pytrace=False)
    yield s
    with contextlib.suppress(Exception):
        delete_topics(s, topic_names(s))
    with contextlib.suppress(Exception):
        drop_database(s)


@pytest.fixture
def settings_env(settings: Settings) -> dict[str, str]:
    """Environment for child processes whose ``Settings()`` must equal ``settings``."""
    return _settings_env(settings)


@pytest.fixture
def consume_all() -> Callable[..., list[Any]]:
    """``consume_all(settings, topic, expected=None, timeout=15.0)`` -> ConsumerRecords."""
    from streams.broker.admin import consume_all as _consume_all

    return _consume_all
