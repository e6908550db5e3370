"""Near-boundary pressure: the share of low-margin predictions per window.

Evasion attacks push inputs just across the decision boundary, so their
predictions have small margins. The margin of a prediction is the top class
probability minus the second (for a single score in [0, 1], ``|2s − 1|``);
"low" means below the reference's ``rate`` quantile, and the window's low-margin
count is tested against the reference rate like the outlier exceedances
(:mod:`detectors.adversarial.stats`).

>>> import numpy as np
>>> margins(np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [np.nan, np.nan, np.nan]])).round(2).tolist()
[0.5, 0.05, nan]
"""

from __future__ import annotations

import numpy as np

from detectors.adversarial.outlier import ComponentResult, component
from detectors.adversarial.stats import Calibration, calibrate_upper
from detectors.frame import Frame

__all__ = ["MarginDetector", "frame_margins", "margins"]


def margins(proba: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row (NaN where a row has a missing probability)."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (n, k >= 2), got {p.shape}")
    top2 = np.partition(np.nan_to_num(p, nan=0.0), -2, axis=1)[:, -2:]
    m = top2[:, 1] - top2[:, 0]
    return np.where(np.isnan(p).any(axis=1), np.nan, m)


def frame_margins(frame: Frame) -> np.ndarray | None:
    """Margins of a frame's predictions: from probabilities, else from a score in [0, 1]; None if neither."""
    if frame.pred_proba is not None and frame.pred_proba.ndim == 2 and frame.pred_proba.shape[1] >= 2:
        return margins(frame.pred_proba)
    if frame.pred_value is not None:
        v = np.asarray(frame.pred_value, dtype=np.float64)
        ok = np.isfinite(v)
        if ok.any() and (v[ok] >= 0).all() and (v[ok] <= 1).all():
            return np.abs(2.0 * v - 1.0)
    return None


class MarginDetector:
    """Low-margin threshold at the reference's ``rate`` quantile, and the window test."""

    def __init__(self, calibration: Calibration, test: str = "beta-binomial") -> None:
        self.calibration = calibration
        self.test = test

    @classmethod
    def fit(cls, reference_margins: np.ndarray, rate: float = 0.1, test: str = "beta-binomial") -> MarginDetector:
        m = np.asarray(reference_margins, dtype=np.float64)
        m = m[np.isfinite(m)]
        if m.shape[0] < 20:
            raise ValueError(f"margin calibration needs at least 20 reference predictions, got {m.shape[0]}")
        return cls(calibrate_upper(-m, rate), test)

    @property
    def threshold(self) -> float:
        """Margins strictly below this are low."""
        return -self.calibration.threshold

    def exceedances(self, window_margins: np.ndarray) -> np.ndarray:
        """Per margin: is it low (below the calibrated threshold)? Non-finite margins are dropped first."""
        m = np.asarray(window_margins, dtype=np.float64)
        return -m[np.isfinite(m)] > self.calibration.threshold

    def result(self, exceed: np.ndarray) -> ComponentResult:
        """The window's low-margin rate (``exceed``: per prediction) tested against the reference rate."""
        return component("low_margin", exceed, self.calibration, self.test)

    def evaluate(self, window_margins: np.ndarray) -> ComponentResult:
        return self.result(self.exceedances(window_margins))
