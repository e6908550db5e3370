"""Close → results latency of the first windows judged against a new reference, with and without the
detectors' one-off fits started ahead (``DetectorProcess.prepare``), side by side in one run.

Why: the first window judged against a reference used to carry the per-model fits (adversarial
monitor and extraction calibration, feature impacts: 1–2 s per model) in its close → written
latency; with few windows per run (60-s or 1M-event windows) those windows set the p99. The
end-to-end benchmark on a shared machine cannot isolate this, so this feeds the benchmark
traffic straight into the pipeline (no Kafka, no InfluxDB) with the worker's detector
process: each model's reference (its first ``--window`` events), then ``--fill`` seconds
of pause (the first window filling at a real pace), then the next windows; and reports, per
variant, the seconds from each window's close to its results reaching the sink.

    python -m benchmarks.first_window --models 2 --window 5000 --fill 3 --rounds 2

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from benchmarks.traffic import Traffic, balanced_model_ids, iter_messages, monitor_config


class TimedSink:
    """Confirms every unit at once and keeps, per window point, the seconds since the window closed."""

    def __init__(self) -> None:
        self.latencies: list[tuple[str, float]] = []

    async def submit(self, records) -> asyncio.Future:
        from detectors.records import F_CLOSED_AT, WINDOW

        now = time.time()
        for r in records:
            if r.measurement == WINDOW and F_CLOSED_AT in r.fields:
                self.latencies.append((r.tags.get("model", ""), now - float(r.fields[F_CLOSED_AT])))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(0)
        return fut


async def _one(args: argparse.Namespace, prepare: bool) -> dict[str, Any]:
    from benchmarks.pipeline_profile import NullDeadLetters
    from streams.settings import Settings
    from streams.worker.decode import RawMessage
    from streams.worker.detector_process import DetectorProcess
    from streams.worker.monitors import parse_monitors
    from streams.worker.pipeline import Pipeline

    # model ids of their own per variant: nothing fitted by the other variant's run is reused
    models = [f"{m}-{'p' if prepare else 'n'}" for m in balanced_model_ids(args.models, 4)]
    per_model = args.window * (1 + args.windows)
    tr = Traffic(models=models, events=per_model * len(models), batch_events=1000)
    cfg = parse_monitors(monitor_config(tr, window=args.window, reference=args.window))
    msgs = [
        RawMessage(value, key, "bench", models.index(key.decode()), i, int(time.time() * 1000))
        for i, (key, value, _n) in enumerate(iter_messages(tr))
    ]
    ref_msgs = len(models) * args.window // 1000  # round robin: every model's reference first
    proc = DetectorProcess()
    if not prepare:
        proc.prepare = lambda *a, **k: None  # type: ignore[method-assign]  # the first window fits
    sink = TimedSink()
    pipe = Pipeline(Settings(), cfg, sink=sink, deadletters=NullDeadLetters(), evaluator=proc)
    try:
        await pipe.process(msgs[:ref_msgs])
        await pipe.drain(300)  # the reference windows' results (the fits, if prepared, run after them)
        await asyncio.sleep(args.fill)  # the first judged window fills at a real pace
        n0 = len(sink.latencies)
        reference_windows = [s for _m, s in sink.latencies]
        for i in range(ref_msgs, len(msgs), 200):
            await pipe.process(msgs[i : i + 200])
        await pipe.drain(300)
    finally:
        proc.close()
    judged = [s for _m, s in sink.latencies[n0:]]
    first = judged[: len(models)]
    return {
        "prepare": prepare,
        "reference_windows_s": [round(s, 3) for s in reference_windows],
        "first_windows_s": [round(s, 3) for s in first],
        "first_windows_max_s": round(max(first), 3),
        "later_windows_max_s": round(max(judged[len(models) :], default=float("nan")), 3),
        "windows": len(judged),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"models": args.models, "window": args.window, "fill_s": args.fill, "runs": []}
    for _ in range(args.rounds):
        for prepare in (False, True):
            out["runs"].append(await _one(args, prepare))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.first_window", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=2)
    p.add_argument("--window", type=int, default=5000, help="events per window; the reference is the first window")
    p.add_argument("--windows", type=int, default=2, help="windows judged per model after the reference")
    p.add_argument("--fill", type=float, default=3.0, help="seconds between the reference and the next events")
    p.add_argument("--rounds", type=int, default=2, help="without/with prepare, this many times, alternating")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(_run(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
