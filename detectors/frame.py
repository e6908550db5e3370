"""Columnar blocks of inference events: the unit every detector works on.

A :class:`Frame` holds the events of one model version as numpy columns:
numeric features as ``float64`` (NaN where missing or mistyped), categorical
features as ``object`` arrays of ``str`` (``None`` where missing or mistyped),
and a boolean mask per feature marking values that had the wrong type, so data
quality can tell "missing" from "type error". Frames concatenate cheaply, so a
window is a list of decoded batches joined once when it closes.

>>> import numpy as np
>>> f = Frame.from_columns(
...     event_id=np.array(["a", "b"], dtype=object),
...     event_time=np.array([1.0, 2.0]),
...     numeric={"x": np.array([0.5, np.nan])},
...     categorical={"c": np.array(["u", None], dtype=object)},
... )
>>> len(f), concat([f, f]).numeric["x"].shape
(2, (4,))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.values import not_none


@dataclass(slots=True, eq=False)
class Codes:
    """A dictionary encoding of one object column: ``column[i] == values[codes[i]]`` for every row.

    Why: a column of categories (sources, predicted classes, categorical features) holds a few
    distinct strings many times; work that only needs the distinct values (hashing, sorting them
    as text, grouping rows) is then done once per value instead of once per row. ``column`` is the
    very array described: :meth:`Frame.codes_of` hands the codes out only for that array, so a
    column replaced or re-built (``take``, ``concat``, ``replace``) simply has none.
    """

    column: np.ndarray  # object: the column described
    codes: np.ndarray  # unsigned ints, one per row
    values: np.ndarray  # object: the distinct elements (str or None)

    @classmethod
    def distinct(cls, column: np.ndarray, codes: np.ndarray, values: np.ndarray) -> Codes:
        """The codes of ``column`` given as ``values[codes]`` where ``values`` (few: a dictionary per message)
        may repeat an element: the values made distinct (first seen first) and the codes mapped onto them.

        >>> col = np.array(["a", None, "a", "b"], dtype=object)
        >>> c = Codes.distinct(col, np.array([0, 1, 2, 3]), np.array(["a", None, "a", "b"], dtype=object))
        >>> c.values.tolist(), c.codes.tolist(), bool((c.values[c.codes] == col).all())
        (['a', None, 'b'], [0, 1, 0, 2], True)
        """
        first: dict[Any, int] = {}
        at = np.array([first.setdefault(v, len(first)) for v in values.tolist()], dtype=np.int64)  # few values
        distinct = np.empty(len(first), dtype=object)
        distinct[:] = list(first)
        return cls(column, at.astype(_code_dtype(len(first)))[codes], distinct)

    @classmethod
    def of(cls, column: np.ndarray, max_share: float = 0.5) -> Codes | None:
        """The codes of an object column of ``str``/``None`` whose distinct values are at most ``max_share``
        of its rows (values first seen first); None for any other column.

        One pass of a dict in C (``dict.setdefault`` mapped over the column): equality decides, so
        ``values[codes]`` equals the column element by element. Only ``str`` and ``None`` are coded:
        ``1``, ``1.0`` and ``True`` are one dict key.
        """
        if column.dtype != object or column.ndim != 1 or column.shape[0] == 0:
            return None
        items = column.tolist()
        if not set(map(type, items)) <= _STR_OR_NONE:
            return None
        first: dict[Any, int] = {}
        seen = np.fromiter(map(first.setdefault, items, range(len(items))), dtype=np.int64, count=len(items))
        k = len(first)
        if k > max_share * len(items):
            return None
        rows = np.fromiter(first.values(), dtype=np.int64, count=k)  # increasing: dicts keep insertion order
        values = np.empty(k, dtype=object)
        values[:] = list(first)
        return cls(column, np.searchsorted(rows, seen).astype(_code_dtype(k)), values)


_STR_OR_NONE = frozenset((str, type(None)))


def _code_dtype(k: int) -> type:
    return np.uint8 if k <= 256 else np.uint16 if k <= 65_536 else np.int32


@dataclass(frozen=True, slots=True)
class TextGroups:
    """Rows grouped by the text of an object column (client ids, classes): one sort per window, shared.

    ``row[i]`` is row i's index into ``names`` (the column's distinct present values as unicode,
    sorted), ``-1`` where it is None. :meth:`unique` gives exactly
    ``np.unique(col[known].astype(str), return_inverse=True)`` for the rows grouped, also after
    :meth:`take`; with the column's :class:`Codes` only its distinct values are sorted.

    >>> g = TextGroups.of(np.array(["b", None, "a", "b"], dtype=object))
    >>> known, names, inv = g.take(np.array([0, 1, 3])).unique()
    >>> known.tolist(), names.tolist(), inv.tolist()
    ([True, False, True], ['b'], [0, 0])
    """

    row: np.ndarray  # int64 per row, -1: None
    names: np.ndarray  # unicode, sorted, unique

    @classmethod
    def of(cls, column: np.ndarray, codes: Codes | None = None) -> TextGroups:
        """The groups of ``column``, from its ``codes`` when given (then its distinct values only are sorted)."""
        if codes is None:
            known = not_none(column)
            names, inv = np.unique(column[known].astype(str), return_inverse=True)
            row = np.full(column.shape[0], -1, dtype=np.int64)
            row[known] = inv
            return cls(row, names)
        present = not_none(codes.values)
        names, inv = np.unique(codes.values[present].astype(str), return_inverse=True)
        of_value = np.full(codes.values.shape[0], -1, dtype=np.int64)
        of_value[present] = inv
        return cls(of_value[codes.codes], names)

    def take(self, idx: np.ndarray) -> TextGroups:
        """The groups of the rows ``idx`` (an index array or a boolean mask)."""
        return TextGroups(self.row[idx], self.names)

    def unique(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(known, names, inv)``: the rows with a value, the distinct values they hold (sorted) and each
        known row's index into them."""
        known = self.row >= 0
        r = self.row[known]
        used = np.bincount(r, minlength=self.names.shape[0]) > 0
        if used.all():
            return known, self.names, r
        new = np.cumsum(used) - 1
        return known, self.names[used], new[r]


@dataclass(slots=True)
class Frame:
    """Columnar events of one model version (see module docstring)."""

    event_id: np.ndarray  # object[str]
    event_time: np.ndarray  # float64, epoch seconds
    source_id: np.ndarray  # object[str | None]
    numeric: dict[str, np.ndarray] = field(default_factory=dict)  # float64, NaN = missing
    categorical: dict[str, np.ndarray] = field(default_factory=dict)  # object[str | None]
    type_error: dict[str, np.ndarray] = field(default_factory=dict)  # bool, per feature
    pred_label: np.ndarray | None = None  # object[str | None], predicted class
    pred_proba: np.ndarray | None = None  # float64 (n, len(classes)), NaN row if absent
    classes: tuple[str, ...] = ()  # column order of pred_proba
    pred_value: np.ndarray | None = None  # float64: regression value or score
    label: np.ndarray | None = None  # object: the true label (labelled reference rows only; events carry none)
    #: features the monitor does not declare: name -> rows that carried a value (bool); see
    #: :func:`detectors.quality.undeclared_features`. Empty for well-formed traffic.
    unknown: dict[str, np.ndarray] = field(default_factory=dict)
    #: dictionary encodings of some object columns, by ``id`` of the column (see :class:`Codes`); a
    #: cache that changes no value: empty unless whoever built the frame had them at hand
    codes: dict[int, Codes] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.event_time.shape[0])

    def codes_of(self, column: np.ndarray | None) -> Codes | None:
        """The :class:`Codes` of ``column`` (one of this frame's own arrays), or None if not known."""
        if column is None:
            return None
        c = self.codes.get(id(column))
        return c if c is not None and c.column is column else None

    def text_groups(self, column: np.ndarray) -> TextGroups:
        """:class:`TextGroups` of ``column`` (one of this frame's object arrays), from its codes if known."""
        return TextGroups.of(column, self.codes_of(column))

    @classmethod
    def from_columns(
        cls,
        *,
        event_id: np.ndarray,
        event_time: np.ndarray,
        source_id: np.ndarray | None = None,
        numeric: dict[str, np.ndarray] | None = None,
        categorical: dict[str, np.ndarray] | None = None,
        type_error: dict[str, np.ndarray] | None = None,
        pred_label: np.ndarray | None = None,
        pred_proba: np.ndarray | None = None,
        classes: tuple[str, ...] = (),
        pred_value: np.ndarray | None = None,
        label: np.ndarray | None = None,
    ) -> Frame:
        """Build a frame, filling absent optional columns with their empty value."""
        n = int(np.asarray(event_time).shape[0])
        if source_id is None:
            source_id = np.full(n, None, dtype=object)
        numeric = dict(numeric or {})
        categorical = dict(categorical or {})
        te = dict(type_error or {})
        for name in (*numeric, *categorical):
            te.setdefault(name, np.zeros(n, dtype=bool))
        return cls(
            event_id=np.asarray(event_id, dtype=object),
            event_time=np.asarray(event_time, dtype=np.float64),
            source_id=np.asarray(source_id, dtype=object),
            numeric=numeric,
            categorical=categorical,
            type_error=te,
            pred_label=pred_label,
            pred_proba=pred_proba,
            classes=tuple(classes),
            pred_value=pred_value,
            label=label,
        )

    def take(self, idx: np.ndarray | slice) -> Frame:
        """Rows selected by an index array, boolean mask or slice."""

        def sel(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        categorical = {k: v[idx] for k, v in self.categorical.items()}
        codes: dict[int, Codes] = {}
        for k, v in self.categorical.items():  # the categorical columns' codes follow their rows
            c = self.codes_of(v)
            if c is not None:
                new = categorical[k]
                codes[id(new)] = Codes(new, c.codes[idx], c.values)
        return Frame(
            event_id=self.event_id[idx],
            event_time=self.event_time[idx],
            source_id=self.source_id[idx],
            numeric={k: v[idx] for k, v in self.numeric.items()},
            categorical=categorical,
            type_error={k: v[idx] for k, v in self.type_error.items()},
            pred_label=sel(self.pred_label),
            pred_proba=sel(self.pred_proba),
            classes=self.classes,
            pred_value=sel(self.pred_value),
            label=sel(self.label),
            unknown={k: v[idx] for k, v in self.unknown.items()},
            codes=codes,
        )


def concat(frames: list[Frame]) -> Frame:
    """Join frames of the same model version; columns missing in one become missing values."""
    if not frames:
        raise ValueError("concat needs at least one frame")
    if len(frames) == 1:
        return frames[0]
    lens = [len(f) for f in frames]

    def cat(getter, fill, dtype) -> np.ndarray:
        parts = []
        for f, n in zip(frames, lens):
            a = getter(f)
            parts.append(a if a is not None else np.full(n, fill, dtype=dtype))
        return np.concatenate(parts)

    num_names = list(dict.fromkeys(k for f in frames for k in f.numeric))
    cat_names = list(dict.fromkeys(k for f in frames for k in f.categorical))
    classes = next((f.classes for f in frames if f.classes), ())
    proba = None
    if any(f.pred_proba is not None for f in frames):
        parts = []
        for f, n in zip(frames, lens):
            if f.pred_proba is not None and f.classes == classes:
                parts.append(f.pred_proba)
            else:
                parts.append(np.full((n, len(classes)), np.nan))
        proba = np.concatenate(parts)
    has_label = any(f.pred_label is not None for f in frames)
    has_value = any(f.pred_value is not None for f in frames)
    has_truth = any(f.label is not None for f in frames)
    categorical = {k: cat(lambda f, k=k: f.categorical.get(k), None, object) for k in cat_names}
    codes: dict[int, Codes] = {}
    for k, col in categorical.items():  # a column coded in every frame stays coded: the values side by side
        parts_c = [f.codes_of(f.categorical.get(k)) for f in frames]
        if all(c is not None for c in parts_c):
            coded = [c for c in parts_c if c is not None]
            offsets = np.cumsum([0] + [c.values.shape[0] for c in coded[:-1]])
            joined = np.concatenate([c.codes.astype(np.int64) + o for c, o in zip(coded, offsets)])
            codes[id(col)] = Codes.distinct(col, joined, np.concatenate([c.values for c in coded]))
    return Frame(
        event_id=np.concatenate([f.event_id for f in frames]),
        event_time=np.concatenate([f.event_time for f in frames]),
        source_id=np.concatenate([f.source_id for f in frames]),
        numeric={k: cat(lambda f, k=k: f.numeric.get(k), np.nan, np.float64) for k in num_names},
        categorical=categorical,
        type_error={k: cat(lambda f, k=k: f.type_error.get(k), False, bool) for k in (*num_names, *cat_names)},
        pred_label=cat(lambda f: f.pred_label, None, object) if has_label else None,
        pred_proba=proba,
        classes=classes,
        pred_value=cat(lambda f: f.pred_value, np.nan, np.float64) if has_value else None,
        label=cat(lambda f: f.label, None, object) if has_truth else None,
        unknown={
            k: cat(lambda f, k=k: f.unknown.get(k), False, bool)
            for k in dict.fromkeys(k for f in frames for k in f.unknown)
        },
        codes=codes,
    )
