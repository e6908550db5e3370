"""streams.labels: the label join persisted across restarts, and concept drift on the error stream.

In-process (the pipeline with a fake sink, a real SQLite file under tmp_path); the real
worker restarts (SIGTERM, SIGKILL) are in tests/integration/test_restarts.py.
"""

from __future__ import annotations

import asyncio
import sqlite3

import numpy as np
import orjson
import pytest

from detectors import records as R
from detectors.concept import ErrorStreamMonitor, LabelJoin
from detectors.performance import PerformanceAccumulator
from streams.alerts.rules import AlertRule, evaluate
from streams.deadletter import DeadLetterPublisher
from streams.decode import RawMessage
from streams.labels import LabelHook, LabelStore, decode_state, encode_state, labels_path
from streams.monitors import parse_monitors
from streams.pipeline import Pipeline
from streams.settings import Settings
from tests.streams.test_pipeline import T0, FakeSink, batch_msg, dl_sender


def cfg(labels: dict | None = None, task: str = "classification"):
    return parse_monitors({"models": [{
        "model_id": "m", "task": task,
        "features": [{"name": "x", "kind": "numeric"}, {"name": "c", "kind": "categorical"}],
        "window": {"size_events": 20}, "reference": {"first_n": 10},
        "labels": {"ttl_seconds": 3600, **(labels or {})},
    }]})


def label_msg(ids, labels, offset=0, t=T0 + 50.0) -> RawMessage:
    return RawMessage(orjson.dumps({"type": "label_batch", "model_id": "m", "event_id": list(ids),
                                    "label": list(labels), "label_time": [t] * len(ids)}), b"m", "labels", 0,
                      offset, None)


def pipeline(hook) -> tuple[Pipeline, FakeSink]:
    sink = FakeSink()
    return Pipeline(Settings(), hook_cfg(hook), sink=sink, deadletters=DeadLetterPublisher(dl_sender([])),
                    evaluator=None, label_hook=hook), sink


def hook_cfg(hook):
    return parse_monitors({"models": [m.model_dump(exclude_unset=True) for m in hook.models.values()]})


def perf(sink, metric, detector="realized"):
    return [r for r in sink.records if r.measurement == R.PERFORMANCE and r.tags[R.T_METRIC] == metric
            and r.tags[R.T_DETECTOR] == detector]


def test_state_round_trips_through_bytes():
    """Pending predictions (label, probabilities, value), early labels of any JSON type, finished ids,
    counters, the unreported accumulator and the error-stream detector all come back."""
    j = LabelJoin(ttl_seconds=100)
    ids = np.array([f"e{i}" for i in range(6)], dtype=object)
    j.add_predictions(ids, np.arange(6.0), pred_label=np.array(["a", "b", None, "a", "b", "a"], dtype=object),
                      pred_proba=np.random.default_rng(0).dirichlet([1, 1], 6), classes=("a", "b"),
                      pred_value=np.array([0.1, np.nan, 0.3, 0.4, 0.5, 0.6]), now=6)
    lab = np.empty(4, dtype=object)
    lab[:] = ["a", 3, 2.5, True]
    j.add_labels(np.array(["e0", "z1", "z2", "z3"], dtype=object), lab, np.full(4, 7.0), now=6)
    acc = PerformanceAccumulator("classification")
    acc.add(np.array(["a", "b"], dtype=object), np.array(["a", "a"], dtype=object), delays=np.array([1.0, 2.0]))
    mon = ErrorStreamMonitor("classification", reference_size=50, ert=500, window_sizes=(10,), n_bootstraps=400)
    mon.add_errors(np.r_[np.ones(5), np.zeros(45)], np.arange(50.0))
    back = decode_state(encode_state(j.snapshot(), acc, mon.state(), 6.0))
    assert back["clock"] == 6.0
    r = LabelJoin(ttl_seconds=100)
    r.restore(back["snapshot"], now=back["clock"])
    assert r.stats == j.stats and r.classes == j.classes
    assert sorted(r._preds.index) == sorted(j._preds.index)
    assert r._labels.cols["label"][r._labels.lookup(["z1", "z2", "z3"])].tolist() == [3, 2.5, True]
    rows = r.add_labels(np.array(["e1", "e2"], dtype=object), np.array(["b", "a"], dtype=object), np.full(2, 8.0))
    want = j.add_labels(np.array(["e1", "e2"], dtype=object), np.array(["b", "a"], dtype=object), np.full(2, 8.0))
    np.testing.assert_array_equal(rows.pred_proba, want.pred_proba)
    np.testing.assert_array_equal(rows.pred_value, want.pred_value)
    assert rows.pred_label.tolist() == want.pred_label.tolist() == ["b", None]
    assert back["acc"].metrics() == acc.metrics() and back["acc"].delay_quantiles() == acc.delay_quantiles()
    m2 = ErrorStreamMonitor("classification", reference_size=50, ert=500, window_sizes=(10,), n_bootstraps=400)
    m2.restore(back["monitor"])
    np.testing.assert_array_equal(m2.reference, mon.reference)


def test_waiting_predictions_survive_a_restart(tmp_path):
    """Worker 1 holds predictions and saves them; worker 2 restores them, matches the labels that come
    after the restart, and counts the predictions Kafka delivers again as replays, not twice."""
    from sklearn.metrics import accuracy_score

    state = tmp_path / "state"
    h1 = LabelHook(cfg(), state_dir=state, background=False)
    p1, _ = pipeline(h1)
    preds = batch_msg("m", 0, 30, 0)  # 10 build the reference, 20 close a window; all 30 wait for labels

    async def first():
        await p1.process([preds])
        await p1.drain()
        await h1.close()  # what the worker does on SIGTERM

    asyncio.run(first())
    assert LabelStore(labels_path(state)).models()["m"][1] == 30
    h2 = LabelHook(cfg(), state_dir=state, background=False)
    p2, sink = pipeline(h2)
    truth = ["p" if i % 5 else "q" for i in range(30)]

    async def second():
        await p2.process([preds])  # read again: its offsets were not committed (a window was still open)
        await p2.process([label_msg([f"m-{i}" for i in range(30)], truth)])
        await p2.process([batch_msg("m", 30, 20, 1)])  # closes a window: the joined rows are reported on it
        await p2.drain()

    asyncio.run(second())
    assert h2.restored == {"m": 30}
    acc = perf(sink, "accuracy")
    assert sum(r.fields["n"] for r in acc) == 30
    assert acc[-1].fields["value"] == pytest.approx(accuracy_score(truth, ["p"] * 30))
    join = perf(sink, "label_join", "join")[-1].fields  # written as the window closed, before its batch joined
    assert join["matched"] == 30 and join["predictions"] == 30 and join["replayed_predictions"] == 30
    assert join["duplicate_predictions"] == 0 and join["pending_predictions"] == 0
    s = h2._joins["m"].stats
    assert s.predictions == 50 and s.pending_predictions == 20 and s.duplicate_predictions == 0


def test_a_crash_loses_at_most_what_changed_since_the_last_snapshot(tmp_path):
    state = tmp_path / "state"
    clock = [0.0]
    h1 = LabelHook(cfg(), state_dir=state, background=False, snapshot_every=5.0, clock=lambda: clock[0])
    p1, _ = pipeline(h1)

    async def run():
        await p1.process([batch_msg("m", 0, 30, 0)])
        clock[0] = 6.0
        assert await h1.snapshot_if_due() > 0  # due: written
        await p1.process([batch_msg("m", 30, 5, 1)])
        clock[0] = 8.0
        assert await h1.snapshot_if_due() == 0  # not due yet: these 5 exist only in memory

    asyncio.run(run())
    # SIGKILL now (no close): a new worker restores the 30 of the last snapshot, not the 5 after it
    h2 = LabelHook(cfg(), state_dir=state, background=False)
    h2._ensure("m")
    assert h2.restored == {"m": 30}


def test_snapshots_are_written_only_when_due_and_changed(tmp_path):
    state = tmp_path / "state"
    clock = [0.0]
    h = LabelHook(cfg(), state_dir=state, background=False, snapshot_every=5.0, clock=lambda: clock[0])
    p, _ = pipeline(h)

    async def run():
        await p.process([batch_msg("m", 0, 30, 0)])
        clock[0] = 4.0
        assert await h.snapshot_if_due() == 0  # changed, not due
        clock[0] = 5.0
        assert await h.snapshot_if_due() > 0
        clock[0] = 11.0
        assert await h.snapshot_if_due() == 0  # due, unchanged
        await p.process([batch_msg("m", 30, 5, 1)])
        assert await h.snapshot_if_due() > 0
        await h.close()

    asyncio.run(run())
    assert LabelStore(labels_path(state)).models()["m"][1] == 35
    with sqlite3.connect(labels_path(state)) as db:  # the file is plain SQLite: one row per model
        assert db.execute("SELECT count(*) FROM label_state").fetchone() == (1,)


def test_an_unusable_snapshot_is_reported_and_the_join_starts_empty(tmp_path, caplog):
    state = tmp_path / "state"
    LabelStore(labels_path(state)).save([("m", 0.0, 3, b"not a snapshot")])
    h = LabelHook(cfg(), state_dir=state, background=False)
    p, sink = pipeline(h)
    asyncio.run(p.process([batch_msg("m", 0, 30, 0)]))
    assert "unusable" in caplog.text and h.restored == {}
    assert h._joins["m"].stats.pending_predictions == 30


def test_the_error_stream_detector_reports_each_window_and_feeds_alert_rules(tmp_path):
    """labels.online: reference = the first 100 joined labels' errors (10 % wrong); then the model is
    wrong on every event: a fet_online point with drift=1, which a rule on performance.drift fires on."""
    online = {"reference_size": 100, "ert": 500, "window_sizes": [20], "n_bootstraps": 400}
    h = LabelHook(cfg({"online": online}), state_dir=tmp_path / "state", background=False)
    p, sink = pipeline(h)
    ref_ids = [f"m-{i}" for i in range(10, 110)]

    async def run():
        await p.process([batch_msg("m", 0, 140, 0)])  # predicted label "p" everywhere
        await p.process([label_msg(ref_ids, ["q" if i % 10 == 0 else "p" for i in range(100)], 1)])
        await p.process([batch_msg("m", 140, 20, 2)])
        await p.process([label_msg([f"m-{i}" for i in range(110, 140)], ["q"] * 30, 3, t=T0 + 60)])
        await p.process([batch_msg("m", 160, 20, 3)])
        await p.drain()

    asyncio.run(run())
    pts = perf(sink, "error_stream", "fet_online")
    assert [r.fields["phase"] for r in pts][-2:] == ["monitoring", "monitoring"]
    last = pts[-1].fields
    assert last["drift"] == 1 and last["n"] == 30 and last["error_rate"] == 1.0
    assert last["reference_error_rate"] == pytest.approx(0.1) and last["n_ref"] == 100
    assert T0 + 60 == last["first_detection_time"] and last["statistic"] > last["threshold"]
    rule = AlertRule(name="concept", signal="performance.drift", where={"detector": "fet_online"}, op="==",
                     threshold=1)
    obs = evaluate([rule], [pts[-1]], "m", pts[-1].tags[R.T_VERSION])
    assert len(obs) == 1 and obs[0].breached
    h2 = LabelHook(cfg({"online": online}), state_dir=tmp_path / "state", background=False)
    asyncio.run(h.close())
    h2._ensure("m")  # restored with its reference and run; thresholds from the cache of the state dir
    mon = h2._mon["m"]
    assert mon.phase == "monitoring" and mon.detector.from_cache and mon.reference.sum() == 10
    off = LabelHook(cfg({"online": {**online, "enabled": False}}), background=False)
    p3, sink3 = pipeline(off)
    asyncio.run(p3.process([batch_msg("m", 0, 40, 0), label_msg(ref_ids[:5], ["p"] * 5, 1)]))
    assert not perf(sink3, "error_stream", "fet_online") and off.store is None


def test_regression_errors_are_cut_at_the_reference_quantile(tmp_path):
    h = LabelHook(cfg({"online": {"reference_size": 60, "ert": 500, "window_sizes": [10], "n_bootstraps": 400,
                                  "error_quantile": 0.75}}, task="regression"), background=False)
    rng = np.random.default_rng(1)
    f = h.models["m"]
    assert f.labels.online.error_quantile == 0.75
    from detectors.concept import Joined

    truth = rng.normal(size=60)
    rows = Joined(np.array([f"e{i}" for i in range(60)], dtype=object), np.zeros(60), np.ones(60),
                  truth.astype(object), None, None, np.zeros(60))
    h._add("m", rows)
    mon = h._mon["m"]
    assert mon.threshold == pytest.approx(np.quantile(np.abs(truth), 0.75))
    assert mon.reference.sum() == int((np.abs(truth) > mon.threshold).sum())
