"""Secrets come only from the environment or files, and never appear in logs, errors or stored data.

The secrets: the Kafka SASL password, the InfluxDB password (or token), the
webhook HMAC secret and a webhook URL that is itself a credential (Slack
style), and the dashboard password. Each has a distinctive value; the end to
end test runs a real worker at DEBUG level against a SASL broker, an InfluxDB
with authentication and a webhook receiver — first working, then with each
service failing (wrong InfluxDB password, receiver down, wrong Kafka password)
— and greps every log, every error message, the dead-letter topic and every
string stored in InfluxDB for every secret.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from streams.lifetime import descendants, die_with_parent
from streams.settings import Settings
from tests.reliability.helpers import Traffic, monitors_file, start_worker, stop, tail, wait_for, windowed
from tests.reliability.secure_stack import influx_with_auth, secured_broker

KAFKA_PW = "kafka-Pw-4b9e61d2"
INFLUX_PW = "influx-Pw-c7a03f55"
WEBHOOK_SECRET = "hmac-Secret-9d2e7a10"
WEBHOOK_TOKEN = "urltoken-5f8c21ab"
DASHBOARD_PW = "dash-Pw-1e6b93c4"
WRONG = ["wrong-influx-pw-7731", "wrong-kafka-pw-2290"]
SECRETS = [KAFKA_PW, INFLUX_PW, WEBHOOK_SECRET, WEBHOOK_TOKEN, DASHBOARD_PW, *WRONG]


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


# ----------------------------------------------------------------------------- where secrets come from


def test_secrets_from_environment_and_files(tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith("DRIFTWATCH_"):
            monkeypatch.delenv(k)
    files = {}
    for name, value in (
        ("kafka_sasl_password", KAFKA_PW),
        ("influx_password", INFLUX_PW),
        ("influx_token", "tok-1"),
        ("dashboard_password", DASHBOARD_PW),
    ):
        f = tmp_path / name
        f.write_text(value + "\n")
        files[name] = f
        monkeypatch.setenv(f"DRIFTWATCH_{name.upper()}_FILE", str(f))
    s = Settings()
    assert s.kafka_sasl_password.get_secret_value() == KAFKA_PW
    assert s.influx_password.get_secret_value() == INFLUX_PW
    assert s.dashboard_password.get_secret_value() == DASHBOARD_PW
    for text in (repr(s), str(s), json.dumps(s.model_dump(mode="json"), default=str)):
        assert not leaked(text), text
    # the variable wins over nothing, the file is named when it cannot be read, the content never
    monkeypatch.setenv("DRIFTWATCH_INFLUX_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError) as e:
        Settings()
    assert "DRIFTWATCH_INFLUX_PASSWORD_FILE" in str(e.value) and not leaked(str(e.value))
    monkeypatch.delenv("DRIFTWATCH_INFLUX_PASSWORD_FILE")
    monkeypatch.setenv("DRIFTWATCH_INFLUX_PASSWORD", INFLUX_PW)
    assert Settings().influx_password.get_secret_value() == INFLUX_PW
    # every secret field is a SecretStr: masked in repr, dumps and `driftwatch settings`
    secret_fields = {n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
    assert secret_fields == {"kafka_sasl_password", "influx_password", "influx_token", "dashboard_password"}


def test_settings_command_masks_secrets(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWATCH_")}
    env.update(
        {
            "DRIFTWATCH_KAFKA_SASL_PASSWORD": KAFKA_PW,
            "DRIFTWATCH_INFLUX_PASSWORD": INFLUX_PW,
            "DRIFTWATCH_DASHBOARD_PASSWORD": DASHBOARD_PW,
            "DRIFTWATCH_STATE_DIR": str(tmp_path),
        }
    )
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "settings"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert not leaked(out.stdout + out.stderr)
    assert json.loads(out.stdout)["kafka_sasl_password"] == "**********"


def test_webhook_secrets_cannot_sit_in_the_config_file(tmp_path, monkeypatch):
    from streams.worker.monitors import ConfigError, parse_monitors

    model = {"model_id": "m", "features": [{"name": "x", "kind": "numeric"}]}
    inline = {"models": [model], "webhooks": [{"name": "ops", "url": "http://127.0.0.1:1/h", "secret": WEBHOOK_SECRET}]}
    with pytest.raises(ConfigError) as e:
        parse_monitors(inline, "monitors.yaml")
    assert "secret" in str(e.value) and not leaked(str(e.value))
    missing = {"models": [model], "webhooks": [{"name": "ops", "url": "http://127.0.0.1:1/h"}]}
    with pytest.raises(ConfigError, match="secret_env or secret_file"):
        parse_monitors(missing, "monitors.yaml")
    cfg = parse_monitors(
        {"models": [model], "webhooks": [{"name": "ops", "url_env": "DW_TEST_URL", "secret_env": "DW_TEST_SECRET"}]}
    )
    from streams.alerts.rules import RuleError

    monkeypatch.delenv("DW_TEST_SECRET", raising=False)
    with pytest.raises(RuleError, match="DW_TEST_SECRET is not set"):
        cfg.webhooks[0].resolve_secret()
    monkeypatch.setenv("DW_TEST_SECRET", WEBHOOK_SECRET)
    assert cfg.webhooks[0].resolve_secret() == WEBHOOK_SECRET.encode()


# ----------------------------------------------------------------------------- end to end


def influx_strings(settings) -> str:
    """Every string field value and tag value stored in the database, as one text."""
    from streams.influx.sink import query

    out = []
    for row in query(settings, "SHOW MEASUREMENTS"):
        m = row["name"]
        for r in query(settings, f'SELECT * FROM "{m}"'):
            out.extend(str(v) for v in r.values() if isinstance(v, str))
    return "\n".join(out)


@pytest.mark.integration
@pytest.mark.slow  # runs the whole local stack with every secret set (~30 s)
def test_no_secret_in_logs_errors_or_stored_data(settings, tmp_path, consume_all):
    from streams.broker.admin import TopicError, ensure_topics
    from streams.devstack.localstack import settings_env
    from tests.streams.alerts.receiver import Receiver

    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "kafka").write_text(KAFKA_PW)
    (secrets_dir / "influx").write_text(INFLUX_PW)
    (secrets_dir / "influx-wrong").write_text(WRONG[0])
    (secrets_dir / "kafka-wrong").write_text(WRONG[1])
    receiver = Receiver().start()
    logs: list[Path] = []
    errors: list[str] = []
    try:
        with (
            secured_broker(tmp_path, tls=None, users={"svc": KAFKA_PW}) as (gw, bootstrap),
            influx_with_auth(tmp_path / "influx", "admin", INFLUX_PW) as influx_url,
        ):
            s = settings.model_copy(
                update={
                    "kafka_bootstrap": bootstrap,
                    "kafka_security_protocol": "SASL_PLAINTEXT",
                    "kafka_sasl_username": "svc",
                    "kafka_sasl_password": SecretStr(KAFKA_PW),
                    "influx_url": influx_url,
                    "influx_username": "admin",
                    "influx_password": SecretStr(INFLUX_PW),
                    "dashboard_password": SecretStr(DASHBOARD_PW),
                }
            )
            ensure_topics(s)
            traffic = Traffic(s, seed=11)
            for _ in range(4):
                traffic.send("m", 250)
            traffic.raw(b'{"not": "an event", "password": "x"}')
            traffic.flush()
            traffic.close()
            mon = monitors_file(
                tmp_path,
                ["m"],
                window=500,
                first_n=500,
                extra={
                    "webhooks": [
                        {
                            "name": "ops",
                            "url_env": "DW_TEST_WEBHOOK_URL",
                            "secret_env": "DW_TEST_WEBHOOK_SECRET",
                            "backoff_initial_seconds": 0.2,
                            "backoff_max_seconds": 1,
                        }
                    ]
                },
            )
            import yaml

            cfg = yaml.safe_load(mon.read_text())
            cfg["models"][0]["alerts"] = [
                {"name": "always", "signal": "window.n_events", "op": ">", "threshold": 0, "severity": "warning"}
            ]
            mon.write_text(yaml.safe_dump(cfg))
            env = settings_env(s)
            for name in ("KAFKA_SASL_PASSWORD", "INFLUX_PASSWORD"):  # settings_env never passes values
                assert f"DRIFTWATCH_{name}" not in env and f"DRIFTWATCH_{name}_FILE" in env
            env.update(
                {
                    "DRIFTWATCH_KAFKA_SASL_PASSWORD_FILE": str(secrets_dir / "kafka"),
                    "DRIFTWATCH_INFLUX_PASSWORD_FILE": str(secrets_dir / "influx"),
                    "DRIFTWATCH_LOG_LEVEL": "DEBUG",
                    "DW_TEST_WEBHOOK_URL": f"{receiver.url}/{WEBHOOK_TOKEN}",
                    "DW_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET,
                }
            )
            # 1. everything works: windows written, the alert delivered (signed with the secret)
            log = tmp_path / "worker-ok.log"
            logs.append(log)
            proc = start_worker(env, mon, log)
            try:
                wait_for(lambda: True if windowed(s) == 1000 else windowed(s), 90, "1000 events windowed", [proc], log)
                wait_for(
                    lambda: bool(receiver.requests) or len(receiver.requests),
                    30,
                    "an alert at the receiver",
                    [proc],
                    log,
                )
                assert WEBHOOK_TOKEN in receiver.requests[0].path  # the real URL was used ...
                # 2. the receiver goes away: delivery errors are logged (without the URL's token)
                receiver.stop()
                traffic = Traffic(s, seed=12)
                traffic.next["m"] = 1000
                for _ in range(2):
                    traffic.send("m", 250)
                traffic.flush()
                traffic.close()
                wait_for(lambda: True if windowed(s) == 1500 else windowed(s), 60, "1500 events windowed", [proc], log)
                time.sleep(3)  # a few failed deliveries
            finally:
                stop(proc)
            # 3. wrong InfluxDB password: writes fail with 401, logged
            log = tmp_path / "worker-influx-401.log"
            logs.append(log)
            bad = {
                **env,
                "DRIFTWATCH_INFLUX_PASSWORD_FILE": str(secrets_dir / "influx-wrong"),
                "DRIFTWATCH_CONSUMER_GROUP": s.consumer_group + "-b",
            }
            proc = start_worker(bad, mon, log)
            try:
                wait_for(
                    lambda: "401" in log.read_text(errors="replace"), 60, "a 401 from InfluxDB in the log", [proc], log
                )
            finally:
                stop(proc)
            # 4. wrong Kafka password: the worker stops with an error (and the admin error message)
            log = tmp_path / "worker-kafka-auth.log"
            logs.append(log)
            bad = {**env, "DRIFTWATCH_KAFKA_SASL_PASSWORD_FILE": str(secrets_dir / "kafka-wrong")}
            proc = start_worker(bad, mon, log)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
            finally:
                stop(proc)
            assert gw.stats["auth_failed"] >= 1
            with pytest.raises(TopicError) as e:
                ensure_topics(s.model_copy(update={"kafka_sasl_password": SecretStr(WRONG[1])}), timeout_ms=3000)
            errors.append(str(e.value))
            # what was stored: InfluxDB strings and the dead-letter topic
            stored = influx_strings(s)
            assert stored, "nothing stored in InfluxDB"
            dead = consume_all(s, s.topic_deadletter, timeout=10, idle=2)
            assert dead, "the malformed message should be dead-lettered"
            stored += "\n".join(f"{r.value!r} {r.headers!r}" for r in dead)
            assert not leaked(stored), leaked(stored)
    finally:
        receiver.stop()
    found = {log.name: leaked(log.read_text(errors="replace")) for log in logs}
    assert all(not v for v in found.values()), found
    assert not any(leaked(e) for e in errors), errors
    # the logs did say what went wrong
    assert "401" in logs[1].read_text(errors="replace")
    text = logs[0].read_text(errors="replace")
    assert "DEBUG" in text, "the worker should have logged at DEBUG level"
    assert tail(logs[2]), "the worker with a wrong Kafka password said nothing"


# ----------------------------------------------------------------------------- child processes


@pytest.mark.integration
@pytest.mark.slow  # runs the whole local stack with every secret set (~30 s)
def test_up_passes_secret_files_never_values_to_its_children(tmp_path):
    """``driftwatch up`` with the dashboard password in a file and the Kafka password even as a
    plain variable of its own: no child's /proc/<pid>/environ holds either value (nor the
    generated InfluxDB admin password), and the dashboard still accepts the password."""
    from streams.devstack.localstack import free_ports
    from tests.dashboard.wsclient import StreamlitClient, login

    secret_file = tmp_path / "dashboard-password"
    secret_file.write_text(DASHBOARD_PW + "\n")
    kport, iport, dport, wport = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWATCH_")}
    env.update(
        {
            "DRIFTWATCH_DASHBOARD_PASSWORD_FILE": str(secret_file),
            "DRIFTWATCH_KAFKA_SASL_PASSWORD": KAFKA_PW,
            "DRIFTWATCH_WORKER_WEB_PORT": str(wport),
            "DRIFTWATCH_DASHBOARD_REFRESH_SECONDS": "0",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
    )
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "up",
            "--state-dir",
            str(state),
            "--kafka-port",
            str(kport),
            "--influx-port",
            str(iport),
            "--dashboard-port",
            str(dport),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        preexec_fn=die_with_parent(),
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("Dashboard:" in ln for ln in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert any("Dashboard:" in ln for ln in lines), "".join(lines)
        time.sleep(3)  # the worker's detector process and the demo are up by now
        found: dict[int, list[str]] = {}
        names: dict[int, str] = {}
        secrets = [DASHBOARD_PW, KAFKA_PW]
        admin = state / "secrets" / "influx_password"
        if admin.exists():  # the local stack's generated InfluxDB credential
            secrets.append(admin.read_text().strip())
            assert (admin.stat().st_mode & 0o777) == 0o600
        pids = descendants(proc.pid)
        assert len(pids) >= 3, pids
        for pid in pids:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                names[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120].decode()
            except OSError:
                continue
            found[pid] = [s for s in secrets if s.encode() in environ]
            assert b"DRIFTWATCH_DASHBOARD_PASSWORD=" not in environ, names[pid]
        assert not any(found.values()), {names[p]: v for p, v in found.items() if v}
        assert any("dashboard" in n for n in names.values()) and any("worker" in n for n in names.values()), names
        for f in (state / "secrets").iterdir():
            assert (f.stat().st_mode & 0o777) == 0o600, f
        with StreamlitClient(f"http://127.0.0.1:{dport}") as c:  # the file's password still logs in
            run = login(c, "", DASHBOARD_PW)
            assert "Log out" in run.widget_ids(), run.text()[:500]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
