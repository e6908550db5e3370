"""The worker's engine alone: ``streams.worker.pipeline.Pipeline`` on the benchmark traffic, no Kafka, no Faust.

Why: on a shared 2-core machine the end-to-end figure mixes the worker's own
cost with the broker's, InfluxDB's and everybody else's. This feeds the same
column batches the throughput benchmark produces straight into the pipeline
(batches of ``--batch`` messages, like the agent's ``take_events``), with a
sink that confirms every unit at once, and reports events per second of wall
time and per second of this process's CPU, the split between decoding and
detectors, and (``--profile``) the functions that cost the most.

    python -m benchmarks.pipeline_profile --events 400000 --profile 25

Prints one JSON object (the profile, if asked, on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import sys
import time
from typing import Any, ClassVar

from benchmarks import procstats
from benchmarks.traffic import Traffic, balanced_model_ids, iter_messages, monitor_config


class NullSink:
    """Confirms every unit at once and counts what it was given (lines are still formatted)."""

    def __init__(self) -> None:
        self.points = 0
        self.pending_points = 0
        self.client = None

    async def submit(self, records) -> asyncio.Future:
        from streams.influx.sink import to_lines

        self.points += len(to_lines(records))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(0)
        return fut

    async def stop(self, timeout: float = 0.0) -> None:
        return None


class NullDeadLetters:
    counts: ClassVar[dict] = {}

    async def publish(self, dl):  # pragma: no cover - the bench traffic is clean
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from streams.settings import Settings
    from streams.worker.decode import RawMessage, content_type
    from streams.worker.monitors import parse_monitors
    from streams.worker.pipeline import Pipeline

    models = balanced_model_ids(args.models, 4)
    tr = Traffic(models=models, events=args.events, batch_events=args.batch_events, wire=args.wire)
    ct = content_type(tr.headers)
    extra = (
        {}
        if args.summary_min_events is None
        else {"summary_min_events": None if args.summary_min_events == "off" else int(args.summary_min_events)}
    )
    cfg = parse_monitors(
        monitor_config(tr, window=args.window, reference=args.reference or args.window, window_extra=extra)
    )
    now_ms = int(time.time() * 1000)
    msgs = []
    offsets: dict[bytes, int] = {}
    for key, value, _n in iter_messages(tr):
        part = models.index(key.decode()) % 4
        off = offsets.get(key, 0)
        offsets[key] = off + 1
        msgs.append(RawMessage(value, key, "bench", part * 100 + models.index(key.decode()), off, now_ms, ct))
    sink = NullSink()
    rss0 = round(procstats.rss_mb(os.getpid()), 1)  # the traffic itself is in memory here
    kw: dict[str, Any] = {}
    if args.no_eval_thread:
        kw["eval_thread"] = False
    if args.detector_process:  # as the worker runs by default
        from streams.worker.detector_process import DetectorProcess

        kw["evaluator"] = DetectorProcess()
    pipe = Pipeline(Settings(), cfg, sink=sink, deadletters=NullDeadLetters(), **kw)
    import gc

    if args.gc == "off":
        gc.disable()
    elif args.gc == "freeze":
        gc.collect()
        gc.freeze()
    # --clock cpu: the profile counts this process's CPU time, not wall time (on a shared machine the
    # wall clock charges other processes' time to whatever function was waiting for a core)
    prof = (
        (cProfile.Profile(time.process_time) if args.clock == "cpu" else cProfile.Profile()) if args.profile else None
    )
    # warm-up (--warm-events): the reference and each model's one-off fits, not timed nor profiled
    warm = -(-args.warm_events // args.batch_events) if args.warm_events else 0
    for i in range(0, warm, args.batch):
        await pipe.process(msgs[i : min(i + args.batch, warm)])
    if warm:
        await pipe.drain()
    ev0, w0, eval0, dec0 = pipe.stats.events, pipe.stats.windows, pipe.stats.evaluate_s, pipe.stats.decode_s
    kids = _children()
    t0, c0, k0 = time.perf_counter(), time.process_time(), _cpu(kids)
    if prof:
        prof.enable()
    for i in range(warm, len(msgs), args.batch):
        await pipe.process(msgs[i : i + args.batch])
    drain = getattr(pipe, "drain", None)
    if drain is not None:
        await drain()
    if prof:
        prof.disable()
    wall, cpu, kids_cpu = time.perf_counter() - t0, time.process_time() - c0, _cpu(kids) - k0
    st = pipe.stats
    events, windows = st.events - ev0, st.windows - w0
    out = {
        "events": tr.per_model * len(models),
        "warm_up_events": st.events - events,
        "events_timed": events,
        "events_windowed": st.windowed_events,
        "windows": st.windows,
        "points": sink.points,
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "events_per_s": round(events / wall, 1),
        "events_per_cpu_s": round(events / cpu, 1),
        # the detector process's CPU (--detector-process): the worker's cost is both processes
        "cpu_seconds_children": round(kids_cpu, 3),
        "events_per_cpu_s_all": round(events / (cpu + kids_cpu), 1),
        "decode_s": round(st.decode_s - dec0, 3),
        "evaluate_s": round(st.evaluate_s - eval0, 3),
        "evaluate_ms_per_window": round(1e3 * (st.evaluate_s - eval0) / max(windows, 1), 2),
        "batch_messages": args.batch,
        "gc": args.gc,
        "rss_mb": round(procstats.rss_mb(os.getpid()), 1),
        "peak_rss_mb": round(procstats.peak_rss_mb(os.getpid()), 1),
        "rss_mb_before": rss0,
    }
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(args.sort).print_stats(args.profile)
        print(buf.getvalue(), file=sys.stderr)
    return out


def _children() -> list[int]:
    """This process's child processes (the detector process once it started)."""
    try:
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _cpu(pids: list[int]) -> float:
    return sum(procstats.cpu_seconds(p) for p in pids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_profile", description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=400_000)
    p.add_argument("--models", type=int, default=8)
    p.add_argument("--window", type=int, default=5000)
    p.add_argument("--batch-events", type=int, default=1000)
    p.add_argument("--wire", choices=("json", "arrow"), default="json", help="the traffic's wire format")
    p.add_argument("--reference", type=int, default=None, help="first_n reference size (default: --window)")
    p.add_argument(
        "--summary-min-events",
        default=None,
        help="window.summary_min_events ('off': windows keep their rows; default: the config default)",
    )
    p.add_argument(
        "--warm-events",
        type=int,
        default=0,
        help="events processed first, neither timed nor profiled (the references and one-off per-model fits)",
    )
    p.add_argument("--batch", type=int, default=200, help="messages per pipeline call (the agent's take_events)")
    p.add_argument("--no-eval-thread", action="store_true", help="run the detectors inline (if the pipeline allows)")
    p.add_argument(
        "--detector-process",
        action="store_true",
        help="run the detectors in a child process (the worker's default; figures are then the "
        "parent's: decoding and windowing)",
    )
    p.add_argument(
        "--gc",
        choices=["on", "off", "freeze"],
        default="on",
        help="Python's cyclic garbage collector during the run (default on, as in the worker)",
    )
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions (cProfile)")
    p.add_argument("--sort", default="tottime", help="cProfile sort key (tottime, cumtime)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="what the profile counts")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(_run(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
