"""Labels of one hot model across workers, on the real local stack (tansu + InfluxDB 1.6).

One model with labels, the same bytes to two fresh topic sets:

* **flat**: the model unsharded (every event and label in its home partition), one worker;
* **sharded**: ``shards: 4``, every batch of events in one of its 4 shard partitions and each label in
  its prediction's partition; a worker starts alone and, once the first two merged windows and most of
  their labels are in, a second worker joins (shards with their label joins, and maybe the merge step
  with its label results, move to it) -- or, in the ``sigkill`` variant, the first is SIGKILLed and the
  second takes everything over from the checkpoints in Kafka.

Labels come a round behind their predictions, so some arrive after their window was written (a late
update of its realized point). Both runs must write the same realized performance points: every metric
of every window with its label counts and delays (floats to 10 significant digits: the log loss adds in
another order), except CBPE's estimate of the same rows (``cbpe_value``, ``estimation_error``), whose
calibration rows are the first joined in the merge owner's feed order (docs/scale-out.md). The error
stream tests as many labelled rows in both runs; its per-window split and statistic depend on the feed
order (printed, not compared). No worker logs an ERROR line.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import orjson
import pytest
import yaml

from streams.influx.sink import DatabaseNotFound, query
from streams.wire.contract import home_partition, shard_partitions
from tests.integration import test_scale_out as so
from tests.integration.test_hot_model import reference_csv
from tests.reliability.helpers import batch_doc, monitors_file, tail, wait_assigned, worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "hot"
SHARDS = 4
WINDOW = 2000  # 500 per shard
BATCH = 250  # a round: one batch per shard; shard window k = rounds 2k and 2k+1 = merged (and flat) window k
ROUNDS = 8
FULL = ROUNDS * BATCH * SHARDS  # 8000 events, 4 windows
BEFORE = 4 * BATCH * SHARDS  # the second worker comes after 2 windows
ORDER_DEPENDENT = ("cbpe_value", "estimation_error")


class LabelledTraffic:
    """Rounds of prediction batches with probabilities, and their labels, to both topic sets: ``flat`` all in the
    model's home partition, ``sharded`` batch by batch over its shard partitions (labels with their batch)."""

    def __init__(self, flat, sharded, seed: int = 11) -> None:
        from kafka import KafkaProducer

        self.flat, self.sharded = flat, sharded
        self.producers = {
            id(s): KafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=5, **s.kafka_client_options())
            for s in (flat, sharded)
        }
        self.rng = np.random.default_rng(seed)
        self.parts = shard_partitions(MODEL, SHARDS, sharded.topic_partitions)
        self.home = home_partition(MODEL, flat.topic_partitions)
        self.truth: dict[int, tuple[list, list, list]] = {}  # round -> per shard (ids, labels, times)

    def _send(self, s, topic: str, partition: int, doc: dict) -> None:
        self.producers[id(s)].send(topic, key=MODEL.encode(), value=orjson.dumps(doc), partition=partition)

    def predictions(self, r: int) -> None:
        labels = []
        for k, part in enumerate(self.parts):
            start = (r * SHARDS + k) * BATCH
            doc = batch_doc(MODEL, start, BATCH, self.rng)
            score = 1.0 / (1.0 + np.exp(-2.0 * np.asarray(doc["features"]["x1"])))
            doc["prediction"] = {
                "label": np.where(score > 0.5, "yes", "no").tolist(),
                "probabilities": {"yes": score.tolist(), "no": (1.0 - score).tolist()},
            }
            truth = np.where(self.rng.random(BATCH) < score, "yes", "no").tolist()
            times = (np.asarray(doc["event_time"]) + 5.0 + self.rng.uniform(0, 20, BATCH)).tolist()
            labels.append((doc["event_id"], truth, times))
            self._send(self.flat, self.flat.topic_inferences, self.home, doc)
            self._send(self.sharded, self.sharded.topic_inferences, part, doc)
        self.truth[r] = labels

    def labels(self, r: int) -> None:
        for (ids, truth, times), part in zip(self.truth[r], self.parts):
            doc = {
                "schema_version": 1,
                "type": "label_batch",
                "model_id": MODEL,
                "event_id": ids,
                "label": truth,
                "label_time": times,
            }
            self._send(self.flat, self.flat.topic_labels, self.home, doc)
            self._send(self.sharded, self.sharded.topic_labels, part, doc)

    def flush(self) -> None:
        for p in self.producers.values():
            p.flush(60)

    def close(self) -> None:
        for p in self.producers.values():
            p.close(10)


def monitors(tmp_path, ref: str, shards: int, name: str):
    path = monitors_file(tmp_path, [MODEL], window=WINDOW, idle=600.0, name=name)
    cfg = yaml.safe_load(path.read_text())
    model = cfg["models"][0]
    model["shards"] = shards
    model["reference"] = {"file": ref}
    model["window"].update(summary_bins=64, summary_reservoir=200)
    model["labels"] = {"ttl_seconds": 86_400}  # the error stream on (the default)
    path.write_text(yaml.safe_dump(cfg))
    return path


def labelled(s) -> int:
    """Labelled rows in the realized points (the newest accuracy point per window)."""
    try:
        rows = query(
            s, 'SELECT sum("n") AS n FROM "dw_performance" WHERE "metric" = \'accuracy\' AND "detector" = \'realized\''
        )
    except DatabaseNotFound:
        return 0
    return int(rows[0]["n"]) if rows else 0


def counters(s) -> dict:
    """The model's newest label-join counters (a sharded model's: the sum of its shards')."""
    try:
        rows = query(s, 'SELECT * FROM "dw_performance" WHERE "metric" = \'label_join\' ORDER BY time DESC LIMIT 1')
    except DatabaseNotFound:
        return {}
    return rows[0] if rows else {}


def realized(s) -> set[tuple]:
    """Every realized performance point (tags, time, fields), floats to 10 significant digits."""
    out = set()
    for point in so.all_points(s):
        d = dict(point)
        if d["measurement"] != "dw_performance" or d.get("detector") != "realized":
            continue
        out.add(
            tuple((k, float(f"{v:.10g}") if isinstance(v, float) else v) for k, v in point if k not in ORDER_DEPENDENT)
        )
    return out


def error_stream(s) -> dict[str, list]:
    try:
        rows = query(s, 'SELECT "n", "error_rate", "drift" FROM "dw_performance" WHERE "metric" = \'error_stream\'')
    except DatabaseNotFound:
        return {}
    return {k: [r.get(k) for r in rows] for k in ("time", "n", "error_rate", "drift")}


def count(s, where: str) -> int:
    try:
        rows = query(s, f'SELECT count("value") AS n FROM "dw_performance" WHERE {where}')
    except DatabaseNotFound:
        return 0
    return int(rows[0]["n"]) if rows else 0


@pytest.mark.parametrize("leave", ["join", "sigkill"])
def test_a_sharded_models_realized_performance_equals_the_unsharded_models(settings, settings_env, tmp_path, leave):
    assert settings.topic_partitions == SHARDS
    ref = reference_csv(tmp_path / "reference.csv")
    mons = {"flat": monitors(tmp_path, ref, 1, "flat.yaml"), "sharded": monitors(tmp_path, ref, SHARDS, "sharded.yaml")}
    sharded = settings
    with so.fresh(settings) as flat:
        traffic = LabelledTraffic(flat, sharded)
        logs = {n: tmp_path / f"{n}.log" for n in ("flat", "a", "b")}
        try:
            for r in range(4):  # two windows; labels a round behind
                traffic.predictions(r)
                if r:
                    traffic.labels(r - 1)
            traffic.flush()
            t0 = time.monotonic()
            env_b = so.env_for(settings_env, sharded, DRIFTWATCH_WORKER_WEB_PORT="0")
            with (
                worker(so.env_for(settings_env, flat), mons["flat"], logs["flat"]) as p_flat,
                worker(so.env_for(settings_env, sharded), mons["sharded"], logs["a"]) as p_a,
            ):
                procs = [(p_flat, logs["flat"]), (p_a, logs["a"])]
                so.wait_until(
                    {
                        "flat": (lambda: so.windowed(flat), BEFORE),
                        "sharded": (lambda: so.windowed(sharded), BEFORE),
                        "labels": (lambda: labelled(sharded), 3 * BATCH * SHARDS),
                    },
                    150,
                    procs,
                )
                if leave == "sigkill":
                    time.sleep(7.0)  # the label joins' next checkpoint (every 5 s) and Faust's commit
                    p_a.send_signal(signal.SIGKILL)
                    p_a.wait(10)
                    procs = [(p_flat, logs["flat"])]
                with worker(env_b, mons["sharded"], logs["b"]) as p_b:
                    wait_assigned(p_b, logs["b"], 1, "worker b", timeout=60)
                    procs.append((p_b, logs["b"]))
                    for r in range(4, ROUNDS):
                        traffic.predictions(r)
                        traffic.labels(r - 1)
                    traffic.labels(ROUNDS - 1)
                    traffic.flush()
                    so.wait_until(
                        {
                            "flat": (lambda: so.windowed(flat), FULL),
                            "sharded": (lambda: so.windowed(sharded), FULL),
                            "flat labels": (lambda: labelled(flat), FULL),
                            "sharded labels": (lambda: labelled(sharded), FULL),
                            "flat matched": (lambda: counters(flat).get("matched", 0), FULL),
                            "sharded matched": (lambda: counters(sharded).get("matched", 0), FULL),
                        },
                        180,
                        procs,
                    )
                    time.sleep(3.0)  # a rewrite of anything would come now
            elapsed = time.monotonic() - t0
        finally:
            traffic.close()
        for name, log in logs.items():
            assert " ERROR " not in log.read_text(errors="replace"), f"{name}:\n{tail(log, 60)}"
        text_b = logs["b"].read_text(errors="replace")
        assert "label join restored" in text_b, tail(logs["b"])  # shards' joins came from the changelog
        got_flat, got_sharded = realized(flat), realized(sharded)
        metrics = {dict(p)["metric"] for p in got_flat}
        assert {"accuracy", "f1", "log_loss"} <= metrics, metrics
        assert len(got_flat) == len(metrics) * FULL // WINDOW
        missing, extra = got_flat - got_sharded, got_sharded - got_flat
        assert not missing and not extra, (
            f"{len(missing)} realized points only unsharded, {len(extra)} only sharded; e.g. "
            f"{sorted(missing)[:2]} / {sorted(extra)[:2]}"
        )
        assert labelled(flat) == labelled(sharded) == FULL
        join = {run: counters(s) for run, s in (("flat", flat), ("sharded", sharded))}
        for k in ("predictions", "labels", "matched", "pending_predictions", "pending_labels", "expired"):
            assert join["flat"][k] == join["sharded"][k], (k, join)
        assert join["sharded"]["predictions"] == join["sharded"]["matched"] == FULL, join
        # CBPE calibrated from the joined labels at the merge owner: its estimates of the labelled rows, and
        # the error stream: as many labelled rows tested in both runs
        # (which windows get them depends on when the calibration rows were in: timing, in both runs)
        cbpe = {
            run: (
                count(s, '"metric" = \'accuracy\' AND "detector" = \'realized\' AND "cbpe_value" >= 0'),
                count(s, "\"metric\" = 'accuracy' AND \"detector\" = 'cbpe'"),
            )
            for run, s in (("flat", flat), ("sharded", sharded))
        }
        assert min(cbpe["flat"]) >= 1 and min(cbpe["sharded"]) >= 1, cbpe
        err = {"flat": error_stream(flat), "sharded": error_stream(sharded)}
        assert err["flat"]["n"] and sum(err["flat"]["n"]) == sum(err["sharded"]["n"]), err
        print(
            f"\nhot model with labels ({leave}): {len(got_flat)} realized points equal, {FULL} labels; windows with "
            f"CBPE (of the labelled rows, of the window) {cbpe}; error stream {err}; {elapsed:.1f} s"
        )
