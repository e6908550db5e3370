"""Feature impact: how much each input matters to the model's output.

Drift in a feature the model ignores is noise; drift in one it leans on is an
incident. Impact is estimated once per reference, from the reference events
alone (the monitor has the inputs and the served outputs, not the model):

* ``mi`` (default) — mutual information between each feature and the
  predicted output (class label: ``sklearn.feature_selection.mutual_info_classif``;
  regression value or score: ``mutual_info_regression``; k-nearest-neighbour
  estimators, categorical features as discrete codes). Cheap, model-free,
  sees non-linear dependence, but not interactions.
* ``permutation`` — a surrogate model (scikit-learn's histogram gradient
  boosting) is fitted to reproduce the served output from the inputs on half
  the reference; on the other half, each feature's importance is the drop in
  the surrogate's agreement with the served output (accuracy, or R²) when that
  feature's column is shuffled (``sklearn.inspection.permutation_importance``).
  Sees interactions; ``fidelity`` (the surrogate's held-out score) says how
  far to trust it.

Missing numeric values are imputed with the median for ``mi`` (the gradient
boosting surrogate handles them natively); categorical values become integer
codes (missing = its own code).

Records (measurement ``dw_impact``): tags ``feature`` and ``detector`` (the
method); fields ``importance`` (method units: nats for ``mi``, score drop for
``permutation``), ``normalized`` (share of the sum of positive importances),
``rank`` (1 = most important), ``n`` (rows used) and, for ``permutation``,
``fidelity``. :func:`rank_drift_by_impact` combines them with drift results so
the dashboard can list features that are both drifting and important.

>>> import numpy as np
>>> from detectors.frame import Frame
>>> from detectors.spec import FeatureSpec
>>> rng = np.random.default_rng(0)
>>> x, y = rng.normal(size=800), rng.normal(size=800)
>>> f = Frame.from_columns(event_id=np.arange(800).astype(str), event_time=np.zeros(800),
...     numeric={"x": x, "y": y}, pred_value=3 * x + 0.1 * rng.normal(size=800))
>>> [i.feature for i in feature_impact(f, [FeatureSpec(name="x", kind="numeric"),
...                                         FeatureSpec(name="y", kind="numeric")])]
['x', 'y']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from detectors.frame import Frame
from detectors.records import IMPACT, T_DETECTOR, T_FEATURE, Record
from detectors.spec import FeatureSpec
from detectors.values import not_none

Method = Literal["mi", "permutation"]

__all__ = ["FeatureImpact", "declared_impact", "feature_impact", "impact_records", "rank_drift_by_impact", "target_of"]


@dataclass(frozen=True, slots=True)
class FeatureImpact:
    """Impact of one feature on the model's output (see module docstring)."""

    feature: str
    importance: float
    normalized: float
    rank: int
    method: str
    n: int
    fidelity: float | None = None


def target_of(frame: Frame) -> tuple[np.ndarray, bool]:
    """The served output to explain: (values, is_discrete). Label, else argmax of probabilities, else value."""
    if frame.pred_label is not None and not_none(frame.pred_label).any():
        lab = np.asarray(frame.pred_label, dtype=object)
        return np.array(["" if v is None else str(v) for v in lab], dtype=object), True
    if frame.pred_proba is not None and frame.classes:
        p = np.asarray(frame.pred_proba, dtype=np.float64)
        ok = np.isfinite(p).all(axis=1)
        out = np.full(p.shape[0], "", dtype=object)
        out[ok] = np.asarray(frame.classes, dtype=object)[np.argmax(p[ok], axis=1)]
        return out, True
    if frame.pred_value is not None:
        return np.asarray(frame.pred_value, dtype=np.float64), False
    raise ValueError("the reference events carry no prediction to explain")


def _matrix(frame: Frame, features: Sequence[FeatureSpec], impute: bool) -> tuple[np.ndarray, np.ndarray]:
    n = len(frame)
    cols, discrete = [], []
    for f in features:
        if f.kind == "numeric":
            c = np.asarray(frame.numeric.get(f.name, np.full(n, np.nan)), dtype=np.float64)
            if impute:
                ok = ~np.isnan(c)
                c = np.where(ok, c, np.median(c[ok]) if ok.any() else 0.0)
            cols.append(c)
            discrete.append(False)
        else:
            raw = frame.categorical.get(f.name)
            s = np.array(["\0missing" if v is None else str(v) for v in (raw if raw is not None else [None] * n)])
            _, codes = np.unique(s, return_inverse=True)
            cols.append(codes.astype(np.float64))
            discrete.append(True)
    return np.column_stack(cols) if cols else np.zeros((n, 0)), np.array(discrete, dtype=bool)


def _finish(names: list[str], imp: np.ndarray, method: str, n: int, fidelity: float | None) -> list[FeatureImpact]:
    pos = np.clip(imp, 0.0, None)
    total = float(pos.sum())
    order = sorted(range(len(names)), key=lambda i: (-imp[i], names[i]))
    return [
        FeatureImpact(names[i], float(imp[i]), float(pos[i] / total) if total > 0 else 0.0, r + 1, method, n, fidelity)
        for r, i in enumerate(order)
    ]


def feature_impact(
    frame: Frame,
    features: Sequence[FeatureSpec],
    *,
    method: Method = "mi",
    max_rows: int = 2000,
    n_repeats: int = 5,
    seed: int = 0,
) -> list[FeatureImpact]:
    """Impact of each feature on the served output of the reference ``frame``, ranked.

    ``max_rows``: rows used (uniform subsample, seeded) to bound the cost: the
    k-nearest-neighbour MI estimator grows as n log n per feature, and 2,000 rows
    rank features as well as the whole reference for a third of the time (it is
    paid once per model and reference, in the detector thread, before the first
    window's points can be written).
    """
    if not features:
        raise ValueError("no features to rank")
    rng = np.random.default_rng(seed)
    if len(frame) > max_rows:
        frame = frame.take(np.sort(rng.choice(len(frame), max_rows, replace=False)))
    y, discrete_y = target_of(frame)
    ok = np.not_equal(y, "") if discrete_y else np.isfinite(y)
    frame = frame.take(ok)
    y = y[ok]
    n = len(frame)
    if n < 20:
        raise ValueError(f"feature impact needs at least 20 reference rows with a prediction, got {n}")
    names = [f.name for f in features]
    if method == "mi":
        from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

        x, disc = _matrix(frame, features, impute=True)
        fn = mutual_info_classif if discrete_y else mutual_info_regression
        target = y.astype(str) if discrete_y else y
        imp = fn(x, target, discrete_features=disc, random_state=seed)
        return _finish(names, np.asarray(imp, dtype=np.float64), "mi", n, None)
    if method == "permutation":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.inspection import permutation_importance

        x, disc = _matrix(frame, features, impute=False)
        idx = rng.permutation(n)
        tr, te = idx[: n // 2], idx[n // 2 :]
        if discrete_y:
            target = y.astype(str)
            model = HistGradientBoostingClassifier(
                categorical_features=disc if disc.any() else None, random_state=seed, max_iter=100
            )
        else:
            target = y
            model = HistGradientBoostingRegressor(
                categorical_features=disc if disc.any() else None, random_state=seed, max_iter=100
            )
        model.fit(x[tr], target[tr])
        fidelity = float(model.score(x[te], target[te]))
        res = permutation_importance(model, x[te], target[te], n_repeats=n_repeats, random_state=seed)
        return _finish(names, np.asarray(res.importances_mean, dtype=np.float64), "permutation", n, fidelity)
    raise ValueError(f"unknown impact method {method!r} (use 'mi' or 'permutation')")


def declared_impact(weights: Mapping[str, float], features: Sequence[str]) -> list[FeatureImpact]:
    """Importances declared in the config (``impact.declared``) as :class:`FeatureImpact` (method
    ``declared``; features not named get 0).

    >>> [(i.feature, i.normalized, i.rank) for i in declared_impact({"a": 3, "b": 1}, ["a", "b", "c"])]
    [('a', 0.75, 1), ('b', 0.25, 2), ('c', 0.0, 3)]
    """
    names = list(dict.fromkeys(features))
    imp = np.array([float(weights.get(f, 0.0)) for f in names], dtype=np.float64)
    return _finish(names, imp, "declared", 0, None)


def impact_records(impacts: Sequence[FeatureImpact], tags: dict[str, str], time_ns: int) -> list[Record]:
    """One ``dw_impact`` record per feature (fields in the module docstring)."""
    out = []
    for i in impacts:
        fields: dict[str, float | int | str | bool] = {
            "importance": i.importance,
            "normalized": i.normalized,
            "rank": i.rank,
            "n": i.n,
        }
        if i.fidelity is not None:
            fields["fidelity"] = i.fidelity
        out.append(Record(IMPACT, {**tags, T_FEATURE: i.feature, T_DETECTOR: i.method}, fields, time_ns))
    return out


def rank_drift_by_impact(
    drift: Mapping[str, float], impacts: Sequence[FeatureImpact]
) -> list[tuple[str, float, float, float]]:
    """Features ordered by ``drift × normalized impact``: (feature, drift, impact, product).

    ``drift`` maps feature -> a drift magnitude in [0, 1] or any non-negative
    score (e.g. JS distance, or 1 - p); features absent from either side count 0.
    """
    imp = {i.feature: i.normalized for i in impacts}
    names = sorted(set(drift) | set(imp))
    rows = [(f, float(drift.get(f, 0.0)), float(imp.get(f, 0.0))) for f in names]
    return sorted(((f, d, m, d * m) for f, d, m in rows), key=lambda r: (-r[3], -r[1], r[0]))
