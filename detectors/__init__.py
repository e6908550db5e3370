"""driftwatch detectors: the science, pure and I/O free.

Everything in this package works on numpy arrays and plain data. It never
imports Kafka, Faust, InfluxDB or Streamlit, so every detector can be used
and tested from a Python prompt.
"""

# Lazy re-exports (PEP 562): importing ``detectors.spec`` stays light (no scipy).
_EXPORTS = {
    "Reference": "detectors.reference",
    "ReferenceDataError": "detectors.reference",
    "univariate_drift": "detectors.univariate",
    "data_quality": "detectors.quality",
    "WindowContext": "detectors.runner",
    "WindowEvaluator": "detectors.runner",
    "evaluate_window": "detectors.runner",
    "register": "detectors.runner",
    "default_evaluators": "detectors.runner",
    "Detector": "detectors.contract",
    "DetectorResult": "detectors.contract",
    "DriftwatchError": "detectors.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'detectors' has no attribute {name!r}")
