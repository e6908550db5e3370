"""Secured services for the reliability suite: a broker behind a TLS/SASL gateway, an InfluxDB with auth.

* :func:`self_signed` makes a throwaway certificate for 127.0.0.1 with the
  ``openssl`` command line (Debian ships it; a clear failure otherwise).
* :func:`secured_broker` starts a dedicated tansu on a free port whose advertised
  address is a :class:`~tests.reliability.kafka_gateway.KafkaGateway` (TLS and/or
  SASL/PLAIN), so every client connection goes through the gateway.
* :func:`influx_with_auth` starts a dedicated ``influxd`` with
  ``auth-enabled = true`` and an admin user.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streams.devstack.localstack import (
    LocalStack,
    free_ports,
    influx_config,
    influx_ready,
    kafka_ready,
    spawn,
    tail,
    terminate,
)
from tests.reliability.kafka_gateway import KafkaGateway


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) for CN/SAN 127.0.0.1 + localhost, valid one day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail(
            "the `openssl` command is needed to make a test certificate (apt-get install openssl)", pytrace=False
        )
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def tansu_bin() -> str:
    return LocalStack(Path("."), 0, 0).resolve_tansu()


@contextlib.contextmanager
def secured_broker(
    folder: Path, *, tls: tuple[Path, Path] | None, users: dict[str, str] | None
) -> Iterator[tuple[KafkaGateway, str]]:
    """A dedicated tansu behind a gateway; yields (gateway, bootstrap address of the gateway)."""
    for _attempt in range(3):
        broker_port, gw_port = free_ports(2)
        gw = KafkaGateway(("127.0.0.1", broker_port), port=gw_port, tls=tls, users=users)
        try:
            gw.start()
        except OSError:
            continue
        break
    else:
        pytest.fail("no free port for the Kafka gateway", pytrace=False)
    url = f"tcp://127.0.0.1:{broker_port}"
    log = folder / "tansu.log"
    proc = spawn(
        [
            tansu_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{gw_port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        log,
        die_with_parent=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not kafka_ready("127.0.0.1", broker_port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tansu did not start on {broker_port}:\n{tail(log)}", pytrace=False)
            time.sleep(0.05)
        yield gw, f"127.0.0.1:{gw_port}"
    finally:
        gw.stop()
        terminate(proc.pid, 5, proc)


@contextlib.contextmanager
def influx_with_auth(folder: Path, admin: str, password: str) -> Iterator[str]:
    """A dedicated influxd with authentication on; yields its URL (admin user created)."""
    influxd = LocalStack(Path("."), 0, 0).resolve_influxd()
    http_port, rpc_port = free_ports(2)
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "influxdb.conf"
    text = influx_config(folder, http_port, rpc_port).replace("auth-enabled = false", "auth-enabled = true")
    assert "auth-enabled = true" in text
    conf.write_text(text)
    log = folder / "influxd.log"
    proc = spawn([influxd, "run", "-config", str(conf)], log, die_with_parent=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while not influx_ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"influxd (auth) did not start:\n{tail(log)}", pytrace=False)
            time.sleep(0.05)
        # With no user yet, InfluxDB 1.x accepts exactly one statement unauthenticated: the first admin.
        r = httpx.post(
            url + "/query", params={"q": f"CREATE USER \"{admin}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES"}
        )
        assert r.status_code == 200, r.text
        yield url
    finally:
        terminate(proc.pid, 10, proc)
