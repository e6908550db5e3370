"""Off-manifold inputs: an outlier score per event against the reference, and the
window's exceedance rate tested against the reference rate.

Rows are the monitor's numeric features standardised by the reference
(:class:`Standardizer`; missing values at the reference mean, categorical
features not used). Two methods, each with two engines:

* ``mahalanobis`` — squared Mahalanobis distance to the reference mean, with
  alibi-detect's construction: eigen-decompose the reference covariance, drop
  directions with variance below ``min_eigenvalue``, score
  ``‖(x − μ) V Λ^{-1/2}‖²``. ``engine: native`` is numpy;
  ``engine: alibi`` runs ``alibi_detect.od.Mahalanobis`` (the PyTorch backend —
  it raises :class:`EngineUnavailable` where PyTorch is not installed, as in the
  default driftwatch install). With full-rank covariance the native score equals
  ``scipy.spatial.distance.mahalanobis(x, μ, Σ⁻¹)²``.
* ``iforest`` — isolation forest: ``engine: native`` is scikit-learn's
  ``IsolationForest`` (score ``-score_samples``), ``engine: alibi`` is
  ``alibi_detect.od.IForest`` (score ``-decision_function``; the same trees for
  the same seed, so the scores differ by a constant and flag the same events).

The detector is fitted on one part of the reference and its threshold is set on
the other (``holdout`` share), so the threshold is not optimistic; see
:mod:`detectors.adversarial.stats` for the calibrated rate test.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> det = OutlierDetector.fit(rng.normal(size=(2000, 3)), rate=0.05, seed=0)
>>> benign = det.evaluate(rng.normal(size=(1000, 3)))
>>> attacked = det.evaluate(np.vstack([rng.normal(size=(900, 3)), rng.normal(size=(100, 3)) + 4]))
>>> benign.p_value > 0.01, attacked.p_value < 1e-6
(True, True)
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from detectors.adversarial.stats import Calibration, calibrate_upper, exceedance_pvalue
from detectors.errors import EngineUnavailable  # re-exported: raised when alibi's Mahalanobis cannot run

__all__ = [
    "ComponentResult",
    "EngineUnavailable",
    "IForestScorer",
    "MahalanobisScorer",
    "OutlierDetector",
    "Standardizer",
    "make_scorer",
]


@dataclass(frozen=True, slots=True)
class ComponentResult:
    """One component of a window: ``k`` of ``n`` events beyond the calibrated threshold."""

    name: str
    n: int
    k: int
    ref_rate: float
    p_value: float

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def change(self) -> float:
        """Window rate minus reference rate."""
        return self.rate - self.ref_rate


def component(name: str, exceed: np.ndarray, cal: Calibration, test: str) -> ComponentResult:
    """Count exceedances (boolean per scored event) and test them against the calibration."""
    n, k = int(exceed.shape[0]), int(np.count_nonzero(exceed))
    p = exceedance_pvalue(k, n, cal, test) if n else float("nan")
    return ComponentResult(name, n, k, cal.ref_rate, p)


class Standardizer:
    """Numeric rows standardised by the reference: ``(x − mean) / std``, NaN → 0 (the mean)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        X = np.asarray(X, dtype=np.float64)
        with np.errstate(all="ignore"):
            mean = np.nanmean(X, axis=0) if X.size else np.zeros(X.shape[1])
            std = np.nanstd(X, axis=0) if X.size else np.ones(X.shape[1])
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        return cls(mean, std)

    def transform(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.std
        return np.where(np.isfinite(Z), Z, 0.0)


class Scorer(Protocol):
    def fit(self, Z: np.ndarray) -> Scorer: ...
    def score(self, Z: np.ndarray) -> np.ndarray: ...


class MahalanobisScorer:
    """Native squared Mahalanobis distance (alibi-detect's construction, numpy)."""

    def __init__(self, min_eigenvalue: float = 1e-6) -> None:
        self.min_eigenvalue = float(min_eigenvalue)

    def fit(self, Z: np.ndarray) -> MahalanobisScorer:
        Z = np.asarray(Z, dtype=np.float64)
        if Z.shape[0] < 2:
            raise ValueError("Mahalanobis needs at least 2 reference rows")
        self.mean = Z.mean(axis=0)
        X = Z - self.mean
        cov = X.T @ X / (Z.shape[0] - 1)
        evals, evecs = np.linalg.eigh(cov)
        keep = evals > self.min_eigenvalue
        self.pcs = evecs[:, keep] / np.sqrt(evals[keep])[None, :]
        return self

    def score(self, Z: np.ndarray) -> np.ndarray:
        proj = (np.asarray(Z, dtype=np.float64) - self.mean) @ self.pcs
        return np.einsum("ij,ij->i", proj, proj)


class AlibiMahalanobisScorer:  # pragma: no cover - needs PyTorch
    """alibi-detect's ``Mahalanobis`` (PyTorch backend)."""

    def __init__(self, min_eigenvalue: float = 1e-6) -> None:
        if importlib.util.find_spec("torch") is None:
            raise EngineUnavailable(
                "alibi-detect's Mahalanobis outlier detector needs PyTorch, which is not installed; "
                "use engine: native (the same computation in numpy) or method: iforest"
            )
        from alibi_detect.od import _mahalanobis

        self.det = _mahalanobis.Mahalanobis(min_eigenvalue=min_eigenvalue, backend="pytorch", device="cpu")

    def fit(self, Z: np.ndarray) -> AlibiMahalanobisScorer:
        self.det.fit(np.asarray(Z, dtype=np.float32))
        return self

    def score(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self.det.score(np.asarray(Z, dtype=np.float32)), dtype=np.float64)


class IForestScorer:
    """Isolation forest: scikit-learn's (``native``) or alibi-detect's ``IForest`` (``alibi``)."""

    def __init__(self, n_estimators: int = 100, seed: int = 0, engine: str = "native") -> None:
        self.n_estimators = int(n_estimators)
        self.seed = int(seed)
        self.engine = engine

    def fit(self, Z: np.ndarray) -> IForestScorer:
        Z = np.asarray(Z, dtype=np.float64)
        if self.engine == "alibi":
            from alibi_detect.od import IForest

            self.det = IForest(n_estimators=self.n_estimators)
            self.det.isolationforest.set_params(random_state=self.seed)
            self.det.fit(Z)
        else:
            from sklearn.ensemble import IsolationForest

            self.det = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed).fit(Z)
        return self

    def score(self, Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float64)
        if self.engine == "alibi":
            return np.asarray(self.det.score(Z), dtype=np.float64)
        return -self.det.score_samples(Z)


def make_scorer(
    method: str = "mahalanobis",
    engine: str = "native",
    *,
    min_eigenvalue: float = 1e-6,
    n_estimators: int = 100,
    seed: int = 0,
) -> Scorer:
    """The outlier scorer for ``method`` / ``engine`` (raises :class:`EngineUnavailable`)."""
    if engine not in ("native", "alibi"):
        raise ValueError(f"unknown engine {engine!r}; use 'native' or 'alibi'")
    if method == "mahalanobis":
        return AlibiMahalanobisScorer(min_eigenvalue) if engine == "alibi" else MahalanobisScorer(min_eigenvalue)
    if method == "iforest":
        return IForestScorer(n_estimators, seed, engine)
    raise ValueError(f"unknown outlier method {method!r}; use 'mahalanobis' or 'iforest'")


class OutlierDetector:
    """A fitted scorer plus its threshold, calibrated on held-out reference rows."""

    def __init__(self, scorer: Scorer, calibration: Calibration, test: str = "beta-binomial") -> None:
        self.scorer = scorer
        self.calibration = calibration
        self.test = test

    @classmethod
    def fit(
        cls,
        Z: np.ndarray,
        *,
        rate: float = 0.05,
        holdout: float = 0.5,
        method: str = "mahalanobis",
        engine: str = "native",
        min_eigenvalue: float = 1e-6,
        n_estimators: int = 100,
        seed: int = 0,
        test: str = "beta-binomial",
    ) -> OutlierDetector:
        """Fit on ``1 - holdout`` of the (standardised) reference rows, calibrate on the rest."""
        Z = np.asarray(Z, dtype=np.float64)
        n = Z.shape[0]
        n_cal = int(round(n * holdout))
        if n_cal < 20 or n - n_cal < Z.shape[1] + 2:
            raise ValueError(f"outlier detection needs more reference rows (got {n} for {Z.shape[1]} features)")
        perm = np.random.default_rng(seed).permutation(n)
        fit_rows, cal_rows = Z[perm[n_cal:]], Z[perm[:n_cal]]
        scorer = make_scorer(method, engine, min_eigenvalue=min_eigenvalue, n_estimators=n_estimators, seed=seed)
        scorer.fit(fit_rows)
        return cls(scorer, calibrate_upper(scorer.score(cal_rows), rate), test)

    def scores(self, Z: np.ndarray) -> np.ndarray:
        return self.scorer.score(Z)

    def exceedances(self, Z: np.ndarray) -> np.ndarray:
        """Per row: is its outlier score beyond the calibrated threshold?"""
        return self.scores(Z) > self.calibration.threshold if Z.shape[0] else np.zeros(0, dtype=bool)

    def result(self, exceed: np.ndarray) -> ComponentResult:
        """The window's exceedance rate (``exceed``: per row) and its p-value against the reference rate."""
        if exceed.shape[0] == 0:
            return ComponentResult("outlier", 0, 0, self.calibration.ref_rate, float("nan"))
        return component("outlier", exceed, self.calibration, self.test)

    def evaluate(self, Z: np.ndarray) -> ComponentResult:
        """Exceedance rate of the window's rows and its p-value against the reference rate."""
        return self.result(self.exceedances(Z))
