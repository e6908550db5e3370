"""``driftwatch up`` against the real stack (children: the real CLI or small real scripts)."""

from __future__ import annotations

import argparse
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streams.broker.admin import list_topics
from streams.devstack import up
from streams.devstack.localstack import LocalStack, free_ports, port_in_use
from streams.influx.admin import list_databases
from streams.lifetime import die_with_parent

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _free_worker_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's web port defaults to 6066, which another test run may hold."""
    monkeypatch.setenv("DRIFTWATCH_WORKER_WEB_PORT", str(free_ports(1)[0]))


def _args(tmp_path: Path, **kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    kport, iport, dport = free_ports(3)
    argv = [
        "--state-dir",
        str(tmp_path),
        "--kafka-port",
        str(kport),
        "--influx-port",
        str(iport),
        "--dashboard-port",
        str(dport),
    ]
    for k, v in kw.items():
        if v is True:
            argv.append("--" + k.replace("_", "-"))
    return parser.parse_args(argv)


#: how long ``up`` may take to print "database ready". What it waits for is mostly a fresh interpreter's start and
#: imports, which are CPU-bound: ~1 s on an idle machine, 10-13 s measured with ten busy processes on this
#: 2-core machine (the stack itself then starts in 0.2-0.7 s). A fixed 30 s, counted from the Popen, was
#: exceeded once in a fast-tier run beside other tests. Beyond that, up's own budgets: each service
#: LocalStack.start_timeout (30 s), the topic admin 10 s.
UP_START_BUDGET = 180.0
#: how long ``up`` may take to stop its stack after SIGTERM: LocalStack.down waits stop_timeout (10 s) and then
#: 5 s after a SIGKILL per service, one after the other (30 s at worst, the old timeout), plus its exit
UP_STOP_BUDGET = 90.0


def _lines(stream) -> queue.Queue:
    """The lines of ``stream`` as they come, read on a thread (None at EOF): a blocked ``readline()`` can
    then not outlast the deadline, as it could in the loop the test had."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        with stream:  # closed at EOF, when the process has exited
            for line in stream:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="up-stdout", daemon=True).start()
    return lines


def test_up_without_children_prepares_the_stack_and_stops_on_sigterm(tmp_path: Path) -> None:
    kport, iport = free_ports(2)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "up",
            "--no-worker",
            "--no-dashboard",
            "--no-demo",
            "--state-dir",
            str(tmp_path),
            "--kafka-port",
            str(kport),
            "--influx-port",
            str(iport),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent(),
    )
    assert proc.stdout is not None
    pending = _lines(proc.stdout)
    lines: list[str] = []
    t0 = time.monotonic()
    try:
        while True:  # until "database ready", up's exit, or the budget
            left = UP_START_BUDGET - (time.monotonic() - t0)
            try:
                line = pending.get(timeout=max(left, 0.0))
            except queue.Empty:
                pytest.fail(f"no 'database ready' from up within {UP_START_BUDGET:.0f} s:\n" + "".join(lines))
            if line is None:
                break
            lines.append(line)
            if "database" in line and "ready" in line:
                break
        assert any("topics ready" in ln for ln in lines), "".join(lines)
        s = up.local_settings(
            argparse.Namespace(state_dir=tmp_path, kafka_port=kport, influx_port=iport, dashboard_port=None)
        )
        s = s.model_copy(update=LocalStack(tmp_path, kport, iport).influx_settings())  # InfluxDB has auth on
        assert {s.topic_inferences, s.topic_labels, s.topic_deadletter, s.topic_alerts} <= set(list_topics(s))
        assert s.influx_db in list_databases(s)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(UP_STOP_BUDGET)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            pytest.fail(f"up did not stop within {UP_STOP_BUDGET:.0f} s of SIGTERM:\n" + "".join(lines))
    while (line := pending.get(timeout=10)) is not None:  # the pump reads to EOF once up has exited
        lines.append(line)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "stack kafka stopped, influxdb stopped" in out
    assert not LocalStack(tmp_path, kport, iport).status()["services"]["kafka"]["running"]


def test_child_exiting_early_is_named_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "child.py"
    script.write_text(
        "import sys, time\n"
        "if sys.argv[1] == 'worker':\n"
        "    print('worker: cannot read monitors: boom', flush=True); sys.exit(4)\n"
        "time.sleep(60)\n"
    )
    monkeypatch.setattr(up, "CHILD_ARGV_PREFIX", [sys.executable, str(script)])
    args = _args(tmp_path / "st", no_dashboard=True)
    t0 = time.monotonic()
    assert up.run(args) == 1
    out = capsys.readouterr().out
    assert "worker exited with code 4" in out and "cannot read monitors: boom" in out
    assert "demo stopped" in out  # the others are stopped, in order
    assert not port_in_use(args.kafka_port)  # and the stack it started
    assert time.monotonic() - t0 < 20


def test_taken_dashboard_port_is_reported_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    args = _args(tmp_path, no_worker=True, no_demo=True)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", args.dashboard_port))
        blocker.listen()
        assert up.run(args) == 1
    err = capsys.readouterr().err
    assert f"port {args.dashboard_port} (dashboard) is in use" in err and "DRIFTWATCH_DASHBOARD_PORT" in err
    assert not port_in_use(args.kafka_port)


# --keep-stack leaves broker and InfluxDB running on purpose: their Popen objects go while they run
@pytest.mark.filterwarnings("ignore:subprocess \\d+ is still running:ResourceWarning")
def test_keep_stack_leaves_it_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "child.py"
    script.write_text("import sys; sys.exit(3)\n")
    monkeypatch.setattr(up, "CHILD_ARGV_PREFIX", [sys.executable, str(script)])
    args = _args(tmp_path / "st", keep_stack=True, no_dashboard=True, no_demo=True)
    stack = LocalStack(args.state_dir, args.kafka_port, args.influx_port)
    try:
        assert up.run(args) == 1
        assert stack.status()["running"]
    finally:
        stack.down()
