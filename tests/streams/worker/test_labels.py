"""streams.worker.labels: the label join persisted across restarts, and concept drift on the error stream.

In-process (the pipeline with a fake sink; the checkpoints in :class:`MemoryChangelog`, which
keeps the records the real changelog writes in a list and reads them back with the same
generation fold); the real worker restarts (SIGTERM, SIGKILL) and the changelog on the real
broker are in tests/integration/test_restarts.py and tests/integration/test_label_changelog.py.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import numpy as np
import orjson
import pytest

from detectors import records as R
from detectors.concept import ErrorStreamMonitor, LabelJoin
from detectors.performance import PerformanceAccumulator
from streams.alerts.rules import AlertRule, evaluate
from streams.settings import Settings
from streams.worker.deadletter import DeadLetterPublisher
from streams.worker.decode import LabelPart, RawMessage
from streams.worker.label_changelog import GenerationFold, partition_key
from streams.worker.labels import LabelHook, ModelResults, decode_partition, decode_state, encode_state
from streams.worker.monitors import parse_monitors
from streams.worker.pipeline import Pipeline
from tests.streams.worker.changelogs import MemoryStore
from tests.streams.worker.test_pipeline import T0, FakeCheckpoints, FakeSink, batch_msg, dl_sender


class MemoryChangelog(MemoryStore):
    """The label changelog's records in a list (same chunking and generation fold as the Kafka one)."""

    async def save(self, partition: int, gen: int, blob: bytes) -> int:
        return await self.put(partition_key(partition), gen, blob, route=partition)

    async def load(self, partition: int):
        return await self.restore(partition_key(partition), route=partition)

    def pending(self, partition: int = 0) -> dict[str, int]:
        """Predictions waiting per model in the partition's newest checkpoint."""
        got = asyncio.run(self.load(partition))
        states, _ = decode_partition(got.blob)
        return {m: int(decode_state(b)["snapshot"].predictions["ids"].shape[0]) for m, b in states.items()}


def cfg(labels: dict | None = None, task: str = "classification"):
    return parse_monitors(
        {
            "models": [
                {
                    "model_id": "m",
                    "task": task,
                    "features": [{"name": "x", "kind": "numeric"}, {"name": "c", "kind": "categorical"}],
                    "window": {"size_events": 20},
                    "reference": {"first_n": 10},
                    "labels": {"ttl_seconds": 3600, **(labels or {})},
                }
            ]
        }
    )


def label_msg(ids, labels, offset=0, t=T0 + 50.0) -> RawMessage:
    return RawMessage(
        orjson.dumps(
            {
                "type": "label_batch",
                "model_id": "m",
                "event_id": list(ids),
                "label": list(labels),
                "label_time": [t] * len(ids),
            }
        ),
        b"m",
        "labels",
        0,
        offset,
        None,
    )


def pipeline(hook, sink: FakeSink | None = None, **options: Any) -> tuple[Pipeline, FakeSink]:
    """A pipeline around ``hook`` writing to ``sink`` (a new one by default); ``options``: more of Pipeline's."""
    sink = sink if sink is not None else FakeSink()
    return Pipeline(
        Settings(),
        hook_cfg(hook),
        sink=sink,
        deadletters=DeadLetterPublisher(dl_sender([])),
        evaluator=None,
        label_hook=hook,
        **options,
    ), sink


def hook_cfg(hook):
    return parse_monitors({"models": [m.model_dump(exclude_unset=True) for m in hook.models.values()]})


def perf(sink, metric, detector="realized"):
    return [
        r
        for r in sink.records
        if r.measurement == R.PERFORMANCE and r.tags[R.T_METRIC] == metric and r.tags[R.T_DETECTOR] == detector
    ]


def test_a_checkpoint_copies_only_the_window_results_that_changed():
    """``ModelResults.capture`` on the event loop: a window result unchanged since the last capture is not copied
    again (the same objects), a changed or confirmed one is; what was captured stays as it was while the
    results go on; and the checkpoint it encodes equals the one of the live results."""
    mr = ModelResults()
    for t in (1, 2, 3):
        mr.add_window("1", t * 1000, float(t), keep=10)
    for res in mr.results.values():
        res.acc = PerformanceAccumulator("classification")
        res.acc.add(np.array(["a", "b"], dtype=object), np.array(["a", "a"], dtype=object), delays=np.array([1.0, 2.0]))
        res.changed = 1
    first = mr.capture()
    again = mr.capture()
    assert all(a[0] is b[0] and a[1] is b[1] for a, b in zip(first.items, again.items))  # nothing copied again
    res = mr.results[("1", 2000)]
    res.acc.add(np.array(["c"], dtype=object), np.array(["b"], dtype=object), delays=np.array([5.0]))
    res.changed += 1
    mr.results[("1", 3000)].written = 1  # confirmed by InfluxDB
    third = mr.capture()
    assert third.items[0][0] is first.items[0][0]
    assert third.items[1][0] is not first.items[1][0] and third.items[2][0] is not first.items[2][0]
    # the earlier capture still holds the state of its moment (2 rows, 2 classes), the new one the change
    assert first.items[1][0]["acc"]["n"] == 2 and first.items[1][0]["acc"]["classes"] == ["a", "b"]
    assert first.items[1][1]["confusion"].sum() == 2 and first.items[1][1]["delays"].tolist() == [1.0, 2.0]
    assert third.items[1][0]["acc"]["n"] == 3 and third.items[1][1]["confusion"].sum() == 3
    j = LabelJoin(ttl_seconds=100)
    back_live = decode_state(encode_state(j.snapshot(), mr, None, 1.0))["results"]
    back_cap = decode_state(encode_state(j.capture(), third, None, 1.0))["results"]
    for key in mr.results:
        a, b = back_live.results[key], back_cap.results[key]
        assert (a.changed, a.written, a.acc.metrics()) == (b.changed, b.written, b.acc.metrics())
        assert a.acc.metrics() == mr.results[key].acc.metrics()


def test_state_round_trips_through_bytes():
    """Pending predictions (label, probabilities, value), early labels of any JSON type, finished ids,
    counters, the unreported accumulator and the error-stream detector all come back."""
    j = LabelJoin(ttl_seconds=100)
    ids = np.array([f"e{i}" for i in range(6)], dtype=object)
    j.add_predictions(
        ids,
        np.arange(6.0),
        pred_label=np.array(["a", "b", None, "a", "b", "a"], dtype=object),
        pred_proba=np.random.default_rng(0).dirichlet([1, 1], 6),
        classes=("a", "b"),
        pred_value=np.array([0.1, np.nan, 0.3, 0.4, 0.5, 0.6]),
        now=6,
    )
    lab = np.empty(4, dtype=object)
    lab[:] = ["a", 3, 2.5, True]
    j.add_labels(np.array(["e0", "z1", "z2", "z3"], dtype=object), lab, np.full(4, 7.0), now=6)
    acc = PerformanceAccumulator("classification")
    acc.add(np.array(["a", "b"], dtype=object), np.array(["a", "a"], dtype=object), delays=np.array([1.0, 2.0]))
    mon = ErrorStreamMonitor("classification", reference_size=50, ert=500, window_sizes=(10,), n_bootstraps=400)
    mon.add_errors(np.r_[np.ones(5), np.zeros(45)], np.arange(50.0))
    mr = ModelResults()
    mr.add_window("1", 5_000, 5.0, keep=10)
    mr.add_window("1", 9_000, 9.0, keep=10)
    first = mr.results[("1", 5_000)]
    first.acc, first.errors, first.changed, first.submitted, first.written = acc, {"n": 3, "drift": 1}, 4, 4, 2
    waiting = j.add_labels(np.array(["e3"], dtype=object), np.array(["b"], dtype=object), np.full(1, 7.5))
    mr.waiting = [waiting]
    back = decode_state(encode_state(j.snapshot(), mr, mon.state(), 6.0))
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
    res = back["results"].results[("1", 5_000)]
    assert res.acc.metrics() == acc.metrics() and res.acc.delay_quantiles() == acc.delay_quantiles()
    # not confirmed written (2 of 4 changes): written again after a restart
    assert (res.errors, res.changed, res.written, res.submitted) == ({"n": 3, "drift": 1}, 4, 2, 2)
    assert back["results"].ends == [5.0, 9.0] and back["results"].results[("1", 9_000)].acc is None
    w = back["results"].waiting[0]
    assert w.event_id.tolist() == ["e3"] and w.label.tolist() == ["b"] and w.pred_label.tolist() == ["a"]
    np.testing.assert_array_equal(w.pred_proba, waiting.pred_proba)
    m2 = ErrorStreamMonitor("classification", reference_size=50, ert=500, window_sizes=(10,), n_bootstraps=400)
    m2.restore(back["monitor"])
    np.testing.assert_array_equal(m2.reference, mon.reference)


def test_waiting_predictions_survive_a_restart(tmp_path):
    """Worker 1 holds predictions and saves them; worker 2 restores them, matches the labels that come
    after the restart, and counts the predictions Kafka delivers again as replays, not twice."""
    from sklearn.metrics import accuracy_score

    state = MemoryChangelog()
    h1 = LabelHook(cfg(), store=state, background=False)
    p1, _ = pipeline(h1)
    preds = batch_msg("m", 0, 30, 0)  # 10 build the reference, 20 close a window; all 30 wait for labels

    async def first():
        await p1.process([preds])
        await p1.drain()
        await h1.close()  # what the worker does on SIGTERM

    asyncio.run(first())
    assert state.pending() == {"m": 30}
    h2 = LabelHook(cfg(), store=state, background=False)
    p2, sink = pipeline(h2)
    truth = ["p" if i % 5 else "q" for i in range(30)]

    async def second():
        await p2.process([preds])  # read again: its offsets were not committed (a window was still open)
        await p2.process([label_msg([f"m-{i}" for i in range(30)], truth)])
        await p2.process([batch_msg("m", 30, 20, 1)])  # closes a window: the joined rows are reported on it
        await p2.drain()

    asyncio.run(second())
    assert h2.restored == {"m": 30}
    acc = perf(sink, "accuracy")  # each window: the labels of its own predictions (rows 0-19, then 20-29)
    assert [r.fields["n"] for r in acc] == [20, 10]
    assert acc[0].fields["value"] == pytest.approx(accuracy_score(truth[:20], ["p"] * 20))
    assert acc[1].fields["value"] == pytest.approx(accuracy_score(truth[20:], ["p"] * 10))
    join = perf(sink, "label_join", "join")[-1].fields  # written as the window closed, before its batch joined
    # the predictions read again are skipped by offset: they are in the restored state, not counted twice
    assert join["matched"] == 30 and join["predictions"] == 30 and join["replayed_predictions"] == 0
    assert join["duplicate_predictions"] == 0 and join["pending_predictions"] == 0
    s = h2._joins["m"].stats
    assert s.predictions == 50 and s.pending_predictions == 20 and s.duplicate_predictions == 0


ONLINE = {"reference_size": 100, "ert": 500, "window_sizes": [20], "n_bootstraps": 400}


def labelled_stream(n_batches: int = 40, per: int = 20, behind: int = 3, seed: int = 5):
    """Inference batches (offsets 0..) and their labels ``behind`` batches later (a label topic of its own);
    the model (always "p") is right 90 % of the time, then 40 % from the middle on (concept drift);
    one label in 20 never comes. Returns (inference messages, label messages, live order)."""
    rng = np.random.default_rng(seed)
    inf, lab = [], []
    for i in range(n_batches):
        inf.append(batch_msg("m", i * per, per, i))
        p_right = 0.9 if i < n_batches // 2 else 0.4
        ids = [f"m-{i * per + k}" for k in range(per) if rng.random() > 0.05]
        truth = ["p" if rng.random() < p_right else "q" for _ in ids]
        lab.append(label_msg(ids, truth, i, t=T0 + (i + 1) * per * 0.1 + 0.5))
    live = []
    for i in range(n_batches + behind):
        if i < n_batches:
            live.append(inf[i])
        if i >= behind:
            live.append(lab[i - behind])
    return inf, lab, live


def final_points(records) -> dict:
    """The last value written of every label-derived point (InfluxDB keeps the last write of a key)."""
    out = {}
    for r in records:
        if r.measurement == R.PERFORMANCE and r.tags[R.T_METRIC] != "label_join":
            out[(tuple(sorted(r.tags.items())), r.time_ns)] = {k: v for k, v in r.fields.items()}
    return out


async def play(p: Pipeline, h: LabelHook, msgs, clock, every: int = 3, upto: int | None = None) -> None:
    """Messages one by one; every ``every`` messages a second passes: label results flushed, snapshot due."""
    for i, m in enumerate(msgs[:upto]):
        await p.process([m])
        if i % every == every - 1:
            clock[0] += 1.0
            await p.flush_labels()
            await h.snapshot_if_due()
            await p.drain()


async def finish(p: Pipeline, h: LabelHook) -> None:
    await p.drain()
    await p.tick(now=1e12)  # the stream went idle: the last window closes
    await p.drain()
    await p.flush_labels()
    await p.drain()


def labelled_hook(state, clock: list[float]) -> LabelHook:
    """The label hook of the labelled-stream tests: the error stream on, a snapshot every 2 s of ``clock[0]``."""
    return LabelHook(cfg({"online": ONLINE}), store=state, background=False, snapshot_every=2.0, clock=lambda: clock[0])


def committed_offsets(acked: list[RawMessage]) -> dict[str, int]:
    """Where a worker starting now reads from, per topic (acks come in order)."""
    return {t: len([m for m in acked if m.topic == t]) for t in ("t", "labels")}


def restarted_worker(live, state, sink: FakeSink, clock: list[float], acked: list[RawMessage]):
    """A worker (pipeline and label hook) started over from the offsets committed so far, and what it reads again."""
    committed = committed_offsets(acked)
    h = labelled_hook(state, clock)
    p, _ = pipeline(
        h,
        sink,
        ack=acked.append,
        checkpoints=FakeCheckpoints(sink),
        committed=lambda t, part: committed.get(t) or None,
    )
    return p, h, [m for m in live if m.offset >= committed[m.topic]]


def run_labelled(msgs, state, clock=None):
    clock = clock if clock is not None else [0.0]
    h = labelled_hook(state, clock)
    p, sink = pipeline(h)

    async def main():
        await play(p, h, msgs, clock)
        await finish(p, h)

    asyncio.run(main())
    return final_points(sink.records), h


def test_label_results_are_the_same_live_on_a_backlog_and_after_crashes(tmp_path):
    """The label-derived points (realized metrics and error-stream verdicts per window) are a function of
    the two streams only: a worker that reads a backlog (all predictions, then all labels; or the labels
    first) and one that is killed at random moments and restarted from its committed offsets write the
    same final points as a worker that ran live."""
    inf, lab, live = labelled_stream()
    want, h = run_labelled(live, MemoryChangelog())
    assert h._joins["m"].stats.matched == sum(len(orjson.loads(m.value)["event_id"]) for m in lab)
    verdicts = [v for k, v in want.items() if dict(k[0])[R.T_METRIC] == "error_stream"]
    assert any(v.get("drift") == 1 for v in verdicts), "the concept drift is found"
    assert len([k for k in want if dict(k[0])[R.T_METRIC] == "accuracy"]) == 40
    assert run_labelled(inf + lab, MemoryChangelog())[0] == want
    assert run_labelled(lab + inf, MemoryChangelog())[0] == want

    rng = np.random.default_rng(11)
    state, shared, clock = MemoryChangelog(), FakeSink(), [0.0]
    acked: list[RawMessage] = []
    for crash in [*sorted(rng.choice(np.arange(5, len(live) - 5), 3, replace=False).tolist()), None]:
        p, h, rest = restarted_worker(live, state, shared, clock, acked)  # read again from the committed offsets
        upto = None if crash is None else crash - (len(live) - len(rest))

        async def main(p=p, h=h, rest=rest, upto=upto):
            await play(p, h, rest, clock, upto=upto)
            if upto is None:
                await finish(p, h)
            else:
                await p.drain()  # SIGKILL: no close, no last snapshot

        asyncio.run(main())
    got = final_points(shared.records)
    assert got == want
    s = h._joins["m"].stats  # nothing lost or counted twice across the crashes
    n_labels = sum(len(orjson.loads(m.value)["event_id"]) for m in lab)
    assert (s.predictions, s.labels, s.matched) == (800, n_labels, n_labels)
    assert s.matched + s.expired + s.evicted + s.pending_predictions == s.predictions
    assert s.duplicate_predictions == s.duplicate_labels == 0


def test_a_partition_handed_to_another_worker_takes_its_label_join_along(tmp_path):
    """Worker A is revoked mid-stream (a second worker joined the group), B takes over, then B leaves and A
    gets the partitions back: with a shared state dir each owner restores the state the previous one saved
    at the rebalance, the counters reconcile and nothing is counted twice; the points equal a live run's."""
    _inf, lab, live = labelled_stream()
    want, _ = run_labelled(live, MemoryChangelog())
    state, shared, clock, acked = MemoryChangelog(), FakeSink(), [0.0], []

    a, ha, rest = restarted_worker(live, state, shared, clock, acked)

    async def main():
        nonlocal a, ha, rest
        await play(a, ha, rest, clock, upto=30)
        a.forget([("t", 0), ("labels", 0)])  # revoked: what the rebalance hook of streams/worker/agents.py does
        assert await ha.revoke([("t", 0), ("labels", 0)]) == ["m"] and "m" not in ha._joins
        b, hb, rest = restarted_worker(live, state, shared, clock, acked)
        await play(b, hb, rest, clock, upto=25)
        b.forget([("t", 0), ("labels", 0)])
        await hb.revoke([("t", 0), ("labels", 0)])
        committed = committed_offsets(acked)
        a.committed = lambda t, part: committed[t] or None
        rest = [m for m in live if m.offset >= committed[m.topic]]
        await play(a, ha, rest, clock)  # A again: restores what B saved, not its own old state
        await finish(a, ha)
        return hb

    hb = asyncio.run(main())
    assert ha.restored["m"] > 0 and hb.restored["m"] > 0
    assert final_points(shared.records) == want
    s = ha._joins["m"].stats
    n_labels = sum(len(orjson.loads(m.value)["event_id"]) for m in lab)
    assert (s.predictions, s.labels, s.matched, s.duplicate_predictions, s.duplicate_labels) == (
        800,
        n_labels,
        n_labels,
        0,
        0,
    )
    assert s.matched + s.expired + s.evicted + s.pending_predictions == s.predictions
    assert (
        s.matched + s.late_labels + s.duplicate_labels + s.unmatched_labels + s.evicted_labels + s.pending_labels
        == s.labels
    )


def test_an_unusable_snapshot_is_reported_and_the_join_starts_empty(caplog):
    state = MemoryChangelog()
    asyncio.run(state.save(0, 1, zlib.compress(b"not a snapshot")))
    h = LabelHook(cfg(), store=state, background=False)
    p, _sink = pipeline(h)
    asyncio.run(p.process([batch_msg("m", 0, 30, 0)]))
    assert "unusable" in caplog.text and h.restored == {}
    assert h._joins["m"].stats.pending_predictions == 30


def test_snapshots_are_written_only_when_due_and_changed():
    state = MemoryChangelog()
    clock = [0.0]
    h = LabelHook(cfg(), store=state, background=False, snapshot_every=5.0, clock=lambda: clock[0])
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
    assert state.pending() == {"m": 35}
    assert asyncio.run(state.load(0)).gen == 2  # two checkpoints; close had nothing new
    assert h.checkpoints["count"] == 2 and h.checkpoints["bytes"] > 0


def test_an_incomplete_generation_is_ignored_and_the_one_before_it_restored():
    """A crash in the middle of a checkpoint leaves some chunks of a generation: a reader restores the
    complete one before it (its offsets were the last committed), never a mix."""
    state = MemoryChangelog(chunk_bytes=512)
    h = LabelHook(cfg(), store=state, background=False)
    p, _ = pipeline(h)
    asyncio.run(p.process([batch_msg("m", 0, 30, 0)]))
    asyncio.run(h.snapshot_if_due(force=True))
    complete = len(state.records)
    assert complete > 2  # chunked
    asyncio.run(p.process([batch_msg("m", 30, 20, 1)]))
    asyncio.run(h.snapshot_if_due(force=True))
    assert state.pending() == {"m": 50}
    k, v, hd = state.records.pop()  # generation 2 lost its last chunk (a crash while writing it)
    assert asyncio.run(state.load(0)).gen == 1 and state.pending() == {"m": 30}
    state.records.append((k, v[:-1] + bytes([v[-1] ^ 1]), hd))  # all chunks there, one corrupt
    fold = GenerationFold(0)
    for off, (k2, v2, hd2) in enumerate(state.records):
        fold.add(k2, v2, hd2, off)
    assert fold.newest().gen == 1 and "SHA-256" in fold.problems[0]
    h2 = LabelHook(cfg(), store=state, background=False)
    asyncio.run(h2.restore_partitions([0]))
    assert h2.restored == {"m": 30}


def test_offsets_are_released_only_after_the_checkpoint_that_covers_them():
    """The messages fed to the join stay un-acked until a checkpoint holding them is written; a failed
    write keeps them held (and retries), so a crash re-reads exactly what the last checkpoint lacks."""
    state, acked = MemoryChangelog(), []
    h = LabelHook(cfg(), store=state, background=False)
    p, _ = pipeline(h, ack=acked.append)

    async def run():
        await p.process([batch_msg("m", 0, 5, 0), label_msg(["m-0", "m-1"], ["p", "q"], 0)])
        await p.drain()
        assert acked == []
        state.fail = True
        assert await h.snapshot_if_due(force=True) == 0
        assert acked == []
        state.fail = False
        assert await h.snapshot_if_due(force=True) > 0
        # the labels' message is acked; the predictions' message still waits for its window to close
        assert [(m.topic, m.offset) for m in acked] == [("labels", 0)]

    asyncio.run(run())


def scored_batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    """A batch of ``n`` binary predictions ``c-0 …`` with probabilities (CBPE's input) and those probabilities."""
    proba = rng.dirichlet([1, 1], n)
    doc = {
        "type": "inference_batch",
        "model_id": "m",
        "model_version": "1",
        "event_id": [f"c-{i}" for i in range(n)],
        "event_time": (T0 + np.arange(n) * 0.1).tolist(),
        "features": {"x": rng.normal(size=n).tolist(), "c": ["a"] * n},
        "prediction": {
            "label": np.where(proba[:, 0] > 0.5, "p", "q").tolist(),
            "probabilities": {"p": proba[:, 0].tolist(), "q": proba[:, 1].tolist()},
        },
    }
    return proba, doc


def test_calibration_rows_travel_with_the_checkpoint():
    """CBPE's calibration learnt from joined labels (no labelled reference) is in the checkpoint: a new
    worker restoring the partition has the same rows and fits the same calibration."""
    from detectors.performance import CBPE

    state = MemoryChangelog()
    h = LabelHook(cfg(), store=state, background=False)
    p, _ = pipeline(h)
    rng = np.random.default_rng(3)
    n = 300
    proba, doc = scored_batch(rng, n)
    truth = np.where(rng.random(n) < proba[:, 0], "p", "q").tolist()

    async def run():
        await p.process([RawMessage(orjson.dumps(doc), b"m", "t", 0, 0, None)])
        await p.process([label_msg([f"c-{i}" for i in range(n)], truth, 0)])
        await p.process([batch_msg("m", 10_000, 40, 1)])  # later windows close: the joined rows reach CBPE
        await p.drain()
        await h.close()

    asyncio.run(run())
    cal = h.calibration("m")
    assert not isinstance(cal, str), cal
    h2 = LabelHook(cfg(), store=state, background=False)
    assert isinstance(h2.calibration("m"), str)  # nothing before the restore
    asyncio.run(h2.restore_partitions([0]))
    cal2 = h2.calibration("m")
    assert h2._cal_rows["m"].n == h._cal_rows["m"].n > 200
    assert cal2.classes == cal.classes
    probe = rng.dirichlet([1, 1], 50)
    np.testing.assert_allclose(
        CBPE(cal2).expected_correct(probe, ("p", "q"))[0], CBPE(cal).expected_correct(probe, ("p", "q"))[0]
    )


def test_predictions_held_before_the_first_label_travel_with_the_checkpoint():
    """A classifier without a ``labels:`` section: its first predictions (CBPE's calibration rows) are held
    before any label and checkpointed; a new worker restoring the partition joins their labels."""
    model = hook_cfg(LabelHook(cfg(), background=False)).models[0].model_dump(exclude_unset=True)
    del model["labels"]
    config = parse_monitors({"models": [model]})
    state = MemoryChangelog()
    h = LabelHook(config, store=state, background=False)
    assert h.eager == set()
    p, _ = pipeline(h)
    rng = np.random.default_rng(4)
    n = 300
    proba, doc = scored_batch(rng, n)

    async def run():
        await p.process([RawMessage(orjson.dumps(doc), b"m", "t", 0, 0, None)])
        await p.drain()
        await h.close()

    asyncio.run(run())
    assert state.pending() == {"m": n}  # held (and checkpointed) though no label came yet
    h2 = LabelHook(config, store=state, background=False)
    asyncio.run(h2.restore_partitions([0]))
    truth = np.where(rng.random(n) < proba[:, 0], "p", "q")
    ids = np.array([f"c-{i}" for i in range(n)], dtype=object)
    h2.on_labels(LabelPart("labels", 0, "m", ids, truth.astype(object), np.full(n, T0 + 50.0), np.zeros(n, np.int64)))
    assert h2._joins["m"].stats.matched == n


def test_the_error_stream_detector_reports_each_window_and_feeds_alert_rules(tmp_path):
    """labels.online: reference = the first 100 joined labels' errors (10 % wrong); then the model is
    wrong on every event: a fet_online point with drift=1, which a rule on performance.drift fires on."""
    online = {"reference_size": 100, "ert": 500, "window_sizes": [20], "n_bootstraps": 400}
    store = MemoryChangelog()
    h = LabelHook(cfg({"online": online}), store=store, state_dir=tmp_path / "state", background=False)
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
    final = {r.time_ns: r for r in pts}  # each window's point (rewritten as its labels come), last write wins
    assert [r.fields["phase"] for r in final.values()][-2:] == ["monitoring", "monitoring"]
    # the 30 wrong predictions 110-139 belong to the windows of rows 100-119 and 120-139
    w5, w6 = (final[t].fields for t in sorted(final)[-2:])
    assert (w5["n"], w6["n"]) == (10, 20) and w5["error_rate"] == w6["error_rate"] == 1.0
    fired = w5 if w5.get("drift") else w6
    assert fired["drift"] == 1 and fired["reference_error_rate"] == pytest.approx(0.1) and fired["n_ref"] == 100
    assert fired["first_detection_time"] == T0 + 60 and fired["statistic"] > fired["threshold"]
    pts = [r for r in pts if r.fields is fired]
    rule = AlertRule(name="concept", signal="performance.drift", where={"detector": "fet_online"}, op="==", threshold=1)
    obs = evaluate([rule], [pts[-1]], "m", pts[-1].tags[R.T_VERSION])
    assert len(obs) == 1 and obs[0].breached
    h2 = LabelHook(cfg({"online": online}), store=store, state_dir=tmp_path / "state", background=False)
    asyncio.run(h.close())
    asyncio.run(h2.restore_partitions([0]))  # restored with its reference and run; thresholds from the cache
    mon = h2._mon["m"]
    assert mon.phase == "monitoring" and mon.detector.from_cache and mon.reference.sum() == 10
    off = LabelHook(cfg({"online": {**online, "enabled": False}}), background=False)
    p3, sink3 = pipeline(off)
    asyncio.run(p3.process([batch_msg("m", 0, 40, 0), label_msg(ref_ids[:5], ["p"] * 5, 1)]))
    assert not perf(sink3, "error_stream", "fet_online") and off.store is None


def test_regression_errors_are_cut_at_the_reference_quantile(tmp_path):
    h = LabelHook(
        cfg(
            {
                "online": {
                    "reference_size": 60,
                    "ert": 500,
                    "window_sizes": [10],
                    "n_bootstraps": 400,
                    "error_quantile": 0.75,
                }
            },
            task="regression",
        ),
        background=False,
    )
    rng = np.random.default_rng(1)
    f = h.models["m"]
    assert f.labels.online.error_quantile == 0.75
    from detectors.concept import Joined

    truth = rng.normal(size=60)
    rows = Joined(
        np.array([f"e{i}" for i in range(60)], dtype=object),
        np.zeros(60),
        np.ones(60),
        truth.astype(object),
        None,
        None,
        np.zeros(60),
    )
    h._add("m", rows)
    h._res_of("m").add_window("1", 1, 0.0, keep=10)  # a closed window of those predictions (event time 0)
    h._drain("m")
    mon = h._mon["m"]
    assert mon.threshold == pytest.approx(np.quantile(np.abs(truth), 0.75))
    assert mon.reference.sum() == int((np.abs(truth) > mon.threshold).sum())


def test_results_the_timer_wrote_go_into_the_next_window_unit_for_alert_rules():
    """A label's result is written by the 1 s timer with no window closing; the next window's unit carries
    it again (alert rules evaluate each window's unit), and the one after does not (nothing changed)."""
    from types import SimpleNamespace

    from streams.worker.decode import StreamKey

    h = LabelHook(cfg(), background=False)
    p, sink = pipeline(h)

    async def run():
        await p.process([batch_msg("m", 0, 20, 0)])  # window #0 of the 20 predictions closes
        await p.process([label_msg([f"m-{i}" for i in range(20)], ["p"] * 19 + ["q"], 1)])
        n = await p.flush_labels()
        await p.drain()
        return n

    assert asyncio.run(run()) > 0
    acc = perf(sink, "accuracy")
    assert [(r.fields["n"], r.fields["value"]) for r in acc] == [(20, 0.95)]  # no window closed since
    key = StreamKey("t", 0, "m", "1")
    later = SimpleNamespace(time_ns=acc[0].time_ns + 10**9, end_time=T0 + 10.0)
    carried = [r for r in h.on_window(key, later).records if r.tags[R.T_METRIC] == "accuracy"]
    assert [(r.time_ns, r.fields["value"]) for r in carried] == [(acc[0].time_ns, 0.95)]
    again = SimpleNamespace(time_ns=acc[0].time_ns + 2 * 10**9, end_time=T0 + 20.0)
    assert not [r for r in h.on_window(key, again).records if r.tags[R.T_METRIC] == "accuracy"]


def test_a_calibration_in_progress_does_not_hold_up_the_workers_exit():
    # a worker stopped while the error-stream detector calibrated sat 20 s and more after "Closing event
    # loop": Python joins every ThreadPoolExecutor thread at exit, even after shutdown(wait=False)
    import subprocess
    import sys
    import time

    code = (
        "import time\nfrom streams.worker.labels import DaemonExecutor\n"
        "ex = DaemonExecutor('calibration')\nassert ex.submit(sum, [1, 2]).result(5) == 3\n"
        "ex.submit(time.sleep, 60)\nqueued = ex.submit(time.sleep, 60)\n"
        "time.sleep(0.2)\nex.shutdown(wait=False, cancel_futures=True)\nassert queued.cancelled()\n"
    )
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert time.monotonic() - t0 < 20


def test_a_checkpoint_is_a_warning_only_when_it_stalls_the_loop_or_falls_behind_its_interval(caplog):
    """A checkpoint whose encoding and write (on a thread, beside the batches) take long but stay within the
    interval is logged at DEBUG; one slower than its interval is a WARNING (a crash then re-reads more)."""

    class SlowChangelog(MemoryChangelog):
        delay = 0.0

        async def save(self, partition: int, gen: int, blob: bytes) -> int:
            await asyncio.sleep(self.delay)
            return await super().save(partition, gen, blob)

    store = SlowChangelog()
    h = LabelHook(cfg(), store=store, background=False, snapshot_every=0.5)
    p, _sink = pipeline(h)

    async def checkpoint(delay: float) -> None:
        store.delay = delay
        await p.process([batch_msg("m", int(delay * 1000), 5, int(delay * 1000))])
        h._dirty.add("m")
        assert await h.snapshot_if_due(force=True) > 0

    with caplog.at_level("DEBUG", logger="streams.worker.labels"):
        asyncio.run(checkpoint(0.3))  # within the 0.5 s interval
        quiet = [r for r in caplog.records if "label-join checkpoint" in r.getMessage()]
        assert [r.levelname for r in quiet] == ["DEBUG"]
        caplog.clear()
        asyncio.run(checkpoint(0.7))  # slower than the interval
        slow = [r for r in caplog.records if "label-join checkpoint" in r.getMessage()]
        assert [r.levelname for r in slow] == ["WARNING"]
    assert h.checkpoints["loop_ms_max"] < 250
