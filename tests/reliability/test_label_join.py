"""The label join on the real stack: crashes, an InfluxDB outage, a backlog — and the same label results.

A labelled stream from a real data set (scikit-learn's bundled breast-cancer set, 569 tumours,
resampled to 6,000 predictions of a logistic regression fitted on it), its labels 500 rows
behind their predictions on the labels topic, 5 % of labels never sent, and a concept drift
from row 3,000 on (the label flips for tumours of mean radius above the median: the model is
then wrong on a quarter of the rows). A dedicated local stack (its influxd is stopped).

1. **Faults.** The stream flows while the worker is SIGKILLed three times at random moments,
   the second time while InfluxDB is down (a 30-s outage: label results queued, not yet
   written), and restarted each time. Afterwards every label-derived ``dw_performance`` point
   (realized accuracy, precision, recall, F1 per window of predictions; the error-stream
   verdicts) equals what a fault-free run of the same engine computes in-process over the
   two topics, and the join's counters reconcile: every prediction matched or still waiting
   for a label that was never sent, every label matched once, nothing counted twice.
2. **Backlog.** A fresh worker (new consumer group, new database, empty state) started on
   the two full topics writes the same points.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from streams.devstack.localstack import INFLUX, settings_env, terminate
from streams.influx.sink import DatabaseNotFound, query
from tests.reliability.helpers import start_worker, stop, tail, wait_for, windowed
from tests.sinks import CollectSink

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RESULTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"  # gitignored
N, PER, BEHIND, DRIFT_AT, WINDOW = 6000, 100, 5, 3000, 500
T0 = float(int(time.time()) - 7200)
FEATURES = ["mean radius", "mean texture", "mean smoothness", "mean compactness", "mean concavity", "mean symmetry"]
OUTAGE_S = 30.0


def breast_cancer_stream(seed: int = 7, model_id: str = "bc") -> tuple[list[dict], list[dict], int]:
    """Inference batches and label batches (one per inference batch) of the resampled breast-cancer set."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    cols = [list(data.feature_names).index(f) for f in FEATURES]
    x_all, y_all = data.data[:, cols], data.target
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_all, y_all)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(y_all), N)
    x, y = x_all[rows], y_all[rows].copy()
    pred = model.predict(x)
    drifted = (np.arange(N) >= DRIFT_AT) & (x[:, 0] > np.median(x_all[:, 0]))
    y[drifted] = 1 - y[drifted]  # concept drift: the same inputs, another answer
    sent = rng.random(N) > 0.05
    inf, lab = [], []
    for b in range(N // PER):
        sl = slice(b * PER, (b + 1) * PER)
        ids = [f"{model_id}-{i}" for i in range(b * PER, (b + 1) * PER)]
        inf.append(
            {
                "schema_version": 1,
                "type": "inference_batch",
                "model_id": model_id,
                "model_version": "1",
                "event_id": ids,
                "event_time": (T0 + np.arange(b * PER, (b + 1) * PER) * 0.01).tolist(),
                "features": {f: x[sl, k].tolist() for k, f in enumerate(FEATURES)},
                "prediction": {"label": [str(int(p)) for p in pred[sl]]},
            }
        )
        keep = np.flatnonzero(sent[sl])
        lab.append(
            {
                "schema_version": 1,
                "type": "label_batch",
                "model_id": model_id,
                "event_id": [ids[k] for k in keep],
                "label": [str(int(v)) for v in y[sl][keep]],
                "label_time": [T0 + ((b + 1) * PER + BEHIND * PER) * 0.01] * len(keep),
            }
        )
    return inf, lab, int(sent.sum())


def monitors(tmp_path: Path, models: tuple[str, ...] = ("bc",)) -> Path:
    cfg = {
        "models": [
            {
                "model_id": m,
                "features": [{"name": f, "kind": "numeric"} for f in FEATURES],
                "window": {"size_events": WINDOW, "idle_close_seconds": 600},
                "reference": {"first_n": WINDOW},
                "labels": {
                    "ttl_seconds": 3600,
                    "online": {"reference_size": 500, "ert": 5000, "window_sizes": [50], "n_bootstraps": 2000},
                },
            }
            for m in models
        ]
    }
    path = tmp_path / "monitors.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def label_points(s) -> dict:
    """Label-derived dw_performance points in InfluxDB: (model, metric, detector, time) -> fields."""
    try:
        rows = query(
            s,
            'SELECT * FROM "dw_performance" WHERE "detector" = \'realized\' OR '
            '"detector" = \'fet_online\' GROUP BY "model", "metric", "detector"',
        )
    except DatabaseNotFound:
        return {}
    return {
        (r["model"], r["metric"], r["detector"], int(r["time"])): {
            k: v
            for k, v in r.items()
            if v is not None and k not in ("time", "measurement", "metric", "detector", "model", "version")
        }
        for r in rows
    }


def fault_free(s, mon: Path, streams: dict[str, tuple[list[dict], list[dict]]], state: Path) -> dict:
    """What the engine writes without faults: the same pipeline and label join in-process, over both topics
    (``streams``: model -> its inference and label batches), as :func:`label_points` reads them back."""
    from streams.worker.deadletter import DeadLetterPublisher
    from streams.worker.decode import RawMessage
    from streams.worker.labels import LabelHook
    from streams.worker.monitors import load_monitors
    from streams.worker.pipeline import Pipeline

    msgs = []
    for topic, which in ((s.topic_inferences, 0), (s.topic_labels, 1)):
        docs = [(m, d) for m, both in streams.items() for d in both[which]]
        msgs += [RawMessage(orjson.dumps(d), m.encode(), topic, 0, i, None) for i, (m, d) in enumerate(docs)]

    async def send(key, value, headers):
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    cfg = load_monitors(mon)
    hook = LabelHook(cfg, state_dir=state)  # calibrates on a thread, as the worker does
    sink = CollectSink()
    pipeline = Pipeline(s, cfg, sink=sink, deadletters=DeadLetterPublisher(send), evaluator=None, label_hook=hook)

    async def run():
        await pipeline.process(msgs)
        await pipeline.drain()
        deadline = time.monotonic() + 600  # calibrations on a thread: slow on a busy machine
        while time.monotonic() < deadline:  # until every joined row is attributed and written
            await pipeline.flush_labels()
            await pipeline.drain()
            if all(not hook._res[m].waiting and hook._res[m].calibrating is None for m in streams):
                break
            await asyncio.sleep(0.1)
        await hook.close()

    asyncio.run(run())
    out = {}
    for r in sink.records:
        if r.measurement == "dw_performance" and r.tags["detector"] in ("realized", "fet_online"):
            out[(r.tags["model"], r.tags["metric"], r.tags["detector"], r.time_ns)] = dict(r.fields)
    return out


def differences(got: dict, want: dict) -> list[str]:
    problems = [f"missing {k}" for k in sorted(set(want) - set(got))][:10]
    problems += [f"unexpected {k}" for k in sorted(set(got) - set(want))][:10]
    for k in sorted(set(got) & set(want)):
        a, b = got[k], want[k]
        for f in set(a) | set(b):
            x, y = a.get(f), b.get(f)
            same = x == y or (
                isinstance(x, (int, float))
                and isinstance(y, (int, float))
                and not isinstance(x, bool)
                and math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)
            )
            if not same:
                problems.append(f"{k} {f}: {x!r} != {y!r}")
    return problems


def join_counters(s) -> dict:
    rows = query(s, 'SELECT * FROM "dw_performance" WHERE "metric" = \'label_join\' ORDER BY time DESC LIMIT 1')
    return rows[0] if rows else {}


def test_label_results_survive_crashes_an_outage_and_a_backlog(own_stack, settings, tmp_path):
    from kafka import KafkaProducer

    from streams.broker.admin import ensure_topics
    from streams.influx.admin import ensure_database

    t_start = time.monotonic()
    s = settings.model_copy(
        update={
            "kafka_bootstrap": own_stack.bootstrap,
            **own_stack.influx_settings(),
            "kafka_port": own_stack.kafka_port,
            "influx_port": own_stack.influx_port,
            "topic_partitions": 1,
        }
    )
    ensure_topics(s, partitions=1)
    ensure_database(s)
    mon = monitors(tmp_path)
    inf, lab, n_labels = breast_cancer_stream()
    want = fault_free(s, mon, {"bc": (inf, lab)}, tmp_path / "fault-free")
    verdicts = sorted((k[3], v) for k, v in want.items() if k[1] == "error_stream")
    assert any(v.get("drift") == 1 for _t, v in verdicts), "the fault-free run finds the concept drift"
    assert sum(v["n"] for k, v in want.items() if k[1] == "accuracy") == n_labels

    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=5, **s.kafka_client_options())
    killed_three, done, errors = threading.Event(), threading.Event(), []

    def produce() -> None:  # a batch of predictions and the labels of the batch BEHIND batches earlier
        try:
            for b in range(len(inf) + BEHIND):
                if b == len(inf) - 10:  # the last batches wait for the third kill: the stream flows during all
                    killed_three.wait(300)
                if b < len(inf):
                    producer.send(s.topic_inferences, key=b"bc", value=orjson.dumps(inf[b]))
                if b >= BEHIND:
                    producer.send(s.topic_labels, key=b"bc", value=orjson.dumps(lab[b - BEHIND]))
                producer.flush(30)
                # paced so that the kills and the outage happen while the stream flows
                time.sleep(0.02 if killed_three.is_set() else 0.9)
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    env = settings_env(s)
    rng = np.random.default_rng(2026)
    logs, kills, procs = [], [], []
    traffic = threading.Thread(target=produce, daemon=True, name="traffic")
    influx_pid = own_stack.status()["services"][INFLUX]["pid"]

    def up(k: int):
        log = tmp_path / f"worker-{k}.log"
        logs.append(log)
        proc = start_worker(env, mon, log)
        procs.append(proc)
        wait_for(lambda: "Worker]: Ready" in log.read_text(errors="replace"), 90, f"worker {k} ready", [proc], log)
        return proc, log

    def kill(proc, what: str) -> None:
        delay = float(rng.uniform(0.5, 4.0))
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills.append({"when": what, "after_s": round(delay, 2), "at_s": round(time.monotonic() - t_start, 1)})

    try:
        proc, log = up(0)
        traffic.start()
        wait_for(lambda: windowed(s) > 0, 90, "worker 0 writes a window", [proc], log)
        kill(proc, "after its first window")
        proc, log = up(1)
        seen = len(label_points(s))
        wait_for(lambda: len(label_points(s)) > seen, 60, "worker 1 writes label results", [proc], log)
        t_down = time.monotonic()
        assert terminate(influx_pid, 10) == "stopped"
        kill(proc, "while InfluxDB is down")
        proc, log = up(2)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_down)))
        own_stack.up()  # InfluxDB back (same data folder)
        outage = time.monotonic() - t_down
        assert not done.is_set(), f"the stream ended before the outage was over ({errors})"
        kill(proc, "after the outage")
        killed_three.set()
        proc, log = up(3)
        assert done.wait(120) and not errors, errors
        wait_for(
            lambda: differences(label_points(s), want)[:6] or True,
            120,
            "label results equal to a fault-free run",
            [proc],
            log,
        )
        counters = join_counters(s)
    finally:
        killed_three.set()
        done.wait(60)
        producer.close(10)
        for p in procs:
            stop(p)
    got = label_points(s)
    problems = differences(got, want)
    assert not problems, "\n".join(problems[:20])
    # the counters reconcile: nothing lost, nothing counted twice across three crashes
    assert counters["predictions"] == N and counters["labels"] == n_labels and counters["matched"] == n_labels
    assert counters["matched"] + counters["expired"] + counters["evicted"] + counters["pending_predictions"] == N
    assert counters["duplicate_predictions"] == counters["duplicate_labels"] == counters["late_labels"] == 0
    text = "".join(p.read_text(errors="replace") for p in logs[1:])
    assert "label join restored" in text, "a restarted worker restores the label join"
    assert "lost its state" not in text

    # a fresh worker on the backlog of both topics: the same points
    t_backlog = time.monotonic()
    fresh = s.model_copy(
        update={
            "consumer_group": f"g{uuid.uuid4().hex[:10]}",
            "influx_db": f"b{uuid.uuid4().hex[:10]}",
            "state_dir": tmp_path / "backlog-state",
        }
    )
    ensure_database(fresh)
    log = tmp_path / "worker-backlog.log"
    proc = start_worker(settings_env(fresh), mon, log)
    try:
        wait_for(
            lambda: differences(label_points(fresh), want)[:6] or True,
            180,
            "the backlog worker's label results",
            [proc],
            log,
        )
    finally:
        stop(proc)
    backlog_s = time.monotonic() - t_backlog
    for p in [*logs, log]:
        assert "Traceback" not in p.read_text(errors="replace"), tail(p)
    result = {
        "data": "sklearn breast_cancer, resampled",
        "predictions": N,
        "labels": n_labels,
        "kills": kills,
        "outage_s": round(outage, 1),
        "label_points": len(got),
        "backlog_worker_s": round(backlog_s, 1),
        "test_s": round(time.monotonic() - t_start, 1),
        "counters": {k: counters[k] for k in ("predictions", "labels", "matched", "expired", "pending_predictions")},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "label_join.json").write_text(json.dumps(result, indent=2) + "\n")
    print("label join:", json.dumps(result))
