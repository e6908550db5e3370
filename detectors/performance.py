"""Model performance per window: realized from joined labels, estimated without them.

Realized performance needs the true labels, which arrive late (hours, weeks)
and are joined to predictions by :class:`detectors.concept.LabelJoin`. Until
they arrive, a calibrated classifier's own probabilities say how well it should
be doing: confidence-based performance estimation (CBPE, as in NannyML).

Realized (:class:`PerformanceAccumulator`, additive so labels can trickle in):

* classification — ``accuracy``; ``precision``, ``recall``, ``f1`` as macro
  averages over the classes seen in labels or predictions (scikit-learn's
  ``average="macro"``, ``zero_division=0``); ``log_loss`` (natural log,
  probabilities renormalised per row and clipped to ``[eps, 1 - eps]`` with
  float64 ``eps``, scikit-learn's convention) over rows with probabilities;
* regression — ``mae``, ``rmse`` and ``bias`` (mean of prediction − truth).

Estimated (:class:`CBPE`, classification with probabilities): with ``P_n(i)``
the probability that event ``n`` is of class ``i``, the expected confusion
matrix is ``E[C[i, j]] = sum_n P_n(i) [pred_n = j]``; expected accuracy is its
trace over ``n``, expected per-class precision/recall/F1 are ratios of its
expected counts (``F1 = 2TP / (2TP + FP + FN)``), macro averaged; expected
log loss is the mean entropy ``-sum_i P_n(i) log P_n(i)``. ``accuracy_std`` is
the standard deviation of realized accuracy given the probabilities
(``sqrt(sum c_n (1 - c_n)) / N``, ``c_n`` = P(event n is right)), so realized
accuracy should fall within about 2 of it of the estimate when the model is
calibrated. If reference labels exist, :meth:`CBPE.fit_calibration` fits a
per-class isotonic map first (as NannyML does).

Records (measurement ``dw_performance``, see :func:`performance_records`):
tags ``metric`` (``accuracy``, ``precision``, ``recall``, ``f1``, ``log_loss``,
``mae``, ``rmse``, ``bias``) and ``detector`` — ``realized`` or ``cbpe`` — so
the dashboard draws the estimate beside the realized value. Fields: ``value``,
``estimated`` (bool), ``n`` (rows behind the value) and, for realized metrics,
``n_labels``, ``label_coverage`` (labelled share of the window's predictions,
when the caller knows it), ``label_delay_p50`` / ``label_delay_p95`` (seconds
from event to label); for CBPE accuracy, ``std``.

>>> import numpy as np
>>> acc = PerformanceAccumulator("classification")
>>> acc.add(np.array(["a", "b", "b"], dtype=object), np.array(["a", "b", "a"], dtype=object))
>>> round(acc.metrics()["accuracy"], 3)
0.667
>>> est = CBPE().estimate(np.array([[0.9, 0.1], [0.2, 0.8]]), ("a", "b"))
>>> round(est["accuracy"], 2)
0.85
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from detectors.records import PERFORMANCE, T_DETECTOR, T_METRIC, Record

Task = Literal["classification", "regression"]

__all__ = [
    "CBPE",
    "PerformanceAccumulator",
    "classification_metrics",
    "normalize_labels",
    "performance_records",
    "regression_metrics",
]

_EPS = float(np.finfo(np.float64).eps)


def normalize_labels(values: np.ndarray | Sequence[object]) -> np.ndarray:
    """Class labels as strings, spelled as the decoder spells predicted labels.

    ``True``/``False`` become ``"true"``/``"false"``, integers and integral
    floats their decimal digits, strings stay; ``None`` stays ``None``.

    >>> normalize_labels([True, 3, 3.0, "x", None, 2.5]).tolist()
    ['true', '3', '3', 'x', None, '2.5']
    """
    a = np.asarray(values, dtype=object)
    if a.size and all(type(v) is str for v in a[:64]) and all(type(v) is str for v in a):
        return a

    def one(v: object) -> object:
        t = type(v)
        if v is None or t is str:
            return v
        if t is bool or t is np.bool_:
            return "true" if v else "false"
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            f = float(v)
            if math.isnan(f):
                return None
            return str(int(f)) if f.is_integer() else repr(f)
        return str(v)

    return np.array([one(v) for v in a], dtype=object)


@dataclass
class PerformanceAccumulator:
    """Additive counts behind realized metrics of one window (labels may arrive in pieces).

    Classification keeps a confusion matrix over a growing class list (at most
    ``max_classes``; later classes are pooled as ``__other__``), a log-loss sum
    and a bounded sample of label delays; regression keeps error sums.
    """

    task: Task = "classification"
    max_classes: int = 200
    max_delays: int = 10_000
    classes: list[str] = field(default_factory=list)
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    n: int = 0
    log_loss_sum: float = 0.0
    log_loss_n: int = 0
    abs_sum: float = 0.0
    sq_sum: float = 0.0
    err_sum: float = 0.0
    delays: list[np.ndarray] = field(default_factory=list)
    _n_delays: int = 0

    def _codes(self, labels: np.ndarray) -> np.ndarray:
        known = set(self.classes)
        for c in dict.fromkeys(labels.tolist()):
            if c in known:
                continue
            if len(self.classes) < self.max_classes - 1:
                self.classes.append(c)
            elif "__other__" not in known:
                self.classes.append("__other__")
            known = set(self.classes)
        k = len(self.classes)
        if self.confusion.shape[0] < k:
            grown = np.zeros((k, k), dtype=np.int64)
            m = self.confusion.shape[0]
            grown[:m, :m] = self.confusion
            self.confusion = grown
        index = {c: i for i, c in enumerate(self.classes)}
        other = index.get("__other__", -1)
        return np.fromiter((index.get(c, other) for c in labels.tolist()), dtype=np.int64, count=labels.shape[0])

    def add(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        proba: np.ndarray | None = None,
        classes: Sequence[str] = (),
        delays: np.ndarray | None = None,
    ) -> None:
        """Add joined rows: true labels, predictions, optional probabilities and label delays (s)."""
        y_true = np.asarray(y_true)
        y_pred = np.asarray(y_pred)
        if y_true.shape[0] != y_pred.shape[0]:
            raise ValueError("y_true and y_pred differ in length")
        if delays is not None and delays.size:
            d = np.asarray(delays, dtype=np.float64)
            d = d[np.isfinite(d)]
            self.delays.append(d)
            self._n_delays += d.shape[0]
            while self._n_delays - self.delays[0].shape[0] >= self.max_delays and len(self.delays) > 1:
                self._n_delays -= self.delays.pop(0).shape[0]
        if self.task == "regression":
            t = np.asarray(y_true, dtype=np.float64)
            p = np.asarray(y_pred, dtype=np.float64)
            ok = np.isfinite(t) & np.isfinite(p)
            e = p[ok] - t[ok]
            self.n += int(ok.sum())
            self.abs_sum += float(np.abs(e).sum())
            self.sq_sum += float((e * e).sum())
            self.err_sum += float(e.sum())
            return
        t = normalize_labels(y_true)
        p = normalize_labels(y_pred)
        ok = np.not_equal(t, None) & np.not_equal(p, None)
        t, p = t[ok], p[ok]
        if t.size:
            both = np.concatenate([t, p])
            codes = self._codes(both)
            k = len(self.classes)
            self.confusion += np.bincount(codes[: t.size] * k + codes[t.size :], minlength=k * k).reshape(k, k)
            self.n += int(t.size)
        if proba is not None and classes:
            pr = np.asarray(proba, dtype=np.float64)[ok]
            if pr.ndim != 2 or pr.shape[1] != len(classes):
                raise ValueError("proba must be (n, len(classes))")
            col = {c: i for i, c in enumerate(classes)}
            ti = np.fromiter((col.get(c, -1) for c in t.tolist()), dtype=np.int64, count=t.size)
            rows = np.isfinite(pr).all(axis=1) & (ti >= 0)
            if rows.any():
                pr = pr[rows]
                pr = pr / pr.sum(axis=1, keepdims=True)
                pt = np.clip(pr[np.arange(pr.shape[0]), ti[rows]], _EPS, 1 - _EPS)
                self.log_loss_sum += float(-np.log(pt).sum())
                self.log_loss_n += int(pr.shape[0])

    _STATE_KEYS = ("task", "classes", "n", "log_loss_sum", "log_loss_n", "abs_sum", "sq_sum", "err_sum")

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(scalars, arrays)``: everything :meth:`from_state` needs (JSON-able scalars, plain arrays),
        so a caller can persist an accumulator without pickle."""
        return ({k: getattr(self, k) for k in self._STATE_KEYS},
                {"confusion": self.confusion,
                 "delays": np.concatenate(self.delays) if self.delays else np.empty(0)})

    @classmethod
    def from_state(cls, scalars: dict, arrays: dict[str, np.ndarray]) -> "PerformanceAccumulator":
        """The accumulator :meth:`state` described."""
        acc = cls(scalars["task"])
        for k in cls._STATE_KEYS[1:]:
            setattr(acc, k, scalars[k])
        acc.confusion = np.asarray(arrays["confusion"], dtype=np.int64)
        delays = np.asarray(arrays["delays"])
        if delays.size:
            acc.delays, acc._n_delays = [delays], int(delays.size)
        return acc

    def merge(self, other: "PerformanceAccumulator") -> None:
        """Fold another accumulator of the same task into this one."""
        if other.task != self.task:
            raise ValueError("cannot merge accumulators of different tasks")
        if other.classes:
            codes = self._codes(np.array(other.classes, dtype=object))
            k = len(self.classes)
            flat = (codes[:, None] * k + codes[None, :]).ravel()
            self.confusion += np.bincount(flat, weights=other.confusion.ravel(), minlength=k * k).reshape(k, k).astype(
                np.int64
            )
        self.n += other.n
        self.log_loss_sum += other.log_loss_sum
        self.log_loss_n += other.log_loss_n
        self.abs_sum += other.abs_sum
        self.sq_sum += other.sq_sum
        self.err_sum += other.err_sum
        for d in other.delays:
            self.add(np.empty(0), np.empty(0), delays=d)

    def metrics(self) -> dict[str, float]:
        """Metric name -> value (empty when no rows); see the module docstring."""
        if self.n == 0:
            return {}
        if self.task == "regression":
            return {
                "mae": self.abs_sum / self.n,
                "rmse": math.sqrt(self.sq_sum / self.n),
                "bias": self.err_sum / self.n,
            }
        return _confusion_metrics(self.confusion.astype(np.float64), self.log_loss_sum, self.log_loss_n)

    def delay_quantiles(self) -> dict[str, float]:
        """``label_delay_p50`` / ``label_delay_p95`` (seconds) over the kept delay sample."""
        if not self.delays:
            return {}
        d = np.concatenate(self.delays)[-self.max_delays :]
        if d.size == 0:
            return {}
        q50, q95 = np.quantile(d, [0.5, 0.95])
        return {"label_delay_p50": float(q50), "label_delay_p95": float(q95)}


def _confusion_metrics(c: np.ndarray, ll_sum: float, ll_n: int) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 from a (possibly expected) confusion matrix."""
    total = c.sum()
    tp = np.diag(c)
    pred = c.sum(axis=0)
    true = c.sum(axis=1)
    present = (pred > 0) | (true > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
        denom = 2 * tp + (pred - tp) + (true - tp)
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    out = {
        "accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "precision": float(precision[present].mean()) if present.any() else float("nan"),
        "recall": float(recall[present].mean()) if present.any() else float("nan"),
        "f1": float(f1[present].mean()) if present.any() else float("nan"),
    }
    if ll_n:
        out["log_loss"] = ll_sum / ll_n
    return out


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None = None, classes: Sequence[str] = ()
) -> dict[str, float]:
    """Realized classification metrics of one batch of joined rows (see module docstring)."""
    acc = PerformanceAccumulator("classification")
    acc.add(y_true, y_pred, proba, classes)
    return acc.metrics()


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and bias of one batch of joined rows (non-finite pairs left out)."""
    acc = PerformanceAccumulator("regression")
    acc.add(y_true, y_pred)
    return acc.metrics()


class CBPE:
    """Confidence-based performance estimation for classifiers with probabilities."""

    def __init__(self) -> None:
        self._iso: list | None = None
        self._iso_classes: tuple[str, ...] = ()

    def fit_calibration(self, proba: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> "CBPE":
        """Fit one-vs-rest isotonic calibration on reference probabilities and true labels."""
        from sklearn.isotonic import IsotonicRegression

        proba = np.asarray(proba, dtype=np.float64)
        lab = normalize_labels(labels)
        ok = np.isfinite(proba).all(axis=1) & np.not_equal(lab, None)
        proba, lab = proba[ok], lab[ok]
        if proba.shape[0] < 20:
            raise ValueError("calibration needs at least 20 labelled reference rows with probabilities")
        self._iso = []
        for j, c in enumerate(classes):
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(proba[:, j], (lab == c).astype(np.float64))
            self._iso.append(iso)
        self._iso_classes = tuple(classes)
        return self

    def calibrate(self, proba: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """Probabilities after the fitted calibration (rows renormalised); unchanged when unfitted."""
        proba = np.asarray(proba, dtype=np.float64)
        if self._iso is None:
            return proba
        if tuple(classes) != self._iso_classes:
            raise ValueError("classes differ from those the calibration was fitted on")
        out = np.column_stack([iso.predict(proba[:, j]) for j, iso in enumerate(self._iso)])
        s = out.sum(axis=1, keepdims=True)
        return np.where(s > 0, out / np.where(s > 0, s, 1.0), 1.0 / out.shape[1])

    def estimate(
        self, proba: np.ndarray, classes: Sequence[str], pred_label: np.ndarray | None = None
    ) -> dict[str, float]:
        """Expected metrics of a window from its probabilities (rows with NaN left out).

        ``pred_label``: the served class per row (default: the most probable).
        Returns ``accuracy``, ``precision``, ``recall``, ``f1``, ``log_loss``,
        ``accuracy_std`` and ``n``; empty when no row has probabilities.
        """
        proba = np.asarray(proba, dtype=np.float64)
        if proba.ndim != 2 or proba.shape[1] != len(classes) or len(classes) < 2:
            raise ValueError("proba must be (n, len(classes)) with at least 2 classes")
        ok = np.isfinite(proba).all(axis=1)
        if pred_label is None:
            pred_idx = np.argmax(np.where(np.isfinite(proba), proba, -np.inf), axis=1)
        else:
            lab = normalize_labels(pred_label)
            col = {c: i for i, c in enumerate(classes)}
            pred_idx = np.fromiter((col.get(c, -1) for c in lab.tolist()), dtype=np.int64, count=lab.shape[0])
            ok &= pred_idx >= 0
        proba, pred_idx = proba[ok], pred_idx[ok]
        n = proba.shape[0]
        if n == 0:
            return {}
        proba = np.clip(proba, 0.0, None)
        proba = proba / np.where(proba.sum(axis=1, keepdims=True) > 0, proba.sum(axis=1, keepdims=True), 1.0)
        proba = self.calibrate(proba, classes)
        k = len(classes)
        onehot = np.zeros((n, k))
        onehot[np.arange(n), pred_idx] = 1.0
        expected = proba.T @ onehot  # E[C[true i, pred j]]
        out = _confusion_metrics(expected, 0.0, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(proba > 0, proba * np.log(np.clip(proba, _EPS, 1.0)), 0.0).sum(axis=1)
        out["log_loss"] = float(ent.mean())
        c = proba[np.arange(n), pred_idx]
        out["accuracy_std"] = float(np.sqrt(np.sum(c * (1 - c))) / n)
        out["n"] = float(n)
        return out


def performance_records(
    metrics: dict[str, float],
    tags: dict[str, str],
    time_ns: int,
    *,
    estimated: bool,
    n: int | None = None,
    extra: dict[str, float | int] | None = None,
) -> list[Record]:
    """One ``dw_performance`` record per metric (fields in the module docstring).

    ``extra`` fields (``n_labels``, ``label_coverage``, delay quantiles) are
    added to every record; for CBPE the ``accuracy_std`` entry becomes the
    ``std`` field of the accuracy record.
    """
    detector = "cbpe" if estimated else "realized"
    skip = {"accuracy_std", "n"}
    rows = n if n is not None else int(metrics.get("n", 0))
    out = []
    for name, value in metrics.items():
        if name in skip or value is None or not np.isfinite(value):
            continue
        fields: dict[str, float | int | str | bool] = {"value": float(value), "estimated": estimated, "n": int(rows)}
        if extra:
            fields.update({k: v for k, v in extra.items() if v is not None and np.isfinite(v)})
        if estimated and name == "accuracy" and "accuracy_std" in metrics:
            fields["std"] = float(metrics["accuracy_std"])
        out.append(Record(PERFORMANCE, {**tags, T_METRIC: name, T_DETECTOR: detector}, fields, time_ns))
    return out
