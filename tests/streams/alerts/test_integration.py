"""Alerting on the real local stack: the alerts topic on the broker (aiokafka producer),
dw_alert / dw_delivery points through the real InfluxDB sink into InfluxDB 1.x, a webhook
on a real local receiver."""

from __future__ import annotations

import asyncio
import json

import pytest

from detectors.records import ALERT, DELIVERY
from streams.influx.admin import query
from streams.influx.sink import InfluxSink
from tests.streams.alerts.helpers import SECRET, SECRET_ENV, make_alerting, webhook, window
from tests.streams.alerts.receiver import Receiver

pytestmark = pytest.mark.integration


def test_alerts_topic_influx_points_and_webhook(settings, consume_all, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    receiver = Receiver().start()

    async def main():
        sink = InfluxSink(settings)
        await sink.start()
        al = make_alerting(
            settings.state_dir, [webhook("j", receiver.url)], settings=settings, publish=None, write_records=sink.submit
        )
        await al.start()
        try:
            for i, p in enumerate([0.001, 0.002, 0.5], start=1):
                records = window(i, {"age": p})
                await sink.submit(records + al.on_window("m", "1", records))
            assert await al.drain(30), al.store.deliveries()
        finally:
            await al.stop()
            await sink.flush()
            await sink.stop()

    try:
        asyncio.run(main())
    finally:
        receiver.stop()
    msgs = consume_all(settings, settings.topic_alerts, expected=2, timeout=20)
    assert len(msgs) == 2
    assert {m.key for m in msgs} == {b"m/1/feature_drift{detector=ks,feature=age}"}
    values = sorted((json.loads(m.value) for m in msgs), key=lambda v: v["window_end"])
    assert [v["status"] for v in values] == ["firing", "resolved"]
    headers = [dict(m.headers) for m in msgs]
    assert {h["Idempotency-Key"].decode() for h in headers} == {v["id"] for v in values}
    # the webhook got the same announcements, with the same idempotency keys
    assert [q.headers["idempotency-key"] for q in receiver.requests] == [v["id"] for v in values]

    res = query(settings, f'SELECT "status", "value", "firing" FROM "{ALERT}" GROUP BY "feature"')
    rows = res["results"][0]["series"][0]["values"]
    assert [(r[1], r[3]) for r in rows] == [("firing", 1), ("firing", 1), ("resolved", 0)]
    res = query(settings, f'SELECT last("status") AS s, last("attempts") AS a FROM "{DELIVERY}" GROUP BY "endpoint"')
    got = {s["tags"]["endpoint"]: s["values"][0][1:] for s in res["results"][0]["series"]}
    assert got == {"j": ["delivered", 1], "kafka": ["delivered", 1]}
