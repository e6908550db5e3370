"""streams.worker.windows: count and event-time windows, grace, late rows, determinism, restart."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.frame import Frame
from streams.worker.windows import Checkpoint, CountWindows, TimeWindows, at_or_before, row_ordinals


def part(times, offset) -> tuple[Frame, np.ndarray]:
    times = np.asarray(times, dtype=float)
    ids = np.array([f"{offset}:{i}" for i in range(len(times))], dtype=object)
    f = Frame.from_columns(event_id=ids, event_time=times, numeric={"x": times * 2})
    return f, np.full(len(times), offset, dtype=np.int64)


def stream(seed=0, n_messages=60, disorder=5.0, t0=1000.0, rate=10.0):
    """Messages (offset, times): 1..40 rows each, event times increasing with jitter."""
    rng = np.random.default_rng(seed)
    out, t = [], t0
    for off in range(n_messages):
        n = int(rng.integers(1, 40))
        times = t + np.arange(n) / rate + rng.uniform(-disorder, disorder, n)
        t += n / rate
        out.append((off, np.maximum(times, 0.0)))
    return out


def run(windows, messages, group=1):
    """Feed messages, ``group`` at a time (as one decoded part); return closed windows and late ids."""
    closed, late = [], []
    for i in range(0, len(messages), group):
        chunk = messages[i : i + group]
        frames = [part(t, off) for off, t in chunk]
        from detectors.frame import concat

        f = concat([x[0] for x in frames])
        o = np.concatenate([x[1] for x in frames])
        added = windows.add(f, o)
        closed += added.closed
        late += f.event_id[added.late].tolist()
    return closed, late


def summary(ws):
    return [(w.seq, w.frame.event_id.tolist(), w.time_ns, w.checkpoint) for w in ws]


# ----------------------------------------------------------------------------- helpers


def test_row_ordinals_and_positions():
    origin = np.array([3, 3, 4, 4, 4, 7])
    k = row_ordinals(origin)
    assert k.tolist() == [0, 1, 0, 1, 2, 0]
    assert at_or_before(origin, k, (4, 1)).tolist() == [True, True, True, True, False, False]


# ----------------------------------------------------------------------------- count windows


def test_count_windows_split_messages_and_concatenate_once():
    w = CountWindows(size=5)
    a1 = w.add(*part([1, 2, 3], 0))
    a2 = w.add(*part([4, 5, 6, 7], 1))
    assert a1.closed == [] and len(a2.closed) == 1
    win = a2.closed[0]
    assert win.n == 5 and win.frame.event_id.tolist() == ["0:0", "0:1", "0:2", "1:0", "1:1"]
    assert win.origin.tolist() == [0, 0, 0, 1, 1]
    assert win.start_pos == (0, 0) and win.end_pos == (1, 1)
    assert win.start_time == 1 and win.end_time == 5 and win.time_ns == 5_000_000_000
    assert w.n_open == 2 and w.open_offsets.tolist() == [1]
    big = w.add(*part(np.arange(10, 23), 2))  # 13 rows: fills 3 + two windows of 5, 0 left
    assert [c.n for c in big.closed] == [5, 5, 5] and w.n_open == 0
    assert [c.seq for c in big.closed] == [1, 2, 3]


def test_count_window_time_is_strictly_increasing():
    w = CountWindows(size=2)
    closed = w.add(*part([5, 5, 5, 5, 1, 1], 0)).closed
    times = [c.time_ns for c in closed]
    assert times == sorted(set(times)) and len(times) == 3


def test_count_idle_close():
    w = CountWindows(size=10)
    w.add(*part([1, 2, 3], 0))
    c = w.close_idle()
    assert c.n == 3 and c.reason == "idle" and w.n_open == 0
    assert w.close_idle() is None


@pytest.mark.parametrize("group", [1, 2, 7, 60])
def test_count_windows_do_not_depend_on_batching(group):
    msgs = stream(1)
    ref, _ = run(CountWindows(50), msgs, group=1)
    got, _ = run(CountWindows(50), msgs, group=group)
    assert summary(got) == summary(ref)
    n_rows = sum(len(t) for _o, t in msgs)
    assert sum(c.n for c in ref) == n_rows - n_rows % 50


@pytest.mark.parametrize("crash_after", [3, 10, 25, 41, 59])
def test_count_restart_from_checkpoint_rebuilds_the_same_windows(crash_after):
    msgs = stream(2)
    first = CountWindows(50)
    written, committed = [], 0
    for off, times in msgs[: crash_after + 1]:
        added = first.add(*part(times, off))
        written += added.closed  # the sink wrote them
        # committed offset: every message before the first one still held by the open window
        held = first.open_offsets
        committed = int(held.min()) if held.size else off + 1
    full, _ = run(CountWindows(50), msgs)
    ck = written[-1].checkpoint if written else None
    second = CountWindows(50, checkpoint=ck)
    replayed_ids, after = [], []
    for off, times in msgs[committed:]:
        f, o = part(times, off)
        added = second.add(f, o)
        replayed_ids += f.event_id[added.replayed].tolist()
        after += added.closed
    assert summary(written + after) == summary(full)
    if ck is not None and committed <= ck.start_pos[0]:
        assert replayed_ids == written[-1].frame.event_id.tolist()  # rolling reference rebuild


# ----------------------------------------------------------------------------- time windows


def test_time_windows_align_to_the_epoch_and_close_on_the_watermark():
    w = TimeWindows(size=10, grace=2)
    a = w.add(*part([101, 105, 109.5], 0))
    assert a.closed == [] and w.open_windows == [10]
    a = w.add(*part([111, 111.9], 1))  # watermark 9.9 < 110: still open
    assert a.closed == []
    a = w.add(*part([112.5], 2))  # watermark 110.5 >= 110: [100, 110) closes
    (c,) = a.closed
    assert (c.start_time, c.end_time, c.time_ns) == (100.0, 110.0, 110_000_000_000)
    assert c.frame.event_id.tolist() == ["0:0", "0:1", "0:2"]
    assert c.checkpoint.end_pos == (2, 0) and c.checkpoint.closed_until == 110.0
    a = w.add(*part([109.9, 110.5], 3))  # 109.9 belongs to a closed window: late
    assert a.late.tolist() == [0]
    assert w.open_windows == [11]


def test_rows_within_grace_are_not_late():
    w = TimeWindows(size=10, grace=5)
    w.add(*part([100, 112], 0))
    a = w.add(*part([108], 1))  # watermark 107 < 110: [100,110) still open
    assert a.late.size == 0
    a = w.add(*part([116], 2))
    assert [c.frame.event_id.tolist() for c in a.closed] == [["0:0", "1:0"]]


def test_row_that_closes_a_window_in_the_middle_of_a_part():
    w = TimeWindows(size=10, grace=0)
    a = w.add(*part([101, 111, 105, 103, 112], 0))
    (c,) = a.closed
    assert c.frame.event_id.tolist() == ["0:0"]
    assert a.late.tolist() == [2, 3]  # after 111 arrived, [100,110) was closed
    assert c.checkpoint.end_pos == (0, 1)  # closed at the row 111


def test_idle_close_flushes_open_windows():
    w = TimeWindows(size=10, grace=30)
    w.add(*part([101, 115, 127], 0))
    closed = w.close_idle()
    assert [c.start_time for c in closed] == [100, 110, 120] and w.n_open == 0
    assert w.add(*part([125], 1)).late.tolist() == [0]


def test_max_open_caps_the_grace_and_bounds_memory():
    w = TimeWindows(size=1, grace=1000, max_open=4)
    assert w.grace == 3 and w.grace_capped
    rng = np.random.default_rng(0)
    for off in range(200):
        w.add(*part(off + rng.uniform(0, 1, 20), off))
        assert len(w.open_windows) <= 4


@pytest.mark.parametrize("group", [1, 3, 11, 60])
def test_time_windows_do_not_depend_on_batching(group):
    msgs = stream(3, disorder=4.0)
    ref, ref_late = run(TimeWindows(5, grace=2), msgs, group=1)
    got, got_late = run(TimeWindows(5, grace=2), msgs, group=group)
    assert summary(got) == summary(ref) and got_late == ref_late
    assert ref_late  # the stream has late rows


def test_every_time_row_is_in_a_window_late_or_open():
    msgs = stream(4, disorder=6.0)
    w = TimeWindows(5, grace=2)
    closed, late = run(w, msgs)
    n = sum(len(t) for _o, t in msgs)
    assert sum(c.n for c in closed) + len(late) + w.n_open == n
    for c in closed:
        assert ((c.frame.event_time >= c.start_time) & (c.frame.event_time < c.end_time)).all()


@pytest.mark.parametrize("crash_after", [5, 17, 30, 44])
def test_time_restart_from_checkpoint_rebuilds_the_same_windows(crash_after):
    msgs = stream(5, disorder=4.0)
    grace, size = 3.0, 5.0
    full, full_late = run(TimeWindows(size, grace), msgs)
    first = TimeWindows(size, grace)
    written, committed, late_done = [], 0, []
    for off, times in msgs[: crash_after + 1]:
        f, o = part(times, off)
        added = first.add(f, o)
        written += added.closed
        late_done += f.event_id[added.late].tolist()  # dead-lettered (confirmed)
        held = first.open_offsets
        committed = int(held.min()) if held.size else off + 1
    ck = written[-1].checkpoint if written else None
    second = TimeWindows(size, grace, checkpoint=ck)
    after, late_again = [], []
    for off, times in msgs[committed:]:
        f, o = part(times, off)
        added = second.add(f, o)
        after += added.closed
        late_again += f.event_id[added.late].tolist()
    assert summary(written + after) == summary(full)
    # late rows: each is dead-lettered at least once (replays may repeat some), none invented
    assert set(late_done) | set(late_again) == set(full_late)


def test_checkpoint_defaults():
    ck = Checkpoint(seq=0, start_pos=(0, 0), end_pos=(0, 0), time_ns=1)
    assert ck.closed_until == -math.inf


@pytest.mark.parametrize("kind", ["count", "time"])
def test_holds_taken_equal_holds_released(kind):
    """Every piece a window holds is released exactly once when it closes (commit bookkeeping)."""
    from collections import Counter

    msgs = stream(6, disorder=3.0)
    w = CountWindows(37) if kind == "count" else TimeWindows(4, grace=2)
    taken, released = Counter(), Counter()
    for off, times in msgs:
        added = w.add(*part(times, off))
        for h in added.entered:
            taken.update(h.tolist())
        for c in added.closed:
            for h in c.holds:
                released.update(h.tolist())
    rest = w.close_idle()
    for c in [rest] if kind == "count" and rest else (rest or [] if kind == "time" else []):
        for h in c.holds:
            released.update(h.tolist())
    assert taken == released


@pytest.mark.parametrize("group", [1, 7])
def test_count_windows_with_summaries_close_at_the_same_rows(group):
    """A summarised count window (window.summary_min_events) closes where a window of rows does, with the
    same checkpoint, point time and held messages; it keeps a summary of its rows and a sample of them."""
    from detectors.reference import Reference
    from detectors.spec import FeatureSpec
    from detectors.summaries import SummaryLayout

    msgs = stream(2)
    feats = [FeatureSpec(name="x", kind="numeric")]
    ref_frame, _ = part(np.linspace(1000, 1300, 500), 0)
    layout = SummaryLayout.build(Reference.from_frame(ref_frame, feats), feats, bins=64, reservoir=10)
    rows, _ = run(CountWindows(50), msgs, group=1)
    summ, _ = run(CountWindows(50, summarise=layout.summary), msgs, group=group)
    assert [(w.seq, w.time_ns, w.checkpoint, w.start_time, w.end_time, w.n) for w in summ] == [
        (w.seq, w.time_ns, w.checkpoint, w.start_time, w.end_time, w.n) for w in rows
    ]
    for s, r in zip(summ, rows):
        assert s.summary is not None and r.summary is None
        assert np.array_equal(np.unique(np.concatenate(s.holds)), np.unique(r.origin))
        assert len(s.frame) == 10 and set(s.frame.event_id) <= set(r.frame.event_id)
        x = r.frame.numeric["x"]
        assert s.summary.arrays["f.num_counts"].sum() == np.isfinite(x).sum() == 50
    # None from the factory keeps the rows (no reference yet)
    mixed, _ = run(CountWindows(50, summarise=lambda: None), msgs)
    assert summary(mixed) == summary(rows)


@pytest.mark.parametrize("stop_at", [7, 23, 41])
def test_a_summarised_window_resumed_from_its_checkpoint_closes_as_if_never_interrupted(stop_at):
    """An open summarised window checkpointed (serialised summary + positions) after ``stop_at`` messages and
    resumed in a new CountWindows from an earlier offset (what the committed offset gives): the rows already
    in it are skipped, and every window closes with the same rows, checkpoint, point time and summary as an
    uninterrupted run. Its messages are handed out as ``covered`` (held until a checkpoint), never held
    until the window is written."""
    from detectors.reference import Reference
    from detectors.spec import FeatureSpec
    from detectors.summaries import SummaryLayout, WindowSummary

    msgs = stream(4)
    feats = [FeatureSpec(name="x", kind="numeric")]
    ref_frame, _ = part(np.linspace(1000, 1300, 500), 0)
    layout = SummaryLayout.build(Reference.from_frame(ref_frame, feats), feats, bins=64, reservoir=10)

    def windows():
        w = CountWindows(60, summarise=layout.summary)
        w.checkpointed = True
        return w

    whole = windows()
    want, _ = run(whole, msgs)
    a = windows()
    first, _ = run(a, msgs[: stop_at + 1])
    ow = a.open_window()
    assert ow is not None and ow.n == a.n_open and ow.last_pos[0] == stop_at
    blob = ow.summary.to_bytes()
    b = windows()
    b.resume(type(ow)(ow.seq, ow.n, ow.start_pos, ow.last_pos, ow.last_time_ns, WindowSummary.from_bytes(layout, blob)))
    again = max(0, stop_at - 5)  # the committed offset lags the checkpoint: some messages come again
    rest, _ = run(b, msgs[again:])
    got = first + rest
    assert [(w.seq, w.checkpoint, w.time_ns, w.n) for w in got] == [(w.seq, w.checkpoint, w.time_ns, w.n) for w in want]
    for g, w in zip(got, want):
        assert g.summary.equals(w.summary, rtol=1e-9)
        assert g.holds == []  # nothing held until written: checkpoints release the messages
    # every message is covered (once per window piece it has rows in), and none is held until written
    c = windows()
    added = [c.add(*part(t, off)) for off, t in msgs]
    assert sorted({int(o) for a_ in added for h in a_.covered for o in h}) == [off for off, _ in msgs]
    assert not any(a_.entered for a_ in added)


@pytest.mark.parametrize("checkpointed", [False, True])
def test_an_open_window_of_rows_becomes_a_summary_when_the_reference_arrives(checkpointed):
    """A first_n reference is built inside the first window: from then on that window keeps a summary of
    the rows it had and of those that come, and closes like a window summarised from its start."""
    from detectors.reference import Reference
    from detectors.spec import FeatureSpec
    from detectors.summaries import SummaryLayout

    msgs = stream(6)
    feats = [FeatureSpec(name="x", kind="numeric")]
    ref_frame, _ = part(np.linspace(1000, 1300, 500), 0)
    layout = SummaryLayout.build(Reference.from_frame(ref_frame, feats), feats, bins=64, reservoir=10)
    want, _ = run(CountWindows(400, summarise=layout.summary), msgs)
    ready = {"ref": False}
    w = CountWindows(400, summarise=lambda: layout.summary() if ready["ref"] else None)
    w.checkpointed = checkpointed
    first, _ = run(w, msgs[:5])
    assert not first and not w.summarised and w.n_open > 0
    held = list(w._holds)
    ready["ref"] = True
    moved = w.summarise_open()
    assert w.summarised and w.summarise_open() is None
    assert (moved == held) if checkpointed else (moved == [] and w._holds == held)
    rest, _ = run(w, msgs[5:])
    assert [(c.seq, c.checkpoint, c.time_ns, c.n) for c in rest] == [
        (c.seq, c.checkpoint, c.time_ns, c.n) for c in want
    ]
    for g, x in zip(rest, want):
        assert g.summary.equals(x.summary, rtol=1e-9)


@pytest.mark.parametrize("checkpointed", [False, True])
@pytest.mark.parametrize("group", [1, 7])
def test_a_time_window_turns_into_a_summary_once_it_holds_summary_after_rows(group, checkpointed):
    """By default (window.summary_min_events) an event-time window keeps its rows until it holds that many,
    then turns into a summary once and updates it: its memory stops growing, its summary equals the summary
    of all its rows (bin counts checked with numpy), and it closes where the window of rows does. Windows
    that stay below the threshold keep their rows: exactly the windows of rows."""
    from detectors.reference import Reference
    from detectors.spec import FeatureSpec
    from detectors.summaries import SummaryLayout

    # 10-s windows of ~100 rows/s, then a quiet stretch of ~2 rows/s: busy windows cross 300, quiet ones do not
    msgs = stream(8, n_messages=80, disorder=0.5, rate=100.0)
    t_end = float(msgs[-1][1].max())
    msgs += [(80 + i, np.array([t_end + 1 + i * 0.5])) for i in range(60)]
    feats = [FeatureSpec(name="x", kind="numeric")]
    ref_frame, _ = part(np.linspace(2000, 2400, 500), 0)
    layout = SummaryLayout.build(Reference.from_frame(ref_frame, feats), feats, bins=64, reservoir=10)

    def windows(summary_after=None):
        w = TimeWindows(10.0, grace=1.0, summarise=layout.summary, summary_after=summary_after)
        w.checkpointed = checkpointed
        return w

    rows, rows_late = run(TimeWindows(10.0, grace=1.0), msgs, group=1)
    got, got_late = run(windows(300), msgs, group=group)
    assert got_late == rows_late
    assert [(w.seq, w.time_ns, w.checkpoint, w.start_time, w.end_time, w.n) for w in got] == [
        (w.seq, w.time_ns, w.checkpoint, w.start_time, w.end_time, w.n) for w in rows
    ]
    big = [i for i, r in enumerate(rows) if r.n >= 300]
    assert big and len(big) < len(rows)  # both kinds are in the run
    edges = layout.numeric[0].edges
    for i, (g, r) in enumerate(zip(got, rows)):
        if i not in big:  # below the threshold: the same rows, no summary
            assert g.summary is None and g.frame.event_id.tolist() == r.frame.event_id.tolist()
            continue
        assert g.summary is not None and g.summary.n == r.n
        x = r.frame.numeric["x"]
        want = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
        assert np.array_equal(g.summary.arrays["f.num_counts"][0, : len(edges) + 1], want)
        assert np.isclose(g.summary.arrays["f.num_sums"][0].sum(), x.sum(), rtol=1e-12)
        # the same as a summary of all its rows at once, and as one summarised from its start
        whole = layout.summary()
        whole.update(r.frame)
        assert g.summary.equals(whole, rtol=1e-9)
        assert set(g.frame.event_id) <= set(r.frame.event_id) and len(g.frame) == 10
        # its messages: held until written (not checkpointed) or handed to the checkpoint (checkpointed)
        assert (
            (g.holds == []) if checkpointed else np.array_equal(np.unique(np.concatenate(g.holds)), np.unique(r.origin))
        )

    # rows held by an open window stop growing at the threshold; every held message is released once: by
    # the window's write, or (checkpointed) by the open-window checkpoint, pieces held before the switch too
    from collections import Counter

    w = windows(300)
    taken, released, most = Counter(), Counter(), 0
    for off, t in msgs:
        a = w.add(*part(t, off))
        most = max(most, sum(len(f) for pieces in w._open.values() for f, _o, _k in pieces))
        for h in a.entered + a.covered:
            taken.update(h.tolist())
        for h in a.moved + a.covered + [h for c in a.closed for h in c.holds]:
            released.update(h.tolist())
        if off == 20:
            assert w.summarised and w.n_open > 300 + 40 > most  # a message has at most 39 rows
            ow = w.open_window()
            assert (ow is not None and ow.n == w.n_open) if checkpointed else not a.moved
    for c in w.close_idle():
        for h in c.holds:
            released.update(h.tolist())
    assert taken == released and most < 340
    # summarised from its start (summary_after None, window.summary_min_seconds): the same summaries
    start, _ = run(windows(None), msgs, group=group)
    for i in big:
        assert start[i].summary.equals(got[i].summary, rtol=1e-9)
