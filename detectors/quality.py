"""Data quality of one window: per feature, how many values were unusable and why.

For every declared feature (a feature absent from the window counts as all
missing):

* ``missing`` — NaN / None that was not a type error (the event had no value or null);
* ``type_error`` — the event carried a value of the wrong type
  (:attr:`Frame.type_error`; such values are NaN / None in the columns too,
  but are counted here, not as missing);
* ``out_of_range`` — numeric values outside ``[min, max]`` of the
  :class:`~detectors.spec.FeatureSpec` (bounds that are not set are open);
* ``unknown_category`` — categorical values not in ``allowed`` (when set);
* ``null_violation`` — missing values of a feature declared ``nullable: false``;
* ``unknown_feature`` — events that carried a feature the config does not declare
  (a typo'd name goes unnoticed otherwise): :func:`undeclared_features`, one point with
  feature tag ``__undeclared__`` naming them in a field.

Rates are counts divided by the window's event count. Numeric features are
checked in one pass over a stacked 2-D array; categorical features with one
sorted-lookup per column.

>>> import numpy as np
>>> from detectors.frame import Frame
>>> from detectors.spec import FeatureSpec
>>> f = Frame.from_columns(event_id=np.array(["a", "b", "c", "d"], dtype=object),
...     event_time=np.zeros(4), numeric={"age": np.array([30.0, -1.0, np.nan, 200.0])})
>>> q = data_quality(f, [FeatureSpec(name="age", kind="numeric", min=0, max=130, nullable=False)])[0]
>>> q.n_missing, q.n_out_of_range, q.n_null_violation, q.out_of_range_rate
(1, 2, 1, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detectors.frame import Frame
from detectors.reference import WindowColumns, as_str, lookup
from detectors.spec import FeatureSpec


@dataclass(frozen=True, slots=True)
class FeatureQuality:
    """Quality counts of one feature in one window (see module docstring)."""

    feature: str
    kind: str
    n: int  # events in the window
    n_missing: int
    n_type_error: int
    n_out_of_range: int
    n_unknown_category: int
    n_null_violation: int

    def _rate(self, count: int) -> float:
        return count / self.n if self.n else 0.0

    @property
    def missing_rate(self) -> float:
        return self._rate(self.n_missing)

    @property
    def type_error_rate(self) -> float:
        return self._rate(self.n_type_error)

    @property
    def out_of_range_rate(self) -> float:
        return self._rate(self.n_out_of_range)

    @property
    def unknown_category_rate(self) -> float:
        return self._rate(self.n_unknown_category)

    @property
    def null_violation_rate(self) -> float:
        return self._rate(self.n_null_violation)

    @property
    def n_valid(self) -> int:
        """Values usable by the drift tests (present and well typed)."""
        return self.n - self.n_missing - self.n_type_error

    def counts(self) -> dict[str, int]:
        return {
            "n": self.n,
            "n_missing": self.n_missing,
            "n_type_error": self.n_type_error,
            "n_out_of_range": self.n_out_of_range,
            "n_unknown_category": self.n_unknown_category,
            "n_null_violation": self.n_null_violation,
        }

    def rates(self) -> dict[str, float]:
        return {
            "missing_rate": self.missing_rate,
            "type_error_rate": self.type_error_rate,
            "out_of_range_rate": self.out_of_range_rate,
            "unknown_category_rate": self.unknown_category_rate,
            "null_violation_rate": self.null_violation_rate,
        }


def _type_errors(frame: Frame, name: str, n: int) -> np.ndarray:
    te = frame.type_error.get(name)
    return np.zeros(n, dtype=bool) if te is None else np.asarray(te, dtype=bool)


def unknown_count(columns: WindowColumns, name: str, allowed: Sequence[str]) -> int:
    """How many present values of categorical column ``name`` are not in ``allowed``.

    Compared by string hash first (one C pass over the column, cached in
    ``columns`` for the drift tests too); only the values whose hash is not an
    allowed one are converted to text and checked exactly, so a value counts as
    allowed only if its text is — up to a 64-bit hash collision with an allowed
    value (~1e-15 per window).
    """
    h = columns.hashes(name)
    allowed_h = np.fromiter(map(hash, allowed), dtype=np.int64, count=len(allowed))
    cand = np.flatnonzero(~np.isin(h, allowed_h))
    if cand.size == 0:
        return 0
    col = np.asarray(columns.frame.categorical[name], dtype=object)
    values = as_str(col[np.flatnonzero(columns.present(name))[cand]])
    return int((lookup(np.unique(np.array(allowed, dtype=str)), values) < 0).sum())


def data_quality(
    frame: Frame, features: Sequence[FeatureSpec], columns: WindowColumns | None = None
) -> list[FeatureQuality]:
    """Quality counts for each of ``features`` in ``frame`` (in the order given).

    ``columns``: the window's shared :class:`~detectors.reference.WindowColumns`
    (the categorical hashes computed here are reused by the drift tests).
    """
    n = len(frame)
    columns = WindowColumns(frame) if columns is None else columns
    out: dict[str, FeatureQuality] = {}

    numeric = [f for f in features if f.kind == "numeric"]
    if numeric:
        mat = np.empty((len(numeric), n), dtype=np.float64)
        te = np.empty((len(numeric), n), dtype=bool)
        for i, f in enumerate(numeric):
            col = frame.numeric.get(f.name)
            mat[i] = np.nan if col is None else col
            te[i] = _type_errors(frame, f.name, n)
        lo = np.array([-np.inf if f.min is None else f.min for f in numeric])[:, None]
        hi = np.array([np.inf if f.max is None else f.max for f in numeric])[:, None]
        null = np.isnan(mat)
        n_te = te.sum(axis=1)
        n_missing = (null & ~te).sum(axis=1)
        with np.errstate(invalid="ignore"):
            n_oor = ((mat < lo) | (mat > hi)).sum(axis=1)  # NaN compares False
        for i, f in enumerate(numeric):
            out[f.name] = FeatureQuality(
                f.name,
                "numeric",
                n,
                int(n_missing[i]),
                int(n_te[i]),
                int(n_oor[i]),
                0,
                0 if f.nullable else int(n_missing[i]),
            )

    for f in features:
        if f.kind != "categorical":
            continue
        te = _type_errors(frame, f.name, n)
        present = columns.present(f.name)
        n_te = int(te.sum())
        n_missing = int((~present & ~te).sum())
        n_unknown = 0
        if f.allowed is not None and f.name in frame.categorical:
            n_unknown = unknown_count(columns, f.name, f.allowed)
        out[f.name] = FeatureQuality(
            f.name, "categorical", n, n_missing, n_te, 0, n_unknown, 0 if f.nullable else n_missing
        )
    return [out[f.name] for f in features]


UNDECLARED = "__undeclared__"
"""Feature tag of the quality point that counts features the monitor does not declare."""


def undeclared_features(frame: Frame, limit: int = 10) -> dict[str, int | float | str] | None:
    """Quality of the features events carried that the config does not declare (None: there were none).

    ``n_unknown_feature``: events that carried at least one; ``unknown_feature_rate`` = that / events;
    ``features``: the names with their event counts, most frequent first (``limit`` of them), e.g.
    ``"note=1000, colour=3"`` — a string field, so producer-chosen names never become tags.

    >>> import numpy as np
    >>> f = Frame.from_columns(event_id=np.array(["a", "b"], dtype=object), event_time=np.zeros(2))
    >>> f.unknown = {"note": np.array([True, True]), "colour": np.array([False, True])}
    >>> undeclared_features(f)
    {'n': 2, 'n_unknown_feature': 2, 'unknown_feature_rate': 1.0, 'features': 'note=2, colour=1'}
    """
    if not frame.unknown:
        return None
    counts = {name: int(mask.sum()) for name, mask in frame.unknown.items()}
    any_row = int(np.logical_or.reduce(list(frame.unknown.values())).sum())
    return undeclared_fields(len(frame), any_row, counts, limit)


def undeclared_fields(n: int, any_row: int, counts: dict[str, int], limit: int = 10) -> dict | None:
    """The fields of :func:`undeclared_features` from counts: ``n`` events, ``any_row`` of them carried an
    undeclared feature, ``counts`` per name (also what a window summary keeps). None: there were none."""
    counts = {k: v for k, v in counts.items() if v}
    if not counts:
        return None
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    more = len(counts) - len(top)
    text = ", ".join(f"{k}={v}" for k, v in top) + (f", (+{more} more)" if more > 0 else "")
    return {"n": n, "n_unknown_feature": any_row, "unknown_feature_rate": any_row / n if n else 0.0, "features": text}


def window_totals(quality: Sequence[FeatureQuality]) -> dict[str, float | int]:
    """Window-level totals over features: missing / type-error cells and their rates."""
    cells = sum(q.n for q in quality)
    missing = sum(q.n_missing for q in quality)
    type_errors = sum(q.n_type_error for q in quality)
    return {
        "n_missing_cells": missing,
        "n_type_error_cells": type_errors,
        "missing_cell_rate": missing / cells if cells else 0.0,
        "type_error_cell_rate": type_errors / cells if cells else 0.0,
    }


# -- judging the rates against the reference ------------------------------------------------

JUDGED_RATES = ("missing_rate", "type_error_rate", "out_of_range_rate", "unknown_category_rate")
"""The rates each stored quality point is judged on (``<rate>_upper``, ``<rate>_method``)."""


def judged_rates(f: FeatureSpec) -> tuple[str, ...]:
    """The rates that can be non-zero for ``f``: out-of-range needs a bound, unknown-category ``allowed``."""
    out = ["missing_rate", "type_error_rate"]
    if f.kind == "numeric" and (f.min is not None or f.max is not None):
        out.append("out_of_range_rate")
    if f.kind == "categorical" and f.allowed is not None:
        out.append("unknown_category_rate")
    return tuple(out)


def _count_of(q: FeatureQuality, rate: str) -> int:
    return {
        "missing_rate": q.n_missing,
        "type_error_rate": q.n_type_error,
        "out_of_range_rate": q.n_out_of_range,
        "unknown_category_rate": q.n_unknown_category,
    }[rate]


@dataclass(frozen=True)
class ReferenceQuality:
    """The reference rows' quality: totals (``totals``) and, per chunk of ``size`` rows in time order,
    each feature's rates (``chunk_rates[feature][rate]``, None: fewer than ``min_chunks`` chunks)."""

    totals: dict[str, FeatureQuality]
    size: int
    chunk_rates: dict[str, dict[str, np.ndarray]] | None


def reference_quality(
    rows: Frame,
    features: Sequence[FeatureSpec],
    window_n: int,
    min_chunks: int,
    max_chunks: int | None,
    cache: dict | None = None,
) -> ReferenceQuality:
    """Quality of the reference rows overall and per chunk of the window's size (cached in ``cache``)."""
    from detectors.thresholds import chunk_size_key, chunk_slices, time_order

    size = chunk_size_key(max(int(window_n), 1))
    key = ("quality_chunks", size, min_chunks, max_chunks, tuple(repr(f) for f in features))
    if cache is not None and key in cache:
        return cache[key]
    ordered = rows.take(time_order(rows))
    totals = {q.feature: q for q in data_quality(ordered, features)}
    slices = chunk_slices(len(ordered), size, max_chunks)
    rates = None
    if len(slices) >= min_chunks:
        per_chunk = [data_quality(ordered.take(s), features) for s in slices]
        rates = {
            f.name: {r: np.array([getattr(c[i], r) for c in per_chunk]) for r in JUDGED_RATES}
            for i, f in enumerate(features)
        }
    out = ReferenceQuality(totals, size, rates)
    if cache is not None:
        cache[key] = out
    return out


def quality_verdicts(
    quality: Sequence[FeatureQuality],
    features: Sequence[FeatureSpec],
    ref: ReferenceQuality,
    family_level: float,
    multiplier: float | None = None,
) -> list[dict]:
    """Per feature, the record fields of its judged rates: ``<rate>_method``, ``<rate>_upper``,
    ``quality_alarm`` (1 if any judged rate is above its band), ``quality_level`` (the level per rate).

    The family is every judged rate of every feature (Bonferroni): each rate is judged at
    ``family_level / n``, the chunk band's k is ``Φ⁻¹(1 - family_level / n)`` unless ``multiplier`` is set.
    """
    from detectors.thresholds import judge_rate, multiplier_for_level

    n_tests = max(sum(len(judged_rates(f)) for f in features), 1)
    level = family_level / n_tests
    k = multiplier if multiplier is not None else multiplier_for_level(level)
    out = []
    for q, f in zip(quality, features):
        fields: dict = {"quality_level": level}
        alarm = False
        total = ref.totals.get(f.name)
        for rate in judged_rates(f):
            chunk = None if ref.chunk_rates is None else ref.chunk_rates[f.name][rate]
            v = judge_rate(
                getattr(q, rate),
                chunk,
                0 if total is None else _count_of(total, rate),
                0 if total is None else total.n,
                q.n,
                level,
                k,
            )
            fields[f"{rate}_method"] = v.method
            fields[f"{rate}_upper"] = v.upper
            alarm = alarm or v.alarm
        fields["quality_alarm"] = int(alarm)
        out.append(fields)
    return out


def describe_quality(spec, features: Sequence[FeatureSpec]) -> str:
    """The quality verdict rule in words (``driftwatch check-config`` prints it); ``spec``: the DriftSpec."""
    n = max(sum(len(judged_rates(f)) for f in features), 1)
    level = spec.p_val / n
    k = "" if spec.threshold.sd_multiplier is None else f" (k = {spec.threshold.sd_multiplier:g})"
    return (
        f"each of {n} rate(s) (missing, type error, out of range where bounded, unknown category where "
        f"'allowed' is set) alarms above the wider of mean + k sd of the same rate on the reference's chunks "
        f"of the window's size, in time order{k}, and the binomial bound: the window count exceeded with "
        f"probability {level:.3g} at the Clopper-Pearson upper bound of the reference rate; at level "
        f"{level:.3g} (family level {spec.p_val:.3g} / {n}). Where the reference rate does not vary (none of "
        f"it: sd 0) or has too few chunks, the binomial bound alone."
    )
