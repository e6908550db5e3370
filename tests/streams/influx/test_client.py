"""The one InfluxDB client (streams/influx/client.py): targets, answers, errors — against the real InfluxDB.

The sink, the admin and the dashboard all reach InfluxDB through it; these tests check that the
three read one answer the same way, on the session's real InfluxDB 1.x (tests/conftest.py).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from dashboard import queries as Q
from detectors.records import DRIFT, T_FEATURE, T_MODEL, Record
from streams.influx import client as C
from streams.influx.admin import InfluxAdminError, ensure_database
from streams.influx.admin import query as admin_query
from streams.influx.influxql import quote_ident, quote_literal
from streams.influx.sink import query as sink_query
from streams.influx.sink import write_records
from streams.settings import Settings


def test_target_from_settings_picks_the_bucket_on_2x_and_the_credential() -> None:
    s1 = Settings(influx_url="http://h:8086/", influx_db="dw", influx_username="u", influx_password="pw-secret")
    v1 = C.InfluxTarget.from_settings(s1)
    assert (v1.url, v1.db, v1.auth_options()) == ("http://h:8086", "dw", {"auth": ("u", "pw-secret")})
    v2 = C.InfluxTarget.from_settings(
        Settings(influx_version=2, influx_bucket="b", influx_token="tok-secret", influx_org="o")
    )
    assert v2.db == "b" and v2.auth_options() == {"headers": {"Authorization": "Token tok-secret"}}
    assert "secret" not in repr(v1) + repr(v2)  # secrets stay out of reprs (and so out of logs)
    assert hash(v1) == hash(C.InfluxTarget.from_settings(s1))  # the dashboard's caches key on it
    assert Q.Conn is C.InfluxTarget and Q.NoDatabase is C.DatabaseNotFound and Q.InfluxError is C.InfluxQueryError


def _answer(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "http://h/query"))


def test_statement_results_maps_every_error_to_one_family() -> None:
    target = C.InfluxTarget("http://u:secret@h:8086", "dw")
    ok = _answer(
        200,
        {
            "results": [
                {"statement_id": 0, "series": [{"name": "m", "columns": ["time", "v"], "values": [[1, 2.0]]}]},
                {"statement_id": 1},
            ]
        },
    )
    assert C.statement_results(ok, target, ["a", "b"]) == [
        [{"name": "m", "columns": ["time", "v"], "values": [[1, 2.0]]}],
        [],
    ]
    with pytest.raises(C.DatabaseNotFound, match="'dw' does not exist") as e:
        C.statement_results(
            _answer(200, {"results": [{"statement_id": 0, "error": "database not found: dw"}]}), target, ["SELECT 1"]
        )
    assert "secret" not in str(e.value)
    with pytest.raises(C.InfluxQueryError, match=r"rejected 'SELECT x'.*bad"):
        C.statement_results(_answer(200, {"results": [{"statement_id": 0, "error": "bad"}]}), target, ["SELECT x"])
    with pytest.raises(C.InfluxQueryError, match=r"refused the credentials \(401\)"):
        C.statement_results(_answer(401, {"error": "authorization failed"}), target, ["SELECT 1"])
    with pytest.raises(C.InfluxQueryError, match="rejected"):
        C.statement_results(_answer(400, {"error": "error parsing query"}), target, ["SELEC"])
    not_json = httpx.Response(502, text="<html>", request=httpx.Request("GET", "http://h/query"))
    with pytest.raises(C.InfluxQueryError, match="answered 502"):
        C.statement_results(not_json, target, ["SELECT 1"])


def test_rows_carry_columns_tags_and_measurement() -> None:
    series = [{"name": "dw_drift", "tags": {"feature": "x"}, "columns": ["time", "p"], "values": [[1, 0.5], [2, 0.1]]}]
    assert C.rows(series) == [
        {"time": 1, "p": 0.5, "feature": "x", "measurement": "dw_drift"},
        {"time": 2, "p": 0.1, "feature": "x", "measurement": "dw_drift"},
    ]


@pytest.mark.integration
def test_sink_admin_and_dashboard_read_one_answer_alike_on_the_real_influxdb(settings: Settings) -> None:
    target = C.InfluxTarget.from_settings(settings)
    missing = settings.model_copy(update={"influx_db": settings.influx_db + "_missing"})
    with pytest.raises(C.DatabaseNotFound):  # a database never created: the sink and the dashboard say so alike
        sink_query(missing, f"SELECT * FROM {quote_ident(DRIFT)}")
    with pytest.raises(Q.NoDatabase):
        Q.run(Q.Conn.from_settings(missing), f"SELECT * FROM {quote_ident(DRIFT)}")
    ensure_database(settings)  # idempotent (the fixture created it)
    feature = 'it\'s "odd"'  # quoted by the one helper, in tags and in WHERE
    write_records(settings, [Record(DRIFT, {T_MODEL: "m", T_FEATURE: feature}, {"p_value": 0.25}, 1_000_000_000)])
    q = f"SELECT p_value FROM {quote_ident(DRIFT)} WHERE {quote_ident(T_FEATURE)} = {quote_literal(feature)}"
    rows = sink_query(settings, q)
    assert [(r["time"], r["p_value"]) for r in rows] == [(1_000_000_000, 0.25)]
    assert C.query(target, q, epoch="ms")[0]["time"] == 1_000
    series = Q.run(Q.Conn.from_settings(settings), q)[0]
    assert series[0]["values"] == [[1_000, 0.25]]  # the dashboard asks for epoch ms
    body = admin_query(settings, q)
    assert body["results"][0]["series"][0]["values"] == [[1_000_000_000, 0.25]]

    async def via_async_client() -> list[dict]:
        async with httpx.AsyncClient(base_url=target.url, **target.auth_options()) as client:
            return await C.aquery(client, target, q)

    assert asyncio.run(via_async_client()) == rows
    with pytest.raises(C.InfluxQueryError, match="rejected"):
        sink_query(settings, "SELEC nothing")
    with pytest.raises(Q.InfluxError, match="rejected"):
        Q.run(Q.Conn.from_settings(settings), "SELEC nothing")
    with pytest.raises(InfluxAdminError, match="SELEC"):  # the admin keeps its own error type and says why
        admin_query(settings, "SELEC nothing")


def test_an_unreachable_influxdb_is_influx_unavailable() -> None:
    target = C.InfluxTarget("http://127.0.0.1:9", "dw", timeout=2.0)  # discard port: nothing listens
    with pytest.raises(C.InfluxUnavailable, match="cannot reach InfluxDB"):
        C.query(target, "SHOW DATABASES")
    with pytest.raises(Q.InfluxUnavailable):
        Q.run(target, "SHOW DATABASES")
