# size: the Reference type and its builders, serialisation and row attachment: one data structure, one module
"""The reference distribution every window is compared with.

A :class:`Reference` is built once — from a :class:`~detectors.frame.Frame`
(the first N events of a model version, or the previous window when the
reference rolls) or from a file of rows (CSV or gzipped CSV, JSON lines,
Parquet, NPZ; one column per feature, values read as the decoder reads events:
:mod:`detectors.values`) — and precomputes everything the drift engine, the histograms and the
dashboard need, so a window costs only the work on the window itself:

* numeric features: the non-missing values **sorted** (the KS / CvM engine
  merges a sorted window into them), bin edges at the reference quantiles
  (``bins`` bins, open-ended outer bins) and the reference count per bin;
* categorical features: the sorted category vocabulary with counts, and the
  top-K categories (histogram labels; everything else is ``__other__``);
* segments: for each declared segment feature, its top-K values and one
  sub-reference per value (plus ``__other__``) with enough rows; sub-references
  share the parent's bin edges and top-K categories so their histograms line up.

It serialises to NPZ bytes (:meth:`Reference.to_bytes`) with plain arrays and a
JSON header only — loading never unpickles anything.

Missing values (NaN / None; numeric +-inf is treated the same) are left out of
the sorted values and counts; they are counted in ``n_missing`` (data quality
reports them per window).

>>> import numpy as np
>>> from detectors.frame import Frame
>>> from detectors.spec import FeatureSpec
>>> rng = np.random.default_rng(0)
>>> f = Frame.from_columns(event_id=np.arange(100).astype(str), event_time=np.zeros(100),
...     numeric={"x": rng.normal(size=100)},
...     categorical={"c": np.array(["a", "b"] * 50, dtype=object)})
>>> ref = Reference.from_frame(f, [FeatureSpec(name="x", kind="numeric"),
...                                FeatureSpec(name="c", kind="categorical")], bins=4)
>>> ref.numeric["x"].counts.tolist(), ref.categorical["c"].top.tolist()
([25, 25, 25, 25], ['a', 'b'])
>>> Reference.from_bytes(ref.to_bytes()).n_rows
100
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.errors import InvalidInputError
from detectors.frame import Codes, Frame
from detectors.spec import FeatureSpec
from detectors.values import not_none, parse_categories, parse_numeric

OTHER = "__other__"
"""Label of the bin holding everything outside a top-K list (categories, segments)."""

FORMAT = "driftwatch-reference"
FORMAT_VERSION = 1


class ReferenceDataError(InvalidInputError):
    """A reference source is unusable; the message names the file and the problem."""


# -- small helpers --------------------------------------------------------------------


def not_missing(col: np.ndarray) -> np.ndarray:
    """Boolean mask of present values: not NaN (float columns) / not None (object columns)."""
    if col.dtype.kind == "f":
        return ~np.isnan(col)
    if col.dtype.kind == "O":
        return not_none(col)
    return np.ones(col.shape[0], dtype=bool)


def as_str(values: np.ndarray) -> np.ndarray:
    """Present categorical values as a fixed-width unicode array (fast to sort/search)."""
    if values.size == 0:
        return np.empty(0, dtype="<U1")
    return values.astype(str)


def safe_label(value: str, limit: int = 64) -> str:
    """A category or segment value made safe to show as a tag or field value.

    Control characters become ``?``; values longer than ``limit`` are cut and get a
    short hash suffix so two long values cannot collide.

    >>> safe_label("DE"), safe_label("a\\nb"), len(safe_label("x" * 100))
    ('DE', 'a?b', 64)
    """
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    if len(text) > limit:
        digest = hashlib.sha1(str(value).encode("utf-8", "surrogatepass")).hexdigest()[:8]
        text = text[: limit - 9] + "~" + digest
    return text


def segment_tag(feature: str, value: str) -> str:
    """Tag value of a segment: ``"feature=value"`` (value made safe by :func:`safe_label`)."""
    return f"{feature}={safe_label(value)}"


def quantile_edges(sorted_values: np.ndarray, bins: int) -> np.ndarray:
    """Interior bin edges at the ``k / bins`` quantiles, duplicates removed.

    ``len(edges) + 1`` bins: ``(-inf, e0)``, ``[e0, e1)``, ..., ``[e_last, +inf)``.
    """
    if sorted_values.size == 0:
        return np.empty(0, dtype=np.float64)
    q = np.quantile(sorted_values, np.arange(1, bins) / bins)
    return np.unique(q)


def sorted_bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin (left-closed, see :func:`quantile_edges`) of already sorted values."""
    idx = np.searchsorted(sorted_values, edges, side="left")
    return np.diff(np.concatenate(([0], idx, [sorted_values.shape[0]]))).astype(np.int64)


_NONE_HASH = hash(None)


def hash_values(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``hash()`` of every element of an object column as int64, and which are None.

    ``map(hash, ...)`` over the column as a list runs in C (no Python bytecode per element) and is about four times
    as fast as converting the column to a unicode array. Python's string hashes are
    salted per process: never store them.
    Returns ``(hashes of the present values, present mask)``.
    """
    h = np.fromiter(map(hash, col.tolist()), dtype=np.int64, count=col.shape[0])  # a list iterates ~2x faster
    present = np.ones(col.shape[0], dtype=bool)
    cand = np.flatnonzero(h == _NONE_HASH)
    if cand.size:
        present[cand] = not_none(col[cand])
    return h[present], present


class WindowColumns:
    """A window's columns prepared once for every consumer (drift tests, histograms).

    ``numeric(names)``: the finite values of each numeric column, sorted (one 2-D
    sort for all requested columns; NaN and +-inf are left out).
    ``categories(name)``: the present values of a categorical column as unicode.
    ``category_codes(name, cref)``: the present values as indices into the
    reference's categories, unseen values numbered after them.
    Results are cached, so the runner's evaluators share the work.
    """

    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self._numeric: dict[str, np.ndarray] = {}
        self._categories: dict[str, np.ndarray] = {}
        self._hashes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._codes: dict[tuple[str, int], tuple[np.ndarray, int]] = {}
        # name -> (hash of each coded value, its Codes, present rows): set by _hashed when the column has codes
        self._value_hashes: dict[str, tuple[np.ndarray, Codes, np.ndarray]] = {}

    def _hashed(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self._hashes:
            col = self.frame.categorical.get(name)
            if col is None:
                n = len(self.frame)
                self._hashes[name] = (np.empty(0, dtype=np.int64), np.zeros(n, dtype=bool))
            else:
                coded = self.frame.codes_of(col)
                if coded is None:
                    self._hashes[name] = hash_values(np.asarray(col, dtype=object))
                else:  # the distinct values hashed, once each
                    h, present = hash_values(coded.values)
                    full = np.zeros(present.shape[0], dtype=np.int64)
                    full[present] = h
                    mask = present[coded.codes]
                    self._hashes[name] = (full[coded.codes][mask], mask)
                    self._value_hashes[name] = (full, coded, mask)
        return self._hashes[name]

    def hashes(self, name: str) -> np.ndarray:
        """Per-process hashes of the present values of categorical column ``name``."""
        return self._hashed(name)[0]

    def present(self, name: str) -> np.ndarray:
        """Mask of the rows where categorical column ``name`` has a value (not None)."""
        return self._hashed(name)[1]

    def category_codes(self, name: str, cref: CategoricalReference) -> tuple[np.ndarray, int]:
        """``(codes, n_unseen)``: index of each present value in ``cref.categories``;
        values the reference never saw get ``K, K + 1, ...`` (K = number of categories).

        Matching is by string hash (a false match needs a 64-bit hash collision between
        a window value and a reference category: ~1e-15 per window); if two reference
        categories collide, that feature falls back to comparing strings.
        """
        key = (name, id(cref))
        if key not in self._codes:
            k = cref.categories.shape[0]
            ids = self.hashes(name)
            by_value = self._value_hashes.get(name)
            if by_value is not None:  # the distinct values looked up, once each
                full, coded, mask = by_value
                per_value = cref.hash_lookup(full)
                idx = None if per_value is None else per_value[coded.codes][mask]
            else:
                idx = cref.hash_lookup(ids)
            if idx is None:  # colliding reference hashes: compare strings
                values = self.categories(name)
                idx = lookup(cref.categories, values)
                ids = values
            unknown = idx < 0
            extra = 0
            if unknown.any():
                new, inv = np.unique(ids[unknown], return_inverse=True)
                idx[unknown] = k + inv
                extra = int(new.shape[0])
            self._codes[key] = (idx, extra)
        return self._codes[key]

    def numeric(self, names: Sequence[str]) -> list[np.ndarray]:
        todo = [n for n in dict.fromkeys(names) if n not in self._numeric]
        if todo:
            size = len(self.frame)
            mat = np.empty((len(todo), size), dtype=np.float64)
            for i, name in enumerate(todo):
                col = self.frame.numeric.get(name)
                mat[i] = np.nan if col is None else col
            mat[~np.isfinite(mat)] = np.nan  # +-inf is treated as missing
            mat.sort(axis=1)  # NaN sorts last
            valid = size - np.isnan(mat).sum(axis=1)
            for i, name in enumerate(todo):
                self._numeric[name] = mat[i, : valid[i]]
        return [self._numeric[n] for n in names]

    def categories(self, name: str) -> np.ndarray:
        if name not in self._categories:
            col = self.frame.categorical.get(name)
            if col is None:
                self._categories[name] = np.empty(0, dtype="<U1")
            else:
                col = np.asarray(col, dtype=object)
                self._categories[name] = as_str(col[not_missing(col)])
        return self._categories[name]


# -- per-feature parts ------------------------------------------------------------------


@dataclass(eq=False)
class NumericReference:
    """Reference of one numeric feature (see module docstring)."""

    name: str
    values: np.ndarray  # float64, sorted, no NaN
    n_missing: int
    edges: np.ndarray  # float64 interior bin edges, strictly increasing
    counts: np.ndarray  # int64 per bin, len(edges) + 1

    @property
    def n(self) -> int:
        return int(self.values.shape[0])


@dataclass(eq=False)
class CategoricalReference:
    """Reference of one categorical feature (see module docstring)."""

    name: str
    categories: np.ndarray  # unicode, sorted, unique
    counts: np.ndarray  # int64 per category
    n_missing: int
    top: np.ndarray  # unicode top-K categories, by count desc then name
    top_counts: np.ndarray  # int64, len(top) + 1; the last is __other__
    _top_of: np.ndarray | None = field(default=None, init=False, repr=False)  # category -> bin
    _hash_index: tuple | None = field(default=None, init=False, repr=False)  # per process

    def __getstate__(self) -> dict:
        """Pickled without the hash index: string hashes are salted per process (rebuilt on use)."""
        return {**self.__dict__, "_hash_index": None}

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def codes(self, values: np.ndarray) -> np.ndarray:
        """Index of each (unicode) value in ``categories``, ``-1`` where unknown."""
        return lookup(self.categories, values)

    def top_codes(self, values: np.ndarray) -> np.ndarray:
        """Histogram bin of each (unicode) value: its index in ``top``, or ``len(top)``."""
        order = np.argsort(self.top)
        idx = lookup(self.top[order], values)
        return np.where(idx >= 0, order[np.maximum(idx, 0)], self.top.shape[0])

    def top_bins(self, codes: np.ndarray) -> np.ndarray:
        """Histogram bin of category codes (see :meth:`WindowColumns.category_codes`)."""
        if self._top_of is None:  # one slot more: every unseen code maps to __other__
            self._top_of = np.append(self.top_codes(self.categories), self.top.shape[0])
        return self._top_of[np.minimum(codes, self.categories.shape[0])]

    def hash_lookup(self, hashes: np.ndarray) -> np.ndarray | None:
        """Category index of each value hash (``-1`` if unknown); None if categories collide."""
        if self._hash_index is None:
            h = np.fromiter(map(hash, self.categories.tolist()), dtype=np.int64, count=self.categories.shape[0])
            order = np.argsort(h)
            hs = h[order]
            self._hash_index = (hs, order, bool(np.any(hs[1:] == hs[:-1])))
        hs, order, collide = self._hash_index
        if collide:
            return None
        if hs.size == 0 or hashes.size == 0:
            return np.full(hashes.shape[0], -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(hs, hashes), hs.shape[0] - 1)
        return np.where(hs[pos] == hashes, order[pos], -1).astype(np.int64)


def lookup(sorted_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in the sorted unicode array ``sorted_keys``; ``-1`` where absent."""
    if sorted_keys.size == 0 or values.size == 0:
        return np.full(values.shape[0], -1, dtype=np.int64)
    idx = np.searchsorted(sorted_keys, values)
    idx_c = np.minimum(idx, sorted_keys.shape[0] - 1)
    return np.where(sorted_keys[idx_c] == values, idx_c, -1).astype(np.int64)


def _numeric_ref(
    name: str, col: np.ndarray | None, n_rows: int, bins: int, edges: np.ndarray | None
) -> NumericReference:
    if col is None:
        values = np.empty(0, dtype=np.float64)
    else:
        col = np.asarray(col, dtype=np.float64)
        values = np.sort(col[np.isfinite(col)])  # +-inf is treated as missing, like NaN
    if edges is None:
        edges = quantile_edges(values, bins)
    return NumericReference(name, values, n_rows - values.shape[0], edges, sorted_bin_counts(values, edges))


def _top(categories: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    order = np.lexsort((categories, -counts))[:k]
    return categories[order]


def _categorical_ref(
    name: str, col: np.ndarray | None, n_rows: int, top_k: int, top: np.ndarray | None
) -> CategoricalReference:
    if col is None:
        present = np.empty(0, dtype="<U1")
    else:
        col = np.asarray(col, dtype=object)
        present = as_str(col[not_missing(col)])
    categories, counts = np.unique(present, return_counts=True)
    categories = categories.astype(str)
    counts = counts.astype(np.int64)
    if top is None:
        top = _top(categories, counts, top_k)
    codes = CategoricalReference(name, categories, counts, 0, top, np.empty(0)).top_codes(categories)
    top_counts = np.bincount(codes, weights=counts, minlength=top.shape[0] + 1).astype(np.int64)
    return CategoricalReference(name, categories, counts, n_rows - int(counts.sum()), top, top_counts)


# -- the reference ------------------------------------------------------------------------


@dataclass(eq=False)
class Reference:
    """Precomputed reference of one model version (see module docstring)."""

    features: tuple[FeatureSpec, ...]
    n_rows: int
    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    bins: int = 10
    top_k: int = 20
    segment_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    segments: dict[str, Reference] = field(default_factory=dict)  # tag -> sub-reference
    min_segment_rows: int = 50
    source: str = "frame"
    _cache: dict = field(default_factory=dict, repr=False)  # engines' derived objects

    # construction -----------------------------------------------------------------------

    @classmethod
    def from_frame(
        cls,
        frame: Frame,
        features: Sequence[FeatureSpec],
        *,
        bins: int = 10,
        top_k: int = 20,
        segments: Sequence[str] = (),
        segment_top_k: int = 10,
        min_segment_rows: int = 50,
        source: str = "frame",
    ) -> Reference:
        """Build from the events of ``frame`` (first N events, or the previous window).

        ``bins``: numeric histogram/PSI bins (reference quantiles); ``top_k``: categories
        kept per categorical feature in histograms; ``segments``: categorical features to
        segment by, keeping the ``segment_top_k`` most frequent values (rest ``__other__``)
        and only segments with at least ``min_segment_rows`` reference rows.
        """
        features = tuple(features)
        if len(frame) == 0:
            raise ReferenceDataError(f"{source}: the reference has no rows")
        if not 2 <= bins <= 100:
            raise ValueError(f"bins must be in [2, 100], got {bins}")
        if not 1 <= top_k <= 99:
            raise ValueError(f"top_k must be in [1, 99], got {top_k}")
        kinds = {f.name: f.kind for f in features}
        for s in segments:
            if kinds.get(s) != "categorical":
                raise ValueError(f"segment {s!r} must name a categorical feature")
        ref = cls._build(frame, features, bins=bins, top_k=top_k, parent=None, source=source)
        ref.min_segment_rows = int(min_segment_rows)
        for s in segments:
            col = frame.categorical.get(s)
            cref = ref.categorical[s]
            top = _top(cref.categories, cref.counts, segment_top_k)
            top = top[cref.counts[cref.codes(top)] >= min_segment_rows] if top.size else top
            ref.segment_values[s] = tuple(top.tolist())
            if col is None:
                continue
            for tag, mask in ref.segment_masks(s, col):
                if int(mask.sum()) >= min_segment_rows:
                    ref.segments[tag] = cls._build(
                        frame.take(mask), features, bins=bins, top_k=top_k, parent=ref, source=f"{source} [{tag}]"
                    )
        return ref

    @classmethod
    def _build(
        cls,
        frame: Frame,
        features: tuple[FeatureSpec, ...],
        *,
        bins: int,
        top_k: int,
        parent: Reference | None,
        source: str,
    ) -> Reference:
        n = len(frame)
        numeric, categorical = {}, {}
        for f in features:
            if f.kind == "numeric":
                edges = parent.numeric[f.name].edges if parent else None
                numeric[f.name] = _numeric_ref(f.name, frame.numeric.get(f.name), n, bins, edges)
            else:
                top = parent.categorical[f.name].top if parent else None
                categorical[f.name] = _categorical_ref(f.name, frame.categorical.get(f.name), n, top_k, top)
        return cls(features, n, numeric, categorical, bins=bins, top_k=top_k, source=source)

    @classmethod
    def from_file(cls, path: str | Path, features: Sequence[FeatureSpec], **kwargs) -> Reference:
        """Build from a CSV, Parquet or NPZ file of rows (see :func:`read_rows`)."""
        kwargs.setdefault("source", str(path))
        return cls.from_frame(read_rows(path, features), features, **kwargs)

    # segments ----------------------------------------------------------------------------

    def segment_masks(self, feature: str, col: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """``(tag, row mask)`` per top value of segment ``feature`` and ``__other__``.

        Rows whose segment value is missing belong to no segment.
        """
        values = self.segment_values.get(feature, ())
        col = np.asarray(col, dtype=object)
        present = not_missing(col)
        codes = np.full(col.shape[0], -2, dtype=np.int64)
        keys = np.array(values, dtype=str) if values else np.empty(0, dtype="<U1")
        order = np.argsort(keys)
        idx = lookup(keys[order], as_str(col[present]))
        codes[present] = np.where(idx >= 0, order[np.maximum(idx, 0)], -1)
        out = [(segment_tag(feature, v), codes == i) for i, v in enumerate(values)]
        out.append((segment_tag(feature, OTHER), codes == -1))
        return out

    # access --------------------------------------------------------------------------------

    def spec(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"feature {name!r} is not in the reference")

    # serialisation ------------------------------------------------------------------------

    def _arrays(self, prefix: str, out: dict[str, np.ndarray]) -> dict[str, Any]:
        numeric: list[dict[str, Any]] = []
        categorical: list[dict[str, Any]] = []
        segments: list[dict[str, Any]] = []
        meta = {
            "n_rows": self.n_rows,
            "bins": self.bins,
            "top_k": self.top_k,
            "source": self.source,
            "min_segment_rows": self.min_segment_rows,
            "features": [f.model_dump(mode="json") for f in self.features],
            "numeric": numeric,
            "categorical": categorical,
            "segment_values": {k: list(v) for k, v in self.segment_values.items()},
            "segments": segments,
        }
        for i, r in enumerate(self.numeric.values()):
            numeric.append({"name": r.name, "n_missing": r.n_missing})
            out[f"{prefix}num{i}.values"] = r.values
            out[f"{prefix}num{i}.edges"] = r.edges
            out[f"{prefix}num{i}.counts"] = r.counts
        for i, c in enumerate(self.categorical.values()):
            categorical.append({"name": c.name, "n_missing": c.n_missing})
            out[f"{prefix}cat{i}.categories"] = c.categories.astype(str)
            out[f"{prefix}cat{i}.counts"] = c.counts
            out[f"{prefix}cat{i}.top"] = c.top.astype(str)
            out[f"{prefix}cat{i}.top_counts"] = c.top_counts
        for j, (tag, sub) in enumerate(self.segments.items()):
            segments.append({"tag": tag, "meta": sub._arrays(f"{prefix}seg{j}.", out)})
        return meta

    def to_bytes(self, compress: bool = True) -> bytes:
        """NPZ bytes: arrays plus a JSON header (no pickled objects)."""
        arrays: dict[str, np.ndarray] = {}
        meta = self._arrays("", arrays)
        return npz_bytes(arrays, meta, FORMAT, FORMAT_VERSION, compress)

    @classmethod
    def _from_arrays(cls, meta: dict, prefix: str, data) -> Reference:
        features = tuple(FeatureSpec.model_validate(f) for f in meta["features"])
        numeric = {}
        for i, m in enumerate(meta["numeric"]):
            numeric[m["name"]] = NumericReference(
                m["name"],
                data[f"{prefix}num{i}.values"],
                int(m["n_missing"]),
                data[f"{prefix}num{i}.edges"],
                data[f"{prefix}num{i}.counts"],
            )
        categorical = {}
        for i, m in enumerate(meta["categorical"]):
            categorical[m["name"]] = CategoricalReference(
                m["name"],
                data[f"{prefix}cat{i}.categories"],
                data[f"{prefix}cat{i}.counts"],
                int(m["n_missing"]),
                data[f"{prefix}cat{i}.top"],
                data[f"{prefix}cat{i}.top_counts"],
            )
        ref = cls(
            features,
            int(meta["n_rows"]),
            numeric,
            categorical,
            bins=int(meta["bins"]),
            top_k=int(meta["top_k"]),
            segment_values={k: tuple(v) for k, v in meta["segment_values"].items()},
            min_segment_rows=int(meta["min_segment_rows"]),
            source=meta["source"],
        )
        for j, s in enumerate(meta["segments"]):
            ref.segments[s["tag"]] = cls._from_arrays(s["meta"], f"{prefix}seg{j}.", data)
        return ref

    @classmethod
    def from_bytes(cls, blob: bytes) -> Reference:
        """Inverse of :meth:`to_bytes`; raises :class:`ReferenceDataError` on foreign data."""
        meta, data = npz_read(blob, FORMAT, FORMAT_VERSION, "driftwatch reference", ReferenceDataError)
        return cls._from_arrays(meta, "", data)


def npz_bytes(arrays: dict[str, np.ndarray], meta: dict, fmt: str, version: int, compress: bool | int = True) -> bytes:
    """NPZ bytes of ``arrays`` plus ``meta`` as a JSON header tagged with ``fmt``/``version`` (no pickles).

    ``compress``: True = deflate at zlib's default level (``np.savez_compressed``), False = stored, or a
    deflate level 1–9 (1: a third of the default's CPU for a few % more bytes; :func:`npz_read` reads all).
    """
    head = {**meta, "format": fmt, "version": version}
    arrays = {**arrays, "meta": np.frombuffer(json.dumps(head).encode(), dtype=np.uint8)}
    buf = io.BytesIO()
    if compress is True or compress is False:
        (np.savez_compressed if compress else np.savez)(buf, **arrays)
        return buf.getvalue()
    if not 1 <= compress <= 9:
        raise ValueError(f"compress: True, False or a deflate level 1-9, got {compress!r}")
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=compress) as zf:
        for name, a in arrays.items():  # what np.savez writes: one NAME.npy member per array
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def npz_read(
    blob: bytes, fmt: str, version: int, what: str, error: type[Exception]
) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of :func:`npz_bytes` output; ``error`` (naming ``what``) on foreign or other-version data."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(bytes(data["meta"]).decode())
    except Exception as e:  # zipfile/json/key errors all mean "not ours"
        raise error(f"not a serialised {what}: {e}") from None
    if meta.get("format") != fmt or meta.get("version") != version:
        raise error(f"not a {what} of version {version}: format={meta.get('format')!r} version={meta.get('version')!r}")
    return meta, data


# -- files of rows ------------------------------------------------------------------------


def _check_columns(path: Path, present: Iterable[str], features: Sequence[FeatureSpec]) -> None:
    present = list(present)
    missing = [f"{f.name!r} ({_kind(f)})" for f in features if f.name not in present]
    if missing:
        raise ReferenceDataError(f"{path}: missing column(s) {', '.join(missing)}; columns present: {present[:50]}")


def _kind(f: FeatureSpec) -> str:
    return "boolean" if f.boolean else f.kind


def _frame(path: Path, n: int, columns: dict, features: Sequence[FeatureSpec], text: bool | set[str]) -> Frame:
    """A frame of the feature columns, each read by :mod:`detectors.values` (as the decoder reads
    events); the first value of a wrong type is an error naming its column and row.

    ``text``: the cells are text (CSV) — True for every column, or the names of those that are.
    """
    if n == 0:
        raise ReferenceDataError(f"{path}: the file has no rows")
    numeric, categorical = {}, {}
    for f in features:
        raw = columns[f.name]
        as_text = text if isinstance(text, bool) else f.name in text
        if f.kind == "numeric":
            values, bad = parse_numeric(raw, text=as_text)
            numeric[f.name] = values
        else:
            values, bad = parse_categories(raw, boolean=f.boolean, text=as_text)
            categorical[f.name] = values
        if bad is not None:
            i = int(np.flatnonzero(bad)[0])
            cell = raw[i]
            if f.kind == "numeric":
                what = "the non-numeric value"
            elif f.boolean:
                what = "the value (not true/false, 1/0 or yes/no)"
            else:
                what = f"a {type(cell).__name__}, not a category (text, integer or boolean):"
            raise ReferenceDataError(
                f"{path}: column {f.name!r} is {_kind(f)} but row {i + 1} holds {what} {str(cell)[:40]!r}"
                f" ({int(bad.sum())} such row(s))"
            )
    return Frame.from_columns(
        event_id=np.arange(n).astype(str).astype(object),
        event_time=np.zeros(n),
        numeric=numeric,
        categorical=categorical,
    )


def _open_text(path: Path):
    """The file as text; ``.gz`` files are decompressed on the fly."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return path.open(newline="", encoding="utf-8")


def _read_csv(path: Path, features: Sequence[FeatureSpec]) -> Frame:
    try:
        with _open_text(path) as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as e:
        raise ReferenceDataError(f"{path}: not UTF-8 text: {e}") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise ReferenceDataError(f"{path}: not a readable gzip file: {e}") from None
    except csv.Error as e:
        raise ReferenceDataError(f"{path}: not a readable CSV file: {e}") from None
    if not rows:
        raise ReferenceDataError(f"{path}: the file is empty (no header row)")
    header = [h.strip() for h in rows[0]]
    _check_columns(path, header, features)
    body = rows[1:]
    bad = next((i for i, r in enumerate(body) if len(r) != len(header)), None)
    if bad is not None:
        raise ReferenceDataError(f"{path}: row {bad + 1} has {len(body[bad])} cells, the header has {len(header)}")
    if not body:
        raise ReferenceDataError(f"{path}: the file has no rows")
    table = np.array(body, dtype=object).reshape(len(body), len(header))
    columns = {f.name: table[:, header.index(f.name)].tolist() for f in features}
    return _frame(path, len(body), columns, features, text=True)


def _read_jsonl(path: Path, features: Sequence[FeatureSpec]) -> Frame:
    """JSON lines: one object per line, features as keys (or under ``"features"``, as in events)."""
    import orjson

    rows = []
    try:
        with _open_text(path) as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    raise ReferenceDataError(f"{path}: line {number} is not JSON: {e}") from None
                if type(row) is not dict:
                    raise ReferenceDataError(f"{path}: line {number} is not a JSON object")
                inner = row.get("features")
                rows.append({**row, **inner} if type(inner) is dict else row)
    except UnicodeDecodeError as e:
        raise ReferenceDataError(f"{path}: not UTF-8 text: {e}") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise ReferenceDataError(f"{path}: not a readable gzip file: {e}") from None
    if not rows:
        raise ReferenceDataError(f"{path}: the file has no rows")
    present = {k for row in rows for k in row}
    _check_columns(path, sorted(present), features)
    columns = {f.name: [row.get(f.name) for row in rows] for f in features}
    return _frame(path, len(rows), columns, features, text=False)


def _read_parquet(path: Path, features: Sequence[FeatureSpec]) -> Frame:
    try:
        import pyarrow as pa  # lazy: only file references need it
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a dependency
        raise ReferenceDataError(f"{path}: reading Parquet needs pyarrow ({e})") from None
    try:
        schema = pq.read_schema(path)
        _check_columns(path, schema.names, features)
        table = pq.read_table(path, columns=[f.name for f in features])
    except ReferenceDataError:
        raise
    except Exception as e:
        raise ReferenceDataError(f"{path}: not a readable Parquet file: {e}") from None
    columns = {}
    for f in features:
        col = table.column(f.name)
        if f.kind == "numeric" and not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            try:  # numbers and booleans in one cast (strings are read as text cells below)
                columns[f.name] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise ReferenceDataError(f"{path}: column {f.name!r} is numeric but has type {col.type}: {e}") from None
        values = col.to_pylist()
        if f.kind == "numeric":  # a string column: its cells are parsed as text
            values = np.array(["" if v is None else v for v in values], dtype=str)
        columns[f.name] = values
    return _frame(path, table.num_rows, columns, features, text=False)


def _read_npz(path: Path, features: Sequence[FeatureSpec]) -> Frame:
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            _check_columns(path, names, features)
            data = {f.name: z[f.name] for f in features}
    except ReferenceDataError:
        raise
    except ValueError as e:
        raise ReferenceDataError(
            f"{path}: cannot load without pickle ({e}); store strings as fixed-width "
            f"unicode arrays (dtype '<U...'), not object arrays"
        ) from None
    except Exception as e:
        raise ReferenceDataError(f"{path}: not a readable NPZ file: {e}") from None
    lengths = {k: int(np.asarray(v).reshape(-1).shape[0]) for k, v in data.items()}
    if len(set(lengths.values())) > 1:
        raise ReferenceDataError(f"{path}: columns have different lengths: {lengths}")
    n = next(iter(lengths.values()), 0)
    columns = {}
    for f in features:
        col = np.asarray(data[f.name]).reshape(-1)
        if col.dtype.kind not in "USbiuf":
            raise ReferenceDataError(
                f"{path}: column {f.name!r} is {_kind(f)} but has dtype {col.dtype}; use numbers, booleans or strings"
            )
        columns[f.name] = col.astype(str).tolist() if col.dtype.kind in "US" else col
    # strings are text cells (an empty one is missing); numbers and booleans keep their type
    text = {f.name for f in features if np.asarray(data[f.name]).dtype.kind in "US"}
    return _frame(path, n, columns, features, text=text)


READERS = {
    ".csv": _read_csv,
    ".csv.gz": _read_csv,
    ".jsonl": _read_jsonl,
    ".jsonl.gz": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".ndjson.gz": _read_jsonl,
    ".parquet": _read_parquet,
    ".pq": _read_parquet,
    ".npz": _read_npz,
}
"""Reference file types by name ending (case-insensitive)."""


def reader_of(path: str | Path):
    """The reader of a reference file by its name ending, or None when the type is not supported."""
    name = Path(path).name.lower()
    return next((r for suffix, r in sorted(READERS.items(), key=lambda kv: -len(kv[0])) if name.endswith(suffix)), None)


def read_rows(path: str | Path, features: Sequence[FeatureSpec]) -> Frame:
    """Read a file of reference rows into a :class:`Frame` (columns = feature names).

    CSV, optionally gzipped (``.csv``, ``.csv.gz``; a header row; every cell is text:
    empty/``NA``/``NaN``/``null`` numeric cells and empty categorical cells are
    missing), JSON lines (``.jsonl``, ``.jsonl.gz``, ``.ndjson``: one object per line,
    the features as keys or under ``"features"`` as in an event; null is missing),
    Parquet (nulls are missing) or NPZ (one array per feature; strings as unicode
    arrays). Values are read by :mod:`detectors.values`, the rules the decoder applies
    to events, so ``True`` in a pandas CSV and ``true`` in an event are one value.
    Extra columns are ignored. Raises :class:`ReferenceDataError` naming the file
    and the problem: unreadable, unknown format, missing column, a value of the
    wrong type (with its column and row), no rows.
    """
    path = Path(path)
    reader = reader_of(path)
    if reader is None:
        raise ReferenceDataError(
            f"{path}: unknown reference file type {''.join(path.suffixes[-2:])!r}; use one of {sorted(READERS)}"
        )
    if not path.is_file():
        raise ReferenceDataError(f"{path}: reference file not found")
    try:
        return reader(path, tuple(features))
    except OSError as e:
        raise ReferenceDataError(f"{path}: cannot read reference file: {e.strerror or e}") from None


#: where :func:`attach_reference_frame` keeps the reference's rows (in ``Reference._cache``)
REFERENCE_FRAME_KEY = "reference_frame"


def attach_reference_frame(reference: Reference, frame: Frame) -> Reference:
    """Keep the reference's rows with it (for multivariate/prediction drift and impact)."""
    reference._cache[REFERENCE_FRAME_KEY] = frame
    return reference


#: where :func:`attach_rolling_history` keeps a rolling reference's past windows (in ``Reference._cache``)
ROLLING_HISTORY_KEY = "rolling_history"


def attach_rolling_history(reference: Reference, windows: Sequence[Frame]) -> Reference:
    """Keep the rows of the windows before a rolling reference's own, one frame per window, in time order.

    ``windows`` ends with the reference's own rows (the previous window). The chunk thresholds
    (:func:`detectors.thresholds.drift_chunks`) then judge a window's change from its predecessor
    against how each of these windows changed from *its* predecessor: the series' own
    window-to-window movement, trend included.
    """
    reference._cache[ROLLING_HISTORY_KEY] = tuple(windows)
    return reference


def rolling_history(reference: Reference | None) -> tuple[Frame, ...] | None:
    """The windows attached by :func:`attach_rolling_history` (oldest first), or None."""
    if reference is None:
        return None
    return reference._cache.get(ROLLING_HISTORY_KEY)


def reference_frame(reference: Reference | None) -> Frame | None:
    """The rows attached by :func:`attach_reference_frame`, or None."""
    if reference is None:
        return None
    return reference._cache.get(REFERENCE_FRAME_KEY)
