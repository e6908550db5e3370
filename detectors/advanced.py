# size: the row-based window evaluators share one per-reference fitted-object cache
"""Window evaluators of the advanced detectors, for :mod:`detectors.runner`.

The runner's :class:`~detectors.runner.Reference` holds per-feature summaries
only; multivariate drift, prediction drift and feature impact need the
reference's *rows* (joint feature values and the served predictions). The
worker hands them over once per reference::

    reference = Reference.from_frame(frame, features, ...)
    attach_reference_frame(reference, frame)     # detectors.reference: rows kept in reference._cache

(A reference read from a file of rows gets the frame ``read_rows`` returned;
it carries no predictions, so prediction drift and impact then stay silent.)
Without an attached frame these evaluators return no records. Each fitted
object (encoder + MMD/PCA, prediction reference, impact, CBPE) is built once
per reference and kept in the same cache.

Evaluators (built, with the runner's own, by :func:`detectors.runner.default_evaluators`):

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
* :class:`OnlineDrift` (``dw_drift``, ``detector="cvm_online"``) — the
  features named in the monitor's ``drift.online`` (none by default: then it
  writes nothing); state is kept per model/version/feature across windows.

The row-based evaluators use the features the attached rows carry: a reference
read back from the store (``streams.worker.references``) carries no sensitive features,
so they run without those.

Realized performance is not an evaluator: labels arrive on their own topic
and are joined by the worker (see :mod:`detectors.concept` for the exact calls).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from detectors import records as R
from detectors.context import WindowContext
from detectors.frame import Frame
from detectors.impact import Method as ImpactMethod
from detectors.impact import declared_impact, feature_impact, impact_records
from detectors.multivariate import (
    MULTIVARIATE_FEATURE,
    EngineUnavailable,
    MMDDrift,
    PCADrift,
    RowEncoder,
)
from detectors.online import CVMOnline
from detectors.performance import (
    CBPE,
    Calibration,
    not_calibrated_record,
    performance_records,
    reference_calibration,
)
from detectors.prediction import PredictionReference, prediction_drift, prediction_frame, prediction_records
from detectors.records import FieldValue, Record
from detectors.reference import Reference, attach_rolling_history, reference_frame, rolling_history
from detectors.spec import DriftSpec, Engine, OnlineSpec
from detectors.thresholds import Band

__all__ = [
    "EstimatedPerformance",
    "FeatureImpactEvaluator",
    "MultivariateDrift",
    "OnlineDrift",
    "PredictionDrift",
    "prediction_reference",
    "reference_calibration",
    "status_record",
]


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


def status_record(ctx: WindowContext, evaluator: str, reason: str | None, **fields: Any) -> Record:
    """``dw_status`` of one row-based evaluator for the window: ``computed`` (0/1) and, when not, ``reason``
    (what is missing and how to provide it), so the dashboard says why instead of "no results yet"."""
    f: dict[str, Any] = {"computed": int(reason is None), **fields}
    if reason is not None:
        f["reason"] = reason
    return ctx.record(R.STATUS, ctx.tags({R.T_DETECTOR: evaluator}, segmented=False), f)


def _has_outputs(frame: Frame) -> bool:
    return any(x is not None for x in (frame.pred_label, frame.pred_proba, frame.pred_value))


def _no_rows_reason(ctx: WindowContext) -> str:
    if ctx.reference is None:
        return "no reference yet (it is being collected, or the reference file could not be read)"
    return (
        "the reference has no rows attached (a summary-only stored reference): set it again from a file "
        "(driftwatch reference set)"
    )


NO_OUTPUTS = (
    "the reference rows carry no model outputs: declare the reference file's prediction/probabilities/"
    "score columns in the monitor config (reference.prediction, reference.probabilities, "
    "reference.score), or use a first_n reference"
)


def prediction_reference(reference: Reference) -> PredictionReference:
    """The reference rows' outputs (one object per reference; raises ValueError when the rows carry none
    or there are no rows): what prediction drift compares with, and what a window summary bins the
    outputs by (:meth:`detectors.summaries.SummaryLayout.build`)."""
    rows = reference_frame(reference)
    if rows is None:
        raise ValueError("the reference has no rows")

    def build() -> PredictionReference:
        pref = PredictionReference.from_frame(rows, bins=reference.bins)
        history = rolling_history(reference)
        if history is not None:  # the outputs of a rolling reference's past windows: its successive-window band
            attach_rolling_history(pref.reference, [prediction_frame(w, pref.proba_classes)[0] for w in history])
        return pref

    return _fitted(reference, ("prediction_reference", reference.bins), build)


class PredictionDrift:
    """``dw_prediction``: drift of predicted classes, probabilities and values (whole window)."""

    name = "prediction_drift"
    segmented = False

    def evaluate(self, ctx: WindowContext) -> list[Record]:
        ref_frame = reference_frame(ctx.reference)
        if ref_frame is None or ctx.reference is None:  # no rows without a reference
            return [status_record(ctx, self.name, _no_rows_reason(ctx))]
        if not _has_outputs(ref_frame):
            return [status_record(ctx, self.name, NO_OUTPUTS)]
        summary = ctx.summary
        if summary is not None and summary.layout.outputs is None:
            return [status_record(ctx, self.name, "the window summary has no output bins")]
        if summary is None and not _has_outputs(ctx.frame):
            return [status_record(ctx, self.name, "the window's events carry no prediction")]
        pref = prediction_reference(ctx.reference)
        if summary is not None:  # from the window summary's output bins (detectors.summaries)
            from detectors.summaries import output_totals, summary_drift

            res = summary_drift(summary, pref.reference, ctx.drift, outputs=True)
            means, labels = output_totals(summary)
            recs = prediction_records(
                res, ctx.frame, pref, ctx.tags(segmented=False), ctx.time_ns, window_means=means, label_counts=labels
            )
        else:
            res = prediction_drift(ctx.frame, pref, ctx.drift)
            recs = prediction_records(res, ctx.frame, pref, ctx.tags(segmented=False), ctx.time_ns)
        out = [ctx.record(r.measurement, r.tags, {**r.fields, "window_start": float(ctx.window_start)}) for r in recs]
        if not res.features:
            return out + [
                status_record(
                    ctx,
                    self.name,
                    "the window and the reference share no model output "
                    "(e.g. the reference has probabilities, the events "
                    "only a label), or too few rows",
                )
            ]
        return out + [status_record(ctx, self.name, None, n_tested=res.n_features)]


class MultivariateDrift:
    """``dw_drift`` with ``feature="__multivariate__"``: MMD or PCA reconstruction (whole window)."""

    name = "multivariate_drift"
    segmented = False

    def __init__(
        self, n_permutations: int = 200, max_rows: int = 500, pca_variance: float = 0.65, seed: int = 0
    ) -> None:
        self.n_permutations = n_permutations
        self.max_rows = max_rows
        self.pca_variance = pca_variance
        self.seed = seed

    def evaluate(self, ctx: WindowContext) -> list[Record]:
        method = ctx.drift.multivariate
        ref_frame = reference_frame(ctx.reference)
        if method == "none" or ref_frame is None or ctx.reference is None:
            return []
        # features the rows carry (a stored reference leaves sensitive features out)
        numeric = [f.name for f in ctx.features if f.kind == "numeric" and f.name in ref_frame.numeric]
        categorical = [f.name for f in ctx.features if f.kind == "categorical" and f.name in ref_frame.categorical]
        if not numeric and not categorical:
            return []
        key = ("multivariate", method, ctx.drift.engine, ctx.drift.p_val, tuple(numeric), tuple(categorical))

        def build() -> tuple[RowEncoder, PCADrift | MMDDrift, str | None]:
            """The fitted encoder and detector, and why the engine asked for is not the one used (or None)."""
            enc = RowEncoder(numeric, categorical).fit(ref_frame)
            x_ref = enc.transform(ref_frame)
            if method == "pca":
                return enc, PCADrift(x_ref, variance=self.pca_variance, p_val=ctx.drift.p_val, seed=self.seed), None
            engine = ctx.drift.engine
            note = None
            try:
                det = MMDDrift(
                    x_ref,
                    p_val=ctx.drift.p_val,
                    n_permutations=self.n_permutations,
                    max_ref=self.max_rows,
                    max_test=self.max_rows,
                    seed=self.seed,
                    engine=engine,
                )
            except EngineUnavailable:
                det = MMDDrift(
                    x_ref,
                    p_val=ctx.drift.p_val,
                    n_permutations=self.n_permutations,
                    max_ref=self.max_rows,
                    max_test=self.max_rows,
                    seed=self.seed,
                )
                note = "alibi MMD unavailable"
            return enc, det, note

        enc, det, note = _fitted(ctx.reference, key, build)
        res = det.test(enc.transform(ctx.frame))
        fields: dict[str, Any] = {
            "statistic": res.statistic,
            "p_value": res.p_value,
            "threshold": res.threshold,
            "p_val": res.p_val,
            "drift": int(res.drift),
            "n_ref": res.n_ref,
            "n_cur": res.n_window,
            "reference_value": res.reference_value,
            "engine": res.engine,
            "window_start": float(ctx.window_start),
        }
        if note:
            fields["engine_note"] = note
        tags = ctx.tags({R.T_FEATURE: MULTIVARIATE_FEATURE, R.T_DETECTOR: res.detector}, segmented=False)
        return [ctx.record(R.DRIFT, tags, fields)]


class EstimatedPerformance:
    """``dw_performance`` (``detector="cbpe"``): expected metrics from *calibrated* probabilities.

    The calibration comes with the window (``ctx.calibration``: the pipeline's
    choice, see :mod:`streams.worker.pipeline`), else is fitted on the reference rows'
    labels. Without one the window gets a "not calibrated" point with the reason
    and no value (:func:`~detectors.performance.not_calibrated_record`).
    Classification only: no estimator for regression is kept.
    """

    name = "estimated_performance"
    segmented = False

    def evaluate(self, ctx: WindowContext) -> list[Record]:
        f = ctx.frame
        if ctx.task != "classification":
            return [
                status_record(
                    ctx,
                    self.name,
                    "no performance estimator for regression models (realized MAE/RMSE appear once labels are joined)",
                )
            ]
        if f.pred_proba is None or len(f.classes) < 2:
            return [
                status_record(
                    ctx,
                    self.name,
                    "the events carry no class probabilities (prediction.probabilities): CBPE needs them",
                )
            ]
        cal = ctx.calibration if ctx.calibration is not None else reference_calibration(ctx.reference)
        tags = ctx.tags(segmented=False)
        start: dict[str, FieldValue] = {"window_start": float(ctx.window_start)}
        if isinstance(cal, Calibration) and cal.classes != tuple(f.classes):
            cal = f"the window's classes {list(f.classes)} differ from the calibration's {list(cal.classes)}"
        if not isinstance(cal, Calibration):
            reason = str(cal or "no labelled reference rows")
            return [
                ctx.record(r.measurement, r.tags, r.fields)
                for r in [not_calibrated_record(tags, ctx.time_ns, reason, len(f), start)]
            ] + [status_record(ctx, self.name, f"not calibrated: {reason}")]
        est = CBPE(cal).estimate(f.pred_proba, f.classes, f.pred_label)
        if not est:
            return [status_record(ctx, self.name, "no row of the window has complete probabilities")]
        extra: dict[str, FieldValue] = {
            **start,
            "calibrated": True,
            "calibration_n": cal.n,
            "calibration_source": cal.source,
            "calibration_maps": cal.mapped,
        }
        recs = performance_records(est, tags, ctx.time_ns, estimated=True, n=int(est["n"]), extra=extra)
        bands = self.bands(ctx, cal, int(est["n"]))
        out = []
        for r in recs:
            fields = {**r.fields, **bands.get(r.tags.get(R.T_METRIC, ""), {})}
            if "threshold_method" in fields:
                band = Band(fields.get("band_lower"), fields.get("band_upper"))
                fields["alarm"] = int(band.outside(float(fields["value"])))
            out.append(ctx.record(r.measurement, r.tags, fields))
        return out + [status_record(ctx, self.name, None)]

    @staticmethod
    def bands(ctx: WindowContext, cal: Calibration, window_n: int) -> dict[str, dict[str, Any]]:
        """Per metric, the band of CBPE's estimates over the reference rows' chunks of the window's size
        (time order, the window's calibration): ``mean ± k·sd``, k from the drift family level split
        two-sided over the judged metrics; fields ``threshold_method``, ``band_lower``/``band_upper``,
        ``alarm`` (estimate outside). Empty without reference rows carrying probabilities, or with
        fewer than ``min_chunks`` chunks."""
        from detectors.performance import CHUNK_METRICS, chunk_estimates
        from detectors.thresholds import chunk_size_key, chunk_slices, sd_band, sd_multiplier, time_order

        rows = reference_frame(ctx.reference)
        if (
            ctx.reference is None
            or rows is None
            or rows.pred_proba is None
            or tuple(rows.classes) != cal.classes
            or window_n < 2
        ):
            return {}
        t = ctx.drift.threshold
        size = chunk_size_key(window_n)
        slices = chunk_slices(len(rows), size, t.max_chunks)
        if len(slices) < t.min_chunks:
            return {}
        key = ("cbpe_chunks", size, t.max_chunks, cal.n, cal.source, cal.classes)
        cache = ctx.reference._cache
        if key not in cache:
            order = time_order(rows)
            cache[key] = chunk_estimates(
                CBPE(cal),
                rows.pred_proba[order],
                rows.classes,
                None if rows.pred_label is None else rows.pred_label[order],
                slices,
            )
        k = sd_multiplier(t, ctx.drift.p_val / 2, len(CHUNK_METRICS))
        out = {}
        for m, values in cache[key].items():
            b = sd_band(values, k, clip=(0.0, 1.0))
            if b.lower is None and b.upper is None:
                continue
            out[m] = {"threshold_method": "reference_chunks", "band_lower": b.lower, "band_upper": b.upper, "band_k": k}
        return out


class FeatureImpactEvaluator:
    """``dw_impact``: each feature's impact on the served output, or on the true label (once per reference);
    or the importances declared in the config (``detector="declared"``)."""

    name = "feature_impact"
    segmented = False

    def __init__(self, method: ImpactMethod | None = None, max_rows: int = 5000, seed: int = 0) -> None:
        self.method = method  # None: the model's impact.method
        self.max_rows = max_rows
        self.seed = seed

    def prepare(self, ctx: WindowContext) -> None:
        """Rank the features on the reference rows now (:func:`detectors.runner.prepare_evaluators`): the
        ranking depends on the reference only and is cached on it, so the first window finds it."""
        self.evaluate(ctx)

    def evaluate(self, ctx: WindowContext) -> list[Record]:
        cfg = ctx.impact
        declared = dict(getattr(cfg, "declared", {}) or {})
        if declared:
            impacts = declared_impact(declared, [f.name for f in ctx.features])
            recs = impact_records(impacts, ctx.tags(segmented=False), ctx.time_ns) if ctx.reference_points else []
            return [ctx.record(r.measurement, r.tags, r.fields) for r in recs] + [status_record(ctx, self.name, None)]
        ref_frame = reference_frame(ctx.reference)
        if ref_frame is None or ctx.reference is None:  # no rows without a reference
            return [status_record(ctx, self.name, _no_rows_reason(ctx))]
        target = getattr(cfg, "target", "prediction")
        method: ImpactMethod = self.method if self.method is not None else getattr(cfg, "method", "mi")
        if target == "label":
            if ref_frame.label is None:
                return [
                    status_record(
                        ctx,
                        self.name,
                        "impact.target is label but the reference rows carry no "
                        "labels (declare reference.label, with a file reference)",
                    )
                ]
            rows = replace(
                ref_frame,
                pred_label=ref_frame.label if ctx.task == "classification" else None,
                pred_proba=None,
                pred_value=None if ctx.task == "classification" else np.asarray(ref_frame.label, dtype=np.float64),
            )
        else:
            if not _has_outputs(ref_frame):
                return [status_record(ctx, self.name, NO_OUTPUTS + "; or declare importances (impact.declared)")]
            rows = ref_frame
        features = [f for f in ctx.features if f.name in rows.numeric or f.name in rows.categorical]
        if not features:
            return [
                status_record(
                    ctx,
                    self.name,
                    "the reference rows hold none of the features (sensitive features are left out of stored rows)",
                )
            ]
        try:
            impacts = _fitted(
                ctx.reference,
                ("impact", method, target, tuple(f.name for f in features)),
                lambda: feature_impact(
                    rows,
                    features,
                    method=method,
                    max_rows=self.max_rows,
                    seed=self.seed,
                ),
            )
        except ValueError as e:
            return [status_record(ctx, self.name, f"cannot rank the features: {e}")]
        # ranked once per reference: written with the windows that carry the reference's points
        recs = impact_records(impacts, ctx.tags(segmented=False), ctx.time_ns) if ctx.reference_points else []
        return [ctx.record(r.measurement, r.tags, {**r.fields, "target": target}) for r in recs] + [
            status_record(ctx, self.name, None, target=target, method=method)
        ]


def _engine(name: str) -> Engine:
    """``name`` as an engine name, or ValueError naming the known ones."""
    if name == "native":
        return "native"
    if name == "alibi":
        return "alibi"
    raise ValueError(f"online drift engine must be 'native' or 'alibi', got {name!r}")


@dataclass(frozen=True)
class _OnlineParams:
    features: tuple[str, ...]
    ert: float
    window_sizes: tuple[int, ...]
    n_bootstraps: int
    engine: Engine


@dataclass
class _Watch:
    """One watched (model, version, feature): its detector, or the calibration under way."""

    reference: Reference
    params: _OnlineParams
    detector: CVMOnline | None = None
    future: Future | None = None
    error: BaseException | None = None
    buffer: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    buffered: int = 0
    dropped: int = 0


_calibration_pool: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _calibration_pool
    if _calibration_pool is None:  # one thread: calibrations run one after the other, later ones hit the cache
        _calibration_pool = ThreadPoolExecutor(1, thread_name_prefix="online-calibration")
    return _calibration_pool


class OnlineDrift:
    """``dw_drift`` (``detector="cvm_online"``) per watched numeric feature, event by event.

    Which features, ERT, window sizes, number of simulated streams and engine come
    from the window's ``DriftSpec.online`` (the monitor's ``drift.online``), unless
    given to the constructor (then they apply to every model). With no features
    it does nothing, so :func:`~detectors.runner.default_evaluators` always includes it.

    Keeps one :class:`~detectors.online.CVMOnline` per (model, version, feature)
    across windows, rebuilt when the reference object or the parameters change. The
    reference is the feature's reference values (``Reference.numeric[f].values``:
    summaries suffice, no rows needed). Thresholds are cached in ``cache_dir``
    (they depend on the reference *size*, not its values).

    ``background=True`` (the worker): a calibration that is not cached yet runs on
    a separate thread; meanwhile the window's values wait in a bounded buffer
    (``max_buffer`` events per feature, oldest dropped and counted) and no record is
    written; the first window after it is ready feeds them all, so detections inside
    them still report their own event time. Without it the first window pays the
    calibration.

    Per window: ``drift`` (1 if it fired), ``n_detections``,
    ``first_detection_time`` (event time of the first), ``statistic`` (largest),
    ``threshold`` (the one the first detection crossed, else the latest in force),
    ``ert``, ``t`` (events since the last
    detection), ``n`` (events fed, buffered ones included), ``n_buffered`` (of them,
    held while calibrating), ``n_dropped``, ``engine``. Missing values are skipped.
    Events are fed in event-time order within a window, windows in closing order.
    State lives in the process: after a restart each run starts afresh (``t`` = 0).
    """

    name = "online_drift"
    segmented = False

    def __init__(
        self,
        features: Sequence[str] | None = None,
        ert: float | None = None,
        window_sizes: Sequence[int] | None = None,
        n_bootstraps: int | None = None,
        cache_dir: str | None = None,
        engine: str | None = None,
        *,
        background: bool = False,
        max_buffer: int = 100_000,
        max_watches: int = 1024,
    ) -> None:
        self.features = None if features is None else list(features)
        self.ert = ert
        self.window_sizes = None if window_sizes is None else tuple(window_sizes)
        self.n_bootstraps = n_bootstraps
        self.cache_dir = cache_dir
        self.engine = engine
        self.background = background
        self.max_buffer = int(max_buffer)
        self.max_watches = int(max_watches)
        self._state: OrderedDict[tuple[str, str, str], _Watch] = OrderedDict()

    def params(self, drift: DriftSpec | None) -> _OnlineParams:
        """Constructor arguments first, then the monitor's ``drift.online``, then the defaults."""
        spec = drift.online if drift is not None else OnlineSpec()
        features = self.features if self.features is not None else spec.features
        return _OnlineParams(
            tuple(features),
            float(self.ert if self.ert is not None else spec.ert),
            tuple(self.window_sizes if self.window_sizes is not None else spec.window_sizes),
            int(self.n_bootstraps if self.n_bootstraps is not None else spec.n_bootstraps),
            _engine(self.engine if self.engine is not None else spec.engine),
        )

    def _build(self, values: np.ndarray, p: _OnlineParams) -> CVMOnline:
        return CVMOnline(
            values, p.ert, p.window_sizes, n_bootstraps=p.n_bootstraps, cache_dir=self.cache_dir, engine=p.engine
        )

    def _watch(self, model: str, version: str, feature: str, reference: Reference, p: _OnlineParams) -> _Watch | None:
        key = (model, version, feature)
        w = self._state.get(key)
        if w is not None and w.reference is reference and w.params == p:
            self._state.move_to_end(key)
            return w
        ref = reference.numeric.get(feature)
        if ref is None or ref.n < 10:
            return None
        w = _Watch(reference, p)
        if self.background:
            w.future = _pool().submit(self._build, ref.values, p)
        else:
            w.detector = self._build(ref.values, p)
        self._state[key] = w
        while len(self._state) > self.max_watches:
            self._state.popitem(last=False)
        return w

    def detector(
        self, model: str, version: str, feature: str, reference: Reference, drift: DriftSpec | None = None
    ) -> CVMOnline | None:
        """The feature's detector (None: no usable reference values, or still calibrating)."""
        w = self._watch(model, version, feature, reference, self.params(drift))
        return None if w is None else self._ready(w)

    @staticmethod
    def _ready(w: _Watch) -> CVMOnline | None:
        if w.detector is None and w.future is not None and w.future.done():
            try:
                w.detector = w.future.result()
            except Exception as e:  # raised once by evaluate, the feature is then off
                w.error = e
            w.future = None
        return w.detector

    def update(
        self, model: str, version: str, reference: Reference, frame: Frame, drift: DriftSpec | None = None
    ) -> dict[str, Any]:
        """Feed a batch; returns feature -> (OnlineResult, event times, n_buffered, n_dropped).

        Features still calibrating keep the batch in their buffer and are left out.
        """
        p = self.params(drift)
        out: dict[str, Any] = {}
        if not p.features or not len(frame):
            return out
        order = np.argsort(frame.event_time, kind="stable")
        times_all = frame.event_time[order]
        for feature in p.features:
            col = frame.numeric.get(feature)
            w = self._watch(model, version, feature, reference, p)
            if w is None or col is None:
                continue
            vals = col[order]
            ok = np.isfinite(vals)
            vals, times = vals[ok], times_all[ok]
            det = self._ready(w)
            if w.error is not None:
                err, w.error = w.error, None
                w.buffer, w.buffered = [], 0
                w.future = None
                raise RuntimeError(
                    f"online drift of {feature!r} is off for {model} v{version}: {type(err).__name__}: {err}"
                ) from err
            if det is None:
                if w.future is None:  # failed before: stays off for this reference
                    continue
                w.buffer.append((vals, times))
                w.buffered += vals.shape[0]
                while w.buffered > self.max_buffer and w.buffer:  # bounded: the oldest go first
                    over = w.buffered - self.max_buffer
                    v0, t0 = w.buffer[0]
                    cut = min(over, v0.shape[0])
                    w.buffer[0] = (v0[cut:], t0[cut:])
                    w.buffered -= cut
                    w.dropped += cut
                    if not w.buffer[0][0].shape[0]:
                        w.buffer.pop(0)
                continue
            held, dropped = w.buffered, w.dropped
            if w.buffer:
                vals = np.concatenate([b[0] for b in w.buffer] + [vals])
                times = np.concatenate([b[1] for b in w.buffer] + [times])
                w.buffer, w.buffered, w.dropped = [], 0, 0
            out[feature] = (det.update(vals), times, held, dropped)
        return out

    def evaluate(self, ctx: WindowContext) -> list[Record]:
        if ctx.reference is None:
            return []
        p = self.params(ctx.drift)
        out = []
        for feature, (res, times, held, dropped) in self.update(
            ctx.model_id, ctx.version, ctx.reference, ctx.frame, ctx.drift
        ).items():
            first = res.first_drift
            finite = np.isfinite(res.stats)
            thr = np.flatnonzero(np.isfinite(res.thresholds))
            at = first if first is not None else (int(thr[-1]) if thr.size else None)
            fields: dict[str, Any] = {
                "drift": int(res.n_drift > 0),
                "n_detections": res.n_drift,
                "statistic": float(np.max(res.stats[finite])) if finite.any() else None,
                "threshold": float(res.thresholds[at]) if at is not None else None,
                "ert": p.ert,
                "t": res.t,
                "n": int(times.shape[0]),
                "n_buffered": held,
                "n_dropped": dropped,
                "engine": p.engine,
                "window_start": float(ctx.window_start),
            }
            if first is not None:
                fields["first_detection_time"] = float(times[first])
            tags = ctx.tags({R.T_FEATURE: feature, R.T_DETECTOR: "cvm_online"}, segmented=False)
            out.append(ctx.record(R.DRIFT, tags, fields))
        return out
