"""A file reference with the model's outputs and labels, through the real worker (issue 13, parts 3-4).

``driftwatch demo`` (wine, 400 events/s paced; every event labelled a second later; inputs shifted by
1.5 sd from 7.5 s) → Kafka → ``driftwatch worker --monitors streams/examples/demo.yaml`` → InfluxDB. The demo's
reference file declares its prediction, probability and label columns, so from the first window:
prediction drift runs (quiet before the shift, flagged after), feature impact is written, CBPE is
calibrated on the file's 1000 labelled rows (a value and a band, never "not calibrated"), and the
realized accuracy points carry CBPE's estimate of the same labelled rows and the estimation error.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from detectors import records as R
from streams.sinks.influx import database, query

pytestmark = pytest.mark.integration


def test_file_reference_outputs_give_prediction_drift_impact_and_calibrated_cbpe(settings, settings_env,
                                                                                  tmp_path) -> None:
    from streams.demo import EXAMPLES_DIR, DemoOptions, run_demo

    # paced, after the worker is ready: labels arrive a second after their events, as windows close
    # (a backlog read at once would join them after the last window, which reports nothing yet)
    opts = DemoOptions(models=["wine"], rate=400, events=6000, pace=True, seed=5, label_fraction=1.0,
                       label_delay=1.0, drift_at=7.5, drift_shift=1.5, create_topics=False, progress_every=0)
    log = tmp_path / "worker.log"
    env = {**settings_env, "DRIFTWATCH_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--monitors",
                                 str(EXAMPLES_DIR / "demo.yaml")], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while "[^Worker]: Ready" not in log.read_text(errors="replace") and time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited: {log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.5)
    time.sleep(3.0)  # the group join
    assert run_demo(settings, opts).delivered
    db = database(settings)

    def q(text):
        try:
            return query(settings, text, db=db)
        except Exception:  # noqa: BLE001 - the database appears with the first write
            return []

    try:
        deadline = time.monotonic() + 180
        cbpe: list = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"worker exited: {log.read_text(errors='replace')[-3000:]}"
            cbpe = q(f'SELECT * FROM "{R.PERFORMANCE}" WHERE "detector" = \'cbpe\' AND "metric" = \'accuracy\'')
            if len(cbpe) >= 12:
                break
            time.sleep(1.0)
        time.sleep(3.0)  # the last windows' label points
        cbpe = q(f'SELECT * FROM "{R.PERFORMANCE}" WHERE "detector" = \'cbpe\' AND "metric" = \'accuracy\'')
        realized = q(f'SELECT * FROM "{R.PERFORMANCE}" WHERE "detector" = \'realized\' AND "metric" = \'accuracy\'')
        status = q(f'SELECT * FROM "{R.STATUS}"')
        summary = q(f'SELECT "drift" FROM "{R.PREDICTION}" WHERE "feature" = \'__all__\'')
        impact = q(f'SELECT * FROM "{R.IMPACT}"')
        perf_all = q(f'SELECT * FROM "{R.PERFORMANCE}"')
    finally:
        proc.terminate()
        try:  # a worker that joined labels may still finish the error-stream calibration thread (~1 min)
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    tail = log.read_text(errors="replace")[-3000:]
    assert len(cbpe) >= 12, f"only {len(cbpe)} CBPE points; worker log:\n{tail}"
    assert all(r.get("calibrated") is True and r.get("value") is not None and r.get("calibration_n") == 1000
               for r in cbpe), cbpe[:2]
    assert all(r["lower"] <= r["value"] <= r["upper"] for r in cbpe)
    assert {r["detector"] for r in status} == {"prediction_drift", "feature_impact", "estimated_performance"}
    assert all(r["computed"] == 1 for r in status), [r for r in status if r["computed"] != 1][:3]
    drift = [int(r["drift"]) for r in summary]
    assert len(drift) >= 12 and not any(drift[:5]) and all(drift[7:]), drift  # shift from window 7 (7.5 s)
    assert {r["feature"] for r in impact} >= {"alcohol", "proline", "color_shade"}
    for r in realized:
        if r.get("estimation_error") is not None:
            assert abs(abs(r["cbpe_value"] - r["value"]) - r["estimation_error"]) < 1e-9
    # before the shift CBPE matches the realized accuracy of the labelled rows; after it, the demo keeps each
    # row's true class while its inputs move (P(y|x) changes for the model), which no confidence-based estimate
    # can see: realized accuracy falls below the estimate's band and the estimation error shows it
    pre = [r for r in realized if r["time"] <= cbpe[4]["time"] and r.get("estimation_error") is not None]
    post = [r for r in realized if r["time"] >= cbpe[8]["time"] and r.get("estimation_error") is not None]
    print(f"CBPE {[round(r['value'], 3) for r in cbpe]}; realized {[round(r['value'], 3) for r in realized]}; "
          f"estimation error before the shift {[round(r['estimation_error'], 4) for r in pre]}, "
          f"after {[round(r['estimation_error'], 4) for r in post]}")
    assert pre and np.mean([r["estimation_error"] for r in pre]) <= 0.03, (pre, realized)
    assert len(post) >= 2 and post[-1]["estimation_error"] > 0.05, (post, realized)  # (the first may mix both)
    lower = {r["time"]: r["lower"] for r in cbpe}
    assert all(r["value"] < lower[r["time"]] for r in post if r["time"] in lower and r["estimation_error"] > 0.1)
