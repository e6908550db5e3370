# size: the bulk decoder is one hot loop over three wire shapes; its helpers are specialised to it
"""Bulk decode of Kafka message values into columnar :class:`~detectors.frame.Frame` s.

The worker hands :meth:`Decoder.decode` every message of one ``take_events``
batch; it gets back

* one :class:`FramePart` per :class:`StreamKey` (topic, partition, model id,
  model version): the inference events of that stream as numpy columns, in
  (offset, row) order, with the offset each row came from (``origin``) so the
  worker can commit offsets only after the windows that hold them are written;
* :class:`LabelPart` s: label events as columns, for the label join;
* :class:`DeadLetter` s: what could not be used, each with a reason from
  :data:`REASONS`, a human-readable detail and the rows it covers.

Nothing is silently dropped: for every message, the rows in frames and labels
plus the events counted by its dead letters equal the events it carried
(:meth:`Decoded.n_events`).

What is *not* a dead letter: a value of the wrong type in a feature (a string
in a numeric feature, a fractional number or a list in a categorical one,
anything but a truth value in a boolean one). The event is kept, the value
becomes missing and the feature's ``type_error`` mask marks it, so data quality
counts it. Features the monitor does not know are ignored.

Values are read by :mod:`detectors.values`, the same functions that read
reference files, so a reference and the events agree on what a value is
(``True`` in a pandas CSV and ``true`` in an event are one category).
Validation is columnar: a column batch is checked with one numpy conversion per
column (``array.array('d', col)`` is strict — it refuses strings, unlike
``np.asarray(..., float)`` which would parse ``"1.5"``), with set and dict
operations over the column where a conversion alone cannot tell. Rows (single events and JSON arrays of events)
are first turned into the same columns, so a row batch and a column batch with
the same events decode to the same frame.

>>> import orjson
>>> from streams.worker.monitors import parse_monitors
>>> cfg = parse_monitors({"models": [{"model_id": "m", "features": [{"name": "x", "kind": "numeric"}]}]})
>>> batch = {"type": "inference_batch", "model_id": "m", "event_id": ["a", "b"],
...          "event_time": [1.0, 2.0], "features": {"x": [0.5, "oops"]},
...          "prediction": {"label": ["u", "v"]}}
>>> out = Decoder(cfg).decode([RawMessage(orjson.dumps(batch), b"m")])
>>> part = out.frames[StreamKey("", 0, "m", "1")]
>>> part.frame.numeric["x"].tolist(), part.frame.type_error["x"].tolist(), out.dead
([0.5, nan], [False, True], [])
"""

from __future__ import annotations

import array
import json
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
import orjson

from detectors.frame import Codes, Frame, concat
from detectors.values import not_none, parse_categories, parse_feature, parse_numeric

# the one wire-contract definition: keys, required fields, limits and the dead-letter reasons
from streams.wire.contract import (
    ARROW_CONTENT_TYPE,
    ARROW_MAGIC,
    CONTENT_TYPE_HEADER,
    INFERENCE,
    JSON_CONTENT_TYPE,
    LABEL,
    LABEL_TYPES,
    MAX_ID_LEN,
    PREDICTION_EMPTY,
    PREDICTION_KEYS,
    R_BAD_TIME,
    R_EMPTY,
    R_INVALID_ENCODING,
    R_INVALID_JSON,
    R_NON_FINITE,
    R_SCHEMA,
    R_TOO_DEEP,
    R_TOO_LARGE,
    R_UNKNOWN_MODEL,
    R_UNSUPPORTED_VERSION,
    SCHEMA_VERSION,
)
from streams.wire.contract import R_LATE as R_LATE  # re-exported: the windows set it
from streams.wire.contract import REASONS as REASONS  # re-exported: the dead-letter code and tests read it here
from streams.worker.arrow_decode import ArrowPayloadError, Coded, read_batch
from streams.worker.monitors import ModelMonitor, MonitorsConfig

MAX_UNDECLARED = 20
"""Undeclared feature names tracked per batch (``Frame.unknown``); more share :data:`OTHER_UNDECLARED`."""
OTHER_UNDECLARED = "__other__"
_PRED_KEYS = PREDICTION_KEYS
_INF_KEYS = INFERENCE.keys  # an event and its batch allow the same keys
_INF_REQUIRED = INFERENCE.required
_LABEL_KEYS = LABEL.keys
_LABEL_REQUIRED = LABEL.required
_LABEL_TYPES = frozenset(LABEL_TYPES)
_STR_OR_NONE = frozenset((str, type(None)))


class StreamKey(NamedTuple):
    """Where a stream of one model version lives: windows are kept per key."""

    topic: str
    partition: int
    model_id: str
    model_version: str


@dataclass(slots=True)
class RawMessage:
    """The parts of a Kafka message the worker uses (Faust's ``Message`` maps onto it)."""

    value: bytes | None
    key: bytes | None = None
    topic: str = ""
    partition: int = 0
    offset: int = 0
    timestamp_ms: int | None = None  # the record's Kafka timestamp
    content_type: str | None = None  # the record's content-type header (None: not sent)

    @property
    def is_arrow(self) -> bool:
        """An Arrow IPC batch: said by its content-type header, else told by its first bytes."""
        ct = self.content_type
        if ct is not None and ct in _KNOWN_CONTENT_TYPES:
            return ct == ARROW_CONTENT_TYPE
        v = self.value
        return v is not None and v[:4] == ARROW_MAGIC


_KNOWN_CONTENT_TYPES = frozenset((ARROW_CONTENT_TYPE, JSON_CONTENT_TYPE))


def content_type(headers: Any) -> str | None:
    """The content-type of a record's headers (a list of ``(name, bytes)`` pairs or a mapping), or None.

    >>> content_type([("dw-x", b"1"), ("Content-Type", b"application/vnd.apache.arrow.stream")])
    'application/vnd.apache.arrow.stream'
    """
    if not headers:
        return None
    pairs = headers.items() if hasattr(headers, "items") else headers
    for name, value in pairs:
        if str(name).lower() == CONTENT_TYPE_HEADER:
            try:
                return (value.decode() if isinstance(value, bytes) else str(value)).strip().lower()
            except UnicodeDecodeError:
                return None
    return None


@dataclass(slots=True)
class DeadLetter:
    """Events that could not be used, and why.

    ``rows`` is None when the whole message is dead (its value is unusable as a
    whole), else the indexes of the bad rows inside the message (JSON array
    index, or column index of a column batch). ``n_events`` is how many events
    this dead letter accounts for (the batch length when it can be told, else 1).
    """

    message: RawMessage
    reason: str
    detail: str
    rows: tuple[int, ...] | None = None
    n_events: int = 1
    model_id: str | None = None
    model_version: str | None = None


@dataclass(slots=True)
class FramePart:
    """Decoded inference events of one stream key; ``origin[i]`` is row i's offset."""

    frame: Frame
    origin: np.ndarray  # int64, non-decreasing
    row_index: np.ndarray | None = None  # int64 row's index in its message (-1: a single-event message)


@dataclass(slots=True)
class LabelPart:
    """Decoded label events of one model (columns), for the label join."""

    topic: str
    partition: int
    model_id: str
    event_id: np.ndarray  # object[str]
    label: np.ndarray  # object[str | int | float | bool]
    label_time: np.ndarray  # float64 epoch seconds
    origin: np.ndarray  # int64 offsets

    def __len__(self) -> int:
        return int(self.event_id.shape[0])


@dataclass(slots=True)
class Decoded:
    """Everything one :meth:`Decoder.decode` call produced."""

    frames: dict[StreamKey, FramePart] = field(default_factory=dict)
    labels: list[LabelPart] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: (topic, partition, model id) of messages whose key is not the model id
    unkeyed: set[tuple[str, int, str]] = field(default_factory=set)

    def n_events(self) -> int:
        """Events accounted for: rows decoded plus events in dead letters."""
        return (
            sum(len(p.frame) for p in self.frames.values())
            + sum(len(p) for p in self.labels)
            + sum(d.n_events for d in self.dead)
        )

    def dead_by_reason(self) -> dict[str, int]:
        """Dead-lettered events per reason."""
        out: dict[str, int] = {}
        for d in self.dead:
            out[d.reason] = out.get(d.reason, 0) + d.n_events
        return out


class _Bad(Exception):
    """A value or row is unusable: ``reason`` from :data:`REASONS`, ``detail`` for humans."""

    def __init__(self, reason: str, detail: str, model_id: str | None = None, n_events: int = 1) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.model_id = model_id  # the model the event named, when it is known (e.g. unknown_model)
        self.n_events = n_events  # the events it stands for, when a whole message is dead


# ----------------------------------------------------------------------------- parsing


def parse_value(value: bytes | None, max_bytes: int) -> Any:
    """orjson-parse one message value or raise :class:`_Bad` with the reason.

    Classification of failures happens only on the error path (it is rare).
    """
    value = _sized(value, max_bytes)
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise _classify_json_error(value, e) from None


def _sized(value: bytes | None, max_bytes: int) -> bytes:
    """The value, or :class:`_Bad` when there is none (``empty``) or it is over the limit (``too_large``)."""
    if value is None or len(value) == 0:
        raise _Bad(R_EMPTY, "message has no value")
    if len(value) > max_bytes:
        raise _Bad(R_TOO_LARGE, f"value is {len(value)} bytes, the limit is {max_bytes}")
    return value


def _classify_json_error(value: bytes, err: Exception) -> _Bad:
    msg = str(err)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as ue:
        return _Bad(R_INVALID_ENCODING, f"not UTF-8: {ue.reason} at byte {ue.start}")
    if "not valid UTF-8" in msg:  # e.g. lone surrogates
        return _Bad(R_INVALID_ENCODING, f"not UTF-8: {msg}")
    if "depth" in msg or "recursion" in msg:
        return _Bad(R_TOO_DEEP, f"nesting too deep: {msg}")
    if "infinity" in msg.lower():
        return _Bad(R_NON_FINITE, f"a number is out of float range: {msg}")
    if "NaN" not in text and "Infinity" not in text:  # nothing the stdlib would accept either
        return _Bad(R_INVALID_JSON, f"not JSON: {msg}")
    try:  # the stdlib accepts NaN/Infinity: if it parses, that was the problem
        json.loads(text)
    except (ValueError, RecursionError):
        return _Bad(R_INVALID_JSON, f"not JSON: {msg}")
    return _Bad(R_NON_FINITE, "NaN or Infinity is not JSON (send null for a missing value)")


# ----------------------------------------------------------------------------- columns

#: What a per-event column may be: a JSON list, or (from an Arrow batch) a numpy array or a :class:`Coded`.
_COLUMN_TYPES = frozenset((list, np.ndarray, Coded))


def _is_column(col: Any, n: int) -> bool:
    return type(col) in _COLUMN_TYPES and len(col) == n


def _n_rows(ids: Any) -> int:
    """Events a batch says it carries (its ``event_id`` column's length), 1 when it cannot be told."""
    return len(ids) if type(ids) in _COLUMN_TYPES else 1


def _as_list(col: Any) -> Any:
    """An Arrow column as the JSON list it stands for (numbers as Python numbers, NaN of a float column as null)."""
    if type(col) is Coded:
        col = col.expand()
    if type(col) is np.ndarray:
        return [None if v != v else v for v in col.tolist()] if col.dtype.kind == "f" else col.tolist()
    if type(col) is dict:
        return {k: _as_list(v) for k, v in col.items()}
    return col


def _to_time(x: Any) -> float:
    """Epoch seconds from a number or an ISO-8601 string (naive = UTC)."""
    t = type(x)
    if t is float or t is int:
        return float(x)
    if t is str:
        try:
            d = datetime.fromisoformat(x)
        except ValueError:
            raise _Bad(R_SCHEMA, f"{x[:40]!r} is neither epoch seconds nor ISO-8601") from None
        if d.tzinfo is None:
            d = d.replace(tzinfo=UTC)
        return d.timestamp()
    raise _Bad(R_SCHEMA, f"must be a number or an ISO-8601 string, not {t.__name__}")


class _RowErrors:
    """Per-row problems of one column set: row -> (reason, field, message); first one wins.

    The detail shown to humans is composed later, because it reads differently
    for a column batch (``event_time[3] is not ...``) and for rows
    (``event [3]: event_time is not ...``).
    """

    __slots__ = ("bad",)

    def __init__(self) -> None:
        self.bad: dict[int, tuple[str, str, str]] = {}

    def add(self, rows: Iterable[int], reason: str, field_: str, message: str | Callable[[int], str]) -> None:
        for i in rows:
            i = int(i)
            if i not in self.bad:
                self.bad[i] = (reason, field_, message(i) if callable(message) else message)

    def column_detail(self, i: int) -> str:
        _reason, field_, message = self.bad[i]
        return f"{field_}[{i}] {message}" if field_ else message

    def row_detail(self, i: int, index: int) -> str:
        _reason, field_, message = self.bad[i]
        where = f"event [{index}]: " if index >= 0 else ""
        return f"{where}{field_} {message}" if field_ else where + message


def _check_ids(ids: Any, n: int, name: str, errors: _RowErrors, required: bool = True) -> np.ndarray:
    """A column of id strings (1..256 chars); bad rows go to ``errors``."""
    if ids is None and not required:
        return np.full(n, None, dtype=object)
    if not _is_column(ids, n):
        raise _Bad(R_SCHEMA, f"{name} must be a list of {n} strings")
    if type(ids) is not list and not (type(ids) is np.ndarray and ids.dtype == object):
        ids = _as_list(ids)  # dictionary-encoded, or not strings at all: the list path says which rows
    types = set(map(type, ids))
    ok_types = {str} if required else _STR_OR_NONE
    if types <= ok_types and ("" not in ids or not required):
        longest = max(map(len, ids if required else filter(None, ids)), default=0)
        if longest <= MAX_ID_LEN:
            return np.array(ids, dtype=object)
    out = np.empty(n, dtype=object)
    for i, x in enumerate(ids):
        if type(x) is str and (x or not required) and len(x) <= MAX_ID_LEN:
            out[i] = x
        elif x is None and not required:
            out[i] = None
        else:
            out[i] = None
            what = (
                "missing"
                if x is None
                else (f"{type(x).__name__}" if type(x) is not str else ("empty" if not x else f"{len(x)} chars long"))
            )
            errors.add([i], R_SCHEMA, name, f"must be a string of 1-{MAX_ID_LEN} chars, got {what}")
    return out


def _check_times(
    times: Any, n: int, name: str, errors: _RowErrors, ts_s: np.ndarray | np.float64 | None, max_future_s: float
) -> np.ndarray:
    """A column of event times (epoch seconds); bad rows go to ``errors``."""
    if not _is_column(times, n):
        raise _Bad(R_SCHEMA, f"{name} must be a list of {n} numbers")
    out = None
    if type(times) is np.ndarray and times.dtype.kind in "fiu":  # an Arrow number column: NaN is null
        out = times.astype(np.float64)
        null = np.isnan(out)
        if null.any():
            errors.add(np.flatnonzero(null), R_SCHEMA, name, "must be a number or an ISO-8601 string, not NoneType")
            out[null] = 0.0
    elif type(times) is not list:
        times = _as_list(times)
    if out is None and bool not in set(map(type, times)):
        try:
            out = np.frombuffer(array.array("d", times), dtype=np.float64)
        except (TypeError, OverflowError):
            out = None
    if out is None:
        out = np.zeros(n)
        for i, x in enumerate(times):
            try:
                if type(x) is bool:
                    raise _Bad(R_SCHEMA, "must be a number or an ISO-8601 string, not bool")
                out[i] = _to_time(x)
            except _Bad as b:
                errors.add([i], b.reason, name, b.detail)
            except (OverflowError, ValueError):
                errors.add([i], R_BAD_TIME, name, "is out of range")
    bad = ~np.isfinite(out) | (out < 0)
    if bad.any():
        errors.add(np.flatnonzero(bad), R_BAD_TIME, name, lambda i: f"= {out[i]!r} is not a valid epoch time")
    if ts_s is not None:
        future = out > ts_s + max_future_s
        if future.any():
            errors.add(
                np.flatnonzero(future),
                R_BAD_TIME,
                name,
                lambda i: f"= {out[i]:.3f} is more than {max_future_s:.0f} s after the message's Kafka timestamp",
            )
    return out


@dataclass(slots=True)
class _Cols:
    """Columns of inference events before validation (from a batch or built from rows)."""

    model: ModelMonitor
    n: int
    event_id: Any
    event_time: Any
    source_id: Any
    features: dict[str, Any]  # name -> a list, or from an Arrow batch a numpy array or a Coded column
    prediction: dict[str, Any]
    ts_s: np.ndarray | np.float64 | None  # Kafka timestamp (s) per row or of the whole batch: future-time check


def _build_frame(c: _Cols, errors: _RowErrors, max_future_s: float) -> Frame:
    """Validate columns and build the frame (bad rows are recorded in ``errors``, kept in the frame)."""
    n = c.n
    event_id = _check_ids(c.event_id, n, "event_id", errors)
    event_time = _check_times(c.event_time, n, "event_time", errors, c.ts_s, max_future_s)
    source_id = _check_ids(c.source_id, n, "source_id", errors, required=False)
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    type_error: dict[str, np.ndarray] = {}
    feats = c.features
    codes: dict[int, Codes] = {}  # of the categorical columns read from an Arrow dictionary
    for spec in c.model.features:
        col = feats.get(spec.name)
        if col is None:
            if spec.kind == "numeric":
                numeric[spec.name] = np.full(n, np.nan)
            else:
                categorical[spec.name] = np.full(n, None, dtype=object)
            type_error[spec.name] = np.zeros(n, dtype=bool)
            continue
        if not _is_column(col, n):
            raise _Bad(R_SCHEMA, f"features.{spec.name} must be a list of {n} values")
        if type(col) is Coded:  # once per distinct value
            values, bad, coded = col.parse_coded(lambda d, s=spec: parse_feature(d, s.kind, boolean=s.boolean))
            (numeric if spec.kind == "numeric" else categorical)[spec.name] = values
            if coded is not None and spec.kind != "numeric":
                codes[id(values)] = coded
        elif spec.kind == "numeric":
            values, bad = parse_numeric(col)
            numeric[spec.name] = values
        else:
            values, bad = parse_categories(col, boolean=spec.boolean)
            categorical[spec.name] = values
        type_error[spec.name] = bad if bad is not None else np.zeros(n, dtype=bool)
    unknown: dict[str, np.ndarray] = {}
    for name, col in feats.items():  # undeclared features: their shape, and which rows carry one
        if not _is_column(col, n):
            raise _Bad(R_SCHEMA, f"features.{name} must be a list of {n} values")
        if name not in numeric and name not in categorical:  # every declared feature is in one of them
            carried = _carried(col, n)
            if not carried.any():
                continue
            if len(unknown) >= MAX_UNDECLARED:  # a flood of invented names shares one entry
                name = OTHER_UNDECLARED
                carried = carried | unknown.get(name, False)
            unknown[name] = carried
    pred_label, pred_proba, classes, pred_value = _prediction(c.prediction, n, errors)
    return Frame(
        event_id=event_id,
        event_time=event_time,
        source_id=source_id,
        numeric=numeric,
        categorical=categorical,
        type_error=type_error,
        pred_label=pred_label,
        pred_proba=pred_proba,
        classes=classes,
        pred_value=pred_value,
        unknown=unknown,
        codes=codes,
    )


def _carried(col: Any, n: int) -> np.ndarray:
    """Which rows of a column carry a value (not null)."""
    if type(col) is Coded:
        return col.codes >= 0
    if type(col) is np.ndarray:
        return ~np.isnan(col) if col.dtype.kind == "f" else (not_none(col) if col.dtype == object else np.ones(n, bool))
    return np.fromiter(map(operator.is_not, col, repeat(None)), dtype=bool, count=n)


def _prediction(p: Any, n: int, errors: _RowErrors):
    if type(p) is not dict:
        raise _Bad(R_SCHEMA, "prediction must be an object")
    extra = set(p) - _PRED_KEYS
    if extra:
        raise _Bad(R_SCHEMA, f"prediction has unknown keys {sorted(extra)}")
    present = np.zeros(n, dtype=bool)
    pred_label = None
    labels = p.get("label")
    if labels is not None:
        if not _is_column(labels, n):
            raise _Bad(R_SCHEMA, f"prediction.label must be a list of {n} values")
        if type(labels) is np.ndarray and labels.dtype.kind == "f":
            labels = _as_list(labels)  # a float class is an error that names the row (and NaN is null)
        pred_label, bad = labels.parse(parse_categories) if type(labels) is Coded else parse_categories(labels)
        if bad is not None:
            errors.add(
                np.flatnonzero(bad),
                R_SCHEMA,
                "prediction.label",
                lambda i: f"must be a string, integer or boolean, not {type(labels[i]).__name__}",
            )
        present |= not_none(pred_label)
    pred_proba = None
    classes: tuple[str, ...] = ()
    probs = p.get("probabilities")
    if probs is not None:
        if type(probs) is not dict:
            raise _Bad(R_SCHEMA, "prediction.probabilities must map class -> list of numbers")
        classes = tuple(sorted(probs))
        pred_proba = np.full((n, len(classes)), np.nan)
        for j, cls in enumerate(classes):
            col = probs[cls]
            if not _is_column(col, n):
                raise _Bad(R_SCHEMA, f"prediction.probabilities[{cls!r}] must be a list of {n} numbers")
            values, bad = col.parse(parse_numeric) if type(col) is Coded else parse_numeric(col)
            if bad is not None:
                errors.add(np.flatnonzero(bad), R_SCHEMA, f"prediction.probabilities[{cls!r}]", "is not a number")
            pred_proba[:, j] = values
        if classes:
            present |= ~np.isnan(pred_proba).all(axis=1)
    pred_value = None
    for key in ("value", "score"):  # a regression value wins over a score
        col = p.get(key)
        if col is None:
            continue
        if not _is_column(col, n):
            raise _Bad(R_SCHEMA, f"prediction.{key} must be a list of {n} numbers")
        values, bad = col.parse(parse_numeric) if type(col) is Coded else parse_numeric(col)
        if bad is not None:
            errors.add(np.flatnonzero(bad), R_SCHEMA, f"prediction.{key}", "is not a number")
        present |= ~np.isnan(values)
        pred_value = values if pred_value is None else np.where(np.isnan(pred_value), values, pred_value)
    if not present.all():
        errors.add(np.flatnonzero(~present), R_SCHEMA, "", f"prediction {PREDICTION_EMPTY}")
    return pred_label, pred_proba, classes, pred_value


# ----------------------------------------------------------------------------- segments


@dataclass(slots=True)
class _ColSeg:
    message: RawMessage
    doc: dict


@dataclass(slots=True)
class _RowSeg:
    rows: list[dict] = field(default_factory=list)
    messages: list[RawMessage] = field(default_factory=list)
    index: list[int] = field(default_factory=list)  # row's index in its message (-1: single event)


def _pydantic_detail(model_cls: Any, doc: Any) -> str | None:
    """The schema's own explanation of why ``doc`` is invalid (error path only)."""
    from pydantic import ValidationError

    try:
        model_cls.model_validate(doc)
    except ValidationError as e:
        errs = e.errors()
        parts = [f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']}" for err in errs[:3]]
        more = f" (+{len(errs) - 3} more)" if len(errs) > 3 else ""
        return "; ".join(parts) + more
    except Exception:  # best effort: the caller has its own detail
        return None
    return None


def _source_position(dl: DeadLetter) -> tuple[str, int, int]:
    m = dl.message
    return m.topic, m.partition, m.offset


class Decoder:
    """Decodes message values for the models of one monitor config.

    ``max_future_s``: event times more than this after the message's Kafka
    timestamp are dead-lettered as ``bad_time`` (a clock far off would otherwise
    push event-time windows and watermarks into the future).
    """

    def __init__(
        self,
        monitors: MonitorsConfig,
        max_message_bytes: int = 1_000_000,
        max_future_s: float = 86_400.0,
    ) -> None:
        self.monitors = monitors
        self.models: dict[str, ModelMonitor] = {m.model_id: m for m in monitors.models}
        self.max_message_bytes = max_message_bytes
        self.max_future_s = max_future_s
        self._details_left = self.SCHEMA_DETAILS_PER_CALL

    #: schema errors per :meth:`decode` call explained by pydantic (the rest keep the decoder's own
    #: detail, which names the field too): validating a flood of malformed events a second time
    #: only to word the detail would cost more than everything else done with them
    SCHEMA_DETAILS_PER_CALL = 4

    def _schema_detail(self, model_cls: Any, doc: Any) -> str | None:
        if self._details_left <= 0:
            return None
        self._details_left -= 1
        return _pydantic_detail(model_cls, _as_list(doc) if type(doc) is dict else doc)

    # -- public ------------------------------------------------------------------
    def decode(self, messages: Sequence[RawMessage]) -> Decoded:
        """Decode messages (any topics/partitions, in consumption order)."""
        out = Decoded()
        self._details_left = self.SCHEMA_DETAILS_PER_CALL
        segs: dict[StreamKey, list[_ColSeg | _RowSeg]] = {}
        label_rows: dict[tuple[str, int, str], _RowSeg] = {}
        # (id(message), reason) -> [message, reason, rows, details, model, version]
        row_dead: dict[tuple[int, str], list] = {}

        def dead_row(msg: RawMessage, idx: int, reason: str, detail: str, model=None, version=None) -> None:
            entry = row_dead.get((id(msg), reason))
            if entry is None:
                entry = row_dead[(id(msg), reason)] = [msg, reason, [], [], model, version]
            entry[2].append(idx)
            entry[3].append(detail)

        for msg in messages:
            try:
                doc = self._arrow_batch(msg) if msg.is_arrow else parse_value(msg.value, self.max_message_bytes)
            except _Bad as b:
                out.dead.append(DeadLetter(msg, b.reason, b.detail, None, b.n_events, b.model_id))
                continue
            t = type(doc)
            if t is dict:
                kind = doc.get("type")
                if kind == INFERENCE.batch_type:
                    self._add_batch(msg, doc, segs, out)
                elif kind == LABEL.batch_type:
                    self._add_label_batch(msg, doc, out, dead_row)
                else:
                    self._add_row(msg, -1, doc, segs, label_rows, out, dead_row)
            elif t is list:
                if not doc:
                    out.dead.append(DeadLetter(msg, R_EMPTY, "empty JSON array: no events", None, 0))
                    continue
                for i, row in enumerate(doc):
                    self._add_row(msg, i, row, segs, label_rows, out, dead_row)
            else:
                out.dead.append(
                    DeadLetter(msg, R_SCHEMA, f"value must be a JSON object or array, not {t.__name__}", None, 1)
                )

        for key, parts in segs.items():
            self._finish(key, parts, out, dead_row)
        for (topic, partition, model_id), seg in label_rows.items():
            self._finish_labels(topic, partition, model_id, seg, out, dead_row)
        for msg, reason, rows, details, model, version in row_dead.values():
            detail = details[0] + (f" (and {len(details) - 1} more rows)" if len(details) > 1 else "")
            idx = tuple(sorted(rows))
            whole = idx == (-1,)
            out.dead.append(DeadLetter(msg, reason, detail, None if whole else idx, len(idx), model, version))
        if len(out.dead) > 1:  # in source order (stable: the reasons of one message keep their order)
            out.dead.sort(key=_source_position)
        return out

    # -- intake ------------------------------------------------------------------
    def _arrow_batch(self, msg: RawMessage) -> dict:
        """An Arrow IPC batch read into columns (then checked like the JSON batch it stands for), or :class:`_Bad`."""
        try:
            doc = read_batch(_sized(msg.value, self.max_message_bytes))
        except ArrowPayloadError as e:
            raise _Bad(e.reason, e.detail, e.model_id, e.n_events) from None
        kind = doc.get("type")
        if kind not in (INFERENCE.batch_type, LABEL.batch_type):  # rows are JSON's: an Arrow message is a batch
            detail = f"an Arrow message is an {INFERENCE.batch_type} or a {LABEL.batch_type}, not {str(kind)[:40]!r}"
            model = doc.get("model_id")
            raise _Bad(R_SCHEMA, detail, model if type(model) is str else None, _n_rows(doc.get("event_id")))
        return doc

    def _check_header(self, doc: dict, keys: frozenset, what: str) -> tuple[str, ModelMonitor]:
        sv = doc.get("schema_version", SCHEMA_VERSION)
        if sv != SCHEMA_VERSION or type(sv) is not int:
            if type(sv) is int:
                raise _Bad(
                    R_UNSUPPORTED_VERSION, f"schema_version {sv} is not supported (this worker reads {SCHEMA_VERSION})"
                )
            raise _Bad(R_SCHEMA, f"schema_version must be an integer, not {type(sv).__name__}")
        extra = set(doc) - keys
        if extra:
            raise _Bad(R_SCHEMA, f"{what} has unknown keys {sorted(extra)}")
        model_id = doc.get("model_id")
        if type(model_id) is not str or not model_id or len(model_id) > MAX_ID_LEN:
            raise _Bad(R_SCHEMA, f"model_id must be a string of 1-{MAX_ID_LEN} chars")
        model = self.models.get(model_id)
        if model is None:
            raise _Bad(R_UNKNOWN_MODEL, f"model {model_id[:80]!r} is not in the monitor config", model_id)
        return model_id, model

    @staticmethod
    def _version(doc: dict) -> str:
        v = doc.get("model_version", "1")
        if type(v) is not str or not v or len(v) > MAX_ID_LEN:
            raise _Bad(R_SCHEMA, f"model_version must be a string of 1-{MAX_ID_LEN} chars")
        return v

    def _add_batch(self, msg: RawMessage, doc: dict, segs: dict, out: Decoded) -> None:
        ids = doc.get("event_id")
        n_guess = _n_rows(ids)
        model_id = version = None
        try:
            model_id, _model = self._check_header(doc, _INF_KEYS, INFERENCE.batch_type)
            version = self._version(doc)
            if type(ids) not in _COLUMN_TYPES:
                raise _Bad(R_SCHEMA, "event_id must be a list of strings")
            if type(doc.get("features")) is not dict:
                raise _Bad(R_SCHEMA, "features must map feature name -> list of values")
            if type(doc.get("prediction")) is not dict:
                raise _Bad(R_SCHEMA, "prediction must be an object of columns")
        except _Bad as b:
            detail = b.detail
            if b.reason == R_SCHEMA:
                from streams.wire.schemas import InferenceBatch

                detail = self._schema_detail(InferenceBatch, doc) or detail
            out.dead.append(DeadLetter(msg, b.reason, detail, None, n_guess, model_id or b.model_id, version))
            return
        if msg.key is not None and msg.key != model_id.encode():
            out.unkeyed.add((msg.topic, msg.partition, model_id))
        key = StreamKey(msg.topic, msg.partition, model_id, version)
        segs.setdefault(key, []).append(_ColSeg(msg, doc))

    def _add_label_batch(self, msg: RawMessage, doc: dict, out: Decoded, dead_row) -> None:
        ids = doc.get("event_id")
        n = _n_rows(ids)
        model_id = None
        try:
            model_id, _model = self._check_header(doc, _LABEL_KEYS, LABEL.batch_type)
            errors = _RowErrors()
            event_id = _check_ids(ids, n, "event_id", errors)
            labels = doc.get("label")
            if not _is_column(labels, n):
                raise _Bad(R_SCHEMA, f"label must be a list of {n} values")
            if type(labels) is not list:
                labels = _as_list(labels)  # Python scalars: the label keeps its type (0 is not "0")
            times = _check_times(doc.get("label_time"), n, "label_time", errors, None, self.max_future_s)
        except _Bad as b:
            detail = b.detail
            if b.reason == R_SCHEMA:
                from streams.wire.schemas import LabelBatch

                detail = self._schema_detail(LabelBatch, doc) or detail
            out.dead.append(DeadLetter(msg, b.reason, detail, None, n, model_id or b.model_id))
            return
        label = np.array(labels, dtype=object) if n else np.empty(0, dtype=object)
        for i, x in enumerate(labels):
            if type(x) not in _LABEL_TYPES:
                errors.add([i], R_SCHEMA, "label", "must be a string, number or boolean")
        self._emit_labels(
            msg.topic,
            msg.partition,
            model_id,
            event_id,
            label,
            times,
            np.full(n, msg.offset, dtype=np.int64),
            errors,
            [msg] * n,
            None,
            out,
            dead_row,
        )

    def _add_row(self, msg, idx, row, segs, label_rows, out, dead_row) -> None:
        """One event object (single message or array element) into its row segment."""
        model_id = version = None
        try:
            if type(row) is not dict:
                raise _Bad(R_SCHEMA, f"an event must be a JSON object, not {type(row).__name__}")
            kind = row.get("type")
            if kind is None:  # tolerate a missing type when the shape says it
                kind = INFERENCE.type if "features" in row else (LABEL.type if "label_time" in row else None)
            if kind == INFERENCE.type:
                model_id, _model = self._check_header(row, _INF_KEYS, "inference event")
                version = self._version(row)
                if type(row.get("features")) is not dict:
                    raise _Bad(R_SCHEMA, "features must map feature name -> value")
                pred = row.get("prediction")
                if type(pred) is not dict:
                    raise _Bad(R_SCHEMA, "prediction must be an object")
                if not pred.keys() <= _PRED_KEYS:
                    raise _Bad(R_SCHEMA, f"prediction has unknown keys {sorted(set(pred) - _PRED_KEYS)}")
                if not row.keys() >= _INF_REQUIRED:
                    raise _Bad(R_SCHEMA, f"an inference event needs {', '.join(sorted(_INF_REQUIRED - row.keys()))}")
                if msg.key is not None and msg.key != model_id.encode():
                    out.unkeyed.add((msg.topic, msg.partition, model_id))
                key = StreamKey(msg.topic, msg.partition, model_id, version)
                parts = segs.setdefault(key, [])
                if not parts or type(parts[-1]) is not _RowSeg:
                    parts.append(_RowSeg())
                seg = parts[-1]
            elif kind == LABEL.type:
                model_id, _model = self._check_header(row, _LABEL_KEYS, "label event")
                if not row.keys() >= _LABEL_REQUIRED:
                    raise _Bad(R_SCHEMA, f"a label event needs {', '.join(sorted(_LABEL_REQUIRED - row.keys()))}")
                seg = label_rows.setdefault((msg.topic, msg.partition, model_id), _RowSeg())
            elif kind in (INFERENCE.batch_type, LABEL.batch_type):
                raise _Bad(R_SCHEMA, f"a {kind} cannot be an element of a JSON array")
            else:
                raise _Bad(
                    R_SCHEMA,
                    f"unknown event type {str(kind)[:40]!r} (inference, label, inference_batch or label_batch)",
                )
        except _Bad as b:
            detail = b.detail
            if b.reason == R_SCHEMA and type(row) is dict:
                from streams.wire.schemas import InferenceEvent, LabelEvent

                cls = LabelEvent if row.get("type") == LABEL.type or "label_time" in row else InferenceEvent
                detail = self._schema_detail(cls, row) or detail
            where = f"event [{idx}]: " if idx >= 0 else ""
            dead_row(msg, idx, b.reason, where + detail, model_id or b.model_id, version)
            return
        seg.rows.append(row)
        seg.messages.append(msg)
        seg.index.append(idx)

    # -- finishing ---------------------------------------------------------------
    def _finish(self, key: StreamKey, parts: list, out: Decoded, dead_row) -> None:
        model = self.models[key.model_id]
        singles = self._rows_pieces(model, key, [p for p in parts if type(p) is _RowSeg], dead_row)
        frames: list[Frame] = []
        origins: list[np.ndarray] = []
        indexes: list[np.ndarray] = []
        for seg in parts:
            if type(seg) is _RowSeg:
                piece = singles.get(id(seg))
                if piece is not None:
                    frames.append(piece[0])
                    origins.append(piece[1])
                    indexes.append(piece[2])
                continue
            errors = _RowErrors()
            msg, doc = seg.message, seg.doc
            n = len(doc["event_id"])
            ts = None if msg.timestamp_ms is None or msg.timestamp_ms < 0 else np.float64(msg.timestamp_ms / 1000)
            cols = _Cols(
                model,
                n,
                doc["event_id"],
                doc.get("event_time"),
                doc.get("source_id"),
                doc["features"],
                doc["prediction"],
                ts,
            )
            try:
                frame = _build_frame(cols, errors, self.max_future_s)
            except _Bad as b:
                detail = b.detail
                if b.reason == R_SCHEMA:
                    from streams.wire.schemas import InferenceBatch

                    detail = self._schema_detail(InferenceBatch, doc) or detail
                out.dead.append(DeadLetter(msg, b.reason, detail, None, n, key.model_id, key.model_version))
                continue
            origin = np.full(n, msg.offset, dtype=np.int64)
            rows_idx = np.arange(n, dtype=np.int64)
            if errors.bad:
                bad = np.fromiter(errors.bad, dtype=np.int64, count=len(errors.bad))
                for i in bad.tolist():
                    dead_row(msg, i, errors.bad[i][0], errors.column_detail(i), key.model_id, key.model_version)
                keep = np.ones(len(frame), dtype=bool)
                keep[bad] = False
                frame = frame.take(keep)
                origin = origin[keep]
                rows_idx = rows_idx[keep]
            if len(frame):
                frames.append(frame)
                origins.append(origin)
                indexes.append(rows_idx)
        if frames:
            out.frames[key] = FramePart(concat(frames), np.concatenate(origins), np.concatenate(indexes))

    def _rows_pieces(
        self, model: ModelMonitor, key: StreamKey, segs: list[_RowSeg], dead_row
    ) -> dict[int, tuple[Frame, np.ndarray, np.ndarray]]:
        """The single events of a stream key validated as one column set, then split back per segment.

        Column batches between single events cut them into many small segments (a
        flood of malformed single events beside SDK batches): validating each
        segment on its own would cost a whole frame build per segment. Returns
        ``id(segment) -> (frame, origin, row index)`` without the bad rows (which
        go to ``dead_row``); segments left empty are absent.
        """
        if not segs:
            return {}
        if len(segs) == 1:
            merged = segs[0]
        else:
            merged = _RowSeg(
                [r for sg in segs for r in sg.rows],
                [m for sg in segs for m in sg.messages],
                [i for sg in segs for i in sg.index],
            )
        errors = _RowErrors()
        frame, origin = self._rows_frame(model, merged, errors)
        rows_idx = np.array(merged.index, dtype=np.int64)
        keep = None
        if errors.bad:
            bad = np.fromiter(errors.bad, dtype=np.int64, count=len(errors.bad))
            for i in bad.tolist():
                idx = merged.index[i]
                dead_row(
                    merged.messages[i],
                    idx,
                    errors.bad[i][0],
                    errors.row_detail(i, idx),
                    key.model_id,
                    key.model_version,
                )
            keep = np.ones(len(frame), dtype=bool)
            keep[bad] = False
        out: dict[int, tuple[Frame, np.ndarray, np.ndarray]] = {}
        start = 0
        for sg in segs:
            end = start + len(sg.rows)
            if keep is None and start == 0 and end == len(frame):
                out[id(sg)] = (frame, origin, rows_idx)
            else:
                sel = np.arange(start, end) if keep is None else start + np.flatnonzero(keep[start:end])
                if sel.size:
                    out[id(sg)] = (frame.take(sel), origin[sel], rows_idx[sel])
            start = end
        return out

    def _rows_frame(self, model: ModelMonitor, seg: _RowSeg, errors: _RowErrors) -> tuple[Frame, np.ndarray]:
        rows = seg.rows
        n = len(rows)
        feats = [r["features"] for r in rows]
        names = {k for f in feats for k in f}
        preds = [r["prediction"] for r in rows]
        prediction: dict[str, Any] = {}
        if any("label" in p for p in preds):
            prediction["label"] = [p.get("label") for p in preds]
        classes = {c for p in preds if type(p.get("probabilities")) is dict for c in p["probabilities"]}
        bad_probs = [
            i
            for i, p in enumerate(preds)
            if "probabilities" in p and p["probabilities"] is not None and type(p["probabilities"]) is not dict
        ]
        if bad_probs:
            errors.add(bad_probs, R_SCHEMA, "prediction.probabilities", "must map class -> number")
        if classes:
            prediction["probabilities"] = {
                c: [
                    (p.get("probabilities") or {}).get(c) if type(p.get("probabilities")) is dict else None
                    for p in preds
                ]
                for c in classes
            }
        for k in ("score", "value"):
            if any(k in p for p in preds):
                prediction[k] = [p.get(k) for p in preds]
        ts = np.array([-1 if m.timestamp_ms is None else m.timestamp_ms for m in seg.messages], dtype=np.float64)
        ts_s = None if (ts < 0).any() else ts / 1000.0
        cols = _Cols(
            model,
            n,
            [r.get("event_id") for r in rows],
            [r.get("event_time") for r in rows],
            [r.get("source_id") for r in rows],
            {name: [f.get(name) for f in feats] for name in names},
            prediction,
            ts_s,
        )
        frame = _build_frame(cols, errors, self.max_future_s)
        origin = np.fromiter((m.offset for m in seg.messages), dtype=np.int64, count=n)
        return frame, origin

    def _finish_labels(self, topic, partition, model_id, seg: _RowSeg, out: Decoded, dead_row) -> None:
        rows = seg.rows
        n = len(rows)
        errors = _RowErrors()
        event_id = _check_ids([r.get("event_id") for r in rows], n, "event_id", errors)
        times = _check_times([r.get("label_time") for r in rows], n, "label_time", errors, None, self.max_future_s)
        label = np.empty(n, dtype=object)
        for i, r in enumerate(rows):
            x = r.get("label")
            label[i] = x
            if type(x) not in _LABEL_TYPES:
                errors.add([i], R_SCHEMA, "label", "must be a string, number or boolean")
        origin = np.fromiter((m.offset for m in seg.messages), dtype=np.int64, count=n)
        self._emit_labels(
            topic, partition, model_id, event_id, label, times, origin, errors, seg.messages, seg.index, out, dead_row
        )

    @staticmethod
    def _emit_labels(
        topic, partition, model_id, event_id, label, times, origin, errors, msgs, index, out, dead_row
    ) -> None:
        """Labels without their bad rows; ``index`` None = a label batch (row i is column i)."""
        n = len(event_id)
        keep = np.ones(n, dtype=bool)
        for i, (reason, _f, _m) in errors.bad.items():
            keep[i] = False
            if index is None:
                dead_row(msgs[i], i, reason, errors.column_detail(i), model_id)
            else:
                dead_row(msgs[i], index[i], reason, errors.row_detail(i, index[i]), model_id)
        if keep.any():
            out.labels.append(
                LabelPart(topic, partition, model_id, event_id[keep], label[keep], times[keep], origin[keep])
            )
