# size: the two window kinds (count, event time) with their shared position, skip and close bookkeeping and their open-window checkpoints (kept together: they share the restart rules the docstring states)
"""Columnar tumbling windows per stream key (topic partition, model, version).

Two kinds, both fed with decoded :class:`~streams.worker.decode.FramePart` s and both
pure (no I/O, no clocks except the idle close the caller triggers):

* :class:`CountWindows` — every ``size`` events form a window. A window keeps
  the list of frames it received and concatenates them once, when it closes.
  A message's rows may straddle two windows. The last partial window is closed
  by :meth:`CountWindows.close_idle` (the worker calls it after
  ``idle_close_seconds`` without events). Point time: the window's largest
  event time (strictly increasing per key).
* :class:`TimeWindows` — windows of ``size`` seconds aligned to the epoch
  (``[k*size, (k+1)*size)``). The watermark is the largest event time seen
  minus ``grace``; a window closes when the watermark reaches its end. A row
  whose window has already closed is **late**: it is returned in
  :attr:`Added.late` and the worker dead-letters it with reason ``late``
  (original bytes kept, so it can be replayed; and it is counted on the
  DEADLETTER measurement). At most ``max_open`` windows can be open: the grace
  is capped at ``(max_open - 1) * size``. Point time: the window end.

Determinism (needed so a restarted worker rewrites the *same* points): every
decision is a function of the rows in (offset, row) order and of the
:class:`Checkpoint` the worker starts from — never of how rows were batched.
A row's *position* is ``(offset, k)``: its message offset and its ordinal
among the rows of this key in that message.

Restart. The worker stores a :class:`Checkpoint` with every written window (on
the WINDOW point) and, when it takes a partition over, re-reads from the
committed offset and rebuilds its windows from the checkpoint:

* count windows: rows at or before the checkpoint's end position were in
  written windows: skipped; the next window starts right after it.
* time windows: rows at or before the close position whose time is before the
  checkpoint's ``closed_until`` were in written windows (or were late and
  dead-lettered before it): skipped; the watermark restarts where it was.

Rows of the last written window are handed back (:attr:`Added.replayed`), so
a *rolling* reference (the previous window) can be rebuilt after a restart.

Open summarised windows (count windows of ``window.summary_min_events`` or more; event-time
windows of ``window.summary_min_seconds`` or more, each open window with its own summary) are
checkpointed too, while they are open. For event-time windows, :meth:`TimeWindows.open_window` gives
every open window with the watermark state (:class:`OpenTimeWindows`) and :meth:`TimeWindows.resume`
goes on from it. For count windows: :meth:`CountWindows.open_window`
gives an :class:`OpenWindow` (the summary so far and the positions it covers),
and :meth:`CountWindows.resume` restarts from one — rows at or before its last
position are skipped, the window goes on where it was. With ``checkpointed``
set, the rows of such a window are handed out in :attr:`Added.covered` (held
until a checkpoint of the open window has them) instead of being held until the
window is written (:mod:`streams.worker.window_changelog`).

>>> import numpy as np
>>> from detectors.frame import Frame
>>> def part(times, offset):
...     n = len(times)
...     f = Frame.from_columns(event_id=np.array([str(t) for t in times], dtype=object),
...                            event_time=np.array(times, dtype=float))
...     return f, np.full(n, offset, dtype=np.int64)
>>> w = CountWindows(size=3)
>>> added = w.add(*part([1, 2], 0)); added.closed
[]
>>> added = w.add(*part([3, 4], 1)); [len(c.frame) for c in added.closed], w.n_open
([3], 1)
>>> [c.end_pos for c in added.closed]
[(1, 0)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from detectors.frame import Frame, concat

Position = tuple[int, int]  # (message offset, ordinal of the row among this key's rows in that message)
NO_POSITION: Position = (-1, -1)
CloseReason = Literal["full", "watermark", "idle"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where the last *written* window of a stream key ended (stored on its WINDOW point).

    ``seq``: number of that window (0-based); ``start_pos``/``end_pos``: first and
    last row position of a count window, or, for a time window, ``end_pos`` is the
    position of the row at which it closed; ``time_ns``: its point time;
    ``closed_until`` (time windows): its end, every earlier window is closed too;
    ``max_event_time``: the largest event time seen at its close;
    ``window_start``: its start (time windows) — rows of it are replayed to rebuild
    a rolling reference.
    """

    seq: int
    start_pos: Position
    end_pos: Position
    time_ns: int
    closed_until: float = -math.inf
    max_event_time: float = -math.inf
    window_start: float = -math.inf


@dataclass(frozen=True, slots=True)
class OpenWindow:
    """The open summarised count window of a stream key, as checkpointed (see module docstring).

    ``seq``: its number; ``n``: rows in it; ``start_pos``/``last_pos``: positions of its first and
    last row; ``last_time_ns``: point time of the window before it (point times are strictly
    increasing); ``summary``: its :class:`~detectors.summaries.WindowSummary` (serialised by the caller).
    """

    seq: int
    n: int
    start_pos: Position
    last_pos: Position
    last_time_ns: int
    summary: Any


@dataclass(frozen=True, slots=True)
class OpenTimeWindows:
    """The open summarised event-time windows of a stream key, as checkpointed (see module docstring).

    ``seq``: number the next window to close gets; ``windows``: per open window, oldest first,
    ``(window index, rows, first offset, last offset, summary)``; ``last_pos``: position of the last row
    taken; ``max_event_time`` and ``closed_until``: the watermark state at that row (the windows after it
    close and judge lateness exactly as an uninterrupted run's).
    """

    seq: int
    windows: tuple[tuple[int, int, int, int, Any], ...]
    last_pos: Position
    max_event_time: float
    closed_until: float

    @property
    def n(self) -> int:
        return sum(w[1] for w in self.windows)

    @property
    def summaries(self) -> list[Any]:
        return [w[4] for w in self.windows]


@dataclass(slots=True)
class _Summed:
    """An open event-time window that keeps a summary: its rows, first and last offset, and the holds of its
    pieces (only when not checkpointed: they are released when it is written)."""

    summary: Any
    n: int
    first: int
    last: int
    holds: list[np.ndarray]


@dataclass(slots=True)
class ClosedWindow:
    """A window ready for the detectors: its frame, rows' offsets and its checkpoint."""

    seq: int
    frame: Frame
    origin: np.ndarray  # int64 offset of every row (for the commit bookkeeping)
    start_time: float  # epoch s: count = smallest event time; time = window start
    end_time: float  # epoch s: count = largest event time; time = window end
    time_ns: int  # the InfluxDB point time
    reason: CloseReason
    checkpoint: Checkpoint
    holds: list[np.ndarray] = field(default_factory=list)  # unique offsets per piece (see Added.entered)
    calibration: Any = None  # CBPE's calibration for this window (set by the pipeline; see WindowContext)
    # the window's detectors.summaries.WindowSummary when it kept no rows: ``frame`` is then its reservoir
    # sample and ``origin`` holds the offsets of its first and last rows only
    summary: Any = None
    reference_points: bool = True  # write the reference's own points with this window (set by the pipeline)

    @property
    def n(self) -> int:
        return len(self.frame) if self.summary is None else int(self.summary.n)

    @property
    def start_pos(self) -> Position:
        return self.checkpoint.start_pos

    @property
    def end_pos(self) -> Position:
        return self.checkpoint.end_pos


@dataclass(slots=True)
class Added:
    """What one :meth:`add` produced.

    ``closed``: windows closed by these rows, oldest first. ``entered``: for every
    piece of rows that went into a window, the unique offsets of its messages — the
    caller holds those messages (keeps them un-acked) once per piece and releases
    them with :attr:`ClosedWindow.holds` once the window is written. ``late``: row indexes (into the added part) that arrived after their window
    closed. ``skipped``: rows already accounted for before a restart. ``replayed``:
    row indexes of rows of the last written window (rolling reference rebuild).
    """

    closed: list[ClosedWindow] = field(default_factory=list)
    entered: list[np.ndarray] = field(default_factory=list)
    late: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    skipped: int = 0
    replayed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    covered: list[np.ndarray] = field(default_factory=list)
    # pieces already held (``entered``) of a window that turned into a summary now: the caller hands them to the
    # open-window checkpoint (released by it) instead of to the window's write
    moved: list[np.ndarray] = field(default_factory=list)


def row_ordinals(origin: np.ndarray) -> np.ndarray:
    """Each row's ordinal among the rows of its message (``origin`` groups are contiguous).

    >>> row_ordinals(np.array([5, 5, 5, 6, 9, 9])).tolist()
    [0, 1, 2, 0, 0, 1]
    """
    n = origin.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(origin[1:], origin[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, n))
    return np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)


def at_or_before(origin: np.ndarray, k: np.ndarray, pos: Position) -> np.ndarray:
    """Mask of rows whose position is ``<= pos`` (lexicographic)."""
    off, kk = pos
    return (origin < off) | ((origin == off) & (k <= kk))


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def _reservoir_frame(summary: Any) -> Frame:
    """A closed summarised window's frame: its reservoir sample (an empty frame if it has none)."""
    frame = summary.reservoir.frame
    if frame is None:
        frame = Frame.from_columns(event_id=np.zeros(0, dtype=object), event_time=np.zeros(0))
    return frame


def _unique_sorted(origin: np.ndarray) -> np.ndarray:
    """Unique values of a non-decreasing array."""
    if origin.shape[0] <= 1:
        return origin.copy()
    keep = np.empty(origin.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(origin[1:], origin[:-1], out=keep[1:])
    return origin[keep]


class CountWindows:
    """Tumbling windows of ``size`` events (see module docstring).

    ``summarise``: called when a window opens; a :class:`~detectors.summaries.WindowSummary` it
    returns takes the window's rows batch by batch instead of a list of frames (memory bounded by
    the summary's configuration, not by ``size``); None keeps the rows (e.g. no reference yet).
    ``checkpointed``: the open summary is checkpointed (:meth:`open_window`), so its rows' messages
    are handed out in :attr:`Added.covered` instead of being held until the window is written.
    """

    kind = "count"

    def __init__(
        self, size: int, checkpoint: Checkpoint | None = None, summarise: Callable[[], Any] | None = None
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = int(size)
        self.summarise = summarise
        self.checkpointed = False
        self._summary: Any = None
        self.checkpoint = checkpoint
        self.next_seq = checkpoint.seq + 1 if checkpoint else 0
        self._last_time_ns = checkpoint.time_ns if checkpoint else -1
        self._frames: list[Frame] = []
        self._origins: list[np.ndarray] = []
        self._ks: list[np.ndarray] = []
        self._holds: list[np.ndarray] = []
        self.n_open = 0

    @property
    def open_offsets(self) -> np.ndarray:
        """Offsets of the messages whose rows are in the open window."""
        if not self._holds:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(self._holds))

    def add(self, frame: Frame, origin: np.ndarray) -> Added:
        """Add rows (in position order); return the windows they closed."""
        out = Added()
        k = row_ordinals(origin)
        idx = np.arange(len(frame))
        ck = self.checkpoint
        if ck is not None and len(frame) and origin[0] <= ck.end_pos[0]:
            done = at_or_before(origin, k, ck.end_pos)
            if done.any():
                last = done & ~at_or_before(origin, k, (ck.start_pos[0], ck.start_pos[1] - 1))
                out.replayed = idx[last]
                out.skipped = int(done.sum())
                keep = ~done
                frame, origin, k, idx = frame.take(keep), origin[keep], k[keep], idx[keep]
        start = 0
        n = len(frame)
        while start < n:
            take = min(self.size - self.n_open, n - start)
            sl = slice(start, start + take)
            piece = frame.take(sl) if (start or take < n) else frame
            if self.n_open == 0 and self.summarise is not None:
                self._summary = self.summarise()
            if self._summary is not None:  # only the first and last row positions are kept
                self._summary.update(piece)
                o, kk = origin[sl], k[sl]
                first = not self._origins
                self._origins = [np.array([(self._origins[0][0] if not first else o[0]), o[-1]], dtype=np.int64)]
                self._ks = [np.array([(self._ks[0][0] if not first else kk[0]), kk[-1]], dtype=np.int64)]
            else:
                self._frames.append(piece)
                self._origins.append(origin[sl])
                self._ks.append(k[sl])
            held = _unique_sorted(origin[sl])
            if self._summary is not None and self.checkpointed:
                out.covered.append(held)
            else:
                self._holds.append(held)
                out.entered.append(held)
            self.n_open += take
            start += take
            if self.n_open >= self.size:
                out.closed.append(self._close("full"))
        return out

    def close_idle(self) -> ClosedWindow | None:
        """Close the partial window (after ``idle_close_seconds`` without events)."""
        return self._close("idle") if self.n_open else None

    def summarise_open(self) -> list[np.ndarray] | None:
        """Turn the open window of rows into a summarised one, now that ``summarise`` gives a summary (the
        reference exists: a ``first_n`` reference is built inside the model's first window). The rows so
        far go into the summary and are dropped; the window closes where it would have. Returns None if
        nothing changed; else, with ``checkpointed``, the holds of its pieces so far (the caller keeps them
        until a checkpoint has them, as :attr:`Added.covered`), otherwise [] (they stay until it is written).
        """
        if self._summary is not None or not self.n_open or self.summarise is None:
            return None
        summary = self.summarise()
        if summary is None:
            return None
        summary.update(concat(self._frames))
        origin, ks = np.concatenate(self._origins), np.concatenate(self._ks)
        self._summary, self._frames = summary, []
        self._origins = [np.array([origin[0], origin[-1]], dtype=np.int64)]
        self._ks = [np.array([ks[0], ks[-1]], dtype=np.int64)]
        if not self.checkpointed:
            return []
        holds, self._holds = self._holds, []
        return holds

    @property
    def summarised(self) -> bool:
        """The open window keeps a summary (not its rows)."""
        return self._summary is not None

    def open_window(self) -> OpenWindow | None:
        """The open window as a checkpoint (None: no window open, or it keeps rows). The summary is the live
        object: serialise it before more rows are added."""
        if self._summary is None or not self.n_open:
            return None
        o, k = self._origins[0], self._ks[0]
        return OpenWindow(
            self.next_seq,
            self.n_open,
            (int(o[0]), int(k[0])),
            (int(o[-1]), int(k[-1])),
            self._last_time_ns,
            self._summary,
        )

    def resume(self, ow: OpenWindow) -> None:
        """Go on with a checkpointed open window: rows at or before ``ow.last_pos`` are skipped (they are
        in its summary, or in windows written before it), the next rows go into it."""
        if self.n_open:
            raise ValueError("resume() needs a CountWindows with no open window")
        self.checkpoint = Checkpoint(
            seq=ow.seq - 1, start_pos=ow.last_pos, end_pos=ow.last_pos, time_ns=ow.last_time_ns
        )
        self.next_seq = ow.seq
        self._last_time_ns = ow.last_time_ns
        self._summary = ow.summary
        self._origins = [np.array([ow.start_pos[0], ow.last_pos[0]], dtype=np.int64)]
        self._ks = [np.array([ow.start_pos[1], ow.last_pos[1]], dtype=np.int64)]
        self.n_open = int(ow.n)

    def _close(self, reason: CloseReason) -> ClosedWindow:
        summary, self._summary = self._summary, None
        origin = np.concatenate(self._origins)
        ks = np.concatenate(self._ks)
        if summary is not None:
            frame = _reservoir_frame(summary)
            t_min, t_max = float(summary.t_min), float(summary.t_max)
        else:
            frame = concat(self._frames)
            t = frame.event_time
            t_min, t_max = float(t.min()), float(t.max())
        time_ns = max(_ns(t_max), self._last_time_ns + 1000)  # strictly increasing points
        self._last_time_ns = time_ns
        ck = Checkpoint(
            seq=self.next_seq,
            start_pos=(int(origin[0]), int(ks[0])),
            end_pos=(int(origin[-1]), int(ks[-1])),
            time_ns=time_ns,
            max_event_time=t_max,
        )
        self.next_seq += 1
        holds = self._holds
        self._frames, self._origins, self._ks, self._holds, self.n_open = [], [], [], [], 0
        return ClosedWindow(ck.seq, frame, origin, t_min, t_max, time_ns, reason, ck, holds, summary=summary)


class TimeWindows:
    """Event-time tumbling windows with a lateness grace (see module docstring).

    ``summarise``: as for :class:`CountWindows`, called when a window opens; a summary it returns takes
    that window's rows batch by batch. ``summary_after``: with it set, a window opens with rows instead and
    ``summarise`` is called once it holds this many rows (``window.summary_min_events``): its rows go into
    the summary once, the next ones update it, so a window's memory is bounded whatever its event count
    while windows below it keep their rows (exact results). Whether a window ends as a summary depends
    only on its row count, and a summary of the same rows is the same however they were batched, so the
    results do not depend on batching. ``checkpointed``: the open summaries are checkpointed
    (:meth:`open_window`, all open windows of the key with the watermark state), so their rows' messages
    are handed out in :attr:`Added.covered` (:attr:`Added.moved` for the rows a window held before it
    turned into a summary); :meth:`resume` goes on from such a checkpoint.
    """

    kind = "time"

    def __init__(
        self,
        size: float,
        grace: float = 0.0,
        max_open: int = 16,
        checkpoint: Checkpoint | None = None,
        summarise: Callable[[], Any] | None = None,
        summary_after: int | None = None,
    ) -> None:
        if size <= 0:
            raise ValueError("size must be > 0")
        if summary_after is not None and summary_after < 1:
            raise ValueError("summary_after must be >= 1")
        if max_open < 1:
            raise ValueError("max_open must be >= 1")
        self.size = float(size)
        self.requested_grace = float(grace)
        self.grace = min(float(grace), (max_open - 1) * self.size)
        self.max_open = max_open
        self.summarise = summarise
        self.summary_after = summary_after
        self.checkpointed = False
        self.checkpoint = checkpoint
        self.next_seq = checkpoint.seq + 1 if checkpoint else 0
        self.max_event_time = checkpoint.max_event_time if checkpoint else -math.inf
        self.closed_until = checkpoint.closed_until if checkpoint else -math.inf
        self._last_pos: Position = checkpoint.end_pos if checkpoint else NO_POSITION
        self._resume_pos: Position | None = None  # rows at or before it are in a restored checkpoint
        # window index -> pieces (windows of rows), or its summary (summarised windows)
        self._open: dict[int, list[tuple[Frame, np.ndarray, np.ndarray]]] = {}
        self._sums: dict[int, _Summed] = {}

    @property
    def grace_capped(self) -> bool:
        return self.grace < self.requested_grace

    @property
    def n_open(self) -> int:
        rows = sum(len(f) for pieces in self._open.values() for f, _o, _k in pieces)
        return rows + sum(sm.n for sm in self._sums.values())

    @property
    def open_windows(self) -> list[int]:
        return sorted(set(self._open) | set(self._sums))

    @property
    def has_rows(self) -> bool:
        """Some open window keeps rows (it opened before a summary could be laid out): no checkpoint then."""
        return bool(self._open)

    @property
    def summarised(self) -> bool:
        return bool(self._sums)

    @property
    def open_offsets(self) -> np.ndarray:
        parts = [o for pieces in self._open.values() for _f, o, _k in pieces]
        parts += [h for sm in self._sums.values() for h in sm.holds]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def add(self, frame: Frame, origin: np.ndarray) -> Added:
        """Add rows in position order: returns closed windows and the late rows."""
        out = Added()
        k = row_ordinals(origin)
        idx = np.arange(len(frame))
        t = frame.event_time
        ck, rp = self.checkpoint, self._resume_pos
        if len(frame) and ((ck is not None and origin[0] <= ck.end_pos[0]) or (rp is not None and origin[0] <= rp[0])):
            done = np.zeros(len(frame), dtype=bool)
            if ck is not None:
                done |= at_or_before(origin, k, ck.end_pos) & (t < ck.closed_until)
                out.replayed = idx[done & (t >= ck.window_start)]
            if rp is not None:  # in the restored open windows, in windows written before, or late
                done |= at_or_before(origin, k, rp)
            if done.any():
                out.skipped = int(done.sum())
                keep = ~done
                frame, origin, k, idx, t = frame.take(keep), origin[keep], k[keep], idx[keep], t[keep]
        n = len(frame)
        if n == 0:
            return out
        size, grace = self.size, self.grace
        # watermark before each row (running max of event times, from the state we start in)
        run = np.maximum.accumulate(np.concatenate(([self.max_event_time], t)))
        m_before, m_after = run[:-1], run[1:]
        closed_before = np.maximum(self.closed_until, np.floor((m_before - grace) / size) * size)
        w = np.floor(t / size)
        late = (w + 1) * size <= closed_before
        out.late = idx[late]
        ok = ~late
        # attach the rows to their windows (stable: rows keep their order inside a window)
        if ok.any():
            w_ok = w[ok].astype(np.int64)
            rows = np.flatnonzero(ok)
            order = np.argsort(w_ok, kind="stable")
            w_sorted = w_ok[order]
            bounds = np.flatnonzero(np.diff(w_sorted)) + 1
            for grp in np.split(order, bounds):
                sel = rows[grp]
                self._attach(int(w_ok[grp[0]]), frame.take(sel), origin[sel], k[sel], out)
        # close the windows the watermark passed, each at the row that passed it
        new_closed = max(self.closed_until, math.floor((m_after[-1] - grace) / size) * size)
        for win in self.open_windows:
            end = (win + 1) * size
            if end > new_closed:
                break
            at = int(np.searchsorted(m_after - grace, end, side="left"))
            at = min(at, n - 1)
            out.closed.append(self._close(win, (int(origin[at]), int(k[at])), float(m_after[at]), "watermark"))
        self.max_event_time = float(m_after[-1])
        self.closed_until = max(self.closed_until, new_closed)
        self._last_pos = (int(origin[-1]), int(k[-1]))
        return out

    def _attach(self, win: int, piece: Frame, origin: np.ndarray, k: np.ndarray, out: Added) -> None:
        """Rows of one window: into its summary (opened now if ``summarise`` gives one) or its pieces."""
        held = _unique_sorted(origin)
        opening = win not in self._open and win not in self._sums
        if opening and self.summarise is not None and self.summary_after is None:
            summary = self.summarise()
            if summary is not None:
                self._sums[win] = _Summed(summary, 0, int(origin[0]), int(origin[-1]), [])
        sm = self._sums.get(win)
        if sm is None:
            pieces = self._open.setdefault(win, [])
            pieces.append((piece, origin, k))
            out.entered.append(held)
            if self.summary_after is not None and sum(len(f) for f, _o, _k in pieces) >= self.summary_after:
                moved = self._to_summary(win)
                if moved is not None:
                    out.moved.extend(moved)
            return
        sm.summary.update(piece)
        sm.n += len(piece)
        sm.last = int(origin[-1])
        if self.checkpointed:
            out.covered.append(held)
        else:
            sm.holds.append(held)
            out.entered.append(held)

    def close_idle(self) -> list[ClosedWindow]:
        """Close every open window (the stream went quiet); later rows for them are late."""
        return [self._close(w, self._last_pos, self.max_event_time, "idle") for w in self.open_windows]

    def summarise_open(self) -> list[np.ndarray] | None:
        """Turn the open windows of rows into summarised ones (as :meth:`CountWindows.summarise_open`: the
        reference now exists). Returns None if nothing changed; else, with ``checkpointed``, the holds of
        their pieces (the caller keeps them until a checkpoint has them), otherwise []."""
        if not self._open or self.summarise is None:
            return None
        moved: list[np.ndarray] = []
        changed = False
        for win in sorted(self._open):
            if self.summary_after is not None and sum(len(f) for f, _o, _k in self._open[win]) < self.summary_after:
                continue  # below the threshold: keeps its rows
            holds = self._to_summary(win)
            if holds is None:
                break
            moved.extend(holds)
            changed = True
        return moved if changed else None

    def _to_summary(self, win: int) -> list[np.ndarray] | None:
        """Turn the open window ``win`` of rows into a summarised one: its rows go into a new summary and are
        dropped. Returns None (nothing changed) if ``summarise`` gives no summary; else, with
        ``checkpointed``, the holds of its pieces (from now on the open-window checkpoint releases them),
        otherwise [] (they stay with the window until it is written)."""
        assert self.summarise is not None
        summary = self.summarise()
        if summary is None:
            return None
        pieces = self._open.pop(win)
        summary.update(concat([f for f, _o, _k in pieces]))
        holds = [_unique_sorted(o) for _f, o, _k in pieces]
        first, last = min(int(o.min()) for _f, o, _k in pieces), max(int(o.max()) for _f, o, _k in pieces)
        n = sum(len(f) for f, _o, _k in pieces)
        moved: list[np.ndarray] = []
        if self.checkpointed:
            moved, holds = holds, []
        self._sums[win] = _Summed(summary, n, first, last, holds)
        return moved

    def open_window(self) -> OpenTimeWindows | None:
        """The open summarised windows as a checkpoint (None: none open). The summaries are the live objects:
        serialise them before more rows are added."""
        if not self._sums:
            return None
        wins = tuple((win, sm.n, sm.first, sm.last, sm.summary) for win, sm in sorted(self._sums.items()))
        return OpenTimeWindows(self.next_seq, wins, self._last_pos, self.max_event_time, self.closed_until)

    def resume(self, ow: OpenTimeWindows) -> None:
        """Go on from checkpointed open windows: rows at or before ``ow.last_pos`` are skipped (in its
        summaries, in windows written before it, or late). The written windows' :class:`Checkpoint` this
        object was made with may be newer (windows written after the open-window checkpoint): its windows
        are dropped from ``ow`` and its rows skipped as before."""
        if self._open or self._sums:
            raise ValueError("resume() needs a TimeWindows with no open window")
        self._resume_pos = ow.last_pos
        self.next_seq = max(self.next_seq, ow.seq)
        self.max_event_time = max(self.max_event_time, ow.max_event_time)
        self.closed_until = max(self.closed_until, ow.closed_until)
        self._last_pos = max(self._last_pos, ow.last_pos)
        for win, n, first, last, summary in ow.windows:
            if (win + 1) * self.size > self.closed_until:  # not written since
                self._sums[win] = _Summed(summary, n, first, last, [])

    def _close(self, win: int, at: Position, max_event_time: float, reason: CloseReason) -> ClosedWindow:
        start, end = win * self.size, (win + 1) * self.size
        self.closed_until = max(self.closed_until, end)
        sm = self._sums.pop(win, None)
        summary = None
        if sm is not None:
            summary, frame, holds = sm.summary, _reservoir_frame(sm.summary), sm.holds
            origin = np.array([sm.first, sm.last], dtype=np.int64)  # its first and last rows' only
        else:
            pieces = self._open.pop(win)
            frame = concat([f for f, _o, _k in pieces])
            origin = np.concatenate([o for _f, o, _k in pieces])
            holds = [_unique_sorted(o) for _f, o, _k in pieces]
        ck = Checkpoint(
            seq=self.next_seq,
            start_pos=(int(origin.min()), 0),
            end_pos=at,
            time_ns=_ns(end),
            closed_until=end,
            max_event_time=max_event_time,
            window_start=start,
        )
        self.next_seq += 1
        return ClosedWindow(ck.seq, frame, origin, start, end, ck.time_ns, reason, ck, holds, summary=summary)


Windows = CountWindows | TimeWindows
