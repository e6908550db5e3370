"""A second worker joins the group and leaves again: the label join moves with its partitions.

Four models, one per partition, their labels one step behind their predictions, so predictions
wait for labels across each rebalance. Worker a alone, then a + b (b takes half the
partitions: the models' joins are checkpointed by a at the rebalance and restored by b from the
label-join changelog topic), then a alone again (b's joins come back). Afterwards, for every
model, the join's counters reconcile — every prediction matched, expired or still waiting, every
label matched once — and every label is in the realized results exactly once: nothing lost,
nothing counted twice.

The second test gives the two workers state folders of their own (two hosts), keeps a labelled
real data set flowing while the partitions move (join, leave, SIGKILL), and compares every
label-derived point with a fault-free run's.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import orjson
import pytest
import yaml

from streams.influx.sink import DatabaseNotFound, query
from tests.reliability.helpers import (
    T0,
    Traffic,
    monitors_file,
    start_worker,
    stop,
    tail,
    wait_assigned,
    wait_for,
    windowed,
    worker,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WINDOW = 250


def counters(settings) -> dict[str, dict]:
    try:
        rows = query(
            settings,
            'SELECT * FROM "dw_performance" WHERE "metric" = \'label_join\' GROUP BY "model" '
            "ORDER BY time DESC LIMIT 1",
        )
    except DatabaseNotFound:
        return {}
    return {r["model"]: r for r in rows}


def labelled(settings) -> dict[str, int]:
    try:
        rows = query(
            settings, 'SELECT sum("n") AS n FROM "dw_performance" WHERE "metric" = \'accuracy\' GROUP BY "model"'
        )
    except DatabaseNotFound:
        return {}
    return {r["model"]: int(r["n"]) for r in rows}


def test_label_join_counters_reconcile_when_a_worker_joins_and_leaves(settings, settings_env, tmp_path):
    from benchmarks.traffic import balanced_model_ids

    models = balanced_model_ids(4, settings.topic_partitions, prefix="h")
    mon = monitors_file(tmp_path, models, window=WINDOW, first_n=WINDOW, idle=600.0)
    cfg = yaml.safe_load(mon.read_text())
    for m in cfg["models"]:
        m["labels"] = {"ttl_seconds": 86_400, "online": {"enabled": False}}
    mon.write_text(yaml.safe_dump(cfg))
    traffic = Traffic(settings, seed=8)
    rng = np.random.default_rng(8)
    sent: dict[str, int] = {m: 0 for m in models}
    env_b = {**settings_env, "DRIFTWATCH_WORKER_WEB_PORT": "0"}
    logs = {"a": tmp_path / "a.log", "b": tmp_path / "b.log"}
    running: dict[str, contextlib.ExitStack] = {}
    procs: dict = {}

    def labels_for(m: str, start: int) -> None:  # 90 % of the labels of one step's predictions
        ids = [f"{m}-{i}" for i in range(start, start + WINDOW) if rng.random() < 0.9]
        doc = {
            "schema_version": 1,
            "type": "label_batch",
            "model_id": m,
            "event_id": ids,
            "label": rng.choice(["yes", "no"], size=len(ids)).tolist(),
            "label_time": [T0 + (start + WINDOW) * 0.01 + 5.0] * len(ids),
        }
        traffic.producer.send(settings.topic_labels, key=m.encode(), value=orjson.dumps(doc))
        sent[m] += len(ids)

    steps = [{"a"}, {"a", "b"}, {"a"}]
    try:
        for i, members in enumerate(steps):
            for name in sorted(set(running) - members):  # leave (SIGTERM)
                running.pop(name).close()
                procs.pop(name)
            for name in sorted(members - set(running)):  # join
                stack = contextlib.ExitStack()
                procs[name] = stack.enter_context(worker(env_b if name == "b" else settings_env, mon, logs[name]))
                running[name] = stack
                wait_for(
                    lambda n=name: logs[n].read_text(errors="replace").count("Worker]: Ready") >= 1,
                    90,
                    f"worker {name} ready (the rebalance done)",
                    list(procs.values()),
                    logs[name],
                )
            for m in models:
                start = traffic.next.get(m, 0)
                traffic.send(m, WINDOW)
                if start:
                    labels_for(m, start - WINDOW)  # the previous step's predictions, waiting since then
            traffic.flush()
            expected = (i + 1) * WINDOW * len(models)
            wait_for(
                lambda expected=expected: windowed(settings) == expected,
                120,
                f"step {i} windowed",
                list(procs.values()),
                logs["a"],
            )
        for m in models:
            labels_for(m, traffic.next[m] - WINDOW)
        traffic.flush()
        wait_for(
            lambda: labelled(settings) == sent or labelled(settings),
            90,
            "every label in the results",
            list(procs.values()),
            logs["a"],
        )
        time.sleep(2.0)  # the counters of the last labels (the next timer tick)
        got = counters(settings)
    finally:
        for stack in running.values():
            stack.close()
        traffic.close()
    assert labelled(settings) == sent  # every label in a realized result exactly once
    for m in models:
        c = got[m]
        n = traffic.next[m]
        assert (c["predictions"], c["labels"], c["matched"]) == (n, sent[m], sent[m]), (m, c)
        assert c["matched"] + c["expired"] + c["evicted"] + c["pending_predictions"] == c["predictions"], (m, c)
        assert c["duplicate_predictions"] == c["duplicate_labels"] == c["late_labels"] == 0, (m, c)
    # a handed joins over at b's arrival (snapshot at the revocation), b restored them; b's shutdown saved
    # them again and a restored them when it got the partitions back
    assert "label join restored" in logs["b"].read_text(errors="replace"), tail(logs["b"])
    text_a = logs["a"].read_text(errors="replace")
    assert "handed over" in text_a and "label join restored" in text_a, tail(logs["a"])


RUN_FIELDS = ("t", "statistic", "threshold")
"""Error-stream fields of the detector's running statistic: after a move to a host that recalibrates, not yet
exact (docs/worker.md, "Limits"); compared and printed, not asserted."""


def without_run(points: dict) -> dict:
    return {
        k: {f: v for f, v in fields.items() if k[1] != "error_stream" or f not in RUN_FIELDS}
        for k, fields in points.items()
    }


def test_label_partitions_move_between_workers_with_separate_state_folders(settings, tmp_path):
    """The join state lives in Kafka, not in a worker's folder: workers a and b have state folders of their
    own (as on two hosts). Under a flowing labelled stream (scikit-learn's breast-cancer set, four models,
    labels 500 rows behind their predictions, 5 % never sent, a concept drift half-way) b joins (half the
    partitions move to b), a leaves (all move to b), a comes back and b is SIGKILLed (all move to a, from
    b's last checkpoint; a2 has no cached error-stream thresholds and recalibrates them). Afterwards every
    label-derived dw_performance point — realized accuracy, precision, recall, F1 with their label counts
    and delays, and the error-stream points (errors tested, error rate, detections, their times) — equals
    a fault-free in-process run's, except the error-stream detector's running statistic (``t``,
    ``statistic``, ``threshold``: printed, a known gap, docs/worker.md), and each model's
    counters reconcile: matched + expired + evicted + waiting = received predictions, every sent label
    matched once, nothing counted twice."""
    import signal
    import threading

    from benchmarks.traffic import balanced_model_ids
    from streams.broker.admin import delete_topics
    from streams.devstack.localstack import settings_env
    from streams.worker.label_changelog import changelog_topic
    from tests.reliability.test_label_join import (
        BEHIND,
        N,
        breast_cancer_stream,
        differences,
        fault_free,
        label_points,
        monitors,
    )

    models = balanced_model_ids(4, settings.topic_partitions, prefix="bc")
    streams = {m: breast_cancer_stream(seed=7 + k, model_id=m)[:2] for k, m in enumerate(models)}
    n_labels = {m: sum(len(d["event_id"]) for d in lab) for m, (_, lab) in streams.items()}
    mon = monitors(tmp_path, tuple(models))
    want = fault_free(settings, mon, streams, tmp_path / "fault-free")
    assert sum(v["n"] for k, v in want.items() if k[1] == "accuracy") == sum(n_labels.values())
    assert any(v.get("drift") == 1 for k, v in want.items() if k[1] == "error_stream")

    folders = {name: tmp_path / f"host-{name}" for name in "ab"}
    envs = {
        name: settings_env(
            settings.model_copy(
                update={"state_dir": folders[name], "worker_web_port": 0 if name == "b" else settings.worker_web_port}
            )
        )
        for name in "ab"
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b", "a2")}
    procs: dict = {}
    n_batches = len(streams[models[0]][0])
    moves = {n_batches // 4: "b joins", n_batches // 2: "a leaves", 3 * n_batches // 4: "a joins, b is killed"}
    at_move = {b: threading.Event() for b in moves}
    moved = {b: threading.Event() for b in moves}
    done, errors = threading.Event(), []
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5, **settings.kafka_client_options())

    def produce() -> None:  # each step: a batch of predictions per model, and the labels of BEHIND batches earlier
        try:
            for b in range(n_batches + BEHIND):
                if b in moves:
                    at_move[b].set()
                    moved[b].wait(180)
                for m, (inf, lab) in streams.items():
                    if b < n_batches:
                        producer.send(settings.topic_inferences, key=m.encode(), value=orjson.dumps(inf[b]))
                    if b >= BEHIND:
                        producer.send(settings.topic_labels, key=m.encode(), value=orjson.dumps(lab[b - BEHIND]))
                producer.flush(30)
                time.sleep(0.3)
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    def start(name: str) -> None:
        procs[name] = start_worker(envs[name[0]], mon, logs[name])  # a2: a again, on a's host

    def ready(name: str, count: int) -> None:
        wait_assigned(procs[name], logs[name], count, f"worker {name}")

    traffic = threading.Thread(target=produce, daemon=True, name="traffic")
    try:
        start("a")
        ready("a", 1)
        traffic.start()
        for b, what in moves.items():
            assert at_move[b].wait(300), f"traffic did not reach batch {b}: {errors}"
            time.sleep(1.0)  # predictions and labels in flight, checkpoints due
            if what == "b joins":
                start("b")
                ready("b", 1)
                ready("a", 2)  # a's partitions were revoked and half of them given back
            elif what == "a leaves":
                assert stop(procs.pop("a"), timeout=30) == 0, tail(logs["a"])
                ready("b", 2)
            else:
                start("a2")
                ready("a2", 1)
                ready("b", 3)
                time.sleep(2.0)  # b joins labels after the rebalance, then dies without a last checkpoint
                procs["b"].send_signal(signal.SIGKILL)
                procs.pop("b").wait(10)
                ready("a2", 2)  # b's partitions come to a after the session timeout
            moved[b].set()
        assert done.wait(300) and not errors, errors
        wait_for(
            lambda: differences(without_run(label_points(settings)), without_run(want))[:8] or True,
            180,
            "label results equal to the fault-free run's",
            list(procs.values()),
            logs["a2"],
        )
        time.sleep(2.0)  # the counters of the last labels (the next timer tick)
        got = counters(settings)
    finally:
        for ev in moved.values():
            ev.set()
        done.wait(60)
        producer.close(10)
        for p in procs.values():
            stop(p)
        with contextlib.suppress(Exception):
            delete_topics(settings, [changelog_topic(settings)])
    problems = differences(without_run(label_points(settings)), without_run(want))
    assert not problems, "\n".join(problems[:20])
    print(
        "label points: the error-stream run fields that differ from the fault-free run:",
        differences(label_points(settings), want),
    )
    for m in models:
        c = got[m]
        assert (c["predictions"], c["labels"], c["matched"]) == (N, n_labels[m], n_labels[m]), (m, c)
        assert c["matched"] + c["expired"] + c["evicted"] + c["pending_predictions"] == c["predictions"], (m, c)
        assert c["duplicate_predictions"] == c["duplicate_labels"] == c["late_labels"] == 0, (m, c)
    text = {name: log.read_text(errors="replace") for name, log in logs.items()}
    for name in ("b", "a2"):  # each took partitions over from the other host's checkpoints
        assert "label join restored from the Kafka topic" in text[name], tail(logs[name])
    for name in logs:
        assert "Traceback" not in text[name], tail(logs[name])
    for folder in folders.values():  # nothing of the join in either folder: it is all in Kafka
        assert not list(folder.rglob("*label*")), list(folder.rglob("*"))
