"""The detectors in a process of their own, so that they run on another core than decoding.

Why: in one process the event loop (fetching, decoding, windowing, writing) and
the detector thread share the GIL, so a worker never uses more than about one
core, however many the machine has (``docs/performance.md``). Here the windows
go to one child process instead, and the worker's own process only decodes.

- **One process, in order.** Windows are evaluated in the order they are
  submitted, and the evaluators' per-model state (adversarial fits, online
  detectors, ...) lives in that process for as long as the worker runs.
- **References are sent once** per model version, and again only when the
  reference object changes (set, reset, rebuilt); a window sends its frame.
- **One-off fits go ahead of the first window.** :meth:`DetectorProcess.prepare` sends a
  new reference as soon as the worker has it, with a job that runs the per-model fits
  (``detectors.runner.prepare_evaluators``: the adversarial monitor, the feature impacts,
  ~1–2 s per model) while the first window still fills, instead of inside its close.
- **A dead process loses one window's scores, never the stream.** If the child
  dies (out of memory, killed), the windows in flight get no detector results
  (their counts are still written, as on a detector error), the error is
  logged, and a new process starts.

Used by the worker when ``DRIFTWATCH_DETECTOR_PROCESS`` is true (the default);
with false, the detectors run on a thread of the worker process.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np

from detectors.frame import Frame
from detectors.records import Record
from streams.lifetime import exit_with, on_main_thread
from streams.worker.decode import StreamKey
from streams.worker.evaluation import default_evaluator, evaluate_closed
from streams.worker.frame_codec import PackedFrame, pack, unpack
from streams.worker.monitors import ModelMonitor
from streams.worker.windows import ClosedWindow

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [detectors]: %(message)s"

# -- in the child process ------------------------------------------------------------------------

_evaluate_fn: Any = None  # streams.worker.evaluation.default_evaluator(), built by _start
_references: dict[tuple[str, str], Any] = {}  # (model, version) -> the last reference sent


def _exit_with_parent(parent: int, every: float = 0.5) -> None:
    """End this process when the worker is gone: the watch for a detector process started off the
    worker's main thread, where a parent-death signal would come when that thread ends (see
    :mod:`streams.lifetime`).

    ``parent`` is the worker's pid as the worker saw it, not ``os.getppid()`` read here: a worker
    that dies while this process is still starting (an InfluxDB 401 at start-up, a bad config)
    has already handed it to init, and a watcher comparing with that would wait forever.
    """
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(0)


def _start(online_cache_dir: str | None, log_level: int, parent: int, main_thread: bool = True) -> None:
    """Initializer of the child: a watch on the worker, logging like the worker's, then the detectors.

    The worker may die in any way (SIGKILL, a crash at start-up) without closing this process:
    the kernel sends it SIGTERM when the worker's main thread (the one that started it) ends.
    """
    global _evaluate_fn
    if not (main_thread and exit_with(parent, signal.SIGTERM)):
        threading.Thread(target=_exit_with_parent, args=(parent,), name="exit-with-worker", daemon=True).start()
    # Ctrl-C in a terminal reaches the whole process group: the worker shuts down, and stops this process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    # one BLAS thread: the detectors' matrix products are small, and idle BLAS threads spin on the
    # cores the worker's own process, the broker and InfluxDB need (measured: +15 % events/s on 2 cores)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _evaluate_fn = default_evaluator(online_cache_dir)


def _ready() -> bool:
    """A no-op job: submitted first, so the child starts (and imports) while the worker joins its group."""
    return True


def _evaluate(
    model: ModelMonitor,
    key: StreamKey,
    window: ClosedWindow,
    frame: PackedFrame,
    ref_key: tuple[str, str] | None,
    reference: Any,
    rolling: list[PackedFrame] | None,
) -> tuple[list[Record], float]:
    if reference is not None and ref_key is not None:  # a reference is sent with its key
        _references[ref_key] = reference
    elif ref_key is not None:
        reference = _references[ref_key]
    window = replace(window, frame=unpack(frame))
    frames = None if rolling is None else [unpack(f) for f in rolling]
    return evaluate_closed(_evaluate_fn, model, key, window, reference, frames)


def _prepare(model: ModelMonitor, key: StreamKey, ref_key: tuple[str, str], reference: Any, summarised: bool) -> float:
    if reference is not None:
        _references[ref_key] = reference
    else:
        reference = _references[ref_key]
    return _evaluate_fn.prepare(model, key, reference, summarised)


# -- in the worker ---------------------------------------------------------------------------------

_NO_ROWS = Frame.from_columns(event_id=np.empty(0, dtype=object), event_time=np.empty(0))
"""Stands in for a window's frame in the pickled window: the frame travels packed beside it."""


@contextmanager
def _empty_main() -> Iterator[None]:
    """Start a child without running this process's ``__main__`` in it.

    ``spawn`` imports the parent's main script in the child. The worker's is its CLI (harmless),
    but a host process may have anything there: under pytest, Streamlit's AppTest leaves the
    dashboard app as ``__main__``, and the child ran the dashboard and died.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class DetectorProcess:
    """Evaluates closed windows in a child process (see the module docstring).

    >>> # in the worker: Pipeline(..., evaluator=DetectorProcess(cache_dir))
    >>> # records, seconds = await detector_process.evaluate(model, key, window, reference, None)
    """

    def __init__(self, online_cache_dir: str | None = None) -> None:
        self.online_cache_dir = online_cache_dir
        self.restarts = 0
        self._sent: dict[tuple[str, str], Any] = {}
        self._pool = self._open()

    def _open(self) -> ProcessPoolExecutor:
        # spawn, not fork: the worker has threads (Kafka clients, the event loop's executors)
        pool = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            # the child arms a parent-death signal only if started from the main thread (streams.lifetime)
            initargs=(self.online_cache_dir, logging.getLogger().getEffectiveLevel(), os.getpid(), on_main_thread()),
        )
        self._sent.clear()
        with _empty_main():
            pool.submit(_ready)  # starts the child, here and now
        return pool

    async def evaluate(
        self, model: ModelMonitor, key: StreamKey, window: ClosedWindow, reference: Any, rolling: list[Frame] | None
    ) -> tuple[list[Record], float]:
        """The window's records and the seconds the detectors took; ``([], 0.0)`` if the process died."""
        ref_key = None if reference is None else (key.model_id, key.model_version)
        send = reference if ref_key is not None and self._sent.get(ref_key) is not reference else None
        # only what the detectors read: the commit bookkeeping (offsets, holds) stays here, and the rows
        # travel packed (their object columns as codes: streams.worker.frame_codec)
        light = replace(window, frame=_NO_ROWS, origin=np.empty(0, dtype=np.int64), holds=[])
        packed = pack(window.frame)
        rolled = None if rolling is None else [pack(f) for f in rolling]
        pool = self._pool
        try:
            fut: Future = pool.submit(_evaluate, model, key, light, packed, ref_key, send, rolled)
        except BrokenProcessPool as e:
            return self._broken(pool, key, window, e)
        if send is not None and ref_key is not None:  # send implies ref_key
            self._sent[ref_key] = reference
        try:
            return await asyncio.wrap_future(fut)
        except BrokenProcessPool as e:
            return self._broken(pool, key, window, e)
        except asyncio.CancelledError:
            if fut.cancelled() and pool is not self._pool:  # dropped with a dead process, not by our caller
                return self._broken(pool, key, window, BrokenProcessPool("the window was queued"))
            raise
        except Exception:
            if (
                send is not None and ref_key is not None
            ):  # it may not have arrived (e.g. it could not be pickled): send it again
                self._sent.pop(ref_key, None)
            raise

    def prepare(self, model: ModelMonitor, key: StreamKey, reference: Any, summarised: bool) -> None:
        """Send ``reference`` now and fit the detectors' one-off per-model state on it, in the background
        (the jobs run in order: a window submitted after this finds the fits done or waits for them)."""
        ref_key = (key.model_id, key.model_version)
        send = reference if self._sent.get(ref_key) is not reference else None
        pool = self._pool
        try:
            fut: Future = pool.submit(_prepare, model, key, ref_key, send, summarised)
        except BrokenProcessPool:
            return  # the next window finds the process dead and starts a new one
        if send is not None:
            self._sent[ref_key] = reference

        def done(f: Future) -> None:
            if f.cancelled():
                return
            e = f.exception()
            if e is None:
                log.debug("%s v%s: detectors prepared in %.2f s", key.model_id, key.model_version, f.result())
                return
            if send is not None and self._sent.get(ref_key) is reference:
                self._sent.pop(ref_key, None)  # it may not have arrived: the next window sends it again
            if not isinstance(e, BrokenProcessPool):
                log.warning("preparing the detectors of %s v%s failed: %r", key.model_id, key.model_version, e)

        fut.add_done_callback(done)

    def _broken(
        self, pool: ProcessPoolExecutor, key: StreamKey, window: ClosedWindow, error: BaseException
    ) -> tuple[list[Record], float]:
        log.error(
            "the detector process died (%s): window #%d of %s v%s gets its counts only; "
            "starting a new detector process",
            error,
            window.seq,
            key.model_id,
            key.model_version,
        )
        if pool is self._pool:  # once per dead process, however many windows were in flight
            self.restarts += 1
            pool.shutdown(wait=False)  # its queued windows fail with BrokenProcessPool (counts only)
            self._pool = self._open()
        return [], 0.0

    def close(self) -> None:
        """Stop the child (windows still queued are dropped: their messages are not acked, so read again)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def kill(self) -> list[int]:
        """SIGKILL the child now, whatever it is doing (a shutdown past its deadline,
        :mod:`streams.worker.shutdown`); returns the pids killed. Safe from any thread."""
        killed = []
        for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.kill()
                killed.append(proc.pid)
        return killed
