"""Webhook delivery against a real local HTTP receiver started by the test.

Payload formats, signature verification with the documented snippet, retries on 500 and
on a receiver that is down and comes back (exactly once per idempotency key), no second
notification for one firing, the resolve sent once, per-endpoint isolation, timeouts,
secrets kept out of logs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import Counter

import pytest

from streams.alerts.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER
from tests.streams.alerts.helpers import (
    SECRET,
    SECRET_ENV,
    documented_verify,
    make_alerting,
    until,
    webhook,
    window,
)
from tests.streams.alerts.receiver import Receiver

VERIFY = documented_verify()
SIG = SIGNATURE_HEADER.lower()
IDEM = IDEMPOTENCY_HEADER.lower()


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def bodies(r: Receiver, path: str | None = None) -> list[dict]:
    return [json.loads(q.body) for q in r.requests if path is None or q.path == path]


def test_payload_formats_signed_and_idempotent(tmp_path, receiver):
    async def main():
        al = make_alerting(
            tmp_path,
            [
                webhook("j", receiver.url + "/json"),
                webhook("s", receiver.url + "/slack", format="slack"),
                webhook("am", receiver.url + "/am", format="alertmanager"),
            ],
        )
        await al.start()
        try:
            al.on_window("m", "1", window(1, {"age": 0.001, "income": 0.5}))
            assert await until(lambda: len(receiver.requests) == 3, 10)
            al.on_window("m", "1", window(2, {"age": 0.4, "income": 0.5}))
            assert await until(lambda: len(receiver.requests) == 6, 10)
            assert await al.drain(5)
        finally:
            await al.stop()

    asyncio.run(main())
    for q in receiver.requests:
        assert q.headers["content-type"] == "application/json"
        assert VERIFY(SECRET.encode(), q.body, q.headers[SIG]), q.path
        assert not VERIFY(b"wrong", q.body, q.headers[SIG])
    by_path = {p: [q for q in receiver.requests if q.path == f"/hook/{p}"] for p in ("json", "slack", "am")}
    # the same announcement has the same idempotency key on every endpoint
    for i in range(2):
        assert len({by_path[p][i].headers[IDEM] for p in by_path}) == 1

    fire, resolve = (json.loads(q.body) for q in by_path["json"])
    assert fire["status"] == "firing" and resolve["status"] == "resolved"
    assert fire["id"] == by_path["json"][0].headers[IDEM] != resolve["id"]
    assert fire["key"] == "m/1/feature_drift{detector=ks,feature=age}"
    assert fire["summary"] == "age drifted on m v1: p=0.001"
    assert fire["labels"] == {
        "alertname": "feature_drift",
        "model": "m",
        "version": "1",
        "severity": "warning",
        "detector": "ks",
        "feature": "age",
    }
    assert fire["value"] == 0.001 and fire["threshold"] == 0.01 and fire["ends_at"] is None
    assert resolve["ends_at"] is not None and resolve["starts_at"] == fire["starts_at"]
    assert fire["dashboard_url"] == "http://dash.test:8501/drift?model=m&version=1&feature=age"

    slack_fire, slack_resolve = (json.loads(q.body) for q in by_path["slack"])
    assert "[FIRING]" in slack_fire["text"] and "age drifted" in slack_fire["text"]
    assert "[RESOLVED]" in slack_resolve["text"]
    assert {b["type"] for b in slack_fire["blocks"]} >= {"section", "context", "actions"}
    assert slack_fire["blocks"][-1]["elements"][0]["url"] == fire["dashboard_url"]

    am_fire, am_resolve = (json.loads(q.body) for q in by_path["am"])
    assert set(am_fire) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert am_fire["version"] == "4" and am_fire["receiver"] == "am" and am_fire["status"] == "firing"
    assert am_fire["groupKey"] == '{}:{alertname="feature_drift", model="m", version="1"}'
    assert am_fire["externalURL"] == "http://dash.test:8501"
    (a,) = am_fire["alerts"]
    assert set(a) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert a["labels"]["alertname"] == "feature_drift" and a["annotations"]["summary"] == fire["summary"]
    assert a["endsAt"] == "0001-01-01T00:00:00Z" and a["startsAt"] == fire["starts_at"]
    assert a["fingerprint"] == fire["fingerprint"] == am_resolve["alerts"][0]["fingerprint"]
    assert am_resolve["status"] == "resolved" and am_resolve["alerts"][0]["endsAt"] == resolve["ends_at"]


def test_no_second_notification_for_one_firing_and_one_resolve(tmp_path, receiver):
    published = []

    async def publish(key, value, headers):
        published.append((key, json.loads(value)["status"]))

    async def main():
        al = make_alerting(tmp_path, [webhook("j", receiver.url)], publish=publish)
        await al.start()
        try:
            for i in range(1, 6):
                recs = al.on_window("m", "1", window(i, {"age": 0.001}))
                assert recs[0].fields["status"] == "firing"
            for i in range(6, 10):
                al.on_window("m", "1", window(i, {"age": 0.5}))
            assert await al.drain(10)
            await asyncio.sleep(0.3)
        finally:
            await al.stop()

    asyncio.run(main())
    assert [b["status"] for b in bodies(receiver)] == ["firing", "resolved"]
    assert published == [
        (b"m/1/feature_drift{detector=ks,feature=age}", "firing"),
        (b"m/1/feature_drift{detector=ks,feature=age}", "resolved"),
    ]


def test_retries_on_500_with_backoff_and_keeps_body_and_key(tmp_path, receiver):
    receiver.statuses = [500, 500, 503]
    records = []

    async def main():
        al = make_alerting(tmp_path, [webhook("j", receiver.url)], write_records=records.extend)
        await al.start()
        try:
            al.on_window("m", "1", window(1, {"age": 0.001}))
            assert await until(lambda: len(receiver.requests) == 4, 15)
            assert await al.drain(5)
            return al.store.deliveries()
        finally:
            await al.stop()

    (log,) = asyncio.run(main())
    reqs = receiver.requests
    assert len({q.body for q in reqs}) == 1 and len({q.headers[IDEM] for q in reqs}) == 1
    assert [q.headers["x-driftwatch-attempt"] for q in reqs] == ["1", "2", "3", "4"]
    assert all(VERIFY(SECRET.encode(), q.body, q.headers[SIG]) for q in reqs)
    gaps = [b.at - a.at for a, b in itertools.pairwise(reqs)]
    # backoff: attempt n waits in [d/2, d], d = min(0.3, 0.05 * 2^(n-1))
    for n, gap in enumerate(gaps, start=1):
        d = min(0.3, 0.05 * 2 ** (n - 1))
        assert d / 2 - 0.01 <= gap <= d + 0.5, (n, gap)
    assert (log.status, log.attempts, log.http_status) == ("delivered", 4, 200)
    assert log.last_error.startswith("HTTP 503")
    statuses = [(r.fields["status"], r.fields["attempts"]) for r in records]
    assert statuses == [("retrying", 1), ("retrying", 2), ("retrying", 3), ("delivered", 4)]
    assert len({(r.time_ns, tuple(sorted(r.tags.items()))) for r in records}) == 1  # one point, rewritten


def test_client_errors_are_not_retried_and_do_not_block_the_queue(tmp_path, receiver):
    receiver.statuses = [400]

    async def main():
        al = make_alerting(tmp_path, [webhook("j", receiver.url)])
        await al.start()
        try:
            al.on_window("m", "1", window(1, {"age": 0.001, "income": 0.002}))
            assert await al.drain(10)
            return {r.alert_key: r for r in al.store.deliveries()}
        finally:
            await al.stop()

    log = asyncio.run(main())
    assert len(receiver.requests) == 2
    assert sorted((r.status, r.attempts, r.http_status) for r in log.values()) == [
        ("delivered", 1, 200),
        ("failed", 1, 400),
    ]


def test_retry_after_is_honoured(tmp_path, receiver):
    receiver.statuses = [429]
    receiver.extra_headers = {"Retry-After": "1"}

    async def main():
        al = make_alerting(tmp_path, [webhook("j", receiver.url, backoff_max_seconds=5)])
        await al.start()
        try:
            al.on_window("m", "1", window(1, {"age": 0.001}))
            assert await until(lambda: len(receiver.requests) == 2, 10)
        finally:
            await al.stop()

    asyncio.run(main())
    assert receiver.requests[1].at - receiver.requests[0].at >= 0.95


def test_timeout_is_per_endpoint_and_a_dead_endpoint_delays_only_its_own_queue(tmp_path, receiver):
    slow = Receiver().start()
    slow.delay = 3.0

    async def main():
        al = make_alerting(
            tmp_path,
            [
                webhook("slow", slow.url, timeout_seconds=0.5),
                webhook("dead", "http://127.0.0.1:9/nothing-listens"),
                webhook("good", receiver.url),
            ],
        )
        await al.start()
        try:
            latencies, calls = [], []
            for i in range(1, 6):
                t0 = time.monotonic()
                al.on_window("m", "1", window(i, {f"f{i}": 0.001}))
                calls.append(time.monotonic() - t0)
                assert await until(lambda i=i: len(receiver.requests) == i, 5)
                latencies.append(receiver.requests[-1].at - (time.time() - (time.monotonic() - t0)))
            assert await until(lambda: al.store.head("slow").attempts >= 1, 5)
            log = al.store.deliveries(target="slow")
            return calls, latencies, log, al.store.deliveries(target="dead")
        finally:
            await al.stop(timeout=1)

    try:
        calls, latencies, slow_log, dead_log = asyncio.run(main())
    finally:
        slow.stop()
    assert max(calls) < 0.2, calls  # evaluating + queueing never waits for an endpoint
    assert max(latencies) < 1.0, latencies  # the good endpoint is not held up by the others
    assert any("timeout after 0.5s" in r.last_error for r in slow_log)
    assert all(r.status == "pending" for r in dead_log) and dead_log[-1].attempts >= 1
    assert "ConnectError" in dead_log[-1].last_error


def _down_then_back(tmp_path, down_seconds: float, backoff_max: float, backoff_initial: float = 0.05):
    """Alerts fire and resolve while the receiver is down; it returns after ``down_seconds``."""
    receiver = Receiver().start()
    port = receiver.port
    receiver.stop()
    expected: list[str] = []

    async def main():
        policy = {"backoff_max_seconds": backoff_max, "backoff_initial_seconds": backoff_initial}
        al = make_alerting(
            tmp_path,
            [
                webhook("j", receiver.url, **policy),
                webhook("am", receiver.url + "/am", format="alertmanager", **policy),
            ],
        )
        await al.start()
        t_down = time.monotonic()
        try:
            # while down: 3 features fire, 2 of them resolve, spread over the outage
            plan = [
                {"a": 0.001, "b": 0.001, "c": 0.001},
                {"a": 0.5, "b": 0.001, "c": 0.001},
                {"a": 0.5, "b": 0.5, "c": 0.001},
            ]
            for i, pv in enumerate(plan, start=1):
                al.on_window("m", "1", window(i, pv))
                await asyncio.sleep(down_seconds / (len(plan) + 1))
            await asyncio.sleep(max(0.0, down_seconds - (time.monotonic() - t_down)))
            expected.extend(r.event_id for r in al.store.deliveries(limit=1000))
            assert receiver.requests == []
            back = Receiver(port).start()
            t_back = time.monotonic()
            assert await al.drain(backoff_max + 15), "not all delivered after the receiver returned"
            caught_up = time.monotonic() - t_back
            await asyncio.sleep(0.5)  # anything extra would arrive now
            log = al.store.deliveries(limit=1000)
            return back, caught_up, log
        finally:
            await al.stop()

    back, caught_up, log = asyncio.run(main())
    back.stop()
    keys = Counter((q.path, q.headers[IDEM]) for q in back.requests)
    assert len(expected) == 10  # 5 announcements (3 firing, 2 resolved) x 2 endpoints
    assert sorted(keys) == sorted({(("/hook/am" if r.target == "am" else "/hook"), r.event_id) for r in log})
    assert set(keys.values()) == {1}, keys  # exactly once per idempotency key and endpoint
    assert all(r.status == "delivered" for r in log)
    assert all(VERIFY(SECRET.encode(), q.body, q.headers[SIG]) for q in back.requests)
    # order per endpoint: each alert's firing arrives before its resolve
    for path in ("/hook", "/hook/am"):
        seen = [json.loads(q.body) for q in back.requests if q.path == path]
        st = [(b.get("key") or b["alerts"][0]["fingerprint"], b["status"]) for b in seen]
        for k, s in st:
            if s == "resolved":
                assert st.index((k, "firing")) < st.index((k, "resolved"))
    print(
        f"\nreceiver down {down_seconds:.0f}s: {len(back.requests)} deliveries, all within "
        f"{caught_up:.2f}s of its return, attempts max {max(r.attempts for r in log)}"
    )
    return caught_up


@pytest.mark.slow  # a receiver down and back (~7 s)
def test_receiver_down_then_back_gets_every_alert_exactly_once(tmp_path):
    caught_up = _down_then_back(tmp_path, down_seconds=6, backoff_max=1.0)
    assert caught_up < 5


@pytest.mark.slow
def test_receiver_down_60s_then_back_gets_every_alert_exactly_once(tmp_path):
    """The acceptance case with the default retry policy (1 s initial, 60 s cap): after a
    60 s outage the next attempt of each queue comes at most one capped backoff later."""
    caught_up = _down_then_back(tmp_path, down_seconds=60, backoff_max=60.0, backoff_initial=1.0)
    assert caught_up < 62


def test_secrets_never_in_logs_or_errors(tmp_path, monkeypatch, caplog):
    token = "xoxb-TOKEN-in-the-url-123"
    monkeypatch.setenv("DW_TEST_URL", f"http://127.0.0.1:9/services/{token}")
    caplog.set_level(logging.DEBUG)

    async def main():
        al = make_alerting(tmp_path, [{**webhook("s", "http://x"), "url": None, "url_env": "DW_TEST_URL"}])
        await al.start()
        try:
            al.on_window("m", "1", window(1, {"age": 0.001}))
            await until(
                lambda: (al.store.deliveries() or [None])[0] is not None and al.store.deliveries()[0].attempts >= 2, 10
            )
            return al.store.deliveries()
        finally:
            await al.stop()

    log = asyncio.run(main())
    assert log[0].attempts >= 2 and log[0].last_error
    for text in (caplog.text, log[0].last_error):
        assert SECRET not in text and token not in text


def test_missing_secret_keeps_the_delivery_queued_with_a_clear_error(tmp_path, monkeypatch, receiver):
    monkeypatch.delenv(SECRET_ENV)

    async def main():
        al = make_alerting(tmp_path, [webhook("j", receiver.url)])
        await al.start()
        try:
            al.on_window("m", "1", window(1, {"age": 0.001}))
            await until(lambda: al.store.deliveries()[0].attempts >= 1, 5)
            row = al.store.deliveries()[0]
            assert row.status == "pending" and f"{SECRET_ENV} is not set" in row.last_error
            monkeypatch.setenv(SECRET_ENV, SECRET)  # fixed: the queued delivery goes out
            assert await al.drain(10)
        finally:
            await al.stop()

    asyncio.run(main())
    assert len(receiver.requests) == 1
    assert VERIFY(SECRET.encode(), receiver.requests[0].body, receiver.requests[0].headers[SIG])


def test_a_stuck_delivery_log_writer_does_not_hold_deliveries(tmp_path, receiver):
    """E.g. the InfluxDB sink applying backpressure while InfluxDB is down."""
    calls = []

    async def stuck(records):
        calls.append(records)
        await asyncio.Event().wait()  # never returns

    async def main():
        al = make_alerting(tmp_path, [webhook("j", receiver.url)], write_records=stuck)
        await al.start()
        try:
            for i in range(1, 4):
                al.on_window("m", "1", window(i, {f"f{i}": 0.001}))
            assert await until(lambda: len(receiver.requests) == 3, 5)
        finally:
            await al.stop()

    asyncio.run(main())
    assert len(calls) == 3
