"""What a worker restart keeps: the label join, store-sourced reference rows, and the online detectors.

Real broker, real InfluxDB, ``driftwatch worker`` as a child process (helpers of the
reliability suite), stopped with SIGTERM or SIGKILL and started again.

* **Label join** — predictions wait for their labels in the worker; they are checkpointed to
  the label-join changelog topic (``<consumer_group>-<topic_labels>-join-changelog``) every 5 s and at shutdown. The labels arrive only
  *after* the restart, and every one is matched: the realized-performance points count them
  all (a worker without the snapshot would count none: the predictions' offsets were
  committed with their windows, so Kafka does not deliver them again).
* **Reference rows** — a ``first_n`` reference read back from the references topic after a
  restart carries its rows (sensitive features left out), so the adversarial, impact,
  prediction-drift and multivariate points keep coming.
* Along the way: ``drift.online`` writes ``dw_drift`` points with ``detector="cvm_online"``
  and ``labels.online`` writes ``dw_performance`` points with ``detector="fet_online"``.
"""

from __future__ import annotations

import asyncio
import signal
import time

import numpy as np
import orjson
import pytest
import yaml
from sklearn.metrics import accuracy_score

from detectors import records as R
from streams.influx.sink import DatabaseNotFound, InfluxQueryError, query
from streams.worker.label_changelog import LabelChangelog
from streams.worker.labels import read_checkpoints
from tests.reliability.helpers import NUMERIC, T0, Traffic, monitors_file, start_worker, stop, tail, wait_for, windowed

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # each test runs workers for 30-100 s


def rows(settings, q: str) -> list[dict]:
    try:
        return query(settings, q)
    except (DatabaseNotFound, InfluxQueryError):
        return []


def send_labels(traffic: Traffic, model: str, ids: list[str], labels: list[str]) -> None:
    doc = {
        "schema_version": 1,
        "type": "label_batch",
        "model_id": model,
        "event_id": ids,
        "label": labels,
        "label_time": [T0 + 3600.0] * len(ids),
    }
    traffic.producer.send(traffic.settings.topic_labels, key=model.encode(), value=orjson.dumps(doc))
    traffic.flush()


def checkpointed(settings) -> dict[str, int]:
    """Predictions waiting per model in the newest label-join checkpoints on the broker."""

    async def read():
        store = LabelChangelog(settings)
        try:
            return await read_checkpoints(store, range(settings.topic_partitions))
        finally:
            await store.close()

    return {m: c["pending_predictions"] for m, c in asyncio.run(read()).items()}


def predicted(traffic_seed: int, model: str, batches: list[int]) -> list[str]:
    """The labels the traffic generator predicted (yes if x1 > 0), re-drawn with the same generator."""
    from tests.reliability.helpers import batch_doc

    rng = np.random.default_rng(traffic_seed)
    out, start = [], 0
    for n in batches:
        out += batch_doc(model, start, n, rng)["prediction"]["label"]
        start += n
    return out


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_predictions_waiting_for_labels_survive_a_restart(settings, settings_env, tmp_path, how):
    online = {"features": ["x0"], "ert": 2000, "window_sizes": [20, 50], "n_bootstraps": 3000}
    labels = {
        "ttl_seconds": 86_400,
        "online": {"reference_size": 300, "ert": 2000, "window_sizes": [20], "n_bootstraps": 2000},
    }
    features = [{"name": n, "kind": "numeric"} for n in NUMERIC]
    mon = monitors_file(tmp_path, ["m"], window=500, first_n=500, idle=600.0, features=features)
    cfg = yaml.safe_load(mon.read_text())
    cfg["models"][0]["drift"]["online"] = online
    cfg["models"][0]["labels"] = labels
    mon.write_text(yaml.safe_dump(cfg))
    traffic = Traffic(settings, seed=3)
    log1, log2 = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    proc = start_worker(settings_env, mon, log1)
    try:
        for _ in range(3):  # the first 500 build the reference (and are a window without drift tests), then two
            traffic.send("m", 500)
        traffic.flush()
        wait_for(lambda: windowed(settings) == 1500, 120, "three windows written", [proc], log1)
        # the snapshot (every 5 s) holds all 1500 predictions waiting for labels
        wait_for(lambda: checkpointed(settings).get("m") == 1500, 30, "a checkpoint of 1500 predictions", [proc], log1)
        # the online thresholds are calibrated on a thread and cached (seconds; longer on a busy machine):
        # the restart below is meant to find them on disk
        cache = settings.state_dir / "cache" / "online"
        wait_for(lambda: len(list(cache.glob("cvm-*.npz"))) == 1, 180, "the online thresholds cached", [proc], log1)
        t_kill = time.monotonic()
        if how == "sigkill":
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        else:
            assert stop(proc, timeout=30) == 0, tail(log1)
        assert checkpointed(settings)["m"] == 1500
    finally:
        stop(proc)
    # online drift: calibrated on a thread while the windows closed (their events waited in its buffer),
    # cached in the state dir: the restarted worker loads the thresholds instead of calibrating again
    assert len(list(cache.glob("cvm-*.npz"))) == 1

    proc = start_worker(settings_env, mon, log2)
    try:
        truth = predicted(3, "m", [500, 500, 500])
        flip = np.random.default_rng(0).random(1500) < 0.1
        truth = [("no" if t == "yes" else "yes") if f else t for t, f in zip(truth, flip)]
        send_labels(traffic, "m", [f"m-{i}" for i in range(1500)], truth)

        def counted():
            got = rows(
                settings,
                f'SELECT sum("n") AS n FROM "{R.PERFORMANCE}" WHERE "metric" = \'accuracy\' '
                f"AND \"detector\" = 'realized'",
            )
            return got[0]["n"] if got else 0

        # each label's result is written within about a second (a timer), on the window of its prediction:
        # no next window is needed (no traffic is sent meanwhile)
        wait_for(lambda: counted() == 1500, 60, "realized accuracy over 1500 labels", [proc], log2)
        acc = rows(settings, f'SELECT "value", "n" FROM "{R.PERFORMANCE}" WHERE "metric" = \'accuracy\'')
        assert [a["n"] for a in acc] == [500, 500, 500]  # every label joined, on its prediction's window
        pred = predicted(3, "m", [500, 500, 500])
        for k, a in enumerate(acc):
            assert a["value"] == pytest.approx(
                accuracy_score(truth[500 * k : 500 * (k + 1)], pred[500 * k : 500 * (k + 1)])
            )
        join = rows(
            settings, f'SELECT * FROM "{R.PERFORMANCE}" WHERE "metric" = \'label_join\' ORDER BY time DESC LIMIT 1'
        )[0]
        assert join["duplicate_predictions"] == 0 and join["late_labels"] == 0 and join["unmatched_labels"] == 0

        # the error stream: reference = the first 300 joined labels' errors; calibrated on a thread
        # meanwhile (the other 200 of the first window wait in its buffer; the later windows' rows wait
        # in the label results until it is ready, so they are tested in order, window by window)
        def fet():
            return sorted(
                (
                    r
                    for r in rows(settings, f'SELECT * FROM "{R.PERFORMANCE}" WHERE "detector" = \'fet_online\'')
                    if r["phase"] == "monitoring"
                ),
                key=lambda r: r["time"],
            )

        wait_for(lambda: len(fet()) == 3, 180, "the error stream tested on all three windows", [proc], log2)
        got = fet()
        assert [r["n"] for r in got] == [200, 500, 500], got
        assert all(r["n_ref"] == 300 for r in got)
        assert got[0]["reference_error_rate"] == pytest.approx(np.mean(flip[:300]))
        for r, part in zip(got, (flip[300:500], flip[500:1000], flip[1000:])):
            assert r["error_rate"] == pytest.approx(np.mean(part))

        # the online drift detectors go on from where they were: more windows, until two points are in
        def cvm() -> int:
            return len(rows(settings, f'SELECT * FROM "{R.DRIFT}" WHERE "detector" = \'cvm_online\''))

        deadline = time.monotonic() + 120
        while cvm() < 2 and time.monotonic() < deadline and proc.poll() is None:
            before = windowed(settings)
            traffic.send("m", 500)
            traffic.flush()
            wait_for(lambda before=before: windowed(settings) > before, 60, "a window after the restart", [proc], log2)
        online_pts = rows(settings, f'SELECT * FROM "{R.DRIFT}" WHERE "detector" = \'cvm_online\'')
        n_windows = len(rows(settings, f'SELECT "n_events" FROM "{R.WINDOW}"')) - 3
        # every event after the restart tested once, in order: the windows that closed while the thresholds
        # loaded waited in the buffer and were tested together, then one point per window; a new run
        # started at the restart
        online_pts.sort(key=lambda r: r["time"])
        assert {r["feature"] for r in online_pts} == {"x0"} and len(online_pts) >= 2, online_pts
        # every event after the restart tested once: the windows that closed while the thresholds loaded waited
        # in the buffer and were tested together, then one point per window. The 1000 events the first worker
        # buffered while it calibrated are tested at most once: by it (its calibration finished before the
        # stop), after the restart (restored with its state), or not at all (a new run) — which one depends on
        # timing, so each is accepted; none may be tested twice
        assert [r["n"] for r in online_pts[1:]] == [500] * (len(online_pts) - 1), online_pts
        assert sum(r["n"] for r in online_pts) in (500 * n_windows, 500 * (n_windows + 2)), online_pts
    finally:
        stop(proc)
    text = log2.read_text(errors="replace")
    assert "m: label join restored" in text and "1500 predictions" in text, tail(log2)
    print(f"{how}: restart to last window {time.monotonic() - t_kill:.1f} s")


def test_row_based_evaluators_keep_running_on_a_stored_reference_after_a_restart(settings, settings_env, tmp_path):
    from streams.worker.references import ReferenceStore, rows_info

    features = [{"name": n, "kind": "numeric"} for n in NUMERIC[:3]]
    features += [
        {"name": "x3", "kind": "numeric", "sensitive": True},
        {"name": "c0", "kind": "categorical"},
        {"name": "c1", "kind": "categorical"},
    ]
    mon = monitors_file(tmp_path, ["m"], window=500, first_n=500, idle=600.0, features=features)
    cfg = yaml.safe_load(mon.read_text())
    cfg["models"][0]["drift"]["multivariate"] = "pca"
    # every window writes the impacts, so the ones after the restart show they come from the stored rows
    cfg["models"][0].setdefault("window", {})["reference_points_every"] = 1
    mon.write_text(yaml.safe_dump(cfg))
    traffic = Traffic(settings, seed=4)
    log1, log2 = tmp_path / "worker-1.log", tmp_path / "worker-2.log"

    def points(measurement: str, extra: str = "") -> list[dict]:
        return rows(settings, f'SELECT * FROM "{measurement}"{extra}')

    def multivariate() -> list[dict]:
        return points(R.DRIFT, " WHERE \"feature\" = '__multivariate__'")

    proc = start_worker(settings_env, mon, log1)
    try:
        for _ in range(3):
            traffic.send("m", 500)
        traffic.flush()
        wait_for(lambda: windowed(settings) == 1500, 120, "three windows written", [proc], log1)
        wait_for(lambda: len(points(R.ADVERSARIAL)) == 2, 60, "adversarial points of both windows", [proc], log1)
    finally:
        assert stop(proc, timeout=30) == 0, tail(log1)
    first = {m: len(points(m)) for m in (R.ADVERSARIAL, R.IMPACT, R.PREDICTION)}
    assert all(first.values()) and len(multivariate()) == 2, (first, tail(log1))

    async def stored():
        store = ReferenceStore(settings)
        try:
            return (await store.load())[("m", "1")]
        finally:
            await store.close()

    ref = asyncio.run(stored())
    info = rows_info(ref.rows_blob)
    assert info["n"] == 500 and info["withheld"] == ["x3"] and "x3" not in info["numeric"]

    last_before = max(r["time"] for r in points(R.WINDOW))
    proc = start_worker(settings_env, mon, log2)
    try:
        for _ in range(2):
            traffic.send("m", 500)
        traffic.flush()
        wait_for(lambda: windowed(settings) == 2500, 120, "two more windows after the restart", [proc], log2)
        wait_for(lambda: len(points(R.ADVERSARIAL)) == 4, 60, "adversarial points after the restart", [proc], log2)
    finally:
        stop(proc)
    text = log2.read_text(errors="replace")
    assert "resuming m v1" in text and "stored reference" in text, tail(log2)
    for m in (R.ADVERSARIAL, R.IMPACT, R.PREDICTION):
        later = [r for r in points(m) if r["time"] > last_before]
        assert later, f"no {m} point after the restart; log:\n{tail(log2)}"
    later_mv = [r for r in multivariate() if r["time"] > last_before]
    assert len(later_mv) == 2
    impact = {r["feature"] for r in points(R.IMPACT) if r["time"] > last_before}
    assert impact == {"x0", "x1", "x2", "c0", "c1"}  # the sensitive x3 is not in the stored rows
