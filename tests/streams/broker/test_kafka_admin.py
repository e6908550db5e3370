"""Topic and database administration against the real local stack."""

from __future__ import annotations

import uuid

import httpx
import pytest
from kafka import KafkaAdminClient, KafkaProducer

from streams.broker.admin import (
    TopicError,
    consume_all,
    delete_topics,
    ensure_topics,
    list_topics,
    topic_names,
)
from streams.influx.admin import (
    InfluxAdminError,
    drop_database,
    ensure_database,
    list_databases,
    query,
)
from streams.influx.influxql import quote_ident
from streams.settings import Settings

pytestmark = pytest.mark.integration


def _partitions(settings: Settings, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=5000)
    try:
        (desc,) = admin.describe_topics([topic])
        return len(desc["partitions"])
    finally:
        admin.close()


def test_settings_fixture_created_topics_with_four_partitions(settings: Settings) -> None:
    names = topic_names(settings)
    assert set(names) <= set(list_topics(settings))
    # independent check through a separate admin client
    assert {t: _partitions(settings, t) for t in names} == {t: 4 for t in names}


def test_ensure_topics_is_idempotent_and_creates_extra(settings: Settings) -> None:
    extra = f"x{uuid.uuid4().hex[:8]}.extra"
    counts = ensure_topics(settings, partitions=3, extra=[extra])
    # existing topics are left with their 4 partitions; the new one gets 3
    assert counts[settings.topic_inferences] == 4
    assert counts[extra] == 3
    assert _partitions(settings, extra) == 3
    assert ensure_topics(settings, partitions=3, extra=[extra]) == counts
    assert delete_topics(settings, [extra]) == [extra]
    assert extra not in list_topics(settings)
    assert delete_topics(settings, [extra]) == []  # missing: ignored


def test_consume_all_reads_every_partition_from_the_beginning(settings: Settings) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    for i in range(20):
        producer.send(settings.topic_deadletter, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()
    recs = consume_all(settings, settings.topic_deadletter, expected=20, timeout=15)
    assert sorted(r.value for r in recs) == sorted(f"v{i}".encode() for i in range(20))
    assert len({r.partition for r in recs}) > 1  # keys spread over the 4 partitions
    # expected=None: stops once the topic is quiet
    assert len(consume_all(settings, settings.topic_deadletter, timeout=10, idle=0.5)) == 20


def test_consume_all_unknown_topic_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(TopicError, match="does not exist"):
        consume_all(settings, f"missing{uuid.uuid4().hex[:6]}", timeout=0.5)


def test_unreachable_broker_is_a_clear_error() -> None:
    from streams.devstack.localstack import free_port

    s = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    with pytest.raises(TopicError, match="cannot reach the Kafka broker"):
        ensure_topics(s, timeout_ms=1500)


def test_database_fixture_and_round_trip(settings: Settings) -> None:
    assert settings.influx_db in list_databases(settings)
    ensure_database(settings)  # idempotent
    r = httpx.post(
        f"{settings.influx_url}/write",
        params={"db": settings.influx_db, "precision": "s"},
        content=b"m,model=a value=1.5 1700000000\nm,model=b value=2.5 1700000000",
        auth=(settings.influx_username, settings.influx_password.get_secret_value()),
    )
    assert r.status_code == 204, r.text
    body = query(settings, 'SELECT "value" FROM "m" GROUP BY "model"')
    got = {s["tags"]["model"]: s["values"][0][1] for s in body["results"][0]["series"]}
    assert got == {"a": 1.5, "b": 2.5}


def test_drop_database_and_odd_names(settings: Settings) -> None:
    odd = f'odd "name" {uuid.uuid4().hex[:6]}'
    assert ensure_database(settings, odd) == odd
    assert odd in list_databases(settings)
    drop_database(settings, odd)
    assert odd not in list_databases(settings)
    drop_database(settings, odd)  # missing: fine


def test_bad_query_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(InfluxAdminError, match=r"400.*SELEKT"):
        query(settings, "SELEKT nonsense")
    with pytest.raises(InfluxAdminError, match=r"rejected.*nope"):
        query(settings, 'SELECT * FROM "m"', db="nope")


def test_unreachable_influx_is_a_clear_error() -> None:
    from streams.devstack.localstack import free_port

    s = Settings(influx_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InfluxAdminError, match="cannot reach InfluxDB"):
        ensure_database(s)


def test_quote_ident() -> None:
    assert quote_ident("plain") == '"plain"'
    assert quote_ident('a"b\\c') == '"a\\"b\\\\c"'
