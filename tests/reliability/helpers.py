"""Shared pieces of the reliability suite: traffic, a worker subprocess, waiting, InfluxDB reads.

Everything here talks to real services (the broker, InfluxDB, ``driftwatch
worker`` as a child process); nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from streams.influx.sink import DatabaseNotFound, InfluxQueryError, query
from streams.lifetime import die_with_parent
from tests.sinks import CollectSink

T0 = float(int(time.time()) - 7200)
NUMERIC = ["x0", "x1", "x2", "x3"]
CATEGORICAL = ["c0", "c1"]
LEVELS = np.array(["a", "b", "c", "d"], dtype=object)


def monitors_file(
    tmp_path: Path,
    models: list[str],
    *,
    window: int = 500,
    first_n: int = 500,
    idle: float = 600.0,
    features: list[dict] | None = None,
    extra: dict | None = None,
    name: str = "monitors.yaml",
    window_extra: dict | None = None,
) -> Path:
    """A monitor config for ``models`` with the standard 4 numeric + 2 categorical features
    (``window_extra``: more window settings, ``extra``: more top-level config)."""
    if features is None:
        features = [{"name": n, "kind": "numeric"} for n in NUMERIC]
        features += [{"name": c, "kind": "categorical"} for c in CATEGORICAL]
    cfg: dict[str, Any] = {
        "models": [
            {
                "model_id": m,
                "features": features,
                "window": {"size_events": window, "idle_close_seconds": idle, **(window_extra or {})},
                "reference": {"first_n": first_n},
                "drift": {"p_val": 0.001, "correction": "bonferroni"},
            }
            for m in models
        ]
    }
    if extra:
        cfg.update(extra)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def batch_doc(model: str, start: int, n: int, rng: np.random.Generator, drift: bool = False) -> dict:
    """One column batch (the SDK's wire format) of ``n`` events; ``drift`` shifts x0 and c0."""
    num = rng.normal(0.0, 1.0, size=(len(NUMERIC), n))
    if drift:
        num[0] += 1.0
    p_c0 = [0.1, 0.2, 0.3, 0.4] if drift else [0.4, 0.3, 0.2, 0.1]
    cats = [LEVELS[rng.choice(4, size=n, p=p_c0)], LEVELS[rng.choice(4, size=n, p=[0.25] * 4)]]
    return {
        "schema_version": 1,
        "type": "inference_batch",
        "model_id": model,
        "model_version": "1",
        "event_id": [f"{model}-{i}" for i in range(start, start + n)],
        "event_time": (T0 + np.arange(start, start + n) * 0.01).tolist(),
        "features": {
            **{k: num[i].tolist() for i, k in enumerate(NUMERIC)},
            **{k: cats[i].tolist() for i, k in enumerate(CATEGORICAL)},
        },
        "prediction": {"label": ["yes" if v > 0 else "no" for v in num[1]]},
    }


def batch(model: str, start: int, n: int, rng: np.random.Generator, drift: bool = False) -> bytes:
    return orjson.dumps(batch_doc(model, start, n, rng, drift))


class Traffic:
    """A kafka-python producer (key = model id) that counts the events it produced.

    ``wire="arrow"``: :meth:`send` writes the batches as the SDK's Arrow IPC, with its content-type header.
    """

    def __init__(self, settings, seed: int = 1, wire: str = "json", **producer_options: Any) -> None:
        from kafka import KafkaProducer

        from streams.wire.producer import batch_encoder

        self.settings = settings
        opts = {"linger_ms": 5, "max_request_size": 4 << 20, **producer_options}
        self.producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_options(), **opts
        )
        self.rng = np.random.default_rng(seed)
        self.encode, headers = batch_encoder(wire)
        self.headers = list(headers) or None
        self.events = 0
        self.messages = 0
        self.next: dict[str, int] = {}

    def send(self, model: str, n: int, *, drift: bool = False) -> Any:
        """One batch message of ``n`` events; returns kafka-python's future (``.get().partition``)."""
        start = self.next.get(model, 0)
        fut = self.producer.send(
            self.settings.topic_inferences,
            key=model.encode(),
            value=self.encode(batch_doc(model, start, n, self.rng, drift)),
            headers=self.headers,
        )
        self.next[model] = start + n
        self.events += n
        self.messages += 1
        return fut

    def raw(self, value: bytes | None, key: bytes | None = b"m", events: int = 1, headers: list | None = None) -> None:
        self.producer.send(self.settings.topic_inferences, key=key, value=value, headers=headers)
        self.events += events
        self.messages += 1

    def flush(self) -> None:
        self.producer.flush(60)

    def close(self) -> None:
        self.producer.close(10)


def start_worker(env: dict[str, str], monitors: Path, log: Path, *args: str) -> subprocess.Popen:
    full = {**env, "PYTHONUNBUFFERED": "1"}
    full.setdefault("DRIFTWATCH_LOG_LEVEL", "INFO")
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--monitors", str(monitors), *args],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@contextlib.contextmanager
def worker(env: dict[str, str], monitors: Path, log: Path, *args: str) -> Iterator[subprocess.Popen]:
    proc = start_worker(env, monitors, log, *args)
    try:
        yield proc
    finally:
        stop(proc)


def on_stack(settings, stack):
    """``settings`` pointed at ``stack`` (a test's own broker and InfluxDB), with its topics and database made."""
    from streams.broker.admin import ensure_topics
    from streams.influx.admin import ensure_database

    s = settings.model_copy(
        update={
            "kafka_bootstrap": stack.bootstrap,
            **stack.influx_settings(),
            "kafka_port": stack.kafka_port,
            "influx_port": stack.influx_port,
        }
    )
    ensure_topics(s, partitions=s.topic_partitions)
    ensure_database(s)
    return s


def tail(log: Path | None, n: int = 40) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def wait_for(
    cond: Callable[[], Any], timeout: float, what: str, procs=(), log: Path | None = None, every: float = 0.5
) -> None:
    """Poll ``cond`` until it returns True; fail with the last value and the worker log otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last is True:
            return
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"worker exited with {p.returncode} while waiting for {what}; log:\n{tail(log)}")
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last}); worker log:\n{tail(log)}")


WORKER_READY = "Recovery]: Worker ready"
"""What Faust logs after every partition assignment of a worker."""


def wait_assigned(proc: subprocess.Popen, log: Path, count: int, name: str = "worker", timeout: float = 120) -> None:
    """Wait until the worker has had ``count`` partition assignments (Faust logs "Worker ready" after each)."""
    wait_for(
        lambda: log.read_text(errors="replace").count(WORKER_READY) >= count,
        timeout,
        f"{name} assigned ({count})",
        [proc],
        log,
    )


def windowed(settings) -> int:
    """Events counted in written windows (sum of dw_window.n_events); 0 before the first."""
    try:
        rows = query(settings, 'SELECT sum("n_events") AS n FROM "dw_window"')
    except (DatabaseNotFound, InfluxQueryError):
        return 0
    return int(rows[0]["n"]) if rows else 0


def dead_letters(consume_all, settings, timeout: float = 10.0, idle: float = 2.0) -> tuple[int, dict[str, int], list]:
    """(events dead-lettered, events per reason, records) from the dead-letter topic."""
    recs = consume_all(settings, settings.topic_deadletter, timeout=timeout, idle=idle)
    total, by = 0, {}
    for r in recs:
        h = {k: v.decode() for k, v in r.headers}
        n = int(h["dw-events"])
        total += n
        by[h["dw-reason"]] = by.get(h["dw-reason"], 0) + n
    return total, by, recs


def wait_all_counted(consume_all, settings, produced: int, proc: subprocess.Popen, log: Path) -> None:
    """Wait until every produced event is in a written window or in the dead-letter topic."""

    def all_counted():
        dead, _by, _r = dead_letters(consume_all, settings)
        n = windowed(settings)
        return True if n + dead == produced else (n, dead, produced)

    wait_for(all_counted, 90, "every event in a window or dead-lettered", [proc], log)


def window_points(settings) -> list[dict]:
    """Every dw_window point (time, model, n_events, seq, checkpoint end offset)."""
    try:
        return query(
            settings, 'SELECT "n_events", "seq", "ckpt_end_offset", "ckpt_partition" FROM "dw_window" GROUP BY "model"'
        )
    except DatabaseNotFound:
        return []


def env_without_secrets_of_parent() -> dict[str, str]:
    """os.environ minus every DRIFTWATCH_* variable (tests build their own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWATCH_")}


# ----------------------------------------------------------------------------- fault-free comparison


def stored_points(settings) -> dict:
    """dw_window and dw_drift points in InfluxDB: key -> values (a key appearing once = written once)."""
    win = query(settings, 'SELECT "n_events", "seq", "ckpt_end_offset", "n_invalid" FROM "dw_window" GROUP BY "model"')
    try:
        drift = query(
            settings, 'SELECT "p_value", "statistic" FROM "dw_drift" GROUP BY "model", "feature", "segment", "detector"'
        )
    except DatabaseNotFound:
        drift = []
    out = {}
    for r in win:
        out[("w", r["model"], r["time"])] = (r["n_events"], r["seq"], r["ckpt_end_offset"], r.get("n_invalid"))
    for r in drift:
        out[("d", r["model"], r.get("feature") or "", r.get("segment") or "", r.get("detector") or "", r["time"])] = (
            r.get("p_value"),
            r.get("statistic"),
        )
    return out


def fault_free_points(settings, monitors: Path, consume_all, n_messages: int) -> dict:
    """What a worker that never failed writes: the same engine in-process, over the topic's messages."""
    import asyncio

    from streams.worker.deadletter import DeadLetterPublisher
    from streams.worker.decode import RawMessage
    from streams.worker.monitors import load_monitors
    from streams.worker.pipeline import Pipeline

    recs = consume_all(settings, settings.topic_inferences, expected=n_messages, timeout=30)
    assert len(recs) == n_messages, (len(recs), n_messages)
    msgs = [RawMessage(r.value, r.key, r.topic, r.partition, r.offset, r.timestamp) for r in recs]

    async def send(key, value, headers):
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    sink = CollectSink()
    pipeline = Pipeline(settings, load_monitors(monitors), sink=sink, deadletters=DeadLetterPublisher(send))

    async def run():
        await pipeline.process(msgs)
        await pipeline.drain(timeout=120)

    asyncio.run(run())
    out = {}
    for r in sink.records:
        f, t = r.fields, r.tags
        if r.measurement == "dw_window" and "seq" in f:
            out[("w", t["model"], r.time_ns)] = (f["n_events"], f["seq"], f["ckpt_end_offset"], f.get("n_invalid"))
        elif r.measurement == "dw_drift":
            out[("d", t["model"], t.get("feature", ""), t.get("segment", ""), t.get("detector", ""), r.time_ns)] = (
                f.get("p_value"),
                f.get("statistic"),
            )
    return out


def compare_points(got: dict, want: dict) -> list[str]:
    """Differences between stored and fault-free points (floats to 1e-9 relative), as readable lines."""
    import math

    problems = []
    for k in sorted(set(want) - set(got), key=str)[:10]:
        problems.append(f"missing {k}")
    for k in sorted(set(got) - set(want), key=str)[:10]:
        problems.append(f"unexpected {k}")
    for k in set(got) & set(want):
        a, b = got[k], want[k]
        for x, y in zip(a, b):
            if x is None or y is None:
                if (
                    x != y
                    and not (isinstance(x, float) and math.isnan(x))
                    and not (isinstance(y, float) and math.isnan(y))
                ):
                    problems.append(f"{k}: {a} != {b}")
                    break
            elif not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12):
                problems.append(f"{k}: {a} != {b}")
                break
    return problems


def unique_dead_letters(recs) -> tuple[int, int]:
    """(events, duplicates) of dead letters, de-duplicated by their source position and reason."""
    seen = {}
    for r in recs:
        h = {k: v.decode() for k, v in r.headers}
        key = (h["dw-source-topic"], h["dw-source-partition"], h["dw-source-offset"], h["dw-reason"], h["dw-rows"])
        seen.setdefault(key, int(h["dw-events"]))
    return sum(seen.values()), len(recs) - len(seen)
