"""What the dashboard tests against the real stack share: a database of their own, a served dashboard, Chromium."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboard import browser
from dashboard import queries as Q
from streams.devstack.localstack import LocalStack, free_port


@contextlib.contextmanager
def fresh_db(stack: LocalStack, prefix: str) -> Iterator[Q.Conn]:
    """A database of its own (``<prefix><random>``) on the stack's InfluxDB, dropped afterwards."""
    conn = Q.Conn(stack.influx_url, f"{prefix}{uuid.uuid4().hex[:10]}", *stack.influx_auth)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            httpx.post(
                f"{conn.url}/query",
                data={"q": f"DROP DATABASE {Q.ident(conn.db)}"},
                timeout=30,
                auth=(conn.username, conn.password),
            )


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[str]:
    """``driftwatch dashboard`` on a free port with ``env``; its base URL. Not starting fails the test (its log)."""
    try:
        with browser.serve_dashboard(env, free_port(), log) as base:
            yield base
    except browser.BrowserError as e:
        pytest.fail(str(e), pytrace=False)


@contextlib.contextmanager
def chromium(**size: int) -> Iterator[Any]:
    """A page in Debian's headless Chromium (Playwright); no Chromium fails the test, never skips it."""
    try:
        browser.chromium_path()
    except browser.BrowserError as e:
        pytest.fail(str(e), pytrace=False)
    with browser.chromium(**size) as page:
        yield page
