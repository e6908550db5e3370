"""The Arrow IPC column batch: the SDK's opt-in binary wire format (``wire_format="arrow"``).

Why: a JSON column batch costs the worker ~1.3 µs per event in ``orjson.loads`` alone and
another ~1.6 µs turning Python lists into numpy columns; an Arrow record batch is already
columns, so the worker reads numbers straight into numpy and categories once per distinct
value (dictionary encoding). JSON stays the default and what the JSON Schemas describe.

The layout is the JSON column batch's (:mod:`streams.wire.contract`), one record batch in an
Arrow IPC *stream* (``pyarrow.ipc.new_stream``), so any Arrow library can write it:

* the once-per-message fields (``schema_version``, ``type``, ``model_id`` and, for an
  inference, ``model_version``) are the schema's metadata, as UTF-8 text;
* each per-event field is a column: ``event_id`` (string), ``event_time`` / ``label_time``
  (float64 epoch seconds), ``source_id`` (string, nullable), ``label`` (any scalar type);
  ``features`` is a struct column with one child per feature, ``prediction`` a struct with
  children ``label``, ``score``, ``value`` and ``probabilities`` (a struct: class -> float64);
* a value is a scalar of the column's type or null (missing); a column whose events carry
  different types (a number in one event, a string in another) is a dense union of
  ``float64``, ``int64``, ``string`` and ``bool`` children; repetitive string columns are
  dictionary-encoded.

NaN and infinities are rejected as in JSON (the SDK sends them as null and counts them).

Importing this module imports pyarrow; the SDK imports it only when ``wire_format="arrow"``
is chosen (``pip install 'driftwatch[arrow]'``), so ``pip install driftwatch`` needs no pyarrow.

>>> from streams.wire.producer import pack_inferences
>>> rows = [("m", "1", "a", 1.0, None, {"x": 1.0, "c": "u"}, {"label": "p"}),
...         ("m", "1", "b", 2.0, "s", {"x": None, "c": 3}, {"label": "q"})]
>>> value = encode_batch(pack_inferences(rows)[0])
>>> value[:4] == ARROW_MAGIC
True
>>> import pyarrow as pa
>>> batch = pa.ipc.open_stream(value).read_next_batch()
>>> batch.schema.metadata[b"model_id"], batch.column("features").type
(b'm', StructType(struct<x: double, c: dense_union<float: double=0, int: int64=1, string: string=2, bool: bool=3>>))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from streams.wire.contract import ARROW_MAGIC as ARROW_MAGIC  # re-exported: what a stream starts with
from streams.wire.contract import INFERENCE, LABEL, EventKind

#: The children of a mixed-type column's dense union, in type-code order.
UNION_CHILDREN: tuple[tuple[str, pa.DataType], ...] = (
    ("float", pa.float64()),
    ("int", pa.int64()),
    ("string", pa.string()),
    ("bool", pa.bool_()),
)
_UNION_CODE = {float: 0, int: 1, str: 2, bool: 3, type(None): 0}
_UNION_TYPE = pa.dense_union([pa.field(name, t) for name, t in UNION_CHILDREN])
_NO_DICTIONARY = frozenset({"event_id"})
"""String columns sent plain: their values are all different (dictionary encoding would only add an index)."""
_INT64 = (-(2**63), 2**63 - 1)
_DICTIONARY = pa.dictionary(pa.int32(), pa.string())


def kind_of(batch_type: str) -> EventKind:
    """The event kind of a batch ``type`` (``inference_batch`` or ``label_batch``)."""
    for kind in (INFERENCE, LABEL):
        if kind.batch_type == batch_type:
            return kind
    raise ValueError(f"type: {batch_type!r} is not a column batch (inference_batch or label_batch)")


def column(values: Sequence[Any], name: str = "") -> pa.Array:
    """One per-event column (JSON scalars or None) as an Arrow array of the narrowest fitting type.

    >>> column([1, None, 3]).type, column([1, 2.5]).type, column(["a", "b", "a", "a"]).type
    (DataType(int64), DataType(double), DictionaryType(dictionary<values=string, indices=int32, ordered=0>))
    >>> column([1, "a", None]).to_pylist()
    [1, 'a', None]
    """
    types = set(map(type, values))
    types.discard(type(None))
    if not types:
        return pa.nulls(len(values))
    if types == {str}:
        if name not in _NO_DICTIONARY and 2 * len(set(values)) <= len(values):
            return pa.array(values, _DICTIONARY)
        return pa.array(values, pa.string())
    if types == {bool}:
        return pa.array(values, pa.bool_())
    if types == {int}:
        try:
            return pa.array(values, pa.int64())
        except OverflowError:  # beyond int64: a number is a number (JSON sends it as one)
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if types <= {int, float}:
        return pa.array(values, pa.float64())
    return _union(values)


def _union(values: Sequence[Any]) -> pa.Array:
    """A dense union of the four scalar types: a column whose events carry different types."""
    children: list[list[Any]] = [[] for _ in UNION_CHILDREN]
    codes = []
    offsets = []
    for v in values:
        code = _UNION_CODE.get(type(v))
        if code is None:
            raise ValueError(f"{type(v).__name__} is not a JSON scalar")
        if code == 1 and not _INT64[0] <= v <= _INT64[1]:
            code, v = 0, float(v)
        codes.append(code)
        offsets.append(len(children[code]))
        children[code].append(v)
    return pa.UnionArray.from_dense(
        pa.array(codes, pa.int8()),
        pa.array(offsets, pa.int32()),
        [pa.array(c, t) for c, (_n, t) in zip(children, UNION_CHILDREN, strict=True)],
        [n for n, _t in UNION_CHILDREN],
    )


def _struct(columns: dict[str, Any], n: int, path: str) -> pa.Array:
    """An object of columns (``features``, ``prediction``, ``probabilities``) as a struct column."""
    if not columns:
        return pa.array([{}] * n, pa.struct([]))
    children = [
        _struct(v, n, f"{path}.{k}") if isinstance(v, dict) else column(v, f"{path}.{k}") for k, v in columns.items()
    ]
    return pa.StructArray.from_arrays(children, names=list(columns))


def encode_batch(batch: dict[str, Any]) -> bytes:
    """A column batch dict (:func:`streams.wire.producer.pack_inferences` / ``pack_labels``) as Arrow IPC bytes."""
    kind = kind_of(batch["type"])
    n = len(batch["event_id"])
    metadata = {"schema_version": str(batch.get("schema_version", 1)), "type": kind.batch_type}
    metadata |= {f.name: str(batch[f.name]) for f in kind.fields if not f.per_event and batch.get(f.name) is not None}
    names = [name for name in kind.columns if name in batch]
    arrays = [_struct(batch[k], n, k) if isinstance(batch[k], dict) else column(batch[k], k) for k in names]
    record = pa.RecordBatch.from_arrays(arrays, names=names).replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, record.schema) as writer:
        writer.write_batch(record)
    return sink.getvalue().to_pybytes()
