"""streams.worker.window_changelog + the pipeline's open-window checkpoints, with in-memory stand-ins.

The engine runs with real detectors on summarised count windows; the changelog store is the shared
in-memory one (tests/streams/worker/changelogs.py; the real one, on the broker, is exercised by
tests/integration/test_window_checkpoints.py).
A worker "crashes" after some messages: a second pipeline starts from the first one's committed
offset (its contiguous acked prefix), its open-window checkpoint and its written windows, and
the union of points equals an uninterrupted run's.
"""

from __future__ import annotations

import asyncio

import pytest

from detectors.records import DRIFT_SUMMARY, QUALITY, WINDOW
from streams.settings import Settings
from streams.worker.deadletter import DeadLetterPublisher
from streams.worker.evaluation import default_evaluator
from streams.worker.pipeline import Pipeline
from streams.worker.window_changelog import WindowChangelog, decode_entries
from tests.streams.worker.changelogs import MemoryStore as MemStore
from tests.streams.worker.test_pipeline import FakeCheckpoints, FakeSink, batch_msg, config, dl_sender

WINDOW_CFG = {"size_events": 200, "summary_min_events": 100, "summary_bins": 64, "summary_reservoir": 50}


class Sink(FakeSink):
    def windows(self):  # the worker's dw_window points (the detectors write some of their own)
        return [r for r in super().windows() if "ckpt_partition" in r.fields]


def messages(n: int = 90) -> list:
    # two models in one partition, 10 events per message: windows of 200 straddle messages
    return [batch_msg("m" if i % 3 else "k", (i // 3 if i % 3 == 0 else i) * 10, 10, i) for i in range(n)]


@pytest.fixture
def ref(tmp_path):
    """A reference file like the traffic (x rising from 0 to 900, c half a and half b)."""
    path = tmp_path / "ref.csv"
    path.write_text("x,c\n" + "".join(f"{i * 1.5},{'ab'[i % 2]}\n" for i in range(600)))
    return {"file": str(path)}


def pipeline(sink, store, acked, ref, committed=None, every=3600.0, window=None):
    return Pipeline(
        Settings(),
        config(window or WINDOW_CFG, ref),
        sink=sink,
        deadletters=DeadLetterPublisher(dl_sender([])),
        ack=acked.append,
        checkpoints=FakeCheckpoints(sink),
        committed=committed or (lambda t, p: None),
        evaluator=default_evaluator(),
        eval_thread=False,
        window_changelog=None if store is None else WindowChangelog(store, every=every, max_covered=10_000),
    )


def points(records) -> dict:
    """Every point but wall-clock fields, keyed by measurement, tags and time."""
    out = {}
    for r in records:
        if r.measurement in (WINDOW, QUALITY, DRIFT_SUMMARY) or r.measurement.startswith("dw_drift"):
            fields = {k: v for k, v in r.fields.items() if k != "closed_at"}
            out[(r.measurement, tuple(sorted(r.tags.items())), r.time_ns)] = fields
    return out


def same(a: dict, b: dict) -> list[str]:
    import math

    problems = [f"missing {k}" for k in b.keys() - a.keys()] + [f"extra {k}" for k in a.keys() - b.keys()]
    for k in a.keys() & b.keys():
        for f in a[k].keys() | b[k].keys():
            x, y = a[k].get(f), b[k].get(f)
            if isinstance(x, float) and isinstance(y, float):
                if not (math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(x) and math.isnan(y))):
                    problems.append(f"{k} {f}: {x} != {y}")
            elif x != y:
                problems.append(f"{k} {f}: {x!r} != {y!r}")
    return problems


def run(p: Pipeline, msgs, save_every: int | None = None) -> None:
    async def main():
        for i in range(0, len(msgs), 3):
            await p.process(msgs[i : i + 3])
            if save_every and (i // 3) % save_every == save_every - 1:
                await p.drain()  # the windows closed so far are written
                await p.save_windows(force=True)
        await p.drain()

    asyncio.run(main())


def fault_free(ref):
    sink = Sink()
    run(pipeline(sink, None, [], ref), messages())
    return sink


def test_open_summarised_windows_release_their_messages_at_each_checkpoint(ref):
    """With the changelog, a summarised window's messages are acked once a checkpoint holds them, long
    before the window closes; without it they wait for the window's write."""
    msgs = messages(50)
    store, acked = MemStore(), []
    p = pipeline(Sink(), store, acked, ref)
    run(p, msgs)
    before = len(acked)
    asyncio.run(p.save_windows(force=True))
    assert store.keys.count("p0") == 1 and len(acked) == len(msgs) > before  # everything, the open windows' too
    # beside it, once, the reference each model's summary was opened with (one layout per model)
    assert sorted(k[:4] for k in store.keys if k != "p0") == ["ref-", "ref-"]
    asyncio.run(p.save_windows(force=True))
    assert store.keys.count("p0") == 1  # nothing new: no checkpoint, no reference written again
    entries = decode_entries(asyncio.run(store.restore("p0")).blob)
    assert {k[1] for k in entries} == {"m", "k"}
    assert all(e.n > 0 and e.summary for e in entries.values())

    acked_rows: list = []
    run(pipeline(Sink(), None, acked_rows, ref), msgs)
    assert len(acked_rows) < len(msgs)  # the open windows hold theirs


def test_messages_waiting_for_a_checkpoint_are_counted_until_released_or_their_partition_is_gone(ref):
    """The count that makes a checkpoint due early (``max_covered``) follows the holds: down to 0 after a
    checkpoint, and after a revoke (else a worker that lost partitions would checkpoint after every batch)."""
    p = pipeline(Sink(), MemStore(), [], ref)
    run(p, messages(30))
    assert p._covered >= 30
    asyncio.run(p.save_windows(force=True))
    assert p._covered == 0
    run(p, [batch_msg("m", 10_000 + i * 10, 10, 30 + i) for i in range(6)])
    assert p._covered == 6
    p.revoke([("t", 0)])
    assert p._covered == 0


def test_a_failed_checkpoint_keeps_the_messages_held_until_one_succeeds(ref):
    msgs = messages(50)
    store, acked = MemStore(), []
    p = pipeline(Sink(), store, acked, ref)
    run(p, msgs)
    n = len(acked)
    store.fail = True
    assert asyncio.run(p.save_windows(force=True)) == 0 and len(acked) == n
    store.fail = False
    asyncio.run(p.save_windows(force=True))
    assert len(acked) == len(msgs)


@pytest.mark.parametrize("crash_after", [8, 25, 47, 70, 85])
def test_a_crash_resumes_the_open_window_from_its_checkpoint_with_the_same_points(crash_after, ref):
    """Run A checkpoints every 4 batches and crashes after ``crash_after`` messages; B starts from A's
    committed offset with the checkpoint: the points equal an uninterrupted run's, and B re-reads only the
    messages since A's last checkpoint (not the open windows' first rows)."""
    want = points(fault_free(ref).records)
    msgs = messages()
    sink, store, acked_a = Sink(), MemStore(), []
    a = pipeline(sink, store, acked_a, ref)
    run(a, msgs[: crash_after + 1], save_every=4)
    committed = 0
    for m in acked_a:  # acks are a contiguous prefix
        assert m.offset == committed
        committed += 1
    # re-read: at most the 4 batches of 3 messages since the last checkpoint (plus the unfinished one)
    assert crash_after + 1 - committed <= 15, (crash_after, committed)
    assert store.puts >= 1 or crash_after < 12
    after_a = list(sink.records)
    b = pipeline(sink, store, [], ref, committed=lambda t, part: committed or None)
    run(b, msgs[committed:])
    assert same(points(sink.records), want) == []
    if store.puts:  # control: without the checkpoint, the same restart loses the open windows' first rows
        control = Sink()
        control.records = list(after_a)
        run(pipeline(control, None, [], ref, committed=lambda t, part: committed or None), msgs[committed:])
        assert same(points(control.records), want) != []


def test_a_first_n_models_first_window_is_summarised_once_its_reference_is_built():
    """With ``first_n``, the first window opens before the reference exists: once it is built, the window's
    rows become a summary and its messages, like every later one, are acked at the next checkpoint."""
    msgs = messages(50)
    store, acked = MemStore(), []
    sink = Sink()
    p = pipeline(sink, store, acked, {"first_n": 30})
    run(p, msgs)
    asyncio.run(p.save_windows(force=True))
    assert len(acked) == len(msgs)
    wins = sorted((r.tags["model"], r.fields["seq"], r.fields["summarised"]) for r in sink.windows())
    assert wins and all(s == 1 for _m, _q, s in wins), wins  # the first windows too


class References:
    """The stored references a restarted worker reads (``driftwatch reference set`` wrote them)."""

    def __init__(self, refs: dict) -> None:
        self.refs = refs

    async def load(self) -> dict:
        return dict(self.refs)

    async def save(self, stored) -> None:
        return None


def set_reference(tmp_path):
    """A reference an operator sets for model m (``driftwatch reference set``): x shifted, c mostly b."""
    from detectors.reference import reference_frame
    from streams.worker.monitors import file_reference
    from streams.worker.references import ALL_VERSIONS, ORIGIN_SET, StoredReference, encode_rows

    path = tmp_path / "new.csv"
    path.write_text("x,c\n" + "".join(f"{300 + i * 2.0},{'abbb'[i % 4]}\n" for i in range(500)))
    model = config(WINDOW_CFG, {"file": str(path)}).models[0]
    ref = file_reference(model)
    rows = encode_rows(reference_frame(ref), model.features)
    stored = StoredReference("m", ALL_VERSIONS, ref.to_bytes(), "", -1, (-1, -1), 500, 0.0, ORIGIN_SET, "", rows)
    return ("m", ALL_VERSIONS), stored


@pytest.mark.parametrize("change_at", [25, 52])
def test_a_window_opened_before_a_reference_change_is_restored_with_its_reference(change_at, ref, tmp_path, caplog):
    """Worker A checkpoints its open summarised windows; an operator sets another reference for m; A stops
    (crash) and B, which knows only the new reference, takes over. B restores m's open window on the reference
    it was opened with (stored beside the checkpoints): no ERROR, no event lost, and every point equals an
    uninterrupted worker's that saw the same change at the same place (its open window keeps its reference,
    the next ones take the new one). Without the stored reference the same restart loses the window's rows."""
    key, stored = set_reference(tmp_path)
    msgs = messages()
    fault_free_sink = Sink()
    p = pipeline(fault_free_sink, None, [], ref)

    async def uninterrupted():
        for i in range(0, len(msgs), 3):
            if i == change_at - change_at % 3:
                await p._reference_changed(key, stored)
            await p.process(msgs[i : i + 3])
        await p.drain()

    asyncio.run(uninterrupted())
    want = points(fault_free_sink.records)
    cut = change_at - change_at % 3

    def crash_run(keep_reference: bool):
        sink, store, acked = Sink(), MemStore(), []
        a = pipeline(sink, store, acked, ref)
        run(a, msgs[:cut])
        asyncio.run(a.save_windows(force=True))
        assert len(acked) == cut  # everything before the change is written or in the checkpoint
        opened = [e for e in decode_entries(asyncio.run(store.restore("p0")).blob).values()]
        assert opened and all(e.n > 0 for e in opened)
        if not keep_reference:
            store.records = [r for r in store.records if not r[0].startswith(b"ref-")]
        b = pipeline(sink, store, [], ref, committed=lambda t, part: cut)
        b.references = References({key: stored})
        caplog.clear()
        run(b, msgs[cut:])
        return sink, [r for r in caplog.records if r.levelname == "ERROR"]

    with caplog.at_level("INFO"):
        sink, errors = crash_run(keep_reference=True)
        assert not errors, [r.getMessage() for r in errors]
        assert "opened with another reference than the current one" in caplog.text
        assert sum(r.fields["n_events"] for r in sink.windows()) == sum(
            r.fields["n_events"] for r in fault_free_sink.windows()
        )
        assert same(points(sink.records), want) == []
        # the control: the reference not stored beside the checkpoints (as before), the window loses its rows
        control, errors = crash_run(keep_reference=False)
        assert errors and "cannot be restored" in errors[0].getMessage()
        assert same(points(control.records), want) != []


# -- event-time windows ---------------------------------------------------------------------------------
TIME_CFG = {
    "size_seconds": 10,
    "grace_seconds": 4,
    "summary_min_seconds": 5,
    "summary_bins": 64,
    "summary_reservoir": 50,
}


def time_messages(n: int = 90) -> list:
    """Like :func:`messages`, with event times jittered back by up to 6 s: with a 4-s grace, two or three
    windows of a model are open at once and some events arrive after their window closed (dead-lettered)."""
    import numpy as np

    rng = np.random.default_rng(7)
    return [
        batch_msg("m" if i % 3 else "k", (i // 3 if i % 3 == 0 else i) * 10, 10, i, t_jitter=-rng.uniform(0, 6, 10))
        for i in range(n)
    ]


def time_pipeline(sink, store, acked, ref, committed=None):
    return pipeline(sink, store, acked, ref, committed, window=TIME_CFG)


@pytest.mark.parametrize("crash_after", [8, 25, 47, 70, 85])
def test_a_crash_resumes_the_open_time_windows_from_their_checkpoint_with_the_same_points(crash_after, ref):
    """Event-time windows: every open window of a key is checkpointed with the watermark and the closed-until
    state, and their messages acked early. Worker A checkpoints every 4 batches and crashes; B starts from A's
    committed offset and the checkpoint: the points (late events' dead letters too) equal an uninterrupted
    run's, and B re-reads only the messages since A's last checkpoint."""
    msgs = time_messages()
    fault_free_sink, dead = Sink(), []
    p = time_pipeline(fault_free_sink, None, [], ref)
    p.deadletters = DeadLetterPublisher(dl_sender(dead))
    run(p, msgs)
    want = points(fault_free_sink.records)
    wins = [r for r in fault_free_sink.windows()]
    assert len(wins) >= 8 and all(r.fields["summarised"] == 1 for r in wins)
    assert dead, "the jitter makes some events late"
    assert max(len(st.windows.open_windows) for tp in p._tps.values() for st in tp.streams.values()) >= 1

    sink, store, acked_a, dead_a = Sink(), MemStore(), [], []
    a = time_pipeline(sink, store, acked_a, ref)
    a.deadletters = DeadLetterPublisher(dl_sender(dead_a))
    run(a, msgs[: crash_after + 1], save_every=4)
    committed = 0
    for m in acked_a:  # acks are a contiguous prefix
        assert m.offset == committed
        committed += 1
    assert crash_after + 1 - committed <= 15, (crash_after, committed)
    assert store.puts >= 1 or crash_after < 12
    after_a = list(sink.records)
    restored_closed = False  # a window restored from the checkpoint is first written by B
    if store.puts:  # the checkpoint holds every open window of the key, not just one
        entries = decode_entries(asyncio.run(store.restore("p0")).blob)
        assert all(e.kind == "time" and e.windows for e in entries.values())
        ends = {int((w[0] + 1) * TIME_CFG["size_seconds"] * 1e9) for e in entries.values() for w in e.windows}
        restored_closed = any(k[0] == WINDOW and k[2] in ends for k in want.keys() - points(after_a).keys())
    dead_b: list = []
    b = time_pipeline(sink, store, [], ref, committed=lambda t, part: committed or None)
    b.deadletters = DeadLetterPublisher(dl_sender(dead_b))
    run(b, msgs[committed:])
    assert same(points(sink.records), want) == []
    # every late event dead-lettered by A or B (one A sent but whose message was not acked is sent again)
    assert {x[1] for x in dead_a + dead_b} == {x[1] for x in dead}
    if restored_closed:  # control: without the checkpoint, the same restart loses the open windows' first rows
        control = Sink()
        control.records = list(after_a)
        run(time_pipeline(control, None, [], ref, committed=lambda t, part: committed or None), msgs[committed:])
        assert same(points(control.records), want) != []


def test_a_time_checkpoint_older_than_the_newest_written_window_still_restores_the_windows_open_after_it(ref):
    """A checkpoint taken with two windows of m open, then the older one closes and is written, then a crash
    before the next checkpoint: the new owner drops the written window from the checkpoint and resumes the
    other (its first rows' messages were acked by the checkpoint, so they are not read again) — the points
    equal a fault-free run's."""
    msgs = time_messages()
    sink0 = Sink()
    run(time_pipeline(sink0, None, [], ref), msgs)
    want = points(sink0.records)
    sink, store, acked = Sink(), MemStore(), []
    a = time_pipeline(sink, store, acked, ref)

    async def until_stale() -> tuple[int, int]:
        """Checkpoint after batches until one holds two windows of m; go on until the older one is written."""
        for cut in range(0, len(msgs), 3):
            await a.process(msgs[cut : cut + 3])
            await a.drain()
            await a.save_windows(force=True)
            entry = decode_entries((await store.restore("p0")).blob).get(("t", "m", "1"))
            if entry is not None and len(entry.windows) >= 2:
                break
        assert entry is not None and len(entry.windows) >= 2, "no checkpoint with two windows of m open"
        for stop in range(cut + 3, len(msgs), 3):
            await a.process(msgs[stop : stop + 3])
            await a.drain()
            if any(r.tags["model"] == "m" and r.fields["seq"] == entry.seq for r in sink.windows()):
                return cut + 3, stop + 3
        raise AssertionError("the older window never closed")

    cut, stop = asyncio.run(until_stale())
    committed = len(acked)
    assert committed <= cut < stop, (committed, cut, stop)
    b = time_pipeline(sink, store, [], ref, committed=lambda t, part: committed)
    run(b, msgs[committed:])
    assert same(points(sink.records), want) == []
