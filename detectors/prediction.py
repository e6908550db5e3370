"""Prediction drift: has the model's *output* moved?

A shift in what the model predicts is often the first visible symptom of
input drift or of a broken upstream, and it needs no labels. The outputs of a
window are compared with those of the reference, as pseudo-features run
through the univariate engine (:func:`detectors.univariate.univariate_drift`,
so the same tests, the same two engines and the same many-test correction):

* ``__label__`` — the predicted class (categorical: chi-square on class counts);
* ``proba:<class>`` — each class probability (numeric: KS or CvM per
  ``DriftSpec.numeric_test``). With two classes only the second class's
  column is tested (the first is its complement); with many classes the
  ``max_classes`` with the highest mean reference probability;
* ``__value__`` — the regression output or score (numeric).

Records (measurement ``dw_prediction``; see :func:`prediction_records`):

* one per subject — tags ``feature`` (subject) and ``detector`` (test); fields
  ``statistic``, ``p_value``, ``threshold`` (corrected), ``drift`` (0/1), ``n_ref``,
  ``n_cur``, ``psi``, ``js``, ``rank``, ``engine``, how the verdict was made
  (``threshold_method``, ``judged``, ``band_lower``/``band_upper``, ``effect``,
  ``effect_floor``; :mod:`detectors.thresholds` — the reference's outputs are kept in
  time order, so the chunk band applies to prediction drift too), and for numeric subjects
  ``wasserstein``, ``mean_ref``, ``mean_window``;
* one per predicted class — tags ``feature="__label__"``, ``detector="share"``,
  ``segment=<class>``; fields ``ref_share``, ``window_share``, ``window_count``;
* one summary — tags ``feature="__all__"``, ``detector="summary"``; fields
  ``drift`` (0/1), ``n_drifted``, ``n_tested``, ``p_val``, ``threshold``,
  ``correction``, ``engine``, ``threshold_method``.

>>> import numpy as np
>>> from detectors.frame import Codes, Frame
>>> from detectors.spec import DriftSpec
>>> rng = np.random.default_rng(0)
>>> def frame(p):
...     n = 600
...     lab = np.where(rng.random(n) < p, "yes", "no").astype(object)
...     return Frame.from_columns(event_id=np.arange(n).astype(str), event_time=np.zeros(n),
...                               pred_label=lab)
>>> ref = PredictionReference.from_frame(frame(0.3))
>>> prediction_drift(frame(0.5), ref, DriftSpec()).drift
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.frame import Codes, Frame
from detectors.records import (
    PREDICTION,
    T_DETECTOR,
    T_FEATURE,
    T_SEGMENT,
    Record,
)
from detectors.reference import Reference, as_str, attach_reference_frame, not_missing, safe_label
from detectors.spec import DriftSpec, FeatureSpec
from detectors.univariate import DriftResult, univariate_drift

LABEL = "__label__"
VALUE = "__value__"
PROBA_PREFIX = "proba:"
ALL = "__all__"

__all__ = [
    "ALL",
    "LABEL",
    "PROBA_PREFIX",
    "VALUE",
    "PredictionReference",
    "prediction_drift",
    "prediction_frame",
    "prediction_records",
]


def _proba_columns(
    classes: tuple[str, ...], proba: np.ndarray | None, max_classes: int, keep: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    if proba is None or not classes:
        return {}
    proba = np.asarray(proba, dtype=np.float64)
    if keep is None:
        if len(classes) == 2:
            keep = (classes[1],)
        else:
            with np.errstate(invalid="ignore"):
                means = np.nanmean(proba, axis=0) if proba.shape[0] else np.zeros(len(classes))
            order = np.argsort(-np.nan_to_num(means, nan=-1.0), kind="stable")[:max_classes]
            keep = tuple(classes[i] for i in sorted(order))
    idx = {c: i for i, c in enumerate(classes)}
    return {
        f"{PROBA_PREFIX}{safe_label(c)}": proba[:, idx[c]] if c in idx else np.full(proba.shape[0], np.nan)
        for c in keep
    }


def prediction_frame(
    frame: Frame, proba_classes: tuple[str, ...] | None = None, max_classes: int = 20
) -> tuple[Frame, tuple[str, ...]]:
    """A frame whose features are the model outputs of ``frame`` (see module docstring).

    Returns the frame and the classes whose probabilities it holds (pass the
    reference's to the windows so both have the same columns).
    """
    n = len(frame)
    categorical: dict[str, np.ndarray] = {}
    numeric: dict[str, np.ndarray] = {}
    codes: dict[int, Codes] = {}
    if frame.pred_label is not None:
        lab = np.asarray(frame.pred_label, dtype=object)
        coded = frame.codes_of(lab)
        if coded is None:
            ok = not_missing(lab)
            out = np.full(n, None, dtype=object)
            out[ok] = as_str(lab[ok]).astype(object)
        else:  # the same text, made once per distinct class
            ok = not_missing(coded.values)
            table = np.full(coded.values.shape[0], None, dtype=object)
            table[ok] = as_str(coded.values[ok]).astype(object)
            out = table[coded.codes]
            codes[id(out)] = Codes(out, coded.codes, table)
        categorical[LABEL] = out
    cols = _proba_columns(frame.classes, frame.pred_proba, max_classes, proba_classes)
    numeric.update(cols)
    used = (
        tuple(proba_classes)
        if proba_classes is not None
        else tuple(c for c in frame.classes if f"{PROBA_PREFIX}{safe_label(c)}" in cols)
    )
    if frame.pred_value is not None:
        numeric[VALUE] = np.asarray(frame.pred_value, dtype=np.float64)
    pf = Frame.from_columns(
        event_id=frame.event_id, event_time=frame.event_time, numeric=numeric, categorical=categorical
    )
    pf.codes = codes
    return pf, used


@dataclass(eq=False)
class PredictionReference:
    """The reference's outputs, precomputed once per reference (a :class:`Reference` of subjects)."""

    reference: Reference
    proba_classes: tuple[str, ...]
    mean_ref: dict[str, float]

    @classmethod
    def from_frame(cls, frame: Frame, *, bins: int = 10, top_k: int = 50, max_classes: int = 20) -> PredictionReference:
        """Build from the reference events' predictions (raises if they hold none)."""
        pf, used = prediction_frame(frame, None, max_classes)
        if not pf.numeric and not pf.categorical:
            raise ValueError("the reference events carry no prediction (label, probabilities or value)")
        specs = [FeatureSpec(name=k, kind="numeric") for k in pf.numeric] + [
            FeatureSpec(name=k, kind="categorical") for k in pf.categorical
        ]
        ref = Reference.from_frame(pf, specs, bins=bins, top_k=top_k, source="predictions")
        attach_reference_frame(ref, pf)  # rows in time order: the chunk thresholds (detectors.thresholds)
        means = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in pf.numeric.items()}
        return cls(ref, used, means)


def prediction_drift(
    window: Frame, reference: PredictionReference, spec: DriftSpec, *, min_samples: int = 10
) -> DriftResult:
    """Test the window's outputs against the reference's (engine, test, correction from ``spec``)."""
    pf, _ = prediction_frame(window, reference.proba_classes)
    present = [f.name for f in reference.reference.features if f.name in pf.numeric or f.name in pf.categorical]
    return univariate_drift(pf, reference.reference, spec, present, min_samples=min_samples)


def prediction_records(
    result: DriftResult,
    window: Frame,
    reference: PredictionReference,
    tags: dict[str, str],
    time_ns: int,
    max_share_classes: int = 50,
    *,
    window_means: dict[str, float] | None = None,
    label_counts: dict[str, int] | None = None,
) -> list[Record]:
    """``dw_prediction`` records of one window (fields documented in the module docstring).

    ``window_means``/``label_counts``: the window's output means and predicted-class counts when
    ``window`` does not hold all its rows (a window summary: :func:`detectors.summaries.output_totals`).
    """
    out: list[Record] = []
    pf, _ = prediction_frame(window, reference.proba_classes)
    for f in result.features:
        fields: dict[str, float | int | str | bool] = {
            "statistic": f.statistic,
            "p_value": f.p_value,
            "threshold": f.threshold,
            "drift": int(f.drift),
            "n_ref": f.n_ref,
            "n_cur": f.n_cur,
            "psi": f.psi,
            "js": f.js,
            "rank": f.rank,
            "engine": result.engine,
            **(f.verdict.fields() if f.verdict else {}),
        }
        if f.kind == "numeric":
            col = pf.numeric.get(f.feature)
            if f.wasserstein is not None:
                fields["wasserstein"] = f.wasserstein
            fields["mean_ref"] = reference.mean_ref.get(f.feature, float("nan"))
            if window_means is not None:
                fields["mean_window"] = window_means.get(f.feature, float("nan"))
            elif col is not None and np.isfinite(col).any():
                fields["mean_window"] = float(np.nanmean(col))
        fields = {k: v for k, v in fields.items() if not (isinstance(v, float) and not np.isfinite(v))}
        out.append(Record(PREDICTION, {**tags, T_FEATURE: f.feature, T_DETECTOR: f.test}, fields, time_ns))
    lab_ref = reference.reference.categorical.get(LABEL)
    if lab_ref is not None and (LABEL in pf.categorical or label_counts is not None):
        if label_counts is not None:
            win_counts = dict(label_counts)
        else:
            _, classes, inv = pf.text_groups(pf.categorical[LABEL]).unique()
            counts = np.bincount(inv, minlength=classes.shape[0])
            win_counts = dict(zip(classes.tolist(), counts.tolist()))
        n_win = max(int(sum(win_counts.values())), 1)
        n_ref = max(lab_ref.n, 1)
        ref_counts = dict(zip(lab_ref.categories.tolist(), lab_ref.counts.tolist()))
        names = sorted(set(ref_counts) | set(win_counts), key=lambda c: -(ref_counts.get(c, 0) + win_counts.get(c, 0)))[
            :max_share_classes
        ]
        for c in names:
            out.append(
                Record(
                    PREDICTION,
                    {**tags, T_FEATURE: LABEL, T_DETECTOR: "share", T_SEGMENT: safe_label(c)},
                    {
                        "ref_share": ref_counts.get(c, 0) / n_ref,
                        "window_share": win_counts.get(c, 0) / n_win,
                        "window_count": int(win_counts.get(c, 0)),
                    },
                    time_ns,
                )
            )
    summary: dict[str, float | int | str | bool] = {
        "drift": int(result.drift),
        "n_drifted": result.n_drifted,
        "n_tested": result.n_features,
        "p_val": result.p_val,
        "correction": result.correction,
        "engine": result.engine,
        "threshold_method": result.threshold_method,
    }
    if np.isfinite(result.threshold):
        summary["threshold"] = result.threshold
    out.append(Record(PREDICTION, {**tags, T_FEATURE: ALL, T_DETECTOR: "summary"}, summary, time_ns))
    return out
