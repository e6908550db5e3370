"""Adversarial and attack scores, per window, per model and per source, without calling the model.

* :mod:`~detectors.adversarial.outlier` — off-manifold inputs (Mahalanobis or
  isolation forest vs the reference; exceedance rate tested per window);
* :mod:`~detectors.adversarial.margin` — near-boundary pressure (low-margin rate);
* :mod:`~detectors.adversarial.extraction` — PRADA-style model-extraction
  detection per source, bounded state for thousands of sources;
* :mod:`~detectors.adversarial.squeeze` — optional model in the loop: feature
  squeezing consistency;
* :mod:`~detectors.adversarial.monitor` — all of them on one window, the
  combined score in [0, 1] and the ``ADVERSARIAL`` / ``SOURCE`` records;
* :mod:`~detectors.adversarial.evaluator` — the window evaluator registered in
  :mod:`detectors.runner`;
* :mod:`~detectors.adversarial.spec` — the ``adversarial:`` config (pydantic only).

Names are re-exported lazily so ``detectors.adversarial.spec`` stays cheap to import.
"""

_EXPORTS = {
    "AdversarialSpec": "detectors.adversarial.spec",
    "AdversarialMonitor": "detectors.adversarial.monitor",
    "AdversarialResult": "detectors.adversarial.monitor",
    "AdversarialEvaluator": "detectors.adversarial.evaluator",
    "ExtractionTracker": "detectors.adversarial.extraction",
    "OutlierDetector": "detectors.adversarial.outlier",
    "MarginDetector": "detectors.adversarial.margin",
    "SqueezeDetector": "detectors.adversarial.squeeze",
    "EngineUnavailable": "detectors.adversarial.outlier",
    "SqueezeModelError": "detectors.adversarial.squeeze",
    "shapiro_w": "detectors.adversarial.stats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'detectors.adversarial' has no attribute {name!r}")
