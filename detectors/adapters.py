# size: one thin adapter per detector family behind one contract, read side by side
"""Thin adapters that put the detectors of this package behind the contract of :mod:`detectors.contract`.

Each adapter keeps its detector's own arithmetic and only translates: configuration
in the constructor (checked there), the reference rows into what the detector learns
from, each window into what it tests, its result into a
:class:`~detectors.contract.DetectorResult`. The worker does not use these (it drives
the detectors through :mod:`detectors.runner`); they are the one way to drive any
detector from a prompt, and what the contract test runs.

>>> from detectors.contract import example_frames, EXAMPLE_FEATURES
>>> ref, (win,) = example_frames(windows=1, shift=1.0)
>>> res = UnivariateDetector(EXAMPLE_FEATURES).fit(ref).update(win)
>>> res.drift, res.details["top_feature"]
(True, 'x0')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from detectors.adversarial.monitor import AdversarialMonitor
from detectors.adversarial.spec import AdversarialSpec
from detectors.concept import ErrorStreamDetector
from detectors.contract import EXAMPLE_FEATURES, BaseDetector, DetectorResult
from detectors.errors import InvalidInputError
from detectors.frame import Frame
from detectors.multivariate import MMDDrift, PCADrift, RowEncoder
from detectors.online import CVMOnline, OnlineResult
from detectors.performance import CBPE, Calibration, fit_calibration, normalize_labels
from detectors.prediction import PredictionReference, prediction_drift
from detectors.quality import data_quality, quality_verdicts, reference_quality, window_totals
from detectors.reference import Reference
from detectors.spec import DriftSpec, FeatureSpec
from detectors.summaries import SummaryLayout, summary_drift
from detectors.univariate import DriftResult, univariate_drift
from detectors.values import not_none

__all__ = [
    "AdversarialDetector",
    "ConceptDriftDetector",
    "DataQualityDetector",
    "MultivariateDetector",
    "OnlineDriftDetector",
    "PerformanceEstimator",
    "PredictionDriftDetector",
    "SummaryDriftDetector",
    "UnivariateDetector",
]


def _features(features: Sequence[FeatureSpec], who: str) -> tuple[FeatureSpec, ...]:
    out = tuple(features)
    if not out or not all(isinstance(f, FeatureSpec) for f in out):
        raise InvalidInputError(f"{who}: features must be a non-empty sequence of FeatureSpec")
    return out


def _by_kind(features: Sequence[FeatureSpec]) -> dict[str, list[str]]:
    """The features' names by kind, as :meth:`~detectors.contract.BaseDetector._need` takes them."""
    return {kind: [f.name for f in features if f.kind == kind] for kind in ("numeric", "categorical")}


S = TypeVar("S", DriftSpec, AdversarialSpec)


def _spec(spec: Any, kind: type[S], who: str) -> S:
    """``spec``, or the default ``kind()`` when it is None; anything else is refused."""
    if spec is None:
        return kind()
    if not isinstance(spec, kind):
        article = "an" if kind.__name__[0] in "AEIOU" else "a"
        raise InvalidInputError(f"{who}: spec must be {article} {kind.__name__}, got {type(spec).__name__}")
    return spec


def _task(task: Any, who: str) -> str:
    if task not in ("classification", "regression"):
        raise InvalidInputError(f"{who}: task must be 'classification' or 'regression', got {task!r}")
    return str(task)


def _level(p_val: float, who: str, name: str = "p_val") -> float:
    if not isinstance(p_val, (int, float)) or not 0 < p_val < 1:
        raise InvalidInputError(f"{who}: {name} must be within (0, 1), got {p_val!r}")
    return float(p_val)


def _positive_int(v: Any, who: str, name: str, least: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
        raise InvalidInputError(f"{who}: {name} must be an int >= {least}, got {v!r}")
    return int(v)


def _drift_result(det: BaseDetector, res: DriftResult, n_window: int) -> DetectorResult:
    """A univariate :class:`DriftResult` (many features, one verdict) as a contract result."""
    p_values = [f.p_value for f in res.features if np.isfinite(f.p_value)]
    details: dict[str, Any] = {
        "n_drifted": res.n_drifted,
        "n_features": res.n_features,
        "n_skipped": len(res.skipped),
        "correction": res.correction,
        "threshold_method": res.threshold_method,
        "engine": res.engine,
        "top_feature": res.features[0].feature if res.features else None,
    }
    details.update({f"p_value.{f.feature}": f.p_value for f in res.features})
    if not res.n_features:
        return det.no_verdict(n_window, "no feature had enough values on both sides to be tested", **details)
    return det.result(
        res.share_drifted,
        min(p_values) if p_values else None,
        res.threshold,
        res.drift,
        n_window=n_window,
        reason=None if p_values else "no feature test gave a p-value",
        **details,
    )


def _online_config(
    who: str, ert: Any, window_sizes: Sequence[int], n_bootstraps: Any, seed: Any
) -> tuple[float, tuple[int, ...], int, int]:
    """The online detectors' shared configuration, checked: (ert, window sizes, n_bootstraps, seed)."""
    if isinstance(ert, bool) or not isinstance(ert, (int, float)) or not ert > 1:
        raise InvalidInputError(f"{who}: ert must be a number of events > 1, got {ert!r}")
    sizes = tuple(_positive_int(w, who, "window_sizes[]", 2) for w in window_sizes)
    if not sizes:
        raise InvalidInputError(f"{who}: window_sizes must name at least one window size")
    return float(ert), sizes, _positive_int(n_bootstraps, who, "n_bootstraps", 10), int(seed)


def _online_result(det: BaseDetector, r: OnlineResult, n: int, unit: str, **details: Any) -> DetectorResult:
    """An online detector's batch (:class:`~detectors.online.OnlineResult`) as a contract result: the largest
    statistic, the threshold the first detection crossed (else the latest in force), a detection or not."""
    finite = np.isfinite(r.stats)
    thresholds = r.thresholds.reshape(r.thresholds.shape[0], -1).max(axis=1) if r.thresholds.size else r.thresholds
    known = np.flatnonzero(np.isfinite(thresholds))
    at = r.first_drift if r.first_drift is not None else (int(known[-1]) if known.size else None)
    reason = "calibrated to an expected run time, no p-value"
    if not finite.any():
        reason += f"; fewer {unit} than the smallest window since the last detection: no statistic yet"
    return det.result(
        float(np.max(r.stats[finite])) if finite.any() else None,
        None,
        thresholds[at] if at is not None else None,
        r.n_drift > 0,
        n_window=n,
        reason=reason,
        n_detections=r.n_drift,
        t=r.t,
        first_detection=r.first_drift,
        **details,
    )


class UnivariateDetector(BaseDetector):
    """Per-feature two-sample tests with a correction for many features (:func:`~detectors.univariate.univariate_drift`).

    ``statistic``: the share of features that drift; ``p_value``: the smallest feature
    p-value; ``threshold``: the corrected per-feature level; ``drift``: the window verdict
    (the spec's threshold method). Per-feature p-values in ``details["p_value.<feature>"]``.
    """

    name = "univariate"
    wraps = ("univariate_drift",)

    def __init__(self, features: Sequence[FeatureSpec], spec: DriftSpec | None = None, bins: int = 10) -> None:
        self.features = _features(features, self.name)
        self.spec = _spec(spec, DriftSpec, self.name)
        self.bins = _positive_int(bins, self.name, "bins", 2)

    def _fit(self, reference: Frame) -> None:
        from detectors.reference import attach_reference_frame  # the chunk thresholds need the rows

        self._need(reference, "reference", **_by_kind(self.features))
        self.reference = attach_reference_frame(
            Reference.from_frame(reference, self.features, bins=self.bins), reference
        )

    def _update(self, window: Frame) -> DetectorResult:
        names = [f.name for f in self.features]
        self._need(window, "window", **_by_kind(self.features))
        return _drift_result(self, univariate_drift(window, self.reference, self.spec, names), len(window))

    @classmethod
    def example(cls) -> UnivariateDetector:
        return cls(EXAMPLE_FEATURES)

    @classmethod
    def bad_arguments(cls) -> list[dict[str, Any]]:
        return [dict(features=()), dict(features=EXAMPLE_FEATURES, bins=1), dict(features=EXAMPLE_FEATURES, spec={})]


class SummaryDriftDetector(BaseDetector):
    """:class:`UnivariateDetector` judged from a mergeable window summary (:mod:`detectors.summaries`).

    Each ``update`` is one window: its rows go into a fresh :class:`~detectors.summaries.WindowSummary`
    in batches of ``batch`` rows (as the worker feeds decoded batches), and the tests run on the summary
    (:func:`~detectors.summaries.summary_drift`). Same result fields as :class:`UnivariateDetector`;
    ``details["engine"]`` is ``"summary"``. ``bins``: fine bins per numeric feature.
    """

    name = "summary_univariate"
    wraps = ("summary_drift", "WindowSummary", "Reservoir", "SummaryLayout")

    def __init__(
        self,
        features: Sequence[FeatureSpec],
        spec: DriftSpec | None = None,
        bins: int = 1024,
        reservoir: int = 0,
        batch: int = 1000,
    ) -> None:
        self.features = _features(features, self.name)
        self.spec = _spec(spec, DriftSpec, self.name)
        self.bins = _positive_int(bins, self.name, "bins", 2)
        self.reservoir = _positive_int(reservoir, self.name, "reservoir", 0)
        self.batch = _positive_int(batch, self.name, "batch", 1)

    def _fit(self, reference: Frame) -> None:
        from detectors.reference import attach_reference_frame  # the chunk thresholds need the rows

        self._need(reference, "reference", **_by_kind(self.features))
        self.reference = attach_reference_frame(Reference.from_frame(reference, self.features), reference)
        self.layout = SummaryLayout.build(self.reference, self.features, bins=self.bins, reservoir=self.reservoir)

    def _update(self, window: Frame) -> DetectorResult:
        self._need(window, "window", **_by_kind(self.features))
        summary = self.layout.summary()
        for lo in range(0, len(window), self.batch):
            summary.update(window.take(slice(lo, lo + self.batch)))
        names = [f.name for f in self.features]
        return _drift_result(self, summary_drift(summary, self.reference, self.spec, names), len(window))

    @classmethod
    def example(cls) -> SummaryDriftDetector:
        return cls(EXAMPLE_FEATURES, bins=256, reservoir=50, batch=70)

    @classmethod
    def bad_arguments(cls) -> list[dict[str, Any]]:
        return [
            dict(features=()),
            dict(features=EXAMPLE_FEATURES, bins=1),
            dict(features=EXAMPLE_FEATURES, spec={}),
            dict(features=EXAMPLE_FEATURES, reservoir=-1),
            dict(features=EXAMPLE_FEATURES, batch=0),
        ]


class PredictionDriftDetector(BaseDetector):
    """Drift of the model's outputs (predicted classes, probabilities, values): :func:`~detectors.prediction.prediction_drift`.

    The result reads as :class:`UnivariateDetector`'s, over the outputs instead of the inputs.
    """

    name = "prediction_drift"
    wraps = ("prediction_drift", "PredictionReference")

    def __init__(self, spec: DriftSpec | None = None, bins: int = 10) -> None:
        self.spec = _spec(spec, DriftSpec, self.name)
        self.bins = _positive_int(bins, self.name, "bins", 2)

    def _fit(self, reference: Frame) -> None:
        with self._invalid_input():
            self.reference = PredictionReference.from_frame(reference, bins=self.bins)

    def _update(self, window: Frame) -> DetectorResult:
        if window.pred_label is None and window.pred_proba is None and window.pred_value is None:
            raise InvalidInputError(f"{self.name}: the window has no prediction (pred_label, pred_proba or pred_value)")
        return _drift_result(self, prediction_drift(window, self.reference, self.spec), len(window))

    @classmethod
    def example(cls) -> PredictionDriftDetector:
        return cls()

    @classmethod
    def bad_arguments(cls) -> list[dict[str, Any]]:
        return [dict(bins=0), dict(spec="ks")]


class MultivariateDetector(BaseDetector):
    """Joint drift of all features: MMD two-sample test or PCA reconstruction error (:mod:`detectors.multivariate`).

    Rows are encoded by :class:`~detectors.multivariate.RowEncoder` fitted on the reference.
    ``statistic``: MMD² or the mean reconstruction error; ``threshold``: its critical value.
    """

    name = "multivariate"
    wraps = ("MMDDrift", "PCADrift", "RowEncoder")

    def __init__(
        self,
        features: Sequence[FeatureSpec],
        method: str = "mmd",
        p_val: float = 0.05,
        n_permutations: int = 100,
        max_rows: int = 500,
        seed: int = 0,
    ) -> None:
        self.features = _features(features, self.name)
        if method not in ("mmd", "pca"):
            raise InvalidInputError(f"{self.name}: method must be 'mmd' or 'pca', got {method!r}")
        self.method = method
        self.p_val = _level(p_val, self.name)
        self.n_permutations = _positive_int(n_permutations, self.name, "n_permutations", 10)
        self.max_rows = _positive_int(max_rows, self.name, "max_rows", 20)
        self.seed = int(seed)

    def _fit(self, reference: Frame) -> None:
        kinds = _by_kind(self.features)
        self._need(reference, "reference", **kinds)
        self.encoder = RowEncoder(kinds["numeric"], kinds["categorical"]).fit(reference)
        x_ref = self.encoder.transform(reference)
        with self._invalid_input():
            if self.method == "pca":
                self.test: MMDDrift | PCADrift = PCADrift(x_ref, p_val=self.p_val, seed=self.seed)
            else:
                self.test = MMDDrift(
                    x_ref,
                    p_val=self.p_val,
                    n_permutations=self.n_permutations,
                    max_ref=self.max_rows,
                    max_test=self.max_rows,
                    seed=self.seed,
                )

    def _update(self, window: Frame) -> DetectorResult:
        self._need(window, "window", numeric=self.encoder.numeric, categorical=self.encoder.categorical)
        if len(window) < 2:
            return self.no_verdict(len(window), "a two-sample test needs at least 2 window rows")
        r = self.test.test(self.encoder.transform(window))
        return self.result(
            r.statistic,
            r.p_value,
            r.threshold,
            r.drift,
            n_window=r.n_window,
            method=r.detector,
            reference_value=r.reference_value,
            engine=r.engine,
            n_reference_used=r.n_ref,
        )

    @classmethod
    def example(cls) -> MultivariateDetector:
        return cls(EXAMPLE_FEATURES, n_permutations=50, max_rows=200)

    @classmethod
    def bad_arguments(cls) -> list[dict[str, Any]]:
        return [
            dict(features=EXAMPLE_FEATURES, method="kde"),
            dict(features=EXAMPLE_FEATURES, p_val=1.5),
            dict(features=EXAMPLE_FEATURES, n_permutations=3),
        ]


class OnlineDriftDetector(BaseDetector):
    """Event-by-event drift of one numeric feature: :class:`~detectors.online.CVMOnline`, ERT-calibrated.

    Stateful: each ``update`` continues the stream (events in event-time order; missing
    values skipped). ``statistic``: the largest statistic of the batch; ``threshold``: the
    one the first detection crossed, else the latest in force; ``drift``: a detection in
    the batch. No p-value: the threshold is calibrated to an expected run time instead.
    """

    name = "online_drift"
    wraps = ("CVMOnline", "make_online")

    def __init__(
        self,
        feature: str,
        ert: float = 200.0,
        window_sizes: Sequence[int] = (20, 50),
        n_bootstraps: int = 2000,
        seed: int = 0,
    ) -> None:
        if not isinstance(feature, str) or not feature:
            raise InvalidInputError(f"{self.name}: feature must be a feature name, got {feature!r}")
        self.feature = feature
        self.ert, self.window_sizes, self.n_bootstraps, self.seed = _online_config(
            self.name, ert, window_sizes, n_bootstraps, seed
        )

    def _fit(self, reference: Frame) -> None:
        self._need(reference, "reference", numeric=[self.feature])
        values = reference.numeric[self.feature]
        values = values[np.isfinite(values)]
        with self._invalid_input():  # CalibrationError included
            self.detector = CVMOnline(
                values, self.ert, self.window_sizes, n_bootstraps=self.n_bootstraps, seed=self.seed
            )

    def _update(self, window: Frame) -> DetectorResult:
        self._need(window, "window", numeric=[self.feature])
        order = np.argsort(window.event_time, kind="stable")
        vals = window.numeric[self.feature][order]
        vals = vals[np.isfinite(vals)]
        if not vals.size:
            return self.no_verdict(0, f"no value of {self.feature!r}")
        return _online_result(self, self.detector.update(vals), int(vals.size), "events", ert=self.ert)

    @classmethod
    def example(cls) -> OnlineDriftDetector:
        return cls("x0", ert=100.0, window_sizes=(10, 20), n_bootstraps=500)  # a calibration of ~0.1 s

    @classmethod
    def bad_arguments(cls) -> list[dict[str, Any]]:
        return [
            dict(feature=""),
            dict(feature="x0", ert=1.0),
            dict(feature="x0", window_sizes=()),
            dict(feature="x0", n_bootstraps=0),
        ]


class ConceptDriftDetector(BaseDetector):
    """Concept drift on the error stream (:class:`~detectors.concept.ErrorStreamDetector`): a rise of the
    error rate (classification, one-sided Fisher exact online) or a change of the absolute errors (regression).

    Both the reference and the windows need predictions and true labels. Stateful, read as
    :class:`OnlineDriftDetector`'s result.
    """

    name = "concept_drift"
    wraps = ("ErrorStreamDetector", "FETOnline", "error_stream", "scored_errors")

    def __init__(
        self,
        task: str = "classification",
        ert: float = 200.0,
        window_sizes: Sequence[int] = (20, 50),
        n_bootstraps: int = 2000,
        seed: int = 0,
    ) -> None:
        self.task = _task(task, self.name)
        self.ert, self.window_sizes, self.n_bootstraps, self.seed = _online_config(
            self.name, ert, window_sizes, n_bootstraps, seed
        )

    def _errors(self, frame: Frame, what: str) -> np.ndarray:
        """As :func:`detectors.concept.scored_errors`, from a frame's predictions and labels."""
        if self.task == "regression":
            value, label = self._column(frame, "pred_value", what), self._column(frame, "label", what)
            truth = np.array([v if isinstance(v, (int, float)) else np.nan for v in label], dtype=np.float64)
            e = np.abs(np.asarray(value, dtype=np.float64) - truth)
            return e[np.isfinite(e)]
        pred, label = self._column(frame, "pred_label", what), self._column(frame, "label", what)
        t, p = normalize_labels(label), normalize_labels(pred)
        ok = not_none(t) & not_none(p)
        return (t[ok] != p[ok]).astype(np.float64)

    def _fit(self, reference: Frame) -> None:
        errors = self._errors(reference, "reference")
        with self._invalid_input():
            self.detector = ErrorStreamDetector(
                errors, ert=self.ert, window_sizes=self.window_sizes, n_bootstraps=self.n_bootstraps, seed=self.seed
            )

    def _update(self, window: Frame) -> DetectorResult:
        order = np.argsort(window.event_time, kind="stable")
        errors = self._errors(window.take(order), "window")
        if not errors.size:
            return self.no_verdict(0, "no scorable prediction and label")
        return _online_result(
            self,
            self.detector.update(errors),
            int(errors.size),
            "labels",
            kind=self.detector.kind,
            error_rate=float(errors.mean()),
        )

    @classmethod
    def example(cls) -> ConceptDriftDetector:
        return cls(ert=100.0, window_sizes=(10, 20), n_bootstraps=500)

    @classmethod
    def bad_arguments(cls) -> list[dict[str, Any]]:
        return [dict(task="ranking"), dict(ert=0.5), dict(window_sizes=(1,))]


class PerformanceEstimator(BaseDetector):
    """CBPE's expected accuracy of a window from calibrated probabilities (:class:`~detectors.performance.CBPE`).

    The calibration is fitted on the reference rows' probabilities and labels. An estimate,
    not a test: ``statistic`` is the expected accuracy, ``threshold`` the lower end of its
    sampling band (estimate − 3 sd); no p-value and no verdict of its own (the worker judges
    it against the band of the reference's chunks).
    """

    name = "estimated_performance"
    wraps = ("CBPE", "fit_calibration", "Calibration")

    def __init__(self, min_rows: int = 100) -> None:
        self.min_rows = _positive_int(min_rows, self.name, "min_rows", 10)

    def _fit(self, reference: Frame) -> None:
        proba, label = self._column(reference, "pred_proba", "reference"), self._column(reference, "label", "reference")
        with self._invalid_input():
            self.calibration: Calibration = fit_calibration(
                proba, label, reference.classes, reference.pred_label, min_rows=self.min_rows
            )

    def _update(self, window: Frame) -> DetectorResult:
        proba = self._column(window, "pred_proba", "window")
        if tuple(window.classes) != self.calibration.classes:
            raise InvalidInputError(
                f"{self.name}: the window's classes {list(window.classes)} differ from the "
                f"reference's {list(self.calibration.classes)}"
            )
        est = CBPE(self.calibration).estimate(proba, window.classes, window.pred_label)
        if not est:
            return self.no_verdict(len(window), "no row of the window has complete probabilities")
        return self.result(
            est["accuracy"],
            None,
            est["accuracy_lower"],
            None,
            n_window=int(est["n"]),
            reason="an estimate, not a test: no p-value or verdict",
            **{k: v for k, v in est.items() if k not in ("accuracy", "n")},
        )

    @classmethod
    def example(cls) -> PerformanceEstimator:
        return cls()

    @classmethod
    def bad_arguments(cls) -> list[dict[str, Any]]:
        return [dict(min_rows=0), dict(min_rows="100")]


class DataQualityDetector(BaseDetector):
    """Missing, type-error, out-of-range and unknown-category rates (:func:`~detectors.quality.data_quality`),
    judged against the reference rows' chunks of the window's size (:func:`~detectors.quality.quality_verdicts`).

    ``statistic``: the window's missing-cell rate; ``drift``: a judged rate of some feature
    above its band (at family level ``p_val``); no p-value (bands, not a test).
    """

    name = "data_quality"
    wraps = ("data_quality", "quality_verdicts", "reference_quality")
    missing_columns_are_data = True  # a feature absent from the window is missing in every row: judged, not refused

    def __init__(
        self, features: Sequence[FeatureSpec], p_val: float = 0.05, min_chunks: int = 5, max_chunks: int | None = 50
    ) -> None:
        self.features = _features(features, self.name)
        self.p_val = _level(p_val, self.name)
        self.min_chunks = _positive_int(min_chunks, self.name, "min_chunks", 2)
        self.max_chunks = None if max_chunks is None else _positive_int(max_chunks, self.name, "max_chunks", 2)

    def _fit(self, reference: Frame) -> None:
        self.rows = reference
        self._cache: dict = {}

    def _update(self, window: Frame) -> DetectorResult:
        quality = data_quality(window, self.features)
        ref = reference_quality(self.rows, self.features, len(window), self.min_chunks, self.max_chunks, self._cache)
        verdicts = quality_verdicts(quality, self.features, ref, self.p_val)
        alarms = [q.feature for q, v in zip(quality, verdicts) if v.get("quality_alarm")]
        totals = window_totals(quality)
        return self.result(
            totals.get("missing_cell_rate"),
            None,
            None,
            bool(alarms),
            n_window=len(window),
            reason="bands of the reference's chunks, no p-value or single threshold",
            n_alarms=len(alarms),
            first_alarm=alarms[0] if alarms else None,
            **{k: v for k, v in totals.items() if k != "missing_cell_rate"},
        )

    @classmethod
    def example(cls) -> DataQualityDetector:
        return cls(EXAMPLE_FEATURES)

    @classmethod
    def bad_arguments(cls) -> list[dict[str, Any]]:
        return [
            dict(features=[]),
            dict(features=EXAMPLE_FEATURES, p_val=0.0),
            dict(features=EXAMPLE_FEATURES, min_chunks=1),
        ]


class AdversarialDetector(BaseDetector):
    """Adversarial and extraction scores of a window (:class:`~detectors.adversarial.monitor.AdversarialMonitor`):
    outliers, low margins, per-source contrasts and model-extraction tracking, combined.

    Stateful (per-source extraction state). ``statistic``: the combined score; ``p_value``:
    its p-value; ``threshold``: the level alpha; ``drift``: the window is flagged.
    """

    name = "adversarial"
    wraps = (
        "AdversarialMonitor",
        "OutlierDetector",
        "MarginDetector",
        "SqueezeDetector",
        "ExtractionTracker",
        "source_contrast",
    )

    def __init__(
        self, features: Sequence[FeatureSpec], spec: AdversarialSpec | None = None, task: str = "classification"
    ) -> None:
        self.features = _features(features, self.name)
        self.spec = _spec(spec, AdversarialSpec, self.name)
        self.task = _task(task, self.name)

    def _fit(self, reference: Frame) -> None:
        self._need(reference, "reference", numeric=_by_kind(self.features)["numeric"])
        with self._invalid_input():
            self.monitor = AdversarialMonitor.fit(reference, self.features, self.spec, task=self.task)

    def _update(self, window: Frame) -> DetectorResult:
        self._need(window, "window", numeric=self.monitor.names)
        r = self.monitor.evaluate(window)
        return self.result(
            r.score,
            r.p_value,
            r.alpha,
            r.flagged,
            n_window=r.n_events,
            reason=None if np.isfinite(r.score) and np.isfinite(r.p_value) else "no component could score this window",
            top_component=r.top_component,
            n_flagged_by=len(r.flagged_by),
            extraction_flagged=r.extraction_flagged,
            sources_tracked=r.sources_tracked,
        )

    @classmethod
    def example(cls) -> AdversarialDetector:
        # a short extraction calibration (the default simulates 1,000 benign sources of 600 queries)
        extraction = {"simulations": 100, "horizon": 100, "min_queries": 20, "test_every": 5}
        return cls(EXAMPLE_FEATURES, AdversarialSpec.model_validate({"extraction": extraction}))

    @classmethod
    def bad_arguments(cls) -> list[dict[str, Any]]:
        return [
            dict(features=()),
            dict(features=EXAMPLE_FEATURES, spec={"enabled": True}),
            dict(features=EXAMPLE_FEATURES, task="ranking"),
        ]
