"""A second worker joins the group and leaves again: the label join moves with its partitions.

Four models, one per partition, their labels one step behind their predictions, so predictions
wait for labels across each rebalance. Worker a alone, then a + b (b takes half the
partitions: the models' joins are snapshotted by a at the rebalance and restored by b from the
shared state dir), then a alone again (b's joins come back). Afterwards, for every model, the
join's counters reconcile — every prediction matched, expired or still waiting, every label
matched once — and every label is in the realized results exactly once: nothing lost, nothing
counted twice.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import orjson
import pytest
import yaml

from streams.influx.sink import DatabaseNotFound, query
from tests.reliability.helpers import T0, Traffic, monitors_file, tail, wait_for, windowed, worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WINDOW = 250


def counters(settings) -> dict[str, dict]:
    try:
        rows = query(settings, 'SELECT * FROM "dw_performance" WHERE "metric" = \'label_join\' GROUP BY "model" '
                               'ORDER BY time DESC LIMIT 1')
    except DatabaseNotFound:
        return {}
    return {r["model"]: r for r in rows}


def labelled(settings) -> dict[str, int]:
    try:
        rows = query(settings, 'SELECT sum("n") AS n FROM "dw_performance" WHERE "metric" = \'accuracy\' '
                               'GROUP BY "model"')
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
        doc = {"schema_version": 1, "type": "label_batch", "model_id": m, "event_id": ids,
               "label": rng.choice(["yes", "no"], size=len(ids)).tolist(),
               "label_time": [T0 + (start + WINDOW) * 0.01 + 5.0] * len(ids)}
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
                wait_for(lambda n=name: logs[n].read_text(errors="replace").count("Worker]: Ready") >= 1, 90,
                         f"worker {name} ready (the rebalance done)", list(procs.values()), logs[name])
            for m in models:
                start = traffic.next.get(m, 0)
                traffic.send(m, WINDOW)
                if start:
                    labels_for(m, start - WINDOW)  # the previous step's predictions, waiting since then
            traffic.flush()
            expected = (i + 1) * WINDOW * len(models)
            wait_for(lambda expected=expected: windowed(settings) == expected, 120, f"step {i} windowed", list(procs.values()),
                     logs["a"])
        for m in models:
            labels_for(m, traffic.next[m] - WINDOW)
        traffic.flush()
        wait_for(lambda: labelled(settings) == sent or labelled(settings), 90, "every label in the results",
                 list(procs.values()), logs["a"])
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
