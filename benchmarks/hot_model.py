"""``bench throughput --cases hot4``: one hot model on 4 partitions, with one and with two workers.

One model (the bench's 20 features) with ``shards: 4``: its traffic (``--hot-events``, the SDK's
column batches of ``--batch-events``) is spread round-robin over the 4 partitions of the inferences
topic (the shards' partitions, :func:`streams.wire.contract.shard_partitions`) and pre-produced.
Every shard's worker publishes partial window summaries; the merge owner combines the four of each
window of ``--hot-window`` events (``size_events``; each shard's windows are a quarter of it) and
writes its points. The case runs the real ``driftwatch worker`` on it twice, as the other phases do
(:func:`benchmarks.throughput.run_workers` polls the merged ``dw_window`` points): one worker, then two
in one consumer group, started together. Reported per run: events/s, events per second of worker
CPU (all worker processes and their detector children) — measured between the first and the last
merged window, and over the workers' whole lives (start-up included) — and every process's CPU %;
and the two-worker run's events per worker CPU-second over the one-worker run's (issue 16's
target: within 10 %). On 2 cores the wall-clock speedup is capped by the broker and InfluxDB, which share them.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml

from benchmarks.traffic import CATEGORICAL, NUMERIC, Traffic, batch_payload, iter_messages, monitor_config, produce

MODEL = "bench-hot"
PARTITIONS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hot-events", type=int, help="events of the hot model for --cases hotN (default 2M; quick 200k)"
    )
    parser.add_argument(
        "--hot-window", type=int, help="merged window of the hot model, events (default 100k; quick 20k)"
    )


def sizes(args: argparse.Namespace, shards: int, batch_events: int) -> tuple[int, int]:
    """``(events, window)``: whole windows, and whole messages per shard in every window's quarter."""
    quick = getattr(args, "quick", False)
    window = getattr(args, "hot_window", None) or (20_000 if quick else 100_000)
    unit = shards * batch_events
    window = -(-window // unit) * unit
    events = getattr(args, "hot_events", None) or (200_000 if quick else 2_000_000)
    return -(-events // window) * window, window


def sharded_messages(traffic: Traffic, shards: int) -> Iterator[tuple[bytes, bytes, int, int]]:
    """The hot model's messages, ``(key, value, events, partition)``: round-robin over its shards' partitions."""
    from streams.wire.contract import shard_partitions

    parts = shard_partitions(MODEL, shards, PARTITIONS)
    for i, (key, value, n) in enumerate(iter_messages(traffic)):
        yield key, value, n, parts[i % shards]


def write_reference(path: Path, traffic: Traffic, rows: int = 5000) -> Path:
    """A reference file drawn like the traffic (the same generator, other events)."""
    doc = orjson.loads(batch_payload(traffic, MODEL, 10**9, rows))
    cols = [*NUMERIC, *CATEGORICAL]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(zip(*(doc["features"][c] for c in cols)))
    return path


def write_config(path: Path, traffic: Traffic, window: int, shards: int, reference: Path) -> Path:
    """The hot model's monitor config: the bench model's features, ``shards``, a file reference."""
    from streams.worker.monitors import load_monitors

    cfg = monitor_config(traffic, window)
    cfg["models"][0].update(shards=shards, reference={"file": str(reference)})
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    load_monitors(path)
    return path


def run_hot(
    bench: Any, shards: int, args: argparse.Namespace, run_workers: Callable[..., dict], log: Callable[[str], None]
) -> dict[str, Any]:
    """Produce the hot model's traffic, run one worker then two on it; the report of both."""
    from streams.broker.admin import delete_topics, ensure_topics, topic_names

    events, window = sizes(args, shards, bench.plan.batch_events)
    traffic = Traffic(models=[MODEL], events=events, batch_events=bench.plan.batch_events)
    name = f"hot{shards}"
    ref = write_reference(bench.root / f"{name}-reference.csv", traffic)
    write_config(bench.root / f"monitors-{name}.yaml", traffic, window, shards, ref)
    s = bench.settings(name)
    ensure_topics(s, partitions=PARTITIONS)
    log(f"{name}: producing {events:,} events of one model over {shards} partitions (windows of {window:,})")
    prod = produce(bench.stack.bootstrap, s.topic_inferences, sharded_messages(traffic, shards))
    try:
        runs = {
            f"workers_{n}": run_workers(bench, s, n, events, f"{name}-{n}", monitors=f"monitors-{name}.yaml")
            for n in (1, 2)
        }
    finally:
        delete_topics(s, topic_names(s))
    one, two = runs["workers_1"], runs["workers_2"]
    e1, e2 = one.get("events_per_worker_cpu_s"), two.get("events_per_worker_cpu_s")
    r1, r2 = one.get("events_per_s"), two.get("events_per_s")
    w1, w2 = one.get("events_per_worker_cpu_s_whole_run"), two.get("events_per_worker_cpu_s_whole_run")
    return {
        "shards": shards,
        "events": events,
        "window_events": window,
        "produce_seconds": round(prod["seconds"], 1),
        **runs,
        "cpu_efficiency_two_vs_one": round(e2 / e1, 3) if e1 and e2 else None,
        "cpu_efficiency_two_vs_one_whole_run": round(w2 / w1, 3) if w1 and w2 else None,
        "speedup_two_vs_one": round(r2 / r1, 3) if r1 and r2 else None,
    }
