"""What goes wrong in the demo, and when: the scenario API and the built-in scenarios.

A scenario edits one model's :class:`TickBatch` (the events of one tick, as columns) through
its hooks and registers itself with :func:`register_scenario`; ``driftwatch demo --scenario
NAME:key=value`` runs it. The built-ins (data drift, quality break, concept drift, malformed
messages) are here; the attacks are in :mod:`streams.devstack.attacks`. How to add one:
:mod:`streams.devstack.demo`.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import orjson
from numpy.typing import NDArray

from streams.devstack.models import DemoModel, plain_value
from streams.wire.contract import INFERENCE, LABEL, SCHEMA_VERSION

log = logging.getLogger(__name__)


# ============================================================================ batches
@dataclass
class ScenarioMessage:
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
        src = (
            np.full(n, source_id, dtype=object)
            if source_id is None or isinstance(source_id, str)
            else np.asarray(source_id, dtype=object)
        )
        self.source_id = np.concatenate([self.source_id, src])
        last = self.event_time[-1] if len(self.event_time) else time.time()
        self.event_time = np.concatenate([self.event_time, np.full(n, last)])
        self.label_mask = np.concatenate([self.label_mask, np.full(n, bool(labelled))])


def not_none(col: np.ndarray) -> NDArray[np.bool_]:
    """Per element of an object column: is it not ``None`` (a label or value is present)."""
    return np.not_equal(col, np.array(None, dtype=object))


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


@dataclass(frozen=True)
class _Declared:
    default: Any
    help: str


def param(default: Any = None, help: str = "") -> Any:
    """Declare a scenario parameter as an annotated class attribute, its type written once::

        share: float = param(0.1, "attack events per normal event")

    The annotation gives its type (float, int, str, bool or list[str], optionally ``| None``);
    the class's :attr:`Scenario.params` is built from these declarations.
    """
    return _Declared(default, help)


_PARAM_TYPES: dict[str, type] = {"float": float, "int": int, "str": str, "bool": bool, "list[str]": list}


def _param_type(owner: str, name: str, annotation: Any) -> type:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    base = text.replace(" ", "").removesuffix("|None").removeprefix("None|")
    if base not in _PARAM_TYPES:
        raise TypeError(f"{owner}.{name}: a parameter is float, int, str, bool or list[str] (or | None), not {text}")
    return _PARAM_TYPES[base]


class Scenario:
    """Base of every scenario: timing, model filter, parameters, parameter checks, no-op hooks.

    Subclasses set ``name`` and ``help``, declare their parameters with :func:`param`, check
    them in :meth:`check` and override any of the hooks. Every scenario also takes ``at``
    (seconds, default 0), ``until`` (seconds, default never) and ``models`` (default all).
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    #: the scenario's own parameters, built from its :func:`param` declarations
    params: ClassVar[dict[str, Param]] = {}
    COMMON: ClassVar[dict[str, Param]] = {
        "at": Param(float, 0.0, "start, seconds after the demo starts"),
        "until": Param(float, None, "end, seconds after the demo starts (default: never)"),
        "models": Param(list, None, "models it applies to (default: all)"),
    }
    # the parameters, set from COMMON and ``params`` by __init__ (declared so they are typed)
    at: float
    until: float | None
    models: list[str] | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "params" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: declare parameters as `name: type = param(default, help)`, not params")
        annotations = inspect.get_annotations(cls)  # its own, as written (strings: postponed evaluation)
        own = {}
        for key, d in [(k, v) for k, v in cls.__dict__.items() if isinstance(v, _Declared)]:
            if key not in annotations:
                raise TypeError(f"{cls.__name__}.{key}: a parameter needs its type: `{key}: float = param(...)`")
            own[key] = Param(_param_type(cls.__name__, key, annotations[key]), d.default, d.help)
            delattr(cls, key)  # the instance's value is set by __init__
        cls.params = {**cls.params, **own}

    def __init__(self, **kwargs: Any) -> None:
        spec = {**self.COMMON, **self.params}
        unknown = set(kwargs) - set(spec)
        if unknown:
            raise ValueError(f"scenario {self.name}: unknown parameter(s) {sorted(unknown)}; known: {sorted(spec)}")
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
        """Check the parameters against the models (ValueError): the models exist, then :meth:`check`."""
        if self.models:
            unknown = [m for m in self.models if m not in models]
            self.require(not unknown, f"unknown model(s) {unknown}; running: {sorted(models)}")
        self.check(models)

    def check(self, models: dict[str, DemoModel]) -> None:
        """The scenario's own parameter checks, with :meth:`require`; default: none."""

    def require(self, ok: bool, message: str) -> None:
        """Refuse the parameters unless ``ok``: ``ValueError("scenario NAME: message")``."""
        if not ok:
            raise ValueError(f"scenario {self.name}: {message}")

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

    def on_messages(self, batch: TickBatch, rng: np.random.Generator) -> list[ScenarioMessage]:
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


def require_numeric_inputs(scn: Scenario, models: dict[str, DemoModel], names: Sequence[str]) -> None:
    """Check that every name is a numeric input of some running model (what an input shift can move)."""
    for f in names:
        scn.require(any(f in m.inputs for m in models.values()), f"{f!r} is not a numeric model input")


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
class DataDriftScenario(Scenario):
    """Covariate shift: chosen inputs move by ``shift`` standard deviations.

    The model sees the shifted inputs, so prediction drift follows; derived
    categoricals (e.g. ``alcohol_level``) move with their source.
    """

    name = "data-drift"
    help = "shift chosen numeric inputs by SHIFT standard deviations (the model sees it)"
    features: list[str] | None = param(None, "numeric inputs to shift (default: two per model)")
    shift: float = param(1.0, "shift in standard deviations")
    scale: float = param(1.0, "also multiply the spread around the mean by this")

    def check(self, models: dict[str, DemoModel]) -> None:
        _pick_features(self, models, self.features)
        require_numeric_inputs(self, models, self.features or [])

    def on_inputs(self, batch: TickBatch, rng: np.random.Generator) -> None:
        m = batch.model
        names = [f for f in (self.features or m.default_drift_features) if f in m.inputs]
        if names:
            batch.X = shift_inputs(m, batch.X, names, self.shift, self.scale)
            self.count(batch, "shifted_events", len(batch))


def shift_inputs(
    model: DemoModel, X: np.ndarray, names: Sequence[str], shift: float | np.ndarray = 1.0, scale: float = 1.0
) -> np.ndarray:
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
    features: list[str] | None = param(None, "logged features to break (default: two per model)")
    null_rate: float = param(0.3, "share of events with the feature null")
    out_of_range_rate: float = param(0.2, "share with an impossible value (numeric) or an unknown category")
    type_error_rate: float = param(0.05, "share with a value of the wrong type")

    def check(self, models: dict[str, DemoModel]) -> None:
        _pick_features(self, models, self.features)
        total = self.null_rate + self.out_of_range_rate + self.type_error_rate
        self.require(
            min(self.null_rate, self.out_of_range_rate, self.type_error_rate) >= 0 and total <= 1,
            f"rates must be >= 0 and add up to at most 1 (got {total})",
        )

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
    flip: float = param(0.4, "classification: share of labels moved to the next class")
    shift: float = param(1.0, "regression: target shift in standard deviations")

    def check(self, models: dict[str, DemoModel]) -> None:
        self.require(0 <= self.flip <= 1, f"flip must be in [0, 1], got {self.flip}")

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
            self.count(batch, "flipped_labels", int((flip & batch.label_mask & not_none(old)).sum()))
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
    rate: float = param(0.01, "malformed messages per valid event")
    kinds: list[str] | None = param(None, "subset of: " + ", ".join(MALFORMED_KINDS))

    def check(self, models: dict[str, DemoModel]) -> None:
        self.require(self.rate >= 0, "rate must be >= 0")
        bad = [k for k in self.kinds or [] if k not in MALFORMED_KINDS]
        self.require(not bad, f"unknown kind(s) {bad}; known: {', '.join(MALFORMED_KINDS)}")

    def on_messages(self, batch: TickBatch, rng: np.random.Generator) -> list[ScenarioMessage]:
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
    feats = {k: plain_value(v[i]) for k, v in batch.features.items()}
    if m.task == "classification":
        pred: dict[str, Any] = {"label": str(batch.pred["label"][i])}
    else:
        pred = {"value": float(batch.pred["value"][i])}
    return {
        "schema_version": SCHEMA_VERSION,
        "type": INFERENCE.type,
        "event_id": f"bad-{int(rng.integers(1 << 62)):x}",
        "model_id": m.model_id,
        "model_version": m.version,
        "event_time": float(batch.event_time[i]),
        "features": feats,
        "prediction": pred,
    }


def malformed_message(kind: str, batch: TickBatch, rng: np.random.Generator) -> ScenarioMessage:
    """One malformed message of ``kind`` built from this tick's traffic."""
    m = batch.model
    key = m.model_id.encode()
    ev = _valid_event(batch, rng)
    if kind == "invalid_json":
        raw = orjson.dumps(ev)
        return ScenarioMessage(raw[: int(rng.integers(1, len(raw) - 1))], key, kind=kind)
    if kind == "not_json":
        return ScenarioMessage(b"\x00\xff" + rng.bytes(30), key, kind=kind)
    if kind == "empty":
        return ScenarioMessage(b"", key, kind=kind)
    if kind == "nan_literal":
        name = next(iter(ev["features"]))
        text = orjson.dumps(ev).decode()
        text = text.replace(f'"{name}":', f'"{name}":NaN,"_was":', 1)
        return ScenarioMessage(text.encode(), key, kind=kind)
    if kind == "wrong_types":
        variant = int(rng.integers(3))
        if variant == 0:
            ev["features"] = list(ev["features"].values())
        elif variant == 1:
            ev["event_time"] = "yesterday"
        else:
            ev["prediction"] = "setosa"
        return ScenarioMessage(orjson.dumps(ev), key, kind=kind)
    if kind == "missing_fields":
        ev.pop(["model_id", "prediction", "event_id", "features"][int(rng.integers(4))])
        return ScenarioMessage(orjson.dumps(ev), key, kind=kind)
    if kind == "unknown_model":
        ev["model_id"] = "ghost-model"
        return ScenarioMessage(orjson.dumps(ev), b"ghost-model", kind=kind)
    if kind == "bad_schema_version":
        ev["schema_version"] = 99
        return ScenarioMessage(orjson.dumps(ev), key, kind=kind)
    if kind == "unknown_type":
        ev["type"] = "inference_v2"
        return ScenarioMessage(orjson.dumps(ev), key, kind=kind)
    if kind == "batch_length_mismatch":
        batch_msg = {
            "schema_version": SCHEMA_VERSION,
            "type": INFERENCE.batch_type,
            "model_id": m.model_id,
            "model_version": m.version,
            "event_id": [ev["event_id"], ev["event_id"] + "b"],
            "event_time": [ev["event_time"]],
            "features": {k: [v, v] for k, v in ev["features"].items()},
            "prediction": {k: [v, v, v] for k, v in ev["prediction"].items()},
        }
        return ScenarioMessage(orjson.dumps(batch_msg), key, kind=kind)
    if kind == "label_wrong_type":
        lab = {
            "schema_version": SCHEMA_VERSION,
            "type": LABEL.type,
            "event_id": ev["event_id"],
            "model_id": m.model_id,
            "label": {"value": 1},
            "label_time": ev["event_time"],
        }
        return ScenarioMessage(orjson.dumps(lab), key, topic="labels", kind=kind)
    raise ValueError(f"unknown malformed kind {kind!r}; known: {', '.join(MALFORMED_KINDS)}")
