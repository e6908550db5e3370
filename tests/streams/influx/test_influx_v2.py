"""InfluxDB 2.x settings without a 2.x server, and InfluxDB 1.x with user/password on the real server.

No InfluxDB 2.x binary can be installed here, so :class:`Influx2` — a real HTTP
server on a free loopback port, in a thread — speaks the parts of the 2.x API the
code calls, the way InfluxDB 2.7 does (``http/legacy`` and ``/api/v2`` handlers):

* ``POST /api/v2/write?org=&bucket=&precision=`` — ``Authorization: Token`` (401
  ``{"code": "unauthorized"}`` otherwise), org and bucket must exist (404), gzip
  bodies are inflated, success is 204;
* ``GET|POST /query`` (v1 compatibility): the token as ``Token``, basic auth or
  ``u``/``p`` in the URL (never in a POST form: 2.x's ``parseCredentials`` reads
  ``r.URL.Query()``); ``q``/``db``/``epoch`` from the URL or the form; ``db`` = bucket
  name (2.7's virtual DBRP mapping);
* ``GET /ping`` (no auth), ``GET /health``, ``GET /api/v2/orgs``,
  ``GET|POST /api/v2/buckets``, ``DELETE /api/v2/buckets/{id}``;
* scripted failures for the retry paths: a status code (503, 429, 422 …) or
  ``"hang"`` (answers after the client's timeout).

It records every request (method, path, params, headers, inflated body). Points
are stored in, and InfluxQL is answered by, the REAL local InfluxDB 1.x (one 1.x
database per bucket, same name): 2.x's v1 API answers InfluxQL with 1.x semantics,
and this keeps the query results real rather than canned. What the emulation cannot
show — a real 2.x server's storage engine, Flux, its DBRP bookkeeping — is said in
docs/influxdb.md.

The 1.x path with username/password runs against a dedicated, auth-enabled real
``influxd`` (``tests.reliability.secure_stack.influx_with_auth``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pandas as pd
import pytest
from pydantic import SecretStr

from dashboard import queries as Q
from detectors import records as R
from detectors.records import Record
from streams.influx import admin as A
from streams.influx import sink as S
from streams.settings import Settings

TOKEN = "tok-2x-Zq81xVd0=="
ORG, ORG_ID = "acme", "0a1b2c3d4e5f6071"
VERSION = "v2.7.11"  # what the emulator says it is (X-Influxdb-Version)


# ============================================================================ the 2.x emulation


@dataclass
class Req:
    """One request as the emulator received it (body inflated when gzip)."""

    method: str
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    form: dict[str, list[str]] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        v = self.params.get(name) or self.form.get(name)
        return v[0] if v else None


class Influx2:
    """An InfluxDB 2.x API emulation backed by a real 1.x server (see module docstring)."""

    def __init__(
        self,
        backend_url: str,
        *,
        token: str = TOKEN,
        org: str = ORG,
        org_id: str = ORG_ID,
        backend_auth: tuple[str, str] | None = None,
    ) -> None:
        self.backend = httpx.Client(base_url=backend_url, timeout=10, auth=backend_auth)
        self.tokens = {token}
        self.v1_users: dict[str, str] = {}  # `influx v1 auth create` credentials (username -> password)
        self.org, self.org_id = org, org_id
        self.buckets: dict[str, dict[str, Any]] = {}  # name -> bucket JSON
        self.requests: list[Req] = []
        self.script: list[int | str] = []  # answers for the next /api/v2/write requests
        self.hang_seconds = 1.5
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="influx2-emulator", daemon=True)

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> Influx2:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        for name in list(self.buckets):
            with contextlib.suppress(Exception):
                self.backend.post("/query", params={"q": f'DROP DATABASE "{name}"'})
        self.backend.close()

    def add_bucket(self, name: str) -> dict[str, Any]:
        """A bucket (as ``DOCKER_INFLUXDB_INIT_BUCKET`` or ``influx bucket create`` makes it)."""
        r = self.backend.post("/query", params={"q": f'CREATE DATABASE "{name}"'})
        assert r.status_code == 200, r.text
        b = {
            "id": uuid.uuid4().hex[:16],
            "orgID": self.org_id,
            "name": name,
            "type": "user",
            "retentionRules": [{"type": "expire", "everySeconds": 0}],
            "labels": [],
            "links": {},
        }
        b["links"] = {"self": f"/api/v2/buckets/{b['id']}", "org": f"/api/v2/orgs/{self.org_id}"}
        self.buckets[name] = b
        return b

    def of(self, path: str) -> list[Req]:
        return [r for r in self.requests if r.path == path]

    # -- HTTP ------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emu = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                url = urlparse(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
                form = {}
                if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                    form = parse_qs(body.decode(), keep_blank_values=True)
                req = Req(
                    self.command,
                    url.path,
                    parse_qs(url.query, keep_blank_values=True),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    form,
                )
                with emu._lock:
                    emu.requests.append(req)
                try:
                    status, payload, extra = emu.route(req)
                except Exception as e:  # a bug in the emulator: say so loudly
                    status, payload, extra = 500, {"code": "internal error", "message": repr(e)}, {}
                if status is None:  # "hang": answer after the client gave up
                    time.sleep(emu.hang_seconds)
                    status, payload = 503, {"code": "unavailable", "message": "too slow"}
                data = (
                    b""
                    if payload is None
                    else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
                )
                try:
                    self.send_response(status)
                    self.send_header("X-Influxdb-Version", VERSION)
                    self.send_header("X-Influxdb-Build", "OSS")
                    for k, v in extra.items():
                        self.send_header(k, v)
                    if data:
                        self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if data:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_DELETE = _serve

        return Handler

    # -- the API ---------------------------------------------------------------------
    def _token(self, req: Req) -> str | None:
        auth = req.headers.get("authorization", "")
        return auth[len("Token ") :] if auth.startswith("Token ") else None

    def _v1_authorised(self, req: Req) -> bool:
        """2.x ``Influx1xAuthenticationHandler``: URL u/p, ``Token [user:]tok``, then basic auth."""
        u, p = (req.params.get("u") or [""])[0], (req.params.get("p") or [""])[0]
        if u and p:
            return self.v1_users.get(u) == p
        auth = req.headers.get("authorization", "")
        if auth.startswith("Token "):
            tok = auth[len("Token ") :]
            if ":" in tok:
                u, p = tok.split(":", 1)
                return self.v1_users.get(u) == p
            return tok in self.tokens
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            return self.v1_users.get(u) == p
        return False

    def route(self, req: Req) -> tuple[int | None, Any, dict[str, str]]:
        unauthorised = 401, {"code": "unauthorized", "message": "unauthorized access"}, {}
        if req.path == "/ping":
            return 204, None, {}
        if req.path == "/health":
            return (
                200,
                {
                    "name": "influxdb",
                    "message": "ready for queries and writes",
                    "status": "pass",
                    "checks": [],
                    "version": VERSION,
                    "commit": "emulated",
                },
                {},
            )
        if req.path == "/query":
            if not self._v1_authorised(req):
                return unauthorised
            params = {k: req.param(k) for k in ("q", "db", "rp", "epoch", "params") if req.param(k) is not None}
            r = self.backend.post("/query", data=params)  # the bucket's v1 database has the bucket's name
            return r.status_code, r.content, {}
        if req.path.startswith("/api/v2/"):
            if self._token(req) not in self.tokens:
                return unauthorised
            if req.path == "/api/v2/write" and req.method == "POST":
                return self._write(req)
            if req.path == "/api/v2/orgs" and req.method == "GET":
                wanted = req.param("org")
                if wanted not in (None, self.org):
                    return 404, {"code": "not found", "message": f'organization name "{wanted}" not found'}, {}
                return (
                    200,
                    {
                        "orgs": [
                            {"id": self.org_id, "name": self.org, "links": {"self": f"/api/v2/orgs/{self.org_id}"}}
                        ],
                        "links": {"self": "/api/v2/orgs"},
                    },
                    {},
                )
            if req.path == "/api/v2/buckets" and req.method == "GET":
                if req.param("org") not in (None, self.org):
                    return (
                        404,
                        {"code": "not found", "message": f'organization name "{req.param("org")}" not found'},
                        {},
                    )
                found = [b for b in self.buckets.values() if req.param("name") in (None, b["name"])]
                return 200, {"buckets": found, "links": {"self": "/api/v2/buckets"}}, {}
            if req.path == "/api/v2/buckets" and req.method == "POST":
                doc = json.loads(req.body)
                if doc.get("orgID") != self.org_id:
                    return 404, {"code": "not found", "message": "organization not found"}, {}
                if doc["name"] in self.buckets:
                    return 422, {"code": "conflict", "message": f"bucket with name {doc['name']} already exists"}, {}
                b = self.add_bucket(doc["name"])
                b["retentionRules"] = doc.get("retentionRules") or []
                return 201, b, {}
            m = re.fullmatch(r"/api/v2/buckets/([0-9a-f]{16})", req.path)
            if m and req.method == "DELETE":
                name = next((n for n, b in self.buckets.items() if b["id"] == m.group(1)), None)
                if name is None:
                    return 404, {"code": "not found", "message": "bucket not found"}, {}
                del self.buckets[name]
                self.backend.post("/query", params={"q": f'DROP DATABASE "{name}"'})
                return 204, None, {}
        return 404, {"code": "not found", "message": "path not found"}, {}

    def _write(self, req: Req) -> tuple[int | None, Any, dict[str, str]]:
        org, org_id, bucket = req.param("org"), req.param("orgID"), req.param("bucket")
        if not (org or org_id):
            return 400, {"code": "invalid", "message": "Please provide either orgID or org"}, {}
        if (org and org != self.org) or (org_id and org_id != self.org_id):
            return 404, {"code": "not found", "message": f'organization name "{org or org_id}" not found'}, {}
        if bucket not in self.buckets:
            return 404, {"code": "not found", "message": f'bucket "{bucket}" not found'}, {}
        precision = req.param("precision") or "ns"
        if precision not in ("ns", "us", "ms", "s"):
            return 400, {"code": "invalid", "message": f"invalid precision {precision!r}"}, {}
        with self._lock:
            scripted = self.script.pop(0) if self.script else None
        if scripted == "hang":
            return None, None, {}
        if scripted is not None:
            return (
                int(scripted),
                {"code": "unavailable" if scripted >= 500 else "invalid", "message": f"scripted {scripted}"},
                ({"Retry-After": "0"} if scripted == 429 else {}),
            )
        r = self.backend.post("/write", params={"db": bucket, "precision": precision}, content=req.body)
        if r.status_code == 204:
            return 204, None, {}
        return r.status_code, {"code": "invalid", "message": r.json().get("error", r.text)}, {}


@pytest.fixture
def influx2(stack):
    """The emulator backed by the session's real InfluxDB 1.x, with one bucket made up front."""
    with Influx2(stack.influx_url, backend_auth=stack.influx_auth) as emu:
        emu.bucket = f"b{uuid.uuid4().hex[:10]}"
        emu.add_bucket(emu.bucket)
        yield emu


def v2_settings(emu: Influx2, **kw: Any) -> Settings:
    base = dict(
        influx_version=2,
        influx_url=emu.url,
        influx_org=ORG,
        influx_bucket=emu.bucket,
        influx_db="not-used-on-2x",
        influx_token=TOKEN,
        influx_username=None,
        influx_password=None,
    )
    return Settings(**{**base, **kw})


# ============================================================================ records + helpers

NOW_S = int(time.time()) - 600


def sample_records(t0_s: int = NOW_S) -> list[Record]:
    """Records like the worker's, with escaping that line protocol must get right."""
    out = []
    for w in range(3):
        t = (t0_s + 60 * w) * 1_000_000_000 + 123_456_789  # ns precision survives
        for f, p in (("x0", 0.001 * (w + 1)), ("x 1,=odd", 0.4), ("c0", 0.2 + w / 10)):
            out.append(
                Record(
                    R.DRIFT,
                    {R.T_MODEL: "m-1", R.T_VERSION: "1", R.T_FEATURE: f, R.T_DETECTOR: "ks"},
                    {
                        "statistic": 0.1 * (w + 1),
                        "p_value": p,
                        "threshold": 0.001,
                        "drift": int(p < 0.01),
                        "n_ref": 500,
                        "n_cur": 500,
                        "js": 0.05 * w,
                        "engine": 'native "np"',
                    },
                    t,
                )
            )
        out.append(
            Record(
                R.WINDOW,
                {R.T_MODEL: "m-1", R.T_VERSION: "1"},
                {"n_events": 500, "n_invalid": 2, "events_per_s": 123.5, "duration": 4.0},
                t,
            )
        )
    return out


class Recording(httpx.AsyncBaseTransport):
    """An httpx transport that records requests and forwards them (the 1.x path's wire)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def sink_write(
    settings: Settings,
    units: list[list[Record]],
    *,
    timeout: float = 10.0,
    wait: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
    during=None,
) -> S.SinkStats:
    """Submit units through an InfluxSink, wait until all are confirmed, stop it; its stats."""

    async def main() -> S.SinkStats:
        sink = S.InfluxSink(settings, timeout=timeout, max_backoff=0.05, transport=transport)
        await sink.start()
        futs = [await sink.submit(u) for u in units]
        if during is not None:
            await during(sink)
        await asyncio.wait_for(asyncio.gather(*futs), wait)
        await sink.stop()
        return sink.stats

    return asyncio.run(main())


# ============================================================================ 2.x: settings


def test_v2_needs_token_and_org():
    with pytest.raises(S.InfluxConfigError, match="DRIFTWATCH_INFLUX_TOKEN and DRIFTWATCH_INFLUX_ORG"):
        S.InfluxSink(Settings(influx_version=2, influx_bucket="b"))
    with pytest.raises(S.InfluxConfigError, match="DRIFTWATCH_INFLUX_ORG"):
        S.v2_target(Settings(influx_version=2, influx_token="t"))
    with pytest.raises(A.InfluxAdminError, match="DRIFTWATCH_INFLUX_TOKEN"):
        A.ensure_database(Settings(influx_version=2, influx_org="o"))
    # the bucket is DRIFTWATCH_INFLUX_BUCKET, else DRIFTWATCH_INFLUX_DB, for writes and queries alike
    s = Settings(influx_version=2, influx_token="t", influx_org="o", influx_db="dbname")
    assert S.v2_target(s) == ("o", "dbname") and S.database(s) == "dbname"
    assert Q.Conn.from_settings(s).db == "dbname"
    assert Q.Conn.from_settings(s.model_copy(update={"influx_bucket": "bk"})).db == "bk"


# ============================================================================ 2.x: request shape


@pytest.mark.integration
def test_v2_write_request_shape_and_same_body_and_points_as_v1(influx2, settings):
    records = sample_records()
    units = [records[:8], records[8:]]
    v1_wire = Recording()
    v1_stats = sink_write(settings, units, transport=v1_wire)  # 1.x: the real local influxd
    v2 = v2_settings(influx2)
    v2_stats = sink_write(v2, units)  # 2.x: influxdb-client -> the emulator
    assert v1_stats.points == v2_stats.points == len(records)

    writes = influx2.of("/api/v2/write")
    assert writes and not influx2.of("/write"), "2.x writes go to /api/v2/write, never the v1 /write"
    v1_writes = [r for r in v1_wire.requests if r.url.path == "/write"]
    assert len(writes) == len(v1_writes)
    for w, w1 in zip(writes, v1_writes):
        assert w.method == "POST"
        assert w.params == {"org": [ORG], "bucket": [influx2.bucket], "precision": ["ns"]}
        assert w.headers["authorization"] == f"Token {TOKEN}"
        assert w.headers["content-type"].startswith("text/plain")
        assert "content-encoding" not in w.headers  # gzip is off (loopback/LAN: CPU over bytes)
        assert w.body == w1.content  # byte for byte what the 1.x path sends
        assert dict(w1.url.params) == {"db": settings.influx_db, "precision": "ns"}
    assert b"\n".join(w.body for w in writes) == "\n".join(S.to_lines(records)).encode()

    # the points read back through each server's /query are the same
    q = 'SELECT * FROM "dw_drift" GROUP BY *'
    rows_v1, rows_v2 = S.query(settings, q), S.query(v2, q)
    assert rows_v1 == rows_v2 and len(rows_v1) == 9
    assert {r["time"] % 1_000_000_000 for r in rows_v2} == {123_456_789}  # nanoseconds kept
    queries = influx2.of("/query")
    assert queries and all(
        r.headers["authorization"] == f"Token {TOKEN}" and r.param("db") == influx2.bucket for r in queries
    )


@pytest.mark.integration
def test_dashboard_queries_on_v2_equal_v1(influx2, settings):
    """The dashboard's query helper (POST /query, form-encoded, Token) gives the same frames on both."""
    records = sample_records()
    S.write_records(settings, records)  # 1.x
    v2 = v2_settings(influx2)
    S.write_records(v2, records)  # 2.x, synchronous path: influxdb-client as well
    assert len(influx2.of("/api/v2/write")) == 1 and not influx2.of("/write")
    c1, c2 = Q.Conn.from_settings(settings), Q.Conn.from_settings(v2)
    assert c2.token == TOKEN and c2.db == influx2.bucket
    assert Q.ping(c2)
    scope = Q.Scope(Q.TimeRange.last("1h"), model="m-1", version="1")
    assert Q.models(c1) == Q.models(c2) == ["m-1"]
    assert Q.features(c1, "m-1") == Q.features(c2, "m-1") == sorted(["x0", "x 1,=odd", "c0"])
    for fn in (Q.drift_latest, Q.drift_heatmap, Q.throughput):
        a, b = fn(c1, scope), fn(c2, scope)
        assert len(a), fn.__name__
        pd.testing.assert_frame_equal(a, b)
    latest = Q.drift_latest(c2, scope)
    assert set(latest[R.T_FEATURE]) == {"x0", "x 1,=odd", "c0"}
    assert latest.loc[latest[R.T_FEATURE] == "x0", "p_value"].item() == pytest.approx(0.003)
    posted = [r for r in influx2.of("/query") if r.method == "POST"]
    assert posted and all(
        r.form.get("db") == [influx2.bucket]
        and "q" in r.form
        and "u" not in r.form
        and r.headers["authorization"] == f"Token {TOKEN}"
        for r in posted
    )
    # a wrong token: the dashboard says so (and never prints it)
    bad = Q.Conn.from_settings(v2.model_copy(update={"influx_token": SecretStr("nope-123")}))
    with pytest.raises(Q.InfluxError, match="refused the credentials \\(401\\)") as e:
        Q.models(bad)
    assert "nope-123" not in str(e.value)


@pytest.mark.integration
def test_v2_checkpoint_query_uses_the_sinks_client(influx2):
    """The worker reads checkpoints through the sink's async client: Token + db=bucket on /query."""
    v2 = v2_settings(influx2)
    S.write_records(v2, sample_records())

    async def main():
        sink = S.InfluxSink(v2)
        try:
            return await S.aquery(sink.client, v2, 'SELECT last("n_events") FROM "dw_window"')
        finally:
            await sink.stop()

    rows = asyncio.run(main())
    assert rows[0]["last"] == 500
    last = influx2.of("/query")[-1]
    assert last.headers["authorization"] == f"Token {TOKEN}" and last.param("db") == influx2.bucket


# ============================================================================ 2.x: failures


@pytest.mark.integration
def test_v2_bad_token_401_is_retried_until_the_token_works(influx2, caplog):
    """401: logged with a hint, nothing dropped; once the token is accepted, everything is written."""
    wrong = "wr0ng-t0ken-77"
    v2 = v2_settings(influx2, influx_token=wrong)

    async def accept_later(sink):
        await asyncio.sleep(0.6)
        assert sink.stats.points == 0 and sink.stats.failures >= 1
        influx2.tokens.add(wrong)  # e.g. the operator fixed the token's permissions

    with caplog.at_level(logging.INFO, logger="streams.influx.sink"):
        stats = sink_write(v2, [sample_records()[:4], sample_records()[4:]], during=accept_later)
    assert stats.points == 12 and stats.failures >= 1
    assert len(influx2.of("/api/v2/write")) >= 2  # the refused request(s) and the accepted one
    assert "HTTP 401" in caplog.text and "check the InfluxDB credentials/token" in caplog.text
    assert "recovered" in caplog.text and wrong not in caplog.text and TOKEN not in caplog.text
    assert len(S.query(v2_settings(influx2), 'SELECT * FROM "dw_drift"')) == 9


@pytest.mark.integration
def test_v2_503_429_and_timeout_are_retried_in_order(influx2, caplog):
    influx2.script = ["hang", 503, 429]
    influx2.hang_seconds = 1.5
    v2 = v2_settings(influx2)
    recs = sample_records()
    units = [recs[i : i + 2] for i in range(0, len(recs), 2)]
    with caplog.at_level(logging.WARNING, logger="streams.influx.sink"):
        stats = sink_write(v2, units, timeout=0.5)
    assert stats.failures == 3 and stats.points == len(recs)
    writes = influx2.of("/api/v2/write")
    # the first unit was retried three times with the same body; order is kept
    assert [w.body for w in writes[:4]] == [writes[0].body] * 4
    assert b"\n".join(w.body for w in writes[3:]) == "\n".join(S.to_lines(recs)).encode()
    # the first failure is logged: urllib3's ReadTimeoutError (no answer), retried like a refusal
    assert "ReadTimeoutError" in caplog.text and "retrying" in caplog.text


@pytest.mark.integration
def test_v2_422_and_400_complete_the_unit(influx2, caplog):
    """Rejected points (2.x: 422 beyond retention, 400 bad point) cannot be fixed by retrying."""
    influx2.script = [422, 400]
    v2 = v2_settings(influx2)
    with caplog.at_level(logging.ERROR, logger="streams.influx.sink"):
        stats = sink_write(v2, [sample_records()[:4], sample_records()[4:8]], wait=10)
    assert stats.rejected_requests >= 1 and stats.failures == 0
    assert "HTTP 422" in caplog.text and "scripted 422" in caplog.text


@pytest.mark.integration
def test_v2_unknown_bucket_is_404_with_a_hint(influx2, caplog):
    v2 = v2_settings(influx2, influx_bucket="missing-bucket")

    async def create_it(sink):
        await asyncio.sleep(0.5)
        influx2.add_bucket("missing-bucket")

    with caplog.at_level(logging.WARNING, logger="streams.influx.sink"):
        stats = sink_write(v2, [sample_records()[:4]], during=create_it)
    assert stats.points == 4
    assert "HTTP 404" in caplog.text and "does bucket 'missing-bucket' exist?" in caplog.text


def test_v2_unreachable_is_a_transport_failure(caplog):
    from streams.devstack.localstack import free_port

    v2 = Settings(
        influx_version=2,
        influx_url=f"http://127.0.0.1:{free_port()}",
        influx_org=ORG,
        influx_bucket="b",
        influx_token=TOKEN,
    )

    async def main():
        sink = S.InfluxSink(v2, timeout=1, max_backoff=0.05)
        fut = await sink.submit(sample_records()[:2])
        await asyncio.sleep(0.5)
        failures = sink.stats.failures
        await sink.stop(timeout=0.5)
        return failures, fut

    with caplog.at_level(logging.WARNING, logger="streams.influx.sink"):
        failures, fut = asyncio.run(main())
    assert failures >= 1 and fut.cancelled()  # never confirmed, so never acked: re-read after restart
    assert "NewConnectionError" in caplog.text or "Connection refused" in caplog.text
    with pytest.raises(S.InfluxQueryError, match="cannot reach InfluxDB"):
        S.write_records(v2, sample_records()[:1])


# ============================================================================ 2.x: buckets


@pytest.mark.integration
def test_v2_ensure_and_drop_bucket_through_buckets_api(influx2):
    name = f"nb{uuid.uuid4().hex[:8]}"
    v2 = v2_settings(influx2, influx_bucket=name)
    n0 = len(influx2.requests)
    assert A.ensure_database(v2) == name
    made = influx2.requests[n0:]
    assert [(r.method, r.path) for r in made] == [
        ("GET", "/api/v2/buckets"),
        ("GET", "/api/v2/orgs"),
        ("POST", "/api/v2/buckets"),
    ]
    assert made[0].params["name"] == [name] and made[0].params["org"] == [ORG]
    assert made[1].params["org"] == [ORG]
    posted = json.loads(made[2].body)  # (+ "rp": "0", influxdb-client's default v1 retention policy name)
    assert {k: posted[k] for k in ("name", "orgID", "retentionRules")} == {
        "name": name,
        "orgID": ORG_ID,
        "retentionRules": [],
    }  # retention: infinite unless set
    assert all(r.headers["authorization"] == f"Token {TOKEN}" for r in made)
    n1 = len(influx2.requests)
    assert A.ensure_database(v2) == name  # idempotent: one lookup, nothing created
    assert [(r.method, r.path) for r in influx2.requests[n1:]] == [("GET", "/api/v2/buckets")]
    S.write_records(v2, sample_records()[:3])
    assert len(S.query(v2, 'SELECT * FROM "dw_drift"')) == 3
    bucket_id = influx2.buckets[name]["id"]
    A.drop_database(v2)
    assert name not in influx2.buckets
    assert ("DELETE", f"/api/v2/buckets/{bucket_id}") in [(r.method, r.path) for r in influx2.requests]
    A.drop_database(v2)  # missing is fine


@pytest.mark.integration
def test_v2_admin_errors_are_clear(influx2):
    with pytest.raises(A.InfluxAdminError, match="answered 401: unauthorized access") as e:
        A.ensure_database(v2_settings(influx2, influx_token="bad-tok-9", influx_bucket="nb-x"))
    assert "bad-tok-9" not in str(e.value)
    with pytest.raises(A.InfluxAdminError, match="organization"):
        A.ensure_database(v2_settings(influx2, influx_org="other-org", influx_bucket="nb-y"))
    from streams.devstack.localstack import free_port

    with pytest.raises(A.InfluxAdminError, match="cannot reach InfluxDB"):
        A.ensure_database(v2_settings(influx2, influx_url=f"http://127.0.0.1:{free_port()}"))


# ============================================================================ 2.x: the worker, end to end


@pytest.mark.integration
@pytest.mark.slow  # a worker end to end (~10 s)
def test_worker_on_v2_settings_end_to_end(influx2, settings, settings_env, tmp_path):
    """`driftwatch worker` with DRIFTWATCH_INFLUX_VERSION=2: bucket ensured, windows written via
    /api/v2/write, checkpoints read via /query with the token — never the v1 /write."""
    from tests.reliability.helpers import Traffic, monitors_file, tail, wait_for, worker

    bucket = f"wb{uuid.uuid4().hex[:8]}"  # not created up front: the worker's ensure_database makes it
    v2 = settings.model_copy(
        update=dict(
            influx_version=2,
            influx_url=influx2.url,
            influx_org=ORG,
            influx_bucket=bucket,
            influx_token=SecretStr(TOKEN),
        )
    )
    env = {
        **settings_env,
        "DRIFTWATCH_INFLUX_VERSION": "2",
        "DRIFTWATCH_INFLUX_URL": influx2.url,
        "DRIFTWATCH_INFLUX_ORG": ORG,
        "DRIFTWATCH_INFLUX_BUCKET": bucket,
        "DRIFTWATCH_INFLUX_TOKEN": TOKEN,
    }
    mon = monitors_file(tmp_path, ["m"], window=500, first_n=500, idle=600.0)
    traffic = Traffic(settings, seed=21)
    for i in range(8):
        traffic.send("m", 250, drift=i >= 4)
    traffic.flush()
    traffic.close()
    log = tmp_path / "worker.log"

    def windowed() -> bool | int:
        try:
            rows = S.query(v2, 'SELECT sum("n_events") AS n FROM "dw_window"')
        except S.InfluxQueryError:
            return 0
        n = int(rows[0]["n"]) if rows else 0
        return True if n == 2000 else n

    with worker(env, mon, log) as proc:
        wait_for(windowed, 60, "2000 events in windows via InfluxDB 2.x", [proc], log)
    assert bucket in influx2.buckets, tail(log)
    assert influx2.of("/api/v2/write") and not influx2.of("/write")
    assert all(
        r.headers["authorization"] == f"Token {TOKEN}" for r in influx2.requests if r.path not in ("/ping", "/health")
    )
    checkpoint_reads = [r for r in influx2.of("/query") if "ckpt_topic" in (r.param("q") or "")]
    assert checkpoint_reads and all(r.param("db") == bucket for r in checkpoint_reads)
    drift = S.query(v2, 'SELECT "drift" FROM "dw_drift" WHERE "feature" = \'x0\'')
    assert any(r["drift"] for r in drift)
    assert TOKEN not in log.read_text()
    with contextlib.suppress(Exception):
        A.drop_database(v2)


# ============================================================================ 1.x with user/password (real influxd)


@pytest.mark.integration
def test_v1_user_password_sink_queries_and_dashboard(settings, tmp_path):
    """InfluxDB 1.x with auth-enabled = true: the sink, the worker's query helper, the admin and
    the dashboard all authenticate; wrong or missing credentials are refused with a clear error."""
    from tests.reliability.secure_stack import influx_with_auth

    pw = "v1-Pa55-word-x9"
    with influx_with_auth(tmp_path / "influx-auth", "dw", pw) as url:
        good = settings.model_copy(
            update={"influx_url": url, "influx_username": "dw", "influx_password": SecretStr(pw)}
        )
        A.ensure_database(good)
        wire = Recording()
        stats = sink_write(good, [sample_records()], transport=wire)
        assert stats.points == 12
        w = wire.requests[0]
        assert (
            w.url.path == "/write"
            and w.headers["authorization"] == "Basic " + base64.b64encode(f"dw:{pw}".encode()).decode()
        )
        assert len(S.query(good, 'SELECT * FROM "dw_drift"')) == 9
        conn = Q.Conn.from_settings(good)
        scope = Q.Scope(Q.TimeRange.last("1h"), model="m-1", version="1")
        assert Q.models(conn) == ["m-1"]
        assert len(Q.drift_latest(conn, scope)) == 3
        for bad in (
            good.model_copy(update={"influx_password": SecretStr("wrong-pw-41")}),
            good.model_copy(update={"influx_username": None, "influx_password": None}),
        ):
            with pytest.raises(Q.InfluxError) as e:
                Q.models(Q.Conn.from_settings(bad))
            assert "401" in str(e.value) or "authoriz" in str(e.value).lower()
            assert pw not in str(e.value) and "wrong-pw-41" not in str(e.value)


@pytest.mark.integration
def test_dashboard_basic_auth_on_v2_v1_credentials(influx2):
    """2.x v1-compatibility credentials (`influx v1 auth create`) work through basic auth too."""
    influx2.v1_users["legacy"] = "legacy-pw-3"
    v2 = v2_settings(influx2)
    S.write_records(v2, sample_records()[:4])
    conn = Q.Conn(url=influx2.url, db=influx2.bucket, username="legacy", password="legacy-pw-3")
    assert Q.models(conn) == ["m-1"]
    last = influx2.of("/query")[-1]
    assert last.headers["authorization"].startswith("Basic ") and "p" not in last.form
