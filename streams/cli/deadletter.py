"""``driftwatch deadletter list|show|replay``: read the dead-letter topic and send fixed messages again.

* ``list`` — every dead letter (``ID`` = ``partition:offset`` on the dead-letter topic) with its
  reason, model, events and detail; ``--reason`` / ``--model`` filter; replayed ones are marked.
* ``show ID`` — its headers and the original bytes (``--raw``: the bytes alone, to a pipe).
* ``replay [ID ...] [--reason R] [--model M] [--all]`` — sends the chosen messages back to the
  topic they came from (``dw-source-topic``: inferences or labels). Only the dead rows are sent:
  a message with one bad row among valid ones was counted for the others already, so its dead
  rows are cut out of the batch (``dw-rows``); a message dead as a whole is sent byte for byte.
  Before sending, each is decoded with the *current* monitor config (``--monitors``): one that
  would be dead-lettered again for the same reason is left alone (``--force`` sends it anyway).

Nothing is lost and a replay is idempotent: the dead-letter topic is only read, never changed;
each replayed record carries the header ``dw-replay-of: <topic>:<partition>:<offset>`` of its
dead letter, and once the broker has acknowledged it the replay is recorded on the compacted
topic ``<topic_deadletter>.replayed`` (key = the dead letter's id). A second ``replay`` skips what
is recorded there (``--again`` replays it anyway). A crash between the send and the record can
replay one message twice (at least once, never lost).

Reading "to the end": the dead-letter topic is read until no record arrived for ``--idle``
seconds (end offsets are not trusted, see design.md: tansu reports them wrong); the replay record
topic is read up to a marker record written just before (as :mod:`streams.worker.references` does).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.settings import Settings

REPLAY_HEADER = "dw-replay-of"
MARKER_PREFIX = "__marker__/"


@dataclass(frozen=True)
class Letter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    def h(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    @property
    def model(self) -> str:
        return self.h("dw-model", "—")


def ledger_topic(settings: Settings) -> str:
    """The compacted topic that records what was replayed."""
    return f"{settings.topic_deadletter}.replayed"


def read_deadletters(settings: Settings, idle: float = 2.0, timeout: float = 120.0) -> list[Letter]:
    """Every record of the dead-letter topic, in (partition, offset) order."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="driftwatch-deadletter-cli",
        **settings.kafka_client_options(),
    )
    try:
        parts = consumer.partitions_for_topic(settings.topic_deadletter) or set()
        tps = [TopicPartition(settings.topic_deadletter, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Letter] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() - last < idle and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=250)
            for recs in batch.values():
                for r in recs:
                    out.append(Letter(r.partition, r.offset, r.key, r.value, _headers(r.headers)))
                last = time.monotonic()
    finally:
        consumer.close()
    return sorted(out, key=lambda d: (d.partition, d.offset))


def _headers(headers) -> dict[str, str]:
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers or []}


def _ensure_ledger(settings: Settings) -> str:
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from streams.broker.admin import admin_client

    name = ledger_topic(settings)
    with admin_client(settings) as admin:
        if name not in set(admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    return name


def read_replayed(settings: Settings, producer, timeout: float = 30.0) -> dict[str, dict]:
    """``{dead letter id: replay record}`` from the ledger, read up to a marker written just before."""
    from kafka import KafkaConsumer, TopicPartition

    topic = _ensure_ledger(settings)
    marker = producer.send(topic, key=(MARKER_PREFIX + uuid.uuid4().hex).encode(), value=b"", partition=0).get(timeout)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="driftwatch-deadletter-cli",
        **settings.kafka_client_options(),
    )
    tp = TopicPartition(topic, 0)
    out: dict[str, dict] = {}
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout
        position = 0
        while position <= marker.offset:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading {topic} timed out at offset {position} before the marker at {marker.offset}"
                )
            for recs in consumer.poll(timeout_ms=250).values():
                for r in recs:
                    position = r.offset + 1
                    key = (r.key or b"").decode("utf-8", "replace")
                    if key.startswith(MARKER_PREFIX):
                        continue
                    if r.value is None:
                        out.pop(key, None)
                    else:
                        out[key] = json.loads(r.value)
    finally:
        consumer.close()
    return out


def dead_rows(letter: Letter) -> list[int] | None:
    """The message's dead rows (None: the whole message)."""
    from streams.worker.deadletter import parse_rows

    return parse_rows(letter.h("dw-rows", "all"))


def cut_rows(value: bytes, rows: list[int]) -> bytes:
    """The message with only ``rows`` kept: elements of a JSON array, or columns of a batch at those indexes.

    >>> import orjson
    >>> doc = {"type": "inference_batch", "model_id": "m", "event_id": ["a", "b", "c"], "event_time": [1, 2, 3],
    ...        "features": {"x": [1, 2, 3]}, "prediction": {"label": ["u", "v", "w"], "probabilities": {"u": [.1, .2, .3]}}}
    >>> orjson.loads(cut_rows(orjson.dumps(doc), [0, 2]))["features"], orjson.loads(cut_rows(b"[1, 2, 3]", [1]))
    ({'x': [1, 3]}, [2])
    """
    import orjson

    doc = orjson.loads(value)
    if isinstance(doc, list):
        return orjson.dumps([doc[i] for i in rows])
    if not isinstance(doc, dict):
        raise ValueError("neither a JSON array of events nor a batch of columns")
    n = len(doc.get("event_id") or [])

    def take(obj: Any) -> Any:
        if isinstance(obj, list) and len(obj) == n:
            return [obj[i] for i in rows]
        if isinstance(obj, dict):
            return {k: take(v) for k, v in obj.items()}
        return obj

    return orjson.dumps(
        {k: take(v) if k not in ("type", "model_id", "model_version", "schema_version") else v for k, v in doc.items()}
    )


def replay_value(letter: Letter) -> bytes | None:
    """What a replay sends: the original bytes, or only the dead rows of a batch."""
    rows = dead_rows(letter)
    if rows is None or letter.value is None:
        return letter.value
    return cut_rows(letter.value, rows)


def still_dead(letter: Letter, value: bytes | None, monitors) -> str | None:
    """Why the current config would dead-letter ``value`` again (None: it would be used)."""
    from streams.worker.decode import Decoder, RawMessage

    settings = Settings()
    out = Decoder(monitors, max_message_bytes=settings.max_message_bytes).decode(
        [RawMessage(value, letter.key, letter.h("dw-source-topic"), 0, 0, None)]
    )
    if not out.dead:
        return None
    return "; ".join(f"{d.reason}: {d.detail[:160]}" for d in out.dead)


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="list dead letters (id, time, reason, model, events, detail)")
    show = sub.add_parser("show", help="headers and original bytes of one dead letter")
    show.add_argument("id", help="PARTITION:OFFSET on the dead-letter topic (from `list`)")
    show.add_argument("--raw", action="store_true", help="write only the original bytes to stdout")
    rp = sub.add_parser("replay", help="send dead letters again to the topic they came from")
    rp.add_argument("ids", nargs="*", help="PARTITION:OFFSET ids (from `list`)")
    rp.add_argument("--all", action="store_true", help="every dead letter that matches the filters")
    rp.add_argument(
        "--monitors", type=Path, default=None, help="monitor config to check against (default: DRIFTWATCH_MONITORS)"
    )
    rp.add_argument("--force", action="store_true", help="send even what the config would dead-letter again")
    rp.add_argument("--again", action="store_true", help="send even what was replayed before")
    rp.add_argument("--dry-run", action="store_true", help="say what would be sent, send nothing")
    for p in (ls, rp):
        p.add_argument("--reason", help="only this reason (e.g. unknown_model)")
        p.add_argument("--model", help="only dead letters of this model id")
    for p in (ls, show, rp):
        p.add_argument(
            "--idle",
            type=float,
            default=2.0,
            help="stop reading the dead-letter topic after this many seconds without a record",
        )


def _matches(d: Letter, args: argparse.Namespace) -> bool:
    return (not getattr(args, "reason", None) or d.h("dw-reason") == args.reason) and (
        not getattr(args, "model", None) or d.h("dw-model") == args.model
    )


def _when(ms: str) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(ms) / 1000))
    except ValueError:
        return "?"


def _producer(settings: Settings):
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=0,
        max_request_size=max(int(settings.max_message_bytes) + 65536, 1_048_576),
        client_id="driftwatch-deadletter-cli",
        **settings.kafka_client_options(),
    )


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        letters = read_deadletters(settings, idle=args.idle)
    except Exception as e:  # e.g. the broker is down: say so, no traceback
        print(
            f"driftwatch deadletter: cannot read {settings.topic_deadletter} at {settings.kafka_bootstrap}: "
            f"{type(e).__name__}: {e}",
            file=sys.stderr,
        )
        return 1
    if args.action == "show":
        d = next((x for x in letters if x.id == args.id), None)
        if d is None:
            print(f"no dead letter {args.id} on {settings.topic_deadletter}", file=sys.stderr)
            return 1
        if args.raw:
            sys.stdout.buffer.write(d.value or b"")
            return 0
        print(f"dead letter {d.id} on {settings.topic_deadletter}")
        for k, v in d.headers.items():
            print(f"  {k}: {v}")
        print(f"  key: {d.key!r}")
        text = (d.value or b"").decode("utf-8", "replace")
        print(f"original value ({len(d.value or b'')} bytes):")
        print(text if len(text) <= 20000 else text[:20000] + " …")
        return 0
    chosen = [d for d in letters if _matches(d, args)]
    if args.action == "list":
        if not chosen:
            print(f"no dead letters on {settings.topic_deadletter}" + (" matching the filters" if letters else ""))
            return 0
        producer = _producer(settings)
        try:
            replayed = read_replayed(settings, producer)
        finally:
            producer.close(10)
        print(f"{'ID':<12} {'DEAD-LETTERED (UTC)':<20} {'REASON':<26} {'MODEL':<20} {'EVENTS':>6}  DETAIL")
        for d in chosen:
            mark = " [replayed]" if d.id in replayed else ""
            print(
                f"{d.id:<12} {_when(d.h('dw-time')):<20} {d.h('dw-reason'):<26} {d.model[:20]:<20} "
                f"{d.h('dw-events'):>6}  {d.h('dw-detail')[:100]}{mark}"
            )
        return 0
    return _replay(settings, args, letters, chosen)


def _replay(settings: Settings, args: argparse.Namespace, letters: list[Letter], chosen: list[Letter]) -> int:
    from streams.worker.monitors import ConfigError, load_monitors

    if args.ids:
        ids = set(args.ids)
        unknown = ids - {d.id for d in letters}
        if unknown:
            print(f"no dead letter(s) {sorted(unknown)} on {settings.topic_deadletter}", file=sys.stderr)
            return 1
        chosen = [d for d in chosen if d.id in ids]
    elif not (args.all or args.reason or args.model):
        print("say which dead letters to replay: IDs, --reason, --model or --all", file=sys.stderr)
        return 2
    try:
        monitors = load_monitors(args.monitors or settings.monitors)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    producer = _producer(settings)
    sent = skipped = 0
    try:
        replayed = read_replayed(settings, producer)
        ledger = ledger_topic(settings)
        for d in chosen:
            if d.id in replayed and not args.again:
                print(f"skip {d.id}: replayed before ({replayed[d.id].get('time', '?')}); --again sends it again")
                skipped += 1
                continue
            try:
                value = replay_value(d)
            except ValueError as e:
                print(f"skip {d.id}: cannot cut its dead rows out ({e})")
                skipped += 1
                continue
            why = still_dead(d, value, monitors)
            if why is not None and not args.force:
                print(f"skip {d.id}: the current config would dead-letter it again ({why}); fix the config or --force")
                skipped += 1
                continue
            topic = d.h("dw-source-topic") or settings.topic_inferences
            if args.dry_run:
                print(
                    f"would send {d.id} ({d.h('dw-reason')}, model {d.model}, {d.h('dw-events')} event(s)) to {topic}"
                )
                continue
            origin = f"{settings.topic_deadletter}:{d.id}"
            meta = producer.send(topic, key=d.key, value=value, headers=[(REPLAY_HEADER, origin.encode())]).get(30)
            record = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "topic": topic,
                "partition": meta.partition,
                "offset": meta.offset,
                "reason": d.h("dw-reason"),
                "model": d.h("dw-model"),
            }
            producer.send(ledger, key=d.id.encode(), value=json.dumps(record).encode(), partition=0).get(30)
            print(
                f"sent {d.id} ({d.h('dw-reason')}, model {d.model}, {d.h('dw-events')} event(s)) to "
                f"{topic}[{meta.partition}]@{meta.offset}"
            )
            sent += 1
    finally:
        producer.close(10)
    print(f"{sent} replayed, {skipped} skipped" + (" (dry run)" if args.dry_run else ""))
    return 0
