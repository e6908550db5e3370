"""What a label-join checkpoint costs the worker's event loop: :meth:`LabelHook._capture` on a realistic state.

Why: the worker checkpoints the label join every few seconds; the copy it takes runs on the event loop
(the batches change the join there) and stalls consumption for as long as it takes; the rest (selection,
NPZ, zlib) runs on a thread. This fills one model's hook like a labelled stream does — ``--windows`` closed
windows of ``--window`` predictions each, all labelled but ``--pending`` predictions, with window results,
the error-stream detector and CBPE's calibration rows — then times the copy (event loop) and the encoding
(thread) of ``--rounds`` checkpoints, taken as the worker takes them (nothing new between two: every
window result is unchanged). No broker: the write is measured by tests/benchmarks/test_label_checkpoint.py.

    python -m benchmarks.label_capture --windows 1000 --window 2000 --pending 100000

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from types import SimpleNamespace

import numpy as np

from streams.worker.decode import StreamKey
from streams.worker.labels import LabelHook
from streams.worker.monitors import parse_monitors

CLASSES = ("a", "b", "c")


class _NoStore:
    """A store that writes nothing (the hook checkpoints only when it has one)."""

    async def save(self, partition: int, gen: int, blob: bytes) -> int:
        return len(blob)

    async def load(self, partition: int) -> None:
        return None

    async def close(self) -> None:
        return None


def filled_hook(windows: int, window: int, pending: int, cache_dir: str) -> LabelHook:
    """A hook whose model closed ``windows`` windows of ``window`` predictions, all labelled but ``pending``."""
    cfg = parse_monitors(
        {
            "models": [
                {
                    "model_id": "m",
                    "features": [{"name": "x", "kind": "numeric"}],
                    "window": {"size_events": window},
                    "reference": {"first_n": 1000},
                    "labels": {"online": {"enabled": True}},
                }
            ]
        }
    )
    hook = LabelHook(cfg, store=_NoStore(), background=False, cache_dir=cache_dir)
    rng = np.random.default_rng(0)
    key = StreamKey("t", 0, "m", "1")
    join = hook._join("m")
    hook._part["m"] = 0
    unlabelled = pending // windows
    for w in range(windows):
        first = w * window
        ids = np.array([f"{v:032x}" for v in range(first, first + window)], dtype=object)
        t = 1e9 + np.arange(first, first + window) * 0.01
        proba = rng.dirichlet([1, 1, 1], window)
        pred = np.asarray(CLASSES, dtype=object)[np.argmax(proba, axis=1)]
        join.add_predictions(ids, t, pred_label=pred, pred_proba=proba, classes=CLASSES, now=float(t[-1]))
        hook.on_window(key, SimpleNamespace(time_ns=int(t[-1] * 1e9), end_time=float(t[-1])))
        n = window - unlabelled
        hook._add("m", join.add_labels(ids[:n], pred[:n], t[:n] + 30.0, now=float(t[-1])))
        hook._drain("m")
    return hook


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=1000, help="closed windows (1000: the results kept per model)")
    ap.add_argument("--window", type=int, default=2000, help="predictions per window")
    ap.add_argument("--pending", type=int, default=100_000, help="predictions left waiting for their label")
    ap.add_argument("--rounds", type=int, default=5, help="checkpoints timed (after a first, untimed one)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        hook = filled_hook(a.windows, a.window, a.pending, cache)
        fill = time.perf_counter() - t0
        loop_ms, thread_ms, size = [], [], 0
        for i in range(a.rounds + 1):
            hook._dirty.add("m")
            t1 = time.perf_counter()
            parts = hook._capture()
            t2 = time.perf_counter()
            blobs = hook._encode(parts)
            t3 = time.perf_counter()
            size = sum(len(b) for _, b in blobs)
            if i:  # the first copies every window result once
                loop_ms.append(round(1e3 * (t2 - t1), 1))
                thread_ms.append(round(1e3 * (t3 - t2), 1))
        join = hook._joins["m"]
        print(
            json.dumps(
                {
                    "windows": a.windows,
                    "window": a.window,
                    "pending_predictions": join.stats.pending_predictions,
                    "finished_ids": len(join._tomb),
                    "fill_s": round(fill, 1),
                    "event_loop_ms": loop_ms,
                    "thread_ms": thread_ms,
                    "checkpoint_bytes": size,
                }
            )
        )


if __name__ == "__main__":
    main()
