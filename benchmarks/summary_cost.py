"""The summarised path's cost per event in the worker's process: decode, then update the window summary.

A window of ``window.summary_min_events`` or more (or an event-time window of
``summary_min_seconds``) costs the worker per event what :meth:`Decoder.decode` and
:meth:`WindowSummary.update` cost; its close is O(features × bins), whatever its events.
This times the two alone, in-process, on the benchmark traffic (20 features, column batches of
1,000 events, ``--batch`` messages per decode call like the worker's ``take_events``), the wire
formats alternating round by round, best of ``--rounds``, µs of this process's CPU per event.
The summary has the worker's layout (1,024 bins, a 2,000-row reservoir, the model outputs) over a
reference of the first 5,000 events of the first model.

    python -m benchmarks.summary_cost --events 200000

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

from benchmarks.decode_cost import _messages
from benchmarks.traffic import Traffic, balanced_model_ids, monitor_config
from streams.wire.contract import WIRE_FORMATS


def measure(
    events: int = 200_000, models: int = 2, batch: int = 200, rounds: int = 3, update_events: int = 3000
) -> dict[str, Any]:
    """µs of CPU per event: decoding each wire format, and updating one summary per model with the frames."""
    from detectors.advanced import prediction_reference
    from detectors.reference import Reference, attach_reference_frame
    from detectors.summaries import SummaryLayout
    from streams.worker.decode import Decoder
    from streams.worker.monitors import parse_monitors

    base = Traffic(models=balanced_model_ids(models, 4), events=events, batch_events=1000)
    cfg = parse_monitors(monitor_config(base))
    decoder = Decoder(cfg, max_message_bytes=16 << 20)
    msgs = {wire: _messages(replace(base, wire=wire)) for wire in WIRE_FORMATS}
    n = base.per_model * models
    decode = dict.fromkeys(WIRE_FORMATS, float("inf"))
    frames: list[Any] = []
    for _ in range(rounds):
        for wire, ms in msgs.items():
            c0 = time.process_time()
            got = []
            for i in range(0, len(ms), batch):
                got += [p.frame for p in decoder.decode(ms[i : i + batch]).frames.values()]
            decode[wire] = min(decode[wire], time.process_time() - c0)
            frames = got
    model = cfg.models[0]
    ref_rows = frames[0].take(slice(0, 5000))
    # the worker updates a window's summary with the part of a decoded batch that falls in it
    frames = [f.take(slice(lo, lo + update_events)) for f in frames for lo in range(0, len(f), update_events)]
    ref = attach_reference_frame(Reference.from_frame(ref_rows, model.features), ref_rows)
    layout = SummaryLayout.build(ref, model.features, bins=1024, reservoir=2000, outputs=prediction_reference(ref))
    update = float("inf")
    for _ in range(rounds):
        summary = layout.summary()
        c0 = time.process_time()
        for f in frames:
            summary.update(f)
        update = min(update, time.process_time() - c0)
    us = {w: round(1e6 * decode[w] / n, 3) for w in WIRE_FORMATS}
    upd = round(1e6 * update / n, 3)
    return {
        "events": n,
        "models": models,
        "batch_messages": batch,
        "rounds": rounds,
        "decode_us_per_event": us,
        "summary_update_us_per_event": upd,
        "total_us_per_event": {w: round(us[w] + upd, 3) for w in WIRE_FORMATS},
        "events_per_update": round(n / max(len(frames), 1)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.summary_cost", description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--models", type=int, default=2)
    p.add_argument("--batch", type=int, default=200, help="messages per decode call")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--update-events", type=int, default=3000, help="events per summary update")
    a = p.parse_args(argv)
    print(json.dumps(measure(a.events, a.models, a.batch, a.rounds, a.update_events), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
