"""A file reference with the model's outputs and labels, through the real worker (issue 13, parts 3-4).

``driftwatch demo`` (wine, 400 events/s paced, every event labelled a second later) → Kafka →
``driftwatch worker --monitors streams/devstack/examples/demo.yaml`` → InfluxDB. First stationary traffic, then
traffic whose inputs are shifted by 1.5 sd. The demo's reference file declares its prediction,
probability and label columns, so from the first window: prediction drift runs (quiet, then flagged),
feature impact is written, CBPE is calibrated on the file's 1000 labelled rows (a value and a band,
never "not calibrated"), and the realized accuracy points carry CBPE's estimate of the same labelled
rows and the estimation error: small on stationary traffic; large after the shift, because the demo
keeps each row's true class while its inputs move (for the model, P(y|x) changed), which no
confidence-based estimate can see and the estimation error shows.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from detectors import records as R
from streams.influx.sink import database, query
from streams.lifetime import die_with_parent

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # each test runs workers for 30-100 s

RATE = 400


def test_file_reference_outputs_give_prediction_drift_impact_and_calibrated_cbpe(
    settings, settings_env, tmp_path
) -> None:
    from streams.devstack.demo import DemoOptions, run_demo
    from streams.devstack.models import EXAMPLES_DIR

    def demo(seed: int, events: int, drift: bool):
        return DemoOptions(
            models=["wine"],
            rate=RATE,
            events=events,
            pace=True,
            seed=seed,
            label_fraction=1.0,
            label_delay=1.0,
            drift_at=0.0 if drift else None,
            drift_shift=1.5,
            create_topics=False,
            progress_every=0,
        )

    log = tmp_path / "worker.log"
    env = {**settings_env, "DRIFTWATCH_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--monitors", str(EXAMPLES_DIR / "demo.yaml")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )
    db = database(settings)

    def q(text):
        try:
            return query(settings, text, db=db)
        except Exception:  # the database appears with the first write
            return []

    def realized():
        return q(f'SELECT * FROM "{R.PERFORMANCE}" WHERE "detector" = \'realized\' AND "metric" = \'accuracy\'')

    def wait(cond, seconds: float, what: str):
        deadline = time.monotonic() + seconds
        while not cond():
            assert proc.poll() is None, f"worker exited: {log.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, f"{what}; worker log:\n{log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.5)

    try:
        wait(lambda: "[^Worker]: Ready" in log.read_text(errors="replace"), 90, "the worker did not start")
        time.sleep(3.0)  # the group join

        # stationary traffic (chunks of 1000 events) until labels have been reported and enough quiet windows
        # are there to judge prediction drift's false alarms on
        def quiet_windows() -> int:
            return len(q(f'SELECT "drift" FROM "{R.PREDICTION}" WHERE "feature" = \'__all__\''))

        for seed in range(20, 32):
            assert run_demo(settings, demo(seed, 1000, drift=False)).delivered
            if len([r for r in realized() if r.get("estimation_error") is not None]) >= 2 and quiet_windows() >= 5:
                break
        wait(
            lambda: len([r for r in realized() if r.get("estimation_error") is not None]) >= 2,
            60,
            "no realized accuracy with an estimate on stationary traffic",
        )
        t_switch = time.time()
        for seed in range(40, 50):  # shifted traffic, until its labels have been reported a few times
            assert run_demo(settings, demo(seed, 2000, drift=True)).delivered
            if (
                len(
                    [
                        r
                        for r in realized()
                        if r["time"] >= (t_switch + 5) * 1e9 and r.get("estimation_error") is not None
                    ]
                )
                >= 3
                and seed >= 43
            ):
                break
        cbpe = q(f'SELECT * FROM "{R.PERFORMANCE}" WHERE "detector" = \'cbpe\' AND "metric" = \'accuracy\'')
        real = realized()
        status = q(f'SELECT * FROM "{R.STATUS}"')
        summary = q(f'SELECT "drift" FROM "{R.PREDICTION}" WHERE "feature" = \'__all__\'')
        impact = q(f'SELECT * FROM "{R.IMPACT}"')
    finally:
        proc.terminate()
        try:  # a worker that joined labels may still finish the error-stream calibration thread (~1 min)
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    sw, settle = t_switch * 1e9, (t_switch + 5) * 1e9
    assert len(cbpe) >= 12
    assert all(
        r.get("calibrated") is True and r.get("value") is not None and r.get("calibration_n") == 1000 for r in cbpe
    ), cbpe[:2]
    assert all(r["lower"] <= r["value"] <= r["upper"] for r in cbpe)
    assert {r["detector"] for r in status} == {"prediction_drift", "feature_impact", "estimated_performance"}
    assert all(r["computed"] == 1 for r in status), [r for r in status if r["computed"] != 1][:3]
    quiet = [int(r["drift"]) for r in summary if r["time"] < sw]
    moved = [int(r["drift"]) for r in summary if r["time"] >= settle]
    # stationary windows flag at the test's level (p 0.05, Bonferroni over the outputs), shifted ones always
    assert len(quiet) >= 5 and np.mean(quiet) <= 0.2 and len(moved) >= 8 and all(moved), (quiet, moved)
    assert {r["feature"] for r in impact} >= {"alcohol", "proline", "color_shade"}
    for r in real:
        if r.get("estimation_error") is not None:
            assert abs(abs(r["cbpe_value"] - r["value"]) - r["estimation_error"]) < 1e-9
    pre = [r["estimation_error"] for r in real if r["time"] < sw and r.get("estimation_error") is not None]
    post = [r for r in real if r["time"] >= settle and r.get("estimation_error") is not None]
    print(
        f"CBPE {[round(r['value'], 3) for r in cbpe]}; realized {[round(r['value'], 3) for r in real]}; "
        f"estimation error on stationary traffic {[round(e, 4) for e in pre]}, after the shift "
        f"{[round(r['estimation_error'], 4) for r in post]}"
    )
    assert pre and np.mean(pre) <= 0.03, pre
    assert len(post) >= 3 and post[-1]["estimation_error"] > 0.05, post
    lower = {r["time"]: r["lower"] for r in cbpe}
    assert all(r["value"] < lower[r["time"]] for r in post if r["time"] in lower and r["estimation_error"] > 0.1)
