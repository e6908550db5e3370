"""``driftwatch webhook-sink``: verifies what the worker's delivery code signs, rejects the rest,
deduplicates on the idempotency key, and says each alert in one line (what ``up`` relays)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from streams.alerts.rules import WebhookConfig
from streams.alerts.signing import sign
from streams.alerts.sink import SECRET_ENV, WebhookSink, describe
from streams.alerts.store import OutboxRow
from streams.alerts.webhooks import WebhookTarget
from streams.devstack import up
from streams.devstack.localstack import free_ports
from streams.lifetime import die_with_parent
from streams.settings import Settings
from streams.worker.monitors import load_monitors

SECRET = b"sink-test-secret"
ALERT = {
    "schema": "driftwatch.alert/v1",
    "status": "firing",
    "model": "wine",
    "rule": "features_drifting",
    "severity": "warning",
    "summary": "wine: 27% of the features drifting for 3 windows",
    "repeat": 0,
    "dashboard_url": "http://127.0.0.1:8501/drift?model=wine&version=1",
}


def _row(body: bytes, event_id: str = "e1") -> OutboxRow:
    return OutboxRow(
        id=1,
        target="local",
        event_id=event_id,
        event_status="firing",
        alert_key="k",
        model="wine",
        version="1",
        rule="features_drifting",
        severity="warning",
        body=body,
        status="pending",
        attempts=0,
        next_attempt_ns=0,
        last_error="",
        http_status=0,
        created_ns=0,
        updated_ns=0,
        delivered_ns=0,
    )


@pytest.fixture
def sink(tmp_path: Path):
    out = io.StringIO()
    s = WebhookSink(SECRET, jsonl=tmp_path / "d.jsonl", out=out).start()
    yield s, out
    s.close()


def test_worker_delivery_code_is_verified_and_logged(sink, tmp_path: Path) -> None:
    s, out = sink
    (tmp_path / "secret").write_text(SECRET.decode())
    target = WebhookTarget(WebhookConfig(name="local", url=s.url, secret_file=tmp_path / "secret"))
    body = json.dumps(ALERT).encode()

    async def send() -> list:
        try:
            return [await target.send(_row(body), 1), await target.send(_row(body), 2)]  # a retry: same key
        finally:
            await target.close()

    first, again = asyncio.run(send())
    assert first.ok and first.http_status == 200 and again.ok
    assert [d["signature_ok"] for d in s.deliveries] == [True, True]
    assert [d["duplicate"] for d in s.deliveries] == [False, True]
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "ALERT FIRING [warning] wine features_drifting: wine: 27% of the features drifting for "
        "3 windows (signature ok, id e1)"
    )
    assert lines[1].strip() == f"open: {ALERT['dashboard_url']}"
    assert "duplicate" in lines[2]
    logged = [json.loads(x) for x in (s.jsonl.read_text().splitlines())]
    assert logged[0]["payload"] == ALERT and logged[0]["idempotency_key"] == "e1"


def test_bad_or_missing_signature_is_refused(sink) -> None:
    s, out = sink
    body = json.dumps(ALERT).encode()
    wrong = httpx.post(
        s.url, content=body, headers={"X-Driftwatch-Signature": sign(b"other", body), "Idempotency-Key": "e2"}
    )
    tampered = httpx.post(
        s.url, content=body + b" ", headers={"X-Driftwatch-Signature": sign(SECRET, body), "Idempotency-Key": "e3"}
    )
    missing = httpx.post(s.url, content=body)
    assert (wrong.status_code, tampered.status_code, missing.status_code) == (401, 401, 401)
    assert not any(d["signature_ok"] for d in s.deliveries)
    assert out.getvalue().count("REJECTED") == 3 and "ALERT" not in out.getvalue()
    ok = httpx.post(
        s.url, content=body, headers={"X-Driftwatch-Signature": sign(SECRET, body), "Idempotency-Key": "e2"}
    )
    assert ok.status_code == 200  # a rejected key was not remembered as received


def test_describe_reads_every_payload_format() -> None:
    am = {
        "version": "4",
        "status": "resolved",
        "alerts": [
            {"labels": {"severity": "critical", "model": "m", "alertname": "r"}, "annotations": {"summary": "gone"}}
        ],
    }
    assert describe(am) == "RESOLVED [critical] m r: gone"
    assert describe({"text": "[FIRING] x", "blocks": []}) == "[FIRING] x"
    assert describe({**ALERT, "repeat": 2}).startswith("FIRING (reminder) [warning] wine")


def test_command_needs_a_secret_and_serves_with_one(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    port = free_ports(1)[0]
    r = subprocess.run(
        [sys.executable, "-m", "streams.cli", "webhook-sink", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and SECRET_ENV in r.stderr
    with subprocess.Popen(  # leaving the block closes the pipe
        [sys.executable, "-m", "streams.cli", "webhook-sink", "--port", str(port)],
        env={**env, SECRET_ENV: SECRET.decode()},
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent(),
    ) as proc:
        try:
            assert proc.stdout is not None
            assert f"listening on http://127.0.0.1:{port}/driftwatch" in proc.stdout.readline()
            body = json.dumps(ALERT).encode()
            assert (
                httpx.post(
                    f"http://127.0.0.1:{port}/driftwatch",
                    content=body,
                    headers={"X-Driftwatch-Signature": sign(SECRET, body), "Idempotency-Key": "c1"},
                ).status_code
                == 200
            )
            assert proc.stdout.readline().startswith("ALERT FIRING [warning] wine features_drifting")
        finally:
            proc.terminate()
            proc.wait(10)


def test_up_wires_the_demo_config_to_the_sink(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    s1, argv = up.demo_webhook(settings, 9123)
    secret_file = tmp_path / "webhook-sink.secret"
    assert argv == ["--port", "9123", "--secret-file", str(secret_file)]
    assert secret_file.stat().st_mode & 0o077 == 0 and len(secret_file.read_text()) >= 24
    first = secret_file.read_text()
    cfg = load_monitors(s1.monitors)  # what the children read: the demo config plus the webhook
    (hook,) = cfg.webhooks
    assert (hook.name, hook.resolve_url()) == ("local", "http://127.0.0.1:9123/driftwatch")
    assert hook.resolve_secret() == first.encode()
    demo = load_monitors(up.DEMO_MONITORS)
    assert [m.model_id for m in cfg.models] == [m.model_id for m in demo.models]
    assert [len(m.alerts) for m in cfg.models] == [len(m.alerts) for m in demo.models] != [0, 0]
    assert all(m.reference.file.is_file() for m in cfg.models)  # the relative paths still point at the CSVs
    up.demo_webhook(settings, 9123)
    assert secret_file.read_text() != first  # a fresh secret per run
    other = Settings(state_dir=tmp_path, monitors=tmp_path / "mine.yaml")
    assert up.demo_webhook(other)[0].monitors == tmp_path / "mine.yaml"  # a user's config is left alone


def test_up_relays_the_sinks_alert_lines(tmp_path: Path) -> None:
    log = tmp_path / "webhook-sink.log"
    log.write_text("--- start\nwebhook-sink: listening on http://127.0.0.1:1/driftwatch\n")
    relay = up._Relay(log)
    assert relay.poll() == []  # what was there before is not news
    with open(log, "a") as f:
        f.write("ALERT FIRING [warning] wine r: s (signature ok, id 1)\n      open: http://d/drift\nnoise\nALERT par")
    assert relay.poll() == ["ALERT FIRING [warning] wine r: s (signature ok, id 1)", "      open: http://d/drift"]
    with open(log, "a") as f:
        f.write("tial line\n")
    time.sleep(0.01)
    assert relay.poll() == ["ALERT partial line"]
