"""One contract test over every detector (detectors.contract): determinism, state round-trip,
bad arguments refused with the explicit error type, and the result schema.

The detectors are discovered, not listed: every concrete ``BaseDetector`` subclass in any module
of ``detectors/`` is run (its ``example()`` says how to build it). And every detector-like class or
function in ``detectors/`` (by name or by its ``update``/``test``/``estimate`` method) must be wrapped
by one of them or be exempt below with a reason: a new detector without an adapter fails here,
named.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import pickle
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest

import detectors
from detectors.contract import BaseDetector, Detector, DetectorResult, NotFittedError, example_frames
from detectors.errors import DetectorFailure, InvalidInputError

ROOT = Path(detectors.__file__).parent


def _import_all() -> None:
    for m in pkgutil.walk_packages(detectors.__path__, "detectors."):
        importlib.import_module(m.name)


def _concrete(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        if not inspect.isabstract(sub):
            out.append(sub)
        out.extend(_concrete(sub))
    return out


_import_all()
DETECTORS = sorted(set(_concrete(BaseDetector)), key=lambda c: c.__name__)
IDS = [c.__name__ for c in DETECTORS]

# detector-like things in detectors/ that are not detectors of their own, and why
EXEMPT = {
    "ErrorStreamMonitor": "the worker's scheduling around ErrorStreamDetector (background calibration, "
    "buffering, restore); its detector is ConceptDriftDetector's",
    "FeatureDrift": "one feature's part of a DriftResult (a result type)",
    "Scorer": "the protocol of the scorers inside OutlierDetector",
    "MahalanobisScorer": "a scorer inside OutlierDetector (AdversarialDetector)",
    "AlibiMahalanobisScorer": "alibi-detect's scorer inside OutlierDetector (needs PyTorch)",
    "IForestScorer": "a scorer inside OutlierDetector (AdversarialDetector)",
    "ExtractionCalibration": "thresholds of ExtractionTracker (AdversarialDetector)",
}
_LIKE_NAME = re.compile(r"(Detector|Drift|Online|Monitor|Tracker|Estimator)$")
_LIKE_METHODS = {"update", "test", "estimate", "score"}


def _detector_like() -> list[tuple[str, str]]:
    """(module, name) of every public class or function in detectors/ that looks like a detector."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        if module in ("detectors.contract", "detectors.adapters"):
            continue
        for node in ast.parse(path.read_text()).body:
            if node.name.startswith("_") if hasattr(node, "name") else True:
                continue
            if isinstance(node, ast.ClassDef):
                attrs = {
                    t.id for n in node.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
                }
                if "segmented" in attrs:  # a WindowEvaluator of detectors.runner: turns detectors into records
                    continue
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                if _LIKE_NAME.search(node.name) or methods & _LIKE_METHODS:
                    found.append((module, node.name))
            elif isinstance(node, ast.FunctionDef) and (node.name.endswith("_drift") or node.name == "data_quality"):
                found.append((module, node.name))
    return found


LIKE = _detector_like()


def test_discovery_finds_the_detectors() -> None:
    # the scan works (else the checks below would pass on nothing)
    assert {
        "UnivariateDetector",
        "MultivariateDetector",
        "OnlineDriftDetector",
        "ConceptDriftDetector",
        "PredictionDriftDetector",
        "PerformanceEstimator",
        "DataQualityDetector",
        "AdversarialDetector",
    } <= set(IDS)
    assert {"MMDDrift", "CVMOnline", "univariate_drift", "AdversarialMonitor"} <= {n for _, n in LIKE}


@pytest.mark.parametrize(("module", "name"), LIKE, ids=[f"{m}.{n}" for m, n in LIKE])
def test_every_detector_like_thing_is_covered(module: str, name: str) -> None:
    wrapped = {w for cls in DETECTORS for w in cls.wraps}
    assert name in wrapped or name in EXEMPT, (
        f"{module}.{name} looks like a detector but no detectors.adapters class wraps it (add one, with "
        f"'{name}' in its wraps, or exempt it in tests/detectors/test_contract.py with a reason)"
    )


def test_no_stale_exemption() -> None:
    names = {n for _, n in LIKE}
    assert not [k for k in EXEMPT if k not in names], "exempt names the scan no longer finds: remove them"


def test_wraps_name_real_things() -> None:
    names = {n for _, n in LIKE}
    for cls in DETECTORS:
        for w in cls.wraps:
            assert w in names or any(
                hasattr(importlib.import_module(m.name), w)
                for m in pkgutil.walk_packages(detectors.__path__, "detectors.")
            ), (cls, w)


# -- the contract, per detector -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames():
    return example_frames(seed=3, windows=3)


def _same(a: DetectorResult, b: DetectorResult) -> bool:
    def eq(x, y) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return x == y or (math.isnan(x) and math.isnan(y))
        return x == y

    fields = ("detector", "n_reference", "n_window", "statistic", "p_value", "threshold", "drift", "reason")
    return (
        all(eq(getattr(a, f), getattr(b, f)) for f in fields)
        and a.details.keys() == b.details.keys()
        and all(eq(a.details[k], b.details[k]) for k in a.details)
    )


def _check_schema(res: DetectorResult, cls: type) -> None:
    assert isinstance(res, DetectorResult)
    assert res.detector == cls.name
    for f in ("statistic", "p_value", "threshold"):
        v = getattr(res, f)
        assert v is None or (type(v) is float and math.isfinite(v)), (f, v)
    assert res.p_value is None or 0.0 <= res.p_value <= 1.0
    assert res.drift is None or type(res.drift) is bool
    assert type(res.n_reference) is int and type(res.n_window) is int and res.n_window >= 0
    if any(getattr(res, f) is None for f in ("statistic", "p_value", "threshold", "drift")):
        assert isinstance(res.reason, str) and res.reason.strip(), res
    for k, v in res.details.items():
        assert isinstance(k, str)
        assert v is None or isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v)), (k, v)


@pytest.mark.parametrize("cls", DETECTORS, ids=IDS)
def test_follows_the_protocol(cls) -> None:
    det = cls.example()
    assert isinstance(det, Detector)
    assert isinstance(cls.name, str) and cls.name
    assert cls.wraps, f"{cls.__name__}.wraps names nothing"


@pytest.mark.parametrize("cls", DETECTORS, ids=IDS)
def test_determinism_round_trip_and_schema(cls, frames) -> None:
    ref, wins = frames
    a, b = cls.example().fit(ref), cls.example().fit(ref)
    first_a, first_b = a.update(wins[0]), b.update(wins[0])
    _check_schema(first_a, cls)
    assert first_a.n_reference == len(ref)
    assert _same(first_a, first_b), (first_a, first_b)  # same input, same result
    restored = pickle.loads(pickle.dumps(a))  # the state after one window
    for w in wins[1:]:
        ra, rb, rr = a.update(w), b.update(w), restored.update(w)
        _check_schema(ra, cls)
        assert _same(ra, rb), (ra, rb)
        assert _same(ra, rr), (ra, rr)  # the restored state goes on exactly as the original


@pytest.mark.parametrize("cls", DETECTORS, ids=IDS)
def test_empty_window_gives_a_reason(cls, frames) -> None:
    ref, wins = frames
    res = cls.example().fit(ref).update(wins[0].take(slice(0, 0)))
    _check_schema(res, cls)
    assert res.n_window == 0 and res.reason


@pytest.mark.parametrize("cls", DETECTORS, ids=IDS)
def test_bad_arguments_are_refused(cls, frames) -> None:
    ref, wins = frames
    with pytest.raises(NotFittedError, match=cls.name):
        cls.example().update(wins[0])
    det = cls.example()
    with pytest.raises(InvalidInputError, match=r"reference must be a detectors\.frame\.Frame"):
        det.fit({"x0": [1.0, 2.0]})
    with pytest.raises(InvalidInputError, match="reference is empty"):
        det.fit(ref.take(slice(0, 0)))
    det.fit(ref)
    with pytest.raises(InvalidInputError, match=r"window must be a detectors\.frame\.Frame"):
        det.update(np.zeros((3, 2)))
    bare = example_frames(seed=4, windows=1)[1][0]
    bare = type(bare).from_columns(event_id=bare.event_id, event_time=bare.event_time)  # no column at all
    if cls.missing_columns_are_data:  # absent columns are what it judges: every value missing
        res = det.update(bare)
        _check_schema(res, cls)
        assert res.drift is True, res
    else:
        with pytest.raises(InvalidInputError, match=cls.name):
            det.update(bare)
    bad = cls.bad_arguments()
    assert bad, f"{cls.__name__}.bad_arguments() lists nothing"
    example_kwargs = _example_kwargs(cls)
    for kwargs in bad:
        with pytest.raises(InvalidInputError):
            cls(**{**example_kwargs, **kwargs})


def _example_kwargs(cls) -> dict:
    """The required constructor arguments of the example (``bad_arguments`` override one at a time)."""
    det = cls.example()
    sig = inspect.signature(cls.__init__)
    return {
        p: getattr(det, p)
        for p, param in sig.parameters.items()
        if p != "self" and param.default is inspect.Parameter.empty
    }


def test_a_malformed_result_is_refused() -> None:
    with pytest.raises(DetectorFailure, match="without a reason"):
        DetectorResult("x", 10, 10, None, 0.5, 0.1, True)
    with pytest.raises(DetectorFailure, match="finite"):
        DetectorResult("x", 10, 10, float("nan"), 0.5, 0.1, True)
    with pytest.raises(DetectorFailure, match="p_value"):
        DetectorResult("x", 10, 10, 1.0, 1.5, 0.1, True)
    assert DetectorResult("x", 10, 10, 1.0, 0.5, 0.1, np.bool_(True), details={"d": np.float64("nan")}).details == {
        "d": None
    }
