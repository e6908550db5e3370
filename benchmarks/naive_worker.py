"""The naive baseline: a per-event Faust agent, a Python list, alibi-detect per window.

What "naive" means here, precisely (the way a first Faust monitor is usually
written from the tutorials):

* wire: ``event`` (default) — one :class:`~streams.wire.schemas.InferenceEvent` JSON
  object per Kafka message (the same events the worker reads, split out of the
  column batches); ``batch`` — the very same column-batch messages the worker
  reads, walked event by event;
* a Faust agent ``async for value in stream`` (raw bytes values), stdlib
  ``json.loads`` per message;
* per event: a Python row of the 20 features (categoricals mapped to integer
  codes through a dict) appended to the model's list;
* every 5,000 events of a model: ``np.asarray(rows)``; the model's first window
  becomes the reference of an alibi-detect ``TabularDrift`` (KS for the 15
  numeric, Chi-square for the 5 categorical features, Bonferroni), every later
  window is tested with ``TabularDrift.predict``;
* no data quality, no histograms, no InfluxDB writes — it does strictly less
  than the worker.

It runs as a Faust worker process (``python -m benchmarks.naive_worker worker``)
configured by environment variables (``DWB_*``, set by ``benchmarks.throughput``),
stops counting after ``DWB_EVENTS`` events and writes its result as JSON to
``DWB_RESULT``; the benchmark then stops the process.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import faust
import numpy as np

from benchmarks.traffic import CATEGORICAL, NUMERIC

BOOTSTRAP = os.environ.get("DWB_BOOTSTRAP", "127.0.0.1:19092")
TOPIC = os.environ.get("DWB_TOPIC", "bench-naive")
EVENTS = int(os.environ.get("DWB_EVENTS", "100000"))
WINDOW = int(os.environ.get("DWB_WINDOW", "5000"))
WIRE = os.environ.get("DWB_WIRE", "event")
RESULT = Path(os.environ.get("DWB_RESULT", "naive_result.json"))
DATADIR = os.environ.get("DWB_DATADIR", "/tmp/driftwatch-bench-naive")
PARTITIONS = int(os.environ.get("DWB_PARTITIONS", "4"))

app = faust.App(
    os.environ.get("DWB_APP_ID", "driftwatch-bench-naive"),
    broker=f"kafka://{BOOTSTRAP}",
    value_serializer="raw",
    key_serializer="raw",
    store="memory://",
    datadir=DATADIR,
    web_enabled=False,  # the `faust worker` command overrides this: it is started with --without-web
    topic_partitions=PARTITIONS,
    topic_allow_declare=False,
    broker_session_timeout=6,
    broker_heartbeat_interval=1,
    broker_rebalance_timeout=6,
    consumer_auto_offset_reset="earliest",
)
topic = app.topic(TOPIC, value_type=bytes, key_type=bytes, partitions=PARTITIONS)

_state: dict = {
    "count": 0,
    "windows": 0,
    "drift_calls": 0,
    "t_first": None,
    "cpu_first": 0.0,
    "done": False,
    "drift_s": 0.0,
}
_rows: dict[str, list[list[float]]] = {}
_detectors: dict[str, object] = {}
_codes = [dict() for _ in CATEGORICAL]


def _tabular_drift():
    from alibi_detect.cd import TabularDrift  # 5 s import: once, at start

    return TabularDrift


@app.on_configured.connect
def _warm(app, conf, **kw) -> None:
    _tabular_drift()


def _window_full(model: str, rows: list[list[float]]) -> None:
    x = np.asarray(rows, dtype=np.float64)
    t0 = time.perf_counter()
    det = _detectors.get(model)
    if det is None:
        cats = {N: None for N in range(len(NUMERIC), len(NUMERIC) + len(CATEGORICAL))}
        _detectors[model] = _tabular_drift()(x, p_val=0.05, categories_per_feature=cats, correction="bonferroni")
    else:
        det.predict(x)
        _state["drift_calls"] += 1
    _state["drift_s"] += time.perf_counter() - t0
    _state["windows"] += 1


def _add(model: str, row: list[float]) -> None:
    rows = _rows.setdefault(model, [])
    rows.append(row)
    _state["count"] += 1
    if len(rows) == WINDOW:
        _rows[model] = []
        _window_full(model, rows)
    if _state["count"] >= EVENTS and not _state["done"]:
        _state["done"] = True
        t_last = time.perf_counter()
        secs = t_last - _state["t_first"]
        RESULT.write_text(
            json.dumps(
                {
                    "events": _state["count"],
                    "seconds": round(secs, 4),
                    "events_per_s": round(_state["count"] / secs, 1),
                    "windows": _state["windows"],
                    "drift_calls": _state["drift_calls"],
                    "drift_ms_mean": round(1e3 * _state["drift_s"] / max(_state["windows"], 1), 2),
                    "wire": WIRE,
                    "cpu_percent_self": round(100 * (time.process_time() - _state["cpu_first"]) / secs, 1),
                }
            )
        )


@app.agent(topic)
async def naive(stream):
    codes = _codes
    async for value in stream:
        if _state["done"]:
            continue
        if _state["t_first"] is None:
            _state["t_first"] = time.perf_counter()
            _state["cpu_first"] = time.process_time()
        doc = json.loads(value)
        if WIRE == "event":
            f = doc["features"]
            row = [float(f[n]) for n in NUMERIC]
            row += [codes[k].setdefault(f[c], len(codes[k])) for k, c in enumerate(CATEGORICAL)]
            _add(doc["model_id"], row)
        else:
            f = doc["features"]
            for i in range(len(doc["event_id"])):
                row = [float(f[n][i]) for n in NUMERIC]
                row += [codes[k].setdefault(f[c][i], len(codes[k])) for k, c in enumerate(CATEGORICAL)]
                _add(doc["model_id"], row)
                if _state["done"]:
                    break


if __name__ == "__main__":
    app.main()
