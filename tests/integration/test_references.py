"""File references as users write them, through the real worker on the local stack.

A ``.csv.gz`` reference written by pandas (booleans as ``True``/``False``) once passed
``check-config`` and then failed in the worker, which ran without drift tests; and a
boolean feature drifted with p = 0 in every window because the reference said ``True``
where events say ``true``. Here the worker must drift-test every window against the
gzipped reference, flag the feature that moved, and leave the boolean one alone.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import yaml

from streams.cli import main
from streams.influx.sink import query
from tests.reliability.helpers import T0, wait_for, windowed, worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # each test runs workers for 30-100 s

MODEL = "gzref"
WINDOW = 500


def rows(rng: np.random.Generator, n: int, drift: bool = False) -> dict[str, np.ndarray]:
    return {
        "x0": rng.normal(1.0 if drift else 0.0, 1.0, n),
        "x1": rng.normal(0.0, 1.0, n),
        "flag": rng.random(n) < 0.3,
        "plan": np.array(["free", "pro", "team"])[rng.integers(0, 3, n)],
    }


def batch(start: int, cols: dict[str, np.ndarray]) -> bytes:
    n = len(cols["x0"])
    return orjson.dumps(
        {
            "schema_version": 1,
            "type": "inference_batch",
            "model_id": MODEL,
            "model_version": "1",
            "event_id": [f"e{i}" for i in range(start, start + n)],
            "event_time": (T0 + np.arange(start, start + n) * 0.01).tolist(),
            "features": {
                **{k: v.tolist() for k, v in cols.items()},  # flag: JSON true/false
                "note": ["vip"] * n,
            },  # not declared: counted and named, not dropped
            "prediction": {"label": ["yes" if v > 0 else "no" for v in cols["x1"]]},
        }
    )


def test_worker_drift_tests_every_window_against_a_gzipped_pandas_reference(settings, settings_env, tmp_path, capsys):
    import pandas as pd
    from kafka import KafkaProducer

    rng = np.random.default_rng(11)
    pd.DataFrame(rows(rng, 3000)).to_csv(tmp_path / "reference.csv.gz", index=False)
    cfg = {
        "models": [
            {
                "model_id": MODEL,
                "features": [
                    {"name": "x0", "kind": "numeric"},
                    {"name": "x1", "kind": "numeric"},
                    {"name": "flag", "kind": "boolean"},
                    {"name": "plan", "kind": "categorical"},
                ],
                "window": {"size_events": WINDOW, "idle_close_seconds": 2.0},
                "reference": {"file": "reference.csv.gz"},
                "drift": {"p_val": 0.001, "correction": "bonferroni"},
            }
        ]
    }
    mon = tmp_path / "monitors.yaml"
    mon.write_text(yaml.safe_dump(cfg))
    assert main(["check-config", str(mon)]) == 0, capsys.readouterr().err
    assert "reference reference.csv.gz: 3000 rows" in capsys.readouterr().out

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_options())
    sent = 0
    for w in range(6):  # 4 stationary windows, then 2 where x0 moved by one sd
        producer.send(settings.topic_inferences, key=MODEL.encode(), value=batch(sent, rows(rng, WINDOW, w >= 4)))
        sent += WINDOW
    producer.flush(30)
    producer.close(10)

    log = tmp_path / "worker.log"
    with worker(settings_env, mon, log) as proc:
        wait_for(
            lambda: True if windowed(settings) == sent else windowed(settings),
            120,
            "every event in a window",
            [proc],
            log,
        )
    assert "reference file cannot be used" not in log.read_text()
    wins = query(settings, 'SELECT "n_events", "drift_evaluated" FROM "dw_window"')
    assert len(wins) == 6 and all(w["drift_evaluated"] for w in wins), wins
    drift = query(
        settings, 'SELECT "drift", "p_value", "feature" FROM "dw_drift" WHERE "segment" = \'\' OR "segment" = \'all\''
    )
    by_feature: dict[str, list] = {}
    for r in sorted(drift, key=lambda r: r["time"]):
        by_feature.setdefault(r["feature"], []).append(r)
    assert {f: len(v) for f, v in by_feature.items()} == {"x0": 6, "x1": 6, "flag": 6, "plan": 6}
    assert [r["drift"] for r in by_feature["x0"]] == [False] * 4 + [True] * 2
    assert not any(r["drift"] for f in ("x1", "flag", "plan") for r in by_feature[f])
    assert min(r["p_value"] for r in by_feature["flag"]) > 0.001  # was exactly 0 in every window
    undeclared = query(
        settings,
        'SELECT "n_unknown_feature", "unknown_feature_rate", "features" FROM "dw_quality" '
        "WHERE \"feature\" = '__undeclared__' AND \"segment\" = ''",
    )
    assert len(undeclared) == 6 and all(
        q["features"] == f"note={WINDOW}" and q["unknown_feature_rate"] == 1.0 for q in undeclared
    ), undeclared
    assert "events carry feature(s) 'note' that the monitor config does not declare" in log.read_text()
