"""Workers join and leave one consumer group repeatedly: every assigned partition keeps being read.

After a CI run, a worker that got partitions in a rebalance ("Worker ready", generation 1)
consumed nothing for 60 s while the other logged ``IllegalStateError: No current assignment
for partition``, and a second worker started by hand logged "Aiokafka has not sent fetch
request for TP(...labels, 1) since start". A partition that is assigned and not fetched is
lost monitoring. Here two workers take turns in one group — a alone, a+b, b alone, a+b,
a alone — while traffic flows to every partition of both topics; after each change every
model's windows (one model per partition) and every labels partition must move on, and no
worker may log an ERROR line or the fetch warning.
"""

from __future__ import annotations

import contextlib
import re
import time

import numpy as np
import orjson
import pytest

from tests.reliability.helpers import Traffic, monitors_file, tail, windowed, worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW = 250
N_MODELS = 4
BAD_LINE = re.compile(r" (ERROR|CRITICAL) |has not sent fetch request|No current assignment|Traceback")


def labels_committed(settings) -> dict[int, int]:
    from kafka import KafkaAdminClient, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_options())
    group = settings.consumer_group
    try:
        tps = [TopicPartition(settings.topic_labels, p) for p in range(settings.topic_partitions)]
        offsets = admin.list_group_offsets({group: tps})[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


def test_workers_joining_and_leaving_keep_every_partition_read(settings, settings_env, tmp_path):
    from benchmarks.traffic import balanced_model_ids

    models = balanced_model_ids(N_MODELS, settings.topic_partitions, prefix="r")
    mon = monitors_file(tmp_path, models, window=WINDOW, first_n=WINDOW, idle=600.0)
    traffic = Traffic(settings, seed=5)
    label_msgs: dict[int, int] = {}  # labels partition -> messages produced (one per model and step)
    env_b = {**settings_env, "DRIFTWATCH_WORKER_WEB_PORT": "0"}
    logs = {"a": tmp_path / "a.log", "b": tmp_path / "b.log"}
    steps = [{"a"}, {"a", "b"}, {"b"}, {"a", "b"}, {"a"}]
    running: dict[str, contextlib.ExitStack] = {}
    procs: dict = {}
    expected = 0

    def step_traffic() -> None:
        nonlocal expected
        for m in models:
            start = traffic.next.get(m, 0)
            traffic.send(m, WINDOW)
            ids = [f"{m}-{i}" for i in range(start, start + WINDOW)]
            rng = np.random.default_rng(len(ids))
            doc = {
                "schema_version": 1,
                "type": "label_batch",
                "model_id": m,
                "event_id": ids,
                "label": rng.choice(["yes", "no"], size=len(ids)).tolist(),
                "label_time": [time.time()] * len(ids),
            }
            meta = traffic.producer.send(settings.topic_labels, key=m.encode(), value=orjson.dumps(doc)).get(30)
            label_msgs[meta.partition] = label_msgs.get(meta.partition, 0) + 1
        traffic.flush()
        expected += N_MODELS * WINDOW

    try:
        for i, members in enumerate(steps):
            for name in sorted(set(running) - members):  # leave (SIGTERM, in order)
                running.pop(name).close()
                procs.pop(name)
            for name in sorted(members - set(running)):  # join
                stack = contextlib.ExitStack()
                procs[name] = stack.enter_context(worker(env_b if name == "b" else settings_env, mon, logs[name]))
                running[name] = stack
            step_traffic()
            deadline = time.monotonic() + 90
            while windowed(settings) < expected and time.monotonic() < deadline:
                for name, p in procs.items():
                    if p.poll() is not None:
                        pytest.fail(f"worker {name} exited with {p.returncode} in step {i}:\n{tail(logs[name])}")
                time.sleep(0.5)
            got = windowed(settings)
            assert got == expected, (
                f"step {i} ({sorted(members)}): {got} of {expected} events windowed — an assigned partition "
                f"was not read\n" + "\n".join(f"--- {n}\n{tail(p, 30)}" for n, p in logs.items() if p.exists())
            )
            # every labels partition is read too: its committed offset reaches what was produced
            per_part = label_msgs
            deadline = time.monotonic() + 30
            committed: dict[int, int] = {}
            while time.monotonic() < deadline:
                committed = labels_committed(settings)
                if all(committed.get(p, -1) >= n for p, n in per_part.items()):
                    break
                time.sleep(0.5)
            assert all(committed.get(p, -1) >= n for p, n in per_part.items()), (
                f"step {i}: labels partitions not read: committed {committed}, produced {per_part}"
            )
    finally:
        for stack in running.values():
            stack.close()
        traffic.close()
    bad = {
        n: [ln for ln in p.read_text(errors="replace").splitlines() if BAD_LINE.search(ln)]
        for n, p in logs.items()
        if p.exists()
    }
    assert not any(bad.values()), bad
