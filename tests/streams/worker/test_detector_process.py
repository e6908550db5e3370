"""The detectors in a child process give the same records as on the worker's thread, and survive its death."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
import time
import types
import uuid

import pytest

from benchmarks.traffic import Traffic, iter_messages, monitor_config
from detectors.records import WINDOW
from streams.settings import Settings
from streams.worker.deadletter import DeadLetterPublisher
from streams.worker.decode import RawMessage
from streams.worker.detector_process import DetectorProcess
from streams.worker.monitors import parse_monitors
from streams.worker.pipeline import Pipeline
from tests.sinks import CollectSink


async def no_dead_letters(key, value, headers):  # pragma: no cover - the traffic is valid
    raise AssertionError("no dead letters expected")


def traffic_messages(events: int = 6000) -> tuple[Traffic, list[RawMessage]]:
    # a model id of its own: the evaluators in this process keep per-model state (per-source extraction
    # tracking) from other tests' models "m"
    tr = Traffic(models=[f"dp-{uuid.uuid4().hex[:8]}"], events=events, batch_events=500, seed=3)
    msgs = [
        RawMessage(value, key, "t", 0, i, int(time.time() * 1000))
        for i, (key, value, _n) in enumerate(iter_messages(tr))
    ]
    return tr, msgs


def run(evaluator, tr: Traffic, msgs: list[RawMessage], window: int = 1000) -> list:
    cfg = parse_monitors(monitor_config(tr, window=window, reference=window))
    sink = CollectSink()

    async def main():
        p = Pipeline(Settings(), cfg, sink=sink, deadletters=DeadLetterPublisher(no_dead_letters), evaluator=evaluator)
        await p.process(msgs)
        await p.drain(120)

    asyncio.run(main())
    return sink.records


def comparable(records) -> dict:
    out = {}
    for r in records:
        if r.measurement == WINDOW:
            continue
        fields = {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.fields.items()}
        out[(r.measurement, tuple(sorted(r.tags.items())), r.time_ns)] = fields
    return out


@pytest.mark.slow  # starts detector processes (5-11 s)
def test_the_child_process_computes_what_the_thread_computes():
    tr, msgs = traffic_messages()
    on_thread = comparable(run("default", tr, msgs))
    proc = DetectorProcess()
    try:
        in_child = comparable(run(proc, tr, msgs))
    finally:
        proc.close()
    measurements = {k[0] for k in on_thread}
    assert {"dw_drift", "dw_quality", "dw_histogram"} <= measurements  # the detectors really ran
    assert_same(in_child, on_thread)


def assert_same(got_all: dict, want_all: dict) -> None:
    """The same points with the same fields; floats equal to 1e-9."""
    assert got_all.keys() == want_all.keys()
    for k, want in want_all.items():
        got = got_all[k]
        assert got.keys() == want.keys(), k
        for f, v in want.items():
            if isinstance(v, float):
                assert got[f] == pytest.approx(v, rel=1e-9, abs=1e-12), (k, f)
            else:
                assert got[f] == v, (k, f)


@pytest.mark.slow  # starts detector processes (5-11 s)
def test_a_dead_child_costs_the_windows_in_flight_and_is_replaced(caplog):
    tr, msgs = traffic_messages(4000)
    proc = DetectorProcess()
    try:
        first = run(proc, tr, msgs)
        assert any(r.measurement == "dw_drift" for r in first)
        (pid,) = list(proc._pool._processes)  # the one child
        os.kill(pid, signal.SIGKILL)
        with caplog.at_level(logging.ERROR, logger="streams.worker.detector_process"):
            second = run(proc, tr, msgs)
        assert "the detector process died" in caplog.text
        assert proc.restarts == 1
        # every window is still counted (the pipeline's own dw_window point); the one in flight lost its scores
        windows = {r.time_ns for r in first if r.measurement == WINDOW}
        assert {r.time_ns for r in second if r.measurement == WINDOW} == windows
        scored = {r.time_ns for r in second if r.measurement == "dw_drift"}
        # the windows in flight when the death is noticed (at most two: one evaluated, one queued)
        assert 1 <= len(windows) - len(scored) <= 2, (len(windows), len(scored))
        assert max(windows) in scored  # the new child scores what comes after
        third = run(proc, tr, msgs)  # the new child works (and got the reference again)

        def drift(records):
            return comparable(r for r in records if r.measurement == "dw_drift")

        assert drift(third) == drift(first)  # (stateful scores, e.g. per source, went on from the 2nd run)
        assert list(proc._pool._processes) != [pid]
    finally:
        proc.close()


@pytest.mark.slow  # starts detector processes (5-11 s)
def test_the_child_does_not_run_the_hosts_main_script(tmp_path, monkeypatch):
    # spawn runs the parent's __main__ in the child: a host whose main script must not run there
    # (under pytest, Streamlit's AppTest leaves the dashboard app as __main__) must not kill the child
    script = tmp_path / "host.py"
    script.write_text("raise SystemExit('the host script ran in the detector process')\n")
    host = types.ModuleType("__main__")
    host.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", host)
    tr, msgs = traffic_messages(3000)
    proc = DetectorProcess()
    try:
        records = run(proc, tr, msgs)
    finally:
        proc.close()
    assert proc.restarts == 0
    assert any(r.measurement == "dw_drift" for r in records)


@pytest.mark.slow  # starts detector processes (5-11 s)
def test_ctrl_c_is_the_workers_to_handle():
    # Ctrl-C in a terminal signals the worker and its detector process alike: the child must not die
    # of it (with a traceback) while the worker shuts down in order
    tr, msgs = traffic_messages(3000)
    proc = DetectorProcess()
    try:
        run(proc, tr, msgs)
        (pid,) = list(proc._pool._processes)
        os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        records = run(proc, tr, msgs)
        assert proc.restarts == 0 and list(proc._pool._processes) == [pid]
        assert any(r.measurement == "dw_drift" for r in records)
    finally:
        proc.close()


HOST = """
import os, signal, sys, time
from streams.worker.detector_process import DetectorProcess
proc = DetectorProcess()
print(*proc._pool._processes, flush=True)
how = sys.argv[1]
if how == "dies-at-once":  # e.g. InfluxDB answered 401 or the config was bad right after start
    os._exit(1)
proc._pool.submit(time.sleep, 0).result(120)  # the child is up and initialised
print("ready", flush=True)
if how == "exits-without-close":
    sys.exit(2)
time.sleep(600)  # killed by the test (SIGTERM, SIGKILL)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how", ["dies-at-once", "exits-without-close", "SIGTERM", "SIGKILL"])
def test_no_detector_process_outlives_its_worker(how):
    # after a full CI run a detector process of a worker that died of a 401 at start-up was still
    # alive minutes later with parent 1: it had read the worker's pid after the worker was gone
    import subprocess

    host = subprocess.Popen([sys.executable, "-c", HOST, how], stdout=subprocess.PIPE, text=True)
    try:
        (child,) = map(int, host.stdout.readline().split())
        if how in ("SIGTERM", "SIGKILL"):
            assert host.stdout.readline().strip() == "ready"
            host.send_signal(getattr(signal, how))
        host.wait(120)
        deadline = time.monotonic() + 60
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child), f"the detector process {child} outlived its worker ({how})"
    finally:
        host.kill()
        host.wait()
        host.stdout.close()


def test_the_one_off_fits_run_before_the_first_judged_window_and_change_no_result(monkeypatch):
    # the reference (first 1,000 events) is fed alone: once it exists, the adversarial monitor and the feature
    # impacts are fitted on the evaluation thread before any window is judged against it; the windows then
    # get the same records as when the first window does the fits itself
    from streams.worker.evaluation import DetectorRunner

    tr, msgs = traffic_messages(4000)
    per_msg = tr.batch_events
    ref_msgs, rest = msgs[: 1000 // per_msg], msgs[1000 // per_msg :]
    cfg = parse_monitors(monitor_config(tr, window=1000, reference=1000))
    model = tr.models[0]

    def records_of(prepare: bool) -> tuple[dict, bool, bool]:
        sink = CollectSink()
        runner = DetectorRunner()
        if not prepare:
            monkeypatch.setattr(runner, "prepare", lambda *a, **k: 0.0)

        async def main():
            p = Pipeline(Settings(), cfg, sink=sink, deadletters=DeadLetterPublisher(no_dead_letters), evaluator=runner)
            await p.process(ref_msgs)
            await p.drain(120)  # the reference window; the fits are handed over once it is done
            await asyncio.get_running_loop().run_in_executor(p._executor, lambda: None)  # after them (one thread)
            evaluators = {e.name: e for e in runner._box["evaluators"]}
            ref = next(s for tp in p._tps.values() for s in tp.streams.values()).reference
            fitted = evaluators["adversarial"].monitor(model, "1") is not None
            ranked = any(k[0] == "impact" for k in ref._cache if isinstance(k, tuple))
            await p.process(rest)
            await p.drain(120)
            return fitted, ranked

        fitted, ranked = asyncio.run(main())
        return comparable(sink.records), fitted, ranked

    with_prepare, fitted, ranked = records_of(True)
    assert fitted and ranked  # done while no window had been judged yet
    without, fitted_late, ranked_late = records_of(False)
    assert not fitted_late and not ranked_late  # the control: without prepare the first window fits
    assert {"dw_adversarial", "dw_source", "dw_impact", "dw_drift"} <= {k[0] for k in with_prepare}
    assert_same(with_prepare, without)
