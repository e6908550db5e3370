"""streams.worker.pipeline: commit bookkeeping, accounting, restart determinism — with in-memory stand-ins.

The sink, the dead-letter producer, the checkpoint store and the detectors are
replaced by small fakes (this is a unit test of the engine's logic); the real
ones are exercised by tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import asyncio
import logging
import math

import numpy as np
import orjson
import pytest

from detectors.records import DRIFT, WINDOW, Record
from detectors.reference import rolling_history
from streams.settings import Settings
from streams.worker.checkpoints import checkpoint_from_row
from streams.worker.commits import AckTracker
from streams.worker.deadletter import DeadLetterPublisher
from streams.worker.decode import RawMessage, StreamKey
from streams.worker.monitors import parse_monitors
from streams.worker.pipeline import Pipeline

T0 = 1_764_000_000.0


def config(window: dict, reference: dict | None = None, labels: dict | None = None):
    extra = {"labels": labels} if labels is not None else {}
    return parse_monitors(
        {
            "models": [
                {
                    "model_id": "m",
                    "features": [{"name": "x", "kind": "numeric"}, {"name": "c", "kind": "categorical"}],
                    "window": window,
                    "reference": reference or {"rolling": True},
                    **extra,
                },
                {
                    "model_id": "k",
                    "features": [{"name": "x", "kind": "numeric"}],
                    "window": window,
                    "reference": reference or {"rolling": True},
                },
            ]
        }
    )


def batch_msg(model, start, n, offset, partition=0, t_jitter=None, bad_row=None) -> RawMessage:
    times = T0 + np.arange(start, start + n) * 0.1
    if t_jitter is not None:
        times = times + t_jitter
    doc = {
        "type": "inference_batch",
        "model_id": model,
        "event_id": [f"{model}-{start + i}" for i in range(n)],
        "event_time": times.tolist(),
        "features": {"x": [float(start + i) for i in range(n)], "c": ["a", "b"] * (n // 2) + ["a"] * (n % 2)},
        "prediction": {"label": ["p"] * n},
    }
    if bad_row is not None:
        doc["event_id"][bad_row] = ""
    return RawMessage(orjson.dumps(doc), model.encode(), "t", partition, offset, int((T0 + 1e5) * 1000))


class FakeSink:
    """Keeps records; confirms writes at once unless ``hold`` is set."""

    def __init__(self):
        self.records: list[Record] = []
        self.hold = False
        self.waiting: list[tuple[asyncio.Future, list[Record]]] = []

    async def submit(self, records):
        fut = asyncio.get_running_loop().create_future()
        records = list(records)
        if self.hold:
            self.waiting.append((fut, records))
        else:
            self.records.extend(records)
            fut.set_result(len(records))
        return fut

    def confirm_all(self):
        for fut, records in self.waiting:
            self.records.extend(records)
            fut.set_result(len(records))
        self.waiting.clear()

    def windows(self):
        return [r for r in self.records if r.measurement == WINDOW]


class FakeCheckpoints:
    def __init__(self, sink: FakeSink):
        self.sink = sink

    async def latest(self, key: StreamKey):
        rows = [
            r
            for r in self.sink.windows()
            if r.tags["model"] == key.model_id
            and r.tags["version"] == key.model_version
            and r.fields["ckpt_partition"] == key.partition
        ]
        if not rows:
            return None
        r = max(rows, key=lambda r: r.time_ns)
        return self._ck(r)

    async def since(self, key: StreamKey, after_ns: int, limit: int = 1000):
        rows = {
            r.time_ns: r
            for r in self.sink.windows()
            if r.tags["model"] == key.model_id
            and r.tags["version"] == key.model_version
            and r.fields["ckpt_partition"] == key.partition
            and r.time_ns > after_ns
        }
        return [self._ck(rows[t]) for t in sorted(rows)[-limit:]]

    @staticmethod
    def _ck(r):
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.fields.items()}
        return checkpoint_from_row({**row, "time": r.time_ns})


def dl_sender(sent: list):
    async def send(key, value, headers):
        sent.append((key, value, dict(headers)))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    return send


def evaluator(model, key, window, reference):
    """Stand-in for detectors.runner: one record telling what it saw."""
    return [
        Record(
            DRIFT,
            {"model": key.model_id, "version": key.model_version, "feature": "x"},
            {
                "n": window.n,
                "has_ref": reference is not None,
                "ref_rows": 0 if reference is None else reference.n_rows,
                "history": len(rolling_history(reference) or ()),
            },
            0,
        )
    ]


def make(cfg, sink=None, committed=None, acked=None, sent=None):
    sink = sink or FakeSink()
    acked = acked if acked is not None else []
    sent = sent if sent is not None else []
    p = Pipeline(
        Settings(),
        cfg,
        sink=sink,
        deadletters=DeadLetterPublisher(dl_sender(sent)),
        ack=acked.append,
        checkpoints=FakeCheckpoints(sink),
        committed=committed or (lambda t, p: None),
        evaluator=evaluator,
    )
    return p, sink, acked, sent


def window_summary(records):
    return sorted(
        (r.tags["model"], r.time_ns, r.fields["n_events"], r.fields["seq"], r.fields["ckpt_end_offset"])
        for r in records
        if r.measurement == WINDOW
    )


def test_ack_tracker_acks_in_order_only():
    acked = []
    t = AckTracker(acked.append)
    for o in range(5):
        t.register(o, o, None)
    t.hold([0, 3])
    t.release(range(5))
    assert acked == []
    t.release([0])
    assert acked == [0, 1, 2]
    t.active = False
    t.release([3])
    assert acked == [0, 1, 2] and len(t) == 0


def test_messages_are_acked_only_after_their_window_is_written():
    cfg = config({"size_events": 25}, {"first_n": 10})
    p, sink, acked, _ = make(cfg)
    sink.hold = True
    msgs = [batch_msg("m", i * 10, 10, i) for i in range(6)]  # 60 events: 2 windows + 10 open

    async def main():
        await p.process(msgs)
        await p.drain()  # evaluations done, units submitted
        assert acked == []  # windows not written yet
        sink.confirm_all()
        await asyncio.sleep(0)
        return list(acked)

    acked_after = asyncio.run(main())
    # windows 0..24 and 25..49 written: messages 0..3 fully done; message 4 (40..49) done too;
    # message 5 (50..59) is in the open window
    assert [m.offset for m in acked_after] == [0, 1, 2, 3, 4]
    assert [r.fields["n_events"] for r in sink.windows()] == [25, 25]


def test_the_rest_of_a_batch_is_not_processed_once_its_partition_is_revoked():
    """A rebalance revokes a partition while a batch is cut into chunks: the chunks not yet processed skip
    its messages (its next owner reads them again); other partitions go on, and later batches too."""
    cfg = config({"size_events": 25}, {"first_n": 10})
    p, _sink, _acked, _ = make(cfg)
    p.chunk_bytes = 1  # one chunk per message
    batch = [
        batch_msg("m", 0, 10, 0, partition=0),
        batch_msg("m", 10, 10, 1, partition=0),
        batch_msg("k", 0, 10, 0, partition=1),
    ]

    async def main():
        async with p.lock:  # the rebalance comes before the first chunk got the lock
            task = asyncio.ensure_future(p.process(batch))
            await asyncio.sleep(0)
            p.revoke([("t", 0)])
        await task
        assert p.stats.messages == 1  # only partition 1's message
        await p.process([batch_msg("m", 0, 10, 0, partition=0)])  # a batch after the new assignment
        assert p.stats.messages == 2

    asyncio.run(main())


def test_a_rebalance_that_begins_during_a_chunk_leaves_the_batch_to_the_next_owner():
    """Faust forgets a revoked partition's committed offset before the worker's handler runs: the committed
    callback says so (PartitionRevoked) instead of "no committed offset", and the batch is dropped unacked
    instead of starting the partition's windows from scratch at the wrong offset."""
    from streams.worker.pipeline import PartitionRevoked

    def committed(t, part):
        raise PartitionRevoked(f"{t}[{part}] is being revoked")

    cfg = config({"size_events": 25}, {"first_n": 10})
    p, sink, acked, _ = make(cfg, committed=committed)
    p.chunk_bytes = 1
    asyncio.run(p.process([batch_msg("m", 0, 30, 0), batch_msg("m", 30, 30, 1)]))
    assert acked == [] and not sink.windows() and p.stats.messages == 1  # the second chunk was not processed


def test_rolling_reference_keeps_the_previous_window_unacked():
    cfg = config({"size_events": 25})  # rolling
    p, sink, acked, _ = make(cfg)
    msgs = [batch_msg("m", i * 10, 10, i) for i in range(6)]

    async def main():
        await p.process(msgs)
        await p.drain()

    asyncio.run(main())
    # window 2 (rows 25..49, messages 2..4) is the reference of window 3: not acked yet
    assert [m.offset for m in acked] == [0, 1]
    drift = [r for r in sink.records if r.measurement == DRIFT]
    assert [r.fields["ref_rows"] for r in drift] == [0, 25]


def test_rolling_reference_carries_its_last_windows_as_history():
    # rolling_history: 2 -> the previous window and the 2 before it; the band of successive windows needs them
    cfg = config({"size_events": 10}, {"rolling": True, "rolling_history": 2})
    p, sink, _, _ = make(cfg)

    async def main():
        await p.process([batch_msg("m", i * 10, 10, i) for i in range(6)])
        await p.drain()

    asyncio.run(main())
    drift = [r for r in sink.records if r.measurement == DRIFT]
    assert [r.fields["ref_rows"] for r in drift] == [0, 10, 10, 10, 10, 10]
    assert [r.fields["history"] for r in drift] == [0, 0, 2, 3, 3, 3]


def test_rolling_history_keeps_at_most_its_row_limit_per_window():
    from detectors.frame import Frame
    from streams.worker.pipeline import thin_rows

    frame = Frame.from_columns(
        event_id=np.arange(10).astype(str),
        event_time=np.arange(10, dtype=float),
        numeric={"x": np.arange(10, dtype=float)},
        categorical={},
    )
    thin = thin_rows(frame, 4)
    assert thin.event_id.tolist() == ["0", "3", "6", "9"] and thin.numeric["x"].tolist() == [0.0, 3.0, 6.0, 9.0]
    assert thin_rows(frame, 10) is frame


def test_everything_is_accounted_for():
    cfg = config({"size_events": 20}, {"first_n": 30})
    p, sink, acked, sent = make(cfg)
    msgs = []
    for i in range(30):
        model = "m" if i % 3 else "k"
        msgs.append(batch_msg(model, i * 7, 7, i, bad_row=3 if i % 5 == 0 else None))
    msgs.append(RawMessage(b"{broken", b"m", "t", 0, 30, None))
    msgs.append(
        RawMessage(
            orjson.dumps({"type": "inference_batch", "model_id": "zz", "event_id": ["a", "b"]}), b"zz", "t", 0, 31, None
        )
    )

    async def main():
        await p.process(msgs[:17])
        await p.process(msgs[17:])
        await p.tick(now=p.clock() + 3600)  # idle: close partial windows
        await p.drain()

    asyncio.run(main())
    produced = sum(7 for _ in range(30)) + 1 + 2
    in_windows = sum(r.fields["n_events"] for r in sink.windows())
    dead = sum(int(h["dw-events"]) for _k, _v, h in sent)
    assert in_windows + dead == produced
    assert {h["dw-reason"].decode() for _k, _v, h in sent} == {"schema", "invalid_json", "unknown_model"}
    assert sorted(m.offset for m in acked) == list(range(32))  # everything written -> everything acked
    assert [m.offset for m in acked] == sorted(m.offset for m in acked)
    # first_n: windows overlapping the first 30 events of each model get no drift test
    drift = [r for r in sink.records if r.measurement == DRIFT]
    wins = sink.windows()
    assert any(not r.fields["has_ref"] for r in drift) and any(r.fields["has_ref"] for r in drift)
    for w in wins:
        if w.fields["drift_evaluated"]:
            assert w.fields["reference"] == "first_n"


def test_late_rows_are_dead_lettered_with_their_row_index():
    cfg = config({"size_seconds": 1.0, "grace_seconds": 0.0})
    p, _sink, _acked, sent = make(cfg)
    jitter = np.zeros(10)
    jitter[7] = -5.0  # row 7 of the second message is 5 s too old
    msgs = [batch_msg("m", 0, 30, 0), batch_msg("m", 30, 10, 1, t_jitter=jitter)]

    async def main():
        await p.process(msgs)
        await p.drain()

    asyncio.run(main())
    (late,) = [h for _k, _v, h in sent if h["dw-reason"] == b"late"]
    assert late["dw-rows"] == b"7" and late["dw-events"] == b"1" and late["dw-source-offset"] == b"1"


@pytest.mark.parametrize("kind", ["count", "time"])
@pytest.mark.parametrize("crash_after", [4, 11, 23])
def test_restart_from_committed_offset_rewrites_the_same_windows(kind, crash_after):
    """Run A crashes after ``crash_after`` messages; B restarts from A's committed offset and
    A's checkpoints: the union of points equals a run without crash, and B rewrites nothing new."""
    window = {"size_events": 40} if kind == "count" else {"size_seconds": 3.0, "grace_seconds": 1.0}
    cfg = config(window)
    rng = np.random.default_rng(crash_after)
    msgs = []
    for i in range(40):
        model = "m" if i % 4 else "k"
        jitter = rng.uniform(-1.5, 1.5, 9)
        msgs.append(batch_msg(model, i * 9, 9, i, t_jitter=jitter))

    def run_all(messages, pipeline):
        async def main():
            for i in range(0, len(messages), 3):
                await pipeline.process(messages[i : i + 3])
            await pipeline.drain()

        asyncio.run(main())

    full, full_sink, _, _ = make(cfg)
    run_all(msgs, full)

    shared = FakeSink()
    a, _, acked_a, _ = make(cfg, sink=shared)
    run_all(msgs[: crash_after + 1], a)
    committed = 0
    for m in acked_a:  # acks are a contiguous prefix
        assert m.offset == committed
        committed += 1
    b, _, _, _ = make(cfg, sink=shared, committed=lambda t, part: committed or None)
    run_all(msgs[committed:], b)
    got = window_summary(shared.records)
    want = window_summary(full_sink.records)
    assert sorted(set(got)) == want  # same windows; duplicates are exact rewrites

    # the rolling reference after the restart is the same as without the crash
    def drift(records):
        return sorted({(r.tags["model"], r.time_ns, r.fields["ref_rows"]) for r in records if r.measurement == DRIFT})

    drift_full, drift_got = drift(full_sink.records), drift(shared.records)
    assert len(drift_full) == len([r for r in full_sink.records if r.measurement == DRIFT])
    assert drift_got == drift_full


def test_unkeyed_messages_warn_once(caplog):
    cfg = config({"size_events": 10})
    p, _, _, _ = make(cfg)
    msgs = [RawMessage(batch_msg("m", 0, 5, i).value, b"other", "t", 0, i, None) for i in range(3)]
    asyncio.run(p.process(msgs))
    assert caplog.text.count("not keyed by the model id") == 1


def test_labels_join_into_realized_performance():
    from sklearn.metrics import accuracy_score

    from streams.worker.labels import LabelHook

    cfg = config({"size_events": 20}, {"first_n": 10}, labels={"ttl_seconds": 3600})  # explicit: join at once
    sink = FakeSink()
    hook = LabelHook(cfg)
    assert hook.eager == {"m"}
    assert LabelHook(config({"size_events": 20})).eager == set()
    p = Pipeline(
        Settings(), cfg, sink=sink, deadletters=DeadLetterPublisher(dl_sender([])), evaluator=None, label_hook=hook
    )
    preds = batch_msg("m", 0, 20, 0)  # predicted label "p" for every event
    truth = ["p" if i % 4 else "q" for i in range(12)]  # labels for the first 12 events
    labels = RawMessage(
        orjson.dumps(
            {
                "type": "label_batch",
                "model_id": "m",
                "event_id": [f"m-{i}" for i in range(12)],
                "label": truth,
                "label_time": [T0 + 50.0] * 12,
            }
        ),
        b"m",
        "labels",
        0,
        0,
        None,
    )
    more = batch_msg("m", 20, 20, 1)  # closes the next window: the joined rows are reported on it

    async def main():
        await p.process([preds])
        await p.process([labels])
        await p.process([more])
        await p.drain()

    asyncio.run(main())
    perf = {r.tags["metric"]: r for r in sink.records if r.measurement == "dw_performance"}
    assert perf["accuracy"].fields["value"] == pytest.approx(accuracy_score(truth, ["p"] * 12))
    assert perf["accuracy"].fields["n"] == 12 and perf["accuracy"].tags["detector"] == "realized"
    assert perf["label_join"].fields["matched"] == 12


def test_a_failed_batch_is_never_acked():
    cfg = config({"size_events": 10}, {"first_n": 10})
    p, _sink, acked, _ = make(cfg)

    def boom(*a, **k):
        raise RuntimeError("detector exploded in a way the engine did not expect")

    p.decoder.decode = boom
    with pytest.raises(RuntimeError):
        asyncio.run(p.process([batch_msg("m", 0, 5, 0)]))
    assert acked == [] and p.pending_messages() == 0  # state dropped: nothing of it will be acked


def test_dead_letters_are_flushed_together_and_acked_only_when_confirmed():
    """A flood of malformed messages: dead letters wait for one flush (count or age); their messages
    are acked only once the broker confirmed every dead letter of the flush and InfluxDB its counts."""
    cfg = config({"size_events": 1000}, {"first_n": 10})
    sink, acked, deliveries, calls = FakeSink(), [], [], []

    async def send_batch(records):
        calls.append([(k, v) for k, v, _h in records])
        fut = asyncio.get_running_loop().create_future()
        deliveries.append(fut)
        return fut

    now = [100.0]
    p = Pipeline(
        Settings(),
        cfg,
        sink=sink,
        deadletters=DeadLetterPublisher(send_batch=send_batch),
        ack=acked.append,
        evaluator=None,
        eval_thread=False,
        clock=lambda: now[0],
        deadletter_linger=0.5,
        deadletter_max=50,
    )
    bad = [RawMessage(b"{nope %d" % i, b"m", "t", 0, i, None) for i in range(30)]

    async def main():
        await p.process(bad[:20])
        assert calls == [] and acked == []  # waiting for the flush
        now[0] += 0.6
        await p.process(bad[20:])  # the oldest waited 0.6 s > linger: all 30 flushed at once
        assert len(calls) == 1 and [v for _k, v in calls[0]] == [m.value for m in bad]  # in order
        assert acked == []  # the broker has not confirmed yet
        deliveries[0].set_result(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [m.offset for m in acked] == list(range(30))
        await p.process([RawMessage(b"[1", b"m", "t", 0, 30, None)])
        assert len(calls) == 1
        now[0] += 1.0
        await p.tick()  # the 1 s timer flushes what has waited long enough
        assert len(calls) == 2
        deliveries[1].set_result(None)
        await p.drain()

    asyncio.run(main())
    assert [m.offset for m in acked] == list(range(31))
    points = [r for r in sink.records if r.measurement == "dw_deadletter"]
    assert sum(r.fields["count"] for r in points) == 31 and sum(r.fields["messages"] for r in points) == 31
    assert len(points) == 2  # one aggregated point per flush (one reason, one partition)


def test_dead_letters_not_confirmed_stay_unacked():
    cfg = config({"size_events": 1000}, {"first_n": 10})
    acked = []

    async def send_batch(records):
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(RuntimeError("broker said no"))
        return fut

    p = Pipeline(
        Settings(),
        cfg,
        sink=FakeSink(),
        deadletters=DeadLetterPublisher(send_batch=send_batch),
        ack=acked.append,
        evaluator=None,
        eval_thread=False,
        deadletter_linger=0.0,
    )

    async def main():
        await p.process([RawMessage(b"", b"m", "t", 0, i, None) for i in range(5)])
        await p.drain()

    asyncio.run(main())
    assert acked == []


def _budget_cfg(window: dict):
    return parse_monitors(
        {
            "alarm_budget": {"false_alarms": 1, "per": "day"},
            "models": [{"model_id": "m", "features": [{"name": "x", "kind": "numeric"}], "window": window}],
        }
    )


def test_budgeted_count_windows_take_their_level_from_the_observed_event_rate():
    from types import SimpleNamespace

    from detectors.frame import Frame
    from detectors.records import DRIFT_SUMMARY
    from detectors.reference import Reference
    from streams.worker.evaluation import ObservedRates, default_evaluator

    model = _budget_cfg({"size_events": 500}).models[0]
    F = 4  # alarming families per window: drift, quality, prediction drift, CBPE (the budget counts them all)
    assert model.families == F
    rates = ObservedRates(smoothing=0.5)

    def win(n, secs):
        return SimpleNamespace(n=n, start_time=T0, end_time=T0 + secs)

    assert rates.drift_for(model, win(500, 10.0)).p_val == pytest.approx(1 / (F * 86_400 * 50 / 500))
    assert rates.drift_for(model, win(500, 5.0)).p_val == pytest.approx(1 / (F * 86_400 * 75 / 500))  # smoothed 50->75
    fixed = _budget_cfg({"size_seconds": 60}).models[0]
    assert rates.drift_for(fixed, win(500, 5.0)) is fixed.drift  # the window length fixes the level
    assert fixed.drift.p_val == pytest.approx(1 / (F * 1440))

    rng = np.random.default_rng(0)

    def frame(n, secs):
        return Frame.from_columns(
            event_id=np.arange(n).astype(str),
            event_time=T0 + np.linspace(0, secs, n),
            numeric={"x": rng.normal(size=n)},
        )

    ref = Reference.from_frame(frame(2000, 40), model.features)
    evaluate = default_evaluator()
    w = SimpleNamespace(seq=1, n=500, frame=frame(500, 20.0), start_time=T0, end_time=T0 + 20.0)
    recs = evaluate(model, StreamKey("t", 0, "m", "v1"), w, ref)
    summary = next(r for r in recs if r.measurement == DRIFT_SUMMARY)
    assert summary.fields["p_val"] == pytest.approx(1 / (F * 86_400 * 25 / 500))  # 500 events in 20 s


@pytest.mark.parametrize("end, lost", [(None, False), (200, False), (3, True), (0, True)])
def test_a_missing_committed_offset_is_called_a_lost_broker_state_only_with_evidence(caplog, end, lost):
    """Windows in InfluxDB but no committed offset: a warning only when the broker's partition ends
    before the newest written window's first message (it no longer holds what was windowed);
    otherwise (a restart before the first commit) an info line."""
    cfg = config({"size_events": 20})
    sink = FakeSink()
    a, _, _, _ = make(cfg, sink=sink)
    msgs = [batch_msg("m", i * 10, 10, i) for i in range(6)]

    async def run(p, messages):
        await p.process(messages)
        await p.drain()

    asyncio.run(run(a, msgs))
    assert len(sink.windows()) == 3  # windows #1-#3 end at offsets 1, 3, 5
    b = Pipeline(
        Settings(),
        cfg,
        sink=sink,
        deadletters=DeadLetterPublisher(dl_sender([])),
        checkpoints=FakeCheckpoints(sink),
        committed=lambda t, p: None,
        end_offset=lambda t, p: end,
        evaluator=evaluator,
    )
    with caplog.at_level(logging.INFO, logger="streams.worker.pipeline"):
        asyncio.run(run(b, msgs[:1]))
    said = [r for r in caplog.records if "committed offset" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert ("lost its state" in said[0].getMessage()) == lost
    assert said[0].levelno == (logging.WARNING if lost else logging.INFO)


def test_large_count_windows_are_evaluated_from_summaries():
    """``window.summary_min_events``: windows that size or larger keep a summary; the detectors' points are
    those of the same windows kept as rows (same counts, quality and verdicts), and every message is acked."""
    from detectors.records import DRIFT_SUMMARY, QUALITY
    from streams.worker.evaluation import default_evaluator

    def run_with(summary_min):
        cfg = config({"size_events": 40, "summary_min_events": summary_min, "summary_bins": 64}, {"first_n": 30})
        sink, acked = FakeSink(), []
        p = Pipeline(
            Settings(),
            cfg,
            sink=sink,
            deadletters=DeadLetterPublisher(dl_sender([])),
            ack=acked.append,
            checkpoints=FakeCheckpoints(sink),
            committed=lambda t, p: None,
            evaluator=default_evaluator(),
        )
        msgs = [batch_msg("m", i * 10, 10, i) for i in range(20)]

        async def main():
            await p.process(msgs)
            await p.drain()

        asyncio.run(main())
        return sink.records, acked

    rows, acked_rows = run_with(None)
    summ, acked_summ = run_with(10)
    assert [m.offset for m in acked_summ] == [m.offset for m in acked_rows]

    def points(records, measurement):
        return {(r.time_ns, tuple(sorted(r.tags.items()))): r.fields for r in records if r.measurement == measurement}

    w_rows, w_summ = points(rows, WINDOW), points(summ, WINDOW)
    assert w_rows.keys() == w_summ.keys()
    assert [f["summarised"] for f in w_rows.values()] == [0] * len(w_rows)
    assert sum(f["summarised"] for f in w_summ.values()) >= 3  # after the first_n reference
    for k, f in w_rows.items():
        assert {n: v for n, v in w_summ[k].items() if n not in ("summarised", "closed_at")} == {
            n: v for n, v in f.items() if n not in ("summarised", "closed_at")
        }
    assert points(summ, QUALITY) == points(rows, QUALITY)
    d_rows, d_summ = points(rows, DRIFT_SUMMARY), points(summ, DRIFT_SUMMARY)
    assert d_rows.keys() == d_summ.keys() and d_rows
    for k, f in d_rows.items():
        assert d_summ[k]["engine"] == "summary" and f["engine"] == "native"
        assert d_summ[k]["drift"] == f["drift"] and d_summ[k]["n_drifted"] == f["n_drifted"]
