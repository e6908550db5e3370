"""Label join (bounded, expiring, nothing lost), error stream, and change detection vs River."""

from __future__ import annotations

import numpy as np
import pytest
from river.drift import ADWIN, PageHinkley

from detectors.concept import (
    ErrorStreamDetector,
    ErrorStreamMonitor,
    Joined,
    LabelJoin,
    error_stream,
    join_records,
)
from detectors.records import PERFORMANCE


def ids(*xs):
    return np.array([str(x) for x in xs], dtype=object)


def test_join_matches_and_carries_prediction_columns():
    j = LabelJoin(ttl_seconds=100, max_pending=10)
    j.add_predictions(
        ids(1, 2, 3),
        np.array([1.0, 2, 3]),
        pred_label=ids("x", "y", "x"),
        pred_proba=np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]),
        classes=("x", "y"),
        pred_value=np.array([0.1, 0.8, 0.4]),
        now=3,
    )
    rows = j.add_labels(ids(3, 1), np.array(["x", "y"], dtype=object), np.array([10.0, 11.0]), now=11)
    assert rows.event_id.tolist() == ["3", "1"]
    assert rows.pred_label.tolist() == ["x", "x"]
    np.testing.assert_allclose(rows.pred_proba, [[0.6, 0.4], [0.9, 0.1]])
    np.testing.assert_allclose(rows.pred_value, [0.4, 0.1])
    np.testing.assert_allclose(rows.delay, [7.0, 10.0])
    assert rows.classes == ("x", "y")
    assert error_stream(rows, "classification").tolist() == [0.0, 1.0]
    assert j.stats.matched == 2 and j.stats.pending_predictions == 1


def test_early_label_waits_for_its_prediction():
    j = LabelJoin(ttl_seconds=100)
    assert len(j.add_labels(ids("e"), np.array([1.5], dtype=object), np.array([5.0]), now=5)) == 0
    assert j.stats.pending_labels == 1
    rows = j.add_predictions(ids("e"), np.array([4.0]), pred_value=np.array([2.0]), now=6)
    assert rows.event_id.tolist() == ["e"] and rows.label_value.tolist() == [1.5]
    assert error_stream(rows, "regression").tolist() == [0.5]
    assert j.stats.pending_labels == 0 and j.stats.matched == 1


def test_ttl_expiry_late_and_unmatched_labels_are_counted():
    j = LabelJoin(ttl_seconds=10)
    j.add_predictions(ids("a", "b"), np.array([0.0, 8.0]), pred_label=ids("x", "x"), now=8)
    j.add_labels(ids("zz"), np.array(["x"], dtype=object), np.array([9.0]), now=9)  # early/unknown
    assert j.expire(now=15) == 1  # "a" is older than 10 s
    rows = j.add_labels(ids("a", "b"), np.array(["x", "y"], dtype=object), np.array([15.0, 15.0]), now=15)
    assert rows.event_id.tolist() == ["b"]
    assert j.stats.late_labels == 1 and j.stats.expired == 1
    j.expire(now=30)
    assert j.stats.unmatched_labels == 1 and j.stats.pending_labels == 0


def test_eviction_duplicates_and_bounded_memory():
    j = LabelJoin(ttl_seconds=1e9, max_pending=3)
    j.add_predictions(ids(1, 2, 3), np.arange(3.0), pred_label=ids("x", "x", "x"))
    j.add_predictions(ids(4, 5, 4), np.arange(3.0, 6.0), pred_label=ids("x", "x", "x"))
    assert j.stats.pending_predictions == 3 and j.stats.evicted == 2  # 1 and 2 went first
    assert j.stats.duplicate_predictions == 1
    j.add_labels(ids(1, 3, 3), np.array(["x"] * 3, dtype=object), np.full(3, 9.0))
    assert j.stats.late_labels == 1 and j.stats.matched == 1 and j.stats.duplicate_labels == 1
    j.add_labels(ids(3), np.array(["x"], dtype=object), np.array([9.0]))
    assert j.stats.duplicate_labels == 2
    assert len(j._preds.alive) <= 1024  # storage grows by need, capped by max_pending


def test_random_stream_against_a_dict_model_and_conservation():
    """Join results equal a plain-dict reference; every prediction and label is accounted for."""
    rng = np.random.default_rng(0)
    j = LabelJoin(ttl_seconds=50, max_pending=400)
    truth: dict[str, str] = {}
    joined = []
    t = 0.0
    served = 0
    for _ in range(60):
        n = int(rng.integers(1, 40))
        e = ids(*(f"e{k}" for k in served + rng.integers(0, n, n)))  # fresh ids, some repeated in-batch
        served += n
        t += 5
        pl = np.where(rng.random(n) < 0.5, "x", "y").astype(object)
        joined.append(j.add_predictions(e, t + rng.random(n), pred_label=pl, now=t))
        for eid, lab in zip(e.tolist(), pl.tolist()):
            truth.setdefault(eid, lab)
        m = int(rng.integers(1, 40))
        le = ids(*(f"e{k}" for k in rng.integers(0, served + 200, m)))  # some ids never served
        joined.append(j.add_labels(le, np.where(rng.random(m) < 0.5, "x", "y").astype(object), np.full(m, t), now=t))
    rows = Joined.concat(joined)
    s = j.stats
    assert len(rows) == s.matched > 0
    assert len(set(rows.event_id.tolist())) <= len(rows)
    for eid, pl in zip(rows.event_id.tolist(), rows.pred_label.tolist()):
        assert pl == truth[eid]  # the prediction joined is the first one served with that id
    assert s.labels == (
        s.matched + s.late_labels + s.duplicate_labels + s.unmatched_labels + s.evicted_labels + s.pending_labels
    )
    assert s.pending_predictions <= 400
    rec = join_records(s, {"model": "m"}, 5)[0]
    assert rec.measurement == PERFORMANCE and rec.fields["matched"] == s.matched


def test_prediction_conservation_exact():
    rng = np.random.default_rng(1)
    j = LabelJoin(ttl_seconds=20, max_pending=50)
    t = 0.0
    for _ in range(40):
        t += 3
        e = ids(*(f"p{k}" for k in rng.integers(0, 400, 20)))
        j.add_predictions(e, np.full(20, t), pred_label=ids(*["x"] * 20), now=t)
        le = ids(*(f"p{k}" for k in rng.integers(0, 400, 15)))
        j.add_labels(le, np.array(["x"] * 15, dtype=object), np.full(15, t), now=t)
    s = j.stats
    # every prediction kept is matched (by a later label or an earlier one), expired, evicted or pending
    kept = s.predictions - s.duplicate_predictions
    assert kept == s.matched + s.expired + s.evicted + s.pending_predictions


@pytest.mark.slow  # simulated error streams against ADWIN (~11 s)
def test_error_stream_detector_is_no_slower_than_adwin_and_no_noisier(tmp_path):
    """Abrupt error-rate rise 10 % -> 20 %: delay vs River's ADWIN / PageHinkley, alarms on no change."""
    rng = np.random.default_rng(2)
    # a reference whose error share is exactly the stream's (10 %): this test is about the
    # detector, the benchmark covers references drawn at random (ERT 1e7 there)
    ref = rng.permutation(np.r_[np.ones(500), np.zeros(4500)])
    det = ErrorStreamDetector(ref, ert=1_000_000, window_sizes=(100, 500), n_bootstraps=20_000, cache_dir=tmp_path)
    assert det.kind == "fet_online"

    def river(factory, x):
        d, out = factory(), []
        for i, v in enumerate(x):
            d.update(float(v))
            if d.drift_detected:
                out.append(i)
        return np.asarray(out, dtype=int)

    quiet = (rng.random(60_000) < 0.1).astype(float)
    ours_fa = det.update(quiet).n_drift
    adwin_fa = len(river(ADWIN, quiet))
    assert ours_fa <= adwin_fa
    delays_ours, delays_adwin = [], []
    for _ in range(6):
        det.detector.reset()
        x = np.concatenate([rng.random(1000) < 0.1, rng.random(3000) < 0.2]).astype(float)
        r = np.flatnonzero(det.update(x).drift)
        a = river(ADWIN, x)
        delays_ours.append((r[r >= 1000][0] - 1000) if (r >= 1000).any() else 3000)
        delays_adwin.append((a[a >= 1000][0] - 1000) if (a >= 1000).any() else 3000)
    assert np.mean(delays_ours) <= np.mean(delays_adwin)
    ph = river(PageHinkley, x)
    assert ph.size >= 0  # PageHinkley runs on the same stream (compared in the benchmark)


def _adwin_alarms(x: np.ndarray) -> np.ndarray:
    d, out = ADWIN(), []
    for i, v in enumerate(x.tolist()):
        d.update(v)
        if d.drift_detected:
            out.append(i)
    return np.asarray(out, dtype=int)


@pytest.mark.slow
def test_default_error_stream_finds_a_rise_by_half_no_later_than_adwin(tmp_path):
    """The defaults (``ErrorStreamSpec()``: reference 5,000, windows 100/500/2,000, ERT 1e5) on errors
    like NannyML's car loans (5.6 % -> 8.4 %, where the former defaults took 3,173 labels and ADWIN
    1,959): River's ADWIN (defaults) sees the whole stream — reference, 20,000 quiet labels, the change —
    as in ``bench real``; the reference is drawn at random, not set to the stream's share. No later on
    average; false alarms within what the ERT allows (ADWIN raises fewer than one per 1e5 here)."""
    from detectors.spec import ErrorStreamSpec

    spec = ErrorStreamSpec()
    rng = np.random.default_rng(21)
    p0, quiet_n, after_n = 0.056, 20_000, 6_000
    ref = (rng.random(spec.reference_size) < p0).astype(float)
    det = ErrorStreamDetector(
        ref, ert=spec.ert, window_sizes=tuple(spec.window_sizes), n_bootstraps=spec.n_bootstraps, cache_dir=tmp_path
    )
    fa_ours = fa_adwin = 0
    delays_ours, delays_adwin = [], []
    for _ in range(4):
        det.detector.reset()
        x = np.concatenate([rng.random(quiet_n) < p0, rng.random(after_n) < 1.5 * p0]).astype(float)
        r = np.flatnonzero(det.update(x).drift)
        a = _adwin_alarms(np.concatenate([ref, x])) - ref.size
        a = a[a >= 0]
        fa_ours += int((r < quiet_n).sum())
        fa_adwin += int((a < quiet_n).sum())
        delays_ours.append(r[r >= quiet_n][0] - quiet_n if (r >= quiet_n).any() else after_n)
        delays_adwin.append(a[a >= quiet_n][0] - quiet_n if (a >= quiet_n).any() else after_n)
    # false alarms: as many as the ERT allows (80,000 quiet labels at ERT 1e5: 0.8 expected, Poisson 99 %
    # quantile 3). ADWIN raises fewer on such streams (0 here); on bench real's labelled streams both raise 0
    from scipy.stats import poisson

    assert fa_ours <= max(fa_adwin, poisson.ppf(0.99, 4 * quiet_n / spec.ert)), (fa_ours, fa_adwin)
    assert np.mean(delays_ours) <= np.mean(delays_adwin), (delays_ours, delays_adwin)


def test_error_stream_regression_uses_cvm():
    rng = np.random.default_rng(3)
    det = ErrorStreamDetector(np.abs(rng.normal(size=500)), ert=100, window_sizes=(20,), n_bootstraps=1500)
    assert det.kind == "cvm_online"
    r = det.update(np.abs(rng.normal(0, 3, size=200)))
    assert r.first_drift is not None and r.first_drift < 40


# ----------------------------------------------------------------------------- persistence


def _labels(*vals):
    out = np.empty(len(vals), dtype=object)
    out[:] = list(vals)
    return out


def _snapshot_round_trip(j: LabelJoin, now: float) -> LabelJoin:
    fresh = LabelJoin(ttl_seconds=j.ttl, max_pending=j.max_pending)
    fresh.restore(j.snapshot(), now=now)
    return fresh


def test_a_restored_join_goes_on_like_the_uninterrupted_one():
    """Snapshot, restore, replay what Kafka delivers again, go on: same joins and counters as without the restart."""
    p_ids = ids(*(f"p{i}" for i in range(100)))
    p_lab = np.where(np.arange(100) % 3 == 0, "x", "y").astype(object)
    proba = np.column_stack([np.linspace(0, 1, 100), 1 - np.linspace(0, 1, 100)])
    value = np.arange(100) / 7

    def first_half(j):
        j.add_predictions(
            p_ids, np.arange(100.0), pred_label=p_lab, pred_proba=proba, classes=("x", "y"), pred_value=value, now=99
        )
        j.add_labels(p_ids[:30], _labels(*(["x", 1, 2.5, True, None] * 6)), np.full(30, 100.0), now=99)
        j.add_labels(ids("q0", "q1"), _labels("x", 7), np.array([100.0, 100.0]), now=99)  # early

    def second_half(j):
        out = [
            j.add_predictions(
                ids(*(f"p{i}" for i in range(100, 150)), "q0", "q1"),
                np.arange(100.0, 152.0),
                pred_label=np.array(["x"] * 52, dtype=object),
                now=151,
            ),
            j.add_labels(p_ids[30:80], _labels(*(["y"] * 50)), np.full(50, 152.0), now=151),
        ]
        return Joined.concat(out)

    a = LabelJoin(ttl_seconds=1000, max_pending=500)
    first_half(a)
    b = LabelJoin(ttl_seconds=1000, max_pending=500)
    first_half(b)
    c = _snapshot_round_trip(b, now=99)
    assert c.stats == b.stats and c.classes == ("x", "y")
    # Kafka delivers again what was not committed: predictions p50..p99 and labels p20..p29 (already joined)
    again = c.add_predictions(p_ids[50:], np.arange(50.0, 100.0), pred_label=p_lab[50:], now=99)
    again_l = c.add_labels(p_ids[20:30], _labels(*(["x"] * 10)), np.full(10, 100.0), now=99)
    assert len(again) == 0 and len(again_l) == 0
    assert c.stats.replayed_predictions == 50 and c.stats.replayed_labels == 10
    rows_a, rows_c = second_half(a), second_half(c)
    assert rows_c.event_id.tolist() == rows_a.event_id.tolist()
    assert rows_c.pred_label.tolist() == rows_a.pred_label.tolist()
    np.testing.assert_array_equal(rows_c.pred_proba, rows_a.pred_proba)
    np.testing.assert_array_equal(rows_c.pred_value, rows_a.pred_value)
    assert rows_c.label.tolist() == rows_a.label.tolist()
    want = {**a.stats.as_fields(), "replayed_predictions": 50, "replayed_labels": 10}
    assert c.stats.as_fields() == want
    kept = c.stats.predictions - c.stats.duplicate_predictions
    assert kept == c.stats.matched + c.stats.expired + c.stats.evicted + c.stats.pending_predictions


def _old_snapshot_tombs(j: LabelJoin, limit: int) -> list[tuple[str, int]]:
    """The finished ids a snapshot keeps, read from the join's own ordered dict (newest first): what
    :meth:`LabelJoin.snapshot` returned before it read them from the append-only chunks."""
    out = []
    for e, r in reversed(j._tomb.items()):
        if len(out) == limit:
            break
        out.append((e, r))
    return out


def _assert_snapshots_equal(a, b) -> None:
    for name in ("predictions", "labels"):
        ca, cb = getattr(a, name), getattr(b, name)
        assert sorted(ca) == sorted(cb)
        for k in ca:
            np.testing.assert_array_equal(ca[k], cb[k])
    assert [(e, r % 10) for e, r in a.tomb] == [(e, r % 10) for e, r in b.tomb]
    assert (a.classes, a.has, a.stats, a.label_clock) == (b.classes, b.has, b.stats, b.label_clock)


def test_a_capture_is_the_snapshot_of_its_moment_while_the_join_goes_on():
    """``capture()`` (plain copies, on the event loop) then ``snapshot()`` (later, on a thread) equals the snapshot
    taken at the capture, whatever the join does in between; its finished ids equal the join's ordered dict
    (newest first, bounded), also after evictions, expiries, duplicates and a restore."""
    rng = np.random.default_rng(11)
    j = LabelJoin(ttl_seconds=30, max_pending=60, align=True)
    seq = 0
    for step in range(40):
        n = int(rng.integers(1, 30))
        p = ids(*(f"e{seq + i}" for i in range(n)))
        t = seq + np.arange(n, dtype=float)
        j.add_predictions(
            p,
            t,
            pred_label=ids(*rng.choice(["x", "y"], n)),
            pred_proba=rng.dirichlet([1, 1], n),
            classes=("x", "y"),
            now=float(t[-1]),
        )
        lab = ids(*(f"e{int(k)}" for k in rng.integers(max(0, seq - 80), seq + n + 5, size=n)))  # some early, late, dup
        j.add_labels(lab, ids(*["x"] * n), np.full(n, float(t[-1])), now=float(t[-1]))
        seq += n
        if step == 20:  # a restore in the middle: its finished ids count like the others
            r = LabelJoin(ttl_seconds=30, max_pending=60, align=True)
            r.restore(j.snapshot(), now=float(t[-1]))
            j = r
        for limit in (5, 50, 1000):
            cap = j.capture(tomb_limit=limit)
            now = j.snapshot(tomb_limit=limit)
            assert now.tomb == _old_snapshot_tombs(j, min(limit, j.max_pending))
            j.add_predictions(ids(f"later{step}-{limit}"), np.array([float(seq)]), pred_label=ids("x"), now=float(seq))
            j.add_labels(ids(f"e{seq - 1}"), ids("y"), np.array([float(seq)]), now=float(seq))
            _assert_snapshots_equal(cap.snapshot(), now)


def test_restore_expires_what_outlived_the_ttl_and_keeps_the_bound():
    j = LabelJoin(ttl_seconds=50, max_pending=100)
    j.add_predictions(ids(*range(80)), np.arange(80.0), pred_label=ids(*["x"] * 80), now=80)
    j.add_labels(ids("late-early"), _labels("x"), np.array([10.0]), now=80)
    r = LabelJoin(ttl_seconds=50, max_pending=20)  # the bound shrank: the newest 20 are kept
    assert r.restore(j.snapshot(), now=200) == 0  # all older than 200 - 50: expired at once
    assert r.stats.expired == j.stats.expired + 20 and r.stats.unmatched_labels == 1
    r2 = LabelJoin(ttl_seconds=50, max_pending=20)
    assert r2.restore(j.snapshot(), now=80) == 20
    assert sorted(r2._preds.index) == sorted(str(i) for i in range(60, 80))
    with pytest.raises(ValueError, match="new LabelJoin"):
        r2.restore(j.snapshot())


def test_random_stream_with_restarts_conserves_everything():
    """Restarts at random points with replays of the uncommitted tail: every prediction still accounted for."""
    rng = np.random.default_rng(7)
    j = LabelJoin(ttl_seconds=40, max_pending=300)
    t, served, history = 0.0, 0, []
    for step in range(80):
        n = int(rng.integers(1, 30))
        e = ids(*(f"e{k}" for k in range(served, served + n)))
        served += n
        t += 3
        history.append((e, t))
        j.add_predictions(e, np.full(n, t), pred_label=ids(*["x"] * n), now=t)
        le = ids(*(f"e{k}" for k in rng.integers(0, served, 10)))
        j.add_labels(le, _labels(*(["x"] * 10)), np.full(10, t), now=t)
        if step % 17 == 16:  # restart: restore, then the last 3 batches of predictions come again
            j = _snapshot_round_trip(j, now=t)
            for e_old, t_old in history[-3:]:
                j.add_predictions(e_old, np.full(e_old.shape[0], t_old), pred_label=ids(*["x"] * e_old.shape[0]), now=t)
    s = j.stats
    assert s.replayed_predictions > 0 and s.predictions == served
    assert s.predictions - s.duplicate_predictions == s.matched + s.expired + s.evicted + s.pending_predictions
    assert s.labels + s.replayed_labels == 80 * 10


# ----------------------------------------------------------------------------- error-stream monitor


def _ema(raw: np.ndarray, lam: float) -> np.ndarray:
    out = np.empty_like(raw)
    prev = raw[0]
    for i, x in enumerate(raw):  # the textbook recursion, one step at a time
        prev = (1 - lam) * prev + lam * x
        out[i] = prev
    return out


def test_error_stream_monitor_reports_the_smoothed_fisher_statistic():
    """The window's statistic is the largest EMA of 1 - p(Fisher exact, one-sided) over the sliding window (scipy)."""
    from scipy import stats as st

    rng = np.random.default_rng(4)
    m = ErrorStreamMonitor("classification", reference_size=300, ert=50_000, window_sizes=(25,), n_bootstraps=200)
    ref = (rng.random(300) < 0.2).astype(float)
    m.add_errors(ref, np.arange(300.0))
    assert m.phase == "monitoring" and m.window_fields()["n_ref"] == 300
    x = (rng.random(200) < 0.2).astype(float)
    m.add_errors(x, 300 + np.arange(200.0))
    f = m.window_fields()
    w, ones = 25, ref.sum()
    raw = np.array(
        [
            1
            - st.fisher_exact(
                [[x[i : i + w].sum(), w - x[i : i + w].sum()], [ones, 300 - ones]], alternative="greater"
            ).pvalue
            for i in range(200 - w + 1)
        ]
    )
    assert f["drift"] == 0 and f["n"] == 200 and f["error_rate"] == pytest.approx(x.mean())
    assert f["statistic"] == pytest.approx(_ema(raw, 0.99).max(), abs=1e-9)
    assert f["reference_error_rate"] == pytest.approx(ref.mean())


def test_error_stream_monitor_regression_threshold_is_the_reference_quantile():
    rng = np.random.default_rng(5)
    m = ErrorStreamMonitor(
        "regression", reference_size=400, ert=2000, window_sizes=(20,), n_bootstraps=400, error_quantile=0.8
    )
    ref = np.abs(rng.normal(size=400))
    m.add_errors(ref, np.arange(400.0))
    assert m.threshold == pytest.approx(np.quantile(ref, 0.8))
    np.testing.assert_array_equal(m.reference, (ref > np.quantile(ref, 0.8)).astype(float))
    m.add_errors(np.abs(rng.normal(0, 4, size=100)), 400 + np.arange(100.0))  # errors four times larger
    f = m.window_fields()
    assert f["drift"] == 1 and 400 <= f["first_detection_time"] < 440 and f["error_threshold"] == m.threshold
    fixed = ErrorStreamMonitor(
        "regression", reference_size=50, error_threshold=1.5, ert=1000, window_sizes=(10,), n_bootstraps=400
    )
    fixed.add_errors(np.r_[np.full(45, 0.5), np.full(5, 2.0)], np.arange(50.0))
    assert fixed.threshold == 1.5 and fixed.reference.sum() == 5


def test_error_stream_monitor_waits_for_a_reference_with_both_kinds():
    m = ErrorStreamMonitor("classification", reference_size=100, ert=1000, window_sizes=(10,), n_bootstraps=400)
    m.add_errors(np.zeros(150), np.arange(150.0))  # a perfect model so far: no rate to test a rise against
    assert m.phase == "reference" and "one kind" in m.window_fields()["note"]
    m.add_errors(np.r_[np.ones(3), np.zeros(10)], 150 + np.arange(13.0))
    assert m.phase == "monitoring" and m.reference.size == 163 and m.reference.sum() == 3
    never = ErrorStreamMonitor("classification", reference_size=50, ert=1000, window_sizes=(10,), n_bootstraps=400)
    never.add_errors(np.zeros(600), np.arange(600.0))
    assert never.phase == "off" and "all right" in never.window_fields()["note"]


def test_error_stream_monitor_buffers_while_calibrating_and_resumes_after_a_restart(tmp_path):
    """Background calibration: errors wait, then are tested with their own times; state() / restore() go on."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    gate = threading.Event()
    pool = ThreadPoolExecutor(1)

    def submit(fn):
        return pool.submit(lambda: (gate.wait(30), fn())[1])

    kw = dict(reference_size=200, ert=5000, window_sizes=(20,), n_bootstraps=400, cache_dir=tmp_path)
    rng = np.random.default_rng(6)
    m = ErrorStreamMonitor("classification", submit=submit, **kw)
    m.add_errors((rng.random(200) < 0.1).astype(float), np.arange(200.0))
    m.add_errors(np.ones(30), 1000 + np.arange(30.0), 500 + np.arange(30.0))  # all wrong: a clear rise
    f = m.window_fields()
    assert f["phase"] == "calibrating" and "drift" not in f and f["n"] == 0
    gate.set()
    pool.shutdown(wait=True)
    m.add_errors(np.zeros(5), 1030 + np.arange(5.0))
    f = m.window_fields()
    assert f["phase"] == "monitoring" and f["n"] == 35 and f["n_buffered"] == 30
    assert f["drift"] == 1 and 1000 <= f["first_detection_time"] < 1030
    assert f["first_detection_event_time"] == f["first_detection_time"] - 500
    # restart: the same reference and run, thresholds from the cache
    state = m.state()
    back = ErrorStreamMonitor("classification", **kw)
    back.restore(state)
    assert back.detector.from_cache and back.detector.t == m.detector.t
    np.testing.assert_array_equal(back.reference, m.reference)
    x = (rng.random(300) < 0.1).astype(float)
    a, b = m.detector.update(x), back.detector.update(x)
    np.testing.assert_allclose(a.stats, b.stats, equal_nan=True)
    mid = ErrorStreamMonitor("classification", **kw)  # still collecting its reference when saved
    mid.add_errors(np.r_[np.ones(10), np.zeros(60)], np.arange(70.0))
    again = ErrorStreamMonitor("classification", **kw)
    again.restore(mid.state())
    again.add_errors(np.zeros(130), 70 + np.arange(130.0))
    assert again.phase == "monitoring" and again.reference.sum() == 10


def _stream(n=3000, delay=200, seed=3):
    """Predictions (event time = index) and their labels ``delay`` events later, 10 % of labels missing."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"e{i}" for i in range(n)], dtype=object)
    t = np.arange(n, dtype=float)
    pred = rng.choice(np.array(["a", "b"], dtype=object), n)
    have = rng.random(n) > 0.1
    lab_ids, lab_t = ids[have], t[have] + delay
    return ids, t, pred, lab_ids, lab_t


def _run(order, align, ttl=500.0):
    ids, t, pred, lab_ids, lab_t = _stream()
    j = LabelJoin(ttl_seconds=ttl, align=align)
    matched = []
    now = -np.inf

    def preds(a, b):
        nonlocal now
        now = max(now, t[b - 1])
        matched.extend(j.add_predictions(ids[a:b], t[a:b], pred_label=pred[a:b], now=now).event_id.tolist())

    def labels(a, b):
        matched.extend(
            j.add_labels(
                lab_ids[a:b], np.full(b - a, "a", dtype=object), lab_t[a:b], now=now if np.isfinite(now) else None
            ).event_id.tolist()
        )

    step = 100
    if order == "live":  # labels follow their predictions closely
        li = 0
        for a in range(0, len(ids), step):
            preds(a, a + step)
            while li < len(lab_ids) and lab_t[li] <= t[a + step - 1]:
                labels(li, li + 1)
                li += 1
        labels(li, len(lab_ids))
    else:  # a backlog: every prediction read before the first label
        for a in range(0, len(ids), step):
            preds(a, a + step)
        labels(0, len(lab_ids))
    j.expire(now + 10 * ttl)
    return sorted(matched), j.stats


def test_aligned_join_gives_a_backlog_the_same_matches_as_live_traffic():
    """With event-time alignment, predictions read far ahead of their labels wait for them (the label
    stream's clock decides their expiry): a backlog matches exactly what live traffic matches."""
    live, s_live = _run("live", align=True)
    backlog, s_backlog = _run("backlog", align=True)
    n_labels = len(_stream()[3])
    assert len(live) == n_labels and backlog == live
    assert s_backlog.matched == s_live.matched == n_labels
    # the unlabelled predictions: expired once the labels moved a TTL past them, or still waiting (the last ones)
    assert (s_backlog.expired, s_backlog.pending_predictions) == (s_live.expired, s_live.pending_predictions)
    assert s_live.expired + s_live.pending_predictions == 3000 - n_labels and s_live.expired > 0
    # without alignment the backlog loses the labels of every prediction more than a TTL behind the last one
    old, s_old = _run("backlog", align=False)
    assert len(old) < n_labels // 5 and s_old.late_labels == n_labels - len(old)


def test_a_restored_run_survives_a_second_save_while_the_thresholds_are_recalibrated():
    """A monitor restored where its thresholds are not cached (another host) calibrates them on a thread;
    saved again meanwhile, it keeps the run it was restored with (else the next restore starts a new run:
    ``t`` restarts and the statistics differ from an uninterrupted monitor's)."""
    from concurrent.futures import Future

    kw = dict(reference_size=100, ert=1000, window_sizes=(10,), n_bootstraps=400)
    rng = np.random.default_rng(4)
    m = ErrorStreamMonitor("classification", **kw)
    m.add_errors((rng.random(100) < 0.1).astype(float), np.arange(100.0))
    m.add_errors((rng.random(60) < 0.1).astype(float), np.arange(100.0, 160.0))
    saved = m.state()
    assert any(k.startswith("run_") for k in saved) and m.detector.t == 60

    pending: list = []

    def submit(fn):  # the calibration thread has not finished yet
        fut: Future = Future()
        pending.append((fut, fn))
        return fut

    moved = ErrorStreamMonitor("classification", submit=submit, **kw)
    moved.restore(saved)
    assert moved.detector is None  # still calibrating
    again = moved.state()
    for k, v in saved.items():
        if k.startswith("run_"):
            np.testing.assert_array_equal(again[k], v)
    last = ErrorStreamMonitor("classification", **kw)
    last.restore(again)
    assert last.detector.t == 60


def test_the_current_window_of_a_restored_monitor_reports_what_it_saw_before_the_save():
    """Errors that waited for the calibration ran when the monitor was saved (state() polls it): the window
    they belong to still reports them (n, error rate, statistic) after a restore, as without the restart."""
    kw = dict(reference_size=100, ert=1000, window_sizes=(10,), n_bootstraps=400)
    rng = np.random.default_rng(5)
    jobs: list = []

    def submit(fn):
        from concurrent.futures import Future

        fut = Future()
        jobs.append((fut, fn))
        return fut

    m = ErrorStreamMonitor("classification", submit=submit, **kw)
    m.add_errors((rng.random(100) < 0.1).astype(float), np.arange(100.0))  # the reference: calibration starts
    m.add_errors((rng.random(80) < 0.5).astype(float), np.arange(100.0, 180.0))  # wait in the buffer
    fut, fn = jobs.pop()
    fut.set_result(fn())  # the calibration is done: the next poll (here, in state()) runs the buffer
    saved = m.state()
    want = m.window_fields()
    back = ErrorStreamMonitor("classification", **kw)
    back.restore(saved)
    got = back.window_fields()
    assert got["n"] == want["n"] == 80 and got["n_buffered"] == want["n_buffered"] == 80
    for k in ("error_rate", "statistic", "drift", "n_detections", "t"):
        assert got.get(k) == want.get(k), k
