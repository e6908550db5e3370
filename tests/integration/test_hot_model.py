"""One hot model across workers, on the real local stack (tansu + InfluxDB 1.6).

One model, ``shards: 4``, its events spread over the 4 partitions of the inferences topic (as the
SDK's ``shards=`` does). Every shard's worker publishes partial window summaries to the group's
partials topic; the model's merge owner combines the four partials of each window and tests it.
The same bytes, to the same partitions, go to two fresh topic sets:

* run **one**: a single worker is every shard and the merge owner;
* run **two**: a worker starts alone and, once every shard has one window published and half of
  the next open, a second worker joins: the rebalance moves shards (with their open partial
  windows, from the window changelog) and maybe the merge step to it. The rest follows.

Both runs must write the same points (every measurement, tag and field except ``closed_at`` and the
topic names; floats to 10 significant digits, see :func:`points`): the merged windows' results, their ``dw_window`` points, and the shards' ``dw_shard``
points. The merged windows must hold all the events (``dw_window`` n_events), and the second
worker must have resumed a shard from a checkpoint.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import orjson
import pytest

from streams.influx.sink import query
from streams.wire.contract import shard_partitions
from tests.integration import test_scale_out as so
from tests.reliability.helpers import CATEGORICAL, NUMERIC, batch_doc, monitors_file, tail, wait_assigned, worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "hot"
SHARDS = 4
WINDOW = 2000  # 500 per shard
BATCH = 250
PHASE = 3  # batches per shard and phase: 750 = one shard window + 250 open
FULL = 2 * PHASE * BATCH * SHARDS // WINDOW * WINDOW  # events in merged windows at the end (6000)
PHASE1_FULL = PHASE * BATCH * SHARDS // WINDOW * WINDOW  # (2000)


class ShardTraffic:
    """Identical column batches of the hot model to each topic set, shard by shard to its partition."""

    def __init__(self, settings_list: list, seed: int) -> None:
        from kafka import KafkaProducer

        self.sets = settings_list
        self.producers = [
            KafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=5, **s.kafka_client_options())
            for s in settings_list
        ]
        self.rng = np.random.default_rng(seed)
        self.next = 0

    def phase(self, drift: bool) -> None:
        parts = shard_partitions(MODEL, SHARDS, self.sets[0].topic_partitions)
        for _ in range(PHASE):
            for part in parts:
                value = orjson.dumps(batch_doc(MODEL, self.next, BATCH, self.rng, drift=drift))
                self.next += BATCH
                for s, p in zip(self.sets, self.producers):
                    p.send(s.topic_inferences, key=MODEL.encode(), value=value, partition=part)
        for p in self.producers:
            p.flush(60)

    def close(self) -> None:
        for p in self.producers:
            p.close(10)


def reference_csv(path) -> str:
    """A reference file drawn like the undrifted traffic."""
    doc = batch_doc(MODEL, 10**6, 3000, np.random.default_rng(99))
    cols = NUMERIC + CATEGORICAL
    lines = [",".join(cols)]
    rows = zip(*(doc["features"][c] for c in cols))
    lines += [",".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def merged_events(s) -> int:
    return so.windowed(s)


def shard_events(s) -> int:
    try:
        rows = query(s, 'SELECT sum("n_events") AS n FROM "dw_shard"')
    except Exception:
        return 0
    return int(rows[0]["n"]) if rows else 0


def points(s) -> set[tuple]:
    """Every point (:func:`test_scale_out.all_points`), floats to 10 significant digits: a summary's value sums
    (Wasserstein, effect sizes) depend on how its rows were batched — a shard resumed from a checkpoint adds
    them in other groups than one that ran through — and differ in the last bits (detectors/summaries.py)."""
    return {
        tuple((k, float(f"{v:.10g}") if isinstance(v, float) else v) for k, v in point) for point in so.all_points(s)
    }


@pytest.mark.parametrize("leave", ["join", "sigkill"])
def test_one_hot_model_on_four_partitions_two_workers_write_the_same_points_as_one(
    settings, settings_env, tmp_path, leave
):
    """``join``: worker b joins worker a (shards and maybe the merge step move to b). ``sigkill``: worker a
    is killed with SIGKILL after the first merged window, worker b then starts alone and takes every
    shard and the merge step over from the checkpoints and the un-acked partials."""
    assert settings.topic_partitions == SHARDS
    ref = reference_csv(tmp_path / "reference.csv")
    mon = tmp_path / "monitors.yaml"
    import yaml

    cfg = yaml.safe_load(monitors_file(tmp_path, [MODEL], window=WINDOW, idle=600.0).read_text())
    model = cfg["models"][0]
    model["shards"] = SHARDS
    model["reference"] = {"file": ref}
    model["window"].update(summary_bins=64, summary_reservoir=200)
    mon.write_text(yaml.safe_dump(cfg))
    two = settings
    with so.fresh(settings) as one:
        traffic = ShardTraffic([one, two], seed=5)
        try:
            traffic.phase(drift=False)
            logs = {n: tmp_path / f"{n}.log" for n in ("one", "two-a", "two-b")}
            env_one = so.env_for(settings_env, one)
            env_a = so.env_for(settings_env, two)
            env_b = so.env_for(settings_env, two, DRIFTWATCH_WORKER_WEB_PORT="0")
            t0 = time.monotonic()
            with worker(env_one, mon, logs["one"]) as p_one, worker(env_a, mon, logs["two-a"]) as p_a:
                so.wait_until(
                    {"two": (lambda: merged_events(two), PHASE1_FULL)},
                    90,
                    [(p_one, logs["one"]), (p_a, logs["two-a"])],
                )
                if leave == "sigkill":
                    # after the open windows' next checkpoint (every 5 s) and Faust's commit: b resumes the shards
                    # from their checkpoints (killed at once, b re-reads the partitions from their start)
                    time.sleep(8.0)
                    p_a.send_signal(signal.SIGKILL)
                    p_a.wait(10)
                with worker(env_b, mon, logs["two-b"]) as p_b:
                    wait_assigned(p_b, logs["two-b"], 1, "worker b", timeout=60)
                    traffic.phase(drift=True)
                    procs = [(p_one, logs["one"]), (p_b, logs["two-b"])]
                    if leave == "join":
                        procs.append((p_a, logs["two-a"]))
                    so.wait_until(
                        {"one": (lambda: merged_events(one), FULL), "two": (lambda: merged_events(two), FULL)},
                        150,
                        procs,
                    )
                    so.wait_until({"b": (lambda: len(so.models_started(logs["two-b"])), 1)}, 15, procs)
            elapsed = time.monotonic() - t0
        finally:
            traffic.close()
        text_b = logs["two-b"].read_text(errors="replace")
        assert "resuming hot v1" in text_b, (
            f"worker b should have resumed a shard from its checkpoint:\n{tail(logs['two-b'])}"
        )
        for name, log in logs.items():
            assert " ERROR " not in log.read_text(errors="replace"), f"{name}:\n{tail(log, 60)}"
        assert merged_events(one) == merged_events(two) == FULL  # every event in a merged window, once
        assert shard_events(one) == shard_events(two) == FULL
        got_one, got_two = points(one), points(two)
        by_measurement: dict[str, int] = {}
        for point in got_one:
            name = dict(point)["measurement"]
            by_measurement[name] = by_measurement.get(name, 0) + 1
        assert (
            by_measurement.get("dw_window") == FULL // WINDOW
            and by_measurement.get("dw_shard") == FULL // WINDOW * SHARDS
        )
        assert by_measurement.get("dw_drift", 0) >= FULL // WINDOW * len(NUMERIC + CATEGORICAL)
        missing, extra = got_one - got_two, got_two - got_one
        assert not missing and not extra, (
            f"{len(missing)} points only with one worker, {len(extra)} only with two; e.g. "
            f"{sorted(missing)[:2]} / {sorted(extra)[:2]}"
        )
        drift = query(one, 'SELECT "drift" FROM "dw_drift" WHERE "feature" = \'x0\' GROUP BY *')
        print(
            f"\nhot model: {SHARDS} shards, {FULL} events in merged windows, {len(got_one)} points equal "
            f"({dict(sorted(by_measurement.items()))}); x0 drift per window {[r.get('drift') for r in drift]}; "
            f"{elapsed:.1f} s with 3 workers ({leave})"
        )
