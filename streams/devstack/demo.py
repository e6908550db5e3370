"""``driftwatch demo``: realistic traffic for two models, with drift, breaks and garbage on demand.

Two models are trained at start-up on datasets that ship with scikit-learn (no download):

* ``wine`` — a classifier (standard-scaled logistic regression, 3 cultivars, 13 numeric
  inputs) on :func:`sklearn.datasets.load_wine`, plus two derived categorical features
  (``alcohol_level``: low/medium/high, ``color_shade``: pale/ruby/deep);
  predictions carry a label and class probabilities;
* ``diabetes`` — a regression (standard-scaled ridge, disease progression one year
  on) on :func:`sklearn.datasets.load_diabetes` in its original units, with ``sex``
  and a derived ``bmi_class`` as categoricals; predictions carry a value.

Traffic is a smoothed bootstrap of each dataset (a random row plus Gaussian jitter of
``jitter`` standard deviations per feature — a kernel density sample), from 20
client ids with skewed volumes, at ``--rate`` events/s per model. True labels follow
``--label-delay`` seconds later for a ``--label-fraction`` of the events. Valid
events go through the SDK (:class:`streams.wire.producer.DriftwatchProducer`); malformed
bytes through a raw kafka-python producer.

What goes wrong, and when, is a list of **scenarios** (:data:`SCENARIOS`). The
built-ins have their own flags (``--drift-at``, ``--quality-break-at``,
``--malformed-rate``, ``--concept-drift-at``); any registered scenario also runs with
``--scenario NAME:key=value,key=value`` (lists use ``+``: ``features=alcohol+hue``).
``driftwatch demo --list-scenarios`` prints them with their parameters.

Adding one (e.g. in ``streams/devstack/attacks.py``, or a new module added to :data:`SCENARIO_MODULES`:
those are imported at the end of this file, and their scenarios register themselves)::

    @register_scenario
    class Probe(Scenario):
        name = "probe"
        help = "one client queries uniformly random inputs"
        params = {"share": Param(float, 0.2, "extra events, as a share of the normal traffic")}

        def on_inputs(self, batch, rng):          # before the model predicts
            m = batch.model
            n = int(round(len(batch) * self.share))
            X = rng.uniform(m.X.min(axis=0), m.X.max(axis=0), (n, m.n_inputs))
            batch.extend(m.finish_inputs(X), source_id="attacker-1")   # no true labels for these
            self.count(batch, "probe_events", n)

Hooks (all optional, each gets the :class:`TickBatch` of one model and the
scenario's own random generator): ``on_inputs`` (change what the model sees),
``on_features`` (change what is logged, after prediction), ``on_labels`` (change the
truth), ``on_messages`` (return extra raw :class:`RawMessage` bytes). A scenario runs while
``at <= t < until`` (seconds since the demo started) for the models in ``models``.

The run is deterministic given ``--seed`` (same events, predictions, labels, ids,
malformed bytes); only wall-clock times differ. Without ``--seed`` a random seed is
drawn (and printed), so two runs never reuse event ids.

From Python: ``run_demo(settings, DemoOptions(rate=500, events=1000)) -> DemoSummary``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import re
import signal
import sys
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import orjson

from detectors.errors import ServiceError
from streams.settings import Settings

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).parent / "examples"
TICK_SECONDS = 0.05  # target pacing granularity
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
            "alcohol_level": (lambda X: _bins(X[:, ia], [12.5, 13.5], ["low", "medium", "high"]), ["low", "medium", "high"]),
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


# ============================================================================ batches
@dataclass
class RawMessage:
    """Bytes a scenario wants on a topic as they are (``topic``: "inferences" or "labels")."""

    value: bytes
    key: bytes | None = None
    topic: str = "inferences"
    kind: str = "raw"  # counted in the summary under this name


@dataclass
class TickBatch:
    """The events of one model in one tick, as columns. Scenarios edit it in place.

    Before prediction: ``X`` (inputs), ``y_true``, ``source_id``, ``event_time``,
    ``label_mask``. After: ``pred`` (``label``/``proba`` or ``value``) and
    ``features`` (logged name -> column; categoricals are object arrays, ``None``
    = null; any object is allowed there, so scenarios can put wrong types in).
    """

    model: DemoModel
    t: float  # scenario clock: seconds since the demo started
    event_time: np.ndarray
    X: np.ndarray
    y_true: np.ndarray
    source_id: np.ndarray
    label_mask: np.ndarray
    pred: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    label_delay: np.ndarray | None = None  # seconds, per event (default: the run's delay)
    counters: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def extend(
        self,
        X: np.ndarray,
        source_id: str | Sequence[str | None] | None = None,
        y_true: np.ndarray | None = None,
        labelled: bool = False,
    ) -> None:
        """Add rows (e.g. an attacker's queries) before prediction; no labels by default."""
        X = np.asarray(X, dtype=float).reshape(-1, self.model.n_inputs)
        n = len(X)
        if n == 0:
            return
        if self.pred:
            raise RuntimeError("extend() is for the on_inputs hook, before the model predicts")
        self.X = np.vstack([self.X, X])
        if y_true is None:
            y_true = np.full(n, None, dtype=object) if self.model.task == "classification" else np.full(n, np.nan)
        self.y_true = np.concatenate([self.y_true.astype(object), np.asarray(y_true, dtype=object)])
        if self.model.task == "regression":
            self.y_true = self.y_true.astype(float)
        src = np.full(n, source_id, dtype=object) if source_id is None or isinstance(source_id, str) else np.asarray(source_id, dtype=object)
        self.source_id = np.concatenate([self.source_id, src])
        last = self.event_time[-1] if len(self.event_time) else time.time()
        self.event_time = np.concatenate([self.event_time, np.full(n, last)])
        self.label_mask = np.concatenate([self.label_mask, np.full(n, bool(labelled))])


# ============================================================================ scenarios
@dataclass(frozen=True)
class Param:
    """A scenario parameter: its type (float, int, str, bool or list), default and help."""

    type: type
    default: Any
    help: str = ""

    def parse(self, name: str, text: Any) -> Any:
        if not isinstance(text, str):
            if self.type is list and isinstance(text, (list, tuple)):
                return [str(x) for x in text]
            return text if text is None else self.type(text)
        try:
            if self.type is list:
                return [x for x in re.split(r"[+|]", text) if x]
            if self.type is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            return self.type(text)
        except ValueError:
            raise ValueError(f"parameter {name}: {text!r} is not a valid {self.type.__name__}") from None


class Scenario:
    """Base of every scenario: timing, model filter, parameters, no-op hooks.

    Subclasses set ``name``, ``help``, ``params`` and override any of the hooks.
    Every scenario also takes ``at`` (seconds, default 0), ``until`` (seconds, default
    never) and ``models`` (default all).
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    COMMON: ClassVar[dict[str, Param]] = {
        "at": Param(float, 0.0, "start, seconds after the demo starts"),
        "until": Param(float, None, "end, seconds after the demo starts (default: never)"),
        "models": Param(list, None, "models it applies to (default: all)"),
    }

    def __init__(self, **kwargs: Any) -> None:
        spec = {**self.COMMON, **self.params}
        unknown = set(kwargs) - set(spec)
        if unknown:
            raise ValueError(
                f"scenario {self.name}: unknown parameter(s) {sorted(unknown)}; known: {sorted(spec)}"
            )
        for key, p in spec.items():
            value = p.parse(key, kwargs[key]) if key in kwargs else p.default
            setattr(self, key, list(value) if isinstance(value, list) else value)
        self.counters: Counter = Counter()

    def describe(self) -> str:
        spec = {**self.COMMON, **self.params}
        parts = []
        for key, p in spec.items():
            v = getattr(self, key)
            if v != p.default:
                parts.append(f"{key}={'+'.join(v) if isinstance(v, list) else v}")
        return f"{self.name}" + (f"({', '.join(parts)})" if parts else "")

    def setup(self, models: dict[str, DemoModel]) -> None:
        """Check the parameters against the models (raise ValueError); default: models exist."""
        if self.models:
            unknown = [m for m in self.models if m not in models]
            if unknown:
                raise ValueError(f"scenario {self.name}: unknown model(s) {unknown}; running: {sorted(models)}")

    def applies(self, model: DemoModel, t: float) -> bool:
        if t < self.at or (self.until is not None and t >= self.until):
            return False
        return not self.models or model.model_id in self.models

    def count(self, batch: TickBatch, key: str, n: int = 1) -> None:
        """Add to the summary's counter ``<scenario>.<key>`` (per model)."""
        if n:
            self.counters[(batch.model.model_id, key)] += int(n)

    # hooks -------------------------------------------------------------------------------
    def on_inputs(self, batch: TickBatch, rng: np.random.Generator) -> None:
        """Before prediction: change ``batch.X`` / add rows with ``batch.extend``."""

    def on_features(self, batch: TickBatch, rng: np.random.Generator) -> None:
        """After prediction: change the logged ``batch.features``."""

    def on_labels(self, batch: TickBatch, rng: np.random.Generator) -> None:
        """Change the truth ``batch.y_true`` (or ``batch.label_mask``)."""

    def on_messages(self, batch: TickBatch, rng: np.random.Generator) -> list[RawMessage]:
        """Extra raw messages to publish as they are."""
        return []


#: scenario name -> class. Register new ones with :func:`register_scenario`.
SCENARIOS: dict[str, type[Scenario]] = {}


def register_scenario(cls: type[Scenario]) -> type[Scenario]:
    """Class decorator: make a scenario available to ``--scenario NAME:...``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name")
    if cls.name in SCENARIOS and SCENARIOS[cls.name] is not cls:
        raise ValueError(f"scenario {cls.name!r} is already registered by {SCENARIOS[cls.name].__name__}")
    clash = [k for k in cls.params if k in Scenario.COMMON or callable(getattr(Scenario, k, None))]
    if clash:
        raise ValueError(f"scenario {cls.name!r}: parameter name(s) {clash} clash with Scenario attributes")
    SCENARIOS[cls.name] = cls
    return cls


def parse_scenario(text: str) -> Scenario:
    """``NAME`` or ``NAME:key=value,key=value`` -> a scenario instance."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    kwargs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"scenario {name}: expected key=value, got {part!r}")
        kwargs[key.strip()] = value.strip()
    return SCENARIOS[name](**kwargs)


def _pick_features(scn: Scenario, models: dict[str, DemoModel], names: list[str] | None) -> None:
    """Check a scenario's ``features`` list: every name must belong to some running model."""
    if not names:
        return
    known = {f for m in models.values() for f in m.feature_names}
    unknown = [f for f in names if f not in known]
    if unknown:
        listing = "; ".join(f"{m.model_id}: {', '.join(m.feature_names)}" for m in models.values())
        raise ValueError(f"scenario {scn.name}: unknown feature(s) {unknown}; features are {listing}")


@register_scenario
class DataDrift(Scenario):
    """Covariate shift: chosen inputs move by ``shift`` standard deviations.

    The model sees the shifted inputs, so prediction drift follows; derived
    categoricals (e.g. ``alcohol_level``) move with their source.
    """

    name = "data-drift"
    help = "shift chosen numeric inputs by SHIFT standard deviations (the model sees it)"
    params: ClassVar[dict[str, Param]] = {
        "features": Param(list, None, "numeric inputs to shift (default: two per model)"),
        "shift": Param(float, 1.0, "shift in standard deviations"),
        "scale": Param(float, 1.0, "also multiply the spread around the mean by this"),
    }

    def setup(self, models: dict[str, DemoModel]) -> None:
        super().setup(models)
        _pick_features(self, models, self.features)
        for f in self.features or []:
            if not any(f in m.inputs for m in models.values()):
                raise ValueError(f"scenario {self.name}: {f!r} is not a numeric model input")

    def on_inputs(self, batch: TickBatch, rng: np.random.Generator) -> None:
        m = batch.model
        names = [f for f in (self.features or m.default_drift_features) if f in m.inputs]
        if names:
            batch.X = shift_inputs(m, batch.X, names, self.shift, self.scale)
            self.count(batch, "shifted_events", len(batch))


def shift_inputs(model: DemoModel, X: np.ndarray, names: Sequence[str], shift: float | np.ndarray = 1.0,
                 scale: float = 1.0) -> np.ndarray:
    """``X`` with the named inputs moved by ``shift`` standard deviations (per row when an array) and their
    spread around the dataset mean multiplied by ``scale``; clipped and rounded as real inputs.
    The ``data-drift`` scenario's transformation (``driftwatch up`` injects it one minute in)."""
    X = np.array(X, dtype=np.float64, copy=True)
    shift = np.asarray(shift, dtype=np.float64)
    for f in names:
        j = model.index(f)
        mean = float(model.X[:, j].mean())
        X[:, j] = mean + (X[:, j] - mean) * scale + shift * model.std[j]
    return model.finish_inputs(X)


@register_scenario
class QualityBreak(Scenario):
    """An upstream pipeline breaks: nulls, out-of-range values and wrong types in chosen features."""

    name = "quality-break"
    help = "nulls, out-of-range values and wrong types in chosen logged features"
    params: ClassVar[dict[str, Param]] = {
        "features": Param(list, None, "logged features to break (default: two per model)"),
        "null_rate": Param(float, 0.3, "share of events with the feature null"),
        "out_of_range_rate": Param(float, 0.2, "share with an impossible value (numeric) or an unknown category"),
        "type_error_rate": Param(float, 0.05, "share with a value of the wrong type"),
    }

    def setup(self, models: dict[str, DemoModel]) -> None:
        super().setup(models)
        _pick_features(self, models, self.features)
        total = self.null_rate + self.out_of_range_rate + self.type_error_rate
        if min(self.null_rate, self.out_of_range_rate, self.type_error_rate) < 0 or total > 1:
            raise ValueError(f"scenario {self.name}: rates must be >= 0 and add up to at most 1 (got {total})")

    def on_features(self, batch: TickBatch, rng: np.random.Generator) -> None:
        m = batch.model
        n = len(batch)
        for f in [f for f in (self.features or m.default_quality_features) if f in batch.features]:
            u = rng.random(n)
            null = u < self.null_rate
            oor = (u >= self.null_rate) & (u < self.null_rate + self.out_of_range_rate)
            bad_type = (u >= self.null_rate + self.out_of_range_rate) & (
                u < self.null_rate + self.out_of_range_rate + self.type_error_rate
            )
            col = batch.features[f].astype(object)
            if f in m.categorical:
                col[oor] = "UNKNOWN"
                col[bad_type] = 0.5  # a float where a category is expected (ints read as text)
            else:
                j = m.index(f)
                hi = float(m.X[:, j].max()) + 10 * float(m.std[j])
                col[oor] = np.where(rng.random(int(oor.sum())) < 0.5, -999.0, round(hi, 3))
                col[bad_type] = "n/a"  # a string where a number is expected
            col[null] = None
            batch.features[f] = col
            self.count(batch, "null_values", int(null.sum()))
            self.count(batch, "out_of_range_values", int(oor.sum()))
            self.count(batch, "type_errors", int(bad_type.sum()))


@register_scenario
class ConceptDrift(Scenario):
    """The world changes, inputs do not: true labels flip (classifier) or shift (regression)."""

    name = "concept-drift"
    help = "true labels change: a share FLIP of classes moves to the next class; regression targets shift"
    params: ClassVar[dict[str, Param]] = {
        "flip": Param(float, 0.4, "classification: share of labels moved to the next class"),
        "shift": Param(float, 1.0, "regression: target shift in standard deviations"),
    }

    def setup(self, models: dict[str, DemoModel]) -> None:
        super().setup(models)
        if not 0 <= self.flip <= 1:
            raise ValueError(f"scenario {self.name}: flip must be in [0, 1], got {self.flip}")

    def on_labels(self, batch: TickBatch, rng: np.random.Generator) -> None:
        m = batch.model
        if m.task == "classification":
            flip = rng.random(len(batch)) < self.flip
            old = batch.y_true
            new = old.copy()
            k = len(m.classes)
            for i, c in enumerate(m.classes):  # class_i -> class_{i+1}: a systematic change
                new[flip & (old == c)] = m.classes[(i + 1) % k]
            batch.y_true = new
            self.count(batch, "flipped_labels", int((flip & batch.label_mask & np.not_equal(old, None)).sum()))
        else:
            batch.y_true = batch.y_true + self.shift * m.y_std
            self.count(batch, "shifted_labels", int(batch.label_mask.sum()))


MALFORMED_KINDS = (
    "invalid_json",
    "not_json",
    "empty",
    "nan_literal",
    "wrong_types",
    "missing_fields",
    "unknown_model",
    "bad_schema_version",
    "unknown_type",
    "batch_length_mismatch",
    "label_wrong_type",
)


@register_scenario
class Malformed(Scenario):
    """Garbage on the wire: every kind the worker must dead-letter (one message each)."""

    name = "malformed"
    help = "malformed messages (RATE per valid event): bad JSON, wrong types, missing fields, unknown model..."
    params: ClassVar[dict[str, Param]] = {
        "rate": Param(float, 0.01, "malformed messages per valid event"),
        "kinds": Param(list, None, "subset of: " + ", ".join(MALFORMED_KINDS)),
    }

    def setup(self, models: dict[str, DemoModel]) -> None:
        super().setup(models)
        if self.rate < 0:
            raise ValueError(f"scenario {self.name}: rate must be >= 0")
        bad = [k for k in self.kinds or [] if k not in MALFORMED_KINDS]
        if bad:
            raise ValueError(f"scenario {self.name}: unknown kind(s) {bad}; known: {', '.join(MALFORMED_KINDS)}")

    def on_messages(self, batch: TickBatch, rng: np.random.Generator) -> list[RawMessage]:
        n = int(rng.poisson(self.rate * len(batch))) if self.rate < 1 else int(round(self.rate * len(batch)))
        kinds = self.kinds or list(MALFORMED_KINDS)
        out = []
        for _ in range(n):
            kind = kinds[int(rng.integers(len(kinds)))]
            out.append(malformed_message(kind, batch, rng))
            self.count(batch, kind)
        return out


def _valid_event(batch: TickBatch, rng: np.random.Generator) -> dict[str, Any]:
    m = batch.model
    i = int(rng.integers(len(batch)))
    feats = {k: _py(v[i]) for k, v in batch.features.items()}
    if m.task == "classification":
        pred: dict[str, Any] = {"label": str(batch.pred["label"][i])}
    else:
        pred = {"value": float(batch.pred["value"][i])}
    return {
        "schema_version": 1,
        "type": "inference",
        "event_id": f"bad-{int(rng.integers(1 << 62)):x}",
        "model_id": m.model_id,
        "model_version": m.version,
        "event_time": float(batch.event_time[i]),
        "features": feats,
        "prediction": pred,
    }


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def malformed_message(kind: str, batch: TickBatch, rng: np.random.Generator) -> RawMessage:
    """One malformed message of ``kind`` built from this tick's traffic."""
    m = batch.model
    key = m.model_id.encode()
    ev = _valid_event(batch, rng)
    if kind == "invalid_json":
        raw = orjson.dumps(ev)
        return RawMessage(raw[: int(rng.integers(1, len(raw) - 1))], key, kind=kind)
    if kind == "not_json":
        return RawMessage(b"\x00\xff" + rng.bytes(30), key, kind=kind)
    if kind == "empty":
        return RawMessage(b"", key, kind=kind)
    if kind == "nan_literal":
        name = next(iter(ev["features"]))
        text = orjson.dumps(ev).decode()
        text = text.replace(f'"{name}":', f'"{name}":NaN,"_was":', 1)
        return RawMessage(text.encode(), key, kind=kind)
    if kind == "wrong_types":
        variant = int(rng.integers(3))
        if variant == 0:
            ev["features"] = list(ev["features"].values())
        elif variant == 1:
            ev["event_time"] = "yesterday"
        else:
            ev["prediction"] = "setosa"
        return RawMessage(orjson.dumps(ev), key, kind=kind)
    if kind == "missing_fields":
        ev.pop(["model_id", "prediction", "event_id", "features"][int(rng.integers(4))])
        return RawMessage(orjson.dumps(ev), key, kind=kind)
    if kind == "unknown_model":
        ev["model_id"] = "ghost-model"
        return RawMessage(orjson.dumps(ev), b"ghost-model", kind=kind)
    if kind == "bad_schema_version":
        ev["schema_version"] = 99
        return RawMessage(orjson.dumps(ev), key, kind=kind)
    if kind == "unknown_type":
        ev["type"] = "inference_v2"
        return RawMessage(orjson.dumps(ev), key, kind=kind)
    if kind == "batch_length_mismatch":
        batch_msg = {
            "schema_version": 1,
            "type": "inference_batch",
            "model_id": m.model_id,
            "model_version": m.version,
            "event_id": [ev["event_id"], ev["event_id"] + "b"],
            "event_time": [ev["event_time"]],
            "features": {k: [v, v] for k, v in ev["features"].items()},
            "prediction": {k: [v, v, v] for k, v in ev["prediction"].items()},
        }
        return RawMessage(orjson.dumps(batch_msg), key, kind=kind)
    if kind == "label_wrong_type":
        lab = {
            "schema_version": 1,
            "type": "label",
            "event_id": ev["event_id"],
            "model_id": m.model_id,
            "label": {"value": 1},
            "label_time": ev["event_time"],
        }
        return RawMessage(orjson.dumps(lab), key, topic="labels", kind=kind)
    raise ValueError(f"unknown malformed kind {kind!r}; known: {', '.join(MALFORMED_KINDS)}")


# ============================================================================ options & summary
@dataclass
class DemoOptions:
    """Everything ``driftwatch demo`` can be told (see ``--help`` for each)."""

    models: list[str] = field(default_factory=lambda: list(MODEL_BUILDERS))
    rate: float = 200.0  # events/s per model
    duration: float | None = None  # seconds (scenario clock)
    events: int | None = None  # per model (normal traffic; scenario extras come on top)
    label_delay: float = 5.0
    label_fraction: float = 0.5
    seed: int | None = None
    sources: int = 20
    pace: bool = True  # False: as fast as possible on a simulated clock
    start_time: float | None = None  # simulated clock's start, epoch seconds (pace=False only; default now)
    drift_at: float | None = None
    drift_features: list[str] | None = None
    drift_shift: float = 1.0
    quality_break_at: float | None = None
    quality_features: list[str] | None = None
    malformed_rate: float = 0.0
    concept_drift_at: float | None = None
    concept_flip: float = 0.4
    concept_shift: float = 1.0
    scenarios: list[Scenario | str] = field(default_factory=list)
    create_topics: bool = True
    progress_every: float = 10.0  # seconds between progress log lines (0: none)
    producer_options: dict[str, Any] = field(default_factory=dict)

    def build_scenarios(self) -> list[Scenario]:
        """The built-in flags as scenarios, then the explicit ones."""
        out: list[Scenario] = []
        if self.drift_at is not None:
            out.append(DataDrift(at=self.drift_at, features=self.drift_features, shift=self.drift_shift))
        if self.quality_break_at is not None:
            out.append(QualityBreak(at=self.quality_break_at, features=self.quality_features))
        if self.malformed_rate:
            out.append(Malformed(rate=self.malformed_rate))
        if self.concept_drift_at is not None:
            out.append(ConceptDrift(at=self.concept_drift_at, flip=self.concept_flip, shift=self.concept_shift))
        for s in self.scenarios:
            out.append(parse_scenario(s) if isinstance(s, str) else s)
        return out


@dataclass
class DemoSummary:
    """What a demo run published."""

    seed: int
    elapsed_s: float  # start to finish, including the wait for the last labels
    events: dict[str, int]  # per model, as handed to the SDK
    labels: dict[str, int]
    malformed: dict[str, int]  # per kind
    malformed_by_topic: dict[str, int]
    scenarios: list[str]
    counters: dict[str, int]  # "<scenario>.<model>.<key>" -> n
    producer: dict[str, int]  # DriftwatchProducer.stats()
    raw_failed: int = 0
    traffic_s: float = 0.0  # start to the last inference event
    interrupted: bool = False
    delivered: bool = True  # SDK flush and raw flush completed

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def total_labels(self) -> int:
        return sum(self.labels.values())

    @property
    def total_malformed(self) -> int:
        return sum(self.malformed.values())

    def format(self) -> str:
        span = self.traffic_s or self.elapsed_s
        rate = self.total_events / span if span > 0 else 0.0
        lines = [
            f"demo {'interrupted' if self.interrupted else 'done'} after {self.elapsed_s:.1f} s (seed {self.seed}): "
            f"{self.total_events} events ({rate:.0f}/s over {span:.1f} s), {self.total_labels} labels, "
            f"{self.total_malformed} malformed messages"
        ]
        for m in self.events:
            lines.append(f"  {m:<10} {self.events[m]:>9} events {self.labels.get(m, 0):>9} labels")
        if self.malformed:
            lines.append("  malformed: " + ", ".join(f"{k} {v}" for k, v in sorted(self.malformed.items())))
        if self.scenarios:
            lines.append("  scenarios: " + "; ".join(self.scenarios))
        p = self.producer
        lost = p.get("dropped_buffer_full", 0) + p.get("failed", 0) + p.get("dropped_closed", 0) + self.raw_failed
        lines.append(
            f"  delivered: {p.get('inferences_delivered', 0)} events, {p.get('labels_delivered', 0)} labels "
            f"in {p.get('messages_delivered', 0)} messages; lost {lost}"
            + ("" if self.delivered else " (flush timed out: some may still be in flight)")
        )
        return "\n".join(lines)


# ============================================================================ the run
class _Stream:
    """One model's traffic generator (its own random generator, ids and sources)."""

    def __init__(self, model: DemoModel, index: int, seed: int, n_sources: int) -> None:
        self.model = model
        self.rng = np.random.default_rng([seed, index, 0])
        tag = int(np.random.default_rng([seed, index, 1]).integers(1 << 32))
        self.id_prefix = f"{model.model_id}-{tag:08x}-"
        self.seq = 0
        n_sources = max(1, n_sources)
        self.sources = np.asarray([f"client-{i + 1:02d}" for i in range(n_sources)], dtype=object)
        w = 1.0 / np.arange(1, n_sources + 1)  # Zipf-like: a few heavy clients
        self.source_p = w / w.sum()
        self.sent = 0  # normal traffic
        self.extra = 0  # rows added by scenarios
        self.labels = 0

    def batch(self, t: float, times: np.ndarray, label_fraction: float) -> TickBatch:
        n = len(times)
        X, y = self.model.sample(self.rng, n)
        src = self.sources[self.rng.choice(len(self.sources), n, p=self.source_p)]
        mask = self.rng.random(n) < label_fraction
        return TickBatch(self.model, t, times, X, y, src, mask)


def _scenario_rng(seed: int, scenario: Scenario, position: int, model_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 1000 + position, zlib.crc32(scenario.name.encode()), model_index])


class _Sender:
    """Publishes one tick: SDK for valid events and labels, raw producer for garbage.

    ``client_factory`` replaces kafka-python's ``KafkaProducer`` for both (tests).
    """

    def __init__(self, settings: Settings, options: DemoOptions, client_factory: Callable[..., Any] | None = None) -> None:
        from streams.wire.producer import DriftwatchProducer

        kw: dict[str, Any] = {"linger_ms": 100.0, "max_buffer_events": 1_000_000, "client_id": "driftwatch-demo"}
        kw.update(options.producer_options)
        self.settings = settings
        self.client_factory = client_factory
        self.dw = DriftwatchProducer(settings=settings, client_factory=client_factory, **kw)
        self._raw: Any = None
        self.raw_futures: list[Any] = []
        self.raw_failed = 0
        self.malformed: Counter = Counter()
        self.malformed_by_topic: Counter = Counter()

    def inferences(self, b: TickBatch, ids: list[str]) -> None:
        m = b.model
        names = list(b.features)
        cols = [_column_list(b.features[k]) for k in names]
        rows = [dict(zip(names, vals)) for vals in zip(*cols)] if names else [{} for _ in ids]
        times = b.event_time.tolist()
        srcs = b.source_id.tolist()
        send = self.dw.send_inference
        if m.task == "classification":
            labels = b.pred["label"].tolist()
            proba = np.round(b.pred["proba"], PROBA_DECIMALS).tolist()
            classes = m.classes
            for i, eid in enumerate(ids):
                send(m.model_id, rows[i], {"label": labels[i], "probabilities": dict(zip(classes, proba[i]))},
                     event_id=eid, event_time=times[i], model_version=m.version, source_id=srcs[i])
        else:
            values = np.round(b.pred["value"], VALUE_DECIMALS).tolist()
            for i, eid in enumerate(ids):
                send(m.model_id, rows[i], {"value": values[i]},
                     event_id=eid, event_time=times[i], model_version=m.version, source_id=srcs[i])

    def labels(self, model_id: str, ids: list[str], labels: list[Any], label_time: float) -> None:
        send = self.dw.send_label
        for eid, lab in zip(ids, labels):
            send(model_id, eid, lab, label_time=label_time)

    def raw(self, msg: RawMessage) -> None:
        if self._raw is None:
            from kafka import KafkaProducer

            self._raw = (self.client_factory or KafkaProducer)(
                bootstrap_servers=self.settings.kafka_bootstrap.split(","),
                client_id="driftwatch-demo-raw",
                linger_ms=20,
                **self.settings.kafka_client_options(),
            )
        topic = self.settings.topic_labels if msg.topic == "labels" else self.settings.topic_inferences
        self.raw_futures.append(self._raw.send(topic, value=msg.value, key=msg.key))
        self.malformed[msg.kind] += 1
        self.malformed_by_topic[topic] += 1
        if len(self.raw_futures) > 10_000:
            self._reap(block=False)

    def _reap(self, block: bool) -> None:
        keep = []
        for f in self.raw_futures:
            if block or f.is_done:
                try:
                    f.get(timeout=30)
                except Exception as e:  # counted and reported
                    self.raw_failed += 1
                    log.warning("demo: raw message not delivered: %s", e)
            else:
                keep.append(f)
        self.raw_futures = keep

    def close(self, timeout: float = 30.0) -> bool:
        ok = self.dw.close(timeout)
        if self._raw is not None:
            try:
                self._raw.flush(timeout=timeout)
            except Exception as e:
                log.warning("demo: raw producer flush failed: %s", e)
                ok = False
            self._reap(block=True)
            self._raw.close(timeout=5)
        return ok and self.raw_failed == 0


def _column_list(col: np.ndarray) -> list[Any]:
    """A column as plain Python values (NaN -> None for numeric columns)."""
    if col.dtype.kind == "f":
        out = col.tolist()
        if np.isnan(col).any():
            out = [None if v != v else v for v in out]
        return out
    return [_py(v) for v in col.tolist()] if col.dtype == object else col.tolist()


def run_demo(
    settings: Settings | None = None,
    options: DemoOptions | None = None,
    stop: threading.Event | None = None,
    client_factory: Callable[..., Any] | None = None,
) -> DemoSummary:
    """Publish demo traffic until ``events``/``duration`` is reached or ``stop`` is set.

    Returns what was sent. Raises ValueError for bad options (before anything is sent).
    ``KeyboardInterrupt`` ends the run early: the SDK is flushed and the summary says so.
    ``client_factory`` stands in for kafka-python's ``KafkaProducer`` (tests without a
    broker; topics are then not created).
    """
    settings = settings or Settings()
    opts = options or DemoOptions()
    _validate(opts)
    seed = opts.seed if opts.seed is not None else int(np.random.SeedSequence().entropy % (1 << 31))
    models = build_models(opts.models)
    scenarios = opts.build_scenarios()
    for s in scenarios:
        s.setup(models)
    if opts.create_topics and client_factory is None:
        from streams.broker.admin import ensure_topics

        ensure_topics(settings)
    snd = _Sender(settings, opts, client_factory)
    streams = [_Stream(m, i, seed, opts.sources) for i, m in enumerate(models.values())]
    srngs = {
        (si, mi): _scenario_rng(seed, s, si, mi) for si, s in enumerate(scenarios) for mi in range(len(streams))
    }
    stop = stop or threading.Event()

    chunk = max(1, int(round(opts.rate * TICK_SECONDS)))
    dt = chunk / opts.rate
    wall0 = opts.start_time if opts.start_time is not None else time.time()
    mono0 = time.monotonic()
    pending: deque[tuple[float, str, list[str], list[Any]]] = deque()  # (due t, model, ids, labels)
    k = 0
    traffic_s = 0.0
    interrupted = False
    last_progress = mono0
    log.info(
        "demo: models %s at %.0f events/s each, seed %d, scenarios: %s",
        ", ".join(models), opts.rate, seed, "; ".join(s.describe() for s in scenarios) or "none",
    )

    def send_due_labels(now_t: float) -> None:
        while pending and pending[0][0] <= now_t:
            _due, model_id, ids, labs = pending.popleft()
            snd.labels(model_id, ids, labs, wall0 + _due)

    try:
        while not stop.is_set():
            t = k * dt
            if opts.duration is not None and t >= opts.duration:
                break
            if opts.events is not None and all(s.sent >= opts.events for s in streams):
                break
            if opts.pace:
                wait = mono0 + t - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
            for mi, st in enumerate(streams):
                n = chunk if opts.events is None else min(chunk, opts.events - st.sent)
                if n <= 0:
                    continue
                times = wall0 + t + np.arange(n) / opts.rate
                b = st.batch(t, times, opts.label_fraction)
                active = [(si, s) for si, s in enumerate(scenarios) if s.applies(st.model, t)]
                for si, s in active:
                    s.on_inputs(b, srngs[si, mi])
                b.pred = st.model.predict(b.X)
                b.features = st.model.derive(b.X)
                for si, s in active:
                    s.on_features(b, srngs[si, mi])
                for si, s in active:
                    s.on_labels(b, srngs[si, mi])
                raws = [r for si, s in active for r in s.on_messages(b, srngs[si, mi])]
                ids = [f"{st.id_prefix}{st.seq + i:09d}" for i in range(len(b))]
                st.seq += len(b)
                st.sent += n
                st.extra += len(b) - n
                snd.inferences(b, ids)
                for r in raws:
                    snd.raw(r)
                mask = b.label_mask & _has_truth(b)
                if mask.any():
                    sel = np.flatnonzero(mask)
                    labs = b.y_true[sel]
                    labs = np.round(labs.astype(float), 3).tolist() if st.model.task == "regression" else [str(x) for x in labs]
                    pending.append((t + opts.label_delay, st.model.model_id, [ids[i] for i in sel], labs))
                    st.labels += len(sel)
            send_due_labels(t)
            traffic_s = time.monotonic() - mono0
            k += 1
            if opts.progress_every and time.monotonic() - last_progress >= opts.progress_every:
                last_progress = time.monotonic()
                el = last_progress - mono0
                log.info("demo: t=%.0fs %s", el, ", ".join(f"{s.model.model_id} {s.sent}" for s in streams))
        # the labels still owed: wait for them (paced), or send them at once (simulated clock)
        while pending and not stop.is_set():
            due = pending[0][0]
            if opts.pace:
                wait = mono0 + due - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
            send_due_labels(due)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        snd.close(timeout=5.0)  # deliver what was sent before the error, then let it propagate
        raise
    # labels never published are not counted
    for _due, model_id, ids, _labs in pending:
        for st in streams:
            if st.model.model_id == model_id:
                st.labels -= len(ids)
    interrupted = interrupted or stop.is_set()
    elapsed = time.monotonic() - mono0
    delivered = snd.close(timeout=5.0 if interrupted else 30.0)
    stats = snd.dw.stats().as_dict()
    counters: dict[str, int] = {}
    for s in scenarios:
        for (model_id, key), v in sorted(s.counters.items()):
            counters[f"{s.name}.{model_id}.{key}"] = counters.get(f"{s.name}.{model_id}.{key}", 0) + v
    return DemoSummary(
        seed=seed,
        elapsed_s=elapsed,
        events={s.model.model_id: s.sent + s.extra for s in streams},
        labels={s.model.model_id: s.labels for s in streams},
        malformed=dict(snd.malformed),
        malformed_by_topic=dict(snd.malformed_by_topic),
        scenarios=[s.describe() for s in scenarios],
        counters=counters,
        producer=stats,
        raw_failed=snd.raw_failed,
        traffic_s=traffic_s,
        interrupted=interrupted,
        delivered=delivered,
    )


def _has_truth(b: TickBatch) -> np.ndarray:
    if b.model.task == "regression":
        return np.isfinite(b.y_true.astype(float))
    return np.not_equal(b.y_true, None)


def _validate(o: DemoOptions) -> None:
    if not o.rate > 0 or not math.isfinite(o.rate):
        raise ValueError(f"rate: must be > 0 events/s, got {o.rate}")
    if o.duration is not None and o.duration < 0:
        raise ValueError(f"duration: must be >= 0, got {o.duration}")
    if o.events is not None and o.events < 0:
        raise ValueError(f"events: must be >= 0, got {o.events}")
    if o.label_delay < 0:
        raise ValueError(f"label_delay: must be >= 0, got {o.label_delay}")
    if not 0 <= o.label_fraction <= 1:
        raise ValueError(f"label_fraction: must be in [0, 1], got {o.label_fraction}")
    if not o.malformed_rate >= 0:
        raise ValueError(f"malformed_rate: must be >= 0, got {o.malformed_rate}")
    if o.start_time is not None and o.pace:
        raise ValueError("start_time: only with pace=False (--no-pace); paced events carry the real time")
    if o.sources < 1:
        raise ValueError(f"sources: must be >= 1, got {o.sources}")
    if not o.models:
        raise ValueError("models: name at least one demo model")


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
    return {k: _column_list(v) for k, v in cols.items()}


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


# ============================================================================ CLI
def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("traffic")
    g.add_argument("--models", type=_csv_list, default=list(MODEL_BUILDERS),
                   help=f"demo models, comma separated (default: {','.join(MODEL_BUILDERS)})")
    g.add_argument("--rate", type=float, default=200.0, help="events per second per model (default 200)")
    stop = g.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    stop.add_argument("--events", type=int, help="stop after this many events per model")
    g.add_argument("--label-delay", type=float, default=5.0, help="seconds until a true label is published (default 5)")
    g.add_argument("--label-fraction", type=float, default=0.5, help="share of events that get a label (default 0.5)")
    g.add_argument("--sources", type=int, default=20, help="number of client ids (default 20)")
    g.add_argument("--seed", type=int, help="random seed: same seed, same traffic (default: random, printed)")
    g.add_argument("--no-pace", dest="pace", action="store_false",
                   help="send as fast as possible; event times follow a simulated clock at --rate")
    g.add_argument("--start-time", type=float,
                   help="with --no-pace: the simulated clock's start, epoch seconds (default: now)")
    s = parser.add_argument_group("scenarios (times are seconds after the start)")
    s.add_argument("--drift-at", type=float, help="data drift starts at this time")
    s.add_argument("--drift-features", type=_csv_list, help="inputs that drift (default: wine alcohol,color_intensity; diabetes bmi,bp)")
    s.add_argument("--drift-shift", type=float, default=1.0, help="drift size in standard deviations (default 1.0)")
    s.add_argument("--quality-break-at", type=float, help="nulls / out-of-range / wrong types start at this time")
    s.add_argument("--quality-features", type=_csv_list, help="features that break (default: wine magnesium,alcohol_level; diabetes s5,bmi_class)")
    s.add_argument("--malformed-rate", type=float, default=0.0, help="malformed messages per valid event (e.g. 0.01)")
    s.add_argument("--concept-drift-at", type=float, help="true labels change at this time")
    s.add_argument("--concept-flip", type=float, default=0.4, help="classifier: share of labels moved to another class (default 0.4)")
    s.add_argument("--concept-shift", type=float, default=1.0, help="regression: target shift in standard deviations (default 1.0)")
    s.add_argument("--scenario", action="append", default=[], metavar="NAME[:k=v,...]",
                   help="run a registered scenario (repeatable); see --list-scenarios")
    s.add_argument("--list-scenarios", action="store_true", help="list the scenarios and their parameters, then exit")
    o = parser.add_argument_group("other")
    o.add_argument("--bootstrap", help="Kafka bootstrap servers (default: DRIFTWATCH_KAFKA_BOOTSTRAP)")
    o.add_argument("--no-create-topics", dest="create_topics", action="store_false",
                   help="do not create missing topics first")
    o.add_argument("--write-reference", type=Path, metavar="DIR",
                   help="write each model's reference CSV (<model>_reference.csv) into DIR and exit")
    o.add_argument("--quiet", action="store_true", help="no progress lines")


def list_scenarios() -> str:
    lines = []
    for name, cls in sorted(SCENARIOS.items()):
        lines.append(f"{name}: {cls.help}")
        for key, p in {**Scenario.COMMON, **cls.params}.items():
            lines.append(f"    {key} ({p.type.__name__}, default {p.default}): {p.help}")
    return "\n".join(lines)


def options_from_args(args: argparse.Namespace) -> DemoOptions:
    return DemoOptions(
        models=args.models,
        rate=args.rate,
        duration=args.duration,
        events=args.events,
        label_delay=args.label_delay,
        label_fraction=args.label_fraction,
        seed=args.seed,
        sources=args.sources,
        pace=args.pace,
        start_time=args.start_time,
        drift_at=args.drift_at,
        drift_features=args.drift_features,
        drift_shift=args.drift_shift,
        quality_break_at=args.quality_break_at,
        quality_features=args.quality_features,
        malformed_rate=args.malformed_rate,
        concept_drift_at=args.concept_drift_at,
        concept_flip=args.concept_flip,
        concept_shift=args.concept_shift,
        scenarios=list(args.scenario),
        create_topics=args.create_topics,
        progress_every=0.0 if args.quiet else 10.0,
    )


def run(args: argparse.Namespace) -> int:
    if args.list_scenarios:
        print(list_scenarios())
        return 0
    if args.write_reference:
        for m in build_models(args.models).values():
            print(write_reference_csv(m, reference_path(m.model_id, args.write_reference)))
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = Settings()
    if args.bootstrap:
        settings = settings.model_copy(update={"kafka_bootstrap": args.bootstrap})
    stop = threading.Event()
    # `driftwatch up` (and systemd, Kubernetes...) stop with SIGTERM: finish like Ctrl-C,
    # flushing what was already handed to the SDK.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        opts = options_from_args(args)
        summary = run_demo(settings, opts, stop=stop)
    except ValueError as e:
        print(f"driftwatch demo: {e}", file=sys.stderr)
        return 2
    except ServiceError as e:  # TopicError (the broker refused or is away) and friends: say it plainly
        print(f"driftwatch demo: {e}", file=sys.stderr)
        return 1
    print(summary.format())
    return 0 if summary.delivered else 1


# ============================================================================ plug-ins
#: Modules whose scenarios (and models) register themselves when imported; each must exist.
SCENARIO_MODULES: tuple[str, ...] = ("streams.devstack.attacks",)


def _load_plugins() -> None:
    import importlib

    for name in SCENARIO_MODULES:
        importlib.import_module(name)


_load_plugins()
