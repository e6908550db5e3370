"""Event contract: what producers put on the wire.

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
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from streams.wire.constants import (
    SCHEMA_VERSION as SCHEMA_VERSION,  # re-exported: the SDK imports it from streams.wire.constants
)

Id = Annotated[str, Field(min_length=1, max_length=256)]
FeatureValue = float | int | str | bool | None
EventTime = datetime | float


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION


class Prediction(BaseModel):
    """A model output: class label (with optional probabilities), a score, or a regression value."""

    model_config = ConfigDict(extra="forbid")

    label: str | int | bool | None = None
    probabilities: dict[str, float] | None = None
    score: float | None = None
    value: float | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Prediction:
        if self.label is None and self.value is None and self.score is None and not self.probabilities:
            raise ValueError("prediction needs a label, probabilities, a score or a value")
        return self


class InferenceEvent(_Wire):
    """One prediction a model served."""

    type: Literal["inference"] = "inference"
    event_id: Id
    model_id: Id
    model_version: Id = "1"
    event_time: EventTime
    source_id: str | None = Field(default=None, max_length=256)
    features: dict[str, FeatureValue]
    prediction: Prediction


class LabelEvent(_Wire):
    """The true outcome for an earlier prediction, joined by ``event_id``."""

    type: Literal["label"] = "label"
    event_id: Id
    model_id: Id
    label: str | int | float | bool
    label_time: EventTime


class BatchPrediction(BaseModel):
    """Column form of :class:`Prediction`: each present key holds one value per event."""

    model_config = ConfigDict(extra="forbid")

    label: list[str | int | bool | None] | None = None
    probabilities: dict[str, list[float | None]] | None = None
    score: list[float | None] | None = None
    value: list[float | None] | None = None


class InferenceBatch(_Wire):
    """Many inference events of one model version, as columns (the SDK's format)."""

    type: Literal["inference_batch"] = "inference_batch"
    model_id: Id
    model_version: Id = "1"
    event_id: list[Id]
    event_time: list[float]
    source_id: list[str | None] | None = None
    features: dict[str, list[FeatureValue]]
    prediction: BatchPrediction


class LabelBatch(_Wire):
    """Many labels of one model, as columns."""

    type: Literal["label_batch"] = "label_batch"
    model_id: Id
    event_id: list[Id]
    label: list[str | int | float | bool]
    label_time: list[float]


WireObject = Annotated[InferenceEvent | LabelEvent | InferenceBatch | LabelBatch, Field(discriminator="type")]
WIRE_ADAPTER: TypeAdapter = TypeAdapter(WireObject)

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
