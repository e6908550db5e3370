"""streams.worker.shutdown: the deadline's decision and what it names, in-process (the real worker: test_exit_paths).

The deadline ends the process with ``os._exit``; here its ``exit`` and ``kill_children`` are plain
recorders, so what is checked is the logic: it fires once, after its time, not when cancelled, with one
ERROR line that names the coroutines the shutdown task is stuck in.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from streams.worker.shutdown import (
    EXIT_SHUTDOWN_TIMEOUT,
    ShutdownDeadline,
    awaiting,
    describe_waiting,
    main_thread_stack,
)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[object] = []
        self.done = threading.Event()

    def __call__(self, *args: object) -> None:
        self.calls.append(args)
        self.done.set()


def test_the_deadline_fires_once_after_its_time_kills_the_children_and_exits(caplog):
    killed, exited = Recorder(), Recorder()
    d = ShutdownDeadline(0.3, kill_children=killed, describe=lambda: "Consumer.stop > commit", exit=exited)
    with caplog.at_level(logging.INFO, logger="streams.worker.shutdown"):
        t0 = time.monotonic()
        assert d.arm("SIGTERM") is True
        assert d.arm("the worker stops") is False  # the first reason and start time stand
        assert exited.done.wait(5)
        took = time.monotonic() - t0
    assert 0.3 <= took < 2.0
    assert killed.calls == [()] and exited.calls == [(EXIT_SHUTDOWN_TIMEOUT,)]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "shutdown (SIGTERM) did not finish within 0.3 s" in errors[0]
    assert "still waiting for: Consumer.stop > commit" in errors[0] and str(EXIT_SHUTDOWN_TIMEOUT) in errors[0]


def test_a_cancelled_deadline_never_fires_and_a_failing_kill_still_exits(caplog):
    exited = Recorder()
    d = ShutdownDeadline(0.2, exit=exited)
    d.arm("SIGINT")
    d.cancel()
    assert not exited.done.wait(0.6)

    def boom() -> None:
        raise OSError("no such process")

    exited = Recorder()
    d = ShutdownDeadline(0.05, kill_children=boom, describe=lambda: 1 / 0, exit=exited)  # type: ignore[arg-type,return-value]
    with caplog.at_level(logging.ERROR, logger="streams.worker.shutdown"):
        d.arm("SIGTERM")
        assert exited.done.wait(5)
    assert exited.calls == [(EXIT_SHUTDOWN_TIMEOUT,)]
    text = caplog.text
    assert "still waiting for: ? (ZeroDivisionError" in text and "killing the detector process failed" in text


class Child:
    """A service whose stop never ends (a client waiting on a broker that is gone)."""

    async def stop(self) -> None:
        await self.flush()

    async def flush(self) -> None:
        await asyncio.Event().wait()


class Parent:
    def __init__(self) -> None:
        self.child = Child()

    async def stop(self) -> None:
        for child in (self.child,):
            await asyncio.shield(child.stop())  # no task in this frame: only the child


def test_awaiting_follows_shields_gathers_and_wait_for_into_the_stuck_coroutine():
    async def via_gather() -> None:
        await asyncio.gather(asyncio.sleep(0), Parent().stop())

    async def via_wait_for() -> None:
        await asyncio.wait_for(Parent().stop(), 60)

    async def look(top) -> list[str]:
        t = asyncio.ensure_future(top())
        await asyncio.sleep(0.05)
        try:
            return awaiting(t)
        finally:
            t.cancel()
            for other in asyncio.all_tasks() - {asyncio.current_task()}:
                other.cancel()

    for top in (via_gather, via_wait_for):
        names = asyncio.run(look(top))
        assert names[0] == top.__qualname__
        assert names[-4:-1] == ["Parent.stop", "Child.stop", "Child.flush"], names  # then Event.wait
        assert names[-1] == "Event.wait"


def test_describe_names_the_shutdown_task_else_the_main_thread():
    async def run() -> str:
        t = asyncio.ensure_future(Parent().stop())
        await asyncio.sleep(0.05)
        try:
            return describe_waiting(asyncio.get_running_loop(), t)
        finally:
            t.cancel()
            for other in asyncio.all_tasks() - {asyncio.current_task()}:
                other.cancel()

    said = asyncio.run(run())
    assert said.endswith("Parent.stop > Child.stop > Child.flush > Event.wait"), said
    # no shutdown task (interpreter exit, a blocking call): the main thread's stack, this test innermost
    said = describe_waiting(None)
    assert said.startswith("no shutdown task; the main thread is in ") and "main_thread_stack" in said
    assert "test_describe_names_the_shutdown_task_else_the_main_thread" in main_thread_stack(8)


@pytest.mark.parametrize("bad", [0, -1])
def test_the_setting_must_be_positive(bad):
    from pydantic import ValidationError

    from streams.settings import Settings

    with pytest.raises(ValidationError, match="worker_shutdown_timeout_seconds"):
        Settings(worker_shutdown_timeout_seconds=bad)
    assert Settings().worker_shutdown_timeout_seconds == 10.0
