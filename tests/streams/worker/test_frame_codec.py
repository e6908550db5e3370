"""A frame packed for the detector process comes back equal, column by column, with its repeating columns coded."""

from __future__ import annotations

import pickle

import numpy as np

from detectors.frame import Frame
from streams.worker.frame_codec import Coded, decode, encode, pack, unpack


def frame(n: int = 300, seed: int = 0) -> Frame:
    rng = np.random.default_rng(seed)
    levels = np.array(["a", "b", "ç", "", None], dtype=object)
    return Frame.from_columns(
        event_id=np.array([f"e{i}" for i in range(n)], dtype=object),
        event_time=rng.random(n),
        source_id=np.array([f"s{i % 7}" if i % 11 else None for i in range(n)], dtype=object),
        numeric={"x": rng.normal(size=n)},
        categorical={"c": levels[rng.integers(0, len(levels), n)], "d": np.full(n, None, dtype=object)},
        type_error={"x": rng.random(n) < 0.1, "c": np.zeros(n, bool), "d": np.zeros(n, bool)},
        pred_label=np.array(["yes", "no"], dtype=object)[rng.integers(0, 2, n)],
        pred_proba=rng.random((n, 2)),
        classes=("no", "yes"),
    )


def assert_frames_equal(got: Frame, want: Frame) -> None:
    for name in ("event_id", "source_id", "pred_label", "label"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and a.tolist() == b.tolist(), name
            assert [type(v) for v in a.tolist()] == [type(v) for v in b.tolist()], name
    assert got.categorical.keys() == want.categorical.keys()
    for k in want.categorical:
        assert got.categorical[k].dtype == object and got.categorical[k].tolist() == want.categorical[k].tolist(), k
    np.testing.assert_array_equal(got.event_time, want.event_time)
    np.testing.assert_array_equal(got.numeric["x"], want.numeric["x"])
    np.testing.assert_array_equal(got.pred_proba, want.pred_proba)
    assert {k: v.tolist() for k, v in got.type_error.items()} == {k: v.tolist() for k, v in want.type_error.items()}
    assert got.classes == want.classes and len(got) == len(want)


def test_a_packed_frame_survives_pickling_equal_and_its_repeating_columns_travel_as_codes():
    f = frame()
    packed = pickle.loads(pickle.dumps(pack(f), protocol=pickle.HIGHEST_PROTOCOL))
    assert isinstance(packed.categorical["c"], Coded) and isinstance(packed.columns["source_id"], Coded)
    assert isinstance(packed.columns["pred_label"], Coded)
    assert not isinstance(packed.columns["event_id"], Coded)  # unique by design: sent as it is
    assert_frames_equal(unpack(packed), f)
    # and it is smaller than the frame pickled as it is
    assert len(pickle.dumps(pack(f), protocol=5)) < len(pickle.dumps(f, protocol=5))


def test_codes_follow_first_appearance_and_values_are_the_distinct_elements():
    col = np.array(["b", None, "a", "b", "a", None, "b", "b"], dtype=object)
    c = encode(col)
    assert isinstance(c, Coded)
    assert c.values == ["b", None, "a"] and c.codes.tolist() == [0, 1, 2, 0, 2, 1, 0, 0]
    assert c.codes.dtype == np.uint8  # as narrow as the values allow
    many = encode(np.array([str(i % 300) for i in range(1000)], dtype=object))
    assert (
        isinstance(many, Coded)
        and many.codes.dtype == np.uint16
        and decode(many).tolist() == [str(i % 300) for i in range(1000)]
    )
    assert decode(c).tolist() == col.tolist()


def test_columns_that_are_not_worth_coding_or_not_safe_to_code_travel_as_they_are():
    unique = np.array([str(i) for i in range(10)], dtype=object)
    assert encode(unique) is unique  # mostly distinct values
    mixed = np.array([1, True, 1.0, "1"] * 5, dtype=object)  # 1 == True == 1.0 as dict keys: not coded
    assert encode(mixed) is mixed
    floats = np.arange(10.0)
    assert encode(floats) is floats
    empty = np.empty(0, dtype=object)
    assert encode(empty) is empty


def test_an_empty_frame_and_a_frame_with_a_label_column_round_trip():
    f = frame(0)
    assert_frames_equal(unpack(pack(f)), f)
    g = frame(50, seed=3)
    g.label = np.array([1, 0] * 25, dtype=object)  # ints: sent as they are, types kept
    got = unpack(pickle.loads(pickle.dumps(pack(g))))
    assert got.label is not None and [type(v) for v in got.label.tolist()] == [int] * 50
    assert_frames_equal(got, g)
