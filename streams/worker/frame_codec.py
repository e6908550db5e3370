"""A window's frame packed for the trip to the detector process: object columns as integer codes.

Why: the worker pickles every closed window to its detector process
(:mod:`streams.worker.detector_process`). A 5,000-event window of the benchmark model carries eight
object columns (five categorical features, the event ids, the sources, the predicted class): 40,000
Python strings, each pickled on its own and memoised by the pickler, then rebuilt one by one in the
child. That was ~7 ms of the worker's CPU per window (~1.4 µs per event, a third of its process)
for ~1 MB of pickle, while the numeric block (15 × 5,000 floats) pickles as a plain copy in ~0.1 ms.

Here a column of strings (and None) that repeats its values travels as integer codes plus its
distinct values, first-seen order (:class:`Coded`), and the child rebuilds the same object column
with one ``numpy.take``. The codes come from one pass of a dict in C (``dict.setdefault`` mapped over
the column: equality, not hashes, decides, so the column comes back equal element by element);
a column whose values are mostly distinct (event ids) or hold anything but ``str`` and ``None``
travels as it is. Every other column is passed through.

>>> import numpy as np
>>> f = Frame.from_columns(event_id=np.array(["a", "b", "c", "d"], dtype=object), event_time=np.zeros(4),
...     categorical={"c": np.array(["u", None, "u", "u"], dtype=object)})
>>> p = pack(f)
>>> type(p.categorical["c"]).__name__, p.categorical["c"].codes.tolist(), p.categorical["c"].values
('Coded', [0, 1, 0, 0], ['u', None])
>>> unpack(p).categorical["c"].tolist()
['u', None, 'u', 'u']
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from detectors.frame import Codes, Frame

MAX_DISTINCT_SHARE = 0.5
"""A column is coded only if its distinct values are at most this share of its rows (else it is sent as is)."""


@dataclass(slots=True)
class Coded:
    """An object column as ``values[codes]``: ``codes`` unsigned ints (as narrow as the values allow),
    ``values`` the distinct elements, first seen first."""

    codes: np.ndarray
    values: list[Any]

    def decode(self) -> Codes:
        """The object column back (its elements are the ``values`` objects), with its codes."""
        table = np.empty(len(self.values), dtype=object)
        table[:] = self.values
        return Codes(table.take(self.codes), self.codes, table)


Column = np.ndarray | Coded


def encode(col: np.ndarray, codes: Codes | None = None) -> Column:
    """``col`` as :class:`Coded` (from its ``codes`` if known, else :meth:`Codes.of`), or itself if not worth it."""
    c = codes if codes is not None else Codes.of(col, MAX_DISTINCT_SHARE)
    return col if c is None else Coded(c.codes, c.values.tolist())


def decode(col: Column) -> np.ndarray:
    """The inverse of :func:`encode`."""
    return col.decode().column if isinstance(col, Coded) else col


@dataclass(slots=True)
class PackedFrame:
    """A :class:`Frame` whose object columns may be :class:`Coded` (same fields, same meaning)."""

    columns: dict[str, Any]  # Frame's fields; event_id, source_id, pred_label, label: Column or None
    categorical: dict[str, Column]


# event ids are unique by design: coding them would cost a pass and save nothing
_OBJECT_FIELDS = ("source_id", "pred_label", "label")


def pack(frame: Frame) -> PackedFrame:
    """``frame`` ready to pickle: its repeating object columns coded (see the module docstring)."""
    columns = {f.name: getattr(frame, f.name) for f in fields(Frame) if f.name not in ("categorical", "codes")}
    for name in _OBJECT_FIELDS:
        if columns[name] is not None:
            columns[name] = encode(columns[name], frame.codes_of(columns[name]))
    return PackedFrame(columns, {k: encode(v, frame.codes_of(v)) for k, v in frame.categorical.items()})


def unpack(packed: PackedFrame) -> Frame:
    """The frame :func:`pack` was given, equal column by column; the codes it travelled with are kept
    (:attr:`Frame.codes`), so the detectors hash, sort and group the distinct values only."""
    columns = dict(packed.columns)
    codes: dict[int, Codes] = {}

    def back(col: Column) -> np.ndarray:
        if not isinstance(col, Coded):
            return col
        c = col.decode()
        codes[id(c.column)] = c
        return c.column

    for name in _OBJECT_FIELDS:
        if columns[name] is not None:
            columns[name] = back(columns[name])
    columns["codes"] = codes
    return Frame(**columns, categorical={k: back(v) for k, v in packed.categorical.items()})
