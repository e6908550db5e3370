"""The local stack: real tansu + real InfluxDB started, probed and stopped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer

from streams.devstack.localstack import (
    LocalStack,
    StackError,
    free_ports,
    influx_config,
    influx_ready,
    kafka_ready,
    port_in_use,
    settings_env,
)
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[3]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


# ------------------------------------------------------------------ pure helpers


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert not any(port_in_use(p) for p in ports)


def test_influx_config_binds_everything_to_loopback(tmp_path: Path) -> None:
    conf = influx_config(tmp_path, 18086, 18088)
    assert 'bind-address = "127.0.0.1:18088"' in conf  # RPC / backup service
    assert 'bind-address = "127.0.0.1:18086"' in conf  # HTTP
    assert conf.count("bind-address") == 2  # no service left on a default, all-interfaces port
    assert "reporting-enabled = false" in conf
    for d in ("meta", "data", "wal"):
        assert f'"{tmp_path.resolve() / "influxdb" / d}"' in conf


def test_settings_env_round_trips_through_settings(tmp_path: Path) -> None:
    s = Settings(
        kafka_bootstrap="h:1",
        topic_inferences="x.inf",
        influx_db="db1",
        influx_token="s3cret",
        state_dir=tmp_path,
        kafka_port=1234,
        influx_username=None,
    )
    env = settings_env(s, base={"DRIFTWATCH_INFLUX_USERNAME": "stale", "PATH": "/bin"})
    assert env["PATH"] == "/bin" and "DRIFTWATCH_INFLUX_USERNAME" not in env
    # independent check: a fresh Settings read from exactly that environment
    old = os.environ.copy()
    try:
        os.environ.clear()
        os.environ.update(env)
        again = Settings()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert again == s
    assert again.influx_token is not None and again.influx_token.get_secret_value() == "s3cret"


# ------------------------------------------------------------------ real stack


@pytest.mark.integration
def test_up_status_down_cycle(tmp_path: Path) -> None:
    kport, iport = free_ports(2)
    stack = LocalStack(tmp_path / "st", kport, iport, die_with_parent=True)
    try:
        t0 = time.perf_counter()
        status = stack.up()
        up_s = time.perf_counter() - t0
        assert status["running"], status
        assert kafka_ready("127.0.0.1", kport) and influx_ready(stack.influx_url)
        k, i = status["services"]["kafka"], status["services"]["influxdb"]
        assert (k["port"], i["port"]) == (kport, iport)
        assert k["pid"] and i["pid"] and k["pid"] != i["pid"]
        assert Path(k["log"]).exists() and (tmp_path / "st" / "run" / "kafka.pid").read_text().strip() == str(k["pid"])
        assert (tmp_path / "st" / "influxdb.conf").exists()

        again = stack.up()  # no-op that says so
        assert "already running" in again["message"] and again["services"]["kafka"]["pid"] == k["pid"]

        # another instance (as another process would) sees the same stack
        assert LocalStack(tmp_path / "st", kport, iport).status()["services"]["influxdb"]["pid"] == i["pid"]
    finally:
        t0 = time.perf_counter()
        result = stack.down()
        down_s = time.perf_counter() - t0
    assert result == {"kafka": "stopped", "influxdb": "stopped"}
    st = stack.status()
    assert not st["running"] and st["services"]["kafka"]["pid"] is None
    assert not port_in_use(kport) and not port_in_use(iport)
    assert stack.down() == {"kafka": "not running", "influxdb": "not running"}
    print(f"\nLocalStack.up() {up_s:.3f} s, down() {down_s:.3f} s")
    assert up_s < 15 and down_s < 15


@pytest.mark.integration
def test_influxdb_refuses_unauthenticated_queries_and_keeps_its_credential(tmp_path: Path) -> None:
    """The local InfluxDB runs with auth on: the generated admin password (0600 file in a 0700
    folder) works, nothing else does — before and after a restart on the same data."""
    kport, iport = free_ports(2)
    stack = LocalStack(tmp_path / "st", kport, iport, die_with_parent=True)
    try:
        stack.up()
        f = stack.influx_password_file
        assert f == (tmp_path / "st" / "secrets" / "influx_password").resolve()
        assert (f.stat().st_mode & 0o777, f.parent.stat().st_mode & 0o777) == (0o600, 0o700)
        user, password = stack.influx_auth
        assert user == "driftwatch" and len(password) >= 24
        for q in ("SHOW DATABASES", 'CREATE DATABASE "x"', 'DROP DATABASE "_internal"'):
            r = httpx.post(f"{stack.influx_url}/query", data={"q": q})
            assert r.status_code == 401, (q, r.status_code, r.text)
        r = httpx.post(f"{stack.influx_url}/write", params={"db": "x"}, content=b"m v=1")
        assert r.status_code == 401
        assert (
            httpx.post(
                f"{stack.influx_url}/query", data={"q": "SHOW DATABASES"}, auth=(user, "wrong-" + password)
            ).status_code
            == 401
        )
        r = httpx.post(f"{stack.influx_url}/query", data={"q": 'CREATE DATABASE "x"'}, auth=stack.influx_auth)
        assert r.status_code == 200 and "error" not in r.text, r.text
        # `driftwatch worker` after `driftwatch stack up` (same state folder, no credential set) finds it
        from streams.influx.admin import list_databases

        local = Settings(
            state_dir=tmp_path / "st",
            influx_port=iport,
            influx_url=stack.influx_url,
            influx_username=None,
            influx_password=None,
            influx_token=None,
        )
        assert local.influx_username == "driftwatch" and "x" in list_databases(local)
        elsewhere = Settings(
            state_dir=tmp_path / "other",
            influx_port=iport,
            influx_url=stack.influx_url,
            influx_username=None,
            influx_password=None,
            influx_token=None,
        )
        assert elsewhere.influx_username is None
        stack.down()
        stack.up()  # the same data folder: the user exists, the file's password still works
        assert stack.influx_auth == (user, password)
        r = httpx.get(f"{stack.influx_url}/query", params={"q": "SHOW DATABASES"}, auth=stack.influx_auth)
        assert r.status_code == 200 and '"x"' in r.text
        assert httpx.get(f"{stack.influx_url}/query", params={"q": "SHOW DATABASES"}).status_code == 401
        # a lost password file: a new one is generated, which the data folder does not know
        stack.down()
        f.unlink()
        with pytest.raises(StackError, match="has users, and the admin credential"):
            stack.up()
    finally:
        stack.down()


@pytest.mark.integration
def test_kafka_round_trip_through_the_real_broker(settings: Settings) -> None:
    topic = settings.topic_inferences
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    sent = {f"e{i}".encode(): f'{{"i": {i}}}'.encode() for i in range(40)}
    for key, value in sent.items():
        producer.send(topic, key=key, value=value, headers=[("h", b"1")])
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        consumer_timeout_ms=1000,
    )
    got: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 30
    try:
        while len(got) < len(sent) and time.monotonic() < deadline:
            for rec in consumer.poll(timeout_ms=500).values():
                for r in rec:
                    assert r.headers == [("h", b"1")]
                    got[r.key] = r.value
    finally:
        consumer.close()
    assert got == sent


@pytest.mark.integration
def test_influx_write_query_round_trip(stack: LocalStack, settings: Settings) -> None:
    db = settings.influx_db
    t_ns = 1_700_000_000_123_456_789
    r = httpx.post(
        f"{stack.influx_url}/write",
        params={"db": db},
        content=f"drift,model=m1,feature=x score=0.25,n=100i {t_ns}\n".encode(),
        auth=stack.influx_auth,
    )
    assert r.status_code == 204, r.text
    r = httpx.get(
        f"{stack.influx_url}/query",
        params={"db": db, "epoch": "ns", "q": 'SELECT * FROM "drift"'},
        auth=stack.influx_auth,
    )
    series = r.json()["results"][0]["series"][0]
    row = dict(zip(series["columns"], series["values"][0]))
    assert row == {"time": t_ns, "feature": "x", "model": "m1", "n": 100, "score": 0.25}


@pytest.mark.integration
@pytest.mark.parametrize("which", ["kafka", "influxdb"])
def test_taken_port_gives_a_clear_message(tmp_path: Path, which: str) -> None:
    kport, iport = free_ports(2)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", kport if which == "kafka" else iport))
    blocker.listen()
    try:
        stack = LocalStack(tmp_path, kport, iport)
        with pytest.raises(StackError) as err:
            stack.up()
    finally:
        blocker.close()
    msg = str(err.value)
    port, env = (kport, "DRIFTWATCH_KAFKA_PORT") if which == "kafka" else (iport, "DRIFTWATCH_INFLUX_PORT")
    assert f"port {port} ({which}) is in use by another process" in msg
    assert f"pid {os.getpid()}" in msg  # names the culprit
    assert f"stop it or set {env}" in msg
    assert not stack.status()["services"]["kafka"]["running"]  # nothing half-started


@pytest.mark.integration
def test_missing_binaries_give_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kport, iport = free_ports(2)
    with pytest.raises(
        StackError,
        match=r"influxd not found at '/nonexistent/influxd': run scripts/bootstrap.sh or apt-get install influxdb",
    ):
        LocalStack(tmp_path, kport, iport, influxd_bin="/nonexistent/influxd").up()
    with pytest.raises(StackError, match=r"tansu \(Kafka broker\) not found.*scripts/bootstrap.sh"):
        LocalStack(tmp_path, kport, iport, tansu_bin="/nonexistent/tansu").up()
    monkeypatch.setenv("DRIFTWATCH_INFLUXD_BIN", str(tmp_path / "nope"))
    with pytest.raises(StackError, match="influxd not found"):
        LocalStack(tmp_path, kport, iport).up()
    monkeypatch.delenv("DRIFTWATCH_INFLUXD_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))  # no influxd on PATH; /usr/bin fallback still finds Debian's
    assert LocalStack(tmp_path, kport, iport).resolve_influxd() in ("/usr/bin/influxd", "/usr/local/bin/influxd")
    assert not port_in_use(kport)  # checked before anything started


@pytest.mark.integration
def test_service_dying_on_start_shows_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "influxd"
    fake.write_text("#!/bin/sh\necho 'run: open server: listen tcp: boom' >&2\nexit 3\n")
    fake.chmod(0o755)
    kport, iport = free_ports(2)
    stack = LocalStack(tmp_path / "st", kport, iport, influxd_bin=fake)
    with pytest.raises(StackError) as err:
        stack.up()
    msg = str(err.value)
    assert "influxdb exited with code 3 during start-up" in msg and "boom" in msg and "influxdb.log" in msg
    assert not stack.status()["services"]["kafka"]["running"]  # the broker it started was stopped again
    assert not port_in_use(kport)


@pytest.mark.integration
def test_stale_pid_file_is_ignored(tmp_path: Path) -> None:
    kport, iport = free_ports(2)
    run = tmp_path / "run"
    run.mkdir(parents=True)
    # pid of a process that exited: recorded, but not running
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run / "kafka.json").write_text(json.dumps({"pid": dead.pid, "port": kport, "cmd": ["tansu"]}))
    stack = LocalStack(tmp_path, kport, iport)
    assert not stack.status()["services"]["kafka"]["running"]
    assert stack.down()["kafka"] == "not running"


@pytest.mark.integration
def test_running_on_other_ports_is_reported(stack: LocalStack) -> None:
    other = LocalStack(stack.state_dir, stack.kafka_port + 1, stack.influx_port)
    with pytest.raises(StackError, match=f"already running .* on port {stack.kafka_port}"):
        other.up()


@pytest.mark.integration
def test_cli_status_of_the_session_stack(stack: LocalStack) -> None:
    base = [
        "--state-dir",
        str(stack.state_dir),
        "--kafka-port",
        str(stack.kafka_port),
        "--influx-port",
        str(stack.influx_port),
    ]
    r = _cli("stack", "status", *base)
    assert r.returncode == 0, r.stderr
    assert "kafka     running" in r.stdout and stack.bootstrap in r.stdout and stack.influx_url in r.stdout
    r = _cli("stack", "status", "--json", *base)
    assert json.loads(r.stdout)["running"] is True


@pytest.mark.integration
def test_cli_up_down_in_a_fresh_folder(tmp_path: Path) -> None:
    kport, iport = free_ports(2)
    args = ["--state-dir", str(tmp_path), "--kafka-port", str(kport), "--influx-port", str(iport)]
    r = _cli("stack", "status", *args)
    assert r.returncode == 3 and "stopped" in r.stdout
    try:
        r = _cli("stack", "up", *args)
        assert r.returncode == 0, r.stderr
        assert f"Kafka 127.0.0.1:{kport}" in r.stdout
        assert kafka_ready("127.0.0.1", kport)  # outlives the CLI process that started it
        r = _cli("stack", "up", *args)
        assert r.returncode == 0 and "already running" in r.stdout
    finally:
        r = _cli("stack", "down", *args)
    assert r.returncode == 0 and "kafka     stopped" in r.stdout
    assert not port_in_use(kport) and not port_in_use(iport)


@pytest.mark.integration
def test_cli_up_reports_taken_port(tmp_path: Path) -> None:
    kport, iport = free_ports(2)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", iport))
        blocker.listen()
        r = _cli("stack", "up", "--state-dir", str(tmp_path), "--kafka-port", str(kport), "--influx-port", str(iport))
    assert r.returncode == 1
    assert f"port {iport} (influxdb) is in use by another process" in r.stderr
    assert "Traceback" not in r.stderr
