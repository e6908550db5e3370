"""The wire contract, defined once (streams/wire/contract.py): the SDK, the decoder and the JSON Schemas agree.

Events of every kind and edge case are sent with the real SDK (its background thread and
packing; only the Kafka client is a recorder), decoded by the worker's decoder and compared
with what was sent, read by the documented value rules (detectors/values.py). Every message
is validated by the JSON Schemas shipped in ``streams/wire/schemas/`` (jsonschema, an
implementation independent of pydantic). The agreement tests iterate over the contract's own
definitions, so a field added, made required or limited differently there is checked in all
three at once.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pyarrow as pa
import pytest

from streams.wire import contract as C
from streams.wire.producer import DriftwatchProducer, ProducerStats
from streams.wire.schemas import json_schemas
from streams.worker.decode import Decoded, Decoder, RawMessage, content_type
from streams.worker.monitors import parse_monitors
from tests.streams.wire.test_producer import SETTINGS, FakeClient

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "streams" / "wire" / "schemas"
SCHEMA_OF = {
    C.INFERENCE.type: "inference_event",
    C.INFERENCE.batch_type: "inference_batch",
    C.LABEL.type: "label_event",
    C.LABEL.batch_type: "label_batch",
}
VALIDATORS = {
    name: jsonschema.Draft202012Validator(json.loads((SHIPPED / f"{name}.schema.json").read_text()))
    for name in SCHEMA_OF.values()
}

REGRESSION = "régression-😀"  # a unicode model id
LONGEST = "m" * C.MAX_ID_LEN  # a model id at the limit
MONITORS = parse_monitors(
    {
        "models": [
            {
                "model_id": "iris",
                "features": [
                    {"name": "x", "kind": "numeric"},
                    {"name": "n", "kind": "numeric"},
                    {"name": "c", "kind": "categorical"},
                    {"name": "flag", "kind": "boolean"},
                    {"name": "名前", "kind": "categorical"},
                ],
            },
            {"model_id": REGRESSION, "task": "regression", "features": [{"name": "x", "kind": "numeric"}]},
            {"model_id": LONGEST, "features": [{"name": "x", "kind": "numeric"}]},
        ]
    }
)
NUMERIC = ("x", "n")
CATEGORICAL = ("c", "flag", "名前")

T0 = 1_700_000_000.0
INFERENCES: list[dict[str, Any]] = [
    # every field given
    {
        "model_id": "iris",
        "features": {"x": 1.5, "n": 3, "c": "red", "flag": True, "名前": "値🙂", "undeclared": 1},
        "prediction": {"label": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.1}},
        "event_id": "e-1",
        "event_time": T0,
        "model_version": "2",
        "source_id": "client-7",
    },
    # only what is required: the SDK makes the event id, the version defaults to "1", no source
    {"model_id": "iris", "features": {"x": 2.0}, "prediction": {"label": "versicolor"}, "event_time": T0 + 1},
    # unicode everywhere; NaN (sent as null), None, false, a class absent from the other events
    {
        "model_id": "iris",
        "features": {"x": math.nan, "n": None, "c": "ünïcödé 中文", "flag": False, "名前": "ｘ"},
        "prediction": {"label": "vérsicolor-🌸", "probabilities": {"setosa": 0.2, "vérsicolor-🌸": 0.8}},
        "event_id": "é-ü-😀-中文",
        "event_time": datetime(2024, 1, 2, 3, 4, 5),  # naive = UTC
        "source_id": "ソース",
    },
    # ids at the limit (in characters: 256 emoji are 1024 bytes), a falsy class label
    {
        "model_id": "iris",
        "features": {"x": -0.0, "n": 10**15},
        "prediction": {"label": 0},
        "event_id": "😀" * C.MAX_ID_LEN,
        "event_time": datetime(2024, 1, 2, tzinfo=UTC),
        "model_version": "v" * C.MAX_ID_LEN,
        "source_id": "s" * C.MAX_ID_LEN,
    },
    # probabilities without a label; a score alone; a boolean class
    {"model_id": "iris", "features": {"c": ""}, "prediction": {"probabilities": {"setosa": 1.0}}, "event_time": T0},
    {"model_id": "iris", "features": {}, "prediction": {"score": 0.25}, "event_time": T0 + 2, "event_id": "s"},
    {"model_id": "iris", "features": {"flag": True}, "prediction": {"label": True}, "event_time": T0 + 3},
    # a regression model: values
    {"model_id": REGRESSION, "features": {"x": 1e-300}, "prediction": {"value": -2.5}, "event_time": T0},
    {"model_id": REGRESSION, "features": {"x": 7}, "prediction": {"value": 0.0}, "event_time": T0 + 4},
    {"model_id": LONGEST, "features": {"x": 0.5}, "prediction": {"label": "a"}, "event_time": T0},
]
LABELS: list[dict[str, Any]] = [
    {"model_id": "iris", "event_id": "e-1", "label": "setosa", "label_time": T0 + 60},
    {"model_id": "iris", "event_id": "é-ü-😀-中文", "label": "vérsicolor-🌸", "label_time": datetime(2024, 1, 3)},
    {"model_id": "iris", "event_id": "😀" * C.MAX_ID_LEN, "label": 0, "label_time": T0},
    {"model_id": "iris", "event_id": "s", "label": False, "label_time": T0},
    {"model_id": REGRESSION, "event_id": "r", "label": 1.5, "label_time": T0},
    {"model_id": LONGEST, "event_id": "l" * C.MAX_ID_LEN, "label": "真", "label_time": T0},
]


# ----------------------------------------------------------------------------- helpers
def through_sdk(
    inferences: list[dict[str, Any]], labels: list[dict[str, Any]], **options: Any
) -> tuple[list[RawMessage], list[str], ProducerStats]:
    """Send with the real SDK; the messages its Kafka client was given, the event ids, the counters."""
    made: list[FakeClient] = []

    def client(**config: Any) -> FakeClient:
        made.append(FakeClient(**config))
        return made[-1]

    with DriftwatchProducer(settings=SETTINGS, client_factory=client, **options) as dw:
        ids = [dw.send_inference(**call) for call in inferences]
        for call in labels:
            dw.send_label(**call)
        assert dw.flush(timeout=30)
        stats = dw.stats()
    sent = [m for c in made for m in c.sent]
    headers = [h for c in made for h in c.headers]
    messages = [
        RawMessage(value, key, topic, 0, i, None, content_type(h))
        for i, ((topic, key, value), h) in enumerate(zip(sent, headers, strict=True))
    ]
    return messages, ids, stats


def arrow_as_json(value: bytes) -> dict[str, Any]:
    """An Arrow batch read with pyarrow alone (``to_pylist``), as the JSON column batch it stands for."""

    def columns(arr: pa.Array) -> Any:
        if pa.types.is_struct(arr.type):
            return {arr.type.field(i).name: columns(c) for i, c in enumerate(arr.flatten())}
        return arr.to_pylist()

    table = pa.ipc.open_stream(value).read_all()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    doc: dict[str, Any] = {**meta, "schema_version": int(meta["schema_version"])}
    return doc | {name: columns(table.column(name).combine_chunks()) for name in table.column_names}


def as_json(message: RawMessage) -> dict[str, Any]:
    """A message's value as a JSON column batch, whichever wire format it was sent in."""
    return arrow_as_json(message.value or b"") if message.is_arrow else orjson.loads(message.value or b"")


def schema_errors(doc: dict[str, Any], wire_type: str | None = None) -> list[str]:
    """What the shipped JSON Schema of ``doc``'s type (or ``wire_type``) finds wrong with it."""
    validator = VALIDATORS[SCHEMA_OF[wire_type or doc["type"]]]
    return [e.message for e in validator.iter_errors(doc)]


def rows_of(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """A column batch as single events (per-event columns cut at each index; nulls left out)."""
    kind = C.INFERENCE if batch["type"] == C.INFERENCE.batch_type else C.LABEL
    head = {k: v for k, v in batch.items() if k not in kind.columns} | {"type": kind.type}
    rows = []
    for i in range(len(batch["event_id"])):
        row = dict(head)
        for name in kind.columns:
            col = batch.get(name)
            if name == "features":
                row[name] = {f: v[i] for f, v in col.items() if v[i] is not None}
            elif name == "prediction":
                pred = {k: v[i] for k, v in col.items() if k != "probabilities" and v[i] is not None}
                probs = {c: p[i] for c, p in col.get("probabilities", {}).items() if p[i] is not None}
                row[name] = pred | ({"probabilities": probs} if probs else {})
            elif col is not None:
                row[name] = col[i]
        rows.append(row)
    return rows


def _nan_free(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def _epoch(t: float | datetime) -> float:
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    return float(t)


def _category(v: Any) -> str | None:
    """The documented reading of a categorical value (detectors/values.py): booleans as true/false."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def expected_inference(call: dict[str, Any], event_id: str, classes: tuple[str, ...]) -> tuple:
    """What the decoder must give back for one ``send_inference`` call, computed from the call alone."""
    feats, pred = call["features"], call["prediction"]
    numbers = [feats.get(f) for f in NUMERIC] if call["model_id"] == "iris" else [feats.get("x")]
    probs = pred.get("probabilities", {})
    return (
        (call["model_id"], call.get("model_version", "1")),
        event_id,
        _epoch(call["event_time"]),
        call.get("source_id"),
        tuple(None if v is None or math.isnan(v) else float(v) for v in numbers),
        tuple(_category(feats.get(f)) for f in CATEGORICAL) if call["model_id"] == "iris" else (),
        _category(pred.get("label")),
        tuple(probs.get(c) for c in classes),
        pred.get("value", pred.get("score")),
        tuple(sorted(set(feats) - set(NUMERIC) - set(CATEGORICAL))),
    )


def decoded_inferences(out: Decoded) -> dict[str, tuple]:
    """Every decoded inference row, by event id, in the shape of :func:`expected_inference`."""
    rows = {}
    for key, part in out.frames.items():
        f = part.frame
        numeric = [f.numeric[n] for n in (NUMERIC if key.model_id == "iris" else ("x",))]
        categorical = [f.categorical[c] for c in CATEGORICAL] if key.model_id == "iris" else []
        for i in range(len(f)):
            rows[f.event_id[i]] = (
                (key.model_id, key.model_version),
                f.event_id[i],
                float(f.event_time[i]),
                f.source_id[i],
                tuple(_nan_free(float(col[i])) for col in numeric),
                tuple(col[i] for col in categorical),
                None if f.pred_label is None else f.pred_label[i],
                tuple(_nan_free(float(p)) for p in f.pred_proba[i]) if f.pred_proba is not None else (),
                None if f.pred_value is None else _nan_free(float(f.pred_value[i])),
                tuple(sorted(name for name, carried in f.unknown.items() if carried[i])),
            )
    return rows


def decoded_labels(out: Decoded) -> list[tuple]:
    return sorted(
        (p.model_id, p.event_id[i], p.label[i], float(p.label_time[i])) for p in out.labels for i in range(len(p))
    )


def decode(docs: list[Any]) -> Decoded:
    return Decoder(MONITORS).decode([RawMessage(orjson.dumps(d), None, "t", 0, i) for i, d in enumerate(docs)])


# ----------------------------------------------------------------------------- round trip
def test_the_shipped_json_schemas_are_a_fresh_export_of_the_contract() -> None:
    shipped = {p.name.removesuffix(".schema.json"): json.loads(p.read_text()) for p in SHIPPED.iterdir()}
    assert shipped == json_schemas(), "regenerate with: driftwatch schema export streams/wire/schemas"
    assert set(shipped) == set(SCHEMA_OF.values())


@pytest.mark.parametrize("wire_format", C.WIRE_FORMATS)
@pytest.mark.parametrize(
    ("copies", "max_message_bytes"), [(0, 1_000_000), (60, 3_000)], ids=["one-message-per-batch", "split-for-size"]
)
def test_sdk_events_decode_back_equal_and_validate_against_the_json_schemas(
    copies: int, max_message_bytes: int, wire_format: str
) -> None:
    inferences = INFERENCES + [INFERENCES[0] | {"event_id": f"copy-{i}", "event_time": T0 + i} for i in range(copies)]
    messages, ids, stats = through_sdk(inferences, LABELS, max_message_bytes=max_message_bytes, wire_format=wire_format)
    assert stats.nonfinite == 1 and stats.dropped_oversize == 0 and stats.failed == 0
    assert all(len(m.value or b"") <= max_message_bytes for m in messages)
    # an Arrow batch says so in its content-type header and in its first bytes; JSON has neither
    assert {m.content_type for m in messages} == {C.ARROW_CONTENT_TYPE if wire_format == C.WIRE_ARROW else None}
    assert {(m.value or b"")[:4] == C.ARROW_MAGIC for m in messages} == {wire_format == C.WIRE_ARROW}
    # one message per (model, version) and kind, unless the size limit split it
    batches = len({(c["model_id"], c.get("model_version", "1")) for c in inferences}) + len(
        {c["model_id"] for c in LABELS}
    )
    assert (len(messages) == batches) == (max_message_bytes == 1_000_000), (len(messages), batches)

    docs = [as_json(m) for m in messages]  # an Arrow batch is a JSON batch in another encoding
    for doc in docs:
        assert schema_errors(doc) == [], doc
    out = Decoder(MONITORS).decode(messages)
    assert out.dead == [] and out.unkeyed == set()

    got = decoded_inferences(out)
    # a stream's probability columns are the classes its events carried, in sorted order
    classes = {(k.model_id, k.model_version): p.frame.classes for k, p in out.frames.items()}
    assert classes[("iris", "1")] == ("setosa", "vérsicolor-🌸") and classes[("iris", "2")] == ("setosa", "versicolor")
    for call, eid in zip(inferences, ids):
        assert got[eid] == expected_inference(call, eid, classes[call["model_id"], call.get("model_version", "1")])
    assert len(got) == len(inferences) and ids[0] == "e-1"
    assert len(set(ids)) == len(ids) and all(0 < len(i) <= C.MAX_ID_LEN for i in ids)  # SDK-made ids fit too
    assert decoded_labels(out) == sorted(
        (c["model_id"], c["event_id"], c["label"], _epoch(c["label_time"])) for c in LABELS
    )
    for call in LABELS:  # the label keeps its JSON type (0 and False are not the class "0"/"false")
        (label,) = [lab for m, e, lab, _t in decoded_labels(out) if (m, e) == (call["model_id"], call["event_id"])]
        assert type(label) is type(call["label"])


def test_sdk_batches_as_single_events_and_row_arrays_decode_the_same() -> None:
    messages, _ids, _stats = through_sdk(INFERENCES, LABELS)
    batches = [orjson.loads(m.value or b"") for m in messages]
    rows = [r for b in batches for r in rows_of(b)]
    for row in rows:
        assert schema_errors(row) == [], row
    from_batches = Decoder(MONITORS).decode(messages)
    singles = decode(rows)
    array = decode([rows])
    for out in (singles, array):
        assert out.dead == []
        assert decoded_labels(out) == decoded_labels(from_batches)
        mine, theirs = decoded_inferences(out), decoded_inferences(from_batches)
        assert mine.keys() == theirs.keys()
        for eid, row in theirs.items():  # a row batch's classes are its own: compare by class name
            assert mine[eid][:7] + mine[eid][8:] == row[:7] + row[8:]


# ----------------------------------------------------------------------------- one definition, three readers
def _sample(kind: C.EventKind, batch: bool) -> dict[str, Any]:
    """A valid SDK-made object of ``kind`` (a batch of two, or its first event)."""
    if kind is C.INFERENCE:
        messages = through_sdk([INFERENCES[0], INFERENCES[0] | {"event_id": "e-2"}], [])[0]
    else:
        messages = through_sdk([], LABELS[:2])[0]
    (doc,) = [orjson.loads(m.value or b"") for m in messages]
    return doc if batch else rows_of(doc)[0]


SHAPES = [(kind, batch) for kind in C.SHAPES for batch in (False, True)]
SHAPE_IDS = [kind.batch_type if batch else kind.type for kind, batch in SHAPES]


@pytest.mark.parametrize(("kind", "batch"), SHAPES, ids=SHAPE_IDS)
def test_required_fields_are_the_same_for_the_schema_the_decoder_and_the_sdk(kind: C.EventKind, batch: bool) -> None:
    doc = _sample(kind, batch)
    wire_type = kind.batch_type if batch else kind.type
    schema = json.loads((SHIPPED / f"{SCHEMA_OF[wire_type]}.schema.json").read_text())
    assert set(schema["required"]) == kind.required
    assert set(schema["properties"]) == kind.keys
    assert decode([doc]).dead == []
    for field in kind.fields:
        without = {k: v for k, v in doc.items() if k != field.name}
        dead = decode([without]).dead
        if field.required:
            assert schema_errors(without, wire_type), field.name
            assert [d.reason for d in dead] == [C.R_SCHEMA] and field.name in dead[0].detail, (field.name, dead)
        else:
            assert schema_errors(without, wire_type) == [] and dead == [], (field.name, dead)
    # the SDK takes every field of the kind, and asks the caller for none it can fill itself
    send = DriftwatchProducer.send_inference if kind is C.INFERENCE else DriftwatchProducer.send_label
    params = dict(inspect.signature(send).parameters)
    params.pop("self")
    assert set(params) == set(kind.names)
    caller_must = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
    assert caller_must <= kind.required


def _id_fields() -> list[tuple[C.EventKind, C.WireField]]:
    return [(k, f) for k in C.SHAPES for f in k.fields if f.kind in (C.Kind.ID, C.Kind.OPTIONAL_ID)]


@pytest.mark.parametrize(("kind", "field"), _id_fields(), ids=lambda x: getattr(x, "name", getattr(x, "type", "")))
def test_the_id_limit_is_the_same_for_the_sdk_the_decoder_and_the_schema(kind: C.EventKind, field: C.WireField) -> None:
    longest, over = "é" * C.MAX_ID_LEN, "é" * (C.MAX_ID_LEN + 1)
    monitors = parse_monitors(
        {"models": [{"model_id": m, "features": [{"name": "x", "kind": "numeric"}]} for m in ("m", longest)]}
    )
    base = (
        {"model_id": "m", "features": {"x": 1.0}, "prediction": {"label": "a"}, "event_id": "e", "event_time": T0}
        if kind is C.INFERENCE
        else {"model_id": "m", "event_id": "e", "label": "a", "label_time": T0}
    )
    send: Callable[..., Any] = (
        DriftwatchProducer.send_inference if kind is C.INFERENCE else DriftwatchProducer.send_label
    )
    for value, ok in ((longest, True), (over, False)):
        call = base | {field.name: value}
        if ok:  # the SDK sends it: as its batch and as single events, all three take it
            messages = (through_sdk([call], []) if kind is C.INFERENCE else through_sdk([], [call]))[0]
            (doc,) = [orjson.loads(m.value or b"") for m in messages]
            docs = [doc, *rows_of(doc)]
        else:  # the SDK refuses it; the decoder and the schema refuse it from anyone else
            dw = DriftwatchProducer(settings=SETTINGS, start=False)
            with pytest.raises(ValueError, match=f"^{field.name}"):
                send(dw, **call)
            dw.close(timeout=0)
            docs = [{"schema_version": C.SCHEMA_VERSION, "type": kind.type} | call]
        for d in docs:
            assert (schema_errors(d) == []) is ok, (field.name, len(value))
            out = Decoder(monitors).decode([RawMessage(orjson.dumps(d))])
            if ok:
                assert out.dead == [], out.dead
            else:
                assert [x.reason for x in out.dead] == [C.R_SCHEMA] and field.name in out.dead[0].detail


PREDICTIONS = [{k: v} for k, v in (("label", "a"), ("probabilities", {"a": 1.0}), ("score", 0.5), ("value", 2.0))]


def test_the_prediction_keys_are_the_same_for_the_sdk_the_decoder_and_the_schema() -> None:
    for name, model in (("inference_event", "Prediction"), ("inference_batch", "BatchPrediction")):
        schema = json.loads((SHIPPED / f"{name}.schema.json").read_text())
        assert set(schema["$defs"][model]["properties"]) == C.PREDICTION_KEYS
    assert {next(iter(p)) for p in PREDICTIONS} == C.PREDICTION_KEYS
    base = {"type": "inference", "model_id": "iris", "event_id": "e", "event_time": T0, "features": {}}
    for prediction, ok in [(p, True) for p in PREDICTIONS] + [
        ({}, False),
        ({"label": None}, False),
        ({"probabilities": {}}, False),
        ({"label": "a", "class": "a"}, False),
    ]:
        dw = DriftwatchProducer(settings=SETTINGS, start=False)
        if ok:
            dw.send_inference("iris", {}, prediction)
        else:
            with pytest.raises(ValueError, match=r"^prediction"):
                dw.send_inference("iris", {}, prediction)
        dw.close(timeout=0)
        event = base | {"prediction": prediction}
        assert (schema_errors(event) == []) is ok, prediction
        dead = decode([event]).dead
        assert (dead == []) is ok, (prediction, dead)
        if not ok:
            assert dead[0].reason == C.R_SCHEMA and "prediction" in dead[0].detail


def test_the_label_types_are_the_same_for_the_sdk_the_decoder_and_the_schema() -> None:
    good = {str: "a", int: 3, float: 1.5, bool: True}
    assert set(good) == set(C.LABEL_TYPES)
    for label, ok in [(v, True) for v in good.values()] + [(None, False), ([1], False), ({"a": 1}, False)]:
        dw = DriftwatchProducer(settings=SETTINGS, start=False)
        if ok:
            dw.send_label("iris", "e", label)
        else:
            with pytest.raises(ValueError, match=r"^label"):
                dw.send_label("iris", "e", label)
        dw.close(timeout=0)
        event = {"type": "label", "model_id": "iris", "event_id": "e", "label": label, "label_time": T0}
        assert (schema_errors(event) == []) is ok, label
        dead = decode([event]).dead
        assert (dead == []) is ok, (label, dead)


def test_the_json_schema_follows_a_change_of_the_definition() -> None:
    """The models are generated: a field made required, a field added or the id limit changed in the contract
    is in the schema with no other edit (the SDK and the decoder read the same names, checked above)."""
    from streams.wire import schemas

    fields = tuple(
        dataclasses.replace(f, required=True) if f.name == "source_id" else f for f in C.INFERENCE.fields
    ) + (C.WireField("tenant", C.Kind.ID, required=False, per_event=False),)
    changed = dataclasses.replace(C.INFERENCE, fields=fields)
    event = schemas._event_model(changed, "Changed").model_json_schema()
    batch = schemas._batch_model(changed, "ChangedBatch").model_json_schema()
    assert set(event["required"]) == C.INFERENCE.required | {"source_id"} == changed.required
    assert "tenant" in event["properties"] and "tenant" in batch["properties"] and "tenant" not in batch["required"]
    assert batch["properties"]["source_id"]["type"] == "array"  # per event: a column in the batch
    assert event["properties"]["event_id"]["maxLength"] == C.MAX_ID_LEN
