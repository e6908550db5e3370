"""``driftwatch up``: everything on one machine, in the foreground, until Ctrl-C.

1. starts the local stack (tansu + InfluxDB, :mod:`streams.devstack.localstack`) unless it runs;
2. creates the topics (explicit partition count) and the InfluxDB database;
3. starts ``driftwatch webhook-sink``, ``driftwatch worker``, ``driftwatch dashboard`` and
   ``driftwatch demo`` as child processes with the same settings (passed as ``DRIFTWATCH_*``
   environment variables; secrets only as ``*_FILE`` paths, InfluxDB's being the stack's
   generated admin credential), each logging to ``<state_dir>/logs/<name>.log``. The sink gets
   a free port and a fresh random secret; with the demo config, the children read a copy
   of it with one more webhook, ``local``, pointing there (:func:`demo_webhook`), so the
   demo's alert rules deliver signed alerts to it;
4. prints the dashboard URL, then waits for Ctrl-C or SIGTERM, and says so in the terminal
   whenever the sink receives an alert;
5. stops the children (demo, dashboard, worker, sink: producers first, the worker after
   them so it can commit, the sink last so the worker's last deliveries land) and then the
   stack — unless ``--keep-stack``, or the stack was already running before ``up`` started it.

If a child exits early, ``up`` says which one, shows the end of its log and stops the
rest (a demo that finishes with exit code 0 is just reported).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from streams.devstack.localstack import (
    LocalStack,
    StackError,
    port_in_use,
    settings_env,
    spawn,
    tail,
    terminate,
    who_listens,
)

#: children in start order; stopped in reverse order
CHILDREN = ("webhook-sink", "worker", "dashboard", "demo")
STOP_TIMEOUT = {"webhook-sink": 5.0, "worker": 20.0, "dashboard": 10.0, "demo": 10.0}
#: the demo injects data drift one minute in (``--drift-at``), so the dashboard shows drift
#: and the demo's alert rules fire within two minutes
DEFAULT_DRIFT_AT = 60.0
#: the packaged demo config, which ``up`` wires to its webhook receiver
DEMO_MONITORS = Path(__file__).parent / "examples" / "demo.yaml"
LOCAL_WEBHOOK = "local"
#: how a child is started: this prefix + its command name
CHILD_ARGV_PREFIX = [sys.executable, "-m", "streams.cli"]


class _Stop(Exception):
    """SIGTERM arrived."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-demo", action="store_true", help="do not publish demo traffic")
    parser.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")
    parser.add_argument("--no-worker", action="store_true", help="do not run a worker (e.g. you run your own)")
    parser.add_argument(
        "--no-webhook-sink",
        action="store_true",
        help="do not run the local webhook receiver the demo's alert rules post to",
    )
    parser.add_argument(
        "--webhook-port", type=int, default=0, help="port of the local webhook receiver (default: a free port)"
    )
    parser.add_argument(
        "--drift-at",
        type=float,
        default=DEFAULT_DRIFT_AT,
        help=f"seconds into the demo at which data drift is injected (default {DEFAULT_DRIFT_AT:g})",
    )
    parser.add_argument("--keep-stack", action="store_true", help="leave broker and InfluxDB running on exit")
    parser.add_argument(
        "--state-dir", type=Path, help="state/log folder (default: DRIFTWATCH_STATE_DIR or the project's .driftwatch)"
    )
    parser.add_argument(
        "--monitors", type=Path, help="monitor config the worker runs (default: DRIFTWATCH_MONITORS or the demo's)"
    )
    parser.add_argument(
        "--worker-port",
        dest="worker_web_port",
        type=int,
        help="worker web server port (default: DRIFTWATCH_WORKER_WEB_PORT or 6066; 0: none) — "
        "a second local instance needs its own",
    )
    parser.add_argument("--kafka-port", type=int, help="broker port (default: DRIFTWATCH_KAFKA_PORT or 19092)")
    parser.add_argument("--influx-port", type=int, help="InfluxDB port (default: DRIFTWATCH_INFLUX_PORT or 18086)")
    parser.add_argument(
        "--dashboard-port", type=int, help="dashboard port (default: DRIFTWATCH_DASHBOARD_PORT or 8501)"
    )


def local_settings(args: argparse.Namespace) -> Any:
    """Settings from the environment, pointed at the local stack (flags win)."""
    from streams.settings import Settings

    base = Settings()
    over: dict[str, Any] = {}
    for name in ("state_dir", "kafka_port", "influx_port", "dashboard_port", "monitors", "worker_web_port"):
        value = getattr(args, name, None)
        if value is not None:
            over[name] = value
    if "monitors" in over:  # the children start in another folder
        over["monitors"] = Path(over["monitors"]).expanduser().resolve()
    s = base.model_copy(update=over)
    # `up` is the local stack: the broker and InfluxDB addresses follow its ports.
    return s.model_copy(
        update={
            "state_dir": Path(s.state_dir).resolve(),
            "kafka_bootstrap": f"127.0.0.1:{s.kafka_port}",
            "kafka_security_protocol": "PLAINTEXT",
            "influx_url": f"http://127.0.0.1:{s.influx_port}",
            "influx_version": 1,
        }
    )


def _say(msg: str) -> None:
    print(f"driftwatch up: {msg}", flush=True)


def _check_port(port: int, what: str, env: str) -> None:
    if port and port_in_use(port):
        who = who_listens(port)
        raise StackError(
            f"port {port} ({what}) is in use by another process{f' ({who})' if who else ''}: "
            f"stop it or set {env} to a free port"
        )


def _dashboard_url(settings: Any) -> str:
    host = getattr(settings, "dashboard_address", "127.0.0.1")
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{settings.dashboard_port}"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return 200 <= r.status < 400
    except OSError:
        return False


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_webhook(settings: Any, port: int = 0) -> tuple[Any, list[str]]:
    """Wire the local webhook receiver: its arguments, and the settings the children get.

    A fresh random secret goes to ``<state_dir>/webhook-sink.secret`` (mode 0600, never
    printed). When the monitors are the packaged demo config, the children read
    ``<state_dir>/demo-monitors.yaml`` instead: the demo config with its reference paths made
    absolute and one more webhook, ``local``, posting to the sink with that secret. (The
    demo config itself names no webhook, so a worker run by hand on it, and
    ``check-config``, need no URL or secret: its alerts then go to the alerts topic and the
    dashboard only.) Any other monitor config is left as it is.
    """
    from streams.alerts.sink import PATH

    state = Path(settings.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    secret_file = state / "webhook-sink.secret"
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(24))
    argv = ["--port", str(port), "--secret-file", str(secret_file)]
    if Path(settings.monitors).resolve() != DEMO_MONITORS.resolve():
        return settings, argv
    generated = state / "demo-monitors.yaml"
    write_demo_monitors(generated, f"http://127.0.0.1:{port}{PATH}", secret_file)
    return settings.model_copy(update={"monitors": generated}), argv


def write_demo_monitors(path: Path, url: str, secret_file: Path, source: Path | None = None) -> Path:
    """The demo config (``source``) plus the webhook ``local`` (``url``, signed with the secret in
    ``secret_file``), its relative paths made absolute, written to ``path``."""
    import yaml

    source = source or DEMO_MONITORS
    raw = yaml.safe_load(source.read_text())
    for m in raw.get("models") or ():
        ref = m.get("reference") or {}
        if ref.get("file") and not Path(ref["file"]).is_absolute():
            ref["file"] = str((source.parent / ref["file"]).resolve())
        sq = (m.get("adversarial") or {}).get("squeeze") or {}
        if sq.get("model") and not Path(sq["model"]).is_absolute():
            sq["model"] = str((source.parent / sq["model"]).resolve())
    raw["webhooks"] = [
        *(raw.get("webhooks") or []),
        {"name": LOCAL_WEBHOOK, "url": url, "secret_file": str(secret_file), "give_up_after": "10m"},
    ]
    path.write_text(
        f"# written by `driftwatch up` from {source}: the demo's alerts go to its local webhook-sink\n"
        + yaml.safe_dump(raw, sort_keys=False)
    )
    return path


def _child_args(name: str, args: argparse.Namespace, sink_args: list[str]) -> list[str]:
    if name == "demo":
        return ["--drift-at", f"{getattr(args, 'drift_at', DEFAULT_DRIFT_AT):g}"]
    if name == "webhook-sink":
        return sink_args
    return []


class _Relay:
    """Follows the sink's log and says each received alert in ``up``'s terminal."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = log.stat().st_size if log.exists() else 0
        self.partial = b""

    def poll(self) -> list[str]:
        from streams.alerts.sink import LINE_PREFIX

        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        out = []
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if line.startswith((LINE_PREFIX, "REJECTED", "      open:")):
                out.append(line)
        return out


def _start_children(
    settings: Any,
    names: list[str],
    args: argparse.Namespace | None = None,
    sink_args: list[str] | None = None,
    base_env: dict[str, str] | None = None,
) -> list[Child]:
    env = settings_env(settings, base_env)
    env["PYTHONUNBUFFERED"] = "1"
    logs = Path(settings.state_dir) / "logs"
    children: list[Child] = []
    for name in names:
        log = logs / f"{name}.log"
        argv = [*CHILD_ARGV_PREFIX, name, *_child_args(name, args or argparse.Namespace(), sink_args or [])]
        proc = spawn(argv, log, env=env, die_with_parent=True)
        children.append(Child(name, proc, log))
        _say(f"started {name} (pid {proc.pid}), log {log}")
    return children


def _stop_children(children: list[Child]) -> None:
    for child in reversed(children):
        if child.proc.poll() is None:
            how = terminate(child.proc.pid, STOP_TIMEOUT[child.name], child.proc)
            _say(f"{child.name} {how}")


def _early_exit(child: Child, code: int) -> str:
    return (
        f"{child.name} exited with code {code} after {time.monotonic() - child.started:.1f} s; "
        f"last lines of {child.log}:\n{tail(child.log, 30)}"
    )


def run(args: argparse.Namespace) -> int:
    from streams.broker.admin import TopicError, ensure_topics
    from streams.influx.admin import InfluxAdminError, ensure_database

    settings = local_settings(args)
    names = [n for n in CHILDREN if not getattr(args, f"no_{n.replace('-', '_')}", False)]
    stack = LocalStack(settings.state_dir, settings.kafka_port, settings.influx_port)
    was_running = stack.status()["running"]
    own_stack = not was_running and not args.keep_stack
    stack.die_with_parent = own_stack
    children: list[Child] = []
    old_term = signal.signal(signal.SIGTERM, _raise_stop)
    code = 0
    try:
        if "dashboard" in names:
            _check_port(settings.dashboard_port, "dashboard", "DRIFTWATCH_DASHBOARD_PORT or --dashboard-port")
        if "worker" in names:
            _check_port(settings.worker_web_port, "worker web server", "DRIFTWATCH_WORKER_WEB_PORT or --worker-port")
        status = stack.up()
        _say(status["message"])
        # InfluxDB runs with auth on: the worker and the dashboard use the stack's admin credential
        settings = settings.model_copy(update=stack.influx_settings())
        ensure_topics(settings)
        ensure_database(settings)
        _say(f"topics ready ({settings.topic_partitions} partitions), InfluxDB database {settings.influx_db!r} ready")
        sink_args: list[str] = []
        if "webhook-sink" in names:
            settings, sink_args = demo_webhook(settings, getattr(args, "webhook_port", 0))
        children = _start_children(settings, names, args, sink_args, {**os.environ, **stack.influx_env()})
        relay = next((_Relay(c.log) for c in children if c.name == "webhook-sink"), None)
        t_start = time.monotonic()

        url = _dashboard_url(settings)
        announced = "dashboard" not in names
        deadline = time.monotonic() + 90
        finished: set[str] = set()
        while True:
            for child in children:
                rc = child.proc.poll()
                if rc is None or child.name in finished:
                    continue
                finished.add(child.name)
                if child.name == "demo" and rc == 0:
                    _say("demo traffic finished")
                    continue
                _say(_early_exit(child, rc))
                code = 1
            if code:
                break
            for line in relay.poll() if relay else ():
                _say(("webhook received: " + line[len("ALERT ") :]) if line.startswith("ALERT ") else line.strip())
            if not announced and (_http_ok(url + "/_stcore/health") or time.monotonic() > deadline):
                ready = time.monotonic() <= deadline
                note = (
                    f"   (ready after {time.monotonic() - t_start:.1f} s)"
                    if ready
                    else "   (still starting: see its log)"
                )
                print(
                    "\n"
                    + "=" * 64
                    + f"\n  Dashboard: {url}{note}"
                    + "\n  Stop everything with Ctrl-C\n"
                    + "=" * 64
                    + "\n",
                    flush=True,
                )
                announced = True
            time.sleep(0.3)
    except (KeyboardInterrupt, _Stop):
        _say("stopping ...")
    except (StackError, TopicError, InfluxAdminError) as e:
        print(f"driftwatch up: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _stop_children(children)
            if own_stack:
                result = stack.down()
                _say("stack " + ", ".join(f"{k} {v}" for k, v in result.items()))
            elif stack.status()["running"]:
                _say(f"local stack left running (stop it with: driftwatch stack down --state-dir {settings.state_dir})")
        finally:
            signal.signal(signal.SIGTERM, old_term)
    return code
