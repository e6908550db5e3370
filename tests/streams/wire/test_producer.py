"""streams.wire.producer: validation, column packing, bounded buffer, never blocking, the real broker."""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
import orjson
import pytest

from streams.settings import Settings
from streams.wire.contract import ARROW_MAGIC
from streams.wire.producer import (
    DriftwatchProducer,
    encode_batches,
    pack_inferences,
    pack_labels,
)
from streams.wire.schemas import WIRE_ADAPTER, InferenceBatch, LabelBatch

SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1", topic_inferences="t.inf", topic_labels="t.lab")
PRED = {"label": "a", "probabilities": {"a": 0.75, "b": 0.25}}


# ----------------------------------------------------------------------------- fakes
class FakeFuture:
    def __init__(self, ok: bool = True) -> None:
        self.ok = ok

    def add_callback(self, f, *args):
        if self.ok:
            f(*args, None)
        return self

    def add_errback(self, f, *args):
        if not self.ok:
            f(*args, RuntimeError("refused by the fake broker"))
        return self


class FakeClient:
    """Stands in for kafka-python's KafkaProducer: records what it is given, and on which thread."""

    instances: ClassVar[list[FakeClient]] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.headers: list[list[tuple[str, bytes]] | None] = []  # per sent message, None: no headers given
        self.threads: set[int] = {threading.get_ident()}
        self.closed = False
        FakeClient.instances.append(self)

    def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]] | None = None) -> FakeFuture:
        self.threads.add(threading.get_ident())
        self.sent.append((topic, key, value))
        self.headers.append(headers)
        return FakeFuture()

    def flush(self, timeout: float | None = None) -> None:
        self.threads.add(threading.get_ident())

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def producer(**kw: Any) -> DriftwatchProducer:
    kw.setdefault("settings", SETTINGS)
    return DriftwatchProducer(**kw)


def decode_all(sent: list[tuple[str, bytes, bytes]]) -> list[tuple[str, bytes, Any]]:
    return [(topic, key, WIRE_ADAPTER.validate_python(orjson.loads(value))) for topic, key, value in sent]


# ----------------------------------------------------------------------------- packing (pure)
def test_pack_inferences_one_model_version_per_message_in_order() -> None:
    rows = []
    for i in range(7):
        model, version = ("m", "1") if i % 3 else ("n", "2")
        rows.append((model, version, f"e{i}", float(i), None, {"x": float(i), "c": "u"}, {"label": "p"}))
    batches = pack_inferences(rows, max_batch_events=3)
    parsed = [InferenceBatch.model_validate(b) for b in batches]
    assert [(b.model_id, b.model_version, b.event_id) for b in parsed] == [
        ("n", "2", ["e0", "e3", "e6"]),
        ("m", "1", ["e1", "e2", "e4"]),
        ("m", "1", ["e5"]),
    ]
    assert parsed[1].features == {"x": [1.0, 2.0, 4.0], "c": ["u", "u", "u"]}
    assert "source_id" not in batches[0]  # all None: the column is left out


def test_pack_inferences_unions_features_classes_and_prediction_kinds() -> None:
    rows = [
        ("m", "1", "a", 1.0, "s1", {"x": 1.0, "y": 2}, {"label": "p", "probabilities": {"p": 0.9, "q": 0.1}}),
        ("m", "1", "b", 2.0, None, {"y": 3, "x": None}, {"label": "q", "probabilities": {"q": 0.8, "r": 0.2}}),
        ("m", "1", "c", 3.0, "s2", {"z": "w"}, {"score": 0.5}),
    ]
    b = InferenceBatch.model_validate(pack_inferences(rows)[0])
    assert b.features == {"x": [1.0, None, None], "y": [2, 3, None], "z": [None, None, "w"]}
    assert b.source_id == ["s1", None, "s2"]
    assert b.prediction.label == ["p", "q", None]
    assert b.prediction.score == [None, None, 0.5]
    assert b.prediction.value is None
    assert b.prediction.probabilities == {"p": [0.9, None, None], "q": [0.1, 0.8, None], "r": [None, 0.2, None]}


def test_pack_labels_groups_by_model() -> None:
    rows = [("m", "a", "p", 5.0), ("n", "b", 1.5, 6.0), ("m", "c", True, 7.0)]
    out = [LabelBatch.model_validate(b) for b in pack_labels(rows)]
    assert [(b.model_id, b.event_id, b.label, b.label_time) for b in out] == [
        ("m", ["a", "c"], ["p", True], [5.0, 7.0]),
        ("n", ["b"], [1.5], [6.0]),
    ]


def test_encode_batches_halves_messages_over_the_size_limit_keeping_order() -> None:
    rows = [
        ("m", "1", f"e{i:03d}", float(i), None, {"x": float(i), "pad": "p" * 50}, {"value": 1.0}) for i in range(100)
    ]
    batches = pack_inferences(rows)
    whole = len(orjson.dumps(batches[0]))
    limit = whole // 5
    msgs, oversize = encode_batches(batches, "inference", limit)
    assert oversize == 0 and len(msgs) >= 5
    assert all(len(m.value) <= limit for m in msgs)
    assert all(m.key == b"m" for m in msgs)
    ids = [e for m in msgs for e in InferenceBatch.model_validate_json(m.value).event_id]
    assert ids == [f"e{i:03d}" for i in range(100)]
    assert sum(m.events for m in msgs) == 100


def test_encode_batches_drops_and_counts_a_single_event_over_the_limit() -> None:
    rows = [
        ("m", "1", "small", 1.0, None, {"x": 1.0}, {"value": 1.0}),
        ("m", "1", "huge", 2.0, None, {"x": "y" * 5000}, {"value": 1.0}),
    ]
    msgs, oversize = encode_batches(pack_inferences(rows), "inference", 2000)
    assert oversize == 1
    assert [InferenceBatch.model_validate_json(m.value).event_id for m in msgs] == [["small"]]


def _arrow_ids(value: bytes) -> list[str]:
    import pyarrow as pa

    return pa.ipc.open_stream(value).read_all().column("event_id").to_pylist()


def test_encode_batches_in_arrow_halves_and_marks_every_message() -> None:
    rows = [
        ("m", "1", f"e{i:03d}", float(i), None, {"x": float(i), "pad": f"p{i}" * 20}, {"value": 1.0})
        for i in range(100)
    ]
    whole, _ = encode_batches(pack_inferences(rows), "inference", 10**9, wire_format="arrow")
    assert len(whole) == 1 and whole[0].value[:4] == ARROW_MAGIC
    assert whole[0].headers == (("content-type", b"application/vnd.apache.arrow.stream"),)
    msgs, oversize = encode_batches(pack_inferences(rows), "inference", len(whole[0].value) // 3, wire_format="arrow")
    assert oversize == 0 and len(msgs) >= 3 and all(len(m.value) <= len(whole[0].value) // 3 for m in msgs)
    assert [e for m in msgs for e in _arrow_ids(m.value)] == [f"e{i:03d}" for i in range(100)]
    assert all(m.headers == whole[0].headers for m in msgs) and sum(m.events for m in msgs) == 100
    json_msgs, _ = encode_batches(pack_inferences(rows), "inference", 10**9)
    assert json_msgs[0].headers == ()  # JSON: no header (what every worker has always read)


def test_the_wire_format_is_checked_in_the_callers_thread() -> None:
    with pytest.raises(ValueError, match="wire_format: must be one of json, arrow, got 'avro'"):
        producer(wire_format="avro", start=False)


def test_arrow_batches_go_to_kafka_with_their_content_type_header() -> None:
    FakeClient.instances.clear()
    with producer(client_factory=FakeClient, wire_format="arrow", linger_ms=10) as dw:
        ids = [dw.send_inference("iris", {"x": float(i), "c": "u"}, PRED) for i in range(10)]
        dw.send_label("iris", ids[0], "a")
        assert dw.flush(timeout=10)
        stats = dw.stats()
    client = FakeClient.instances[-1]
    assert [t for t, _k, _v in client.sent] == ["t.inf", "t.lab"]
    assert client.headers == [[("content-type", b"application/vnd.apache.arrow.stream")]] * 2
    assert _arrow_ids(client.sent[0][2]) == ids and _arrow_ids(client.sent[1][2]) == ids[:1]
    assert stats.inferences_delivered == 10 and stats.bytes_delivered == sum(len(v) for _t, _k, v in client.sent)
    FakeClient.instances.clear()
    with producer(client_factory=FakeClient, linger_ms=10) as dw:
        dw.send_inference("iris", {"x": 1.0}, PRED)
        assert dw.flush(timeout=10)
    assert FakeClient.instances[-1].headers == [None]  # JSON: sent as before, without headers


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model_id": ""}, "model_id"),
        ({"model_id": 3}, "model_id"),
        ({"features": [1.0, 2.0]}, "features"),
        ({"features": {"x": [1.0]}}, "features['x']"),
        ({"features": {"x": {"a": 1}}}, "features['x']"),
        ({"features": {1: 1.0}}, "features"),
        ({"prediction": "setosa"}, "prediction"),
        ({"prediction": {}}, "prediction"),
        ({"prediction": {"lable": "a"}}, "prediction"),
        ({"prediction": {"label": 1.5}}, "prediction['label']"),
        ({"prediction": {"probabilities": [0.5, 0.5]}}, "prediction['probabilities']"),
        ({"prediction": {"probabilities": {"a": "high"}}}, "prediction['probabilities']['a']"),
        ({"prediction": {"value": "12"}}, "prediction['value']"),
        ({"event_time": "yesterday"}, "event_time"),
        ({"event_time": float("nan")}, "event_time"),
        ({"event_id": ""}, "event_id"),
        ({"source_id": 7}, "source_id"),
        ({"model_version": ""}, "model_version"),
    ],
)
def test_bad_calls_raise_value_error_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    dw = producer(start=False)
    call = {"model_id": "m", "features": {"x": 1.0}, "prediction": PRED, **kwargs}
    with pytest.raises(ValueError) as e:
        dw.send_inference(**call)
    assert str(e.value).startswith(field), str(e.value)
    assert dw.stats().inferences_enqueued == 0
    dw.close(timeout=0)


@pytest.mark.parametrize(("label", "field"), [(None, "label"), (float("inf"), "label"), ([1], "label")])
def test_bad_labels_raise(label: Any, field: str) -> None:
    dw = producer(start=False)
    with pytest.raises(ValueError, match=f"^{field}"):
        dw.send_label("m", "e1", label)
    with pytest.raises(ValueError, match=r"^event_id"):
        dw.send_label("m", "", "a")
    dw.close(timeout=0)


def test_non_finite_values_become_null_and_are_counted() -> None:
    dw = producer(start=False)
    dw.send_inference(
        "m",
        {"a": math.nan, "b": math.inf, "c": 1.0, "d": np.float32("nan")},
        {"probabilities": {"p": math.nan, "q": 1.0}, "value": -math.inf, "label": "p"},
    )
    row = dw._inf[0]
    assert row[5] == {"a": None, "b": None, "c": 1.0, "d": None}
    assert row[6] == {"label": "p", "probabilities": {"p": None, "q": 1.0}}
    assert dw.stats().nonfinite == 5
    dw.close(timeout=0)


def test_numpy_scalars_and_datetimes_are_accepted_and_converted() -> None:
    dw = producer(start=False)
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    dw.send_inference(
        "m",
        {"f64": np.float64(1.5), "i64": np.int64(7), "b": np.bool_(True), "s": np.str_("u")},
        {"label": np.int64(2), "probabilities": {np.int64(2): np.float32(0.5)}},
        event_time=when,
    )
    dw.send_inference("m", {"x": 1}, {"value": np.float64(3.0)}, event_time=datetime(2025, 1, 2, 3, 4, 5))
    (r1, r2) = list(dw._inf)
    assert r1[5] == {"f64": 1.5, "i64": 7, "b": True, "s": "u"}
    assert [type(v) for v in r1[5].values()] == [float, int, bool, str]
    assert r1[6] == {"label": 2, "probabilities": {"2": 0.5}}
    assert r1[3] == r2[3] == when.timestamp()  # a naive datetime is UTC
    batch = InferenceBatch.model_validate_json(orjson.dumps(pack_inferences(list(dw._inf))[0]))
    assert batch.prediction.value == [None, 3.0]
    dw.close(timeout=0)


def test_the_caller_dicts_are_copied_not_kept() -> None:
    dw = producer(start=False)
    feats = {"x": 1.0}
    dw.send_inference("m", feats, {"label": "a"})
    feats["x"] = 2.0
    assert dw._inf[0][5] == {"x": 1.0}
    dw.close(timeout=0)


def test_event_ids_are_returned_unique_uuids_unless_given() -> None:
    dw = producer(start=False)
    ids = [dw.send_inference("m", {"x": 1.0}, PRED) for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    other = producer(start=False)
    assert other.send_inference("m", {}, PRED)[:24] != ids[0][:24]  # per-producer random part
    assert dw.send_inference("m", {"x": 1.0}, PRED, event_id="mine") == "mine"
    dw.close(timeout=0)
    other.close(timeout=0)


# ----------------------------------------------------------------------------- buffer bound
def test_full_buffer_drops_the_oldest_and_counts_it() -> None:
    dw = producer(start=False, max_buffer_events=10)
    for i in range(25):
        dw.send_inference("m", {"x": float(i)}, PRED, event_id=f"e{i}")
        dw.send_label("m", f"e{i}", "a")
    s = dw.stats()
    assert (s.inferences_enqueued, s.labels_enqueued) == (25, 25)
    assert (s.inferences_buffered, s.labels_buffered) == (10, 10)
    assert s.dropped_buffer_full == 30
    assert [r[2] for r in dw._inf] == [f"e{i}" for i in range(15, 25)]  # the newest survive
    assert [r[1] for r in dw._lab] == [f"e{i}" for i in range(15, 25)]
    dw.close(timeout=0)
    assert dw.stats().dropped_closed == 20  # never started: what was buffered is counted, not lost silently


def test_drop_warning_is_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    dw = producer(start=False, max_buffer_events=5, warn_interval_s=3600)
    caplog.set_level(logging.WARNING, logger="streams.wire.producer")
    for _i in range(20):
        dw.send_inference("m", {"x": 1.0}, PRED)
        dw._check_drops()  # what the background thread does on every wake-up
    warnings = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(warnings) == 1
    assert "dropped 1 oldest" in warnings[0].getMessage()
    dw.close(timeout=0)


# ----------------------------------------------------------------------------- background thread
def test_background_thread_packs_column_batches_per_model_version() -> None:
    FakeClient.instances.clear()
    sent = []
    with producer(client_factory=FakeClient, max_batch_events=100, linger_ms=10) as dw:
        for i in range(250):
            model = "iris" if i % 2 else "wine"
            eid = dw.send_inference(
                model,
                {"x": float(i), "c": "u" if i % 3 else None},
                {"label": "a", "probabilities": {"a": 0.6, "b": 0.4}},
                model_version="2" if i % 5 == 0 else None,
                source_id=f"s{i % 4}",
            )
            sent.append((model, eid, float(i)))
            if i % 2:
                dw.send_label(model, eid, "b")
        assert dw.flush(timeout=10)
        stats = dw.stats()
    client = FakeClient.instances[-1]
    assert client.closed
    decoded = decode_all(client.sent)
    inf = [(t, k, o) for t, k, o in decoded if isinstance(o, InferenceBatch)]
    lab = [(t, k, o) for t, k, o in decoded if isinstance(o, LabelBatch)]
    assert all(t == "t.inf" and k == o.model_id.encode() for t, k, o in inf)
    assert all(t == "t.lab" and k == o.model_id.encode() for t, k, o in lab)
    assert all(len(o.event_id) <= 100 for _, _, o in inf)
    got = {(o.model_id, e, x) for _, _, o in inf for e, x in zip(o.event_id, o.features["x"])}
    assert got == set(sent)
    versions = {(o.model_id, o.model_version) for _, _, o in inf}
    assert versions == {("iris", "1"), ("iris", "2"), ("wine", "1"), ("wine", "2")}
    for _, _, o in inf:  # one version per message, and it is the right one
        assert all((int(x) % 5 == 0) == (o.model_version == "2") for x in o.features["x"])
    assert sum(len(o.event_id) for _, _, o in lab) == 125
    assert (stats.inferences_delivered, stats.labels_delivered) == (250, 125)
    assert stats.in_flight_events == 0 and stats.messages_delivered == len(client.sent)


class BlockingClient(FakeClient):
    """A broker that never answers: constructing the client hangs until released."""

    release = threading.Event()

    def __init__(self, **config: Any) -> None:
        BlockingClient.release.wait()
        super().__init__(**config)


def test_calls_never_touch_the_network_even_when_the_broker_hangs() -> None:
    # Counting, not timing: the client is created and used only on the background
    # thread; while its creation hangs, every call still returns (20k of them), and
    # the events are delivered once the "broker" answers.
    BlockingClient.release.clear()
    FakeClient.instances.clear()
    dw = producer(client_factory=BlockingClient, linger_ms=5, max_buffer_events=100_000)
    caller = threading.get_ident()
    for i in range(20_000):
        dw.send_inference("m", {"x": float(i)}, PRED)
    s = dw.stats()
    assert s.inferences_enqueued == 20_000 and s.inferences_delivered == 0
    assert FakeClient.instances == []  # the background thread is still stuck connecting
    assert dw.flush(timeout=0.2) is False  # flush gives up at its timeout, without raising
    BlockingClient.release.set()
    assert dw.flush(timeout=10)
    client = FakeClient.instances[-1]
    assert caller not in client.threads
    assert sum(len(o.event_id) for _, _, o in decode_all(client.sent)) == 20_000
    assert dw.close(timeout=5)


def test_unreachable_broker_never_raises_and_bounds_memory() -> None:
    dw = DriftwatchProducer(
        settings=SETTINGS,
        bootstrap_servers="127.0.0.1:9",  # discard port: nothing listens
        max_buffer_events=1000,
        linger_ms=10,
        kafka_options={"bootstrap_timeout_ms": 300},
    )
    for i in range(5000):
        dw.send_inference("m", {"x": float(i)}, PRED)
        dw.send_label("m", f"e{i}", "a")
    s = dw.stats()
    assert s.inferences_enqueued == 5000 and s.labels_enqueued == 5000
    assert s.inferences_buffered + s.labels_buffered <= 2000 + 2 * 1000  # buffers + one drained batch
    assert s.dropped_buffer_full >= 10_000 - 4000
    assert dw.close(timeout=1.0) is False
    after = dw.stats()
    assert after.inferences_delivered == 0
    dw.send_inference("m", {"x": 1.0}, PRED)  # after close: dropped and counted, not raised
    assert dw.stats().dropped_closed == after.dropped_closed + 1


def test_close_is_idempotent_and_context_manager_closes() -> None:
    FakeClient.instances.clear()
    with producer(client_factory=FakeClient, linger_ms=10) as dw:
        dw.send_inference("m", {"x": 1.0}, PRED)
    assert dw.close() is True
    assert FakeClient.instances[-1].closed
    assert dw.stats().inferences_delivered == 1


def test_failed_deliveries_are_counted() -> None:
    class Refusing(FakeClient):
        def send(self, topic, value, key):
            super().send(topic, value, key)
            return FakeFuture(ok=False)

    with producer(client_factory=Refusing, linger_ms=10) as dw:
        for _ in range(10):
            dw.send_inference("m", {"x": 1.0}, PRED)
        dw.flush(timeout=5)
        assert dw.stats().failed == 10
        assert dw.stats().in_flight_events == 0


def test_settings_security_options_reach_kafka_python() -> None:
    s = Settings(
        kafka_bootstrap="b1:9093,b2:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="u",
        kafka_sasl_password="pw",
    )
    dw = DriftwatchProducer(settings=s, start=False, compression_type="gzip", kafka_options={"acks": 1})
    cfg = dw._client_config
    assert cfg["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert (
        cfg["security_protocol"],
        cfg["sasl_mechanism"],
        cfg["sasl_plain_username"],
        cfg["sasl_plain_password"],
    ) == ("SASL_SSL", "SCRAM-SHA-512", "u", "pw")
    assert cfg["compression_type"] == "gzip" and cfg["acks"] == 1
    assert cfg["max_request_size"] > s.max_message_bytes
    from kafka import KafkaProducer

    assert set(cfg) <= set(KafkaProducer.DEFAULT_CONFIG)  # every key is one kafka-python knows
    dw.close(timeout=0)


# ----------------------------------------------------------------------------- real broker
@pytest.mark.integration
def test_events_sent_through_the_real_broker_decode_back(settings: Settings, consume_all) -> None:
    from streams.worker.decode import Decoder, RawMessage
    from streams.worker.monitors import parse_monitors

    rng = np.random.default_rng(7)
    sent: dict[str, tuple] = {}
    labels: dict[str, Any] = {}
    with DriftwatchProducer(settings=settings, max_batch_events=500, linger_ms=20) as dw:
        for i in range(3000):
            model = ("wine", "diabetes", "iris")[i % 3]
            feats = {"x": float(rng.normal()), "n": int(rng.integers(10)), "c": str(rng.choice(["u", "v"]))}
            if i % 100 == 0:
                feats["x"] = math.nan  # sent as null
            pred = (
                {"value": float(rng.normal())}
                if model == "diabetes"
                else {"label": "p", "probabilities": {"p": 0.7, "q": 0.3}}
            )
            eid = dw.send_inference(model, feats, pred, source_id=f"c{i % 7}", event_time=1_700_000_000.0 + i)
            sent[eid] = (model, feats, pred)
            if i % 4 == 0:
                dw.send_label(model, eid, "p" if model != "diabetes" else 1.5)
                labels[eid] = model
        assert dw.flush(timeout=30)
        stats = dw.stats()
    assert stats.inferences_delivered == 3000 and stats.labels_delivered == len(labels)
    assert stats.nonfinite == 30

    inf = consume_all(settings, settings.topic_inferences, expected=None, timeout=20)
    lab = consume_all(settings, settings.topic_labels, expected=None, timeout=20)
    got = {}
    for r in inf:
        b = InferenceBatch.model_validate_json(r.value)
        assert r.key == b.model_id.encode()
        for j, eid in enumerate(b.event_id):
            got[eid] = (b.model_id, {k: v[j] for k, v in b.features.items()})
    assert len(got) == 3000 and sum(1 for r in inf for _ in orjson.loads(r.value)["event_id"]) == 3000
    for eid, (model, feats, _pred) in sent.items():
        expect = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in feats.items()}
        assert got[eid] == (model, expect)
    got_labels = [e for r in lab for e in LabelBatch.model_validate_json(r.value).event_id]
    assert sorted(got_labels) == sorted(labels)
    # every model's messages sit in one partition (key = model id)
    parts = Counter((orjson.loads(r.value)["model_id"], r.partition) for r in inf)
    assert len({m for m, _ in parts}) == len(parts)

    # and the worker's decoder reads every event, dead-lettering none
    cfg = parse_monitors(
        {
            "models": [
                {
                    "model_id": m,
                    "task": "regression" if m == "diabetes" else "classification",
                    "features": [
                        {"name": "x", "kind": "numeric"},
                        {"name": "n", "kind": "numeric"},
                        {"name": "c", "kind": "categorical"},
                    ],
                }
                for m in ("wine", "diabetes", "iris")
            ]
        }
    )
    out = Decoder(cfg).decode(
        [RawMessage(r.value, r.key, r.topic, r.partition, r.offset, r.timestamp) for r in inf + lab]
    )
    assert out.dead == []
    assert sum(len(p.frame) for p in out.frames.values()) == 3000
    assert sum(len(p) for p in out.labels) == len(labels)
    assert sum(int(np.isnan(p.frame.numeric["x"]).sum()) for p in out.frames.values()) == 30


@pytest.mark.integration
def test_arrow_batches_through_the_real_broker_keep_their_header_and_decode_back(
    settings: Settings, consume_all
) -> None:
    from streams.worker.decode import Decoder, RawMessage, content_type
    from streams.worker.monitors import parse_monitors

    with DriftwatchProducer(settings=settings, wire_format="arrow", max_batch_events=200, linger_ms=20) as dw:
        ids = [dw.send_inference("iris", {"x": i * 0.5, "c": ("u", "v", None)[i % 3]}, PRED) for i in range(1000)]
        for eid in ids[::10]:
            dw.send_label("iris", eid, "a")
        assert dw.flush(timeout=30)
    records = consume_all(settings, settings.topic_inferences, expected=None, timeout=20)
    records += consume_all(settings, settings.topic_labels, expected=None, timeout=20)
    assert {content_type(r.headers) for r in records} == {"application/vnd.apache.arrow.stream"}
    cfg = parse_monitors(
        {
            "models": [
                {
                    "model_id": "iris",
                    "features": [{"name": "x", "kind": "numeric"}, {"name": "c", "kind": "categorical"}],
                }
            ]
        }
    )
    out = Decoder(cfg).decode(
        [
            RawMessage(r.value, r.key, r.topic, r.partition, r.offset, r.timestamp, content_type(r.headers))
            for r in records
        ]
    )
    assert out.dead == []
    (part,) = out.frames.values()
    # in order; a message the broker got twice (a retried send, seen once under heavy load) shows twice
    first = np.unique(part.frame.event_id.astype(str), return_index=True)[1]
    keep = np.sort(first)
    assert part.frame.event_id[keep].tolist() == ids
    assert part.frame.numeric["x"][keep].tolist() == [i * 0.5 for i in range(1000)]
    assert part.frame.categorical["c"][keep].tolist() == [("u", "v", None)[i % 3] for i in range(1000)]
    assert list(dict.fromkeys(e for p in out.labels for e in p.event_id.tolist())) == ids[::10]


@pytest.mark.integration
def test_send_tool_publishes_lines_as_they_are(settings: Settings, settings_env: dict[str, str], consume_all) -> None:
    import os
    import subprocess
    import sys

    lines = [
        b'{"schema_version":1,"type":"inference","event_id":"e-1","model_id":"wine","event_time":"2025-06-01T12:00:00Z",'
        b'"features":{"alcohol":13.2},"prediction":{"label":"class_0"}}',
        b'[{"schema_version":1,"type":"inference","event_id":"e-2","model_id":"iris","event_time":1.5,'
        b'"features":{},"prediction":{"value":1.0}}]',
        b"not json at all",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "streams.wire.producer", "send"],
        input=b"\n".join(lines) + b"\n",
        env={**os.environ, **settings_env},
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"sent 3 messages to {settings.topic_inferences}" in proc.stdout.decode()
    recs = consume_all(settings, settings.topic_inferences, expected=3)
    assert {(r.key, r.value) for r in recs} == {(b"wine", lines[0]), (b"iris", lines[1]), (None, lines[2])}


def test_a_forked_child_starts_empty_with_its_own_thread() -> None:
    import os

    FakeClient.instances.clear()
    dw = producer(client_factory=FakeClient, linger_ms=5)
    dw.send_inference("m", {"x": 1.0}, PRED, event_id="parent-1")
    assert dw.flush(timeout=5)
    with dw._lock:  # fork while an event is buffered: it belongs to the parent only
        dw._inf.append(("m", "1", "parent-2", 1.0, None, {"x": 2.0}, PRED))
        pid = os.fork()
    if pid == 0:  # the child: report through the exit code, never return into pytest
        code = 1
        try:
            FakeClient.instances.clear()
            dw.send_inference("m", {"x": 3.0}, PRED, event_id="child-1")
            ok = dw.flush(timeout=5)
            ids = [e for _, _, o in decode_all(FakeClient.instances[-1].sent) for e in o.event_id]
            code = 0 if ok and ids == ["child-1"] and dw.stats().inferences_enqueued == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert dw.flush(timeout=5)
    ids = [e for _, _, o in decode_all(FakeClient.instances[0].sent) for e in o.event_id]
    assert ids == ["parent-1", "parent-2"]
    dw.close()


def test_linger_zero_sends_at_once_without_spinning() -> None:
    import time as _time

    FakeClient.instances.clear()
    wakeups = []
    with producer(client_factory=FakeClient, linger_ms=0) as dw:
        real = dw._check_drops  # runs once per wake-up of the background thread
        dw._check_drops = lambda: (wakeups.append(1), real())
        _time.sleep(0.3)
        idle_wakeups = len(wakeups)
        dw.send_inference("m", {"x": 1.0}, PRED)
        deadline = _time.monotonic() + 5
        while dw.stats().inferences_delivered < 1 and _time.monotonic() < deadline:
            _time.sleep(0.005)
        assert dw.stats().inferences_delivered == 1  # woken by the event, long before its 1 s timer
        assert idle_wakeups <= 2  # idle, it sleeps instead of spinning
    assert len(FakeClient.instances[-1].sent) == 1


# ----------------------------------------------------------------------------- sharded models
class ShardingClient(FakeClient):
    """A fake broker with 4 partitions that records the partition each message was sent to."""

    def send(self, topic: str, value: bytes, key: bytes, partition: int | None = None) -> FakeFuture:
        self.sent.append((topic, key, value))
        self.partitions = getattr(self, "partitions", [])
        self.partitions.append(partition)
        return FakeFuture()

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}


def test_a_sharded_model_spreads_over_its_shards_partitions_and_labels_follow_their_predictions() -> None:
    import zlib

    from kafka.partitioner.default import murmur2 as kafka_murmur2  # the peer implementation

    from streams.wire.contract import home_partition, murmur2, shard_partitions

    for key in (b"", b"a", b"ab", b"abc", b"hot-model", "ü-id".encode()):
        assert murmur2(key) & 0xFFFFFFFF == kafka_murmur2(key) & 0xFFFFFFFF
    assert home_partition("hot", 4) == (kafka_murmur2(b"hot") & 0x7FFFFFFF) % 4
    FakeClient.instances.clear()
    with producer(client_factory=ShardingClient, linger_ms=5, shards={"hot": 4}) as dw:
        eids = [dw.send_inference("hot", {"x": float(i)}, {"label": "a"}) for i in range(400)]
        for e in eids[::3]:
            dw.send_label("hot", e, "a")
        dw.send_inference("cold", {"x": 1.0}, {"label": "a"})
        assert dw.flush(timeout=10)
    client = FakeClient.instances[-1]
    where: dict[tuple[str, str], int] = {}
    for (topic, key, value), part in zip(client.sent, client.partitions):
        doc = orjson.loads(value)
        assert key == doc["model_id"].encode()  # the key stays the model id
        if doc["model_id"] == "cold":
            assert part is None  # unsharded: Kafka's partitioner, by key
            continue
        for e in doc["event_id"]:
            assert part == shard_partitions("hot", 4, 4)[zlib.crc32(e.encode()) % 4]
            where[(topic, e)] = part
    assert {where[("t.inf", e)] for e in eids} == {0, 1, 2, 3}
    assert all(where[("t.lab", e)] == where[("t.inf", e)] for e in eids[::3])


@pytest.mark.parametrize(
    ("shards", "match"), [(0, "shards: must be"), ({"m": 0}, r"shards\['m'\]"), ({"m": True}, r"shards\['m'\]")]
)
def test_bad_shards_raise_naming_the_field(shards: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        producer(start=False, shards=shards)


@pytest.mark.integration
def test_a_sharded_model_through_the_real_broker_lands_on_its_shards_partitions(
    settings: Settings, consume_all
) -> None:
    import zlib

    from streams.wire.contract import shard_partitions

    parts = shard_partitions("hot", 4, settings.topic_partitions)
    with DriftwatchProducer(settings=settings, linger_ms=10, shards={"hot": 4}) as dw:
        eids = [dw.send_inference("hot", {"x": float(i)}, {"label": "a"}) for i in range(800)]
        for e in eids[::4]:
            dw.send_label("hot", e, "a")
        assert dw.flush(timeout=30)
    inf = consume_all(settings, settings.topic_inferences, expected=None, timeout=20)
    lab = consume_all(settings, settings.topic_labels, expected=None, timeout=20)
    where = {}
    for r in inf:
        assert r.key == b"hot"
        for e in orjson.loads(r.value)["event_id"]:
            assert r.partition == parts[zlib.crc32(e.encode()) % 4]
            where[e] = r.partition
    assert sorted(where) == sorted(eids) and set(where.values()) == set(parts)
    got = {e: r.partition for r in lab for e in orjson.loads(r.value)["event_id"]}
    assert got == {e: where[e] for e in eids[::4]}  # every label in its prediction's partition
