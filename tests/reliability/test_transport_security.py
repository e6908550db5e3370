"""Transport security: Kafka TLS and SASL, InfluxDB credentials — from settings, on real services.

What the local broker can and cannot do (each fact is a test below):

* tansu 0.6.0 cannot serve TLS: ``--cert`` and ``--key`` are mutually exclusive
  on its command line, and with ``--cert`` alone it still speaks plaintext.
* tansu ``--authentication`` offers SCRAM-SHA-512, SCRAM-SHA-256 and
  OAUTHBEARER, **not PLAIN**, and keeps SCRAM users in its storage; the memory
  storage starts empty and creating a user needs an authenticated client — so
  with memory storage no client can ever log in.

So TLS and SASL/PLAIN are tested end to end through
:class:`~tests.reliability.kafka_gateway.KafkaGateway` in front of a dedicated
tansu: the gateway terminates real TLS (a plaintext client fails) and checks
real SASL/PLAIN credentials (a wrong password fails), then forwards to the
broker. Every Kafka client driftwatch creates goes through it: kafka-python
(admin, consumer, producer SDK), aiokafka (reference store, alert publisher)
and Faust (the whole worker, end to end). SCRAM-SHA-256/512 is the same client
code path with another mechanism name (the mapping is unit-tested here).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from streams.broker.security import (
    SecurityConfigError,
    aiokafka_options,
    describe,
    faust_credentials,
    kafka_python_options,
)
from streams.devstack.localstack import _kafka_request, free_ports, kafka_ready, spawn, tail, terminate
from streams.settings import Settings
from tests.reliability.helpers import Traffic, monitors_file, wait_for, windowed, worker
from tests.reliability.secure_stack import influx_with_auth, secured_broker, self_signed, tansu_bin

PASSWORD = "s3cr3t-Kafka-pw-7f1c"  # distinctive: the secrets tests grep for it


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("certs"))


def secured(
    settings: Settings, bootstrap: str, protocol: str, cafile: Path | None, password: str = PASSWORD
) -> Settings:
    return settings.model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "kafka_security_protocol": protocol,
            "kafka_sasl_mechanism": "PLAIN",
            "kafka_sasl_username": "svc" if protocol.startswith("SASL") else None,
            "kafka_sasl_password": SecretStr(password) if protocol.startswith("SASL") else None,
            "kafka_ssl_cafile": cafile if protocol.endswith("SSL") else None,
        }
    )


# ----------------------------------------------------------------------------- settings -> client options


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_settings_map_to_every_client_library(protocol, mechanism, certs):
    import faust

    s = Settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="svc",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=certs[0],
    )
    kp, ak = kafka_python_options(s), aiokafka_options(s)
    assert kp["security_protocol"] == ak["security_protocol"] == protocol
    sasl, tls = protocol.startswith("SASL"), protocol.endswith("SSL")
    for opts in (kp, ak):
        assert ("sasl_mechanism" in opts) == sasl
        if sasl:
            assert (opts["sasl_mechanism"], opts["sasl_plain_username"], opts["sasl_plain_password"]) == (
                mechanism,
                "svc",
                PASSWORD,
            )
    assert ("ssl_cafile" in kp) == tls and "ssl_cafile" not in ak  # aiokafka refuses ssl_cafile
    assert isinstance(ak.get("ssl_context"), ssl.SSLContext) == tls
    if tls:
        assert ak["ssl_context"].verify_mode == ssl.CERT_REQUIRED and ak["ssl_context"].check_hostname
    creds = faust_credentials(s)
    if sasl:
        assert isinstance(creds, faust.SASLCredentials)
        assert creds.mechanism.value == mechanism and creds.password == PASSWORD
        assert creds.protocol.value == protocol
    elif tls:
        assert isinstance(creds, ssl.SSLContext)
    else:
        assert creds is None
    # the Faust app the worker builds carries them
    from streams.worker.app import credentials as app_credentials

    got = app_credentials(s)
    assert type(got) is type(creds)
    assert PASSWORD not in describe(s) and PASSWORD not in repr(s) and PASSWORD not in str(creds)


def test_incomplete_security_settings_fail_clearly(tmp_path):
    with pytest.raises(SecurityConfigError, match="DRIFTWATCH_KAFKA_SASL_PASSWORD"):
        kafka_python_options(Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc"))
    with pytest.raises(SecurityConfigError, match="DRIFTWATCH_KAFKA_SASL_USERNAME"):
        aiokafka_options(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_password="x"))
    with pytest.raises(SecurityConfigError, match="no such file"):
        aiokafka_options(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(SecurityConfigError, match="not a usable CA bundle"):
        aiokafka_options(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=bad))


# ----------------------------------------------------------------------------- what tansu itself can do


@pytest.mark.integration
def test_tansu_cannot_serve_tls_itself(certs, tmp_path):
    cert, key = certs
    both = subprocess.run(
        [tansu_bin(), "broker", "--listener-url", "tcp://127.0.0.1:1", "--cert", str(cert), "--key", str(key)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert both.returncode != 0 and "cannot be used with" in both.stderr
    port = free_ports(1)[0]
    log = tmp_path / "tansu-cert.log"
    url = f"tcp://127.0.0.1:{port}"
    combined = tmp_path / "combined.pem"
    combined.write_text(cert.read_text() + key.read_text())
    proc = spawn(
        [
            tansu_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cert",
            str(combined),
        ],
        log,
    )
    try:
        deadline = time.monotonic() + 10
        while not kafka_ready("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kafka_ready("127.0.0.1", port), f"tansu --cert did not start:\n{tail(log)}"
        # a plaintext Kafka request is answered: --cert alone does not turn TLS on
        ctx = ssl.create_default_context(cafile=str(cert))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            pytest.raises((ssl.SSLError, OSError)),
            ctx.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            pass
    finally:
        terminate(proc.pid, 5, proc)


@pytest.mark.integration
def test_tansu_sasl_offers_no_plain_and_memory_storage_has_no_users(tmp_path):
    port = free_ports(1)[0]
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path / "tansu-auth.log"
    proc = spawn(
        [
            tansu_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--authentication",
        ],
        log,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)

        def handshake(mechanism: str) -> tuple[int, list[str]]:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
                sock.settimeout(3)
                body = struct.pack(">h", len(mechanism)) + mechanism.encode()
                try:
                    resp = _kafka_request(sock, 17, 1, 7, body)  # SaslHandshake v1
                except ConnectionError:
                    return -1, []
                (err,) = struct.unpack(">h", resp[:2])
                return err, []

        # PLAIN: refused (the broker drops the connection: no shared mechanism)
        assert handshake("PLAIN")[0] != 0
        assert "NoSharedMechanism" in tail(log, 200)
        scram = handshake("SCRAM-SHA-512")
        assert scram[0] == 0  # SCRAM is offered ...
        # ... but users live in the storage, and creating one needs an authenticated client
        made = subprocess.run(
            [tansu_bin(), "user", "create", "--broker", url, "svc", PASSWORD],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert made.returncode != 0
        assert "NotAuthenticated" in tail(log, 200)
    finally:
        terminate(proc.pid, 5, proc)


# ----------------------------------------------------------------------------- every client, through TLS / SASL


async def _aiokafka_clients(s: Settings) -> None:
    from streams.alerts.webhooks import KafkaTarget
    from streams.worker.references import ReferenceStore, StoredReference

    store = ReferenceStore(s, timeout=20)
    try:
        ref = StoredReference("m", "1", b"blob-bytes", s.topic_inferences, 0, (3, 0), 10, time.time())
        await store.save(ref)
        loaded = await store.load()
        assert loaded[("m", "1")].blob == b"blob-bytes"
    finally:
        await store.close()
    target = KafkaTarget(s)
    try:
        await asyncio.wait_for(target._producer_send(b"alert-key", b"{}", [("h", b"v")]), 30)
    finally:
        if target._producer is not None:
            await target._producer.stop()
    from streams.worker.deadletter import KafkaBatchSender
    from streams.worker.topics import TopicWatch

    sender = KafkaBatchSender(s)  # the worker's dead-letter producer
    try:
        await asyncio.wait_for(await sender([(b"k", b"dead", [("dw-reason", b"empty")])]), 30)
    finally:
        await sender.stop()
    watch = TopicWatch(s)  # the worker's topic watch (metadata only)
    client = await watch.connect()
    try:
        assert await watch.check(client) == []
    finally:
        await client.close()


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_every_kafka_client_honours_the_security_settings(protocol, settings, certs, tmp_path, consume_all):
    tls = certs if protocol.endswith("SSL") else None
    users = {"svc": PASSWORD} if protocol.startswith("SASL") else None
    with secured_broker(tmp_path, tls=tls, users=users) as (gw, bootstrap):
        s = secured(settings, bootstrap, protocol, certs[0])
        from streams.wire.producer import DriftwatchProducer
        from streams.worker.topics import ensure_topics

        ensure_topics(s)  # kafka-python admin (and the references topic)
        sdk = DriftwatchProducer(settings=s, linger_ms=10)
        for i in range(5):
            sdk.send_inference("m", {"x0": float(i)}, {"label": "a"})
        assert sdk.flush(30)
        sdk.close(10)
        recs = consume_all(s, s.topic_inferences, expected=1, timeout=20)  # kafka-python consumer
        assert recs and b'"x0"' in recs[0].value
        asyncio.run(_aiokafka_clients(s))
        expected = {
            "driftwatch-admin",
            "driftwatch-producer",
            "driftwatch-consume-all",
            "driftwatch-references",
            "driftwatch-alerts",
            "driftwatch-deadletters",
            "driftwatch-topic-watch",
        }
        assert expected <= set(gw.clients), gw.clients
        if users:
            assert gw.stats["auth_ok"] >= len(expected) and gw.stats["auth_failed"] == 0


@pytest.mark.integration
@pytest.mark.slow  # a TLS/SASL broker behind a gateway (7-10 s)
def test_worker_runs_end_to_end_over_sasl_ssl(settings, certs, tmp_path):
    """The whole worker (Faust consumer + producer, kafka-python admin, aiokafka references) over SASL_SSL."""
    from streams.devstack.localstack import settings_env

    with secured_broker(tmp_path, tls=certs, users={"svc": PASSWORD}) as (gw, bootstrap):
        s = secured(settings, bootstrap, "SASL_SSL", certs[0])
        from streams.worker.topics import ensure_topics

        ensure_topics(s)
        traffic = Traffic(s, seed=3)
        for _ in range(4):
            traffic.send("m", 250)
        traffic.flush()
        traffic.close()
        mon = monitors_file(tmp_path, ["m"], window=500, first_n=500)
        log = tmp_path / "worker.log"
        env = settings_env(s)
        with worker(env, mon, log) as proc:
            wait_for(
                lambda: True if windowed(s) == 1000 else windowed(s),
                90,
                "1000 events windowed over SASL_SSL",
                [proc],
                log,
            )
        assert gw.stats["auth_failed"] == 0 and gw.auth_users["svc"] >= 3, gw.stats
        faust_ids = {c for c in gw.clients if c.startswith("faust")}
        assert faust_ids, f"no Faust connection went through the gateway: {gw.clients}"
        text = log.read_text(errors="replace")
        assert PASSWORD not in text


@pytest.mark.integration
@pytest.mark.slow  # a TLS/SASL broker behind a gateway (7-10 s)
def test_wrong_password_and_plaintext_client_are_refused(settings, certs, tmp_path):
    from streams.broker.admin import TopicError, ensure_topics

    with secured_broker(tmp_path, tls=certs, users={"svc": PASSWORD}) as (gw, bootstrap):
        wrong = secured(settings, bootstrap, "SASL_SSL", certs[0], password="not-the-password-91")
        t0 = time.monotonic()
        with pytest.raises(TopicError) as e:
            ensure_topics(wrong, timeout_ms=4000)
        assert time.monotonic() - t0 < 30
        assert "not-the-password-91" not in str(e.value)
        assert gw.stats["auth_failed"] >= 1 and gw.stats["auth_ok"] == 0
        plain = secured(settings, bootstrap, "PLAINTEXT", None)
        with pytest.raises(TopicError):
            ensure_topics(plain, timeout_ms=3000)
        assert gw.stats["auth_ok"] == 0


# ----------------------------------------------------------------------------- InfluxDB credentials


@pytest.mark.integration
def test_influxdb_username_password(settings, tmp_path):
    from detectors.records import Record
    from streams.influx.admin import InfluxAdminError, ensure_database
    from streams.influx.sink import InfluxQueryError, InfluxSink, query

    pw = "influx-Adm1n-pw-55e2"
    with influx_with_auth(tmp_path / "influx", "admin", pw) as url:
        good = settings.model_copy(
            update={"influx_url": url, "influx_username": "admin", "influx_password": SecretStr(pw)}
        )
        ensure_database(good)

        async def write() -> None:
            sink = InfluxSink(good)
            fut = await sink.submit([Record("dw_window", {"model": "m"}, {"n_events": 3}, 1_000_000_000)])
            await asyncio.wait_for(fut, 20)
            await sink.stop()

        asyncio.run(write())
        assert query(good, 'SELECT "n_events" FROM "dw_window"')[0]["n_events"] == 3
        for bad in (
            settings.model_copy(update={"influx_url": url}),  # no credentials
            good.model_copy(update={"influx_password": SecretStr("wrong-pw-3391")}),
        ):
            with pytest.raises(InfluxQueryError) as e:
                query(bad, 'SELECT * FROM "dw_window"')
            assert "401" in str(e.value) or "authorization" in str(e.value).lower()
            assert pw not in str(e.value) and "wrong-pw-3391" not in str(e.value)
            with pytest.raises(InfluxAdminError) as e2:
                ensure_database(bad)
            assert pw not in str(e2.value) and "wrong-pw-3391" not in str(e2.value)


def test_influxdb_token_and_basic_auth_headers():
    """The token (InfluxDB 2.x v1 API) and user/password spellings; 1.6 has no token auth to test against."""
    from dashboard.queries import Conn
    from streams.influx.admin import basic_auth
    from streams.influx.sink import auth_options

    # one client: the sink, the admin and the dashboard read the same credentials the same way
    tok = Settings(influx_version=2, influx_token="tok-abc")
    assert auth_options(tok) == {"headers": {"Authorization": "Token tok-abc"}}
    assert Conn.from_settings(tok).auth_options() == auth_options(tok) and basic_auth(tok) is None
    up = Settings(influx_username="u", influx_password="p")
    assert auth_options(up) == {"auth": ("u", "p")}
    assert Conn.from_settings(up).auth_options() == auth_options(up) and basic_auth(up) == ("u", "p")
    # no credential (the session's environment names the test stack's: none of it here)
    assert auth_options(Settings(influx_url="http://influx.invalid:8086", influx_username=None)) == {}
