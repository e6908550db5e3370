# size: the label join and the error stream monitor are one pipeline over the same joined rows
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

import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detectors.online import CVMOnline, FETOnline, OnlineResult
from detectors.performance import normalize_labels
from detectors.records import PERFORMANCE, T_DETECTOR, T_METRIC, FieldValue, Record
from detectors.values import not_none

log = logging.getLogger(__name__)

__all__ = [
    "ErrorStreamDetector",
    "ErrorStreamMonitor",
    "JoinCapture",
    "JoinSnapshot",
    "JoinStats",
    "Joined",
    "LabelJoin",
    "error_stream",
    "join_records",
    "scored_errors",
]

_MATCHED, _EXPIRED, _EVICTED = 1, 2, 3
_RESTORED = 10  # added to a tombstone's reason when it came from a snapshot (see LabelJoin.restore)
TOMB_LIMIT = 50_000
"""Finished ids a snapshot keeps (the most recent ones, see :meth:`LabelJoin.snapshot`)."""


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
    # after a restore: predictions / labels read again that the restored state already held
    # (re-read from Kafka after a restart), not counted in predictions / labels
    replayed_predictions: int = 0
    replayed_labels: int = 0

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

    def take(self, idx: np.ndarray) -> Joined:
        def sel(a):
            return None if a is None else a[idx]

        return Joined(
            self.event_id[idx],
            self.event_time[idx],
            self.label_time[idx],
            self.label[idx],
            sel(self.pred_label),
            sel(self.pred_proba),
            sel(self.pred_value),
            self.classes,
        )

    @staticmethod
    def concat(parts: Sequence[Joined]) -> Joined:
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


@dataclass
class JoinSnapshot:
    """Everything a :class:`LabelJoin` holds, as columns (see :meth:`LabelJoin.snapshot`).

    ``predictions``: ``ids``, ``time`` (event time) and the prediction columns
    (``label``, ``proba``, ``value``) of the pending predictions, oldest first;
    ``labels``: ``ids``, ``time`` (label time), ``label`` of the labels waiting for
    their prediction; ``tomb``: recently finished ids with their reason, newest first
    (as :attr:`tomb_ids` / :attr:`tomb_reasons`: oldest first; reasons 1 matched,
    2 expired, 3 evicted).
    """

    predictions: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    tomb: list[tuple[str, int]]
    classes: tuple[str, ...]
    has: dict[str, bool]
    stats: JoinStats
    label_clock: float = -np.inf  # the latest label time seen (LabelJoin.label_clock)

    @classmethod
    def from_arrays(
        cls, predictions, labels, tomb_ids, tomb_reasons, classes, has, stats, label_clock: float = -np.inf
    ) -> JoinSnapshot:
        """From oldest-first arrays of finished ids and reasons (as :attr:`tomb_ids` / :attr:`tomb_reasons`)."""
        return cls(
            predictions,
            labels,
            list(zip(tomb_ids.tolist()[::-1], tomb_reasons.tolist()[::-1])),
            classes,
            has,
            stats,
            label_clock,
        )

    @property
    def tomb_ids(self) -> np.ndarray:
        out = np.empty(len(self.tomb), dtype=object)
        out[:] = [e for e, _ in reversed(self.tomb)]
        return out

    @property
    def tomb_reasons(self) -> np.ndarray:
        return np.array([r for _, r in reversed(self.tomb)], dtype=np.int64) % _RESTORED


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

    def insert(
        self,
        ids: np.ndarray,
        times: np.ndarray,
        values: dict[str, np.ndarray],
        col_specs: dict[str, tuple[np.dtype, tuple[int, ...], object]],
    ) -> np.ndarray:
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
            col[slots] = values.get(name, np.nan if col.dtype.kind == "f" else None)
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

    def raw_copy(self) -> _StoreCopy:
        """Plain copies of the slot arrays (memcpy speed: no selection, no sort), for :meth:`_StoreCopy.live`
        on another thread while this store goes on changing."""
        n = self.size
        return _StoreCopy(
            self.alive[:n].copy(),
            self.seq[:n].copy(),
            self.time[:n].copy(),
            self.ids[:n].copy(),
            {name: col[:n].copy() for name, col in self.cols.items()},
        )


@dataclass(frozen=True, slots=True)
class _StoreCopy:
    """A :class:`_Store`'s slot arrays as copied by :meth:`_Store.raw_copy` (owned by whoever holds it)."""

    alive: np.ndarray
    seq: np.ndarray
    time: np.ndarray
    ids: np.ndarray
    cols: dict[str, np.ndarray]

    def live(self) -> dict[str, np.ndarray]:
        """The live rows, oldest first: ``ids``, ``time`` and the value columns."""
        slots = np.flatnonzero(self.alive)
        slots = slots[np.argsort(self.seq[slots], kind="stable")]
        return {"ids": self.ids[slots], "time": self.time[slots], **{k: c[slots] for k, c in self.cols.items()}}


TombChunk = tuple[list, "int | list[int]"]  # ids finished together, and their reason (one, or one each)


def recent_tombs(chunks: Sequence[TombChunk], limit: int) -> list[tuple[str, int]]:
    """The ``limit`` most recently finished distinct ids with their latest reason, newest first, from
    chunks of finished ids in the order they finished (a later chunk wins for an id in several).

    >>> recent_tombs([(["a", "b"], 1), (["c"], 2), (["a"], 3)], 3)
    [('a', 3), ('c', 2), ('b', 1)]
    """
    out: dict[str, int] = {}
    for ids, reason in reversed(chunks):
        reasons = reason if isinstance(reason, list) else [reason] * len(ids)
        for e, r in zip(reversed(ids), reversed(reasons)):
            if e not in out:
                out[e] = r
                if len(out) >= limit:
                    return list(out.items())
    return list(out.items())


@dataclass(frozen=True)
class JoinCapture:
    """What :meth:`LabelJoin.capture` took on the caller's thread: plain array copies and references to
    immutable chunks. :meth:`snapshot` (selection, sorting, the tombstone list) may run on any thread."""

    predictions: _StoreCopy
    labels: _StoreCopy
    tombs: list[TombChunk]
    tomb_limit: int
    classes: tuple[str, ...]
    has: dict[str, bool]
    stats: JoinStats
    label_clock: float

    def snapshot(self) -> JoinSnapshot:
        return JoinSnapshot(
            predictions=self.predictions.live(),
            labels=self.labels.live(),
            tomb=recent_tombs(self.tombs, self.tomb_limit),
            classes=self.classes,
            has=self.has,
            stats=self.stats,
            label_clock=self.label_clock,
        )


class LabelJoin:
    """Join delayed labels to predictions by event id, bounded and expiring (see module docstring).

    ``ttl_seconds``: a prediction waits at most this long after its event
    time (an early label, after its label time); ``now`` is the caller's clock
    in the same epoch seconds — event time (e.g. the latest event time seen)
    for replayable results, or wall time. ``max_pending``: most predictions
    held (and, separately, most early labels held); the oldest go first.

    ``align``: event-time alignment of the two streams. A prediction then expires
    only once the *label* stream has moved past its TTL (the latest label time
    seen, :attr:`label_clock`, is more than ``ttl_seconds`` after its event time),
    not when later predictions arrive: when the predictions run ahead of their
    labels (a backlog read from the start, a slow label source) they wait, bounded
    by ``max_pending``, and the join gives the same matches as on live traffic. An
    early label still expires on ``now`` (the prediction stream's clock: its
    prediction, older than the label, should have come by then).

    >>> j = LabelJoin(ttl_seconds=10, align=True)
    >>> _ = j.add_predictions(np.array(["a"], dtype=object), np.array([0.0]), pred_label=np.array(["x"], dtype=object))
    >>> _ = j.add_predictions(np.array(["b"], dtype=object), np.array([500.0]), pred_label=np.array(["x"], dtype=object),
    ...                       now=500.0)  # the predictions ran ahead: "a" still waits for its label
    >>> len(j.add_labels(np.array(["a"], dtype=object), np.array(["x"], dtype=object), np.array([5.0]), now=500.0))
    1
    """

    def __init__(
        self,
        ttl_seconds: float = 86_400.0,
        max_pending: int = 1_000_000,
        max_pending_labels: int | None = None,
        align: bool = False,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be > 0")
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.ttl = float(ttl_seconds)
        self.max_pending = int(max_pending)
        self.align = bool(align)
        self.label_clock = -np.inf  # the latest label time seen
        self._preds = _Store(max_pending)
        self._labels = _Store(max_pending_labels or max_pending)
        self._tomb: OrderedDict[str, int] = OrderedDict()
        # the same finished ids as chunks in the order they finished (append-only, the newest ~2 * TOMB_LIMIT
        # kept): a snapshot takes references to them instead of walking the OrderedDict on the caller's thread
        self._tomb_log: deque[TombChunk] = deque()
        self._tomb_log_n = 0
        self.classes: tuple[str, ...] = ()
        self._has = {"label": False, "proba": False, "value": False}
        self.stats = JoinStats()
        self._restored = False
        self._restored_preds = 0  # insertion sequence numbers below these came from a snapshot
        self._restored_labels = 0
        self._restored_until = -np.inf  # the snapshot's clock: later predictions cannot be replays

    # -- bookkeeping ---------------------------------------------------------------------------
    def _bury(self, ids: list, reason: int | list[int]) -> None:
        """Remember finished ids (``reason``: one for all, or one each); ``ids`` must not change afterwards."""
        if not ids:
            return
        tomb = self._tomb
        for e, r in zip(ids, reason if isinstance(reason, list) else [reason] * len(ids)):
            tomb[e] = r
            tomb.move_to_end(e)
        while len(tomb) > self.max_pending:
            tomb.popitem(last=False)
        log_ = self._tomb_log
        log_.append((ids, reason))
        self._tomb_log_n += len(ids)
        keep = min(TOMB_LIMIT, self.max_pending)
        while self._tomb_log_n - len(log_[0][0]) >= 2 * keep:
            self._tomb_log_n -= len(log_.popleft()[0])

    def _sync(self) -> None:
        self.stats.pending_predictions = len(self._preds)
        self.stats.pending_labels = len(self._labels)

    def expire(self, now: float) -> int:
        """Expire predictions and early labels older than the TTL; returns how many predictions expired.

        With ``align``, predictions expire on ``min(now, label_clock)`` (see the class docstring)."""
        cutoff = float(now) - self.ttl
        ps = self._preds.expired(min(cutoff, self.label_clock - self.ttl) if self.align else cutoff)
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

    def _replayed(self, ids: np.ndarray) -> np.ndarray:
        """Which ids have a tombstone that came from a snapshot."""
        tomb = self._tomb
        reasons = np.fromiter((tomb.get(e, 0) for e in ids.tolist()), dtype=np.int64, count=ids.shape[0])
        return reasons > _RESTORED

    # -- persistence -----------------------------------------------------------------------------
    def capture(self, tomb_limit: int = TOMB_LIMIT) -> JoinCapture:
        """The cheap part of :meth:`snapshot`, for the thread that owns the join: plain copies of the slot
        arrays (memcpy, no selection or sort) and references to the immutable chunks of finished ids.
        ``capture().snapshot()`` — on any thread, while the join goes on — equals :meth:`snapshot` now.

        Why: the worker checkpoints the join every few seconds from its event loop; selecting, sorting
        and walking the finished ids there stalled consumption (~80 ms at 100,000 pending predictions
        on a loaded 2-core host, more at the default bound)."""
        return JoinCapture(
            predictions=self._preds.raw_copy(),
            labels=self._labels.raw_copy(),
            tombs=list(self._tomb_log),
            tomb_limit=min(int(tomb_limit), self.max_pending),
            classes=tuple(self.classes),
            has=dict(self._has),
            stats=JoinStats(**self.stats.as_fields()),
            label_clock=float(self.label_clock),
        )

    def snapshot(self, tomb_limit: int = TOMB_LIMIT) -> JoinSnapshot:
        """Copies of everything the join holds (columnar), to :meth:`restore` after a restart.

        The pending predictions and labels oldest first, and the ``tomb_limit`` most recently
        finished ids. Older finished ids are left out: after a restore, a label for one of those
        counts as unmatched (after the TTL) instead of late, and a prediction read again for one of
        those is held again (it expires) instead of counted as replayed — replays are of the
        uncommitted tail of the stream, so recent ids are the ones that matter. A caller that
        serialises on another thread takes :meth:`capture` here and its ``snapshot()`` there.
        """
        return self.capture(tomb_limit).snapshot()

    def restore(self, snap: JoinSnapshot, now: float | None = None) -> int:
        """Load a :meth:`snapshot` into this (new, empty) join; returns the predictions restored.

        Entries older than the TTL at ``now`` are expired (and counted) at once; beyond
        ``max_pending`` the oldest go. Afterwards, a prediction or label whose id the
        restored state already held — read again from Kafka after the restart — is
        counted as ``replayed_*`` and otherwise ignored.
        """
        if len(self._preds) or len(self._labels) or self._tomb:
            raise ValueError("restore into a new LabelJoin only")
        self.classes = tuple(snap.classes)
        self._has.update(snap.has)
        self.label_clock = float(snap.label_clock)
        p = snap.predictions
        ids = np.asarray(p.get("ids", np.empty(0, dtype=object)), dtype=object)
        k = ids.shape[0]
        if k > self.max_pending:  # the configured bound shrank: keep the newest
            p = {name: v[-self.max_pending :] for name, v in p.items()}
            ids = ids[-self.max_pending :]
            k = ids.shape[0]
        if k:
            values = {name: np.asarray(v) for name, v in p.items() if name not in ("ids", "time")}
            self._preds.insert(ids, np.asarray(p["time"], dtype=np.float64), values, self._pred_specs())
        lab = snap.labels
        lids = np.asarray(lab.get("ids", np.empty(0, dtype=object)), dtype=object)[-self._labels.capacity :]
        if lids.shape[0]:
            self._labels.insert(
                lids,
                np.asarray(lab["time"], dtype=np.float64)[-lids.shape[0] :],
                {"label": np.asarray(lab["label"], dtype=object)[-lids.shape[0] :]},
                {"label": (np.dtype(object), (), None)},
            )
        t_ids, t_reasons = snap.tomb_ids.tolist()[-self.max_pending :], snap.tomb_reasons.tolist()[-self.max_pending :]
        self._bury(t_ids, [int(r) % _RESTORED + _RESTORED for r in t_reasons])
        self.stats = JoinStats(**{**snap.stats.as_fields(), "pending_predictions": 0, "pending_labels": 0})
        self._restored = True
        self._restored_preds = self._preds.next_seq
        self._restored_labels = self._labels.next_seq
        self._restored_until = np.inf if now is None else float(now)
        self._sync()
        if now is not None:
            self.expire(now)
        return len(self._preds)

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
        firsts = np.zeros(n, dtype=bool)
        firsts[first] = True
        pslots = self._preds.lookup(ids.tolist())
        keep = firsts & (pslots < 0)
        if self._restored:  # ids the restored state holds (pending or finished) are replays, not new
            replay = np.zeros(n, dtype=bool)
            old = keep & (times <= self._restored_until)  # only these can have been seen before the snapshot
            if old.any():
                replay[old] = self._replayed(ids[old])
            if self._preds.size:
                replay |= firsts & (pslots >= 0) & (self._preds.seq[np.maximum(pslots, 0)] < self._restored_preds)
            keep &= ~replay
            n_replay = int(replay.sum())
            self.stats.replayed_predictions += n_replay
            self.stats.predictions -= n_replay
            n -= n_replay
        self.stats.duplicate_predictions += int(n - keep.sum())
        # early labels waiting for these ids
        lslots = self._labels.lookup(ids.tolist())
        early = keep & (lslots >= 0)
        joined = _empty_joined(self.classes)
        if early.any():
            ls = lslots[early]
            joined = Joined(
                ids[early],
                times[early],
                self._labels.time[ls].copy(),
                self._labels.cols["label"][ls].copy(),
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
    def add_labels(
        self, event_ids: np.ndarray, labels: np.ndarray, label_times: np.ndarray, now: float | None = None
    ) -> Joined:
        """Join a batch of labels; returns the joined rows. Unknown ids are held or counted."""
        ids = np.asarray(event_ids, dtype=object)
        lab = np.asarray(labels, dtype=object)
        lt = np.asarray(label_times, dtype=np.float64)
        n = ids.shape[0]
        if lab.shape[0] != n or lt.shape[0] != n:
            raise ValueError("event_ids, labels and label_times differ in length")
        if now is not None:
            self.expire(now)
        if n and np.isfinite(lt).any():  # after the expiry: this batch's own predictions must not expire first
            self.label_clock = max(self.label_clock, float(np.nanmax(lt)))
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
            ids[hit],
            p.time[s].copy(),
            lt[hit],
            lab[hit],
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
            if self._restored:  # a label the restored state already joined or holds: read again, not new
                held_restored = np.zeros(rest.size, dtype=bool)
                if self._labels.size:
                    lslots = self._labels.lookup(ids[rest].tolist())
                    held_restored = (lslots >= 0) & (self._labels.seq[np.maximum(lslots, 0)] < self._restored_labels)
                replay = ((reasons == _MATCHED + _RESTORED) | held_restored) & firsts[rest]
                if replay.any():
                    self.stats.replayed_labels += int(replay.sum())
                    self.stats.labels -= int(replay.sum())
                    rest, reasons = rest[~replay], reasons[~replay]
            reasons = reasons % _RESTORED
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
                    ev = self._labels.insert(
                        ids[part], lt[part], {"label": lab[part]}, {"label": (np.dtype(object), (), None)}
                    )
                    self.stats.evicted_labels += int(ev.size)
        self._sync()
        return joined


def scored_errors(rows: Joined, task: Literal["classification", "regression"]) -> tuple[np.ndarray, np.ndarray]:
    """``(errors, mask)``: the error of each scorable joined row and which rows those are.

    Errors are 1.0 / 0.0 (wrong / right; classification) or the absolute error
    (regression). A row without a prediction, or with a missing or non-numeric
    (regression) label, cannot be scored.
    """
    n = len(rows)
    if task == "regression":
        if rows.pred_value is None:
            return np.empty(0), np.zeros(n, dtype=bool)
        e = np.abs(rows.pred_value - rows.label_value)
        ok = np.isfinite(e)
        return e[ok], ok
    if rows.pred_label is None:
        return np.empty(0), np.zeros(n, dtype=bool)
    t = normalize_labels(rows.label)
    p = normalize_labels(rows.pred_label)
    ok = not_none(t) & not_none(p)
    return (t[ok] != p[ok]).astype(np.float64), ok


def error_stream(rows: Joined, task: Literal["classification", "regression"]) -> np.ndarray:
    """Per joined row: 1.0 if the prediction was wrong else 0.0 (classification), or |error| (regression).

    Rows that cannot be scored (no prediction or a non-numeric regression label) are left out.
    """
    return scored_errors(rows, task)[0]


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
        kw: dict[str, Any] = dict(
            n_bootstraps=self.n_bootstraps, seed=self.seed, cache_dir=self.cache_dir, engine=self.engine
        )
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


class ErrorStreamMonitor:
    """Concept drift on one model's error stream: :class:`~detectors.online.FETOnline` on 0/1 errors.

    Feed it joined rows in label-arrival order (:meth:`add`); each window, take the
    fields of what happened since the last call (:meth:`window_fields`).

    1. **Reference**: the errors of the first ``reference_size`` scorable joined
       rows (classification: wrong = 1; regression: ``|error| > threshold``, the
       threshold being ``error_threshold`` or the ``error_quantile`` quantile of
       those rows' absolute errors, fixed once). A reference with no errors at all
       (or only errors) cannot calibrate a test for a *rise* in the error rate: the
       monitor then keeps collecting, up to ``10 x reference_size`` rows, and gives
       up with a ``note`` if it still has one kind only.
    2. **Calibration** (ERT in joined labels, cached in ``cache_dir``): by
       ``submit(fn)`` (e.g. a thread pool's, so the caller's loop does not wait),
       else at once. Errors arriving meanwhile wait in a bounded buffer
       (``max_buffer``, the oldest dropped and counted) and are fed when it is ready.
    3. **Detection**: one-sided (a rise), the run restarts after each detection.

    ``state()`` / ``restore(state)``: the reference (or what is collected of it),
    the buffered errors and the detector's run, as arrays, so a restarted worker
    goes on where the snapshot left it (the thresholds come back from the cache).

    >>> import numpy as np
    >>> m = ErrorStreamMonitor("classification", reference_size=200, ert=500, window_sizes=(20,),
    ...                        n_bootstraps=400)
    >>> rng = np.random.default_rng(0)
    >>> m.add_errors((rng.random(200) < 0.1).astype(float), np.arange(200.0))
    >>> m.ready, m.window_fields()["phase"]
    (True, 'monitoring')
    >>> m.add_errors(np.ones(40), 200 + np.arange(40.0))      # the model is suddenly always wrong
    >>> f = m.window_fields(); f["drift"], f["first_detection_time"] < 225
    (1, True)
    """

    PHASES = ("reference", "calibrating", "monitoring", "off")

    def __init__(
        self,
        task: Literal["classification", "regression"],
        *,
        reference_size: int = 5000,
        ert: float = 100_000.0,
        window_sizes: Sequence[int] = (100, 500, 2000),
        n_bootstraps: int = 5000,
        error_threshold: float | None = None,
        error_quantile: float = 0.9,
        engine: Literal["native", "alibi"] = "native",
        cache_dir: Path | str | None = None,
        submit=None,
        max_buffer: int = 100_000,
        seed: int | None = 0,
    ) -> None:
        self.task = task
        self.reference_size = int(reference_size)
        self.ert = float(ert)
        self.window_sizes = tuple(int(w) for w in window_sizes)
        self.n_bootstraps = int(n_bootstraps)
        self.error_threshold = error_threshold
        self.error_quantile = float(error_quantile)
        self.engine = engine
        self.cache_dir = cache_dir
        self.submit = submit
        self.max_buffer = int(max_buffer)
        self.seed = seed
        self.threshold: float | None = error_threshold if task == "regression" else None
        self.note = ""
        self.detector: FETOnline | None = None
        self._future = None
        self._pending_run: dict[str, np.ndarray] | None = None
        self._off = False  # gave up (see phase "off")
        self._extending = False  # the reference had one kind of value only: collecting more
        self._ref: list[np.ndarray] = []  # raw errors collected for the reference
        self._ref_n = 0
        self.reference: np.ndarray | None = None  # 0/1, once complete
        self._buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (errors01, label times, event times)
        self._buf_n = 0
        self._window_reset()

    @classmethod
    def from_spec(cls, spec, task, **kw) -> ErrorStreamMonitor:
        """From an :class:`~detectors.spec.ErrorStreamSpec` (``labels.online``)."""
        return cls(
            task,
            reference_size=spec.reference_size,
            ert=spec.ert,
            window_sizes=spec.window_sizes,
            n_bootstraps=spec.n_bootstraps,
            error_threshold=spec.error_threshold,
            error_quantile=spec.error_quantile,
            engine=spec.engine,
            **kw,
        )

    # -- state ---------------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        if self._off:
            return "off"
        if self.reference is None:
            return "reference"
        return "monitoring" if self.detector is not None else "calibrating"

    @property
    def ready(self) -> bool:
        self._poll()
        return self.detector is not None

    def _window_reset(self) -> None:
        self._w_n = 0
        self._w_ones = 0
        self._w_detections = 0
        self._w_first: tuple[float, float] | None = None
        self._w_stat = -np.inf
        self._w_thr = np.nan
        self._w_buffered = 0
        self._w_dropped = 0
        self._w_ref_added = 0

    def _binary(self, errors: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return (errors > self.threshold).astype(np.float64)
        return errors

    # -- feeding -------------------------------------------------------------------------------
    def add(self, rows: Joined) -> None:
        """Feed joined rows (label-arrival order): their errors go to the reference or the detector."""
        errors, ok = scored_errors(rows, self.task)
        if errors.size:
            self.add_errors(errors, rows.label_time[ok], rows.event_time[ok])

    def add_errors(self, errors: np.ndarray, label_times: np.ndarray, event_times: np.ndarray | None = None) -> None:
        """Feed raw errors (0/1, or absolute errors for regression) with their label times."""
        errors = np.asarray(errors, dtype=np.float64)
        label_times = np.asarray(label_times, dtype=np.float64)
        event_times = label_times if event_times is None else np.asarray(event_times, dtype=np.float64)
        if self.phase == "off" or not errors.size:
            return
        while self.reference is None and errors.size and not self._off:
            # a reference of one kind only so far takes whole batches until both kinds are in
            take = errors if self._extending else errors[: max(self.reference_size - self._ref_n, 0)]
            if take.size:
                self._ref.append(take)
                self._ref_n += take.size
                self._w_ref_added += int(take.size)
            errors, label_times, event_times = errors[take.size :], label_times[take.size :], event_times[take.size :]
            if self._ref_n >= self.reference_size:
                self._complete_reference()
        if self.reference is None or not errors.size:
            return
        self._feed(self._binary(errors), label_times, event_times)

    def _complete_reference(self) -> None:
        raw = np.concatenate(self._ref) if self._ref else np.empty(0)
        if self.task == "regression" and self.threshold is None:
            self.threshold = float(np.quantile(raw[: self.reference_size], self.error_quantile))
        ref = self._binary(raw)
        ones = int(ref.sum())
        if 0 < ones < ref.size:
            self.reference, self._ref, self.note = ref, [], ""
            self._start_calibration()
            return
        if raw.size >= 10 * self.reference_size:
            self._ref, self._off = [], True
            self.note = (
                f"the first {raw.size} joined labels were all {'wrong' if ones else 'right'}: "
                "no error rate to test a rise against"
            )
            return
        self._extending = True  # keep collecting
        self.note = f"reference of {raw.size} errors has one kind of value only: collecting more"

    def _build(self) -> FETOnline:
        if self.reference is None:
            raise ValueError("no complete error reference to calibrate on")
        return FETOnline(
            self.reference,
            self.ert,
            self.window_sizes,
            n_bootstraps=self.n_bootstraps,
            alternative="greater",
            cache_dir=self.cache_dir,
            engine=self.engine,
            seed=self.seed,
        )

    def _start_calibration(self) -> None:
        if self.submit is None:
            self._done(self._build())
        else:
            self._future = self.submit(self._build)

    def _done(self, detector: FETOnline) -> None:
        self.detector = detector
        if self._pending_run:  # restored: go on with the saved run
            detector.resume(self._pending_run)
        self._pending_run = None

    def _poll(self) -> None:
        fut = self._future
        if fut is not None and fut.done():
            self._future = None
            try:
                self._done(fut.result())
            except Exception as e:  # a worker thread's failure: reported through the window's fields
                self.note = f"calibration failed: {type(e).__name__}: {e}"
                log.warning("error-stream detector: %s; it stays off for this reference", self.note)
                self.reference, self._off = None, True
                self._buf, self._buf_n = [], 0
                return
            if self._buf:
                buf, self._buf, self._buf_n = self._buf, [], 0
                self._w_buffered += sum(b[0].size for b in buf)
                self._run(
                    np.concatenate([b[0] for b in buf]),
                    np.concatenate([b[1] for b in buf]),
                    np.concatenate([b[2] for b in buf]),
                )

    def _feed(self, e01: np.ndarray, label_times: np.ndarray, event_times: np.ndarray) -> None:
        self._poll()
        if self.detector is None:
            if self.reference is None:
                return
            self._buf.append((e01, label_times, event_times))
            self._buf_n += e01.size
            while self._buf_n > self.max_buffer and self._buf:
                over = self._buf_n - self.max_buffer
                e, lt, et = self._buf[0]
                cut = min(over, e.size)
                self._buf[0] = (e[cut:], lt[cut:], et[cut:])
                self._buf_n -= cut
                self._w_dropped += cut
                if not self._buf[0][0].size:
                    self._buf.pop(0)
            return
        self._run(e01, label_times, event_times)

    def _run(self, e01: np.ndarray, label_times: np.ndarray, event_times: np.ndarray) -> None:
        assert self.detector is not None, "_run is called once calibrated"
        res = self.detector.update(e01)
        self._w_n += e01.size
        self._w_ones += int(e01.sum())
        self._w_detections += res.n_drift
        finite = np.isfinite(res.stats)
        if finite.any():
            self._w_stat = max(self._w_stat, float(res.stats[finite].max()))
        if self._w_first is None:  # the threshold crossed by the first detection, else the latest in force
            thr = (
                res.thresholds.reshape(res.thresholds.shape[0], -1).max(axis=1) if res.thresholds.size else np.empty(0)
            )
            at = res.first_drift if res.first_drift is not None else None
            if at is None:
                ok = np.flatnonzero(np.isfinite(thr))
                at = int(ok[-1]) if ok.size else None
            if at is not None and np.isfinite(thr[at]):
                self._w_thr = float(thr[at])
        if res.first_drift is not None and self._w_first is None:
            self._w_first = (float(label_times[res.first_drift]), float(event_times[res.first_drift]))

    # -- reporting -----------------------------------------------------------------------------
    def window_fields(self) -> dict[str, float | int | str]:
        """What happened since the last call, as record fields (then starts a new window).

        ``phase`` (reference | calibrating | monitoring | off), ``drift`` (0/1),
        ``n_detections``, ``first_detection_time`` (label time of the error that
        fired) and ``first_detection_event_time`` (its prediction's event time),
        ``statistic`` (largest smoothed ``1 - p``), ``threshold`` (the one the first
        detection crossed, else the latest in force), ``t`` (errors since the last detection), ``n`` (errors tested),
        ``error_rate`` (their share of ones), ``reference_error_rate``, ``n_ref``,
        ``ert``, ``n_buffered`` (tested late, after the calibration),
        ``n_dropped``, ``error_threshold`` (regression) and ``note``.
        """
        self._poll()
        f: dict[str, float | int | str] = {"phase": self.phase, "ert": self.ert, "n": self._w_n}
        if self.reference is not None:
            f["n_ref"] = int(self.reference.size)
            f["reference_error_rate"] = float(self.reference.mean())
        else:
            f["n_ref"] = int(self._ref_n)
        if self.threshold is not None:
            f["error_threshold"] = float(self.threshold)
        if self.detector is not None:
            f["t"] = int(self.detector.t)
            f["drift"] = int(self._w_detections > 0)
            f["n_detections"] = int(self._w_detections)
        if self._w_n:
            f["error_rate"] = self._w_ones / self._w_n
        if np.isfinite(self._w_stat):
            f["statistic"] = self._w_stat
        if np.isfinite(self._w_thr):
            f["threshold"] = self._w_thr
        if self._w_first is not None:
            f["first_detection_time"], f["first_detection_event_time"] = self._w_first
        if self._w_buffered:
            f["n_buffered"] = self._w_buffered
        if self._w_dropped:
            f["n_dropped"] = self._w_dropped
        if self.note:
            f["note"] = self.note
        self._window_reset()
        return f

    # -- persistence ---------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to go on after a restart, as arrays (see class docstring)."""
        self._poll()
        out: dict[str, np.ndarray] = {
            "ref_raw": np.concatenate(self._ref) if self._ref else np.empty(0),
            "threshold": np.array([np.nan if self.threshold is None else self.threshold]),
            "extending": np.array([int(self._extending)], dtype=np.int64),
        }
        if self.reference is not None:
            out["reference"] = self.reference.copy()
        if self._buf:
            out["buf_e"] = np.concatenate([b[0] for b in self._buf])
            out["buf_lt"] = np.concatenate([b[1] for b in self._buf])
            out["buf_et"] = np.concatenate([b[2] for b in self._buf])
        if self.detector is not None:
            out.update({f"run_{k}": v for k, v in self.detector.run_state().items()})
        elif self._pending_run:  # restored and recalibrating (another host has no cached thresholds): keep the run
            out.update({f"run_{k}": v for k, v in self._pending_run.items()})
        # what the current window saw so far (errors that waited for the calibration ran in it): reported by
        # the next window_fields() also after a restore
        first = self._w_first if self._w_first is not None else (np.nan, np.nan)
        out["window"] = np.array(
            [
                self._w_n,
                self._w_ones,
                self._w_detections,
                self._w_stat,
                self._w_thr,
                self._w_buffered,
                self._w_dropped,
                self._w_ref_added,
                *first,
            ],
            dtype=np.float64,
        )
        return out

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Go on from :meth:`state` (of a monitor with the same settings)."""
        if "window" in state:
            w = np.asarray(state["window"], dtype=np.float64)
            self._w_n, self._w_ones, self._w_detections = int(w[0]), int(w[1]), int(w[2])
            self._w_stat, self._w_thr = float(w[3]), float(w[4])
            self._w_buffered, self._w_dropped, self._w_ref_added = int(w[5]), int(w[6]), int(w[7])
            self._w_first = None if np.isnan(w[8]) else (float(w[8]), float(w[9]))
        thr = float(state["threshold"][0]) if "threshold" in state else np.nan
        if self.error_threshold is None and np.isfinite(thr):
            self.threshold = thr
        raw = np.asarray(state.get("ref_raw", np.empty(0)), dtype=np.float64)
        if "reference" in state:
            self.reference = np.asarray(state["reference"], dtype=np.float64)
            self._ref, self._ref_n = [], int(self.reference.size)
            self._pending_run = {k[4:]: v for k, v in state.items() if k.startswith("run_")} or None
            self._start_calibration()  # from the cache: the same reference, the same thresholds
            self._poll()
            if "buf_e" in state:
                self._buf = [(state["buf_e"], state["buf_lt"], state["buf_et"])]
                self._buf_n = int(state["buf_e"].size)
        elif raw.size:
            self._ref, self._ref_n = [raw], int(raw.size)
            self._extending = bool(state.get("extending", [0])[0])
            if self._ref_n >= self.reference_size and not self._extending:
                self._complete_reference()


def join_records(stats: JoinStats, tags: dict[str, str], time_ns: int) -> list[Record]:
    """One ``dw_performance`` record (``metric="label_join"``, ``detector="join"``) with the join counters."""
    fields: dict[str, FieldValue] = {**stats.as_fields()}
    return [Record(PERFORMANCE, {**tags, T_METRIC: "label_join", T_DETECTOR: "join"}, fields, time_ns)]
