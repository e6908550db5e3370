"""Read an Arrow IPC column batch (:mod:`streams.wire.arrow`) into the columns the decoder validates.

:func:`read_batch` turns the message into the same ``doc`` a JSON column batch parses to —
the metadata fields and one entry per column, structs as dicts — except that the leaves are
numpy arrays (numbers, booleans, strings as an object array with None for null) or
:class:`Coded` (dictionary-encoded columns), not Python lists. :mod:`streams.worker.decode`
then checks them with the same code and the same dead-letter reasons as JSON, so a batch
decodes to the same frame in both formats.

What cannot be told apart later is decided here: a float column's nulls become NaN, so a
non-null NaN or infinity (which JSON cannot carry: ``non_finite``) is refused for the whole
message, as JSON's parser refuses it. Integer and boolean columns with nulls, unions and any
other type are read as Python lists (exact, the JSON path's speed).

pyarrow is imported on the first Arrow message, not with the worker.

>>> from streams.wire.arrow import encode_batch
>>> doc = read_batch(encode_batch({"type": "label_batch", "model_id": "m", "event_id": ["a", "b"],
...                               "label": ["x", None], "label_time": [1.0, 2.5]}))
>>> doc["model_id"], doc["event_id"].tolist(), doc["label"].tolist(), doc["label_time"]
('m', ['a', 'b'], ['x', None], array([1. , 2.5]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.errors import InvalidInputError
from detectors.frame import Codes
from streams.wire.contract import INFERENCE, LABEL, R_EMPTY, R_INVALID_ARROW, R_NON_FINITE, R_SCHEMA


class ArrowPayloadError(InvalidInputError):
    """The message is not a usable Arrow batch: ``reason`` is a dead-letter reason, the text says why.

    ``n_events``: the events it carried (its rows, once the stream could be read; else 1);
    ``model_id``: the model its metadata names, when it was read.
    """

    def __init__(self, reason: str, detail: str, n_events: int = 1, model_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.n_events = n_events
        self.model_id = model_id


@dataclass(slots=True)
class Coded:
    """A dictionary-encoded column: row i is ``dictionary[codes[i]]``, null where ``codes[i]`` is -1.

    Its values are parsed once per dictionary entry (:meth:`parse`), not once per row.
    """

    codes: np.ndarray  # intp, -1 = null
    dictionary: Any  # the distinct values: a numpy array or a list (read like any column)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def __getitem__(self, i: int) -> Any:
        c = int(self.codes[i])
        return None if c < 0 else self.dictionary[c]

    def expand(self) -> np.ndarray:
        """The column as an object array (None for null)."""
        d = np.empty(len(self.dictionary) + 1, dtype=object)
        d[:-1] = list(self.dictionary)
        d[-1] = None
        return d[self.codes]

    def parse(self, parse: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """``parse(values) -> (parsed, type_error | None)`` applied to the dictionary, spread over the rows."""
        out, bad, _ = self.parse_coded(parse)
        return out, bad

    def parse_coded(self, parse: Any) -> tuple[np.ndarray, np.ndarray | None, Codes | None]:
        """:meth:`parse`, and for an object result its :class:`~detectors.frame.Codes` (the parsed
        dictionary and the rows' codes into it): later work on the column's distinct values (the
        window summary's category lookup) is then done once per value, not per row."""
        values, bad = parse(self.dictionary)
        missing = np.nan if values.dtype.kind == "f" else None
        ext = np.empty(values.shape[0] + 1, dtype=values.dtype)
        ext[:-1] = values
        ext[-1] = missing
        out = ext[self.codes]  # a null row (-1) takes the last entry: missing
        codes = None
        if out.dtype == object:
            codes = Codes.distinct(out, np.where(self.codes < 0, ext.shape[0] - 1, self.codes), ext)
        if bad is None:
            return out, None, codes
        bad_rows = np.append(bad, False)[self.codes]
        return out, (bad_rows if bad_rows.any() else None), codes


def read_batch(value: bytes) -> dict[str, Any]:
    """The Arrow IPC stream ``value`` as a batch doc (see the module docstring).

    Raises :class:`ArrowPayloadError` (``invalid_arrow``, ``empty``, ``non_finite`` or ``schema``).
    """
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(value).read_all()
        # the reader checks the framing only: offsets, dictionary indices and UTF-8 of a corrupted or
        # hostile message are checked here (else an index past a dictionary's end reaches numpy)
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ArrowPayloadError(R_INVALID_ARROW, f"not a readable Arrow IPC stream: {e}") from None
    if table.num_rows == 0:
        raise ArrowPayloadError(R_EMPTY, "Arrow stream without rows: no events", 0)
    doc: dict[str, Any] = {}
    for k, v in (table.schema.metadata or {}).items():
        try:
            name, text = k.decode(), v.decode()
        except UnicodeDecodeError:
            raise ArrowPayloadError(R_SCHEMA, f"schema metadata {k[:40]!r} is not UTF-8 text", table.num_rows) from None
        if name == "schema_version":
            doc[name] = int(text) if text.isdigit() else text
        elif name in INFERENCE.keys or name in LABEL.keys:  # other metadata (pandas', a writer's) is not ours
            doc[name] = text
    try:
        names = table.column_names
        if len(set(names)) != len(names):
            raise ArrowPayloadError(R_SCHEMA, f"columns {sorted(names)} repeat a name")
        for i, name in enumerate(names):
            chunks = table.column(i).chunks
            arr = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
            doc[name] = _read(arr, name, pa)
    except UnicodeDecodeError:  # a field name (the reader does not check them)
        raise ArrowPayloadError(R_SCHEMA, "a field name is not UTF-8 text", table.num_rows) from None
    except pa.ArrowException as e:  # a conversion pyarrow refuses (valid, but not what a batch holds)
        raise ArrowPayloadError(R_INVALID_ARROW, f"unreadable Arrow column: {e}", table.num_rows) from None
    except ArrowPayloadError as e:  # the message's events and model are known by now
        model = doc.get("model_id")
        raise ArrowPayloadError(e.reason, e.detail, table.num_rows, model if type(model) is str else None) from None
    return doc


def _read(arr: Any, path: str, pa: Any) -> Any:
    """One Arrow array as a decoder column (see the module docstring); structs as dicts of columns."""
    t = arr.type
    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        if len(set(names)) != len(names):
            raise ArrowPayloadError(R_SCHEMA, f"{path} repeats a field name")
        # flatten(): a null struct row makes every child null in that row
        return {n: _read(child, f"{path}.{n}", pa) for n, child in zip(names, arr.flatten(), strict=True)}
    if pa.types.is_dictionary(t):
        codes = arr.indices.to_numpy(zero_copy_only=False)
        if arr.null_count:
            codes = np.where(arr.is_valid().to_numpy(zero_copy_only=False), codes, -1)
        return Coded(codes.astype(np.intp, copy=False), _read(arr.dictionary, path, pa))
    if pa.types.is_floating(t):
        values = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        finite = np.isfinite(values)
        if not finite.all() and (
            arr.null_count == 0 or (~finite & arr.is_valid().to_numpy(zero_copy_only=False)).any()
        ):
            raise ArrowPayloadError(R_NON_FINITE, f"{path} holds NaN or Infinity (send null for a missing value)")
        return values
    if arr.null_count == 0 and (pa.types.is_integer(t) or pa.types.is_boolean(t)):
        return arr.to_numpy(zero_copy_only=False)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return arr.to_numpy(zero_copy_only=False)  # object array of str, None for null
    return arr.to_pylist()
