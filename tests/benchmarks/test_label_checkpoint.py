"""What a label-join checkpoint costs: bytes and milliseconds per checkpoint, up to the default bounds.

One model of 3 classes with probabilities, ``N`` predictions waiting for their labels (32-hex
event ids) and up to 50 000 recently finished ids (what a checkpoint keeps of them), on the
session's real broker: :meth:`streams.worker.labels.LabelHook.snapshot_if_due` (plain copies on the event loop,
reported as ``event_loop_ms_max``; selection,
encode + compress on a thread, chunks written to the changelog and acknowledged) and
:meth:`~streams.worker.labels.LabelHook.restore_partitions` on a second hook (read to the marker,
decompress, decode, restore). ``N = 1 000 000`` is the default ``labels.max_pending``.

    pytest -s tests/benchmarks/test_label_checkpoint.py

Results go to ``test-artifacts/benchmarks/label_checkpoint.json`` and stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from streams.worker.label_changelog import CHUNK_BYTES, LabelChangelog, changelog_topic, ensure_changelog_topic
from streams.worker.labels import LabelHook
from streams.worker.monitors import parse_monitors

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RESULTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "benchmarks"  # gitignored
SIZES = (5_000, 50_000, 500_000, 1_000_000)
CLASSES = ("a", "b", "c")


def hook_of(settings) -> LabelHook:
    """A worker's label hook for one model (default bounds), checkpointing to the real changelog."""
    cfg = parse_monitors(
        {
            "models": [
                {
                    "model_id": "m",
                    "features": [{"name": "x", "kind": "numeric"}],
                    "window": {"size_events": 1000},
                    "reference": {"first_n": 1000},
                    "labels": {"online": {"enabled": False}},
                }
            ]
        }
    )
    return LabelHook(cfg, store=LabelChangelog(settings), background=False)


def filled_hook(settings, n: int, rng: np.random.Generator) -> LabelHook:
    """A hook whose model holds ``n`` predictions waiting, after ``min(n, 50 000)`` matched ones."""
    h = hook_of(settings)
    done = min(n, 50_000)
    total = n + done
    ids = np.array([f"{v:032x}" for v in rng.integers(0, 2**62, total, dtype=np.int64)], dtype=object)
    proba = rng.dirichlet([1, 1, 1], total)
    pred = np.asarray(CLASSES, dtype=object)[np.argmax(proba, axis=1)]
    join = h._join("m")
    join.add_predictions(
        ids, 1e9 + np.arange(total) * 0.01, pred_label=pred, pred_proba=proba, classes=CLASSES, now=1e9 + total * 0.01
    )
    join.add_labels(ids[:done], pred[:done], np.full(done, 1e9 + total * 0.01))
    assert join.stats.pending_predictions == n
    h._part["m"] = 0
    h._offsets["m"] = {(settings.topic_inferences, 0): total - 1, (settings.topic_labels, 0): done - 1}
    h._dirty.add("m")
    return h


def test_checkpoint_cost_up_to_the_default_bounds(settings):
    ensure_changelog_topic(settings)
    rng = np.random.default_rng(0)
    rows = []

    async def measure(n: int) -> dict:
        hook = filled_hook(settings, n, rng)
        times, sizes = [], []
        for _ in range(3):  # the same state written again: what every 5 s costs while it is this large
            hook._dirty.add("m")
            t0 = time.perf_counter()
            sizes.append(await hook.snapshot_if_due(force=True))
            times.append(time.perf_counter() - t0)
        await hook.close()
        other = hook_of(settings)  # a new worker
        t0 = time.perf_counter()
        assert await other.restore_partitions([0]) == 1
        restore = time.perf_counter() - t0
        assert other._joins["m"].stats.pending_predictions == n
        await other.close()
        return {
            "pending_predictions": n,
            "finished_ids": min(n, 50_000),
            "checkpoint_bytes": sizes[-1],
            "chunks": -(-sizes[-1] // CHUNK_BYTES),
            "checkpoint_ms": [round(1e3 * t, 1) for t in times],
            "event_loop_ms_max": round(hook.checkpoints["loop_ms_max"], 1),  # the copies; the rest is on threads
            "restore_ms": round(1e3 * restore, 1),
        }

    try:
        for n in SIZES:
            row = asyncio.run(measure(n))
            rows.append(row)
            print("label checkpoint:", json.dumps(row))
    finally:
        from streams.broker.admin import delete_topics

        with contextlib.suppress(Exception):  # tansu keeps every checkpoint in memory until then
            delete_topics(settings, [changelog_topic(settings)])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "label_checkpoint.json").write_text(json.dumps(rows, indent=2) + "\n")
    small, full = rows[0], rows[-1]
    assert full["checkpoint_bytes"] > 50 * small["checkpoint_bytes"]  # it grows with the state it holds
    assert all(r["checkpoint_bytes"] < 200 * r["pending_predictions"] for r in rows)  # compressed: < 200 B a row
