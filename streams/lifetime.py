"""Child processes that do not outlive their parent, and a look at a process's descendants.

Every process driftwatch starts (the worker's detector process, the local stack's services,
``driftwatch up``'s children, the dashboard and workers the tests and benchmarks run) must
end with its parent, on every exit path — an orderly stop, a crash, a SIGKILL. An orderly
stop closes its children itself; for the rest, Linux's ``prctl(PR_SET_PDEATHSIG)`` makes
the kernel signal the child when its parent goes, whatever the way.

Two things to know about ``PR_SET_PDEATHSIG``:

- **"Parent" is the thread that forked**, not the process: a child started from a thread that
  ends before the process does gets the signal then. :func:`die_with_parent` therefore only
  arms it when called on the main thread (where CPython never exits ahead of the process); a
  child started elsewhere gets no watch from it (say so in its docs, or add a watch of its own).
- **It is set in the child, after the fork**: a parent that died in between is missed, so the
  hook checks the parent is still the one expected and exits at once if not.

On other systems these are no-ops (``prctl`` is Linux-only).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    # resolved here, in the parent: a preexec hook runs between fork and exec, where loading a library is unsafe
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when the thread that started it exits.

    Returns whether it was set (False off Linux). Call it in the child; see the module docstring.
    """
    if _prctl is None:
        return False
    return _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def on_main_thread() -> bool:
    """True on the process's main thread: a child started here may arm a parent-death signal."""
    return threading.current_thread() is threading.main_thread()


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``sig`` when this process dies.

    Build it right before ``Popen``, on the thread that calls ``Popen``. Returns ``None`` (no
    hook) off Linux or off the main thread, where the signal would come when *that thread* ends.

    >>> import subprocess, sys
    >>> subprocess.run([sys.executable, "-c", "pass"], preexec_fn=die_with_parent(), check=True).returncode
    0
    """
    if _prctl is None or not on_main_thread():
        return None
    parent = os.getpid()

    def hook() -> None:  # pragma: no cover - runs in the child, between fork and exec
        exit_with(parent, sig)

    return hook


def spawn_logged(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in a session of its own, its output to ``log`` (truncated), dying with this process.

    The background children of the benchmarks (workers, baselines, NannyML) are started this way.
    """
    with open(log, "wb") as log_file:  # the child keeps its own descriptor
        return subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def exit_with(parent: int, sig: int = signal.SIGTERM) -> bool:
    """In a child: get ``sig`` when ``parent`` (its pid as the parent saw it) dies, and exit now if it has.

    The initializer of a multiprocessing child (``initializer=exit_with, initargs=(os.getpid(),)``),
    started on the parent's main thread. ``parent`` is passed rather than read here: a parent
    that died before the child got here has already handed it to init. Returns whether the
    signal is armed (False off Linux).
    """
    armed = set_parent_death_signal(sig)
    if os.getppid() != parent:  # the parent died before the watch was armed
        os._exit(1)
    return armed


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), read from /proc.

    A process whose parent died is re-parented (to init or a subreaper) and is no longer listed:
    record the descendants while the parent lives, then check those (:func:`alive`).
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = _stat(int(entry.name))[:2]
        except (OSError, IndexError, ValueError):
            continue
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (tells a pid from its reuse); None if gone."""
    try:
        return int(_stat(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int, started: int | None = None) -> bool:
    """True if ``pid`` runs and is not a zombie (and, given ``started``, is the same process)."""
    try:
        fields = _stat(pid)
    except (OSError, IndexError):
        return False
    if fields[0] == "Z":
        return False
    return started is None or int(fields[19]) == started


def with_environ(name: str, value: str) -> list[int]:
    """Live processes (of this user) whose environment holds ``name=value``.

    A child inherits its parent's environment, so a marker variable set on a process finds all
    its descendants, even those already re-parented after their parent died.
    """
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0") and alive(int(entry.name)):
                found.append(int(entry.name))
    return found
