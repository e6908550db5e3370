"""The wire contract, defined once: every field of every event, its kind, whether it is required, the limits.

Three things read events and must agree on what one is; each derives from this module
instead of spelling the contract again:

* :mod:`streams.wire.schemas` builds the pydantic models and the JSON Schemas (shipped in
  ``streams/wire/schemas/``) from :data:`SHAPES`, one pydantic type per :class:`Kind`;
* :mod:`streams.wire.producer` (the SDK) takes the id limit, the prediction keys, the type
  names and the columns it cuts when it halves a batch from here;
* :mod:`streams.worker.decode` takes the keys each object may carry and must carry, the id
  limit, the prediction keys, the label types and the dead-letter :data:`REASONS` from here.

``tests/streams/wire/test_contract.py`` sends events through all three and checks they agree.

Plain Python (no pydantic, no numpy): the SDK imports this on ``pip install driftwatch`` and
a serving app must not pay for loading pydantic models.

An event kind (:class:`EventKind`) is a list of :class:`WireField` s. Its single-event object
holds the fields in their order; its column batch holds the per-message fields (``per_event``
False: the model, and for an inference its version) once, then one list per per-event field,
every list as long as the batch. Both carry ``schema_version`` and ``type`` too.

>>> sorted(INFERENCE.required)
['event_id', 'event_time', 'features', 'model_id', 'prediction']
>>> INFERENCE.batch_order
('model_id', 'model_version', 'event_id', 'event_time', 'source_id', 'features', 'prediction')
>>> LABEL.columns
('event_id', 'label', 'label_time')
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

#: ``schema_version`` of every event and batch on the wire.
SCHEMA_VERSION: Literal[1] = 1

#: Longest id (event, model, version, source), in characters (code points).
MAX_ID_LEN = 256

#: Python types of the JSON scalars each value may be (their order is the JSON Schema's ``anyOf`` order).
FEATURE_TYPES: tuple[type, ...] = (float, int, str, bool, type(None))
"""A feature value: a number, a string, a boolean or null (missing)."""
LABEL_TYPES: tuple[type, ...] = (str, int, float, bool)
"""A true outcome (label event): a class or a regression target; never null."""
CLASS_TYPES: tuple[type, ...] = (str, int, bool)
"""A predicted class (``prediction.label``); numbers are sent as ``value``."""


class Kind(Enum):
    """What a field holds; :mod:`streams.wire.schemas` maps each to one pydantic type (event and column)."""

    ID = "a string of 1..MAX_ID_LEN characters"
    OPTIONAL_ID = "a string of at most MAX_ID_LEN characters, or null"
    TIME = "epoch seconds (a single event may send an ISO-8601 string; naive = UTC)"
    FEATURES = "an object: feature name -> number, string, boolean or null"
    PREDICTION = "an object with any of label, probabilities, score, value (at least one)"
    LABEL = "a string, number or boolean"
    CLASS = "a string, integer or boolean"
    PROBABILITIES = "an object: class name -> probability"
    NUMBER = "a number"


@dataclass(frozen=True, slots=True)
class WireField:
    """One field of an event: its name, what it holds, and whether a producer must send it.

    ``default`` is what the worker assumes when an optional field is absent.
    ``per_event`` False: in a column batch the field is sent once (not as a list).
    """

    name: str
    kind: Kind
    required: bool = True
    default: str | None = None
    per_event: bool = True


@dataclass(frozen=True, slots=True)
class EventKind:
    """One kind of event: its ``type`` as a single event and as a column batch, and its fields."""

    type: str
    batch_type: str
    description: str
    batch_description: str
    fields: tuple[WireField, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The field names in the single event's order."""
        return tuple(f.name for f in self.fields)

    @property
    def keys(self) -> frozenset[str]:
        """Every key an object of this kind may carry (the same for the event and its batch)."""
        return frozenset(("schema_version", "type", *self.names))

    @property
    def required(self) -> frozenset[str]:
        """The keys a producer must send (``schema_version`` and ``type`` have defaults)."""
        return frozenset(f.name for f in self.fields if f.required)

    @property
    def columns(self) -> tuple[str, ...]:
        """The fields a column batch sends as one list per field (one value per event)."""
        return tuple(f.name for f in self.fields if f.per_event)

    @property
    def batch_order(self) -> tuple[str, ...]:
        """The field names in the batch's order: the once-per-message fields first."""
        return tuple(f.name for f in self.fields if not f.per_event) + self.columns


INFERENCE = EventKind(
    type="inference",
    batch_type="inference_batch",
    description="One prediction a model served.",
    batch_description="Many inference events of one model version, as columns (the SDK's format).",
    fields=(
        WireField("event_id", Kind.ID),
        WireField("model_id", Kind.ID, per_event=False),
        WireField("model_version", Kind.ID, required=False, default="1", per_event=False),
        WireField("event_time", Kind.TIME),
        WireField("source_id", Kind.OPTIONAL_ID, required=False),
        WireField("features", Kind.FEATURES),
        WireField("prediction", Kind.PREDICTION),
    ),
)

LABEL = EventKind(
    type="label",
    batch_type="label_batch",
    description="The true outcome for an earlier prediction, joined by ``event_id``.",
    batch_description="Many labels of one model, as columns.",
    fields=(
        WireField("event_id", Kind.ID),
        WireField("model_id", Kind.ID, per_event=False),
        WireField("label", Kind.LABEL),
        WireField("label_time", Kind.TIME),
    ),
)

SHAPES: tuple[EventKind, ...] = (INFERENCE, LABEL)
"""Every event kind; a message is one of their events, a JSON array of them, or one of their batches."""

PREDICTION_FIELDS: tuple[WireField, ...] = (
    WireField("label", Kind.CLASS, required=False),
    WireField("probabilities", Kind.PROBABILITIES, required=False),
    WireField("score", Kind.NUMBER, required=False),
    WireField("value", Kind.NUMBER, required=False),
)
"""A model output: a class label (with optional probabilities), a score or a regression value; at least one."""
PREDICTION_KEYS: frozenset[str] = frozenset(f.name for f in PREDICTION_FIELDS)
PREDICTION_DESCRIPTION = "A model output: class label (with optional probabilities), a score, or a regression value."
PREDICTION_EMPTY = "needs a label, probabilities, a score or a value"
"""What all three say (after the word ``prediction``) when a prediction carries none of :data:`PREDICTION_KEYS`."""

# Dead-letter reasons: why the worker could not use a message or an event. A small, closed
# vocabulary: the ``dw-reason`` header of a dead letter and an InfluxDB tag value.
R_EMPTY = "empty"  # no value (tombstone) or an empty array
R_TOO_LARGE = "too_large"  # value larger than Settings.max_message_bytes
R_INVALID_ENCODING = "invalid_encoding"  # not UTF-8
R_INVALID_JSON = "invalid_json"  # not JSON
R_INVALID_ARROW = "invalid_arrow"  # marked or sniffed as Arrow IPC, but not a readable Arrow stream
R_NON_FINITE = "non_finite"  # NaN / Infinity literals or numbers beyond float range
R_TOO_DEEP = "too_deep"  # nesting beyond the parser's depth limit
R_SCHEMA = "schema"  # missing / wrong fields (detail says which)
R_UNSUPPORTED_VERSION = "unsupported_schema_version"
R_UNKNOWN_MODEL = "unknown_model"  # model id not in the monitor config
R_BAD_TIME = "bad_time"  # event time negative, not finite, or too far in the future
R_LATE = "late"  # event-time window already closed (set by the windows, not the decoder)
REASONS: tuple[str, ...] = (
    R_EMPTY,
    R_TOO_LARGE,
    R_INVALID_ENCODING,
    R_INVALID_JSON,
    R_INVALID_ARROW,
    R_NON_FINITE,
    R_TOO_DEEP,
    R_SCHEMA,
    R_UNSUPPORTED_VERSION,
    R_UNKNOWN_MODEL,
    R_BAD_TIME,
    R_LATE,
)


# Sharded models (one hot model over several partitions). A model monitored with ``shards: N`` (N > 1) has
# its events spread by the SDK over N partitions of the inferences topic; a label goes to the partition of
# the prediction it answers (the same function of the event id), so the label join stays local. The key of
# every message stays the model id; the partition is chosen explicitly. Producers in other languages do the
# same with these two functions (CRC-32 and Kafka's murmur2 are in every Kafka client).
def murmur2(data: bytes) -> int:
    """Kafka's default partitioner hash (the Java client's ``Utils.murmur2``), as a signed 32-bit int.

    >>> murmur2(b"abc")
    479470107
    """
    length = len(data)
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length % 4
    base = length - tail
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def home_partition(model_id: str, n_partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key ``model_id`` (where an unsharded model's events go).

    >>> home_partition("iris", 4)
    1
    """
    if n_partitions < 1:
        raise ValueError(f"n_partitions: must be >= 1, got {n_partitions}")
    return (murmur2(model_id.encode()) & 0x7FFFFFFF) % n_partitions


def shard_partitions(model_id: str, shards: int, n_partitions: int) -> tuple[int, ...]:
    """The partitions of a model's shards 0..shards-1: its home partition and the next ones (mod the count).

    >>> shard_partitions("iris", 4, 4)
    (1, 2, 3, 0)
    """
    if not 1 <= shards <= n_partitions:
        raise ValueError(f"shards: must be between 1 and the partition count {n_partitions}, got {shards}")
    home = home_partition(model_id, n_partitions)
    return tuple((home + s) % n_partitions for s in range(shards))


def shard_of(event_id: str, shards: int) -> int:
    """The shard of an event (inference or label): CRC-32 of its id's UTF-8 bytes, mod ``shards``.

    >>> shard_of("e-1", 4), shard_of("e-1", 1)
    (0, 0)
    """
    import zlib

    return zlib.crc32(event_id.encode("utf-8", "surrogatepass")) % shards if shards > 1 else 0


# Wire formats of a column batch. JSON is the default and what the JSON Schemas describe; Arrow IPC
# (a stream of one record batch, see streams.wire.arrow and docs/producer.md) is the SDK's opt-in
# binary format. A message says which it is in its CONTENT_TYPE_HEADER; a message without that
# header is Arrow when its value starts with ARROW_MAGIC (JSON text never starts with byte 0xFF).
WIRE_JSON = "json"
WIRE_ARROW = "arrow"
WIRE_FORMATS: tuple[str, ...] = (WIRE_JSON, WIRE_ARROW)
CONTENT_TYPE_HEADER = "content-type"
JSON_CONTENT_TYPE = "application/json"
ARROW_CONTENT_TYPE = "application/vnd.apache.arrow.stream"
ARROW_MAGIC = b"\xff\xff\xff\xff"
"""The first bytes of an Arrow IPC stream (the continuation marker of its first message, Arrow >= 0.15)."""
