"""The wire contract as pydantic models and JSON Schemas, built from :mod:`streams.wire.contract`.

The fields, their kinds, which are required and the limits are defined once, in
:mod:`streams.wire.contract`; this module only says which pydantic type each
:class:`~streams.wire.contract.Kind` is (as a single event's value and as a batch column) and
builds the four models from that. What producers put on the wire:

One Kafka message value is UTF-8 JSON and holds either

* one event: an :class:`InferenceEvent` or :class:`LabelEvent` object;
* a row batch: a JSON array of such objects; or
* a column batch (what the SDK sends, fastest to decode): an
  :class:`InferenceBatch` or :class:`LabelBatch`, one model version per message,
  every list the same length.

Every object carries ``schema_version`` (currently 1) and ``type``. The message
key should be the model id, so a model's events stay in one partition, in order.
Event times are epoch seconds (number) or ISO-8601 strings for single events;
column batches use epoch seconds.

Single event::

    {"schema_version": 1, "type": "inference", "event_id": "e-1",
     "model_id": "iris", "model_version": "1", "event_time": 1764355200.0,
     "source_id": "client-7",
     "features": {"sepal_length": 5.1, "color": "red", "flag": true, "x": null},
     "prediction": {"label": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.1}}}

Column batch::

    {"schema_version": 1, "type": "inference_batch", "model_id": "iris",
     "model_version": "1", "event_id": ["e-1", "e-2"], "event_time": [1.0, 2.0],
     "source_id": ["c", "c"], "features": {"sepal_length": [5.1, 4.9]},
     "prediction": {"label": ["setosa", "setosa"],
                    "probabilities": {"setosa": [0.9, 0.8], "versicolor": [0.1, 0.2]}}}

``driftwatch schema export DIR`` writes the JSON Schema of all four.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model, model_validator

from streams.wire.contract import (
    CLASS_TYPES,
    FEATURE_TYPES,
    INFERENCE,
    LABEL,
    LABEL_TYPES,
    MAX_ID_LEN,
    PREDICTION_DESCRIPTION,
    PREDICTION_EMPTY,
    PREDICTION_FIELDS,
    SCHEMA_VERSION,
    EventKind,
    Kind,
    WireField,
)

# Value types built at run time from the contract's type tuples, hence Any for the type checker.
Id: Any = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]
OptionalId: Any = Optional[Annotated[str, Field(max_length=MAX_ID_LEN)]]  # noqa: UP045 (built at run time)
FeatureValue: Any = Union[FEATURE_TYPES]  # noqa: UP007 (a tuple of types: no | spelling)
LabelValue: Any = Union[LABEL_TYPES]  # noqa: UP007 (a tuple of types: no | spelling)
ClassValue: Any = Optional[Union[CLASS_TYPES]]  # noqa: UP007, UP045 (a tuple of types: no | spelling)
EventTime = datetime | float
_Number = float | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Wire(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION


def _at_least_one_output(schema: dict[str, Any]) -> None:
    """The JSON Schema says what the validator below says: at least one output, not null (probabilities not empty)."""
    schema["anyOf"] = [
        {
            "required": [f.name],
            "properties": {
                f.name: {"type": "object", "minProperties": 1}
                if f.kind is Kind.PROBABILITIES
                else {"not": {"type": "null"}}
            },
        }
        for f in PREDICTION_FIELDS
    ]


class _OnePrediction(_Strict):
    """A single event's prediction: at least one of its outputs is given."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_at_least_one_output)

    @model_validator(mode="after")
    def _not_empty(self) -> _OnePrediction:
        if all(getattr(self, f.name) in (None, {}) for f in PREDICTION_FIELDS):
            raise ValueError(f"prediction {PREDICTION_EMPTY}")
        return self


def _model(name: str, doc: str, base: type[BaseModel], fields: dict[str, tuple[Any, Any]]) -> type[BaseModel]:
    # spread as dict[str, Any]: mypy checks a spread dict's value type against every keyword parameter
    # of create_model (__config__, __validators__, ...), not only against the field definitions
    definitions: dict[str, Any] = fields
    model: type[BaseModel] = create_model(name, __base__=base, __doc__=doc, __module__=__name__, **definitions)
    return model


def _fields(fields: tuple[WireField, ...], columns: bool) -> dict[str, tuple[Any, Any]]:
    """pydantic field definitions: required ones without a default, optional ones nullable (or their default)."""
    out: dict[str, tuple[Any, Any]] = {}
    for f in fields:
        ann = _COLUMN[f.kind] if columns and f.per_event else _EVENT[f.kind]
        if f.required:
            out[f.name] = (ann, ...)
        elif f.default is not None:
            out[f.name] = (ann, f.default)
        else:
            out[f.name] = (Optional[ann], None)  # noqa: UP045 (built at run time)
    return out


# The pydantic type of each Kind: as a single event's value, and as a batch column.
_EVENT: dict[Kind, Any] = {
    Kind.ID: Id,
    Kind.OPTIONAL_ID: OptionalId,
    Kind.TIME: EventTime,
    Kind.FEATURES: dict[str, FeatureValue],
    Kind.LABEL: LabelValue,
    Kind.CLASS: ClassValue,
    Kind.PROBABILITIES: dict[str, float],
    Kind.NUMBER: float,
}
_COLUMN: dict[Kind, Any] = {
    Kind.ID: list[Id],
    Kind.OPTIONAL_ID: list[OptionalId],
    Kind.TIME: list[float],  # column batches carry epoch seconds only
    Kind.FEATURES: dict[str, list[FeatureValue]],
    Kind.LABEL: list[LabelValue],
    Kind.CLASS: list[ClassValue],
    Kind.PROBABILITIES: dict[str, list[_Number]],
    Kind.NUMBER: list[_Number],
}

Prediction = _model("Prediction", PREDICTION_DESCRIPTION, _OnePrediction, _fields(PREDICTION_FIELDS, False))
BatchPrediction = _model(
    "BatchPrediction",
    "Column form of :class:`Prediction`: each present key holds one value per event.",
    _Strict,
    _fields(PREDICTION_FIELDS, True),
)
_EVENT[Kind.PREDICTION] = Prediction
_COLUMN[Kind.PREDICTION] = BatchPrediction


def _event_model(kind: EventKind, name: str) -> type[BaseModel]:
    fields = {"type": (Literal[kind.type], kind.type), **_fields(kind.fields, False)}
    return _model(name, kind.description, _Wire, fields)


def _batch_model(kind: EventKind, name: str) -> type[BaseModel]:
    by_name = {f.name: f for f in kind.fields}
    ordered = tuple(by_name[n] for n in kind.batch_order)
    fields = {"type": (Literal[kind.batch_type], kind.batch_type), **_fields(ordered, True)}
    return _model(name, kind.batch_description, _Wire, fields)


InferenceEvent = _event_model(INFERENCE, "InferenceEvent")
LabelEvent = _event_model(LABEL, "LabelEvent")
InferenceBatch = _batch_model(INFERENCE, "InferenceBatch")
LabelBatch = _batch_model(LABEL, "LabelBatch")

WireObject: Any = Annotated[
    Union[InferenceEvent, LabelEvent, InferenceBatch, LabelBatch],  # noqa: UP007 (classes built at run time)
    Field(discriminator="type"),
]
WIRE_ADAPTER: TypeAdapter[Any] = TypeAdapter(WireObject)

SCHEMAS: dict[str, type[BaseModel]] = {
    "inference_event": InferenceEvent,
    "label_event": LabelEvent,
    "inference_batch": InferenceBatch,
    "label_batch": LabelBatch,
}


def json_schemas() -> dict[str, dict]:
    """JSON Schema (draft 2020-12) of every wire object, keyed by file stem."""
    out = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"driftwatch/{name}.v{SCHEMA_VERSION}.json"
        out[name] = schema
    return out


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<name>.schema.json`` files for producers in other languages."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        p = directory / f"{name}.schema.json"
        p.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(p)
    return paths
