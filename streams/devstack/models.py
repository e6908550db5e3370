"""The demo's two models and their reference files.

Trained at start-up on datasets that ship with scikit-learn (no download): ``wine``, a
classifier, and ``diabetes``, a regression (details in :mod:`streams.devstack.demo`).
:class:`DemoModel` samples natural inputs, derives the logged features and predicts;
:func:`write_reference_csv` writes the reference files ``examples/*_reference.csv``.
"""

from __future__ import annotations

import csv
import logging
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).parent / "examples"
REFERENCE_ROWS = 1000
REFERENCE_SEED = 20240601


# ============================================================================ models
@dataclass
class DemoModel:
    """One demo model: its data, the trained estimator and how its features are logged.

    ``X``/``y`` are the dataset (inputs in original units); ``inputs`` are the numeric
    model inputs (columns of ``X``), ``categorical`` maps each derived categorical
    feature to (function of the input matrix -> object array, allowed values).
    ``lo``/``hi`` bound what real inputs can be (values are clipped there after
    jitter); ``discrete`` inputs are not jittered; values are rounded to ``decimals``.
    """

    model_id: str
    task: str  # "classification" | "regression"
    inputs: list[str]
    X: np.ndarray
    y: np.ndarray
    estimator: Any
    classes: list[str] = field(default_factory=list)
    categorical: dict[str, tuple[Callable[[np.ndarray], np.ndarray], list[str]]] = field(default_factory=dict)
    logged_inputs: list[str] | None = None  # inputs logged as numeric features (default: all)
    decimals: np.ndarray | None = None
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    discrete: np.ndarray | None = None  # bool per input
    jitter: float = 0.1
    version: str = "1"
    default_drift_features: list[str] = field(default_factory=list)
    default_quality_features: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        d = self.n_inputs
        self.std = self.X.std(axis=0)
        self.std[self.std == 0] = 1.0
        if self.decimals is None:
            self.decimals = np.full(d, 3)
        if self.lo is None:
            self.lo = np.full(d, -np.inf)
        if self.hi is None:
            self.hi = np.full(d, np.inf)
        if self.discrete is None:
            self.discrete = np.zeros(d, dtype=bool)
        if self.logged_inputs is None:
            self.logged_inputs = list(self.inputs)
        self.y_std = float(np.std(self.y.astype(float))) if self.task == "regression" else 0.0

    @property
    def n_inputs(self) -> int:
        return len(self.inputs)

    @property
    def numeric_features(self) -> list[str]:
        return list(self.logged_inputs or [])

    @property
    def feature_names(self) -> list[str]:
        return self.numeric_features + list(self.categorical)

    def index(self, name: str) -> int:
        return self.inputs.index(name)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` smoothed-bootstrap rows (inputs, true target) — the stationary stream."""
        idx = rng.integers(0, len(self.X), n)
        X = self.X[idx] + rng.normal(0.0, 1.0, (n, self.n_inputs)) * (self.jitter * self.std)
        X[:, self.discrete] = self.X[idx][:, self.discrete]
        return self.finish_inputs(X), self.y[idx]

    def finish_inputs(self, X: np.ndarray) -> np.ndarray:
        """Clip to the physical bounds and round to the dataset's precision."""
        scale = 10.0 ** np.asarray(self.decimals, dtype=float)
        return np.rint(np.clip(X, self.lo, self.hi) * scale) / scale  # what np.round does, all columns at once

    def derive(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """The logged features of input rows: numeric inputs + derived categoricals."""
        cols: dict[str, np.ndarray] = {name: X[:, self.index(name)] for name in self.numeric_features}
        for name, (fn, _allowed) in self.categorical.items():
            cols[name] = fn(X)
        return cols

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Vectorized model output: ``label`` + ``proba`` (classifier) or ``value``.

        The fitted scaler + linear model are applied with numpy: the same numbers as
        ``estimator.predict_proba`` / ``predict`` (a test checks), without
        scikit-learn's ~5 ms of input validation per call.
        """
        mean, scale, coef, intercept = self._linear()
        z = (X - mean) / scale @ coef.T + intercept
        if self.task == "classification":
            if z.shape[1] == 1:  # binary: one logit
                z = np.hstack([-z, z])
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            proba = e / e.sum(axis=1, keepdims=True)
            label = np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
            return {"label": label, "proba": proba}
        return {"value": z[:, 0]}

    def _linear(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        lin = getattr(self, "_lin", None)
        if lin is None:
            scaler, model = self.estimator[0], self.estimator[-1]
            coef = np.atleast_2d(model.coef_)
            lin = (scaler.mean_, scaler.scale_, coef, np.atleast_1d(model.intercept_))
            self._lin = lin
        return lin


def _clean_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_")


def _bins(values: np.ndarray, edges: Sequence[float], names: Sequence[str]) -> np.ndarray:
    return np.asarray(names, dtype=object)[np.searchsorted(np.asarray(edges), values, side="right")]


def build_wine() -> DemoModel:
    """Wine cultivar classifier (178 rows, 13 inputs, 3 classes)."""
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = load_wine()
    names = [_clean_name(n) for n in d.feature_names]
    X = d.data.astype(float)
    classes = [str(c) for c in d.target_names]
    y = np.asarray(classes, dtype=object)[d.target]
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, d.target)
    ia, ic = names.index("alcohol"), names.index("color_intensity")
    decimals = np.array([2, 2, 2, 1, 0, 2, 2, 2, 2, 2, 2, 2, 0])
    return DemoModel(
        model_id="wine",
        task="classification",
        inputs=names,
        X=X,
        y=y,
        estimator=est,
        classes=classes,
        categorical={
            "alcohol_level": (
                lambda X: _bins(X[:, ia], [12.5, 13.5], ["low", "medium", "high"]),
                ["low", "medium", "high"],
            ),
            "color_shade": (lambda X: _bins(X[:, ic], [3.8, 5.7], ["pale", "ruby", "deep"]), ["pale", "ruby", "deep"]),
        },
        decimals=decimals,
        lo=np.zeros(len(names)),
        default_drift_features=["alcohol", "color_intensity"],
        default_quality_features=["magnesium", "alcohol_level"],
    )


def build_diabetes() -> DemoModel:
    """Diabetes progression regression (442 rows, 10 inputs, original units)."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = load_diabetes(scaled=False)
    names = [_clean_name(n) for n in d.feature_names]
    X = d.data.astype(float)
    y = d.target.astype(float)
    est = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(X, y)
    isex, ibmi = names.index("sex"), names.index("bmi")
    discrete = np.zeros(len(names), dtype=bool)
    discrete[isex] = True
    return DemoModel(
        model_id="diabetes",
        task="regression",
        inputs=names,
        X=X,
        y=y,
        estimator=est,
        categorical={
            "sex": (lambda X: np.where(X[:, isex] >= 1.5, "2", "1").astype(object), ["1", "2"]),
            "bmi_class": (
                lambda X: _bins(X[:, ibmi], [18.5, 25.0, 30.0], ["underweight", "normal", "overweight", "obese"]),
                ["underweight", "normal", "overweight", "obese"],
            ),
        },
        logged_inputs=[n for n in names if n != "sex"],
        decimals=np.array([0, 0, 1, 2, 0, 1, 1, 2, 3, 0]),
        lo=np.array([18, 1, 10, 40, 50, 20, 10, 1, 2, 40], dtype=float),
        discrete=discrete,
        default_drift_features=["bmi", "bp"],
        default_quality_features=["s5", "bmi_class"],
    )


#: model name -> builder. Add a model by adding a builder here.
MODEL_BUILDERS: dict[str, Callable[[], DemoModel]] = {"wine": build_wine, "diabetes": build_diabetes}


def build_models(names: Sequence[str]) -> dict[str, DemoModel]:
    """Train the named demo models (a ValueError lists the known names)."""
    unknown = [n for n in names if n not in MODEL_BUILDERS]
    if unknown:
        raise ValueError(f"unknown demo model(s) {unknown}; known: {sorted(MODEL_BUILDERS)}")
    return {n: MODEL_BUILDERS[n]() for n in names}


# ============================================================================ reference files
PREDICTION_COLUMN, LABEL_COLUMN, PROBA_PREFIX = "prediction", "label", "proba_"
"""Output columns of the demo reference files (declared in streams/devstack/examples/demo.yaml)."""
PROBA_DECIMALS, VALUE_DECIMALS = 4, 3
"""Precision of the served probabilities and regression values, in events and reference files alike (a
reference rounded otherwise than the events differs from them in distribution: prediction drift on ties)."""


def reference_rows(model: DemoModel, n: int = REFERENCE_ROWS, seed: int = REFERENCE_SEED) -> dict[str, list[Any]]:
    """``n`` rows of the model's stationary traffic, as logged feature columns, followed by the model's
    outputs for them (``prediction``; classifiers also ``proba_<class>``) and the truth (``label``), as the
    labels topic would carry it: what a file reference needs for prediction drift, impact and CBPE."""
    rng = np.random.default_rng([seed, zlib.crc32(model.model_id.encode())])
    X, y = model.sample(rng, n)
    cols: dict[str, Any] = dict(model.derive(X))
    out = model.predict(X)
    if model.task == "classification":
        cols[PREDICTION_COLUMN] = out["label"]
        for j, c in enumerate(model.classes):
            cols[f"{PROBA_PREFIX}{c}"] = np.round(out["proba"][:, j], PROBA_DECIMALS)
        cols[LABEL_COLUMN] = np.array([str(v) for v in y], dtype=object)
    else:
        cols[PREDICTION_COLUMN] = np.round(out["value"], VALUE_DECIMALS)
        cols[LABEL_COLUMN] = np.round(y.astype(float), 3)
    return {k: column_list(v) for k, v in cols.items()}


def write_reference_csv(model: DemoModel, path: Path, n: int = REFERENCE_ROWS, seed: int = REFERENCE_SEED) -> Path:
    """Write the model's reference sample (header = feature names, then the output and label columns)."""
    cols = reference_rows(model, n, seed)
    names = list(cols)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(names)
        for row in zip(*(cols[k] for k in names)):
            w.writerow([_fmt(v) for v in row])
    return path


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(int(v)) if v.is_integer() else repr(v)
    return str(v)


def reference_path(model_id: str, directory: Path = EXAMPLES_DIR) -> Path:
    return directory / f"{model_id}_reference.csv"


def plain_value(v: Any) -> Any:
    """A numpy scalar as the plain Python value (JSON encoders and CSV writers take those)."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def column_list(col: np.ndarray) -> list[Any]:
    """A column as plain Python values (NaN -> None for numeric columns)."""
    if col.dtype.kind == "f":
        out = col.tolist()
        if np.isnan(col).any():
            out = [None if v != v else v for v in out]
        return out
    return [plain_value(v) for v in col.tolist()] if col.dtype == object else col.tolist()
