# size: realized and CBPE-estimated performance share the metric definitions and their band arithmetic
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Literal

import numpy as np

from detectors.records import PERFORMANCE, T_DETECTOR, T_METRIC, FieldValue, Record
from detectors.reference import Reference, reference_frame
from detectors.values import not_none

Task = Literal["classification", "regression"]

__all__ = [
    "CBPE",
    "CONCEPT_UNSTABLE",
    "Calibration",
    "CalibrationCollector",
    "PerformanceAccumulator",
    "calibration_residuals",
    "chunk_dispersion",
    "classification_metrics",
    "fit_calibration",
    "isotonic_fit",
    "needs_calibration",
    "normalize_labels",
    "not_calibrated_record",
    "performance_records",
    "reference_calibration",
    "regression_metrics",
    "suffix_z",
]

_EPS = float(np.finfo(np.float64).eps)
CONCEPT_UNSTABLE = "concept unstable"
"""How CBPE's "not calibrated" reason starts when the joined labels show no calibration lasts
(:attr:`CalibrationCollector.unstable_reason`; the dashboard's Performance page says so in its headline)."""


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
    est_sum: float = 0.0  # CBPE's expected correct count of the joined rows (see add_estimate)
    est_n: int = 0
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
        ok = not_none(t) & not_none(p)
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

    def add_estimate(self, expected_correct: float, n: int) -> None:
        """Add CBPE's estimate for joined rows (:meth:`CBPE.expected_correct`), so the realized
        accuracy is reported beside the estimate of the *same* rows and their difference."""
        self.est_sum += float(expected_correct)
        self.est_n += int(n)

    _STATE_KEYS = (
        "task",
        "classes",
        "n",
        "log_loss_sum",
        "log_loss_n",
        "abs_sum",
        "sq_sum",
        "err_sum",
        "est_sum",
        "est_n",
    )

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(scalars, arrays)``: everything :meth:`from_state` needs (JSON-able scalars, plain arrays),
        so a caller can persist an accumulator without pickle."""
        return (
            {k: getattr(self, k) for k in self._STATE_KEYS},
            {"confusion": self.confusion, "delays": np.concatenate(self.delays) if self.delays else np.empty(0)},
        )

    @classmethod
    def from_state(cls, scalars: dict, arrays: dict[str, np.ndarray]) -> PerformanceAccumulator:
        """The accumulator :meth:`state` described."""
        acc = cls(scalars["task"])
        for k in cls._STATE_KEYS[1:]:
            if k in scalars:  # snapshots written before a key existed keep its default
                setattr(acc, k, scalars[k])
        acc.confusion = np.asarray(arrays["confusion"], dtype=np.int64)
        delays = np.asarray(arrays["delays"])
        if delays.size:
            acc.delays, acc._n_delays = [delays], int(delays.size)
        return acc

    def merge(self, other: PerformanceAccumulator) -> None:
        """Fold another accumulator of the same task into this one."""
        if other.task != self.task:
            raise ValueError("cannot merge accumulators of different tasks")
        if other.classes:
            codes = self._codes(np.array(other.classes, dtype=object))
            k = len(self.classes)
            flat = (codes[:, None] * k + codes[None, :]).ravel()
            self.confusion += (
                np.bincount(flat, weights=other.confusion.ravel(), minlength=k * k).reshape(k, k).astype(np.int64)
            )
        self.n += other.n
        self.log_loss_sum += other.log_loss_sum
        self.log_loss_n += other.log_loss_n
        self.abs_sum += other.abs_sum
        self.sq_sum += other.sq_sum
        self.err_sum += other.err_sum
        self.est_sum += other.est_sum
        self.est_n += other.est_n
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
        out = _confusion_metrics(self.confusion.astype(np.float64), self.log_loss_sum, self.log_loss_n)
        if self.est_n:
            out["cbpe_accuracy"] = self.est_sum / self.est_n
        return out

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


def isotonic_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Increasing isotonic regression of ``y`` on ``x`` (least squares, pool-adjacent-violators).

    Returns ``(xs, ys)``: the sorted unique ``x`` and the fitted value at each;
    predict with ``np.interp(t, xs, ys)`` (constant beyond the ends). This is the
    fit of scikit-learn's ``IsotonicRegression(out_of_bounds="clip")`` (same
    values at every point; the tests compare them), in numpy, so the worker can
    calibrate without importing scikit-learn on its event loop.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        raise ValueError("isotonic_fit needs at least one finite (x, y) pair")
    xs, inv = np.unique(x, return_inverse=True)
    w = np.bincount(inv).astype(np.float64)
    means = np.bincount(inv, weights=y) / w
    # pool adjacent violators: a stack of blocks (mean, weight, length)
    bm: list[float] = []
    bw: list[float] = []
    bn: list[int] = []
    for m, wt in zip(means.tolist(), w.tolist()):
        bm.append(m)
        bw.append(wt)
        bn.append(1)
        while len(bm) > 1 and bm[-2] > bm[-1]:
            m2, w2, n2 = bm.pop(), bw.pop(), bn.pop()
            tw = bw[-1] + w2
            bm[-1] = (bm[-1] * bw[-1] + m2 * w2) / tw
            bw[-1] = tw
            bn[-1] += n2
    ys = np.repeat(np.asarray(bm), np.asarray(bn))
    return xs, ys


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties averaged); NaN when one class is absent."""
    n1 = int(positive.sum())
    n0 = positive.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    _, inv, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inv]  # average 1-based rank of each tie group
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _ece(truth: np.ndarray, proba: np.ndarray, bins: int) -> float:
    """Expected calibration error over equal-count bins of ``proba`` (NannyML's definition)."""
    n = proba.size
    if n <= 2 * bins:
        bins = max(n // 2, 1)
    order = np.argsort(proba, kind="stable")
    p, t = proba[order], truth[order]
    width = n // bins
    edges = np.arange(0, n + 1, width)
    edges[-1] = n
    return float(sum((hi - lo) / n * abs(p[lo:hi].mean() - t[lo:hi].mean()) for lo, hi in pairwise(edges)))


def needs_calibration(
    proba: np.ndarray, truth: np.ndarray, *, splits: int = 10, test_size: float = 0.1, bins: int = 10, seed: int = 42
) -> bool:
    """Does isotonic calibration lower the expected calibration error out of sample? (NannyML's test.)

    ``splits`` random splits hold out ``test_size`` of the rows (stratified by
    ``truth``); the map is fitted on the rest and applied to the held-out rows;
    True when the pooled held-out ECE after calibration is below the ECE before.
    A single class, or an AUC above 0.999, needs none.
    """
    proba = np.asarray(proba, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any() or _auc(proba, truth) > 0.999:
        return False
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(truth), np.flatnonzero(~truth)
    before_p, after_p, held_t = [], [], []
    for _ in range(splits):
        test = np.concatenate([rng.permutation(g)[: max(1, int(round(test_size * g.size)))] for g in (pos, neg)])
        train = np.ones(proba.size, dtype=bool)
        train[test] = False
        xs, ys = isotonic_fit(proba[train], truth[train].astype(np.float64))
        before_p.append(proba[test])
        after_p.append(np.interp(proba[test], xs, ys))
        held_t.append(truth[test].astype(np.float64))
    t = np.concatenate(held_t)
    return _ece(t, np.concatenate(before_p), bins) > _ece(t, np.concatenate(after_p), bins)


@dataclass(frozen=True)
class Calibration:
    """The probability calibration CBPE applies: one isotonic map per calibrated class.

    Fitted by :func:`fit_calibration` on labelled reference rows. With two
    classes only the second class's probability is mapped (the first is its
    complement, as NannyML does for binary models); with more, each class
    one-vs-rest and the rows renormalised. A class whose probabilities
    :func:`needs_calibration` finds already calibrated keeps the identity map
    (``xs``/``ys`` None). Small (the maps' breakpoints), so it travels with every
    window to the detector process.
    """

    classes: tuple[str, ...]
    maps: tuple[tuple[np.ndarray, np.ndarray] | None, ...] = field(repr=False)  # per class (binary: classes[1])
    n: int  # labelled rows it was fitted on
    source: str  # where those rows came from (shown on the dashboard)
    accuracy: float = float("nan")  # realized accuracy of the labelled rows (their served class vs truth)
    # top-label map (see fit_calibration's ``served``): calibrated P(served class) -> P(served class is right)
    served: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def mapped(self) -> int:
        """How many classes got a non-identity map."""
        return sum(m is not None for m in self.maps)

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of rows over :attr:`classes` (rows sum to 1)."""
        proba = np.asarray(proba, dtype=np.float64)
        if proba.ndim != 2 or proba.shape[1] != len(self.classes):
            raise ValueError(f"proba must be (n, {len(self.classes)}) over the calibration's classes")
        if len(self.classes) == 2:
            m = self.maps[0]
            p1 = proba[:, 1] if m is None else np.interp(proba[:, 1], m[0], m[1])
            return np.column_stack([1.0 - p1, p1])
        out = np.column_stack(
            [proba[:, j] if m is None else np.interp(proba[:, j], m[0], m[1]) for j, m in enumerate(self.maps)]
        )
        s = out.sum(axis=1, keepdims=True)
        return np.where(s > 0, out / np.where(s > 0, s, 1.0), 1.0 / out.shape[1])

    def served_right(self, calibrated: np.ndarray, pred_idx: np.ndarray) -> np.ndarray:
        """P(the served class is right) per row, from rows already through :meth:`apply`: the served
        class's calibrated probability, mapped by :attr:`served` when there is one."""
        c = calibrated[np.arange(calibrated.shape[0]), pred_idx]
        return c if self.served is None else np.interp(c, self.served[0], self.served[1])


def _proba_rows(
    proba: np.ndarray, classes: Sequence[str], pred_label: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows usable by CBPE: (row mask, normalised probabilities, served class index) of the usable rows."""
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
    p = np.clip(proba[ok], 0.0, None)
    s = p.sum(axis=1, keepdims=True)
    p = np.where(s > 0, p / np.where(s > 0, s, 1.0), 1.0 / p.shape[1] if p.size else 0.0)
    return ok, p, pred_idx[ok]


def fit_calibration(
    proba: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    pred_label: np.ndarray | None = None,
    *,
    source: str = "reference",
    min_rows: int = 100,
    check: bool = False,
    served: bool = False,
) -> Calibration:
    """Fit CBPE's calibration on labelled reference rows (probabilities + true labels).

    As NannyML: an increasing isotonic map per class (one-vs-rest; binary: the
    second class only). ``check=True`` keeps a map only where
    :func:`needs_calibration` says it lowers the out-of-sample calibration error
    (NannyML's rule); by default every class is mapped: on scikit-learn's digits
    and breast-cancer sets (tests/detectors/test_performance.py) the ECE test on
    10 % folds of a few hundred rows kept miscalibrated classes unmapped and
    left the estimate 5–10 points off, where mapping every class was within 3. Rows without
    finite probabilities, a known served class or a label are left out; fewer
    than ``min_rows`` left raise :class:`ValueError` (the message says how many).

    ``served=True`` adds a top-label map (Gupta & Ramdas, "Top-label calibration", ICLR 2022): an
    increasing isotonic map from the served class's calibrated probability to whether the served class
    was right, fitted on the same rows, which the accuracy estimate then uses. Per-class maps cannot
    describe a model that has become worse than chance (after a concept change flips outcomes, P(class 1)
    falls as the score rises: the increasing map pools to the mean and the accuracy estimate stays at
    ≥ 0.5); the served-class map keeps the rows' realized accuracy (isotonic regression keeps the mean).
    """
    classes = tuple(classes)
    lab = normalize_labels(labels)
    ok, p, pred_idx = _proba_rows(proba, classes, pred_label)
    lab = lab[ok]
    has = not_none(lab)
    p, pred_idx, lab = p[has], pred_idx[has], lab[has]
    if p.shape[0] < min_rows:
        raise ValueError(f"calibration needs at least {min_rows} labelled rows with probabilities, has {p.shape[0]}")
    targets = range(1, 2) if len(classes) == 2 else range(len(classes))
    maps: list[tuple[np.ndarray, np.ndarray] | None] = []
    for j in targets:
        truth = lab == classes[j]
        if check and not needs_calibration(p[:, j], truth):
            maps.append(None)
        else:
            maps.append(isotonic_fit(p[:, j], truth.astype(np.float64)))
    right = np.asarray(classes, dtype=object)[pred_idx] == lab
    cal = Calibration(classes, tuple(maps), int(p.shape[0]), source, float(np.mean(right)))
    if not served:
        return cal
    c = cal.served_right(cal.apply(p), pred_idx)
    return replace(cal, served=isotonic_fit(c, right.astype(np.float64)))


def reference_calibration(reference: Reference | None, min_rows: int = 200) -> Calibration | str:
    """CBPE's calibration fitted on the reference rows' labels (cached per reference), or why there is none.

    Here, not in :mod:`detectors.advanced`, so the worker's event loop can ask for it at the first window
    without importing scipy and the multivariate engines (seconds on a busy host)."""
    rows = reference_frame(reference)
    if rows is None or reference is None:  # no rows without a reference
        return "no labelled reference rows"
    if rows.label is None:
        return "the reference rows carry no labels"
    if rows.pred_proba is None or len(rows.classes) < 2:
        return "the reference rows carry no class probabilities"
    key = ("calibration", min_rows)
    cache = reference._cache
    if key not in cache:
        try:
            cache[key] = fit_calibration(
                rows.pred_proba,
                rows.label,
                rows.classes,
                rows.pred_label,
                min_rows=min_rows,
                source=f"{reference.source}: labelled rows",
            )
        except ValueError as e:
            cache[key] = f"the reference's labels cannot calibrate it: {e}"
    return cache[key]


class CBPE:
    """Confidence-based performance estimation for classifiers with probabilities.

    ``CBPE(calibration)``: probabilities are calibrated first (see
    :class:`Calibration`); without one they are taken as they are (only for
    tests and models known to be calibrated: the worker writes "not calibrated"
    instead of an estimate).
    """

    def __init__(self, calibration: Calibration | None = None) -> None:
        self.calibration = calibration

    def fit_calibration(self, proba: np.ndarray, labels: np.ndarray, classes: Sequence[str], **kw) -> CBPE:
        """Fit the calibration on labelled reference rows (:func:`fit_calibration`)."""
        self.calibration = fit_calibration(proba, labels, classes, **kw)
        return self

    def calibrate(self, proba: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """Probabilities after the fitted calibration; unchanged when there is none."""
        proba = np.asarray(proba, dtype=np.float64)
        if self.calibration is None:
            return proba
        if tuple(classes) != self.calibration.classes:
            raise ValueError(
                f"classes {tuple(classes)} differ from those the calibration was fitted on {self.calibration.classes}"
            )
        return self.calibration.apply(proba)

    def estimate(
        self, proba: np.ndarray, classes: Sequence[str], pred_label: np.ndarray | None = None
    ) -> dict[str, float]:
        """Expected metrics of a window from its probabilities (rows with NaN left out).

        ``pred_label``: the served class per row (default: the most probable).
        Returns ``accuracy``, ``precision``, ``recall``, ``f1``, ``log_loss``,
        ``accuracy_std`` (the window's sampling error), ``accuracy_lower`` / ``accuracy_upper``
        (the estimate ± 3 standard deviations, clipped to [0, 1]: NannyML's sampling-error band,
        widened by the calibration's own sampling error, :meth:`calibration_std`, in quadrature)
        and ``n``; empty when no row has probabilities.
        """
        _, proba, pred_idx = _proba_rows(proba, classes, pred_label)
        n = proba.shape[0]
        if n == 0:
            return {}
        proba = self.calibrate(proba, classes)
        k = len(classes)
        onehot = np.zeros((n, k))
        onehot[np.arange(n), pred_idx] = 1.0
        expected = proba.T @ onehot  # E[C[true i, pred j]]
        out = _confusion_metrics(expected, 0.0, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(proba > 0, proba * np.log(np.clip(proba, _EPS, 1.0)), 0.0).sum(axis=1)
        out["log_loss"] = float(ent.mean())
        c = self._right(proba, pred_idx)
        out["accuracy"] = float(c.mean())  # the trace of `expected` / n, or the top-label map's
        std = float(np.sqrt(np.sum(c * (1 - c))) / n)
        out["accuracy_std"] = std
        band = math.hypot(std, self.calibration_std())
        out["accuracy_lower"] = max(0.0, out["accuracy"] - 3 * band)
        out["accuracy_upper"] = min(1.0, out["accuracy"] + 3 * band)
        out["n"] = float(n)
        return out

    def calibration_std(self) -> float:
        """The calibration's own sampling error of the accuracy level: ``sqrt(a (1 - a) / n)`` for a calibration
        fitted on ``n`` labelled rows of realized accuracy ``a`` (0 without one). The isotonic maps keep the mean
        of the rows they were fitted on, so an estimate inherits that mean's standard error on top of the
        window's own; a recalibration on 250 rows adds ~0.03, a reference of 20,000 rows ~0.003."""
        cal = self.calibration
        if cal is None or not cal.n or not math.isfinite(cal.accuracy):
            return 0.0
        return math.sqrt(cal.accuracy * (1.0 - cal.accuracy) / cal.n)

    def expected_correct(
        self, proba: np.ndarray, classes: Sequence[str], pred_label: np.ndarray | None = None
    ) -> tuple[float, int]:
        """``(sum of P(row is right), rows)``: additive, for the estimate of rows that get labels later."""
        _, p, pred_idx = _proba_rows(proba, classes, pred_label)
        if not p.shape[0]:
            return 0.0, 0
        p = self.calibrate(p, classes)
        return float(self._right(p, pred_idx).sum()), int(p.shape[0])

    def _right(self, calibrated: np.ndarray, pred_idx: np.ndarray) -> np.ndarray:
        """P(the served class is right) per calibrated row (:meth:`Calibration.served_right`)."""
        if self.calibration is None:
            return calibrated[np.arange(calibrated.shape[0]), pred_idx]
        return self.calibration.served_right(calibrated, pred_idx)


@dataclass
class CalibrationCollector:
    """The first ``size`` labelled rows with probabilities of a model: CBPE's labelled reference when the
    reference itself has no labels (``first_n``, ``rolling``); fed by the label join.

    :meth:`calibration` fits once at least ``min_rows`` are in (None before) and
    refits when they have grown by half, and when full. Bounded: ``size`` rows;
    a fit of 20,000 rows takes ~50 ms per class (numpy pool-adjacent-violators).

    **Does the calibration still hold?** CBPE assumes the probabilities keep the
    meaning they had on the labelled reference; concept drift (the same inputs,
    other outcomes) breaks that, and no estimate from probabilities can see it.
    Once full, every joined row after the reference is a test of it: with ``c``
    the calibrated probability that the served class is right and ``r`` (0/1)
    whether it was, ``u = r - c`` has mean 0 and variance ``c (1 - c)`` while the
    calibration holds. Over the joined batches since the reference, the suffix
    sums give ``z = sum u / sqrt(sum c (1 - c))`` for every recent start (at
    most ``max_batches``, each with at least ``min_rows`` rows); when one
    ``|z|`` exceeds ``drift_z`` (default 5: two-sided 6e-7 per start) the
    calibration no longer holds: the collector starts again from the batch
    that showed it (:attr:`recalibrations` counts it, :attr:`drift_note` says
    why), so CBPE is "not calibrated" until ``min_rows`` new labels are in and
    then calibrated on labels of the new concept — with the top-label map
    (:func:`fit_calibration`'s ``served``), since a concept change can make the
    model worse than chance, which per-class increasing maps cannot describe.
    Every recalibration is tested the same way on the labels after it.

    **Concept unstable: a back-off on label evidence.** A calibration *lasts* when it held on ``size``
    labels it was not fitted on (as many as a full calibration is fitted on); :attr:`streak` counts the
    recalibrations since the last one that lasted (the first calibration counts as lasting until it
    fails). The first recalibration of a streak is one concept change: its estimates are published as
    soon as it is fitted on ``min_rows`` labels, as before. Each further one says the previous
    calibration did not last either, so before the new one's estimates are published it must hold on
    :attr:`need` labels it was not fitted on: ``min_rows`` after the second, doubling with every further
    recalibration of the streak, at most ``size`` (:meth:`backoff`). Meanwhile :attr:`unstable` is True,
    :meth:`calibration` None and :attr:`unstable_reason` says "concept unstable" with the evidence (how
    many recalibrations over how many joined labels). A concept that keeps moving is thus silenced after a
    few recalibrations and stays silent until one calibration lasts, whereas a single change, or two
    close together, costs nothing or ``min_rows`` labels. Once the current calibration has held on
    ``size`` labels the streak ends and the next change is trusted at once again. Every fit also checks
    its own rows (:func:`chunk_dispersion`: accuracy moving between consecutive chunks of ``min_rows``
    beyond chance, z > ``drift_z``): such a calibration did not last even there, it counts as one more in
    the streak (at least the second) and :attr:`moving_rows` gives the evidence.

    ``drift_z=None`` keeps the first calibration for good (NannyML's behaviour).

    ``rolling=True`` keeps the *most recent* ``size`` labelled rows instead, and
    refits once a tenth of them (at least ``min_rows``) are new: the calibration
    always follows the labels, with no test (measured against the default in
    docs/detection-science.md: it trails a step change by as long, and is noisier
    where the concept holds).
    """

    size: int = 1000
    min_rows: int = 200
    classes: tuple[str, ...] = ()
    n: int = 0
    drift_z: float | None = 5.0
    max_batches: int = 256
    rolling: bool = False
    _new: int = 0  # rolling: rows added since the last fit
    _proba: list[np.ndarray] = field(default_factory=list)
    _label: list[np.ndarray] = field(default_factory=list)
    _pred: list[np.ndarray] = field(default_factory=list)
    _fitted: Calibration | None = None
    _fitted_n: int = 0
    _tests: list[tuple[float, float, int]] = field(default_factory=list)  # per batch: (sum u, sum var, rows)
    error: str | None = None  # why the last fit failed
    recalibrations: int = 0
    drift_note: str | None = None  # why the last recalibration started
    last_z: float = float("nan")  # the largest |z| of the last test (signed)
    unstable: bool = False  # the current calibration has not yet held on `need` new labels: no estimate
    streak: int = 0  # recalibrations since the last calibration that held on `size` labels it was not fitted on
    need: int = 0  # labels the current calibration must hold on before it is published (0: at once)
    _held: int = 0  # rows the last calibration that stopped holding had held on before (its test's batches)
    _tested: int = 0  # rows the current calibration has held on (tested, not fitted on) so far
    _seen: int = 0  # usable joined rows added so far (for the evidence of a streak)
    _streak_from: int = 0  # `_seen` when the streak's first recalibration started
    moving_rows: str | None = None  # the current calibration's own rows failed chunk_dispersion: its z and chunks

    @property
    def full(self) -> bool:
        return self.n >= self.size

    def add(
        self, proba: np.ndarray | None, classes: Sequence[str], labels: np.ndarray, pred_label: np.ndarray | None
    ) -> None:
        """Add joined rows: the first ``size`` calibrate; later ones test the calibration (see the class)."""
        if proba is None or len(classes) < 2:
            return
        if not self.classes:
            self.classes = tuple(classes)
        if tuple(classes) != self.classes:
            return
        self._seen += int(np.asarray(labels).shape[0])
        if self.rolling:
            self._add_recent(proba, labels, pred_label)
            return
        if self.drift_z is not None and (self.full or self.recalibrations) and self.n >= self.min_rows:
            was_full = self.full
            if not self._holds(proba, labels, pred_label):
                if self._tested >= self.size:
                    self.streak = 0  # the calibration lasted: the next change is trusted at once
                if self._tested >= self.need:
                    self.unstable = False
                if was_full:
                    return
        elif self.full:
            return
        got = self._rows(proba, labels, pred_label, self.size - self.n)
        if got is None:
            return
        for lst, a in zip((self._proba, self._label, self._pred), got):
            lst.append(a)
        self.n += int(got[0].shape[0])

    def _rows(
        self, proba: np.ndarray, labels: np.ndarray, pred_label: np.ndarray | None, limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The usable rows (finite probabilities and a label), at most ``limit`` of the first: (proba, label,
        served class)."""
        p = np.asarray(proba, dtype=np.float64)
        lab = normalize_labels(labels)
        ok = np.isfinite(p).all(axis=1) & not_none(lab)
        take = np.flatnonzero(ok)[:limit]
        if not take.size:
            return None
        pred = (
            normalize_labels(pred_label)[take]
            if pred_label is not None
            else np.asarray(self.classes, dtype=object)[np.argmax(p[take], axis=1)]
        )
        return p[take], lab[take], pred

    def _add_recent(self, proba: np.ndarray, labels: np.ndarray, pred_label: np.ndarray | None) -> None:
        """Rolling: append the rows and forget the oldest beyond ``size``."""
        got = self._rows(proba, labels, pred_label, len(labels))
        if got is None:
            return
        for lst, a in zip((self._proba, self._label, self._pred), got):
            lst.append(a[-self.size :])
        k = min(got[0].shape[0], self.size)
        self.n += k
        self._new += k
        while self.n - self._label[0].shape[0] >= self.size:
            self.n -= self._label[0].shape[0]
            del self._proba[0], self._label[0], self._pred[0]
        if self.n > self.size:  # cut the oldest batch
            cut = self.n - self.size
            self._proba[0], self._label[0], self._pred[0] = (
                a[cut:] for a in (self._proba[0], self._label[0], self._pred[0])
            )
            self.n = self.size

    def _holds(self, proba: np.ndarray, labels: np.ndarray, pred_label: np.ndarray | None) -> bool:
        """Test the full calibration on joined rows after it; True when it stopped holding (the
        collector was reset and the caller collects these rows as the first of the new calibration)."""
        cal = self._fit()  # also while unstable: a recalibration that holds ends it
        if cal is None or self.drift_z is None:  # drift_z=None: the calibration is never tested
            return False
        stat = calibration_residuals(cal, proba, labels, pred_label)
        if stat is None:
            return False
        self._tests.append(stat)
        del self._tests[: -self.max_batches]
        self._tested += stat[2]
        z, n = suffix_z(
            np.array([t[0] for t in self._tests]),
            np.array([t[1] for t in self._tests]),
            np.array([t[2] for t in self._tests]),
            self.min_rows,
        )
        if not z.size:
            return False
        at = int(np.argmax(np.abs(z)))
        self.last_z = float(z[at])
        if abs(self.last_z) <= self.drift_z:
            return False
        rows = int(n[at])
        self.drift_note = (
            f"the calibration of {cal.source} stopped holding: on the last {rows} joined labels "
            f"realized accuracy differs from its estimate by z = {self.last_z:.1f} (limit "
            f"{self.drift_z:g}); recalibrating on the labels since"
        )
        self.recalibrations += 1
        self._held = self._tested - stat[2]
        if self._held >= self.size or not self.streak:
            self.streak, self._streak_from = 1, self._seen - stat[2]
        else:
            self.streak += 1
        self.need = self.backoff(self.streak, self.min_rows, self.size)
        self.unstable = self.need > 0
        self._tested, self.moving_rows = 0, None
        self.n, self._fitted, self._fitted_n, self.error = 0, None, 0, None
        self._proba, self._label, self._pred, self._tests = [], [], [], []
        return True

    @staticmethod
    def backoff(streak: int, min_rows: int, size: int) -> int:
        """Labels the ``streak``-th recalibration since the last lasting calibration must hold on before its
        estimates are published: 0 for the first (one concept change), then ``min_rows``, doubling, at most
        ``size``.

        >>> [CalibrationCollector.backoff(k, 200, 1000) for k in range(1, 7)]
        [0, 200, 400, 800, 1000, 1000]
        """
        return 0 if streak <= 1 else min(size, min_rows << min(streak - 2, 40))

    @property
    def unstable_reason(self) -> str | None:
        """Why no estimate is published while :attr:`unstable` (the label evidence), else None."""
        if not self.unstable:
            return None
        until = (
            f"no estimate until the current calibration holds on {self.need:,} labels it was not fitted on "
            f"({self._tested:,} so far)"
        )
        if self.moving_rows:
            return (
                f"{CONCEPT_UNSTABLE}: on the {self._fitted_n:,} joined labels the calibration was fitted on, accuracy "
                f"moves between consecutive chunks far beyond chance (dispersion z = {self.moving_rows}, limit "
                f"{self.drift_z:g}); {until}"
            )
        return (
            f"{CONCEPT_UNSTABLE}: {self.streak} calibrations in a row did not last over the last "
            f"{self._seen - self._streak_from:,} joined labels ({self.recalibrations} recalibrations in all; "
            f"none held on {self.size:,} new labels, the last on {self._held:,}); {until}"
        )

    def calibration(self) -> Calibration | None:
        """The calibration of the rows so far (refitted when they grew by half, or filled up); None before
        ``min_rows`` and while :attr:`unstable`. After a recalibration it carries the top-label map
        (:func:`fit_calibration`'s ``served``): the concept changed, the per-class maps alone may not hold."""
        cal = self._fit()  # a fit may find the concept moving within its own rows (:attr:`moving_rows`)
        return None if self.unstable else cal

    def _fit(self) -> Calibration | None:
        if self.n < self.min_rows:
            return None
        if self.rolling:
            if self._fitted is not None and self._new < max(self.min_rows, self.size // 10):
                return self._fitted
            self._new = 0
        elif self._fitted is not None and (
            self._fitted_n == self.n or (not self.full and self.n < 1.5 * self._fitted_n)
        ):
            return self._fitted
        proba, lab, pred = (np.concatenate(x) for x in (self._proba, self._label, self._pred))
        self._proba, self._label, self._pred = [proba], [lab], [pred]
        if self.rolling:
            what = f"last {self.n} joined labels"
        elif not self.recalibrations:
            what = f"first {self.n} joined labels"
        else:
            what = f"{self.n} joined labels after recalibration {self.recalibrations}"
        try:
            self._fitted = fit_calibration(
                proba, lab, self.classes, pred, min_rows=self.min_rows, source=what, served=self.recalibrations > 0
            )
            self.error = None
        except ValueError as e:
            self.error = str(e)
            self._fitted = None
        self._fitted_n = self.n
        if self._fitted is not None and not self.rolling and self.drift_z is not None and not self.moving_rows:
            stat = chunk_dispersion(self._fitted, proba, lab, pred, self.min_rows)
            if stat is not None and stat[0] > self.drift_z:
                # the concept moves within the rows this calibration was fitted on: it did not last even there
                self.moving_rows = f"{stat[0]:.1f} over {stat[1]} chunks of {self.min_rows}"
                self.streak = max(self.streak + 1, 2)
                self.need = self.backoff(self.streak, self.min_rows, self.size)
                self.unstable = True
        return self._fitted

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(scalars, arrays)``: the rows collected so far (probabilities; labels and predictions as object
        arrays) and the test of the calibration (its batches' residual sums, recalibrations, why), so the
        label join's checkpoint carries CBPE's calibration to a restarted or new worker; the fit is not
        stored (:meth:`calibration` refits the same rows, deterministically)."""
        scalars = {
            "size": self.size,
            "min_rows": self.min_rows,
            "classes": list(self.classes),
            "n": self.n,
            "drift_z": self.drift_z,
            "rolling": self.rolling,
            "new": self._new,
            "recalibrations": self.recalibrations,
            "drift_note": self.drift_note,
            "unstable": self.unstable,
            "held": self._held,
            "streak": self.streak,
            "need": self.need,
            "tested": self._tested,
            "seen": self._seen,
            "streak_from": self._streak_from,
            "moving_rows": self.moving_rows,
        }
        arrays = {"tests": np.asarray(self._tests, dtype=np.float64).reshape(-1, 3)} if self._tests else {}
        if not self.n:
            return scalars, arrays
        return scalars, {
            **arrays,
            "proba": np.concatenate(self._proba),
            "label": np.concatenate(self._label),
            "pred": np.concatenate(self._pred),
        }

    @classmethod
    def from_state(cls, scalars: dict, arrays: dict[str, np.ndarray]) -> CalibrationCollector:
        """The collector :meth:`state` described."""
        col = cls(int(scalars["size"]), int(scalars["min_rows"]), tuple(str(c) for c in scalars["classes"]))
        if "drift_z" in scalars:  # checkpoints written before the calibration test was kept lack these
            col.drift_z = None if scalars["drift_z"] is None else float(scalars["drift_z"])
            col.recalibrations = int(scalars["recalibrations"])
            col.drift_note = scalars["drift_note"]
            col.unstable = bool(scalars["unstable"])
            col._held = int(scalars.get("held", 0))
            col.rolling, col._new = bool(scalars.get("rolling", False)), int(scalars.get("new", 0))
        if "tests" in arrays:
            col._tests = [(float(u), float(v), int(n)) for u, v, n in np.asarray(arrays["tests"]).tolist()]
        if "drift_z" in scalars:  # checkpoints from before the back-off: the old rule's streak and need
            old = (2, col.min_rows) if col.unstable else (min(col.recalibrations, 1), 0)
            col.streak, col.need = int(scalars.get("streak", old[0])), int(scalars.get("need", old[1]))
            col._tested = int(scalars.get("tested", sum(t[2] for t in col._tests)))
            col._seen, col._streak_from = int(scalars.get("seen", 0)), int(scalars.get("streak_from", 0))
            col.moving_rows = scalars.get("moving_rows")
        if int(scalars["n"]):
            col._proba = [np.asarray(arrays["proba"], dtype=np.float64)]
            col._label = [np.asarray(arrays["label"], dtype=object)]
            col._pred = [np.asarray(arrays["pred"], dtype=object)]
            col.n = int(scalars["n"])
        return col


def calibration_residuals(
    cal: Calibration, proba: np.ndarray, labels: np.ndarray, pred_label: np.ndarray | None
) -> tuple[float, float, int] | None:
    """``(sum(r - c), sum(c (1 - c)), rows)`` of labelled rows under a calibration: ``c`` the calibrated
    probability that the served class is right, ``r`` 1 when it was (rows without finite probabilities,
    a known served class or a label left out; None when none is left). ``c`` is kept within
    ``[0.5 / cal.n, 1 - 0.5 / cal.n]``: a calibration of ``n`` rows cannot know a probability closer to
    0 or 1, and a row it calls certain must not make the variance vanish."""
    rc = _served_outcomes(cal, proba, labels, pred_label)
    if rc is None:
        return None
    r, c = rc
    return float(np.sum(r - c)), float(np.sum(c * (1 - c))), int(c.shape[0])


def _served_outcomes(
    cal: Calibration, proba: np.ndarray, labels: np.ndarray, pred_label: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(r, c)`` per usable labelled row, in order (see :func:`calibration_residuals`); None when none."""
    ok, p, pred_idx = _proba_rows(proba, cal.classes, pred_label)
    lab = normalize_labels(labels)[ok]
    has = not_none(lab)
    if not has.any():
        return None
    p, pred_idx, lab = cal.apply(p[has]), pred_idx[has], lab[has]
    eps = 0.5 / max(cal.n, 1)
    c = np.clip(cal.served_right(p, pred_idx), eps, 1 - eps)
    r = (np.asarray(cal.classes, dtype=object)[pred_idx] == lab).astype(np.float64)
    return r, c


def chunk_dispersion(
    cal: Calibration, proba: np.ndarray, labels: np.ndarray, pred_label: np.ndarray | None, chunk: int
) -> tuple[float, int] | None:
    """Does a calibration hold within the rows it was fitted on? ``(z, chunks)``, or None below 2 chunks.

    The rows (in arrival order) are cut into consecutive chunks of ``chunk`` rows (the last one takes the
    remainder); per chunk ``z_k = sum(r - c) / sqrt(sum c (1 - c))`` as in :func:`calibration_residuals`.
    If the concept is one across the rows, the ``z_k`` are standard normal around the fit's mean, so
    ``D = sum z_k²`` is chi-square with ``chunks - 1`` degrees of freedom (the fit takes one: isotonic
    regression keeps the mean); ``z`` is ``D``'s Wilson-Hilferty normal score, large when accuracy moves
    between chunks more than sampling allows (the concept moves within the calibration's own rows).

    >>> p = np.array([[0.2, 0.8]] * 800)
    >>> moving = np.array((["1"] * 200 + ["0"] * 200) * 2)  # right, wrong, right, wrong: 50 % overall
    >>> z, k = chunk_dispersion(fit_calibration(p, moving, ("0", "1")), p, moving, None, 200)
    >>> round(z, 1), k
    (20.2, 4)
    """
    rc = _served_outcomes(cal, proba, labels, pred_label)
    k = 0 if rc is None else rc[1].shape[0] // chunk
    if rc is None or k < 2:
        return None
    r, c = rc
    ends = np.minimum(np.arange(1, k + 1) * chunk, c.shape[0])
    ends[-1] = c.shape[0]
    starts = np.concatenate([[0], ends[:-1]])
    u = np.add.reduceat(r - c, starts)
    v = np.add.reduceat(c * (1 - c), starts)
    d = float(np.sum(u * u / np.maximum(v, _EPS)))
    dof = k - 1
    a = 2.0 / (9.0 * dof)
    return ((d / dof) ** (1.0 / 3.0) - (1.0 - a)) / math.sqrt(a), k


def suffix_z(u: np.ndarray, v: np.ndarray, rows: np.ndarray, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(z, rows)`` of every suffix of batches (``z = sum u / sqrt(sum v)`` from batch ``s`` to the last)
    holding at least ``min_rows`` rows and a variance sum of at least 10 (the normal approximation's range).

    >>> z, n = suffix_z(np.array([0.0, 6.0]), np.array([20.0, 20.0]), np.array([100, 100]), 100)
    >>> np.round(z, 3).tolist(), n.tolist()
    ([0.949, 1.342], [200, 100])
    """
    su = np.cumsum(u[::-1])[::-1]
    sv = np.cumsum(v[::-1])[::-1]
    sn = np.cumsum(rows[::-1])[::-1]
    keep = (sn >= min_rows) & (sv >= 10.0)
    return su[keep] / np.sqrt(sv[keep]), sn[keep]


def performance_records(
    metrics: dict[str, float],
    tags: dict[str, str],
    time_ns: int,
    *,
    estimated: bool,
    n: int | None = None,
    extra: Mapping[str, FieldValue | None] | None = None,
) -> list[Record]:
    """One ``dw_performance`` record per metric (fields in the module docstring).

    ``extra`` fields (``n_labels``, ``label_coverage``, delay quantiles) are
    added to every record. For CBPE, ``accuracy_std`` / ``accuracy_lower`` /
    ``accuracy_upper`` become the ``std`` / ``lower`` / ``upper`` fields of the
    accuracy record; for realized metrics, ``cbpe_accuracy`` (CBPE's estimate of
    the same labelled rows) becomes ``cbpe_value`` and ``estimation_error``
    (``|cbpe_value - value|``) of the accuracy record.
    """
    detector = "cbpe" if estimated else "realized"
    skip = {"accuracy_std", "accuracy_lower", "accuracy_upper", "n", "cbpe_accuracy"}
    rows = n if n is not None else int(metrics.get("n", 0))
    out = []
    for name, value in metrics.items():
        if name in skip or value is None or not np.isfinite(value):
            continue
        fields: dict[str, float | int | str | bool] = {"value": float(value), "estimated": estimated, "n": int(rows)}
        if extra:
            fields.update(
                {k: v for k, v in extra.items() if v is not None and (isinstance(v, (str, bool)) or np.isfinite(v))}
            )
        if name == "accuracy":
            for src, dst in (
                ("accuracy_std", "std"),
                ("accuracy_lower", "lower"),
                ("accuracy_upper", "upper"),
                ("cbpe_accuracy", "cbpe_value"),
            ):
                if src in metrics and np.isfinite(metrics[src]):
                    fields[dst] = float(metrics[src])
            if "cbpe_value" in fields:
                fields["estimation_error"] = abs(float(fields["cbpe_value"]) - float(value))
        out.append(Record(PERFORMANCE, {**tags, T_METRIC: name, T_DETECTOR: detector}, fields, time_ns))
    return out


def not_calibrated_record(
    tags: dict[str, str], time_ns: int, reason: str, n: int, extra: Mapping[str, FieldValue] | None = None
) -> Record:
    """The CBPE point of a window it cannot estimate yet: ``metric=accuracy``, ``detector=cbpe``,
    ``calibrated=False``, ``status="not calibrated"``, ``reason`` and ``n`` — and no ``value``, so
    no chart or alert can take an uncalibrated guess for an estimate."""
    fields: dict[str, float | int | str | bool] = {
        "calibrated": False,
        "status": "not calibrated",
        "reason": reason,
        "n": int(n),
        **(extra or {}),
    }
    return Record(PERFORMANCE, {**tags, T_METRIC: "accuracy", T_DETECTOR: "cbpe"}, fields, time_ns)


# -- the estimate judged against the reference's chunks (NannyML's alert rule) ----------------------

CHUNK_METRICS = ("accuracy", "precision", "recall", "f1")
"""Metrics whose estimate is judged against its band over the reference's chunks."""


def chunk_estimates(
    cbpe: CBPE, proba: np.ndarray, classes: Sequence[str], pred_label: np.ndarray | None, slices: Sequence[slice]
) -> dict[str, np.ndarray]:
    """CBPE's estimate of each of :data:`CHUNK_METRICS` on each chunk (``slices`` of rows in time order).

    The chunks' spread is how much the *estimate* moves on stable data of the window's size,
    so a window's estimate outside ``mean ± k·sd`` is a calibrated alert (NannyML's rule).
    """
    out = {m: np.full(len(slices), np.nan) for m in CHUNK_METRICS}
    for j, s in enumerate(slices):
        est = cbpe.estimate(proba[s], classes, None if pred_label is None else pred_label[s])
        for m in CHUNK_METRICS:
            if m in est:
                out[m][j] = est[m]
    return out
