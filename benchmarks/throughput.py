# size: one benchmark script (stack, workers, traffic, watcher, report) run as a whole by `driftwatch bench throughput`
"""``driftwatch bench throughput``: is driftwatch fast, flat in memory, and does it scale out?

One run, on the local stack (tansu + InfluxDB 1.x started on free loopback ports
in a temporary folder), for a model with 20 features (15 numeric, 5
categorical), windows of 5,000 events, traffic pre-produced as the SDK's column
batches of 1,000 events (key = model id, 8 models spread evenly over 4
partitions) so producer speed limits nothing. Phases, all in the same run:

1. **drift** — the drift computation of one 5,000 × 20 window against its
   reference, timed in-process (median, p99), with the worker's detector code
   (``detectors.runner``) and, for scale, alibi-detect's ``TabularDrift``.
2. **floor** — a plain aiokafka consumer that only ``orjson.loads`` the same
   messages (``benchmarks/floor.py``); also with numpy columns built: issue 16's floor, to
   which ``ratio_to_floor`` compares the workers. ``--wire arrow`` produces the traffic as the
   SDK's Arrow IPC batches instead of JSON (every phase reads them; ``floor`` with pyarrow) and
   also measures the orjson floor on the same events produced as JSON to a topic of their own
   (``floor_json``): ``ratio_to_floor`` stays against the JSON floor, ``ratio_to_floor_same_wire``
   is against the floor that reads the workers' wire (the same number with ``--wire json``).
   **decode** — the decoder alone, in-process, on the same events as JSON and as Arrow
   (:mod:`benchmarks.decode_cost`): µs of CPU per event of both formats in every run.
3. **worker** — the real ``driftwatch worker`` (subprocess, one consumer
   group) consumes the whole topic: produce → consume → validate → window →
   detect → InfluxDB. The benchmark polls the ``dw_window`` points in InfluxDB:
   events counted (sum of the window counts) must equal the events produced;
   events/s is measured between the first and the last window close; the
   window-close → point-queryable latency is the time the poll first sees a
   point minus the close time the worker wrote in it; RSS (VmRSS) is sampled
   when 1M and 10M events have been counted; CPU per process over the run.
   ``--summary-min-events`` sets the models' ``window.summary_min_events`` (windows that large
   keep a mergeable summary, not their rows); ``--rows-too`` runs this phase a second time
   with summaries off (``worker_rows``), so both are measured against the same floor.
   ``--cases`` runs it again per other window kind on the same topic, against the same
   floor (e.g. ``1000000,60s``: count windows of 1M events, event-time windows of 60 s):
   ``cases`` in the JSON, each with its ratio to the floor and its latency. ``hotN`` is one hot
   model sharded over N partitions, run with one and with two workers (:mod:`benchmarks.hot_model`).
4. **scale-out** — the same traffic (a topic of ``--scale-events``), one worker,
   then two workers in one consumer group, started together.
5. **sigkill** (``--sigkill``, :mod:`benchmarks.sigkill`) — a SIGKILL in the middle of a long
   summarised window under live traffic: what the next worker re-reads (the issue's target: ~10 s
   of traffic), and whether the points equal a fault-free run's.
6. **soak** (``--soak [MINUTES]``, :mod:`benchmarks.soak`, not in CI) — live traffic at half the
   worker phase's rate for 30 minutes: worker RSS, consumer lag, windows and ERROR lines every 10 s,
   and a verdict (flat RSS after minute 5, bounded lag, no ERROR line).
7. **naive** — a per-event Faust agent that appends to a Python list and calls
   alibi-detect's ``TabularDrift`` per window (``benchmarks/naive_worker.py``
   says exactly what it does), on a bounded sample of the same events.

Prints one JSON object (progress on stderr). ``--quick`` shrinks every size for
smoke tests and CI; the default sizes are the issue's (RSS after 1M and 10M).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import procstats
from benchmarks.traffic import (
    CATEGORICAL,
    EVENTS_PER_SECOND,
    NUMERIC,
    Traffic,
    balanced_model_ids,
    event_times,
    iter_messages,
    produce,
    single_event_payloads,
    write_monitor_config,
)
from detectors import records as R
from streams.influx.influxql import quote_ident
from streams.lifetime import descendants, die_with_parent, spawn_logged

PARTITIONS = 4
#: the ``dw_window`` tags that tell two windows with the same end time apart
WINDOW_TAGS = (R.T_MODEL, R.T_VERSION, R.T_SEGMENT)


class BenchError(RuntimeError):
    """A phase could not run or did not finish; the message says which and why."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test / CI): 200k events")
    parser.add_argument("--events", type=int, help="events for the main worker run (default 10M; quick 200k)")
    parser.add_argument(
        "--scale-events", type=int, help="events for the 1-vs-2 worker run (default 2M; quick: --events)"
    )
    parser.add_argument("--floor-events", type=int, help="events the floor reads (default min(events, 2M))")
    parser.add_argument(
        "--naive-events", type=int, help="events the naive baseline processes (default 4 windows per model; quick 2)"
    )
    parser.add_argument(
        "--naive-wire",
        choices=["event", "batch"],
        default="event",
        help="naive baseline reads one event per message (default) or the same batches",
    )
    parser.add_argument(
        "--wire",
        choices=["json", "arrow"],
        default="json",
        help="wire format of the traffic the floor and the workers read: the SDK's JSON column batches "
        "(default) or its Arrow IPC batches (wire_format='arrow')",
    )
    parser.add_argument("--models", type=int, default=8, help="model ids (spread evenly over 4 partitions)")
    parser.add_argument("--window", type=int, default=5000, help="window size in events")
    parser.add_argument("--batch-events", type=int, default=1000, help="events per Kafka message")
    parser.add_argument(
        "--reference-events",
        type=int,
        default=None,
        help="first_n reference size of the bench models (default: --window)",
    )
    parser.add_argument(
        "--summary-min-events",
        default=None,
        help="window.summary_min_events of the bench models: windows this large keep a summary "
        "instead of their rows; 'off' = always rows (default: the config default)",
    )
    parser.add_argument(
        "--rows-too",
        action="store_true",
        help="run the worker phase a second time in the same run with summaries off "
        "(window.summary_min_events: null): 'worker_rows', beside 'worker'",
    )
    parser.add_argument(
        "--cases",
        default="",
        help="more worker phases on the same topic, one per window: N = count windows of N events, "
        "Ns = event-time windows of N seconds (e.g. 1000000,60s); each reported under 'cases' with "
        "its ratio to the same floor; hotN = one model sharded over N partitions, one and two workers",
    )
    parser.add_argument(
        "--rss-at",
        default=None,
        help="comma-separated event counts at which to sample worker RSS (default 1M,10M; quick 10%%,100%%)",
    )
    parser.add_argument("--drift-repeats", type=int, default=50, help="timed drift computations")
    parser.add_argument("--poll", type=float, default=0.05, help="InfluxDB poll interval, seconds")
    parser.add_argument("--stall-timeout", type=float, default=90.0, help="give up when no window lands for this long")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated phases to skip: drift,decode,floor,worker,scale,naive,hot (worker: the main "
        "5,000-event phase; --cases still run)",
    )
    parser.add_argument(
        "--worker-cmd", default=None, help="command that starts one worker (default: python -m streams.cli worker)"
    )
    parser.add_argument(
        "--worker-log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the workers (logs are under the kept temporary folder)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) after the run")
    parser.add_argument("--output", type=Path, help="also write the JSON to this file")
    from benchmarks import hot_model, sigkill, soak

    hot_model.add_arguments(parser)
    sigkill.add_arguments(parser)
    soak.add_arguments(parser)


@dataclass(frozen=True)
class Case:
    """The windows of one worker phase: count windows of ``events``, or event-time windows of ``seconds``.

    >>> Case.parse("1000000"), Case.parse("60s").name, Case.parse("hot4").shards
    (Case(name='count_1000000', events=1000000, seconds=None, shards=None), 'time_60s', 4)
    """

    name: str
    events: int | None = None
    seconds: float | None = None
    shards: int | None = None  # hotN: one model over N partitions (benchmarks/hot_model.py)

    @classmethod
    def parse(cls, spec: str) -> Case:
        spec = spec.strip().lower()
        try:
            if spec.startswith("hot"):
                n = int(spec[3:])
                if not 2 <= n <= PARTITIONS:
                    raise ValueError(spec)
                return cls(f"hot{n}", shards=n)
            if spec.endswith("s"):
                sec = float(spec[:-1])
                return cls(f"time_{sec:g}s", seconds=sec)
            n = int(float(spec))
        except ValueError:
            raise BenchError(
                f"--cases: {spec!r} is neither N (events), Ns (seconds) nor hotN (N shards, 2..{PARTITIONS})"
            ) from None
        return cls(f"count_{n}", events=n)

    def events_needed(self, models: int) -> int:
        """Events the topic must hold for each of ``models`` to close two windows of this case (0: a hot case,
        which produces its own traffic).

        A count window of N closes after N events of its model; event-time windows are aligned to the epoch
        and the traffic's first event is not, so three window lengths of events (:data:`EVENTS_PER_SECOND`
        per second of event time) close at least two whole windows whatever the start.

        >>> Case.parse("1000000").events_needed(8), Case.parse("60s").events_needed(8), Case.parse("hot4").events_needed(8)
        (16000000, 1440000, 0)
        """
        if self.events is not None:
            return 2 * self.events * models
        if self.seconds is not None:
            return int(np.ceil(3 * self.seconds * EVENTS_PER_SECOND)) * models
        return 0

    def expected(self, traffic: Traffic) -> int:
        """Events in the windows that close by themselves (a time window closes once a later event passes
        its end; the last, open one of each model is not counted: no idle close during the run)."""
        if self.seconds is None:
            return (traffic.per_model // self.events) * self.events * len(traffic.models)
        t = event_times(traffic, 0, traffic.per_model)
        closed_until = np.floor(t.max() / self.seconds) * self.seconds
        return int((t < closed_until).sum()) * len(traffic.models)


@dataclass
class Plan:
    quick: bool
    events: int
    scale_events: int
    floor_events: int
    naive_events: int
    naive_wire: str
    wire: str
    models: list[str]
    window: int
    batch_events: int
    rss_at: list[int]
    drift_repeats: int
    poll: float
    stall_timeout: float
    skip: set[str]
    worker_cmd: list[str]
    worker_log_level: str = "WARNING"
    summary_min_events: int | str | None = "default"  # "default": not written (the config default)
    reference_events: int | None = None  # None: the window size
    rows_too: bool = False
    sigkill: bool = False
    sigkill_window: int | str | None = None  # events, or 'Ns' (event-time windows); None: 1M (quick 100k)
    sigkill_rate: float | None = None  # None: 20,000 events/s (quick 10,000)
    cases: tuple[Case, ...] = ()
    soak: float | None = None  # minutes; None: no soak
    soak_rate: float | None = None  # None: half the worker phase's events/s
    soak_sample: float = 10.0

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Plan:
        q = a.quick
        models = balanced_model_ids(a.models, PARTITIONS)
        unit = a.models * a.window  # whole windows only: no partial window waits for an idle close
        cases = tuple(Case.parse(c) for c in (a.cases or "").split(",") if c.strip())
        base = _round_up(a.events or (200_000 if q else 10_000_000), unit)
        events = events_for_cases(base, cases, a.models, unit, explicit=a.events is not None)
        scale = _round_up(a.scale_events or (base if q else 2_000_000), unit)
        if a.rss_at:
            rss_at = [int(x) for x in a.rss_at.split(",") if x]
        else:
            rss_at = [events // 10, events] if q else [1_000_000, 10_000_000]
        cmd = a.worker_cmd.split() if a.worker_cmd else [sys.executable, "-m", "streams.cli", "worker"]
        return cls(
            quick=q,
            events=events,
            scale_events=scale,
            floor_events=min(events, a.floor_events or 2_000_000),
            # the first window of each model is the naive detector's reference: two windows at least
            naive_events=_round_up(a.naive_events or (2 if q else 4) * unit, unit),
            naive_wire=a.naive_wire,
            wire=a.wire,
            models=models,
            window=a.window,
            batch_events=a.batch_events,
            rss_at=[x for x in rss_at if x <= events],
            drift_repeats=max(3, a.drift_repeats),
            poll=a.poll,
            stall_timeout=a.stall_timeout,
            skip={s.strip() for s in a.skip.split(",") if s.strip()},
            worker_cmd=cmd,
            worker_log_level=a.worker_log_level,
            summary_min_events=(
                "default"
                if a.summary_min_events is None
                else None
                if a.summary_min_events == "off"
                else int(a.summary_min_events)
            ),
            rows_too=a.rows_too,
            reference_events=a.reference_events,
            sigkill=getattr(a, "sigkill", False),
            sigkill_window=_events_or_seconds(getattr(a, "sigkill_window", None)),
            sigkill_rate=getattr(a, "sigkill_rate", None),
            cases=cases,
            soak=getattr(a, "soak", None),
            soak_rate=getattr(a, "soak_rate", None),
            soak_sample=getattr(a, "soak_sample", 10.0),
        )

    def window_extra(self) -> dict:
        """The ``window`` settings the bench adds to the monitor config."""
        return {} if self.summary_min_events == "default" else {"summary_min_events": self.summary_min_events}


def events_for_cases(events: int, cases: tuple[Case, ...], models: int, unit: int, explicit: bool) -> int:
    """The main topic's size: ``events``, or more when a ``--cases`` case needs more to close two windows per
    model (it runs on the same topic; with fewer it closes none and measures nothing).

    ``explicit`` (``--events`` given): too few is refused with the value needed, never changed behind the
    user's back. Otherwise the size grows to what the largest case needs, in whole windows of ``unit``.

    >>> events_for_cases(200_000, (Case.parse("1000000"),), models=8, unit=40_000, explicit=False)
    16000000
    >>> events_for_cases(200_000, (Case.parse("5000"),), models=8, unit=40_000, explicit=False)
    200000
    >>> events_for_cases(200_000, (Case.parse("1000000"),), models=8, unit=40_000, explicit=True)
    Traceback (most recent call last):
    ...
    benchmarks.throughput.BenchError: --cases count_1000000: each of the 8 models must close two windows, so --events must be at least 16,000,000 (got 200,000); leave --events out to size it so
    """
    need, case = max(((c.events_needed(models), c) for c in cases), default=(0, None), key=lambda x: x[0])
    need = _round_up(need, unit) if need else 0
    if events >= need or case is None:
        return events
    if explicit:
        raise BenchError(
            f"--cases {case.name}: each of the {models} models must close two windows, so --events must be at "
            f"least {need:,} (got {events:,}); leave --events out to size it so"
        )
    log(f"--cases {case.name}: {need:,} events (two windows per model), not {events:,}")
    return need


def _events_or_seconds(spec: str | None) -> int | str | None:
    """A window option: N events as an int, ``Ns`` (seconds) kept as given.

    >>> _events_or_seconds("500000"), _events_or_seconds("60s"), _events_or_seconds(None)
    (500000, '60s', None)
    """
    return int(spec) if spec is not None and spec.strip().isdigit() else spec


def _round_up(n: int, unit: int) -> int:
    return max(unit, -(-n // unit) * unit)


# ----------------------------------------------------------------------------- drift


def _synthetic_frame(n: int, seed: int, shift: float = 0.0):
    """A Frame of ``n`` events with the benchmark's 20 features (from the traffic generator)."""
    import orjson

    from benchmarks.traffic import batch_payload
    from detectors.frame import Frame

    doc = orjson.loads(batch_payload(Traffic(models=["m"], seed=seed), "m", 0, n))
    f = doc["features"]
    return Frame.from_columns(
        event_id=np.array(doc["event_id"], dtype=object),
        event_time=np.array(doc["event_time"]),
        source_id=np.array(doc["source_id"], dtype=object),
        numeric={k: np.array(f[k], dtype=np.float64) + shift for k in NUMERIC},
        categorical={k: np.array(f[k], dtype=object) for k in CATEGORICAL},
        pred_label=np.array(doc["prediction"]["label"], dtype=object),
    )


def _pcts(samples_s: list[float]) -> dict[str, float]:
    ms = np.array(samples_s) * 1e3
    return {
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
        "max": round(float(ms.max()), 2),
        "n": int(ms.size),
    }


def bench_drift(plan: Plan) -> dict[str, Any]:
    """Time the drift computation of a window × 20 features against its reference.

    ``data_drift``: the worker's data-drift evaluator alone
    (``detectors.univariate.univariate_drift`` on a prepared
    ``detectors.reference.Reference``, native engine) — the figure the issue's
    20 ms target is about. ``all_detectors``: everything the worker runs on one
    window (``detectors.runner.evaluate_window``), when it exists.
    ``alibi_tabular_drift``: alibi-detect's ``TabularDrift.predict`` on the
    same data, for scale.
    """
    out: dict[str, Any] = {"window": plan.window, "features": len(NUMERIC) + len(CATEGORICAL)}
    ref_frame = _synthetic_frame(plan.window, seed=101)
    cur = [_synthetic_frame(plan.window, seed=200 + i, shift=0.02 * (i % 3)) for i in range(5)]
    from detectors.spec import DriftSpec, FeatureSpec

    feats = [FeatureSpec(name=n, kind="numeric") for n in NUMERIC]
    feats += [FeatureSpec(name=c, kind="categorical") for c in CATEGORICAL]
    spec = DriftSpec()
    try:
        from detectors.reference import Reference
        from detectors.univariate import univariate_drift

        ref = Reference.from_frame(ref_frame, feats)
        out["data_drift"] = {
            **_time_calls(lambda c: univariate_drift(c, ref, spec), cur, plan.drift_repeats),
            "what": "detectors.univariate.univariate_drift (native engine)",
        }
    except ImportError as e:
        out["data_drift"] = {"error": f"data-drift evaluator not importable: {e}"}
    try:
        import detectors.runner as runner
    except ImportError as e:
        out["all_detectors"] = {"error": f"detectors.runner not importable: {e}"}
    else:
        try:
            call, what = runner_call(runner, feats, spec, ref_frame)
            timed = _time_calls(call, cur, plan.drift_repeats)
            made: dict[str, int] = {}
            for r in call(cur[0]):
                made[r.measurement] = made.get(r.measurement, 0) + 1
            # which evaluators actually produced something here (others may need per-model state or
            # settings that a bare context lacks): say so rather than claim "everything"
            out["all_detectors"] = {**timed, "what": what, "records": made}
        except Exception as e:  # the API may still move; say so
            out["all_detectors"] = {"error": f"{type(e).__name__}: {e}"}
    out["alibi_tabular_drift"] = _time_alibi(ref_frame, cur, max(3, plan.drift_repeats // 5))
    return out


def _time_calls(call, frames, repeats: int) -> dict[str, Any]:
    """Wall-clock percentiles, and the same for this thread's CPU time (``cpu``).

    On a machine shared with other work, wall time includes waiting for a core;
    the CPU time is what the computation itself costs.
    """
    call(frames[0])  # warm-up (caches, lazy imports)
    wall, cpu = [], []
    for i in range(repeats):
        f = frames[i % len(frames)]
        c0, t0 = time.thread_time(), time.perf_counter()
        call(f)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return {**_pcts(wall), "cpu": _pcts(cpu)}


def runner_call(runner, feats, spec, ref_frame):
    """``(call(frame), description)``: every detector the worker runs, on one window.

    Builds the same ``WindowContext`` the worker builds (``streams.worker.pipeline``)
    with the reference prepared once, as in the worker.
    """
    from detectors.reference import Reference

    ref = Reference.from_frame(ref_frame, feats, bins=spec.histogram_bins)
    # one list of evaluators for every window, as the worker keeps (older runners had a module registry)
    evaluators = runner.default_evaluators() if hasattr(runner, "default_evaluators") else None

    def call(frame):
        t = frame.event_time
        ctx = runner.WindowContext(
            model_id="m",
            version="1",
            frame=frame,
            reference=ref,
            features=tuple(feats),
            drift=spec,
            task="classification",
            window_start=float(t.min()),
            window_end=float(t.max()),
        )
        return runner.evaluate_window(ctx, evaluators)

    return call, "detectors.runner.evaluate_window (every default evaluator; see records for what ran)"


def _time_alibi(ref, cur, repeats: int) -> dict[str, Any]:
    try:
        from alibi_detect.cd import TabularDrift
    except ImportError as e:  # pragma: no cover - alibi-detect is a dependency
        return {"error": str(e)}

    def matrix(frame, codes):
        cols = [frame.numeric[n] for n in NUMERIC]
        for k, c in enumerate(CATEGORICAL):
            cols.append(np.array([codes[k].setdefault(v, len(codes[k])) for v in frame.categorical[c]], dtype=float))
        return np.column_stack(cols)

    codes: list[dict] = [dict() for _ in CATEGORICAL]
    cats = {i: None for i in range(len(NUMERIC), len(NUMERIC) + len(CATEGORICAL))}
    det = TabularDrift(matrix(ref, codes), p_val=0.05, categories_per_feature=cats, correction="bonferroni")
    xs = [matrix(c, codes) for c in cur]
    out = _time_calls(det.predict, xs, repeats)
    return {**out, "what": "alibi_detect.cd.TabularDrift.predict"}


# ----------------------------------------------------------------------------- stack


@dataclass
class Bench:
    plan: Plan
    root: Path
    stack: Any = None
    pids: dict[str, int] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def settings(self, name: str, group: str | None = None):
        from streams.settings import Settings

        tag = f"{self.run_id}-{name}"
        return Settings(
            kafka_bootstrap=self.stack.bootstrap,
            kafka_security_protocol="PLAINTEXT",
            **self.stack.influx_settings(),  # the local InfluxDB runs with auth on
            influx_db=f"bench_{self.run_id}_{group or name}".replace("-", "_"),
            topic_inferences=f"bench.{tag}.inferences",
            topic_labels=f"bench.{tag}.labels",
            topic_deadletter=f"bench.{tag}.deadletter",
            topic_alerts=f"bench.{tag}.alerts",
            topic_partitions=PARTITIONS,
            consumer_group=f"bench-{self.run_id}-{group or name}",
            state_dir=self.root / f"state-{group or name}",
            kafka_port=self.stack.kafka_port,
            influx_port=self.stack.influx_port,
            log_level=self.plan.worker_log_level,
        )

    def start_stack(self) -> None:
        from streams.devstack.localstack import LocalStack, StackError, free_ports

        err = None
        for _ in range(3):
            kp, ip = free_ports(2)
            st = LocalStack(self.root / "stack", kp, ip, start_timeout=30, die_with_parent=True)
            try:
                st.up()
            except StackError as e:
                err = e
                continue
            self.stack = st
            status = st.status()["services"]
            self.pids = {"broker": status["kafka"]["pid"], "influxd": status["influxdb"]["pid"]}
            return
        raise BenchError(f"the local stack could not start: {err}")

    def stop_stack(self) -> None:
        if self.stack is not None:
            self.stack.down()


# ----------------------------------------------------------------------------- floor


def run_floor(bench: Bench, topic: str, events: int, columnar: bool, wire: str | None = None) -> dict[str, Any]:
    """The floor consumer (``benchmarks/floor.py``) on ``topic``, in ``wire`` (default: the run's)."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.floor",
        "--bootstrap",
        bench.stack.bootstrap,
        "--topic",
        topic,
        "--events",
        str(events),
        "--wire",
        wire or bench.plan.wire,
    ] + (["--columnar"] if columnar else [])
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent()
    )
    meter = procstats.CpuMeter(dict(bench.pids)).start()
    out, err = proc.communicate(timeout=900)
    cpu = meter.stop()  # the floor's own CPU over its timed part is in cpu_percent_self
    if proc.returncode != 0:
        raise BenchError(f"floor consumer failed ({proc.returncode}): {err.strip()[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["cpu_percent"] = cpu
    own = result.get("cpu_percent_self")
    result["events_per_cpu_s"] = round(result["events_per_s"] / (own / 100), 1) if own else None
    return result


def run_json_floor(bench: Bench, plan: Plan, base: Traffic) -> dict[str, Any]:
    """The issue's floor (aiokafka + ``orjson.loads``) when the workers read another wire format.

    The same events as the main topic's first ``floor_events`` (same seed and event times), produced as
    the SDK's JSON column batches to a topic of their own, read by the floor parsed only and with numpy
    columns, then deleted: ``floor_json`` and ``floor_json_columnar`` beside ``floor`` (the workers' wire).
    """
    s, _, _ = _produce_traffic(bench, "floorjson", plan.floor_events, replace(base, wire="json"))
    try:
        log(f"floor_json: {plan.floor_events:,} json events (issue 16's floor), parsed only, then with numpy columns")
        return {
            "floor_json": run_floor(bench, s.topic_inferences, plan.floor_events, columnar=False, wire="json"),
            "floor_json_columnar": run_floor(bench, s.topic_inferences, plan.floor_events, columnar=True, wire="json"),
        }
    finally:
        _drop_topic(s)


# ----------------------------------------------------------------------------- worker


@dataclass
class WindowPoint:
    key: tuple
    events: int
    closed_at: float | None
    seen_at: float


class WindowWatcher:
    """Polls ``dw_window`` in one InfluxDB database and remembers when each point appeared."""

    def __init__(self, settings) -> None:
        import httpx

        self.settings = settings
        from streams.influx.admin import basic_auth

        auth = basic_auth(settings)  # the local InfluxDB runs with auth on
        self.client = httpx.Client(base_url=settings.influx_url, timeout=10.0, auth=auth)
        self.points: dict[tuple, WindowPoint] = {}
        self.count_field: str | None = None
        self.closed_field: str | None = None
        self.fields_seen: list[str] = []
        self.tags_seen: list[str] = []

    def close(self) -> None:
        self.client.close()

    @property
    def counted(self) -> int:
        return sum(p.events for p in self.points.values())

    def poll(self) -> int:
        """One query; returns how many new points appeared."""
        # once the fields are known, only the ones needed: every 50 ms over a growing measurement, the
        # whole rows cost InfluxDB and this process more CPU than the worker's own writes did
        q = f"SELECT * FROM {quote_ident(R.WINDOW)}"
        if self.count_field is not None:
            q = (
                "SELECT "
                + ", ".join(quote_ident(c) for c in (self.count_field, self.closed_field, *self.tags_seen) if c)
                + f" FROM {quote_ident(R.WINDOW)}"
            )
        resp = self.client.post("/query", data={"q": q, "db": self.settings.influx_db, "epoch": "ns"})
        now = time.time()
        if resp.status_code != 200:
            return 0
        body = resp.json()
        new = 0
        for res in body.get("results", []):
            for s in res.get("series") or []:
                cols = s["columns"]
                if not self.fields_seen:
                    self.fields_seen = list(cols)
                    self.count_field = R.F_N_EVENTS if R.F_N_EVENTS in cols else None
                    self.closed_field = R.F_CLOSED_AT if R.F_CLOSED_AT in cols else None
                    self.tags_seen = [c for c in cols if c in WINDOW_TAGS]
                    if self.count_field is None:
                        raise BenchError(f"{R.WINDOW} points have no {R.F_N_EVENTS!r} field: {cols}")
                ic = cols.index(self.count_field)
                icl = cols.index(self.closed_field) if self.closed_field else None
                tag_idx = [i for i, c in enumerate(cols) if c in WINDOW_TAGS]
                for row in s.get("values") or []:
                    key = (row[0], *(row[i] for i in tag_idx))
                    if key in self.points:
                        continue
                    if row[ic] is None or (icl is not None and row[icl] is None):
                        # InfluxDB 1.x may show a point while its fields are still being written:
                        # take it once it is whole
                        continue
                    closed = row[icl] if icl is not None else None
                    self.points[key] = WindowPoint(key, int(row[ic] or 0), float(closed) if closed else None, now)
                    new += 1
        return new


def _tree_mb(measure, pid: int) -> float:
    """``measure`` (RSS or peak RSS, MiB; or CPU seconds) summed over a worker and its children (the detector
    process)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(procstats.ProcessGone):
            total += measure(p)
    return total


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def spawn_worker(bench: Bench, s, label: str, i: int, log_level: str | None = None) -> subprocess.Popen:
    """Start worker ``i`` of phase ``label`` on settings ``s`` (its own web port and state folder; log in
    ``worker-<label>-<i>.log`` under the bench folder)."""
    from streams.devstack.localstack import free_port, settings_env

    update: dict[str, Any] = {"worker_web_port": free_port(), "state_dir": bench.root / f"state-{label}-{i}"}
    if log_level:
        update["log_level"] = log_level
    env = settings_env(s.model_copy(update=update))
    env["PYTHONUNBUFFERED"] = "1"
    return spawn_logged(bench.plan.worker_cmd, env, bench.root / f"worker-{label}-{i}.log")


def run_workers(
    bench: Bench,
    data_settings,
    n_workers: int,
    expected: int,
    label: str,
    rss_at: list[int] | None = None,
    monitors: str = "monitors.yaml",
    stall_timeout: float | None = None,
) -> dict[str, Any]:
    """Start ``n_workers`` workers in one new consumer group on ``data_settings``' topic; wait for ``expected``.
    ``monitors``: the monitor config file (in the bench folder) the workers run."""
    from streams.broker.admin import ensure_topics
    from streams.devstack.localstack import terminate
    from streams.influx.admin import ensure_database

    plan = bench.plan
    s = bench.settings(label)
    # same inference topic (the pre-produced traffic), own group/database/other topics
    s = s.model_copy(update={"topic_inferences": data_settings.topic_inferences, "monitors": bench.root / monitors})
    ensure_topics(s, partitions=PARTITIONS)
    ensure_database(s)
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    watcher = WindowWatcher(s)
    try:
        for i in range(n_workers):
            logs.append(bench.root / f"worker-{label}-{i}.log")
            procs.append(spawn_worker(bench, s, label, i))
        t_start = time.time()
        log(f"{label}: {n_workers} worker(s) started (pids {[p.pid for p in procs]}), waiting for {expected:,} events")
        meter: procstats.CpuMeter | None = None
        rss: dict[str, float] = {}
        rss_targets = sorted(rss_at or [])
        last_new = time.monotonic()
        last_report = 0.0
        while True:
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    raise BenchError(f"{label}: worker {i} exited with {p.returncode}; log tail:\n{_tail(logs[i])}")
            new = watcher.poll()
            if new:
                last_new = time.monotonic()
                if meter is None:
                    pids = {**bench.pids}
                    for i, p in enumerate(procs):
                        pids[f"worker{i}"] = p.pid
                        for k, c in enumerate(descendants(p.pid)):
                            pids[f"worker{i}_child{k}"] = c
                    meter = procstats.CpuMeter(pids).start()
            counted = watcher.counted
            while rss_targets and counted >= rss_targets[0]:
                target = rss_targets.pop(0)
                rss[str(target)] = round(sum(_tree_mb(procstats.rss_mb, p.pid) for p in procs), 1)
            if counted >= expected:
                break
            if time.monotonic() - last_new > (stall_timeout or plan.stall_timeout):
                raise BenchError(
                    f"{label}: no new window for {stall_timeout or plan.stall_timeout:.0f} s at {counted:,}/{expected:,} events "
                    f"(dw_window fields {watcher.fields_seen}); worker 0 log tail:\n{_tail(logs[0])}"
                )
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                log(f"{label}: {counted:,}/{expected:,} events counted, {len(watcher.points)} windows")
            time.sleep(plan.poll)
        cpu = meter.stop() if meter else {}
        peak = [_tree_mb(procstats.peak_rss_mb, p.pid) for p in procs]
        final_rss = [_tree_mb(procstats.rss_mb, p.pid) for p in procs]
        cpu_whole = sum(_tree_mb(procstats.cpu_seconds, p.pid) for p in procs)  # since each started (imports too)
    finally:
        for p in procs:
            terminate(p.pid, 15.0, p)
        watcher.close()

    pts = sorted(watcher.points.values(), key=lambda p: p.closed_at or p.seen_at)
    counted = watcher.counted
    t_close = [p.closed_at or p.seen_at for p in pts]
    span = t_close[-1] - t_close[0]
    rate_all = sum(p.events for p in pts[1:]) / span if span > 0 else None
    rate, steady_s = steady_rate(pts)
    lat = [p.seen_at - p.closed_at for p in pts if p.closed_at]
    lat_ms = np.array(lat) * 1e3 if lat else None
    warm_end, lat_steady = _warm_up_end(pts)
    worker_cpu = sum(v for k, v in cpu.items() if k.startswith("worker") and v is not None)
    result: dict[str, Any] = {
        "workers": n_workers,
        "events_expected": expected,
        "events_counted": counted,
        "windows": len(pts),
        "events_per_s": round(rate, 1) if rate else None,
        "events_per_s_per_worker": round(rate / n_workers, 1) if rate else None,
        # the earlier estimator: every window but the first over first-to-last close (it overstates the
        # rate when each model has only a few windows, all closing together)
        "events_per_s_first_to_last": round(rate_all, 1) if rate_all else None,
        "seconds_measured": round(steady_s, 3),
        # contention-free efficiency: events per second of worker CPU (all workers' processes)
        "events_per_worker_cpu_s": round(rate / (worker_cpu / 100), 1) if rate and worker_cpu else None,
        # the same over each worker's whole life (start-up and imports included, windows' timing excluded)
        "worker_cpu_s_whole_run": round(cpu_whole, 2),
        "events_per_worker_cpu_s_whole_run": round(counted / cpu_whole, 1) if cpu_whole else None,
        "seconds_first_to_last_window": round(span, 3),
        "seconds_start_to_last_window": round(t_close[-1] - t_start, 3),
        "latency_ms": None
        if lat_ms is None
        else {
            "p50": round(float(np.percentile(lat_ms, 50)), 1),
            "p99": round(float(np.percentile(lat_ms, 99)), 1),
            "max": round(float(lat_ms.max()), 1),
            "n": int(lat_ms.size),
            "poll_interval_ms": plan.poll * 1e3,
        },
        # the same after warm-up: windows closed once every model's first evaluated window was
        # queryable (before that, windows queue behind the one-off per-model fits: reference,
        # extraction calibration, feature impact)
        "latency_after_warm_up_ms": None
        if lat_steady is None
        else {
            "p50": round(float(np.percentile(lat_steady, 50)), 1),
            "p99": round(float(np.percentile(lat_steady, 99)), 1),
            "max": round(float(lat_steady.max()), 1),
            "n": int(lat_steady.size),
            "warm_up_s": round(warm_end - t_start, 1),
        },
        "latency_note": None if lat else (f"{R.WINDOW} has no {R.F_CLOSED_AT!r} field; latency not measurable"),
        "slowest_windows": slowest_windows(pts, t_start),
        "rss_mb_at": rss,
        "rss_mb_final": round(sum(final_rss), 1),
        "peak_rss_mb": round(max(peak), 1),
        "cpu_percent": cpu,
        "window_fields": watcher.fields_seen,
        "logs": [str(p) for p in logs],
    }
    log(
        f"{label}: {counted:,} events in {len(pts)} windows, {result['events_per_s']} events/s, "
        f"latency {result['latency_ms']}, RSS {rss or result['rss_mb_final']} MB, CPU % {cpu}"
    )
    return result


def slowest_windows(pts: list[WindowPoint], t_start: float, n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` windows with the longest close → queryable latency: which window (the point's tags), its
    events, when it closed (s after the workers started, and its rank in close order) and the latency (ms).
    The p99 of a case with a few dozen windows is one of them: this says whether it is the warm-up.

    >>> pts = [WindowPoint(("t", "m1"), 10, 100.0 + i, 100.2 + i + (i == 1)) for i in range(3)]
    >>> [(w["rank"], w["latency_ms"]) for w in slowest_windows(pts, 90.0, 2)]
    [(1, 1200.0), (0, 200.0)]
    """
    timed = sorted((p for p in pts if p.closed_at), key=lambda p: p.closed_at or 0.0)
    rows = [
        {
            "window": list(p.key),
            "events": p.events,
            "closed_s": round((p.closed_at or 0.0) - t_start, 2),
            "rank": i,
            "latency_ms": round(1e3 * (p.seen_at - (p.closed_at or 0.0)), 1),
        }
        for i, p in enumerate(timed)
    ]
    return sorted(rows, key=lambda r: -r["latency_ms"])[:n]


def steady_rate(pts: list[WindowPoint]) -> tuple[float | None, float]:
    """Events/s after every model's first window closed: ``(rate, seconds measured)``.

    The traffic is round-robin over the models, so the windows close in rounds; the first
    round carries the start-up (group join, reference, one-off fits). The rate is the events
    of the windows closed after the last model's first window, over the time from that close
    to the last one — right with 5,000-event windows (hundreds of rounds) and with 1M-event
    windows (two rounds), where "every window but the first, first to last close" is not.
    """
    by_model: dict[Any, float] = {}
    for p in pts:
        t = p.closed_at or p.seen_at
        k = p.key[1:]
        by_model[k] = min(by_model.get(k, t), t)
    if not by_model:
        return None, 0.0
    t1 = max(by_model.values())
    after = [p for p in pts if (p.closed_at or p.seen_at) > t1]
    if not after:
        return None, 0.0
    span = max(p.closed_at or p.seen_at for p in after) - t1
    return (sum(p.events for p in after) / span if span > 0 else None), span


def _warm_up_end(pts: list[WindowPoint]) -> tuple[float, np.ndarray | None]:
    """When the last model's first evaluated window (its second: the first is the reference)
    became queryable, and the latencies (ms) of the windows closed after that."""
    by_model: dict[Any, list[WindowPoint]] = {}
    for p in pts:
        if p.closed_at:
            by_model.setdefault(p.key[1:], []).append(p)
    firsts = [sorted(v, key=lambda p: p.closed_at)[min(1, len(v) - 1)].seen_at for v in by_model.values()]
    if not firsts:
        return 0.0, None
    end = max(firsts)
    lat = [p.seen_at - p.closed_at for p in pts if p.closed_at and p.closed_at > end]
    return end, (np.array(lat) * 1e3 if lat else None)


# ----------------------------------------------------------------------------- naive


def run_naive(bench: Bench, traffic: Traffic) -> dict[str, Any]:
    """Produce the naive baseline's sample and run the per-event Faust agent on it."""
    from streams.broker.admin import delete_topics, ensure_topics

    plan = bench.plan
    s = bench.settings("naive")
    ensure_topics(s, partitions=PARTITIONS)
    sample = Traffic(
        models=traffic.models,
        events=plan.naive_events,
        batch_events=plan.batch_events,
        seed=traffic.seed,
        base_time=traffic.base_time,
    )
    if plan.naive_wire == "event":
        msgs = ((k, one, 1) for k, v, _n in iter_messages(sample) for one in single_event_payloads(v))
    else:
        msgs = iter_messages(sample)
    prod = produce(bench.stack.bootstrap, s.topic_inferences, msgs)
    log(f"naive: produced {prod['messages']:,} messages ({plan.naive_wire} wire) in {prod['seconds']:.1f} s")
    result_path = bench.root / "naive_result.json"
    env = dict(
        os.environ,
        DWB_BOOTSTRAP=bench.stack.bootstrap,
        DWB_TOPIC=s.topic_inferences,
        DWB_EVENTS=str(plan.naive_events),
        DWB_WINDOW=str(plan.window),
        DWB_WIRE=plan.naive_wire,
        DWB_RESULT=str(result_path),
        DWB_DATADIR=str(bench.root / "naive-data"),
        DWB_APP_ID=f"bench-naive-{bench.run_id}",
        DWB_PARTITIONS=str(PARTITIONS),
    )
    logp = bench.root / "naive.log"
    # --without-web: the `faust worker` command would serve on port 6066, taken by any local worker
    cmd = [sys.executable, "-m", "benchmarks.naive_worker", "worker", "--without-web", "-l", "warn"]
    proc = spawn_logged(cmd, env, logp)
    from streams.devstack.localstack import terminate

    try:
        meter = procstats.CpuMeter(dict(bench.pids)).start()
        deadline = time.monotonic() + max(300.0, plan.naive_events / 500)
        while not result_path.exists():
            if proc.poll() is not None:
                raise BenchError(f"naive baseline exited with {proc.returncode}:\n{_tail(logp)}")
            if time.monotonic() > deadline:
                raise BenchError(f"naive baseline did not finish:\n{_tail(logp)}")
            time.sleep(0.2)
        time.sleep(0.2)
        cpu = meter.stop()
        result = json.loads(result_path.read_text())
        result["cpu_percent"] = cpu
        result["peak_rss_mb"] = round(procstats.peak_rss_mb(proc.pid), 1)
    finally:
        terminate(proc.pid, 15.0, proc)
        with contextlib.suppress(Exception):
            delete_topics(s, [s.topic_inferences])
    return result


# ----------------------------------------------------------------------------- main


def _produce_traffic(bench: Bench, name: str, events: int, base: Traffic) -> tuple[Any, Traffic, dict]:
    from streams.broker.admin import ensure_topics

    s = bench.settings(name)
    ensure_topics(s, partitions=PARTITIONS)
    tr = Traffic(
        models=base.models,
        events=events,
        batch_events=bench.plan.batch_events,
        seed=base.seed,
        base_time=base.base_time,
        wire=base.wire,
    )
    log(f"{name}: producing {events:,} events ({tr.messages:,} {tr.wire} messages) to {s.topic_inferences}")
    prod = produce(bench.stack.bootstrap, s.topic_inferences, iter_messages(tr), headers=tr.headers)
    prod["events_per_s"] = round(prod["events"] / prod["seconds"], 1)
    prod["bytes_per_event"] = round(prod["bytes"] / prod["events"], 1)
    log(f"{name}: produced in {prod['seconds']:.1f} s; broker RSS {procstats.rss_mb(bench.pids['broker']):.0f} MB")
    return s, tr, prod


def _drop_topic(s) -> None:
    from streams.broker.admin import delete_topics, topic_names

    with contextlib.suppress(Exception):
        delete_topics(s, topic_names(s))


def run(args: argparse.Namespace) -> int:
    plan = Plan.from_args(args)
    tmp = Path(tempfile.mkdtemp(prefix="driftwatch-bench-"))
    bench = Bench(plan=plan, root=tmp)
    report: dict[str, Any] = {
        "benchmark": "throughput",
        "mode": "quick" if plan.quick else "full",
        "machine": procstats.machine(),
        "command": "driftwatch bench throughput "
        + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "throughput"] else []),
        "config": {
            "models": len(plan.models),
            "partitions": PARTITIONS,
            "features": {"numeric": len(NUMERIC), "categorical": len(CATEGORICAL)},
            "window_events": plan.window,
            "batch_events": plan.batch_events,
            "events": plan.events,
            "scale_events": plan.scale_events,
            "floor_events": plan.floor_events,
            "naive_events": plan.naive_events,
            "naive_wire": plan.naive_wire,
            "wire": plan.wire,
            "summary_min_events": plan.summary_min_events,
            "rows_too": plan.rows_too,
            "reference_events": plan.reference_events or plan.window,
            "cases": [c.name for c in plan.cases],
            "soak_minutes": plan.soak,
        },
    }
    errors: dict[str, str] = {}
    t0 = time.monotonic()
    try:
        if "drift" not in plan.skip:
            log("drift: timing the drift computation of one window")
            try:
                report["drift"] = bench_drift(plan)
            except Exception as e:  # reported, the other phases still run
                errors["drift"] = f"{type(e).__name__}: {e}"
        if "decode" not in plan.skip:
            log("decode: the decoder alone on the same events as JSON and as Arrow")
            try:
                from benchmarks.decode_cost import measure

                report["decode"] = measure(
                    events=min(plan.events, 200_000), models=len(plan.models), batch_events=plan.batch_events
                )
            except Exception as e:  # reported, the other phases still run
                errors["decode"] = f"{type(e).__name__}: {e}"
        bench.start_stack()
        log(f"stack up: {bench.stack.bootstrap}, {bench.stack.influx_url} (logs under {tmp})")
        base = Traffic(models=plan.models, wire=plan.wire)
        ref_n = plan.reference_events or plan.window
        write_monitor_config(
            tmp / "monitors.yaml", base, window=plan.window, reference=ref_n, window_extra=plan.window_extra()
        )
        write_monitor_config(
            tmp / "monitors-rows.yaml",
            base,
            window=plan.window,
            reference=ref_n,
            window_extra={"summary_min_events": None},
        )
        for case in plan.cases:  # same models, reference and summary setting; other windows
            if case.shards:
                continue  # its own model and traffic (benchmarks/hot_model.py)
            extra = {**plan.window_extra(), **({} if case.seconds is None else {"size_seconds": case.seconds})}
            write_monitor_config(
                tmp / f"monitors-{case.name}.yaml", base, window=case.events, reference=ref_n, window_extra=extra
            )
        main_s, main_tr, prod = _produce_traffic(bench, "main", plan.events, base)
        report["produce"] = prod
        report["broker_rss_mb_after_produce"] = round(procstats.rss_mb(bench.pids["broker"]), 1)
        if "floor" not in plan.skip:
            log(f"floor: {plan.floor_events:,} {plan.wire} events, parsed only, then with numpy columns")
            try:
                report["floor"] = run_floor(bench, main_s.topic_inferences, plan.floor_events, columnar=False)
                report["floor_columnar"] = run_floor(bench, main_s.topic_inferences, plan.floor_events, columnar=True)
            except Exception as e:
                errors["floor"] = f"{type(e).__name__}: {e}"
            if plan.wire != "json":  # issue 16's floor is the orjson consumer: also measured, on the same events
                try:
                    report.update(run_json_floor(bench, plan, base))
                except Exception as e:
                    errors["floor_json"] = f"{type(e).__name__}: {e}"
        if "worker" not in plan.skip:
            try:
                report["worker"] = run_workers(
                    bench, main_s, 1, main_tr.per_model * len(plan.models), "w1", rss_at=plan.rss_at
                )
            except Exception as e:
                errors["worker"] = f"{type(e).__name__}: {e}"
        if "worker" not in plan.skip and plan.rows_too:
            try:
                report["worker_rows"] = run_workers(
                    bench,
                    main_s,
                    1,
                    main_tr.per_model * len(plan.models),
                    "w1rows",
                    rss_at=plan.rss_at,
                    monitors="monitors-rows.yaml",
                )
            except Exception as e:
                errors["worker_rows"] = f"{type(e).__name__}: {e}"
        if plan.cases:  # --skip worker skips only the 5,000-event phase: the cases still run
            report["cases"] = {}
            for case in plan.cases:
                if case.shards:
                    continue  # after the main traffic's phases: its own topic
                try:
                    expected = case.expected(main_tr)
                    if not expected:  # Plan.from_args sizes or refuses this; a guard, not a measurement of nothing
                        raise BenchError(f"{case.name}: the topic's {main_tr.events:,} events close no window")
                    report["cases"][case.name] = run_workers(
                        bench,
                        main_s,
                        1,
                        expected,
                        case.name.replace("_", "-"),
                        rss_at=plan.rss_at,
                        monitors=f"monitors-{case.name}.yaml",
                        # the first window of a 1M-event case closes after millions of events
                        stall_timeout=max(plan.stall_timeout, (case.events or 0) * len(plan.models) / 10_000),
                    )
                except Exception as e:
                    errors[case.name] = f"{type(e).__name__}: {e}"
        if "scale" not in plan.skip:
            try:
                if plan.scale_events == plan.events:
                    scale_s, scale_tr = main_s, main_tr
                else:
                    _drop_topic(main_s)
                    scale_s, scale_tr, _ = _produce_traffic(bench, "scale", plan.scale_events, base)
                n = scale_tr.per_model * len(plan.models)
                one = run_workers(bench, scale_s, 1, n, "scale1")
                two = run_workers(bench, scale_s, 2, n, "scale2")
                report["scale_out"] = {"one_worker": one, "two_workers": two}
            except Exception as e:
                errors["scale"] = f"{type(e).__name__}: {e}"
        _drop_topic(main_s)
        for case in plan.cases:
            if case.shards and "hot" not in plan.skip:
                from benchmarks.hot_model import run_hot

                try:
                    report.setdefault("cases", {})[case.name] = run_hot(bench, case.shards, args, run_workers, log)
                except Exception as e:
                    errors[case.name] = f"{type(e).__name__}: {e}"
        if plan.sigkill:
            from benchmarks.sigkill import run_sigkill

            try:
                report["sigkill"] = run_sigkill(bench, base, spawn_worker, log)
            except Exception as e:
                errors["sigkill"] = f"{type(e).__name__}: {e}"
        if plan.soak:
            from benchmarks.soak import run_soak

            try:
                report["soak"] = run_soak(bench, _get(report, "worker", "events_per_s_per_worker"), spawn_worker, log)
            except Exception as e:
                errors["soak"] = f"{type(e).__name__}: {e}"
        if "naive" not in plan.skip:
            try:
                report["naive"] = run_naive(bench, main_tr)
            except Exception as e:
                errors["naive"] = f"{type(e).__name__}: {e}"
    except Exception as e:
        errors["setup"] = f"{type(e).__name__}: {e}"
    finally:
        with contextlib.suppress(Exception):
            bench.stop_stack()
    report["seconds_total"] = round(time.monotonic() - t0, 1)
    report["errors"] = errors
    report.update(summarise(report, plan))
    for line in ratio_lines(report):
        log(line)
    text = json.dumps(report, indent=2, sort_keys=False)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    if not args.keep and not errors:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        log(f"logs kept in {tmp}")
    return 1 if errors else 0


def summarise(r: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The headline figures and the issue's targets, from the phase results."""

    def g(*path):
        return _get(r, *path)

    eps = g("worker", "events_per_s_per_worker")
    fl = floors(r)
    floor, floor_wire = fl["json"], fl["same_wire"]
    one = g("scale_out", "one_worker", "events_per_s")
    two = g("scale_out", "two_workers", "events_per_s")
    eff1 = g("scale_out", "one_worker", "events_per_worker_cpu_s")
    eff2 = g("scale_out", "two_workers", "events_per_worker_cpu_s")
    rss = g("worker", "rss_mb_at") or {}
    r1, r10 = rss.get("1000000"), rss.get("10000000")
    ks = sorted(rss, key=int)
    rss_first, rss_last = (rss[ks[0]], rss[ks[-1]]) if len(ks) >= 2 else (None, None)
    drift = g("drift", "data_drift", "p50")
    drift_cpu = g("drift", "data_drift", "cpu", "p50")
    lat99 = g("worker", "latency_ms", "p99")
    counted, expected = g("worker", "events_counted"), g("worker", "events_expected")
    s = {
        "events_per_s_per_worker": eps,
        "events_per_worker_cpu_s": g("worker", "events_per_worker_cpu_s"),
        # issue 16's floor: the aiokafka + orjson consumer on the JSON batches (with --wire arrow: the same
        # events produced as JSON to a topic of their own, ``floor_json``); the floor that reads the workers'
        # own wire is ``floor_same_wire_events_per_s`` (equal to this one with --wire json)
        "floor_events_per_s": floor,
        "floor_columnar_events_per_s": fl["json_columnar"],
        "floor_same_wire_events_per_s": floor_wire,
        "floor_same_wire_columnar_events_per_s": g("floor_columnar", "events_per_s"),
        "wire": plan.wire,  # the format the workers (and floor_same_wire) read
        "decode_us_per_event": {w: g("decode", w, "decode_us_per_event") for w in ("json", "arrow")},
        "ratio_to_floor": ratio(eps, floor),
        "ratio_to_floor_same_wire": ratio(eps, floor_wire),
        # the same ratios per CPU-second of the consumer process: what they would be without
        # other processes competing for the cores (informative; the targets are the wall-clock ratio)
        "ratio_to_floor_per_cpu_s": ratio(g("worker", "events_per_worker_cpu_s"), fl["json_per_cpu_s"]),
        "ratio_to_floor_same_wire_per_cpu_s": ratio(g("worker", "events_per_worker_cpu_s"), fl["same_wire_per_cpu_s"]),
        "naive_events_per_s": g("naive", "events_per_s"),
        "speedup_vs_naive": round(eps / g("naive", "events_per_s"), 1) if eps and g("naive", "events_per_s") else None,
        "drift_ms_5000x20": {
            "p50": drift,
            "p99": g("drift", "data_drift", "p99"),
            "cpu_p50": drift_cpu,
            "cpu_p99": g("drift", "data_drift", "cpu", "p99"),
        },
        "all_detectors_ms_5000x20": {
            "p50": g("drift", "all_detectors", "p50"),
            "p99": g("drift", "all_detectors", "p99"),
            "cpu_p50": g("drift", "all_detectors", "cpu", "p50"),
        },
        "alibi_drift_ms_5000x20": {
            "p50": g("drift", "alibi_tabular_drift", "p50"),
            "p99": g("drift", "alibi_tabular_drift", "p99"),
            "cpu_p50": g("drift", "alibi_tabular_drift", "cpu", "p50"),
        },
        "latency_ms": {"p50": g("worker", "latency_ms", "p50"), "p99": lat99},
        "latency_after_warm_up_ms": {
            "p50": g("worker", "latency_after_warm_up_ms", "p50"),
            "p99": g("worker", "latency_after_warm_up_ms", "p99"),
            "warm_up_s": g("worker", "latency_after_warm_up_ms", "warm_up_s"),
        },
        "rss_mb_1m": r1,
        "rss_mb_10m": r10,
        "rss_growth": round(rss_last / rss_first - 1, 3) if rss_first else None,
        "peak_rss_mb": g("worker", "peak_rss_mb"),
        "two_workers_speedup": round(two / one, 2) if one and two else None,
        # events per worker-CPU-second, two workers vs one: 1.0 = splitting the partitions costs nothing.
        # On a machine where other processes compete for the cores, the wall-clock speedup above also
        # reflects that two processes get a bigger share of a saturated machine than one.
        "two_workers_cpu_efficiency": (round(eff2 / eff1, 2) if eff1 and eff2 else None),
        "cpu_percent_worker_run": g("worker", "cpu_percent"),
        "cpu_percent_two_workers_run": g("scale_out", "two_workers", "cpu_percent"),
        "events_produced": expected,
        "events_counted": counted,
    }
    if r.get("worker_rows"):  # --rows-too: the same worker with summaries off, in the same run
        rows_eps = g("worker_rows", "events_per_s_per_worker")
        s["rows"] = {
            "events_per_s_per_worker": rows_eps,
            "ratio_to_floor": ratio(rows_eps, floor),
            "ratio_to_floor_same_wire": ratio(rows_eps, floor_wire),
            "rss_mb_at": g("worker_rows", "rss_mb_at"),
            "peak_rss_mb": g("worker_rows", "peak_rss_mb"),
            "events_counted": g("worker_rows", "events_counted"),
        }
    if r.get("sigkill"):  # --sigkill: a SIGKILL in the middle of a long window (the phase's details stay in "sigkill")
        s["sigkill_summary"] = {
            "reread_seconds_of_traffic": g("sigkill", "reread", "seconds_of_traffic"),
            "reread_events": g("sigkill", "reread", "events"),
            "window_events": g("sigkill", "window_events"),
            "window_seconds": g("sigkill", "window_seconds"),  # --sigkill-window Ns: event-time windows
            "restored_events": g("sigkill", "restored", "events"),
            "points_equal_fault_free": g("sigkill", "points_equal_fault_free"),
            "points_compared": g("sigkill", "points_compared"),
        }
    if r.get("soak"):  # --soak: half the worker's rate for minutes; the time series stays in "soak"
        s["soak_summary"] = {
            k: g("soak", k)
            for k in (
                "minutes",
                "rate_events_per_s",
                "max_rate_events_per_s",
                "drained",
                "uptime_at_start",
                "uptime_at_end",
            )
        } | (g("soak", "verdict") or {})
    cases = {k: v for k, v in (r.get("cases") or {}).items() if not k.startswith("hot")}
    hot = {k: v for k, v in (r.get("cases") or {}).items() if k.startswith("hot")}
    if hot:  # one hot model: per worker count, and the two-worker run's CPU efficiency over the one-worker run's
        s["hot_summary"] = {
            name: {
                "cpu_efficiency_two_vs_one": h.get("cpu_efficiency_two_vs_one"),
                "cpu_efficiency_two_vs_one_whole_run": h.get("cpu_efficiency_two_vs_one_whole_run"),
                "speedup_two_vs_one": h.get("speedup_two_vs_one"),
                **{
                    run: {
                        k: _get(h, run, k)
                        for k in (
                            "events_per_s",
                            "events_per_worker_cpu_s",
                            "events_per_worker_cpu_s_whole_run",
                            "cpu_percent",
                        )
                    }
                    for run in ("workers_1", "workers_2")
                },
            }
            for name, h in hot.items()
        }
    if cases:  # --cases: other windows on the same topic, against the same floor (the phases stay in "cases")
        s["cases_summary"] = {
            name: {
                "events_per_s_per_worker": c.get("events_per_s_per_worker"),
                "ratio_to_floor": ratio(c.get("events_per_s_per_worker"), floor),
                "ratio_to_floor_same_wire": ratio(c.get("events_per_s_per_worker"), floor_wire),
                "events_per_worker_cpu_s": c.get("events_per_worker_cpu_s"),
                "ratio_to_floor_per_cpu_s": ratio(c.get("events_per_worker_cpu_s"), fl["json_per_cpu_s"]),
                "latency_ms": c.get("latency_ms"),
                "latency_after_warm_up_ms": c.get("latency_after_warm_up_ms"),
                "rss_mb_at": c.get("rss_mb_at"),
                "peak_rss_mb": c.get("peak_rss_mb"),
                **rss_vs_main(c, r.get("worker") or {}),
                "windows": c.get("windows"),
                "events_counted": c.get("events_counted"),
                "events_expected": c.get("events_expected"),
            }
            for name, c in cases.items()
        }
    s["targets"] = {
        "events_per_s_per_worker>=50000": _ok(eps, lambda v: v >= 50_000),
        "ratio_to_floor>=0.5": _ok(s["ratio_to_floor"], lambda v: v >= 0.5),
        "drift_p50_ms<20": _ok(drift, lambda v: v < 20),
        "drift_cpu_p50_ms<20": _ok(drift_cpu, lambda v: v < 20),
        "latency_p99_ms<1000": _ok(lat99, lambda v: v < 1000),
        "latency_after_warm_up_p99_ms<1000": _ok(g("worker", "latency_after_warm_up_ms", "p99"), lambda v: v < 1000),
        "rss_10m_within_10pct_of_1m": _ok(s["rss_growth"], lambda v: abs(v) <= 0.10),
        "two_workers_speedup>=1.6": _ok(s["two_workers_speedup"], lambda v: v >= 1.6),
        "counted_equals_produced": None if counted is None else counted == expected,
    }
    if r.get("sigkill"):
        s["targets"]["sigkill_reread_s<=10"] = _ok(g("sigkill", "reread", "seconds_of_traffic"), lambda v: v <= 10)
        s["targets"]["sigkill_points_equal_fault_free"] = g("sigkill", "points_equal_fault_free")
    if r.get("soak"):
        v = g("soak", "verdict") or {}
        s["targets"]["soak_rss_flat_within_10pct_after_warm_up"] = v.get("rss_flat")
        s["targets"]["soak_lag_bounded"] = v.get("lag_bounded")
        s["targets"]["soak_no_error_line"] = v.get("no_error_line")
    # issue 16's targets: 0.3 of the floor with 5,000-event windows, 0.4 with 1M-event and 60-s windows
    if plan.window == 5000:
        s["targets"]["ratio_to_floor_5000>=0.3"] = _ok(s["ratio_to_floor"], lambda v: v >= 0.3)
    for name, c in (s.get("cases_summary") or {}).items():
        if name.startswith("count_"):  # issue 16: RSS with long count windows at most 15 % above the main run's
            s["targets"][f"rss_{name}<=1.15x_main"] = _ok(c.get("rss_vs_main"), lambda v: v <= 1.15)
        s["targets"][f"ratio_to_floor_{name}>=0.4"] = _ok(c["ratio_to_floor"], lambda v: v >= 0.4)
        s["targets"][f"latency_p99_ms_{name}<1000"] = _ok(_get(c, "latency_ms", "p99"), lambda v: v < 1000)
        s["targets"][f"counted_equals_expected_{name}"] = (
            None if c["events_counted"] is None else c["events_counted"] == c["events_expected"]
        )
    for name, h in (s.get("hot_summary") or {}).items():  # issue 16: within 10 % of one worker's
        s["targets"][f"{name}_cpu_efficiency_two_vs_one>=0.9"] = _ok(h["cpu_efficiency_two_vs_one"], lambda v: v >= 0.9)
    return s


def floors(r: dict[str, Any]) -> dict[str, float | None]:
    """The two floors of a run: issue 16's (aiokafka + orjson on JSON batches) and the one that reads the
    workers' wire. With ``--wire json`` they are one phase (``floor``); with ``--wire arrow`` the JSON floor
    is ``floor_json`` (the same events as JSON) and ``floor`` read the Arrow batches.

    >>> fl = floors({"floor": {"events_per_s": 900.0, "events_per_cpu_s": 2000.0, "wire": "arrow"},
    ...              "floor_json": {"events_per_s": 600.0, "events_per_cpu_s": 1000.0, "wire": "json"}})
    >>> fl["json"], fl["same_wire"], fl["json_per_cpu_s"], fl["same_wire_per_cpu_s"]
    (600.0, 900.0, 1000.0, 2000.0)
    >>> floors({"floor": {"events_per_s": 700.0, "wire": "json"}})["json"]
    700.0
    """
    wire = _get(r, "floor", "wire")
    json_phase, json_columnar = (
        ("floor_json", "floor_json_columnar") if "floor_json" in r else ("floor", "floor_columnar")
    )
    if json_phase == "floor" and wire not in (None, "json"):  # the JSON floor was not measured (an error)
        json_phase = json_columnar = "floor_json"
    return {
        "json": _get(r, json_phase, "events_per_s"),
        "json_columnar": _get(r, json_columnar, "events_per_s"),
        "json_per_cpu_s": _get(r, json_phase, "events_per_cpu_s"),
        "same_wire": _get(r, "floor", "events_per_s"),
        "same_wire_per_cpu_s": _get(r, "floor", "events_per_cpu_s"),
    }


def ratio_lines(s: dict[str, Any]) -> list[str]:
    """The log's summary of the ratios to both floors: the main phase and every case, one line each.

    >>> for line in ratio_lines({"wire": "arrow", "floor_events_per_s": 800.0, "floor_same_wire_events_per_s": 1600.0,
    ...                          "events_per_s_per_worker": 200.0, "ratio_to_floor": 0.25,
    ...                          "ratio_to_floor_same_wire": 0.125, "cases_summary": {"time_60s": {
    ...                          "events_per_s_per_worker": 400.0, "ratio_to_floor": 0.5, "ratio_to_floor_same_wire": 0.25}}}):
    ...     print(line)
    floors: issue 16's (aiokafka + orjson, JSON batches) 800 events/s; same wire as the workers (arrow) 1,600 events/s
    worker (main phase): 200 events/s = 0.25 of the JSON floor, 0.125 of the arrow floor
    time_60s: 400 events/s = 0.5 of the JSON floor, 0.25 of the arrow floor
    """

    def n(v: Any) -> str:
        return "n/a" if v is None else f"{v:,.0f}"

    wire = s.get("wire")
    out = [
        f"floors: issue 16's (aiokafka + orjson, JSON batches) {n(s.get('floor_events_per_s'))} events/s; "
        f"same wire as the workers ({wire}) {n(s.get('floor_same_wire_events_per_s'))} events/s"
    ]
    rows = [("worker (main phase)", s)] if s.get("events_per_s_per_worker") else []
    rows += list((s.get("cases_summary") or {}).items())
    for name, c in rows:
        out.append(
            f"{name}: {n(c.get('events_per_s_per_worker'))} events/s = {c.get('ratio_to_floor')} of the JSON floor, "
            f"{c.get('ratio_to_floor_same_wire')} of the {wire} floor"
        )
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` to 3 decimals, None when either is missing or zero.

    >>> ratio(1.0, 3.0), ratio(None, 3.0), ratio(1.0, 0)
    (0.333, None, None)
    """
    return round(a / b, 3) if a and b else None


def rss_vs_main(case: dict[str, Any], main: dict[str, Any]) -> dict[str, Any]:
    """A case's worker RSS over the main run's (same traffic, other windows): at the largest event count
    both sampled (``rss_at``), else at their ends; and the same for the peak RSS.

    >>> rss_vs_main({"rss_mb_at": {"1000": 110.0, "2000": 115.0}, "peak_rss_mb": 120.0},
    ...             {"rss_mb_at": {"1000": 100.0, "2000": 100.0}, "peak_rss_mb": 100.0})
    {'rss_vs_main': 1.15, 'rss_vs_main_at': '2000', 'peak_rss_vs_main': 1.2}
    """
    a, b = case.get("rss_mb_at") or {}, main.get("rss_mb_at") or {}
    common = sorted(set(a) & set(b), key=int)
    if common:
        at, x, y = common[-1], a[common[-1]], b[common[-1]]
    else:
        at, x, y = "end", case.get("rss_mb_final"), main.get("rss_mb_final")
    px, py = case.get("peak_rss_mb"), main.get("peak_rss_mb")
    return {
        "rss_vs_main": round(x / y, 3) if x and y else None,
        "rss_vs_main_at": at,
        "peak_rss_vs_main": round(px / py, 3) if px and py else None,
    }


def _ok(v, pred) -> bool | None:
    return None if v is None else bool(pred(v))


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d
