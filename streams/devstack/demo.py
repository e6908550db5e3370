# size: the demo command: options, validation, the sender loop and its summary in one place
"""``driftwatch demo``: realistic traffic for two models, with drift, breaks and garbage on demand.

Two models are trained at start-up on datasets that ship with scikit-learn (no download):

* ``wine`` — a classifier (standard-scaled logistic regression, 3 cultivars, 13 numeric
  inputs) on :func:`sklearn.datasets.load_wine`, plus two derived categorical features
  (``alcohol_level``: low/medium/high, ``color_shade``: pale/ruby/deep);
  predictions carry a label and class probabilities;
* ``diabetes`` — a regression (standard-scaled ridge, disease progression one year
  on) on :func:`sklearn.datasets.load_diabetes` in its original units, with ``sex``
  and a derived ``bmi_class`` as categoricals; predictions carry a value.

Traffic is a smoothed bootstrap of each dataset (a random row plus Gaussian jitter of
``jitter`` standard deviations per feature — a kernel density sample), from 20
client ids with skewed volumes, at ``--rate`` events/s per model. True labels follow
``--label-delay`` seconds later for a ``--label-fraction`` of the events. Valid
events go through the SDK (:class:`streams.wire.producer.DriftwatchProducer`); malformed
bytes through a raw kafka-python producer.

What goes wrong, and when, is a list of **scenarios** (:data:`~streams.devstack.scenarios.SCENARIOS`). The
built-ins have their own flags (``--drift-at``, ``--quality-break-at``,
``--malformed-rate``, ``--concept-drift-at``); any registered scenario also runs with
``--scenario NAME:key=value,key=value`` (lists use ``+``: ``features=alcohol+hue``).
``driftwatch demo --list-scenarios`` prints them with their parameters.

Adding one (in ``streams/devstack/scenarios.py``, ``streams/devstack/attacks.py``, or a new module
that this file imports beside ``attacks``: a scenario registers itself when its module is imported)::

    @register_scenario
    class Probe(Scenario):
        name = "probe"
        help = "one client queries uniformly random inputs"
        share: float = param(0.2, "extra events, as a share of the normal traffic")

        def on_inputs(self, batch, rng):          # before the model predicts
            m = batch.model
            n = int(round(len(batch) * self.share))
            X = rng.uniform(m.X.min(axis=0), m.X.max(axis=0), (n, m.n_inputs))
            batch.extend(m.finish_inputs(X), source_id="attacker-1")   # no true labels for these
            self.count(batch, "probe_events", n)

Hooks (all optional, each gets the :class:`TickBatch` of one model and the
scenario's own random generator): ``on_inputs`` (change what the model sees),
``on_features`` (change what is logged, after prediction), ``on_labels`` (change the
truth), ``on_messages`` (return extra raw :class:`ScenarioMessage` bytes). A scenario runs while
``at <= t < until`` (seconds since the demo started) for the models in ``models``.

The run is deterministic given ``--seed`` (same events, predictions, labels, ids,
malformed bytes); only wall-clock times differ. Without ``--seed`` a random seed is
drawn (and printed), so two runs never reuse event ids.

From Python: ``run_demo(settings, DemoOptions(rate=500, events=1000)) -> DemoSummary``.
"""

from __future__ import annotations

import argparse
import logging
import math
import secrets
import signal
import sys
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.errors import ServiceError
from streams.devstack import attacks  # noqa: F401 - its scenarios register themselves with the table
from streams.devstack.models import (
    MODEL_BUILDERS,
    PROBA_DECIMALS,
    VALUE_DECIMALS,
    DemoModel,
    build_models,
    column_list,
    reference_path,
    write_reference_csv,
)
from streams.devstack.scenarios import (
    SCENARIOS,
    ConceptDrift,
    DataDriftScenario,
    Malformed,
    QualityBreak,
    Scenario,
    ScenarioMessage,
    TickBatch,
    not_none,
    parse_scenario,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

TICK_SECONDS = 0.05  # target pacing granularity


# ============================================================================ options & summary
@dataclass
class DemoOptions:
    """Everything ``driftwatch demo`` can be told (see ``--help`` for each)."""

    models: list[str] = field(default_factory=lambda: list(MODEL_BUILDERS))
    rate: float = 200.0  # events/s per model
    duration: float | None = None  # seconds (scenario clock)
    events: int | None = None  # per model (normal traffic; scenario extras come on top)
    label_delay: float = 5.0
    label_fraction: float = 0.5
    seed: int | None = None
    sources: int = 20
    pace: bool = True  # False: as fast as possible on a simulated clock
    start_time: float | None = None  # simulated clock's start, epoch seconds (pace=False only; default now)
    drift_at: float | None = None
    drift_features: list[str] | None = None
    drift_shift: float = 1.0
    quality_break_at: float | None = None
    quality_features: list[str] | None = None
    malformed_rate: float = 0.0
    concept_drift_at: float | None = None
    concept_flip: float = 0.4
    concept_shift: float = 1.0
    scenarios: list[Scenario | str] = field(default_factory=list)
    create_topics: bool = True
    progress_every: float = 10.0  # seconds between progress log lines (0: none)
    producer_options: dict[str, Any] = field(default_factory=dict)

    def build_scenarios(self) -> list[Scenario]:
        """The built-in flags as scenarios, then the explicit ones."""
        out: list[Scenario] = []
        if self.drift_at is not None:
            out.append(DataDriftScenario(at=self.drift_at, features=self.drift_features, shift=self.drift_shift))
        if self.quality_break_at is not None:
            out.append(QualityBreak(at=self.quality_break_at, features=self.quality_features))
        if self.malformed_rate:
            out.append(Malformed(rate=self.malformed_rate))
        if self.concept_drift_at is not None:
            out.append(ConceptDrift(at=self.concept_drift_at, flip=self.concept_flip, shift=self.concept_shift))
        for s in self.scenarios:
            out.append(parse_scenario(s) if isinstance(s, str) else s)
        return out


@dataclass
class DemoSummary:
    """What a demo run published."""

    seed: int
    elapsed_s: float  # start to finish, including the wait for the last labels
    events: dict[str, int]  # per model, as handed to the SDK
    labels: dict[str, int]
    malformed: dict[str, int]  # per kind
    malformed_by_topic: dict[str, int]
    scenarios: list[str]
    counters: dict[str, int]  # "<scenario>.<model>.<key>" -> n
    producer: dict[str, int]  # DriftwatchProducer.stats()
    raw_failed: int = 0
    traffic_s: float = 0.0  # start to the last inference event
    interrupted: bool = False
    delivered: bool = True  # SDK flush and raw flush completed

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def total_labels(self) -> int:
        return sum(self.labels.values())

    @property
    def total_malformed(self) -> int:
        return sum(self.malformed.values())

    def format(self) -> str:
        span = self.traffic_s or self.elapsed_s
        rate = self.total_events / span if span > 0 else 0.0
        lines = [
            f"demo {'interrupted' if self.interrupted else 'done'} after {self.elapsed_s:.1f} s (seed {self.seed}): "
            f"{self.total_events} events ({rate:.0f}/s over {span:.1f} s), {self.total_labels} labels, "
            f"{self.total_malformed} malformed messages"
        ]
        for m in self.events:
            lines.append(f"  {m:<10} {self.events[m]:>9} events {self.labels.get(m, 0):>9} labels")
        if self.malformed:
            lines.append("  malformed: " + ", ".join(f"{k} {v}" for k, v in sorted(self.malformed.items())))
        if self.scenarios:
            lines.append("  scenarios: " + "; ".join(self.scenarios))
        p = self.producer
        lost = p.get("dropped_buffer_full", 0) + p.get("failed", 0) + p.get("dropped_closed", 0) + self.raw_failed
        lines.append(
            f"  delivered: {p.get('inferences_delivered', 0)} events, {p.get('labels_delivered', 0)} labels "
            f"in {p.get('messages_delivered', 0)} messages; lost {lost}"
            + ("" if self.delivered else " (flush timed out: some may still be in flight)")
        )
        return "\n".join(lines)


# ============================================================================ the run
class _Stream:
    """One model's traffic generator (its own random generator, ids and sources)."""

    def __init__(self, model: DemoModel, index: int, seed: int, n_sources: int) -> None:
        self.model = model
        self.rng = np.random.default_rng([seed, index, 0])
        tag = int(np.random.default_rng([seed, index, 1]).integers(1 << 32))
        self.id_prefix = f"{model.model_id}-{tag:08x}-"
        self.seq = 0
        n_sources = max(1, n_sources)
        self.sources = np.asarray([f"client-{i + 1:02d}" for i in range(n_sources)], dtype=object)
        w = 1.0 / np.arange(1, n_sources + 1)  # Zipf-like: a few heavy clients
        self.source_p = w / w.sum()
        self.sent = 0  # normal traffic
        self.extra = 0  # rows added by scenarios
        self.labels = 0

    def batch(self, t: float, times: np.ndarray, label_fraction: float) -> TickBatch:
        n = len(times)
        X, y = self.model.sample(self.rng, n)
        src = self.sources[self.rng.choice(len(self.sources), n, p=self.source_p)]
        mask = self.rng.random(n) < label_fraction
        return TickBatch(self.model, t, times, X, y, src, mask)


def _scenario_rng(seed: int, scenario: Scenario, position: int, model_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 1000 + position, zlib.crc32(scenario.name.encode()), model_index])


class _Sender:
    """Publishes one tick: SDK for valid events and labels, raw producer for garbage.

    ``client_factory`` replaces kafka-python's ``KafkaProducer`` for both (tests).
    """

    def __init__(
        self, settings: Settings, options: DemoOptions, client_factory: Callable[..., Any] | None = None
    ) -> None:
        from streams.wire.producer import DriftwatchProducer

        kw: dict[str, Any] = {"linger_ms": 100.0, "max_buffer_events": 1_000_000, "client_id": "driftwatch-demo"}
        kw.update(options.producer_options)
        self.settings = settings
        self.client_factory = client_factory
        self.dw = DriftwatchProducer(settings=settings, client_factory=client_factory, **kw)
        self._raw: Any = None
        self.raw_futures: list[Any] = []
        self.raw_failed = 0
        self.malformed: Counter = Counter()
        self.malformed_by_topic: Counter = Counter()

    def inferences(self, b: TickBatch, ids: list[str]) -> None:
        m = b.model
        names = list(b.features)
        cols = [column_list(b.features[k]) for k in names]
        rows = [dict(zip(names, vals)) for vals in zip(*cols)] if names else [{} for _ in ids]
        times = b.event_time.tolist()
        srcs = b.source_id.tolist()
        send = self.dw.send_inference
        if m.task == "classification":
            labels = b.pred["label"].tolist()
            proba = np.round(b.pred["proba"], PROBA_DECIMALS).tolist()
            classes = m.classes
            for i, eid in enumerate(ids):
                send(
                    m.model_id,
                    rows[i],
                    {"label": labels[i], "probabilities": dict(zip(classes, proba[i]))},
                    event_id=eid,
                    event_time=times[i],
                    model_version=m.version,
                    source_id=srcs[i],
                )
        else:
            values = np.round(b.pred["value"], VALUE_DECIMALS).tolist()
            for i, eid in enumerate(ids):
                send(
                    m.model_id,
                    rows[i],
                    {"value": values[i]},
                    event_id=eid,
                    event_time=times[i],
                    model_version=m.version,
                    source_id=srcs[i],
                )

    def labels(self, model_id: str, ids: list[str], labels: list[Any], label_time: float) -> None:
        send = self.dw.send_label
        for eid, lab in zip(ids, labels):
            send(model_id, eid, lab, label_time=label_time)

    def raw(self, msg: ScenarioMessage) -> None:
        if self._raw is None:
            from kafka import KafkaProducer

            self._raw = (self.client_factory or KafkaProducer)(
                bootstrap_servers=self.settings.kafka_bootstrap.split(","),
                client_id="driftwatch-demo-raw",
                linger_ms=20,
                **self.settings.kafka_client_options(),
            )
        topic = self.settings.topic_labels if msg.topic == "labels" else self.settings.topic_inferences
        self.raw_futures.append(self._raw.send(topic, value=msg.value, key=msg.key))
        self.malformed[msg.kind] += 1
        self.malformed_by_topic[topic] += 1
        if len(self.raw_futures) > 10_000:
            self._reap(block=False)

    def _reap(self, block: bool) -> None:
        keep = []
        for f in self.raw_futures:
            if block or f.is_done:
                try:
                    f.get(timeout=30)
                except Exception as e:  # counted and reported
                    self.raw_failed += 1
                    log.warning("demo: raw message not delivered: %s", e)
            else:
                keep.append(f)
        self.raw_futures = keep

    def close(self, timeout: float = 30.0) -> bool:
        ok = self.dw.close(timeout)
        if self._raw is not None:
            try:
                self._raw.flush(timeout=timeout)
            except Exception as e:
                log.warning("demo: raw producer flush failed: %s", e)
                ok = False
            self._reap(block=True)
            self._raw.close(timeout=5)
        return ok and self.raw_failed == 0


def run_demo(
    settings: Settings | None = None,
    options: DemoOptions | None = None,
    stop: threading.Event | None = None,
    client_factory: Callable[..., Any] | None = None,
) -> DemoSummary:
    """Publish demo traffic until ``events``/``duration`` is reached or ``stop`` is set.

    Returns what was sent. Raises ValueError for bad options (before anything is sent).
    ``KeyboardInterrupt`` ends the run early: the SDK is flushed and the summary says so.
    ``client_factory`` stands in for kafka-python's ``KafkaProducer`` (tests without a
    broker; topics are then not created).
    """
    settings = settings or Settings()
    opts = options or DemoOptions()
    _validate(opts)
    seed = opts.seed if opts.seed is not None else secrets.randbits(31)
    models = build_models(opts.models)
    scenarios = opts.build_scenarios()
    for s in scenarios:
        s.setup(models)
    if opts.create_topics and client_factory is None:
        from streams.broker.admin import ensure_topics

        ensure_topics(settings)
    snd = _Sender(settings, opts, client_factory)
    streams = [_Stream(m, i, seed, opts.sources) for i, m in enumerate(models.values())]
    srngs = {(si, mi): _scenario_rng(seed, s, si, mi) for si, s in enumerate(scenarios) for mi in range(len(streams))}
    stop = stop or threading.Event()

    chunk = max(1, int(round(opts.rate * TICK_SECONDS)))
    dt = chunk / opts.rate
    wall0 = opts.start_time if opts.start_time is not None else time.time()
    mono0 = time.monotonic()
    pending: deque[tuple[float, str, list[str], list[Any]]] = deque()  # (due t, model, ids, labels)
    k = 0
    traffic_s = 0.0
    interrupted = False
    last_progress = mono0
    log.info(
        "demo: models %s at %.0f events/s each, seed %d, scenarios: %s",
        ", ".join(models),
        opts.rate,
        seed,
        "; ".join(s.describe() for s in scenarios) or "none",
    )

    def send_due_labels(now_t: float) -> None:
        while pending and pending[0][0] <= now_t:
            _due, model_id, ids, labs = pending.popleft()
            snd.labels(model_id, ids, labs, wall0 + _due)

    try:
        while not stop.is_set():
            t = k * dt
            if opts.duration is not None and t >= opts.duration:
                break
            if opts.events is not None and all(s.sent >= opts.events for s in streams):
                break
            if opts.pace:
                wait = mono0 + t - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
            for mi, st in enumerate(streams):
                n = chunk if opts.events is None else min(chunk, opts.events - st.sent)
                if n <= 0:
                    continue
                times = wall0 + t + np.arange(n) / opts.rate
                b = st.batch(t, times, opts.label_fraction)
                active = [(si, s) for si, s in enumerate(scenarios) if s.applies(st.model, t)]
                for si, s in active:
                    s.on_inputs(b, srngs[si, mi])
                b.pred = st.model.predict(b.X)
                b.features = st.model.derive(b.X)
                for si, s in active:
                    s.on_features(b, srngs[si, mi])
                for si, s in active:
                    s.on_labels(b, srngs[si, mi])
                raws = [r for si, s in active for r in s.on_messages(b, srngs[si, mi])]
                ids = [f"{st.id_prefix}{st.seq + i:09d}" for i in range(len(b))]
                st.seq += len(b)
                st.sent += n
                st.extra += len(b) - n
                snd.inferences(b, ids)
                for r in raws:
                    snd.raw(r)
                mask = b.label_mask & _has_truth(b)
                if mask.any():
                    sel = np.flatnonzero(mask)
                    truth = b.y_true[sel]
                    labs: list[Any] = (
                        np.round(truth.astype(float), 3).tolist()
                        if st.model.task == "regression"
                        else [str(x) for x in truth]
                    )
                    pending.append((t + opts.label_delay, st.model.model_id, [ids[i] for i in sel], labs))
                    st.labels += len(sel)
            send_due_labels(t)
            traffic_s = time.monotonic() - mono0
            k += 1
            if opts.progress_every and time.monotonic() - last_progress >= opts.progress_every:
                last_progress = time.monotonic()
                el = last_progress - mono0
                log.info("demo: t=%.0fs %s", el, ", ".join(f"{s.model.model_id} {s.sent}" for s in streams))
        # the labels still owed: wait for them (paced), or send them at once (simulated clock)
        while pending and not stop.is_set():
            due = pending[0][0]
            if opts.pace:
                wait = mono0 + due - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
            send_due_labels(due)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        snd.close(timeout=5.0)  # deliver what was sent before the error, then let it propagate
        raise
    # labels never published are not counted
    for _due, model_id, ids, _labs in pending:
        for st in streams:
            if st.model.model_id == model_id:
                st.labels -= len(ids)
    interrupted = interrupted or stop.is_set()
    elapsed = time.monotonic() - mono0
    delivered = snd.close(timeout=5.0 if interrupted else 30.0)
    stats = snd.dw.stats().as_dict()
    counters: dict[str, int] = {}
    for s in scenarios:
        for (model_id, key), v in sorted(s.counters.items()):
            counters[f"{s.name}.{model_id}.{key}"] = counters.get(f"{s.name}.{model_id}.{key}", 0) + v
    return DemoSummary(
        seed=seed,
        elapsed_s=elapsed,
        events={s.model.model_id: s.sent + s.extra for s in streams},
        labels={s.model.model_id: s.labels for s in streams},
        malformed=dict(snd.malformed),
        malformed_by_topic=dict(snd.malformed_by_topic),
        scenarios=[s.describe() for s in scenarios],
        counters=counters,
        producer=stats,
        raw_failed=snd.raw_failed,
        traffic_s=traffic_s,
        interrupted=interrupted,
        delivered=delivered,
    )


def _has_truth(b: TickBatch) -> np.ndarray:
    if b.model.task == "regression":
        return np.isfinite(b.y_true.astype(float))
    return not_none(b.y_true)


def _validate(o: DemoOptions) -> None:
    if not o.rate > 0 or not math.isfinite(o.rate):
        raise ValueError(f"rate: must be > 0 events/s, got {o.rate}")
    if o.duration is not None and o.duration < 0:
        raise ValueError(f"duration: must be >= 0, got {o.duration}")
    if o.events is not None and o.events < 0:
        raise ValueError(f"events: must be >= 0, got {o.events}")
    if o.label_delay < 0:
        raise ValueError(f"label_delay: must be >= 0, got {o.label_delay}")
    if not 0 <= o.label_fraction <= 1:
        raise ValueError(f"label_fraction: must be in [0, 1], got {o.label_fraction}")
    if not o.malformed_rate >= 0:
        raise ValueError(f"malformed_rate: must be >= 0, got {o.malformed_rate}")
    if o.start_time is not None and o.pace:
        raise ValueError("start_time: only with pace=False (--no-pace); paced events carry the real time")
    if o.sources < 1:
        raise ValueError(f"sources: must be >= 1, got {o.sources}")
    if not o.models:
        raise ValueError("models: name at least one demo model")


# ============================================================================ CLI
def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("traffic")
    g.add_argument(
        "--models",
        type=_csv_list,
        default=list(MODEL_BUILDERS),
        help=f"demo models, comma separated (default: {','.join(MODEL_BUILDERS)})",
    )
    g.add_argument("--rate", type=float, default=200.0, help="events per second per model (default 200)")
    stop = g.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    stop.add_argument("--events", type=int, help="stop after this many events per model")
    g.add_argument("--label-delay", type=float, default=5.0, help="seconds until a true label is published (default 5)")
    g.add_argument("--label-fraction", type=float, default=0.5, help="share of events that get a label (default 0.5)")
    g.add_argument("--sources", type=int, default=20, help="number of client ids (default 20)")
    g.add_argument("--seed", type=int, help="random seed: same seed, same traffic (default: random, printed)")
    g.add_argument(
        "--no-pace",
        dest="pace",
        action="store_false",
        help="send as fast as possible; event times follow a simulated clock at --rate",
    )
    g.add_argument(
        "--start-time", type=float, help="with --no-pace: the simulated clock's start, epoch seconds (default: now)"
    )
    s = parser.add_argument_group("scenarios (times are seconds after the start)")
    s.add_argument("--drift-at", type=float, help="data drift starts at this time")
    s.add_argument(
        "--drift-features",
        type=_csv_list,
        help="inputs that drift (default: wine alcohol,color_intensity; diabetes bmi,bp)",
    )
    s.add_argument("--drift-shift", type=float, default=1.0, help="drift size in standard deviations (default 1.0)")
    s.add_argument("--quality-break-at", type=float, help="nulls / out-of-range / wrong types start at this time")
    s.add_argument(
        "--quality-features",
        type=_csv_list,
        help="features that break (default: wine magnesium,alcohol_level; diabetes s5,bmi_class)",
    )
    s.add_argument("--malformed-rate", type=float, default=0.0, help="malformed messages per valid event (e.g. 0.01)")
    s.add_argument("--concept-drift-at", type=float, help="true labels change at this time")
    s.add_argument(
        "--concept-flip",
        type=float,
        default=0.4,
        help="classifier: share of labels moved to another class (default 0.4)",
    )
    s.add_argument(
        "--concept-shift", type=float, default=1.0, help="regression: target shift in standard deviations (default 1.0)"
    )
    s.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME[:k=v,...]",
        help="run a registered scenario (repeatable); see --list-scenarios",
    )
    s.add_argument("--list-scenarios", action="store_true", help="list the scenarios and their parameters, then exit")
    o = parser.add_argument_group("other")
    o.add_argument("--bootstrap", help="Kafka bootstrap servers (default: DRIFTWATCH_KAFKA_BOOTSTRAP)")
    o.add_argument(
        "--no-create-topics", dest="create_topics", action="store_false", help="do not create missing topics first"
    )
    o.add_argument(
        "--write-reference",
        type=Path,
        metavar="DIR",
        help="write each model's reference CSV (<model>_reference.csv) into DIR and exit",
    )
    o.add_argument("--quiet", action="store_true", help="no progress lines")


def list_scenarios() -> str:
    lines = []
    for name, cls in sorted(SCENARIOS.items()):
        lines.append(f"{name}: {cls.help}")
        for key, p in {**Scenario.COMMON, **cls.params}.items():
            lines.append(f"    {key} ({p.type.__name__}, default {p.default}): {p.help}")
    return "\n".join(lines)


def options_from_args(args: argparse.Namespace) -> DemoOptions:
    return DemoOptions(
        models=args.models,
        rate=args.rate,
        duration=args.duration,
        events=args.events,
        label_delay=args.label_delay,
        label_fraction=args.label_fraction,
        seed=args.seed,
        sources=args.sources,
        pace=args.pace,
        start_time=args.start_time,
        drift_at=args.drift_at,
        drift_features=args.drift_features,
        drift_shift=args.drift_shift,
        quality_break_at=args.quality_break_at,
        quality_features=args.quality_features,
        malformed_rate=args.malformed_rate,
        concept_drift_at=args.concept_drift_at,
        concept_flip=args.concept_flip,
        concept_shift=args.concept_shift,
        scenarios=list(args.scenario),
        create_topics=args.create_topics,
        progress_every=0.0 if args.quiet else 10.0,
    )


def run(args: argparse.Namespace) -> int:
    if args.list_scenarios:
        print(list_scenarios())
        return 0
    if args.write_reference:
        for m in build_models(args.models).values():
            print(write_reference_csv(m, reference_path(m.model_id, args.write_reference)))
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = Settings()
    if args.bootstrap:
        settings = settings.model_copy(update={"kafka_bootstrap": args.bootstrap})
    stop = threading.Event()
    # `driftwatch up` (and systemd, Kubernetes...) stop with SIGTERM: finish like Ctrl-C,
    # flushing what was already handed to the SDK.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        opts = options_from_args(args)
        summary = run_demo(settings, opts, stop=stop)
    except ValueError as e:
        print(f"driftwatch demo: {e}", file=sys.stderr)
        return 2
    except ServiceError as e:  # TopicError (the broker refused or is away) and friends: say it plainly
        print(f"driftwatch demo: {e}", file=sys.stderr)
        return 1
    print(summary.format())
    return 0 if summary.delivered else 1
