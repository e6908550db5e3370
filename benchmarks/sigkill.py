"""``driftwatch bench throughput --sigkill``: a SIGKILL in the middle of a long window, and what is re-read.

One model, count windows of ``--sigkill-window`` events (1M; quick 100k) kept as summaries
(``window.summary_min_events``), traffic produced live at ``--sigkill-rate`` events/s (20,000;
quick 10,000) as the SDK's column batches, for two windows. Worker A runs until its first
window is written and the traffic is half-way into the second, then gets SIGKILL; worker B
(same consumer group, its own state folder, as on another host) takes the partition over and
finishes. Then worker C, in a new group, reads the same topic without a fault.

Reported (``sigkill`` in the JSON):

* ``reread``: the messages between the group's committed offset after the kill and the last
  message produced before it — an upper bound of what B reads again (A may have lagged behind the
  producer) — in messages, events and seconds of traffic; the issue's target is ~10 s. Before the
  open-window checkpoints (``streams/worker/window_changelog.py``) it was everything since the open
  window began (``window_began_at_message``).
* ``restored``: B's log line saying which open window it restored, with how many events.
* ``points_equal_fault_free``: every ``dw_window`` (events, seq, checkpoint end offset, invalid rows)
  and ``dw_drift`` point (p-value, statistic) written by A and B equals C's, floats to 1e-9.
* RSS of A just before the kill and of B at the end (worker and detector process together).

``--sigkill-window 60s``: event-time windows of 60 s instead (a grace of a sixth of the window,
``summary_min_seconds`` set so they are summarised and checkpointed), traffic at 1,000 events/s by
default — the bench traffic carries one event per millisecond, so its event time then keeps pace with
the wall clock as a live stream's does. The traffic covers the partial first window, two whole ones and
the grace; A is killed 60 % into the first whole window (``window_began_at_message``: its first
message, what a restart re-read before the open event-time windows were checkpointed).
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import procstats
from benchmarks.traffic import PacedProducer, Traffic, write_monitor_config


def add_arguments(parser) -> None:
    parser.add_argument(
        "--sigkill",
        action="store_true",
        help="also SIGKILL a worker in the middle of a long summarised window under live traffic and report "
        "what its successor re-reads (and that the points equal a fault-free run's)",
    )
    parser.add_argument(
        "--sigkill-window",
        help="window size in events (default 1M; quick 100k), or Ns: event-time windows of N seconds (e.g. 60s)",
    )
    parser.add_argument(
        "--sigkill-rate",
        type=float,
        help="live traffic, events/s (default 20,000; quick 10,000; event-time windows: 1,000)",
    )


def time_plan(base_time: float, seconds: float, batch_events: int) -> dict[str, Any]:
    """Event-time windows of ``seconds`` over bench traffic starting at ``base_time`` (one event per ms):
    the grace, the events to produce (the partial first window, two whole ones, the grace and 2 s more), the
    first message of the first whole window, the message to kill after (60 % into it) and the events in the
    windows that close by themselves.

    >>> p = time_plan(1000.5, 60.0, 1000)
    >>> p["grace"], p["events"], p["window_message"], p["kill_at"], p["expected"]
    (10.0, 152000, 19, 55, 139500)
    """
    from benchmarks.traffic import Traffic as T
    from benchmarks.traffic import event_times

    grace = seconds / 6
    first_end = (math.floor(base_time / seconds) + 1) * seconds
    events = math.ceil((first_end - base_time + 2 * seconds + grace + 2.0) * 1000 / batch_events) * batch_events
    t = event_times(T(models=["m"], base_time=base_time), 0, events)
    closed_until = math.floor((float(t[-1]) - grace) / seconds) * seconds
    window_first = int(np.searchsorted(t, first_end))
    kill_first = int(np.searchsorted(t, first_end + 0.6 * seconds))
    return {
        "grace": grace,
        "events": events,
        "window_message": window_first // batch_events,
        "kill_at": kill_first // batch_events,
        "expected": int(np.sum(t < closed_until)),
    }


def _points(settings) -> dict:
    """dw_window and dw_drift points: key -> the values compared."""
    from detectors import records as R
    from streams.influx.sink import query

    out: dict = {}
    for r in query(settings, f'SELECT "n_events", "seq", "ckpt_end_offset", "n_invalid" FROM "{R.WINDOW}"'):
        out[("w", r["time"])] = (r.get("n_events"), r.get("seq"), r.get("ckpt_end_offset"), r.get("n_invalid"))
    q = f'SELECT "p_value", "statistic" FROM "{R.DRIFT}" GROUP BY "feature", "detector"'
    for r in query(settings, q):
        out[("d", r.get("feature"), r.get("detector"), r["time"])] = (r.get("p_value"), r.get("statistic"))
    return out


def differences(got: dict, want: dict) -> list[str]:
    """What differs between two point sets (floats to 1e-9 relative; NaN equals NaN).

    >>> differences({("w", 1): (5, 0.1)}, {("w", 1): (5, 0.1 + 1e-15), ("w", 2): (1, 1)})
    ["missing ('w', 2)"]
    """
    out = [f"missing {k}" for k in sorted(set(want) - set(got), key=str)]
    out += [f"unexpected {k}" for k in sorted(set(got) - set(want), key=str)]
    for k in sorted(set(got) & set(want), key=str):
        for x, y in zip(got[k], want[k]):
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                if not (math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(x) and math.isnan(y))):
                    out.append(f"{k}: {got[k]} != {want[k]}")
                    break
            elif x != y:
                out.append(f"{k}: {got[k]} != {want[k]}")
                break
    return out


def run_sigkill(bench, base: Traffic, spawn, log) -> dict[str, Any]:
    """The phase (see module docstring). ``spawn(bench, settings, label, i, log_level)`` starts one worker (Popen);
    ``log(msg)`` reports progress."""
    from benchmarks.throughput import BenchError, Case, WindowWatcher, _tail, _tree_mb
    from streams.broker.admin import committed_offsets, ensure_topics
    from streams.devstack.localstack import terminate
    from streams.influx.admin import ensure_database

    plan = bench.plan
    case = Case.parse(str(plan.sigkill_window or (100_000 if plan.quick else 1_000_000)))
    timed = case.seconds is not None
    tp = time_plan(base.base_time, case.seconds, plan.batch_events) if case.seconds is not None else {}
    window = int(case.events or 0)
    rate = plan.sigkill_rate or (1000.0 if timed else 10_000.0 if plan.quick else 20_000.0)
    expected = tp["expected"] if timed else 2 * window  # events in the windows that close by themselves
    model = base.models[0]
    traffic = Traffic(
        models=[model],
        events=tp["events"] if timed else 2 * window,
        batch_events=plan.batch_events,
        seed=base.seed,
        base_time=base.base_time,
        wire=base.wire,
    )
    ref_n = plan.reference_events or plan.window
    extra = plan.window_extra()
    if timed:
        extra = {**extra, "size_seconds": case.seconds, "grace_seconds": tp["grace"]}
        extra["summary_min_seconds"] = case.seconds
    write_monitor_config(
        bench.root / "monitors-sigkill.yaml",
        traffic,
        window=None if timed else window,
        reference=ref_n,
        window_extra=extra,
    )
    s = bench.settings("sigkill").model_copy(update={"monitors": bench.root / "monitors-sigkill.yaml"})
    ensure_topics(s)
    ensure_database(s)
    producer = PacedProducer(bench.stack.bootstrap, s.topic_inferences, traffic, rate, s.topic_partitions)
    procs: list[subprocess.Popen] = []
    logs = [bench.root / f"worker-sigkill-{i}.log" for i in range(2)]
    watcher = WindowWatcher(s)
    out: dict[str, Any] = {"window_events": window, "rate_events_per_s": rate, "batch_events": plan.batch_events}
    if timed:
        out.update(window_seconds=case.seconds, grace_seconds=tp["grace"], events_in_closed_windows=expected)
        del out["window_events"]

    def wait(cond, timeout: float, what: str, proc: subprocess.Popen, logp: Path) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if proc.poll() is not None:
                raise BenchError(f"sigkill: worker exited with {proc.returncode} waiting for {what}:\n{_tail(logp)}")
            if producer.failure:
                raise BenchError(f"sigkill: producing failed: {producer.failure[0]!r}")
            if time.monotonic() > deadline:
                raise BenchError(f"sigkill: timed out waiting for {what}; log tail:\n{_tail(logp)}")
            watcher.poll()
            time.sleep(0.2)

    try:
        a = spawn(bench, s, "sigkill", 0, "INFO")
        procs.append(a)
        wait(lambda: "Worker ready" in logs[0].read_text(errors="replace"), 120, "worker A ready", a, logs[0])
        producer.start()
        log(f"sigkill: worker A ready, traffic at {rate:,.0f} events/s, windows of {case.name}")
        if timed:
            per_window, kill_at = tp["window_message"], tp["kill_at"]
            first = 1  # the partial first window
            last = kill_at + int((1 - 0.6) * (case.seconds or 0) * 1000 / plan.batch_events) - 2
        else:
            per_window = window // plan.batch_events
            kill_at, first, last = per_window + per_window // 2, window, 2 * per_window - 2
        span = traffic.events / rate
        wait(lambda: watcher.counted >= first, span + 120, "the first window", a, logs[0])

        def steady() -> bool:
            """In the middle of the open window, with A acking messages of it (it keeps up with the traffic:
            the re-read bound below is then not A's lag)."""
            if producer.messages >= last:
                raise BenchError("sigkill: worker A did not keep up with the traffic before the window ended")
            return producer.messages >= kill_at and max(committed_offsets(s).values(), default=0) > per_window

        wait(steady, span + 60, "mid window, A caught up", a, logs[0])
        out["rss_mb_before_kill"] = round(_tree_mb(procstats.rss_mb, a.pid), 1)
        produced = producer.messages
        a.kill()
        a.wait(10)
        time.sleep(1.0)  # nothing commits for a dead member; the group's offsets are what it left
        committed = committed_offsets(s)
        if len(committed) != 1:
            raise BenchError(f"sigkill: expected the committed offset of one partition, got {committed}")
        (offset,) = committed.values()
        reread = produced - offset
        out["killed_after_messages"] = produced
        out["committed_offset"] = offset
        out["window_began_at_message"] = per_window
        out["reread"] = {
            "messages": reread,
            "events": reread * plan.batch_events,
            "seconds_of_traffic": round(reread * plan.batch_events / rate, 2),
            "what": "upper bound: last message produced before the kill minus the committed offset",
        }
        log(f"sigkill: A killed after {produced} messages; committed offset {offset}: {out['reread']}")
        b = spawn(bench, s, "sigkill", 1, "INFO")
        procs.append(b)
        wait(producer.done.is_set, span + 120, "the traffic", b, logs[1])
        wait(lambda: watcher.counted >= expected, 300, "every window", b, logs[1])
        out["rss_mb_after"] = round(_tree_mb(procstats.rss_mb, b.pid), 1)
        out["events_counted"] = watcher.counted
        m = re.search(r"open windows? #\d+ restored from .*?\((\d+) events, up to offset (\d+)\)", logs[1].read_text())
        out["restored"] = (
            {"line": m.group(0), "events": int(m.group(1)), "up_to_offset": int(m.group(2))} if m else None
        )
        out["error_lines"] = sum(" ERROR " in ln for p in logs for ln in p.read_text(errors="replace").splitlines())
    finally:
        producer.stop(timeout=10)
        for p in procs:
            terminate(p.pid, 15.0, p)
        watcher.close()
    # the same topic without a fault: a new group and database
    c = s.model_copy(
        update={"consumer_group": s.consumer_group + "-faultfree", "influx_db": s.influx_db + "_faultfree"}
    )
    ensure_database(c)
    check = WindowWatcher(c)
    proc = spawn(bench, c, "sigkill-faultfree", 0, "WARNING")
    try:
        deadline = time.monotonic() + 600
        while check.counted < expected:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("sigkill: the fault-free run did not finish")
            check.poll()
            time.sleep(0.5)
    finally:
        terminate(proc.pid, 15.0, proc)
        check.close()
    diff = differences(_points(s), _points(c))
    out["points_compared"] = len(_points(c))
    out["points_equal_fault_free"] = not diff
    out["differences"] = diff[:10]
    with contextlib.suppress(Exception):
        from streams.broker.admin import delete_topics, topic_names
        from streams.worker.window_changelog import window_changelog_topic

        delete_topics(s, [*topic_names(s), window_changelog_topic(s)])
    return out
