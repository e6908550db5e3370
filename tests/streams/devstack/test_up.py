"""``driftwatch up`` against the real stack (children: the real CLI or small real scripts)."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
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
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if ("database" in line and "ready" in line) or not line:
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
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(lines) + out
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
