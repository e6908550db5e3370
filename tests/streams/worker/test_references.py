"""streams.worker.references: first_n references stored on a Kafka topic, read back past a marker (real broker)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from detectors.frame import Frame
from detectors.reference import Reference
from detectors.spec import FeatureSpec
from streams.worker.references import ReferenceStore, StoredReference, ensure_references_topic, references_topic

pytestmark = pytest.mark.integration

FEATURES = [FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="c", kind="categorical")]


def reference(seed: int, n: int = 300) -> Reference:
    rng = np.random.default_rng(seed)
    f = Frame.from_columns(
        event_id=np.arange(n).astype(str).astype(object),
        event_time=np.zeros(n),
        numeric={"x": rng.normal(size=n)},
        categorical={"c": rng.choice(np.array(["a", "b", "c"], dtype=object), n)},
    )
    return Reference.from_frame(f, FEATURES)


def stored(model: str, version: str, ref: Reference, end=(7, 3)) -> StoredReference:
    return StoredReference(model, version, ref.to_bytes(), "t.inferences", 2, end, ref.n_rows, 1.5)


def test_save_and_load_past_a_marker(settings):
    assert ensure_references_topic(settings) == references_topic(settings)
    assert ensure_references_topic(settings) == references_topic(settings)  # idempotent
    a1, a2, b = reference(1), reference(2, 500), reference(3)

    async def main():
        store = ReferenceStore(settings)
        try:
            assert await store.load() == {}  # empty topic: only our marker
            await store.save(stored("m", "1", a1))
            await store.save(stored("k", "2", b, end=(40, 0)))
            await store.save(stored("m", "1", a2, end=(9, 0)))  # the last value of a key wins
            first = await store.load()
            other = ReferenceStore(settings)  # another worker taking the partition over
            try:
                second = await other.load()
            finally:
                await other.close()
            await store.reset("k", "2")
            third = await store.load()
        finally:
            await store.close()
        return first, second, third

    first, second, third = asyncio.run(main())
    assert set(first) == {("m", "1"), ("k", "2")}
    got = first[("m", "1")]
    assert got.end_pos == (9, 0) and got.partition == 2 and got.topic == "t.inferences" and got.rows == 500
    assert got.reference().n_rows == 500
    np.testing.assert_array_equal(got.reference().numeric["x"].values, a2.numeric["x"].values)
    assert {k: v.blob for k, v in second.items()} == {k: v.blob for k, v in first.items()}
    assert set(third) == {("m", "1")}


def test_large_reference_round_trips(settings):
    ensure_references_topic(settings)
    big = reference(4, n=20_000)  # ~hundreds of KB of sorted values

    async def main():
        store = ReferenceStore(settings)
        try:
            await store.save(stored("big", "1", big))
            return await store.load()
        finally:
            await store.close()

    got = asyncio.run(main())[("big", "1")].reference()
    assert got.n_rows == 20_000
    np.testing.assert_array_equal(got.numeric["x"].values, big.numeric["x"].values)


def test_rows_are_stored_chunked_without_sensitive_features(settings, consume_all):
    """Stored rows come back as the frame the worker attached — minus sensitive features — in chunks
    of their own, which a newer save or a reset tombstones; a reference without rows still loads."""
    from detectors.reference import reference_frame
    from streams.worker.references import H_ROWS_SHA256, decode_rows, encode_rows

    ensure_references_topic(settings)
    rng = np.random.default_rng(5)
    n = 3000
    feats = [
        FeatureSpec(name="x", kind="numeric"),
        FeatureSpec(name="secret", kind="numeric", sensitive=True),
        FeatureSpec(name="c", kind="categorical"),
    ]
    proba = rng.dirichlet([1, 1, 1], n)
    frame = Frame.from_columns(
        event_id=np.arange(n).astype(str).astype(object),
        event_time=np.zeros(n),
        numeric={"x": np.where(rng.random(n) < 0.05, np.nan, rng.normal(size=n)), "secret": np.full(n, 31337.125)},
        categorical={"c": rng.choice(np.array(["a", "b", None], dtype=object), n)},
        pred_label=np.array(["k0", "k1", "k2"], dtype=object)[proba.argmax(1)],
        pred_proba=proba,
        classes=("k0", "k1", "k2"),
        pred_value=proba.max(1),
    )
    ref = Reference.from_frame(frame, feats)
    rows = encode_rows(frame, feats)
    assert b"31337" not in rows and np.float64(31337.125).tobytes() not in rows

    async def main():
        store = ReferenceStore(settings, chunk_bytes=16 * 1024)  # rows of ~100 kB: several chunks
        try:
            await store.save(StoredReference("r", "1", ref.to_bytes(), "t", 0, (5, 0), n, 1.0, rows_blob=rows))
            first = await store.load()
            await store.save(StoredReference("r", "1", ref.to_bytes(), "t", 0, (5, 0), n, 2.0))  # no rows now
            second = await store.load()
            await store.save(StoredReference("r", "1", ref.to_bytes(), "t", 0, (5, 0), n, 3.0, rows_blob=rows))
            await store.reset("r", "1")
            third = await store.load()
        finally:
            await store.close()
        return first, second, third

    first, second, third = asyncio.run(main())
    got = first[("r", "1")]
    assert got.rows_blob == rows
    back = reference_frame(got.reference())
    assert sorted(back.numeric) == ["x"] and "secret" not in back.numeric
    np.testing.assert_array_equal(back.numeric["x"], frame.numeric["x"])
    assert back.categorical["c"].tolist() == frame.categorical["c"].tolist()
    assert back.pred_label.tolist() == frame.pred_label.tolist() and back.classes == frame.classes
    np.testing.assert_array_equal(back.pred_proba, frame.pred_proba)
    np.testing.assert_array_equal(back.pred_value, frame.pred_value)
    assert reference_frame(got.reference(rows=False)) is None
    assert second[("r", "1")].rows_blob == b"" and reference_frame(second[("r", "1")].reference()) is None
    assert third == {}
    recs = consume_all(settings, references_topic(settings), timeout=10, idle=1.0)
    live: dict[bytes, bytes | None] = {}
    for r in recs:
        live[r.key] = r.value
    assert [k for k, v in live.items() if k.startswith(b"__chunk__/") and v is not None] == []  # all tombstoned
    assert any(dict(r.headers).get(H_ROWS_SHA256) for r in recs)
    assert max(len(r.value or b"") for r in recs) <= 16 * 1024
    with pytest.raises(ValueError, match="not stored reference rows"):
        decode_rows(b"garbage")
