"""Fixtures of the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.devstack.localstack import LocalStack, free_ports


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[LocalStack]:
    """A local stack of this test's own (tests that stop or restart the broker or InfluxDB)."""
    stack, err = None, None
    for _ in range(3):  # a free port can be taken by someone else before the service binds it
        kp, ip = free_ports(2)
        candidate = LocalStack(tmp_path / "stack", kp, ip, start_timeout=30, die_with_parent=True)
        try:
            candidate.up()
        except Exception as e:  # reported below if no attempt works
            err = e
            continue
        stack = candidate
        break
    if stack is None:
        pytest.fail(f"could not start a dedicated local stack: {err}", pytrace=False)
    yield stack
    stack.down()
