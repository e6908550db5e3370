"""A hard deadline on the worker's shutdown: it always exits, and takes its detector process with it.

Why: a worker whose broker had died ignored SIGTERM for more than 20 s, and one started by
``driftwatch up`` outlived ``up`` by ~60 s when both ``up`` and its broker died (py-spy: in Faust's
``stop_and_shutdown``, waiting on the gone broker). Each step of the orderly shutdown has a timeout
of its own (the label-join checkpoint alone 30 s, streams/worker/agents.py), Faust's services
wait on the broker too, and together they add up to a minute or more.

So the orderly shutdown (checkpoints, flushes, Faust's services) gets
``Settings.worker_shutdown_timeout_seconds`` (default 10 s), counted from the first SIGTERM/SIGINT —
also the SIGTERM the kernel sends when the worker's parent dies (``PR_SET_PDEATHSIG``, armed by
whoever started it, :mod:`streams.lifetime`) — or from the moment the worker starts to stop for any
other reason (a crash, a failed start-up). If it has not finished by then, a thread of its own
(the event loop may be the thing that is stuck) logs one ERROR line naming what the shutdown was
still waiting for, SIGKILLs the detector process and ends the process with
:data:`EXIT_SHUTDOWN_TIMEOUT`. What that loses is what any SIGKILL loses — the messages not yet
committed are read again by the partitions' next owner (docs/reliability.md).

What it "was waiting for" is read from the event loop's tasks: the shutdown task's chain of awaited
coroutines, followed into the tasks and gathers it waits on (:func:`awaiting`); when no shutdown
task is pending, the main thread's Python stack (interpreter exit waiting on a thread, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import faust

log = logging.getLogger(__name__)

#: exit code of a worker whose shutdown overran its deadline (as ``timeout(1)`` uses)
EXIT_SHUTDOWN_TIMEOUT = 124
#: at most this many awaited coroutines are named in the log line (the innermost ones)
SHOWN = 6
#: the share of the deadline kept for Faust's own stop (agents, the consumer's last commit, the loop's end:
#: 1-3 s with a healthy broker), which comes after the worker's steps (:meth:`ShutdownDeadline.budget`)
FAUST_SHARE = 0.4


def _code(obj: Any) -> Any:
    """The code object of a coroutine, generator or async generator (None for anything else)."""
    return getattr(obj, "cr_code", None) or getattr(obj, "gi_code", None) or getattr(obj, "ag_code", None)


def _inner(obj: Any) -> Any:
    """What a suspended coroutine / generator is awaiting (None at a plain future or when running)."""
    return getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None) or getattr(obj, "ag_await", None)


def _frame(obj: Any) -> FrameType | None:
    return getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(obj, "ag_frame", None)


def _locals(obj: Any) -> dict[str, Any]:
    """A suspended coroutine's local variables ({} when they cannot be read: it runs, or it is gone)."""
    frame = _frame(obj)
    try:
        return dict(frame.f_locals) if frame is not None else {}
    except Exception:  # read from another thread while it changes: no answer rather than an error
        return {}


def _name(obj: Any) -> str:
    """``Class.method`` of the object it runs on (``Consumer.stop``, not the defining ``Service.stop``)."""
    code = _code(obj)
    me = _locals(obj).get("self")
    return f"{type(me).__name__}.{code.co_name}" if me is not None else code.co_qualname


def _pending_tasks(values: Iterable[Any]) -> list[asyncio.Task]:
    """The unfinished tasks among ``values`` (a frame's locals: ``wait_for``'s inner task, ``wait``'s set)."""
    out: list[asyncio.Task] = []
    for v in values:
        for item in v if isinstance(v, set | frozenset | list | tuple) else (v,):
            if isinstance(item, asyncio.Task) and not item.done():
                out.append(item)
    return out


def _tasks_of(task: asyncio.Future, objects: list[Any]) -> list[asyncio.Task]:
    """Unfinished tasks running a method of one of ``objects`` (``asyncio.shield(child.stop())`` keeps no task
    in the awaiting frame, only ``child``)."""
    if not objects:
        return []
    try:
        tasks = asyncio.all_tasks(task.get_loop())
    except RuntimeError:  # the set changed under us too often
        return []
    ids = {id(o) for o in objects if o is not None}
    found = []
    for t in tasks:
        me = _locals(t.get_coro()).get("self")
        if me is not None and id(me) in ids and not t.done():
            found.append(t)
    # the object's stop first: shield(child.stop()) is what a stopping parent waits on, not child's other tasks
    return sorted(found, key=lambda t: getattr(_code(t.get_coro()), "co_name", "") != "stop")


def awaiting(task: asyncio.Future, depth: int = 0) -> list[str]:
    """The coroutines ``task`` is suspended in, outermost first (``Class.method`` names).

    Follows the chain of awaited coroutines, then the task it waits on: the one it awaits directly,
    the first unfinished child of a ``gather``, an unfinished task held by the innermost coroutine
    (``asyncio.wait_for`` awaits a plain future that its inner task completes), or a task running a
    method of an object the innermost coroutine holds (``asyncio.shield(child.stop())``). Read from
    another thread too (the deadline's): a chain that changes meanwhile gives a shorter answer, never
    an error.

    >>> async def inner(): await asyncio.sleep(10)
    >>> async def outer(): await asyncio.wait_for(inner(), 60)
    >>> async def look():
    ...     t = asyncio.ensure_future(outer()); await asyncio.sleep(0.01)
    ...     names = awaiting(t); t.cancel(); return names
    >>> [n for n in asyncio.run(look()) if n in ("outer", "wait_for", "inner", "sleep")]
    ['outer', 'wait_for', 'inner', 'sleep']
    """
    names: list[str] = []
    obj: Any = task.get_coro() if isinstance(task, asyncio.Task) else None
    leaf = None
    while obj is not None and len(names) < 64:
        if _code(obj) is None:
            break
        names.append(_name(obj))
        leaf = obj
        obj = _inner(obj)
    if depth >= 8:
        return names
    waiter = getattr(task, "_fut_waiter", None)
    nxt: list[asyncio.Task] = []
    if isinstance(waiter, asyncio.Task):
        nxt = [waiter]
    elif waiter is not None:
        nxt = _pending_tasks(getattr(waiter, "_children", None) or ())  # a gather
    if not nxt and leaf is not None:
        held = {k: v for k, v in _locals(leaf).items() if k != "self"}
        nxt = _pending_tasks(held.values()) or _tasks_of(task, list(held.values()))
    nxt = [t for t in nxt if t is not task]
    if nxt:
        names += awaiting(nxt[0], depth + 1)
    return names


def _short(names: list[str]) -> str:
    """The innermost :data:`SHOWN` names, ``a > b > c`` (a method calling its own override counts once)."""
    names = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
    shown = names[-SHOWN:]
    return ("... > " if len(names) > len(shown) else "") + " > ".join(shown)


def main_thread_stack(limit: int = 4) -> str:
    """The innermost frames of the main thread, ``function (file:line)``, innermost last."""
    frame = sys._current_frames().get(threading.main_thread().ident or -1)
    frames: list[str] = []
    while frame is not None and len(frames) < limit:
        code = frame.f_code
        frames.append(f"{code.co_qualname} ({os.path.basename(code.co_filename)}:{frame.f_lineno})")
        frame = frame.f_back
    return " < ".join(frames) or "?"


def describe_waiting(loop: asyncio.AbstractEventLoop | None, shutdown: asyncio.Future | None = None) -> str:
    """What the shutdown is stuck in: the chain of ``shutdown`` (or of the pending tasks whose outermost
    coroutine is a ``stop``), else the main thread's stack."""
    chains: list[list[str]] = []
    if shutdown is not None and not shutdown.done():
        chains.append(awaiting(shutdown))
    elif loop is not None and not loop.is_closed():
        try:
            tasks = asyncio.all_tasks(loop)
        except RuntimeError:  # the set changed under us too often
            tasks = set()
        for t in tasks:
            names = awaiting(t)
            if names and names[0].rsplit(".", 1)[-1] in ("stop", "_stop_on_signal", "stop_and_shutdown"):
                chains.append(names)
    chains = [c for c in chains if c]
    if chains:
        return "; ".join(_short(c) for c in sorted(chains, key=len, reverse=True)[:2])
    return f"no shutdown task; the main thread is in {main_thread_stack()}"


class ShutdownDeadline:
    """Arms once; at expiry logs what the shutdown waits for, calls ``kill_children`` and exits.

    ``describe`` says what the shutdown waits for (:func:`describe_waiting` by default);
    ``exit`` ends the process (``os._exit``: no clean-up that could hang in turn).
    """

    def __init__(
        self,
        seconds: float,
        kill_children: Callable[[], Any] = lambda: None,
        describe: Callable[[], str] = lambda: describe_waiting(None),
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        self.seconds = float(seconds)
        self.kill_children = kill_children
        self.describe = describe
        self.exit = exit
        self.reason: str | None = None
        self.armed_at: float | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def arm(self, reason: str) -> bool:
        """Start the countdown (the first call wins; later ones do nothing). Returns whether this call armed it."""
        with self._lock:
            if self._timer is not None:
                return False
            self.reason, self.armed_at = reason, time.monotonic()
            self._timer = threading.Timer(self.seconds, self.expire)
            self._timer.name = "driftwatch-shutdown-deadline"
            self._timer.daemon = True  # a shutdown that finishes in time exits without waiting for it
            self._timer.start()
        log.info("shutting down (%s): at most %g s, then the worker exits anyway", reason, self.seconds)
        return True

    def left(self) -> float:
        """Seconds until the deadline (the whole of it before it is armed)."""
        if self.armed_at is None:
            return self.seconds
        return self.seconds - (time.monotonic() - self.armed_at)

    def budget(self, timeout: float) -> float:
        """What one step of the orderly shutdown may take: its own ``timeout``, cut to what is left before
        :data:`FAUST_SHARE` of the deadline (0: no time left for it; ``asyncio.wait_for`` then times out at
        once). So a step stuck on the broker or InfluxDB leaves the steps after it, and Faust's own stop,
        their time, and a worker whose services answer exits cleanly (code 0) within the deadline.

        >>> d = ShutdownDeadline(10.0)
        >>> d.budget(5.0), d.budget(30.0)
        (5.0, 6.0)
        """
        return max(0.0, min(timeout, self.left() - FAUST_SHARE * self.seconds))

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def expire(self) -> None:
        """The deadline passed: one ERROR line, the detector process killed, the process ended."""
        try:
            waiting = self.describe()
        except Exception as e:  # never let the description stop the exit
            waiting = f"? ({e!r})"
        log.error(
            "shutdown (%s) did not finish within %g s; still waiting for: %s. Killing the detector process "
            "and exiting with code %d (messages not committed are read again by the next owner)",
            self.reason,
            self.seconds,
            waiting,
            EXIT_SHUTDOWN_TIMEOUT,
        )
        try:
            self.kill_children()
        except Exception as e:  # exit regardless; the children have their parent-death signal
            log.error("killing the detector process failed: %r", e)
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):  # a broken stream must not keep the process alive
                handler.flush()
        self.exit(EXIT_SHUTDOWN_TIMEOUT)


class Worker(faust.Worker):
    """``faust.Worker`` whose shutdown has a :class:`ShutdownDeadline` (module docstring).

    Armed on SIGTERM and SIGINT (before Faust's own handling starts the orderly stop) and in
    ``on_worker_shutdown``, which Faust calls on every way out of ``execute_from_commandline``.
    """

    def __init__(self, app: faust.App, *args: Any, shutdown_timeout: float, kill_children: Callable[[], Any], **kw):
        super().__init__(app, *args, **kw)
        self.deadline = ShutdownDeadline(shutdown_timeout, kill_children, self.describe_shutdown)

    def describe_shutdown(self) -> str:
        return describe_waiting(self.loop, self._signal_stop_future)

    def _on_sigterm(self) -> None:
        self.deadline.arm("SIGTERM")
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self.deadline.arm("SIGINT")
        super()._on_sigint()

    def on_worker_shutdown(self) -> None:
        self.deadline.arm("the worker stops")
        super().on_worker_shutdown()
