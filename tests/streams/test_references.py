"""streams.references: first_n references stored on a Kafka topic, read back past a marker (real broker)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from detectors.frame import Frame
from detectors.reference import Reference
from detectors.spec import FeatureSpec
from streams.references import ReferenceStore, StoredReference, ensure_references_topic, references_topic

pytestmark = pytest.mark.integration

FEATURES = [FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="c", kind="categorical")]


def reference(seed: int, n: int = 300) -> Reference:
    rng = np.random.default_rng(seed)
    f = Frame.from_columns(event_id=np.arange(n).astype(str).astype(object), event_time=np.zeros(n),
                           numeric={"x": rng.normal(size=n)},
                           categorical={"c": rng.choice(np.array(["a", "b", "c"], dtype=object), n)})
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
