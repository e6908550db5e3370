"""Workers join and leave one consumer group repeatedly: every assigned partition keeps being read.

After a CI run, a worker that got partitions in a rebalance consumed nothing for 60 s while the
other logged ``IllegalStateError: No current assignment for partition`` (fixed: the seek to the
committed offsets skips revoked partitions), and under load a worker that joined the group was
never assigned at all: the local broker (tansu 0.6.0) keeps a group's leader that sends
LeaveGroup while another member's join is in progress, answers every later join with that
departed leader, and the group stops consuming for good. The worker no longer sends LeaveGroup
(docs/scale-out.md, "Rebalances"); its partitions move after the session timeout.

Two workers take turns in one group: a alone, a+b, b alone, a+b, a alone, and then two swaps
in which the newcomer's JoinGroup is already in flight when the group's only member (its
leader) stops, the order that left the group without a leader. After each change every
newcomer must be assigned before traffic is sent; then one window of every model (one model
per partition) and a label batch per model go to every partition of both topics, and every
partition's committed offset must reach what was produced (an offset is committed only after
the results that depend on it are written). No worker may log an ERROR line, the fetch
warning or IllegalStateError, and every worker must exit 0.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from subprocess import Popen

import numpy as np
import orjson
import pytest

from tests.reliability.helpers import (
    WORKER_READY,
    Traffic,
    monitors_file,
    start_worker,
    stop,
    tail,
    wait_for,
    windowed,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW = 250
N_MODELS = 4
JOINING = "(Re-)joining group"  # aiokafka, when its JoinGroup request goes out
# an ERROR or CRITICAL line in either log format (Faust's "[ERROR]", the CLI's " ERROR "), and the earlier symptoms
BAD_LINE = re.compile(r"[ \[](ERROR|CRITICAL)[ \]]|has not sent fetch request|No current assignment|Traceback")
# (members after the step, what happens); a step with a newcomer and a leaver is a swap
STEPS: list[tuple[set[str], str]] = [
    ({"a"}, "a starts"),
    ({"a", "b"}, "b joins"),
    ({"b"}, "a leaves"),
    ({"a", "b"}, "a joins"),
    ({"a"}, "b leaves"),
    ({"b"}, "b joins, a (the leader) stops while b's join is in progress"),
    ({"a"}, "a joins, b (the leader) stops while a's join is in progress"),
]


class Worker:
    """A ``driftwatch worker`` child process and the part of its (appended) log written since it started."""

    def __init__(self, env: dict[str, str], monitors: Path, log: Path) -> None:
        self.log = log
        self.start = log.stat().st_size if log.exists() else 0
        self.proc: Popen = start_worker(env, monitors, log)

    def text(self) -> str:
        with self.log.open("rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace")

    def wait_log(self, needle: str, timeout: float, what: str) -> float:
        """Seconds until ``needle`` is in the log; fails with the log's tail if the worker exits or time runs out."""
        t0 = time.monotonic()
        wait_for(lambda: needle in self.text(), timeout, what, [self.proc], self.log, every=0.2)
        return time.monotonic() - t0


def committed(settings) -> dict[str, dict[int, int]]:
    from streams.broker.admin import committed_offsets

    return {t: committed_offsets(settings, t) for t in (settings.topic_inferences, settings.topic_labels)}


def test_workers_joining_and_leaving_keep_every_partition_read(settings, settings_env, tmp_path):
    from benchmarks.traffic import balanced_model_ids

    models = balanced_model_ids(N_MODELS, settings.topic_partitions, prefix="r")
    mon = monitors_file(tmp_path, models, window=WINDOW, first_n=WINDOW, idle=600.0)
    traffic = Traffic(settings, seed=5)
    envs = {"a": settings_env, "b": {**settings_env, "DRIFTWATCH_WORKER_WEB_PORT": "0"}}
    logs = {n: tmp_path / f"{n}.log" for n in envs}
    produced: dict[str, dict[int, int]] = {settings.topic_inferences: {}, settings.topic_labels: {}}
    running: dict[str, Worker] = {}
    exits: list[tuple[str, int, int | None]] = []
    expected = 0

    def send_step_traffic() -> None:
        """One window per model to the inference topic and a label batch per model, counted per partition."""
        nonlocal expected
        futures = []
        for m in models:
            start = traffic.next.get(m, 0)
            futures.append((settings.topic_inferences, traffic.send(m, WINDOW)))
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
            futures.append(
                (
                    settings.topic_labels,
                    traffic.producer.send(settings.topic_labels, key=m.encode(), value=orjson.dumps(doc)),
                )
            )
        traffic.flush()
        for topic, fut in futures:
            p = fut.get(30).partition
            produced[topic][p] = produced[topic].get(p, 0) + 1
        expected += N_MODELS * WINDOW

    def everything_read() -> bool:
        got = committed(settings)
        return windowed(settings) == expected and all(
            got[t].get(p, 0) >= n for t, parts in produced.items() for p, n in parts.items()
        )

    try:
        for i, (members, how) in enumerate(STEPS):
            joiners = sorted(members - set(running))
            leavers = sorted(set(running) - members)
            for name in joiners:
                running[name] = Worker(envs[name], mon, logs[name])
            if joiners and leavers:  # a swap: the leaver stops once the newcomer's JoinGroup is out
                for name in joiners:
                    running[name].wait_log(JOINING, 60, f"step {i} ({how}): {name} sends JoinGroup")
            for name in leavers:
                exits.append((name, i, stop(running.pop(name).proc)))
            for name in joiners:
                took = running[name].wait_log(WORKER_READY, 90, f"step {i} ({how}): {name} assigned")
                print(f"step {i} ({how}): {name} assigned {took:.1f} s after it started")
            send_step_traffic()
            deadline = time.monotonic() + 90
            while not everything_read() and time.monotonic() < deadline:
                for name, w in running.items():
                    if w.proc.poll() is not None:
                        pytest.fail(f"worker {name} exited with {w.proc.returncode} in step {i}:\n{tail(w.log)}")
                time.sleep(0.5)
            assert everything_read(), (
                f"step {i} ({how}): an assigned partition was not read: {windowed(settings)} of {expected} events "
                f"windowed; committed {committed(settings)}, produced {produced}\n"
                + "\n".join(f"--- {n}\n{tail(p, 30)}" for n, p in logs.items() if p.exists())
            )
    finally:
        for name, w in running.items():
            exits.append((name, len(STEPS), stop(w.proc)))
        traffic.close()
    assert all(code == 0 for _, _, code in exits), f"worker exits (name, step, code): {exits}"
    bad = {
        n: [ln for ln in p.read_text(errors="replace").splitlines() if BAD_LINE.search(ln)]
        for n, p in logs.items()
        if p.exists()
    }
    assert not any(bad.values()), bad
    # the fix: a stopping worker leaves the group by falling silent (aiokafka logs a LeaveGroup it sends)
    left = [n for n, p in logs.items() if "LeaveGroup" in p.read_text(errors="replace")]
    assert not left, f"workers {left} sent LeaveGroup"
