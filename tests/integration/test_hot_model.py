"""One hot model across workers, on the real local stack (tansu + InfluxDB 1.6).

One model, ``shards: 4``, its events spread over the 4 partitions of the inferences topic (as the
SDK's ``shards=`` does). Every shard's worker publishes partial window summaries to the group's
partials topic; the model's merge owner combines the four partials of each window and tests it.
The same bytes, to the same partitions, go to two fresh topic sets:

* run **one**: a single worker is every shard and the merge owner;
* run **two**: a worker starts alone and, once every shard has three windows published and half of
  the next open, a second worker joins: the rebalance moves shards (with their open partial
  windows, from the window changelog) and maybe the merge step to it. The rest follows.

The model has an alert rule on ``x0``'s KS p-value, evaluated by the merge step: the traffic is clean,
drifted, clean again (one phase each), so the alert fires once (window 1 or 2, before the take-over)
and resolves once (window 3, after it). A webhook receiver per run must get exactly that firing and
that resolve, the same in both runs (same window ends, same idempotency keys); in the ``sigkill``
variant worker b resolves an alert worker a fired, from the merge step's alert state in Kafka.

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
from tests.streams.alerts.helpers import SECRET, SECRET_ENV
from tests.streams.alerts.receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "hot"
SHARDS = 4
WINDOW = 2000  # 500 per shard
BATCH = 250
PHASE = 3  # batches per shard and phase: 750 = one shard window + 250 open
DRIFT = [False, True, False]  # per phase: the alert fires in phase 2's windows and resolves in phase 3's
FULL = len(DRIFT) * PHASE * BATCH * SHARDS // WINDOW * WINDOW  # events in merged windows at the end (8000)
BEFORE = 2 * PHASE * BATCH * SHARDS // WINDOW * WINDOW  # merged before the second worker comes (6000)
RULE = {
    "name": "x0_drift",
    "signal": "drift.p_value",
    "where": {"feature": "x0", "detector": "ks"},
    "op": "<",
    "threshold": 1e-6,
}


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
    them in other groups than one that ran through — and differ in the last bits (detectors/summaries.py).
    Deliveries (``dw_delivery``) are compared as what was delivered where: their times and latencies are the
    wall clock's."""
    out = set()
    for point in so.all_points(s):
        d = dict(point)
        if d["measurement"] == "dw_delivery":
            point = tuple((k, d[k]) for k in ("measurement", "endpoint", "event", "idempotency_key", "status"))
        out.add(tuple((k, float(f"{v:.10g}") if isinstance(v, float) else v) for k, v in point))
    return out


def monitors(tmp_path, ref: str, receiver, name: str):
    """The hot model's config with the alert rule, delivering to ``receiver`` (one per run)."""
    import yaml

    hook = {
        "name": "receiver",
        "url": receiver.url,
        "secret_env": SECRET_ENV,
        "backoff_initial_seconds": 0.2,
        "backoff_max_seconds": 1,
    }
    path = monitors_file(tmp_path, [MODEL], window=WINDOW, idle=600.0, extra={"webhooks": [hook]}, name=name)
    cfg = yaml.safe_load(path.read_text())
    model = cfg["models"][0]
    model["shards"] = SHARDS
    model["reference"] = {"file": ref}
    model["window"].update(summary_bins=64, summary_reservoir=200)
    model["alerts"] = [RULE]
    path.write_text(yaml.safe_dump(cfg))
    return path


def announcements(receiver) -> list[tuple[str, str, str]]:
    """(window end, status, idempotency key) of every webhook delivery, in arrival order."""
    out = []
    for q in receiver.requests:
        body = orjson.loads(q.body)
        assert body["model"] == MODEL and q.headers.get("idempotency-key") == body["id"]
        out.append((body["window_end"], body["status"], body["id"]))
    return out


@pytest.mark.parametrize("leave", ["join", "sigkill"])
def test_one_hot_model_on_four_partitions_two_workers_write_the_same_points_as_one(
    settings, settings_env, tmp_path, leave
):
    """``join``: worker b joins worker a (shards and maybe the merge step move to b). ``sigkill``: worker a
    is killed with SIGKILL after the alert fired, worker b then starts alone and takes every shard and the
    merge step (with its alert state) over from the checkpoints and the un-acked partials."""
    assert settings.topic_partitions == SHARDS
    ref = reference_csv(tmp_path / "reference.csv")
    receivers = {"one": Receiver().start(), "two": Receiver().start()}
    mons = {run: monitors(tmp_path, ref, r, f"monitors-{run}.yaml") for run, r in receivers.items()}
    two = settings
    try:
        with so.fresh(settings) as one:
            traffic = ShardTraffic([one, two], seed=5)
            try:
                traffic.phase(drift=DRIFT[0])
                traffic.phase(drift=DRIFT[1])
                logs = {n: tmp_path / f"{n}.log" for n in ("one", "two-a", "two-b")}
                env_one = {**so.env_for(settings_env, one), SECRET_ENV: SECRET}
                env_a = {**so.env_for(settings_env, two), SECRET_ENV: SECRET}
                env_b = {**so.env_for(settings_env, two, DRIFTWATCH_WORKER_WEB_PORT="0"), SECRET_ENV: SECRET}
                t0 = time.monotonic()
                with (
                    worker(env_one, mons["one"], logs["one"]) as p_one,
                    worker(env_a, mons["two"], logs["two-a"]) as p_a,
                ):
                    so.wait_until(
                        {"two": (lambda: merged_events(two), BEFORE)},
                        120,
                        [(p_one, logs["one"]), (p_a, logs["two-a"])],
                    )
                    # the alert fired in worker a's merged windows before b comes
                    assert receivers["two"].wait_for(1, 30), tail(logs["two-a"])
                    if leave == "sigkill":
                        # after the open windows' next checkpoint (every 5 s) and Faust's commit: b resumes the shards
                        # from their checkpoints (killed at once, b re-reads the partitions from their start)
                        time.sleep(8.0)
                        p_a.send_signal(signal.SIGKILL)
                        p_a.wait(10)
                    with worker(env_b, mons["two"], logs["two-b"]) as p_b:
                        wait_assigned(p_b, logs["two-b"], 1, "worker b", timeout=60)
                        traffic.phase(drift=DRIFT[2])
                        procs = [(p_one, logs["one"]), (p_b, logs["two-b"])]
                        if leave == "join":
                            procs.append((p_a, logs["two-a"]))
                        so.wait_until(
                            {"one": (lambda: merged_events(one), FULL), "two": (lambda: merged_events(two), FULL)},
                            150,
                            procs,
                        )
                        so.wait_until({"b": (lambda: len(so.models_started(logs["two-b"])), 1)}, 15, procs)
                        for run, r in receivers.items():  # the resolve, delivered
                            assert r.wait_for(2, 30), (run, announcements(r))
                        time.sleep(3.0)  # a second delivery of anything would come now
                elapsed = time.monotonic() - t0
            finally:
                traffic.close()
            text_b = logs["two-b"].read_text(errors="replace")
            assert "resuming hot v1" in text_b, (
                f"worker b should have resumed a shard from its checkpoint:\n{tail(logs['two-b'])}"
            )
            for name, log in logs.items():
                assert " ERROR " not in log.read_text(errors="replace"), f"{name}:\n{tail(log, 60)}"
            # one firing (before the take-over) and one resolve (after it), the same in both runs
            got = {run: announcements(r) for run, r in receivers.items()}
            assert [status for _, status, _ in got["one"]] == ["firing", "resolved"], got
            assert got["two"] == got["one"], got
            if leave == "sigkill":  # b resolved what a fired: the merge step's alert state came from Kafka
                assert "alert state of partials partition" in text_b, tail(logs["two-b"])
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
            assert by_measurement.get("dw_alert", 0) >= 2  # the firing window(s) and the resolving one
            assert by_measurement.get("dw_delivery", 0) >= 4  # firing and resolve, to the receiver and the topic
            missing, extra = got_one - got_two, got_two - got_one
            assert not missing and not extra, (
                f"{len(missing)} points only with one worker, {len(extra)} only with two; e.g. "
                f"{sorted(missing)[:2]} / {sorted(extra)[:2]}"
            )
            drift = query(one, 'SELECT "drift" FROM "dw_drift" WHERE "feature" = \'x0\' GROUP BY *')
            print(
                f"\nhot model: {SHARDS} shards, {FULL} events in merged windows, {len(got_one)} points equal "
                f"({dict(sorted(by_measurement.items()))}); x0 drift per window {[r.get('drift') for r in drift]}; "
                f"alerts {[(e, st) for e, st, _ in got['one']]}; {elapsed:.1f} s with 3 workers ({leave})"
            )
    finally:
        for r in receivers.values():
            r.stop()
