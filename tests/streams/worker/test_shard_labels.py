"""Labels of a sharded model: each shard joins its labels, its merge owner attributes and reports them.

Hook level (no broker): shard joins publish numbered batches of joined rows (:class:`ShardRows`, round-tripped
through bytes), the merge owner's :class:`LabelHook` takes them in and attributes them to merged windows.
The realized metrics per window are checked against scikit-learn over the window's labelled rows, and
against an unsharded model fed the same traffic; a batch published again (a shard restored from its
checkpoint) is dropped by the merge owner.
"""

from __future__ import annotations

import asyncio

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from detectors import records as R
from detectors.frame import Frame
from streams.alerts.partitions import merge_slot
from streams.wire.contract import shard_of
from streams.worker.decode import LabelPart, StreamKey
from streams.worker.label_changelog import partition_key, route
from streams.worker.labels import LabelHook, shard_join_id
from streams.worker.monitors import parse_monitors
from streams.worker.shards import ShardRows, read_message
from tests.streams.worker.changelogs import MemoryStore

SHARDS = 4
WINDOW = 400
N = 1600
T0 = 1_700_000_000.0
CLASSES = ("no", "yes")


class SlotChangelog(MemoryStore):
    """The label changelog's records in a list, keyed and routed as the Kafka one (merge slots included)."""

    async def save(self, partition: int, gen: int, blob: bytes) -> int:
        return await self.put(partition_key(partition), gen, blob, route=route(partition))

    async def load(self, partition: int):
        return await self.restore(partition_key(partition), route=route(partition))


def config(tmp_path):
    ref = tmp_path / "ref.csv"
    ref.write_text("x\n1\n2\n")
    model = {
        "features": [{"name": "x", "kind": "numeric"}],
        "window": {"size_events": WINDOW},
        "reference": {"file": str(ref)},
        "labels": {"ttl_seconds": 86_400, "online": {"enabled": False}},
    }
    return parse_monitors({"models": [{"model_id": "hot", "shards": SHARDS, **model}, {"model_id": "flat", **model}]})


def traffic(seed: int = 4):
    rng = np.random.default_rng(seed)
    ids = np.array([f"e-{i}" for i in range(N)], dtype=object)
    t = T0 + np.arange(N) * 0.01
    proba = rng.dirichlet([1, 1], N)
    pred = np.where(proba[:, 1] > 0.5, "yes", "no").astype(object)
    truth = np.where(rng.random(N) < proba[:, 1], "yes", "no").astype(object)
    label_time = t + rng.uniform(1, 30, N)
    return ids, t, proba, pred, truth, label_time


def frame(sel, ids, t, proba, pred) -> Frame:
    return Frame.from_columns(
        event_id=ids[sel], event_time=t[sel], pred_label=pred[sel], pred_proba=proba[sel], classes=CLASSES
    )


class Window:
    """What :meth:`LabelHook.on_window` reads of a closed window."""

    def __init__(self, k: int, t: np.ndarray) -> None:
        self.end_time = float(t[(k + 1) * WINDOW - 1])
        self.time_ns = int(round(self.end_time * 1e9))


ORDER_DEPENDENT = ("cbpe_value", "estimation_error")
"""CBPE's estimate of the labelled rows: its calibration rows are the first joined ones in the merge owner's
feed order, which is not an unsharded join's order (docs/scale-out.md)."""


def realized(records, exact: bool = False) -> dict:
    """(metric, window time) -> fields of the last realized point written; floats to 10 significant digits
    (sums such as the log loss's add in another order) and without :data:`ORDER_DEPENDENT` unless ``exact``."""
    out = {}
    for r in records:
        if r.measurement == R.PERFORMANCE and r.tags[R.T_DETECTOR] == "realized":
            fields = {
                k: float(f"{v:.10g}") if isinstance(v, float) and not exact else v
                for k, v in r.fields.items()
                if exact or k not in ORDER_DEPENDENT
            }
            out[(r.tags[R.T_METRIC], r.time_ns)] = fields
    return out


def run_sharded(tmp_path, republish: bool = False):
    """Shard hooks (one per shard, one worker each) and a merge owner; returns the merge owner's records."""
    mons = config(tmp_path)
    ids, t, proba, pred, truth, label_time = traffic()
    shard = np.array([shard_of(i, SHARDS) for i in ids])
    sent: list[bytes] = []

    async def publish(model_id, partition, seq, rows, stats):
        sent.append(ShardRows(model_id, partition, seq, rows, stats).to_bytes())

    shards = []
    for _s in range(SHARDS):
        h = LabelHook(mons, store=SlotChangelog(), background=False)
        h.publish = publish
        shards.append(h)
    owner = LabelHook(mons, background=False)
    slot = merge_slot(2)
    owner.merge_model("hot", slot)
    key = StreamKey("partials", slot, "hot", "1")
    records = []
    fresh = []

    async def go():
        for half in (slice(0, N // 2), slice(N // 2, N)):  # predictions, then their labels, in two rounds
            for s, h in enumerate(shards):
                sel = np.flatnonzero(shard == s)
                sel = sel[(sel >= half.start) & (sel < half.stop)]
                h.on_predictions(StreamKey("inferences", s, "hot", "1"), frame(sel, ids, t, proba, pred))
                order = sel[np.argsort(label_time[sel], kind="stable")]
                h.on_labels(LabelPart("labels", s, "hot", ids[order], truth[order], label_time[order], order))
                await h.snapshot_if_due(force=True)
            for blob in sent:
                got = read_message(blob)
                assert isinstance(got, ShardRows)
                fresh.append(owner.on_shard_rows(got.model_id, slot, got.partition, got.seq, got.rows, got.stats))
            if republish:  # every batch again (a shard's worker restored from its checkpoint): dropped
                for blob in sent:
                    got = read_message(blob)
                    assert not owner.on_shard_rows(got.model_id, slot, got.partition, got.seq, got.rows, got.stats)
            sent.clear()
            for k in range(N // WINDOW):
                if (k + 1) * WINDOW <= half.stop and Window(k, t).time_ns not in {w for _, w in owner._res["hot"].keys}:
                    records.extend(owner.on_window(key, Window(k, t)).records)
            records.extend(owner.flush().records)

    asyncio.run(go())
    assert all(fresh)
    return records, shards


def run_flat(tmp_path):
    mons = config(tmp_path)
    ids, t, proba, pred, truth, label_time = traffic()
    h = LabelHook(mons, background=False)
    key = StreamKey("inferences", 0, "flat", "1")
    records = []
    for half in (slice(0, N // 2), slice(N // 2, N)):
        sel = np.arange(half.start, half.stop)
        h.on_predictions(key, frame(sel, ids, t, proba, pred))
        order = sel[np.argsort(label_time[sel], kind="stable")]
        h.on_labels(LabelPart("labels", 0, "flat", ids[order], truth[order], label_time[order], order))
        for k in range(N // WINDOW):
            if half.start <= k * WINDOW < half.stop:
                records.extend(h.on_window(key, Window(k, t)).records)
        records.extend(h.flush().records)
    return records


def test_a_sharded_models_realized_performance_equals_sklearn_and_the_unsharded_models(tmp_path):
    records, shards = run_sharded(tmp_path)
    got = realized(records, exact=True)
    ids, t, _proba, pred, truth, label_time = traffic()
    assert {w for _, w in got} == {Window(k, t).time_ns for k in range(N // WINDOW)}
    for k in range(N // WINDOW):
        w = Window(k, t).time_ns
        sel = slice(k * WINDOW, (k + 1) * WINDOW)
        y, p = truth[sel].astype(str), pred[sel].astype(str)
        assert got[("accuracy", w)]["n"] == WINDOW
        np.testing.assert_allclose(got[("accuracy", w)]["value"], accuracy_score(y, p), rtol=1e-12)
        np.testing.assert_allclose(got[("f1", w)]["value"], f1_score(y, p, average="macro"), rtol=1e-12)
        np.testing.assert_allclose(got[("precision", w)]["value"], precision_score(y, p, average="macro"), rtol=1e-12)
        np.testing.assert_allclose(got[("recall", w)]["value"], recall_score(y, p, average="macro"), rtol=1e-12)
        delays = label_time[sel] - t[sel]
        np.testing.assert_allclose(got[("accuracy", w)]["label_delay_p50"], np.quantile(delays, 0.5), rtol=1e-12)
    flat = run_flat(tmp_path)
    assert realized(records) == realized(flat)  # every realized field, label delays included
    # CBPE calibrated on the joined rows at the merge owner as it does unsharded: both estimate the labelled rows
    assert all("cbpe_value" in f for (m, _), f in realized(records, exact=True).items() if m == "accuracy")
    assert all("cbpe_value" in f for (m, _), f in realized(flat, exact=True).items() if m == "accuracy")
    # each shard joined its own events: one join per shard, nothing left waiting
    for s, h in enumerate(shards):
        assert set(h._joins) == {shard_join_id("hot", s)}
        assert h._joins[shard_join_id("hot", s)].stats.matched == int(sum(shard_of(i, SHARDS) == s for i in ids))
    # the model's join counters: the sum of its shards', as an unsharded join counts the same traffic
    joins = [r for r in records if r.measurement == R.PERFORMANCE and r.tags[R.T_METRIC] == "label_join"]
    flat_joins = [r for r in flat if r.measurement == R.PERFORMANCE and r.tags[R.T_METRIC] == "label_join"]
    want = {
        k: sum(h._joins[shard_join_id("hot", s)].stats.as_fields()[k] for s, h in enumerate(shards))
        for k in joins[-1].fields
    }
    assert joins[-1].fields == want
    assert joins[-1].fields == flat_joins[-1].fields
    assert (want["predictions"], want["labels"], want["matched"]) == (N, N, N)


def test_a_batch_published_again_is_dropped_by_the_merge_owner(tmp_path):
    assert realized(run_sharded(tmp_path, republish=True)[0]) == realized(run_sharded(tmp_path)[0])


def test_a_shards_unpublished_batch_is_in_its_checkpoint_and_published_again_under_its_number(tmp_path):
    """A checkpoint holds the shard's batch before it is published; a worker restoring the shard (the first
    crashed before publishing, or after it: the merge owner then drops the copy) publishes the same rows
    under the same number."""
    mons = config(tmp_path)
    ids, t, proba, pred, truth, label_time = traffic()
    sel = np.flatnonzero(np.array([shard_of(i, SHARDS) for i in ids]) == 1)[:50]
    store = SlotChangelog()
    first: list[tuple[int, int, int]] = []

    async def broken(model_id, partition, seq, rows, stats):
        raise ConnectionError("broker away")

    async def ok(model_id, partition, seq, rows, stats):
        first.append((partition, seq, len(rows)))

    async def go():
        h = LabelHook(mons, store=store, background=False)
        h.publish = broken
        h.on_predictions(StreamKey("inferences", 1, "hot", "1"), frame(sel, ids, t, proba, pred))
        h.on_labels(LabelPart("labels", 1, "hot", ids[sel], truth[sel], label_time[sel], sel))
        await h.snapshot_if_due(force=True)  # checkpointed with its outbox, publishing failed
        assert first == []
        h2 = LabelHook(mons, store=store, background=False)
        h2.publish = ok
        await h2.restore_partitions([1])
        await h2.snapshot_if_due()
        assert first == [(1, 0, 50)]
        h2.on_labels(LabelPart("labels", 1, "hot", ids[sel], truth[sel], label_time[sel], sel))  # already fed
        h2.on_predictions(StreamKey("inferences", 1, "hot", "1"), frame(sel, ids, t, proba, pred))
        await h2.snapshot_if_due(force=True)
        assert [f for f in first if f[2]] == [(1, 0, 50)]  # no row published twice (the counters changed: a batch)

    asyncio.run(go())
