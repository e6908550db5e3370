"""Concept drift with delayed labels: the label join and the error stream.

True labels come late, on their own topic, and answer predictions by event id.
:class:`LabelJoin` holds the predictions still waiting for a label — bounded
in count (``max_pending``, oldest evicted first) and in age (``ttl_seconds``
after the prediction's event time) — and returns joined rows (prediction +
label) as they match. Nothing is lost without being counted (:class:`JoinStats`):

* a prediction that expires or is evicted unlabelled counts as ``expired`` /
  ``evicted``;
* a label that arrives before its prediction is held (same bounds) and joined
  when the prediction comes; if it never does, it counts as ``unmatched_labels``
  (or ``evicted_labels``);
* a label for a prediction that already expired, was evicted or was already
  labelled counts as ``late_labels`` / ``duplicate_labels`` (recent ids are
  remembered in a bounded tombstone list of ``max_pending`` entries; beyond
  that a late label is held as early and eventually counted unmatched);
* a second prediction with a pending event id counts as ``duplicate_predictions``
  and is ignored (the first is kept).

Storage is columnar: parallel numpy arrays indexed by slot, and one dict from
event id to slot (the only per-event Python work is that dict's bookkeeping).

The joined rows feed realized performance (:mod:`detectors.performance`) and
the *error stream*, one 0/1 value per joined prediction (1 = wrong; for
regression, absolute error), in label-arrival order. :class:`ErrorStreamDetector`
watches it with an online detector calibrated to an expected run time
(:class:`detectors.online.FETOnline` for 0/1 errors, :class:`~detectors.online.CVMOnline`
for absolute errors), for concept drift alarms within a window.

What the worker calls (per model version):

1. ``join.add_predictions(frame.event_id, frame.event_time, pred_label=...,
   pred_proba=..., classes=..., pred_value=..., now=...)`` for every decoded
   batch of inferences; it returns rows joined with labels that came first;
2. ``join.add_labels(event_ids, labels, label_times, now=...)`` for every
   decoded batch of labels; returns the joined rows;
3. ``join.expire(now)`` periodically (``add_*`` call it too);
4. for joined rows: ``accumulator.add(rows.label, rows.pred_label, rows.pred_proba,
   rows.classes, delays=rows.delay)`` (classification) or
   ``accumulator.add(rows.label_value, rows.pred_value, delays=rows.delay)``
   (regression) per window, and ``detector.update(error_stream(rows, task))``;
5. at the window's end: ``performance_records(accumulator.metrics(), tags, t,
   estimated=False, n=accumulator.n, extra={"n_labels": ..., "label_coverage": ...,
   **accumulator.delay_quantiles()})`` and :func:`join_records`.

>>> import numpy as np
>>> j = LabelJoin(ttl_seconds=60, max_pending=100)
>>> _ = j.add_predictions(np.array(["a", "b", "c"], dtype=object), np.array([0.0, 1.0, 2.0]),
...                       pred_label=np.array(["x", "y", "x"], dtype=object), now=2.0)
>>> rows = j.add_labels(np.array(["b", "zz"], dtype=object), np.array(["y", "x"], dtype=object),
...                     np.array([5.0, 5.0]), now=5.0)
>>> rows.event_id.tolist(), rows.pred_label.tolist(), j.stats.pending_labels
(['b'], ['y'], 1)
>>> _ = j.expire(now=100.0)
>>> j.stats.expired, j.stats.unmatched_labels
(2, 1)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from detectors.online import CVMOnline, FETOnline, OnlineResult
from detectors.performance import normalize_labels
from detectors.records import PERFORMANCE, T_DETECTOR, T_METRIC, Record

__all__ = [
    "ErrorStreamDetector",
    "JoinStats",
    "Joined",
    "LabelJoin",
    "error_stream",
    "join_records",
]

_MATCHED, _EXPIRED, _EVICTED = 1, 2, 3


@dataclass
class JoinStats:
    """Counters of a :class:`LabelJoin` since it was created (all cumulative but the pending ones)."""

    predictions: int = 0
    labels: int = 0
    matched: int = 0
    expired: int = 0  # predictions never labelled within the TTL
    evicted: int = 0  # predictions pushed out by max_pending
    duplicate_predictions: int = 0
    late_labels: int = 0  # the prediction had already expired or been evicted
    duplicate_labels: int = 0  # the prediction had already been labelled
    unmatched_labels: int = 0  # held waiting for a prediction that never came
    evicted_labels: int = 0
    pending_predictions: int = 0
    pending_labels: int = 0

    def as_fields(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Joined:
    """Joined rows (one per matched prediction), columnar."""

    event_id: np.ndarray  # object[str]
    event_time: np.ndarray  # float64
    label_time: np.ndarray  # float64
    label: np.ndarray  # object: the true label as received
    pred_label: np.ndarray | None  # object[str | None]
    pred_proba: np.ndarray | None  # float64 (n, len(classes))
    pred_value: np.ndarray | None  # float64
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.event_id.shape[0])

    @property
    def delay(self) -> np.ndarray:
        """Seconds from the prediction's event time to its label's time."""
        return self.label_time - self.event_time

    @property
    def label_value(self) -> np.ndarray:
        """The labels as float64 (regression); NaN where not numeric."""
        out = np.full(len(self), np.nan)
        for i, v in enumerate(self.label.tolist()):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[i] = float(v)
        return out

    def take(self, idx: np.ndarray) -> "Joined":
        def sel(a):
            return None if a is None else a[idx]

        return Joined(self.event_id[idx], self.event_time[idx], self.label_time[idx], self.label[idx],
                      sel(self.pred_label), sel(self.pred_proba), sel(self.pred_value), self.classes)

    @staticmethod
    def concat(parts: Sequence["Joined"]) -> "Joined":
        parts = [p for p in parts if len(p)]
        if not parts:
            return _empty_joined(())
        classes = parts[0].classes

        def cat(getter):
            vals = [getter(p) for p in parts]
            return None if any(v is None for v in vals) else np.concatenate(vals)

        return Joined(
            np.concatenate([p.event_id for p in parts]),
            np.concatenate([p.event_time for p in parts]),
            np.concatenate([p.label_time for p in parts]),
            np.concatenate([p.label for p in parts]),
            cat(lambda p: p.pred_label),
            cat(lambda p: p.pred_proba) if all(p.classes == classes for p in parts) else None,
            cat(lambda p: p.pred_value),
            classes,
        )


def _empty_joined(classes: tuple[str, ...]) -> Joined:
    e = np.empty(0)
    return Joined(np.empty(0, dtype=object), e, e, np.empty(0, dtype=object), None, None, None, classes)


class _Store:
    """Slots of parallel arrays with an id -> slot dict, oldest-first eviction and TTL."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.size = 0  # allocated slots
        self.index: dict[str, int] = {}
        self.alive = np.zeros(0, dtype=bool)
        self.seq = np.zeros(0, dtype=np.int64)  # insertion order
        self.time = np.zeros(0)  # the time the TTL counts from
        self.ids = np.zeros(0, dtype=object)
        self.next_seq = 0
        self.cols: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _grow(self, need: int, col_specs: dict[str, tuple[np.dtype, tuple[int, ...], object]]) -> None:
        new = min(self.capacity, max(need, 2 * self.size, 1024))
        if new <= self.size:
            return
        pad = new - self.size
        self.alive = np.concatenate([self.alive, np.zeros(pad, dtype=bool)])
        self.seq = np.concatenate([self.seq, np.zeros(pad, dtype=np.int64)])
        self.time = np.concatenate([self.time, np.zeros(pad)])
        self.ids = np.concatenate([self.ids, np.full(pad, None, dtype=object)])
        for name, old in list(self.cols.items()):
            fill = np.nan if old.dtype.kind == "f" else None
            self.cols[name] = np.concatenate([old, np.full((pad, *old.shape[1:]), fill, dtype=old.dtype)])
        self.size = new

    def free_slots(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``k`` free slots, evicting the oldest live entries if the store is full; (slots, evicted ids)."""
        free = np.flatnonzero(~self.alive[: self.size])
        if free.shape[0] >= k:
            return free[:k], np.empty(0, dtype=object)
        short = k - free.shape[0]
        live = np.flatnonzero(self.alive[: self.size])
        oldest = live[np.argpartition(self.seq[live], short - 1)[:short]] if short < live.shape[0] else live
        evicted = self.ids[oldest].copy()
        self.remove(oldest)
        return np.concatenate([free, oldest]), evicted

    def insert(self, ids: np.ndarray, times: np.ndarray, values: dict[str, np.ndarray],
               col_specs: dict[str, tuple[np.dtype, tuple[int, ...], object]]) -> np.ndarray:
        """Store rows (ids must be new and unique); returns evicted ids (oldest first out)."""
        k = ids.shape[0]
        if k == 0:
            return np.empty(0, dtype=object)
        if k > self.capacity:  # more rows than fit at all: the oldest of the batch go first
            raise ValueError("batch larger than capacity; split it")
        if len(self.index) + k > self.size and self.size < self.capacity:
            self._grow(len(self.index) + k, col_specs)
        for name, (dtype, tail, fill) in col_specs.items():
            if name not in self.cols:
                self.cols[name] = np.full((self.size, *tail), fill, dtype=dtype)
        slots, evicted = self.free_slots(k)
        self.alive[slots] = True
        self.seq[slots] = np.arange(self.next_seq, self.next_seq + k)
        self.next_seq += k
        self.time[slots] = times
        self.ids[slots] = ids
        for name, col in self.cols.items():  # columns this batch lacks are reset, not left stale
            col[slots] = values[name] if name in values else (np.nan if col.dtype.kind == "f" else None)
        self.index.update(zip(ids.tolist(), slots.tolist()))
        return evicted

    def remove(self, slots: np.ndarray) -> None:
        if slots.shape[0] == 0:
            return
        self.alive[slots] = False
        pop = self.index.pop
        for e in self.ids[slots].tolist():
            pop(e, None)
        self.ids[slots] = None

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        get = self.index.get
        return np.fromiter((get(e, -1) for e in ids), dtype=np.int64, count=len(ids))

    def expired(self, cutoff: float) -> np.ndarray:
        return np.flatnonzero(self.alive[: self.size] & (self.time[: self.size] < cutoff))


class LabelJoin:
    """Join delayed labels to predictions by event id, bounded and expiring (see module docstring).

    ``ttl_seconds``: a prediction waits at most this long after its event
    time (an early label, after its label time); ``now`` is the caller's clock
    in the same epoch seconds — event time (e.g. the latest event time seen)
    for replayable results, or wall time. ``max_pending``: most predictions
    held (and, separately, most early labels held); the oldest go first.
    """

    def __init__(self, ttl_seconds: float = 86_400.0, max_pending: int = 1_000_000,
                 max_pending_labels: int | None = None) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be > 0")
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.ttl = float(ttl_seconds)
        self.max_pending = int(max_pending)
        self._preds = _Store(max_pending)
        self._labels = _Store(max_pending_labels or max_pending)
        self._tomb: OrderedDict[str, int] = OrderedDict()
        self.classes: tuple[str, ...] = ()
        self._has = {"label": False, "proba": False, "value": False}
        self.stats = JoinStats()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _bury(self, ids: Sequence[str], reason: int) -> None:
        tomb = self._tomb
        for e in ids:
            tomb[e] = reason
            tomb.move_to_end(e)
        while len(tomb) > self.max_pending:
            tomb.popitem(last=False)

    def _sync(self) -> None:
        self.stats.pending_predictions = len(self._preds)
        self.stats.pending_labels = len(self._labels)

    def expire(self, now: float) -> int:
        """Expire predictions and early labels older than the TTL; returns how many predictions expired."""
        cutoff = float(now) - self.ttl
        ps = self._preds.expired(cutoff)
        if ps.size:
            ids = self._preds.ids[ps].tolist()
            self._preds.remove(ps)
            self._bury(ids, _EXPIRED)
            self.stats.expired += int(ps.size)
        ls = self._labels.expired(cutoff)
        if ls.size:
            self._labels.remove(ls)
            self.stats.unmatched_labels += int(ls.size)
        self._sync()
        return int(ps.size)

    def _align_proba(self, proba: np.ndarray | None, classes: Sequence[str], n: int) -> np.ndarray | None:
        if proba is None or not classes:
            return None
        classes = tuple(classes)
        if not self.classes:
            self.classes = classes
        if classes == self.classes:
            return np.asarray(proba, dtype=np.float64)
        new = [c for c in classes if c not in self.classes]
        if new:  # widen the stored matrix with NaN columns for the new classes
            self.classes = self.classes + tuple(new)
            if "proba" in self._preds.cols:
                old = self._preds.cols["proba"]
                self._preds.cols["proba"] = np.hstack([old, np.full((old.shape[0], len(new)), np.nan)])
        out = np.full((n, len(self.classes)), np.nan)
        pos = {c: i for i, c in enumerate(self.classes)}
        out[:, [pos[c] for c in classes]] = proba
        return out

    def _pred_specs(self) -> dict[str, tuple[np.dtype, tuple[int, ...], object]]:
        specs: dict[str, tuple[np.dtype, tuple[int, ...], object]] = {}
        if self._has["label"]:
            specs["label"] = (np.dtype(object), (), None)
        if self._has["proba"]:
            specs["proba"] = (np.dtype(np.float64), (len(self.classes),), np.nan)
        if self._has["value"]:
            specs["value"] = (np.dtype(np.float64), (), np.nan)
        return specs

    # -- predictions ---------------------------------------------------------------------------
    def add_predictions(
        self,
        event_ids: np.ndarray,
        event_times: np.ndarray,
        *,
        pred_label: np.ndarray | None = None,
        pred_proba: np.ndarray | None = None,
        classes: Sequence[str] = (),
        pred_value: np.ndarray | None = None,
        now: float | None = None,
    ) -> Joined:
        """Hold a batch of predictions; returns those joined at once with labels that came first."""
        ids = np.asarray(event_ids, dtype=object)
        times = np.asarray(event_times, dtype=np.float64)
        n = ids.shape[0]
        if times.shape[0] != n:
            raise ValueError("event_ids and event_times differ in length")
        if now is not None:
            self.expire(now)
        self.stats.predictions += n
        proba = self._align_proba(pred_proba, classes, n)
        self._has["label"] |= pred_label is not None
        self._has["proba"] |= proba is not None
        self._has["value"] |= pred_value is not None
        # first occurrence of each id in the batch, and not already pending
        _, first = np.unique(ids.astype(str), return_index=True) if n else (None, np.empty(0, dtype=np.int64))
        keep = np.zeros(n, dtype=bool)
        keep[first] = True
        keep &= self._preds.lookup(ids.tolist()) < 0
        self.stats.duplicate_predictions += int(n - keep.sum())
        # early labels waiting for these ids
        lslots = self._labels.lookup(ids.tolist())
        early = keep & (lslots >= 0)
        joined = _empty_joined(self.classes)
        if early.any():
            ls = lslots[early]
            joined = Joined(
                ids[early], times[early], self._labels.time[ls].copy(), self._labels.cols["label"][ls].copy(),
                None if pred_label is None else np.asarray(pred_label, dtype=object)[early],
                None if proba is None else proba[early],
                None if pred_value is None else np.asarray(pred_value, dtype=np.float64)[early],
                self.classes,
            )
            self._labels.remove(ls)
            self._bury(ids[early].tolist(), _MATCHED)
            self.stats.matched += int(early.sum())
        hold = keep & ~early
        if hold.any():
            values: dict[str, np.ndarray] = {}
            if pred_label is not None:
                values["label"] = np.asarray(pred_label, dtype=object)[hold]
            if proba is not None:
                values["proba"] = proba[hold]
            if pred_value is not None:
                values["value"] = np.asarray(pred_value, dtype=np.float64)[hold]
            idx = np.flatnonzero(hold)
            for start in range(0, idx.shape[0], self.max_pending):
                part = idx[start : start + self.max_pending]
                sub = {k: v[start : start + self.max_pending] for k, v in values.items()}
                evicted = self._preds.insert(ids[part], times[part], sub, self._pred_specs())
                if evicted.size:
                    self.stats.evicted += int(evicted.size)
                    self._bury(evicted.tolist(), _EVICTED)
        self._sync()
        return joined

    # -- labels ------------------------------------------------------------------------------------
    def add_labels(self, event_ids: np.ndarray, labels: np.ndarray, label_times: np.ndarray,
                   now: float | None = None) -> Joined:
        """Join a batch of labels; returns the joined rows. Unknown ids are held or counted."""
        ids = np.asarray(event_ids, dtype=object)
        lab = np.asarray(labels, dtype=object)
        lt = np.asarray(label_times, dtype=np.float64)
        n = ids.shape[0]
        if lab.shape[0] != n or lt.shape[0] != n:
            raise ValueError("event_ids, labels and label_times differ in length")
        if now is not None:
            self.expire(now)
        self.stats.labels += n
        slots = self._preds.lookup(ids.tolist())
        # within the batch, a repeated id joins once; later copies are duplicates
        _, first = np.unique(ids.astype(str), return_index=True) if n else (None, np.empty(0, dtype=np.int64))
        firsts = np.zeros(n, dtype=bool)
        firsts[first] = True
        hit = (slots >= 0) & firsts
        s = slots[hit]
        p = self._preds
        joined = Joined(
            ids[hit], p.time[s].copy(), lt[hit], lab[hit],
            p.cols["label"][s].copy() if "label" in p.cols else None,
            p.cols["proba"][s].copy() if "proba" in p.cols else None,
            p.cols["value"][s].copy() if "value" in p.cols else None,
            self.classes,
        )
        self.stats.matched += int(hit.sum())
        p.remove(s)
        self._bury(ids[hit].tolist(), _MATCHED)
        rest = np.flatnonzero(~hit)
        if rest.size:
            tomb = self._tomb
            reasons = np.fromiter((tomb.get(e, 0) for e in ids[rest].tolist()), dtype=np.int64, count=rest.size)
            dup_in_batch = ~firsts[rest]
            self.stats.duplicate_labels += int(((reasons == _MATCHED) | (dup_in_batch & (reasons == 0))).sum())
            self.stats.late_labels += int(((reasons == _EXPIRED) | (reasons == _EVICTED)).sum())
            unknown = rest[(reasons == 0) & ~dup_in_batch]
            held = self._labels.lookup(ids[unknown].tolist()) >= 0  # a second early label
            self.stats.duplicate_labels += int(held.sum())
            unknown = unknown[~held]
            if unknown.size:
                for start in range(0, unknown.size, self._labels.capacity):
                    part = unknown[start : start + self._labels.capacity]
                    ev = self._labels.insert(ids[part], lt[part], {"label": lab[part]},
                                             {"label": (np.dtype(object), (), None)})
                    self.stats.evicted_labels += int(ev.size)
        self._sync()
        return joined


def error_stream(rows: Joined, task: Literal["classification", "regression"]) -> np.ndarray:
    """Per joined row: 1.0 if the prediction was wrong else 0.0 (classification), or |error| (regression).

    Rows that cannot be scored (no prediction or a non-numeric regression label) are left out.
    """
    if task == "regression":
        if rows.pred_value is None:
            return np.empty(0)
        e = np.abs(rows.pred_value - rows.label_value)
        return e[np.isfinite(e)]
    if rows.pred_label is None:
        return np.empty(0)
    t = normalize_labels(rows.label)
    p = normalize_labels(rows.pred_label)
    ok = np.not_equal(t, None) & np.not_equal(p, None)
    return (t[ok] != p[ok]).astype(np.float64)


@dataclass
class ErrorStreamDetector:
    """Online change detection on a model's error stream (concept drift), ERT-calibrated.

    Built from the reference error stream (labelled reference rows): 0/1
    errors use the one-sided Fisher exact test (a *rise* in the error rate),
    absolute errors the Cramér-von Mises statistic. ``ert`` is the expected
    number of joined labels between false alarms; ``cache_dir`` holds the
    calibration (see :mod:`detectors.online`).
    """

    reference_errors: np.ndarray
    ert: float = 1_000_000.0
    window_sizes: tuple[int, ...] = (100, 500)
    n_bootstraps: int = 20_000
    engine: Literal["native", "alibi"] = "native"
    cache_dir: Path | str | None = None
    seed: int | None = 0
    detector: FETOnline | CVMOnline = field(init=False)

    def __post_init__(self) -> None:
        ref = np.asarray(self.reference_errors, dtype=np.float64)
        ref = ref[np.isfinite(ref)]
        kw = dict(n_bootstraps=self.n_bootstraps, seed=self.seed, cache_dir=self.cache_dir, engine=self.engine)
        if np.isin(ref, (0.0, 1.0)).all():
            self.detector = FETOnline(ref, self.ert, self.window_sizes, alternative="greater", **kw)
        else:
            self.detector = CVMOnline(ref, self.ert, self.window_sizes, **kw)

    @property
    def kind(self) -> str:
        return f"{self.detector.kind}_online"

    def update(self, errors: np.ndarray) -> OnlineResult:
        """Feed errors in label-arrival order; detections reset the run (see :class:`OnlineResult`)."""
        return self.detector.update(np.asarray(errors, dtype=np.float64))


def join_records(stats: JoinStats, tags: dict[str, str], time_ns: int) -> list[Record]:
    """One ``dw_performance`` record (``metric="label_join"``, ``detector="join"``) with the join counters."""
    return [Record(PERFORMANCE, {**tags, T_METRIC: "label_join", T_DETECTOR: "join"}, stats.as_fields(), time_ns)]
