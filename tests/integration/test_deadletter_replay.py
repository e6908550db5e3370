"""Dead letters a user can act on, on the real stack.

A model's events arrive before the model is declared: they are dead-lettered as
``unknown_model``, and the worker log and the stored counts say *which* model. The
config is fixed, ``driftwatch deadletter replay`` sends them again, and a worker
with the fixed config windows every one of them: nothing lost. A second replay
sends nothing (idempotent).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from streams.influx.sink import query
from tests.reliability.helpers import T0, dead_letters, wait_for, windowed, worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # each test runs workers for 30-100 s

FEATURES = [{"name": "x", "kind": "numeric"}, {"name": "c", "kind": "categorical"}]


def monitors(path: Path, models: list[str]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "model_id": m,
                        "features": FEATURES,
                        "window": {"size_events": 100, "idle_close_seconds": 2.0},
                        "reference": {"first_n": 100},
                    }
                    for m in models
                ]
            }
        )
    )
    return path


def batch(model: str, start: int, n: int, rng: np.random.Generator) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "type": "inference_batch",
            "model_id": model,
            "model_version": "1",
            "event_id": [f"{model}-{i}" for i in range(start, start + n)],
            "event_time": (T0 + np.arange(start, start + n) * 0.01).tolist(),
            "features": {"x": rng.normal(size=n).tolist(), "c": ["a", "b"] * (n // 2)},
            "prediction": {"label": ["yes"] * n},
        }
    )


def cli(settings_env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "deadletter", *args],
        env=settings_env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def windowed_of(settings, model: str) -> int:
    rows = query(settings, f'SELECT sum("n_events") AS n FROM "dw_window" WHERE "model" = \'{model}\'')
    return int(rows[0]["n"]) if rows else 0


def test_unknown_model_dead_lettered_then_replayed_into_windows(settings, settings_env, tmp_path, consume_all):
    from kafka import KafkaProducer

    rng = np.random.default_rng(2)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_options())
    for i in range(3):
        producer.send(settings.topic_inferences, key=b"m", value=batch("m", i * 100, 100, rng))
    for i in range(3):  # the README's mistake: events of a model that is not declared
        producer.send(settings.topic_inferences, key=b"iris", value=batch("iris", i * 100, 100, rng))
    producer.flush(30)
    producer.close(10)

    log = tmp_path / "worker.log"
    before = monitors(tmp_path / "before.yaml", ["m"])
    with worker(settings_env, before, log) as proc:
        wait_for(
            lambda: True if windowed(settings) + dead_letters(consume_all, settings)[0] == 600 else None,
            120,
            "every event windowed or dead-lettered",
            [proc],
            log,
        )
    assert dead_letters(consume_all, settings)[1] == {"unknown_model": 300}
    text = log.read_text()
    assert "dead-lettering events of model iris: unknown_model" in text  # the log names model and reason
    points = query(settings, 'SELECT "count", "model_id" FROM "dw_deadletter" WHERE "reason" = \'unknown_model\'')
    assert sum(p["count"] for p in points) == 300 and {p["model_id"] for p in points} == {"iris"}
    from dashboard import queries as Q  # the data-quality page's table names the model too

    table = Q.deadletter_models(Q.Conn.from_settings(settings), Q.Scope(Q.TimeRange.last("7d"), model="m"))
    assert table.to_dict("records") == [{"reason": "unknown_model", "model": "iris", "count": 300}]

    listed = cli(settings_env, "list", "--reason", "unknown_model")
    assert listed.returncode == 0, listed.stderr
    lines = [ln for ln in listed.stdout.splitlines() if "unknown_model" in ln]
    assert len(lines) == 3 and all("iris" in ln and "[replayed]" not in ln for ln in lines), listed.stdout
    first_id = lines[0].split()[0]
    shown = cli(settings_env, "show", first_id, "--raw")
    assert orjson.loads(shown.stdout)["model_id"] == "iris"  # the original bytes

    # not fixed yet: a replay would be dead-lettered again, so nothing is sent
    refused = cli(settings_env, "replay", "--reason", "unknown_model", "--monitors", str(before))
    assert refused.returncode == 0 and "0 replayed, 3 skipped" in refused.stdout, refused.stdout + refused.stderr

    fixed = monitors(tmp_path / "fixed.yaml", ["m", "iris"])
    replay = cli(settings_env, "replay", "--reason", "unknown_model", "--model", "iris", "--monitors", str(fixed))
    assert replay.returncode == 0 and "3 replayed, 0 skipped" in replay.stdout, replay.stdout + replay.stderr
    again = cli(settings_env, "replay", "--all", "--monitors", str(fixed))
    assert "0 replayed, 3 skipped" in again.stdout and "replayed before" in again.stdout, again.stdout

    with worker(settings_env, fixed, log) as proc:
        wait_for(
            lambda: True if windowed_of(settings, "iris") == 300 else windowed_of(settings, "iris"),
            120,
            "the replayed events in windows of iris",
            [proc],
            log,
        )
    assert windowed_of(settings, "m") == 300  # nothing counted twice
    assert dead_letters(consume_all, settings)[1] == {"unknown_model": 300}  # the dead letters stay, unchanged
    replayed = consume_all(settings, settings.topic_inferences, timeout=10, idle=2.0)
    marked = [r for r in replayed if any(k == "dw-replay-of" for k, _v in r.headers)]
    assert len(marked) == 3
    listed = cli(settings_env, "list")
    assert listed.stdout.count("[replayed]") == 3
