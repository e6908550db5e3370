"""The detector contract: one small API every detector follows, in the spirit of River's.

Each detector of this package has its natural API (``MMDDrift(x_ref).test(x)``,
``CVMOnline(values, ert).update(x)``, ``univariate_drift(frame, reference, spec)``,
...). The contract puts one shape over all of them, so a caller (a notebook, the
contract test, a new evaluator) can drive any detector the same way::

    det = UnivariateDetector(features)     # configuration only, checked here
    det.fit(reference_frame)               # learn the reference; returns det
    res = det.update(window_frame)         # one batch or window -> DetectorResult

* :class:`Detector` is the :class:`typing.Protocol` (``name``, ``fit``, ``update``);
* :class:`BaseDetector` is the ABC the adapters of :mod:`detectors.adapters` derive
  from: it checks the arguments (a :class:`~detectors.frame.Frame`, fitted before
  ``update``), answers an empty window without asking the detector, and asks each
  subclass for an :meth:`~BaseDetector.example` so the contract test covers it
  without being told;
* :class:`DetectorResult` is the typed result: the verdict (``drift``), the numbers
  behind it (``statistic``, ``p_value``, ``threshold``), the sizes, and ``reason``,
  which must say why whenever one of the four is None (a detector that estimates
  instead of testing has no p-value; an online detector before its first full
  window has no statistic). Numbers are finite or None, never NaN.

Stateless detectors (a two-sample test per window) treat each ``update`` as one
window; stateful ones (the online detectors, the adversarial monitor's per-source
state) carry their state from one ``update`` to the next. Every detector pickles:
a pickled and restored detector gives the same results as the original.

:func:`example_frames` builds a small labelled reference and windows with every
column a detector may need (numeric and categorical features, predicted classes
with probabilities, true labels, sources), for examples and the contract test.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from detectors.errors import DetectorFailure, InvalidInputError
from detectors.frame import Frame
from detectors.spec import FeatureSpec

__all__ = [
    "EXAMPLE_FEATURES",
    "BaseDetector",
    "Detector",
    "DetectorResult",
    "NotFittedError",
    "example_frames",
]

Detail = float | int | str | bool | None


class NotFittedError(InvalidInputError):
    """``update`` was called before ``fit`` (the message names the detector)."""


@dataclass(frozen=True, slots=True)
class DetectorResult:
    """What one ``update`` found.

    ``drift``: the verdict (None: the detector gives none, e.g. an estimate).
    ``statistic``: the tested quantity; ``p_value``: its p-value; ``threshold``:
    the value the verdict compares with (what it applies to is the detector's
    docstring's business). ``n_reference`` / ``n_window``: rows on each side.
    ``reason``: required when any of ``statistic``, ``p_value``, ``threshold``,
    ``drift`` is None — why. ``details``: detector-specific scalars (finite or None).
    Checked on construction: a detector cannot return a malformed result.
    """

    detector: str
    n_reference: int
    n_window: int
    statistic: float | None
    p_value: float | None
    threshold: float | None
    drift: bool | None
    reason: str | None = None
    details: Mapping[str, Detail] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(msg: str) -> DetectorFailure:
            return DetectorFailure(f"{self.detector}: malformed result: {msg}")

        for name in ("statistic", "p_value", "threshold"):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(f"{name} must be a finite number or None, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.p_value is not None and not 0.0 <= self.p_value <= 1.0:
            raise bad(f"p_value must be within [0, 1], got {self.p_value!r}")
        if self.drift is not None:
            if not isinstance(self.drift, (bool, np.bool_)):
                raise bad(f"drift must be a bool or None, got {self.drift!r}")
            object.__setattr__(self, "drift", bool(self.drift))
        for name in ("n_reference", "n_window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise bad(f"{name} must be an int >= 0, got {v!r}")
            object.__setattr__(self, name, int(v))
        missing = [n for n in ("statistic", "p_value", "threshold", "drift") if getattr(self, n) is None]
        if missing and not (isinstance(self.reason, str) and self.reason.strip()):
            raise bad(f"{', '.join(missing)} is None without a reason")
        clean: dict[str, Detail] = {}
        for k, v in dict(self.details).items():
            if isinstance(v, (np.floating, np.integer, np.bool_)):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise bad(f"details[{k!r}] must be a scalar, got {type(v).__name__}")
            clean[str(k)] = v
        object.__setattr__(self, "details", clean)


@runtime_checkable
class Detector(Protocol):
    """Anything that learns a reference and judges batches or windows against it."""

    name: str

    def fit(self, reference: Frame) -> Detector: ...

    def update(self, window: Frame) -> DetectorResult: ...


D = TypeVar("D", bound="BaseDetector")


def finite(x: Any) -> float | None:
    """``float(x)`` when it is a finite number, else None (NaN, inf, None)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class BaseDetector(ABC):
    """The checks every detector shares; subclasses implement :meth:`_fit` and :meth:`_update`.

    ``wraps``: the names of the natural APIs in this package the adapter covers (the
    contract test fails, naming it, for a detector-like class or function that no
    adapter wraps and that is not listed as exempt).
    """

    name: ClassVar[str]
    wraps: ClassVar[tuple[str, ...]] = ()
    #: False: a window without the columns the detector needs is refused (:class:`InvalidInputError`);
    #: True: the detector judges their absence (data quality: every value missing)
    missing_columns_are_data: ClassVar[bool] = False

    n_reference: int = 0
    _fitted: bool = False

    def fit(self: D, reference: Frame) -> D:
        """Learn ``reference`` (a :class:`Frame` of reference rows); returns the detector."""
        self._check_frame(reference, "reference")
        if not len(reference):
            raise InvalidInputError(f"{self.name}: the reference is empty")
        self._fit(reference)
        self.n_reference = len(reference)
        self._fitted = True
        return self

    def update(self, window: Frame) -> DetectorResult:
        """Judge one batch or window (a :class:`Frame`); stateful detectors remember it."""
        if not self._fitted:
            raise NotFittedError(f"{self.name}: call fit(reference) before update(window)")
        self._check_frame(window, "window")
        if not len(window):
            return self.no_verdict(0, "the window is empty")
        return self._update(window)

    def result(
        self,
        statistic: Any,
        p_value: Any,
        threshold: Any,
        drift: bool | None,
        *,
        n_window: int,
        reason: str | None = None,
        **details: Detail,
    ) -> DetectorResult:
        """A :class:`DetectorResult` of this detector (non-finite numbers become None)."""
        return DetectorResult(
            self.name,
            self.n_reference,
            n_window,
            finite(statistic),
            finite(p_value),
            finite(threshold),
            drift,
            reason,
            details,
        )

    def no_verdict(self, n_window: int, reason: str, **details: Detail) -> DetectorResult:
        """A result with nothing measured (no statistic, p-value, threshold or verdict); ``reason`` says why."""
        return self.result(None, None, None, None, n_window=n_window, reason=reason, **details)

    def _check_frame(self, frame: Any, what: str) -> None:
        if not isinstance(frame, Frame):
            raise InvalidInputError(f"{self.name}: {what} must be a detectors.frame.Frame, got {type(frame).__name__}")

    def _need(self, frame: Frame, what: str, *, numeric: Sequence[str] = (), categorical: Sequence[str] = ()) -> None:
        """Raise :class:`InvalidInputError` naming the first feature ``frame`` lacks."""
        for n in numeric:
            if n not in frame.numeric:
                raise InvalidInputError(f"{self.name}: the {what} has no numeric feature {n!r}")
        for n in categorical:
            if n not in frame.categorical:
                raise InvalidInputError(f"{self.name}: the {what} has no categorical feature {n!r}")

    @contextmanager
    def _invalid_input(self) -> Iterator[None]:
        """Re-raise a ``ValueError`` of the wrapped detector (bad data, a failed calibration) as
        :class:`InvalidInputError` naming this detector."""
        try:
            yield
        except ValueError as e:
            raise InvalidInputError(f"{self.name}: {e}") from None

    def _column(self, frame: Frame, column: str, what: str) -> np.ndarray:
        """``frame.<column>`` (``label``, ``pred_label``, ``pred_proba``, ``pred_value``), or
        :class:`InvalidInputError` naming it when the frame has none."""
        value = getattr(frame, column)
        if value is None:
            raise InvalidInputError(f"{self.name}: the {what} has no {column} column")
        return value

    @abstractmethod
    def _fit(self, reference: Frame) -> None: ...

    @abstractmethod
    def _update(self, window: Frame) -> DetectorResult: ...

    @classmethod
    @abstractmethod
    def example(cls: type[D]) -> D:
        """A small configured instance for :func:`example_frames` (docs and the contract test)."""

    @classmethod
    @abstractmethod
    def bad_arguments(cls) -> list[dict[str, Any]]:
        """Constructor keyword arguments the detector must refuse with :class:`InvalidInputError`."""


# -- example data ----------------------------------------------------------------------------------

EXAMPLE_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(name="x0", kind="numeric"),
    FeatureSpec(name="x1", kind="numeric"),
    FeatureSpec(name="c0", kind="categorical"),
)
"""The features of :func:`example_frames`."""


def _example(rng: np.random.Generator, n: int, t0: float, shift: float) -> Frame:
    x0 = rng.normal(shift, 1.0, n)
    x1 = rng.normal(0.0, 1.0, n)
    c0 = rng.choice(np.array(["a", "b", "c"], dtype=object), n, p=[0.5, 0.3, 0.2])
    p_yes = 1.0 / (1.0 + np.exp(-1.5 * (x0 - shift) - 0.5 * x1))  # a shift moves the inputs, not the model
    proba = np.column_stack([1.0 - p_yes, p_yes])
    classes = ("no", "yes")
    pred = np.where(p_yes >= 0.5, "yes", "no").astype(object)
    truth = np.where(rng.random(n) < p_yes, "yes", "no").astype(object)
    return Frame.from_columns(
        event_id=np.array([f"e{t0:.0f}-{i}" for i in range(n)], dtype=object),
        event_time=t0 + np.arange(n, dtype=np.float64),
        source_id=np.array([f"s{i % 7}" for i in range(n)], dtype=object),
        numeric={"x0": x0, "x1": x1},
        categorical={"c0": c0},
        pred_label=pred,
        pred_proba=proba,
        classes=classes,
        label=truth,
    )


def example_frames(
    seed: int = 0, *, n_reference: int = 800, n_window: int = 200, windows: int = 3, shift: float = 0.0
) -> tuple[Frame, list[Frame]]:
    """``(reference, windows)``: labelled rows with :data:`EXAMPLE_FEATURES`, predicted classes
    ``no``/``yes`` with probabilities, sources ``s0``..``s6``; ``shift`` moves ``x0`` in the windows.

    >>> ref, wins = example_frames(windows=2)
    >>> len(ref), [len(w) for w in wins], ref.classes
    (800, [200, 200], ('no', 'yes'))
    """
    rng = np.random.default_rng(seed)
    ref = _example(rng, n_reference, 1_700_000_000.0, 0.0)
    t = 1_700_000_000.0 + n_reference
    out = []
    for _ in range(windows):
        out.append(_example(rng, n_window, t, shift))
        t += n_window
    return ref, out
