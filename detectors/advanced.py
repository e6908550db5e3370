"""Window evaluators of the advanced detectors, for :mod:`detectors.runner`.

The runner's :class:`~detectors.runner.Reference` holds per-feature summaries
only; multivariate drift, prediction drift and feature impact need the
reference's *rows* (joint feature values and the served predictions). The
worker hands them over once per reference::

    reference = Reference.from_frame(frame, features, ...)
    attach_reference_frame(reference, frame)     # rows kept in reference._cache

(A reference read from a file of rows gets the frame ``read_rows`` returned;
it carries no predictions, so prediction drift and impact then stay silent.)
Without an attached frame these evaluators return no records. Each fitted
object (encoder + MMD/PCA, prediction reference, impact, CBPE) is built once
per reference and kept in the same cache.

Evaluators (registered in :data:`detectors.runner.EVALUATORS`):

* :class:`PredictionDrift` (``dw_prediction``) — :mod:`detectors.prediction`;
* :class:`MultivariateDrift` (``dw_drift``, ``feature="__multivariate__"``,
  ``detector`` = ``mmd`` | ``pca``) when ``DriftSpec.multivariate`` is not
  ``"none"``; fields ``statistic``, ``p_value``, ``threshold`` (critical value
  of the statistic), ``p_val``, ``drift`` (0/1), ``n_ref``, ``n_cur``,
  ``reference_value``, ``engine``, ``window_start``. alibi-detect's MMD needs
  TensorFlow/PyTorch; with ``engine="alibi"`` and neither installed the native
  MMD runs and the record says ``engine="native"``, ``engine_note="alibi MMD
  unavailable"``;
* :class:`EstimatedPerformance` (``dw_performance``, ``detector="cbpe"``) —
  classification windows with probabilities;
* :class:`FeatureImpactEvaluator` (``dw_impact``) — computed once per
  reference, re-emitted each window so the dashboard's latest query finds it;
* :class:`OnlineDrift` (``dw_drift``, ``detector="cvm_online"``) — not
  registered by default: construct it with the features to watch (state is
  kept per model/version across windows).

Realized performance is not an evaluator: labels arrive on their own topic
and are joined by the worker (see :mod:`detectors.concept` for the exact calls).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from detectors import records as R
from detectors.frame import Frame
from detectors.impact import feature_impact, impact_records
from detectors.multivariate import (
    MULTIVARIATE_FEATURE,
    EngineUnavailable,
    MMDDrift,
    PCADrift,
    RowEncoder,
)
from detectors.online import CVMOnline
from detectors.performance import CBPE, performance_records
from detectors.prediction import PredictionReference, prediction_drift, prediction_records
from detectors.reference import Reference
from detectors.records import Record

if TYPE_CHECKING:  # the runner imports this module; no import cycle at run time
    from detectors.runner import WindowContext

REFERENCE_FRAME_KEY = "reference_frame"

__all__ = [
    "ADVANCED_EVALUATORS",
    "EstimatedPerformance",
    "FeatureImpactEvaluator",
    "MultivariateDrift",
    "OnlineDrift",
    "PredictionDrift",
    "attach_reference_frame",
    "reference_frame",
]


def attach_reference_frame(reference: Reference, frame: Frame) -> Reference:
    """Keep the reference's rows with it (for multivariate/prediction drift and impact)."""
    reference._cache[REFERENCE_FRAME_KEY] = frame
    return reference


def reference_frame(reference: Reference | None) -> Frame | None:
    """The rows attached by :func:`attach_reference_frame`, or None."""
    if reference is None:
        return None
    return reference._cache.get(REFERENCE_FRAME_KEY)


def _fitted(reference: Reference, key: tuple, build) -> Any:
    """One object per reference and key; a build error is cached too (raised each time, rebuilt never)."""
    cache = reference._cache
    if key not in cache:
        try:
            cache[key] = build()
        except (ValueError, EngineUnavailable) as e:
            cache[key] = e
    value = cache[key]
    if isinstance(value, Exception):
        raise value
    return value


class PredictionDrift:
    """``dw_prediction``: drift of predicted classes, probabilities and values (whole window)."""

    name = "prediction_drift"
    segmented = False

    def evaluate(self, ctx: "WindowContext") -> list[Record]:
        ref_frame = reference_frame(ctx.reference)
        if ref_frame is None:
            return []
        has_pred = any(x is not None for x in (ref_frame.pred_label, ref_frame.pred_proba, ref_frame.pred_value))
        if not has_pred:
            return []
        pref = _fitted(ctx.reference, ("prediction_reference", ctx.reference.bins),
                       lambda: PredictionReference.from_frame(ref_frame, bins=ctx.reference.bins))
        res = prediction_drift(ctx.frame, pref, ctx.drift)
        recs = prediction_records(res, ctx.frame, pref, ctx.tags(segmented=False), ctx.time_ns)
        return [ctx.record(r.measurement, r.tags, {**r.fields, "window_start": float(ctx.window_start)})
                for r in recs]


class MultivariateDrift:
    """``dw_drift`` with ``feature="__multivariate__"``: MMD or PCA reconstruction (whole window)."""

    name = "multivariate_drift"
    segmented = False

    def __init__(self, n_permutations: int = 200, max_rows: int = 500, pca_variance: float = 0.65,
                 seed: int = 0) -> None:
        self.n_permutations = n_permutations
        self.max_rows = max_rows
        self.pca_variance = pca_variance
        self.seed = seed

    def evaluate(self, ctx: "WindowContext") -> list[Record]:
        method = ctx.drift.multivariate
        ref_frame = reference_frame(ctx.reference)
        if method == "none" or ref_frame is None:
            return []
        numeric = [f.name for f in ctx.features if f.kind == "numeric"]
        categorical = [f.name for f in ctx.features if f.kind == "categorical"]
        key = ("multivariate", method, ctx.drift.engine, ctx.drift.p_val, tuple(numeric), tuple(categorical))
        note = None

        def build():
            enc = RowEncoder(numeric, categorical).fit(ref_frame)
            x_ref = enc.transform(ref_frame)
            if method == "pca":
                return enc, PCADrift(x_ref, variance=self.pca_variance, p_val=ctx.drift.p_val, seed=self.seed)
            engine = ctx.drift.engine
            try:
                det = MMDDrift(x_ref, p_val=ctx.drift.p_val, n_permutations=self.n_permutations,
                               max_ref=self.max_rows, max_test=self.max_rows, seed=self.seed, engine=engine)
            except EngineUnavailable:
                det = MMDDrift(x_ref, p_val=ctx.drift.p_val, n_permutations=self.n_permutations,
                               max_ref=self.max_rows, max_test=self.max_rows, seed=self.seed)
                det.note = "alibi MMD unavailable"  # type: ignore[attr-defined]
            return enc, det

        enc, det = _fitted(ctx.reference, key, build)
        note = getattr(det, "note", None)
        res = det.test(enc.transform(ctx.frame))
        fields: dict[str, Any] = {
            "statistic": res.statistic, "p_value": res.p_value, "threshold": res.threshold,
            "p_val": res.p_val, "drift": int(res.drift), "n_ref": res.n_ref, "n_cur": res.n_window,
            "reference_value": res.reference_value, "engine": res.engine,
            "window_start": float(ctx.window_start),
        }
        if note:
            fields["engine_note"] = note
        tags = ctx.tags(segmented=False, **{R.T_FEATURE: MULTIVARIATE_FEATURE, R.T_DETECTOR: res.detector})
        return [ctx.record(R.DRIFT, tags, fields)]


class EstimatedPerformance:
    """``dw_performance`` (``detector="cbpe"``): expected metrics from calibrated probabilities."""

    name = "estimated_performance"
    segmented = False

    def __init__(self) -> None:
        self.cbpe = CBPE()

    def evaluate(self, ctx: "WindowContext") -> list[Record]:
        f = ctx.frame
        if ctx.task != "classification" or f.pred_proba is None or len(f.classes) < 2:
            return []
        est = self.cbpe.estimate(f.pred_proba, f.classes, f.pred_label)
        if not est:
            return []
        recs = performance_records(est, ctx.tags(segmented=False), ctx.time_ns, estimated=True,
                                   n=int(est["n"]), extra={"window_start": float(ctx.window_start)})
        return [ctx.record(r.measurement, r.tags, r.fields) for r in recs]


class FeatureImpactEvaluator:
    """``dw_impact``: each feature's impact on the served output (once per reference)."""

    name = "feature_impact"
    segmented = False

    def __init__(self, method: str = "mi", max_rows: int = 5000, seed: int = 0) -> None:
        self.method = method
        self.max_rows = max_rows
        self.seed = seed

    def evaluate(self, ctx: "WindowContext") -> list[Record]:
        ref_frame = reference_frame(ctx.reference)
        if ref_frame is None:
            return []
        if ref_frame.pred_label is None and ref_frame.pred_proba is None and ref_frame.pred_value is None:
            return []
        features = [f for f in ctx.features]
        impacts = _fitted(ctx.reference, ("impact", self.method, tuple(f.name for f in features)),
                          lambda: feature_impact(ref_frame, features, method=self.method,  # type: ignore[arg-type]
                                                 max_rows=self.max_rows, seed=self.seed))
        recs = impact_records(impacts, ctx.tags(segmented=False), ctx.time_ns)
        return [ctx.record(r.measurement, r.tags, r.fields) for r in recs]


class OnlineDrift:
    """``dw_drift`` (``detector="cvm_online"``) per watched numeric feature, event by event.

    Keeps one :class:`~detectors.online.CVMOnline` per (model, version,
    feature), rebuilt when the reference changes; calibration is cached in
    ``cache_dir``. Per window: ``drift`` (1 if it fired), ``n_detections``,
    ``first_detection_time`` (event time of the first), ``statistic`` (largest),
    ``threshold`` (in force at the end), ``ert``, ``t`` (events since the last
    detection). Missing values are skipped. For alerts *within* a window the
    worker can call :meth:`update` on every decoded batch instead.
    """

    name = "online_drift"
    segmented = False

    def __init__(self, features: Sequence[str], ert: float = 10_000.0,
                 window_sizes: Sequence[int] = (50, 200), n_bootstraps: int = 20_000,
                 cache_dir: str | None = None, engine: str = "native") -> None:
        self.features = list(features)
        self.ert = ert
        self.window_sizes = tuple(window_sizes)
        self.n_bootstraps = n_bootstraps
        self.cache_dir = cache_dir
        self.engine = engine
        self._state: dict[tuple[str, str, str], tuple[int, CVMOnline]] = {}

    def detector(self, model: str, version: str, feature: str, reference: Reference) -> CVMOnline | None:
        key = (model, version, feature)
        have = self._state.get(key)
        if have is not None and have[0] == id(reference):
            return have[1]
        ref = reference.numeric.get(feature)
        if ref is None or ref.n < 10:
            return None
        det = CVMOnline(ref.values, self.ert, self.window_sizes, n_bootstraps=self.n_bootstraps,
                        cache_dir=self.cache_dir, engine=self.engine)  # type: ignore[arg-type]
        self._state[key] = (id(reference), det)
        return det

    def update(self, model: str, version: str, reference: Reference, frame: Frame) -> dict[str, Any]:
        """Feed a batch; returns feature -> :class:`~detectors.online.OnlineResult` (with event times)."""
        out: dict[str, Any] = {}
        order = np.argsort(frame.event_time, kind="stable")
        for feature in self.features:
            det = self.detector(model, version, feature, reference)
            col = frame.numeric.get(feature)
            if det is None or col is None:
                continue
            vals = col[order]
            ok = np.isfinite(vals)
            res = det.update(vals[ok])
            out[feature] = (res, frame.event_time[order][ok])
        return out

    def evaluate(self, ctx: "WindowContext") -> list[Record]:
        if ctx.reference is None:
            return []
        out = []
        for feature, (res, times) in self.update(ctx.model_id, ctx.version, ctx.reference, ctx.frame).items():
            first = res.first_drift
            fields: dict[str, Any] = {
                "drift": int(res.n_drift > 0), "n_detections": res.n_drift,
                "statistic": float(np.nanmax(res.stats)) if np.isfinite(res.stats).any() else None,
                "threshold": float(res.thresholds[-1]) if res.thresholds.size else None,
                "ert": self.ert, "t": res.t, "window_start": float(ctx.window_start),
            }
            if first is not None:
                fields["first_detection_time"] = float(times[first])
            tags = ctx.tags(segmented=False, **{R.T_FEATURE: feature, R.T_DETECTOR: "cvm_online"})
            out.append(ctx.record(R.DRIFT, tags, fields))
        return out


ADVANCED_EVALUATORS: list[Any] = [PredictionDrift(), MultivariateDrift(), EstimatedPerformance(),
                                  FeatureImpactEvaluator()]
"""Registered by :mod:`detectors.runner` after its built-in evaluators."""
