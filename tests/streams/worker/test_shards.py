"""The merge step of a sharded model (streams/worker/shards.py): partials line up, merge exactly, once."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors.frame import Frame
from detectors.reference import Reference
from detectors.spec import FeatureSpec
from detectors.summaries import SummaryLayout, numeric_statistics
from streams.worker.shards import (
    MergeBuffer,
    Partial,
    PartialError,
    merge_partials,
    merged_window,
    partial_of,
    partials_topic,
)
from streams.worker.windows import CountWindows

FEATS = [FeatureSpec(name="x", kind="numeric", min=-3.0, max=3.0), FeatureSpec(name="c", kind="categorical")]


def _frame(rng: np.random.Generator, n: int, start: int, shift: float = 0.0) -> Frame:
    x = rng.normal(shift, 1.0, n)
    x[rng.random(n) < 0.05] = np.nan  # missing values are counted, not binned
    return Frame.from_columns(
        event_id=np.array([f"e{i}" for i in range(start, start + n)], dtype=object),
        event_time=np.arange(start, start + n, dtype=float),
        numeric={"x": x},
        categorical={"c": rng.choice(["a", "b", "zz"], n).astype(object)},
    )


@pytest.fixture(scope="module")
def layout() -> SummaryLayout:
    rng = np.random.default_rng(0)
    ref = Reference.from_frame(_frame(rng, 5000, 0), FEATS)
    return SummaryLayout.build(ref, FEATS, bins=128, reservoir=300)


def _shards(layout: SummaryLayout, rows: list[Frame], seq: int = 0) -> list[Partial]:
    """One partial per shard (partition = index), each a count window of its rows, like a shard's worker."""
    out = []
    for part, fr in enumerate(rows):
        w = CountWindows(len(fr), summarise=layout.summary)
        w.next_seq = seq
        (closed,) = w.add(fr, np.zeros(len(fr), dtype=np.int64)).closed
        out.append(partial_of("hot", "1", part, closed))
    return out


def test_merged_summary_is_the_summary_of_all_rows(layout: SummaryLayout) -> None:
    rng = np.random.default_rng(1)
    rows = [_frame(rng, 700 + 50 * i, 10_000 * (i + 1), shift=0.3) for i in range(4)]
    merged = merge_partials(layout, _shards(layout, rows))
    whole = layout.summary()
    for fr in rows:
        whole.update(fr)
    assert merged.equals(whole)
    # and against numpy, independently of the summary code: counts, missing, extremes, sums, reservoir
    x = np.concatenate([fr.numeric["x"] for fr in rows])
    ok = x[np.isfinite(x)]
    assert merged.n == x.size
    assert merged.arrays["f.num_counts"][0].sum() == ok.size
    assert merged.arrays["f.num_missing"][0] == np.isnan(x).sum()
    assert merged.arrays["f.num_out_of_range"][0] == ((ok < -3.0) | (ok > 3.0)).sum()
    assert np.isclose(merged.arrays["f.num_sums"][0].sum(), ok.sum())
    assert (merged.arrays["f.num_min"][0], merged.arrays["f.num_max"][0]) == (ok.min(), ok.max())
    ids = np.concatenate([fr.event_id for fr in rows])
    assert merged.reservoir.n == 300 and set(merged.reservoir.frame.event_id) <= set(ids)
    # the KS statistic from the merged bins brackets scipy's on all rows
    st = numeric_statistics(
        layout,
        merged.arrays["f.num_counts"],
        merged.arrays["f.num_sums"],
        merged.arrays["f.num_min"],
        merged.arrays["f.num_max"],
    )
    assert st.n_cur[0] == ok.size
    d = stats.ks_2samp(ok, _ref_values()).statistic
    assert st.ks[0] - 1e-12 <= d <= st.ks_upper[0] + 1e-12


def _ref_values() -> np.ndarray:
    """The reference's numeric values (rebuilt as the fixture did: same seed, same draws)."""
    x = _frame(np.random.default_rng(0), 5000, 0).numeric["x"]
    return x[np.isfinite(x)]


def test_partial_round_trip_and_bad_messages(layout: SummaryLayout) -> None:
    rng = np.random.default_rng(2)
    (p,) = _shards(layout, [_frame(rng, 100, 0)], seq=7)
    q = Partial.from_bytes(p.to_bytes())
    assert q == p and q.seq == 7 and q.n == 100
    with pytest.raises(PartialError, match="not a driftwatch-partial-window"):
        Partial.from_bytes(b'{"format": "other"}\n')
    with pytest.raises(PartialError, match="not JSON"):
        Partial.from_bytes(b"{oops\n")
    with pytest.raises(PartialError, match="'seq'"):
        Partial.from_bytes(p.to_bytes().replace(b'"seq":7,', b""))
    assert partials_topic("g", "inferences") == "g-inferences-partials"


def _p(seq: int, partition: int) -> Partial:
    return Partial("hot", "1", seq, partition, 10, 1_000 * (seq + 1) + partition, "full", (0, 0), (0, 9), b"")


def test_merge_buffer_completes_windows_in_order_once() -> None:
    buf = MergeBuffer([2, 3, 0, 1])
    assert buf.add(_p(0, 2), "a").complete == []
    assert buf.add(_p(1, 2), "b").complete == []  # a fast shard is a window ahead
    assert buf.add(_p(0, 3), "c").complete == []
    assert buf.add(_p(0, 0), "d").complete == []
    assert buf.waiting == {0: [1], 1: [3, 0, 1]}
    done = buf.add(_p(0, 1), "e").complete
    assert [c.seq for c in done] == [0]
    assert [q.partition for q in done[0].partials] == [2, 3, 0, 1]  # shard order, whatever the arrival order
    assert done[0].tokens == ["a", "c", "d", "e"]
    assert buf.add(_p(0, 1), "again").dropped == "written"  # a shard re-read after a crash: not written twice
    assert buf.add(_p(1, 5), "x").dropped == "unexpected"
    assert buf.tokens() == ["b"]
    for part in (3, 0):
        assert buf.add(_p(1, part)).complete == []
    assert [c.seq for c in buf.add(_p(1, 1)).complete] == [1]


def test_merge_buffer_after_a_restart_drops_written_windows_and_keeps_the_newest_copy() -> None:
    buf = MergeBuffer([0, 1], last_seq=4)
    assert buf.add(_p(4, 0)).dropped == "written"
    assert buf.add(_p(5, 0), "old").replaced == []
    assert buf.add(_p(5, 0), "new").replaced == ["old"]  # the same window published again: the newest copy counts
    (c,) = buf.add(_p(5, 1), "t").complete
    assert c.tokens == ["new", "t"]
    with pytest.raises(ValueError, match="distinct"):
        MergeBuffer([0, 0])


def test_merged_window_times_and_reason(layout: SummaryLayout) -> None:
    rng = np.random.default_rng(3)
    parts = _shards(layout, [_frame(rng, 50, 0), _frame(rng, 60, 100)], seq=3)
    idle = Partial(**{**{f: getattr(parts[1], f) for f in Partial.__slots__}, "reason": "idle"})
    buf = MergeBuffer([0, 1], last_seq=2)
    buf.add(parts[0])
    (c,) = buf.add(idle).complete
    summary = merge_partials(layout, c.partials)
    w = merged_window(c, summary, last_time_ns=0)
    assert (w.seq, w.n, w.reason) == (3, 110, "idle")
    assert w.time_ns == max(p.time_ns for p in parts) and w.checkpoint.seq == 3
    assert (w.start_time, w.end_time) == (0.0, 159.0)
    later = merged_window(c, summary, last_time_ns=w.time_ns)  # point times strictly increase
    assert later.time_ns == w.time_ns + 1000
