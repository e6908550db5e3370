"""Synthetic benchmark traffic: 20-feature models, SDK column batches, pre-produced.

Why its own module: the floor, the naive baseline and the real worker must read
*the same messages*, so the traffic is generated once per topic, deterministically
(seeded), and described by a :class:`Traffic` the phases share.

The model has 15 numeric features (``n0``..``n14``, normal, rounded to 3
decimals) and 5 categorical ones (``c0``..``c4``, 6 levels with skewed
probabilities), a binary classification label as prediction, a source id.
Messages are :class:`streams.wire.schemas.InferenceBatch` objects (the SDK's wire
format: JSON, or with ``wire="arrow"`` the SDK's Arrow IPC encoding of the same batch,
marked by its content-type header) of ``batch_events`` events, key = model id. Model ids are chosen so the
default (murmur2) partitioner spreads them evenly over the partitions, so two
workers get the same load.

>>> ids = balanced_model_ids(8, 4)
>>> sorted(partition_for(m, 4) for m in ids)
[0, 0, 1, 1, 2, 2, 3, 3]
>>> payload = batch_payload(Traffic(models=ids), ids[0], 0, 10)
>>> from streams.wire.schemas import InferenceBatch
>>> len(InferenceBatch.model_validate_json(payload).event_id)
10
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import yaml
from kafka.partitioner.default import murmur2

N_NUMERIC = 15
N_CATEGORICAL = 5
NUMERIC = tuple(f"n{i}" for i in range(N_NUMERIC))
CATEGORICAL = tuple(f"c{i}" for i in range(N_CATEGORICAL))
LEVELS = np.array(["a", "b", "c", "d", "e", "f"], dtype=object)
LEVEL_P = np.array([0.3, 0.25, 0.2, 0.12, 0.08, 0.05])
SOURCES = np.array([f"s{i}" for i in range(16)], dtype=object)


def partition_for(key: str, partitions: int) -> int:
    """The partition the Java/kafka-python/aiokafka default partitioner picks for ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def balanced_model_ids(n_models: int, partitions: int, prefix: str = "bench-m") -> list[str]:
    """``n_models`` ids, as evenly spread over ``partitions`` as the count allows."""
    per = -(-n_models // partitions)
    taken: dict[int, int] = {}
    out: list[str] = []
    i = 0
    while len(out) < n_models:
        name = f"{prefix}{i}"
        p = partition_for(name, partitions)
        if taken.get(p, 0) < per:
            taken[p] = taken.get(p, 0) + 1
            out.append(name)
        i += 1
    return out


@dataclass(frozen=True)
class Traffic:
    """What a benchmark topic holds: ``events`` spread evenly over ``models``."""

    models: list[str]
    events: int = 0
    batch_events: int = 1000
    seed: int = 7
    base_time: float = field(default_factory=lambda: float(int(time.time()) - 86_400))
    wire: str = "json"  # "json" or "arrow" (streams.wire.contract.WIRE_FORMATS)

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """The headers every message of this traffic carries (the SDK's: a content type for Arrow)."""
        from streams.wire.producer import batch_encoder

        return list(batch_encoder(self.wire)[1])

    @property
    def per_model(self) -> int:
        return self.events // len(self.models)

    @property
    def messages(self) -> int:
        return len(self.models) * (-(-self.per_model // self.batch_events))


def batch_payload(traffic: Traffic, model_id: str, start: int, n: int, rng: np.random.Generator | None = None) -> bytes:
    """One InferenceBatch message (in ``traffic.wire``) with the model's events ``start``..``start+n``."""
    rng = rng or np.random.default_rng((traffic.seed, start))
    idx = np.arange(start, start + n)
    mu = np.linspace(-2.0, 2.0, N_NUMERIC)[:, None]
    sd = np.linspace(0.5, 3.0, N_NUMERIC)[:, None]
    num = np.round(rng.normal(mu, sd, size=(N_NUMERIC, n)), 3)
    cats = LEVELS[rng.choice(len(LEVELS), size=(N_CATEGORICAL, n), p=LEVEL_P)]
    score = 1.0 / (1.0 + np.exp(-(num[0] - num[3] + 0.5 * num[7])))
    label = np.where(score > 0.5, "1", "0").astype(object)
    doc = {
        "schema_version": 1,
        "type": "inference_batch",
        "model_id": model_id,
        "model_version": "1",
        "event_id": [f"{model_id[-3:]}-{i:x}" for i in idx.tolist()],
        "event_time": event_times(traffic, start, n),
        "source_id": SOURCES[rng.integers(0, len(SOURCES), n)].tolist(),
        "features": {
            **{name: num[k] for k, name in enumerate(NUMERIC)},
            **{name: cats[k].tolist() for k, name in enumerate(CATEGORICAL)},
        },
        "prediction": {"label": label.tolist()},
    }
    if traffic.wire != "json":  # the SDK's own encoder, from the Python lists the SDK would hold
        from streams.wire.producer import batch_encoder

        doc["event_time"] = doc["event_time"].tolist()
        doc["features"] = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in doc["features"].items()}
        return batch_encoder(traffic.wire)[0](doc)
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


#: a model's events per second of event time (:func:`event_times`)
EVENTS_PER_SECOND = 1000


def event_times(traffic: Traffic, start: int, n: int) -> np.ndarray:
    """The event times (epoch s) of a model's events ``start``..``start+n``: one per millisecond."""
    return np.round(traffic.base_time + np.arange(start, start + n) * (1.0 / EVENTS_PER_SECOND), 3)


def iter_messages(traffic: Traffic):
    """``(key, value, n_events)`` in production order: round-robin over the models."""
    rng = np.random.default_rng(traffic.seed)
    per = traffic.per_model
    for start in range(0, per, traffic.batch_events):
        n = min(traffic.batch_events, per - start)
        for m in traffic.models:
            yield m.encode(), batch_payload(traffic, m, start, n, rng), n


def single_event_payloads(batch: bytes) -> list[bytes]:
    """Split a JSON column batch into InferenceEvent messages (one event each), for the naive baseline."""
    doc = orjson.loads(batch)
    out = []
    feats = doc["features"]
    names = list(feats)
    for i in range(len(doc["event_id"])):
        out.append(
            orjson.dumps(
                {
                    "schema_version": 1,
                    "type": "inference",
                    "event_id": doc["event_id"][i],
                    "model_id": doc["model_id"],
                    "model_version": doc["model_version"],
                    "event_time": doc["event_time"][i],
                    "source_id": doc["source_id"][i],
                    "features": {k: feats[k][i] for k in names},
                    "prediction": {"label": doc["prediction"]["label"][i]},
                }
            )
        )
    return out


def produce(
    bootstrap: str,
    topic: str,
    messages,
    *,
    client_options: dict | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> dict[str, float]:
    """Send ``(key, value, n_events)`` tuples (or ``(key, value, n_events, partition)``) to ``topic`` with
    kafka-python, each with ``headers``; wait for all acks.

    Returns messages, events, bytes and seconds. Raises on any delivery error.
    """
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=5,
        batch_size=1 << 20,
        max_request_size=8 << 20,
        client_id="driftwatch-bench-producer",
        **(client_options or {}),
    )
    t0 = time.perf_counter()
    n_msg = n_ev = n_bytes = 0
    futures = []
    try:
        for key, value, n, *partition in messages:
            futures.append(
                producer.send(
                    topic, key=key, value=value, partition=partition[0] if partition else None, headers=headers or None
                )
            )
            n_msg += 1
            n_ev += n
            n_bytes += len(value)
            if len(futures) >= 2000:
                for f in futures:
                    f.get(timeout=60)
                futures.clear()
        producer.flush(timeout=120)
        for f in futures:
            f.get(timeout=60)
    finally:
        producer.close(timeout=10)
    return {"messages": n_msg, "events": n_ev, "bytes": n_bytes, "seconds": time.perf_counter() - t0}


class PacedProducer:
    """Produce a :class:`Traffic`'s messages live, at ``rate`` events/s, from a background thread.

    Why: the SIGKILL and soak phases need traffic that arrives while the worker runs (a pre-produced
    topic measures catch-up, not a steady state). ``messages``/``events`` count what was handed to the
    producer so far, ``by_partition`` the messages per partition (the default partitioner's choice
    for the model id), so ``by_partition[p] - committed[p]`` is a consumer lag that does not depend
    on the broker's end offsets (tansu reports them wrong). ``stop()`` ends early; ``done`` is set
    when the thread ends, ``failure`` holds what made it end abnormally.
    """

    def __init__(self, bootstrap: str, topic: str, traffic: Traffic, rate: float, partitions: int) -> None:
        self.bootstrap, self.topic, self.traffic, self.rate = bootstrap, topic, traffic, rate
        self.partition_of = {m.encode(): partition_for(m, partitions) for m in traffic.models}
        self.messages = self.events = 0
        self.by_partition: dict[int, int] = dict.fromkeys(range(partitions), 0)
        self.done = threading.Event()
        self.failure: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-paced-traffic", daemon=True)

    def start(self) -> PacedProducer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _paced(self):
        t0 = time.monotonic()
        due = 0.0  # events handed over so far, for the schedule
        for key, value, n in iter_messages(self.traffic):
            if self._stop.is_set():
                return
            time.sleep(max(0.0, t0 + due / self.rate - time.monotonic()))
            yield key, value, n
            due += n
            self.messages += 1
            self.events += n
            self.by_partition[self.partition_of[key]] += 1

    def _run(self) -> None:
        try:
            produce(self.bootstrap, self.topic, self._paced(), headers=self.traffic.headers)
        except BaseException as e:
            self.failure.append(e)
        finally:
            self.done.set()


def monitor_config(
    traffic: Traffic, window: int | None = 5000, reference: int = 5000, window_extra: dict | None = None
) -> dict:
    """The monitor config (``streams.worker.monitors`` shape) the worker runs for the bench models.

    ``window``: count windows of that many events; None with ``size_seconds`` in ``window_extra``
    for event-time windows. ``window_extra``: more ``window`` settings (e.g. ``summary_min_events``)."""
    features = [{"name": n, "kind": "numeric", "min": -50.0, "max": 50.0} for n in NUMERIC]
    features += [{"name": c, "kind": "categorical", "allowed": LEVELS.tolist()} for c in CATEGORICAL]
    size = {} if window is None else {"size_events": window}
    return {
        "models": [
            {
                "model_id": m,
                "task": "classification",
                "features": features,
                "window": {**size, "idle_close_seconds": 600.0, **(window_extra or {})},
                "reference": {"first_n": reference},
                "drift": {"p_val": 0.05, "correction": "bonferroni"},
            }
            for m in traffic.models
        ]
    }


def write_monitor_config(
    path: Path, traffic: Traffic, window: int | None = 5000, reference: int = 5000, window_extra: dict | None = None
) -> Path:
    """Write :func:`monitor_config` as YAML and validate it with the real loader."""
    from streams.worker.monitors import load_monitors

    path.write_text(yaml.safe_dump(monitor_config(traffic, window, reference, window_extra), sort_keys=False))
    load_monitors(path)
    return path
