"""streams.worker.decode: bulk decode, type errors, dead-letter reasons, nothing lost."""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pytest

from streams.worker import decode as D
from streams.worker.decode import Decoder, RawMessage, StreamKey
from streams.worker.monitors import parse_monitors

NOW_MS = 1_764_355_200_000  # Kafka timestamp used for the messages
T0 = NOW_MS / 1000 - 3600.0

CFG = parse_monitors(
    {
        "models": [
            {
                "model_id": "m",
                "features": [
                    {"name": "x", "kind": "numeric"},
                    {"name": "y", "kind": "numeric"},
                    {"name": "c", "kind": "categorical"},
                ],
            },
            {"model_id": "other", "features": [{"name": "x", "kind": "numeric"}]},
        ]
    }
)


def msg(value, offset=0, key=b"m", partition=0, ts=NOW_MS) -> RawMessage:
    if not isinstance(value, (bytes, type(None))):
        value = orjson.dumps(value)
    return RawMessage(value, key, "t", partition, offset, ts)


def batch(n=4, model="m", version="1", start=0, **over) -> dict:
    doc = {
        "schema_version": 1,
        "type": "inference_batch",
        "model_id": model,
        "model_version": version,
        "event_id": [f"e{start + i}" for i in range(n)],
        "event_time": [T0 + start + i for i in range(n)],
        "source_id": ["s1"] * n,
        "features": {
            "x": [0.5 * (start + i) for i in range(n)],
            "y": [float(i % 3) for i in range(n)],
            "c": ["a", "b", "a", None][:n] + ["b"] * max(0, n - 4),
        },
        "prediction": {
            "label": ["p", "q"] * (n // 2) + ["p"] * (n % 2),
            "probabilities": {"p": [0.9] * n, "q": [0.1] * n},
        },
    }
    doc.update(over)
    return doc


def rows_of(doc: dict) -> list[dict]:
    """The same events as single-event objects (what a row producer would send)."""
    n = len(doc["event_id"])
    out = []
    for i in range(n):
        pred = {}
        for k, v in doc["prediction"].items():
            pred[k] = {c: col[i] for c, col in v.items()} if k == "probabilities" else v[i]
        out.append(
            {
                "schema_version": 1,
                "type": "inference",
                "event_id": doc["event_id"][i],
                "model_id": doc["model_id"],
                "model_version": doc["model_version"],
                "event_time": doc["event_time"][i],
                "source_id": doc["source_id"][i],
                "features": {k: v[i] for k, v in doc["features"].items()},
                "prediction": pred,
            }
        )
    return out


def decode(*messages, **kw):
    return Decoder(CFG, **kw).decode(list(messages))


def only_dead(out) -> D.DeadLetter:
    assert not out.frames and not out.labels
    assert len(out.dead) == 1, out.dead
    return out.dead[0]


# ------------------------------------------------------------------ good input


def test_column_batch_decodes_to_columns():
    doc = batch(4)
    out = decode(msg(doc, offset=7))
    assert out.dead == []
    part = out.frames[StreamKey("t", 0, "m", "1")]
    f = part.frame
    assert part.origin.tolist() == [7, 7, 7, 7]
    assert f.event_id.tolist() == doc["event_id"]
    np.testing.assert_array_equal(f.event_time, np.array(doc["event_time"]))
    np.testing.assert_array_equal(f.numeric["x"], np.array(doc["features"]["x"]))
    assert f.categorical["c"].tolist() == ["a", "b", "a", None]
    assert f.pred_label.tolist() == ["p", "q", "p", "q"]
    assert f.classes == ("p", "q")
    np.testing.assert_array_equal(f.pred_proba, np.array([[0.9, 0.1]] * 4))
    assert not any(te.any() for te in f.type_error.values())


def test_rows_single_events_and_columns_decode_to_the_same_frame():
    doc = batch(6)
    by_batch = decode(msg(doc)).frames[StreamKey("t", 0, "m", "1")].frame
    by_array = decode(msg(rows_of(doc))).frames[StreamKey("t", 0, "m", "1")].frame
    singles = [msg(r, offset=i) for i, r in enumerate(rows_of(doc))]
    out = decode(*singles)
    part = out.frames[StreamKey("t", 0, "m", "1")]
    assert part.origin.tolist() == list(range(6))
    for f in (by_array, part.frame):
        assert f.event_id.tolist() == by_batch.event_id.tolist()
        np.testing.assert_array_equal(f.event_time, by_batch.event_time)
        for k in by_batch.numeric:
            np.testing.assert_array_equal(f.numeric[k], by_batch.numeric[k])
        for k in by_batch.categorical:
            assert f.categorical[k].tolist() == by_batch.categorical[k].tolist()
        assert f.pred_label.tolist() == by_batch.pred_label.tolist()
        np.testing.assert_array_equal(f.pred_proba, by_batch.pred_proba)
        assert f.classes == by_batch.classes


def test_iso_event_time_in_single_events():
    row = rows_of(batch(1))[0]
    row["event_time"] = "2025-11-28T20:00:00Z"
    out = decode(msg(row, ts=None))
    f = out.frames[StreamKey("t", 0, "m", "1")].frame
    assert f.event_time[0] == pytest.approx(1764360000.0)


def test_missing_feature_columns_and_unknown_features():
    doc = batch(3)
    del doc["features"]["y"]
    doc["features"]["unmonitored"] = [1, 2, 3]
    f = decode(msg(doc)).frames[StreamKey("t", 0, "m", "1")].frame
    assert np.isnan(f.numeric["y"]).all()
    assert not f.type_error["y"].any()
    assert "unmonitored" not in f.numeric


def test_keys_per_partition_model_and_version():
    out = decode(
        msg(batch(2)),
        msg(batch(2, version="2"), 1),
        msg(batch(2), 2, partition=3),
        msg(batch(2, model="other"), 3, key=b"other"),
    )
    assert set(out.frames) == {
        StreamKey("t", 0, "m", "1"),
        StreamKey("t", 0, "m", "2"),
        StreamKey("t", 3, "m", "1"),
        StreamKey("t", 0, "other", "1"),
    }
    assert out.unkeyed == set()


def test_unkeyed_messages_are_reported():
    out = decode(msg(batch(2), key=b"something-else"))
    assert out.unkeyed == {("t", 0, "m")}
    assert len(out.frames) == 1


def test_order_across_messages_is_kept():
    a, b, c = batch(2, start=0), batch(2, start=10), batch(2, start=20)
    singles = rows_of(batch(2, start=100))
    out = decode(msg(a, 0), msg(singles[0], 1), msg(b, 2), msg(singles[1], 3), msg(c, 4))
    part = out.frames[StreamKey("t", 0, "m", "1")]
    assert part.frame.event_id.tolist() == ["e0", "e1", "e100", "e10", "e11", "e101", "e20", "e21"]
    assert part.origin.tolist() == [0, 0, 1, 2, 2, 3, 4, 4]


# ------------------------------------------------------------------ type errors (not dead letters)


def test_type_errors_are_masked_not_dead_lettered():
    doc = batch(4)
    doc["features"]["x"] = [1.0, "oops", None, [1]]
    doc["features"]["y"] = [1, True, 2.5, "3"]  # "3" is a string: a type error even though it parses
    doc["features"]["c"] = ["a", 3, 1.5, {"k": 1}]
    out = decode(msg(doc))
    assert out.dead == []
    f = out.frames[StreamKey("t", 0, "m", "1")].frame
    np.testing.assert_array_equal(f.numeric["x"], [1.0, np.nan, np.nan, np.nan])
    assert f.type_error["x"].tolist() == [False, True, False, True]  # None is missing, not a type error
    np.testing.assert_array_equal(f.numeric["y"], [1.0, 1.0, 2.5, np.nan])
    assert f.type_error["y"].tolist() == [False, False, False, True]
    assert f.categorical["c"].tolist() == ["a", "3", None, None]
    assert f.type_error["c"].tolist() == [False, False, True, True]


def test_type_errors_in_rows_match_columns():
    doc = batch(4)
    doc["features"]["x"] = [1.0, "oops", None, 2.0]
    a = decode(msg(doc)).frames[StreamKey("t", 0, "m", "1")].frame
    b = decode(msg(rows_of(doc))).frames[StreamKey("t", 0, "m", "1")].frame
    assert a.type_error["x"].tolist() == b.type_error["x"].tolist() == [False, True, False, False]


def test_integers_beyond_float_range_are_non_finite():
    doc = batch(2)
    doc["features"]["x"] = [10**400, 1.0]
    value = json.dumps(doc).encode()  # orjson cannot even write it
    dl = only_dead(decode(msg(value)))
    assert dl.reason == D.R_NON_FINITE
    doc["features"]["x"] = [10**30, 1.0]  # big but a float: fine
    f = decode(msg(json.dumps(doc).encode())).frames[StreamKey("t", 0, "m", "1")].frame
    assert f.numeric["x"].tolist() == [1e30, 1.0]


# ------------------------------------------------------------------ dead letters: whole message


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, D.R_EMPTY),
        (b"", D.R_EMPTY),
        (b"[]", D.R_EMPTY),
        (b"\xff\xfe{}", D.R_INVALID_ENCODING),
        (b'{"a": "\xed\xa0\x80"}', D.R_INVALID_ENCODING),
        (b"{not json", D.R_INVALID_JSON),
        (b'{"a": 1', D.R_INVALID_JSON),
        (b'{"x": NaN}', D.R_NON_FINITE),
        (b"[Infinity]", D.R_NON_FINITE),
        (b'{"x": -Infinity}', D.R_NON_FINITE),
        (b'{"x": 1e400}', D.R_NON_FINITE),
        (b"[" * 2000 + b"]" * 2000, D.R_TOO_DEEP),
        (b'"just a string"', D.R_SCHEMA),
        (b"42", D.R_SCHEMA),
    ],
)
def test_unparseable_values(value, reason):
    dl = only_dead(decode(msg(value)))
    assert dl.reason == reason
    assert dl.rows is None
    assert dl.detail


def test_too_large():
    big = orjson.dumps(batch(2000))
    dl = only_dead(decode(msg(big), max_message_bytes=len(big) - 1))
    assert dl.reason == D.R_TOO_LARGE and str(len(big)) in dl.detail


def test_unknown_model_whole_batch_counts_its_events():
    dl = only_dead(decode(msg(batch(5, model="nope"))))
    assert dl.reason == D.R_UNKNOWN_MODEL and dl.n_events == 5 and "nope" in dl.detail


def test_unsupported_schema_version():
    dl = only_dead(decode(msg(batch(3, schema_version=2))))
    assert dl.reason == D.R_UNSUPPORTED_VERSION and dl.n_events == 3


def test_structurally_broken_batch_goes_whole_with_schema_detail():
    doc = batch(4)
    doc["event_time"] = doc["event_time"][:3]  # lengths differ
    dl = only_dead(decode(msg(doc)))
    assert dl.reason == D.R_SCHEMA and dl.rows is None and dl.n_events == 4
    doc = batch(4)
    del doc["prediction"]
    dl = only_dead(decode(msg(doc)))
    assert dl.reason == D.R_SCHEMA
    assert "prediction" in dl.detail and "Field required" in dl.detail  # pydantic's own message


def test_extra_key_in_batch_is_schema():
    dl = only_dead(decode(msg(batch(2, surprise=1))))
    assert dl.reason == D.R_SCHEMA and "surprise" in dl.detail


def test_version_must_be_a_string():
    dl = only_dead(decode(msg(batch(2, model_version=2))))
    assert dl.reason == D.R_SCHEMA and "model_version" in dl.detail


# ------------------------------------------------------------------ dead letters: single rows


def test_one_bad_row_in_a_column_batch_only_that_row():
    doc = batch(5)
    doc["event_id"][2] = 17
    doc["event_time"][4] = -5.0
    out = decode(msg(doc))
    f = out.frames[StreamKey("t", 0, "m", "1")].frame
    assert f.event_id.tolist() == ["e0", "e1", "e3"]
    by = {d.reason: d for d in out.dead}
    assert by[D.R_SCHEMA].rows == (2,) and "event_id[2]" in by[D.R_SCHEMA].detail
    assert by[D.R_BAD_TIME].rows == (4,)
    assert out.n_events() == 5


def test_one_bad_row_in_a_json_array_only_that_row():
    rows = rows_of(batch(4))
    rows[1]["features"] = "not a dict"
    rows[3] = "not an object"
    out = decode(msg(rows))
    assert out.frames[StreamKey("t", 0, "m", "1")].frame.event_id.tolist() == ["e0", "e2"]
    (dl,) = out.dead
    assert dl.reason == D.R_SCHEMA and dl.rows == (1, 3) and dl.n_events == 2
    assert "event [1]" in dl.detail


def test_rows_of_unknown_models_and_bad_versions_in_an_array():
    rows = rows_of(batch(3))
    rows[0]["model_id"] = "nope"
    rows[2]["schema_version"] = 9
    out = decode(msg(rows))
    by = {d.reason: d for d in out.dead}
    assert by[D.R_UNKNOWN_MODEL].rows == (0,)
    assert by[D.R_UNSUPPORTED_VERSION].rows == (2,)
    assert len(out.frames[StreamKey("t", 0, "m", "1")].frame) == 1


def test_bad_single_event_is_whole_message():
    row = rows_of(batch(1))[0]
    del row["event_id"]
    dl = only_dead(decode(msg(row)))
    assert dl.reason == D.R_SCHEMA and dl.rows is None and dl.n_events == 1
    assert "event_id" in dl.detail


def test_bad_time_future_relative_to_kafka_timestamp():
    doc = batch(3)
    doc["event_time"][1] = NOW_MS / 1000 + 10 * 86400
    out = decode(msg(doc), max_future_s=86400)
    (dl,) = out.dead
    assert dl.reason == D.R_BAD_TIME and dl.rows == (1,) and "Kafka timestamp" in dl.detail
    assert len(out.frames[StreamKey("t", 0, "m", "1")].frame) == 2


def test_bad_time_strings_and_bools():
    doc = batch(3)
    doc["event_time"] = [T0, "yesterday", True]
    out = decode(msg(doc))
    assert {d.reason for d in out.dead} == {D.R_SCHEMA}
    assert out.dead[0].rows == (1, 2)


def test_prediction_missing_for_a_row():
    doc = batch(3)
    doc["prediction"] = {"label": ["p", None, "q"]}
    out = decode(msg(doc))
    (dl,) = out.dead
    assert dl.rows == (1,) and "prediction needs" in dl.detail


def test_probabilities_not_numbers():
    doc = batch(2)
    doc["prediction"]["probabilities"]["p"][0] = "high"
    (dl,) = decode(msg(doc)).dead
    assert dl.reason == D.R_SCHEMA and dl.rows == (0,) and "probabilities" in dl.detail


# ------------------------------------------------------------------ labels


def test_label_batch_and_label_events():
    lb = {
        "schema_version": 1,
        "type": "label_batch",
        "model_id": "m",
        "event_id": ["e1", "e2"],
        "label": ["p", 1],
        "label_time": [T0, T0 + 1],
    }
    le = {"type": "label", "event_id": "e3", "model_id": "m", "label": True, "label_time": T0 + 2}
    out = decode(msg(lb, 0), msg(le, 1), msg([le, {**le, "event_id": "e4"}], 2))
    assert out.dead == [] and not out.frames
    ids = [x for p in out.labels for x in p.event_id.tolist()]
    assert ids == ["e1", "e2", "e3", "e3", "e4"]
    assert out.labels[0].label.tolist() == ["p", 1]
    assert out.n_events() == 5


def test_bad_label_rows():
    lb = {
        "type": "label_batch",
        "model_id": "m",
        "event_id": ["e1", "e2", "e3"],
        "label": ["p", None, "q"],
        "label_time": [T0, T0, -1.0],
    }
    out = decode(msg(lb))
    assert sorted((d.reason, d.rows) for d in out.dead) == [(D.R_BAD_TIME, (2,)), (D.R_SCHEMA, (1,))]
    assert out.labels[0].event_id.tolist() == ["e1"]
    assert out.n_events() == 3


def test_label_batch_unknown_model():
    lb = {"type": "label_batch", "model_id": "zz", "event_id": ["e1"], "label": [1], "label_time": [T0]}
    dl = only_dead(decode(msg(lb)))
    assert dl.reason == D.R_UNKNOWN_MODEL


# ------------------------------------------------------------------ nothing is lost


def test_counts_add_up_over_a_mixed_stream():
    rng = np.random.default_rng(3)
    messages, produced = [], 0
    for off in range(200):
        kind = rng.integers(0, 6)
        if kind == 0:
            doc = batch(int(rng.integers(1, 30)), start=off * 100)
            if rng.random() < 0.5:
                doc["event_id"][0] = None
            produced += len(doc["event_id"])
            messages.append(msg(doc, off))
        elif kind == 1:
            rows = rows_of(batch(int(rng.integers(1, 10)), start=off * 100))
            if rng.random() < 0.5:
                rows[-1]["model_id"] = "nope"
            produced += len(rows)
            messages.append(msg(rows, off))
        elif kind == 2:
            produced += 1
            messages.append(msg(rows_of(batch(1, start=off * 100))[0], off))
        elif kind == 3:
            produced += 1
            messages.append(msg(b'{"x": NaN', off))
        elif kind == 4:
            doc = batch(7, start=off * 100)
            doc["features"]["x"] = doc["features"]["x"][:3]
            produced += 7
            messages.append(msg(doc, off))
        else:
            produced += 3
            messages.append(
                msg(
                    {
                        "type": "label_batch",
                        "model_id": "m",
                        "event_id": ["a", "b", "c"],
                        "label": [1, 2, 3],
                        "label_time": [T0] * 3,
                    },
                    off,
                )
            )
    out = decode(*messages)
    assert out.n_events() == produced
    # every dead letter points at its message and a known reason
    assert {d.reason for d in out.dead} <= set(D.REASONS)
    assert all(d.message in messages for d in out.dead)


def test_frames_hold_no_nan_times():
    doc = batch(4)
    doc["event_time"][0] = None
    out = decode(msg(doc))
    f = out.frames[StreamKey("t", 0, "m", "1")].frame
    assert np.isfinite(f.event_time).all() and len(f) == 3
    assert math.isclose(f.event_time[0], T0 + 1)


# ------------------------------------------------------------------ floods of bad single events


def test_single_events_between_batches_are_validated_together_and_kept_in_order():
    """Single events cut into many segments by column batches are validated as one column set;
    the good ones keep their place between the batches, the bad ones are dead letters, in offset order."""
    singles = rows_of(batch(6, start=100))
    singles[1]["event_time"] = -5.0  # bad time
    singles[4]["event_time"] = "yesterday"  # not a time
    msgs, expect = [], []
    for i in range(6):
        msgs.append(msg(batch(2, start=10 * i), 2 * i))
        expect += [f"e{10 * i}", f"e{10 * i + 1}"]
        msgs.append(msg(singles[i], 2 * i + 1))
        if i not in (1, 4):
            expect.append(f"e{100 + i}")
    out = decode(*msgs)
    part = out.frames[StreamKey("t", 0, "m", "1")]
    assert part.frame.event_id.tolist() == expect
    assert part.origin.tolist() == sorted(part.origin.tolist())
    assert [(d.message.offset, d.reason) for d in out.dead] == [(3, D.R_BAD_TIME), (9, D.R_SCHEMA)]
    assert out.n_events() == 6 * 2 + 6


def test_dead_letters_come_out_in_source_order():
    msgs = [
        msg(b"{bad", 0),
        msg(batch(3), 1),
        msg(b"", 2),
        msg(batch(2, event_id=["", "ok"]), 3),
        msg(b"[1", 4),
        msg(batch(2, model="nope"), 5),
    ]
    out = decode(*msgs)
    assert [d.message.offset for d in out.dead] == [0, 2, 3, 4, 5]


def test_schema_details_from_pydantic_are_budgeted_per_call():
    """Each dead letter gets a detail; only the first few per call are worded by pydantic."""
    bad = [msg({k: v for k, v in rows_of(batch(1, start=i))[0].items() if k != "prediction"}, i) for i in range(40)]
    out = decode(*bad)
    assert len(out.dead) == 40 and all(d.reason == D.R_SCHEMA and d.detail for d in out.dead)
    worded = [d for d in out.dead if "Field required" in d.detail]
    assert len(worded) == Decoder.SCHEMA_DETAILS_PER_CALL
    assert all("prediction" in d.detail for d in out.dead)


# ------------------------------------------------------------------ events and references read values one way


@pytest.mark.parametrize("kind", ["categorical", "boolean"])
def test_pandas_booleans_in_the_reference_match_json_booleans_in_events(tmp_path, kind):
    """A reference CSV written by pandas holds True/False, events carry true/false: the same distribution
    must not drift (it drifted with p = 0 in every window when the two were read differently)."""
    import pandas as pd
    from scipy.stats import chi2_contingency

    from detectors.reference import Reference
    from detectors.spec import DriftSpec
    from detectors.univariate import univariate_drift

    rng = np.random.default_rng(3)
    cfg = parse_monitors(
        {"models": [{"model_id": "m", "features": [{"name": "flag", "kind": kind}, {"name": "x", "kind": "numeric"}]}]}
    )
    feats = cfg.models[0].features
    pd.DataFrame({"flag": rng.random(2000) < 0.3, "x": rng.normal(size=2000)}).to_csv(tmp_path / "ref.csv", index=False)
    reference = Reference.from_file(tmp_path / "ref.csv", feats)
    flags = (rng.random(1000) < 0.3).tolist()
    doc = batch(1000, features={"flag": flags, "x": rng.normal(size=1000).tolist()})
    frame = Decoder(cfg).decode([msg(doc)]).frames[StreamKey("t", 0, "m", "1")].frame
    assert set(frame.categorical["flag"].tolist()) == {"true", "false"}
    result = univariate_drift(frame, reference, DriftSpec())
    flag = result.feature("flag")
    ref_counts = reference.categorical["flag"].counts  # false, true
    cur_counts = [flags.count(False), flags.count(True)]
    expected_p = chi2_contingency([ref_counts, cur_counts]).pvalue  # independent computation (Yates, as scipy)
    assert flag.p_value == pytest.approx(expected_p, rel=1e-6, abs=1e-12)
    assert flag.p_value > 0.001 and not flag.drift


def test_a_boolean_feature_reads_every_spelling_in_events():
    cfg = parse_monitors({"models": [{"model_id": "m", "features": [{"name": "b", "kind": "boolean"}]}]})
    doc = batch(6, features={"b": [True, "true", 1, "False", 0, "maybe"]})
    frame = Decoder(cfg).decode([msg(doc)]).frames[StreamKey("t", 0, "m", "1")].frame
    assert frame.categorical["b"].tolist() == ["true", "true", "true", "false", "false", None]
    assert frame.type_error["b"].tolist() == [False] * 5 + [True]  # counted by data quality, not dropped


def test_undeclared_features_are_counted_and_named_not_dropped():
    """docs/producer.md's example sends a `note` the config does not declare: a typo'd name must show."""
    from detectors.quality import undeclared_features

    doc = batch(4)
    doc["features"]["note"] = ["vip", None, "x", "y"]
    doc["features"]["colour"] = [None, None, None, "red"]  # a typo of c
    doc["features"]["empty"] = [None] * 4  # carried by no event: nothing to report
    frame = decode(msg(doc)).frames[StreamKey("t", 0, "m", "1")].frame
    assert sorted(frame.unknown) == ["colour", "note"]
    assert frame.unknown["note"].tolist() == [True, False, True, True]
    q = undeclared_features(frame)
    assert q == {"n": 4, "n_unknown_feature": 3, "unknown_feature_rate": 0.75, "features": "note=3, colour=1"}
    rows = decode(msg(rows_of(doc))).frames[StreamKey("t", 0, "m", "1")].frame  # rows: the same counts
    assert undeclared_features(rows) == q
    assert undeclared_features(frame.take(np.array([1, 2]))) == {
        "n": 2,
        "n_unknown_feature": 1,
        "unknown_feature_rate": 0.5,
        "features": "note=1",
    }


def test_a_flood_of_invented_feature_names_is_bounded():
    doc = batch(2)
    for i in range(100):
        doc["features"][f"f{i}"] = [1, None]
    frame = decode(msg(doc)).frames[StreamKey("t", 0, "m", "1")].frame
    assert len(frame.unknown) == D.MAX_UNDECLARED + 1 and frame.unknown[D.OTHER_UNDECLARED].tolist() == [True, False]
