"""A TLS-terminating, SASL/PLAIN-verifying gateway in front of the local broker (tests only).

Why: tansu 0.6.0 cannot serve TLS (``--cert`` and ``--key`` are mutually
exclusive on its command line, and with only one of them it keeps speaking
plaintext) and offers only SCRAM-SHA-256/512 and OAUTHBEARER, no PLAIN, with
users kept in its storage — memory storage starts empty and refuses to create a
user for an unauthenticated client. ``test_transport_security.py`` proves each
of those facts. So the TLS and SASL/PLAIN paths of every driftwatch Kafka
client are tested through this gateway, which does on loopback what a secured
Kafka listener does:

* with ``tls=(certfile, keyfile)`` it accepts TLS only (a plaintext client gets
  a handshake failure);
* with ``users={"name": "password"}`` it answers ``ApiVersions`` (forwarded),
  ``SaslHandshake`` (PLAIN only) and ``SaslAuthenticate`` itself, checks the
  password, and refuses every other request before authentication (closes the
  connection, as Kafka does);
* after that it pipes bytes both ways to the real broker.

Start tansu with ``--advertised-listener-url`` set to the gateway's address, so
the metadata sends clients back through the gateway. The gateway counts
successful and failed authentications (``stats``) so a test can prove a client
really authenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import threading
from collections import Counter
from pathlib import Path

API_VERSIONS = 18
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
ERR_NONE = 0
ERR_UNSUPPORTED_SASL_MECHANISM = 33
ERR_ILLEGAL_SASL_STATE = 34
ERR_SASL_AUTHENTICATION_FAILED = 58


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _enc_uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def client_id(frame: bytes) -> str:
    """The client id in a request header ('' when there is none)."""
    (n,) = struct.unpack(">h", frame[8:10])
    return frame[10 : 10 + n].decode(errors="replace") if n > 0 else ""


def parse_header(frame: bytes) -> tuple[int, int, int, int]:
    """(api_key, api_version, correlation_id, offset of the body) of a request (header v1/v2)."""
    api_key, api_version, corr, client_len = struct.unpack(">hhih", frame[:10])
    pos = 10 + max(client_len, 0)
    flexible = api_key == SASL_AUTHENTICATE and api_version >= 2
    if flexible:  # request header v2: tagged fields after the client id
        n_tags, pos = _uvarint(frame, pos)
        for _ in range(n_tags):
            _tag, pos = _uvarint(frame, pos)
            size, pos = _uvarint(frame, pos)
            pos += size
    return api_key, api_version, corr, pos


def handshake_response(corr: int, error: int, mechanisms: list[str]) -> bytes:
    body = struct.pack(">ih", corr, error) + struct.pack(">i", len(mechanisms))
    for m in mechanisms:
        body += struct.pack(">h", len(m)) + m.encode()
    return body


def authenticate_request_bytes(frame: bytes, version: int, pos: int) -> bytes:
    if version >= 2:
        n, pos = _uvarint(frame, pos)
        return frame[pos : pos + n - 1]
    (n,) = struct.unpack(">i", frame[pos : pos + 4])
    return frame[pos + 4 : pos + 4 + n]


def authenticate_response(corr: int, version: int, error: int, message: str | None) -> bytes:
    if version >= 2:
        out = struct.pack(">i", corr) + b"\x00" + struct.pack(">h", error)
        out += b"\x00" if message is None else _enc_uvarint(len(message.encode()) + 1) + message.encode()
        out += _enc_uvarint(1)  # empty auth bytes
        out += struct.pack(">q", 0) + b"\x00"
        return out
    out = struct.pack(">ih", corr, error)
    out += struct.pack(">h", -1) if message is None else struct.pack(">h", len(message.encode())) + message.encode()
    out += struct.pack(">i", 0)
    if version >= 1:
        out += struct.pack(">q", 0)
    return out


class KafkaGateway:
    """See module docstring. ``start()`` binds ``port`` (0: pick one) and returns it."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: tuple[Path, Path] | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.upstream = upstream
        self.host = host
        self.port = port
        self.tls = tls
        self.users = users
        self.stats: Counter[str] = Counter()
        self.auth_users: Counter[str] = Counter()
        self.clients: Counter[str] = Counter()  # client ids of connections let through
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> int:
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                ctx = None
                if self.tls is not None:
                    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    ctx.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self.port, ssl=ctx)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as e:
                error.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="kafka-gateway", daemon=True)
        self._thread.start()
        ready.wait(10)
        if error:
            raise error[0]
        return self.port

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def __enter__(self) -> KafkaGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ connections
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.stats["connections"] += 1
        up_writer = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            if self.users is not None:
                if not await self._authenticate(reader, writer, up_reader, up_writer):
                    return
            else:
                first = await self._read_frame(reader)
                self.clients[client_id(first)] += 1
                self._write_frame(up_writer, first)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            self.stats["connection_errors"] += 1
        except asyncio.CancelledError:
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()
            self._tasks.discard(task)

    @staticmethod
    async def _read_frame(reader: asyncio.StreamReader) -> bytes:
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        return await reader.readexactly(size)

    @staticmethod
    def _write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
        writer.write(struct.pack(">i", len(payload)) + payload)

    async def _authenticate(self, reader, writer, up_reader, up_writer) -> bool:
        mechanism: str | None = None
        while True:
            frame = await self._read_frame(reader)
            api_key, version, corr, pos = parse_header(frame)
            if api_key == API_VERSIONS:  # allowed before authentication: ask the broker
                self._write_frame(up_writer, frame)
                await up_writer.drain()
                self._write_frame(writer, await self._read_frame(up_reader))
            elif api_key == SASL_HANDSHAKE:
                (n,) = struct.unpack(">h", frame[pos : pos + 2])
                mechanism = frame[pos + 2 : pos + 2 + n].decode()
                ok = mechanism == "PLAIN"
                if not ok:
                    self.stats["unsupported_mechanism"] += 1
                self._write_frame(
                    writer, handshake_response(corr, ERR_NONE if ok else ERR_UNSUPPORTED_SASL_MECHANISM, ["PLAIN"])
                )
                if not ok:
                    await writer.drain()
                    return False
            elif api_key == SASL_AUTHENTICATE and mechanism == "PLAIN":
                token = authenticate_request_bytes(frame, version, pos)
                parts = token.split(b"\x00")
                user = parts[1].decode(errors="replace") if len(parts) == 3 else ""
                password = parts[2].decode(errors="replace") if len(parts) == 3 else None
                if self.users.get(user) is not None and self.users.get(user) == password:
                    self.stats["auth_ok"] += 1
                    self.auth_users[user] += 1
                    self.clients[client_id(frame)] += 1
                    self._write_frame(writer, authenticate_response(corr, version, ERR_NONE, None))
                    await writer.drain()
                    return True
                self.stats["auth_failed"] += 1
                self._write_frame(
                    writer,
                    authenticate_response(
                        corr, version, ERR_SASL_AUTHENTICATION_FAILED, "Authentication failed: invalid credentials"
                    ),
                )
                await writer.drain()
                return False
            else:  # anything else before authentication: refuse, as a SASL listener does
                self.stats["unauthenticated_request"] += 1
                return False
            await writer.drain()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        finally:
            with contextlib.suppress(Exception):
                dst.close()
