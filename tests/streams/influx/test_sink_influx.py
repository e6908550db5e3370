"""streams.influx.sink: line protocol, batching, retries, backpressure; real InfluxDB round trips."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import httpx
import numpy as np
import pytest
from influxdb_client import Point

from detectors.records import DRIFT, WINDOW, Record
from streams.influx import sink as S
from streams.settings import Settings

# ----------------------------------------------------------------------------- line protocol


def point_line(r: Record) -> str:
    """The independent reference: influxdb-client's Point."""
    p = Point(r.measurement)
    for k, v in r.tags.items():
        p = p.tag(k, v)
    for k, v in r.fields.items():
        p = p.field(k, v)
    return p.time(r.time_ns).to_line_protocol()


@pytest.mark.parametrize(
    "record",
    [
        Record(DRIFT, {"model": "m", "feature": "x"}, {"p_value": 0.25, "drift": False}, 1_700_000_000_000_000_000),
        Record("dw weird,meas", {"a b": "c,d=e", "z": "plain"}, {"f=1": 1.5, "s": 'say "hi" \\ there'}, 5),
        Record(WINDOW, {"model": "m", "version": "1"}, {"n_events": 5000.5, "x": 1e-300, "y": 1e21}, 7),
        Record(DRIFT, {"model": "m", "empty": ""}, {"statistic": 0.1}, 9),
    ],
)
def test_line_protocol_matches_influxdb_client(record):
    assert S.to_line(record) == point_line(record)


def test_numbers_are_floats_and_non_finite_fields_are_left_out():
    r = Record(
        WINDOW,
        {"model": "m"},
        {
            "n": 3,
            "i64": np.int64(4),
            "f32": np.float32(0.5),
            "nan": float("nan"),
            "inf": np.inf,
            "ok": np.bool_(True),
            "none": None,
        },
        1,
    )
    assert S.to_line(r) == "dw_window,model=m f32=0.5,i64=4.0,n=3.0,ok=true 1"
    assert S.to_line(Record(WINDOW, {"model": "m"}, {"nan": float("nan")}, 1)) is None
    assert S.to_lines([r, Record(WINDOW, {}, {"nan": float("nan")}, 1)]) == [S.to_line(r)]


def test_strings_with_newlines_stay_on_one_line():
    line = S.to_line(Record(WINDOW, {"model": "a\nb"}, {"detail": "x\ny"}, 1))
    assert "\n" not in line


def test_bad_field_type():
    with pytest.raises(TypeError, match="list"):
        S.to_line(Record(WINDOW, {}, {"x": [1]}, 1))


# ----------------------------------------------------------------------------- async sink logic (fake transport)


def fake_settings() -> Settings:
    return Settings(influx_url="http://influx.invalid:8086", influx_db="db")


class Script:
    """A fake InfluxDB: answers from a list of status codes (then 204), records bodies."""

    def __init__(self, codes):
        self.codes = list(codes)
        self.bodies: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/write"
        assert request.url.params["db"] == "db" and request.url.params["precision"] == "ns"
        code = self.codes.pop(0) if self.codes else 204
        if code == 204:
            self.bodies.append(request.content.decode())
        if code == -1:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(code, text="" if code == 204 else '{"error":"boom"}')


def rec(i: int) -> Record:
    return Record(DRIFT, {"model": "m", "feature": f"f{i % 3}"}, {"p_value": i / 100}, i)


def test_sink_retries_until_written_and_keeps_order(caplog):
    script = Script([-1, 503, 429])

    async def main():
        sink = S.InfluxSink(fake_settings(), transport=httpx.MockTransport(script), max_backoff=0.01)
        await sink.start()
        futs = [await sink.submit([rec(i), rec(i + 100)]) for i in range(5)]
        done = await asyncio.wait_for(asyncio.gather(*futs), 5)
        await sink.stop()
        return done, sink.stats

    with caplog.at_level(logging.INFO, logger="streams.influx.sink"):
        done, stats = asyncio.run(main())
    assert done == [2] * 5
    lines = [line for b in script.bodies for line in b.split("\n")]
    assert lines == [S.to_line(r) for i in range(5) for r in (rec(i), rec(i + 100))]
    assert stats.failures == 3 and stats.points == 10
    text = caplog.text
    assert "failed" in text and "recovered" in text


def test_sink_does_not_split_units_and_batches_them():
    script = Script([])

    async def main():
        sink = S.InfluxSink(fake_settings(), transport=httpx.MockTransport(script), max_batch_points=5)
        futs = [await sink.submit([rec(j) for j in range(3)]) for _ in range(4)]
        await asyncio.gather(*futs)
        await sink.stop()

    asyncio.run(main())
    assert [len(b.split("\n")) for b in script.bodies] in ([3, 3, 3, 3], [3, 3, 3, 3])
    assert sum(len(b.split("\n")) for b in script.bodies) == 12


def test_sink_400_completes_and_logs(caplog):
    script = Script([400])

    async def main():
        sink = S.InfluxSink(fake_settings(), transport=httpx.MockTransport(script))
        fut = await sink.submit([rec(1)])
        await asyncio.wait_for(fut, 5)
        await sink.stop()
        return sink.stats

    with caplog.at_level(logging.ERROR, logger="streams.influx.sink"):
        stats = asyncio.run(main())
    assert stats.rejected_requests == 1 and "HTTP 400" in caplog.text


def test_sink_backpressure_blocks_submit_while_influx_is_down():
    gate = {"up": False}

    def handler(request):
        return httpx.Response(204) if gate["up"] else httpx.Response(503, text="down")

    async def main():
        sink = S.InfluxSink(
            fake_settings(), transport=httpx.MockTransport(handler), max_pending_points=4, max_backoff=0.02
        )
        f1 = await sink.submit([rec(i) for i in range(3)])
        blocked = asyncio.create_task(sink.submit([rec(i) for i in range(3)]))
        await asyncio.sleep(0.2)
        assert not blocked.done() and not f1.done()  # waiting for room: consumption pauses
        assert sink.pending_points == 3
        gate["up"] = True
        f2 = await asyncio.wait_for(blocked, 5)
        await asyncio.wait_for(asyncio.gather(f1, f2), 5)
        await sink.stop()

    asyncio.run(main())


def test_no_secret_in_logs(caplog):
    s = Settings(influx_url="http://influx.invalid:8086", influx_db="db", influx_token="s3cr3t-token")

    def handler(request):
        assert request.headers["Authorization"] == "Token s3cr3t-token"
        return httpx.Response(401, text='{"error":"unauthorized"}')

    async def main():
        sink = S.InfluxSink(s, transport=httpx.MockTransport(handler), max_backoff=0.01)
        await sink.submit([rec(1)])
        await asyncio.sleep(0.1)
        await sink.stop(timeout=0.1)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert "401" in caplog.text and "credentials" in caplog.text
    assert "s3cr3t" not in caplog.text


# ----------------------------------------------------------------------------- real InfluxDB


class TcpProxy:
    """A loopback TCP proxy we can switch on and off: InfluxDB 'going down' for real."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = None
        self.conns: list = []

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader, writer):
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.conns += [writer, up_w]
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self):
        self.server.close()
        for w in self.conns:
            with contextlib.suppress(Exception):
                w.close()
        self.conns.clear()
        await self.server.wait_closed()


@pytest.mark.integration
def test_write_query_and_idempotent_overwrite(settings):
    records = [
        Record(
            DRIFT,
            {"model": "m,1", "version": "1", "feature": "a b=c"},
            {"p_value": 0.01, "drift": True, "note": 'he said "x"\nthen'},
            1_700_000_000_000_000_000,
        ),
        Record(
            DRIFT,
            {"model": "m,1", "version": "1", "feature": "z"},
            {"p_value": 0.5, "drift": False},
            1_700_000_000_000_000_000,
        ),
    ]
    S.write_records(settings, records)
    S.write_records(settings, records[:1])  # the same window again: overwrite, not a second point
    rows = S.query(settings, 'SELECT * FROM "dw_drift" GROUP BY "feature"')
    by = {r["feature"]: r for r in rows}
    assert len(rows) == 2
    assert by["a b=c"]["p_value"] == 0.01 and by["a b=c"]["drift"] is True
    assert by["a b=c"]["model"] == "m,1" and by["a b=c"]["time"] == 1_700_000_000_000_000_000
    assert by["a b=c"]["note"].startswith('he said "x"')
    with pytest.raises(S.DatabaseNotFound):
        S.query(settings, "SELECT * FROM x", db="no_such_db_here")
    with pytest.raises(S.InfluxQueryError):
        S.query(settings, "SELEKT nonsense")


@pytest.mark.integration
def test_sink_survives_influx_outage_without_losing_points(settings, caplog):
    from urllib.parse import urlparse

    proxy = TcpProxy(urlparse(settings.influx_url).port)
    proxied = settings.model_copy(update={"influx_url": f"http://127.0.0.1:{proxy.port}"})

    async def main():
        sink = S.InfluxSink(proxied, max_backoff=0.2, max_batch_points=7)
        await sink.start()  # proxy not listening yet: InfluxDB is "down"
        futs = [
            await sink.submit(
                [
                    Record(
                        WINDOW,
                        {"model": "m", "version": str(i % 2)},
                        {"n_events": float(i)},
                        1_700_000_000_000_000_000 + j * 10**9,
                    )
                    for j in range(5)
                ]
            )
            for i in range(6)
        ]
        await asyncio.sleep(0.8)
        assert not any(f.done() for f in futs)
        await proxy.start()  # back up
        await asyncio.wait_for(asyncio.gather(*futs), 15)
        await sink.stop()
        await proxy.stop()

    with caplog.at_level(logging.INFO, logger="streams.influx.sink"):
        asyncio.run(main())
    rows = S.query(settings, 'SELECT count("n_events") AS n FROM "dw_window" GROUP BY "version"')
    assert sorted((r["version"], r["n"]) for r in rows) == [("0", 5), ("1", 5)]
    assert "retrying" in caplog.text and "recovered" in caplog.text
