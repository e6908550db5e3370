"""The worker end to end, on the real local stack: Kafka (tansu) in, InfluxDB out.

* drift is recorded for the drifted features and not for the others;
* every produced event is counted in a window or sits in the dead-letter topic;
* a SIGKILLed and restarted worker writes the same windows as a worker that
  never crashed (compared point for point), and nothing twice;
* (two workers in one consumer group: tests/integration/test_scale_out.py).

Each test runs ``driftwatch worker`` as a subprocess (``python -m streams.cli
worker``) with the test's settings in its environment.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from streams.influx.sink import query
from tests.reliability.helpers import (
    CATEGORICAL,
    NUMERIC,
    Traffic,
    batch,
    dead_letters,
    monitors_file,
    tail,
    wait_all_counted,
    wait_for,
    windowed,
    worker,
)
from tests.sinks import CollectSink

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # each test runs workers for 30-100 s

# ----------------------------------------------------------------------------- drift + accounting


def test_drift_recorded_and_every_event_accounted_for(settings, settings_env, tmp_path, consume_all):
    settings = settings.model_copy(update={"max_message_bytes": 200_000})
    settings_env = {**settings_env, "DRIFTWATCH_MAX_MESSAGE_BYTES": "200000"}
    mon = monitors_file(tmp_path, ["m"], window=1000, first_n=2000, idle=2.0)
    traffic = Traffic(settings)
    for _ in range(16):  # 4000 stationary events (2000 of them build the reference)
        traffic.send("m", 250)
    for _ in range(16):  # 4000 drifted events
        traffic.send("m", 250, drift=True)
    # malformed traffic
    traffic.raw(b"{not json")
    traffic.raw(b'{"type": "inference", "x": NaN}')
    bad_row = orjson.loads(batch("m", 100_000, 10, np.random.default_rng(9), False))
    bad_row["event_id"][3] = ""  # one bad row: only it is dead-lettered
    traffic.raw(orjson.dumps(bad_row), events=10)
    traffic.raw(batch("not-monitored", 0, 7, np.random.default_rng(3), False), key=b"not-monitored", events=7)
    traffic.raw(
        b"[" + b",".join([batch("m", 200_000, 1000, np.random.default_rng(4), False)] * 2) + b"]", events=1
    )  # > max_message_bytes: too_large (counted as one message)
    traffic.flush()
    traffic.close()
    produced = traffic.events
    log = tmp_path / "worker.log"
    with worker(settings_env, mon, log) as proc:
        wait_all_counted(consume_all, settings, produced, proc, log)
    dead, by, recs = dead_letters(consume_all, settings)
    assert by == {"invalid_json": 1, "non_finite": 1, "schema": 1, "unknown_model": 7, "too_large": 1}
    schema = next(r for r in recs if dict(r.headers)["dw-reason"] == b"schema")
    assert dict(schema.headers)["dw-rows"] == b"3"  # only the bad row
    assert schema.value == orjson.dumps(bad_row)  # the original bytes, unchanged
    # (a) drift: x0 and c0 drift in the drifted windows, nothing else ever does
    # unsegmented results: no segment tag (older runners tagged them segment=all)
    rows = query(
        settings, 'SELECT "drift", "p_value", "feature" FROM "dw_drift" WHERE "segment" = \'\' OR "segment" = \'all\''
    )
    assert rows, "no drift points written"
    flagged = {r["feature"] for r in rows if r["drift"]}
    assert flagged == {"x0", "c0"}
    drift_windows = {r["time"] for r in rows if r["feature"] == "x0" and r["drift"]}
    assert len(drift_windows) == 4  # the 4 windows of drifted events
    # the reference windows are not drift-tested, the others are
    wins = query(settings, 'SELECT "n_events", "drift_evaluated", "reference" FROM "dw_window"')
    assert sum(w["n_events"] for w in wins) == produced - dead
    assert [w["drift_evaluated"] for w in sorted(wins, key=lambda w: w["time"])][:2] == [False, False]
    dl_points = query(settings, 'SELECT sum("count") AS n FROM "dw_deadletter" GROUP BY "reason"')
    assert {r["reason"]: int(r["n"]) for r in dl_points} == by


def test_arrow_batches_record_the_same_drift_and_bad_ones_are_dead_lettered(
    settings, settings_env, tmp_path, consume_all
):
    """The SDK's Arrow format end to end: the worker windows it like JSON, and an unreadable or non-finite
    Arrow message goes to the dead-letter topic with its reason and its original bytes; nothing crashes."""
    from streams.wire.arrow import encode_batch
    from tests.reliability.helpers import batch_doc

    mon = monitors_file(tmp_path, ["m"], window=1000, first_n=2000, idle=2.0)
    traffic = Traffic(settings, wire="arrow")
    for _ in range(8):
        traffic.send("m", 250)
    truncated = encode_batch(batch_doc("m", 50_000, 10, np.random.default_rng(5)))[:300]
    traffic.raw(truncated, headers=traffic.headers)
    nan = batch_doc("m", 60_000, 10, np.random.default_rng(6))
    nan["features"]["x0"][2] = float("nan")
    traffic.raw(encode_batch(nan), events=10)  # no header: told by its magic bytes
    bad_row = batch_doc("m", 70_000, 10, np.random.default_rng(7))
    bad_row["event_id"][3] = ""
    traffic.raw(encode_batch(bad_row), events=10, headers=traffic.headers)
    for _ in range(8):
        traffic.send("m", 250, drift=True)
    traffic.flush()
    traffic.close()
    produced = traffic.events
    log = tmp_path / "worker.log"
    with worker(settings_env, mon, log) as proc:
        wait_all_counted(consume_all, settings, produced, proc, log)
        assert proc.poll() is None, tail(log)
    _dead, by, recs = dead_letters(consume_all, settings)
    assert by == {"invalid_arrow": 1, "non_finite": 10, "schema": 1}
    reasons = {dict(r.headers)["dw-reason"]: r for r in recs}
    assert reasons[b"invalid_arrow"].value == truncated  # the original bytes, unchanged
    assert dict(reasons[b"schema"].headers)["dw-rows"] == b"3"  # only the bad row
    rows = query(settings, 'SELECT "drift", "feature" FROM "dw_drift" WHERE "segment" = \'\'')
    assert {r["feature"] for r in rows if r["drift"]} == {"x0", "c0"}
    assert "Traceback" not in log.read_text()


def test_summarised_windows_record_the_same_drift(settings, settings_env, tmp_path):
    """``window.summary_min_events``: the worker keeps summaries, not rows, for the windows after the
    reference; drift is found in the same windows and features, every event is counted, and the
    detectors that need every event say why they did not run."""
    mon = monitors_file(
        tmp_path,
        ["m"],
        window=1000,
        first_n=2000,
        idle=2.0,
        window_extra={"summary_min_events": 500, "summary_bins": 256, "summary_reservoir": 100},
    )
    traffic = Traffic(settings)
    for _ in range(16):  # 4000 stationary events (2000 of them build the reference)
        traffic.send("m", 250)
    for _ in range(16):  # 4000 drifted events
        traffic.send("m", 250, drift=True)
    traffic.flush()
    traffic.close()
    log = tmp_path / "worker.log"
    with worker(settings_env, mon, log) as proc:
        wait_for(
            lambda: windowed(settings) == traffic.events or windowed(settings),
            90,
            "every event in a window",
            [proc],
            log,
        )
    wins = sorted(
        query(settings, 'SELECT "n_events", "summarised", "drift_evaluated" FROM "dw_window"'), key=lambda w: w["time"]
    )
    assert sum(w["n_events"] for w in wins) == 8000
    # a window opened after the reference was built keeps a summary (here all of them: the first decoded
    # batch already holds the 2,000 reference events); the windows overlapping the reference are not tested
    assert [w["drift_evaluated"] for w in wins] == [False, False] + [True] * 6
    assert all(w["summarised"] == 1 for w in wins if w["drift_evaluated"])
    rows = query(settings, 'SELECT "drift", "feature", "engine" FROM "dw_drift" WHERE "segment" = \'\'')
    assert {r["engine"] for r in rows if r["feature"] in NUMERIC + CATEGORICAL} == {"summary"}
    assert {r["feature"] for r in rows if r["drift"]} == {"x0", "c0"}
    assert len({r["time"] for r in rows if r["feature"] == "x0" and r["drift"]}) == 4
    status = query(settings, 'SELECT "computed", "reason" FROM "dw_status" GROUP BY "detector"')
    skipped = {r["detector"] for r in status if not r["computed"] and "kept a summary" in (r.get("reason") or "")}
    assert skipped == {"online_drift", "adversarial"}


# ----------------------------------------------------------------------------- SIGKILL + restart


def points(settings) -> set:
    """The dw_window and dw_drift points in InfluxDB, as comparable tuples."""
    win = query(settings, 'SELECT "n_events", "seq", "ckpt_end_offset" FROM "dw_window" GROUP BY "model"')
    drift = query(
        settings, 'SELECT "p_value", "statistic" FROM "dw_drift" GROUP BY "model", "feature", "segment", "detector"'
    )
    return {("w", r["model"], r["time"], r["n_events"], r["seq"], r["ckpt_end_offset"]) for r in win} | {
        (
            "d",
            r["model"],
            r.get("feature") or "",
            r.get("segment") or "",
            r.get("detector") or "",
            r["time"],
            r.get("p_value"),
            r.get("statistic"),
        )
        for r in drift
    }


def expected_points(settings, mon: Path, consume_all, n_messages: int) -> set:
    """What a worker that never crashed writes: the same engine in-process, on the topic's messages."""
    import asyncio

    from streams.worker.deadletter import DeadLetterPublisher
    from streams.worker.decode import RawMessage
    from streams.worker.monitors import load_monitors
    from streams.worker.pipeline import Pipeline

    recs = consume_all(settings, settings.topic_inferences, expected=n_messages, timeout=20)
    assert len(recs) == n_messages
    msgs = [RawMessage(r.value, r.key, r.topic, r.partition, r.offset, r.timestamp) for r in recs]

    async def no_dead_letters(key, value, headers):
        raise AssertionError("this traffic has no dead letters")

    sink = CollectSink()
    pipeline = Pipeline(settings, load_monitors(mon), sink=sink, deadletters=DeadLetterPublisher(no_dead_letters))

    async def run():
        await pipeline.process(msgs)
        await pipeline.drain(timeout=120)

    asyncio.run(run())
    out = set()
    for r in sink.records:
        f = r.fields
        if r.measurement == "dw_window" and "seq" in f:
            out.add(("w", r.tags["model"], r.time_ns, f["n_events"], f["seq"], f["ckpt_end_offset"]))
        elif r.measurement == "dw_drift":
            t = r.tags
            out.add(
                (
                    "d",
                    t["model"],
                    t.get("feature", ""),
                    t.get("segment", ""),
                    t.get("detector", ""),
                    r.time_ns,
                    f.get("p_value"),
                    f.get("statistic"),
                )
            )
    return out


def test_sigkilled_worker_restarts_with_the_same_windows(settings, settings_env, tmp_path, consume_all):
    models = ["m", "k"]
    mon = monitors_file(tmp_path, models, window=500, first_n=1000, idle=600.0)
    traffic = Traffic(settings, seed=5)
    for i in range(10):  # phase 1: 1750 events per model (3 windows + 250 in an open one)
        for m in models:
            traffic.send(m, 175, drift=i >= 7)
    traffic.flush()
    log = tmp_path / "worker-a.log"
    phase1_full = 2 * (1750 // 500) * 500
    with worker(settings_env, mon, log) as proc:
        wait_for(
            lambda: True if windowed(settings) >= phase1_full else windowed(settings),
            90,
            "phase-1 windows",
            [proc],
            log,
        )
        time.sleep(2.5)  # let an offset commit happen (commit interval 1 s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    for _ in range(10):  # phase 2: the open windows continue
        for m in models:
            traffic.send(m, 175, drift=True)
    traffic.flush()
    traffic.close()
    total_full = 2 * (3500 // 500) * 500
    log_b = tmp_path / "worker-b.log"
    with worker(settings_env, mon, log_b) as proc:
        wait_for(
            lambda: True if windowed(settings) >= total_full else windowed(settings),
            90,
            "all windows after the restart",
            [proc],
            log_b,
        )
    assert "resuming" in log_b.read_text()  # it rebuilt its windows from the checkpoints
    assert windowed(settings) == total_full  # no window written twice with other contents
    got = points(settings)
    want = expected_points(settings, mon, consume_all, n_messages=40)
    assert got == want


# ----------------------------------------------------------------------------- scale-out
# Two workers in one group versus one: tests/integration/test_scale_out.py


# ----------------------------------------------------------------------------- InfluxDB outage


class ThreadedProxy:
    """tests.streams.influx.test_sink_influx.TcpProxy on its own event loop thread (the worker is a subprocess)."""

    def __init__(self, target_port: int):
        import asyncio
        import threading

        from tests.streams.influx.test_sink_influx import TcpProxy

        self.proxy = TcpProxy(target_port)
        self.port = self.proxy.port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _call(self, coro):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def up(self):
        self._call(self.proxy.start())

    def down(self):
        self._call(self.proxy.stop())

    async def _shutdown(self):
        import asyncio

        if self.proxy.server is not None:
            await self.proxy.stop()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in pending:  # the connections' pipes
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def close(self):
        """Stop the proxy, its connections and its loop, and close them (else their sockets leak)."""
        self._call(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_influxdb_outage_pauses_and_loses_nothing(settings, settings_env, tmp_path):
    """InfluxDB is down when the worker starts and again in the middle: results wait, then all arrive."""
    from urllib.parse import urlparse

    proxy = ThreadedProxy(urlparse(settings.influx_url).port)
    env = {**settings_env, "DRIFTWATCH_INFLUX_URL": f"http://127.0.0.1:{proxy.port}"}
    mon = monitors_file(tmp_path, ["m"], window=500, first_n=500, idle=2.0)
    traffic = Traffic(settings, seed=11)
    for _ in range(8):
        traffic.send("m", 250)
    traffic.flush()
    log = tmp_path / "worker.log"
    try:
        with worker(env, mon, log) as proc:
            time.sleep(8)  # down at start: the worker waits (checkpoint lookup / writes retry)
            assert proc.poll() is None, tail(log)
            assert windowed(settings) == 0
            proxy.up()
            wait_for(
                lambda: True if windowed(settings) == 2000 else windowed(settings),
                90,
                "windows after InfluxDB came up",
                [proc],
                log,
            )
            proxy.down()  # down in the middle of the stream
            for _ in range(6):
                traffic.send("m", 250)
            traffic.flush()
            time.sleep(6)
            assert proc.poll() is None, tail(log)
            assert windowed(settings) == 2000  # nothing could be written...
            proxy.up()
            wait_for(
                lambda: True if windowed(settings) == 3500 else windowed(settings),
                90,
                "every window after the outage",
                [proc],
                log,
            )  # ...and nothing was lost
    finally:
        traffic.close()
        proxy.close()
    text = log.read_text()
    assert "retrying" in text and "recovered" in text
