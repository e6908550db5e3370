"""Optional model in the loop: feature-squeezing consistency (Xu, Evans & Qi, NDSS 2018).

When the monitor is given the model itself (a scikit-learn estimator file),
each sampled event is predicted twice: as it came, and "squeezed" — every
numeric feature replaced by the median of its reference quantile bin
(``bins`` bins). A natural input barely changes its prediction; an
adversarial one, balanced on the decision boundary, often does. The per-event
score is the L1 distance between the two probability vectors; its threshold is
the reference's ``rate`` upper quantile (calibrated on held-out reference rows),
and the window's exceedance count is tested like the other components.

**Security:** :func:`load_estimator` unpickles the file (joblib), which runs
code from it. Point ``squeeze.model`` only at files you trust.

The estimator receives the monitor's numeric features in config order as a
float matrix, or — when it was fitted on a DataFrame (``feature_names_in_``) —
a pandas DataFrame with those column names (they must be numeric features).

>>> import numpy as np
>>> sq = QuantileSqueezer.fit(np.arange(100.0).reshape(-1, 1), bins=4)
>>> sq.transform(np.array([[3.0], [60.0]])).ravel().tolist()
[12.0, 62.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detectors.adversarial.outlier import ComponentResult, component
from detectors.adversarial.stats import Calibration, calibrate_upper
from detectors.errors import InvalidInputError

__all__ = ["QuantileSqueezer", "SqueezeDetector", "SqueezeModelError", "load_estimator"]


class SqueezeModelError(InvalidInputError):
    """The estimator file cannot be loaded or used (the message says which file and why)."""


def load_estimator(path: str | Path) -> Any:
    """Load a scikit-learn estimator with ``predict_proba`` from a joblib/pickle file.

    This executes code from the file: only use trusted files.
    """
    import joblib

    path = Path(path)
    try:
        est = joblib.load(path)
    except FileNotFoundError:
        raise SqueezeModelError(f"{path}: estimator file not found") from None
    except Exception as e:  # unpickling can raise anything
        raise SqueezeModelError(f"{path}: cannot load the estimator: {type(e).__name__}: {e}") from None
    if not callable(getattr(est, "predict_proba", None)):
        raise SqueezeModelError(f"{path}: {type(est).__name__} has no predict_proba (a classifier is needed)")
    return est


class QuantileSqueezer:
    """Each numeric column replaced by the reference median of its quantile bin (NaN stays NaN)."""

    def __init__(self, edges: list[np.ndarray], centers: list[np.ndarray]) -> None:
        self.edges = edges
        self.centers = centers

    @classmethod
    def fit(cls, X: np.ndarray, bins: int = 16) -> QuantileSqueezer:
        X = np.asarray(X, dtype=np.float64)
        edges, centers = [], []
        for j in range(X.shape[1]):
            col = np.sort(X[:, j][np.isfinite(X[:, j])])
            if col.size == 0:
                edges.append(np.empty(0))
                centers.append(np.array([np.nan]))
                continue
            e = np.unique(np.quantile(col, np.arange(1, bins) / bins))
            idx = np.searchsorted(e, col, side="right")
            c = np.array([np.median(col[idx == b]) if (idx == b).any() else np.nan for b in range(e.size + 1)])
            edges.append(e)
            centers.append(c)
        return cls(edges, centers)

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        out = X.copy()
        for j, (e, c) in enumerate(zip(self.edges, self.centers)):
            col = X[:, j]
            ok = np.isfinite(col)
            out[ok, j] = c[np.searchsorted(e, col[ok], side="right")]
        return out


def _model_input(X: np.ndarray, names: Sequence[str], estimator: Any):
    cols = getattr(estimator, "feature_names_in_", None)
    if cols is None:
        return X
    import pandas as pd

    index = {n: j for j, n in enumerate(names)}
    missing = [c for c in cols if c not in index]
    if missing:
        raise SqueezeModelError(f"the estimator expects features {missing} that are not numeric monitor features")
    return pd.DataFrame({c: X[:, index[c]] for c in cols})


class SqueezeDetector:
    """Squeeze distance threshold calibrated on held-out reference rows, and the window test."""

    def __init__(
        self,
        estimator: Any,
        names: Sequence[str],
        squeezer: QuantileSqueezer,
        calibration: Calibration,
        sample: int = 200,
        test: str = "beta-binomial",
        seed: int = 0,
    ) -> None:
        self.estimator = estimator
        self.names = list(names)
        self.squeezer = squeezer
        self.calibration = calibration
        self.sample = int(sample)
        self.test = test
        self.rng = np.random.default_rng(seed)

    def distances(self, X: np.ndarray) -> np.ndarray:
        """L1 distance between predicted probabilities of the rows and of their squeezed versions."""
        X = np.asarray(X, dtype=np.float64)
        ok = np.isfinite(X).all(axis=1)
        out = np.full(X.shape[0], np.nan)
        if ok.any():
            Xo = X[ok]
            try:
                p = np.asarray(self.estimator.predict_proba(_model_input(Xo, self.names, self.estimator)))
                q = np.asarray(
                    self.estimator.predict_proba(_model_input(self.squeezer.transform(Xo), self.names, self.estimator))
                )
            except SqueezeModelError:
                raise
            except Exception as e:  # a user model; say what failed
                raise SqueezeModelError(f"the estimator's predict_proba failed: {type(e).__name__}: {e}") from None
            out[ok] = np.abs(p - q).sum(axis=1)
        return out

    @classmethod
    def fit(
        cls,
        estimator: Any,
        names: Sequence[str],
        X_ref: np.ndarray,
        *,
        bins: int = 16,
        rate: float = 0.05,
        holdout: float = 0.5,
        sample: int = 200,
        test: str = "beta-binomial",
        seed: int = 0,
    ) -> SqueezeDetector:
        """Quantile bins from one part of the (raw, numeric) reference rows, threshold from the rest."""
        X_ref = np.asarray(X_ref, dtype=np.float64)
        n = X_ref.shape[0]
        n_cal = int(round(n * holdout))
        if n_cal < 20 or n - n_cal < 20:
            raise ValueError(f"feature squeezing needs at least 40 reference rows, got {n}")
        perm = np.random.default_rng(seed).permutation(n)
        squeezer = QuantileSqueezer.fit(X_ref[perm[n_cal:]], bins)
        det = cls(estimator, names, squeezer, Calibration(np.inf, 1, 0), sample, test, seed)
        d = det.distances(X_ref[perm[:n_cal]])
        det.calibration = calibrate_upper(d[np.isfinite(d)], rate)
        return det

    def evaluate(self, X: np.ndarray) -> tuple[ComponentResult, float]:
        """The component on a random sample of at most ``sample`` rows, and the sample's mean distance."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] > self.sample:
            X = X[self.rng.choice(X.shape[0], self.sample, replace=False)]
        d = self.distances(X)
        d = d[np.isfinite(d)]
        res = component("squeeze", d > self.calibration.threshold, self.calibration, self.test)
        return res, float(d.mean()) if d.size else float("nan")
