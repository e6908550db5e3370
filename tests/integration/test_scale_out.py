"""Scale-out on the real local stack: two workers in one consumer group give the same results as one.

The same traffic (four models over 4 partitions, identical bytes and keys, so
identical partitions and order) goes to two fresh topic sets, each with its own
consumer group and InfluxDB database:

* run **one**: a single ``driftwatch worker``;
* run **two**: a worker starts alone, and once the first part of the traffic is in
  windows (every model has an open, half-filled window), a second worker joins the
  group. The rebalance hands partitions — with their open windows — to the new
  worker, which rebuilds them from the checkpoints in InfluxDB and the stored
  references (the compacted ``<inferences>.references`` topic). The rest of the
  traffic follows.

Every point the two runs write (all measurements, all tags and fields) must be the
same, except ``closed_at`` (wall clock) and ``ckpt_topic`` (the topic's name).
The newcomer must have resumed at least one model from a checkpoint, or the test
has not shown that state follows a partition.

Bounded: three worker processes; ~50 s on a quiet 2-core machine, the waits give up after
60 + 120 s on a loaded one (see docs/scale-out.md for measured times).
docs/scale-out.md describes what follows a partition and what does not.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.influx.sink import DatabaseNotFound, query
from streams.settings import Settings
from tests.reliability.helpers import Traffic, monitors_file, tail, wait_assigned, worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_MODELS = 4  # one per partition (balanced ids)
WINDOW = 500
PHASE = 3  # batches of 250 events per model and phase: 750 = 1 full window + 250 open
PER_MODEL = 2 * PHASE * 250
FULL = N_MODELS * (PER_MODEL // WINDOW) * WINDOW  # events in closed windows at the end
PHASE1_FULL = N_MODELS * (PHASE * 250 // WINDOW) * WINDOW
WALL_CLOCK = {"closed_at"}  # fields that say when, not what
NAMED_AFTER_TOPIC = {"ckpt_topic"}


@contextlib.contextmanager
def fresh(settings: Settings) -> Iterator[Settings]:
    """Settings like ``settings`` with their own topics (same partition count), group and database."""
    from streams.broker.admin import delete_topics, ensure_topics, topic_names
    from streams.devstack.localstack import free_port
    from streams.influx.admin import drop_database, ensure_database

    tag = uuid.uuid4().hex[:10]
    s = settings.model_copy(
        update=dict(
            topic_inferences=f"t{tag}.inferences",
            topic_labels=f"t{tag}.labels",
            topic_deadletter=f"t{tag}.deadletter",
            topic_alerts=f"t{tag}.alerts",
            consumer_group=f"g{tag}",
            influx_db=f"d{tag}",
            worker_web_port=free_port(),
            state_dir=settings.state_dir.parent / f"state-{tag}",
        )
    )
    ensure_topics(s, partitions=s.topic_partitions)
    ensure_database(s)
    try:
        yield s
    finally:
        with contextlib.suppress(Exception):
            delete_topics(s, topic_names(s))
        with contextlib.suppress(Exception):
            drop_database(s)


def env_for(settings_env: dict, s: Settings, **extra: str) -> dict:
    return {
        **settings_env,
        "DRIFTWATCH_TOPIC_INFERENCES": s.topic_inferences,
        "DRIFTWATCH_TOPIC_LABELS": s.topic_labels,
        "DRIFTWATCH_TOPIC_DEADLETTER": s.topic_deadletter,
        "DRIFTWATCH_TOPIC_ALERTS": s.topic_alerts,
        "DRIFTWATCH_CONSUMER_GROUP": s.consumer_group,
        "DRIFTWATCH_INFLUX_DB": s.influx_db,
        "DRIFTWATCH_WORKER_WEB_PORT": str(s.worker_web_port),
        "DRIFTWATCH_STATE_DIR": str(s.state_dir),
        **extra,
    }


def windowed(s: Settings) -> int:
    try:
        rows = query(s, 'SELECT sum("n_events") AS n FROM "dw_window"')
    except DatabaseNotFound:
        return 0
    return int(rows[0]["n"]) if rows else 0


def produce(traffics: list[Traffic], models: list[str], phase: int) -> None:
    """The same batches to every topic set (each Traffic has the same seed: identical bytes)."""
    for t in traffics:
        for i in range(PHASE):
            for j, m in enumerate(models):
                t.send(m, 250, drift=phase == 2 and j % 2 == 0 and i >= 2)
        t.flush()


def all_points(s: Settings) -> set[tuple]:
    """Every point of every measurement, comparable across runs."""
    names = [r["name"] for r in query(s, "SHOW MEASUREMENTS")]
    out: set[tuple] = set()
    for name in names:
        for row in query(s, f'SELECT * FROM "{name}" GROUP BY *'):
            items = []
            for k, v in row.items():
                if k in WALL_CLOCK or v is None:
                    continue
                if k in NAMED_AFTER_TOPIC:
                    v = "<topic>"
                items.append((k, v))
            out.add(tuple(sorted(items, key=lambda kv: kv[0])))
    return out


def wait_until(conds: dict[str, tuple], timeout: float, procs_logs: list[tuple]) -> None:
    """Wait until every ``name: (callable, target)`` is met; fail with the logs if a worker dies."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        last = {k: f() for k, (f, _) in conds.items()}
        if all(last[k] >= target for k, (_, target) in conds.items()):
            return
        for proc, log in procs_logs:
            if proc.poll() is not None:
                pytest.fail(f"worker exited with {proc.returncode}; log:\n{tail(log)}")
        time.sleep(0.5)
    logs = "\n\n".join(f"--- {log.name}\n{tail(log, 25)}" for _, log in procs_logs)
    pytest.fail(f"timed out: {last} (want { ({k: t for k, (_, t) in conds.items()}) })\n{logs}")


def models_started(log: Path) -> dict[str, str]:
    """model -> "starting" | "resuming" from a worker's log (the last word wins)."""
    out: dict[str, str] = {}
    for m in re.finditer(r"\b(starting|resuming) (\S+) v\S+ in \S+\[\d+\]", log.read_text(errors="replace")):
        out[m.group(2)] = m.group(1)
    return out


def test_two_workers_in_one_group_write_the_same_points_as_one(settings, settings_env, tmp_path):
    from benchmarks.traffic import balanced_model_ids

    models = balanced_model_ids(N_MODELS, settings.topic_partitions, prefix="s")
    mon = monitors_file(tmp_path, models, window=WINDOW, first_n=WINDOW, idle=600.0)
    two = settings  # the fixture's topics, group and database
    with fresh(settings) as one:
        traffics = [Traffic(one, seed=8), Traffic(two, seed=8)]
        try:
            produce(traffics, models, phase=1)
            logs = {n: tmp_path / f"{n}.log" for n in ("one", "two-a", "two-b")}
            env_one = env_for(settings_env, one)
            env_a = env_for(settings_env, two)
            env_b = env_for(settings_env, two, DRIFTWATCH_WORKER_WEB_PORT="0")
            t0 = time.monotonic()
            with worker(env_one, mon, logs["one"]) as p_one, worker(env_a, mon, logs["two-a"]) as p_a:
                wait_until(
                    {"two": (lambda: windowed(two), PHASE1_FULL)}, 60, [(p_one, logs["one"]), (p_a, logs["two-a"])]
                )
                # every model now has 250 events in an open window, held by worker a
                with worker(env_b, mon, logs["two-b"]) as p_b:
                    # the second half only once b has partitions: a worker that reads phase 2 before the
                    # rebalance completes leaves b nothing to resume (the race this test once lost)
                    wait_assigned(p_b, logs["two-b"], 1, "worker b", timeout=60)
                    produce(traffics, models, phase=2)
                    procs = [(p_one, logs["one"]), (p_a, logs["two-a"]), (p_b, logs["two-b"])]
                    wait_until({"one": (lambda: windowed(one), FULL), "two": (lambda: windowed(two), FULL)}, 120, procs)
                    # the newcomer got partitions (each with its models' state)
                    wait_until({"b": (lambda: len(models_started(logs["two-b"])), 1)}, 15, procs)
            elapsed = time.monotonic() - t0
        finally:
            for t in traffics:
                t.close()
        started_b = models_started(logs["two-b"])
        started_a = models_started(logs["two-a"])
        assert started_a and started_b, (started_a, started_b)
        assert "resuming" in started_b.values(), (
            f"the second worker should have resumed a moved model from its checkpoint: {started_b}"
        )
        assert windowed(one) == windowed(two) == FULL  # nothing lost, nothing counted twice
        got_one, got_two = all_points(one), all_points(two)
        assert len(got_one) > N_MODELS * 3 * 20  # windows x (drift, quality, histograms, ...)
        missing, extra = got_one - got_two, got_two - got_one
        assert not missing and not extra, (
            f"{len(missing)} points only with one worker, {len(extra)} only with two; e.g. "
            f"{sorted(missing)[:2]} / {sorted(extra)[:2]}"
        )
        by_measurement: dict[str, int] = {}
        for point in got_one:
            name = dict(point)["measurement"]
            by_measurement[name] = by_measurement.get(name, 0) + 1
        print(
            f"\nscale-out: {N_MODELS} models, {FULL} windowed events, {len(got_one)} points equal "
            f"({dict(sorted(by_measurement.items()))}); worker b took {sorted(started_b.items())}; "
            f"{elapsed:.1f} s with 3 workers"
        )
