"""Arrow IPC batches in the decoder: the same frames, rows and dead-letter reasons as the JSON of the same events."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from streams.wire import contract as C
from streams.wire.arrow import encode_batch
from streams.worker.arrow_decode import Coded, read_batch
from streams.worker.decode import Decoded, Decoder, RawMessage, StreamKey, content_type
from streams.worker.monitors import parse_monitors

NOW_MS = 1_764_355_200_000
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
                    {"name": "k", "kind": "categorical"},
                    {"name": "b", "kind": "boolean"},
                ],
            },
            {"model_id": "r", "task": "regression", "features": [{"name": "x", "kind": "numeric"}]},
        ]
    }
)
KEY = StreamKey("t", 0, "m", "1")


def batch(n: int = 8, **over: Any) -> dict[str, Any]:
    """A valid inference batch of model m: numbers, repeated categories, booleans, probabilities."""
    doc: dict[str, Any] = {
        "schema_version": 1,
        "type": "inference_batch",
        "model_id": "m",
        "model_version": "1",
        "event_id": [f"e{i}" for i in range(n)],
        "event_time": [T0 + i for i in range(n)],
        "source_id": [f"s{i % 2}" for i in range(n)],
        "features": {
            "x": [0.25 * i for i in range(n)],
            "y": [i % 3 for i in range(n)],
            "c": [("a", "b", "a", "c")[i % 4] for i in range(n)],
            "k": [i % 2 for i in range(n)],
            "b": [i % 3 == 0 for i in range(n)],
        },
        "prediction": {"label": [("p", "q")[i % 2] for i in range(n)], "probabilities": {"p": [0.75] * n}},
    }
    doc.update(over)
    return doc


def with_features(**cols: list[Any]) -> dict[str, Any]:
    b = batch()
    b["features"] = {**b["features"], **cols}
    return b


def jmsg(doc: dict[str, Any], offset: int = 0) -> RawMessage:
    return RawMessage(orjson.dumps(doc), doc.get("model_id", "m").encode(), "t", 0, offset, NOW_MS)


def amsg(doc: dict[str, Any] | bytes, offset: int = 0, header: bool = True) -> RawMessage:
    value = doc if isinstance(doc, bytes) else encode_batch(doc)
    return RawMessage(value, b"m", "t", 0, offset, NOW_MS, C.ARROW_CONTENT_TYPE if header else None)


def decode(*messages: RawMessage) -> Decoded:
    return Decoder(CFG).decode(list(messages))


def assert_same_frame(a: Any, b: Any) -> None:
    """Every column of two frames equal, with its dtype (NaN equals NaN; object columns compare their values)."""
    for name in ("event_id", "event_time", "source_id", "pred_label", "pred_proba", "pred_value"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.classes == b.classes
    for group in ("numeric", "categorical", "type_error", "unknown"):
        x, y = getattr(a, group), getattr(b, group)
        assert x.keys() == y.keys(), group
        for k in x:
            assert x[k].dtype == y[k].dtype, (group, k)
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{group}.{k}")


def dead(out: Decoded) -> list[tuple]:
    return [(d.reason, d.detail, d.rows, d.n_events, d.model_id) for d in out.dead]


def assert_same(doc: dict[str, Any]) -> Decoded:
    """The doc as JSON and as Arrow decode to equal frames, labels and dead letters; returns the Arrow result."""
    j, a = decode(jmsg(doc)), decode(amsg(doc))
    assert dead(a) == dead(j)
    assert a.frames.keys() == j.frames.keys()
    for k in j.frames:
        assert_same_frame(a.frames[k].frame, j.frames[k].frame)
        np.testing.assert_array_equal(a.frames[k].origin, j.frames[k].origin)
        np.testing.assert_array_equal(a.frames[k].row_index, j.frames[k].row_index)
    assert [(p.model_id, p.event_id.tolist(), p.label.tolist(), p.label_time.tolist()) for p in a.labels] == [
        (p.model_id, p.event_id.tolist(), p.label.tolist(), p.label_time.tolist()) for p in j.labels
    ]
    for pa_, pj in zip(a.labels, j.labels, strict=True):  # a label keeps its type: 0, False and "0" differ
        assert list(map(type, pa_.label)) == list(map(type, pj.label))
    assert a.n_events() == j.n_events()
    return a


# ----------------------------------------------------------------------------- equal to JSON
CASES = {
    "plain": batch(),
    "nulls everywhere": with_features(
        x=[None, 1.5, None, 2.0, 0.0, None, -1.0, 3.0],
        c=["a", None, "a", None, "b", "a", None, "a"],
        k=[1, None, 2, None, 1, 1, 2, 1],
        b=[True, None, False, True, None, True, False, True],
    )
    | {"source_id": [None, "s", None, "s", "s", "s", None, "s"]},
    "all null columns": with_features(x=[None] * 8, c=[None] * 8) | {"source_id": [None] * 8},
    "ints and big ints in a numeric feature": with_features(x=[1, 2, 3, 4, 10**15, 6, 7, 2**62 + 1]),
    "booleans in every kind": with_features(x=[True, False] * 4, c=[True, False] * 4, b=["yes", "no"] * 4),
    "mixed types (a union)": with_features(
        c=["a", 1, True, None, 2.0, "b", False, 3], k=[1, "1", 1.0, None, "x", 2, 2.0, True], x=[1, 2.5, None] + [1] * 5
    ),
    "type errors": with_features(x=["1.5", 2.0, "oops", 1.0, 1.0, None, 1.0, 1.0], c=[1.5, "a", 2.0] + ["a"] * 5),
    "undeclared features": with_features(u=[None, 1, None, 2, None, None, None, 3], v=["z"] * 8, w=[None] * 8),
    "probabilities, classes missing": batch(
        prediction={"label": ["p"] * 8, "probabilities": {"p": [0.6, None] * 4, "q": [None, 0.4] * 4}}
    ),
    "score only": batch(prediction={"score": [0.1 * i for i in range(8)]}),
    "boolean and integer classes": batch(prediction={"label": [True, False, 0, 1, True, 2, None, "x"]}),
    "bad rows": batch(
        event_id=["e0", "", "e2", "e3", "x" * (C.MAX_ID_LEN + 1), "e5", "e6", "e7"],
        event_time=[T0, None, -5.0, T0, T0, "2024-01-02T03:04:05", "not a time", T0 + 10 * 86_400],
        prediction={"label": ["p", "q", None, "p", 2.5, "q", "p", None], "score": [None, 0.5] + [None] * 6},
    ),
    "empty id column of strings": batch(n=2, event_id=[None, "e1"]),
    "unknown model": batch(model_id="nope"),
    "unknown version": batch(schema_version=2),
    "a boolean event time": batch(event_time=[T0] * 7 + [True]),
    "a null event time": batch(event_time=[T0, None] + [T0] * 6),
}


@pytest.mark.parametrize("doc", list(CASES.values()), ids=list(CASES))
def test_an_arrow_batch_decodes_like_the_json_of_the_same_events(doc: dict[str, Any]) -> None:
    assert_same(doc)


def test_the_equal_frames_are_the_events_not_an_empty_agreement() -> None:
    a = assert_same(CASES["nulls everywhere"])
    f = a.frames[KEY].frame
    assert f.event_id.tolist() == [f"e{i}" for i in range(8)]
    assert np.isnan(f.numeric["x"][[0, 2, 5]]).all() and f.numeric["x"][1] == 1.5
    assert f.categorical["k"].tolist() == ["1", None, "2", None, "1", "1", "2", "1"]
    assert f.categorical["b"].tolist() == ["true", None, "false", "true", None, "true", "false", "true"]
    assert f.source_id.tolist()[:2] == [None, "s"]
    bad = assert_same(CASES["bad rows"])
    assert {(d.reason, d.rows) for d in bad.dead} == {("schema", (1, 4, 6)), ("bad_time", (2, 7))}
    assert bad.frames[KEY].frame.event_id.tolist() == ["e0", "e3", "e5"]
    (null_time,) = assert_same(CASES["a null event time"]).dead
    assert (null_time.reason, null_time.rows, null_time.detail) == (
        "schema",
        (1,),
        "event_time[1] must be a number or an ISO-8601 string, not NoneType",
    )
    errs = assert_same(CASES["type errors"]).frames[KEY].frame.type_error
    assert errs["x"].tolist() == [True, False, True] + [False] * 5 and errs["c"].tolist()[:3] == [True, False, False]


def test_labels_decode_like_json_and_keep_their_types() -> None:
    labels = {
        "schema_version": 1,
        "type": "label_batch",
        "model_id": "m",
        "event_id": ["a", "b", "c", "d", "e"],
        "label": ["x", 0, False, 1.5, None],
        "label_time": [T0, T0 + 1, T0 + 2, None, T0 + 4],
    }
    a = assert_same(labels)
    assert a.labels[0].label.tolist() == ["x", 0, False] and [type(v) for v in a.labels[0].label] == [str, int, bool]
    assert {d.reason for d in a.dead} == {"schema"} and a.dead[0].rows == (3, 4)
    assert_same(labels | {"label": [1.0, 2.0, 3.5, 4.0, 0.5], "label_time": [T0] * 5})


def test_a_regression_model_and_a_batch_of_one() -> None:
    doc = batch(n=1, model_id="r", features={"x": [2.5]}, prediction={"value": [-1.0]})
    f = assert_same(doc).frames[StreamKey("t", 0, "r", "1")].frame
    assert f.pred_value.tolist() == [-1.0] and f.numeric["x"].tolist() == [2.5]


# ----------------------------------------------------------------------------- the columns
def test_columns_come_as_numpy_arrays_and_repetitive_strings_once_per_distinct_value() -> None:
    doc = read_batch(encode_batch(CASES["nulls everywhere"] | {"event_id": [f"e{i}" for i in range(8)]}))
    assert doc["schema_version"] == 1 and doc["model_id"] == "m" and doc["type"] == "inference_batch"
    assert doc["event_id"].dtype == object and doc["event_time"].dtype == np.float64
    feats = doc["features"]
    assert feats["x"].dtype == np.float64 and np.isnan(feats["x"][0])  # null -> NaN
    assert feats["y"].dtype == np.int64  # integers without nulls: an int64 array
    assert feats["k"] == [1, None, 2, None, 1, 1, 2, 1]  # integers with nulls: exact Python values
    assert type(feats["c"]) is Coded and feats["c"].expand().tolist() == CASES["nulls everywhere"]["features"]["c"]
    assert feats["b"] == [True, None, False, True, None, True, False, True]
    assert read_batch(encode_batch(batch()))["features"]["b"].dtype == np.bool_


def test_a_batch_written_by_plain_pyarrow_decodes_like_json() -> None:
    """Another Arrow writer: its own types (float32, int32, large strings), two record batches, pandas metadata."""
    doc = batch()
    feats = doc["features"]
    schema = pa.schema(
        [
            ("event_id", pa.large_string()),
            ("event_time", pa.float64()),
            ("features", pa.struct([("x", pa.float32()), ("y", pa.int32()), ("c", pa.string())])),
            ("prediction", pa.struct([("label", pa.string())])),
        ],
        metadata={"schema_version": "1", "type": "inference_batch", "model_id": "m", "pandas": "{}"},
    )
    table = pa.Table.from_pydict(
        {
            "event_id": doc["event_id"],
            "event_time": doc["event_time"],
            "features": [{"x": feats["x"][i], "y": feats["y"][i], "c": feats["c"][i]} for i in range(8)],
            "prediction": [{"label": v} for v in doc["prediction"]["label"]],
        },
        schema=schema,
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as w:
        for piece in table.to_batches(max_chunksize=5):  # two batches: 5 + 3 rows
            w.write_batch(piece)
    value = sink.getvalue().to_pybytes()
    same = {k: v for k, v in doc.items() if k not in ("source_id", "model_version")}
    same["features"] = {k: feats[k] for k in ("x", "y", "c")}
    same["prediction"] = {"label": doc["prediction"]["label"]}
    a, j = decode(amsg(value, header=False)), decode(jmsg(same))
    assert a.dead == [] and j.dead == []
    assert_same_frame(a.frames[KEY].frame, j.frames[KEY].frame)


# ----------------------------------------------------------------------------- bad payloads
def rewritten(value: bytes, change: Any) -> bytes:
    """An Arrow stream with its table changed by ``change(table) -> table`` (what another writer might send)."""
    table = change(pa.ipc.open_stream(value).read_all())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def test_an_unknown_column_is_named_as_json_names_an_unknown_key() -> None:
    doc = batch()
    value = rewritten(encode_batch(doc), lambda t: t.append_column("extra", pa.array([1] * 8)))
    a, j = decode(amsg(value)), decode(jmsg(doc | {"extra": [1] * 8}))
    assert dead(a) == dead(j) and [d.reason for d in a.dead] == ["schema"] and "extra" in a.dead[0].detail


def _nan_batch() -> dict[str, Any]:
    return with_features(x=[math.nan] + [1.0] * 7)


def _truncated() -> bytes:
    v = encode_batch(batch())
    return v[: len(v) // 2]


def _no_rows() -> bytes:
    b = encode_batch(batch(n=1))
    schema = pa.ipc.open_stream(b).schema
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema):
        pass
    return sink.getvalue().to_pybytes()


BAD = {
    "truncated": (_truncated(), True, C.R_INVALID_ARROW),
    "magic then garbage, no header": (C.ARROW_MAGIC + b"\x10\x00\x00\x00garbage-garbage!", False, C.R_INVALID_ARROW),
    "json bytes marked as arrow": (orjson.dumps(batch()), True, C.R_INVALID_ARROW),
    "NaN in a feature": (encode_batch(_nan_batch()), True, C.R_NON_FINITE),
    "infinity in event_time": (encode_batch(batch(event_time=[math.inf] + [T0] * 7)), True, C.R_NON_FINITE),
    "no rows": (_no_rows(), True, C.R_EMPTY),
    "no value": (b"", True, C.R_EMPTY),
    "schema version 2": (encode_batch(batch(schema_version=2)), True, C.R_UNSUPPORTED_VERSION),
    "unknown model": (encode_batch(batch(model_id="nope")), True, C.R_UNKNOWN_MODEL),
    "unknown column": (
        rewritten(encode_batch(batch()), lambda t: t.append_column("extra", pa.array([1] * 8))),
        True,
        C.R_SCHEMA,
    ),
    "event_id not strings": (encode_batch(batch(event_id=list(range(8)))), True, C.R_SCHEMA),
    "too large": (encode_batch(batch(n=5000)), True, C.R_TOO_LARGE),
}


@pytest.mark.parametrize(("value", "header", "reason"), list(BAD.values()), ids=list(BAD))
def test_a_bad_arrow_payload_is_dead_lettered_with_its_reason_and_the_rest_decodes(
    value: bytes, header: bool, reason: str
) -> None:
    good = batch()
    out = Decoder(CFG, max_message_bytes=50_000).decode(
        [amsg(good, 0), amsg(value, 1, header=header), amsg(good | {"event_id": [f"f{i}" for i in range(8)]}, 2)]
    )
    assert [(d.reason, d.message.offset) for d in out.dead] == [(reason, 1)], dead(out)
    assert out.dead[0].message.value == value  # the original bytes, for the dead-letter topic
    assert out.frames[KEY].origin.tolist() == [0] * 8 + [2] * 8
    assert out.dead[0].detail  # a reason a human can read
    assert out.n_events() == 16 + out.dead[0].n_events
    if reason in (C.R_NON_FINITE, C.R_UNKNOWN_MODEL, C.R_SCHEMA, C.R_UNSUPPORTED_VERSION):
        assert out.dead[0].n_events == 8  # the stream was read: its rows are counted, as a JSON batch's are
    if reason in (C.R_NON_FINITE, C.R_UNKNOWN_MODEL):
        assert out.dead[0].model_id == ("nope" if reason == C.R_UNKNOWN_MODEL else "m")
    if reason == C.R_SCHEMA:
        assert "extra" in out.dead[0].detail or "event_id" in out.dead[0].detail


def test_an_arrow_batch_of_the_wrong_type_is_a_schema_dead_letter() -> None:
    value = rewritten(
        encode_batch(batch()), lambda t: t.replace_schema_metadata({**t.schema.metadata, b"type": b"inference"})
    )
    out = decode(amsg(value))
    assert [(d.reason, d.n_events) for d in out.dead] == [("schema", 8)] and "inference_batch" in out.dead[0].detail


# ----------------------------------------------------------------------------- which format
def test_the_header_decides_and_the_magic_bytes_are_the_fallback() -> None:
    value, js = encode_batch(batch()), orjson.dumps(batch())
    assert RawMessage(value, content_type=None).is_arrow  # sniffed
    assert RawMessage(value, content_type=C.ARROW_CONTENT_TYPE).is_arrow
    assert not RawMessage(value, content_type=C.JSON_CONTENT_TYPE).is_arrow  # the header wins
    assert not RawMessage(js).is_arrow and not RawMessage(None).is_arrow
    assert RawMessage(js, content_type=C.ARROW_CONTENT_TYPE).is_arrow
    assert RawMessage(value, content_type="text/x-something-else").is_arrow  # a header not ours: sniffed
    assert decode(RawMessage(js, b"m", "t", 0, 0, NOW_MS, C.JSON_CONTENT_TYPE)).dead == []
    assert decode(amsg(value, header=False)).dead == []


def test_content_type_reads_header_lists_and_mappings() -> None:
    assert content_type(None) is None and content_type([]) is None
    assert content_type([("Content-Type", b" Application/JSON ")]) == "application/json"
    assert content_type({"content-type": C.ARROW_CONTENT_TYPE.encode()}) == C.ARROW_CONTENT_TYPE
    assert content_type([("content-type", b"\xff")]) is None  # not text: as if absent (sniffed)
    assert content_type([("dw-reason", b"schema")]) is None


@pytest.mark.parametrize("seed", [1, 2])
def test_corrupted_arrow_streams_are_dead_lettered_never_raised(seed: int) -> None:
    """Byte flips and truncations of a valid batch (a corrupted or hostile producer): each message ends as
    decoded rows and dead letters with a known reason; the decoder never raises. Before the stream was
    validated in full, a flipped dictionary index reached numpy (IndexError) and a flipped field name
    raised UnicodeDecodeError: either would have stopped the worker."""
    rng = np.random.default_rng(seed)
    good = encode_batch(batch(n=50))
    decoder = Decoder(CFG)
    reasons: dict[str, int] = {}
    for i in range(600):
        value = bytearray(good)
        for pos in rng.integers(4, len(value), size=int(rng.choice([1, 2, 4, 16]))):
            value[pos] = int(rng.integers(256))
        if rng.random() < 0.2:
            value = value[: int(rng.integers(4, len(value)))]
        out = decoder.decode([amsg(bytes(value), i, header=False)])  # sniffed: the magic bytes are kept
        assert all(d.reason in C.REASONS and d.detail for d in out.dead)
        assert sum(len(p.frame) for p in out.frames.values()) + sum(d.n_events for d in out.dead) >= 1
        for d in out.dead:
            reasons[d.reason] = reasons.get(d.reason, 0) + 1
    assert reasons.get(C.R_INVALID_ARROW, 0) > 300  # most corruptions break the stream itself


def test_arrow_categories_reach_the_frame_with_their_codes_and_summarise_like_json() -> None:
    """A categorical column read from an Arrow dictionary keeps its codes through the decoder's join of the
    messages (``Frame.codes``): ``values[codes]`` is the column, nulls included; a window
    summary updated from it counts exactly what the JSON frame of the same events counts."""
    from detectors.reference import Reference
    from detectors.summaries import SummaryLayout

    docs = [
        with_features(c=["a", None, "a", "zz", "b", "b", "a", None], k=[1, 2, 1, None, 7, 1, 1, 2]),
        batch(event_id=[f"f{i}" for i in range(8)]) | {"features": batch()["features"] | {"c": ["c", "q"] * 4}},
    ]
    a = decode(*(amsg(d, offset=i) for i, d in enumerate(docs))).frames[KEY].frame
    j = decode(*(jmsg(d, offset=i) for i, d in enumerate(docs))).frames[KEY].frame
    assert len(a) == 16
    assert a.codes_of(a.categorical["k"]) is None  # integers: not a dictionary column, no codes
    for name in ("c",):
        col = a.categorical[name]
        coded = a.codes_of(col)
        assert coded is not None and len(set(coded.values.tolist())) == coded.values.shape[0]
        assert coded.values[coded.codes].tolist() == col.tolist() == j.categorical[name].tolist()
        part = a.take(np.array([3, 9, 0]))
        assert part.codes_of(part.categorical[name]) is not None
        assert part.codes_of(part.categorical[name]).values[part.codes_of(part.categorical[name]).codes].tolist() == [
            col[3],
            col[9],
            col[0],
        ]
    assert j.codes_of(j.categorical["c"]) is None  # JSON lists have no dictionary
    ref = Reference.from_frame(j.take(np.arange(8)), CFG.models[0].features)
    layout = SummaryLayout.build(ref, CFG.models[0].features, bins=16, reservoir=0, max_categories=2, hash_buckets=4)
    sa, sj = layout.summary(), layout.summary()
    sa.update(a)
    sj.update(j)
    assert sa.equals(sj) and sa.arrays["f.cat_counts"].sum() > 0
