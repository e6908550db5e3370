"""``driftwatch bench <name>``: route to ``benchmarks/<name>.py``.

Each benchmark module exposes ``add_arguments(parser)`` and ``run(args) -> int``
and prints one JSON object on stdout (progress goes to stderr). Modules are
imported only when their benchmark runs.

Benchmarks: ``throughput`` (events/s per worker, floor and naive baseline,
latency, memory, scale-out), ``detection`` (detection quality), ``dashboard``
(page timings), ``adversarial``, ``real`` (real data sets, next to the peers).
"""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS: dict[str, str] = {
    "throughput": "end-to-end events/s per worker vs the floor and a naive baseline; latency, RSS, scale-out",
    "detection": "detection power, false-alarm rate and delay of the drift detectors",
    "dashboard": "dashboard page and query timings",
    "adversarial": "adversarial and probing detection scores",
    "real": "the real worker on real and realistic labelled streams next to alibi-detect, NannyML and River",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark to run")
    parser.add_argument(
        "rest", nargs=argparse.REMAINDER, help="options of that benchmark (see `driftwatch bench NAME -h`)"
    )
    parser.epilog = "benchmarks: " + "; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items())


def run(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module(f"benchmarks.{args.name}")
    except ModuleNotFoundError as e:
        if e.name == f"benchmarks.{args.name}":
            print(f"driftwatch bench {args.name}: not available in this build", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"driftwatch bench {args.name}", description=BENCHMARKS[args.name])
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(args.rest)) or 0)
