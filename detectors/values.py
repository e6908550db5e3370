"""One reading of feature values, shared by the event decoder and the reference loader.

A reference file and the event stream must agree on what a value *is*, or a
feature drifts with p = 0 in every window although nothing moved: a CSV written
by pandas holds ``True``/``False`` where events carry JSON ``true``/``false``;
an integer column with a gap becomes ``1.0``, ``2.0`` where events send ``1``,
``2``. So both read values through the functions here:

* :func:`parse_numeric` — numbers (booleans as 1/0) to float64, NaN where missing;
* :func:`parse_categories` — categories to canonical text: strings as they are,
  ``true``/``false`` for booleans (and for the texts ``True``/``TRUE``/...),
  integers and integral floats as integer text (``1``, ``1.0`` -> ``"1"``);
* for a **boolean** feature (``kind: boolean``), every spelling of a truth value —
  ``true``/``True``/``TRUE``, ``1``/``1.0``/``"1"``, ``yes``/``no`` — is one of
  ``"true"`` / ``"false"``.

Each returns ``(values, type_error)``: a value of the wrong type becomes missing
and ``type_error`` (None when there is none) marks it, so data quality can count
it (the decoder) or the loader can name the row (a reference file).

``text=True`` reads cells of a text file (CSV): every cell is a string, so a
numeric cell is parsed (``"1.5"``), an empty or ``NA``/``NaN``/``null``/``None``
cell is missing and an empty categorical cell is missing. With ``text=False``
(JSON events, JSON lines, Parquet, NPZ) values keep their types: a string in a
numeric feature is a type error, as the wire contract says.

Work is per column, in C: numpy conversions, ``array.array``, set and dict
operations over the column (``map(dict.get, ...)`` runs no Python bytecode per
value). Python code runs per *distinct* value at most, and only for mixed-type
columns and booleans.

>>> parse_categories(["a", True, 3, 2.0, None])[0].tolist()
['a', 'true', '3', '2', None]
>>> parse_categories(["True", "true", 1, "yes", "0", "maybe"], boolean=True)
(array(['true', 'true', 'true', 'true', 'false', None], dtype=object), array([False, False, False, False, False,  True]))
>>> parse_numeric(["1.5", "", "NA", "True"], text=True)[0].tolist()
[1.5, nan, nan, 1.0]
"""

from __future__ import annotations

import array
import re
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any, cast

import numpy as np

MISSING_TEXTS = frozenset({"", "na", "n/a", "nan", "null", "none"})
"""Cell texts read as missing in numeric columns of text files (case-insensitive, stripped)."""
TRUE, FALSE = "true", "false"
_TRUE_TEXTS = ("true", "1", "1.0", "yes", "y", "t")
_FALSE_TEXTS = ("false", "0", "0.0", "no", "n", "f")
_NONE = np.array(None, dtype=object)


def not_none(values: np.ndarray) -> np.ndarray:
    """Boolean mask: which elements of an object array are not None (``values != None``, elementwise).

    One named function instead of ``np.not_equal(values, None)`` (numpy's stubs refuse a bare
    None operand) or ``values != None`` (which reads like a mistake).

    >>> not_none(np.array(["a", None, 0], dtype=object)).tolist()
    [True, False, True]
    """
    return np.not_equal(values, _NONE)


def _spellings(words: Sequence[str]) -> set[str]:
    return {v for w in words for v in (w, w.upper(), w.capitalize())}


_BOOLEAN_OF: dict[str, str] = {
    **{s: TRUE for s in _spellings(_TRUE_TEXTS)},
    **{s: FALSE for s in _spellings(_FALSE_TEXTS)},
}
"""Texts a boolean feature reads as true/false."""
_BOOL_CASE: dict[str, str] = {s: TRUE for s in _spellings([TRUE]) if s != TRUE}
_BOOL_CASE.update({s: FALSE for s in _spellings([FALSE]) if s != FALSE})
"""``True``/``TRUE``/``False``/``FALSE`` -> ``true``/``false``: a categorical feature's booleans in
any file read as the events' JSON booleans do."""
_BOOL_CASE_KEYS = frozenset(_BOOL_CASE)
_INTEGRAL_TEXT = re.compile(r"[+-]?\d+\.0*")
_NUMBER_OR_NONE = frozenset((float, int, bool, type(None)))
_STR_OR_NONE = frozenset((str, type(None)))
_BOOL_OR_NONE = frozenset((bool, type(None)))
_INT_OR_NONE = frozenset((int, type(None)))

Parsed = tuple[np.ndarray, "np.ndarray | None"]


def _mask(bad: np.ndarray) -> np.ndarray | None:
    return bad if bad.any() else None


# -- numbers ------------------------------------------------------------------------------------


def parse_numeric(values: Sequence[Any] | np.ndarray, *, text: bool = False) -> Parsed:
    """Numbers to float64 (NaN = missing); see the module docstring.

    Booleans are 1/0 (``true``/``false`` texts too, with ``text``). Non-finite
    numbers are left as they are (the detectors treat +-inf as missing).
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "fiub":
            return values.astype(np.float64), None
        if values.dtype.kind in "US":
            return _numeric_texts(values.astype(str))
        values = values.tolist()
    if text:
        return _numeric_texts(
            np.array(["" if v is None else v for v in values] if None in values else values, dtype=str)
        )
    try:  # strict and fast: refuses None and strings (the array shares the array.array's buffer)
        return np.frombuffer(array.array("d", values), dtype=np.float64), None
    except (TypeError, OverflowError):
        pass
    types = set(map(type, values))
    if types <= _NUMBER_OR_NONE:
        try:
            return np.asarray(values, dtype=np.float64), None
        except OverflowError:
            pass
    # wrong types among them: keep the numbers (vectorised over an object array), mark the rest
    obj = np.empty(len(values), dtype=object)
    obj[:] = values
    kinds = np.fromiter(map(_NUMBER_KIND.get, map(type, values), repeat(0)), dtype=np.int8, count=len(values))
    numbers = kinds == 1
    out = np.full(len(values), np.nan)
    bad = kinds == 0
    try:
        out[numbers] = obj[numbers].astype(np.float64)
    except OverflowError:  # integers beyond float range: find them (error path only)
        for i in np.flatnonzero(numbers):
            try:
                out[i] = obj[i]
            except OverflowError:
                bad[i] = True
    return out, _mask(bad)


_NUMBER_KIND = {float: 1, int: 1, bool: 1, type(None): 2}  # anything else: 0 (a type error)


def _numeric_texts(texts: np.ndarray) -> Parsed:
    """Numeric cells of a text file: numbers, missing markers, true/false; the rest are type errors."""
    lowered = np.char.lower(np.char.strip(texts))
    out = np.full(texts.shape[0], np.nan)
    missing = np.isin(lowered, list(MISSING_TEXTS))
    is_true, is_false = lowered == TRUE, lowered == FALSE
    out[is_true], out[is_false] = 1.0, 0.0
    todo = ~(missing | is_true | is_false)
    try:
        out[todo] = lowered[todo].astype(np.float64)
        return out, None
    except ValueError:
        pass
    bad = np.zeros(texts.shape[0], dtype=bool)
    for i in np.flatnonzero(todo):  # error path only: find the bad cells
        try:
            out[i] = float(lowered[i])
        except ValueError:
            bad[i] = True
    return out, _mask(bad)


# -- categories --------------------------------------------------------------------------------


def _category_of(value: Any, boolean: bool) -> str | None:
    """Canonical text of one typed value (None: a type error). Runs per distinct value."""
    t = type(value)
    if boolean:
        if t is str:
            return _BOOLEAN_OF.get(value.strip())
        if t is bool or ((t is int or t is float) and value in (0, 1)):
            return TRUE if value else FALSE
        return None
    if t is str:
        return _BOOL_CASE.get(value, value)
    if t is bool:
        return TRUE if value else FALSE
    if t is int:
        return str(value)
    if t is float and value.is_integer():
        return str(int(value))
    return None


_BAD = object()


def parse_categories(values: Sequence[Any] | np.ndarray, *, boolean: bool = False, text: bool = False) -> Parsed:
    """Categories to canonical text (None = missing); see the module docstring.

    ``boolean``: the feature is declared ``kind: boolean``: values are ``"true"`` /
    ``"false"``, anything that is not a truth value is a type error. ``text``: the
    values are cells of a text file (an empty cell is missing; ``1.0`` reads as ``1``).
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "b":
            return np.where(values, TRUE, FALSE).astype(object), None
        if values.dtype.kind == "f":  # NaN = missing (Parquet / NPZ float columns)
            nan = np.isnan(values)
            obj = values.astype(object)
            obj[nan] = None
            values = obj
        values = cast("list[Any]", values.tolist())
    n = len(values)
    if text:
        values = [None if v is None or not v.strip() else v for v in values] if n else []
    types = set(map(type, values))
    if types <= _STR_OR_NONE:
        out = np.empty(n, dtype=object)
        out[:] = values
        if boolean:
            return _apply(out, values, set(values), lambda v: _category_of(v, True))
        if text:
            vocab = set(values)
            vocab = {v for v in vocab if v is not None and _INTEGRAL_TEXT.fullmatch(v)} | (vocab & _BOOL_CASE_KEYS)
            if vocab:
                return _apply(out, values, vocab, lambda v: _BOOL_CASE.get(v) or str(int(v.partition(".")[0])))
            return out, None
        if _BOOL_CASE_KEYS.isdisjoint(values):  # the common case: one C pass, no set built
            return out, None
        # True/TRUE/...: the spelling of a boolean in a file, read as events carry it
        return _apply(out, values, set(values) & _BOOL_CASE_KEYS, _BOOL_CASE.get)
    if types <= _BOOL_OR_NONE:
        obj = np.empty(n, dtype=object)
        obj[:] = values
        out = np.full(n, None, dtype=object)
        out[np.equal(obj, True)] = TRUE  # elementwise over the object array
        out[np.equal(obj, False)] = FALSE
        return out, None
    if types <= _INT_OR_NONE and not boolean:  # integer codes: their text, once per distinct value
        out = np.empty(n, dtype=object)
        out[:] = list(map({v: str(v) for v in set(values) if v is not None}.get, values))
        return out, None
    # mixed types: one Python call per distinct (type, value), applied to the column in C
    keys = list(zip(map(type, values), values))
    distinct: set[tuple[type, Any]] | None
    try:
        distinct = set(keys)
    except TypeError:  # lists / dicts among the values: type errors, element by element (rare)
        distinct = None
    out = np.empty(n, dtype=object)
    if distinct is None:
        bad = np.zeros(n, dtype=bool)
        for i, v in enumerate(values):
            c = None if v is None else (_category_of(v, boolean) if type(v) in _SCALARS else None)
            out[i] = c
            bad[i] = v is not None and c is None
        return out, _mask(bad)
    canon = {k: (None if k[1] is None else _or_bad(_category_of(k[1], boolean))) for k in distinct}
    out[:] = list(map(canon.__getitem__, keys))
    bad = out == _BAD
    if bad.any():
        out[bad] = None
        return out, bad
    return out, None


_SCALARS = frozenset((str, int, float, bool))


def _or_bad(text: str | None) -> object:
    return _BAD if text is None else text


def _apply(out: np.ndarray, values: Sequence[Any], vocab: set[Any], canon: Callable[[Any], Any]) -> Parsed:
    """Replace the strings in ``vocab`` by ``canon(value)`` (None from ``canon``: a type error)."""
    mapping = {v: canon(v) for v in vocab if v is not None}
    if all(k == v for k, v in mapping.items()):
        return out, None
    out[:] = list(map(mapping.get, values, values))  # mapping.get(v, v): values not in vocab stay
    bad = np.zeros(len(values), dtype=bool)
    wrong = [k for k, v in mapping.items() if v is None]
    if wrong:
        obj = np.empty(len(values), dtype=object)
        obj[:] = values
        bad = np.isin(obj, wrong)
    return out, _mask(bad)


def parse_feature(
    values: Sequence[Any] | np.ndarray, kind: str, *, boolean: bool = False, text: bool = False
) -> Parsed:
    """The column of a feature of ``kind`` (``numeric`` or ``categorical``), read by the rules above."""
    if kind == "numeric":
        return parse_numeric(values, text=text)
    return parse_categories(values, boolean=boolean, text=text)
