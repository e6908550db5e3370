"""The decoder's cost per event in each wire format, in-process: the same events as JSON and as Arrow.

Why its own measurement: the throughput benchmark's worker phase mixes decoding with the
windows, the detectors and everybody else on the machine; this times only
:meth:`streams.worker.decode.Decoder.decode` on the benchmark traffic (20 features, column
batches of ``batch_events``, handed over ``batch`` messages at a time like the worker's
``take_events``), alternating the formats round by round so a neighbour's burst hits both,
and reports the best round of each (µs of this process's CPU per event) next to the bare
parse of the same bytes (``orjson.loads`` / ``pyarrow.ipc.open_stream(...).read_all()``) and
the other side's cost: the SDK's encoding of the same column batches
(:func:`streams.wire.producer.batch_encoder`, what its background thread spends in a serving app).

    python -m benchmarks.decode_cost --events 200000

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

from benchmarks.traffic import Traffic, balanced_model_ids, iter_messages, monitor_config
from streams.wire.contract import WIRE_FORMATS


def _messages(traffic: Traffic) -> list[Any]:
    from streams.worker.decode import RawMessage, content_type

    now_ms = int(time.time() * 1000)
    ct = content_type(traffic.headers)
    return [
        RawMessage(value, key, "bench", 0, off, now_ms, ct)
        for off, (key, value, _n) in enumerate(iter_messages(traffic))
    ]


def _parse_only(wire: str):
    if wire == "json":
        import orjson

        return orjson.loads
    import pyarrow as pa

    return lambda v: pa.ipc.open_stream(v).read_all()


def measure(
    events: int = 200_000, models: int = 8, batch_events: int = 1000, batch: int = 200, rounds: int = 5
) -> dict:
    """µs of CPU per event to decode the same traffic in each wire format (best of ``rounds``)."""
    import orjson

    from streams.wire.producer import batch_encoder
    from streams.worker.decode import Decoder
    from streams.worker.monitors import parse_monitors

    base = Traffic(models=balanced_model_ids(models, 4), events=events, batch_events=batch_events)
    decoder = Decoder(parse_monitors(monitor_config(base)), max_message_bytes=16 << 20)
    msgs = {wire: _messages(replace(base, wire=wire)) for wire in WIRE_FORMATS}
    n = base.per_model * models
    best: dict[str, float] = dict.fromkeys(WIRE_FORMATS, float("inf"))
    parse: dict[str, float] = dict.fromkeys(WIRE_FORMATS, float("inf"))
    encode: dict[str, float] = dict.fromkeys(WIRE_FORMATS, float("inf"))
    docs = [orjson.loads(m.value) for m in msgs["json"]]  # the column batches as the SDK holds them: lists
    for _ in range(rounds):
        for wire, ms in msgs.items():
            c0 = time.process_time()
            decoded = 0
            for i in range(0, len(ms), batch):
                out = decoder.decode(ms[i : i + batch])
                decoded += sum(len(p.frame) for p in out.frames.values())
                if out.dead:
                    raise RuntimeError(f"{wire}: the bench traffic was dead-lettered: {out.dead[0].detail}")
            best[wire] = min(best[wire], time.process_time() - c0)
            if decoded != n:
                raise RuntimeError(f"{wire}: decoded {decoded} of {n} events")
            loads = _parse_only(wire)
            c0 = time.process_time()
            for m in ms:
                loads(m.value)
            parse[wire] = min(parse[wire], time.process_time() - c0)
            write = batch_encoder(wire)[0]
            c0 = time.process_time()
            for doc in docs:
                write(doc)
            encode[wire] = min(encode[wire], time.process_time() - c0)
    out: dict[str, Any] = {"events": n, "batch_events": batch_events, "batch_messages": batch, "rounds": rounds}
    for wire in WIRE_FORMATS:
        out[wire] = {
            "decode_us_per_event": round(1e6 * best[wire] / n, 3),
            "parse_only_us_per_event": round(1e6 * parse[wire] / n, 3),
            "sdk_encode_us_per_event": round(1e6 * encode[wire] / n, 3),
            "bytes_per_event": round(sum(len(m.value) for m in msgs[wire]) / n, 1),
        }
    out["arrow_vs_json_decode"] = round(best["arrow"] / best["json"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decode_cost", description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--models", type=int, default=8)
    p.add_argument("--batch-events", type=int, default=1000)
    p.add_argument("--batch", type=int, default=200, help="messages per decode call")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    print(json.dumps(measure(a.events, a.models, a.batch_events, a.batch, a.rounds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
