"""Delayed labels: the worker's bridge to :mod:`detectors.concept` and :mod:`detectors.performance`.

The pipeline calls three hooks:

* :meth:`LabelHook.on_predictions` with every decoded frame of inferences:
  the predictions wait in the model's :class:`~detectors.concept.LabelJoin`
  (bounded by ``labels.max_pending``, expiring after ``labels.ttl_seconds``);
* :meth:`LabelHook.on_labels` with every decoded batch of labels (topic
  ``Settings.topic_labels``, key = model id, co-partitioned with the
  inferences so a model's predictions and labels meet in the same worker);
* :meth:`LabelHook.on_window` when a window of the model closes: the rows
  joined since the previous window become realized ``dw_performance`` points
  (accuracy, F1, … or MAE, RMSE …, with label delays) and the join's counters
  a ``metric=label_join`` point, all at the window's time.

The join's clock is event time (the latest event time seen for the model), so
expiry does not depend on how fast the stream is read.

Memory: a join holds every prediction until its label comes or it expires
(up to ``labels.max_pending`` per model, ~200 bytes each). So a model whose
config has no ``labels:`` section starts joining only when its first label
arrives (labels for predictions made before that count as unmatched); a model
with an explicit ``labels:`` section joins from its first prediction.

Limits (documented in docs/worker.md): the join lives in memory — after a
restart, predictions that were waiting for labels are gone (their labels then
count as unmatched); labels carry no model version, so with several versions
live at once the joined rows are reported on the version whose window closes
next.
"""

from __future__ import annotations

import importlib
import logging
import math

import numpy as np

from detectors.frame import Frame
from detectors.records import T_MODEL, T_VERSION, Record
from streams.decode import LabelPart, StreamKey
from streams.monitors import MonitorsConfig

log = logging.getLogger(__name__)


class LabelHook:
    """Label join + realized performance per model (see module docstring)."""

    def __init__(self, monitors: MonitorsConfig) -> None:
        importlib.import_module("detectors.concept")  # fail early: the worker then runs without labels

        self.models = {m.model_id: m for m in monitors.models}
        #: models whose predictions are held from the start (their config has a ``labels:`` section)
        self.eager = {m.model_id for m in monitors.models if "labels" in m.model_fields_set}
        self._joins: dict[str, object] = {}
        self._acc: dict[str, object] = {}
        self._now: dict[str, float] = {}

    def _join(self, model_id: str):
        j = self._joins.get(model_id)
        if j is None:
            from detectors.concept import LabelJoin

            cfg = self.models[model_id].labels
            j = self._joins[model_id] = LabelJoin(ttl_seconds=cfg.ttl_seconds, max_pending=cfg.max_pending)
        return j

    def _add(self, model_id: str, rows) -> None:
        if not len(rows):
            return
        from detectors.performance import PerformanceAccumulator

        task = self.models[model_id].task
        acc = self._acc.get(model_id)
        if acc is None:
            acc = self._acc[model_id] = PerformanceAccumulator(task)
        if task == "regression":
            if rows.pred_value is not None:
                acc.add(rows.label_value, rows.pred_value, delays=rows.delay)
        elif rows.pred_label is not None:
            acc.add(rows.label, rows.pred_label, rows.pred_proba, rows.classes, delays=rows.delay)

    def on_predictions(self, key: StreamKey, frame: Frame) -> None:
        if not len(frame):
            return
        try:
            now = max(self._now.get(key.model_id, -math.inf), float(np.max(frame.event_time)))
            self._now[key.model_id] = now
            if key.model_id not in self._joins and key.model_id not in self.eager:
                return  # no label seen yet for this model: do not hold its predictions
            rows = self._join(key.model_id).add_predictions(
                frame.event_id, frame.event_time, pred_label=frame.pred_label, pred_proba=frame.pred_proba,
                classes=frame.classes, pred_value=frame.pred_value, now=now)
            self._add(key.model_id, rows)
        except Exception:  # noqa: BLE001 - the label join must not stop drift monitoring
            log.exception("label join failed on predictions of %s", key.model_id)

    def on_labels(self, part: LabelPart) -> None:
        if part.model_id not in self.models or not len(part):
            return
        try:
            now = self._now.get(part.model_id)
            rows = self._join(part.model_id).add_labels(part.event_id, part.label, part.label_time,
                                                        now=None if now is None else now)
            self._add(part.model_id, rows)
        except Exception:  # noqa: BLE001
            log.exception("label join failed on labels of %s", part.model_id)

    def on_window(self, key: StreamKey, window) -> list[Record]:
        """Realized performance of the rows joined since the model's previous window, and join counters."""
        out: list[Record] = []
        try:
            from detectors.concept import join_records
            from detectors.performance import performance_records

            tags = {T_MODEL: key.model_id, T_VERSION: key.model_version}
            acc = self._acc.pop(key.model_id, None)
            if acc is not None and acc.n:
                extra = {"n_labels": acc.n, **acc.delay_quantiles()}
                out += performance_records(acc.metrics(), tags, window.time_ns, estimated=False, n=acc.n,
                                           extra=extra)
            j = self._joins.get(key.model_id)
            if j is not None:
                out += join_records(j.stats, tags, window.time_ns)
        except Exception:  # noqa: BLE001
            log.exception("performance records failed for %s", key.model_id)
        return out
