"""No process outlives its worker, on every exit path (issue 16).

After a full CI run a detector process of a worker whose InfluxDB answered 401 was still alive
minutes later with parent 1, holding the write ends of its own pipes. Here a real
``driftwatch worker`` (the session's broker and InfluxDB; a dedicated SASL broker for the
Kafka auth failure) leaves through each way out — stopped with SIGTERM while healthy and
while InfluxDB refuses its password, killed with SIGKILL, failing Kafka authentication, a bad
monitor config, its web port taken — and afterwards /proc holds no process of it.

Every worker runs with a marker variable of its own in its environment: children inherit it,
so :func:`streams.lifetime.with_environ` finds every descendant, even one already re-parented
to init after the worker died (``descendants()`` of a dead pid would find nothing).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from streams.devstack.localstack import settings_env
from streams.lifetime import alive, descendants, start_time, with_environ
from tests.reliability.helpers import Traffic, monitors_file, on_stack, start_worker, stop, tail, wait_for, windowed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARK = "DW_TEST_EXIT_PATH"
#: seconds a worker's children get to go after the worker has gone (the detector process is
#: signalled at once; the multiprocessing resource tracker ends when its last writer has)
GRACE = 15.0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return "?"


class Watched:
    """A ``driftwatch worker`` with a marker in its environment, and the children seen under it."""

    def __init__(self, env: dict[str, str], monitors: Path, log: Path, *args: str) -> None:
        self.tag = uuid.uuid4().hex
        self.log = log
        self.proc = start_worker({**env, MARK: self.tag}, monitors, log, *args)
        self.pid = self.proc.pid
        self.seen: dict[int, int | None] = {}  # pid -> start time

    def look(self) -> list[int]:
        """Record the worker's current descendants; return them."""
        pids = descendants(self.pid)
        for pid in pids:
            self.seen.setdefault(pid, start_time(pid))
        return pids

    def detector_started(self) -> bool:
        return any("multiprocessing" in _cmdline(p) for p in self.look())

    def wait_exit(self, timeout: float) -> int:
        """Wait for the worker to exit by itself, recording its children meanwhile."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                stop(self.proc)
                pytest.fail(f"the worker did not exit within {timeout:.0f} s; log:\n{tail(self.log)}")
            self.look()
            time.sleep(0.05)
        return self.proc.returncode

    def left(self) -> dict[int, str]:
        """Processes of this worker still alive: the marked ones, and any child seen before."""
        pids = set(with_environ(MARK, self.tag)) | {p for p, t in self.seen.items() if alive(p, t)}
        return {p: _cmdline(p) for p in pids}

    def assert_nothing_left(self, how: str) -> None:
        assert self.proc.poll() is not None
        deadline = time.monotonic() + GRACE
        while (left := self.left()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:  # clean up before failing: the next tests must not inherit them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"{how}: processes of the worker outlived it by {GRACE:.0f} s: {left}\n{tail(self.log)}"


def _traffic_windowed(settings, w: Watched) -> None:
    traffic = Traffic(settings, seed=3)
    for _ in range(2):
        traffic.send("m", 500)
    traffic.flush()
    traffic.close()
    wait_for(lambda: True if windowed(settings) >= 500 else windowed(settings), 120, "a window", [w.proc], w.log)
    wait_for(w.detector_started, 30, "the detector process", [w.proc], w.log)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_no_child_outlives_a_stopped_or_killed_worker(settings, settings_env, tmp_path, how):
    w = Watched(settings_env, monitors_file(tmp_path, ["m"], window=500, first_n=500), tmp_path / "worker.log")
    try:
        _traffic_windowed(settings, w)
        w.proc.send_signal(getattr(signal, how))
        code = w.proc.wait(60)
    finally:
        stop(w.proc)
    assert code == (0 if how == "SIGTERM" else -signal.SIGKILL), tail(w.log)
    assert w.seen, "no child of the worker was ever seen: the test proves nothing"
    w.assert_nothing_left(how)


def test_no_child_outlives_a_worker_stopped_while_influxdb_refuses_its_password(settings, settings_env, tmp_path):
    # the CI case: InfluxDB answers 401 to every write, the worker is stopped with SIGTERM
    wrong = tmp_path / "influx-wrong"
    wrong.write_text("not-the-password")
    env = {**settings_env, "DRIFTWATCH_INFLUX_PASSWORD_FILE": str(wrong)}
    log = tmp_path / "worker.log"
    w = Watched(env, monitors_file(tmp_path, ["m"]), log)
    try:
        wait_for(w.detector_started, 60, "the detector process", [w.proc], log)
        traffic = Traffic(settings, seed=4)
        traffic.send("m", 1000)
        traffic.flush()
        traffic.close()
        # the running worker's first read of InfluxDB (a window checkpoint) is refused
        refused = "refused the credentials (401)"
        wait_for(lambda: refused in log.read_text(errors="replace"), 60, "a 401 in the log", [w.proc], log)
        w.proc.send_signal(signal.SIGTERM)
        code = w.proc.wait(60)
    finally:
        stop(w.proc)
    assert code == 0, tail(log)
    w.assert_nothing_left("SIGTERM with InfluxDB answering 401")


def test_no_child_outlives_a_worker_that_fails_kafka_authentication(settings, settings_env, tmp_path):
    from streams.broker.admin import ensure_topics
    from tests.reliability.secure_stack import secured_broker

    secret = tmp_path / "kafka-password"
    secret.write_text("right-password")
    wrong = tmp_path / "kafka-wrong"
    wrong.write_text("wrong-password")
    with secured_broker(tmp_path, tls=None, users={"svc": "right-password"}) as (_gw, bootstrap):
        update = {
            "kafka_bootstrap": bootstrap,
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "PLAIN",
            "kafka_sasl_username": "svc",
            "kafka_sasl_password": SecretStr("right-password"),
        }
        ensure_topics(settings.model_copy(update=update))  # they exist: the worker gets past its start-up checks
        env = {
            **settings_env,
            "DRIFTWATCH_KAFKA_BOOTSTRAP": bootstrap,
            "DRIFTWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "DRIFTWATCH_KAFKA_SASL_MECHANISM": "PLAIN",
            "DRIFTWATCH_KAFKA_SASL_USERNAME": "svc",
            "DRIFTWATCH_KAFKA_SASL_PASSWORD_FILE": str(wrong),
        }
        w = Watched(env, monitors_file(tmp_path, ["m"]), tmp_path / "worker.log", "--no-create-topics")
        code = w.wait_exit(120)
    assert code != 0, tail(w.log)
    assert w.seen, "the worker exited before its detector process started: the test proves nothing"
    w.assert_nothing_left("Kafka authentication failed")


def test_no_child_outlives_a_worker_stopped_while_it_starts(settings, settings_env, tmp_path):
    # SIGTERM before Faust handles signals: the worker dies at once, its detector process just started
    w = Watched(settings_env, monitors_file(tmp_path, ["m"]), tmp_path / "worker.log")
    try:
        wait_for(lambda: bool(w.look()), 60, "a child of the worker", [w.proc], w.log, every=0.02)
        w.proc.send_signal(signal.SIGTERM)
        w.wait_exit(60)
    finally:
        stop(w.proc)
    w.assert_nothing_left("SIGTERM during start-up")


def test_no_child_outlives_a_worker_with_a_bad_config(settings, settings_env, tmp_path):
    bad = tmp_path / "monitors.yaml"
    bad.write_text("models:\n  - model_id: m\n    window: {size_events: -5}\n")
    w = Watched(settings_env, bad, tmp_path / "worker.log")
    assert w.wait_exit(60) == 2, tail(w.log)
    w.assert_nothing_left("bad monitor config")


def test_no_child_outlives_a_worker_whose_web_port_is_taken(settings, settings_env, tmp_path):
    # a configuration error found only after the detector process started
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.worker_web_port))
        taken.listen()
        w = Watched(settings_env, monitors_file(tmp_path, ["m"]), tmp_path / "worker.log")
        code = w.wait_exit(120)
    assert code != 0, tail(w.log)
    assert w.seen, "the worker exited before its detector process started: the test proves nothing"
    w.assert_nothing_left("web port taken")


def test_the_marker_finds_a_reparented_child(tmp_path):
    """The checks above can fail: a grandchild whose parent died, left on purpose, is found."""
    tag = uuid.uuid4().hex
    script = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    subprocess.run([sys.executable, "-c", script], env={**os.environ, MARK: tag}, check=True)
    try:
        left = with_environ(MARK, tag)
        assert len(left) == 1 and "time.sleep(60)" in _cmdline(left[0])
    finally:
        for pid in with_environ(MARK, tag):
            os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- the shutdown deadline

#: the deadline these tests give the worker (DRIFTWATCH_WORKER_SHUTDOWN_TIMEOUT_SECONDS; default 10 s)
DEADLINE = 6.0
#: what an exit may take beyond the deadline: the ERROR line, the SIGKILL, the process's end (a loaded machine)
SLACK = 5.0
DEADLINE_LINE = "did not finish within 6 s; still waiting for:"


def _on_own_broker(own_stack, settings, tmp_path, env: dict[str, str] | None = None):
    """Settings on a stack of this test's own (its broker is killed, not the session's), and the environment of
    a worker on it with the test's shutdown deadline."""
    s = on_stack(settings, own_stack)
    worker_env = {**settings_env(s), "DRIFTWATCH_WORKER_SHUTDOWN_TIMEOUT_SECONDS": f"{DEADLINE:g}", **(env or {})}
    return s, worker_env


def _kill_broker(own_stack) -> None:
    from streams.devstack.localstack import KAFKA

    pid = own_stack.status()["services"][KAFKA]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, "the broker's end")
    time.sleep(2)  # the worker's clients notice the broker is gone (fetches, heartbeats fail)


def test_a_worker_whose_broker_died_exits_by_its_shutdown_deadline_on_sigterm(own_stack, settings, tmp_path):
    """Observed: a worker whose broker had died ignored SIGTERM for more than 20 s (Faust's stop waited on it)."""
    s, env = _on_own_broker(own_stack, settings, tmp_path)
    w = Watched(env, monitors_file(tmp_path, ["m"], window=500, first_n=500), tmp_path / "worker.log")
    try:
        _traffic_windowed(s, w)
        _kill_broker(own_stack)
        w.look()
        t0 = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)
        code = w.wait_exit(DEADLINE + 60)  # fails the test (with the log) if it is not gone by then
        took = time.monotonic() - t0
    finally:
        stop(w.proc)
    text = w.log.read_text(errors="replace")
    assert took <= DEADLINE + SLACK, f"exited {took:.1f} s after SIGTERM, deadline {DEADLINE:g} s\n{tail(w.log)}"
    assert code == 124, f"exit code {code}\n{tail(w.log)}"
    assert text.count(DEADLINE_LINE) == 1, tail(w.log)  # one line, naming what the shutdown waited for
    assert w.seen, "no child of the worker was ever seen: the test proves nothing"
    w.assert_nothing_left("SIGTERM with the broker dead")


PARENT = """
import subprocess, sys, time
from streams.lifetime import die_with_parent
with open(sys.argv[2], "ab") as log:  # as `driftwatch up` starts its worker: dying with this process
    p = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--monitors", sys.argv[1]],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, preexec_fn=die_with_parent())
print(p.pid, flush=True)
time.sleep(600)
"""


def test_a_worker_whose_parent_and_broker_died_exits_by_its_shutdown_deadline(own_stack, settings, tmp_path):
    """Observed: a worker started by `driftwatch up` outlived `up` by ~60 s when both `up` and its broker died.
    Here its parent is a script that starts it the way `up` does (parent-death signal armed); both die."""
    from streams.lifetime import die_with_parent

    s, env = _on_own_broker(own_stack, settings, tmp_path)
    tag = uuid.uuid4().hex
    log = tmp_path / "worker.log"
    monitors = monitors_file(tmp_path, ["m"], window=500, first_n=500)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(monitors), str(log)],
        env={**env, MARK: tag, "PYTHONUNBUFFERED": "1", "DRIFTWATCH_LOG_LEVEL": "INFO"},
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=die_with_parent(),
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        started = start_time(pid)
        seen: dict[int, int | None] = {}

        def detector_started() -> bool:
            for child in descendants(pid):
                seen.setdefault(child, start_time(child))
            return any("multiprocessing" in _cmdline(p) for p in seen)

        traffic = Traffic(s, seed=5)
        for _ in range(2):
            traffic.send("m", 500)
        traffic.flush()
        traffic.close()
        wait_for(lambda: True if windowed(s) >= 500 else windowed(s), 120, "a window", [parent], log)
        wait_for(detector_started, 30, "the detector process", [parent], log)
        _kill_broker(own_stack)
        detector_started()
        t0 = time.monotonic()
        parent.kill()  # SIGKILL: the kernel sends the worker SIGTERM (PR_SET_PDEATHSIG)
        parent.wait(10)
        while alive(pid, started) and time.monotonic() - t0 < DEADLINE + 60:
            time.sleep(0.05)
        took = time.monotonic() - t0
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()
    left = {p: _cmdline(p) for p in set(with_environ(MARK, tag)) | {p for p, t in seen.items() if alive(p, t)}}
    deadline = time.monotonic() + GRACE
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = {p: _cmdline(p) for p in set(with_environ(MARK, tag)) | {p for p, t in seen.items() if alive(p, t)}}
    for p in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    assert took <= DEADLINE + SLACK, (
        f"the worker lived {took:.1f} s after its parent, deadline {DEADLINE:g} s\n{tail(log)}"
    )
    assert log.read_text(errors="replace").count(DEADLINE_LINE) == 1, tail(log)
    assert seen, "no child of the worker was ever seen: the test proves nothing"
    assert not left, f"processes of the worker outlived it: {left}\n{tail(log)}"
