"""``driftwatch bench throughput --soak [MINUTES]``: a long run at half the maximum rate (not in CI).

What a short benchmark cannot show: memory that creeps, lag that grows, errors that appear after
minutes. One worker (the bench's monitor config: 8 models, count windows of ``--window`` events,
every default evaluator, the config's default window settings) consumes traffic produced live at
half its maximum rate for ``MINUTES`` (default 30). The maximum is the worker phase's
``events_per_s_per_worker`` measured in the same run (``--soak-rate`` overrides). Every
``--soak-sample`` seconds (10) the phase records:

* ``rss_mb``: the worker's RSS, all its processes (the worker and its detector process), with the
  per-process figures; the broker's and InfluxDB's RSS beside it (tansu keeps every message in
  memory, so the broker grows with the traffic by design);
* ``lag``: per partition of the inference topic, messages handed to the producer minus the group's
  committed offset, and their sum in events and in seconds of traffic. Not the broker's end offset:
  tansu reports it wrong (docs: /work/shared/design.md, "Local stack facts"). The labels topic gets
  no traffic in the soak, so it has no lag to report;
* ``windows`` and ``events_counted``: the ``dw_window`` points queryable in InfluxDB;
* ``error_lines``: lines of the worker log with ERROR, CRITICAL or Traceback, so far.

Then the traffic stops and the phase waits (the idle close, 30 s, + 90 s at most) for the lag to
drain: count windows hold their messages un-acked until they close. ``verdict``: RSS after
the warm-up (the first 5 minutes, or the first sixth of a shorter soak) relative to its value at the
end of the warm-up, the maximum lag, the lag's trend (least-squares slope after the warm-up), and the
error lines. The issue's target: flat RSS (within 10 % after minute 5), bounded lag, no ERROR line.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import procstats
from benchmarks.traffic import PacedProducer, Traffic, write_monitor_config

#: a worker log line that counts as an error in the soak
ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")
#: the issue's warm-up before RSS must be flat
WARM_UP_S = 300.0


def add_arguments(parser) -> None:
    parser.add_argument(
        "--soak",
        type=float,
        nargs="?",
        const=30.0,
        default=None,
        metavar="MINUTES",
        help="also run a soak: live traffic at half the worker phase's rate for MINUTES (default 30), "
        "sampling worker RSS, consumer lag, windows and ERROR lines (not for CI)",
    )
    parser.add_argument(
        "--soak-rate", type=float, help="soak traffic, events/s (default: half the worker phase's events/s)"
    )
    parser.add_argument("--soak-sample", type=float, default=10.0, help="soak sampling interval, seconds")


class ErrorLines:
    """The worker log's error lines, read incrementally (the log grows during the soak)."""

    def __init__(self, path: Path) -> None:
        self.path, self._pos, self.count, self.examples = path, 0, 0, []

    def scan(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                chunk = f.read()
        except OSError:
            return self.count
        cut = chunk.rfind(b"\n") + 1  # whole lines only; the rest is read next time
        self._pos += cut
        for line in chunk[:cut].decode(errors="replace").splitlines():
            if ERROR_LINE.search(line):
                self.count += 1
                if len(self.examples) < 10:
                    self.examples.append(line[:500])
        return self.count


def _slope(t: list[float], y: list[float]) -> float | None:
    """Least-squares slope of ``y`` over ``t`` (per second); None with fewer than 3 points."""
    if len(t) < 3 or max(t) == min(t):
        return None
    return float(np.polyfit(np.asarray(t, float), np.asarray(y, float), 1)[0])


def verdict(samples: list[dict[str, Any]], rate: float, duration_s: float) -> dict[str, Any]:
    """The soak's verdict from its time series (``t_s``, ``rss_mb``, ``lag_events``, ``error_lines``).

    RSS: after the warm-up (5 minutes, or a sixth of a shorter soak), every sample's RSS relative to
    the first sample at or after the warm-up; ``rss_flat`` when all stay within 10 %. Lag:
    ``lag_bounded`` when the mean lag of the last quarter of the post-warm-up samples is at most the
    mean of the first quarter plus 10 s of traffic (a lag that keeps growing fails this).

    >>> s = [{"t_s": t, "rss_mb": 100.0 + (t > 50), "lag_events": 500, "error_lines": 0} for t in range(0, 300, 10)]
    >>> v = verdict(s, 1000.0, 300.0)
    >>> v["rss_flat"], v["lag_bounded"], v["no_error_line"], v["rss_change_after_warm_up"]
    (True, True, True, 0.01)
    """
    warm = min(WARM_UP_S, duration_s / 6)
    after = [s for s in samples if s["t_s"] >= warm and s.get("during_traffic", True)]
    out: dict[str, Any] = {"warm_up_s": round(warm, 1), "samples_after_warm_up": len(after)}
    errors = samples[-1]["error_lines"] if samples else None
    out["error_lines"] = errors
    out["no_error_line"] = None if errors is None else errors == 0
    if len(after) < 2:
        return {**out, "rss_flat": None, "lag_bounded": None}
    rss = [s["rss_mb"] for s in after]
    base = rss[0]
    out["rss_mb_at_warm_up"] = base
    out["rss_mb_end"] = rss[-1]
    out["rss_mb_min_after_warm_up"] = min(rss)
    out["rss_mb_max_after_warm_up"] = max(rss)
    out["rss_change_after_warm_up"] = round(rss[-1] / base - 1, 3)  # the ratio the issue asks for
    out["rss_max_deviation_after_warm_up"] = round(max(abs(x / base - 1) for x in rss), 3)
    out["rss_slope_mb_per_min"] = round((_slope([s["t_s"] for s in after], rss) or 0.0) * 60, 3)
    out["rss_flat"] = out["rss_max_deviation_after_warm_up"] <= 0.10
    lag = [s["lag_events"] for s in after]
    out["lag_events_max"] = max(s["lag_events"] for s in samples if s.get("during_traffic", True))
    out["lag_seconds_max"] = round(out["lag_events_max"] / rate, 2)
    out["lag_slope_events_per_min"] = round((_slope([s["t_s"] for s in after], lag) or 0.0) * 60, 1)
    q = max(1, len(lag) // 4)
    first, last = float(np.mean(lag[:q])), float(np.mean(lag[-q:]))
    out["lag_events_mean_first_quarter"], out["lag_events_mean_last_quarter"] = round(first, 1), round(last, 1)
    out["lag_bounded"] = last <= first + 10 * rate
    return out


def run_soak(bench, max_rate: float | None, spawn, log) -> dict[str, Any]:
    """The phase (see module docstring). ``max_rate``: the worker phase's events/s (None: not measured);
    ``spawn(bench, settings, label, i, log_level)`` starts one worker; ``log(msg)`` reports progress."""
    from benchmarks.throughput import PARTITIONS, BenchError, WindowWatcher, _tail
    from streams.broker.admin import committed_offsets, delete_topics, ensure_topics, topic_names
    from streams.devstack.localstack import terminate
    from streams.influx.admin import ensure_database
    from streams.lifetime import descendants
    from streams.worker.monitors import WindowConfig
    from streams.worker.window_changelog import window_changelog_topic

    plan = bench.plan
    rate = plan.soak_rate or (max_rate / 2 if max_rate else None)
    if not rate:
        raise BenchError("soak: no rate: the worker phase did not measure one (skipped or failed); give --soak-rate")
    duration = plan.soak * 60.0
    base = Traffic(models=plan.models, wire=plan.wire)
    # enough traffic for the whole soak; the producer is stopped when the time is up
    traffic = Traffic(
        models=base.models,
        events=int(rate * (duration + 60)) + len(base.models) * plan.batch_events,
        batch_events=plan.batch_events,
        seed=base.seed,
        base_time=base.base_time,
        wire=base.wire,
    )
    # the bench's models and windows, with the config's default idle close (the bench's pre-produced
    # phases set 600 s): after the traffic stops, the open windows close and the lag can drain to 0
    idle = WindowConfig.model_fields["idle_close_seconds"].default
    write_monitor_config(
        bench.root / "monitors-soak.yaml",
        base,
        window=plan.window,
        reference=plan.reference_events or plan.window,
        window_extra={**plan.window_extra(), "idle_close_seconds": idle},
    )
    s = bench.settings("soak").model_copy(update={"monitors": bench.root / "monitors-soak.yaml"})
    ensure_topics(s, partitions=PARTITIONS)
    ensure_database(s)
    logp = bench.root / "worker-soak-0.log"
    errors = ErrorLines(logp)
    watcher = WindowWatcher(s)
    samples: list[dict[str, Any]] = []
    out: dict[str, Any] = {
        "minutes": plan.soak,
        "rate_events_per_s": round(rate, 1),
        "max_rate_events_per_s": max_rate,
        "sample_s": plan.soak_sample,
        "window_events": plan.window,
        "idle_close_seconds": idle,
        "models": len(plan.models),
        "uptime_at_start": _uptime(),
        "log": str(logp),
    }
    proc = spawn(bench, s, "soak", 0, "INFO")  # INFO: its "Worker ready" line; ERROR lines are counted either way
    producer = PacedProducer(bench.stack.bootstrap, s.topic_inferences, traffic, rate, PARTITIONS)
    try:
        deadline = time.monotonic() + 180
        while "Worker ready" not in _tail(logp, 200):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"soak: the worker did not get ready ({proc.poll()}):\n{_tail(logp)}")
            time.sleep(0.5)
        producer.start()
        t0 = time.monotonic()
        log(f"soak: {plan.soak:g} min at {rate:,.0f} events/s (max {max_rate}), sampling every {plan.soak_sample:g} s")

        def sample(during: bool) -> dict[str, Any]:
            if proc.poll() is not None:
                raise BenchError(f"soak: the worker exited with {proc.returncode}:\n{_tail(logp)}")
            if producer.failure:
                raise BenchError(f"soak: producing failed: {producer.failure[0]!r}")
            watcher.poll()
            committed = committed_offsets(s)
            lag = {p: n - max(committed.get(p, 0), 0) for p, n in producer.by_partition.items()}
            procs = {"worker": proc.pid, **{f"child{k}": c for k, c in enumerate(descendants(proc.pid))}}
            rss = {name: _rss(pid) for name, pid in procs.items()}
            lag_events = sum(lag.values()) * plan.batch_events
            row = {
                "t_s": round(time.monotonic() - t0, 1),
                "during_traffic": during,
                "rss_mb": round(sum(v for v in rss.values() if v is not None), 1),
                "rss_mb_by_process": rss,
                "broker_rss_mb": _rss(bench.pids["broker"]),
                "influxd_rss_mb": _rss(bench.pids["influxd"]),
                "produced_events": producer.events,
                "events_counted": watcher.counted,
                "windows": len(watcher.points),
                "lag_messages_by_partition": lag,
                "lag_events": lag_events,
                "lag_seconds": round(lag_events / rate, 2),
                "error_lines": errors.scan(),
                "loadavg_1m": round(_loadavg(), 2),
            }
            samples.append(row)
            return row

        next_at = 0.0
        while time.monotonic() - t0 < duration:
            row = sample(True)
            if len(samples) % 6 == 1:
                log(
                    f"soak t={row['t_s']:.0f}s RSS {row['rss_mb']} MB, lag {row['lag_seconds']} s, "
                    f"{row['windows']} windows, {row['error_lines']} error lines, broker {row['broker_rss_mb']} MB"
                )
            next_at += plan.soak_sample
            time.sleep(max(0.0, t0 + next_at - time.monotonic()))
        producer.stop()
        drain_deadline = time.monotonic() + idle + 90
        while True:  # the traffic stopped: does the lag drain?
            row = sample(False)
            if row["lag_events"] == 0 or time.monotonic() > drain_deadline:
                break
            time.sleep(min(plan.soak_sample, 5.0))
        out["drained"] = row["lag_events"] == 0
        out["drain_s"] = round(row["t_s"] - duration, 1)
        out["produced_events"] = producer.events
        out["events_counted"] = watcher.counted
        out["peak_rss_mb"] = round(
            sum(_peak(p) for p in [proc.pid, *descendants(proc.pid)]), 1
        )  # the worker's processes' VmHWM, summed
    finally:
        producer.stop()
        terminate(proc.pid, 15.0, proc)
        watcher.close()
        with_errors = errors.scan()
        try:
            delete_topics(s, [*topic_names(s), window_changelog_topic(s)])  # frees the broker's memory
        except Exception as e:  # cleanup only; the result stands
            log(f"soak: could not delete its topics: {e}")
    out["uptime_at_end"] = _uptime()
    out["error_line_examples"] = errors.examples
    out["error_lines_incl_shutdown"] = with_errors
    out["verdict"] = verdict(samples, rate, duration)
    out["samples"] = samples
    return out


def _rss(pid: int) -> float | None:
    try:
        return round(procstats.rss_mb(pid), 1)
    except procstats.ProcessGone:
        return None


def _peak(pid: int) -> float:
    try:
        return procstats.peak_rss_mb(pid)
    except procstats.ProcessGone:
        return 0.0


def _loadavg() -> float:
    import os

    return os.getloadavg()[0]


def _uptime() -> str:
    """``uptime``'s line (load averages): the machine is shared, so say how busy it was."""
    import subprocess

    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"loadavg {_loadavg():.2f}"
