"""Evaluation of a closed window: the detectors the pipeline runs, wherever it runs them.

:func:`default_evaluator` wraps ``detectors.runner.evaluate_window`` for the worker (with its own
evaluators, so per-model state is this evaluator's), :func:`evaluate_closed` runs one on a closed
window (building a ``rolling`` reference from the previous window's rows, with its history) and never lets a detector
bug stop the stream. Both the pipeline (inline or on its evaluation thread) and the detector process
(:mod:`streams.worker.detector_process`) call them, which is why they live apart from the pipeline:
the detector process must not import the pipeline that starts it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from detectors.frame import Frame
from detectors.records import Record
from streams.worker.decode import StreamKey
from streams.worker.monitors import ModelMonitor
from streams.worker.windows import ClosedWindow

log = logging.getLogger(__name__)

#: what the pipeline calls per closed window: ``(model, key, window, reference) -> records``
Evaluator = Callable[..., list[Record]]


def default_evaluator(online_cache_dir=None) -> DetectorRunner:
    """``detectors.runner.evaluate_window`` wrapped for the pipeline (:class:`DetectorRunner`).

    The runner pulls scipy.stats in (seconds of imports): it is imported in a
    background thread right away, so the import overlaps the consumer group join,
    and the first window waits for it if it is not done yet. ``online_cache_dir``: where the
    online detectors (``drift.online``) cache their thresholds; they then calibrate in the background.
    Each call builds its own evaluators (:func:`detectors.runner.default_evaluators`), so the
    per-model state they keep is this evaluator's, not the process's.
    """
    return DetectorRunner(online_cache_dir)


class DetectorRunner:
    """The pipeline's evaluator: called per closed window (``(model, key, window, reference) -> records``);
    :meth:`prepare` runs the one-off per-model fits ahead of the first window (see :func:`default_evaluator`).
    """

    def __init__(self, online_cache_dir=None) -> None:
        import threading

        self._box: dict[str, Any] = {}
        self._loader = threading.Thread(
            target=self._load, args=(online_cache_dir,), name="import-detectors", daemon=True
        )
        self._loader.start()
        self._rates = ObservedRates()

    def _load(self, online_cache_dir) -> None:
        box = self._box
        try:
            from detectors import runner
        except ImportError as e:
            box["error"] = e
            return
        # this evaluator's own instances: their per-model state lives as long as it does
        box["evaluators"] = runner.default_evaluators(
            online_cache_dir=None if online_cache_dir is None else str(online_cache_dir),
            online_background=online_cache_dir is not None,
        )
        box["runner"] = runner

    def _runner(self):
        if self._loader.is_alive():
            self._loader.join()
        runner = self._box.get("runner")
        if runner is None and "warned" not in self._box:
            self._box["warned"] = True
            log.warning("detectors.runner is not available (%s): windows get counts only", self._box.get("error"))
        return runner

    @staticmethod
    def _context(runner, model: ModelMonitor, key: StreamKey, frame: Frame, reference, drift, **window: Any):
        return runner.WindowContext(
            model_id=key.model_id,
            version=key.model_version,
            frame=frame,
            reference=reference,
            features=tuple(model.features),
            drift=drift,
            task=model.task,
            segments=tuple(model.segments),
            adversarial=getattr(model, "adversarial", None),
            impact=getattr(model, "impact", None),
            **window,
        )

    def __call__(self, model: ModelMonitor, key: StreamKey, window: ClosedWindow, reference) -> list[Record]:
        runner = self._runner()
        if runner is None:
            return []
        ctx = self._context(
            runner,
            model,
            key,
            window.frame,
            reference,
            self._rates.drift_for(model, window),
            window_start=window.start_time,
            window_end=window.end_time,
            calibration=getattr(window, "calibration", None),
            summary=getattr(window, "summary", None),
            reference_points=getattr(window, "reference_points", True),
        )
        try:
            return runner.evaluate_window(ctx, self._box["evaluators"])
        except runner.WindowEvaluationError as e:  # some evaluators failed: keep what the others produced
            log.error("window #%d of %s v%s: %s", window.seq, key.model_id, key.model_version, e)
            return e.records

    def prepare(self, model: ModelMonitor, key: StreamKey, reference, summarised: bool) -> float:
        """Fit what the detectors fit once per model and reference (``detectors.runner.prepare_evaluators``)
        now, so that the first window judged against ``reference`` does not wait for it. Returns the seconds
        it took. A failure is logged as an ERROR, as the first window's evaluation would have logged it (the
        evaluator then stays off for that model version, or reports it in its records, as before)."""
        t0 = time.perf_counter()
        runner = self._runner()
        if runner is None or reference is None:
            return 0.0
        empty = Frame.from_columns(event_id=np.empty(0, dtype=object), event_time=np.empty(0))
        ctx = self._context(runner, model, key, empty, reference, model.drift)
        for name, e in runner.prepare_evaluators(ctx, self._box["evaluators"], summarised=summarised):
            log.error("preparing %s for %s v%s failed: %s", name, key.model_id, key.model_version, e)
        return time.perf_counter() - t0


class ObservedRates:
    """Event rate per model, smoothed over its windows: the false-alarm budget's window rate.

    A budgeted model whose windows count events (``size_events``) and has no declared
    rate gets its level from the rate it is observed to run at
    (:meth:`~streams.worker.monitors.ModelMonitor.drift_for_rate`); other models keep ``model.drift``.
    """

    def __init__(self, smoothing: float = 0.2) -> None:
        self.smoothing = smoothing
        self.rates: dict[str, float] = {}

    def observe(self, model_id: str, n: int, seconds: float) -> float | None:
        """Fold a window of ``n`` events over ``seconds`` into the model's rate; the current rate."""
        if n > 1 and seconds > 0:
            r = n / seconds
            old = self.rates.get(model_id)
            self.rates[model_id] = r if old is None else old + self.smoothing * (r - old)
        return self.rates.get(model_id)

    def drift_for(self, model: ModelMonitor, window: ClosedWindow):
        if not model.observes_rate:
            return model.drift  # no budget, or the level is fixed by the window length / declared rate
        rate = self.observe(model.model_id, window.n, window.end_time - window.start_time)
        return model.drift_for_rate(rate) if rate is not None else model.drift


def evaluate_closed(
    evaluator: Evaluator,
    model: ModelMonitor,
    key: StreamKey,
    w: ClosedWindow,
    reference,
    rolling_frames: list[Frame] | None,
) -> tuple[list[Record], float]:
    """Run ``evaluator`` on a closed window: its records, and the seconds it took.

    Runs on the evaluation thread, inline, or in the detector process
    (:mod:`streams.worker.detector_process`). A ``rolling`` reference is built here, off
    the event loop: ``rolling_frames`` holds one frame per past window, oldest first; the
    last (the previous window) is the reference, and all of them are its history, whose
    successive windows calibrate the chunk band (``reference.rolling_history``;
    :func:`detectors.thresholds.successive_values`). A detector bug must not stop
    the stream: it is logged and the window gets its counts only.
    """
    t0 = time.perf_counter()
    try:
        ref = reference
        if rolling_frames:
            from detectors.reference import Reference, attach_reference_frame, attach_rolling_history

            rows = rolling_frames[-1]
            ref = attach_reference_frame(
                Reference.from_frame(
                    rows,
                    model.features,
                    bins=model.drift.histogram_bins,
                    segments=model.segments,
                    source="previous window",
                ),
                rows,
            )
            if len(rolling_frames) > 1:
                attach_rolling_history(ref, rolling_frames)
        records = list(evaluator(model, key, w, ref))
    except Exception:
        log.exception(
            "detectors failed on window #%d of %s v%s (%d events); writing its counts only",
            w.seq,
            key.model_id,
            key.model_version,
            w.n,
        )
        records = []
    return records, time.perf_counter() - t0
